//! One call on its worker: the sans-IO [`Call`] (transmission control, timers, events), its
//! sockets, and its per-packet [`CallRules`]. Everything here is owned by the worker thread:
//! no lock, no atomic but the arbiter's word.

use super::super::plane::WorkerStats;
use super::super::ports::BoundPort;
use super::super::rules::{
    CallRules, ControlSetup, Ingress, LegSetup, RulesSetup, StreamSetup, Tally,
};
use super::super::stats::{DropReason, LegSnapshot};
use super::super::CallSummary;
use super::media::{
    read_control, Activity, ControlChannels, Media, Net, Role, Scratch, BATCHES_PER_WAKE,
};
use crate::control::call::{Call, CallState};
use crate::control::server::KindCounters;
use crate::control::server::TransmissionState;
use crate::control::Party;
use crate::sdp::MediaKind;
use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Instant;

/// Media packets from the receive-only party between steps of the call (so it can revoke).
const RECEIVER_MEDIA_STEP_EVERY: u64 = 4;

/// One call on a worker.
#[derive(Debug)]
pub(crate) struct CallRt {
    pub(crate) call: Call,
    /// Sockets bound while the call is offered (by relay port).
    bound: HashMap<u16, BoundPort>,
    pub(crate) media: Option<Media>,
    pub(crate) counters: [LegSnapshot; 2],
    activity: [Activity; 2],
    bye: bool,
    requested_keyframe: bool,
    /// The deadline the worker's timer heap holds for this call.
    pub(crate) armed: Option<Instant>,
    /// Relay ports to give back when the call ends, with their interface's pool.
    pub(crate) ports: Vec<(usize, u16)>,
    pub(crate) latch_after: u32,
    /// The call's transmission control counters as last added to the worker's totals: what
    /// moved since (on the socket path or in a step) is added at the next step.
    pub(crate) tc_published: (KindCounters, KindCounters),
    /// The worker's running totals (every count also goes there).
    totals: Arc<WorkerStats>,
}

/// What handling a socket asks of the worker.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wants {
    /// Step the call (control input, first media, BYE, callee media to revoke).
    pub(crate) step: bool,
}

impl CallRt {
    pub(crate) fn new(
        call: Call,
        bound: HashMap<u16, BoundPort>,
        ifaces: [usize; 2],
        latch_after: u32,
        totals: Arc<WorkerStats>,
    ) -> CallRt {
        let ports = call
            .streams()
            .iter()
            .flat_map(|s| {
                s.relay
                    .iter()
                    .zip(ifaces)
                    .filter_map(|(r, i)| r.map(|r| (i, r.rtp.port())))
            })
            .collect();
        CallRt {
            call,
            bound,
            media: None,
            counters: Default::default(),
            activity: Default::default(),
            bye: false,
            requested_keyframe: false,
            armed: None,
            ports,
            latch_after,
            tc_published: Default::default(),
            totals,
        }
    }

    /// Counts for party `i`'s leg, in the call and in the worker's totals.
    fn count(&mut self, i: usize, d: &LegSnapshot) {
        if let (Some(c), Some(t)) = (self.counters.get_mut(i), self.totals.legs.get(i)) {
            c.add(d);
            t.add(d);
        }
    }

    fn count_out(&mut self, i: usize, sent: super::super::io::Sent) {
        let mut d = LegSnapshot::default();
        d.add_out(sent.packets, sent.bytes);
        self.count(i, &d);
    }

    /// Builds the media plane once the call is established: rules from the negotiated streams,
    /// the bound sockets wrapped for batched I/O. Sockets of streams nobody uses are closed.
    pub(crate) fn start_media(&mut self) -> io::Result<&Media> {
        self.start_media_from(None)
    }

    /// [`Self::start_media`] with the rules in the state of `snapshot` (a call taken over from
    /// another relay), or fresh.
    pub(crate) fn start_media_from(
        &mut self,
        snapshot: Option<&super::super::rules::RulesSnapshot>,
    ) -> io::Result<&Media> {
        let (setup, plan) = self.rules_setup();
        let rules = match snapshot {
            Some(s) => CallRules::restore(&setup, s),
            None => CallRules::new(&setup),
        }
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut media = Media {
            rules,
            net: Net::default(),
        };
        let net = &mut media.net;
        for (si, ports) in plan.streams.iter().enumerate() {
            let mut rtp = [0usize; 2];
            let mut rtcp = [None, None];
            for party in [Party::Caller, Party::Callee] {
                let i = party.index();
                let b = self
                    .bound
                    .remove(&ports[i])
                    .ok_or_else(|| io::Error::other("a relay port lost its socket"))?;
                let ingress = |rtcp_socket| Ingress {
                    stream: si,
                    party,
                    rtcp_socket,
                };
                rtp[i] = net.push(b.rtp, Role::Media(ingress(false)))?;
                if let Some(s) = b.rtcp {
                    rtcp[i] = Some(net.push(s, Role::Media(ingress(true)))?);
                }
            }
            net.rtp.push(rtp);
            net.rtcp.push(rtcp);
        }
        for party in [Party::Caller, Party::Callee] {
            let Some(port) = plan.control[party.index()] else {
                continue;
            };
            if let Some(b) = self.bound.remove(&port) {
                net.control[party.index()] = Some(net.push(b.rtp, Role::Control(party))?);
            }
        }
        self.bound.clear(); // sockets of streams nobody uses
        Ok(self.media.insert(media))
    }

    /// The rules' setup and which relay port serves which stream and party.
    fn rules_setup(&self) -> (RulesSetup, Plan) {
        let call = &self.call;
        let ids = call.identities();
        let tx = call.kind().transmitter();
        let tx_has_control = call
            .streams()
            .iter()
            .any(|s| s.kind == MediaKind::Control && s.relay[tx.index()].is_some());
        let mut plan = Plan::default();
        let mut streams = Vec::new();
        let mut control: [Option<ControlSetup>; 2] = [None, None];
        for s in call.streams() {
            if s.kind == MediaKind::Control {
                for party in [Party::Caller, Party::Callee] {
                    let i = party.index();
                    if let (Some(relay), Some(remote)) = (s.relay[i], s.remote_rtp[i]) {
                        plan.control[i] = Some(relay.rtp.port());
                        control[i] = Some(ControlSetup {
                            remote: Some(remote),
                            key: call.tc_key(party).cloned(),
                        });
                    }
                }
                continue;
            }
            let (Some(a), Some(b)) = (s.relay[0], s.relay[1]) else {
                continue;
            };
            if !s.active() {
                continue;
            }
            let leg = |i: usize, mux: bool| LegSetup {
                remote_rtp: s.remote_rtp[i],
                remote_rtcp: s.remote_rtcp[i],
                announced: s.announced_ssrcs[i].clone(),
                separate_rtcp: !mux,
                srtp_in: s.keys[i].as_ref().map(|k| k.inbound.clone()),
                srtp_out: s.keys[i].as_ref().map(|k| k.outbound.clone()),
            };
            let mut transmitter_ssrcs = s.announced_ssrcs[tx.index()].clone();
            if tx_has_control || !transmitter_ssrcs.is_empty() {
                match s.kind {
                    MediaKind::Video => transmitter_ssrcs.push(ids.video_ssrc.get()),
                    MediaKind::Audio => transmitter_ssrcs.push(ids.audio_ssrc.get()),
                    _ => {}
                }
            }
            plan.streams.push([a.rtp.port(), b.rtp.port()]);
            streams.push(StreamSetup {
                kind: s.kind.clone(),
                encrypted: s.proto.to_ascii_uppercase().contains("SAVP"),
                clock_rate: s.clock_rate.unwrap_or(match s.kind {
                    MediaKind::Video => 90_000, // every video payload format's clock
                    _ => 0,
                }),
                legs: [leg(0, a.muxed()), leg(1, b.muxed())],
                transmitter_ssrcs,
            });
        }
        let setup = RulesSetup {
            arbiter: call.arbiter().clone(),
            security: call.media_security(),
            transmitter: tx,
            streams,
            control,
            server_ssrc: ids.server_ssrc.get(),
            video_ssrc: ids.video_ssrc.get(),
            latch_after: self.latch_after,
        };
        (setup, plan)
    }

    /// The call's image for high availability (after a step: nothing queued).
    pub(crate) fn image(&self, now: Instant) -> super::super::CallImage {
        let (call, secrets) = self.call.snapshot(now);
        super::super::CallImage {
            call,
            secrets,
            rules: self.media.as_ref().map(|m| m.rules.snapshot()),
        }
    }

    /// What changes when the call's control plane does (state, grant, transmission control
    /// messages, media started, latches), hashed; and the packets received so far.
    pub(crate) fn ha_marks(&self) -> (u64, u64) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let st = self.call.tc_stats();
        (
            self.call.state(),
            self.call.arbiter().snapshot().epoch,
            st.sent.total(),
            st.received.total(),
            self.call.server().media_started(),
            self.counters.iter().map(|c| c.latches).sum::<u64>(),
            self.media.as_ref().map(|m| m.rules.wraps()),
        )
            .hash(&mut h);
        (h.finish(), self.counters.iter().map(|c| c.packets_in).sum())
    }

    /// The sockets to register with the poller, by index.
    pub(crate) fn sockets(&self) -> impl Iterator<Item = (usize, &std::net::UdpSocket)> {
        self.media
            .iter()
            .flat_map(|m| m.net.sockets.iter().map(|s| s.sock.socket()).enumerate())
    }

    /// Socket `index` is readable: receive and forward (media) or admit and hand to the call
    /// (control). Counters and activity are booked here.
    pub(crate) fn on_readable(&mut self, index: usize, now: Instant, io: &mut Scratch) -> Wants {
        #[cfg(test)]
        if self.call.id().starts_with("test-panic") {
            panic!(
                "test hook: a bug while handling a packet of call {}",
                self.call.id()
            );
        }
        let role = self
            .media
            .as_ref()
            .and_then(|m| m.net.sockets.get(index))
            .map(|s| s.role);
        match role {
            None => Wants::default(),
            Some(Role::Media(at)) => {
                let mut wants = Wants::default();
                for _ in 0..BATCHES_PER_WAKE {
                    let Some(media) = self.media.as_mut() else {
                        break;
                    };
                    let Some((t, drained)) = media.pump(index, at, now, io) else {
                        break;
                    };
                    wants.step |= self.book(at.party, now, &t);
                    if drained {
                        break;
                    }
                }
                wants
            }
            Some(Role::Control(party)) => Wants {
                step: read_control(self, index, party, now, io),
            },
        }
    }

    /// Books a batch from `party`: counters, and whether the call should be stepped.
    fn book(&mut self, party: Party, now: Instant, t: &Tally) -> bool {
        let mut d = LegSnapshot::default();
        d.add_in(t.in_packets, t.in_bytes);
        d.add_drops(&t.drops);
        if t.latched {
            d.latches = 1;
            tracing::info!(call = %self.call.id(), party = %party, "leg latched to a new source");
        }
        self.count(party.index(), &d);
        let mut d = LegSnapshot::default();
        d.add_out(t.out_packets, t.out_bytes);
        self.count(party.peer().index(), &d);
        let mut step = false;
        if t.media > 0 {
            let a = &mut self.activity[party.index()];
            let before = a.total;
            a.total += t.media;
            a.since_step += t.media;
            a.last = Some(now);
            step = if party == self.call.kind().transmitter() {
                before == 0
            } else {
                before / RECEIVER_MEDIA_STEP_EVERY != a.total / RECEIVER_MEDIA_STEP_EVERY
            };
        }
        if t.bye && party == self.call.kind().transmitter() {
            self.bye = true;
            step = true;
        }
        // A rollover counter moved: a step writes the call's image at once (HA).
        step || t.wrapped
    }

    /// Feeds the call the media activity seen since its last step, and a caller BYE.
    fn feed_activity(&mut self, now: Instant) {
        for party in [Party::Caller, Party::Callee] {
            let a = &mut self.activity[party.index()];
            if a.since_step > 0 {
                let n = a.since_step.min(u64::from(u32::MAX)) as u32;
                a.since_step = 0;
                let at = a.last.unwrap_or(now).min(now);
                self.call.handle_media(at, party, n);
            }
        }
        if std::mem::take(&mut self.bye) {
            self.call
                .handle_rtcp_bye(now, self.call.kind().transmitter());
        }
    }

    /// Runs the call: activity, due timers; then sends what it polled out (SRTCP-protected
    /// where the channel has a key) and asks the caller for a keyframe once granted. `tx` is the
    /// worker's reusable transmit buffer: no message is cloned.
    pub(crate) fn step(&mut self, now: Instant, tx: &mut Vec<u8>) {
        self.feed_activity(now);
        if self.call.poll_timeout().is_some_and(|t| t <= now) {
            self.call.handle_timeout(now);
        }
        while let Some(to) = self.call.poll_transmit(tx) {
            let Some(media) = self.media.as_mut() else {
                continue;
            };
            let len = tx.len();
            tx.resize(len + 64, 0); // room for the SRTCP trailer
            let sealed = media.rules.seal_control(to, tx, len);
            let sock = media.net.control[to.index()].and_then(|i| media.net.sockets.get(i));
            match (sealed, sock, tx.get(..)) {
                (Some(Ok((len, dest))), Some(s), Some(buf)) => {
                    let sent = s.sock.send(dest, buf.get(..len).unwrap_or_default(), len);
                    self.count_out(to.index(), sent);
                }
                (Some(Err(e)), ..) => {
                    tracing::warn!(call = %self.call.id(), error = %e, "cannot protect a control message");
                }
                _ => {}
            }
        }
        if !self.requested_keyframe && self.call.transmission_state() == TransmissionState::Granted
        {
            self.requested_keyframe = true;
            self.request_keyframe(now);
        }
    }

    /// Asks the transmitter for a keyframe (PLI) where the relay can sign RTCP.
    fn request_keyframe(&mut self, now: Instant) {
        let Some(media) = self.media.as_mut() else {
            return;
        };
        let mut buf = [0u8; 64];
        let Some((si, len)) = media.rules.keyframe_request(now, &mut buf) else {
            return;
        };
        let tx = media.rules.transmitter();
        // The transmitter's leg's RTCP socket (or its RTP socket with rtcp-mux), as if the
        // request came from the receiver's side.
        let at = Ingress {
            stream: si,
            party: tx.peer(),
            rtcp_socket: false,
        };
        if let (Some(s), Some(dest), Some(b)) = (
            media.net.peer_socket(at, true),
            media.rules.rtcp_destination(si, tx),
            buf.get(..len),
        ) {
            let sent = s.send(dest, b, len);
            self.count_out(tx.index(), sent);
        }
    }

    /// The media quality of every stream.
    pub(crate) fn quality(&self, now: Instant) -> Vec<super::super::rules::StreamQuality> {
        self.media
            .as_ref()
            .map(|m| m.rules.quality(now))
            .unwrap_or_default()
    }

    pub(crate) fn released(&self) -> bool {
        self.call.state() == CallState::Released
    }

    /// The call's state and counters.
    pub(crate) fn summary(&self, now: Instant) -> CallSummary {
        let call = &self.call;
        let times = call.times();
        CallSummary {
            call_id: call.call_id().clone(),
            kind: call.kind(),
            state: call.state(),
            transmission: call.transmission_state(),
            caller_id: call.caller_id().to_owned(),
            callee_id: call.callee_id().to_owned(),
            media_security: call.media_security(),
            commencement_mode: call.commencement_mode(),
            deliver_to: call.deliver_to().to_vec(),
            release_reason: call.release_reason(),
            duration: times
                .released
                .unwrap_or(now)
                .saturating_duration_since(times.created),
            caller: self.counters[0],
            callee: self.counters[1],
            quality: self.quality(now),
            tc: *call.tc_stats(),
        }
    }
}

impl ControlChannels<Party> for CallRt {
    fn control_socket(&self, index: usize) -> Option<&std::net::UdpSocket> {
        let s = self.media.as_ref()?.net.sockets.get(index)?;
        Some(s.sock.socket())
    }

    fn admit_control(
        &mut self,
        party: Party,
        from: std::net::SocketAddr,
        now: Instant,
        buf: &mut [u8],
    ) -> Result<usize, DropReason> {
        match self.media.as_mut() {
            Some(m) => m.rules.admit_control(party, from, now, buf),
            None => Err(DropReason::WrongSource), // no media plane yet: nothing is expected
        }
    }

    fn count_control(&mut self, party: Party, d: &LegSnapshot) {
        self.count(party.index(), d);
    }

    fn handle_control(&mut self, now: Instant, party: Party, msg: &[u8]) {
        self.feed_activity(now);
        self.call.handle_control(now, party, msg);
    }
}

/// Which relay port serves which stream and party.
#[derive(Debug, Default)]
struct Plan {
    streams: Vec<[u16; 2]>,
    control: [Option<u16>; 2],
}
