//! `[ha]` in `serve`: the HA store beside the engine. Call images from the workers become
//! records (sealed keys) written off the media path; a dead peer's records become adopted
//! calls; a fenced instance drops its calls; the heartbeat carries the load.
#![allow(clippy::disallowed_methods)] // an I/O driver: record times are wall-clock ms

use crate::ha::{CallRecord, HaConfig, HaEvent, HaStore, SealKey, StoredImage};
use crate::relay::{AdoptError, CallImage, Engine, GroupImage, HaUpdate};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{error, info, warn};

/// How long an adoption retries binding a relay port the dead relay's process may still hold.
const BIND_RETRY_FOR: Duration = Duration::from_secs(3);

/// The HA store of a running sidecar and its figures.
#[derive(Debug)]
pub(crate) struct HaRuntime {
    pub(crate) store: HaStore,
    /// Adoptions that failed (a record that does not open, a port that cannot be bound).
    pub(crate) adopt_failures: AtomicU64,
    /// Calls dropped because this instance was fenced.
    pub(crate) fenced_drops: AtomicU64,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A call image's record (keys sealed with `key`), or `None`, logged, when it cannot be encoded.
fn record(image: &CallImage, key: &SealKey) -> Option<CallRecord> {
    logged(image.to_record(key, unix_ms()), &image.call.call_id, "call")
}

/// A group call image's record, as [`record`].
fn group_record(image: &GroupImage, key: &SealKey) -> Option<CallRecord> {
    logged(
        image.to_record(key, unix_ms()),
        &image.group.call_id,
        "group call",
    )
}

fn logged<E: std::fmt::Display>(
    encoded: Result<CallRecord, E>,
    call_id: &str,
    kind: &str,
) -> Option<CallRecord> {
    encoded
        .map_err(|e| warn!(call = %call_id, error = %e, "HA: cannot encode a {kind} record"))
        .ok()
}

/// Starts the store (on the current tokio runtime) and its tasks.
pub(crate) fn start(cfg: HaConfig, engine: Arc<Engine>) -> Result<Arc<HaRuntime>, String> {
    let seal = cfg.seal_key.clone();
    let instance = cfg.instance_id.clone();
    let probe_after_ms = cfg.probe_after().map(|d| d.as_millis() as u64);
    let probe_address = cfg.probe_address.map(|a| a.to_string());
    let (store, events) = HaStore::start(cfg, resync(engine.clone(), seal.clone()))
        .map_err(|problems| super::config::one_line(&problems))?;
    let rt = Arc::new(HaRuntime {
        store: store.clone(),
        adopt_failures: AtomicU64::new(0),
        fenced_drops: AtomicU64::new(0),
    });
    info!(
        instance = %instance,
        probe_after_ms,
        probe_address,
        "HA store started (peers probed after probe_after_ms; this instance probed at probe_address)"
    );
    spawn_writer(&engine, store.clone(), seal.clone())?;
    spawn_adoptions(engine.clone(), rt.clone(), events, seal);
    spawn_fencing(engine.clone(), rt.clone(), &store);
    spawn_load_reports(engine, store);
    Ok(rt)
}

/// What a full resync writes: the records of every call and group call the engine runs.
fn resync(engine: Arc<Engine>, seal: Arc<SealKey>) -> impl Fn() -> Vec<CallRecord> {
    move || {
        let mut all: Vec<CallRecord> = engine
            .snapshot_calls()
            .iter()
            .filter_map(|i| record(i, &seal))
            .collect();
        all.extend(
            engine
                .snapshot_groups()
                .iter()
                .filter_map(|i| group_record(i, &seal)),
        );
        all
    }
}

/// The writer: images from the workers to records, off the media path and off the runtime.
fn spawn_writer(engine: &Engine, store: HaStore, seal: Arc<SealKey>) -> Result<(), String> {
    let updates = engine.ha_updates();
    std::thread::Builder::new()
        .name("mcv-ha-writer".into())
        .spawn(move || {
            for u in updates {
                if store.is_fenced() {
                    continue;
                }
                match u {
                    HaUpdate::Put(image) => {
                        if let Some(r) = record(&image, &seal) {
                            store.put(r);
                        }
                    }
                    HaUpdate::PutGroup(image) => {
                        if let Some(r) = group_record(&image, &seal) {
                            store.put(r);
                        }
                    }
                    HaUpdate::Delete(id) => store.delete(&id),
                }
            }
        })
        .map(drop)
        .map_err(|e| format!("HA writer thread: {e}"))
}

/// Adoptions: a dead peer's records become calls of this engine.
fn spawn_adoptions(
    engine: Arc<Engine>,
    rt: Arc<HaRuntime>,
    mut events: tokio::sync::mpsc::UnboundedReceiver<HaEvent>,
    seal: Arc<SealKey>,
) {
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let HaEvent::Adopted { peer, records, .. } = ev {
                let engine = engine.clone();
                let seal = seal.clone();
                let rt = rt.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    adopt_all(&engine, &seal, &peer, records, &rt)
                })
                .await;
            }
        }
    });
}

/// Fencing: stop forwarding and answering for the calls another instance has now.
fn spawn_fencing(engine: Arc<Engine>, rt: Arc<HaRuntime>, store: &HaStore) {
    let mut fenced = store.fenced();
    tokio::spawn(async move {
        if fenced.wait_for(Option::is_some).await.is_err() {
            return;
        }
        let info = fenced.borrow().clone();
        let engine2 = engine.clone();
        let n = tokio::task::spawn_blocking(move || engine2.abandon_calls())
            .await
            .unwrap_or(0);
        rt.fenced_drops.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(info) = info {
            error!(
                instance = %info.instance,
                by = %info.by,
                epoch = info.epoch,
                dropped_calls = n,
                "fenced: this instance lost its calls to {}; dropped {n} calls, not forwarding or answering for them; restart it to take a new lease",
                info.by
            );
        }
    });
}

/// The load the heartbeat reports: packets per second into the engine, and whether it drains.
fn spawn_load_reports(engine: Arc<Engine>, store: HaStore) {
    tokio::spawn(async move {
        let mut last = (Instant::now(), 0u64);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let s = engine.stats();
            let packets = s.caller.packets_in + s.callee.packets_in + s.group_members.packets_in;
            let dt = last.0.elapsed().as_secs_f64().max(0.001);
            let pps = (packets.saturating_sub(last.1) as f64 / dt) as u64;
            last = (Instant::now(), packets);
            store.set_load(pps, s.draining);
        }
    });
}

/// Restores every record of a dead peer.
fn adopt_all(
    engine: &Engine,
    seal: &SealKey,
    peer: &str,
    records: Vec<CallRecord>,
    rt: &HaRuntime,
) {
    let started = Instant::now();
    let total = records.len();
    let mut adopted = 0usize;
    for r in records {
        let image = match StoredImage::from_record(&r, seal) {
            Ok(i) => i,
            Err(e) => {
                rt.adopt_failures.fetch_add(1, Ordering::Relaxed);
                error!(call = %r.call_id, peer, error = %e, "HA: cannot adopt a call");
                continue;
            }
        };
        // The record's age now, plus the time spent retrying its binds (not the time the
        // adoption of the records before it took: that is in `unix_ms()` already).
        let age = Duration::from_millis(unix_ms().saturating_sub(r.updated_unix_ms));
        let read = Instant::now();
        let until = read + BIND_RETRY_FOR;
        loop {
            let age = age + read.elapsed();
            let done = match &image {
                StoredImage::Call(c) => engine.adopt_call((**c).clone(), age, peer),
                StoredImage::Group(g) => engine.adopt_group_call((**g).clone(), age, peer),
            };
            match done {
                Ok(()) => {
                    adopted += 1;
                    break;
                }
                Err(AdoptError::Bind(addr, e)) if Instant::now() < until => {
                    let _ = (addr, e);
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    rt.adopt_failures.fetch_add(1, Ordering::Relaxed);
                    error!(call = %r.call_id, peer, error = %e, "HA: cannot adopt a call");
                    break;
                }
            }
        }
    }
    warn!(
        peer,
        adopted,
        failed = total - adopted,
        ms = started.elapsed().as_millis() as u64,
        "HA: took over the calls of a dead peer"
    );
}

impl HaRuntime {
    /// Waits (up to `max`) until every write is in Redis, e.g. the deletes of a shutdown,
    /// then stops the store.
    pub(crate) async fn flush_and_stop(&self, max: Duration) {
        let until = Instant::now() + max;
        // Let the writer thread turn the last updates into store writes first.
        tokio::time::sleep(Duration::from_millis(100)).await;
        while Instant::now() < until && self.store.store_up() && self.store.backlog() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.store.shutdown();
    }
}

impl HaRuntime {
    /// The HA series of `/metrics`.
    pub(crate) fn render(&self, engine: &Engine, out: &mut String) {
        use std::fmt::Write as _;
        let s = self.store.stats();
        let series: [(&str, &str, &str, u64); 8] = [
            (
                "mcvideo_relay_ha_store_up",
                "gauge",
                "1 when Redis answered the last write and the last heartbeat.",
                u64::from(s.store_up),
            ),
            (
                "mcvideo_relay_ha_backlog",
                "gauge",
                "Call writes waiting for Redis (bounded by ha.max_backlog).",
                (s.backlog + s.resync_pending) as u64,
            ),
            (
                "mcvideo_relay_ha_dropped_writes_total",
                "counter",
                "Call writes dropped because the backlog was full (each triggers a resync).",
                s.dropped,
            ),
            (
                "mcvideo_relay_ha_adoptions_total",
                "counter",
                "Calls taken over from a dead peer.",
                engine.adoptions(),
            ),
            (
                "mcvideo_relay_ha_adoption_failures_total",
                "counter",
                "Calls of a dead peer that could not be taken over.",
                self.adopt_failures.load(Ordering::Relaxed),
            ),
            (
                "mcvideo_relay_ha_fenced",
                "gauge",
                "1 once another instance adopted this one's calls.",
                u64::from(s.fenced),
            ),
            (
                "mcvideo_relay_ha_epoch",
                "gauge",
                "This instance's lease epoch.",
                s.epoch,
            ),
            (
                "mcvideo_relay_ha_peers_alive",
                "gauge",
                "Other instances of the cluster with a fresh heartbeat, as of this one's last heartbeat.",
                s.peers_alive,
            ),
        ];
        for (name, kind, help, v) in series {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
    }
}

fn unavailable(e: &crate::ha::HaError) -> super::error::ApiError {
    super::error::ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "ha_store_unavailable",
        e.to_string(),
    )
}

/// One instance in `GET /v1/cluster`.
#[derive(Debug, serde::Serialize)]
struct ClusterInstance {
    alive: bool,
    calls: u64,
    draining: bool,
    epoch: u64,
    id: String,
    packets_per_sec: u64,
    role: String,
}

/// `GET /v1/cluster`.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Cluster {
    instance: String,
    instances: Vec<ClusterInstance>,
}

/// A party of a call another instance owns.
#[derive(Debug, serde::Serialize)]
struct RemoteParty {
    mcvideo_id: serde_json::Value,
}

/// `GET /v1/calls/{id}` for a call another instance owns: what its record in Redis says in
/// the clear (fields the record lacks are `null`). A group call has its group ID and members
/// instead of the parties.
#[derive(Debug, serde::Serialize)]
pub(crate) struct RemoteCall {
    call_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    callee: Option<RemoteParty>,
    #[serde(skip_serializing_if = "Option::is_none")]
    caller: Option<RemoteParty>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_id: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    members: Option<Vec<RemoteParty>>,
    epoch: u64,
    kind: serde_json::Value,
    media_security: serde_json::Value,
    owner: String,
    remote: bool,
    state: serde_json::Value,
    transmission: serde_json::Value,
    updated_unix_ms: u64,
}

impl HaRuntime {
    /// `GET /v1/cluster`.
    pub(crate) async fn cluster_json(&self) -> Result<Cluster, super::error::ApiError> {
        let list = self.store.cluster().await.map_err(|e| unavailable(&e))?;
        Ok(Cluster {
            instance: self.store.instance_id().to_owned(),
            instances: list
                .into_iter()
                .map(|i| ClusterInstance {
                    alive: i.alive,
                    calls: i.calls,
                    draining: i.draining,
                    epoch: i.epoch,
                    id: i.id,
                    packets_per_sec: i.packets_per_sec,
                    role: i.role,
                })
                .collect(),
        })
    }

    /// A call another instance owns, from Redis (`None`: no such call anywhere).
    pub(crate) async fn lookup(
        &self,
        id: &str,
    ) -> Result<Option<RemoteCall>, super::error::ApiError> {
        let Some(r) = self.store.lookup(id).await.map_err(|e| unavailable(&e))? else {
            return Ok(None);
        };
        // The clear body is enough to describe the call (no key is opened here).
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        let g = &body["group"];
        if g.is_object() {
            let members = g["members"].as_array().map(|m| {
                m.iter()
                    .map(|m| RemoteParty {
                        mcvideo_id: m["mcvideo_id"].clone(),
                    })
                    .collect()
            });
            return Ok(Some(RemoteCall {
                call_id: r.call_id.as_str().to_owned(),
                callee: None,
                caller: None,
                group_id: Some(g["group_id"].clone()),
                members: Some(members.unwrap_or_default()),
                epoch: r.epoch,
                kind: "group".into(),
                media_security: g["media_security"].clone(),
                owner: r.owner,
                remote: true,
                state: "established".into(),
                transmission: g["tc"]["transmission"].clone(),
                updated_unix_ms: r.updated_unix_ms,
            }));
        }
        let c = &body["call"];
        Ok(Some(RemoteCall {
            call_id: r.call_id.as_str().to_owned(),
            callee: Some(RemoteParty {
                mcvideo_id: c["callee_id"].clone(),
            }),
            caller: Some(RemoteParty {
                mcvideo_id: c["caller_id"].clone(),
            }),
            group_id: None,
            members: None,
            epoch: r.epoch,
            kind: c["kind"].clone(),
            media_security: c["media_security"].clone(),
            owner: r.owner,
            remote: true,
            state: c["state"].clone(),
            transmission: c["tc"]["transmission"].clone(),
            updated_unix_ms: r.updated_unix_ms,
        }))
    }
}
