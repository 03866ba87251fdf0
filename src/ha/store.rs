//! [`HaStore`]: the writer, heartbeat and monitor tasks over Redis (see the module docs of
//! [`crate::ha`] for the key schema and the guarantees).
#![allow(clippy::disallowed_methods)] // an I/O driver: it reads the clock (TTL refresh, figures)

use super::config::HaConfig;
use super::record::{CallRecord, RecordError};
use crate::ids::CallId;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify};

/// Records written in one pipeline at most.
const BATCH: usize = 512;
/// First and longest wait between two attempts to reach Redis.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Longest wait with Redis Sentinel (see [`Backoff::new`]).
const BACKOFF_MAX_SENTINEL: Duration = Duration::from_millis(200);

/// What the owner of the calls gives the store so that it can write every live call again
/// after Redis was unreachable, lost its data or the backlog overflowed.
pub trait Resync: Send + Sync + 'static {
    /// Every live call this instance owns, including the adopted ones once they are restored
    /// (`owner` and `epoch` are set by the store). The calls of this instance in Redis that
    /// are not in the list are deleted. Called on a blocking thread (`spawn_blocking`), so it
    /// may wait for the engine's workers.
    fn resync(&self) -> Vec<CallRecord>;
}

impl<F: Fn() -> Vec<CallRecord> + Send + Sync + 'static> Resync for F {
    fn resync(&self) -> Vec<CallRecord> {
        self()
    }
}

/// Why this instance may no longer write: another instance adopted its calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceInfo {
    /// This instance.
    pub instance: String,
    /// The instance that raised the lease's epoch (the adopter).
    pub by: String,
    /// The lease's epoch now.
    pub epoch: u64,
    /// This instance's epoch, now stale.
    pub own_epoch: u64,
}

impl fmt::Display for FenceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fenced: instance {} lost its calls to {} at epoch {}; not forwarding or answering \
             for them",
            self.instance, self.by, self.epoch
        )
    }
}

/// What the store tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaEvent {
    /// A peer this instance stands by for has no fresh heartbeat (older than the failure time,
    /// or gone while the peer still owns calls): its calls are being adopted. A peer that never
    /// ran (no heartbeat, no calls) is not reported.
    PeerDown {
        /// The peer.
        peer: String,
    },
    /// The calls of a dead peer now belong to this instance: restore them. The records carry
    /// this instance as owner and its epoch. When several standbys watch one peer, one of them
    /// adopts (the script is atomic); the others see `PeerDown` only.
    Adopted {
        /// The dead peer.
        peer: String,
        /// Its calls.
        records: Vec<CallRecord>,
        /// The peer's lease epoch after the takeover (its writes from before are refused).
        epoch: u64,
    },
    /// This instance was fenced (see [`HaStore::fenced`]).
    Fenced(FenceInfo),
}

/// One instance as [`HaStore::cluster`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    /// Its ID.
    pub id: String,
    /// `primary` (stands by for nobody), `standby` (stands by for the peers it names) or `peer`
    /// (adopts a share of any dead instance's calls); `unknown` once its heartbeat is gone.
    pub role: String,
    /// Whether its heartbeat is fresher than the failure time (this instance's).
    pub alive: bool,
    /// Calls it owns in Redis.
    pub calls: u64,
    /// Packets per second it last reported.
    pub packets_per_sec: u64,
    /// Whether it is draining (takes no new calls).
    pub draining: bool,
    /// Its lease epoch.
    pub epoch: u64,
}

/// The store's gauges and counters at one moment, for metrics (`mcvideo_ha_store_up`, the
/// backlog gauge, ...).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HaStats {
    /// [`HaStore::store_up`].
    pub store_up: bool,
    /// [`HaStore::backlog`].
    pub backlog: usize,
    /// [`HaStore::resync_pending`].
    pub resync_pending: usize,
    /// [`HaStore::dropped`].
    pub dropped: u64,
    /// [`HaStore::refused`].
    pub refused: u64,
    /// [`HaStore::epoch`].
    pub epoch: u64,
    /// [`HaStore::is_fenced`].
    pub fenced: bool,
    /// [`HaStore::peers_alive`].
    pub peers_alive: u64,
}

/// Why a query ([`HaStore::lookup`], [`HaStore::cluster`]) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaError {
    /// Redis is not reachable now.
    Down,
    /// Redis answered with an error or not in time.
    Redis(String),
    /// A stored record does not decode.
    Record(RecordError),
    /// Redis answered something the store does not expect.
    Protocol(&'static str),
}

impl fmt::Display for HaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HaError::Down => f.write_str("HA store: Redis not reachable"),
            HaError::Redis(e) => write!(f, "HA store: Redis: {e}"),
            HaError::Record(e) => write!(f, "HA store: {e}"),
            HaError::Protocol(m) => write!(f, "HA store: unexpected reply: {m}"),
        }
    }
}

impl std::error::Error for HaError {}

impl From<redis::RedisError> for HaError {
    fn from(e: redis::RedisError) -> Self {
        HaError::Redis(describe(&e))
    }
}

/// A Redis error in words that never hold the URL (and so never its password).
fn describe(e: &redis::RedisError) -> String {
    if e.is_timeout() {
        return "timed out".to_owned();
    }
    let kind = format!("{:?}", e.kind());
    match (e.code(), e.detail()) {
        (Some(c), Some(d)) => format!("{kind} {c}: {d}"),
        (Some(c), None) => format!("{kind} {c}"),
        (None, Some(d)) => format!("{kind}: {d}"),
        _ if e.is_io_error() || e.is_connection_dropped() => {
            format!("{kind}: {}", e.to_string().replace(['\n', '\r'], " "))
        }
        _ => kind,
    }
}

// --- scripts ---------------------------------------------------------------------------------
// Every script starts with `pcall(redis.replicate_commands)` so that TIME followed by writes is
// accepted on Redis 3.2 to 6 (on 7 it is the default). Epochs go through Lua as numbers (exact
// below 2^53) and back as decimal strings.

/// Checks KEYS[1] (the caller's lease) against ARGV[2] (its epoch): `{2}` when the lease is
/// gone, `{0, epoch, by}` when another epoch holds it.
const LEASE_CHECK: &str = r#"
pcall(redis.replicate_commands)
local cur = redis.call('HGET', KEYS[1], 'epoch')
if not cur then return {2} end
if tonumber(cur) ~= tonumber(ARGV[2]) then
  return {0, cur, redis.call('HGET', KEYS[1], 'by') or ''}
end
"#;

/// KEYS: lease, instances. ARGV: me, key_ttl_ms. A new epoch, above every earlier one and at
/// least Redis' time in ms (so an expired lease never gives an epoch back).
const LEASE_TAKE: &str = r#"
pcall(redis.replicate_commands)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
local e = math.max(cur + 1, now)
local es = string.format('%.0f', e)
redis.call('HSET', KEYS[1], 'epoch', es, 'by', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return es
"#;

/// KEYS: lease. ARGV: me, epoch, key_ttl_ms. After a reconnect: `{1}` if the lease is still
/// ours (or gone, as after a Redis restart: then it is ours again), else `{0, epoch, by}`.
const LEASE_RESUME: &str = r#"
pcall(redis.replicate_commands)
local cur = redis.call('HGET', KEYS[1], 'epoch')
if cur and tonumber(cur) ~= tonumber(ARGV[2]) then
  return {0, cur, redis.call('HGET', KEYS[1], 'by') or ''}
end
redis.call('HSET', KEYS[1], 'epoch', ARGV[2], 'by', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1}
"#;

/// The start of PUT and DELETE: `{3, owner}` when the call (KEYS[2]) is another instance's
/// than ARGV[1].
macro_rules! owner_check {
    () => {
        "
local owner = redis.call('HGET', KEYS[2], 'owner')
if owner and owner ~= ARGV[1] then return {3, owner} end
"
    };
}

/// KEYS: lease, call, owner set. ARGV: me, epoch, record, key_ttl_ms, call ID.
/// `{1}` written, `{3, owner}` the call is another instance's.
const PUT: &str = concat!(
    owner_check!(),
    r#"redis.call('HSET', KEYS[2], 'owner', ARGV[1], 'epoch', ARGV[2], 'rec', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('SADD', KEYS[3], ARGV[5])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return {1}
"#
);

/// KEYS: lease, call, owner set. ARGV: me, epoch, call ID.
const DELETE: &str = concat!(
    owner_check!(),
    r#"redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[3])
return {1}
"#
);

/// KEYS: lease, inst, instances, owner set. ARGV: me, epoch, role, pps, draining, inst_ttl_ms,
/// key_ttl_ms, failure_ms, inst key prefix, probe address (empty: none). The heartbeat's time
/// is Redis' own. Returns `{1,
/// n}`: `n` other instances of the cluster have a heartbeat fresher than `failure_ms` (the
/// peers alive, for the metrics; the instances are few, one `HGET` each).
const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local calls = redis.call('SCARD', KEYS[4])
redis.call('HSET', KEYS[2], 'role', ARGV[3], 'calls', calls, 'pps', ARGV[4],
  'draining', ARGV[5], 'epoch', ARGV[2], 'last_seen_ms', string.format('%.0f', now),
  'probe', ARGV[10])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[7])
local alive = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if id ~= ARGV[1] then
    local seen = redis.call('HGET', ARGV[9] .. id, 'last_seen_ms')
    if seen and now - tonumber(seen) < tonumber(ARGV[8]) then alive = alive + 1 end
  end
end
return {1, alive}
"#;

/// KEYS: lease, owner set. ARGV: me, epoch, key_ttl_ms, call key prefix.
const REFRESH: &str = r#"
redis.call('PEXPIRE', KEYS[2], ARGV[3])
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  redis.call('PEXPIRE', ARGV[4] .. id, ARGV[3])
end
return {1}
"#;

/// KEYS: own set (for the resync). ARGV: me, epoch, call key prefix, then the live call IDs.
/// Deletes this instance's calls that are not live any more (lost deletes).
const PRUNE: &str = r#"
local live = {}
for i = 5, #ARGV do live[ARGV[i]] = true end
local n = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if not live[id] then
    local k = ARGV[3] .. id
    local owner = redis.call('HGET', k, 'owner')
    if (not owner) or owner == ARGV[1] then redis.call('DEL', k) end
    redis.call('SREM', KEYS[2], id)
    n = n + 1
  end
end
return {1, n}
"#;

/// KEYS: own lease, peer lease, peer inst, peer set, own set, instances. ARGV: me, epoch,
/// peer, failure_ms, key_ttl_ms, call key prefix, share (`1`: N-way), inst key prefix, owner
/// set key prefix, owner set key suffix, down_ms (the peer's heartbeat age that makes it down:
/// failure_ms, or the suspect time once its probe was refused). `{4}` if the peer's heartbeat is
/// fresher than down_ms again, `{5, by}`
/// if another instance adopted its calls already (the peer's lease was raised by another
/// instance and it has no calls left); else `{1, peer's new epoch, calls left, records...}`.
///
/// With `share` the caller takes its share only: the water level over the call counts of the
/// live instances that adopt shares (role `peer`, its own included) with the peer's calls
/// poured in; the others take theirs in their own rounds, each call claimed once (the script
/// is atomic). The least loaded one always has a share, so the calls go while it runs; once
/// the peer's heartbeat key is gone (three failure times) whoever comes takes what is left.
/// Without `share`, every call.
const ADOPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local seen = redis.call('HGET', KEYS[3], 'last_seen_ms')
if seen and now - tonumber(seen) < tonumber(ARGV[11]) then return {4} end
local by = redis.call('HGET', KEYS[2], 'by')
local left = redis.call('SCARD', KEYS[4])
if by and by ~= ARGV[3] and left == 0 then return {5, by} end
local take = left
if ARGV[7] == '1' and left > 0 then
  local mine = redis.call('SCARD', KEYS[5])
  local counts = {mine}
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[6])) do
    if id ~= ARGV[3] and id ~= ARGV[1] then
      local h = redis.call('HMGET', ARGV[8] .. id, 'last_seen_ms', 'role')
      local s = h[1]
      if s and h[2] == 'peer' and now - tonumber(s) < tonumber(ARGV[4]) then
        counts[#counts + 1] = redis.call('SCARD', ARGV[9] .. id .. ARGV[10])
      end
    end
  end
  local lo, hi = 0, 0
  for _, c in ipairs(counts) do if c + left > hi then hi = c + left end end
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local room = 0
    for _, c in ipairs(counts) do if mid > c then room = room + mid - c end end
    if room >= left then hi = mid else lo = mid + 1 end
  end
  take = math.max(0, math.min(left, lo - mine))
  if not seen then take = left end
end
local cur = tonumber(redis.call('HGET', KEYS[2], 'epoch') or '0')
local e = string.format('%.0f', math.max(cur + 1, now))
redis.call('HSET', KEYS[2], 'epoch', e, 'by', ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
local out = {1, e, 0}
local n = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  if n >= take then break end
  local k = ARGV[6] .. id
  local v = redis.call('HMGET', k, 'owner', 'rec')
  if v[1] == ARGV[3] and v[2] then
    redis.call('HSET', k, 'owner', ARGV[1], 'epoch', ARGV[2])
    redis.call('PEXPIRE', k, ARGV[5])
    redis.call('SADD', KEYS[5], id)
    out[#out + 1] = v[2]
    n = n + 1
  end
  redis.call('SREM', KEYS[4], id)
end
out[3] = redis.call('SCARD', KEYS[4])
if out[3] == 0 then redis.call('DEL', KEYS[4]) end
redis.call('PEXPIRE', KEYS[5], ARGV[5])
return out
"#;

/// The scripts that check the caller's lease first.
fn fenced_script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{LEASE_CHECK}{body}"))
}

struct Scripts {
    take: redis::Script,
    resume: redis::Script,
    put: redis::Script,
    delete: redis::Script,
    heartbeat: redis::Script,
    refresh: redis::Script,
    prune: redis::Script,
    adopt: redis::Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            take: redis::Script::new(LEASE_TAKE),
            resume: redis::Script::new(LEASE_RESUME),
            put: fenced_script(PUT),
            delete: fenced_script(DELETE),
            heartbeat: fenced_script(HEARTBEAT),
            refresh: fenced_script(REFRESH),
            prune: fenced_script(PRUNE),
            adopt: fenced_script(ADOPT),
        }
    }

    fn all(&self) -> [&redis::Script; 8] {
        [
            &self.take,
            &self.resume,
            &self.put,
            &self.delete,
            &self.heartbeat,
            &self.refresh,
            &self.prune,
            &self.adopt,
        ]
    }
}

/// The key names.
struct Keys {
    prefix: String,
}

impl Keys {
    fn inst(&self, id: &str) -> String {
        format!("{}:inst:{id}", self.prefix)
    }
    fn lease(&self, id: &str) -> String {
        format!("{}:lease:{id}", self.prefix)
    }
    fn call_prefix(&self) -> String {
        format!("{}:call:", self.prefix)
    }
    fn call(&self, id: &str) -> String {
        self.call_prefix() + id
    }
    fn owner_calls(&self, id: &str) -> String {
        format!("{}{id}{}", self.owner_prefix(), self.owner_calls_suffix())
    }
    fn owner_prefix(&self) -> String {
        format!("{}:owner:", self.prefix)
    }
    fn owner_calls_suffix(&self) -> &'static str {
        ":calls"
    }
    fn instances(&self) -> String {
        format!("{}:instances", self.prefix)
    }
}

enum Pending {
    Put(CallRecord),
    Delete,
}

#[derive(Default)]
struct Backlog {
    /// The latest write per call, not sent yet.
    map: HashMap<CallId, Pending>,
    /// Writes of the batch on its way to Redis (they count against the cap: a failed batch
    /// comes back).
    in_flight: usize,
    /// Records of a full resync not acknowledged yet (reported, not capped: they come from the
    /// owner's snapshot, not from memory held here).
    resyncing: usize,
    needs_resync: bool,
}

/// What a script's reply says about the caller's lease and the call.
enum Outcome {
    Done,
    Fenced { epoch: u64, by: String },
    NoLease,
    OtherOwner(String),
}

struct Inner {
    cfg: HaConfig,
    keys: Keys,
    scripts: Scripts,
    role: &'static str,
    backlog: Mutex<Backlog>,
    wake: Notify,
    closed: AtomicBool,
    closed_notify: Notify,
    writer_up: AtomicBool,
    control_up: AtomicBool,
    down_logged: AtomicBool,
    epoch: AtomicU64,
    lease_lock: tokio::sync::Mutex<()>,
    fenced: watch::Sender<Option<FenceInfo>>,
    dropped: AtomicU64,
    refused: AtomicU64,
    peers_alive: AtomicU64,
    pps: AtomicU64,
    draining: AtomicBool,
    query: Mutex<Option<MultiplexedConnection>>,
    /// With Sentinel: the sentinel that answered last (asked first next time) and the primary
    /// it named (logged when it changes).
    sentinel_next: std::sync::atomic::AtomicUsize,
    primary: Mutex<Option<String>>,
    resync: Box<dyn Resync>,
    events: mpsc::UnboundedSender<HaEvent>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The HA store of one instance: cheap to clone, every clone is the same store. Create it with
/// [`HaStore::start`]; it runs until [`HaStore::shutdown`] (or until the runtime ends).
#[derive(Clone)]
pub struct HaStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for HaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HaStore")
            .field("instance", &self.inner.cfg.instance_id)
            .field("redis", &self.inner.cfg.redis_url)
            .field("epoch", &self.epoch())
            .field("store_up", &self.store_up())
            .field("backlog", &self.backlog())
            .finish()
    }
}

impl HaStore {
    /// Validates `cfg` and starts the writer and the heartbeat/monitor tasks on the current
    /// tokio runtime (call it from inside one). Returns at once, Redis reachable or not: the
    /// lease is taken as soon as Redis answers, and writes wait in the backlog until then.
    /// Events ([`HaEvent`]) come on the receiver; they are few (one or two per dead peer).
    pub fn start(
        cfg: HaConfig,
        resync: impl Resync,
    ) -> Result<(HaStore, mpsc::UnboundedReceiver<HaEvent>), Vec<super::HaConfigError>> {
        cfg.validate()?;
        if cfg.redis_url.is_tls() || cfg.sentinels.iter().any(super::RedisUrl::is_tls) {
            // rustls on ring, the one provider built in; a second call finds it installed.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let keys = Keys {
            prefix: cfg.key_prefix.clone(),
        };
        let role = if cfg.standby_for.is_empty() {
            "primary"
        } else if cfg.adopts_any() {
            "peer"
        } else {
            "standby"
        };
        let inner = Arc::new(Inner {
            cfg,
            keys,
            scripts: Scripts::new(),
            role,
            backlog: Mutex::new(Backlog::default()),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            closed_notify: Notify::new(),
            writer_up: AtomicBool::new(false),
            control_up: AtomicBool::new(false),
            down_logged: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            lease_lock: tokio::sync::Mutex::new(()),
            fenced: watch::channel(None).0,
            dropped: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            peers_alive: AtomicU64::new(0),
            pps: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            query: Mutex::new(None),
            sentinel_next: std::sync::atomic::AtomicUsize::new(0),
            primary: Mutex::new(None),
            resync: Box::new(resync),
            events: tx,
        });
        tokio::spawn(writer(inner.clone()));
        tokio::spawn(control(inner.clone()));
        Ok((HaStore { inner }, rx))
    }

    /// Stores `record` (its `owner` and `epoch` are set by the store). Never waits for Redis and
    /// never fails: the latest record per call waits in the backlog until it is written.
    pub fn put(&self, mut record: CallRecord) {
        record.owner.clone_from(&self.inner.cfg.instance_id);
        let id = record.call_id.clone();
        self.inner.enqueue(id, Pending::Put(record));
    }

    /// Removes a call (see [`HaStore::put`]).
    pub fn delete(&self, call_id: &CallId) {
        self.inner.enqueue(call_id.clone(), Pending::Delete);
    }

    /// Whether Redis answered the last write and the last heartbeat.
    pub fn store_up(&self) -> bool {
        self.inner.writer_up.load(Ordering::Relaxed)
            && self.inner.control_up.load(Ordering::Relaxed)
    }

    /// Call writes held for Redis, not yet acknowledged (waiting or in flight): at most
    /// `max_backlog`.
    pub fn backlog(&self) -> usize {
        let b = lock(&self.inner.backlog);
        b.map.len() + b.in_flight
    }

    /// Records of a full resync under way not yet acknowledged (taken from the owner's
    /// [`Resync`] snapshot, not held in the backlog), or 0.
    pub fn resync_pending(&self) -> usize {
        lock(&self.inner.backlog).resyncing
    }

    /// Writes dropped because the backlog was full (each one triggers a full resync).
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Writes Redis refused because the call belongs to another instance (adopted).
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    /// Other instances of the cluster whose heartbeat is fresher than the failure time, as
    /// of this instance's last heartbeat (0 until Redis first answered).
    pub fn peers_alive(&self) -> u64 {
        self.inner.peers_alive.load(Ordering::Relaxed)
    }

    /// This instance's lease epoch (0 until Redis first answered).
    pub fn epoch(&self) -> u64 {
        self.inner.epoch.load(Ordering::Relaxed)
    }

    /// Every gauge and counter at once.
    pub fn stats(&self) -> HaStats {
        let (backlog, resync_pending) = {
            let b = lock(&self.inner.backlog);
            (b.map.len() + b.in_flight, b.resyncing)
        };
        HaStats {
            store_up: self.store_up(),
            backlog,
            resync_pending,
            dropped: self.dropped(),
            refused: self.refused(),
            epoch: self.epoch(),
            fenced: self.is_fenced(),
            peers_alive: self.peers_alive(),
        }
    }

    /// This instance's ID.
    pub fn instance_id(&self) -> &str {
        &self.inner.cfg.instance_id
    }

    /// `Some` once another instance adopted this one's calls: from then on nothing is written,
    /// and the owner must stop forwarding and answering for its calls.
    pub fn fenced(&self) -> watch::Receiver<Option<FenceInfo>> {
        self.inner.fenced.subscribe()
    }

    /// Whether this instance is fenced (see [`HaStore::fenced`]).
    pub fn is_fenced(&self) -> bool {
        self.inner.fenced.borrow().is_some()
    }

    /// The load the heartbeat reports: packets per second and whether the instance drains.
    pub fn set_load(&self, packets_per_sec: u64, draining: bool) {
        self.inner.pps.store(packets_per_sec, Ordering::Relaxed);
        self.inner.draining.store(draining, Ordering::Relaxed);
    }

    /// Asks for a full resync (every live call written again from the [`Resync`] snapshot).
    pub fn request_resync(&self) {
        lock(&self.inner.backlog).needs_resync = true;
        self.inner.wake.notify_one();
    }

    /// Stops the tasks (the keys stay until their TTL, or until a standby adopts the calls).
    pub fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::Relaxed);
        self.inner.closed_notify.notify_waiters();
        self.inner.wake.notify_one();
    }

    /// A call's record, whichever instance owns it (`owner` and `epoch` as in Redis now).
    /// `None` for an ID that is not a valid call ID.
    pub async fn lookup(&self, call_id: &str) -> Result<Option<CallRecord>, HaError> {
        if !CallId::is_valid(call_id) {
            return Ok(None);
        }
        let mut c = self.inner.query_conn()?;
        let (owner, epoch, rec): (Option<String>, Option<u64>, Option<Vec<u8>>) =
            redis::cmd("HMGET")
                .arg(self.inner.keys.call(call_id))
                .arg("owner")
                .arg("epoch")
                .arg("rec")
                .query_async(&mut c)
                .await
                .map_err(|e| self.inner.query_failed(e))?;
        let Some(rec) = rec else { return Ok(None) };
        let mut r = CallRecord::decode(&rec).map_err(HaError::Record)?;
        if let Some(o) = owner {
            r.owner = o;
        }
        if let Some(e) = epoch {
            r.epoch = e;
        }
        Ok(Some(r))
    }

    /// Every instance that has sent a heartbeat in the last `key_ttl`, sorted by ID.
    pub async fn cluster(&self) -> Result<Vec<InstanceInfo>, HaError> {
        let inner = &self.inner;
        let mut c = inner.query_conn()?;
        let mut ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(inner.keys.instances())
            .query_async(&mut c)
            .await
            .map_err(|e| inner.query_failed(e))?;
        ids.sort();
        let mut p = redis::pipe();
        p.cmd("TIME");
        for id in &ids {
            p.cmd("HMGET").arg(inner.keys.inst(id)).arg(&[
                "role",
                "pps",
                "draining",
                "last_seen_ms",
            ]);
            p.cmd("HGET").arg(inner.keys.lease(id)).arg("epoch");
            p.cmd("SCARD").arg(inner.keys.owner_calls(id));
        }
        let replies: Vec<Value> = p
            .query_async(&mut c)
            .await
            .map_err(|e| inner.query_failed(e))?;
        let mut it = replies.into_iter();
        let now = redis_time_ms(it.next())?;
        let fail = inner.cfg.failure_time.as_millis() as u64;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let fields: Vec<Option<String>> = from_value(it.next())?;
            let epoch: Option<u64> = from_value(it.next())?;
            let calls: u64 = from_value(it.next())?;
            let field = |i: usize| fields.get(i).cloned().flatten();
            let last_seen = field(3).and_then(|s| s.parse::<u64>().ok());
            out.push(InstanceInfo {
                role: field(0).unwrap_or_else(|| "unknown".to_owned()),
                alive: last_seen.is_some_and(|s| now.saturating_sub(s) < fail),
                calls,
                packets_per_sec: field(1).and_then(|s| s.parse().ok()).unwrap_or(0),
                draining: field(2).as_deref() == Some("1"),
                epoch: epoch.unwrap_or(0),
                id,
            });
        }
        Ok(out)
    }
}

fn from_value<T: redis::FromRedisValue>(v: Option<Value>) -> Result<T, HaError> {
    T::from_redis_value(v.unwrap_or(Value::Nil)).map_err(|_| HaError::Protocol("reply type"))
}

fn redis_time_ms(v: Option<Value>) -> Result<u64, HaError> {
    let (s, us): (u64, u64) = from_value(v)?;
    Ok(s * 1000 + us / 1000)
}

impl Inner {
    fn enqueue(&self, id: CallId, p: Pending) {
        let mut b = lock(&self.backlog);
        let len = b.map.len() + b.in_flight;
        match b.map.get_mut(&id) {
            Some(slot) => *slot = p,
            None if len < self.cfg.max_backlog => {
                b.map.insert(id, p);
            }
            None => {
                b.needs_resync = true;
                drop(b);
                let n = self.dropped.fetch_add(1, Ordering::Relaxed);
                if n == 0 || n.is_power_of_two() {
                    tracing::warn!(
                        dropped = n + 1,
                        max_backlog = self.cfg.max_backlog,
                        "HA store: backlog full, call writes dropped; a full resync follows when \
                         Redis catches up"
                    );
                }
                return;
            }
        }
        drop(b);
        self.wake.notify_one();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Sleeps `d`, or less if the store closes.
    async fn sleep(&self, d: Duration) {
        let closed = self.closed_notify.notified();
        if self.is_closed() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = closed => {}
        }
    }

    fn query_conn(&self) -> Result<MultiplexedConnection, HaError> {
        lock(&self.query).clone().ok_or(HaError::Down)
    }

    fn query_failed(&self, e: redis::RedisError) -> HaError {
        if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
            *lock(&self.query) = None;
        }
        HaError::from(e)
    }

    /// A client for `info`, over TLS with the configured CA when `tls`.
    fn client(
        &self,
        info: impl redis::IntoConnectionInfo,
        tls: bool,
    ) -> Result<redis::Client, redis::RedisError> {
        match &self.cfg.tls_ca_pem {
            Some(ca) if tls => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                },
            ),
            _ => redis::Client::open(info),
        }
    }

    async fn connect(&self) -> Result<MultiplexedConnection, redis::RedisError> {
        let cc = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.cfg.command_timeout))
            .set_response_timeout(Some(self.cfg.command_timeout));
        let mut c = if self.cfg.sentinels.is_empty() {
            self.client(self.cfg.redis_url.expose(), self.cfg.redis_url.is_tls())?
                .get_multiplexed_async_connection_with_config(&cc)
                .await?
        } else {
            self.connect_primary(&cc).await?
        };
        // Pipelined scripts are sent as EVALSHA: load them on every new connection (Redis may
        // have restarted empty).
        for s in self.scripts.all() {
            s.load_async(&mut c).await?;
        }
        Ok(c)
    }

    /// Asks the sentinels where the primary is (the one that answered last first), connects to
    /// it with `redis_url`'s credentials, database and TLS, and checks that it is a primary:
    /// a sentinel's view lags a failover by a moment, and a demoted primary refuses writes.
    async fn connect_primary(
        &self,
        cc: &AsyncConnectionConfig,
    ) -> Result<MultiplexedConnection, redis::RedisError> {
        use redis::{ConnectionAddr, ErrorKind, IntoConnectionInfo};
        let (host, port) = self.discover_primary(cc).await?;
        let base = self.cfg.redis_url.expose().into_connection_info()?;
        let addr = match base.addr() {
            ConnectionAddr::TcpTls { insecure, .. } => ConnectionAddr::TcpTls {
                host: host.clone(),
                port,
                insecure: *insecure,
                tls_params: None,
            },
            _ => ConnectionAddr::Tcp(host.clone(), port),
        };
        let mut c = self
            .client(base.set_addr(addr), self.cfg.redis_url.is_tls())?
            .get_multiplexed_async_connection_with_config(cc)
            .await?;
        let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut c).await?;
        let role: String = role
            .into_iter()
            .next()
            .and_then(|v| redis::from_redis_value(v).ok())
            .unwrap_or_default();
        if role != "master" {
            return Err(redis::RedisError::from((
                ErrorKind::Client,
                "the sentinels' primary is not a primary (a failover under way)",
                format!("{host}:{port}, the primary the sentinels name, is a {role:?}, not a primary (a failover under way)"),
            )));
        }
        let now = format!("{host}:{port}");
        let before = lock(&self.primary).replace(now.clone());
        match before {
            None => tracing::info!(
                primary = %now,
                master_name = %self.cfg.master_name,
                "HA store: Redis primary found through Sentinel"
            ),
            Some(b) if b != now => tracing::warn!(
                primary = %now,
                previous = %b,
                master_name = %self.cfg.master_name,
                "HA store: Redis primary found through Sentinel (a failover: a new primary)"
            ),
            Some(_) => {}
        }
        Ok(c)
    }

    /// `SENTINEL GET-MASTER-ADDR-BY-NAME` to each sentinel in turn until one names the primary.
    async fn discover_primary(
        &self,
        cc: &AsyncConnectionConfig,
    ) -> Result<(String, u16), redis::RedisError> {
        let n = self.cfg.sentinels.len();
        let first = self.sentinel_next.load(Ordering::Relaxed) % n.max(1);
        let mut last_err = redis::RedisError::from((
            redis::ErrorKind::MasterNameNotFoundBySentinel,
            "no sentinel configured",
        ));
        for i in (0..n).map(|k| (first + k) % n) {
            let Some(url) = self.cfg.sentinels.get(i) else {
                continue;
            };
            let asked = async {
                let mut sc = self
                    .client(url.expose(), url.is_tls())?
                    .get_multiplexed_async_connection_with_config(cc)
                    .await?;
                redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(&self.cfg.master_name)
                    .query_async::<Option<(String, u16)>>(&mut sc)
                    .await
            };
            match asked.await {
                Ok(Some(addr)) => {
                    self.sentinel_next.store(i, Ordering::Relaxed);
                    return Ok(addr);
                }
                Ok(None) => {
                    last_err = redis::RedisError::from((
                        redis::ErrorKind::MasterNameNotFoundBySentinel,
                        "a sentinel does not know the master name",
                        format!("sentinel {url} has no master {:?}", self.cfg.master_name),
                    ));
                }
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    fn set_up(&self, flag: &AtomicBool) {
        if !flag.swap(true, Ordering::Relaxed)
            && self.writer_up.load(Ordering::Relaxed)
            && self.control_up.load(Ordering::Relaxed)
            && self.down_logged.swap(false, Ordering::Relaxed)
        {
            tracing::info!(
                redis = %self.cfg.redis_url,
                backlog = lock(&self.backlog).map.len(),
                "HA store: Redis reachable again"
            );
        }
    }

    fn set_down(&self, flag: &AtomicBool, what: &str, err: &redis::RedisError) {
        flag.store(false, Ordering::Relaxed);
        if !self.down_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                redis = %self.cfg.redis_url,
                error = %describe(err),
                during = what,
                "HA store: Redis unreachable or slow; media and the API go on, call writes wait \
                 in a bounded backlog and are written again when it is back"
            );
        }
    }

    fn fence(&self, epoch: u64, by: String) {
        let info = FenceInfo {
            instance: self.cfg.instance_id.clone(),
            by,
            epoch,
            own_epoch: self.epoch.load(Ordering::Relaxed),
        };
        let first = self.fenced.send_if_modified(|f| {
            if f.is_none() {
                *f = Some(info.clone());
                true
            } else {
                false
            }
        });
        if first {
            tracing::error!(own_epoch = info.own_epoch, "{info}");
            let _ = self.events.send(HaEvent::Fenced(info));
        }
    }

    /// Before this instance first takes its lease: if a previous life of it (a process that
    /// died and was restarted at once under the same ID) still owns calls and its heartbeat is
    /// younger than the failure time, waits until the peers can have seen it dead and taken
    /// them (its heartbeat older than the failure time, a heartbeat interval and a margin, or
    /// its calls gone), never longer than that in all (a heartbeat that stays young is another
    /// live process with this ID). Otherwise the new life's heartbeat would make the dead one
    /// look alive and its first resync would delete the calls nobody runs.
    async fn wait_out_previous_life(
        &self,
        c: &mut MultiplexedConnection,
    ) -> Result<(), redis::RedisError> {
        let me = &self.cfg.instance_id;
        let enough = self.cfg.failure_time + self.cfg.heartbeat_interval + PREVIOUS_LIFE_MARGIN;
        let started = Instant::now();
        let mut logged = false;
        while !self.is_closed() {
            let (now, seen, calls): (Value, Option<String>, u64) = redis::pipe()
                .cmd("TIME")
                .cmd("HGET")
                .arg(self.keys.inst(me))
                .arg("last_seen_ms")
                .cmd("SCARD")
                .arg(self.keys.owner_calls(me))
                .query_async(c)
                .await?;
            let now = redis_time_ms(Some(now)).unwrap_or(0);
            let age = seen
                .and_then(|s| s.parse::<u64>().ok())
                .map(|s| Duration::from_millis(now.saturating_sub(s)));
            let Some(age) = age.filter(|a| calls > 0 && *a < enough) else {
                break;
            };
            if started.elapsed() >= enough {
                // The heartbeat stays young: another live process uses this instance ID.
                tracing::error!(
                    instance = %me,
                    "HA: this instance's heartbeat is being written by another process: is the instance_id used twice?"
                );
                break;
            }
            if !logged {
                logged = true;
                tracing::warn!(
                    instance = %me,
                    calls,
                    heartbeat_age_ms = age.as_millis() as u64,
                    "HA: this instance's previous life still owns calls: waiting for the peers to take them over before taking the lease"
                );
            }
            tokio::time::sleep((enough - age).min(PEER_WATCH_TICK)).await;
        }
        if logged {
            tracing::info!(instance = %me, ms = started.elapsed().as_millis() as u64, "HA: waited out the previous life");
        }
        Ok(())
    }

    /// Takes the lease (first time) or checks it is still ours (after a reconnect). `false`:
    /// fenced.
    async fn ensure_lease(&self, c: &mut MultiplexedConnection) -> Result<bool, redis::RedisError> {
        let _g = self.lease_lock.lock().await;
        let me = &self.cfg.instance_id;
        let ttl = self.cfg.key_ttl.as_millis() as u64;
        let epoch = self.epoch.load(Ordering::Relaxed);
        if epoch == 0 {
            self.wait_out_previous_life(c).await?;
            let e: String = self
                .scripts
                .take
                .key(self.keys.lease(me))
                .key(self.keys.instances())
                .arg(me)
                .arg(ttl)
                .invoke_async(c)
                .await?;
            let e = e.parse::<u64>().unwrap_or(0);
            self.epoch.store(e, Ordering::Relaxed);
            tracing::info!(instance = %me, epoch = e, redis = %self.cfg.redis_url, "HA store: lease taken");
            return Ok(true);
        }
        let v: Value = self
            .scripts
            .resume
            .key(self.keys.lease(me))
            .arg(me)
            .arg(epoch)
            .arg(ttl)
            .invoke_async(c)
            .await?;
        match outcome(v) {
            Outcome::Fenced { epoch, by } => {
                self.fence(epoch, by);
                Ok(false)
            }
            _ => Ok(true),
        }
    }

    /// Handles a put or delete reply: `false` if the store is fenced.
    fn handle_outcome(&self, id: &CallId, o: Outcome) -> bool {
        match o {
            Outcome::Done | Outcome::NoLease => true,
            Outcome::Fenced { epoch, by } => {
                self.fence(epoch, by);
                false
            }
            Outcome::OtherOwner(owner) => {
                let n = self.refused.fetch_add(1, Ordering::Relaxed);
                if n == 0 || n.is_power_of_two() {
                    tracing::warn!(
                        call = %id.as_str(),
                        owner = %owner,
                        refused = n + 1,
                        "HA store: write refused, the call belongs to another instance"
                    );
                }
                true
            }
        }
    }

    fn put_cmd(&self, p: &mut redis::Pipeline, epoch: u64, rec: &CallRecord) -> bool {
        let me = &self.cfg.instance_id;
        let mut rec = rec.clone();
        rec.epoch = epoch;
        let Ok(bytes) = rec.encode() else {
            tracing::warn!(call = %rec.call_id.as_str(), "HA store: call record too large, not written");
            return false;
        };
        let mut inv = self.scripts.put.prepare_invoke();
        inv.key(self.keys.lease(me))
            .key(self.keys.call(&rec.call_id))
            .key(self.keys.owner_calls(me))
            .arg(me)
            .arg(epoch)
            .arg(bytes)
            .arg(self.cfg.key_ttl.as_millis() as u64)
            .arg(rec.call_id.as_str());
        p.invoke_script(&inv);
        true
    }

    fn delete_cmd(&self, p: &mut redis::Pipeline, epoch: u64, id: &CallId) {
        let me = &self.cfg.instance_id;
        let mut inv = self.scripts.delete.prepare_invoke();
        inv.key(self.keys.lease(me))
            .key(self.keys.call(id))
            .key(self.keys.owner_calls(me))
            .arg(me)
            .arg(epoch)
            .arg(id.as_str());
        p.invoke_script(&inv);
    }
}

/// Reads a script's `{code, ...}` reply.
fn outcome(v: Value) -> Outcome {
    let Value::Array(a) = v else {
        return Outcome::Done;
    };
    let code: i64 = a
        .first()
        .cloned()
        .and_then(|v| redis::from_redis_value(v).ok())
        .unwrap_or(1);
    let text = |i: usize| -> String {
        a.get(i)
            .cloned()
            .and_then(|v| redis::from_redis_value(v).ok())
            .unwrap_or_default()
    };
    match code {
        0 => Outcome::Fenced {
            epoch: text(1).parse().unwrap_or(0),
            by: text(2),
        },
        2 => Outcome::NoLease,
        3 => Outcome::OtherOwner(text(1)),
        _ => Outcome::Done,
    }
}

struct Backoff(Duration, Duration);

impl Backoff {
    /// With Sentinel the waits stay short: a failover gives a new primary within a second or
    /// two, and each attempt asks the sentinels first (cheap).
    fn new(inner: &Inner) -> Self {
        let max = if inner.cfg.sentinels.is_empty() {
            BACKOFF_MAX
        } else {
            BACKOFF_MAX_SENTINEL
        };
        Backoff(BACKOFF_MIN, max)
    }
    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(self.1);
        d
    }
    fn reset(&mut self) {
        self.0 = BACKOFF_MIN;
    }
}

/// The writer: puts and deletes from the backlog, full resyncs.
async fn writer(inner: Arc<Inner>) {
    let mut conn: Option<MultiplexedConnection> = None;
    let mut backoff = Backoff::new(&inner);
    // A (re)connection resyncs: Redis may have lost everything, or missed deletes.
    let mut resync = true;
    while !inner.is_closed() {
        if inner.fenced.borrow().is_some() {
            // Nothing more is written; keep the backlog from growing.
            let wake = inner.wake.notified();
            lock(&inner.backlog).map.clear();
            wait_for_work(&inner, wake).await;
            continue;
        }
        let mut c = match conn.take() {
            Some(c) => c,
            None => {
                let Some(c) = connect_with_lease(&inner, &mut backoff).await else {
                    continue;
                };
                resync = true;
                c
            }
        };
        if inner.fenced.borrow().is_some() {
            continue;
        }
        let epoch = inner.epoch.load(Ordering::Relaxed);
        let wanted = std::mem::take(&mut lock(&inner.backlog).needs_resync);
        if resync || wanted {
            match full_resync(&inner, &mut c, epoch).await {
                Ok(()) => resync = false,
                Err(e) => {
                    lock(&inner.backlog).needs_resync = true;
                    inner.set_down(&inner.writer_up, "resync", &e);
                    inner.sleep(backoff.next()).await;
                    continue;
                }
            }
        }
        // One batch from the backlog.
        let wake = inner.wake.notified();
        let batch = take_batch(&inner);
        if batch.is_empty() {
            inner.set_up(&inner.writer_up);
            backoff.reset();
            conn = Some(c);
            wait_for_work(&inner, wake).await;
            continue;
        }
        let (p, sent) = batch_pipeline(&inner, epoch, &batch);
        match p.query_async::<Vec<Value>>(&mut c).await {
            Ok(replies) => {
                let outcomes: Vec<Outcome> = replies.into_iter().map(outcome).collect();
                if outcomes.iter().any(|o| matches!(o, Outcome::NoLease)) {
                    // The lease expired or Redis lost it: take it back and write everything.
                    requeue(&inner, batch);
                    conn = None;
                    continue;
                }
                lock(&inner.backlog).in_flight = 0;
                for (id, o) in sent.iter().zip(outcomes) {
                    if !inner.handle_outcome(id, o) {
                        break;
                    }
                }
                inner.set_up(&inner.writer_up);
                backoff.reset();
                conn = Some(c);
            }
            Err(e) => {
                requeue(&inner, batch);
                inner.set_down(&inner.writer_up, "write", &e);
                inner.sleep(backoff.next()).await;
            }
        }
    }
}

/// Waits for `wake` (something in the backlog) or for the store to close.
async fn wait_for_work(inner: &Inner, wake: tokio::sync::futures::Notified<'_>) {
    tokio::select! {
        _ = wake => {}
        _ = inner.closed_notify.notified() => {}
    }
}

/// A new connection that holds this instance's lease; `None` once a failure is reported and
/// backed off.
async fn connect_with_lease(inner: &Inner, backoff: &mut Backoff) -> Option<MultiplexedConnection> {
    let (what, e) = match inner.connect().await {
        Ok(mut c) => match inner.ensure_lease(&mut c).await {
            Ok(_) => return Some(c),
            Err(e) => ("lease", e),
        },
        Err(e) => ("connect", e),
    };
    inner.set_down(&inner.writer_up, what, &e);
    inner.sleep(backoff.next()).await;
    None
}

/// Up to `BATCH` pending writes out of the backlog, counted in flight.
fn take_batch(inner: &Inner) -> Vec<(CallId, Pending)> {
    let mut b = lock(&inner.backlog);
    let batch: Vec<(CallId, Pending)> = if b.map.len() <= BATCH {
        b.map.drain().collect()
    } else {
        let ids: Vec<CallId> = b.map.keys().take(BATCH).cloned().collect();
        ids.into_iter()
            .filter_map(|id| b.map.remove(&id).map(|p| (id, p)))
            .collect()
    };
    b.in_flight = batch.len();
    batch
}

/// One pipeline of the batch's puts and deletes under `epoch`, and the calls it writes, in
/// order (a record that cannot be put is left out).
fn batch_pipeline(
    inner: &Inner,
    epoch: u64,
    batch: &[(CallId, Pending)],
) -> (redis::Pipeline, Vec<CallId>) {
    let mut p = redis::pipe();
    let mut sent = Vec::with_capacity(batch.len());
    for (id, pend) in batch {
        match pend {
            Pending::Put(r) => {
                if inner.put_cmd(&mut p, epoch, r) {
                    sent.push(id.clone());
                }
            }
            Pending::Delete => {
                inner.delete_cmd(&mut p, epoch, id);
                sent.push(id.clone());
            }
        }
    }
    (p, sent)
}

/// Puts a failed batch back, behind anything newer for the same calls.
fn requeue(inner: &Inner, batch: Vec<(CallId, Pending)>) {
    let mut b = lock(&inner.backlog);
    b.in_flight = 0;
    for (id, p) in batch {
        let len = b.map.len();
        if b.map.contains_key(&id) {
            continue;
        }
        if len < inner.cfg.max_backlog {
            b.map.insert(id, p);
        } else {
            b.needs_resync = true;
            inner.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Writes every live call from the owner's snapshot and deletes this instance's calls in Redis
/// that are not live. The backlog is emptied first: the snapshot is newer than all of it.
async fn full_resync(
    inner: &Arc<Inner>,
    c: &mut MultiplexedConnection,
    epoch: u64,
) -> Result<(), redis::RedisError> {
    let started = Instant::now();
    {
        let mut b = lock(&inner.backlog);
        b.map.clear();
        b.needs_resync = false;
    }
    // The owner may block to build its snapshot (e.g. ask its worker threads): not on the
    // runtime's threads.
    let owner = inner.clone();
    let Ok(mut live) = tokio::task::spawn_blocking(move || owner.resync.resync()).await else {
        tracing::warn!("HA store: the owner's resync snapshot panicked; retried later");
        lock(&inner.backlog).needs_resync = true;
        return Ok(());
    };
    let me = &inner.cfg.instance_id;
    for r in &mut live {
        r.owner.clone_from(me);
    }
    lock(&inner.backlog).resyncing = live.len();
    let mut ids = Vec::with_capacity(live.len());
    for chunk in live.chunks(BATCH) {
        let mut p = redis::pipe();
        let mut sent = Vec::with_capacity(chunk.len());
        for r in chunk {
            if inner.put_cmd(&mut p, epoch, r) {
                sent.push(r.call_id.clone());
            }
        }
        let replies: Vec<Value> = match p.query_async(c).await {
            Ok(r) => r,
            Err(e) => {
                lock(&inner.backlog).resyncing = 0;
                return Err(e);
            }
        };
        for (id, v) in sent.iter().zip(replies) {
            if !inner.handle_outcome(id, outcome(v)) {
                lock(&inner.backlog).resyncing = 0;
                return Ok(());
            }
        }
        {
            let mut b = lock(&inner.backlog);
            b.resyncing = b.resyncing.saturating_sub(chunk.len());
        }
        ids.extend(sent);
    }
    lock(&inner.backlog).resyncing = 0;
    let mut inv = inner.scripts.prune.prepare_invoke();
    inv.key(inner.keys.lease(me))
        .key(inner.keys.owner_calls(me))
        .arg(me)
        .arg(epoch)
        .arg(inner.keys.call_prefix())
        .arg("-");
    for id in &ids {
        inv.arg(id.as_str());
    }
    let v: Value = inv.invoke_async(c).await?;
    let pruned = match &v {
        Value::Array(a) => a
            .get(1)
            .cloned()
            .and_then(|v| redis::from_redis_value::<u64>(v).ok())
            .unwrap_or(0),
        _ => 0,
    };
    if let Outcome::Fenced { epoch, by } = outcome(v) {
        inner.fence(epoch, by);
        return Ok(());
    }
    tracing::info!(
        calls = ids.len(),
        pruned,
        ms = started.elapsed().as_millis() as u64,
        "HA store: full resync written"
    );
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PeerState {
    /// Not looked at yet, or alive.
    Watching,
    /// Down, `PeerDown` sent, not adopted yet (adoption is retried).
    Down,
    /// Adopted; watched again once its heartbeat is back (a restart with a new lease).
    Adopted,
}

/// The heartbeat, the TTL refresh and the monitor of the peers, on their own connection so
/// that a long write batch does not delay the heartbeat.
async fn control(inner: Arc<Inner>) {
    let mut conn: Option<MultiplexedConnection> = None;
    let mut backoff = Backoff::new(&inner);
    let mut peers: Vec<(String, PeerState)> = inner
        .cfg
        .standby_for
        .iter()
        .filter(|p| p.as_str() != super::config::ANY_PEER)
        .map(|p| (p.clone(), PeerState::Watching))
        .collect();
    let mut cadence = Cadence::new(&inner.cfg);
    let mut tick = tokio::time::interval(cadence.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !inner.is_closed() {
        tokio::select! {
            _ = tick.tick() => {}
            _ = inner.closed_notify.notified() => break,
        }
        if inner.fenced.borrow().is_some() {
            *lock(&inner.query) = None;
            break;
        }
        let mut c = match conn.take() {
            Some(c) => c,
            None => {
                let r = async {
                    let mut c = inner.connect().await?;
                    let ok = inner.ensure_lease(&mut c).await?;
                    Ok::<_, redis::RedisError>((c, ok))
                }
                .await;
                match r {
                    Ok((c, true)) => {
                        *lock(&inner.query) = Some(c.clone());
                        backoff.reset();
                        cadence.connected_at = Instant::now();
                        c
                    }
                    Ok((_, false)) => break,
                    Err(e) => {
                        *lock(&inner.query) = None;
                        inner.set_down(&inner.control_up, "connect", &e);
                        inner.sleep(backoff.next()).await;
                        continue;
                    }
                }
            }
        };
        match control_round(&inner, &mut c, &mut peers, &mut cadence).await {
            Ok(true) => {
                inner.set_up(&inner.control_up);
                conn = Some(c);
            }
            Ok(false) => break,
            Err(e) => {
                *lock(&inner.query) = None;
                inner.set_down(&inner.control_up, "heartbeat", &e);
            }
        }
    }
}

/// How often the control task wakes, beats and refreshes.
struct Cadence {
    /// Its period: the heartbeat interval, or [`PEER_WATCH_TICK`] when peers are probed (a
    /// dead peer is then seen within a tick of its suspect time, not within a heartbeat).
    tick: Duration,
    heartbeat: Duration,
    last_beat: Option<Instant>,
    refresh_every: Duration,
    last_refresh: Instant,
    /// When the control connection was (re)made. Redis' heartbeats are trusted to say a peer
    /// is down only a failure time after it: after an outage or a failover (the new primary
    /// holds what the old one had replicated) every heartbeat is stale until the peers have
    /// written again. A refused probe needs no such wait.
    connected_at: Instant,
    failure_time: Duration,
    /// What the probes learned.
    probes: ProbeBook,
}

/// Beyond the failure time and a heartbeat interval: the peers' adoption round.
const PREVIOUS_LIFE_MARGIN: Duration = Duration::from_millis(300);

/// How often the peers' heartbeats are read when they are probed.
const PEER_WATCH_TICK: Duration = Duration::from_millis(50);

/// How long a probe may take to be refused; one that has not been by then leaves the verdict to
/// the failure time (a stopped process's kernel still accepts; a dead host does not answer).
const PROBE_TIMEOUT: Duration = Duration::from_millis(100);

impl Cadence {
    fn new(cfg: &HaConfig) -> Cadence {
        let heartbeat = cfg.heartbeat_interval;
        let watches = !cfg.standby_for.is_empty() && cfg.probe_after().is_some();
        Cadence {
            tick: if watches {
                PEER_WATCH_TICK.min(heartbeat)
            } else {
                heartbeat
            },
            heartbeat,
            last_beat: None,
            refresh_every: cfg.key_ttl / 4,
            last_refresh: Instant::now(),
            connected_at: Instant::now(),
            failure_time: cfg.failure_time,
            probes: ProbeBook::default(),
        }
    }

    /// Whether the heartbeats read now may say a peer is down (see `connected_at`).
    fn heartbeats_settled(&self) -> bool {
        self.connected_at.elapsed() >= self.failure_time
    }

    /// Whether this round writes the heartbeat: a heartbeat interval since the last one, to
    /// the nearest tick.
    fn beat_due(&self) -> bool {
        self.last_beat
            .is_none_or(|t| t.elapsed() + self.tick / 2 >= self.heartbeat)
    }
}

/// One round: the heartbeat when due (and the refresh), and a look at the peers. `Ok(false)`:
/// fenced.
async fn control_round(
    inner: &Inner,
    c: &mut MultiplexedConnection,
    peers: &mut Vec<(String, PeerState)>,
    cadence: &mut Cadence,
) -> Result<bool, redis::RedisError> {
    let me = &inner.cfg.instance_id;
    let epoch = inner.epoch.load(Ordering::Relaxed);
    if cadence.beat_due() {
        if !heartbeat(inner, c, epoch).await? {
            return Ok(false);
        }
        cadence.last_beat = Some(Instant::now());
    }
    if cadence.last_refresh.elapsed() >= cadence.refresh_every {
        // The TTLs of the lease and of every call this instance owns.
        let v: Value = inner
            .scripts
            .refresh
            .key(inner.keys.lease(me))
            .key(inner.keys.owner_calls(me))
            .arg(me)
            .arg(epoch)
            .arg(inner.cfg.key_ttl.as_millis() as u64)
            .arg(inner.keys.call_prefix())
            .invoke_async(c)
            .await?;
        if let Outcome::Fenced { epoch, by } = outcome(v) {
            inner.fence(epoch, by);
            return Ok(false);
        }
        cadence.last_refresh = Instant::now();
    }
    if inner.cfg.adopts_any() {
        // N-way: every other instance of the cluster is a peer, as it joins.
        let ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(inner.keys.instances())
            .query_async(c)
            .await?;
        for id in ids {
            if id != *me && !peers.iter().any(|(p, _)| *p == id) {
                peers.push((id, PeerState::Watching));
            }
        }
    }
    if peers.is_empty() {
        return Ok(true);
    }
    let (now, mut beats) = peer_heartbeats(inner, c, peers).await?;
    probe_suspects(inner, peers, now, &mut beats, &mut cadence.probes).await;
    let settled = cadence.heartbeats_settled();
    for ((peer, state), beat) in peers.iter_mut().zip(beats) {
        if !settled && !beat.refused {
            continue; // stale heartbeats right after a (re)connection prove nothing
        }
        if !watch_peer(inner, c, peer, state, now, beat).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A peer's heartbeat as the control task reads it.
#[derive(Debug)]
struct PeerBeat {
    /// When it was last written (Redis' clock, ms), if it is still there.
    seen: Option<u64>,
    /// Where the peer can be probed.
    probe: Option<SocketAddr>,
    /// Calls it owns.
    calls: u64,
    /// Its probe was refused this round: its process is gone.
    refused: bool,
}

/// What the probes learned of the peers' probe addresses. Only the refusal of an address that
/// once accepted a connection says that a process is gone: an address that never accepted may be
/// firewalled (a reject is a refusal too), or a loopback address of another host or network
/// namespace.
#[derive(Debug, Default)]
struct ProbeBook {
    /// Per peer: its probe address as seen accepting.
    open: HashMap<String, SocketAddr>,
    /// Per peer: when an address not known to accept was last tried.
    tried: HashMap<String, Instant>,
}

/// How often a peer's probe address that has not accepted yet is tried.
const PROBE_LEARN_EVERY: Duration = Duration::from_secs(1);

/// What one probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// Connected: something listens (a live process, or a stopped one whose kernel accepts).
    Open,
    /// Refused: nothing listens there.
    Refused,
    /// No answer in time (a host down, a partition, a drop rule): proves nothing.
    Silent,
}

/// Probes, all at once, the peers watched whose heartbeat is older than the suspect time, and
/// those whose probe address has not been seen accepting yet (at most once a second each);
/// marks the suspects whose known-open address now refuses.
async fn probe_suspects(
    inner: &Inner,
    peers: &[(String, PeerState)],
    now: u64,
    beats: &mut [PeerBeat],
    book: &mut ProbeBook,
) {
    let Some(after) = inner.cfg.probe_after() else {
        return;
    };
    let after = after.as_millis() as u64;
    let mut probes = Vec::new();
    for (i, ((peer, state), b)) in peers.iter().zip(beats.iter()).enumerate() {
        let (Some(addr), Some(seen), PeerState::Watching) = (b.probe, b.seen, *state) else {
            continue;
        };
        let known = book.open.get(peer) == Some(&addr);
        let suspect = now.saturating_sub(seen) >= after;
        let learn = !known
            && book
                .tried
                .get(peer)
                .is_none_or(|t| t.elapsed() >= PROBE_LEARN_EVERY);
        if learn {
            book.tried.insert(peer.clone(), Instant::now());
        }
        if (suspect && known) || learn {
            probes.push((i, peer.clone(), addr, known, tokio::spawn(probe(addr))));
        }
    }
    for (i, peer, addr, known, p) in probes {
        match p.await {
            Ok(Probe::Open) => {
                book.open.insert(peer, addr);
            }
            Ok(Probe::Refused) if known => {
                if let Some(b) = beats.get_mut(i) {
                    b.refused = true;
                }
            }
            _ => {}
        }
    }
}

/// One TCP connection to `addr`, [`PROBE_TIMEOUT`] at most, closed at once.
async fn probe(addr: SocketAddr) -> Probe {
    match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Probe::Open,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Probe::Refused,
        _ => Probe::Silent,
    }
}

/// This instance's heartbeat (its load, and its lease kept) under `epoch`. `Ok(false)`: fenced.
async fn heartbeat(
    inner: &Inner,
    c: &mut MultiplexedConnection,
    epoch: u64,
) -> Result<bool, redis::RedisError> {
    let me = &inner.cfg.instance_id;
    let v: Value = inner
        .scripts
        .heartbeat
        .key(inner.keys.lease(me))
        .key(inner.keys.inst(me))
        .key(inner.keys.instances())
        .key(inner.keys.owner_calls(me))
        .arg(me)
        .arg(epoch)
        .arg(inner.role)
        .arg(inner.pps.load(Ordering::Relaxed))
        .arg(u8::from(inner.draining.load(Ordering::Relaxed)))
        .arg((3 * inner.cfg.failure_time).as_millis() as u64)
        .arg(inner.cfg.key_ttl.as_millis() as u64)
        .arg(inner.cfg.failure_time.as_millis() as u64)
        .arg(inner.keys.inst(""))
        .arg(
            inner
                .cfg
                .probe_address
                .map(|a| a.to_string())
                .unwrap_or_default(),
        )
        .invoke_async(c)
        .await?;
    if let Value::Array(a) = &v {
        if let (Some(Value::Int(1)), Some(Value::Int(n))) = (a.first(), a.get(1)) {
            inner
                .peers_alive
                .store(u64::try_from(*n).unwrap_or(0), Ordering::Relaxed);
        }
    }
    match outcome(v) {
        Outcome::Fenced { epoch, by } => {
            inner.fence(epoch, by);
            Ok(false)
        }
        // Redis lost the lease (a restart without persistence): take it back.
        Outcome::NoLease => inner.ensure_lease(c).await,
        _ => Ok(true),
    }
}

/// Redis's clock (ms) and, per peer, its heartbeat: when it was last seen, where it can be
/// probed, how many calls it owns.
async fn peer_heartbeats(
    inner: &Inner,
    c: &mut MultiplexedConnection,
    peers: &[(String, PeerState)],
) -> Result<(u64, Vec<PeerBeat>), redis::RedisError> {
    let mut p = redis::pipe();
    p.cmd("TIME");
    for (peer, _) in peers {
        p.cmd("HMGET")
            .arg(inner.keys.inst(peer))
            .arg(&["last_seen_ms", "probe"]);
        p.cmd("SCARD").arg(inner.keys.owner_calls(peer));
    }
    let replies: Vec<Value> = p.query_async(c).await?;
    let mut it = replies.into_iter();
    let now = redis_time_ms(it.next()).unwrap_or(0);
    let beats = peers
        .iter()
        .map(|_| {
            let fields: Vec<Option<String>> = next_or_default(&mut it);
            let field = |i: usize| fields.get(i).cloned().flatten();
            PeerBeat {
                seen: field(0).and_then(|s| s.parse().ok()),
                probe: field(1).and_then(|s| s.parse().ok()),
                calls: next_or_default(&mut it),
                refused: false,
            }
        })
        .collect();
    Ok((now, beats))
}

/// What a peer's heartbeat (at Redis time `now`) means: alive, never ran, or down (its
/// heartbeat older than the failure time, or its probe refused), then its calls adopted.
/// `Ok(false)`: this instance was fenced meanwhile.
async fn watch_peer(
    inner: &Inner,
    c: &mut MultiplexedConnection,
    peer: &str,
    state: &mut PeerState,
    now: u64,
    beat: PeerBeat,
) -> Result<bool, redis::RedisError> {
    let PeerBeat {
        seen,
        calls,
        refused,
        ..
    } = beat;
    let fail = inner.cfg.failure_time.as_millis() as u64;
    // Down once its heartbeat is this old: the failure time, or the suspect time when the
    // probe says its process is gone. Once down, it is back only with a heartbeat younger
    // than the suspect time (a stale one may still be younger than the failure time).
    let down_ms = match inner.cfg.probe_after() {
        Some(after) if refused || *state != PeerState::Watching => after.as_millis() as u64,
        _ => fail,
    };
    let alive = seen.is_some_and(|s| now.saturating_sub(s) < down_ms);
    if alive {
        *state = PeerState::Watching;
        return Ok(true);
    }
    if seen.is_none() && calls == 0 {
        // Not started yet, or gone long ago with nothing left: nothing to adopt.
        return Ok(true);
    }
    if *state == PeerState::Adopted {
        return Ok(true);
    }
    if *state == PeerState::Watching {
        tracing::warn!(
            peer = %peer,
            heartbeat_age_ms = seen.map(|s| now.saturating_sub(s)),
            detected_by = if refused { "probe" } else { "heartbeat" },
            "HA: peer down, adopting its calls"
        );
        let _ = inner.events.send(HaEvent::PeerDown {
            peer: peer.to_owned(),
        });
        *state = PeerState::Down;
    }
    if adopt(inner, c, peer, down_ms).await? {
        *state = PeerState::Adopted;
    } else if inner.fenced.borrow().is_some() {
        return Ok(false);
    }
    Ok(true)
}

/// The next value of a script's reply as `T`; the default when it is missing or not a `T`.
fn next_or_default<T: redis::FromRedisValue + Default>(it: &mut impl Iterator<Item = Value>) -> T {
    it.next()
        .and_then(|v| redis::from_redis_value(v).ok())
        .unwrap_or_default()
}

/// The adopted records of an adoption script's reply, now `me`'s under `epoch`, and how many
/// did not decode.
fn adopted_records(
    values: impl Iterator<Item = Value>,
    me: &str,
    epoch: u64,
) -> (Vec<CallRecord>, usize) {
    let mut records = Vec::new();
    let mut bad = 0usize;
    for v in values {
        let Ok(bytes) = redis::from_redis_value::<Vec<u8>>(v) else {
            bad += 1;
            continue;
        };
        match CallRecord::decode(&bytes) {
            Ok(mut r) => {
                me.clone_into(&mut r.owner);
                r.epoch = epoch;
                records.push(r);
            }
            Err(_) => bad += 1,
        }
    }
    (records, bad)
}

/// Runs the adoption script for `peer`; `true` once adopted (the event is sent) or adopted by
/// another standby (no event).
async fn adopt(
    inner: &Inner,
    c: &mut MultiplexedConnection,
    peer: &str,
    down_ms: u64,
) -> Result<bool, redis::RedisError> {
    let started = Instant::now();
    let me = &inner.cfg.instance_id;
    let epoch = inner.epoch.load(Ordering::Relaxed);
    let v: Value = inner
        .scripts
        .adopt
        .key(inner.keys.lease(me))
        .key(inner.keys.lease(peer))
        .key(inner.keys.inst(peer))
        .key(inner.keys.owner_calls(peer))
        .key(inner.keys.owner_calls(me))
        .key(inner.keys.instances())
        .arg(me)
        .arg(epoch)
        .arg(peer)
        .arg(inner.cfg.failure_time.as_millis() as u64)
        .arg(inner.cfg.key_ttl.as_millis() as u64)
        .arg(inner.keys.call_prefix())
        .arg(u8::from(inner.cfg.adopts_any()))
        .arg(inner.keys.inst(""))
        .arg(inner.keys.owner_prefix())
        .arg(inner.keys.owner_calls_suffix())
        .arg(down_ms)
        .invoke_async(c)
        .await?;
    let Value::Array(a) = v else { return Ok(false) };
    let mut it = a.into_iter();
    let code: i64 = it
        .next()
        .and_then(|v| redis::from_redis_value(v).ok())
        .unwrap_or(-1);
    match code {
        1 => {}
        0 => {
            let epoch: String = next_or_default(&mut it);
            let by: String = next_or_default(&mut it);
            inner.fence(epoch.parse().unwrap_or(0), by);
            return Ok(false);
        }
        5 => {
            let by: String = next_or_default(&mut it);
            tracing::info!(peer = %peer, by = %by, "HA: the peer's calls were adopted by another standby");
            return Ok(true);
        }
        _ => return Ok(false),
    }
    let peer_epoch: u64 = next_or_default::<String>(&mut it).parse().unwrap_or(0);
    // Calls of the peer still unclaimed: the other instances' shares (N-way).
    let left: u64 = next_or_default(&mut it);
    let (records, bad) = adopted_records(it, me, epoch);
    if records.is_empty() && bad == 0 && left > 0 {
        return Ok(false); // nothing for this instance this round; the others are at it
    }
    tracing::warn!(
        peer = %peer,
        calls = records.len(),
        undecodable = bad,
        left_to_others = left,
        peer_epoch,
        ms = started.elapsed().as_millis() as u64,
        "HA: adopted the calls of a dead peer"
    );
    let _ = inner.events.send(HaEvent::Adopted {
        peer: peer.to_owned(),
        records,
        epoch: peer_epoch,
    });
    Ok(left == 0)
}
