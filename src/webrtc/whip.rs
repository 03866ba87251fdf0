//! One WHIP publisher: a browser's camera as the transmitting member of a call.
//!
//! The relay does not grow a second kind of member for it. A **bridge** on the relay's own
//! host stands in for the browser as an ordinary SDES-SRTP member: it offers the call an SDP
//! with one H.264 stream (`RTP/SAVP`, a key it made) and an MCVideo transmission control
//! channel, so the call's server, rules and worker treat it like any MCVideo client. Toward
//! the browser it is an ICE-lite WebRTC peer (str0m, DTLS-SRTP).
//!
//! * **Media.** Each RTP packet of the browser's H.264 (str0m decrypts it) is given the
//!   bridge's SSRC and payload type 96, protected with the bridge's key and sent to the
//!   relay's port for the member. There it is judged like any member's media: it passes only
//!   while the member holds the grant.
//! * **Transmission control.** The bridge speaks MCV0/1/2 for the browser, which has no
//!   control channel. It sends Transmission Request and End Request when the API asks
//!   (`POST /v1/whip/{id}/request`, `/end`, the console's buttons). A push's grant is
//!   implicit when the callee accepts.
//! * **Keyframes.** On Transmission Granted, and on each PLI or FIR the relay sends the
//!   member (its receivers' requests and its own at a grant, under the relay's keyframe
//!   policy; SRTCP, decrypted with the relay's key from its answer), the bridge asks the
//!   browser for a keyframe. A request made before the browser's stream exists is kept until
//!   it does.

use super::peer::{spawn_reader, video_added, Datagram, Peer, Step};
use crate::keys::MasterKey;
use crate::srtp::SrtpContext;
use crate::wire::tc::{self, EmitOptions, MessageKind, TcMessage};
use crossbeam_channel::{select, Receiver};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, Mid, Pt};
use str0m::Event;

/// The payload type the bridge sends H.264 with (its own SDP's).
pub(crate) const BRIDGE_PT: u8 = 96;

/// What the API asks a publisher to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cmd {
    /// The relay's addresses for the member are known (a push: once the callee accepted).
    Relay(RelayLeg),
    /// Send Transmission Request.
    Request,
    /// Send Transmission End Request.
    End,
    /// End the publisher (a Transmission End Request first when it holds the grant).
    Stop,
}

/// The member SDP the bridge offers the call: one H.264 stream over SRTP from `media`, its
/// key, its SSRC, and a transmission control channel on `control`.
pub(crate) fn bridge_sdp(
    name: &str,
    media: SocketAddr,
    control: SocketAddr,
    key: &MasterKey,
    ssrc: u32,
) -> String {
    let ip = media.ip();
    let family = if ip.is_ipv6() { "IP6" } else { "IP4" };
    format!(
        "v=0\r\no={name} 1 1 IN {family} {ip}\r\ns=-\r\nc=IN {family} {ip}\r\nt=0 0\r\n\
         m=video {} RTP/SAVP {BRIDGE_PT}\r\na=rtpmap:{BRIDGE_PT} H264/90000\r\n\
         a=fmtp:{BRIDGE_PT} packetization-mode=1;profile-level-id=42e01f\r\na=rtcp-mux\r\na=sendonly\r\n\
         a=crypto:1 {} inline:{}\r\na=ssrc:{ssrc} cname:{name}\r\n\
         m=application {} udp MCVideo\r\na=fmtp:MCVideo mc_queueing;mc_implicit_request\r\n",
        media.port(),
        key.suite.name(),
        key.to_base64(),
        control.port()
    )
}

/// The relay's side of the member, from the SDP answer it gave the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RelayLeg {
    /// Its RTP (and muxed RTCP) port.
    pub(crate) rtp: SocketAddr,
    /// Its transmission control port.
    pub(crate) control: Option<SocketAddr>,
    /// The key it sends SRTP/SRTCP to the member with (per_leg).
    pub(crate) key: Option<MasterKey>,
}

/// The relay's side of the member in an SDP answer it gave the bridge.
pub(crate) fn relay_leg(sdp: &str) -> Option<RelayLeg> {
    let d = crate::sdp::SessionDescription::parse(sdp).ok()?;
    let video = d
        .media()
        .iter()
        .find(|m| m.kind == crate::sdp::MediaKind::Video && m.port != 0)?;
    let control = d
        .media()
        .iter()
        .find(|m| m.kind == crate::sdp::MediaKind::Control && m.port != 0)
        .and_then(crate::sdp::Media::rtp_addr);
    let key = video.crypto.first().and_then(|c| {
        let suite = crate::keys::SrtpSuite::from_name(&c.suite)?;
        MasterKey::from_base64(suite, &c.key_b64).ok()
    });
    Some(RelayLeg {
        rtp: video.rtp_addr()?,
        control,
        key,
    })
}

/// How long the bridge waits for the keyframe it asked the browser for before it asks again.
const KEYFRAME_RETRY: Duration = Duration::from_millis(700);
/// How many times it asks for one keyframe at most.
const KEYFRAME_TRIES: u8 = 5;
/// Datagrams from the relay kept while the bridge does not know the relay's ports yet (a
/// push's grant can come before the answer that names them reaches the bridge).
const EARLY_DATAGRAMS: usize = 16;
/// How often the bridge checks that its call still runs.
const CALL_CHECK: Duration = Duration::from_secs(1);

/// A keyframe the bridge wants from the browser: when to ask again, and how often it asked.
#[derive(Debug, Clone, Copy)]
struct Wanted {
    next: Instant,
    tries: u8,
}

/// What a publisher's thread needs.
pub(crate) struct Bridge {
    pub(crate) peer: Peer,
    /// Toward the relay: media (RTP out, RTCP muxed) and transmission control.
    pub(crate) media: UdpSocket,
    pub(crate) control: UdpSocket,
    pub(crate) srtp: SrtpContext,
    pub(crate) ssrc: u32,
    pub(crate) relay: Option<RelayLeg>,
    /// SRTCP from the relay (its key toward the member).
    pub(crate) srtcp_in: Option<SrtpContext>,
    pub(crate) cmds: Receiver<Cmd>,
    /// Whether the call still runs (the engine's word), asked every [`CALL_CHECK`].
    pub(crate) call_live: Box<dyn Fn() -> bool + Send>,
    /// The browser's video: its mid and its H.264 payload types.
    video: Option<(Mid, Vec<Pt>)>,
    /// A keyframe asked for and not seen yet.
    wanted: Option<Wanted>,
    /// Datagrams from the relay that came before its ports were known.
    early: Vec<Datagram>,
}

impl Bridge {
    /// A bridge for `peer` toward the relay through `media` and `control`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        peer: Peer,
        (media, control): (UdpSocket, UdpSocket),
        key: &MasterKey,
        ssrc: u32,
        relay: Option<RelayLeg>,
        cmds: Receiver<Cmd>,
        call_live: Box<dyn Fn() -> bool + Send>,
    ) -> Self {
        Bridge {
            peer,
            media,
            control,
            srtp: SrtpContext::new(key),
            ssrc,
            srtcp_in: relay
                .as_ref()
                .and_then(|r| r.key.as_ref())
                .map(SrtpContext::new),
            relay,
            cmds,
            call_live,
            video: None,
            wanted: None,
            early: Vec::new(),
        }
    }

    /// Runs the publisher until the browser leaves, the API ends it, its call ends or it never
    /// connects.
    pub(crate) fn run(mut self) -> &'static str {
        let (relay, relay_rx) = crossbeam_channel::bounded::<Datagram>(256);
        let readers = [
            spawn_reader(&self.control, relay.clone(), "whip-control"),
            spawn_reader(&self.media, relay, "whip-media"),
        ];
        let why = self.drive(&relay_rx);
        if self.peer.counters.granted.load(Ordering::Relaxed) {
            self.send_control(MessageKind::TransmissionEndRequest);
        }
        drop(relay_rx);
        for r in readers.into_iter().flatten() {
            r.stop();
        }
        self.peer.close();
        why
    }

    fn drive(&mut self, relay: &Receiver<Datagram>) -> &'static str {
        let mut buf = vec![0u8; 2048];
        let mut checked = Instant::now();
        loop {
            let wait = match self.peer.step() {
                Step::Event(e) => {
                    match *e {
                        ref e if video_added(e, false).is_some() => {
                            let Some(mid) = video_added(e, false) else {
                                continue;
                            };
                            let pts = h264_pts(&self.peer.rtc, mid);
                            if pts.is_empty() {
                                return "the browser offered no H.264";
                            }
                            self.video = Some((mid, pts));
                        }
                        Event::Connected => {
                            tracing::info!(local = %self.peer.local(), "WHIP publisher connected");
                        }
                        Event::RtpPacket(p) => self.forward(&p, &mut buf),
                        _ => {}
                    }
                    continue;
                }
                Step::Wait(w) => w,
                Step::End(why) => return why,
            };
            let now = Instant::now();
            if now.duration_since(checked) >= CALL_CHECK {
                checked = now;
                if !(self.call_live)() {
                    return "the call ended";
                }
            }
            let wait = match self.wanted {
                Some(w) => {
                    if w.next <= now {
                        self.ask_keyframe(now);
                    }
                    wait.min(KEYFRAME_RETRY)
                }
                None => wait,
            }
            .min(CALL_CHECK);
            let input = select! {
                recv(self.peer.net) -> d => match d {
                    Ok(d) => Some(d),
                    Err(_) => return "socket closed",
                },
                recv(relay) -> d => {
                    if let Ok(d) = d {
                        self.on_relay_datagram(d);
                    }
                    None
                }
                recv(self.cmds) -> c => match c {
                    Ok(Cmd::Relay(leg)) => {
                        self.srtcp_in = leg.key.as_ref().map(SrtpContext::new);
                        self.relay = Some(leg);
                        for d in std::mem::take(&mut self.early) {
                            self.on_relay_datagram(d);
                        }
                        None
                    }
                    Ok(Cmd::Request) => {
                        self.send_control(MessageKind::TransmissionRequest);
                        None
                    }
                    Ok(Cmd::End) => {
                        self.send_control(MessageKind::TransmissionEndRequest);
                        None
                    }
                    Ok(Cmd::Stop) | Err(_) => return "closed by the API",
                },
                default(wait) => None,
            };
            self.peer.input(input);
        }
    }

    /// A browser's RTP packet to the relay: the bridge's SSRC and payload type, SRTP.
    fn forward(&mut self, p: &str0m::rtp::RtpPacket, buf: &mut [u8]) {
        let counters = self.peer.counters.clone();
        let skipped = || {
            counters.skipped.fetch_add(1, Ordering::Relaxed);
        };
        let h264 = self
            .video
            .as_ref()
            .is_some_and(|(_, pts)| pts.contains(&p.header.payload_type));
        let Some(to) = self.relay.as_ref().map(|r| r.rtp).filter(|_| h264) else {
            return skipped();
        };
        let len = 12 + p.payload.len();
        let Some(out) = buf.get_mut(..len) else {
            return skipped();
        };
        out[0] = 0x80;
        out[1] = (u8::from(p.header.marker) << 7) | BRIDGE_PT;
        out[2..4].copy_from_slice(&p.header.sequence_number.to_be_bytes());
        out[4..8].copy_from_slice(&p.header.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        out[12..].copy_from_slice(&p.payload);
        match self.srtp.protect_rtp(buf, len) {
            Ok(n) => {
                let _ = self.media.send_to(buf.get(..n).unwrap_or_default(), to);
                counters.packets.fetch_add(1, Ordering::Relaxed);
                if crate::relay::rules::h264_idr(&p.payload) {
                    self.wanted = None;
                }
            }
            Err(_) => skipped(),
        }
    }

    /// A datagram from the relay: SRTCP on the media port (a PLI or FIR asks the browser for
    /// a keyframe), or a transmission control message on the control port (plain: the bridge
    /// offers no key). Only the relay's ports are heard; before they are known, a few
    /// datagrams wait.
    fn on_relay_datagram(&mut self, mut d: Datagram) {
        let Some(leg) = &self.relay else {
            if self.early.len() < EARLY_DATAGRAMS {
                self.early.push(d);
            }
            return;
        };
        if Some(d.from) == leg.control {
            return self.on_control(&d.data);
        }
        if d.from != leg.rtp
            || crate::wire::demux::classify(&d.data) != crate::wire::demux::PacketClass::Rtcp
        {
            return;
        }
        let Some(ctx) = self.srtcp_in.as_mut() else {
            return;
        };
        let Ok(n) = ctx.unprotect_rtcp(&mut d.data) else {
            return;
        };
        let body = d.data.get(..n).unwrap_or_default();
        let wants = crate::wire::rtcp::compound(body).flatten().any(|p| {
            matches!(
                p.kind(),
                crate::wire::rtcp::RtcpKind::Pli | crate::wire::rtcp::RtcpKind::Fir
            )
        });
        if wants {
            self.want_keyframe();
        }
    }

    /// A transmission control message from the relay.
    fn on_control(&mut self, data: &[u8]) {
        for m in tc::messages(data).flatten() {
            match m.kind {
                MessageKind::TransmissionGranted => {
                    self.peer.counters.granted.store(true, Ordering::Relaxed);
                    self.want_keyframe();
                }
                MessageKind::TransmissionRevoked
                | MessageKind::TransmissionEndResponse
                | MessageKind::TransmissionRejected => {
                    self.peer.counters.granted.store(false, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    }

    /// The receivers need a keyframe: ask the browser now, and again until one passes.
    fn want_keyframe(&mut self) {
        let now = Instant::now();
        self.wanted = Some(Wanted {
            next: now,
            tries: 0,
        });
        self.ask_keyframe(now);
    }

    /// Asks the browser for the keyframe wanted (PLI), once its stream exists; gives up after
    /// [`KEYFRAME_TRIES`].
    fn ask_keyframe(&mut self, now: Instant) {
        let Some(mut w) = self.wanted else {
            return;
        };
        if w.tries >= KEYFRAME_TRIES {
            self.wanted = None;
            return;
        }
        let mid = self.video.as_ref().map(|(m, _)| *m);
        let mut api = self.peer.rtc.direct_api();
        if let Some(rx) = mid.and_then(|mid| api.stream_rx_by_mid(mid, None)) {
            rx.request_keyframe(KeyframeRequestKind::Pli);
            w.tries += 1;
            let c = &self.peer.counters.keyframe_requests;
            c.fetch_add(1, Ordering::Relaxed);
        }
        w.next = now + KEYFRAME_RETRY;
        self.wanted = Some(w);
    }

    /// Sends transmission control message `kind` for the browser.
    fn send_control(&mut self, kind: MessageKind) {
        let Some(to) = self.relay.as_ref().and_then(|r| r.control) else {
            return;
        };
        if let Ok(msg) = TcMessage::new(kind, self.ssrc).to_vec(&EmitOptions::default()) {
            let _ = self.control.send_to(&msg, to);
        }
    }
}

/// Every H.264 payload type the browser may send on `mid` (any packetization mode or profile:
/// the payload is H.264 RTP either way).
fn h264_pts(rtc: &str0m::Rtc, mid: Mid) -> Vec<Pt> {
    let Some(media) = rtc.media(mid) else {
        return Vec::new();
    };
    let remote = media.remote_pts();
    rtc.codec_config()
        .params()
        .iter()
        .filter(|p| remote.contains(&p.pt()) && p.spec().codec == Codec::H264)
        .map(|p| p.pt())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SrtpSuite;

    #[test]
    fn the_bridge_offer_parses_and_the_relay_answer_gives_its_ports() {
        let key = MasterKey::new(SrtpSuite::AesCm128HmacSha1_80, vec![7; 30]).unwrap();
        let sdp = bridge_sdp(
            "whip-1",
            "127.0.0.1:5000".parse().unwrap(),
            "127.0.0.1:5002".parse().unwrap(),
            &key,
            0x1234,
        );
        let d = crate::sdp::SessionDescription::parse(&sdp).unwrap();
        let v = &d.media()[0];
        assert_eq!((v.port, v.encoding.as_deref()), (5000, Some("H264")));
        assert_eq!(v.crypto.len(), 1);
        assert_eq!(v.ssrcs, [0x1234]);
        assert_eq!(d.media()[1].port, 5002);
        let leg = relay_leg(&sdp).unwrap();
        assert_eq!(leg.rtp, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(leg.control, Some("127.0.0.1:5002".parse().unwrap()));
        assert_eq!(leg.key.map(|k| k.to_base64()), Some(key.to_base64()));
        assert_eq!(relay_leg("v=0\r\n"), None);
    }
}
