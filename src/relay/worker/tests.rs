//! A bug while handling one call ends that call, not its worker or the other calls on it; a
//! worker that does not answer in time is a timeout; `max_calls` counts every call.

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

/// A video push `id` from `caller`'s socket.
fn push(id: &str, caller: &UdpSocket) -> CreateCall {
    CreateCall {
        call_id: Some(id.into()),
        caller_id: "sip:a@x".into(),
        caller_sdp: sdp(caller),
        callee_id: "sip:b@x".into(),
        video_push: true,
        video_pull: false,
        commencement_mode: None,
        media_security: MediaSecurity::EndToEnd,
        caller_tc_key: None,
        callee_interface: None,
        caller_interface: None,
    }
}

/// Sets up call `id` and returns (caller, callee, the relay's address for the caller).
fn call(engine: &Engine, id: &str) -> (UdpSocket, UdpSocket, std::net::SocketAddr) {
    let (caller, callee) = (sock(), sock());
    engine.create_call(push(id, &caller)).unwrap();
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

/// A runtime whose clock jumps to the next timer whenever its tasks all wait: a reply timeout
/// fires at once. Only for waits on a held worker (a reply from a running worker could come
/// after the jump).
fn paused() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

/// A runtime on the real clock.
fn live() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

fn engine(port_min: u16, max_calls: usize) -> Engine {
    Engine::start(EngineConfig {
        port_min,
        port_max: port_min + 99,
        workers: 1,
        call: crate::control::call::CallConfig {
            max_calls,
            ..Default::default()
        },
        ..EngineConfig::default()
    })
    .unwrap()
}

fn group(id: &str, member: &UdpSocket) -> crate::relay::CreateGroupCall {
    crate::relay::CreateGroupCall {
        call_id: Some(id.into()),
        group_id: "g".into(),
        media_security: MediaSecurity::EndToEnd,
        max_transmitters: None,
        max_streams_per_receiver: None,
        reception_mode: None,
        members: vec![crate::relay::GroupMemberSpec {
            mcvideo_id: "alice".into(),
            sdp_offer: sdp(member),
            priority: 0,
            receive_only: false,
            tc_key: None,
        }],
    }
}

/// A worker that does not answer in time is `worker_timeout` (the outcome is unknown), never
/// "no such call"; once it answers again, so does the API.
#[test]
fn a_worker_that_does_not_answer_is_a_timeout_not_an_unknown_call() {
    use crate::control::call::SetupError;
    let engine = engine(47_500, 100);
    let _peers = call(&engine, "test-stall-1");
    let rt = paused();
    let held = super::hooks::STALL.lock().unwrap();
    // The worker is held in the first command for the call until `held` is dropped.
    let e = rt.block_on(engine.call_async("test-stall-1")).unwrap_err();
    assert!(matches!(e, SetupError::WorkerTimeout(_)), "{e:?}");
    assert_eq!(e.code(), "worker_timeout");
    let e = rt
        .block_on(engine.reject_call_async("test-stall-1"))
        .unwrap_err();
    assert_eq!(e.code(), "worker_timeout");
    let e = rt.block_on(engine.calls_async()).unwrap_err();
    assert_eq!(
        e.code(),
        "worker_timeout",
        "a list that would miss calls says so"
    );
    // The blocking API (callers without tokio) waits its 5 s on a thread, then says the same.
    let e = engine.reject_call("test-stall-1").unwrap_err();
    assert_eq!(e.code(), "worker_timeout");
    // A call that does not exist is still unknown (no worker is asked).
    let e = rt.block_on(engine.call_async("nope")).unwrap_err();
    assert_eq!(e.code(), "unknown_call");
    drop(held);
    // The worker goes on: the call is there (the late rejects found it established).
    let rt = live();
    let s = rt.block_on(engine.call_async("test-stall-1")).unwrap();
    assert_eq!(s.state, crate::control::call::CallState::Established);
    assert_eq!(rt.block_on(engine.calls_async()).unwrap().len(), 1);
    engine.shutdown();
    assert_eq!(engine.stats().ports_in_use, 0);
}

/// A bug while the worker handles a command (a one-to-one call's release or reading, a group
/// call's setup) is `internal_error`, never "bad request" or "no such call"; the call it
/// touched is released with reason `internal_error` and its ports go back.
#[test]
fn a_panic_while_handling_a_command_is_an_internal_error() {
    let engine = engine(47_600, 100);
    let mut events = engine.subscribe();
    let _peers = call(&engine, "test-panic-cmd-releasing");
    let e = engine.release_call("test-panic-cmd-releasing").unwrap_err();
    assert_eq!(e.code(), "internal_error", "{e}");
    let reason = loop {
        let ev = events.blocking_recv().unwrap();
        if let CallEventKind::Released { reason } = ev.kind {
            assert_eq!(&*ev.call_id, "test-panic-cmd-releasing");
            break reason;
        }
    };
    assert_eq!(reason, ReleaseReason::InternalError);
    assert!(engine.call("test-panic-cmd-releasing").is_none());

    let _peers = call(&engine, "test-panic-cmd-reading");
    let rt = live();
    let e = rt
        .block_on(engine.call_async("test-panic-cmd-reading"))
        .unwrap_err();
    assert_eq!(e.code(), "internal_error", "{e}");
    assert!(e.to_string().contains("test-panic-cmd-reading"), "{e}");

    let member = sock();
    let e = engine
        .create_group_call(group("test-panic-cmd-setting-up", &member))
        .unwrap_err();
    assert_eq!(e.code(), "internal_error", "{e}");
    assert!(!engine.is_group_call("test-panic-cmd-setting-up"));
    assert_eq!(
        engine.stats().ports_in_use,
        0,
        "the members' ports went back"
    );
    // The worker goes on with new calls of both kinds.
    engine.create_group_call(group("g-after", &member)).unwrap();
    let (tx, rx, to) = call(&engine, "after");
    tx.send_to(&rtp(9), to).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(rx.recv(&mut buf).unwrap(), rtp(9).len());
    engine.shutdown();
    assert_eq!(engine.stats().ports_in_use, 0);
}

/// `max_calls` counts every call: one-to-one and group calls share it.
#[test]
fn max_calls_counts_group_calls_too() {
    let engine = engine(47_700, 1);
    let member = sock();
    engine.create_group_call(group("g1", &member)).unwrap();
    let caller = sock();
    let req = || push("c1", &caller);
    let e = engine.create_call(req()).unwrap_err();
    assert_eq!(e.code(), "too_many_calls", "a group call counts");
    engine.release_group_call("g1").unwrap();
    engine.create_call(req()).unwrap();
    let e = engine.create_group_call(group("g2", &member)).unwrap_err();
    assert_eq!(e.code(), "too_many_calls", "a one-to-one call counts");
    assert_eq!(engine.stats().calls_refused.get("too_many_calls"), Some(&2));
    engine.shutdown();
}
