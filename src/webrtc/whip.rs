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

use super::viewer::{payload_params, Datagram};
use super::BrowserCounters;
use crate::keys::MasterKey;
use crate::srtp::SrtpContext;
use crate::wire::tc::{self, EmitOptions, MessageKind, TcMessage};
use crossbeam_channel::{select, Receiver};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};

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
    format!(
        "v=0\r\no={name} 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
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

/// What a publisher's thread needs.
pub(crate) struct Bridge {
    pub(crate) rtc: Rtc,
    /// Toward the browser.
    pub(crate) socket: UdpSocket,
    /// Toward the relay: media (RTP out, RTCP muxed) and transmission control.
    pub(crate) media: UdpSocket,
    pub(crate) control: UdpSocket,
    pub(crate) srtp: SrtpContext,
    pub(crate) ssrc: u32,
    pub(crate) relay: Option<RelayLeg>,
    /// SRTCP from the relay (its key toward the member).
    pub(crate) srtcp_in: Option<SrtpContext>,
    /// A keyframe request waits for the browser's stream.
    pub(crate) keyframe_pending: bool,
    pub(crate) cmds: Receiver<Cmd>,
    pub(crate) counters: Arc<BrowserCounters>,
    pub(crate) connect_timeout: Duration,
}

impl Bridge {
    /// Runs the publisher until the browser leaves, the API ends it or it never connects.
    pub(crate) fn run(mut self) -> &'static str {
        let local = match self.socket.local_addr() {
            Ok(a) => a,
            Err(_) => return "no socket address",
        };
        let (net, net_rx) = crossbeam_channel::bounded::<Datagram>(512);
        let (ctl, ctl_rx) = crossbeam_channel::bounded::<Datagram>(256);
        let readers = [
            super::viewer::spawn_reader(&self.socket, net, "whip-socket"),
            super::viewer::spawn_reader(&self.control, ctl.clone(), "whip-control"),
            super::viewer::spawn_reader(&self.media, ctl, "whip-media"),
        ];
        let why = self.drive(local, &net_rx, &ctl_rx);
        if self.counters.granted.load(Ordering::Relaxed) {
            self.send_control(MessageKind::TransmissionEndRequest);
        }
        self.rtc.disconnect();
        while let Ok(Output::Transmit(t)) = self.rtc.poll_output() {
            let _ = self.socket.send_to(&t.contents, t.destination);
        }
        drop((net_rx, ctl_rx));
        for r in readers.into_iter().flatten() {
            r.stop();
        }
        why
    }

    fn drive(
        &mut self,
        local: SocketAddr,
        net: &Receiver<Datagram>,
        ctl: &Receiver<Datagram>,
    ) -> &'static str {
        let started = Instant::now();
        let mut mid: Option<Mid> = None;
        let mut pt = None;
        let mut buf = vec![0u8; 2048];
        loop {
            let deadline = loop {
                match self.rtc.poll_output() {
                    Ok(Output::Timeout(t)) => break t,
                    Ok(Output::Transmit(t)) => {
                        let _ = self.socket.send_to(&t.contents, t.destination);
                    }
                    Ok(Output::Event(e)) => match e {
                        Event::MediaAdded(m)
                            if m.kind == MediaKind::Video
                                && matches!(
                                    m.direction,
                                    Direction::RecvOnly | Direction::SendRecv
                                ) =>
                        {
                            mid = Some(m.mid);
                            pt = payload_params(&self.rtc, m.mid, Codec::H264).map(|p| p.pt());
                            if pt.is_none() {
                                return "the browser offered no H.264 (packetization mode 1)";
                            }
                        }
                        Event::Connected => {
                            self.counters.connected.store(true, Ordering::Relaxed);
                            tracing::info!(%local, "WHIP publisher connected");
                        }
                        Event::RtpPacket(p) => {
                            if self.keyframe_pending {
                                self.keyframe(mid);
                            }
                            self.forward(&p, pt, &mut buf);
                        }
                        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                            return "the browser left (ICE disconnected)";
                        }
                        Event::Closed => return "closed",
                        _ => {}
                    },
                    Err(e) => {
                        tracing::debug!(error = %e, "publisher: str0m");
                        return "WebRTC error";
                    }
                }
            };
            if !self.rtc.is_alive() {
                return "the browser left";
            }
            if !self.counters.connected.load(Ordering::Relaxed)
                && started.elapsed() > self.connect_timeout
            {
                return "the browser did not connect in time";
            }
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(1));
            let input = select! {
                recv(net) -> d => match d {
                    Ok(d) => Some(d),
                    Err(_) => return "socket closed",
                },
                recv(ctl) -> d => {
                    if let Ok(mut d) = d {
                        self.on_relay_datagram(&mut d.data, mid);
                    }
                    None
                }
                recv(self.cmds) -> c => match c {
                    Ok(Cmd::Relay(leg)) => {
                        self.srtcp_in = leg.key.as_ref().map(SrtpContext::new);
                        self.relay = Some(leg);
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
            let now = Instant::now();
            let r = match input {
                Some(d) => match d.data.as_slice().try_into() {
                    Ok(contents) => self.rtc.handle_input(Input::Receive(
                        d.at,
                        Receive {
                            proto: Protocol::Udp,
                            source: d.from,
                            destination: local,
                            contents,
                        },
                    )),
                    Err(_) => Ok(()),
                },
                None => self.rtc.handle_input(Input::Timeout(now)),
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, "publisher: str0m input");
            }
        }
    }

    /// A browser's RTP packet to the relay: the bridge's SSRC and payload type, SRTP.
    fn forward(&mut self, p: &str0m::rtp::RtpPacket, pt: Option<str0m::media::Pt>, buf: &mut [u8]) {
        let skipped = |c: &BrowserCounters| {
            c.skipped.fetch_add(1, Ordering::Relaxed);
        };
        let (Some(to), Some(pt)) = (self.relay.as_ref().map(|r| r.rtp), pt) else {
            return skipped(&self.counters);
        };
        if p.header.payload_type != pt {
            return skipped(&self.counters);
        }
        let len = 12 + p.payload.len();
        let Some(out) = buf.get_mut(..len) else {
            return skipped(&self.counters);
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
                self.counters.packets.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => skipped(&self.counters),
        }
    }

    /// A datagram from the relay: SRTCP on the media port (a PLI or FIR asks the browser
    /// for a keyframe), or a transmission control message (plain: the bridge offers no key).
    fn on_relay_datagram(&mut self, data: &mut [u8], mid: Option<Mid>) {
        if crate::wire::demux::classify(data) == crate::wire::demux::PacketClass::Rtcp
            && tc::messages(data).flatten().next().is_none()
        {
            let Some(ctx) = self.srtcp_in.as_mut() else {
                return;
            };
            let Ok(n) = ctx.unprotect_rtcp(data) else {
                return;
            };
            let body = data.get(..n).unwrap_or_default();
            let wants = crate::wire::rtcp::compound(body).flatten().any(|p| {
                matches!(
                    p.kind(),
                    crate::wire::rtcp::RtcpKind::Pli | crate::wire::rtcp::RtcpKind::Fir
                )
            });
            if wants {
                self.keyframe(mid);
            }
            return;
        }
        self.on_control(data, mid);
    }

    /// A transmission control message from the relay.
    fn on_control(&mut self, data: &[u8], mid: Option<Mid>) {
        for m in tc::messages(data).flatten() {
            match m.kind {
                MessageKind::TransmissionGranted => {
                    self.counters.granted.store(true, Ordering::Relaxed);
                    self.keyframe(mid);
                }
                MessageKind::TransmissionRevoked
                | MessageKind::TransmissionEndResponse
                | MessageKind::TransmissionRejected => {
                    self.counters.granted.store(false, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    }

    /// Asks the browser for a keyframe (PLI), now or once its stream exists.
    fn keyframe(&mut self, mid: Option<Mid>) {
        self.keyframe_pending = true;
        let Some(mid) = mid else {
            return;
        };
        if let Some(rx) = self.rtc.direct_api().stream_rx_by_mid(mid, None) {
            rx.request_keyframe(KeyframeRequestKind::Pli);
            self.keyframe_pending = false;
            self.counters
                .keyframe_requests
                .fetch_add(1, Ordering::Relaxed);
        }
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
