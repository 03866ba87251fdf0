//! High availability, sans-IO: a one-to-one push call snapshot on one relay and restored on
//! another, on virtual time. The restored call keeps its grant, answers the caller's
//! Transmission End Request with End Response and End Notify and is released once; its timers
//! fire when the original's would have; Granted retransmissions go on counting where they
//! stood. The snapshot goes through its stored form (JSON body, secrets encoding).
#![cfg(feature = "ha")]

mod common;
use common::*;
use mcvideo_relay::control::call::snapshot::{CallSecrets, CallSnapshot};
use mcvideo_relay::control::call::{Call, CallConfig, CallEventKind, CallState};
use mcvideo_relay::control::server::TransmissionState;
use mcvideo_relay::control::{Party, ReleaseReason};
use mcvideo_relay::wire::tc::{MessageKind, TcMessage};
use std::time::{Duration, Instant};

fn config() -> CallConfig {
    let mut c = CallConfig::default();
    c.tc.max_duration = Some(Duration::from_secs(60));
    c.tc.media_inactivity = Duration::from_secs(5);
    c
}

/// The snapshot through its stored form, restored at `at`.
fn through_store(call: &Call, now: Instant, at: Instant) -> Call {
    let (snap, secrets) = call.snapshot(now);
    let body = serde_json::to_vec(&snap).unwrap();
    let sealed_part = secrets.encode();
    let body_text = String::from_utf8(body.clone()).unwrap();
    assert!(
        !body_text.contains("v=0"),
        "no SDP (and so no a=crypto) in the body"
    );
    let snap: CallSnapshot = serde_json::from_slice(&body).unwrap();
    let secrets = CallSecrets::decode(&sealed_part).unwrap();
    Call::restore(snap, secrets, at).unwrap()
}

fn drain(call: &mut Call) -> Vec<(Party, MessageKind)> {
    let mut buf = Vec::new();
    let mut v = Vec::new();
    while let Some(to) = call.poll_transmit(&mut buf) {
        v.push((to, TcMessage::parse(&buf).unwrap().kind));
    }
    v
}

fn events(call: &mut Call) -> Vec<CallEventKind> {
    std::iter::from_fn(|| call.poll_event().map(|e| e.kind)).collect()
}

#[test]
fn push_restored_mid_transmission_keeps_its_grant_and_ends_once() {
    let mut h = Harness::new(config());
    let offer = h.established();
    h.sent("call-1");
    h.events("call-1");
    for _ in 0..25 {
        h.advance(Duration::from_millis(40));
        h.media("call-1", Party::Caller, 3);
    }
    assert_eq!(h.events("call-1"), [CallEventKind::MediaStarted]);
    let t_snap = h.now;
    let orig = h.table.get("call-1").unwrap();
    let orig_deadline = orig.poll_timeout().unwrap();

    // The adopter's clock: another epoch; it restores as of the snapshot's time on its clock.
    #[allow(clippy::disallowed_methods)]
    let base = Instant::now() + Duration::from_secs(1000);
    let mut call = through_store(orig, t_snap, base);
    assert_eq!(call.state(), CallState::Established);
    assert_eq!(call.id(), "call-1");
    assert!(
        call.arbiter().may_forward(Party::Caller.slot()),
        "the grant is kept"
    );
    assert!(!call.arbiter().may_forward(Party::Callee.slot()));
    assert_eq!(call.arbiter().snapshot(), orig.arbiter().snapshot());
    assert!(call.server().media_started());
    assert_eq!(call.tc_stats(), orig.tc_stats());
    assert_eq!(call.streams(), orig.streams());
    assert_eq!(call.sdp_for(Party::Callee), Some(offer.sdp_offer.as_str()));
    assert!(call.sdp_for(Party::Caller).is_some());
    assert_eq!(
        call.poll_timeout().unwrap() - base,
        orig_deadline - t_snap,
        "the same deadline"
    );
    assert!(drain(&mut call).is_empty() && events(&mut call).is_empty());

    // Media goes on at the adopter; the caller then ends its transmission.
    let mut now = base;
    for _ in 0..10 {
        now += Duration::from_millis(40);
        call.handle_media(now, Party::Caller, 3);
    }
    let end = TcMessage::new(MessageKind::TransmissionEndRequest, 0x0a11_ce00);
    let bytes = end.to_vec(&Default::default()).unwrap();
    call.handle_control(now, Party::Caller, &bytes);
    assert_eq!(
        drain(&mut call),
        [
            (Party::Caller, MessageKind::TransmissionEndResponse),
            (Party::Callee, MessageKind::TransmissionEndNotify)
        ]
    );
    assert_eq!(
        events(&mut call),
        [
            CallEventKind::TransmissionEnded {
                reason: ReleaseReason::TransmissionCompleted
            },
            CallEventKind::Released {
                reason: ReleaseReason::TransmissionCompleted
            }
        ]
    );
    // Once: a repeated End Request, a release, time: nothing more.
    call.handle_control(now, Party::Caller, &bytes);
    call.release(now, ReleaseReason::Released);
    call.handle_timeout(now + Duration::from_secs(120));
    assert!(events(&mut call).is_empty());
    assert!(drain(&mut call).is_empty());
    assert_eq!(call.state(), CallState::Released);
    assert_eq!(call.transmission_state(), TransmissionState::Released);
}

/// Every timer of the restored call fires at the original's deadline: here media inactivity,
/// whose expiry releases the call (`media_timeout`), on both on virtual time.
#[test]
fn restored_timers_fire_at_the_same_deadlines() {
    let mut h = Harness::new(config());
    h.established();
    h.sent("call-1");
    h.events("call-1");
    h.advance(Duration::from_millis(300));
    h.media("call-1", Party::Caller, 1);
    h.advance(Duration::from_millis(1234));
    h.events("call-1");
    let t_snap = h.now;
    #[allow(clippy::disallowed_methods)]
    let base = Instant::now() + Duration::from_secs(1000);
    let mut call = through_store(h.table.get("call-1").unwrap(), t_snap, base);
    // Step both 1 ms at a time until each is released; compare when.
    let step = Duration::from_millis(1);
    let mut released = [None, None];
    for i in 1..=10_000u32 {
        h.advance(step);
        let now = base + step * i;
        if call.poll_timeout().is_some_and(|t| t <= now) {
            call.handle_timeout(now);
        }
        if released[0].is_none() && h.table.get("call-1").unwrap().state() == CallState::Released {
            released[0] = Some(i);
        }
        if released[1].is_none() && call.state() == CallState::Released {
            released[1] = Some(i);
        }
    }
    assert!(released[0].is_some());
    assert_eq!(released[0], released[1]);
    assert_eq!(call.release_reason(), Some(ReleaseReason::MediaTimeout));
    assert_eq!(
        drain(&mut call),
        [(Party::Callee, MessageKind::TransmissionEndNotify)]
    );
}

/// Restored before the first media: Granted goes on being retransmitted every T4 from where the
/// count stood, up to C4 in all, at the original's times.
#[test]
fn granted_retransmissions_continue_from_the_count() {
    let mut h = Harness::new(config());
    h.established();
    h.sent("call-1");
    h.events("call-1");
    h.advance(Duration::from_millis(1100)); // one retransmission (T4 1 s)
    assert_eq!(
        kinds(&h.sent("call-1")),
        [(Party::Caller, MessageKind::TransmissionGranted)]
    );
    let t_snap = h.now;
    #[allow(clippy::disallowed_methods)]
    let base = Instant::now() + Duration::from_secs(1000);
    let orig = h.table.get("call-1").unwrap();
    let snap = orig.server().snapshot(t_snap);
    let caller = snap.members.iter().find(|m| m.slot == 0).unwrap();
    assert_eq!(caller.transmission.as_ref().unwrap().granted_sent, 2);
    let mut call = through_store(orig, t_snap, base);
    let mut sent_at = Vec::new();
    for ms in (10..5000).step_by(10) {
        let now = base + Duration::from_millis(ms);
        if call.poll_timeout().is_some_and(|t| t <= now) {
            call.handle_timeout(now);
        }
        for (p, k) in drain(&mut call) {
            assert_eq!((p, k), (Party::Caller, MessageKind::TransmissionGranted));
            sent_at.push(ms);
        }
    }
    // The original sent at the grant and at 1100 ms (its timer was seen late, at the step),
    // and would send at 2100 and 3100 ms (C4 = 3 retransmissions): 1000 and 2000 ms after the
    // snapshot.
    assert_eq!(sent_at, [1000, 2000]);
    assert!(call.arbiter().may_forward(Party::Caller.slot()));
}

/// The snapshot of an offered call, with the offer timer: restored, it is answered normally.
#[test]
fn an_offered_call_restored_can_be_answered() {
    let mut h = Harness::new(config());
    h.create(create_request(caller_offer()));
    h.advance(Duration::from_secs(3));
    let t_snap = h.now;
    let orig = h.table.remove("call-1").unwrap();
    let call = through_store(&orig, t_snap, h.now);
    h.table.insert_restored(call).unwrap();
    assert!(h
        .table
        .insert_restored(through_store(&orig, t_snap, h.now))
        .is_err());
    let answer = h.table.accept_call(
        h.now,
        "call-1",
        mcvideo_relay::control::call::AnswerCall {
            callee_sdp: callee_answer(true),
            callee_tc_key: None,
        },
    );
    assert!(answer.is_ok(), "{answer:?}");
    assert!(h
        .table
        .get("call-1")
        .unwrap()
        .arbiter()
        .may_forward(Party::Caller.slot()));
}

/// A per_leg call as a record: its keys, tc keys and SDPs are sealed, the body holds none of
/// them, the restored call has the same keys, and a body changed in the store or another seal
/// key does not open.
#[test]
fn per_leg_record_seals_keys_and_binds_the_body() {
    use mcvideo_relay::control::MediaSecurity;
    use mcvideo_relay::ha::{SealKey, StoredCallError, SEAL_KEY_LEN};
    use mcvideo_relay::keys::{MasterKey, SrtpSuite};
    use mcvideo_relay::relay::CallImage as StoredCall;
    const CALLER_KEY: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
    const CALLEE_KEY: &str = "PS1uQCVMUTVRQnlmdzJtN2lHfTZjSFBNM3NrbH1k";
    let crypto = |k: &str| format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{k}\r\n");
    let offer = caller_offer()
        .replace(
            "a=ssrc:1111 cname:alice\r\n",
            &format!("a=ssrc:1111 cname:alice\r\n{}", crypto(CALLER_KEY)),
        )
        .replace(
            "a=ssrc:2222 cname:alice\r\n",
            &format!("a=ssrc:2222 cname:alice\r\n{}", crypto(CALLER_KEY)),
        );
    let answer = callee_answer(true)
        .replace(
            "a=rtpmap:96 AMR-WB/16000\r\n",
            &format!("a=rtpmap:96 AMR-WB/16000\r\n{}", crypto(CALLEE_KEY)),
        )
        .replace(
            "a=rtpmap:97 H264/90000\r\n",
            &format!("a=rtpmap:97 H264/90000\r\n{}", crypto(CALLEE_KEY)),
        );
    let mut h = Harness::new(config());
    let mut req = create_request(offer);
    req.media_security = MediaSecurity::PerLeg;
    let tc = MasterKey::new(SrtpSuite::AeadAes128Gcm, (0..28).collect()).unwrap();
    req.caller_tc_key = Some(tc.clone());
    h.create(req);
    h.table
        .accept_call(
            h.now,
            "call-1",
            mcvideo_relay::control::call::AnswerCall {
                callee_sdp: answer,
                callee_tc_key: None,
            },
        )
        .unwrap();
    let orig = h.table.get("call-1").unwrap();
    let (call, secrets) = orig.snapshot(h.now);
    let stored = StoredCall {
        call,
        secrets,
        rules: None,
    };
    let seal = SealKey::from_bytes(&[9; SEAL_KEY_LEN]).unwrap();
    let rec = stored.to_record(&seal, 1_700_000_000_000).unwrap();
    let body = String::from_utf8(rec.body.clone()).unwrap();
    for secret in [CALLER_KEY, CALLEE_KEY, "inline:", "v=0"] {
        assert!(!body.contains(secret), "{secret} in the body");
    }
    let raw = rec.encode().unwrap();
    assert!(!raw.windows(28).any(|w| w == tc.material.as_slice()));
    let back = StoredCall::from_record(&rec, &seal).unwrap();
    assert_eq!(back, stored);
    let restored = Call::restore(back.call, back.secrets, h.now).unwrap();
    assert_eq!(restored.streams(), orig.streams());
    assert_eq!(restored.tc_key(Party::Caller), Some(&tc));
    assert!(restored.streams()[1].keys[0].is_some());

    let mut tampered = rec.clone();
    tampered.body = body.replace("198.51.100.20", "203.0.113.66").into_bytes();
    assert_eq!(
        StoredCall::from_record(&tampered, &seal),
        Err(StoredCallError::Tampered)
    );
    let other = SealKey::from_bytes(&[8; SEAL_KEY_LEN]).unwrap();
    assert!(matches!(
        StoredCall::from_record(&rec, &other),
        Err(StoredCallError::Seal(_))
    ));
}
