//! A call on its worker, whatever its kind: the one slab entry type. A call is a set of
//! members, each with its sockets, counters and media activity, judged by the one rule set
//! ([`GroupRules`]) and run by one transmission control server. What the kind changes is two
//! things, each chosen once when the call is made:
//!
//! * **the procedure** ([`Procedure`]): a push or pull runs the private call procedure, a
//!   [`Call`] (offer/answer, the implicit grant, release when the transmission ends) around
//!   its server, with the caller in slot 0 and the callee in slot 1 (`private.rs`); a group
//!   call runs the bare server with members joining and leaving (`group.rs`);
//! * **the delivery** (`media.rs`): a two-member call forwards to its one peer in place
//!   ([`PairFace`]), a group fans out to its receivers.
//!
//! Everything else (the sockets and their roles, reading control channels, booking counters
//! and activity, stepping the server, sending what it says, keyframe requests, quality,
//! high-availability marks, teardown) is this one code path. Everything here is owned by the
//! worker thread: no lock, no atomic but the arbiter's word.

use super::super::plane::{Plane, WorkerStats};
use super::super::rules::{GroupIngress, GroupRules, PairFace, QualityHistograms, Tally};
use super::super::stats::{LegCounters, LegSnapshot};
use super::super::{CallSummary, GroupCallSummary, HaUpdate};
use super::group::Group;
use super::media::{pump_fan, pump_pair, Net, Role, Scratch, BATCHES_PER_WAKE, CONTROL_PER_WAKE};
use super::private::Private;
use crate::control::arbiter::Slot;
use crate::control::call::CallEvent;
use crate::control::server::KindCounters;
use crate::control::{Party, ReleaseReason};
use crate::ids::CallId;
use std::io;
use std::net::UdpSocket;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

/// Media packets from a member without permission between steps of the call (so it can
/// revoke).
const UNPERMITTED_STEP_EVERY: u64 = 4;

/// One call on a worker.
#[derive(Debug)]
pub(crate) struct CallRt {
    pub(crate) call_id: CallId,
    pub(super) proc: Procedure,
    /// The one rule set, every member.
    pub(super) rules: GroupRules,
    /// A two-member call's face on its rules, once its media started: it delivers to its one
    /// peer in place. `None`: the call fans out (a group).
    pub(super) pair: Option<PairFace>,
    pub(super) net: Net,
    /// Receiver legs with fanned-out RTP gathered and not yet sent (bit per member, per
    /// stream).
    pub(super) dirty: Vec<u64>,
    /// Members that left since the last step (their events still name them).
    pub(super) departed: Vec<(Slot, Arc<str>)>,
    /// The deadline the worker's timer heap holds for this call.
    pub(crate) armed: Option<Instant>,
    /// The call's transmission control counters as last added to the worker's totals: what
    /// moved since (on the socket path or in a step) is added at the next step.
    pub(crate) tc_published: (KindCounters, KindCounters),
    pub(super) latch_after: u32,
    /// The worker's running totals (every count also goes there).
    pub(super) totals: Arc<WorkerStats>,
    /// The call's transmission log, when it keeps one.
    pub(super) txlog: Option<Box<super::txlog::TxLog>>,
    /// The call's recording (its directory), when it has one.
    pub(super) rec: Option<Arc<super::super::recording::RecHandle>>,
    /// Its legs in the kernel fast path (`offload.rs`).
    pub(super) offload: super::offload::Offloaded,
}

/// The call procedure a call runs: what its transmission control is wrapped in.
#[derive(Debug)]
pub(super) enum Procedure {
    /// A push or pull: the private call procedure around the server.
    Private(Box<Private>),
    /// A group call: the bare server, members joining and leaving.
    Group(Box<Group>),
}

impl Procedure {
    /// Media from `member`: `packets` of them, the last at `at`.
    fn handle_media(&mut self, at: Instant, member: Slot, packets: u32) {
        match self {
            Procedure::Private(p) => {
                if let Some(party) = Party::of_slot(member) {
                    p.call.handle_media(at, party, packets);
                }
            }
            Procedure::Group(g) => g.server.handle_media(at, member, packets),
        }
    }

    /// An admitted transmission control message from `member`.
    fn handle_control(&mut self, now: Instant, member: Slot, msg: &[u8]) {
        match self {
            Procedure::Private(p) => {
                if let Some(party) = Party::of_slot(member) {
                    p.call.handle_control(now, party, msg);
                }
            }
            Procedure::Group(g) => g.server.handle_datagram(now, member, msg),
        }
    }

    /// Runs the timers due at `now`.
    fn run_timers(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|t| t <= now) {
            match self {
                Procedure::Private(p) => p.call.handle_timeout(now),
                Procedure::Group(g) => g.server.handle_timeout(now),
            }
        }
    }

    /// The next message to send, written to `tx`, and the member it goes to.
    fn poll_transmit(&mut self, tx: &mut Vec<u8>) -> Option<Slot> {
        match self {
            Procedure::Private(p) => p.call.poll_transmit(tx).map(Party::slot),
            Procedure::Group(g) => g.server.poll_transmit(tx),
        }
    }

    /// When the call next wants a step.
    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Procedure::Private(p) => p.call.poll_timeout(),
            Procedure::Group(g) => g.server.poll_timeout(),
        }
    }

    /// The call is released from outside.
    fn release(&mut self, now: Instant, reason: ReleaseReason) {
        match self {
            Procedure::Private(p) => p.call.release(now, reason),
            Procedure::Group(g) => g.server.release(reason),
        }
    }

    /// Whether the call is over.
    fn released(&self) -> bool {
        match self {
            Procedure::Private(p) => p.released(),
            Procedure::Group(g) => g.server.finished().is_some(),
        }
    }

    /// Transmission control counters (received, sent).
    fn tc_counters(&self) -> (KindCounters, KindCounters) {
        let s = match self {
            Procedure::Private(p) => p.call.tc_stats(),
            Procedure::Group(g) => g.server.stats(),
        };
        (s.received, s.sent)
    }
}

/// A call's state and counters, as its kind reports them (transient: built for a reply).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Summary {
    Private(CallSummary),
    Group(GroupCallSummary),
}

impl Summary {
    /// A one-to-one call's summary, if this is one.
    pub(crate) fn private(self) -> Option<CallSummary> {
        match self {
            Summary::Private(s) => Some(s),
            Summary::Group(_) => None,
        }
    }

    /// A group call's summary, if this is one.
    pub(crate) fn group(self) -> Option<GroupCallSummary> {
        match self {
            Summary::Group(s) => Some(s),
            Summary::Private(_) => None,
        }
    }
}

impl CallRt {
    /// A call with its procedure and rules and no member yet: what every call starts from.
    pub(super) fn empty(
        call_id: CallId,
        proc: Procedure,
        rules: GroupRules,
        latch_after: u32,
        totals: Arc<WorkerStats>,
    ) -> CallRt {
        let streams = rules.streams();
        CallRt {
            call_id,
            proc,
            rules,
            pair: None,
            net: Net::default(),
            dirty: vec![0; streams],
            departed: Vec::new(),
            armed: None,
            tc_published: Default::default(),
            latch_after,
            totals,
            txlog: None,
            rec: None,
            offload: Default::default(),
        }
    }

    /// Keeps a transmission log of the call in recording `rec` from now on.
    pub(crate) fn keep_log(&mut self, rec: Arc<super::super::recording::RecHandle>) {
        if let Procedure::Private(p) = &mut self.proc {
            p.call.tap_tc_events();
        }
        self.txlog = Some(Box::new(super::txlog::TxLog::new(rec)));
    }

    /// Records the call's media from now on (in its recording, opened here if it has none).
    /// `false`: refused (too little disk space, the writer's queue full: counted); the call
    /// goes on unrecorded.
    pub(crate) fn record_media(&mut self, recorder: &super::super::recording::Recorder) -> bool {
        if self.rules.tap_mut().is_some() {
            return true;
        }
        let now = (Instant::now(), std::time::SystemTime::now());
        if self.rec.is_none() {
            self.rec = recorder.open(&self.call_id, now.1, false).map(Arc::new);
        }
        let Some(rec) = self.rec.clone() else {
            return false;
        };
        let meta = self.media_meta();
        match recorder.media(&self.call_id, &rec, meta, now) {
            Some(tap) => {
                self.rules.set_tap(tap);
                tracing::info!(call = %self.call_id, "recording the call's media");
                true
            }
            None => false,
        }
    }

    /// Copies a stream of the call to a watcher from now on (the kernel fast path, if the
    /// call was in it, is left at once), and asks the transmitters for a keyframe so the
    /// watcher can start decoding. `Err`: why the call cannot be watched.
    pub(crate) fn watch(
        &mut self,
        sink: crate::relay::watch::WatchSink,
        now: Instant,
    ) -> Result<crate::relay::WatchedStream, &'static str> {
        if self.released() {
            return Err("the call is released");
        }
        let mut stream = self.rules.watch(sink)?;
        if let Procedure::Group(g) = &self.proc {
            stream.max_transmitters = g.server.config().max_transmitters.max(1);
        }
        self.sync_offload(now);
        self.request_keyframes(now);
        tracing::info!(call = %self.call_id, stream = stream.index, "a watcher joined");
        Ok(stream)
    }

    /// Asks every member with the grant for a keyframe (PLI), where the relay can sign RTCP
    /// and the member's keyframe policy allows one now.
    pub(crate) fn request_keyframes(&mut self, now: Instant) {
        for member in crate::control::arbiter::slots(self.rules.granted()) {
            self.request_keyframe(now, member);
        }
    }

    /// The media recording's metadata (`media.json`): how the packets were written.
    pub(super) fn media_meta(&self) -> String {
        use std::fmt::Write as _;
        let (per_leg, streams) = self.rules.recording_traits();
        let mut s = String::with_capacity(512);
        s.push_str("{\"call\":");
        super::super::recording::json_str(&mut s, &self.call_id);
        let kind = match self.proc {
            Procedure::Private(_) => "private",
            Procedure::Group(_) => "group",
        };
        let security = if per_leg { "per_leg" } else { "end_to_end" };
        let _ = write!(
            s,
            ",\"kind\":\"{kind}\",\"media_security\":\"{security}\",\"format\":\"pcap\",\
             \"linktype\":{},\"files\":\"stream-<stream>.pcap, then stream-<stream>.<part>.pcap\",\
             \"rtcp\":true,\"streams\":[",
            super::super::recording::LINKTYPE_RAW
        );
        for (i, (kind, srtp)) in streams.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let kind = match kind {
                crate::sdp::MediaKind::Audio => "audio",
                crate::sdp::MediaKind::Video => "video",
                crate::sdp::MediaKind::Control => "application",
                crate::sdp::MediaKind::Other(_) => "other",
            };
            // per_leg: the relay decrypts; end_to_end: SRTP stays as received.
            let encrypted = *srtp && !per_leg;
            let _ = write!(
                s,
                "{{\"stream\":{i},\"kind\":\"{kind}\",\"srtp_on_the_wire\":{srtp},\
                 \"decrypted\":{},\"encrypted\":{encrypted}}}",
                *srtp && per_leg
            );
        }
        s.push_str("]}");
        s
    }

    /// The name of member `s` (a departed member's too).
    pub(super) fn member_name(&self, s: Slot) -> Arc<str> {
        match &self.proc {
            Procedure::Private(p) => Arc::from(match Party::of_slot(s) {
                Some(Party::Caller) => p.call.caller_id(),
                Some(Party::Callee) => p.call.callee_id(),
                None => "",
            }),
            Procedure::Group(_) => self.user(s),
        }
    }

    /// Writes server event `ev` to the call's transmission log, if it keeps one.
    pub(super) fn log_event(&mut self, ev: &crate::control::server::TcEvent) {
        if self.txlog.is_none() {
            return;
        }
        let (a, b) = super::txlog::event_slots(ev);
        let name = |s: Option<Slot>| s.map(|s| self.member_name(s)).unwrap_or_default();
        let (a, b) = (name(a), name(b));
        if let Some(log) = self.txlog.as_deref_mut() {
            log.event(std::time::SystemTime::now(), &self.call_id, ev, &a, &b);
        }
    }

    /// The call's ID.
    pub(crate) fn call_id(&self) -> &CallId {
        &self.call_id
    }

    /// This call, if it is a one-to-one call (push or pull).
    pub(crate) fn if_private(&mut self) -> Option<&mut CallRt> {
        matches!(self.proc, Procedure::Private(_)).then_some(self)
    }

    /// This call, if it is a group call.
    pub(crate) fn if_group(&mut self) -> Option<&mut CallRt> {
        matches!(self.proc, Procedure::Group(_)).then_some(self)
    }

    /// Every socket the worker polls for this call, with its index in the call.
    pub(crate) fn sockets(&self) -> Vec<(usize, &UdpSocket)> {
        self.net.all().collect()
    }

    /// The sockets of member `slot` to register with the poller, by index.
    pub(crate) fn member_sockets(&self, slot: Slot) -> Vec<(usize, &UdpSocket)> {
        self.net.of_member(slot)
    }

    /// Takes in member `slot`'s socket for `role`, booked in its sockets by `book`.
    pub(super) fn add_socket(
        &mut self,
        slot: Slot,
        s: UdpSocket,
        role: Role,
        book: impl FnOnce(&mut super::media::MemberRt, usize),
    ) -> io::Result<()> {
        let i = self.net.push(s, role)?;
        if let Some(m) = self.net.member_mut(slot) {
            book(m, i);
        }
        Ok(())
    }

    /// Where the worker's totals for member `slot`'s leg are: per party for a one-to-one call,
    /// one for every group member.
    fn totals_for(&self, slot: Slot) -> Option<&LegCounters> {
        match self.proc {
            Procedure::Private(_) => self.totals.legs.get(slot.index()),
            Procedure::Group(_) => Some(&self.totals.group),
        }
    }

    /// Counts `d` on member `slot`'s leg, in the call and in the worker's totals.
    pub(super) fn count(&mut self, slot: Slot, d: &LegSnapshot) {
        if let Some(m) = self.net.member_mut(slot) {
            m.counters.add(d);
        }
        if let Some(t) = self.totals_for(slot) {
            t.add(d);
        }
    }

    /// Counts a send of `packets` (`bytes`) to member `slot`.
    fn count_out(&mut self, slot: Slot, sent: super::super::io::Sent) {
        let mut d = LegSnapshot::default();
        d.add_out(sent.packets, sent.bytes);
        self.count(slot, &d);
    }

    /// Socket `index` is readable: receive and forward (media) or admit and hand to the server
    /// (control). Counters and activity are booked here. Returns whether the call should be
    /// stepped.
    #[inline]
    pub(crate) fn on_readable(&mut self, index: usize, now: Instant, io: &mut Scratch) -> bool {
        #[cfg(test)]
        if self.call_id.as_str().starts_with("test-panic") {
            panic!(
                "test hook: a bug while handling a packet of call {}",
                self.call_id
            );
        }
        let Some(role) = self.net.socket(index).map(|s| s.role) else {
            return false;
        };
        match role {
            Role::Media(at) => {
                if let Some(tap) = self.rules.tap_mut() {
                    if let Some(local) = self.net.socket(index).and_then(|s| s.local) {
                        tap.set_local(local);
                    }
                }
                let mut step = false;
                for _ in 0..BATCHES_PER_WAKE {
                    let Some((t, drained)) = self.pump(index, at, now, io) else {
                        break;
                    };
                    step |= self.book(at, now, &t);
                    if drained {
                        break;
                    }
                }
                step
            }
            Role::Control(member) => self.read_control(index, member, now, io),
        }
    }

    /// One receive batch from socket `index`, delivered as the call delivers.
    #[inline]
    fn pump(
        &mut self,
        index: usize,
        at: GroupIngress,
        now: Instant,
        io: &mut Scratch,
    ) -> Option<(Tally, bool)> {
        match &self.pair {
            Some(face) => pump_pair(face, &mut self.rules, &self.net, index, at, now, io),
            None => {
                // What went out in this batch, booked per receiver and in the worker's totals
                // once.
                let mut out = LegSnapshot::default();
                let r = pump_fan(
                    &mut self.rules,
                    &mut self.net,
                    &mut self.dirty,
                    index,
                    at,
                    now,
                    io,
                    &mut out,
                );
                self.totals.group.add(&out);
                r
            }
        }
    }

    /// Books a batch from `member`: counters (a pair's sends on its peer; a group's were booked
    /// per receiver), activity, and whether the call should be stepped: the first media of a
    /// transmission, every few packets of a member without permission (so it can revoke), a
    /// transmitter's BYE, a rollover counter that moved (a step writes the call's image at once
    /// for high availability).
    fn book(&mut self, at: GroupIngress, now: Instant, t: &Tally) -> bool {
        let member = at.member;
        if let Some(log) = self.txlog.as_deref_mut() {
            log.media(member, at.stream, t);
        }
        let mut d = LegSnapshot::default();
        d.add_in(t.in_packets, t.in_bytes);
        d.add_drops(&t.drops);
        // A latch may let the kernel fast path take the leg: step.
        let mut step = t.wrapped || t.latched;
        if t.latched {
            d.latches = 1;
            tracing::info!(call = %self.call_id, member = %member, "leg latched to a new source");
        }
        self.count(member, &d);
        let transmits = self.pair.map(|f| f.transmitter().slot() == member);
        if let Some(face) = self.pair {
            let mut o = LegSnapshot::default();
            o.add_out(t.out_packets, t.out_bytes);
            self.count(face.peer(member), &o);
        }
        if t.bye && transmits == Some(true) {
            if let Procedure::Private(p) = &mut self.proc {
                p.bye = true;
            }
            step = true;
        }
        if t.media == 0 {
            return step;
        }
        let permitted = transmits.unwrap_or_else(|| self.rules.arbiter().may_forward(member));
        let pair = self.pair.is_some();
        let Some(m) = self.net.member_mut(member) else {
            return step;
        };
        let a = &mut m.activity;
        let before = a.total;
        a.total += t.media;
        a.since_step += t.media;
        a.last = Some(now);
        let first = !m.media_seen;
        if pair && permitted {
            // A private call's transmitter is granted for the call's life: its first packet
            // is its transmission's first.
            m.media_seen = true;
        }
        step || if permitted {
            first
        } else {
            before / UNPERMITTED_STEP_EVERY != a.total / UNPERMITTED_STEP_EVERY
        }
    }

    /// Feeds the server the media activity seen since the last step (and a transmitter's BYE).
    pub(super) fn feed_activity(&mut self, now: Instant) {
        for (i, m) in self.net.members.iter_mut().enumerate() {
            let Some(m) = m.as_mut() else { continue };
            let a = &mut m.activity;
            if a.since_step == 0 {
                continue;
            }
            let n = a.since_step.min(u64::from(u32::MAX)) as u32;
            a.since_step = 0;
            let at = a.last.unwrap_or(now).min(now);
            if let Some(s) = Slot::new(i) {
                self.proc.handle_media(at, s, n);
            }
        }
        if let Procedure::Private(p) = &mut self.proc {
            if std::mem::take(&mut p.bye) {
                let tx = p.call.kind().transmitter();
                p.call.handle_rtcp_bye(now, tx);
            }
        }
    }

    /// Reads control socket `index` (`member`'s channel), at most [`CONTROL_PER_WAKE`]
    /// datagrams: each is counted on the member's leg and checked by the rules (source,
    /// SRTCP); what they admit goes to the server, after the media activity seen before it.
    /// Returns whether the call wants a step.
    fn read_control(&mut self, index: usize, member: Slot, now: Instant, io: &mut Scratch) -> bool {
        let mut step = false;
        for _ in 0..CONTROL_PER_WAKE {
            let Some(s) = self.net.socket(index) else {
                break;
            };
            let (n, from) = match s.sock.socket().recv_from(&mut io.control) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => continue, // e.g. an ICMP error: the socket stays usable
            };
            let mut d = LegSnapshot::default();
            d.add_in(1, n as u64);
            let Some(buf) = io.control.get_mut(..n) else {
                continue;
            };
            match self.rules.admit_control(member, from, now, buf) {
                Ok(len) => {
                    self.count(member, &d);
                    if let Some(msg) = io.control.get(..len) {
                        self.feed_activity(now);
                        self.proc.handle_control(now, member, msg);
                    }
                    step = true;
                }
                Err(r) => {
                    if let Some(x) = d.drops.get_mut(r as usize) {
                        *x += 1;
                    }
                    self.count(member, &d);
                }
            }
        }
        step
    }

    /// Runs the call: activity, due timers; sends what the server polled out; publishes its
    /// events; asks a new transmitter for a keyframe. Returns the next deadline. `tx` is the
    /// worker's reusable transmit buffer: no message is cloned.
    pub(crate) fn step(
        &mut self,
        now: Instant,
        tx: &mut Vec<u8>,
        plane: &Plane,
    ) -> Option<Instant> {
        // What the kernel forwarded is media activity too, before the timers judge it.
        self.poll_offload(now);
        self.feed_activity(now);
        self.proc.run_timers(now);
        // The kernel's entries follow the call before any message announces a change.
        self.sync_offload(now);
        self.flush_control(tx);
        let mut publish = |ev: CallEvent| plane.publish(ev);
        match self.proc {
            Procedure::Private(_) => self.private_events(now, &mut publish),
            Procedure::Group(_) => self.group_events(now, &mut publish),
        }
        // Events may have queued more (a keyframe request goes out on its own path).
        self.sync_offload(now);
        self.flush_control(tx);
        self.departed.clear();
        let next = self.proc.poll_timeout();
        match self.offload.wake_at(now) {
            Some(w) => Some(next.map_or(w, |t| t.min(w))),
            None => next,
        }
    }

    /// Sends what the server queued, SRTCP-protected where the channel has a key.
    fn flush_control(&mut self, tx: &mut Vec<u8>) {
        while let Some(to) = self.proc.poll_transmit(tx) {
            let len = tx.len();
            tx.resize(len + 64, 0); // room for the SRTCP trailer
            let sealed = self.rules.seal_control(to, tx, len);
            let sock = self
                .net
                .member(to)
                .and_then(|m| m.control)
                .and_then(|i| self.net.socket(i));
            match (sealed, sock) {
                (Some(Ok((len, dest))), Some(s)) => {
                    let sent = s.sock.send(dest, tx.get(..len).unwrap_or_default(), len);
                    self.count_out(to, sent);
                }
                (Some(Err(e)), _) => {
                    tracing::warn!(call = %self.call_id, error = %e, "cannot protect a control message");
                }
                _ => {}
            }
        }
    }

    /// Sends the keyframe request (PLI) of `len` bytes in `buf` for stream `si` to `member`,
    /// from its own relay socket of the stream (RTCP's if it has one), where the relay can
    /// sign RTCP.
    pub(super) fn send_keyframe_request(&mut self, member: Slot, si: usize, buf: &[u8]) {
        let dest = self.rules.rtcp_destination(member, si);
        let sock = self.net.own_socket(member, si, true);
        if let (Some(s), Some(dest)) = (sock, dest) {
            let sent = s.send(dest, buf, buf.len());
            self.count_out(member, sent);
        }
    }

    /// A panic while handling the call: release it with `internal_error` and publish what that
    /// says, as far as the call still can.
    pub(crate) fn fail(&mut self, now: Instant, tx: &mut Vec<u8>, plane: &Plane) {
        self.proc.release(now, ReleaseReason::InternalError);
        match self.proc {
            Procedure::Private(_) => {
                self.private_events(now, &mut |ev| plane.publish(ev));
            }
            Procedure::Group(_) => {
                self.step(now, tx, plane);
            }
        }
    }

    /// Transmission control counters (received, sent), for the worker's totals.
    pub(crate) fn tc_counters(&self) -> (KindCounters, KindCounters) {
        self.proc.tc_counters()
    }

    /// The counters as last added to the worker's totals.
    pub(crate) fn tc_published(&mut self) -> &mut (KindCounters, KindCounters) {
        &mut self.tc_published
    }

    /// The deadline the worker's timer heap holds for this call.
    pub(crate) fn armed(&mut self) -> &mut Option<Instant> {
        &mut self.armed
    }

    /// Whether the call is over (the worker then ends it).
    pub(crate) fn released(&self) -> bool {
        self.proc.released()
    }

    /// Releases the call for `reason` (the next step sends and publishes what that says).
    pub(crate) fn release(&mut self, now: Instant, reason: ReleaseReason) {
        self.proc.release(now, reason);
    }

    /// The call's state and counters.
    pub(crate) fn summary(&self, now: Instant) -> Summary {
        match &self.proc {
            Procedure::Private(p) => Summary::Private(self.private_summary(p, now)),
            Procedure::Group(g) => Summary::Group(self.group_summary(g, now)),
        }
    }

    /// Adds the jitter and loss of every leg that sent media to `h`.
    pub(crate) fn quality(&self, now: Instant, h: &mut QualityHistograms) {
        match &self.pair {
            Some(face) => face
                .quality(&self.rules, now)
                .iter()
                .for_each(|q| q.legs.iter().for_each(|l| h.observe(l))),
            None => self
                .rules
                .quality(now)
                .iter()
                .for_each(|q| q.streams.iter().for_each(|(_, l)| h.observe(l))),
        }
    }

    /// High availability: the control-plane mark and the packets received (an image is due
    /// when they moved).
    pub(crate) fn ha_marks(&self) -> (u64, u64) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let live = self.net.members.iter().flatten();
        let (received, sent) = self.proc.tc_counters();
        (
            (received.total(), sent.total()),
            self.rules.arbiter().snapshot().epoch,
            self.rules.members(),
            live.clone().filter(|m| m.media_seen).count(),
            live.clone().map(|m| m.counters.latches).sum::<u64>(),
            self.released(),
            self.rules.wraps(),
        )
            .hash(&mut h);
        match &self.proc {
            Procedure::Private(p) => p.marks().hash(&mut h),
            Procedure::Group(g) => g.marks().hash(&mut h),
        }
        (h.finish(), live.map(|m| m.counters.packets_in).sum())
    }

    /// High availability: the call's image.
    pub(crate) fn image(&self, now: Instant) -> HaUpdate {
        match &self.proc {
            Procedure::Private(p) => HaUpdate::Put(Box::new(self.private_image(p, now))),
            Procedure::Group(g) => HaUpdate::PutGroup(Box::new(self.group_image(g, now))),
        }
    }

    /// A one-to-one call's image, if this is one.
    pub(crate) fn private_image_now(&self, now: Instant) -> Option<super::super::CallImage> {
        match &self.proc {
            Procedure::Private(p) => Some(self.private_image(p, now)),
            Procedure::Group(_) => None,
        }
    }

    /// A group call's image, if this is one.
    pub(crate) fn group_image_now(&self, now: Instant) -> Option<super::super::GroupImage> {
        match &self.proc {
            Procedure::Group(g) => Some(self.group_image(g, now)),
            Procedure::Private(_) => None,
        }
    }

    /// Another relay has the call: stop it without a message (nothing is sent, no event is
    /// published; the arbiter forgets its grants, so the transmissions' SSRCs go back).
    pub(crate) fn abandon(&mut self) {
        self.drop_offload(Instant::now());
        match &mut self.proc {
            Procedure::Private(p) => p.call.arbiter().release(),
            Procedure::Group(g) => g.server.release(ReleaseReason::Shutdown),
        }
    }

    /// Every relay port the call holds.
    pub(crate) fn all_ports(&self) -> Vec<(usize, u16)> {
        let own = self.net.members.iter().flatten();
        let mut ports: Vec<(usize, u16)> = own.flat_map(|m| m.ports.iter().copied()).collect();
        if let Procedure::Private(p) = &self.proc {
            ports.extend(p.ports.iter().copied());
        }
        ports
    }

    /// Tears the call down: its sockets close, its ports (and a group's server SSRC) go back,
    /// and the plane forgets it. `false` when the teardown panicked.
    pub(crate) fn finish(mut self, plane: &Plane) -> bool {
        // Out of the kernel before the sockets close and the ports can be reused.
        self.drop_offload(Instant::now());
        let ports = self.all_ports();
        let CallRt {
            call_id,
            mut proc,
            net,
            ..
        } = self;
        // The sockets close before their ports go back.
        let clean = catch_unwind(AssertUnwindSafe(|| {
            drop(net);
            if let Procedure::Private(p) = &mut proc {
                p.bound.clear();
            }
        }))
        .is_ok();
        match proc {
            Procedure::Private(p) => plane.finished(&p.call, &ports),
            Procedure::Group(g) => {
                g.ssrcs.free(g.server_ssrc);
                plane.group_finished(&Arc::from(call_id.as_str()), &ports);
            }
        }
        clean
    }
}
