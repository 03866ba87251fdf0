//! The per-packet rules on virtual time, without sockets.

use super::*;
use crate::control::arbiter::Arbiter;
use crate::control::MediaSecurity;
use crate::keys::SrtpSuite;
use crate::wire::rtcp::emit_pli;
use std::sync::Arc;
use std::time::Duration;

const SSRC: u32 = 0x1234_5678;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn caller() -> SocketAddr {
    addr("10.0.0.1:5000")
}

fn callee() -> SocketAddr {
    addr("10.0.0.2:6000")
}

fn leg(remote: SocketAddr, announced: Vec<u32>) -> LegSetup {
    LegSetup {
        remote_rtp: Some(remote),
        remote_rtcp: Some(remote),
        announced,
        ..LegSetup::default()
    }
}

/// A one-to-one setup: the caller transmits; no control channels unless the test adds them.
fn setup(arbiter: &Arc<Arbiter>, security: MediaSecurity, streams: Vec<StreamSetup>) -> RulesSetup {
    RulesSetup {
        arbiter: arbiter.clone(),
        transmitter: Party::Caller,
        security,
        streams,
        control: [None, None],
        server_ssrc: 1,
        video_ssrc: SSRC,
        latch_after: 3,
    }
}

/// One H.264 video stream over `legs` (SRTP on the wire when `encrypted`).
fn video(encrypted: bool, legs: [LegSetup; 2], transmitter_ssrcs: Vec<u32>) -> StreamSetup {
    StreamSetup {
        kind: MediaKind::Video,
        encrypted,
        clock_rate: 90_000,
        encoding: None,
        legs,
        transmitter_ssrcs,
    }
}

fn rules(arbiter: &Arc<Arbiter>, announced: Vec<u32>) -> CallRules {
    let legs = [leg(caller(), announced.clone()), leg(callee(), vec![])];
    CallRules::new(&setup(
        arbiter,
        MediaSecurity::EndToEnd,
        vec![video(false, legs, announced)],
    ))
    .unwrap()
}

fn rtp(ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 96, 0, 1, 0, 0, 0, 0];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// `plain` as SRTP from `tx`.
pub(super) fn protect(tx: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
    let mut p = plain.to_vec();
    p.resize(plain.len() + 16, 0);
    let n = tx.protect_rtp(&mut p, plain.len()).unwrap();
    p.truncate(n);
    p
}

/// Of `sent` packets from strangers, the first [`STRANGER_BURST`] were checked (and dropped as
/// from the wrong source), the rest dropped over the budget.
pub(super) fn assert_stranger_budget(t: &Tally, sent: u64) {
    let burst = STRANGER_BURST as u64;
    assert_eq!(t.drops[DropReason::WrongSource as usize], burst);
    assert_eq!(t.drops[DropReason::RateLimited as usize], sent - burst);
}

fn at(party: Party) -> Ingress {
    Ingress {
        stream: 0,
        party,
        rtcp_socket: false,
    }
}

/// The address `party` announced in its SDP.
fn sdp_addr(party: Party) -> SocketAddr {
    match party {
        Party::Caller => caller(),
        Party::Callee => callee(),
    }
}

/// An arbiter of `arbiter`'s room with the caller granted.
fn caller_granted(arbiter: Arbiter) -> Arc<Arbiter> {
    assert!(arbiter.permit(Party::Caller.slot()));
    Arc::new(arbiter)
}

/// What arrives on the caller's RTCP socket of `stream`.
fn caller_rtcp_at(stream: usize) -> Ingress {
    Ingress {
        stream,
        party: Party::Caller,
        rtcp_socket: true,
    }
}

/// A per_leg video call, both legs keyed: the caller sends with `key(1)` and receives with
/// `key(3)`, the callee sends with `key(4)` and receives with `key(2)`.
fn per_leg_setup(
    arbiter: &Arc<Arbiter>,
    key: impl Fn(u8) -> MasterKey,
    announced: Vec<u32>,
) -> RulesSetup {
    let mut l0 = leg(caller(), announced.clone());
    l0.srtp_in = Some(key(1));
    l0.srtp_out = Some(key(3));
    let mut l1 = leg(callee(), vec![]);
    l1.srtp_in = Some(key(4));
    l1.srtp_out = Some(key(2));
    setup(
        arbiter,
        MediaSecurity::PerLeg,
        vec![video(true, [l0, l1], announced)],
    )
}

/// Judges `p` from `party`'s SDP address.
fn send(r: &mut CallRules, party: Party, now: Instant, p: &mut [u8]) -> Result<Egress, DropReason> {
    judge(r, party, sdp_addr(party), now, p)
}

fn judge(
    r: &mut CallRules,
    party: Party,
    from: SocketAddr,
    now: Instant,
    p: &mut [u8],
) -> Result<Egress, DropReason> {
    r.judge(at(party), from, now, p, &mut Tally::default())
}

#[test]
fn only_the_granted_caller_passes() {
    let t0 = Instant::now();
    let arbiter = Arc::new(Arbiter::new());
    let mut r = rules(&arbiter, vec![SSRC]);
    let not_granted = |r: &mut CallRules, party, p: &mut [u8]| {
        assert_eq!(send(r, party, t0, p), Err(DropReason::NotGranted));
    };
    let mut p = rtp(SSRC, &[0x41; 20]);
    not_granted(&mut r, Party::Caller, &mut p);
    assert!(arbiter.permit(Party::Caller.slot()));
    let e = send(&mut r, Party::Caller, t0, &mut p).unwrap();
    assert_eq!(
        e,
        Egress {
            len: p.len(),
            rtcp: false
        }
    );
    assert_eq!(r.destination(at(Party::Caller), false), Some(callee()));
    // The callee is receive only, whatever it sends.
    not_granted(&mut r, Party::Callee, &mut rtp(7, &[0x41; 20]));
    arbiter.forbid(Party::Caller.slot());
    not_granted(&mut r, Party::Caller, &mut p);
}

#[test]
fn unknown_ssrc_and_malformed_are_dropped() {
    let t0 = Instant::now();
    let arbiter = caller_granted(Arbiter::new());
    let mut r = rules(&arbiter, vec![SSRC]);
    let mut p = rtp(SSRC, &[0x41; 20]);
    send(&mut r, Party::Caller, t0, &mut p).unwrap();
    let other = rtp(SSRC + 1, &[0x41; 20]);
    let junk = vec![0x40, 1, 2];
    for (mut p, why) in [
        (other, DropReason::UnknownSsrc),
        (junk, DropReason::Malformed),
    ] {
        assert_eq!(send(&mut r, Party::Caller, t0, &mut p), Err(why));
    }
}

#[test]
fn a_stranger_never_takes_a_leg_and_is_rate_limited() {
    let t0 = Instant::now();
    let arbiter = caller_granted(Arbiter::new());
    let mut r = rules(&arbiter, vec![]);
    let stranger = addr("203.0.113.9:6666");
    let other = addr("203.0.113.10:6666");
    // Before the caller speaks, strangers' packets cost a check each, within a budget (two of
    // them interleaved, so neither gathers the consecutive packets of a NAT latch).
    let mut dropped = Tally::default();
    for i in 0..1000 {
        let mut p = rtp(99, &[0x41; 20]);
        let from = if i % 2 == 0 { stranger } else { other };
        if let Err(reason) = r.judge(at(Party::Caller), from, t0, &mut p, &mut dropped) {
            dropped.drop(reason);
        }
    }
    assert_stranger_budget(&dropped, 1000);
    // The SDP address speaks: the leg has its source; the stranger is dropped at the screen.
    let mut p = rtp(SSRC, &[0x41; 20]);
    send(&mut r, Party::Caller, t0, &mut p).unwrap();
    let later = t0 + Duration::from_secs(10);
    let mut p = rtp(SSRC, &[0x41; 20]);
    assert_eq!(
        judge(&mut r, Party::Caller, stranger, later, &mut p),
        Err(DropReason::WrongSource)
    );
}

#[test]
fn nat_latch_on_an_announced_ssrc_and_the_reply_goes_there() {
    let t0 = Instant::now();
    let arbiter = caller_granted(Arbiter::new());
    let mut r = rules(&arbiter, vec![SSRC]);
    let nat = addr("198.51.100.7:40001");
    let mut t = Tally::default();
    let mut p = rtp(SSRC, &[0x41; 20]);
    r.judge(at(Party::Caller), nat, t0, &mut p, &mut t).unwrap();
    assert!(t.latched, "strong evidence latches at once");
    // The keyframe request toward the caller goes to the latched address.
    assert_eq!(r.rtcp_destination(0, Party::Caller), Some(nat));
}

#[test]
fn keyframe_requests_are_throttled_on_virtual_time() {
    let t0 = Instant::now();
    let arbiter = caller_granted(Arbiter::new());
    let mut r = rules(&arbiter, vec![SSRC]);
    let pli = || {
        let mut b = vec![0u8; 12];
        emit_pli(9, SSRC, &mut b).unwrap();
        b
    };
    let mut first = pli();
    let e = send(&mut r, Party::Callee, t0, &mut first).unwrap();
    assert_eq!(
        e,
        Egress {
            len: 12,
            rtcp: true
        }
    );
    let mut t = Tally::default();
    let mut again = pli();
    let e = r
        .judge(
            at(Party::Callee),
            callee(),
            t0 + Duration::from_millis(100),
            &mut again,
            &mut t,
        )
        .unwrap();
    assert_eq!(e.len, 0, "a repeat within the interval is dropped");
    assert_eq!(t.drops[DropReason::RateLimited as usize], 1);
    // The callee's request `ms` after t0: how much of it goes on.
    let pli_at = |r: &mut CallRules, ms: u64| {
        let now = t0 + Duration::from_millis(ms);
        send(r, Party::Callee, now, &mut pli()).unwrap().len
    };
    assert_eq!(pli_at(&mut r, 600), 12);
    // A keyframe from the caller makes the next request redundant.
    let mut idr = rtp(SSRC, &[0x65, 0x88, 0x84]);
    send(&mut r, Party::Caller, t0 + Duration::from_secs(2), &mut idr).unwrap();
    assert_eq!(pli_at(&mut r, 2100), 0);
    // The relay's own request follows the same interval.
    let mut buf = [0u8; 64];
    assert_eq!(
        r.keyframe_request(t0 + Duration::from_millis(2200), &mut buf),
        Some((0, 12))
    );
    assert!(r
        .keyframe_request(t0 + Duration::from_millis(2300), &mut buf)
        .is_none());
    assert_eq!(
        r.keyframe_request(t0 + Duration::from_secs(5), &mut buf),
        Some((0, 12))
    );
}

#[test]
fn caller_bye_is_seen() {
    let t0 = Instant::now();
    let arbiter = Arc::new(Arbiter::new());
    let mut r = rules(&arbiter, vec![SSRC]);
    let mut bye = vec![0x81, 203, 0, 1];
    bye.extend_from_slice(&SSRC.to_be_bytes());
    let mut t = Tally::default();
    let e = r
        .judge(at(Party::Caller), caller(), t0, &mut bye, &mut t)
        .unwrap();
    assert!(t.bye && e.rtcp);
}

#[test]
fn per_leg_srtp_is_terminated_and_wrong_keys_fail() {
    let t0 = Instant::now();
    let arbiter = caller_granted(Arbiter::new());
    let key = |b: u8| MasterKey::new(SrtpSuite::AeadAes128Gcm, vec![b; 28]).unwrap();
    let mut r = CallRules::new(&per_leg_setup(&arbiter, key, vec![SSRC])).unwrap();
    let mut tx = SrtpContext::new(&key(1));
    let mut rx = SrtpContext::new(&key(2));
    let plain = rtp(SSRC, &[0x41; 100]);
    let mut p = protect(&mut tx, &plain);
    let e = send(&mut r, Party::Caller, t0, &mut p).unwrap();
    let mut out = p[..e.len].to_vec();
    let m = rx.unprotect_rtp(&mut out).unwrap();
    assert_eq!(
        &out[..m],
        &plain[..],
        "re-encrypted with the callee leg's key"
    );
    // The same packet again: replay.
    let mut replay = p.clone();
    let again = protect(&mut SrtpContext::new(&key(1)), &plain);
    // The same packet altered: it no longer authenticates.
    replay[20] ^= 1;
    for mut p in [again, replay] {
        assert_eq!(
            send(&mut r, Party::Caller, t0, &mut p),
            Err(DropReason::AuthFailure)
        );
    }
}

#[test]
fn control_channel_screen_latch_and_seal() {
    let t0 = Instant::now();
    let arbiter = Arc::new(Arbiter::new());
    let mut s = setup(&arbiter, MediaSecurity::EndToEnd, vec![]);
    s.control[0] = Some(ControlSetup {
        remote: Some(caller()),
        key: None,
    });
    let mut r = CallRules::new(&s).unwrap();
    let mut msg = vec![0x80, 204, 0, 2, 0, 0, 0, 1, b'M', b'C', b'V', b'0'];
    assert_eq!(
        r.admit_control(Party::Caller, caller(), t0, &mut msg),
        Ok(12)
    );
    assert_eq!(
        r.admit_control(Party::Caller, addr("203.0.113.9:1"), t0, &mut msg),
        Err(DropReason::WrongSource)
    );
    assert_eq!(
        r.admit_control(Party::Callee, callee(), t0, &mut msg),
        Err(DropReason::Malformed)
    );
    let mut buf = vec![0u8; 64];
    assert_eq!(
        r.seal_control(Party::Caller, &mut buf, 12)
            .unwrap()
            .unwrap(),
        (12, caller())
    );
    assert!(r.seal_control(Party::Callee, &mut buf, 12).is_none());
}

/// A per_leg call's rules snapshot mid-stream and restored from the same setup (as an adopter
/// builds them from the restored call): the next packets pass with no authentication or replay
/// failure and reach the callee decryptable with no replay there either; an old packet is still
/// a replay; the latched source and the learned SSRC are kept; relayed SRTCP toward the callee
/// does not reuse an index.
#[test]
fn per_leg_rules_restored_mid_stream_forward_the_next_packets() {
    let t0 = Instant::now();
    let arbiter = caller_granted(Arbiter::new());
    let key = |b: u8| MasterKey::new(SrtpSuite::AesCm128HmacSha1_80, vec![b; 30]).unwrap();
    let nat = addr("198.51.100.7:40000");
    let setup = per_leg_setup(&arbiter, key, vec![]);
    let mut r = CallRules::new(&setup).unwrap();
    let mut caller_tx = SrtpContext::new(&key(1));
    let mut callee_rx = SrtpContext::new(&key(2));
    let mut wire = Vec::new();
    let mut packet = |seq: u16| {
        let mut plain = rtp(SSRC, &[0x41; 60]);
        plain[2..4].copy_from_slice(&seq.to_be_bytes());
        protect(&mut caller_tx, &plain)
    };
    for i in 0..300u32 {
        wire.push(packet((65_400 + i) as u16));
    }
    let mut delivered = 0;
    let mut forward = |r: &mut CallRules, p: &[u8], now: Instant| -> Result<(), DropReason> {
        let mut p = p.to_vec();
        let e = judge(r, Party::Caller, nat, now, &mut p)?;
        let mut out = p[..e.len].to_vec();
        callee_rx
            .unprotect_rtp(&mut out)
            .expect("the callee authenticates it");
        delivered += 1;
        Ok(())
    };
    // The caller is behind NAT: SRTP authentication latches it.
    for p in &wire[..200] {
        forward(&mut r, p, t0).unwrap();
    }
    let snap = r.snapshot();
    assert!(snap.has_srtp());
    assert_eq!(snap.streams[0].legs[0].rtp_source, Some(nat));
    assert_eq!(snap.streams[0].transmitter_ssrcs, [SSRC]);
    assert_eq!(
        snap.streams[0].legs[0].srtp_in.as_ref().unwrap().rtp[0].roc,
        1
    );
    // The old relay goes on a little after the snapshot, then dies.
    for p in &wire[200..210] {
        forward(&mut r, p, t0).unwrap();
    }
    drop(r);
    // The adopter: rules from the same setup, in the snapshot's state.
    let t1 = t0 + Duration::from_secs(2);
    let mut r2 = CallRules::restore(&setup, &snap).unwrap();
    assert_eq!(r2.snapshot().streams[0].legs[0].rtp_source, Some(nat));
    let mut failures = 0;
    for p in &wire[210..] {
        failures += usize::from(forward(&mut r2, p, t1).is_err());
    }
    assert_eq!(failures, 0);
    assert_eq!(delivered, 300);
    // An old packet (in the snapshot's window) is still a replay; a stranger is still refused.
    let mut old = wire[199].clone();
    assert_eq!(
        judge(&mut r2, Party::Caller, nat, t1, &mut old),
        Err(DropReason::AuthFailure)
    );
    let mut stranger = wire[299].clone();
    assert_eq!(
        send(&mut r2, Party::Caller, t1, &mut stranger),
        Err(DropReason::WrongSource)
    );
    // A snapshot of another call's shape is refused.
    let mut wrong = snap.clone();
    wrong.streams.push(StreamRulesSnapshot::default());
    assert!(CallRules::restore(&setup, &wrong).is_err());
}

/// Relayed SRTCP toward a party: a restored sending context skips ahead, so the party's
/// receiver (which saw the old relay's packets after the snapshot) accepts the next one.
#[test]
fn restored_rules_never_reuse_an_srtcp_index() {
    let t0 = Instant::now();
    let arbiter = caller_granted(Arbiter::new());
    let key = |b: u8| MasterKey::new(SrtpSuite::AeadAes128Gcm, vec![b; 28]).unwrap();
    let setup = per_leg_setup(&arbiter, key, vec![SSRC]);
    let mut r = CallRules::new(&setup).unwrap();
    let mut caller_tx = SrtpContext::new(&key(1));
    let mut callee_rx = SrtpContext::new(&key(2));
    let sr = |tx: &mut SrtpContext| {
        let mut p = vec![0x80, 200, 0, 6];
        p.extend_from_slice(&SSRC.to_be_bytes());
        p.extend_from_slice(&[0u8; 20]);
        let n = p.len();
        p.resize(n + 20, 0);
        let m = tx.protect_rtcp(&mut p, n).unwrap();
        p.truncate(m);
        p
    };
    let mut relay = |r: &mut CallRules, p: Vec<u8>| {
        let mut p = p;
        let e = send(r, Party::Caller, t0, &mut p).unwrap();
        assert!(e.rtcp);
        let mut out = p[..e.len].to_vec();
        callee_rx.unprotect_rtcp(&mut out)
    };
    relay(&mut r, sr(&mut caller_tx)).unwrap();
    let snap = r.snapshot();
    // After the snapshot the old relay sent three more.
    for _ in 0..3 {
        relay(&mut r, sr(&mut caller_tx)).unwrap();
    }
    let mut r2 = CallRules::restore(&setup, &snap).unwrap();
    relay(&mut r2, sr(&mut caller_tx)).expect("no index reused toward the callee");
}

/// Two streams, the caller's legs on separate RTCP sockets: what one socket learned about where
/// the party is guards the others.
fn two_stream_rules(arbiter: &Arc<Arbiter>, caller_sdp: SocketAddr) -> CallRules {
    let leg = |remote| LegSetup {
        remote_rtp: Some(remote),
        remote_rtcp: Some(remote),
        separate_rtcp: true,
        ..LegSetup::default()
    };
    let stream = |kind| StreamSetup {
        kind,
        encrypted: false,
        clock_rate: 90_000,
        encoding: None,
        legs: [leg(caller_sdp), leg(callee())],
        transmitter_ssrcs: vec![],
    };
    let streams = vec![stream(MediaKind::Video), stream(MediaKind::Audio)];
    CallRules::new(&setup(arbiter, MediaSecurity::EndToEnd, streams)).unwrap()
}

/// Found by the `packet_rules` fuzz target: a party that spoke only on its RTCP socket left
/// its RTP socket to the weak latch, so a stranger's three packets took it. Once a party has
/// shown up from its address on any socket, weak evidence from another IP moves none of its
/// sockets (strong evidence still would).
#[test]
fn a_party_present_on_one_socket_keeps_strangers_off_the_others() {
    let t0 = Instant::now();
    let arbiter = caller_granted(Arbiter::with_members(2));
    let mut r = two_stream_rules(&arbiter, caller());
    let mut rr = vec![0x80, 201, 0, 1, 0, 0, 0, 9];
    let mut t = Tally::default();
    assert!(r
        .judge(caller_rtcp_at(0), caller(), t0, &mut rr, &mut t)
        .is_ok());
    let stranger = addr("203.0.113.7:7000");
    for stream in [0, 1] {
        for i in 0..10u32 {
            let now = t0 + Duration::from_millis(u64::from(i) * 100);
            let mut p = rtp(0xdead, b"x");
            let at = Ingress {
                stream,
                party: Party::Caller,
                rtcp_socket: false,
            };
            assert_eq!(
                r.judge(at, stranger, now, &mut p, &mut t),
                Err(DropReason::WrongSource),
                "stream {stream}, packet {i}"
            );
        }
    }
    // The caller itself still gets through on its RTP socket.
    let mut p = rtp(0xbeef, b"x");
    assert!(send(&mut r, Party::Caller, t0, &mut p).is_ok());
}

/// A client behind NAT: its RTP latches to the NAT's address on weak evidence (nothing came
/// from the SDP address), and its RTCP, from the same public IP on another port, follows.
#[test]
fn a_nat_client_still_latches_every_socket_from_its_public_ip() {
    let t0 = Instant::now();
    let arbiter = caller_granted(Arbiter::with_members(2));
    let mut r = two_stream_rules(&arbiter, addr("192.168.1.5:5000"));
    let (nat_rtp, nat_rtcp) = (addr("198.51.100.9:40000"), addr("198.51.100.9:40001"));
    let mut t = Tally::default();
    let mut got = Vec::new();
    for i in 0..3u64 {
        let mut p = rtp(0xbeef, b"x");
        got.push(
            judge(
                &mut r,
                Party::Caller,
                nat_rtp,
                t0 + Duration::from_millis(i * 20),
                &mut p,
            )
            .is_ok(),
        );
    }
    assert_eq!(got, [false, false, true], "latched on the third packet");
    let rtcp_at = caller_rtcp_at(0);
    let mut ok = Vec::new();
    for i in 0..3u64 {
        let mut rr = vec![0x80, 201, 0, 1, 0, 0, 0, 9];
        ok.push(
            r.judge(
                rtcp_at,
                nat_rtcp,
                t0 + Duration::from_millis(100 + i * 20),
                &mut rr,
                &mut t,
            )
            .is_ok(),
        );
    }
    assert_eq!(
        ok,
        [false, false, true],
        "the RTCP socket latches from the same IP"
    );
}

/// Found by the `packet_rules` fuzz target: a stranger whose packets weakly latched the caller's
/// RTP socket **before** the caller showed up kept it after the caller spoke from its SDP
/// address on its RTCP socket. The weak latch was a guess; the party proved itself elsewhere at
/// another IP, so the guess gives way and the stranger is a stranger again.
#[test]
fn a_weak_latch_gives_way_when_the_party_shows_up_elsewhere() {
    let t0 = Instant::now();
    let arbiter = caller_granted(Arbiter::with_members(2));
    let mut r = two_stream_rules(&arbiter, caller());
    let stranger = addr("203.0.113.7:7000");
    let mut got = Vec::new();
    for i in 0..4u64 {
        let mut p = rtp(0xdead, b"x");
        let now = t0 + Duration::from_millis(i * 20);
        got.push(judge(&mut r, Party::Caller, stranger, now, &mut p).is_ok());
    }
    assert_eq!(
        got,
        [false, false, true, true],
        "the guess: latched on weak evidence"
    );
    let rtcp_at = caller_rtcp_at(0);
    let mut rr = vec![0x80, 201, 0, 1, 0, 0, 0, 9];
    let mut t = Tally::default();
    assert!(r.judge(rtcp_at, caller(), t0, &mut rr, &mut t).is_ok());
    for i in 0..10u64 {
        let mut p = rtp(0xdead, b"x");
        let now = t0 + Duration::from_millis(100 + i * 20);
        assert_eq!(
            judge(&mut r, Party::Caller, stranger, now, &mut p),
            Err(DropReason::WrongSource),
            "packet {i}"
        );
    }
    let mut p = rtp(0xbeef, b"x");
    assert!(send(&mut r, Party::Caller, t0, &mut p).is_ok());
}
