//! rtpengine's ng control protocol on UDP, so that SIP proxies (Kamailio's and OpenSIPS's
//! `rtpengine` modules) drive the relay's engine as they drive rtpengine.
//!
//! A request is `COOKIE SP BENCODE-DICT`, the reply `COOKIE SP BENCODE-DICT` with the same
//! cookie. Replies are cached per (source, cookie) for [`NgConfig::reply_cache_secs`]: a
//! retransmitted request gets the same bytes back and is never executed twice. ng has no
//! authentication: only sources on the allow-list (`ng.allow_from`; loopback when empty) are
//! served, and the sidecar refuses to listen off loopback without one. Datagrams that are not
//! ng requests (no cookie, not a bencode dictionary with a `command`) or are longer than
//! `ng.max_request_bytes` are dropped unanswered and counted in `/metrics`.

pub(crate) mod bencode;
pub(crate) mod commands;

use super::config::{NgConfig, Problem};
use crate::control::{CommencementMode, MediaSecurity};
use crate::relay::Engine;
use bencode::Value;
use commands::{Commands, NgDefaults};
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Longest cookie accepted.
pub(crate) const MAX_COOKIE: usize = 64;

/// Commands counted by name in `/metrics` (anything else is `other`).
const COMMANDS: [&str; 8] = [
    "ping",
    "offer",
    "answer",
    "delete",
    "query",
    "list",
    "statistics",
    "other",
];

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NgDrop {
    /// Not `cookie SP bencode-dict` with a `command`.
    Malformed,
    /// Longer than `ng.max_request_bytes`.
    TooLong,
    /// From a source not on the allow-list.
    NotAllowed,
}

impl NgDrop {
    const ALL: [NgDrop; 3] = [NgDrop::Malformed, NgDrop::TooLong, NgDrop::NotAllowed];

    fn as_str(self) -> &'static str {
        match self {
            NgDrop::Malformed => "malformed",
            NgDrop::TooLong => "too_long",
            NgDrop::NotAllowed => "not_allowed",
        }
    }
}

/// The ng listener's counters.
#[derive(Debug, Default)]
pub(crate) struct NgMetrics {
    requests: [[AtomicU64; 2]; COMMANDS.len()],
    dropped: [AtomicU64; 3],
    retransmissions: AtomicU64,
}

impl NgMetrics {
    fn count(&self, cmd: &str, ok: bool) {
        let i = COMMANDS
            .iter()
            .position(|c| *c == cmd)
            .unwrap_or(COMMANDS.len() - 1);
        if let Some(c) = self.requests.get(i).and_then(|r| r.get(usize::from(!ok))) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn count_drop(&self, why: NgDrop) {
        if let Some(c) = self.dropped.get(why as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Dropped datagrams for `why` (tests).
    pub(crate) fn dropped(&self, why: NgDrop) -> u64 {
        self.dropped
            .get(why as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Appends the Prometheus text.
    pub(crate) fn render(&self, out: &mut String) {
        out.push_str(
            "# HELP mcvideo_relay_ng_requests_total ng control requests handled, by command and result.\n\
             # TYPE mcvideo_relay_ng_requests_total counter\n",
        );
        for (i, cmd) in COMMANDS.iter().enumerate() {
            for (j, result) in ["ok", "error"].iter().enumerate() {
                let n = self
                    .requests
                    .get(i)
                    .and_then(|r| r.get(j))
                    .map_or(0, |c| c.load(Ordering::Relaxed));
                let _ = writeln!(
                    out,
                    "mcvideo_relay_ng_requests_total{{command=\"{cmd}\",result=\"{result}\"}} {n}"
                );
            }
        }
        out.push_str(
            "# HELP mcvideo_relay_ng_dropped_total ng datagrams dropped unanswered, by reason.\n\
             # TYPE mcvideo_relay_ng_dropped_total counter\n",
        );
        for d in NgDrop::ALL {
            let _ = writeln!(
                out,
                "mcvideo_relay_ng_dropped_total{{reason=\"{}\"}} {}",
                d.as_str(),
                self.dropped(d)
            );
        }
        let _ = writeln!(
            out,
            "# HELP mcvideo_relay_ng_retransmissions_total ng requests answered from the reply cache.\n\
             # TYPE mcvideo_relay_ng_retransmissions_total counter\n\
             mcvideo_relay_ng_retransmissions_total {}",
            self.retransmissions.load(Ordering::Relaxed)
        );
    }
}

/// An allow-list entry: an address or a CIDR prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    /// Parses `127.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8`.
    pub(crate) fn parse(s: &str) -> Option<Net> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max)?,
        };
        Some(Net { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Every problem with the `[ng]` section, each with its key.
pub(crate) fn validate(c: &NgConfig) -> Vec<Problem> {
    let mut p = Vec::new();
    let prob = |k: &str, m: String| Problem {
        key: format!("ng.{k}"),
        message: m,
    };
    let listen = if c.enabled() {
        match c.listen.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(e) => {
                p.push(prob(
                    "listen",
                    format!("`{}` is not an IP:port address or \"off\" ({e})", c.listen),
                ));
                None
            }
        }
    } else {
        None
    };
    for (i, a) in c.allow_from.iter().enumerate() {
        if Net::parse(a).is_none() {
            p.push(prob(
                &format!("allow_from[{i}]"),
                format!("`{a}` is not an IP address or CIDR prefix"),
            ));
        }
    }
    if let Some(a) = listen {
        if !a.ip().is_loopback() && c.allow_from.is_empty() {
            p.push(prob(
                "allow_from",
                format!(
                    "ng has no authentication: listening on {a}, which is not a loopback \
                     address, needs an allow-list of the SIP proxies' addresses"
                ),
            ));
        }
    }
    if !(1024..=65_535).contains(&c.max_request_bytes) {
        p.push(prob(
            "max_request_bytes",
            "must be between 1024 and 65535".into(),
        ));
    }
    if !(1..=3600).contains(&c.reply_cache_secs) {
        p.push(prob(
            "reply_cache_secs",
            "must be between 1 and 3600".into(),
        ));
    }
    if !(16..=1_000_000).contains(&c.reply_cache_entries) {
        p.push(prob(
            "reply_cache_entries",
            "must be between 16 and 1000000".into(),
        ));
    }
    if MediaSecurity::parse(&c.media_security).is_none() {
        p.push(prob(
            "media_security",
            format!(
                "must be \"end_to_end\" or \"per_leg\", not {:?}",
                c.media_security
            ),
        ));
    }
    if let Some(m) = &c.commencement_mode {
        if CommencementMode::parse(m).is_none() {
            p.push(prob(
                "commencement_mode",
                format!("must be \"automatic\" or \"manual\", not {m:?}"),
            ));
        }
    }
    p
}

struct Cached {
    at: Instant,
    reply: Vec<u8>,
}

/// Replies by (source, cookie), bounded in count and age.
struct ReplyCache {
    ttl: Duration,
    max: usize,
    map: HashMap<(SocketAddr, Vec<u8>), Cached>,
    order: VecDeque<(Instant, SocketAddr, Vec<u8>)>,
}

impl ReplyCache {
    fn get(&self, from: SocketAddr, cookie: &[u8], now: Instant) -> Option<&[u8]> {
        let c = self.map.get(&(from, cookie.to_vec()))?;
        (now.saturating_duration_since(c.at) < self.ttl).then_some(c.reply.as_slice())
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, from, cookie)) = self.order.front() {
            if self.order.len() <= self.max && now.saturating_duration_since(*at) < self.ttl {
                break;
            }
            let key = (*from, cookie.clone());
            if self.map.get(&key).is_some_and(|c| c.at == *at) {
                self.map.remove(&key);
            }
            self.order.pop_front();
        }
    }

    fn insert(&mut self, from: SocketAddr, cookie: &[u8], reply: Vec<u8>, now: Instant) {
        self.map
            .insert((from, cookie.to_vec()), Cached { at: now, reply });
        self.order.push_back((now, from, cookie.to_vec()));
        self.expire(now);
    }
}

struct Inner {
    commands: Commands,
    cache: ReplyCache,
}

/// The ng service: allow-list, reply cache, command handler, counters. Socket-free, so tests
/// and the fuzzer drive it with [`NgService::datagram`].
pub(crate) struct NgService {
    allow: Vec<Net>,
    max_request: usize,
    inner: Mutex<Inner>,
    pub(crate) metrics: Arc<NgMetrics>,
}

impl NgService {
    /// A service over `engine` (call after [`validate`] found nothing).
    pub(crate) fn new(engine: Arc<Engine>, c: &NgConfig) -> NgService {
        let defaults = NgDefaults {
            media_security: MediaSecurity::parse(&c.media_security).unwrap_or_default(),
            commencement_mode: c
                .commencement_mode
                .as_deref()
                .and_then(CommencementMode::parse),
        };
        NgService {
            allow: c.allow_from.iter().filter_map(|a| Net::parse(a)).collect(),
            max_request: c.max_request_bytes,
            inner: Mutex::new(Inner {
                commands: Commands::new(engine, defaults),
                cache: ReplyCache {
                    ttl: Duration::from_secs(c.reply_cache_secs),
                    max: c.reply_cache_entries,
                    map: HashMap::new(),
                    order: VecDeque::new(),
                },
            }),
            metrics: Arc::new(NgMetrics::default()),
        }
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        if self.allow.is_empty() {
            let ip = match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                v4 => v4,
            };
            return ip.is_loopback();
        }
        self.allow.iter().any(|n| n.contains(ip))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Engine call IDs of the ng calls held (tests, fuzzing).
    #[cfg_attr(not(fuzzing), allow(dead_code))]
    pub(crate) fn engine_ids(&self) -> Vec<String> {
        self.lock().commands.engine_ids()
    }

    /// The ng `call-id`s held (fuzzing).
    #[cfg_attr(not(fuzzing), allow(dead_code))]
    pub(crate) fn ng_call_ids(&self) -> Vec<Vec<u8>> {
        self.lock().commands.ng_call_ids()
    }

    /// Housekeeping: expires cached replies, forgets calls the engine released on its own.
    pub(crate) fn tick(&self, now: Instant) {
        let mut g = self.lock();
        g.cache.expire(now);
        g.commands.prune();
    }

    /// One datagram from `from`: the reply to send, if any.
    pub(crate) fn datagram(&self, from: SocketAddr, data: &[u8], now: Instant) -> Option<Vec<u8>> {
        if !self.allowed(from.ip()) {
            self.metrics.count_drop(NgDrop::NotAllowed);
            return None;
        }
        if data.len() > self.max_request {
            self.metrics.count_drop(NgDrop::TooLong);
            return None;
        }
        let Some(sp) = data.iter().position(|b| *b == b' ') else {
            self.metrics.count_drop(NgDrop::Malformed);
            return None;
        };
        let (cookie, body) = (data.get(..sp)?, data.get(sp + 1..)?);
        if cookie.is_empty()
            || cookie.len() > MAX_COOKIE
            || !cookie.iter().all(u8::is_ascii_graphic)
        {
            self.metrics.count_drop(NgDrop::Malformed);
            return None;
        }
        let mut g = self.lock();
        if let Some(r) = g.cache.get(from, cookie, now) {
            self.metrics.retransmissions.fetch_add(1, Ordering::Relaxed);
            return Some(r.to_vec());
        }
        let req = match bencode::decode(body) {
            Ok(v @ Value::Dict(_)) if v.get("command").and_then(Value::as_bytes).is_some() => v,
            Ok(_) | Err(_) => {
                self.metrics.count_drop(NgDrop::Malformed);
                return None;
            }
        };
        let cmd = Commands::command_name(&req).unwrap_or_default();
        let reply = g.commands.handle(&req);
        let ok = reply.get("result").and_then(Value::as_str) != Some("error");
        self.metrics.count(&cmd, ok);
        if !ok {
            let reason = reply
                .get("error-reason")
                .and_then(bencode::Value::as_str)
                .unwrap_or_default();
            let command: String = cmd.chars().take(32).collect();
            debug!(%command, %reason, "ng request refused");
        }
        let mut out = Vec::with_capacity(cookie.len() + 64);
        out.extend_from_slice(cookie);
        out.push(b' ');
        reply.encode_into(&mut out);
        g.cache.insert(from, cookie, out.clone(), now);
        Some(out)
    }
}

/// Serves ng on `sock` until `closing` turns true.
pub(crate) async fn run(
    sock: std::net::UdpSocket,
    svc: Arc<NgService>,
    mut closing: tokio::sync::watch::Receiver<bool>,
) {
    let addr = sock.local_addr().ok();
    let sock = match tokio::net::UdpSocket::from_std(sock) {
        Ok(s) => s,
        Err(e) => {
            warn!("ng listener: {e}");
            return;
        }
    };
    if let Some(a) = addr {
        info!(addr = %a, "ng control protocol listening");
    }
    let mut buf = vec![0u8; svc.max_request + 1];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    // A command may wait for a worker's reply (answer, delete, query): it runs
                    // on the blocking pool, never on a runtime thread, and the listener waits
                    // for it, so commands are handled one at a time in the order they came.
                    let data = buf.get(..n).unwrap_or_default().to_vec();
                    let s = svc.clone();
                    let reply = tokio::task::spawn_blocking(move || {
                        s.datagram(from, &data, Instant::now())
                    })
                    .await;
                    match reply {
                        Ok(Some(reply)) => {
                            if let Err(e) = sock.send_to(&reply, from).await {
                                debug!(%from, "ng reply: {e}");
                            }
                        }
                        Ok(None) => {}
                        Err(e) => warn!(%from, "ng command failed: {e}"),
                    }
                }
                Err(e) => debug!("ng receive: {e}"),
            },
            _ = tick.tick() => {
                let s = svc.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || s.tick(Instant::now())).await {
                    warn!("ng housekeeping failed: {e}");
                }
            }
            r = closing.changed() => if r.is_err() || *closing.borrow() { break },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matches_prefixes() {
        let n = Net::parse("10.1.0.0/16").unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(Net::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Net::parse("1.2.3.4/33").is_none());
        assert!(Net::parse("fd00::/8")
            .unwrap()
            .contains("fd12::1".parse().unwrap()));
    }
}
