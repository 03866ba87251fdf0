//! One group call on its worker: the sans-IO [`TransmissionControlServer`] (transmission control, timers,
//! events), its members' sockets, and the per-packet [`GroupRules`] that fan each granted
//! transmitter's media out to its receivers. Everything here is owned by the worker thread:
//! no lock on a packet's path, no allocation per packet or per receiver.
//!
//! Per receive batch: every segment is judged into the worker's [`FanOut`]; each delivery is
//! sent from the receiving member's own relay socket of the stream, RTP gathered per receiver
//! leg into GSO runs (a video frame to one receiver is one `sendmsg`), RTCP on its own. Media
//! activity is booked per member and fed to the server when the call is stepped (on its first
//! packet, every few unpermitted packets, on control input and on timers).

use super::super::io::{Coalescer, UdpSock};
use super::super::plane::{MemberPrep, WorkerStats};
use super::super::ports::BoundPort;
use super::super::rules::Tally;
use super::super::rules::{
    Delivery, FanOut, GroupIngress, GroupMemberRulesSnapshot, GroupRules, GroupRulesSetup,
    GroupStreamSetup, MemberMedia,
};
use super::super::stats::{DropReason, LegSnapshot};
use super::super::{
    GroupCallSummary, GroupControlImage, GroupImage, GroupLegImage, GroupMemberImage,
    GroupMemberSummary, GroupQueueSummary, GroupSnapshot, GroupStreamImage,
    GroupTransmissionSummary,
};
use super::media::{read_control, Activity, ControlChannels, Scratch, BATCHES_PER_WAKE};
use crate::control::arbiter::{Arbiter, Slot, MAX_MEMBERS};
use crate::control::call::snapshot::{GroupSecrets, MemberSecrets};
use crate::control::call::{CallEvent, CallEventKind, CallState, SetupError};
use crate::control::server::{
    JoinError, ServerIdentity, TcConfig, TcEvent, TransmissionControlServer,
};
use crate::control::ssrc::SsrcRegistry;
use crate::control::timer::ms_before;
use crate::control::{MediaSecurity, ReleaseReason};
use crate::ids::{CallId, Ssrc};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Instant;

/// Media packets from a member without permission between steps of the call (so it can
/// revoke).
const UNPERMITTED_STEP_EVERY: u64 = 4;

/// A refusal, with the relay ports (their sockets closed) for the caller to give back.
pub(crate) type Refused = (SetupError, Vec<(usize, u16)>);

/// A group call as the control plane hands it to a worker.
#[derive(Debug)]
pub(crate) struct GroupAdopt {
    pub(crate) call_id: CallId,
    pub(crate) group_id: String,
    pub(crate) security: MediaSecurity,
    pub(crate) config: TcConfig,
    pub(crate) streams: Vec<GroupStreamImage>,
    pub(crate) server_ssrc: Ssrc,
    pub(crate) members: Vec<MemberPrep>,
}

/// What a socket of a group call carries.
#[derive(Debug, Clone, Copy)]
enum Role {
    /// Media of `stream` from `member` (`rtcp`: its separate RTCP socket).
    Media {
        member: Slot,
        stream: usize,
        rtcp: bool,
    },
    /// `member`'s transmission control channel.
    Control(Slot),
}

#[derive(Debug)]
struct Socket {
    sock: UdpSock,
    role: Role,
}

/// One member's sockets and counters.
#[derive(Debug)]
struct MemberRt {
    user_id: Arc<str>,
    /// Per stream: the index of its RTP socket and of its separate RTCP socket.
    rtp: Vec<Option<usize>>,
    rtcp: Vec<Option<usize>>,
    control: Option<usize>,
    /// SSRCs its SDP announced (allowed besides the granted ones).
    announced: Vec<u32>,
    ports: Vec<(usize, u16)>,
    counters: LegSnapshot,
    activity: Activity,
    /// Its transmission's first media has been seen (or it holds no grant).
    media_seen: bool,
    /// Per stream: RTP to it gathered into GSO runs (made when it first receives: an idle
    /// member holds no buffer), and where the run goes.
    out: Vec<(Option<Box<Coalescer>>, Option<SocketAddr>)>,
    /// Its media setup with its keys, for high availability's images.
    media: MemberMedia,
    /// Per stream: its relay RTP address and whether RTCP is muxed there.
    relay: Vec<Option<(SocketAddr, bool)>>,
    /// Its control channel's relay address.
    control_relay: Option<SocketAddr>,
}

/// Books a send to a receiver: its counters and the batch's.
#[inline]
fn sent_to(receiver: &mut LegSnapshot, batch: &mut LegSnapshot, sent: super::super::io::Sent) {
    for c in [receiver, batch] {
        c.add_out(sent.packets, sent.bytes);
        if sent.failed > 0 {
            if let Some(x) = c.drops.get_mut(DropReason::SendFailed as usize) {
                *x += sent.failed;
            }
        }
    }
}

/// A group call's identity and streams, new or taken over.
struct GroupHead {
    call_id: CallId,
    group_id: String,
    security: MediaSecurity,
    streams: Vec<GroupStreamImage>,
    server_ssrc: Ssrc,
    created: Instant,
}

/// The receiver side of a group call's batch: its members' legs and sockets, and which legs
/// hold RTP gathered and not yet sent (bit per member, per stream).
struct Legs<'a> {
    members: &'a mut [Option<MemberRt>],
    sockets: &'a [Option<Socket>],
    dirty: &'a mut [u64],
}

impl Legs<'_> {
    /// Sends delivery `d` of `bytes` from its member's own relay socket of the stream (RTCP
    /// from its RTCP socket if it has one), RTP gathered into the leg's GSO run; books it in
    /// `out`. `false` when the member or its socket is gone.
    #[inline]
    fn deliver(&mut self, d: &Delivery, bytes: &[u8], out: &mut LegSnapshot) -> bool {
        let Some(m) = self
            .members
            .get_mut(d.member.index())
            .and_then(Option::as_mut)
        else {
            return false;
        };
        let own = if d.rtcp {
            m.rtcp
                .get(d.stream)
                .copied()
                .flatten()
                .or_else(|| m.rtp.get(d.stream).copied().flatten())
        } else {
            m.rtp.get(d.stream).copied().flatten()
        };
        let Some(s) = own
            .and_then(|i| self.sockets.get(i))
            .and_then(Option::as_ref)
            .map(|s| &s.sock)
        else {
            return false;
        };
        let sent = match (d.rtcp, m.out.get_mut(d.stream)) {
            (false, Some((c, to))) => {
                let c = c.get_or_insert_with(Box::default);
                if let Some(w) = self.dirty.get_mut(d.stream) {
                    *w |= d.member.bit();
                }
                // A run goes to one address: a new one sends the old run first.
                let mut sent = match *to {
                    Some(old) if old != d.dest => c.flush(s, old),
                    _ => Default::default(),
                };
                *to = Some(d.dest);
                let more = c.push(bytes, s, d.dest);
                sent.packets += more.packets;
                sent.bytes += more.bytes;
                sent.failed += more.failed;
                sent
            }
            _ => s.send(d.dest, bytes, bytes.len()),
        };
        sent_to(&mut m.counters, out, sent);
        true
    }

    /// Sends every receiver leg's gathered run; books it in `out`.
    fn flush(&mut self, out: &mut LegSnapshot) {
        for (si, w) in self.dirty.iter_mut().enumerate() {
            for r in crate::control::arbiter::slots(std::mem::take(w)) {
                let Some(m) = self.members.get_mut(r.index()).and_then(Option::as_mut) else {
                    continue;
                };
                let (Some((Some(c), Some(dest))), Some(s)) = (
                    m.out.get_mut(si),
                    m.rtp
                        .get(si)
                        .copied()
                        .flatten()
                        .and_then(|i| self.sockets.get(i))
                        .and_then(Option::as_ref),
                ) else {
                    continue;
                };
                let sent = c.flush(&s.sock, *dest);
                sent_to(&mut m.counters, out, sent);
            }
        }
    }
}

/// One group call on a worker.
#[derive(Debug)]
pub(crate) struct GroupRt {
    pub(crate) call_id: CallId,
    group_id: String,
    security: MediaSecurity,
    server: TransmissionControlServer,
    rules: GroupRules,
    streams: usize,
    /// The group's streams as an image holds them.
    stream_images: Vec<GroupStreamImage>,
    members: Vec<Option<MemberRt>>,
    sockets: Vec<Option<Socket>>,
    /// Members that left since the last step (their events still name them).
    departed: Vec<(Slot, Arc<str>)>,
    /// Receiver legs with RTP gathered and not yet sent (bit per member, per stream).
    dirty: Vec<u64>,
    fan: FanOut,
    created: Instant,
    released_at: Option<Instant>,
    server_ssrc: Ssrc,
    ssrcs: Arc<SsrcRegistry>,
    /// The deadline the worker's timer heap holds for this call.
    pub(crate) armed: Option<Instant>,
    /// Transmission control counters (received, sent) as last added to the worker's totals.
    pub(crate) tc_published: (
        crate::control::server::KindCounters,
        crate::control::server::KindCounters,
    ),
    totals: Arc<WorkerStats>,
}

impl GroupRt {
    /// Builds the call and adds its members. On error every member's sockets are closed and
    /// their ports are returned for the caller to give back.
    pub(crate) fn new(
        adopt: GroupAdopt,
        now: Instant,
        latch_after: u32,
        ssrcs: Arc<SsrcRegistry>,
        totals: Arc<WorkerStats>,
    ) -> Result<(GroupRt, Vec<Slot>), Refused> {
        let GroupAdopt {
            call_id,
            group_id,
            security,
            config,
            streams,
            server_ssrc,
            members,
        } = adopt;
        let server = TransmissionControlServer::group(
            config,
            ServerIdentity {
                call_id: group_id.clone(),
                server_ssrc,
            },
            Arc::new(Arbiter::new()),
            ssrcs.clone(),
        );
        let head = GroupHead {
            call_id,
            group_id,
            security,
            streams,
            server_ssrc,
            created: now,
        };
        let mut rt = GroupRt::empty(head, server, latch_after, ssrcs, totals);
        let mut slots = Vec::with_capacity(members.len());
        let mut members = members.into_iter();
        while let Some(m) = members.next() {
            match rt.join(now, m) {
                Ok(s) => slots.push(s),
                Err((e, own)) => return Err(rt.give_up(e, own, members.map(|m| m.ports))),
            }
        }
        rt.server.start(now);
        Ok((rt, slots))
    }

    /// A call with its server and rules and no member yet: what a new call and one taken
    /// over start from.
    fn empty(
        head: GroupHead,
        server: TransmissionControlServer,
        latch_after: u32,
        ssrcs: Arc<SsrcRegistry>,
        totals: Arc<WorkerStats>,
    ) -> GroupRt {
        let GroupHead {
            call_id,
            group_id,
            security,
            streams,
            server_ssrc,
            created,
        } = head;
        let rules = GroupRules::new(&GroupRulesSetup {
            arbiter: server.arbiter().clone(),
            security,
            streams: streams
                .iter()
                .map(|s| GroupStreamSetup::new(&s.kind, s.encrypted, s.clock_rate))
                .collect(),
            server_ssrc: server_ssrc.get(),
            latch_after,
        });
        GroupRt {
            call_id,
            group_id,
            security,
            server,
            rules,
            streams: streams.len(),
            dirty: vec![0; streams.len()],
            stream_images: streams,
            members: (0..MAX_MEMBERS).map(|_| None).collect(),
            sockets: Vec::new(),
            departed: Vec::new(),
            fan: FanOut::new(),
            created,
            released_at: None,
            server_ssrc,
            ssrcs,
            armed: None,
            tc_published: Default::default(),
            totals,
        }
    }

    /// A member could not be set up, so the call is not either: its sockets close. Returns the
    /// error with every relay port to give back: the call's, the refused member's (`own`) and
    /// those of the members not added yet (`rest`).
    fn give_up(
        mut self,
        e: SetupError,
        own: Vec<(usize, u16)>,
        rest: impl Iterator<Item = Vec<(usize, u16)>>,
    ) -> Refused {
        let mut ports = self.all_ports();
        ports.extend(own);
        ports.extend(rest.flatten());
        // The engine gives the server SSRC back when it hears of the refusal.
        self.server.release(ReleaseReason::InternalError);
        drop(self); // closes the sockets
        (e, ports)
    }

    /// Every relay port the call holds.
    pub(crate) fn all_ports(&self) -> Vec<(usize, u16)> {
        self.members
            .iter()
            .flatten()
            .flat_map(|m| m.ports.iter().copied())
            .collect()
    }

    /// Adds a member: server, rules, sockets. On error its sockets are closed and its ports are
    /// returned for the caller to give back.
    pub(crate) fn join(&mut self, now: Instant, prep: MemberPrep) -> Result<Slot, Refused> {
        let user_id = prep.setup.user_id.clone();
        let slot = match self.server.join(now, prep.setup.clone()) {
            Ok(s) => s,
            Err(e) => {
                let e = match e {
                    JoinError::Duplicate => SetupError::MemberRequest {
                        member: user_id.to_string(),
                        reason: format!("it is already in call {}", self.call_id),
                    },
                    JoinError::Full => SetupError::BadRequest(format!(
                        "call {} has its maximum of {MAX_MEMBERS} members",
                        self.call_id
                    )),
                    JoinError::Released => SetupError::WrongState {
                        call_id: self.call_id.to_string(),
                        state: CallState::Released,
                        operation: "add a member",
                    },
                };
                return Err((e, prep.ports));
            }
        };
        self.attach(now, slot, prep, None)?;
        Ok(slot)
    }

    /// The rules and sockets of a member the server has in `slot` (its rules in the state of
    /// `restored`, when the call is taken over). On error the member leaves the server, its
    /// sockets are closed and its ports are returned.
    fn attach(
        &mut self,
        now: Instant,
        slot: Slot,
        prep: MemberPrep,
        restored: Option<&GroupMemberRulesSnapshot>,
    ) -> Result<(), Refused> {
        let MemberPrep {
            setup,
            legs,
            control,
            stream_sockets,
            control_socket,
            ports,
            relay,
            control_relay,
            ..
        } = prep;
        let user_id: Arc<str> = setup.user_id.as_str().into();
        let announced: Vec<u32> = legs.iter().flat_map(|l| l.announced.clone()).collect();
        let media = MemberMedia { legs, control };
        let added = match restored {
            Some(r) => self.rules.restore_member(slot, &media, r),
            None => self.rules.add_member(slot, &media),
        };
        if let Err(e) = added {
            self.server.leave(now, slot);
            return Err((
                SetupError::MemberMedia {
                    member: user_id.to_string(),
                    reason: format!("unusable SRTP key: {e}"),
                },
                ports,
            ));
        }
        let mut m = MemberRt {
            user_id,
            rtp: vec![None; self.streams],
            rtcp: vec![None; self.streams],
            control: None,
            announced,
            ports,
            counters: LegSnapshot::default(),
            activity: Activity::default(),
            media_seen: true,
            out: (0..self.streams).map(|_| (None, None)).collect(),
            media,
            relay,
            control_relay,
        };
        let r = self.add_sockets(slot, &mut m, stream_sockets, control_socket);
        if let Some(x) = self.members.get_mut(slot.index()) {
            *x = Some(m);
        }
        if let Err(e) = r {
            let ports = self.drop_member(slot);
            self.rules.remove_member(slot);
            self.server.leave(now, slot);
            return Err((
                SetupError::BadRequest(format!("cannot use the member's sockets: {e}")),
                ports,
            ));
        }
        Ok(())
    }

    /// Takes in member `slot`'s sockets (`m` books which serves what): per stream its RTP
    /// socket and a separate RTCP one, and its control channel's.
    fn add_sockets(
        &mut self,
        slot: Slot,
        m: &mut MemberRt,
        stream_sockets: Vec<Option<BoundPort>>,
        control_socket: Option<BoundPort>,
    ) -> io::Result<()> {
        for (si, b) in stream_sockets.into_iter().enumerate() {
            let Some(b) = b else { continue };
            let media = |rtcp| Role::Media {
                member: slot,
                stream: si,
                rtcp,
            };
            let i = self.push_socket(b.rtp, media(false))?;
            if let Some(x) = m.rtp.get_mut(si) {
                *x = Some(i);
            }
            if let Some(s) = b.rtcp {
                let i = self.push_socket(s, media(true))?;
                if let Some(x) = m.rtcp.get_mut(si) {
                    *x = Some(i);
                }
            }
        }
        if let Some(b) = control_socket {
            m.control = Some(self.push_socket(b.rtp, Role::Control(slot))?);
        }
        Ok(())
    }

    fn push_socket(&mut self, s: UdpSocket, role: Role) -> io::Result<usize> {
        let sock = Socket {
            sock: UdpSock::new(s)?,
            role,
        };
        match self.sockets.iter().position(Option::is_none) {
            Some(i) => {
                if let Some(x) = self.sockets.get_mut(i) {
                    *x = Some(sock);
                }
                Ok(i)
            }
            None => {
                self.sockets.push(Some(sock));
                Ok(self.sockets.len() - 1)
            }
        }
    }

    /// Closes a member's sockets and forgets it here; returns its ports.
    fn drop_member(&mut self, slot: Slot) -> Vec<(usize, u16)> {
        let Some(m) = self.members.get_mut(slot.index()).and_then(Option::take) else {
            return Vec::new();
        };
        let idx = m
            .rtp
            .iter()
            .chain(&m.rtcp)
            .chain(std::iter::once(&m.control));
        for i in idx.flatten() {
            if let Some(s) = self.sockets.get_mut(*i) {
                *s = None; // closing the socket takes it out of the epoll set
            }
        }
        for d in &mut self.dirty {
            *d &= !slot.bit();
        }
        self.departed.push((slot, m.user_id.clone()));
        m.ports
    }

    /// The sockets of `slot` to register with the poller, by index.
    pub(crate) fn member_sockets(&self, slot: Slot) -> Vec<(usize, &UdpSocket)> {
        let Some(m) = self.members.get(slot.index()).and_then(Option::as_ref) else {
            return Vec::new();
        };
        m.rtp
            .iter()
            .chain(&m.rtcp)
            .chain(std::iter::once(&m.control))
            .flatten()
            .filter_map(|&i| Some((i, self.sockets.get(i)?.as_ref()?.sock.socket())))
            .collect()
    }

    /// A member leaves (by MCVideo ID): its transmission ends for the others, its sockets
    /// close. Returns its ports.
    pub(crate) fn leave(
        &mut self,
        now: Instant,
        user_id: &str,
    ) -> Result<Vec<(usize, u16)>, SetupError> {
        let slot = self.server.slot_of(user_id).ok_or_else(|| {
            SetupError::BadRequest(format!("call {} has no member {user_id}", self.call_id))
        })?;
        self.feed_activity(now);
        self.server.leave(now, slot);
        self.rules.remove_member(slot);
        Ok(self.drop_member(slot))
    }

    /// The call is released from outside.
    pub(crate) fn release(&mut self, reason: ReleaseReason) {
        self.server.release(reason);
    }

    /// Whether the call is over.
    pub(crate) fn released(&self) -> bool {
        self.server.finished().is_some()
    }

    fn count(&mut self, slot: Slot, d: &LegSnapshot) {
        if let Some(m) = self.members.get_mut(slot.index()).and_then(Option::as_mut) {
            m.counters.add(d);
        }
        self.totals.group.add(d);
    }

    /// Socket `index` is readable: receive and fan out (media) or admit and hand to the server
    /// (control). Returns whether the call should be stepped.
    pub(crate) fn on_readable(&mut self, index: usize, now: Instant, io: &mut Scratch) -> bool {
        let Some(role) = self
            .sockets
            .get(index)
            .and_then(|s| s.as_ref())
            .map(|s| s.role)
        else {
            return false;
        };
        match role {
            Role::Media {
                member,
                stream,
                rtcp,
            } => {
                let at = GroupIngress {
                    stream,
                    member,
                    rtcp_socket: rtcp,
                };
                let mut step = false;
                for _ in 0..BATCHES_PER_WAKE {
                    let Some((t, drained)) = self.pump(index, at, now, io) else {
                        break;
                    };
                    step |= self.book(member, now, &t);
                    if drained {
                        break;
                    }
                }
                step
            }
            Role::Control(member) => read_control(self, index, member, now, io),
        }
    }

    /// One receive batch: judge each segment, send every delivery from the receiver's socket.
    fn pump(
        &mut self,
        index: usize,
        at: GroupIngress,
        now: Instant,
        io: &mut Scratch,
    ) -> Option<(Tally, bool)> {
        let sock = &self.sockets.get(index)?.as_ref()?.sock;
        let n = match sock.recv(&mut io.batch) {
            Ok(n) => n,
            Err(_) => return None, // WouldBlock, or an ICMP-induced error: the socket stays usable
        };
        let drained = n < io.batch.slots();
        let mut t = Tally::default();
        // What went out in this batch, added to the worker's totals once.
        let mut out = LegSnapshot::default();
        let GroupRt {
            rules,
            fan,
            members,
            sockets,
            dirty,
            totals,
            ..
        } = self;
        let mut legs = Legs {
            members,
            sockets,
            dirty,
        };
        for (from, data, stride) in io.batch.datagrams() {
            let stride = stride.max(1);
            for seg in data.chunks_mut(stride) {
                t.in_packets += 1;
                t.in_bytes += seg.len() as u64;
                fan.clear();
                if let Err(r) = rules.judge(at, from, now, seg, fan, &mut t) {
                    t.drop(r);
                    continue;
                }
                for (d, bytes) in fan.iter() {
                    if !legs.deliver(d, bytes, &mut out) {
                        t.drop(DropReason::WrongSource);
                    }
                }
            }
        }
        // Every receiver leg's gathered run goes out before the next batch.
        legs.flush(&mut out);
        totals.group.add(&out);
        t.out_packets += out.packets_out;
        t.out_bytes += out.bytes_out;
        Some((t, drained))
    }

    /// Books a batch from `member`: counters (out was booked per receiver), activity, and
    /// whether the call should be stepped.
    fn book(&mut self, member: Slot, now: Instant, t: &Tally) -> bool {
        let mut d = LegSnapshot::default();
        d.add_in(t.in_packets, t.in_bytes);
        d.add_drops(&t.drops);
        if t.latched {
            d.latches = 1;
            tracing::info!(call = %self.call_id, member = %member, "group member leg latched to a new source");
        }
        self.count(member, &d);
        if t.media == 0 {
            return false;
        }
        // A rollover counter moved: a step writes the call's image at once (HA).
        let wrapped = t.wrapped;
        let permitted = self.server.arbiter().may_forward(member);
        let Some(m) = self
            .members
            .get_mut(member.index())
            .and_then(Option::as_mut)
        else {
            return false;
        };
        let a = &mut m.activity;
        let before = a.total;
        a.total += t.media;
        a.since_step += t.media;
        a.last = Some(now);
        wrapped
            || if permitted {
                !m.media_seen
            } else {
                before / UNPERMITTED_STEP_EVERY != a.total / UNPERMITTED_STEP_EVERY
            }
    }

    /// Feeds the server the media activity seen since the last step.
    fn feed_activity(&mut self, now: Instant) {
        for (i, m) in self.members.iter_mut().enumerate() {
            let Some(m) = m.as_mut() else { continue };
            let a = &mut m.activity;
            if a.since_step == 0 {
                continue;
            }
            let n = a.since_step.min(u64::from(u32::MAX)) as u32;
            a.since_step = 0;
            let at = a.last.unwrap_or(now).min(now);
            if let Some(s) = Slot::new(i) {
                self.server.handle_media(at, s, n);
            }
        }
    }

    /// Runs the call: activity, due timers; sends what the server polled out; publishes its
    /// events. Returns the next deadline.
    pub(crate) fn step(
        &mut self,
        now: Instant,
        tx: &mut Vec<u8>,
        publish: &mut dyn FnMut(CallEvent),
    ) -> Option<Instant> {
        self.feed_activity(now);
        if self.server.poll_timeout().is_some_and(|t| t <= now) {
            self.server.handle_timeout(now);
        }
        self.flush_control(tx);
        while let Some(ev) = self.server.poll_event() {
            self.on_event(now, ev, publish);
        }
        // Events may have queued more (a keyframe request goes out on its own path).
        self.flush_control(tx);
        self.departed.clear();
        if self.server.finished().is_some() && self.released_at.is_none() {
            self.released_at = Some(now);
        }
        self.server.poll_timeout()
    }

    /// Sends what the server queued, SRTCP-protected where the channel has a key.
    fn flush_control(&mut self, tx: &mut Vec<u8>) {
        while let Some(to) = self.server.poll_transmit(tx) {
            let len = tx.len();
            tx.resize(len + 64, 0); // room for the SRTCP trailer
            let sealed = self.rules.seal_control(to, tx, len);
            let Some(m) = self.members.get_mut(to.index()).and_then(Option::as_mut) else {
                continue;
            };
            let sock = m
                .control
                .and_then(|i| self.sockets.get(i))
                .and_then(Option::as_ref);
            match (sealed, sock) {
                (Some(Ok((len, dest))), Some(s)) => {
                    let sent = s.sock.send(dest, tx.get(..len).unwrap_or_default(), len);
                    let mut o = LegSnapshot::default();
                    o.add_out(sent.packets, sent.bytes);
                    m.counters.add(&o);
                    self.totals.group.add(&o);
                }
                (Some(Err(e)), _) => {
                    tracing::warn!(call = %self.call_id, error = %e, "cannot protect a control message");
                }
                _ => {}
            }
        }
    }

    fn user(&self, s: Slot) -> Arc<str> {
        match self.members.get(s.index()).and_then(Option::as_ref) {
            Some(m) => m.user_id.clone(),
            None => self
                .departed
                .iter()
                .find(|(d, _)| *d == s)
                .map_or_else(|| Arc::from(""), |(_, n)| n.clone()),
        }
    }

    fn on_event(&mut self, now: Instant, ev: TcEvent, publish: &mut dyn FnMut(CallEvent)) {
        let kind = match ev {
            TcEvent::Joined { member } => CallEventKind::ParticipantJoined {
                member: self.user(member),
            },
            TcEvent::Left { member } => CallEventKind::ParticipantLeft {
                member: self.user(member),
            },
            TcEvent::Granted {
                member,
                audio_ssrc,
                video_ssrc,
            } => {
                // Video first: the relay's keyframe requests name the filter's first SSRC.
                let mut allowed = vec![video_ssrc.get(), audio_ssrc.get()];
                if let Some(m) = self
                    .members
                    .get_mut(member.index())
                    .and_then(Option::as_mut)
                {
                    m.media_seen = false;
                    allowed.extend(m.announced.iter().copied());
                }
                self.rules.set_transmitter_ssrcs(member, &allowed);
                self.request_keyframe(now, member);
                CallEventKind::MemberGranted {
                    member: self.user(member),
                    audio_ssrc,
                    video_ssrc,
                }
            }
            TcEvent::Queued { member, position } => CallEventKind::TransmissionQueued {
                member: self.user(member),
                position,
            },
            TcEvent::Preempted { member, by } => CallEventKind::TransmissionPreempted {
                member: self.user(member),
                by: self.user(by),
            },
            TcEvent::MediaStarted { member } => {
                if let Some(m) = self
                    .members
                    .get_mut(member.index())
                    .and_then(Option::as_mut)
                {
                    m.media_seen = true;
                }
                return;
            }
            TcEvent::TransmissionEnded { member, reason } => {
                self.rules.set_transmitter_ssrcs(member, &[]);
                if let Some(m) = self
                    .members
                    .get_mut(member.index())
                    .and_then(Option::as_mut)
                {
                    m.media_seen = true;
                }
                CallEventKind::MemberTransmissionEnded {
                    member: self.user(member),
                    reason,
                }
            }
            TcEvent::Idle => CallEventKind::TransmissionIdle,
            TcEvent::Released { reason } => CallEventKind::Released { reason },
            TcEvent::Rejected { .. }
            | TcEvent::ReceptionStarted { .. }
            | TcEvent::ReceptionEnded { .. } => return,
        };
        publish(CallEvent {
            call_id: self.call_id.clone(),
            kind,
        });
    }

    /// Asks a new transmitter for a keyframe (PLI) where the relay can sign RTCP, so its
    /// receivers can start decoding.
    fn request_keyframe(&mut self, now: Instant, member: Slot) {
        let mut buf = [0u8; 64];
        let Some((si, len)) = self.rules.keyframe_request(member, now, &mut buf) else {
            return;
        };
        let Some(m) = self
            .members
            .get_mut(member.index())
            .and_then(Option::as_mut)
        else {
            return;
        };
        let own = m
            .rtcp
            .get(si)
            .copied()
            .flatten()
            .or_else(|| m.rtp.get(si).copied().flatten());
        let dest = self.rules.rtcp_destination(member, si);
        let sock = own
            .and_then(|i| self.sockets.get(i))
            .and_then(Option::as_ref);
        if let (Some(s), Some(dest), Some(b)) = (sock, dest, buf.get(..len)) {
            let sent = s.sock.send(dest, b, len);
            let mut o = LegSnapshot::default();
            o.add_out(sent.packets, sent.bytes);
            m.counters.add(&o);
            self.totals.group.add(&o);
        }
    }

    /// Transmission control counters, for the worker's totals.
    pub(crate) fn tc_counters(
        &self,
    ) -> (
        crate::control::server::KindCounters,
        crate::control::server::KindCounters,
    ) {
        let s = self.server.stats();
        (s.received, s.sent)
    }

    /// Jitter and loss of what each member sent.
    pub(crate) fn quality(&self, now: Instant) -> Vec<super::super::rules::MemberQuality> {
        self.rules.quality(now)
    }

    /// The call's state and counters.
    pub(crate) fn summary(&self, now: Instant) -> GroupCallSummary {
        let cfg = self.server.config();
        let name = |s: Slot| self.user(s).to_string();
        let mut quality = self.rules.quality(now);
        GroupCallSummary {
            call_id: self.call_id.clone(),
            group_id: self.group_id.clone(),
            media_security: self.security,
            max_transmitters: cfg.max_transmitters,
            max_streams_per_receiver: cfg.max_streams_per_receiver,
            reception_mode: cfg.reception_mode,
            state: if self.released() {
                CallState::Released
            } else {
                CallState::Established
            },
            release_reason: self.server.finished(),
            duration: self
                .released_at
                .unwrap_or(now)
                .saturating_duration_since(self.created),
            members: self
                .server
                .members()
                .into_iter()
                .map(|v| GroupMemberSummary {
                    mcvideo_id: v.user_id,
                    slot: v.member,
                    priority: v.priority,
                    receive_only: v.receive_only,
                    transmitting: v.transmitting,
                    queued: v.queued,
                    receiving: v.receiving.iter().map(|&s| name(s)).collect(),
                    counters: self
                        .members
                        .get(v.member.index())
                        .and_then(Option::as_ref)
                        .map(|m| m.counters)
                        .unwrap_or_default(),
                    quality: quality
                        .iter_mut()
                        .find(|q| q.member == v.member)
                        .map(|q| std::mem::take(&mut q.streams))
                        .unwrap_or_default(),
                })
                .collect(),
            transmissions: self
                .server
                .transmissions()
                .into_iter()
                .map(|t| GroupTransmissionSummary {
                    mcvideo_id: t.user_id,
                    slot: t.member,
                    audio_ssrc: t.audio_ssrc,
                    video_ssrc: t.video_ssrc,
                    priority: t.rank.priority,
                    class: t.rank.class,
                    media_started: t.media_started,
                    duration: now.saturating_duration_since(t.granted_at),
                    receivers: t.receivers.iter().map(|&s| name(s)).collect(),
                })
                .collect(),
            queue: self
                .server
                .queue()
                .into_iter()
                .map(|q| GroupQueueSummary {
                    mcvideo_id: q.user_id,
                    position: q.position,
                    priority: q.rank.priority,
                    class: q.rank.class,
                })
                .collect(),
            tc: *self.server.stats(),
        }
    }

    /// The server SSRC to give back when the call ends.
    pub(crate) fn server_ssrc(&self) -> Ssrc {
        self.server_ssrc
    }

    /// The engine-wide SSRC registry.
    pub(crate) fn ssrc_registry(&self) -> &Arc<SsrcRegistry> {
        &self.ssrcs
    }
}

impl ControlChannels<Slot> for GroupRt {
    fn control_socket(&self, index: usize) -> Option<&UdpSocket> {
        Some(self.sockets.get(index)?.as_ref()?.sock.socket())
    }

    fn admit_control(
        &mut self,
        member: Slot,
        from: SocketAddr,
        now: Instant,
        buf: &mut [u8],
    ) -> Result<usize, DropReason> {
        self.rules.admit_control(member, from, now, buf)
    }

    fn count_control(&mut self, member: Slot, d: &LegSnapshot) {
        self.count(member, d);
    }

    fn handle_control(&mut self, now: Instant, member: Slot, msg: &[u8]) {
        self.feed_activity(now);
        self.server.handle_datagram(now, member, msg);
    }
}

/// A group call to take over: its snapshot, its members made ready (sockets bound, keys in
/// their legs) by slot, when the image was taken (on this relay's clock) and the relay it came
/// from.
#[derive(Debug)]
pub(crate) struct GroupRestore {
    pub(crate) group: GroupSnapshot,
    pub(crate) members: Vec<(Slot, MemberPrep)>,
    pub(crate) at: Instant,
    pub(crate) from: Arc<str>,
}

impl GroupRt {
    /// The call of a relay that died, as its image left it: the server with its members,
    /// grants, queue, reception state and timers (as much later than the image's time as they
    /// were left), the rules with their latches, SSRCs and SRTP state, the members' sockets.
    /// The transmissions' SSRCs are reserved in `ssrcs`. On error every socket is closed and
    /// the ports are returned for the caller to give back.
    pub(crate) fn restore(
        r: GroupRestore,
        latch_after: u32,
        ssrcs: Arc<SsrcRegistry>,
        totals: Arc<WorkerStats>,
    ) -> Result<GroupRt, Refused> {
        let GroupRestore {
            group: g,
            members,
            at,
            ..
        } = r;
        let server = TransmissionControlServer::restore(&g.tc, at, Some(ssrcs.clone()));
        let head = GroupHead {
            call_id: CallId::from(g.call_id.as_str()),
            group_id: g.group_id.clone(),
            security: g.media_security,
            streams: g.streams.clone(),
            server_ssrc: Ssrc(g.tc.server_ssrc),
            created: ms_before(at, g.created_ms_ago),
        };
        let mut rt = GroupRt::empty(head, server, latch_after, ssrcs, totals);
        // The dead relay's counts are not this relay's work.
        rt.tc_published = rt.tc_counters();
        let mut members = members.into_iter();
        while let Some((slot, prep)) = members.next() {
            if let Err((e, own)) = rt.attach(at, slot, prep, g.rules.member(slot)) {
                return Err(rt.give_up(e, own, members.map(|(_, m)| m.ports)));
            }
        }
        // A granted member whose media had not come yet still owes its first packet.
        for t in &g.tc.members {
            let waiting = t.transmission.as_ref().is_some_and(|x| !x.first_media);
            if let Some(m) = rt
                .members
                .get_mut(usize::from(t.slot))
                .and_then(Option::as_mut)
            {
                m.media_seen = !waiting;
            }
        }
        Ok(rt)
    }

    /// Another relay has the call: end it here without a word (nothing is sent, no event is
    /// published) so that its transmissions' SSRCs go back; the caller drops it.
    pub(crate) fn abandon(&mut self) {
        self.server.release(ReleaseReason::Shutdown);
    }

    /// The members' slots.
    pub(crate) fn member_slots(&self) -> Vec<Slot> {
        self.members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.is_some())
            .filter_map(|(i, _)| Slot::new(i))
            .collect()
    }

    /// The call's image for high availability (after a step: nothing queued).
    pub(crate) fn image(&self, now: Instant) -> GroupImage {
        let mut members = Vec::new();
        let mut secrets = GroupSecrets::default();
        for (i, m) in self.members.iter().enumerate() {
            let (Some(m), Ok(slot)) = (m, u8::try_from(i)) else {
                continue;
            };
            let legs = (0..self.streams)
                .map(|si| {
                    let (relay, muxed) = m.relay.get(si).copied().flatten()?;
                    let l = m.media.legs.get(si)?;
                    Some(GroupLegImage {
                        relay,
                        muxed,
                        remote_rtp: l.remote_rtp,
                        remote_rtcp: l.remote_rtcp,
                        announced: l.announced.clone(),
                    })
                })
                .collect();
            members.push(GroupMemberImage {
                slot,
                mcvideo_id: m.user_id.to_string(),
                legs,
                control: m.control_relay.map(|relay| GroupControlImage {
                    relay,
                    remote: m.media.control.as_ref().and_then(|c| c.remote),
                }),
            });
            secrets.members.push(MemberSecrets {
                slot,
                legs: m
                    .media
                    .legs
                    .iter()
                    .map(|l| (l.srtp_in.clone(), l.srtp_out.clone()))
                    .collect(),
                control: m.media.control.as_ref().and_then(|c| c.key.clone()),
            });
        }
        GroupImage {
            group: GroupSnapshot {
                call_id: self.call_id.to_string(),
                group_id: self.group_id.clone(),
                media_security: self.security,
                streams: self.stream_images.clone(),
                created_ms_ago: now.saturating_duration_since(self.created).as_millis() as u64,
                tc: self.server.snapshot(now),
                members,
                rules: self.rules.snapshot(),
            },
            secrets,
        }
    }

    /// What changes when the call's control plane does (grants, ends, joins and leaves, the
    /// queue, reception, transmission control messages, first media, latches), hashed; and the
    /// packets received so far. Allocates nothing.
    pub(crate) fn ha_marks(&self) -> (u64, u64) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let st = self.server.stats();
        let live = self.members.iter().flatten();
        (
            st.sent.total(),
            st.received.total(),
            (st.grants, st.queued, st.preemptions),
            self.server.arbiter().snapshot().epoch,
            self.rules.members(),
            live.clone().filter(|m| m.media_seen).count(),
            live.clone().map(|m| m.counters.latches).sum::<u64>(),
            self.released(),
            self.rules.wraps(),
        )
            .hash(&mut h);
        (h.finish(), live.map(|m| m.counters.packets_in).sum())
    }
}
