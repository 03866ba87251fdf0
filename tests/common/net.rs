//! Real UDP peers on 127.0.0.1 for the engine tests.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use mcvideo_relay::sdp::{MediaKind, SessionDescription};
use mcvideo_relay::wire::tc::{EmitOptions, TcMessage};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// One client: a video RTP socket, its RTCP socket, a transmission control socket.
pub struct Peer {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
    pub ctl: UdpSocket,
}

fn bind() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s
}

/// Relay addresses for one side, read from the SDP the relay handed out.
#[derive(Debug, Clone, Copy)]
pub struct RelayAddrs {
    pub video: SocketAddr,
    pub video_rtcp: SocketAddr,
    pub control: Option<SocketAddr>,
}

impl RelayAddrs {
    pub fn from_sdp(sdp: &str) -> RelayAddrs {
        let d = SessionDescription::parse(sdp).expect("relay SDP parses");
        let v = d
            .media()
            .iter()
            .find(|m| m.kind == MediaKind::Video)
            .expect("video");
        let c = d.media().iter().find(|m| m.kind == MediaKind::Control);
        RelayAddrs {
            video: v.rtp_addr().expect("video addr"),
            video_rtcp: v.rtcp_addr().expect("video rtcp addr"),
            control: c.and_then(|m| m.rtp_addr()),
        }
    }
}

impl Peer {
    pub fn new() -> Peer {
        Peer {
            rtp: bind(),
            rtcp: bind(),
            ctl: bind(),
        }
    }

    pub fn port(s: &UdpSocket) -> u16 {
        s.local_addr().unwrap().port()
    }

    /// An SDP with one video stream (plain RTP unless `proto` says otherwise) and, when
    /// `control`, the MCVideo control line.
    pub fn sdp(
        &self,
        name: &str,
        proto: &str,
        ssrc: Option<u32>,
        control: bool,
        extra_video: &str,
    ) -> String {
        let ip = self.rtp.local_addr().unwrap().ip();
        let mut s = format!(
            "v=0\r\no={name} 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
             m=video {} {proto} 96\r\na=rtpmap:96 H264/90000\r\na=rtcp:{}\r\n{extra_video}",
            Self::port(&self.rtp),
            Self::port(&self.rtcp),
        );
        if let Some(ssrc) = ssrc {
            s.push_str(&format!("a=ssrc:{ssrc} cname:{name}\r\n"));
        }
        s.push_str(&format!(
            "m=application {} udp MCVideo\r\na=fmtp:MCVideo mc_queueing;mc_implicit_request\r\n",
            if control { Self::port(&self.ctl) } else { 0 }
        ));
        s
    }

    pub fn send_tc(&self, to: SocketAddr, msg: &TcMessage<'_>) {
        let b = msg.to_vec(&EmitOptions::default()).unwrap();
        self.ctl.send_to(&b, to).unwrap();
    }
}

/// Receives until `timeout` passes with nothing; returns every datagram.
pub fn drain(s: &UdpSocket, timeout: Duration) -> Vec<(Vec<u8>, SocketAddr)> {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut v = Vec::new();
    let mut buf = [0u8; 65_536];
    while let Ok((n, from)) = s.recv_from(&mut buf) {
        v.push((buf[..n].to_vec(), from));
    }
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    v
}

/// Receives one datagram or panics after `timeout`.
pub fn recv(s: &UdpSocket, timeout: Duration) -> (Vec<u8>, SocketAddr) {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 65_536];
    let (n, from) = s.recv_from(&mut buf).expect("a datagram in time");
    (buf[..n].to_vec(), from)
}

/// A plain RTP packet: V=2, PT 96, the given seq/ssrc, `payload_len` bytes of pattern.
pub fn rtp_packet(seq: u16, ssrc: u32, payload_len: usize) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..payload_len).map(|i| (i as u8) ^ (seq as u8)));
    p
}

/// Collects datagrams on a clone of `s` in a thread until `idle` passes with nothing (after
/// the first one, or `first` before it). Join the handle for the list.
pub fn collect(
    s: &UdpSocket,
    first: Duration,
    idle: Duration,
) -> std::thread::JoinHandle<Vec<(Vec<u8>, SocketAddr)>> {
    let s = s.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let mut buf = [0u8; 65_536];
        s.set_read_timeout(Some(first)).unwrap();
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            v.push((buf[..n].to_vec(), from));
            s.set_read_timeout(Some(idle)).unwrap();
        }
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        v
    })
}

/// An end_to_end video push over plain RTP from `caller` to `callee` through `engine`, created
/// and accepted as call `id` (the caller announces `ssrc`): the relay's addresses the caller
/// sends to.
#[cfg(feature = "relay")]
pub fn engine_push(
    engine: &mcvideo_relay::relay::Engine,
    id: &str,
    caller: &Peer,
    callee: &Peer,
    ssrc: u32,
) -> RelayAddrs {
    engine_push_as(
        engine,
        id,
        caller,
        callee,
        ssrc,
        "RTP/AVP",
        mcvideo_relay::control::MediaSecurity::EndToEnd,
    )
}

/// [`engine_push`] with the peers' SDP profile `proto` (`RTP/AVP`, `RTP/SAVP`) and the call's
/// media security.
#[cfg(feature = "relay")]
pub fn engine_push_as(
    engine: &mcvideo_relay::relay::Engine,
    id: &str,
    caller: &Peer,
    callee: &Peer,
    ssrc: u32,
    proto: &str,
    security: mcvideo_relay::control::MediaSecurity,
) -> RelayAddrs {
    use mcvideo_relay::control::call::{AnswerCall, CreateCall};
    engine
        .create_call(CreateCall {
            call_id: Some(id.into()),
            caller_id: "sip:cam@x".into(),
            caller_sdp: caller.sdp("cam", proto, Some(ssrc), false, ""),
            callee_id: "sip:viewer@x".into(),
            video_push: true,
            video_pull: false,
            commencement_mode: None,
            media_security: security,
            caller_tc_key: None,
            callee_interface: None,
            caller_interface: None,
        })
        .unwrap();
    let answer = engine
        .accept_call(
            id,
            AnswerCall {
                callee_sdp: callee.sdp("viewer", proto, None, false, ""),
                callee_tc_key: None,
            },
        )
        .unwrap();
    RelayAddrs::from_sdp(&answer.sdp_answer)
}

/// A per_leg push offered by ffmpeg's camera (its SDP from [`super::ffmpeg::video_sdp`] on
/// `caller_port`) through `engine` as call `id`, not answered yet: the offer and the relay's
/// SRTP key for the callee (what the callee's SDP answer must use).
#[cfg(feature = "relay")]
pub fn engine_ffmpeg_offer(
    engine: &mcvideo_relay::relay::Engine,
    id: &str,
    caller_port: u16,
) -> (mcvideo_relay::control::call::CallOffer, String) {
    use super::ffmpeg;
    let offer = engine
        .create_call(mcvideo_relay::control::call::CreateCall {
            call_id: Some(id.into()),
            caller_id: "sip:camera@mcx.example".into(),
            caller_sdp: ffmpeg::video_sdp(
                "camera",
                caller_port,
                ffmpeg::SENDER_KEY,
                Some(ffmpeg::SSRC),
            ),
            callee_id: "sip:viewer@mcx.example".into(),
            video_push: true,
            video_pull: false,
            commencement_mode: None,
            media_security: mcvideo_relay::control::MediaSecurity::PerLeg,
            caller_tc_key: None,
            callee_interface: None,
            caller_interface: None,
        })
        .unwrap();
    let key = mcvideo_relay::sdp::SessionDescription::parse(&offer.sdp_offer)
        .unwrap()
        .media()[0]
        .crypto[0]
        .key_b64
        .clone();
    (offer, key)
}

/// Runs test `name` of this test binary again in a child process whose files may not grow past
/// `limit` bytes (RLIMIT_FSIZE, with SIGXFSZ ignored: writes past it fail with EFBIG, as on a
/// full disk). The limit holds for a whole process, so a test binary that uses this holds that
/// one test. In the parent: asserts the child passed and returns `false`. In the child: sets
/// the limit and returns `true` (run the test's body).
#[cfg(feature = "relay")]
pub fn under_file_size_limit(name: &str, limit: u64) -> bool {
    const CHILD: &str = "MCVR_FILE_SIZE_LIMIT_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let (_, hard) = rlimit::Resource::FSIZE.get().unwrap();
        rlimit::Resource::FSIZE.set(limit, hard).unwrap();
        return true;
    }
    // A shell ignores SIGXFSZ and execs the test: the child inherits that, with no unsafe code.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; exec \"$0\" --exact \"$1\" --nocapture --test-threads 1")
        .arg(std::env::current_exe().unwrap())
        .arg(name)
        .env(CHILD, "1")
        .output()
        .expect("sh runs");
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "the test under a file-size limit: {o}{e}"
    );
    assert!(o.contains("1 passed"), "it ran: {o}{e}");
    false
}

/// A group member over real sockets: its peer, the SSRC it announced, and the relay's video
/// and control addresses for it.
pub struct GroupMember {
    pub peer: Peer,
    pub ssrc: u32,
    pub video: SocketAddr,
    pub control: SocketAddr,
}

impl GroupMember {
    /// Sends a Transmission Request at `priority`.
    pub fn request(&self, priority: u8) {
        let mut r = TcMessage::new(
            mcvideo_relay::wire::tc::MessageKind::TransmissionRequest,
            self.ssrc,
        );
        r.fields.transmission_priority = Some(priority);
        self.peer.send_tc(self.control, &r);
    }

    /// Waits up to 3 s for a transmission control message of `kind`.
    #[allow(clippy::disallowed_methods)] // real sockets: it waits by the clock
    pub fn expect(&self, kind: mcvideo_relay::wire::tc::MessageKind) {
        let until = std::time::Instant::now() + Duration::from_secs(3);
        let mut buf = [0u8; 2048];
        while std::time::Instant::now() < until {
            let Ok((n, _)) = self.peer.ctl.recv_from(&mut buf) else {
                continue;
            };
            if mcvideo_relay::wire::tc::messages(&buf[..n])
                .flatten()
                .any(|m| m.kind == kind)
            {
                return;
            }
        }
        panic!("no {kind:?} in time");
    }

    /// Sends plain RTP with its SSRC and sequence numbers `seqs`, 500 µs apart.
    pub fn send_video(&self, seqs: std::ops::Range<u16>) {
        for seq in seqs {
            self.peer
                .rtp
                .send_to(&rtp_packet(seq, self.ssrc, 300), self.video)
                .unwrap();
            std::thread::sleep(Duration::from_micros(500));
        }
    }
}

/// An end_to_end group call `id`, one transmitter at a time, of one member per name in
/// `names`, each on a peer of its own with a control channel, announcing SSRC `ssrc(i)` at
/// priority `priority(i)`: the members, in order.
#[cfg(feature = "relay")]
pub fn engine_group(
    engine: &mcvideo_relay::relay::Engine,
    id: &str,
    names: &[&str],
    ssrc: impl Fn(usize) -> u32,
    priority: impl Fn(usize) -> u8,
) -> Vec<GroupMember> {
    use mcvideo_relay::relay::{CreateGroupCall, GroupMemberSpec};
    let peers: Vec<Peer> = names.iter().map(|_| Peer::new()).collect();
    let created = engine
        .create_group_call(CreateGroupCall {
            call_id: Some(id.into()),
            group_id: "g".into(),
            media_security: mcvideo_relay::control::MediaSecurity::EndToEnd,
            max_transmitters: Some(1),
            max_streams_per_receiver: None,
            reception_mode: None,
            members: peers
                .iter()
                .enumerate()
                .map(|(i, p)| GroupMemberSpec {
                    mcvideo_id: names[i].into(),
                    sdp_offer: p.sdp(names[i], "RTP/AVP", Some(ssrc(i)), true, ""),
                    priority: priority(i),
                    receive_only: false,
                    tc_key: None,
                })
                .collect(),
        })
        .expect("created");
    peers
        .into_iter()
        .zip(&created.members)
        .enumerate()
        .map(|(i, (peer, a))| {
            let r = RelayAddrs::from_sdp(&a.sdp_answer);
            GroupMember {
                peer,
                ssrc: ssrc(i),
                video: r.video,
                control: r.control.expect("a control channel"),
            }
        })
        .collect()
}
