//! The sidecar: `mcvideo-relay serve` runs the [`Engine`] behind an HTTP/JSON control API
//! (`deploy/README.md` in the repository) for one-to-one video push and pull calls and group
//! video calls, with rtpengine's ng protocol beside it, Prometheus metrics, a TOML config,
//! structured logs and graceful shutdown.
//!
//! * [`run_serve`] and [`check_config`] are what the binary's `serve` and `check-config` run.
//! * [`Sidecar`] runs the same server in-process (tests, embedding): [`Sidecar::start`] binds
//!   and returns at once, [`Sidecar::shutdown`] goes through the SIGTERM path.
//!
//! Shutdown order: stop taking calls (drain), [`Engine::shutdown`] (every live call released
//! with reason `shutdown`, its events published), event streams flush and end, the HTTP
//! server closes its connections (waiting at most [`SHUTDOWN_GRACE`]), exit.
#![allow(clippy::disallowed_methods)] // the I/O layer is where the clock is read

mod api;
#[cfg(test)]
mod api_tests;
mod body;
pub mod config;
mod error;
pub mod export;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "ha")]
mod ha;
mod metrics;
mod ng;
mod recordings;
mod whep;

pub use api::event_json;
pub use config::{
    Config, PolicyFile, Problem, ServeOptions, SERVE_ABOUT, SERVE_AFTER_HELP, SERVE_HELP_TEMPLATE,
    SERVE_LONG_ABOUT,
};

use crate::control::policy::{AllowAll, AuthorizationPolicy};
use crate::relay::Engine;
use api::{AppState, TokenChange};
use std::fmt;
use std::future::{Future, IntoFuture};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tracing::{error, info, warn};
use tracing_subscriber::filter::Targets;

/// How long shutdown waits for HTTP clients (event streams included) to go.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything `serve` needs, resolved: the config, the secrets, the policy.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The validated configuration.
    pub config: Config,
    /// The bearer token, when one is configured.
    pub token: Option<String>,
    /// The authorization policy; `None` = trust the controlling server.
    pub policy: Option<Arc<dyn AuthorizationPolicy>>,
    /// Where the policy came from (for the startup log).
    pub policy_source: Option<PathBuf>,
}

impl Settings {
    /// Settings with no token and no policy (tests, embedding).
    pub fn new(config: Config) -> Settings {
        Settings {
            config,
            token: None,
            policy: None,
            policy_source: None,
        }
    }

    /// Reads the token (environment variable `api.token_env`, else `api.token_file`) and the
    /// policy file (`policy.file`, relative to `base_dir`).
    pub fn resolve(config: Config, base_dir: Option<&Path>) -> Result<Settings, Vec<Problem>> {
        let mut problems = Vec::new();
        let token = match read_token(&config, base_dir) {
            Ok(t) => t,
            Err(p) => {
                problems.push(p);
                None
            }
        };
        let (policy, policy_source) = match &config.policy.file {
            None => (None, None),
            Some(f) => {
                let path = config::resolve_path(base_dir, f);
                match PolicyFile::load(&path) {
                    Ok(pf) => {
                        for w in pf.warnings() {
                            warn!(policy = %path.display(), "{w}");
                        }
                        let p: Arc<dyn AuthorizationPolicy> = pf.into_policy();
                        (Some(p), Some(path))
                    }
                    Err(ps) => {
                        problems.extend(ps);
                        (None, None)
                    }
                }
            }
        };
        if problems.is_empty() {
            Ok(Settings {
                config,
                token,
                policy,
                policy_source,
            })
        } else {
            Err(problems)
        }
    }
}

fn read_token(config: &Config, base_dir: Option<&Path>) -> Result<Option<String>, Problem> {
    if let Ok(t) = std::env::var(&config.api.token_env) {
        let t = t.trim();
        if !t.is_empty() {
            return Ok(Some(t.to_owned()));
        }
    }
    let Some(f) = &config.api.token_file else {
        return Ok(None);
    };
    let path = config::resolve_path(base_dir, f);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_owned())),
        Ok(_) => Err(Problem {
            key: "api.token_file".into(),
            message: format!("{} is empty", path.display()),
        }),
        Err(e) => Err(Problem {
            key: "api.token_file".into(),
            message: format!("cannot read {}: {e}", path.display()),
        }),
    }
}

/// Why the sidecar did not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartError(pub String);

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// A bound listener and a started engine, not yet serving.
struct Prepared {
    listener: std::net::TcpListener,
    addr: SocketAddr,
    state: Arc<AppState>,
    ng: Option<(std::net::UdpSocket, Arc<ng::NgService>)>,
    /// `api.quality_event_secs` (zero: no `call.quality` events).
    quality_every: Duration,
    /// `[ha]`, when on.
    #[cfg(feature = "ha")]
    ha: Option<crate::ha::HaConfig>,
}

/// Binds the ng listener (`ng.listen`). A bind failure is fatal when the address was
/// configured; on the embedded default (127.0.0.1:2223, which a local rtpengine may hold) it
/// is a warning and `serve` runs without ng.
fn bind_ng(cfg: &Config) -> Result<Option<std::net::UdpSocket>, StartError> {
    if !cfg.ng.enabled() {
        info!("ng control protocol off (ng.listen)");
        return Ok(None);
    }
    let addr: SocketAddr = cfg
        .ng
        .listen
        .parse()
        .map_err(|_| StartError(format!("ng.listen: `{}` is not IP:port", cfg.ng.listen)))?;
    let is_default = cfg.ng.listen == config::NgConfig::default().listen;
    match std::net::UdpSocket::bind(addr).and_then(|s| s.set_nonblocking(true).map(|()| s)) {
        Ok(s) => Ok(Some(s)),
        Err(e) if is_default => {
            warn!(
                "ng control protocol not started: cannot listen on {addr} (the default \
                 ng.listen): {e}; set ng.listen or --ng-listen (or `off`)"
            );
            Ok(None)
        }
        Err(e) => Err(StartError(format!(
            "cannot listen on {addr} (ng.listen): {e}"
        ))),
    }
}

fn prepare(
    settings: Settings,
    reload_from: Option<(PathBuf, ServeOptions)>,
) -> Result<Prepared, StartError> {
    let cfg = &settings.config;
    let problems = cfg.validate();
    if let Some(p) = problems.first() {
        return Err(StartError(format!("invalid configuration: {p}")));
    }
    let (listener, addr) = bind_api(&settings)?;
    let mut ec = cfg.engine_config();
    match &settings.policy {
        Some(p) => {
            ec.policy = p.clone();
            info!(policy = %settings.policy_source.as_deref().map_or_else(String::new, |p| p.display().to_string()), "authorization policy loaded");
        }
        None => {
            ec.policy = Arc::new(AllowAll);
            warn!(
                "no authorization policy configured (policy.file): trusting the controlling \
                 server; every caller may push and every callee may receive"
            );
        }
    }
    let ng_sock = bind_ng(cfg)?;
    #[cfg(feature = "ha")]
    let ha =
        if cfg.ha.enabled {
            Some(cfg.ha.ha_config().map_err(|p| {
                StartError(format!("invalid configuration: {}", config::one_line(&p)))
            })?)
        } else {
            None
        };
    #[cfg(feature = "ha")]
    let ha = ha.map(|mut h| {
        if h.probe_address.is_none() && !addr.ip().is_unspecified() {
            h.probe_address = Some(addr); // refused once this process is gone
        }
        h
    });
    let engine = Engine::start(ec).map_err(|e| StartError(format!("engine: {e}")))?;
    if settings.token.is_some() {
        info!("control API requires a bearer token");
    } else {
        warn!(
            "no API token configured (${}): the control API is unauthenticated (loopback only)",
            cfg.api.token_env
        );
    }
    let reloader = reload_from.map(|(path, opts)| Reloader {
        path,
        opts,
        listen: addr,
        running: Mutex::new(cfg.clone()),
    });
    let state = Arc::new(AppState::new(
        Arc::new(engine),
        settings.token.as_deref(),
        cfg.api.max_body_bytes,
        reloader,
    ));
    #[cfg(feature = "webrtc")]
    start_browsers(cfg, &state);
    let ng = ng_sock.map(|sock| {
        let svc = Arc::new(ng::NgService::new(state.engine.clone(), &cfg.ng));
        let _ = state.ng_metrics.set(svc.metrics.clone());
        (sock, svc)
    });
    Ok(Prepared {
        listener,
        addr,
        state,
        ng,
        quality_every: Duration::from_secs(cfg.api.quality_event_secs),
        #[cfg(feature = "ha")]
        ha,
    })
}

/// The control API's listener (`api.listen`) and the address it got. A listener off loopback
/// needs a bearer token.
fn bind_api(settings: &Settings) -> Result<(std::net::TcpListener, SocketAddr), StartError> {
    let cfg = &settings.config;
    let listen = cfg.listen_addr();
    if !listen.ip().is_loopback() && settings.token.is_none() {
        return Err(StartError(format!(
            "refusing to start: the control API would listen on {listen}, which is not a \
             loopback address, without a bearer token; set ${} (api.token_env) or \
             api.token_file, or listen on 127.0.0.1",
            cfg.api.token_env
        )));
    }
    let listener = std::net::TcpListener::bind(listen)
        .map_err(|e| StartError(format!("cannot listen on {listen} (api.listen): {e}")))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| StartError(format!("listener: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError(format!("listener: {e}")))?;
    Ok((listener, addr))
}

/// The browser legs (WHEP viewers, WHIP publishers) on `webrtc.address`, or on the media
/// address: off, with a warning, when that is a wildcard browsers cannot reach.
#[cfg(feature = "webrtc")]
fn start_browsers(cfg: &config::Config, state: &AppState) {
    let address: std::net::IpAddr = cfg
        .webrtc
        .address
        .parse()
        .unwrap_or(state.engine.config().media_ip);
    if cfg.webrtc.max_viewers == 0 {
        return;
    }
    if address.is_unspecified() {
        warn!("WHEP is off: media.ip is a wildcard; set webrtc.address to one browsers reach");
        return;
    }
    let mut w = crate::webrtc::WebrtcConfig::new(address);
    w.max_viewers = cfg.webrtc.max_viewers;
    w.connect_timeout = Duration::from_secs(cfg.webrtc.connect_timeout_secs);
    let viewers = crate::webrtc::Browsers::new(state.engine.clone(), w);
    let _ = state.browsers.set(Arc::new(viewers));
}

async fn serve(p: Prepared, stop: impl Future<Output = ()> + Send + 'static) {
    let listener = match tokio::net::TcpListener::from_std(p.listener) {
        Ok(l) => l,
        Err(e) => {
            error!("listener: {e}");
            return;
        }
    };
    info!(addr = %p.addr, "control API listening");
    if let Some((sock, svc)) = p.ng {
        tokio::spawn(ng::run(sock, svc, p.state.closing.subscribe()));
    }
    if p.quality_every > Duration::ZERO {
        tokio::spawn(api::publish_quality(p.state.clone(), p.quality_every));
    }
    #[cfg(feature = "ha")]
    if let Some(cfg) = p.ha {
        match ha::start(cfg, p.state.engine.clone()) {
            Ok(h) => {
                let _ = p.state.ha.set(h);
            }
            Err(e) => error!("HA store not started: {e}"),
        }
    }
    let st = p.state.clone();
    let graceful = async move {
        stop.await;
        info!("shutting down: refusing new calls, releasing live calls");
        st.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        st.engine.set_draining(true);
        let engine = st.engine.clone();
        if tokio::task::spawn_blocking(move || engine.shutdown())
            .await
            .is_err()
        {
            error!("engine shutdown panicked");
        }
        // The released calls' deletes reach Redis before the heartbeat stops (else a standby
        // would adopt calls that are over).
        #[cfg(feature = "ha")]
        if let Some(h) = st.ha.get() {
            h.flush_and_stop(Duration::from_secs(2)).await;
        }
        #[cfg(feature = "webrtc")]
        if let Some(v) = st.browsers.get().cloned() {
            let _ = tokio::task::spawn_blocking(move || v.close_all()).await;
        }
        // Every `call.released` is in the event channel now: streams flush and end.
        st.closing.send_replace(true);
    };
    let server = axum::serve(listener, api::router(p.state.clone()))
        .with_graceful_shutdown(graceful)
        .into_future();
    let mut closing = p.state.closing.subscribe();
    let deadline = async move {
        let _ = closing.wait_for(|c| *c).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        r = server => if let Err(e) = r { error!("HTTP server: {e}") },
        () = deadline => warn!("clients still connected {SHUTDOWN_GRACE:?} after shutdown: closing anyway"),
    }
    info!("stopped");
}

/// A sidecar running in-process on its own threads.
#[derive(Debug)]
pub struct Sidecar {
    addr: SocketAddr,
    ng_addr: Option<SocketAddr>,
    engine: Arc<Engine>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sidecar {
    /// Binds the API, starts the engine and serves on a thread of its own. Refuses (like
    /// `serve`) a non-loopback address without a token.
    pub fn start(settings: Settings) -> Result<Sidecar, StartError> {
        let p = prepare(settings, None)?;
        let addr = p.addr;
        let ng_addr = p.ng.as_ref().and_then(|(s, _)| s.local_addr().ok());
        let engine = p.state.engine.clone();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mcv-api")
            .enable_all()
            .build()
            .map_err(|e| StartError(format!("runtime: {e}")))?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("mcv-sidecar".into())
            .spawn(move || {
                rt.block_on(serve(p, async move {
                    let _ = rx.await;
                }));
            })
            .map_err(|e| StartError(format!("thread: {e}")))?;
        Ok(Sidecar {
            addr,
            ng_addr,
            engine,
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// Where the control API listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the ng control protocol listens (UDP), when it runs.
    pub fn ng_addr(&self) -> Option<SocketAddr> {
        self.ng_addr
    }

    /// The engine behind the API.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Shuts down as on SIGTERM and waits until the server has stopped.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Replaces the log filter of the subscriber [`init_logging`] installed.
type SetLogFilter = Box<dyn Fn(Targets) -> Result<(), String> + Send + Sync>;

/// Set by [`init_logging`]: how a reload changes `log.level`.
static SET_LOG_FILTER: OnceLock<SetLogFilter> = OnceLock::new();
/// `RUST_LOG` was set at startup: it wins over `log.level`, on reload too.
static RUST_LOG_WINS: AtomicBool = AtomicBool::new(false);

fn init_logging(cfg: &config::LogConfig) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::reload;
    let filter = match std::env::var("RUST_LOG") {
        Ok(s) if !s.trim().is_empty() => match config::parse_log_filter(&s) {
            Ok(f) => {
                RUST_LOG_WINS.store(true, Ordering::Relaxed);
                f
            }
            Err(e) => {
                eprintln!("mcvideo-relay: RUST_LOG: {e}; using log.level");
                cfg.level.targets().clone()
            }
        },
        _ => cfg.level.targets().clone(),
    };
    // The fmt builder's own filter (INFO unless told) would hide debug and trace whatever
    // log.level says: the Targets layer decides alone.
    let builder = tracing_subscriber::fmt()
        .with_max_level(tracing::level_filters::LevelFilter::TRACE)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let (result, set): (_, SetLogFilter) = if cfg.format == config::LogFormat::Json {
        let sub = builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .finish();
        let (layer, handle) = reload::Layer::new(filter);
        (
            tracing::subscriber::set_global_default(sub.with(layer)),
            Box::new(move |f| handle.reload(f).map_err(|e| e.to_string())),
        )
    } else {
        let (layer, handle) = reload::Layer::new(filter);
        (
            tracing::subscriber::set_global_default(builder.finish().with(layer)),
            Box::new(move |f| handle.reload(f).map_err(|e| e.to_string())),
        )
    };
    if result.is_err() {
        eprintln!("mcvideo-relay: a log subscriber was already installed");
    } else {
        let _ = SET_LOG_FILTER.set(set);
    }
}

#[cfg(unix)]
async fn termination(mut term: tokio::signal::unix::Signal, mut int: tokio::signal::unix::Signal) {
    // Later signals are caught and ignored (tokio keeps its handlers): the shutdown is bounded
    // by SHUTDOWN_GRACE, and a supervisor that signals the whole process group twice must
    // still see exit code 0.
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
    }
}

/// Every SIGHUP reloads the configuration (see [`reload`]).
#[cfg(unix)]
async fn reload_on_hangup(mut hangup: tokio::signal::unix::Signal, st: Arc<AppState>) {
    while hangup.recv().await.is_some() {
        info!("SIGHUP received: reloading the configuration");
        let st = st.clone();
        if tokio::task::spawn_blocking(move || reload_logged(&st, "SIGHUP"))
            .await
            .is_err()
        {
            error!("reload panicked");
        }
    }
}

/// What SIGHUP and `POST /v1/admin/reload` re-read: the config file `serve` started with, with
/// its command-line flags on top again.
#[derive(Debug)]
pub(crate) struct Reloader {
    path: PathBuf,
    opts: ServeOptions,
    /// Where the API listens (a non-loopback address still needs a token after a reload).
    listen: SocketAddr,
    /// The configuration in force; the lock also keeps reloads one at a time.
    running: Mutex<Config>,
}

/// Why a reload did not happen.
#[derive(Debug)]
pub(crate) enum ReloadError {
    /// `serve` runs without `--config`.
    NoConfigFile,
    /// The new configuration has problems (each with its key); the old settings stay.
    Invalid(Vec<Problem>),
}

/// Re-reads the config file and puts its policy file, log level and API token in force (the
/// replaced token is still accepted for `api.token_overlap_secs`). Live calls are untouched;
/// other keys that changed are reported as taking effect on restart. All or nothing: on any
/// problem nothing changes. Returns what changed.
pub(crate) fn reload(st: &AppState) -> Result<Vec<String>, ReloadError> {
    let r = st.reloader.as_ref().ok_or(ReloadError::NoConfigFile)?;
    let mut running = r.running.lock().unwrap_or_else(|e| e.into_inner());
    let (mut config, mut problems) = Config::read_file(&r.path);
    problems.extend(r.opts.apply(&mut config));
    problems.extend(config.validate());
    if !problems.is_empty() {
        return Err(ReloadError::Invalid(problems));
    }
    let settings = Settings::resolve(config, r.path.parent()).map_err(ReloadError::Invalid)?;
    let new = &settings.config;
    if !r.listen.ip().is_loopback() && settings.token.is_none() {
        return Err(ReloadError::Invalid(vec![Problem {
            key: "api.token_env".into(),
            message: format!(
                "the control API listens on {}, which is not a loopback address: a bearer \
                 token is required (${} or api.token_file)",
                r.listen, new.api.token_env
            ),
        }]));
    }
    let mut changes = Vec::new();
    match (&settings.policy, &settings.policy_source) {
        (Some(p), source) => {
            st.engine.set_policy(p.clone());
            changes.push(format!(
                "policy.file: {} loaded (for new calls)",
                source
                    .as_deref()
                    .map_or_else(String::new, |s| s.display().to_string())
            ));
        }
        (None, _) => {
            st.engine.set_policy(Arc::new(AllowAll));
            changes.push("policy.file: none: trusting the controlling server".to_owned());
        }
    }
    if new.log.level != running.log.level {
        let level = new.log.level.as_str();
        changes.push(match SET_LOG_FILTER.get() {
            _ if RUST_LOG_WINS.load(Ordering::Relaxed) => {
                format!("log.level: `{level}` not applied: RUST_LOG is set and wins")
            }
            Some(set) => match set(new.log.level.targets().clone()) {
                Ok(()) => format!("log.level: `{level}`"),
                Err(e) => format!("log.level: `{level}` not applied: {e}"),
            },
            None => format!("log.level: `{level}` not applied: no log subscriber of ours"),
        });
    }
    let overlap = Duration::from_secs(new.api.token_overlap_secs);
    match st.set_token(settings.token.as_deref(), overlap) {
        TokenChange::Unchanged => {}
        TokenChange::Rotated => changes.push(format!(
            "api token: rotated; the previous token is accepted for {} s more",
            overlap.as_secs()
        )),
        TokenChange::Added => changes.push("api token: set; the API requires it now".to_owned()),
        TokenChange::Removed => changes
            .push("api token: removed; the API (loopback only) is unauthenticated now".to_owned()),
    }
    for (key, same) in [
        ("api.listen", new.api.listen == running.api.listen),
        (
            "api.max_body_bytes",
            new.api.max_body_bytes == running.api.max_body_bytes,
        ),
        ("[media]", new.media == running.media),
        ("[calls]", new.calls == running.calls),
        (
            "[transmission_control]",
            new.transmission_control == running.transmission_control,
        ),
        ("[group_calls]", new.group_calls == running.group_calls),
        ("[recording]", new.recording == running.recording),
        ("log.format", new.log.format == running.log.format),
    ] {
        if !same {
            changes.push(format!("{key}: changed; takes effect on restart"));
        }
    }
    *running = settings.config;
    Ok(changes)
}

/// [`reload`], with its outcome logged.
pub(crate) fn reload_logged(st: &AppState, trigger: &str) -> Result<Vec<String>, ReloadError> {
    let result = reload(st);
    match &result {
        Ok(changes) => info!(trigger, changes = %changes.join("; "), "configuration reloaded"),
        Err(ReloadError::NoConfigFile) => {
            warn!(
                trigger,
                "nothing to reload: the relay was started without --config"
            )
        }
        Err(ReloadError::Invalid(problems)) => error!(
            trigger,
            problems = %config::one_line(problems),
            "configuration not reloaded (the old settings stay)"
        ),
    }
    result
}

fn print_problems(source: &str, problems: &[Problem]) {
    for p in problems {
        eprintln!("mcvideo-relay: {source}: {p}");
    }
}

/// `mcvideo-relay serve`: runs until SIGTERM or SIGINT, then shuts down gracefully (exit 0).
/// The first line on stdout is `listening on ADDR`.
pub fn run_serve(opts: ServeOptions) -> ExitCode {
    let (mut config, base_dir, source, mut problems) = match &opts.config {
        Some(path) => {
            let (c, ps) = Config::read_file(path);
            let base = path.parent().map(Path::to_path_buf);
            (c, base, path.display().to_string(), ps)
        }
        None => (Config::embedded(), None, "defaults".to_owned(), Vec::new()),
    };
    problems.extend(opts.apply(&mut config));
    problems.extend(config.validate());
    if !problems.is_empty() {
        print_problems(&source, &problems);
        return ExitCode::from(2);
    }
    init_logging(&config.log);
    info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %source,
        "mcvideo-relay starting"
    );
    let settings = match Settings::resolve(config, base_dir.as_deref()) {
        Ok(s) => s,
        Err(ps) => {
            print_problems(&source, &ps);
            return ExitCode::from(2);
        }
    };
    match crate::relay::raise_open_files_limit() {
        Ok(n) => info!(
            open_files = n,
            "open-files limit (each call holds a socket per relay port, two or more)"
        ),
        Err(e) => warn!("could not raise the open-files limit: {e}"),
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("mcv-api")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mcvideo-relay: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Signal handlers go in before the address is announced: a SIGTERM right after it is
    // already a graceful shutdown.
    #[cfg(unix)]
    let (stop, hangup) = {
        use tokio::signal::unix::{signal, SignalKind};
        let _guard = rt.enter();
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(t), Ok(i), Ok(h)) => (termination(t, i), h),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                eprintln!("mcvideo-relay: signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    #[cfg(not(unix))]
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let reload_from = opts.config.clone().map(|path| (path, opts.clone()));
    let p = match prepare(settings, reload_from) {
        Ok(p) => p,
        Err(e) => {
            error!("{e}");
            eprintln!("mcvideo-relay: {e}");
            return ExitCode::FAILURE;
        }
    };
    {
        let ng_addr = p.ng.as_ref().and_then(|(s, _)| s.local_addr().ok());
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {}", p.addr);
        if let Some(a) = ng_addr {
            let _ = writeln!(out, "ng listening on udp:{a}");
        }
        let _ = out.flush();
    }
    #[cfg(unix)]
    rt.spawn(reload_on_hangup(hangup, p.state.clone()));
    rt.block_on(serve(p, stop));
    ExitCode::SUCCESS
}

/// `mcvideo-relay check-config FILE`: reports every problem with its key, exits 1 if any.
pub fn check_config(path: &Path) -> ExitCode {
    let source = path.display().to_string();
    let (config, mut problems) = Config::read_file(path);
    problems.extend(config.validate());
    let base = path.parent();
    let mut warnings = Vec::new();
    if let Some(f) = &config.policy.file {
        let pp = config::resolve_path(base, f);
        match PolicyFile::load(&pp) {
            Ok(pf) => warnings.extend(
                pf.warnings()
                    .into_iter()
                    .map(|w| format!("policy.file: {}: {w}", pp.display())),
            ),
            Err(ps) => problems.extend(ps),
        }
    } else {
        warnings.push(
            "policy.file: not set: the relay trusts its controlling server (no authorization \
             policy)"
                .to_owned(),
        );
    }
    let token = match read_token(&config, base) {
        Ok(t) => t,
        Err(p) => {
            problems.push(p);
            None
        }
    };
    let addr = config.listen_addr();
    if !addr.ip().is_loopback() && token.is_none() {
        warnings.push(format!(
            "api.listen: {addr} is not a loopback address: `serve` will refuse to start \
             unless ${} (api.token_env) or api.token_file holds a bearer token",
            config.api.token_env
        ));
    }
    if problems.is_empty() {
        for w in &warnings {
            eprintln!("warning: {source}: {w}");
        }
        println!("{source}: OK");
        ExitCode::SUCCESS
    } else {
        print_problems(&source, &problems);
        eprintln!(
            "mcvideo-relay: {source}: {} problem{}",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        );
        ExitCode::FAILURE
    }
}
