//! The sidecar's configuration: an embedded default that works on a fresh machine, a TOML file
//! that overrides it, command-line flags on top, secrets from the environment.
//!
//! Every problem is reported with its key (`media.port_min: must be <= media.port_max`), all of
//! them at once: a value of the wrong type is reported and then left at its default so the
//! checks of every other key still run. Unknown keys and sections are errors.

use crate::control::call::CallConfig;
use crate::control::policy::RulePolicy;
use crate::control::server::TcConfig;
use crate::control::CommencementMode;
use crate::relay::{EngineConfig, MediaInterface};
use serde::Deserialize;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The environment variable the bearer token is read from unless `api.token_env` names another.
pub const DEFAULT_TOKEN_ENV: &str = "MCVIDEO_RELAY_API_TOKEN";

/// One problem with the configuration, keyed by where it is (`media.port_min`, `--ports`,
/// `policy.file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key (dotted path), flag or file the problem is about.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Problems (of the configuration, of the HA settings) on one line, `; ` between them.
pub(crate) fn one_line<T: fmt::Display>(problems: &[T]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Declares a config section: the struct (serde, `deny_unknown_fields`, every key defaulted)
/// and a per-key type check that reports each bad key on its own.
macro_rules! section {
    (
        $(#[$meta:meta])* $name:ident = $key:literal {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty = $default:expr, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $( $field: $default, )* }
            }
        }

        impl $name {
            const KEY: &'static str = $key;
            const FIELDS: &'static [&'static str] = &[$(stringify!($field)),*];

            /// Reports (and removes) every key that is unknown or whose value does not parse
            /// (wrong type, not an address, not one of the allowed words).
            fn check_types(table: &mut toml::Table, problems: &mut Vec<Problem>) {
                let mut bad = Vec::new();
                for (k, v) in table.iter() {
                    let res: Result<(), String> = if Self::FIELDS.contains(&k.as_str()) {
                        let one = toml::Table::from_iter([(k.clone(), v.clone())]);
                        toml::Value::Table(one)
                            .try_into::<Self>()
                            .map(|_| ())
                            .map_err(|e| e.message().trim().to_owned())
                    } else {
                        Err(format!(
                            "unknown key (the [{}] keys are: {})",
                            Self::KEY,
                            Self::FIELDS.join(", ")
                        ))
                    };
                    if let Err(m) = res {
                        problems.push(Problem::new(format!("{}.{}", Self::KEY, k), m));
                        bad.push(k.clone());
                    }
                }
                for k in bad {
                    table.remove(&k);
                }
            }
        }
    };
}

section! {
    /// `[api]`: the HTTP control API.
    ApiConfig = "api" {
        /// Address:port the control API listens on (port 0 = any free port).
        #[serde(deserialize_with = "de_socket_addr")]
        listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)),
        /// Environment variable holding the bearer token.
        token_env: String = DEFAULT_TOKEN_ENV.to_owned(),
        /// File holding the bearer token (e.g. a systemd credential); the environment wins.
        token_file: Option<String> = None,
        /// Largest request body accepted (larger = 413).
        max_body_bytes: usize = 256 * 1024,
        /// After a reload (SIGHUP, `POST /v1/admin/reload`) puts a new token in force, the old
        /// one is still accepted this long, so clients can switch over (0 = not at all).
        token_overlap_secs: u64 = 60,
        /// Every this many seconds, a `call.quality` event per established call on
        /// `GET /v1/events` (its media quality, as `GET /v1/calls/{id}` shows it); 0 = off.
        quality_event_secs: u64 = 0,
    }
}

section! {
    /// `[media]`: the relay's media sockets.
    MediaConfig = "media" {
        /// Address media sockets bind to; it goes into the SDP handed on.
        #[serde(deserialize_with = "de_ip_addr")]
        ip: IpAddr = IpAddr::from([127, 0, 0, 1]),
        /// Lowest media port.
        port_min: u16 = 40_000,
        /// Highest media port.
        port_max: u16 = 49_999,
        /// Forwarding threads (0 = one per core).
        workers: usize = 0,
        /// SO_RCVBUF / SO_SNDBUF asked for on each media socket (0 = kernel default).
        socket_buffer_bytes: usize = 1 << 20,
        /// Consecutive packets from one new address that latch a leg without other evidence.
        latch_after_packets: u32 = 5,
        /// New calls go to the first worker busy less than this share of its time (percent):
        /// calls are packed onto few workers and spread only as one gets busy.
        spread_above_busy_percent: u8 = 50,
        /// The kernel fast path (docs/kernel-fast-path.md): `"auto"` (when the build, the
        /// privilege and the kernel allow it; else userspace with one log line), `"off"`, or
        /// `"required"` (refuse to start without it).
        kernel_offload: String = "auto".to_owned(),
        /// Named media interfaces (`[[media.interfaces]]`): several networks, e.g. IPv4 access
        /// and an IPv6 core. Empty: one interface, `ip` with `port_min`..`port_max`.
        interfaces: Vec<InterfaceConfig> = Vec::new(),
    }
}

/// One `[[media.interfaces]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceConfig {
    /// Its name (the API's `caller.interface` and `callee.interface`, ng's `direction`).
    pub name: String,
    /// The address its media sockets bind to.
    #[serde(deserialize_with = "de_ip_addr")]
    pub ip: IpAddr,
    /// The address written into SDP instead (behind NAT).
    #[serde(default, deserialize_with = "de_opt_ip_addr")]
    pub advertised: Option<IpAddr>,
    /// Lowest port of its range.
    pub port_min: u16,
    /// Highest port of its range.
    pub port_max: u16,
}

fn de_opt_ip_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
    de_ip_addr(d).map(Some)
}

section! {
    /// `[calls]`: the call procedure.
    CallsConfig = "calls" {
        /// Offer the caller's audio to the callee along with the video.
        offer_audio: bool = true,
        /// Offer media other than audio, video and the control channel.
        offer_other_media: bool = false,
        /// Commencement mode when neither the caller nor the callee's UE sets one.
        #[serde(deserialize_with = "de_commencement_mode")]
        default_commencement_mode: CommencementMode = CommencementMode::Manual,
        /// Refuse calls to users with no registered UE.
        require_registered_callee: bool = false,
        /// Release an offered call the callee has not answered after this long.
        offer_timeout_secs: u64 = 120,
        /// Calls at most at once.
        max_calls: usize = 20_000,
    }
}

section! {
    /// `[transmission_control]`: timers and limits of the transmission control server.
    TransmissionControlConfig = "transmission_control" {
        /// T1, the private-call hang timer.
        t1_hang_secs: u64 = 30,
        /// T4, the Transmission Granted retransmission interval.
        t4_granted_ms: u64 = 1000,
        /// C4, Granted retransmissions before giving up.
        c4_granted: u32 = 3,
        /// No media from the granted caller this long completes the transmission.
        media_inactivity_secs: u64 = 10,
        /// Maximum transmission duration (0 = unlimited).
        max_duration_secs: u64 = 0,
        /// Field ID written for the Video SSRC (23 or 24).
        video_ssrc_field_id: u8 = 23,
    }
}

section! {
    /// `[group_calls]`: defaults of group video calls (a request may set Cx, C9 and the
    /// reception mode per call).
    GroupCallsConfig = "group_calls" {
        /// Cx: members that may transmit at once.
        max_transmitters: u8 = 1,
        /// C9: streams one receiver takes at once.
        max_streams_per_receiver: u8 = 4,
        /// How receivers get a new transmission: `automatic` or `manual`.
        reception_mode: String = "automatic".to_owned(),
        /// Queue Transmission Requests at the cap (else Rejected #1).
        queueing: bool = true,
        /// Queued requests at most.
        max_queue: usize = 16,
        /// T1, inactivity: nobody transmitted this long, the call is released.
        t1_inactivity_secs: u64 = 30,
        /// T2, Transmission Idle retransmission interval.
        t2_idle_ms: u64 = 1000,
        /// C2, Transmission Idle retransmissions.
        c2_idle: u32 = 10,
        /// No media from a transmitter this long ends its transmission.
        media_inactivity_secs: u64 = 10,
        /// Maximum transmission duration (0 = unlimited).
        max_duration_secs: u64 = 0,
        /// Packets from a member without permission tolerated before Revoked #3.
        revoke_after_packets: u32 = 5,
    }
}

section! {
    /// `[policy]`: who may push and receive pushes.
    PolicyConfig = "policy" {
        /// Policy file (relative to the config file). None = trust the controlling server.
        file: Option<String> = None,
    }
}

section! {
    /// `[ng]`: rtpengine's ng control protocol on UDP, for SIP proxies (Kamailio, OpenSIPS).
    NgConfig = "ng" {
        /// UDP address:port of the ng listener; `off` (or empty) switches it off.
        listen: String = "127.0.0.1:2223".to_owned(),
        /// Sources allowed to send ng requests (addresses or CIDR prefixes); empty = loopback
        /// only. Required when `listen` is not a loopback address (ng has no authentication).
        allow_from: Vec<String> = Vec::new(),
        /// Longest request accepted; longer datagrams are dropped and counted.
        max_request_bytes: usize = 32_768,
        /// How long a reply is kept for a retransmitted request with the same cookie.
        reply_cache_secs: u64 = 30,
        /// Most replies kept.
        reply_cache_entries: usize = 10_000,
        /// Media security of calls set up over ng (`mcvideo.media-security` overrides).
        media_security: String = "end_to_end".to_owned(),
        /// Commencement mode asked for (`mcvideo.commencement-mode` overrides); unset = the
        /// callee's UE setting, else `calls.default_commencement_mode`.
        commencement_mode: Option<String> = None,
    }
}

impl NgConfig {
    /// Whether the ng listener runs.
    pub fn enabled(&self) -> bool {
        let l = self.listen.trim();
        !(l.is_empty() || l.eq_ignore_ascii_case("off"))
    }
}

section! {
    /// `[log]`: structured logs on stderr.
    LogConfig = "log" {
        /// `text` or `json`.
        format: LogFormat = LogFormat::Text,
        /// Filter, e.g. `info` or `warn,mcvideo_relay=debug` (`RUST_LOG` wins).
        level: LogFilter = LogFilter::info(),
    }
}

/// `log.format`: how log lines are written on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("must be \"text\" or \"json\", not {s:?}")),
        }
    }
}

/// `log.level`: a log filter (`info`, `warn,mcvideo_relay=debug`), parsed once, with its text.
#[derive(Debug, Clone)]
pub struct LogFilter {
    text: String,
    targets: tracing_subscriber::filter::Targets,
}

impl LogFilter {
    /// `info`.
    pub fn info() -> Self {
        LogFilter {
            text: "info".to_owned(),
            targets: tracing_subscriber::filter::Targets::new()
                .with_default(tracing::level_filters::LevelFilter::INFO),
        }
    }

    /// The filter as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed filter.
    pub fn targets(&self) -> &tracing_subscriber::filter::Targets {
        &self.targets
    }
}

impl PartialEq for LogFilter {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl FromStr for LogFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(LogFilter {
            text: s.to_owned(),
            targets: parse_log_filter(s)?,
        })
    }
}

impl<'de> Deserialize<'de> for LogFilter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses a flag or config value naming an address and port.
pub fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    SocketAddr::from_str(s).map_err(|e| format!("`{s}` is not an IP:port address ({e})"))
}

/// Parses a flag or config value naming an IP address.
pub fn parse_ip_addr(s: &str) -> Result<IpAddr, String> {
    IpAddr::from_str(s).map_err(|e| format!("`{s}` is not an IP address ({e})"))
}

fn de_socket_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    parse_socket_addr(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn de_ip_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<IpAddr, D::Error> {
    parse_ip_addr(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn de_commencement_mode<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<CommencementMode, D::Error> {
    let s = String::deserialize(d)?;
    CommencementMode::parse(&s).ok_or_else(|| {
        serde::de::Error::custom(format!("must be \"automatic\" or \"manual\", not {s:?}"))
    })
}

section! {
    /// `[recording]`: what calls leave behind as evidence (docs/recording.md). Off while `dir`
    /// is empty; with a directory, every call keeps a transmission log unless
    /// `transmission_log` is false.
    RecordingSection = "recording" {
        /// The directory recordings go in (created, mode 0700); empty: recording is off.
        dir: String = String::new(),
        /// A recording starts only while the directory's file system has this much free space.
        min_free_bytes: u64 = 256 << 20,
        /// Recordings older than this many hours are removed (0: kept whatever their age).
        max_age_hours: u64 = 720,
        /// The oldest recordings are removed while all of them take more (0: no limit).
        max_total_bytes: u64 = 0,
        /// Every call keeps a transmission log (JSON lines of its transmission control events).
        transmission_log: bool = true,
        /// Records waiting for the writer thread at most; more are dropped and counted.
        queue: usize = 65_536,
        /// Which calls' media is recorded (pcap): `off` (only the calls asked for, by the API's
        /// `record` or ng's `record-call`) or `all`.
        media: String = "off".to_owned(),
        /// A media file is rotated once it holds this many bytes.
        max_file_bytes: u64 = 256 << 20,
    }
}

impl RecordingSection {
    /// The engine's recording settings (`None` while `dir` is empty).
    pub fn recording_config(&self) -> Option<crate::relay::RecordingConfig> {
        if self.dir.is_empty() {
            return None;
        }
        Some(crate::relay::RecordingConfig {
            dir: PathBuf::from(&self.dir),
            min_free_bytes: self.min_free_bytes,
            max_age: (self.max_age_hours > 0)
                .then(|| Duration::from_secs(self.max_age_hours.saturating_mul(3600))),
            max_total_bytes: self.max_total_bytes,
            transmission_log: self.transmission_log,
            queue: self.queue,
            media_all: self.media == "all",
            max_file_bytes: self.max_file_bytes,
        })
    }
}

section! {
    /// `[webrtc]`: browsers watching calls over WebRTC (WHEP, feature `webrtc`,
    /// docs/webrtc.md). A relay built without the feature answers the WHEP routes with
    /// `501 not_built`.
    WebrtcSection = "webrtc" {
        /// The address viewer sockets bind to and offer to browsers; empty: `media.ip`.
        address: String = String::new(),
        /// Viewers at most, every call together (0: WHEP is off).
        max_viewers: usize = 32,
        /// Seconds a browser may take to connect (ICE and DTLS) before it is given up.
        connect_timeout_secs: u64 = 20,
    }
}

section! {
    /// `[ha]`: high availability (feature `ha`): call records in Redis, a standby that adopts
    /// a dead peer's calls. Off by default: the relay runs standalone, with no Redis. When on,
    /// `serve` starts the store ([`HaSection::ha_config`]): every call is written on each
    /// control-plane change and about every second while its media flows, a dead peer's calls
    /// are adopted, `GET /v1/cluster` lists the instances.
    HaSection = "ha" {
        /// Switch HA on.
        enabled: bool = false,
        /// `redis://` or `rediss://` (TLS), with `user:password@` if Redis wants them.
        redis_url: String = "redis://127.0.0.1:6379".to_owned(),
        /// Environment variable whose value, when set, replaces `redis_url` (keeps a password
        /// out of the file).
        redis_url_env: String = DEFAULT_HA_REDIS_URL_ENV.to_owned(),
        /// For `rediss://`: a PEM file with the CA certificate Redis' certificate chains to
        /// (unset: the system's trusted roots).
        redis_ca_file: Option<String> = None,
        /// Redis Sentinels (`host:port`, or `redis://` URLs with a password) that name the
        /// Redis primary: the relay follows a failover without a restart. `redis_url` then
        /// gives only the scheme, user, password and database of the primary.
        sentinels: Vec<String> = Vec::new(),
        /// The name the sentinels monitor the primary under (required with `sentinels`).
        master_name: String = String::new(),
        /// This instance's ID, unique in the cluster and kept across restarts.
        instance_id: String = String::new(),
        /// The instances whose calls this one adopts when their heartbeat lapses.
        standby_for: Vec<String> = Vec::new(),
        /// How often the heartbeat is written.
        heartbeat_ms: u64 = 200,
        /// A peer whose heartbeat is older than this is down.
        failure_ms: u64 = 1000,
        /// A peer whose heartbeat is older than this is probed (a TCP connection to its
        /// `probe_address`): refused means its process is gone, and its calls are adopted at
        /// once. Off unless between `heartbeat_ms` and `failure_ms`.
        suspect_ms: u64 = 300,
        /// `IP:port` where the peers probe this instance (empty: the control API's address,
        /// unless `api.listen` is a wildcard address: then peers wait `failure_ms`).
        probe_address: String = String::new(),
        /// TTL of every call, lease and owner key (a safety net, refreshed every quarter).
        key_ttl_secs: u64 = 3600,
        /// Distinct calls waiting for Redis at most (then a full resync follows).
        max_backlog: usize = 100_000,
        /// Prefix of every key.
        key_prefix: String = "mcvr".to_owned(),
        /// One Redis command longer than this counts as Redis down.
        command_timeout_ms: u64 = 1000,
        /// File holding the 32-byte key (64 hex digits or base64) that seals media keys in
        /// Redis; the environment variable `seal_key_env` wins.
        seal_key_file: Option<String> = None,
        /// Environment variable holding the seal key.
        seal_key_env: String = DEFAULT_HA_SEAL_KEY_ENV.to_owned(),
    }
}

/// The environment variable that, when set, replaces `ha.redis_url` unless
/// `ha.redis_url_env` names another.
pub const DEFAULT_HA_REDIS_URL_ENV: &str = "MCVIDEO_RELAY_HA_REDIS_URL";
/// The environment variable the HA seal key is read from unless `ha.seal_key_env` names another.
pub const DEFAULT_HA_SEAL_KEY_ENV: &str = "MCVIDEO_RELAY_HA_SEAL_KEY";

impl HaSection {
    /// The HA store's configuration: the Redis URL and the seal key from the environment when
    /// set there, else from the file. Every problem is keyed `ha.<key>`.
    #[cfg(feature = "ha")]
    pub fn ha_config(&self) -> Result<crate::ha::HaConfig, Vec<Problem>> {
        use crate::ha::{HaConfig, RedisUrl, SealKey};
        let mut p = Vec::new();
        let url_text = env_nonempty(&self.redis_url_env).unwrap_or_else(|| self.redis_url.clone());
        let url = RedisUrl::parse(&url_text).map_err(|e| {
            let from = match env_nonempty(&self.redis_url_env) {
                Some(_) => format!("${}", self.redis_url_env),
                None => "ha.redis_url".to_owned(),
            };
            Problem::new(from, e.message)
        });
        let key = match (env_nonempty(&self.seal_key_env), &self.seal_key_file) {
            (Some(text), _) => SealKey::from_text(&text)
                .map_err(|e| Problem::new(format!("${}", self.seal_key_env), e.to_string())),
            (None, Some(f)) => SealKey::from_file(Path::new(f))
                .map_err(|e| Problem::new("ha.seal_key_file", e.to_string())),
            (None, None) => Err(Problem::new(
                "ha.seal_key_file",
                format!(
                    "HA needs a seal key: set ${} or ha.seal_key_file (32 bytes as 64 hex \
                     digits or base64, e.g. `openssl rand -hex 32`)",
                    self.seal_key_env
                ),
            )),
        };
        let (url, key) = match (url, key) {
            (Ok(u), Ok(k)) => (u, k),
            (u, k) => {
                p.extend(u.err());
                p.extend(k.err());
                // go on with placeholders so that every other setting is checked too
                let u = RedisUrl::parse("redis://127.0.0.1")
                    .map_err(|e| vec![Problem::new("ha", e.message)])?;
                let k = SealKey::from_bytes(&[0; crate::ha::SEAL_KEY_LEN])
                    .map_err(|e| vec![Problem::new("ha", e.to_string())])?;
                (u, k)
            }
        };
        let mut c = HaConfig::new(url, self.instance_id.clone(), key);
        for s in &self.sentinels {
            match RedisUrl::parse_sentinel(s) {
                Ok(u) => c.sentinels.push(u),
                Err(e) => {
                    p.push(Problem::new("ha.sentinels", e.message));
                    // a placeholder so that master_name is checked as if it were valid
                    c.sentinels
                        .extend(RedisUrl::parse("redis://127.0.0.1:26379").ok());
                }
            }
        }
        c.master_name.clone_from(&self.master_name);
        c.standby_for.clone_from(&self.standby_for);
        c.heartbeat_interval = Duration::from_millis(self.heartbeat_ms);
        c.failure_time = Duration::from_millis(self.failure_ms);
        c.suspect_time = Duration::from_millis(self.suspect_ms);
        if !self.probe_address.is_empty() {
            match self.probe_address.parse() {
                Ok(a) => c.probe_address = Some(a),
                Err(_) => p.push(Problem::new(
                    "ha.probe_address",
                    format!("`{}` is not IP:port", self.probe_address),
                )),
            }
        }
        c.key_ttl = Duration::from_secs(self.key_ttl_secs);
        c.max_backlog = self.max_backlog;
        c.key_prefix.clone_from(&self.key_prefix);
        c.command_timeout = Duration::from_millis(self.command_timeout_ms);
        if let Some(f) = &self.redis_ca_file {
            match std::fs::read(f) {
                Ok(pem) => c.tls_ca_pem = Some(pem),
                Err(e) => p.push(Problem::new(
                    "ha.redis_ca_file",
                    format!("cannot read {f}: {e}"),
                )),
            }
        }
        if let Err(errs) = c.validate() {
            p.extend(errs.into_iter().map(|e| {
                let key = match e.key {
                    "heartbeat_interval" => "heartbeat_ms",
                    "failure_time" => "failure_ms",
                    "key_ttl" => "key_ttl_secs",
                    "command_timeout" => "command_timeout_ms",
                    "tls_ca" => "redis_ca_file",
                    k => k,
                };
                Problem::new(format!("ha.{key}"), e.message)
            }));
        }
        if p.is_empty() {
            Ok(c)
        } else {
            Err(p)
        }
    }

    fn validate(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        let mut s = Section::new("ha", &mut p);
        s.env_name("redis_url_env", &self.redis_url_env);
        s.env_name("seal_key_env", &self.seal_key_env);
        if !self.enabled || !p.is_empty() {
            return p;
        }
        #[cfg(feature = "ha")]
        if let Err(e) = self.ha_config() {
            p.extend(e);
        }
        #[cfg(not(feature = "ha"))]
        p.push(Problem::new(
            "ha.enabled",
            "this build has no HA (cargo feature `ha`)",
        ));
        p
    }
}

#[cfg(feature = "ha")]
fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[api]`
    pub api: ApiConfig,
    /// `[media]`
    pub media: MediaConfig,
    /// `[calls]`
    pub calls: CallsConfig,
    /// `[transmission_control]`
    pub transmission_control: TransmissionControlConfig,
    /// `[group_calls]`
    pub group_calls: GroupCallsConfig,
    /// `[policy]`
    pub policy: PolicyConfig,
    /// `[log]`
    pub log: LogConfig,
    /// `[ng]`
    pub ng: NgConfig,
    /// `[ha]`
    pub ha: HaSection,
    /// `[recording]`
    pub recording: RecordingSection,
    /// `[webrtc]`
    pub webrtc: WebrtcSection,
}

/// The embedded default configuration, as a file (what `serve` runs with when given none).
pub const DEFAULT_CONFIG_TOML: &str = r#"# mcvideo-relay embedded defaults
[api]
listen = "127.0.0.1:8080"
token_env = "MCVIDEO_RELAY_API_TOKEN"
max_body_bytes = 262144

[media]
ip = "127.0.0.1"
port_min = 40000
port_max = 49999
"#;

/// A policy file: allow and deny lists of MCVideo ID patterns with `*`, read into the library's
/// rule policy itself.
pub type PolicyFile = RulePolicy;

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn syntax_problem(key: &str, text: &str, e: &toml::de::Error) -> Problem {
    let at = e.span().map(|s| line_col(text, s.start));
    let message = match at {
        Some((l, c)) => format!("line {l}, column {c}: {}", e.message().trim()),
        None => e.message().trim().to_owned(),
    };
    Problem::new(key, message)
}

impl Config {
    /// Parses a config file's text. Every unknown key and every value of the wrong type is a
    /// problem; the rest is still read (bad keys keep their defaults), then [`Config::validate`]
    /// should run to find the remaining problems.
    pub fn parse(text: &str) -> (Config, Vec<Problem>) {
        let mut problems = Vec::new();
        let mut table = match toml::from_str::<toml::Table>(text) {
            Ok(t) => t,
            Err(e) => {
                problems.push(syntax_problem("(syntax)", text, &e));
                return (Config::default(), problems);
            }
        };
        let mut bad = Vec::new();
        for (k, v) in table.iter_mut() {
            let Some(t) = v.as_table_mut() else {
                problems.push(Problem::new(
                    k.clone(),
                    format!("must be a table ([{k}] section)"),
                ));
                bad.push(k.clone());
                continue;
            };
            match k.as_str() {
                ApiConfig::KEY => ApiConfig::check_types(t, &mut problems),
                MediaConfig::KEY => MediaConfig::check_types(t, &mut problems),
                CallsConfig::KEY => CallsConfig::check_types(t, &mut problems),
                TransmissionControlConfig::KEY => {
                    TransmissionControlConfig::check_types(t, &mut problems)
                }
                GroupCallsConfig::KEY => GroupCallsConfig::check_types(t, &mut problems),
                PolicyConfig::KEY => PolicyConfig::check_types(t, &mut problems),
                LogConfig::KEY => LogConfig::check_types(t, &mut problems),
                NgConfig::KEY => NgConfig::check_types(t, &mut problems),
                HaSection::KEY => HaSection::check_types(t, &mut problems),
                RecordingSection::KEY => RecordingSection::check_types(t, &mut problems),
                WebrtcSection::KEY => WebrtcSection::check_types(t, &mut problems),
                _ => {
                    problems.push(Problem::new(
                        k.clone(),
                        "unknown section (the sections are: api, media, calls, \
                         transmission_control, group_calls, policy, log, ng, ha, recording, webrtc)",
                    ));
                    bad.push(k.clone());
                }
            }
        }
        for k in bad {
            table.remove(&k);
        }
        match toml::Value::Table(table).try_into::<Config>() {
            Ok(c) => (c, problems),
            Err(e) => {
                problems.push(Problem::new("(config)", e.message().trim()));
                (Config::default(), problems)
            }
        }
    }

    /// The embedded defaults.
    pub fn embedded() -> Config {
        let (c, problems) = Config::parse(DEFAULT_CONFIG_TOML);
        debug_assert!(problems.is_empty(), "{problems:?}");
        c
    }

    /// Reads and parses a file (see [`Config::parse`]; [`Config::validate`] is still to run).
    /// A file that cannot be read is a problem keyed by its path.
    pub fn read_file(path: &Path) -> (Config, Vec<Problem>) {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                return (
                    Config::default(),
                    vec![Problem::new(
                        path.display().to_string(),
                        format!("cannot read: {e}"),
                    )],
                )
            }
        };
        Config::parse(&text)
    }

    /// Every semantic problem (ranges, addresses, enumerations), each with its key.
    pub fn validate(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        validate_api(&self.api, &mut p);
        validate_media(&self.media, &mut p);
        validate_calls(&self.calls, &mut p);
        validate_transmission_control(&self.transmission_control, &mut p);
        validate_group_calls(&self.group_calls, &mut p);
        validate_policy(&self.policy, &mut p);
        p.extend(super::ng::validate(&self.ng));
        p.extend(self.ha.validate());
        validate_recording(&self.recording, &mut p);
        validate_webrtc(&self.webrtc, &mut p);
        p
    }

    /// The engine configuration this file describes (call after [`Config::validate`] found
    /// nothing).
    #[allow(clippy::needless_update)] // settings added to the library later keep their defaults
    pub fn engine_config(&self) -> EngineConfig {
        let d = EngineConfig::default();
        let t = &self.transmission_control;
        let tc = TcConfig {
            t1_inactivity: Duration::from_secs(t.t1_hang_secs),
            t4_granted: Duration::from_millis(t.t4_granted_ms),
            c4_granted: t.c4_granted,
            media_inactivity: Duration::from_secs(t.media_inactivity_secs),
            max_duration: max_duration(t.max_duration_secs),
            video_ssrc_field_id: t.video_ssrc_field_id,
            ..TcConfig::default()
        };
        let c = &self.calls;
        let call = CallConfig {
            tc,
            offer_audio: c.offer_audio,
            offer_other_media: c.offer_other_media,
            default_commencement_mode: c.default_commencement_mode,
            require_registered_callee: c.require_registered_callee,
            offer_timeout: Duration::from_secs(c.offer_timeout_secs),
            max_calls: c.max_calls,
            ..CallConfig::default()
        };
        let g = &self.group_calls;
        let group = TcConfig {
            max_transmitters: g.max_transmitters.max(1),
            max_streams_per_receiver: g.max_streams_per_receiver.max(1),
            reception_mode: crate::control::server::ReceptionMode::parse(&g.reception_mode)
                .unwrap_or_default(),
            queueing: g.queueing,
            max_queue: g.max_queue,
            t1_inactivity: Duration::from_secs(g.t1_inactivity_secs),
            t2_idle: Duration::from_millis(g.t2_idle_ms),
            c2_idle: g.c2_idle,
            media_inactivity: Duration::from_secs(g.media_inactivity_secs),
            max_duration: max_duration(g.max_duration_secs),
            revoke_after: g.revoke_after_packets,
            video_ssrc_field_id: t.video_ssrc_field_id,
            ..TcConfig::default()
        };
        let m = &self.media;
        EngineConfig {
            group,
            media_ip: m.ip,
            port_min: m.port_min,
            port_max: m.port_max,
            workers: m.workers,
            call,
            latch_after_packets: m.latch_after_packets,
            socket_buffer_bytes: m.socket_buffer_bytes,
            spread_above_busy_percent: m.spread_above_busy_percent,
            kernel_offload: crate::relay::KernelOffload::parse(&m.kernel_offload)
                .unwrap_or_default(),
            interfaces: m
                .interfaces
                .iter()
                .map(|i| MediaInterface {
                    name: i.name.clone(),
                    ip: i.ip,
                    advertised: i.advertised,
                    port_min: i.port_min,
                    port_max: i.port_max,
                })
                .collect(),
            recording: self.recording.recording_config(),
            ..d
        }
    }

    /// The control API's address.
    pub fn listen_addr(&self) -> SocketAddr {
        self.api.listen
    }
}

/// The checks of one section: each failed check adds a problem keyed `{section}.{key}`.
struct Section<'p> {
    name: &'static str,
    problems: &'p mut Vec<Problem>,
}

impl<'p> Section<'p> {
    fn new(name: &'static str, problems: &'p mut Vec<Problem>) -> Self {
        Section { name, problems }
    }

    fn fail(&mut self, key: &str, message: impl Into<String>) {
        let key = format!("{}.{key}", self.name);
        self.problems.push(Problem::new(key, message));
    }

    /// `value` within `range`, else "must be between {start} and {end}".
    fn between<T: PartialOrd + fmt::Display>(
        &mut self,
        key: &str,
        value: T,
        range: std::ops::RangeInclusive<T>,
    ) {
        if !range.contains(&value) {
            let (lo, hi) = range.into_inner();
            self.fail(key, format!("must be between {lo} and {hi}"));
        }
    }

    /// `value` at most `max`, else `message`.
    fn at_most<T: PartialOrd>(&mut self, key: &str, value: T, max: T, message: &str) {
        if value > max {
            self.fail(key, message);
        }
    }

    /// `value` not zero, else "must be >= 1".
    fn at_least_one<T: PartialEq + Default>(&mut self, key: &str, value: T) {
        if value == T::default() {
            self.fail(key, "must be >= 1");
        }
    }

    /// A maximum transmission duration in seconds: at most a week, 0 for unlimited.
    fn max_duration_secs(&mut self, value: u64) {
        let unlimited = "must be <= 604800 (0 = unlimited)";
        self.at_most("max_duration_secs", value, 7 * 86_400, unlimited);
    }

    /// `name` can name an environment variable (not empty, no `=` or NUL).
    fn env_name(&mut self, key: &str, name: &str) {
        if name.is_empty() || name.contains(['=', '\0']) {
            self.fail(key, "must be the name of an environment variable");
        }
    }

    /// A path, when one is given, is not empty.
    fn path(&mut self, key: &str, path: Option<&String>) {
        if path.is_some_and(|f| f.is_empty()) {
            self.fail(key, "must be a path");
        }
    }
}

/// The `[webrtc]` section.
fn validate_webrtc(w: &WebrtcSection, p: &mut Vec<Problem>) {
    let mut s = Section::new("webrtc", p);
    if !w.address.is_empty() {
        match w.address.parse::<std::net::IpAddr>() {
            Ok(ip) if ip.is_unspecified() => s.fail(
                "address",
                "must be an address browsers can reach, not a wildcard",
            ),
            Ok(_) => {}
            Err(_) => s.fail("address", "must be an IP address (empty: media.ip)"),
        }
    }
    s.between("max_viewers", w.max_viewers, 0..=4096);
    s.between("connect_timeout_secs", w.connect_timeout_secs, 1..=300);
}

/// The `[recording]` section.
fn validate_recording(r: &RecordingSection, p: &mut Vec<Problem>) {
    let mut s = Section::new("recording", p);
    if !r.dir.is_empty() && !Path::new(&r.dir).is_absolute() {
        s.fail("dir", "must be an absolute path (empty: recording is off)");
    }
    s.between("queue", r.queue, 16..=1 << 22);
    if !matches!(r.media.as_str(), "off" | "all") {
        s.fail("media", "must be \"off\" or \"all\"");
    }
    s.between("max_file_bytes", r.max_file_bytes, 1 << 16..=1 << 40);
    let age = "must be <= 87600 (ten years; 0 = kept whatever their age)";
    s.at_most("max_age_hours", r.max_age_hours, 87_600, age);
}

/// The `[api]` section.
fn validate_api(a: &ApiConfig, p: &mut Vec<Problem>) {
    let mut s = Section::new("api", p);
    s.env_name("token_env", &a.token_env);
    s.path("token_file", a.token_file.as_ref());
    if !(1024..=64 << 20).contains(&a.max_body_bytes) {
        s.fail(
            "max_body_bytes",
            format!("must be between 1024 and {} bytes", 64 << 20),
        );
    }
    let overlap = "must be <= 86400 (0 = the old token stops at once)";
    s.at_most("token_overlap_secs", a.token_overlap_secs, 86_400, overlap);
}

/// The `[media]` section.
fn validate_media(m: &MediaConfig, p: &mut Vec<Problem>) {
    let mut s = Section::new("media", p);
    if m.ip.is_unspecified() || m.ip.is_multicast() {
        s.fail(
            "ip",
            "must be a unicast address of this host (it goes into the SDP), not a \
             wildcard or multicast address",
        );
    }
    s.at_least_one("port_min", m.port_min);
    if m.port_min > m.port_max {
        let message = format!(
            "must be <= media.port_max ({} > {})",
            m.port_min, m.port_max
        );
        s.fail("port_min", message);
    } else if m.port_max - m.port_min < 3 {
        let message = format!(
            "the range {}-{} must hold at least two port pairs (4 ports)",
            m.port_min, m.port_max
        );
        s.fail("port_max", message);
    }
    let workers = "must be <= 1024 (0 = one per core)";
    s.at_most("workers", m.workers, 1024, workers);
    s.between(
        "spread_above_busy_percent",
        m.spread_above_busy_percent,
        0..=100,
    );
    p.extend(validate_interfaces(&m.interfaces));
    let mut s = Section::new("media", p);
    s.at_most(
        "socket_buffer_bytes",
        m.socket_buffer_bytes,
        1 << 30,
        "must be <= 1 GiB",
    );
    s.between("latch_after_packets", m.latch_after_packets, 1..=1000);
    if crate::relay::KernelOffload::parse(&m.kernel_offload).is_none() {
        let message = format!(
            "must be \"auto\", \"off\" or \"required\", not {:?}",
            m.kernel_offload
        );
        s.fail("kernel_offload", message);
    }
}

/// The `[calls]` section.
fn validate_calls(c: &CallsConfig, p: &mut Vec<Problem>) {
    let mut s = Section::new("calls", p);
    s.between("offer_timeout_secs", c.offer_timeout_secs, 1..=86_400);
    s.at_least_one("max_calls", c.max_calls);
}

/// The `[transmission_control]` section.
fn validate_transmission_control(t: &TransmissionControlConfig, p: &mut Vec<Problem>) {
    let mut s = Section::new("transmission_control", p);
    s.between("t1_hang_secs", t.t1_hang_secs, 1..=86_400);
    s.between("t4_granted_ms", t.t4_granted_ms, 10..=60_000);
    s.at_most("c4_granted", t.c4_granted, 100, "must be <= 100");
    s.between("media_inactivity_secs", t.media_inactivity_secs, 1..=86_400);
    s.max_duration_secs(t.max_duration_secs);
    if !matches!(t.video_ssrc_field_id, 23 | 24) {
        let message = format!("must be 23 or 24, not {}", t.video_ssrc_field_id);
        s.fail("video_ssrc_field_id", message);
    }
}

/// The `[group_calls]` section.
fn validate_group_calls(g: &GroupCallsConfig, p: &mut Vec<Problem>) {
    let mut s = Section::new("group_calls", p);
    s.at_least_one("max_transmitters", g.max_transmitters);
    s.at_least_one("max_streams_per_receiver", g.max_streams_per_receiver);
    if crate::control::server::ReceptionMode::parse(&g.reception_mode).is_none() {
        s.fail("reception_mode", "must be \"automatic\" or \"manual\"");
    }
    s.between("t1_inactivity_secs", g.t1_inactivity_secs, 1..=86_400);
    s.between("media_inactivity_secs", g.media_inactivity_secs, 1..=86_400);
    s.between("t2_idle_ms", g.t2_idle_ms, 10..=60_000);
    s.at_most("c2_idle", g.c2_idle, 100, "must be <= 100");
    s.max_duration_secs(g.max_duration_secs);
}

/// The `[policy]` section.
fn validate_policy(policy: &PolicyConfig, p: &mut Vec<Problem>) {
    Section::new("policy", p).path("file", policy.file.as_ref());
}

/// Every problem with `[[media.interfaces]]`, keyed `media.interfaces[N].key`.
fn validate_interfaces(list: &[InterfaceConfig]) -> Vec<Problem> {
    let mut p = Vec::new();
    for (n, i) in list.iter().enumerate() {
        let key = |k: &str| format!("media.interfaces[{n}].{k}");
        let valid_name = !i.name.is_empty()
            && i.name.len() <= 64
            && i.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !valid_name {
            p.push(Problem::new(
                key("name"),
                "must be 1 to 64 of A-Z a-z 0-9 - _ .",
            ));
        }
        if list.iter().take(n).any(|o| o.name == i.name) {
            p.push(Problem::new(
                key("name"),
                format!("{:?} is used twice", i.name),
            ));
        }
        if i.ip.is_unspecified() || i.ip.is_multicast() {
            p.push(Problem::new(
                key("ip"),
                "must be a unicast address of this host, not a wildcard or multicast address",
            ));
        }
        if i.port_min == 0 || i.port_min > i.port_max || i.port_max - i.port_min < 3 {
            p.push(Problem::new(
                key("port_min"),
                format!(
                    "the range {}-{} must be 1..65535 and hold at least two port pairs",
                    i.port_min, i.port_max
                ),
            ));
        }
        let overlaps = list
            .iter()
            .take(n)
            .any(|o| o.ip == i.ip && o.port_min <= i.port_max && i.port_min <= o.port_max);
        if overlaps {
            p.push(Problem::new(
                key("port_min"),
                "overlaps the range of an earlier interface on the same address",
            ));
        }
    }
    p
}

/// Parses a log filter (`info`, `warn,mcvideo_relay=debug`).
pub fn parse_log_filter(s: &str) -> Result<tracing_subscriber::filter::Targets, String> {
    tracing_subscriber::filter::Targets::from_str(s)
        .map_err(|e| format!("not a log filter like `info` or `warn,mcvideo_relay=debug` ({e})"))
}

/// Where a relative path in the config file points: beside the file.
pub fn resolve_path(base_dir: Option<&Path>, file: &str) -> PathBuf {
    let p = Path::new(file);
    match base_dir {
        Some(d) if p.is_relative() => d.join(p),
        _ => p.to_path_buf(),
    }
}

impl PolicyFile {
    /// Reads a policy file; problems are keyed `policy.file` (or `policy.file: <key>`).
    pub fn load(path: &Path) -> Result<PolicyFile, Vec<Problem>> {
        let key = "policy.file";
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![Problem::new(
                key,
                format!("cannot read {}: {e}", path.display()),
            )]
        })?;
        Self::parse(&text).map_err(|ps| {
            ps.into_iter()
                .map(|p| Problem::new(key, format!("{}: {}", path.display(), p)))
                .collect()
        })
    }

    /// Parses a policy file's text; every problem keyed by the policy file's own key.
    pub fn parse(text: &str) -> Result<PolicyFile, Vec<Problem>> {
        let table = toml::from_str::<toml::Table>(text)
            .map_err(|e| vec![syntax_problem("(syntax)", text, &e)])?;
        let mut problems = Vec::new();
        const KEYS: [&str; 4] = ["push_allow", "push_deny", "receive_allow", "receive_deny"];
        for (k, v) in &table {
            if !KEYS.contains(&k.as_str()) {
                problems.push(Problem::new(
                    k.clone(),
                    format!("unknown key (the keys are: {})", KEYS.join(", ")),
                ));
                continue;
            }
            match v.clone().try_into::<Vec<String>>() {
                Err(e) => problems.push(Problem::new(k.clone(), e.message().trim())),
                Ok(list) => {
                    for (i, pat) in list.iter().enumerate() {
                        if pat.is_empty() || pat.len() > 1024 {
                            problems.push(Problem::new(
                                format!("{k}[{i}]"),
                                "a pattern must be 1 to 1024 characters",
                            ));
                        }
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        toml::Value::Table(table)
            .try_into::<PolicyFile>()
            .map_err(|e| vec![Problem::new("(policy)", e.message().trim())])
    }

    /// Advice about a valid but probably unintended policy (an empty allow list refuses all).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.push_allow.is_empty() {
            w.push("push_allow is empty: nobody may push video".to_owned());
        }
        if self.receive_allow.is_empty() {
            w.push("receive_allow is empty: nobody may receive a video push".to_owned());
        }
        w
    }

    /// The policy, shared as the engine takes it.
    pub fn into_policy(self) -> Arc<RulePolicy> {
        Arc::new(self)
    }
}

/// A `max_duration_secs` setting: 0 is unlimited.
fn max_duration(secs: u64) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// `serve`'s command-line options (clap derive: `mcvideo-relay serve --help`).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct ServeOptions {
    /// TOML configuration file (see deploy/config.example.toml)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// control API address:port (overrides api.listen)
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// media address (overrides media.ip)
    #[arg(long, value_name = "IP")]
    pub media_ip: Option<String>,
    /// media port range (overrides media.port_min/port_max)
    #[arg(long, value_name = "MIN-MAX")]
    pub ports: Option<String>,
    /// text (default) or json (overrides log.format)
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// rtpengine ng control protocol on UDP (overrides ng.listen; default 127.0.0.1:2223,
    /// `off` switches it off)
    #[arg(long, value_name = "ADDR|off")]
    pub ng_listen: Option<String>,
    /// switch high availability on as this instance (overrides ha.instance_id, sets
    /// ha.enabled)
    #[arg(long, value_name = "ID")]
    pub ha_instance_id: Option<String>,
    /// the instances whose calls this one adopts, comma-separated (overrides ha.standby_for)
    #[arg(long, value_name = "ID,...")]
    pub ha_standby_for: Option<String>,
    /// Redis for HA, redis:// or rediss:// (overrides ha.redis_url; a password does not go on
    /// the command line: $MCVIDEO_RELAY_HA_REDIS_URL)
    #[arg(long, value_name = "URL")]
    pub ha_redis_url: Option<String>,
}

/// `serve`'s summary (`mcvideo-relay --help`).
pub const SERVE_ABOUT: &str = "run the relay and its HTTP/JSON control API (`serve --help` for
details); with no file it runs on embedded defaults (API on 127.0.0.1:8080,
media on 127.0.0.1 ports 40000-49999)";

/// `serve --help`'s description.
pub const SERVE_LONG_ABOUT: &str = "\
Runs the media relay with its HTTP/JSON control API. Without --config it runs on the
embedded defaults: control API on 127.0.0.1:8080, media on 127.0.0.1 ports 40000-49999.
The first line on stdout is `listening on ADDR` (useful with --listen 127.0.0.1:0).";

/// `serve --help`'s closing section: the environment.
pub const SERVE_AFTER_HELP: &str = "\
Environment:
  MCVIDEO_RELAY_API_TOKEN  bearer token for the control API (or the variable that
                           api.token_env names); required when api.listen is not loopback
  RUST_LOG                 log filter (overrides log.level), e.g. warn,mcvideo_relay=debug
  MCVIDEO_RELAY_HA_REDIS_URL  Redis URL for HA with its password (or ha.redis_url_env's)
  MCVIDEO_RELAY_HA_SEAL_KEY   32-byte key sealing media keys in Redis (or ha.seal_key_env's)";

/// `serve --help`'s layout: usage, description, options, environment.
pub const SERVE_HELP_TEMPLATE: &str =
    "{usage-heading} {usage}\n\n{before-help}{all-args}{after-help}";

/// `mcvideo-relay serve` alone, for [`ServeOptions::parse`].
#[derive(Debug, clap::Parser)]
#[command(
    name = "mcvideo-relay serve",
    about = SERVE_ABOUT,
    before_help = SERVE_LONG_ABOUT,
    after_help = SERVE_AFTER_HELP,
    help_template = SERVE_HELP_TEMPLATE
)]
struct ServeCommand {
    #[command(flatten)]
    options: ServeOptions,
}

impl ServeOptions {
    /// Parses `serve`'s arguments (after the word `serve`) as the binary does. `Ok(None)` =
    /// `--help` (printed by the caller: [`ServeOptions::help`]); `Err` = the usage error.
    pub fn parse(args: &[String]) -> Result<Option<ServeOptions>, String> {
        use clap::Parser as _;
        let argv = std::iter::once("serve").chain(args.iter().map(String::as_str));
        match ServeCommand::try_parse_from(argv) {
            Ok(c) => Ok(Some(c.options)),
            Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// `serve --help`.
    pub fn help() -> String {
        use clap::CommandFactory as _;
        ServeCommand::command().render_long_help().to_string()
    }

    /// Applies the flags over `config`; a malformed flag is a problem keyed by the flag.
    pub fn apply(&self, config: &mut Config) -> Vec<Problem> {
        let mut p = Vec::new();
        if let Some(l) = &self.listen {
            match parse_socket_addr(l) {
                Ok(a) => config.api.listen = a,
                Err(e) => p.push(Problem::new("--listen", e)),
            }
        }
        if let Some(ip) = &self.media_ip {
            match parse_ip_addr(ip) {
                Ok(a) => config.media.ip = a,
                Err(e) => p.push(Problem::new("--media-ip", e)),
            }
        }
        if let Some(ng) = &self.ng_listen {
            config.ng.listen = ng.clone();
        }
        if let Some(id) = &self.ha_instance_id {
            config.ha.instance_id = id.clone();
            config.ha.enabled = true;
        }
        if let Some(peers) = &self.ha_standby_for {
            config.ha.standby_for = peers
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(url) = &self.ha_redis_url {
            // `scheme://user:password@host`: anything between `//` and `@` with a `:` in it.
            let userinfo = url
                .split_once("//")
                .and_then(|(_, rest)| rest.split_once('@'))
                .map(|(u, _)| u);
            if userinfo.is_some_and(|u| u.contains(':')) {
                p.push(Problem::new(
                    "--ha-redis-url",
                    "a password on the command line is visible to every local user: put the \
                     URL in $MCVIDEO_RELAY_HA_REDIS_URL (or ha.redis_url_env's variable)",
                ));
            } else {
                config.ha.redis_url = url.clone();
            }
        }
        if let Some(r) = &self.ports {
            match r.split_once('-').and_then(|(a, b)| {
                Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?))
            }) {
                Some((lo, hi)) => {
                    config.media.port_min = lo;
                    config.media.port_max = hi;
                }
                None => p.push(Problem::new(
                    "--ports",
                    format!("expected MIN-MAX with ports 1-65535, e.g. 40000-49999, not `{r}`"),
                )),
            }
        }
        if let Some(f) = &self.log_format {
            match f.parse() {
                Ok(f) => config.log.format = f,
                Err(_) => p.push(Problem::new(
                    "--log-format",
                    format!("must be json or text, not `{f}`"),
                )),
            }
        }
        p
    }
}
