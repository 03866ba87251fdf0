//! High availability on the engine's side: a one-to-one call's [`CallImage`] and a group
//! call's [`GroupImage`] (what a relay that takes the call over needs; adopted with
//! [`Engine::adopt_group_call`]), the stream of images the workers send on every
//! control-plane change and about every second while media flows ([`Engine::ha_updates`]),
//! every call's image at once ([`Engine::snapshot_calls`], for a full resync), the adoption of
//! a dead relay's call ([`Engine::adopt_call`]: same relay ports, same state, forwarding and
//! transmission control resume, `call.adopted`), and dropping every call once this relay lost
//! them to another ([`Engine::abandon_calls`], fencing).
//!
//! Nothing here knows Redis: the sidecar's HA glue turns images into records and back.

use super::engine::Engine;
use super::engine::{Mode, Pending};
use super::plane::lock;
use super::plane::{GroupEntry, GroupStreamImage, MemberPrep, Plane, GROUP_KIND};
use super::ports::{BoundPort, PortPool};
use super::rules::GroupRulesSnapshot;
use super::rules::RulesSnapshot;
use super::rules::{ControlSetup, LegSetup};
use super::worker::{Cmd, GroupRestore, OsEntropy, Reply};
use crate::control::arbiter::Slot;
use crate::control::call::snapshot::{
    CallSecrets, CallSnapshot, GroupSecrets, MemberSecrets, RestoreError,
};
use crate::control::call::{Call, CallState};
use crate::control::server::TcSnapshot;
use crate::control::MediaSecurity;
use crate::ids::CallId;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
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

/// One member's leg of one stream (no key: those are in [`GroupImage::secrets`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "ha", derive(serde::Serialize, serde::Deserialize))]
pub struct GroupLegImage {
    /// The relay's RTP address of the leg (as advertised in the member's SDP answer).
    pub relay: SocketAddr,
    /// RTCP shares the RTP port (else it is on the next port).
    pub muxed: bool,
    /// Where the member receives RTP, from its SDP.
    pub remote_rtp: Option<SocketAddr>,
    /// Where it receives RTCP.
    pub remote_rtcp: Option<SocketAddr>,
    /// SSRCs its SDP announced.
    pub announced: Vec<u32>,
    /// It only sends on this stream: no RTP to it ([`crate::relay::rules::LegSetup::send_only`]).
    #[cfg_attr(feature = "ha", serde(default))]
    pub send_only: bool,
}

/// One member's transmission control channel.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "ha", derive(serde::Serialize, serde::Deserialize))]
pub struct GroupControlImage {
    /// The relay's address of the channel.
    pub relay: SocketAddr,
    /// Where the member receives control messages.
    pub remote: Option<SocketAddr>,
}

/// One member's media setup.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "ha", derive(serde::Serialize, serde::Deserialize))]
pub struct GroupMemberImage {
    /// Its slot (the same in the transmission control server's snapshot).
    pub slot: u8,
    /// Its MCVideo ID.
    pub mcvideo_id: String,
    /// Per stream of the group: its leg, if it took the stream.
    pub legs: Vec<Option<GroupLegImage>>,
    /// Its control channel.
    pub control: Option<GroupControlImage>,
}

/// A group call without key material: what goes into the record's clear body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "ha", derive(serde::Serialize, serde::Deserialize))]
pub struct GroupSnapshot {
    /// The call ID.
    pub call_id: String,
    /// The MCVideo Group Identity.
    pub group_id: String,
    /// How media is protected.
    pub media_security: MediaSecurity,
    /// The group's streams.
    pub streams: Vec<GroupStreamImage>,
    /// Set up this many ms before the snapshot.
    pub created_ms_ago: u64,
    /// The transmission control server: members, roles, grants, queue, reception state,
    /// timers left, arbiter.
    pub tc: TcSnapshot,
    /// Every member's media setup: relay ports, remote addresses.
    pub members: Vec<GroupMemberImage>,
    /// The per-packet rules' state: latches, SSRCs, SRTP state per leg.
    pub rules: GroupRulesSnapshot,
}

/// One group call's state for a relay that takes it over: the call ([`GroupSnapshot`]) and
/// its members' keys (to be sealed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupImage {
    /// The call.
    pub group: GroupSnapshot,
    /// Every member's keys.
    pub secrets: GroupSecrets,
}

/// What the workers tell the HA writer.
#[derive(Debug, Clone)]
pub enum HaUpdate {
    /// A call changed (or its SRTP state moved on): store it.
    Put(Box<CallImage>),
    /// A group call changed (a grant, an end, a join or leave, the queue, reception, a latch)
    /// or its SRTP state moved on: store it.
    PutGroup(Box<GroupImage>),
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
    /// From now on every worker sends an [`HaUpdate`] for each call on every control-plane
    /// change (state, grant, transmission control messages, latches; for a group call also
    /// joins, leaves, the queue and reception: [`HaUpdate::PutGroup`]), about
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
        let at = written_at(age);
        let call = Call::restore(image.call, image.secrets, at).map_err(AdoptError::Restore)?;
        if call.state() == CallState::Released {
            return Ok(());
        }
        let Claimed {
            bound,
            ifaces,
            ports,
        } = self.claim_call_ports(&call)?;
        let worker = p.place();
        {
            let mut d = lock(&p.directory);
            let max = p.config.call.max_calls;
            let r = d
                .reserve(Some(call.id()), max, worker, &mut OsEntropy::default())
                .and_then(|id| {
                    let r = d.table.adopt_detached(&call);
                    if r.is_err() {
                        d.unreserve(&id);
                    }
                    r
                });
            if let Err(e) = r {
                drop(d);
                drop(bound); // closes the sockets
                p.free_ports(&ports);
                return Err(AdoptError::Refused(e));
            }
        }
        let id = call.call_id().clone();
        let kind = call.kind().as_str();
        let restore = Box::new((call, bound, ifaces, image.rules, from.into()));
        self.hand_over(worker, &id, kind, from, |r| Cmd::Restore(restore, r))?;
        lock(&p.totals).created += 1;
        Ok(())
    }

    /// Binds again every relay port of a one-to-one call to take over, each on the media
    /// interface that advertises its address. On error what was bound goes back.
    fn claim_call_ports(&self, call: &Call) -> Result<Claimed, AdoptError> {
        let mut c = Claimed {
            bound: HashMap::new(),
            ifaces: [0; 2],
            ports: Vec::new(),
        };
        for s in call.streams() {
            for (party, relay) in s.relay.iter().enumerate() {
                let Some(relay) = relay else { continue };
                let port = relay.rtp.port();
                let (i, mut b) = match self.claim(relay.rtp, relay.muxed()) {
                    Ok(claimed) => claimed,
                    Err(e) => {
                        let Claimed { bound, ports, .. } = c;
                        drop(bound); // closes the sockets
                        self.plane.free_ports(&ports);
                        return Err(e);
                    }
                };
                if let Some(f) = c.ifaces.get_mut(party) {
                    *f = i;
                }
                b.pool = party;
                c.ports.push((i, port));
                c.bound.insert(port, b);
            }
        }
        Ok(c)
    }

    /// Hands a call taken over to `worker` and waits until it runs there (at most the reply
    /// timeout); then it counts as created (of `kind`) and adopted.
    fn hand_over(
        &self,
        worker: usize,
        id: &str,
        kind: &'static str,
        from: &str,
        cmd: impl FnOnce(Reply<Result<(), String>>) -> Cmd,
    ) -> Result<(), AdoptError> {
        self.send_to(worker, format!("call {id}"), Mode::Block, cmd)
            .and_then(Pending::wait)
            .map_err(|e| AdoptError::Worker(e.to_string()))?
            .map_err(AdoptError::Worker)?;
        self.plane.kind_created(kind);
        self.adopted.fetch_add(1, Ordering::Relaxed);
        tracing::info!(call = %id, kind, from, worker, "call adopted");
        Ok(())
    }

    /// Drops every call (one-to-one and group) at once without a word to anyone (no message, no event):
    /// another relay adopted them (this one was fenced). Their sockets close and their ports go
    /// back. Returns how many were dropped.
    pub fn abandon_calls(&self) -> usize {
        self.ask_all(Cmd::Abandon).into_iter().flatten().sum()
    }

    /// The image of every live group call (a full resync of the HA store).
    pub fn snapshot_groups(&self) -> Vec<GroupImage> {
        self.ask_all(Cmd::SnapshotGroups)
            .into_iter()
            .flatten()
            .flatten()
            .collect()
    }

    /// Takes over a group call of a relay that died, as it was `age` ago: binds every member's
    /// relay ports again, restores its transmission control (members, grants, queue, reception
    /// state, timers) and its rules (latches, SSRCs, SRTP state) on a worker, and publishes
    /// `call.adopted` (with `from`). A granted member keeps transmitting without a new
    /// request; `GET /v1/group-calls/{id}` shows the call here.
    pub fn adopt_group_call(
        &self,
        image: GroupImage,
        age: Duration,
        from: &str,
    ) -> Result<(), AdoptError> {
        let p = &self.plane;
        let at = written_at(age);
        let GroupImage { group, secrets } = image;
        if group.tc.finished.is_some() {
            return Ok(());
        }
        if !crate::ids::CallId::is_valid(&group.call_id) {
            return Err(AdoptError::Restore(RestoreError::Invalid("bad call ID")));
        }
        let worker = p.place();
        let id = lock(&p.directory)
            .reserve(
                Some(&group.call_id),
                p.config.call.max_calls,
                worker,
                &mut OsEntropy::default(),
            )
            .map_err(AdoptError::Refused)?;
        let preps = match self.bind_group(&group, &secrets) {
            Ok(preps) => preps,
            Err(e) => {
                lock(&p.directory).unreserve(&id);
                return Err(e);
            }
        };
        let server_ssrc = crate::ids::Ssrc(group.tc.server_ssrc);
        lock(&p.directory).groups.insert(
            id.clone(),
            GroupEntry {
                security: group.media_security,
                streams: group.streams.clone(),
                members: group.members.iter().map(|m| m.mcvideo_id.clone()).collect(),
            },
        );
        p.ssrcs.reserve(server_ssrc);
        let restore = Box::new(GroupRestore {
            group,
            members: preps,
            at,
            from: from.into(),
        });
        let r = self.hand_over(worker, &id, GROUP_KIND, from, |r| {
            Cmd::RestoreGroup(restore, r)
        });
        if r.is_err() {
            // The worker gave the ports back (or never had them: a stopped worker).
            p.ssrcs.free(server_ssrc);
            lock(&p.directory).unreserve(&id);
        }
        r
    }
}

/// When an image `age` old was written, on this relay's clock: now less its age (now, when the
/// clock has not run that long).
fn written_at(age: Duration) -> Instant {
    let now = Instant::now();
    now.checked_sub(age).unwrap_or(now)
}

/// Closes the sockets of members made ready for a takeover and gives their ports back.
fn give_back(p: &Plane, preps: Vec<(Slot, MemberPrep)>) {
    preps.into_iter().for_each(|(_, m)| p.give_back(m));
}

impl Engine {
    /// Every member of a group to take over, made ready on this relay: its relay ports bound
    /// again, its legs and control channel with their keys. On error what was bound goes back.
    fn bind_group(
        &self,
        group: &GroupSnapshot,
        secrets: &GroupSecrets,
    ) -> Result<Vec<(Slot, MemberPrep)>, AdoptError> {
        let mut preps: Vec<(Slot, MemberPrep)> = Vec::with_capacity(group.members.len());
        for m in &group.members {
            let Some(slot) = Slot::new(usize::from(m.slot)) else {
                give_back(&self.plane, preps);
                return Err(AdoptError::Restore(RestoreError::Invalid(
                    "bad member slot",
                )));
            };
            let setup = group
                .tc
                .members
                .iter()
                .find(|t| t.slot == m.slot)
                .map(|t| t.setup.clone())
                .unwrap_or_default();
            let mut prep = MemberPrep::new(setup, group.streams.len());
            let r = self.bind_member(m, secrets.member(m.slot), &mut prep);
            preps.push((slot, prep));
            if let Err(e) = r {
                give_back(&self.plane, preps);
                return Err(e);
            }
        }
        Ok(preps)
    }

    /// Binds one member's relay ports into `prep`, with its keys.
    fn bind_member(
        &self,
        m: &GroupMemberImage,
        keys: Option<&MemberSecrets>,
        prep: &mut MemberPrep,
    ) -> Result<(), AdoptError> {
        for (si, leg) in m.legs.iter().enumerate().take(prep.legs.len()) {
            let Some(l) = leg else { continue };
            let b = self.bind_port(l.relay, l.muxed, prep)?;
            let k = keys.and_then(|k| k.legs.get(si));
            if let Some(x) = prep.legs.get_mut(si) {
                *x = LegSetup {
                    remote_rtp: l.remote_rtp,
                    remote_rtcp: l.remote_rtcp,
                    announced: l.announced.clone(),
                    separate_rtcp: !l.muxed,
                    srtp_in: k.and_then(|k| k.0.clone()),
                    srtp_out: k.and_then(|k| k.1.clone()),
                    send_only: l.send_only,
                };
            }
            if let Some(x) = prep.stream_sockets.get_mut(si) {
                *x = Some(b);
            }
            if let Some(x) = prep.relay.get_mut(si) {
                *x = Some((l.relay, l.muxed));
            }
        }
        if let Some(c) = &m.control {
            let b = self.bind_port(c.relay, true, prep)?;
            prep.control = Some(ControlSetup {
                remote: c.remote,
                key: keys.and_then(|k| k.control.clone()),
            });
            prep.control_socket = Some(b);
            prep.control_relay = Some(c.relay);
        }
        Ok(())
    }

    /// Binds the relay port `addr` (and the next one unless `mux`) on the media interface
    /// that advertises its address; the port is booked in `prep`.
    fn bind_port(
        &self,
        addr: SocketAddr,
        mux: bool,
        prep: &mut MemberPrep,
    ) -> Result<BoundPort, AdoptError> {
        let (i, b) = self.claim(addr, mux)?;
        prep.ports.push((i, addr.port()));
        Ok(b)
    }

    /// Binds the relay port `addr` (and the next one unless `mux`) on the media interface
    /// that advertises its address: that interface's index, and the sockets.
    fn claim(&self, addr: SocketAddr, mux: bool) -> Result<(usize, BoundPort), AdoptError> {
        let p = &self.plane;
        let i = p
            .pools
            .iter()
            .position(|pool| lock(pool).advertised() == addr.ip())
            .ok_or(AdoptError::NoInterface(addr))?;
        let pool = p.pools.get(i).ok_or(AdoptError::NoInterface(addr))?;
        let (_, b) = PortPool::claim_shared(pool, addr.port(), mux)
            .map_err(|e| AdoptError::Bind(addr, e))?;
        Ok((i, b))
    }
}

/// The relay ports of a one-to-one call to take over, bound again.
struct Claimed {
    /// The sockets, by relay port.
    bound: HashMap<u16, BoundPort>,
    /// Each party's media interface.
    ifaces: [usize; 2],
    /// The ports claimed, with their interface's pool.
    ports: Vec<(usize, u16)>,
}
