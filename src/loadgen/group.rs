//! `loadgen --group-receivers N`: group video calls, each with 1 transmitter and N receivers.
//!
//! * **Relay**: per group, one [`Engine::create_group_call`] with the transmitter first (a
//!   video stream with `a=rtcp-mux` and its `a=ssrc`, and an MCVideo control channel) and N
//!   receive-only members (a video stream, no control channel: automatic reception). The
//!   transmitter sends a Transmission Request on its control socket and waits for Granted; it
//!   sends with the video SSRC Granted names. `end_to_end`: one group key every member shares
//!   (the relay passes SRTP through); `per_leg`: the transmitter's own key, and each receiver
//!   decrypts with the key the relay answered it.
//! * **Floor**: the same transmitter and receiver sockets with no relay: the transmitter sends
//!   each packet to its N receivers itself, one `sendmsg` per receiver (SRTP once, one group
//!   key, in both modes).
//!
//! Sending, receiving and the figures are [`super::traffic`]'s: packets carry the group index,
//! every receiver is tracked (loss, reordering, duplicates, latency) and a per-group
//! [`FanTrack`] yields, per sent packet, the latency to its last receiver.

use super::args::Options;
use super::report::SetupFigures;
use super::setup::{self, Relay, Teardown};
use super::sys::Stop;
use super::traffic::{self, new_histogram, FanTrack, Paths, RxSide, TxSide};
use crate::control::MediaSecurity;
use crate::keys::MasterKey;
use crate::relay::{CreateGroupCall, Engine, GroupMemberSpec};
use crate::sdp::{MediaKind, SessionDescription};
use crate::srtp::SrtpContext;
use crate::wire::tc::{self, EmitOptions, MessageKind, TcMessage};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// The Transmission Priority the transmitter may use and asks with.
const PRIORITY: u8 = 5;
/// How long the transmitter waits for Granted (asking again every second).
const GRANT_TIMEOUT: Duration = Duration::from_secs(5);

/// Transmitter and receiver sockets for `groups` groups of `receivers`: transmitter `g` sends
/// with SSRC `ssrc_base + g`; receiver `g·receivers + j` expects group `g`'s packets.
fn bind(groups: usize, receivers: usize, ssrc_base: u32) -> Result<Paths, String> {
    let err = |e: std::io::Error| format!("group sockets: {e}");
    let mut tx = Vec::with_capacity(groups);
    let mut rx = Vec::with_capacity(groups * receivers);
    for g in 0..groups {
        let index = g as u32;
        let mut t = TxSide::bind(index, ssrc_base.wrapping_add(index)).map_err(err)?;
        let fan = FanTrack::new(receivers);
        t.fan = Some(fan.clone());
        for j in 0..receivers {
            let mut r = RxSide::bind((g * receivers + j) as u32).map_err(err)?;
            r.call = index;
            r.fan = Some(fan.clone());
            rx.push(r);
        }
        tx.push(t);
    }
    Ok(Paths { tx, rx })
}

/// The floor: each transmitter sends every packet to its N receivers itself.
pub(super) fn floor_paths(o: &Options, ssrc_base: u32) -> Result<Paths, String> {
    let n = o.group_receivers.unwrap_or(1);
    let mut p = bind(o.calls, n, ssrc_base)?;
    for t in &mut p.tx {
        let mine: Vec<&mut RxSide> = p.rx.iter_mut().filter(|r| r.call == t.index).collect();
        let dests: Vec<SocketAddr> = mine.iter().filter_map(|r| r.addr()).collect();
        let Some((first, rest)) = dests.split_first() else {
            return Err("a group floor with no receiver".into());
        };
        t.dest = *first;
        t.fan_dests = rest.to_vec();
        if o.srtp.is_some() {
            let k = setup::fresh_key()?;
            t.srtp = Some(SrtpContext::new(&k));
            for r in mine {
                r.srtp = Some(SrtpContext::new(&k));
            }
        }
    }
    Ok(p)
}

/// One video stream (rtcp-mux), and for the transmitter its MCVideo control channel.
fn member_sdp(
    name: &str,
    port: u16,
    ssrc: Option<u32>,
    key: Option<&MasterKey>,
    control_port: Option<u16>,
) -> String {
    let mut s = setup::media_sdp(name, super::netns::Side::Caller, port, ssrc, key);
    if let Some(p) = control_port {
        s.push_str(&format!(
            "m=application {p} udp MCVideo\r\na=fmtp:MCVideo mc_queueing\r\n"
        ));
    }
    s
}

/// The address of the control channel (`m=application ... MCVideo`) in the relay's answer.
fn control_of(sdp: &str) -> Result<SocketAddr, String> {
    let d = SessionDescription::parse(sdp).map_err(|e| format!("relay SDP: {e}"))?;
    d.media()
        .iter()
        .find(|m| m.kind == MediaKind::Control && m.port != 0)
        .and_then(|m| m.rtp_addr())
        .ok_or_else(|| "the relay's answer to the transmitter has no control channel".into())
}

/// Group calls that must be released: on [`GroupSet::release`] or when dropped.
pub(super) struct GroupSet<'r> {
    engine: &'r Engine,
    ids: Vec<String>,
    /// The transmitters' control sockets (kept open while the calls run).
    _control: Vec<UdpSocket>,
}

impl GroupSet<'_> {
    pub(super) fn release(mut self) -> Teardown {
        release(self.engine, std::mem::take(&mut self.ids))
    }
}

impl Drop for GroupSet<'_> {
    fn drop(&mut self) {
        if !self.ids.is_empty() {
            let t = release(self.engine, std::mem::take(&mut self.ids));
            if t.failed > 0 {
                eprintln!(
                    "loadgen: {} group call(s) could not be released: {}",
                    t.failed,
                    t.first_error.unwrap_or_default()
                );
            }
        }
    }
}

fn release(engine: &Engine, ids: Vec<String>) -> Teardown {
    let started = Instant::now();
    let mut failed = 0;
    let mut first_error = None;
    for id in &ids {
        if let Err(e) = engine.release_group_call(id) {
            failed += 1;
            first_error.get_or_insert_with(|| format!("release {id}: {e}"));
        }
    }
    Teardown {
        released: ids.len() - failed,
        failed,
        first_error,
        elapsed: started.elapsed(),
    }
}

/// Asks to transmit on `ctl` (to the relay's `to`) until Granted; returns the video SSRC it
/// names.
fn request_grant(ctl: &UdpSocket, to: SocketAddr, ssrc: u32, stop: &Stop) -> Result<u32, String> {
    let mut req = TcMessage::new(MessageKind::TransmissionRequest, ssrc);
    req.fields.transmission_priority = Some(PRIORITY);
    let bytes = req
        .to_vec(&EmitOptions::default())
        .map_err(|e| format!("Transmission Request: {e}"))?;
    ctl.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| format!("control socket: {e}"))?;
    let until = Instant::now() + GRANT_TIMEOUT;
    let mut next_ask = Instant::now();
    let mut buf = [0u8; 2048];
    while Instant::now() < until && !stop.requested() {
        if Instant::now() >= next_ask {
            ctl.send_to(&bytes, to)
                .map_err(|e| format!("Transmission Request to {to}: {e}"))?;
            next_ask = Instant::now() + Duration::from_secs(1);
        }
        let Ok((n, _)) = ctl.recv_from(&mut buf) else {
            continue;
        };
        for m in tc::messages(buf.get(..n).unwrap_or_default()).flatten() {
            match m.kind {
                MessageKind::TransmissionGranted => return Ok(m.fields.video_ssrc.unwrap_or(ssrc)),
                MessageKind::TransmissionRejected => {
                    return Err(format!(
                        "Transmission Rejected (cause {:?})",
                        m.fields.reject_cause.map(|c| c.code)
                    ))
                }
                _ => {}
            }
        }
    }
    Err(format!(
        "no Transmission Granted within {} s",
        GRANT_TIMEOUT.as_secs()
    ))
}

/// Sets up `--calls` group calls through the engine, has every transmitter granted, and points
/// the transmitters at the relay.
pub(super) fn establish<'r>(
    o: &Options,
    relay: &'r Relay,
    ssrc_base: u32,
    stop: &Stop,
    rep: &mut super::report::Report,
) -> Result<(Paths, GroupSet<'r>), String> {
    let Relay::Engine(engine) = relay else {
        return Err("group calls run on the in-process engine only (--engine)".into());
    };
    let engine: &Engine = engine;
    let n = o.group_receivers.unwrap_or(1);
    let groups = o.calls;
    let mut paths = bind(groups, n, ssrc_base)?;
    let security = o.srtp.unwrap_or(MediaSecurity::EndToEnd);
    let prefix = setup::id_prefix();
    let mut set = GroupSet {
        engine,
        ids: Vec::with_capacity(groups),
        _control: Vec::with_capacity(groups),
    };
    let mut create_latency = new_histogram();
    let mut grant_latency = new_histogram();
    let started = Instant::now();
    for g in 0..groups {
        if stop.requested() {
            return Err("interrupted during call setup".into());
        }
        let ctl = traffic::bind_socket(traffic::Side::Caller)
            .map_err(|e| format!("control socket: {e}"))?;
        let ctl_port = ctl.local_addr().map_err(|e| e.to_string())?.port();
        // end_to_end: the group key; per_leg: the transmitter's, then each receiver's own.
        let group_key = match o.srtp {
            Some(_) => Some(setup::fresh_key()?),
            None => None,
        };
        let Some(t) = paths.tx.get_mut(g) else {
            return Err("a group lost its transmitter".into());
        };
        let rx: Vec<&mut RxSide> = paths.rx.iter_mut().filter(|r| r.call == g as u32).collect();
        let (members, rx_keys) = member_specs(o, g, t, &rx, group_key.as_ref(), ctl_port)?;
        let id = format!("{prefix}-g{g}");
        let t0 = Instant::now();
        let created = engine
            .create_group_call(CreateGroupCall {
                call_id: Some(id.clone().into()),
                group_id: format!("sip:lg-group-{g}@loadgen.invalid"),
                media_security: security,
                max_transmitters: None,
                max_streams_per_receiver: None,
                reception_mode: None,
                members,
            })
            .map_err(|e| format!("group call {g}: {e}"))?;
        create_latency.saturating_record(t0.elapsed().as_nanos() as u64);
        set.ids.push(id);
        let mut answers = created.members.iter();
        let tx_answer = answers
            .next()
            .ok_or("the relay answered no member")?
            .sdp_answer
            .as_str();
        let (video, _) = setup::video_of(tx_answer)?;
        let control = control_of(tx_answer)?;
        for ((r, a), own) in rx.into_iter().zip(answers).zip(rx_keys) {
            r.srtp = receiver_srtp(security, own, &a.sdp_answer)?;
        }
        let t0 = Instant::now();
        let granted = request_grant(&ctl, control, t.ssrc, stop)
            .map_err(|e| format!("group call {g}: the transmitter's request: {e}"))?;
        grant_latency.saturating_record(t0.elapsed().as_nanos() as u64);
        t.ssrc = granted;
        t.dest = video;
        t.srtp = group_key.as_ref().map(SrtpContext::new);
        set._control.push(ctl);
    }
    rep.setup = Some(SetupFigures {
        requested: groups,
        established: set.ids.len(),
        failed: groups - set.ids.len(),
        first_error: None,
        seconds: started.elapsed().as_secs_f64(),
        concurrency: 1,
        latency_ms: SetupFigures::latency_from(&create_latency),
        ..SetupFigures::default()
    });
    if let Some([p50, _, max]) = SetupFigures::latency_from(&grant_latency) {
        rep.notes.push(format!(
            "{groups} group call(s) of 1 + {n} members set up; Transmission Request to Granted: \
             p50 {p50:.2} ms, max {max:.2} ms"
        ));
    }
    Ok((paths, set))
}

/// Group `g`'s members: its transmitter `t` (control channel on `ctl_port`), then its
/// receivers `rx`, with the key each offers (end_to_end: the group key; per_leg: the
/// transmitter's, then each receiver's own). Returns the receivers' keys too.
fn member_specs(
    o: &Options,
    g: usize,
    t: &TxSide,
    rx: &[&mut RxSide],
    group_key: Option<&MasterKey>,
    ctl_port: u16,
) -> Result<(Vec<GroupMemberSpec>, Vec<Option<MasterKey>>), String> {
    let mut members = vec![GroupMemberSpec {
        mcvideo_id: format!("sip:lg-tx-{g}@loadgen.invalid"),
        sdp_offer: member_sdp("lgtx", t.port(), Some(t.ssrc), group_key, Some(ctl_port)),
        priority: PRIORITY,
        receive_only: false,
        tc_key: None,
    }];
    let mut rx_keys = Vec::with_capacity(rx.len());
    for (j, r) in rx.iter().enumerate() {
        let key = match o.srtp {
            Some(MediaSecurity::PerLeg) => Some(setup::fresh_key()?),
            _ => group_key.cloned(),
        };
        members.push(GroupMemberSpec {
            mcvideo_id: format!("sip:lg-rx-{g}-{j}@loadgen.invalid"),
            sdp_offer: member_sdp(
                "lgrx",
                r.addr().map_or(0, |a| a.port()),
                None,
                key.as_ref(),
                None,
            ),
            priority: 0,
            receive_only: true,
            tc_key: None,
        });
        rx_keys.push(key);
    }
    Ok((members, rx_keys))
}

/// A receiver's SRTP context: none without a key of its own (`own`); per_leg, the key in the
/// relay's `answer` to it; end_to_end, its own (the group key).
fn receiver_srtp(
    security: MediaSecurity,
    own: Option<MasterKey>,
    answer: &str,
) -> Result<Option<SrtpContext>, String> {
    let (_, relay_key) = setup::video_of(answer)?;
    Ok(match (security, own, relay_key) {
        (_, None, _) => None,
        (MediaSecurity::PerLeg, Some(_), Some(k)) => Some(SrtpContext::new(&k)),
        (MediaSecurity::PerLeg, Some(_), None) => {
            return Err("per_leg: the relay's answer to a receiver has no a=crypto".into())
        }
        (MediaSecurity::EndToEnd, Some(k), _) => Some(SrtpContext::new(&k)),
    })
}
