//! [`HaConfig`]: where Redis is, who this instance is, whom it stands by for, the timings.

use super::seal::SealKey;
use crate::ids::CallId;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A Redis URL (`redis://` or `rediss://`, with `user:password@` if the server wants them).
/// `Display` and `Debug` hide the password: `redis://relay:***@10.0.0.5:6379/0`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Checks the scheme and that the client accepts the URL.
    pub fn parse(url: &str) -> Result<RedisUrl, HaConfigError> {
        let u = RedisUrl(url.trim().to_owned());
        if !(u.0.starts_with("redis://") || u.0.starts_with("rediss://")) {
            return Err(HaConfigError::new(
                "redis_url",
                format!("must start with redis:// or rediss:// ({u})"),
            ));
        }
        if let Err(e) = redis::Client::open(u.0.as_str()) {
            // the client's message may quote the URL: say only what kind of problem it is
            return Err(HaConfigError::new(
                "redis_url",
                format!("not a valid Redis URL ({u}): {:?}", e.kind()),
            ));
        }
        Ok(u)
    }

    /// A Redis Sentinel's address: `host:port` (plain TCP, no password) or a `redis://` /
    /// `rediss://` URL (with `user:password@` if the sentinels want them).
    pub fn parse_sentinel(addr: &str) -> Result<RedisUrl, HaConfigError> {
        let addr = addr.trim();
        if addr.contains("://") {
            return RedisUrl::parse(addr).map_err(|e| HaConfigError::new("sentinels", e.message));
        }
        let port_ok = addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(HaConfigError::new(
                "sentinels",
                format!("{addr:?} must be host:port (a sentinel listens on 26379 by default) or a redis:// URL"),
            ));
        }
        RedisUrl::parse(&format!("redis://{addr}"))
            .map_err(|e| HaConfigError::new("sentinels", e.message))
    }

    /// The URL with its password, for the client only: never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether it is a TLS URL (`rediss://`).
    pub fn is_tls(&self) -> bool {
        self.0.starts_with("rediss://")
    }

    /// The URL with the password replaced by `***`.
    pub fn redacted(&self) -> String {
        let Some(scheme_end) = self.0.find("://").map(|i| i + 3) else {
            return "***".to_owned();
        };
        let rest = &self.0[scheme_end..];
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                let user = match userinfo.find(':') {
                    Some(c) => format!("{}:***", &userinfo[..c]),
                    // `redis://password@host` is read as a password by some clients
                    None if !userinfo.is_empty() => "***".to_owned(),
                    None => String::new(),
                };
                format!("{}{user}{}", &self.0[..scheme_end], &rest[at..])
            }
            None => self.0.clone(),
        }
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", self.redacted())
    }
}

/// One problem with an [`HaConfig`], keyed by the setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaConfigError {
    /// The setting (`redis_url`, `instance_id`, `heartbeat_interval`, ...).
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

impl HaConfigError {
    fn new(key: &'static str, message: impl Into<String>) -> Self {
        HaConfigError {
            key,
            message: message.into(),
        }
    }
}

impl fmt::Display for HaConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for HaConfigError {}

/// The HA store's configuration. `Debug` hides the Redis password and the seal key.
#[derive(Debug, Clone)]
pub struct HaConfig {
    /// Where Redis is. With [`HaConfig::sentinels`], only its scheme (`rediss://`: TLS), user,
    /// password and database number are used: the host and port come from the sentinels.
    pub redis_url: RedisUrl,
    /// Redis Sentinels that know where the Redis primary is (empty: no Sentinel, `redis_url`
    /// is the primary). The store asks them (in turn, the last one that answered first) at
    /// every (re)connection, checks with `ROLE` that the address they give is a primary, and so
    /// follows a failover without a restart; after one it writes every live call again (the
    /// new primary may have lost the last writes).
    pub sentinels: Vec<RedisUrl>,
    /// The name the sentinels monitor the primary under (`sentinel monitor NAME ...`);
    /// required with [`HaConfig::sentinels`].
    pub master_name: String,
    /// This instance's ID (1 to 64 of `A-Z a-z 0-9 - _ .`), unique in the cluster and kept
    /// across restarts.
    pub instance_id: String,
    /// The instances whose calls this one adopts when their heartbeat lapses; [`ANY_PEER`]
    /// (`"*"`, alone) for every other instance of the cluster (N-way: a dead instance's calls
    /// are spread over the live ones by load).
    pub standby_for: Vec<String>,
    /// How often this instance writes its heartbeat (default 200 ms).
    pub heartbeat_interval: Duration,
    /// A peer whose heartbeat is older than this is down (default 1 s).
    pub failure_time: Duration,
    /// A peer whose heartbeat is older than this is probed (default 300 ms): a TCP connection
    /// to its [`HaConfig::probe_address`]. A refused connection means its process is gone,
    /// and it is down at once; a connection made, or one that does not answer in time (a
    /// stopped process, a host down, a slow network), leaves the verdict to `failure_time`.
    /// Probing is off unless `heartbeat_interval < suspect_time < failure_time`
    /// ([`HaConfig::probe_after`]). See `docs/high-availability.md` ("Detecting a dead peer").
    pub suspect_time: Duration,
    /// Where the peers probe this instance: a TCP address that refuses connections once this
    /// process is gone (the sidecar gives its control API's address). Published in the
    /// heartbeat. `None`: the peers wait `failure_time` for this one.
    pub probe_address: Option<std::net::SocketAddr>,
    /// TTL of every call, owner-set and lease key, a safety net refreshed every quarter of it
    /// (default 1 hour).
    pub key_ttl: Duration,
    /// Distinct calls the write backlog holds at most while Redis is down or slow (default
    /// 100,000); past it records are dropped and a full resync follows.
    pub max_backlog: usize,
    /// Prefix of every key (default `mcvr`): several clusters can share one Redis.
    pub key_prefix: String,
    /// How long one Redis command (or pipeline) may take before Redis counts as slow and the
    /// connection is dropped and made again (default 1 s).
    pub command_timeout: Duration,
    /// Seals key material (the call's SRTP master keys) before it goes to Redis.
    pub seal_key: Arc<SealKey>,
    /// For `rediss://`: the CA certificate(s), PEM, that Redis' certificate must chain to
    /// (a private CA). `None`: the system's trusted roots.
    pub tls_ca_pem: Option<Vec<u8>>,
}

/// The default [`HaConfig::suspect_time`]: one and a half heartbeats of the default 200 ms, so
/// a heartbeat late by a tick's jitter costs one probe, not a takeover.
pub const DEFAULT_SUSPECT_TIME: Duration = Duration::from_millis(300);

/// `standby_for = ["*"]`: adopt a share of the calls of any instance of the cluster that dies.
pub const ANY_PEER: &str = "*";

impl HaConfig {
    /// Whether this instance adopts a share of any dead instance's calls (N-way,
    /// `standby_for = ["*"]`) rather than all the calls of the peers it names.
    pub fn adopts_any(&self) -> bool {
        self.standby_for.iter().any(|p| p == ANY_PEER)
    }

    /// How old a peer's heartbeat must be before it is probed, when probing is on: the
    /// [`HaConfig::suspect_time`] strictly between the heartbeat interval and the failure time.
    pub fn probe_after(&self) -> Option<Duration> {
        let s = self.suspect_time;
        (s > self.heartbeat_interval && s < self.failure_time).then_some(s)
    }

    /// A configuration with the defaults.
    pub fn new(redis_url: RedisUrl, instance_id: impl Into<String>, seal_key: SealKey) -> Self {
        HaConfig {
            redis_url,
            sentinels: Vec::new(),
            master_name: String::new(),
            instance_id: instance_id.into(),
            standby_for: Vec::new(),
            heartbeat_interval: Duration::from_millis(200),
            failure_time: Duration::from_secs(1),
            suspect_time: DEFAULT_SUSPECT_TIME,
            probe_address: None,
            key_ttl: Duration::from_secs(3600),
            max_backlog: 100_000,
            key_prefix: "mcvr".to_owned(),
            command_timeout: Duration::from_secs(1),
            seal_key: Arc::new(seal_key),
            tls_ca_pem: None,
        }
    }

    /// Every problem, each keyed by its setting.
    pub fn validate(&self) -> Result<(), Vec<HaConfigError>> {
        let mut p = Vec::new();
        self.validate_identity(&mut p);
        self.validate_timing(&mut p);
        self.validate_store(&mut p);
        self.validate_tls(&mut p);
        self.validate_sentinels(&mut p);
        if p.is_empty() {
            Ok(())
        } else {
            Err(p)
        }
    }

    /// The checks of `instance_id` and `standby_for`.
    fn validate_identity(&self, p: &mut Vec<HaConfigError>) {
        if !CallId::is_valid(&self.instance_id) {
            p.push(HaConfigError::new(
                "instance_id",
                "must be 1 to 64 of A-Z a-z 0-9 - _ .",
            ));
        }
        if self.adopts_any() && self.standby_for.len() > 1 {
            p.push(HaConfigError::new(
                "standby_for",
                format!("{ANY_PEER:?} (every other instance) stands alone"),
            ));
        }
        for (i, peer) in self.standby_for.iter().enumerate() {
            if peer == ANY_PEER {
                continue;
            }
            if !CallId::is_valid(peer) {
                p.push(HaConfigError::new(
                    "standby_for",
                    format!("peer {i} ({peer:?}) must be 1 to 64 of A-Z a-z 0-9 - _ ."),
                ));
            } else if *peer == self.instance_id {
                p.push(HaConfigError::new(
                    "standby_for",
                    format!("{peer} is this instance"),
                ));
            } else if self.standby_for[..i].contains(peer) {
                p.push(HaConfigError::new(
                    "standby_for",
                    format!("{peer} is listed twice"),
                ));
            }
        }
    }

    /// The checks of `heartbeat_interval`, `failure_time` and `key_ttl`.
    fn validate_timing(&self, p: &mut Vec<HaConfigError>) {
        let hb = self.heartbeat_interval;
        if hb < Duration::from_millis(10) || hb > Duration::from_secs(10) {
            p.push(HaConfigError::new(
                "heartbeat_interval",
                "must be between 10 ms and 10 s",
            ));
        }
        if self.failure_time < 2 * hb {
            p.push(HaConfigError::new(
                "failure_time",
                format!(
                    "must be at least twice the heartbeat interval ({} ms)",
                    2 * hb.as_millis()
                ),
            ));
        }
        if self.failure_time > Duration::from_secs(60) {
            p.push(HaConfigError::new("failure_time", "must be <= 60 s"));
        }
        if self.key_ttl < Duration::from_secs(10) || self.key_ttl < 10 * self.failure_time {
            p.push(HaConfigError::new(
                "key_ttl",
                "must be at least 10 s and 10 times the failure time",
            ));
        }
    }

    /// The checks of `max_backlog`, `key_prefix` and `command_timeout`.
    fn validate_store(&self, p: &mut Vec<HaConfigError>) {
        if self.max_backlog == 0 {
            p.push(HaConfigError::new("max_backlog", "must be >= 1"));
        }
        let valid_prefix = !self.key_prefix.is_empty()
            && self.key_prefix.len() <= 64
            && self
                .key_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if !valid_prefix {
            p.push(HaConfigError::new(
                "key_prefix",
                "must be 1 to 64 of A-Z a-z 0-9 - _ . :",
            ));
        }
        if self.command_timeout < Duration::from_millis(10)
            || self.command_timeout > Duration::from_secs(60)
        {
            p.push(HaConfigError::new(
                "command_timeout",
                "must be between 10 ms and 60 s",
            ));
        }
    }

    /// The checks of `tls_ca`.
    fn validate_tls(&self, p: &mut Vec<HaConfigError>) {
        if self.tls_ca_pem.is_some() && !self.redis_url.is_tls() {
            p.push(HaConfigError::new(
                "tls_ca",
                "a CA certificate is for rediss:// (TLS) only",
            ));
        }
        if let Some(pem) = &self.tls_ca_pem {
            if !pem
                .windows(b"-----BEGIN CERTIFICATE-----".len())
                .any(|w| w == b"-----BEGIN CERTIFICATE-----")
            {
                p.push(HaConfigError::new(
                    "tls_ca",
                    "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                ));
            }
        }
    }

    /// The checks of `sentinels` and `master_name`.
    fn validate_sentinels(&self, p: &mut Vec<HaConfigError>) {
        let valid_name = |n: &str| {
            !n.is_empty()
                && n.len() <= 64
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        match (self.sentinels.is_empty(), self.master_name.is_empty()) {
            (false, true) => p.push(HaConfigError::new(
                "master_name",
                "the sentinels need the name they monitor the primary under",
            )),
            (true, false) => p.push(HaConfigError::new(
                "master_name",
                "is for Sentinel: set sentinels too",
            )),
            (false, false) if !valid_name(&self.master_name) => p.push(HaConfigError::new(
                "master_name",
                "must be 1 to 64 of A-Z a-z 0-9 - _ .",
            )),
            _ => {}
        }
        if self.sentinels.len() > 16 {
            p.push(HaConfigError::new("sentinels", "at most 16"));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ha::SEAL_KEY_LEN;

    fn cfg() -> HaConfig {
        HaConfig::new(
            RedisUrl::parse("redis://127.0.0.1:6379").unwrap(),
            "relay-a",
            SealKey::from_bytes(&[1; SEAL_KEY_LEN]).unwrap(),
        )
    }

    #[test]
    fn ha_config_redacts_passwords() {
        let u = RedisUrl::parse("rediss://relay:s3cr3t@redis.example:6380/2").unwrap();
        assert!(u.is_tls());
        assert_eq!(u.to_string(), "rediss://relay:***@redis.example:6380/2");
        assert!(!format!("{u:?}").contains("s3cr3t"));
        let u = RedisUrl::parse("redis://:s3cr3t@10.0.0.5").unwrap();
        assert_eq!(u.to_string(), "redis://:***@10.0.0.5");
        let u = RedisUrl::parse("redis://10.0.0.5:6379/0").unwrap();
        assert_eq!(u.to_string(), "redis://10.0.0.5:6379/0");
        let mut c = cfg();
        c.redis_url = RedisUrl::parse("redis://u:pw-hidden@h").unwrap();
        let d = format!("{c:?}");
        assert!(!d.contains("pw-hidden"), "{d}");
        assert!(d.contains("SealKey(..)"));
    }

    #[test]
    fn ha_config_rejects_bad_urls() {
        for bad in ["http://h", "h:6379", "", "redis://"] {
            let e = RedisUrl::parse(bad);
            assert!(e.is_err(), "{bad}");
        }
        let e = RedisUrl::parse("http://u:topsecret@h").unwrap_err();
        assert!(!e.to_string().contains("topsecret"), "{e}");
    }

    #[test]
    fn ha_config_sentinels() {
        let s = RedisUrl::parse_sentinel("10.0.0.7:26379").unwrap();
        assert_eq!(s.expose(), "redis://10.0.0.7:26379");
        let s = RedisUrl::parse_sentinel("redis://:pw@sentinel-1:26380").unwrap();
        assert_eq!(s.to_string(), "redis://:***@sentinel-1:26380");
        for bad in ["10.0.0.7", "10.0.0.7:x", ":26379", "http://h:1"] {
            let e = RedisUrl::parse_sentinel(bad).unwrap_err();
            assert_eq!(e.key, "sentinels", "{bad}");
        }
        let mut c = cfg();
        c.sentinels = vec![RedisUrl::parse_sentinel("127.0.0.1:26379").unwrap()];
        assert_eq!(c.validate().unwrap_err()[0].key, "master_name");
        c.master_name = "relay primary".into();
        assert_eq!(c.validate().unwrap_err()[0].key, "master_name");
        c.master_name = "mcvr-redis".into();
        assert_eq!(c.validate(), Ok(()));
        c.sentinels.clear();
        let e = c.validate().unwrap_err();
        assert_eq!(
            e[0].to_string(),
            "master_name: is for Sentinel: set sentinels too"
        );
    }

    #[test]
    fn probing_needs_a_suspect_time_between_the_heartbeat_and_the_failure_time() {
        let mut c = cfg();
        assert_eq!(c.probe_after(), Some(DEFAULT_SUSPECT_TIME));
        c.suspect_time = c.heartbeat_interval;
        assert_eq!(c.probe_after(), None);
        c.suspect_time = c.failure_time;
        assert_eq!(c.probe_after(), None);
        c.suspect_time = Duration::ZERO;
        assert_eq!(c.probe_after(), None);
        c.heartbeat_interval = Duration::from_secs(5);
        c.failure_time = Duration::from_secs(10);
        c.suspect_time = DEFAULT_SUSPECT_TIME;
        assert_eq!(
            c.probe_after(),
            None,
            "a suspect time under the heartbeat's"
        );
    }

    #[test]
    fn any_peer_stands_alone() {
        let mut c = cfg();
        c.standby_for = vec![ANY_PEER.into()];
        assert_eq!(c.validate(), Ok(()));
        assert!(c.adopts_any());
        c.standby_for.push("relay-a".into());
        let e = c.validate().unwrap_err();
        assert_eq!(
            e[0].to_string(),
            "standby_for: \"*\" (every other instance) stands alone"
        );
        c.standby_for = vec!["relay-a".into()];
        assert!(!c.adopts_any());
    }

    #[test]
    fn ha_config_validation() {
        assert_eq!(cfg().validate(), Ok(()));
        let mut c = cfg();
        c.instance_id = "bad id".into();
        c.standby_for = vec!["relay-a".into(), "relay-b".into(), "relay-b".into()];
        c.heartbeat_interval = Duration::from_millis(600);
        c.max_backlog = 0;
        c.key_prefix = String::new();
        let keys: Vec<_> = c.validate().unwrap_err().iter().map(|e| e.key).collect();
        assert_eq!(
            keys,
            [
                "instance_id",
                "standby_for",
                "failure_time",
                "max_backlog",
                "key_prefix"
            ]
        );
        let mut c = cfg();
        c.tls_ca_pem = Some(b"-----BEGIN CERTIFICATE-----\n".to_vec());
        assert_eq!(
            c.validate().unwrap_err()[0].key,
            "tls_ca",
            "redis:// has no TLS"
        );
        c.redis_url = RedisUrl::parse("rediss://h").unwrap();
        assert_eq!(c.validate(), Ok(()));
        c.tls_ca_pem = Some(b"not a certificate".to_vec());
        assert_eq!(c.validate().unwrap_err()[0].key, "tls_ca");
        let mut c = cfg();
        c.standby_for = vec!["relay-a".into()];
        let e = c.validate().unwrap_err();
        assert_eq!(e[0].to_string(), "standby_for: relay-a is this instance");
    }
}
