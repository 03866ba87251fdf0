//! The one-to-one call procedure, sans-IO: video push (the seed, steps 1–11 and release; see
//! `docs/design.md` in the repository) and its mirror, video pull, in which the callee
//! transmits. Both run on the [`super::server::TransmissionControlServer`] group video calls run
//! on, as its private procedure.
//!
//! | seed step | here |
//! |---|---|
//! | 1 private call request with video push indication | [`CallTable::create_call`] with [`CreateCall`] |
//! | 2 caller may push, callee may receive a push | [`super::policy::AuthorizationPolicy`]; refusal = [`SetupError::NotAuthorized`] naming the party |
//! | 3 progress indication | [`CallEventKind::Progress`] |
//! | 4 media subset, commencement mode, designated UE | [`CallOffer`]: SDP for the callee, mode, `deliver_to` |
//! | 6 callee accepts | [`CallTable::accept_call`] with the callee's SDP answer (or [`CallTable::reject_call`]) |
//! | 7 established | [`CallAnswer`] (SDP for the caller), [`CallEventKind::Established`] |
//! | 9–10 Granted / Media Transmission Notification | the call's [`TransmissionControlServer`] |
//! | NOTE 2 release on completion | [`CallEventKind::TransmissionEnded`] then [`CallEventKind::Released`] |
//!
//! Relay ports come from a [`PortAllocator`] the I/O layer implements; randomness (SSRCs, call
//! IDs, per-leg SRTP keys) from an [`Entropy`] source. Neither the clock nor a socket is touched.
//!
//! Media offered to the callee are the caller's, less the kinds [`CallConfig`] does not offer;
//! a stream not offered goes to the callee with port 0 (RFC 3264 §8.2), so the callee's answer
//! lines up with the caller's offer and the caller's answer is the callee's, rewritten.

mod alloc;
mod error;
pub mod snapshot;
mod table;
mod types;

pub use alloc::{Entropy, PortAllocator, RelayPort, SeededEntropy};
pub use error::SetupError;
pub use table::{CallTable, MAX_CALL_ID_LEN};
pub use types::{
    AnswerCall, CallAnswer, CallConfig, CallEvent, CallEventKind, CallOffer, CallState, CallTimes,
    CreateCall, Identities, LegKeys, MediaStream,
};

use crate::control::arbiter::Arbiter;
use crate::control::policy::AuthorizationPolicy;
use crate::control::registry::{UeRegistry, MAX_ID_LEN};
use crate::control::server::{
    MemberSetup, Procedure, ProcedureSnapshot, ServerIdentity, TransmissionState,
};
use crate::control::server::{TcConfig, TcEvent, TcStats, TransmissionControlServer};
use crate::control::timer::{Timer, TimerTable};
use crate::control::{CallKind, CommencementMode, MediaSecurity, Party, ReleaseReason};
use crate::ids::{CallId, Ssrc};
use crate::keys::{MasterKey, SrtpSuite};
use crate::sdp::{MediaKind, MediaRewrite, Rewrite, SdpError, SessionDescription};
use snapshot::{CallSecrets, CallSnapshot, PendingKeysSnapshot, RestoreError, StreamSecrets};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use table::{fresh_key, is_rtp_media, valid_user_id};
use types::PendingKeys;

/// One video push call. Drive it with the `handle_*` methods and drain it with the `poll_*`
/// methods in the order of the [module docs](super).
#[derive(Debug)]
pub struct Call {
    id: CallId,
    kind: CallKind,
    caller_id: String,
    callee_id: String,
    state: CallState,
    commencement_mode: CommencementMode,
    media_security: MediaSecurity,
    deliver_to: Vec<String>,
    streams: Vec<MediaStream>,
    tc_keys: [Option<MasterKey>; 2],
    ids: Identities,
    server: TransmissionControlServer,
    timers: TimerTable,
    events: VecDeque<CallEvent>,
    /// The server's own events as they came, kept only while a transmission log asks for
    /// them ([`Call::tap_tc_events`]).
    tc_tap: Option<VecDeque<TcEvent>>,
    release_reason: Option<ReleaseReason>,
    times: CallTimes,
    /// The SDPs handed out: the offer for the callee, the answer for the caller.
    sdp: [Option<Arc<str>>; 2],
}

impl Call {
    /// The call ID.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The call ID, typed.
    pub fn call_id(&self) -> &CallId {
        &self.id
    }

    /// Push or pull: which party transmits.
    pub fn kind(&self) -> CallKind {
        self.kind
    }

    /// The caller's MCVideo ID.
    pub fn caller_id(&self) -> &str {
        &self.caller_id
    }

    /// The callee's MCVideo ID.
    pub fn callee_id(&self) -> &str {
        &self.callee_id
    }

    /// The call's state.
    pub fn state(&self) -> CallState {
        self.state
    }

    /// The chosen commencement mode.
    pub fn commencement_mode(&self) -> CommencementMode {
        self.commencement_mode
    }

    /// The media security mode.
    pub fn media_security(&self) -> MediaSecurity {
        self.media_security
    }

    /// The UE(s) the call was delivered to.
    pub fn deliver_to(&self) -> &[String] {
        &self.deliver_to
    }

    /// The media streams, in the order of the caller's offer.
    pub fn streams(&self) -> &[MediaStream] {
        &self.streams
    }

    /// The SRTCP key of `party`'s transmission control channel, if the controlling server gave
    /// one.
    pub fn tc_key(&self, party: Party) -> Option<&MasterKey> {
        self.tc_keys.get(party.index()).and_then(Option::as_ref)
    }

    /// The arbiter the forwarding side checks.
    pub fn arbiter(&self) -> &Arc<Arbiter> {
        self.server.arbiter()
    }

    /// The transmission control server (read-only): the same server a group call runs, with
    /// the caller in slot 0 and the callee in slot 1 ([`Party::slot`]).
    pub fn server(&self) -> &TransmissionControlServer {
        &self.server
    }

    /// The parties and the transmission's SSRCs.
    pub fn identities(&self) -> &Identities {
        &self.ids
    }

    /// Where the transmission stands.
    pub fn transmission_state(&self) -> TransmissionState {
        match self.state {
            CallState::Released => TransmissionState::Released,
            _ => self.server.transmission_state(),
        }
    }

    /// Transmission control counters.
    pub fn tc_stats(&self) -> &TcStats {
        self.server.stats()
    }

    /// Creation, establishment and release times.
    pub fn times(&self) -> CallTimes {
        self.times
    }

    /// Why the call was released.
    pub fn release_reason(&self) -> Option<ReleaseReason> {
        self.release_reason
    }

    /// The SDP the relay handed out for `party`: the offer for the callee, the answer for the
    /// caller (once the call is established).
    pub fn sdp_for(&self, party: Party) -> Option<&str> {
        self.sdp
            .get(party.peer().index())
            .and_then(Option::as_deref)
    }

    /// The call's state at `now` for a relay that takes it over, and apart from it the key
    /// material and SDPs (to be sealed). Take it after draining `poll_transmit` and
    /// `poll_event` (queued messages and events are not in it). See
    /// [`snapshot`].
    pub fn snapshot(&self, now: Instant) -> (CallSnapshot, CallSecrets) {
        let streams = self.streams.iter().map(MediaStream::without_keys).collect();
        let secrets = CallSecrets {
            tc_keys: self.tc_keys.clone(),
            sdp: self.sdp.clone().map(|s| s.map(|s| s.to_string())),
            streams: self
                .streams
                .iter()
                .filter(|s| s.keys.iter().any(Option::is_some) || s.pending_keys.is_some())
                .map(|s| StreamSecrets {
                    index: s.index,
                    keys: s.keys.clone(),
                    pending: s.pending_keys.as_ref().map(|p| PendingKeysSnapshot {
                        tag: p.tag,
                        caller_inbound: p.caller_inbound.clone(),
                        callee_outbound: p.callee_outbound.clone(),
                    }),
                })
                .collect(),
        };
        let ago = |t: Instant| now.saturating_duration_since(t).as_millis() as u64;
        let snap = CallSnapshot {
            call_id: self.id.to_string(),
            kind: self.kind,
            caller_id: self.caller_id.clone(),
            callee_id: self.callee_id.clone(),
            state: self.state,
            commencement_mode: self.commencement_mode,
            media_security: self.media_security,
            deliver_to: self.deliver_to.clone(),
            streams,
            tc: self.server.snapshot(now),
            timers: self.timers.remaining_ms(now),
            release_reason: self.release_reason,
            created_ms_ago: ago(self.times.created),
            established_ms_ago: self.times.established.map(ago),
        };
        (snap, secrets)
    }

    /// The call of [`snapshot`](Self::snapshot) `snap` with its `secrets`, as of `now`: every
    /// timer fires as long after `now` as it had left at the snapshot, and the arbiter is in
    /// the snapshot's state (a granted caller's media passes at once). When the snapshot was
    /// taken a while ago (read back from a store), pass the `now` the snapshot was taken at on
    /// this host's clock (`now` less the record's age). No event is queued.
    pub fn restore(
        snap: CallSnapshot,
        secrets: CallSecrets,
        now: Instant,
    ) -> Result<Call, RestoreError> {
        if !CallId::is_valid(&snap.call_id) {
            return Err(RestoreError::Invalid("call ID"));
        }
        if !valid_user_id(&snap.caller_id) || !valid_user_id(&snap.callee_id) {
            return Err(RestoreError::Invalid("MCVideo ID"));
        }
        let ProcedureSnapshot::Private {
            transmitter,
            audio_ssrc,
            video_ssrc,
        } = snap.tc.procedure
        else {
            return Err(RestoreError::Invalid("not a private call's server"));
        };
        if usize::from(transmitter) != snap.kind.transmitter().slot().index() {
            return Err(RestoreError::Invalid(
                "transmitter does not match the call kind",
            ));
        }
        let ids = Identities {
            caller_id: snap.caller_id.clone(),
            callee_id: snap.callee_id.clone(),
            audio_ssrc: Ssrc(audio_ssrc),
            video_ssrc: Ssrc(video_ssrc),
            server_ssrc: Ssrc(snap.tc.server_ssrc),
        };
        let mut streams = snap.streams;
        for k in secrets.streams {
            let s =
                streams
                    .iter_mut()
                    .find(|s| s.index == k.index)
                    .ok_or(RestoreError::Invalid(
                        "keys of a stream the call does not have",
                    ))?;
            s.keys = k.keys;
            s.pending_keys = k.pending.map(|p| PendingKeys {
                tag: p.tag,
                caller_inbound: p.caller_inbound,
                callee_outbound: p.callee_outbound,
            });
        }
        if snap.media_security == MediaSecurity::PerLeg
            && snap.state == CallState::Established
            && streams
                .iter()
                .any(|s| s.active() && is_rtp_media(&s.kind) && s.keys.iter().any(Option::is_none))
        {
            return Err(RestoreError::Invalid("a per_leg stream without its keys"));
        }
        let before = |ms: u64| super::timer::ms_before(now, ms);
        Ok(Call {
            id: snap.call_id.into(),
            kind: snap.kind,
            caller_id: snap.caller_id,
            callee_id: snap.callee_id,
            state: snap.state,
            commencement_mode: snap.commencement_mode,
            media_security: snap.media_security,
            deliver_to: snap.deliver_to,
            streams,
            tc_keys: secrets.tc_keys,
            ids,
            server: TransmissionControlServer::restore(&snap.tc, now, None),
            timers: TimerTable::from_remaining_ms(now, &snap.timers),
            events: VecDeque::new(),
            tc_tap: None,
            release_reason: snap.release_reason,
            times: CallTimes {
                created: before(snap.created_ms_ago),
                established: snap.established_ms_ago.map(before),
                released: None,
            },
            sdp: secrets.sdp.map(|s| s.map(Arc::from)),
        })
    }

    /// Queues an event on the call (e.g. [`CallEventKind::Adopted`] by the engine that
    /// restored it).
    pub fn push_event(&mut self, kind: CallEventKind) {
        self.push(kind);
    }

    /// Every relay port the call holds (to give back to the pool once it is released).
    pub fn relay_ports(&self) -> impl Iterator<Item = RelayPort> + '_ {
        self.streams
            .iter()
            .flat_map(|s| s.relay.iter().flatten().copied())
    }

    /// Seed steps 6–10: the callee accepted with `answer`. Builds the caller's answer,
    /// establishes the call and grants the caller; `entropy` makes the relay's per_leg key
    /// toward the caller. On error the call stays offered.
    pub fn accept(
        &mut self,
        now: Instant,
        answer: AnswerCall,
        entropy: &mut dyn Entropy,
    ) -> Result<CallAnswer, SetupError> {
        let call_id: &str = &self.id.clone();
        if self.state != CallState::Offered {
            return Err(SetupError::WrongState {
                call_id: call_id.to_owned(),
                state: self.state,
                operation: "answer",
            });
        }
        let fresh: Vec<(usize, MasterKey)> = self
            .streams
            .iter()
            .filter_map(|s| {
                let k = s.pending_keys.as_ref()?;
                Some((s.index, fresh_key(entropy, k.caller_inbound.suite)))
            })
            .collect();
        let call = self;
        let sdp =
            SessionDescription::parse(&answer.callee_sdp).map_err(|error| SetupError::BadSdp {
                party: Party::Callee,
                error,
            })?;
        if sdp.media().len() != call.streams.len() {
            return Err(SetupError::BadSdp {
                party: Party::Callee,
                error: SdpError {
                    line: 0,
                    content: format!(
                        "{} media sections, the offer had {}",
                        sdp.media().len(),
                        call.streams.len()
                    ),
                    reason: "an answer must have one m= line per offered m= line (RFC 3264 §6)",
                },
            });
        }
        let mut streams = call.streams.clone();
        let mut rewrites = Vec::with_capacity(streams.len());
        for (s, m) in streams.iter_mut().zip(sdp.media()) {
            rewrites.push(answer_stream(s, m, &fresh)?);
        }
        let caller_ip = streams
            .iter()
            .find_map(|s| s.relay[Party::Caller.index()])
            .map(|p| p.rtp.ip())
            .ok_or_else(|| callee_no_media("no stream is usable".to_owned()))?;
        let sdp_answer = sdp
            .rewrite(&Rewrite {
                connection: caller_ip,
                media: rewrites,
            })
            .map_err(|error| SetupError::BadSdp {
                party: Party::Callee,
                error,
            })?;
        let callee_control = streams
            .iter()
            .zip(sdp.media())
            .any(|(s, m)| s.kind == MediaKind::Control && s.offered && m.port != 0);
        let caller_control = streams
            .iter()
            .any(|s| s.kind == MediaKind::Control && s.offered && s.relay[0].is_some());
        call.streams = streams;
        call.sdp[1] = Some(sdp_answer.as_str().into());
        call.tc_keys[Party::Callee.index()] = answer.callee_tc_key;
        call.server
            .set_control(Party::Caller.slot(), caller_control);
        call.server
            .set_control(Party::Callee.slot(), callee_control);
        call.state = CallState::Established;
        call.times.established = Some(now);
        call.timers.stop(Timer::OfferTimeout);
        call.push(CallEventKind::Established);
        call.server.start(now);
        call.sync(now);
        Ok(CallAnswer {
            call_id: call_id.into(),
            sdp_answer,
        })
    }

    /// The callee declined (while offered): the call is released with reason `rejected`.
    pub fn reject(&mut self, now: Instant) -> Result<(), SetupError> {
        if self.state != CallState::Offered {
            return Err(SetupError::WrongState {
                call_id: self.id.to_string(),
                state: self.state,
                operation: "reject",
            });
        }
        self.release(now, ReleaseReason::Rejected);
        Ok(())
    }

    /// A datagram arrived on `from`'s transmission control channel (SRTCP already removed).
    pub fn handle_control(&mut self, now: Instant, from: Party, datagram: &[u8]) {
        if self.state != CallState::Established {
            return;
        }
        self.server.handle_datagram(now, from.slot(), datagram);
        self.sync(now);
    }

    /// `packets` RTP packets arrived from `from`.
    pub fn handle_media(&mut self, now: Instant, from: Party, packets: u32) {
        if self.state != CallState::Established {
            return;
        }
        self.server.handle_media(now, from.slot(), packets);
        self.sync(now);
    }

    /// An RTCP BYE arrived from `from`.
    pub fn handle_rtcp_bye(&mut self, now: Instant, from: Party) {
        if self.state != CallState::Established {
            return;
        }
        self.server.handle_rtcp_bye(now, from.slot());
        self.sync(now);
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(t) = self.timers.pop_expired(now) {
            if t == Timer::OfferTimeout && self.state == CallState::Offered {
                self.release(now, ReleaseReason::NoAnswer);
            }
        }
        if self.state == CallState::Established {
            self.server.handle_timeout(now);
            self.sync(now);
        }
    }

    /// Releases the call (idempotent). Events follow: `TransmissionEnded` if a transmission was
    /// under way, then `Released`.
    pub fn release(&mut self, now: Instant, reason: ReleaseReason) {
        if self.state == CallState::Released {
            return;
        }
        self.server.release(reason);
        self.sync(now);
        self.finish_release(now, reason);
    }

    fn finish_release(&mut self, now: Instant, reason: ReleaseReason) {
        if self.state == CallState::Released {
            return;
        }
        self.server.arbiter().release();
        self.state = CallState::Released;
        self.release_reason = Some(reason);
        self.times.released = Some(now);
        self.timers.stop_all();
        self.push(CallEventKind::Released { reason });
    }

    /// Moves server events into call events and applies their consequences.
    fn sync(&mut self, now: Instant) {
        while let Some(ev) = self.server.poll_event() {
            if let Some(tap) = &mut self.tc_tap {
                tap.push_back(ev);
            }
            match ev {
                TcEvent::Granted {
                    audio_ssrc,
                    video_ssrc,
                    ..
                } => self.push(CallEventKind::TransmissionGranted {
                    audio_ssrc,
                    video_ssrc,
                }),
                TcEvent::MediaStarted { .. } => self.push(CallEventKind::MediaStarted),
                // The transmission's end is the call's: reported with the release reason.
                TcEvent::Released { reason } => {
                    if self.state == CallState::Established {
                        self.push(CallEventKind::TransmissionEnded { reason });
                    }
                    self.finish_release(now, reason);
                }
                _ => {}
            }
        }
    }

    fn push(&mut self, kind: CallEventKind) {
        self.events.push_back(CallEvent {
            call_id: self.id.clone(),
            kind,
        });
    }

    /// The next transmission control message: written into `buf`; returns its destination.
    #[must_use]
    pub fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> Option<Party> {
        while let Some(slot) = self.server.poll_transmit(buf) {
            if let Some(party) = Party::of_slot(slot) {
                return Some(party);
            }
        }
        None
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<CallEvent> {
        self.events.pop_front()
    }

    /// Keeps the transmission control server's own events (requests rejected, grants, media,
    /// ends, with their causes) for [`Call::poll_tc_event`], from now on: what a transmission
    /// log records. Off by default: nothing is kept.
    pub fn tap_tc_events(&mut self) {
        self.tc_tap.get_or_insert_with(VecDeque::new);
    }

    /// The next transmission control server event kept since [`Call::tap_tc_events`].
    #[must_use]
    pub fn poll_tc_event(&mut self) -> Option<TcEvent> {
        self.tc_tap.as_mut()?.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.timers.next_timeout(), self.server.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The callee's answer `m` to the offered stream `s`: the callee leg's addresses, SSRCs and
/// keys are set on `s`; the result is what the caller's answer says of the stream.
fn answer_stream(
    s: &mut MediaStream,
    m: &crate::sdp::Media,
    fresh: &[(usize, MasterKey)],
) -> Result<MediaRewrite, SetupError> {
    if m.kind != s.kind {
        return Err(callee_no_media(format!(
            "m= line {} answers a different media type than was offered",
            m.line
        )));
    }
    let accepted = s.offered && m.port != 0;
    if !accepted {
        // Callee rejected it (or it was never offered): release the callee leg's port
        // later with the call; nothing flows on it.
        if s.kind == MediaKind::Video {
            return Err(callee_no_media(format!(
                "m= line {}: the callee rejected the video stream",
                m.line
            )));
        }
        if s.kind != MediaKind::Control {
            s.offered = false;
            return Ok(MediaRewrite::Reject);
        }
    }
    if accepted && m.rtp_addr().is_none() {
        return Err(callee_no_media(format!(
            "m= line {} has no usable address to send to",
            m.line
        )));
    }
    if let (true, Some(r), Some(a)) = (accepted, s.relay[Party::Callee.index()], m.rtp_addr()) {
        if r.rtp.is_ipv4() != a.is_ipv4() {
            return Err(callee_no_media(format!(
                "m= line {}: the callee's address is {} but its leg was offered on an {} interface of the relay (name the callee's interface when creating the call)",
                m.line,
                if a.is_ipv4() { "IPv4" } else { "IPv6" },
                if r.rtp.is_ipv4() { "IPv4" } else { "IPv6" }
            )));
        }
    }
    s.remote_rtp[Party::Callee.index()] = m.rtp_addr();
    s.remote_rtcp[Party::Callee.index()] = m.rtcp_addr();
    s.announced_ssrcs[Party::Callee.index()] = m.ssrcs.clone();
    let crypto = answer_keys(s, m, fresh)?;
    Ok(match s.relay[Party::Caller.index()] {
        Some(relay) => MediaRewrite::Keep {
            port: relay.rtp.port(),
            rtcp_port: (!relay.muxed()).then(|| relay.rtcp.port()),
            crypto,
        },
        None => MediaRewrite::Reject,
    })
}

/// The callee's answer has no media the relay can take, for `reason`.
fn callee_no_media(reason: String) -> SetupError {
    SetupError::NoAcceptableMedia {
        party: Party::Callee,
        reason,
    }
}

/// In per_leg mode, the stream's keys from the callee's answer `m` and the relay's key toward
/// the caller prepared in `fresh` (set on `s`), and the `a=crypto` value of the caller's
/// answer; `None` when the stream has no per-leg keys pending.
fn answer_keys(
    s: &mut MediaStream,
    m: &crate::sdp::Media,
    fresh: &[(usize, MasterKey)],
) -> Result<Option<Vec<String>>, SetupError> {
    let Some(p) = s.pending_keys.take() else {
        return Ok(None);
    };
    let suite = p.caller_inbound.suite;
    let Some(c) = m.crypto.iter().find(|c| c.suite == suite.name()) else {
        return Err(callee_no_media(format!(
            "m= line {}: per_leg mode needs an a=crypto line with {} in the answer",
            m.line,
            suite.name()
        )));
    };
    let callee_inbound = MasterKey::from_base64(suite, &c.key_b64)
        .map_err(|e| callee_no_media(format!("m= line {}: a=crypto: {e}", m.line)))?;
    let caller_outbound = fresh
        .iter()
        .find(|(i, _)| *i == s.index)
        .map(|(_, k)| k.clone())
        .ok_or_else(|| callee_no_media("internal: no key prepared".to_owned()))?;
    let crypto = vec![caller_outbound.sdes_attribute(p.tag)];
    s.keys = [
        Some(LegKeys {
            inbound: p.caller_inbound,
            outbound: caller_outbound,
        }),
        Some(LegKeys {
            inbound: callee_inbound,
            outbound: p.callee_outbound,
        }),
    ];
    Ok(Some(crypto))
}
