//! High availability on the engine's side: a one-to-one call's [`CallImage`] (what a relay
//! that takes the call over needs), the stream of images the workers send on every
//! control-plane change and about every second while media flows ([`Engine::ha_updates`]),
//! every call's image at once ([`Engine::snapshot_calls`], for a full resync), the adoption of
//! a dead relay's call ([`Engine::adopt_call`]: same relay ports, same state, forwarding and
//! transmission control resume, `call.adopted`), and dropping every call once this relay lost
//! them to another ([`Engine::abandon_calls`], fencing).
//!
//! Nothing here knows Redis: the sidecar's HA glue turns images into records and back.

use super::engine::Engine;
use super::plane::lock;
use super::ports::{BoundPort, PortPool};
use super::rules::RulesSnapshot;
use super::worker::Cmd;
use crate::control::call::snapshot::{CallSecrets, CallSnapshot, RestoreError};
use crate::control::call::{Call, CallState};
use crate::ids::CallId;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// One one-to-one call's state for a relay that takes it over: the call, its key material
/// and SDPs (to be sealed), and its rules once its media runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallImage {
    /// The call.
    pub call: CallSnapshot,
    /// Its key material and SDPs.
    pub secrets: CallSecrets,
    /// Its per-packet rules (latched sources, learned SSRCs, SRTP state), once established.
    pub rules: Option<RulesSnapshot>,
}

/// What the workers tell the HA writer.
#[derive(Debug, Clone)]
pub enum HaUpdate {
    /// A call changed (or its SRTP state moved on): store it.
    Put(Box<CallImage>),
    /// A call ended: forget it.
    Delete(CallId),
}

/// Why a call could not be adopted.
#[derive(Debug)]
pub enum AdoptError {
    /// The image is not restorable.
    Restore(RestoreError),
    /// A call with this ID runs here already, or the engine is full.
    Refused(crate::control::call::SetupError),
    /// A relay port is on no media interface of this relay.
    NoInterface(std::net::SocketAddr),
    /// A relay port could not be bound (still held by the dead relay's process, or another
    /// host's address without `net.ipv4.ip_nonlocal_bind`).
    Bind(std::net::SocketAddr, std::io::Error),
    /// The worker did not take it (shutting down, or its rules could not be rebuilt).
    Worker(String),
}

impl fmt::Display for AdoptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdoptError::Restore(e) => write!(f, "{e}"),
            AdoptError::Refused(e) => write!(f, "{e}"),
            AdoptError::NoInterface(a) => write!(f, "relay port {a} is on no media interface"),
            AdoptError::Bind(a, e) => write!(f, "cannot bind relay port {a}: {e}"),
            AdoptError::Worker(m) => write!(f, "worker: {m}"),
        }
    }
}

impl std::error::Error for AdoptError {}

impl Engine {
    /// From now on every worker sends an [`HaUpdate`] for each one-to-one call on every
    /// control-plane change (state, grant, transmission control messages, latches), about
    /// every second while its media flows (SRTP state, timers), and when it ends. Nothing is
    /// sent per packet. The channel holds [`HA_UPDATES_CAPACITY`](super::HA_UPDATES_CAPACITY)
    /// updates: a reader that falls behind makes the workers skip images (sent again later),
    /// never grow memory. Call once; a second call replaces the receiver.
    pub fn ha_updates(&self) -> crossbeam_channel::Receiver<HaUpdate> {
        let (tx, rx) = crossbeam_channel::bounded(super::HA_UPDATES_CAPACITY);
        for w in &self.workers {
            w.send(Cmd::HaSink(tx.clone()));
        }
        rx
    }

    /// The image of every live one-to-one call (a full resync of the HA store).
    pub fn snapshot_calls(&self) -> Vec<CallImage> {
        self.ask_all(Cmd::Snapshot)
            .into_iter()
            .flatten()
            .flatten()
            .collect()
    }

    /// Calls adopted from other relays since the start.
    pub fn adoptions(&self) -> u64 {
        self.adopted.load(Ordering::Relaxed)
    }

    /// Takes over a call of a relay that died: restores it as it was `age` ago (the image's
    /// age: now less when it was written), binds the same relay ports, and runs it on a worker:
    /// forwarding resumes with the restored rules and SRTP state, transmission control with the
    /// restored timers, and `call.adopted` is published (with `from`, the dead relay's ID).
    pub fn adopt_call(
        &self,
        image: CallImage,
        age: Duration,
        from: &str,
    ) -> Result<(), AdoptError> {
        let p = &self.plane;
        let at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
        let call = Call::restore(image.call, image.secrets, at).map_err(AdoptError::Restore)?;
        if call.state() == CallState::Released {
            return Ok(());
        }
        // The interface of each party's ports, by the address the ports carry.
        let mut ifaces = [0usize; 2];
        let mut bound: HashMap<u16, BoundPort> = HashMap::new();
        let mut claimed: Vec<(usize, u16)> = Vec::new();
        let give_back = |claimed: &[(usize, u16)]| {
            for &(i, port) in claimed {
                if let Some(pool) = p.pools.get(i) {
                    lock(pool).free(port);
                }
            }
        };
        for s in call.streams() {
            for (party, relay) in s.relay.iter().enumerate() {
                let Some(relay) = relay else { continue };
                let Some(i) = p
                    .pools
                    .iter()
                    .position(|pool| lock(pool).advertised() == relay.rtp.ip())
                else {
                    drop(bound);
                    give_back(&claimed);
                    return Err(AdoptError::NoInterface(relay.rtp));
                };
                if let Some(f) = ifaces.get_mut(party) {
                    *f = i;
                }
                let pool = p.pools.get(i).ok_or(AdoptError::NoInterface(relay.rtp))?;
                match PortPool::claim_shared(pool, relay.rtp.port(), relay.muxed()) {
                    Ok((_, mut b)) => {
                        b.pool = party;
                        claimed.push((i, relay.rtp.port()));
                        bound.insert(relay.rtp.port(), b);
                    }
                    Err(e) => {
                        drop(bound);
                        give_back(&claimed);
                        return Err(AdoptError::Bind(relay.rtp, e));
                    }
                }
            }
        }
        let worker = p.place();
        {
            let mut d = lock(&p.directory);
            let r = if d.groups.contains_key(call.id()) {
                Err(crate::control::call::SetupError::DuplicateCallId(
                    call.id().to_owned(),
                ))
            } else {
                d.table.adopt_detached(&call)
            };
            if let Err(e) = r {
                drop(d);
                drop(bound);
                give_back(&claimed);
                return Err(AdoptError::Refused(e));
            }
            d.placement.insert(call.id().into(), worker);
        }
        let id = call.call_id().clone();
        let kind = call.kind().as_str();
        let (tx, rx) = crossbeam_channel::bounded(1);
        let sent = self.workers.get(worker).is_some_and(|w| {
            w.send(Cmd::Restore(
                Box::new((call, bound, ifaces, image.rules, from.into())),
                super::worker::Reply::Wait(tx),
            ))
        });
        let r = if sent {
            rx.recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|_| Err("no reply".into()))
        } else {
            Err("not running".into())
        };
        match r {
            Ok(()) => {
                p.kind_created(kind);
                lock(&p.totals).created += 1;
                self.adopted.fetch_add(1, Ordering::Relaxed);
                tracing::info!(call = %id, from, worker, "call adopted");
                Ok(())
            }
            Err(m) => Err(AdoptError::Worker(m)),
        }
    }

    /// Drops every one-to-one call at once without a word to anyone (no message, no event):
    /// another relay adopted them (this one was fenced). Their sockets close and their ports go
    /// back. Returns how many were dropped.
    pub fn abandon_calls(&self) -> usize {
        self.ask_all(Cmd::Abandon).into_iter().flatten().sum()
    }
}
