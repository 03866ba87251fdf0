//! Golden files for group calls: the scenarios of `tests/group_rules/` (one per test there, plus
//! malformed input, a flood and a release), driven on virtual time through `TransmissionControlServer`'s
//! public API (tests/golden/group_driver.rs); every datagram, event, timer, route and queue
//! change compared byte for byte with `tests/golden/group_<scenario>.txt`
//! (tests/golden/README.md). `GOLDEN_UPDATE=1` rewrites the files.
#![allow(clippy::unwrap_used)]

#[path = "golden/driver.rs"]
mod driver;
#[path = "golden/group_driver.rs"]
mod group_driver;

use driver::check;
use group_driver::{member, GroupDriver};
use mcvideo_relay::control::server::{MemberSetup, ReceptionMode, TcConfig};
use mcvideo_relay::control::ReleaseReason;
use mcvideo_relay::wire::tc::{
    MessageKind as K, TcMessage, INDICATOR_EMERGENCY, INDICATOR_IMMINENT_PERIL,
};
use mcvideo_relay::Ssrc;
use std::time::Duration;

fn ssrc(d: &GroupDriver, user: &str) -> u32 {
    0x1000 + d.slot(user).index() as u32
}

fn request(d: &mut GroupDriver, user: &str, priority: Option<u8>, indicator: Option<u16>) {
    let mut m = TcMessage::new(K::TransmissionRequest, ssrc(d, user));
    m.fields.transmission_priority = priority;
    m.fields.transmission_indicator = indicator;
    d.msg(user, &m);
}

fn end(d: &mut GroupDriver, user: &str) {
    let m = TcMessage::new(K::TransmissionEndRequest, ssrc(d, user));
    d.msg(user, &m);
}

fn ack(d: &mut GroupDriver, user: &str, acked: K) {
    let mut m = TcMessage::new(K::TransmissionControlAck, ssrc(d, user));
    m.fields.message_type = Some(acked.message_type());
    m.fields.message_name = Some(acked.name());
    d.msg(user, &m);
}

fn receive_request(
    d: &mut GroupDriver,
    user: &str,
    ssrc: u32,
    from_user: Option<&str>,
    video: Option<u32>,
) {
    let mut m = TcMessage::new(K::ReceiveMediaRequest, ssrc);
    m.fields.transmitting_user_id = from_user;
    m.fields.video_ssrc = video;
    d.msg(user, &m);
}

fn video_ssrc(d: &GroupDriver, user: &str) -> u32 {
    let slot = d.slot(user);
    d.s.transmissions()
        .into_iter()
        .find(|t| t.member == slot)
        .map(|t| t.video_ssrc.get())
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// c9_cap.rs

#[test]
fn group_c9_automatic_reception_cap() {
    let cfg = TcConfig {
        max_transmitters: 3,
        max_streams_per_receiver: 2,
        ..TcConfig::default()
    };
    let mut d = GroupDriver::started(cfg, &["a", "b", "c", "viewer"]);
    for t in ["a", "b", "c"] {
        request(&mut d, t, None, None);
    }
    receive_request(&mut d, "viewer", 9, Some("c"), None);
    end(&mut d, "a");
    receive_request(&mut d, "viewer", 9, Some("c"), None);
    check("group_c9_automatic_reception_cap", &d.finish());
}

#[test]
fn group_c9_manual_requests_count() {
    let cfg = TcConfig {
        max_transmitters: 2,
        max_streams_per_receiver: 1,
        reception_mode: ReceptionMode::Manual,
        ..TcConfig::default()
    };
    let mut d = GroupDriver::started(cfg, &["a", "b", "v"]);
    request(&mut d, "a", None, None);
    request(&mut d, "b", None, None);
    receive_request(&mut d, "v", 9, Some("a"), None);
    receive_request(&mut d, "v", 9, Some("b"), None);
    check("group_c9_manual_requests_count", &d.finish());
}

// ---------------------------------------------------------------------------------------------
// cx2_two_transmitters.rs

#[test]
fn group_cx2_two_transmitters() {
    let cfg = TcConfig {
        max_transmitters: 2,
        ..TcConfig::default()
    };
    let mut d = GroupDriver::started(cfg, &["a", "b", "c", "d"]);
    request(&mut d, "a", None, None);
    request(&mut d, "b", None, None);
    request(&mut d, "c", None, None);
    end(&mut d, "a");
    check("group_cx2_two_transmitters", &d.finish());
}

#[test]
fn group_a_ssrc_used_when_free() {
    let mut d = GroupDriver::new(TcConfig::default());
    let mut a = member("a", 100);
    a.video_ssrc = Some(Ssrc(0xaaaa_0001));
    d.join(a);
    let mut b = member("b", 100);
    b.video_ssrc = Some(Ssrc(0xaaaa_0001));
    d.join(b);
    d.start();
    request(&mut d, "a", None, None);
    end(&mut d, "a");
    request(&mut d, "b", None, None);
    request(&mut d, "a", None, None);
    check("group_a_ssrc_used_when_free", &d.finish());
}

// ---------------------------------------------------------------------------------------------
// emergency.rs

#[test]
fn group_emergency_preempts_any_priority() {
    let mut d = GroupDriver::new(TcConfig::default());
    d.join(member("chief", 255));
    d.join(member("officer", 10));
    d.join(member("c", 100));
    d.start();
    request(&mut d, "chief", Some(255), None);
    request(&mut d, "officer", None, Some(INDICATOR_EMERGENCY));
    request(&mut d, "chief", Some(255), None);
    check("group_emergency_preempts_any_priority", &d.finish());
}

#[test]
fn group_emergency_outranks_peril_outranks_normal() {
    let mut d = GroupDriver::new(TcConfig::default());
    d.join(member("a", 100));
    d.join(member("peril", 1));
    d.join(member("normal", 255));
    d.join(member("emergency", 1));
    d.start();
    request(&mut d, "a", None, None);
    request(&mut d, "peril", None, Some(INDICATOR_IMMINENT_PERIL));
    request(&mut d, "normal", Some(255), None);
    request(&mut d, "emergency", None, Some(INDICATOR_EMERGENCY));
    end(&mut d, "emergency");
    check(
        "group_emergency_outranks_peril_outranks_normal",
        &d.finish(),
    );
}

#[test]
fn group_queued_member_raises_emergency() {
    let mut d = GroupDriver::new(TcConfig::default());
    d.join(member("a", 100));
    d.join(member("b", 100));
    d.start();
    request(&mut d, "a", None, None);
    request(&mut d, "b", None, None);
    request(&mut d, "b", None, Some(INDICATOR_EMERGENCY));
    check("group_queued_member_raises_emergency", &d.finish());
}

// ---------------------------------------------------------------------------------------------
// idle_retransmission.rs

fn idle_cfg() -> TcConfig {
    TcConfig {
        t2_idle: Duration::from_secs(1),
        c2_idle: 3,
        t1_inactivity: Duration::from_secs(20),
        ..TcConfig::default()
    }
}

#[test]
fn group_idle_repeated_then_t1_releases() {
    let mut d = GroupDriver::new(idle_cfg());
    for id in ["a", "b", "c"] {
        d.join(member(id, 100));
    }
    d.start();
    ack(&mut d, "a", K::TransmissionIdle);
    d.run_until(2_000);
    ack(&mut d, "b", K::TransmissionIdle);
    d.run_until(40_000);
    d.note("after the release");
    request(&mut d, "a", None, None);
    d.media("a", 5);
    check("group_idle_repeated_then_t1_releases", &d.finish());
}

#[test]
fn group_grant_stops_idle_and_t1() {
    let mut d = GroupDriver::new(idle_cfg());
    d.join(member("a", 100));
    d.join(member("b", 100));
    d.start();
    request(&mut d, "a", None, None);
    d.media("a", 1);
    for _ in 0..30 {
        d.advance(1_000);
        d.media("a", 30);
    }
    end(&mut d, "a");
    check("group_grant_stops_idle_and_t1", &d.finish());
}

// ---------------------------------------------------------------------------------------------
// late_joiner.rs

#[test]
fn group_late_joiner_receives() {
    let mut d = GroupDriver::started(TcConfig::default(), &["a", "b"]);
    request(&mut d, "a", None, None);
    d.join(member("late", 100));
    request(&mut d, "late", None, None);
    check("group_late_joiner_receives", &d.finish());
}

#[test]
fn group_late_joiner_idle_and_manual() {
    let mut d = GroupDriver::started(TcConfig::default(), &["a", "b"]);
    d.join(member("late", 100));
    let cfg = TcConfig {
        reception_mode: ReceptionMode::Manual,
        ..TcConfig::default()
    };
    let mut d2 = GroupDriver::started(cfg, &["a", "b"]);
    request(&mut d2, "a", None, None);
    d2.join(member("late", 100));
    let t = d.finish() + "# manual reception\n" + &d2.finish();
    check("group_late_joiner_idle_and_manual", &t);
}

// ---------------------------------------------------------------------------------------------
// manual_reception.rs

fn manual_cfg() -> TcConfig {
    TcConfig {
        reception_mode: ReceptionMode::Manual,
        t11_stream_idle: Duration::from_secs(10),
        ..TcConfig::default()
    }
}

#[test]
fn group_manual_receive_media_request() {
    let mut d = GroupDriver::started(manual_cfg(), &["a", "b", "c"]);
    request(&mut d, "a", None, None);
    d.media("a", 1);
    let video = video_ssrc(&d, "a");
    receive_request(&mut d, "b", 0x2000, None, Some(video));
    d.advance(1_001);
    ack(&mut d, "b", K::ReceiveMediaResponse);
    d.advance(3_000);
    receive_request(&mut d, "c", 0x2001, Some("a"), None);
    let mut endr = TcMessage::new(K::MediaReceptionEndRequest, 0x2000);
    endr.fields.video_ssrc = Some(video);
    d.msg("b", &endr);
    check("group_manual_receive_media_request", &d.finish());
}

#[test]
fn group_manual_t11_ends_with_8() {
    let mut d = GroupDriver::started(manual_cfg(), &["a", "b"]);
    request(&mut d, "a", None, None);
    for _ in 0..9 {
        d.advance(1_000);
        d.media("a", 30);
    }
    d.advance(1_001);
    check("group_manual_t11_ends_with_8", &d.finish());
}

#[test]
fn group_manual_request_naming_nothing() {
    let mut d = GroupDriver::started(manual_cfg(), &["a", "b"]);
    d.msg("b", &TcMessage::new(K::ReceiveMediaRequest, 1));
    check("group_manual_request_naming_nothing", &d.finish());
}

#[test]
fn group_manual_last_receiver_leaving_starts_t11() {
    let mut d = GroupDriver::started(manual_cfg(), &["a", "b", "c"]);
    request(&mut d, "a", None, None);
    receive_request(&mut d, "b", 9, Some("a"), None);
    for _ in 0..12 {
        d.advance(1_000);
        d.media("a", 30);
    }
    d.leave("b");
    for _ in 0..11 {
        d.advance(1_000);
        d.media("a", 30);
    }
    check("group_manual_last_receiver_leaving_starts_t11", &d.finish());
}

// ---------------------------------------------------------------------------------------------
// preemption.rs

#[test]
fn group_higher_priority_preempts_revoked_4() {
    let mut d = GroupDriver::new(TcConfig::default());
    d.join(member("low", 50));
    d.join(member("high", 200));
    d.join(member("c", 100));
    d.start();
    request(&mut d, "low", None, None);
    d.media("low", 10);
    request(&mut d, "high", Some(200), None);
    d.advance(1_001);
    ack(&mut d, "low", K::TransmissionRevoked);
    d.advance(5_000);
    end(&mut d, "low");
    check("group_higher_priority_preempts_revoked_4", &d.finish());
}

#[test]
fn group_equal_or_lower_priority_waits() {
    let mut d = GroupDriver::new(TcConfig::default());
    d.join(member("a", 100));
    d.join(member("b", 100));
    d.join(member("weak", 20));
    d.start();
    request(&mut d, "a", None, None);
    request(&mut d, "b", Some(100), None);
    request(&mut d, "weak", Some(255), None);
    check("group_equal_or_lower_priority_waits", &d.finish());
}

#[test]
fn group_weakest_of_two_preempted() {
    let cfg = TcConfig {
        max_transmitters: 2,
        ..TcConfig::default()
    };
    let mut d = GroupDriver::new(cfg);
    d.join(member("strong", 150));
    d.join(member("weak", 30));
    d.join(member("boss", 100));
    d.start();
    request(&mut d, "strong", Some(150), None);
    request(&mut d, "weak", Some(30), None);
    request(&mut d, "boss", Some(100), None);
    check("group_weakest_of_two_preempted", &d.finish());
}

// ---------------------------------------------------------------------------------------------
// queueing.rs

#[test]
fn group_queued_then_granted() {
    let mut d = GroupDriver::started(TcConfig::default(), &["a", "b", "c", "d"]);
    request(&mut d, "a", None, None);
    request(&mut d, "b", None, None);
    d.msg("b", &TcMessage::new(K::QueuePositionRequest, 7));
    d.msg("c", &TcMessage::new(K::QueuePositionRequest, 7));
    end(&mut d, "a");
    check("group_queued_then_granted", &d.finish());
}

#[test]
fn group_queue_ordered_and_bounded() {
    let cfg = TcConfig {
        max_queue: 2,
        ..TcConfig::default()
    };
    let mut d = GroupDriver::new(cfg);
    d.join(member("a", 100));
    d.join(member("b", 10));
    d.join(member("c", 200));
    d.join(member("d", 100));
    d.start();
    request(&mut d, "a", Some(100), None);
    request(&mut d, "b", Some(10), None);
    request(&mut d, "c", Some(100), None);
    request(&mut d, "d", None, None);
    end(&mut d, "b");
    check("group_queue_ordered_and_bounded", &d.finish());
}

#[test]
fn group_queueing_off_and_lone_member() {
    let cfg = TcConfig {
        queueing: false,
        ..TcConfig::default()
    };
    let mut d = GroupDriver::started(cfg.clone(), &["a", "b"]);
    request(&mut d, "a", None, None);
    request(&mut d, "b", None, None);
    let mut d2 = GroupDriver::started(cfg, &["alone"]);
    request(&mut d2, "alone", None, None);
    let t = d.finish() + "# a lone member\n" + &d2.finish();
    check("group_queueing_off_and_lone_member", &t);
}

// ---------------------------------------------------------------------------------------------
// receive_only.rs

#[test]
fn group_receive_only_rejected_and_revoked() {
    let mut d = GroupDriver::new(TcConfig::default());
    d.join(member("a", 100));
    d.join(MemberSetup {
        receive_only: true,
        ..member("viewer", 100)
    });
    d.start();
    request(&mut d, "viewer", None, None);
    request(&mut d, "a", None, None);
    d.media("viewer", 4);
    d.media("viewer", 1);
    d.media("viewer", 10);
    d.advance(1_001);
    d.advance(5_000);
    check("group_receive_only_rejected_and_revoked", &d.finish());
}

#[test]
fn group_unpermitted_media_while_idle() {
    let mut d = GroupDriver::started(TcConfig::default(), &["a", "b"]);
    d.media("b", 50);
    request(&mut d, "b", None, None);
    end(&mut d, "b");
    d.media("b", 5);
    check("group_unpermitted_media_while_idle", &d.finish());
}

// ---------------------------------------------------------------------------------------------
// transmitter_leaves.rs

#[test]
fn group_transmitter_leaves_queue_granted() {
    let mut d = GroupDriver::started(TcConfig::default(), &["a", "b", "c"]);
    request(&mut d, "a", None, None);
    request(&mut d, "b", None, None);
    d.media("a", 5);
    d.leave("a");
    d.media("a", 100);
    d.leave("a");
    check("group_transmitter_leaves_queue_granted", &d.finish());
}

#[test]
fn group_last_transmitter_leaves_idle() {
    let mut d = GroupDriver::started(TcConfig::default(), &["a", "b", "c"]);
    request(&mut d, "a", None, None);
    d.leave("a");
    check("group_last_transmitter_leaves_idle", &d.finish());
}

// ---------------------------------------------------------------------------------------------
// Beyond group_rules: malformed input, a flood, duration, inactivity, release, joins

#[test]
fn group_malformed_flood_and_release() {
    let cfg = TcConfig {
        max_duration: Some(Duration::from_secs(5)),
        ..TcConfig::default()
    };
    let mut d = GroupDriver::started(cfg, &["a", "b", "c"]);
    d.rx("b", &[0x80, 0xcc, 0x00]);
    d.rx("b", &[]);
    d.rx(
        "b",
        &[0x90, 0xcc, 0x00, 0x02, 0, 0, 0, 1, b'M', b'C', b'V', b'3'],
    );
    let mut req = TcMessage::new(K::TransmissionRequest, 0x1001);
    req.ack_required = true;
    let bytes = req
        .to_vec(&mcvideo_relay::wire::tc::EmitOptions::default())
        .unwrap();
    d.note("a burst of acked requests from b");
    for _ in 0..60 {
        d.rx("b", &bytes);
    }
    d.note("maximum duration (Revoked #2), then media inactivity");
    d.media("b", 1);
    d.run_until(6_000);
    request(&mut d, "c", None, None);
    d.media("c", 1);
    d.run_until(20_000);
    d.note("joins: a duplicate; release from outside");
    d.join(member("a", 100));
    request(&mut d, "a", None, None);
    d.release(ReleaseReason::Released);
    d.join(member("z", 100));
    check("group_malformed_flood_and_release", &d.finish());
}
