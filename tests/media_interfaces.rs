//! Several media interfaces: a caller on IPv4 pushes to a callee on IPv6 through one call (the
//! relay bridges the families), and a leg whose address family the relay cannot serve is
//! refused with a clear error instead of being given an address it cannot reach.

use mcvideo_relay::control::call::{AnswerCall, CreateCall, SetupError};
use mcvideo_relay::control::{MediaSecurity, Party};
use mcvideo_relay::relay::{Engine, EngineConfig, MediaInterface};
use mcvideo_relay::sdp::SessionDescription;
use std::net::{IpAddr, UdpSocket};
use std::time::Duration;

fn sock(ip: &str) -> UdpSocket {
    let s = UdpSocket::bind((ip, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

fn sdp(s: &UdpSocket) -> String {
    let a = s.local_addr().unwrap();
    let fam = if a.is_ipv4() { "IP4" } else { "IP6" };
    format!(
        "v=0\r\no=- 1 1 IN {fam} {ip}\r\ns=-\r\nc=IN {fam} {ip}\r\nt=0 0\r\n\
         m=video {port} RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=rtcp-mux\r\na=ssrc:77 cname:x\r\n",
        ip = a.ip(),
        port = a.port()
    )
}

fn iface(name: &str, ip: &str, port_min: u16) -> MediaInterface {
    MediaInterface {
        name: name.into(),
        ip: ip.parse().unwrap(),
        advertised: None,
        port_min,
        port_max: port_min + 99,
    }
}

fn request(caller: &UdpSocket, callee_interface: Option<&str>) -> CreateCall {
    CreateCall {
        call_id: Some("bridge".into()),
        caller_id: "sip:a@x".into(),
        caller_sdp: sdp(caller),
        callee_id: "sip:b@x".into(),
        video_push: true,
        video_pull: false,
        commencement_mode: None,
        media_security: MediaSecurity::EndToEnd,
        caller_tc_key: None,
        callee_interface: callee_interface.map(str::to_owned),
        caller_interface: None,
    }
}

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 77, 1, 2, 3, 4]);
    p
}

#[test]
fn a_v4_caller_pushes_to_a_v6_callee() {
    let engine = Engine::start(EngineConfig {
        interfaces: vec![
            iface("access", "127.0.0.1", 48_800),
            iface("core", "::1", 48_900),
        ],
        workers: 1,
        ..EngineConfig::default()
    })
    .unwrap();
    let (caller, callee) = (sock("127.0.0.1"), sock("::1"));
    let offer = engine.create_call(request(&caller, Some("core"))).unwrap();
    let to_callee = SessionDescription::parse(&offer.sdp_offer).unwrap();
    assert_eq!(
        to_callee.media()[0].rtp_addr().unwrap().ip(),
        "::1".parse::<IpAddr>().unwrap(),
        "the callee is offered the relay's IPv6 address"
    );
    assert!(
        offer.sdp_offer.contains("c=IN IP6 ::1"),
        "{}",
        offer.sdp_offer
    );
    let answer = engine
        .accept_call(
            "bridge",
            AnswerCall {
                callee_sdp: sdp(&callee),
                callee_tc_key: None,
            },
        )
        .unwrap();
    let to_caller = SessionDescription::parse(&answer.sdp_answer).unwrap();
    let relay_v4 = to_caller.media()[0].rtp_addr().unwrap();
    assert!(relay_v4.is_ipv4() && answer.sdp_answer.contains("c=IN IP4 127.0.0.1"));
    let mut buf = [0u8; 64];
    for seq in 1..=5u16 {
        caller.send_to(&rtp(seq), relay_v4).unwrap();
        let (n, from) = callee.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &rtp(seq)[..]);
        assert!(from.is_ipv6(), "delivered over IPv6");
    }
    let s = engine.release_call("bridge").unwrap();
    assert_eq!(s.callee.packets_out, 5);
    assert_eq!(engine.stats().ports_in_use, 0);
    engine.shutdown();
}

#[test]
fn a_family_the_relay_cannot_serve_is_refused_with_a_clear_error() {
    // A relay on IPv6 only: a v4 caller is refused at once, nothing allocated.
    let engine = Engine::start(EngineConfig {
        interfaces: vec![iface("core", "::1", 49_000)],
        workers: 1,
        ..EngineConfig::default()
    })
    .unwrap();
    let err = engine
        .create_call(request(&sock("127.0.0.1"), None))
        .unwrap_err();
    match &err {
        SetupError::NoAcceptableMedia { party, reason } => {
            assert_eq!(*party, Party::Caller);
            assert!(reason.contains("IPv4"), "{reason}");
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(engine.stats().ports_in_use, 0);
    // A v6 caller whose callee answers from IPv4: refused at the answer, naming the callee.
    let caller = sock("::1");
    engine.create_call(request(&caller, None)).unwrap();
    let err = engine
        .accept_call(
            "bridge",
            AnswerCall {
                callee_sdp: sdp(&sock("127.0.0.1")),
                callee_tc_key: None,
            },
        )
        .unwrap_err();
    match &err {
        SetupError::NoAcceptableMedia { party, reason } => {
            assert_eq!(*party, Party::Callee);
            assert!(
                reason.contains("IPv4") && reason.contains("IPv6"),
                "{reason}"
            );
        }
        e => panic!("{e:?}"),
    }
    // An unknown interface name is a bad request.
    let mut req = request(&caller, Some("nowhere"));
    req.call_id = Some("other".into());
    assert_eq!(engine.create_call(req).unwrap_err().code(), "bad_request");
    engine.shutdown();
    assert_eq!(engine.stats().ports_in_use, 0);
}
