//! Golden files for one-to-one calls (push and pull): every transmission control datagram,
//! every call event (as the sidecar's SSE renders it) and every timer change of each scenario,
//! compared byte for byte with `tests/golden/<scenario>.txt` (tests/golden/README.md).
//!
//! The scenarios are the one-to-one behaviours the other tests exercise (video_push_call,
//! video_pull_call, callee_tries_to_transmit, grant_retransmission, duration_expiry,
//! end_of_transmission, inactivity, designated_ue, authorization_refusals, relay_video_push,
//! the server's unit tests and the call_ops fuzz target), each driven on virtual time through
//! `CallTable` and `Call` only (tests/golden/driver.rs). `GOLDEN_UPDATE=1` rewrites the files.
#![allow(clippy::unwrap_used)]

#[path = "golden/driver.rs"]
mod driver;

use driver::{check, Driver, Ports};
use mcvideo_relay::control::call::{CallConfig, CreateCall};
use mcvideo_relay::control::policy::RulePolicy;
use mcvideo_relay::control::registry::UeEntry;
use mcvideo_relay::control::{CommencementMode, MediaSecurity, Party, ReleaseReason};
use mcvideo_relay::wire::tc::{AppName, EmitOptions, MessageKind, TcMessage};
use std::sync::Arc;
use std::time::Duration;

const CALLER: &str = "sip:alice@mcx.example";
const CALLEE: &str = "sip:bob@mcx.example";
const ID: &str = "call-1";
const CALLER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==";
const CALLEE_KEY: &str = "GxoZGBcWFRQTEhEQDw4NDAsKCQgHBgUEAwIBAA==";

/// The caller's offer: audio, video with an a=ssrc, the MCVideo control line, a MIKEY line.
fn caller_offer() -> String {
    "v=0\r\n\
o=alice 1 1 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
a=key-mgmt:mikey AQAFgM0XflABAAAAAAAAAAAAAAYAyO2ZsKrXRmUAAAAAAAAAAAAAAAAAAAAAAA==\r\n\
m=audio 6000 RTP/SAVP 96\r\n\
i=audio component of MCVideo\r\n\
a=rtpmap:96 AMR-WB/16000\r\n\
a=ssrc:1111 cname:alice\r\n\
m=video 6002 RTP/SAVP 97\r\n\
i=video component of MCVideo\r\n\
a=rtpmap:97 H264/90000\r\n\
a=fmtp:97 packetization-mode=1\r\n\
a=ssrc:2222 cname:alice\r\n\
a=sendonly\r\n\
m=application 6004 udp MCVideo\r\n\
a=fmtp:MCVideo mc_queueing;mc_priority=5;mc_implicit_request\r\n"
        .to_owned()
}

/// The caller's offer without a control channel (port 0).
fn caller_offer_no_control() -> String {
    caller_offer().replace(
        "m=application 6004 udp MCVideo",
        "m=application 0 udp MCVideo",
    )
}

/// The callee's answer: same lines, its own ports; the control line with port 0 when
/// `control` is false.
fn callee_answer(control: bool) -> String {
    format!(
        "v=0\r\n\
o=bob 7 7 IN IP4 198.51.100.20\r\n\
s=-\r\n\
c=IN IP4 198.51.100.20\r\n\
t=0 0\r\n\
m=audio 7000 RTP/SAVP 96\r\n\
a=rtpmap:96 AMR-WB/16000\r\n\
m=video 7002 RTP/SAVP 97\r\n\
a=rtpmap:97 H264/90000\r\n\
a=recvonly\r\n\
m=application {} udp MCVideo\r\n\
a=fmtp:MCVideo mc_queueing\r\n",
        if control { 7004 } else { 0 }
    )
}

/// A per_leg offer (SDES keys) and its answer, as in the call_ops fuzz target.
fn per_leg_offer() -> String {
    let crypto = format!("a=crypto:1 AEAD_AES_128_GCM inline:{CALLER_KEY}\r\n");
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n\
         m=audio 5000 RTP/SAVP 96\r\n{crypto}\
         m=video 5002 RTP/SAVP 97\r\n{crypto}a=ssrc:42 cname:x\r\n\
         m=application 5004 udp MCVideo\r\na=fmtp:MCVideo mc_implicit_request\r\n"
    )
}

fn per_leg_answer(reject_audio: bool) -> String {
    let crypto = format!("a=crypto:1 AEAD_AES_128_GCM inline:{CALLEE_KEY}\r\n");
    format!(
        "v=0\r\no=- 2 2 IN IP4 127.0.0.3\r\ns=-\r\nc=IN IP4 127.0.0.3\r\nt=0 0\r\n\
         m=audio {} RTP/SAVP 96\r\n{crypto}m=video 6002 RTP/SAVP 97\r\n{crypto}\
         m=application 6004 udp MCVideo\r\n",
        if reject_audio { 0 } else { 6000 },
    )
}

fn push_request(caller_sdp: String) -> CreateCall {
    CreateCall {
        call_id: Some(ID.into()),
        caller_id: CALLER.into(),
        caller_sdp,
        callee_id: CALLEE.into(),
        video_push: true,
        video_pull: false,
        commencement_mode: None,
        media_security: MediaSecurity::EndToEnd,
        caller_tc_key: None,
        caller_interface: None,
        callee_interface: None,
    }
}

fn pull_request(caller_sdp: String) -> CreateCall {
    CreateCall {
        video_push: false,
        video_pull: true,
        ..push_request(caller_sdp)
    }
}

/// call-1, a push with control channels on both sides, accepted at the current time.
fn push_established(d: &mut Driver) {
    d.create(push_request(caller_offer())).unwrap();
    d.accept(ID, &callee_answer(true));
}

/// call-1, a pull with control channels on both sides, accepted at the current time.
fn pull_established(d: &mut Driver) {
    d.create(pull_request(caller_offer())).unwrap();
    d.accept(ID, &callee_answer(true));
}

fn msg(kind: MessageKind, ssrc: u32) -> TcMessage<'static> {
    TcMessage::new(kind, ssrc)
}

fn acked(kind: MessageKind, ssrc: u32) -> TcMessage<'static> {
    let mut m = TcMessage::new(kind, ssrc);
    m.ack_required = true;
    m
}

/// A Transmission Control Ack of the message `name`/`message_type`.
fn ack_of(name: AppName, message_type: u8, ssrc: u32) -> TcMessage<'static> {
    let mut m = TcMessage::new(MessageKind::TransmissionControlAck, ssrc);
    m.fields.message_type = Some(message_type);
    m.fields.message_name = Some(name);
    m
}

fn bytes(m: &TcMessage<'_>) -> Vec<u8> {
    m.to_vec(&EmitOptions::default()).unwrap()
}

/// A raw RTCP APP packet: `subtype` (5 bits, the `x` bit included), `name`, `payload` (a
/// multiple of 4 octets).
fn raw_app(subtype: u8, name: &[u8; 4], ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let words = (12 + payload.len()) / 4 - 1;
    let mut b = vec![0x80 | (subtype & 0x1f), 204];
    b.extend_from_slice(&(words as u16).to_be_bytes());
    b.extend_from_slice(&ssrc.to_be_bytes());
    b.extend_from_slice(name);
    b.extend_from_slice(payload);
    b
}

// ---------------------------------------------------------------------------------------------
// Video push: the whole call (video_push_call.rs, relay_video_push.rs)

#[test]
fn push_request_to_release() {
    let mut d = Driver::new(CallConfig::default());
    d.note("seed steps 1-4: request, offer for the callee");
    d.create(push_request(caller_offer())).unwrap();
    d.advance(500);
    d.note("steps 6-10: accepted, Granted to the caller, Notification to the callee");
    d.accept(ID, &callee_answer(true));
    d.note("step 11: media flows");
    d.media_every(ID, Party::Caller, 3, 50, 40);
    d.note("NOTE 2: the caller ends its transmission, the call is released");
    d.msg(
        ID,
        Party::Caller,
        &msg(MessageKind::TransmissionEndRequest, 0x0a11_ce00),
    );
    d.advance(100);
    d.remove(ID);
    check("push_request_to_release", &d.finish());
}

#[test]
fn push_end_request_with_ack_bit() {
    let mut d = Driver::new(CallConfig::default());
    push_established(&mut d);
    d.media(ID, Party::Caller, 10);
    let mut end = acked(MessageKind::TransmissionEndRequest, 0xa11ce);
    end.fields.transmitting_user_id = Some(CALLER);
    d.msg(ID, Party::Caller, &end);
    d.note("again, after the release: nothing");
    d.msg(ID, Party::Caller, &end);
    check("push_end_request_with_ack_bit", &d.finish());
}

#[test]
fn push_fresh_ssrcs_when_the_offer_names_none() {
    let mut d = Driver::new(CallConfig::default());
    let bare = caller_offer()
        .replace("a=ssrc:1111 cname:alice\r\n", "")
        .replace("a=ssrc:2222 cname:alice\r\n", "");
    for i in 0..3 {
        let mut req = push_request(bare.clone());
        req.call_id = Some(format!("c{i}").into());
        d.create(req).unwrap();
        d.accept(&format!("c{i}"), &callee_answer(true));
    }
    d.note("a generated call ID");
    let mut req = push_request(bare);
    req.call_id = None;
    let id = d.create(req).unwrap();
    d.accept(&id, &callee_answer(true));
    check("push_fresh_ssrcs_when_the_offer_names_none", &d.finish());
}

#[test]
fn push_mc_ssrcs_in_fmtp_win() {
    let mut d = Driver::new(CallConfig::default());
    let offer = caller_offer().replace(
        "mc_implicit_request\r\n",
        "mc_implicit_request;mc_video_ssrc=3333;mc_audio_ssrc=4444\r\n",
    );
    d.create(push_request(offer)).unwrap();
    d.accept(ID, &callee_answer(true));
    check("push_mc_ssrcs_in_fmtp_win", &d.finish());
}

#[test]
fn push_per_leg() {
    let mut d = Driver::new(CallConfig::default());
    let mut req = push_request(per_leg_offer());
    req.media_security = MediaSecurity::PerLeg;
    d.create(req).unwrap();
    d.accept(ID, &per_leg_answer(false));
    d.media(ID, Party::Caller, 1);
    d.msg(
        ID,
        Party::Caller,
        &msg(MessageKind::TransmissionEndRequest, 42),
    );
    d.note("a second call whose callee rejects the audio");
    let mut req = push_request(per_leg_offer());
    req.call_id = Some("call-2".into());
    req.media_security = MediaSecurity::PerLeg;
    d.create(req).unwrap();
    d.accept("call-2", &per_leg_answer(true));
    check("push_per_leg", &d.finish());
}

#[test]
fn push_shutdown_and_external_release() {
    let mut d = Driver::new(CallConfig::default());
    push_established(&mut d);
    d.media(ID, Party::Caller, 1);
    d.advance(1_000);
    d.release(ID, ReleaseReason::Released);
    d.note("again: unknown now");
    d.release(ID, ReleaseReason::Released);
    d.note("a second call, released for shutdown before any media");
    let mut req = push_request(caller_offer());
    req.call_id = Some("call-2".into());
    d.create(req).unwrap();
    d.accept("call-2", &callee_answer(true));
    d.release("call-2", ReleaseReason::Shutdown);
    d.note("a third, released while offered");
    let mut req = push_request(caller_offer());
    req.call_id = Some("call-3".into());
    d.create(req).unwrap();
    d.release("call-3", ReleaseReason::Released);
    check("push_shutdown_and_external_release", &d.finish());
}

#[test]
fn push_reject() {
    let mut d = Driver::new(CallConfig::default());
    d.create(push_request(caller_offer())).unwrap();
    d.advance(2_000);
    d.reject(ID);
    d.reject(ID);
    d.note("an established call cannot be rejected");
    d.create(push_request(caller_offer())).unwrap();
    d.accept(ID, &callee_answer(true));
    d.reject(ID);
    check("push_reject", &d.finish());
}

// ---------------------------------------------------------------------------------------------
// Video pull (video_pull_call.rs)

#[test]
fn pull_callee_granted_caller_notified() {
    let mut d = Driver::new(CallConfig::default());
    pull_established(&mut d);
    d.media(ID, Party::Callee, 5);
    d.note("the caller's End Request does not end the pull");
    d.msg(
        ID,
        Party::Caller,
        &msg(MessageKind::TransmissionEndRequest, 1),
    );
    d.note("the callee's does");
    d.msg(
        ID,
        Party::Callee,
        &msg(MessageKind::TransmissionEndRequest, 2),
    );
    check("pull_callee_granted_caller_notified", &d.finish());
}

#[test]
fn pull_caller_is_receive_only() {
    let cfg = CallConfig::default();
    let threshold = cfg.tc.revoke_after;
    let mut d = Driver::new(cfg);
    pull_established(&mut d);
    d.msg(
        ID,
        Party::Caller,
        &msg(MessageKind::TransmissionRequest, 0xa11ce),
    );
    d.msg(
        ID,
        Party::Caller,
        &acked(MessageKind::TransmissionRequest, 0xa11ce),
    );
    d.media(ID, Party::Caller, threshold);
    d.note("the caller keeps sending: Revoked #3 on T3");
    d.media_every(ID, Party::Caller, 2, 60, 100);
    d.note("the transmitter's Transmission Request: Granted again");
    d.msg(
        ID,
        Party::Callee,
        &acked(MessageKind::TransmissionRequest, 0xb0b),
    );
    d.note("Receive Media Request from the receiver: granted");
    d.msg(
        ID,
        Party::Caller,
        &msg(MessageKind::ReceiveMediaRequest, 0xa11ce),
    );
    d.note("Media Reception End Request from the receiver: End Request #8 to the callee");
    d.msg(
        ID,
        Party::Caller,
        &msg(MessageKind::MediaReceptionEndRequest, 0xa11ce),
    );
    check("pull_caller_is_receive_only", &d.finish());
}

#[test]
fn pull_without_control_rtcp_bye() {
    let mut d = Driver::new(CallConfig::default());
    d.create(pull_request(caller_offer_no_control())).unwrap();
    d.accept(ID, &callee_answer(false));
    d.media(ID, Party::Callee, 5);
    d.note("the receiver's BYE does not end the pull");
    d.bye(ID, Party::Caller);
    d.bye(ID, Party::Callee);
    check("pull_without_control_rtcp_bye", &d.finish());
}

#[test]
fn pull_t1_and_inactivity() {
    let mut d = Driver::new(CallConfig::default());
    pull_established(&mut d);
    d.note("no media: T4 retransmissions to the callee, then T1");
    d.run_until(31_000);
    d.note("a second pull: media then silence");
    let mut req = pull_request(caller_offer());
    req.call_id = Some("call-2".into());
    d.create(req).unwrap();
    d.accept("call-2", &callee_answer(true));
    d.media_every("call-2", Party::Callee, 2, 10, 40);
    d.advance(11_000);
    check("pull_t1_and_inactivity", &d.finish());
}

#[test]
fn pull_and_push_together_or_neither_refused() {
    let mut d = Driver::new(CallConfig::default());
    for (push, pull) in [(true, true), (false, false)] {
        let mut req = push_request(caller_offer());
        req.video_push = push;
        req.video_pull = pull;
        assert!(d.create(req).is_none());
    }
    check("pull_and_push_together_or_neither_refused", &d.finish());
}

// ---------------------------------------------------------------------------------------------
// The callee tries to transmit (callee_tries_to_transmit.rs)

#[test]
fn callee_request_rejected_receive_only() {
    let mut d = Driver::new(CallConfig::default());
    push_established(&mut d);
    let mut req = acked(MessageKind::TransmissionRequest, 0xb0b);
    req.fields.user_id = Some(CALLEE);
    d.msg(ID, Party::Callee, &req);
    d.msg(
        ID,
        Party::Callee,
        &msg(MessageKind::TransmissionRequest, 0xb0b),
    );
    check("callee_request_rejected_receive_only", &d.finish());
}

#[test]
fn callee_media_revoked_and_retransmitted() {
    let cfg = CallConfig::default();
    let threshold = cfg.tc.revoke_after;
    let mut d = Driver::new(cfg);
    push_established(&mut d);
    d.media(ID, Party::Callee, threshold - 1);
    d.media(ID, Party::Callee, 1);
    d.note("both keep sending for 20 s: T3 retransmissions up to C3, then silence");
    for _ in 0..200 {
        d.advance(100);
        d.media(ID, Party::Callee, 2);
        d.media(ID, Party::Caller, 2);
    }
    check("callee_media_revoked_and_retransmitted", &d.finish());
}

#[test]
fn callee_revoke_stops_when_quiet_or_acked() {
    let mut d = Driver::new(CallConfig::default());
    push_established(&mut d);
    d.media(ID, Party::Caller, 1);
    d.media(ID, Party::Callee, 10);
    d.note("the callee goes quiet");
    d.media_every(ID, Party::Caller, 1, 50, 100);
    d.note("a fresh burst: a fresh Revoked, which the callee acknowledges");
    d.media(ID, Party::Callee, 10);
    d.msg(ID, Party::Callee, &ack_of(AppName::Mcv1, 4, 0xb0b));
    for _ in 0..30 {
        d.advance(100);
        d.media(ID, Party::Callee, 1);
        d.media(ID, Party::Caller, 1);
    }
    check("callee_revoke_stops_when_quiet_or_acked", &d.finish());
}

// ---------------------------------------------------------------------------------------------
// Granted retransmission (grant_retransmission.rs)

#[test]
fn granted_retransmitted_c4_times_at_t4() {
    let mut d = Driver::new(CallConfig::default());
    push_established(&mut d);
    d.run_until(10_000);
    d.media(ID, Party::Caller, 1);
    check("granted_retransmitted_c4_times_at_t4", &d.finish());
}

#[test]
fn granted_first_media_stops_retransmission() {
    let mut d = Driver::new(CallConfig::default());
    push_established(&mut d);
    d.advance(1_000);
    d.media(ID, Party::Caller, 1);
    d.advance(5_000);
    check("granted_first_media_stops_retransmission", &d.finish());
}

#[test]
fn granted_ack_stops_retransmission() {
    let mut d = Driver::new(CallConfig::default());
    push_established(&mut d);
    d.advance(300);
    d.note("the caller acknowledges Granted (an Ack is never acknowledged)");
    d.msg(ID, Party::Caller, &ack_of(AppName::Mcv1, 0, 0xa11ce));
    d.advance(5_000);
    d.note("an acked Transmission Request from the transmitter: Ack, Granted");
    d.msg(
        ID,
        Party::Caller,
        &acked(MessageKind::TransmissionRequest, 0xa11ce),
    );
    d.note("an Ack with the x bit set is not acknowledged either");
    d.msg(ID, Party::Caller, &{
        let mut a = ack_of(AppName::Mcv1, 0, 0xa11ce);
        a.ack_required = true;
        a
    });
    d.note("the callee acknowledges the Notification");
    d.msg(ID, Party::Callee, &ack_of(AppName::Mcv1, 6, 0xb0b));
    check("granted_ack_stops_retransmission", &d.finish());
}

#[test]
fn granted_without_caller_control_channel() {
    let mut d = Driver::new(CallConfig::default());
    d.note("the caller has no control channel: no Granted, no T4; the callee is notified");
    d.create(push_request(caller_offer_no_control())).unwrap();
    d.accept(ID, &callee_answer(true));
    d.run_until(5_000);
    d.note("the callee has none: Granted to the caller only");
    let mut req = push_request(caller_offer());
    req.call_id = Some("call-2".into());
    d.create(req).unwrap();
    d.accept("call-2", &callee_answer(false));
    d.media("call-2", Party::Callee, 10);
    d.msg(
        "call-2",
        Party::Caller,
        &acked(MessageKind::TransmissionEndRequest, 1),
    );
    check("granted_without_caller_control_channel", &d.finish());
}

// ---------------------------------------------------------------------------------------------
// Maximum duration (duration_expiry.rs)

#[test]
fn max_duration_revoked_2() {
    let mut cfg = CallConfig::default();
    cfg.tc.max_duration = Some(Duration::from_secs(20));
    let mut d = Driver::new(cfg);
    push_established(&mut d);
    d.media_every(ID, Party::Caller, 4, 199, 100);
    d.advance(100);
    d.note("after the release: media and timers do nothing");
    d.media(ID, Party::Caller, 4);
    d.advance(1_000);
    check("max_duration_revoked_2", &d.finish());
}

#[test]
fn max_duration_before_media() {
    let mut cfg = CallConfig::default();
    cfg.tc.max_duration = Some(Duration::from_secs(2));
    let mut d = Driver::new(cfg);
    pull_established(&mut d);
    d.run_until(3_000);
    check("max_duration_before_media", &d.finish());
}

// ---------------------------------------------------------------------------------------------
// End of transmission (end_of_transmission.rs)

#[test]
fn end_request_from_callee_ignored() {
    let mut d = Driver::new(CallConfig::default());
    push_established(&mut d);
    d.msg(
        ID,
        Party::Callee,
        &msg(MessageKind::TransmissionEndRequest, 1),
    );
    d.msg(
        ID,
        Party::Callee,
        &acked(MessageKind::TransmissionEndRequest, 1),
    );
    check("end_request_from_callee_ignored", &d.finish());
}

#[test]
fn media_reception_end_request_8() {
    let mut d = Driver::new(CallConfig::default());
    push_established(&mut d);
    d.advance(200);
    d.msg(
        ID,
        Party::Callee,
        &msg(MessageKind::MediaReceptionEndRequest, 1),
    );
    d.note("after the release");
    d.msg(
        ID,
        Party::Callee,
        &msg(MessageKind::MediaReceptionEndRequest, 1),
    );
    d.note("with the ack bit, on a second call");
    let mut req = push_request(caller_offer());
    req.call_id = Some("call-2".into());
    d.create(req).unwrap();
    d.accept("call-2", &callee_answer(true));
    d.media("call-2", Party::Caller, 3);
    d.msg(
        "call-2",
        Party::Callee,
        &acked(MessageKind::MediaReceptionEndRequest, 1),
    );
    check("media_reception_end_request_8", &d.finish());
}

#[test]
fn receive_media_request() {
    let mut d = Driver::new(CallConfig::default());
    push_established(&mut d);
    d.msg(
        ID,
        Party::Callee,
        &msg(MessageKind::ReceiveMediaRequest, 0xb0b),
    );
    d.msg(
        ID,
        Party::Callee,
        &acked(MessageKind::ReceiveMediaRequest, 0xb0b),
    );
    d.note("from the transmitter: ignored");
    d.msg(
        ID,
        Party::Caller,
        &msg(MessageKind::ReceiveMediaRequest, 0xa11ce),
    );
    d.msg(
        ID,
        Party::Caller,
        &msg(MessageKind::MediaReceptionEndRequest, 0xa11ce),
    );
    check("receive_media_request", &d.finish());
}

#[test]
fn rtcp_bye_without_control_completes_the_push() {
    let mut d = Driver::new(CallConfig::default());
    d.create(push_request(caller_offer_no_control())).unwrap();
    d.accept(ID, &callee_answer(false));
    d.media(ID, Party::Caller, 5);
    d.bye(ID, Party::Callee);
    d.bye(ID, Party::Caller);
    d.bye(ID, Party::Caller);
    check("rtcp_bye_without_control_completes_the_push", &d.finish());
}

#[test]
fn rtcp_bye_with_control_does_not_release() {
    let mut d = Driver::new(CallConfig::default());
    push_established(&mut d);
    d.bye(ID, Party::Caller);
    d.media(ID, Party::Caller, 1);
    d.bye(ID, Party::Caller);
    d.bye(ID, Party::Callee);
    check("rtcp_bye_with_control_does_not_release", &d.finish());
}

// ---------------------------------------------------------------------------------------------
// Timers (inactivity.rs)

#[test]
fn media_inactivity_releases() {
    let mut d = Driver::new(CallConfig::default());
    push_established(&mut d);
    d.media_every(ID, Party::Caller, 2, 100, 40);
    d.advance(20_000);
    check("media_inactivity_releases", &d.finish());
}

#[test]
fn callee_media_does_not_keep_the_call_alive() {
    let mut d = Driver::new(CallConfig::default());
    push_established(&mut d);
    d.media(ID, Party::Caller, 1);
    d.media_every(ID, Party::Callee, 1, 110, 100);
    check("callee_media_does_not_keep_the_call_alive", &d.finish());
}

#[test]
fn t1_hang_timer_releases() {
    let mut d = Driver::new(CallConfig::default());
    push_established(&mut d);
    d.note("a spurious wake-up changes nothing");
    d.advance(10);
    d.wake(ID);
    d.run_until(60_000);
    check("t1_hang_timer_releases", &d.finish());
}

#[test]
fn unanswered_offer_times_out() {
    let mut d = Driver::new(CallConfig::default());
    d.create(push_request(caller_offer())).unwrap();
    d.note("messages and media before the answer do nothing");
    d.msg(
        ID,
        Party::Caller,
        &acked(MessageKind::TransmissionRequest, 1),
    );
    d.media(ID, Party::Caller, 3);
    d.bye(ID, Party::Caller);
    d.run_until(240_000);
    d.note("an answer after the release is refused");
    d.accept(ID, &callee_answer(true));
    d.remove(ID);
    check("unanswered_offer_times_out", &d.finish());
}

// ---------------------------------------------------------------------------------------------
// Designated UE, commencement mode (designated_ue.rs)

fn ue(id: &str, designated: bool, mode: Option<CommencementMode>) -> UeEntry {
    UeEntry {
        ue_id: id.into(),
        designated_for_private_calls: designated,
        commencement_mode: mode,
    }
}

#[test]
fn designated_ue_and_commencement_mode() {
    let mut d = Driver::new(CallConfig::default());
    d.note("designated UE only, with its mode");
    let r = d.registry();
    r.register(CALLEE, ue("bob-phone", false, None)).unwrap();
    r.register(
        CALLEE,
        ue("bob-vehicle", true, Some(CommencementMode::Automatic)),
    )
    .unwrap();
    r.register(
        CALLEE,
        ue("bob-tablet", false, Some(CommencementMode::Manual)),
    )
    .unwrap();
    d.create(push_request(caller_offer())).unwrap();
    d.note("the caller's requested mode wins");
    let mut req = push_request(caller_offer());
    req.call_id = Some("call-2".into());
    req.commencement_mode = Some(CommencementMode::Manual);
    d.create(req).unwrap();
    d.note("every UE when none is designated");
    let r = d.registry();
    assert!(r.unregister(CALLEE, "bob-vehicle"));
    let mut req = push_request(caller_offer());
    req.call_id = Some("call-3".into());
    d.create(req).unwrap();
    d.note("an unregistered callee: the default mode, nobody to deliver to");
    let mut req = push_request(caller_offer());
    req.call_id = Some("call-4".into());
    req.callee_id = "sip:carol@mcx.example".into();
    d.create(req).unwrap();
    check("designated_ue_and_commencement_mode", &d.finish());
}

#[test]
fn unregistered_callee_default_or_refused() {
    let mut d = Driver::new(CallConfig {
        default_commencement_mode: CommencementMode::Automatic,
        ..CallConfig::default()
    });
    d.create(push_request(caller_offer())).unwrap();
    let mut d2 = Driver::new(CallConfig {
        require_registered_callee: true,
        ..CallConfig::default()
    });
    assert!(d2.create(push_request(caller_offer())).is_none());
    let t = d.finish() + "# required registration\n" + &d2.finish();
    check("unregistered_callee_default_or_refused", &t);
}

// ---------------------------------------------------------------------------------------------
// Refusals (authorization_refusals.rs)

#[test]
fn authorization_and_setup_refusals() {
    let policy = Arc::new(RulePolicy {
        push_allow: vec!["sip:*@mcx.example".into()],
        push_deny: vec!["sip:trainee*@mcx.example".into()],
        receive_allow: vec!["sip:*@mcx.example".into()],
        receive_deny: vec!["sip:dispatch@mcx.example".into()],
    });
    let mut d = Driver::with_policy(CallConfig::default(), policy);
    let mut req = push_request(caller_offer());
    req.caller_id = "sip:trainee1@mcx.example".into();
    assert!(d.create(req).is_none());
    let mut req = push_request(caller_offer());
    req.callee_id = "sip:dispatch@mcx.example".into();
    assert!(d.create(req).is_none());
    let mut req = push_request(caller_offer());
    req.callee_id = "sip:eve@elsewhere.example".into();
    assert!(d.create(req).is_none());
    d.note("bad fields and SDP");
    let mut req = push_request(caller_offer());
    req.call_id = Some("bad id!".into());
    assert!(d.create(req).is_none());
    let mut req = push_request(caller_offer());
    req.caller_id = String::new();
    assert!(d.create(req).is_none());
    assert!(d
        .create(push_request("v=0\r\nnonsense\r\n".into()))
        .is_none());
    assert!(d
        .create(push_request(
            caller_offer().replace("m=video 6002", "m=video 0")
        ))
        .is_none());
    let mut req = push_request(caller_offer());
    req.media_security = MediaSecurity::PerLeg;
    assert!(d.create(req).is_none());
    d.note("the allowed pair goes through; a bad answer leaves it offered");
    d.create(push_request(caller_offer())).unwrap();
    d.accept(ID, "v=0\r\nnonsense\r\n");
    d.accept(
        ID,
        &callee_answer(true).replace(
            "m=audio 7000 RTP/SAVP 96\r\na=rtpmap:96 AMR-WB/16000\r\n",
            "",
        ),
    );
    d.accept("nope", &callee_answer(true));
    d.accept(ID, &callee_answer(true));
    d.accept(ID, &callee_answer(true));
    check("authorization_and_setup_refusals", &d.finish());
}

#[test]
fn ports_and_call_limits() {
    let mut d = Driver::new(CallConfig {
        max_calls: 1,
        ..CallConfig::default()
    });
    d.ports = Ports::new(4);
    d.note("fewer port pairs than one call needs (6)");
    assert!(d.create(push_request(caller_offer())).is_none());
    d.ports = Ports::new(1000);
    d.create(push_request(caller_offer())).unwrap();
    d.note("duplicate ID, then the call limit");
    assert!(d.create(push_request(caller_offer())).is_none());
    let mut other = push_request(caller_offer());
    other.call_id = Some("call-2".into());
    assert!(d.create(other).is_none());
    check("ports_and_call_limits", &d.finish());
}

// ---------------------------------------------------------------------------------------------
// Rate limiting, malformed and unknown input (server unit tests, call_ops)

#[test]
fn reply_rate_limited_under_a_flood() {
    let mut d = Driver::new(CallConfig::default());
    push_established(&mut d);
    d.media(ID, Party::Caller, 1);
    let req = bytes(&acked(MessageKind::TransmissionRequest, 7));
    d.note("10000 acked requests at one instant: the burst, then nothing");
    d.rx_repeat(ID, Party::Callee, &req, 10_000, 0);
    d.note("one every 10 ms for 3 s: the sustained rate");
    d.rx_repeat(ID, Party::Callee, &req, 300, 10);
    d.note("the caller's budget is its own");
    d.rx_repeat(ID, Party::Caller, &req, 30, 0);
    check("reply_rate_limited_under_a_flood", &d.finish());
}

#[test]
fn malformed_and_unknown_messages() {
    let mut d = Driver::new(CallConfig::default());
    push_established(&mut d);
    d.media(ID, Party::Caller, 1);
    d.note("too short, not RTCP, not APP, bad length, empty");
    d.rx(ID, Party::Callee, &[0x80, 0xcc, 0x00]);
    d.rx(ID, Party::Callee, &[0u8; 16]);
    d.rx(ID, Party::Callee, &[0x80, 0xc8, 0x00, 0x01, 0, 0, 0, 1]);
    d.rx(ID, Party::Callee, &raw_app(0x10, b"MCV0", 1, &[])[..8]);
    let mut long = raw_app(0x10, b"MCV0", 1, &[]);
    long[3] = 9;
    d.rx(ID, Party::Callee, &long);
    d.rx(ID, Party::Callee, &[]);
    d.note("unknown names and types, with the ack bit: no Ack");
    d.rx(ID, Party::Callee, &raw_app(0x10, b"MCV3", 1, &[]));
    d.rx(ID, Party::Callee, &raw_app(0x10 | 15, b"MCV0", 1, &[]));
    d.rx(ID, Party::Caller, &raw_app(0x10 | 31, b"MCV2", 1, &[]));
    d.rx(ID, Party::Caller, &raw_app(0x10, b"MCPT", 1, &[]));
    d.note("a field that is not allowed, a truncated field");
    d.rx(
        ID,
        Party::Callee,
        &raw_app(0x10, b"MCV0", 1, &[20, 2, 0x41, 0x42]),
    );
    d.rx(
        ID,
        Party::Callee,
        &raw_app(0x10, b"MCV0", 1, &[6, 200, 0x41, 0x42]),
    );
    d.note("known messages with nothing to do (server to participant, Release, Cancel)");
    d.msg(
        ID,
        Party::Callee,
        &acked(MessageKind::TransmissionGranted, 1),
    );
    d.msg(
        ID,
        Party::Caller,
        &acked(MessageKind::TransmissionRelease, 1),
    );
    d.msg(
        ID,
        Party::Callee,
        &acked(MessageKind::TransmissionCancelRequest, 1),
    );
    d.msg(
        ID,
        Party::Caller,
        &msg(MessageKind::QueuePositionRequest, 1),
    );
    d.msg(ID, Party::Callee, &ack_of(AppName::Other(*b"MCV9"), 3, 1));
    d.msg(
        ID,
        Party::Callee,
        &msg(MessageKind::TransmissionControlAck, 1),
    );
    d.note("compound datagrams: two messages; a message then garbage; garbage then a message");
    let mut two = bytes(&acked(MessageKind::ReceiveMediaRequest, 1));
    two.extend(bytes(&acked(MessageKind::TransmissionRequest, 1)));
    d.rx(ID, Party::Callee, &two);
    let mut tail = bytes(&acked(MessageKind::TransmissionRequest, 1));
    tail.extend([0x80, 0xcc, 0x00]);
    d.rx(ID, Party::Callee, &tail);
    let mut head = vec![0x80, 0xcc, 0x00, 0x00];
    head.extend(bytes(&acked(MessageKind::TransmissionRequest, 1)));
    d.rx(ID, Party::Callee, &head);
    d.note("the caller's Transmission End Request inside a compound ends the call");
    let mut end = bytes(&acked(MessageKind::TransmissionRequest, 2));
    end.extend(bytes(&acked(MessageKind::TransmissionEndRequest, 2)));
    end.extend(bytes(&acked(MessageKind::TransmissionRequest, 2)));
    d.rx(ID, Party::Caller, &end);
    check("malformed_and_unknown_messages", &d.finish());
}

#[test]
fn messages_after_release() {
    let mut d = Driver::new(CallConfig::default());
    push_established(&mut d);
    d.media(ID, Party::Caller, 1);
    d.msg(
        ID,
        Party::Caller,
        &msg(MessageKind::TransmissionEndRequest, 1),
    );
    d.note("the released call stays in the table until removed: every input does nothing");
    d.msg(
        ID,
        Party::Caller,
        &acked(MessageKind::TransmissionRequest, 1),
    );
    d.msg(
        ID,
        Party::Callee,
        &acked(MessageKind::TransmissionRequest, 1),
    );
    d.msg(
        ID,
        Party::Callee,
        &acked(MessageKind::ReceiveMediaRequest, 1),
    );
    d.msg(
        ID,
        Party::Callee,
        &acked(MessageKind::MediaReceptionEndRequest, 1),
    );
    d.media(ID, Party::Caller, 5);
    d.media(ID, Party::Callee, 50);
    d.bye(ID, Party::Caller);
    d.wake(ID);
    d.advance(60_000);
    d.accept(ID, &callee_answer(true));
    d.reject(ID);
    d.note("release_call on a released call: removed, no second Released");
    d.release(ID, ReleaseReason::Released);
    check("messages_after_release", &d.finish());
}

#[test]
fn two_calls_interleaved() {
    let mut d = Driver::new(CallConfig::default());
    push_established(&mut d);
    d.advance(250);
    let mut req = pull_request(caller_offer());
    req.call_id = Some("call-2".into());
    d.create(req).unwrap();
    d.accept("call-2", &callee_answer(true));
    d.note("both calls' T4 timers fire in time order");
    d.run_until(3_500);
    d.media(ID, Party::Caller, 1);
    d.media("call-2", Party::Callee, 1);
    d.msg(
        "call-2",
        Party::Callee,
        &acked(MessageKind::TransmissionEndRequest, 9),
    );
    d.run_until(20_000);
    check("two_calls_interleaved", &d.finish());
}
