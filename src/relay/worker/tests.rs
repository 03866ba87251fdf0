//! A bug while handling one call ends that call, not its worker or the other calls on it.

use super::super::{Engine, EngineConfig};
use crate::control::call::{AnswerCall, CallEventKind, CreateCall};
use crate::control::{MediaSecurity, ReleaseReason};
use std::net::UdpSocket;
use std::time::Duration;

fn sock() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

fn sdp(s: &UdpSocket) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=video {} RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=rtcp-mux\r\n",
        s.local_addr().unwrap().port()
    )
}

/// Sets up call `id` and returns (caller, callee, the relay's address for the caller).
fn call(engine: &Engine, id: &str) -> (UdpSocket, UdpSocket, std::net::SocketAddr) {
    let (caller, callee) = (sock(), sock());
    engine
        .create_call(CreateCall {
            call_id: Some(id.into()),
            caller_id: "sip:a@x".into(),
            caller_sdp: sdp(&caller),
            callee_id: "sip:b@x".into(),
            video_push: true,
            video_pull: false,
            commencement_mode: None,
            media_security: MediaSecurity::EndToEnd,
            caller_tc_key: None,
            callee_interface: None,
            caller_interface: None,
        })
        .unwrap();
    let answer = engine
        .accept_call(
            id,
            AnswerCall {
                callee_sdp: sdp(&callee),
                callee_tc_key: None,
            },
        )
        .unwrap();
    let relay = crate::sdp::SessionDescription::parse(&answer.sdp_answer).unwrap();
    let to = relay.media()[0].rtp_addr().unwrap();
    (caller, callee, to)
}

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x41, 0x42]);
    p
}

#[test]
fn a_panic_in_one_call_ends_only_that_call() {
    let engine = Engine::start(EngineConfig {
        port_min: 47_400,
        port_max: 47_499,
        workers: 1,
        ..EngineConfig::default()
    })
    .unwrap();
    let mut events = engine.subscribe();
    let (good_tx, good_rx, good_to) = call(&engine, "good");
    let (bad_tx, _bad_rx, bad_to) = call(&engine, "test-panic-1");
    // The bad call's first packet hits the test hook: that call ends with its own reason.
    bad_tx.send_to(&rtp(1), bad_to).unwrap();
    let reason = loop {
        let ev = events.blocking_recv().unwrap();
        if let CallEventKind::Released { reason } = ev.kind {
            assert_eq!(&*ev.call_id, "test-panic-1", "only the bad call ends");
            break reason;
        }
    };
    assert_eq!(reason, ReleaseReason::InternalError);
    // The worker and the other call on it go on.
    let mut buf = [0u8; 64];
    for seq in 2..5u16 {
        good_tx.send_to(&rtp(seq), good_to).unwrap();
        let n = good_rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &rtp(seq)[..]);
    }
    assert!(engine.call("test-panic-1").is_none());
    assert_eq!(
        engine.call("good").unwrap().state,
        crate::control::call::CallState::Established
    );
    let stats = engine.stats();
    assert_eq!(stats.calls_released.get("internal_error"), Some(&1));
    assert_eq!(stats.active_calls, 1);
    // A new call on the same worker works too.
    let (tx, rx, to) = call(&engine, "after");
    tx.send_to(&rtp(9), to).unwrap();
    assert_eq!(rx.recv(&mut buf).unwrap(), rtp(9).len());
    engine.shutdown();
    assert_eq!(engine.stats().ports_in_use, 0);
}
