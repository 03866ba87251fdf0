//! High availability: call records in Redis, a lease that fences a dead primary, heartbeats,
//! failure detection and the adoption of a dead peer's calls by its standby (feature `ha`).
//!
//! This layer knows nothing of the engine's call types: a call is a [`CallRecord`] with an
//! opaque body (e.g. JSON of the call and its transmission control state) and, apart from it,
//! its key material sealed with [`SealKey`] (AES-256-GCM, the record's call ID as associated
//! data). The owner of the calls (the engine) hands records to [`HaStore::put`] on every
//! control-plane change and gets the records of a dead peer back in [`HaEvent::Adopted`].
//!
//! ## Guarantees
//!
//! - **Redis trouble never stops the caller.** [`HaStore::put`] and [`HaStore::delete`] take a
//!   short lock, never wait for Redis and never fail: they go into a bounded backlog that keeps
//!   the latest record per call. Past `max_backlog` distinct calls a record is dropped, counted
//!   ([`HaStore::dropped`]) and the store marks itself for a full resync. When Redis is down the
//!   store logs it once, [`HaStore::store_up`] is false, [`HaStore::backlog`] says how much waits,
//!   and it retries with backoff; when Redis is back it writes every live call again from the
//!   owner's [`Resync`] snapshot and deletes the calls of its own that are no longer live.
//! - **Fencing.** Each instance holds a lease with an epoch. Every write goes through a Lua
//!   script that compares the writer's epoch with the one in Redis: once a standby has adopted
//!   an instance's calls (which bumps that instance's epoch), the old instance's writes are
//!   refused, [`HaStore::fenced`] turns to `Some` and the store logs once: `fenced: instance X
//!   lost its calls to Y at epoch N; not forwarding or answering for them`. A fenced store
//!   writes nothing more; the process must drop those calls and restart to take a new lease.
//! - **Failure detection** uses Redis' own clock (`TIME` inside the scripts), so the hosts'
//!   clocks do not matter: a peer whose heartbeat is older than `failure_time` (or gone) is
//!   down.
//!
//! ## Key schema
//!
//! Every key starts with the configured prefix `P` (default `mcvr`) and has a TTL as a safety
//! net, so an instance that dies with no standby leaves nothing behind for long.
//!
//! | key | type | content | TTL |
//! |---|---|---|---|
//! | `P:inst:{id}` | hash | `role` (`active`), `calls`, `pps` (packets/s), `draining` (`0`/`1`), `epoch`, `last_seen_ms` (Redis time) | 3 × `failure_time`, set by every heartbeat |
//! | `P:lease:{id}` | hash | `epoch` (raised by one at each start, and by the adopter at a takeover), `by` (who raised it last) | `key_ttl`, refreshed by the heartbeat |
//! | `P:call:{call_id}` | hash | `owner`, `epoch` (the owner's lease epoch when written), `rec` (the [`CallRecord`] encoding) | `key_ttl`, refreshed on write and every `key_ttl / 4` |
//! | `P:owner:{id}:calls` | set | the call IDs `id` owns | `key_ttl`, as above |
//! | `P:instances` | set | every instance ID that has sent a heartbeat ([`HaStore::cluster`]) | `key_ttl` |
//!
//! Scripts (all atomic): *lease* (`HINCRBY` of the epoch at start), *put* and *delete* (refused
//! unless the writer's epoch is the lease's, and unless the call is the writer's or nobody's),
//! *heartbeat* (refused likewise), *refresh* (TTLs of the owner set and its calls), *adopt* (if
//! the adopter's own lease holds and the peer's heartbeat has lapsed: raise the peer's epoch,
//! move every call of the peer's set to the adopter, return them).
//!
//! ## Integration (`serve`)
//!
//! With `[ha] enabled`, `serve` starts the store beside the engine (`sidecar::ha`): the
//! workers send a one-to-one call's [`crate::relay::CallImage`] on every control-plane change
//! and about every second while its media flows ([`crate::relay::Engine::ha_updates`]); a
//! thread turns each into a record ([`crate::relay::CallImage::to_record`]: the snapshots as
//! JSON in the body, the key material, the SDPs and a SHA-256 of the body sealed) and
//! [`HaStore::put`]s it; [`Resync`] is [`crate::relay::Engine::snapshot_calls`] and
//! [`crate::relay::Engine::snapshot_groups`]. On [`HaEvent::Adopted`] each record is opened
//! ([`StoredImage::from_record`]) and handed to
//! [`crate::relay::Engine::adopt_call`] (same relay ports, restored state, `call.adopted`); on
//! [`HaStore::fenced`] every call is dropped ([`crate::relay::Engine::abandon_calls`]).
//! `GET /v1/cluster` is [`HaStore::cluster`]; `GET /v1/calls/{id}` falls back to
//! [`HaStore::lookup`]. Group calls are stored the same way ([`crate::relay::GroupImage`]:
//! the transmission control server's snapshot, the members' relay ports and addresses and the
//! rules' state in the body, the members' keys sealed), adopted with
//! [`crate::relay::Engine::adopt_group_call`] and dropped on fencing like the others.
//!
//! ## Limits
//!
//! - A Redis that loses its data (a restart without persistence) forgets the leases: the store
//!   takes its own lease back with its old epoch and writes its calls again. A primary that was
//!   already adopted but has not written since (so does not know it is fenced) would do the
//!   same and race the adopter call by call (each call stays with whoever writes it first). Run
//!   Redis with AOF persistence or with replicas under Sentinel where that matters.
//! - [`Resync`] must include adopted calls once they are restored: a resync deletes this
//!   instance's calls in Redis that its snapshot does not hold.
//! - No Redis Cluster: the scripts touch keys of several calls and instances. Redis Sentinel
//!   is supported ([`HaConfig::sentinels`]): the store asks the sentinels for the primary at
//!   every (re)connection and checks its `ROLE`, so it follows a failover without a restart;
//!   every reconnection writes the full state again (the new primary may lack the writes the
//!   old one had not replicated yet). Discovery is a `SENTINEL GET-MASTER-ADDR-BY-NAME` over
//!   the crate's plain client rather than the `redis` crate's `sentinel` feature, which would
//!   bring a second `rand` and its dependency tree for the same two commands.
//!
//! rtpengine keeps one Redis key per call too, written by its owner; its standby mirrors the
//! calls continuously through keyspace notifications. Here the standby reads a dead peer's
//! calls only when it adopts them (one script call, the records in its reply), which keeps the
//! steady state to the owner's writes alone.

mod call_state;
mod config;
mod record;
mod seal;
mod store;

pub use call_state::{StoredCallError, StoredImage};
pub use config::{HaConfig, HaConfigError, RedisUrl, ANY_PEER, DEFAULT_SUSPECT_TIME};
pub use record::{CallRecord, RecordError};
pub use seal::{SealError, SealKey, SEAL_KEY_LEN};
pub use store::{FenceInfo, HaError, HaEvent, HaStats, HaStore, InstanceInfo, Resync};
