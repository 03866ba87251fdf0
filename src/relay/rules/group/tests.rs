//! The group rules on virtual time, without sockets: byte buffers in, deliveries out.

use super::*;
use crate::keys::{MasterKey, SrtpSuite};
use crate::relay::rules::tests::{assert_stranger_budget, protect};
use crate::relay::rules::KEYFRAME_REQUEST_INTERVAL;
use crate::srtp::SrtpContext;
use crate::wire::rtcp::{emit_nack, emit_pli, emit_receiver_report_empty};
use std::time::Duration;

const SSRC: u32 = 0x1234_5678;

fn s(i: usize) -> Slot {
    Slot::new(i).unwrap()
}

/// Member `i`'s address.
fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8 + 1], 5000))
}

fn key(b: u8) -> MasterKey {
    MasterKey::new(SrtpSuite::AeadAes128Gcm, vec![b; 28]).unwrap()
}

/// Member `i`'s key toward the relay (`in`) and the relay's toward it (`out`).
fn key_in(i: usize) -> MasterKey {
    key(i as u8 * 2 + 1)
}

fn key_out(i: usize) -> MasterKey {
    key(i as u8 * 2 + 2)
}

/// The rules of a video group (one stream, SRTP on the wire when `encrypted`) on `arbiter`.
fn video_group(arbiter: &Arc<Arbiter>, security: MediaSecurity, encrypted: bool) -> GroupRules {
    GroupRules::new(&GroupRulesSetup {
        arbiter: arbiter.clone(),
        security,
        streams: vec![GroupStreamSetup {
            kind: MediaKind::Video,
            encrypted,
            clock_rate: 90_000,
            encoding: None,
        }],
        server_ssrc: 1,
        latch_after: 3,
    })
}

/// Member `i`'s media: one leg at its address, with its per_leg keys when `keyed`.
fn media(i: usize, keyed: bool) -> MemberMedia {
    MemberMedia {
        legs: vec![LegSetup {
            remote_rtp: Some(addr(i)),
            remote_rtcp: Some(addr(i)),
            srtp_in: keyed.then(|| key_in(i)),
            srtp_out: keyed.then(|| key_out(i)),
            ..LegSetup::default()
        }],
        control: None,
    }
}

/// A video group of `n` members (one stream), plain RTP or per_leg SRTP.
fn group(n: usize, security: MediaSecurity) -> (Arc<Arbiter>, GroupRules) {
    let arbiter = Arc::new(Arbiter::new());
    let per_leg = security == MediaSecurity::PerLeg;
    let mut g = video_group(&arbiter, security, per_leg);
    for i in 0..n {
        g.add_member(s(i), &media(i, per_leg)).unwrap();
    }
    (arbiter, g)
}

/// [`group`] with member 0 granted to `receivers`, and an empty fan-out and tally.
fn granted(
    n: usize,
    security: MediaSecurity,
    receivers: &[usize],
) -> (Arc<Arbiter>, GroupRules, FanOut, Tally) {
    let (a, mut g) = group(n, security);
    grant(&a, &mut g, 0, receivers);
    (a, g, FanOut::new(), Tally::default())
}

/// Member `tx` granted, to `receivers`, with SSRC [`SSRC`].
fn grant(a: &Arbiter, g: &mut GroupRules, tx: usize, receivers: &[usize]) {
    assert!(a.permit(s(tx)));
    for &r in receivers {
        a.add_route(s(tx), s(r));
    }
    g.set_transmitter_ssrcs(s(tx), &[SSRC]);
}

fn rtp(ssrc: u32, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]);
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn at(member: usize) -> GroupIngress {
    GroupIngress {
        stream: 0,
        member: s(member),
        rtcp_socket: false,
    }
}

/// Judges `p` from member `m`'s own address.
fn judge(
    g: &mut GroupRules,
    m: usize,
    now: Instant,
    p: &mut [u8],
    out: &mut FanOut,
    t: &mut Tally,
) -> Result<(), DropReason> {
    g.judge(at(m), addr(m), now, p, out, t)
}

fn members(out: &FanOut) -> Vec<usize> {
    out.iter().map(|(d, _)| d.member.index()).collect()
}

fn pli(sender: u32, media: u32) -> Vec<u8> {
    let mut b = vec![0u8; 12];
    emit_pli(sender, media, &mut b).unwrap();
    b
}

/// A sender report (no report blocks) from `ssrc`.
fn sr(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x12, 0x34, 0x56, 0x78, 0, 0]); // NTP
    p.extend_from_slice(&[0; 12]); // RTP timestamp, packet and octet counts
    p
}

/// A receiver report from `ssrc` with one block about `about`.
fn rr(ssrc: u32, about: u32, fraction_lost: u8) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0, 7];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&about.to_be_bytes());
    p.extend_from_slice(&[fraction_lost, 0, 0, 3]);
    p.extend_from_slice(&[0; 16]);
    p
}

#[test]
fn fan_out_to_exactly_the_routed_receivers_with_the_transmitters_ssrc() {
    let t0 = Instant::now();
    let (a, mut g, mut out, mut t) = granted(5, MediaSecurity::EndToEnd, &[1, 2, 3]);
    let mut p = rtp(SSRC, 1, &[0x41; 1200]);
    let sent = p.clone();
    judge(&mut g, 0, t0, &mut p, &mut out, &mut t).unwrap();
    assert_eq!(members(&out), [1, 2, 3], "member 4 is not routed");
    for (i, (d, bytes)) in out.iter().enumerate() {
        assert_eq!(d.dest, addr(d.member.index()));
        assert_eq!((d.stream, d.rtcp), (0, false));
        assert_eq!(bytes, &sent[..], "the same bytes to each");
        assert_eq!(RtpPacket::new_checked(bytes).unwrap().ssrc(), SSRC);
        assert!(out.is_shared(i), "one buffer, many deliveries");
    }
    assert_eq!(out.bytes(3), None);
    assert_eq!(t.media, 1);
    assert_eq!(g.take_active(), s(0).bit());
    assert_eq!(g.take_active(), 0);
    // The transmitter never gets its own media back, even if routed to itself.
    a.add_route(s(0), s(0));
    judge(
        &mut g,
        0,
        t0,
        &mut rtp(SSRC, 2, &[0x41; 20]),
        &mut out,
        &mut t,
    )
    .unwrap();
    assert_eq!(members(&out), [1, 2, 3]);
}

#[test]
fn an_ungranted_members_packets_are_dropped() {
    let t0 = Instant::now();
    let (a, mut g) = group(4, MediaSecurity::EndToEnd);
    let (mut out, mut t) = (FanOut::new(), Tally::default());
    let mut p = rtp(SSRC, 1, &[0x41; 20]);
    assert_eq!(
        judge(&mut g, 0, t0, &mut p, &mut out, &mut t),
        Err(DropReason::NotGranted)
    );
    grant(&a, &mut g, 0, &[1, 2, 3]);
    // A receiver that sends is not granted; its activity still counts (for Revoked #3).
    let mut q = rtp(0x999, 1, &[0x41; 20]);
    assert_eq!(
        judge(&mut g, 2, t0, &mut q, &mut out, &mut t),
        Err(DropReason::NotGranted)
    );
    assert!(out.is_empty());
    assert_eq!(g.take_active(), s(0).bit() | s(2).bit());
    // Another SSRC from the transmitter.
    let mut other = rtp(SSRC + 1, 1, &[0x41; 20]);
    assert_eq!(
        judge(&mut g, 0, t0, &mut other, &mut out, &mut t),
        Err(DropReason::UnknownSsrc)
    );
    // Pre-empted: nothing passes any more.
    a.forbid(s(0));
    assert_eq!(
        judge(&mut g, 0, t0, &mut p, &mut out, &mut t),
        Err(DropReason::NotGranted)
    );
    // Granted without any receiver.
    assert!(a.permit(s(0)));
    assert_eq!(
        judge(&mut g, 0, t0, &mut p, &mut out, &mut t),
        Err(DropReason::NoReceivers)
    );
    // Malformed.
    let mut junk = vec![0x80, 96, 0];
    assert_eq!(
        judge(&mut g, 0, t0, &mut junk, &mut out, &mut t),
        Err(DropReason::Malformed)
    );
    // A slot with no member, a stream that does not exist.
    let mut x = rtp(SSRC, 1, &[0x41; 20]);
    assert_eq!(
        judge(&mut g, 9, t0, &mut x, &mut out, &mut t),
        Err(DropReason::Malformed)
    );
    let wrong_stream = GroupIngress { stream: 1, ..at(0) };
    assert_eq!(
        g.judge(wrong_stream, addr(0), t0, &mut x, &mut out, &mut t),
        Err(DropReason::Malformed)
    );
}

#[test]
fn ssrcs_are_adopted_when_none_were_set_and_reset_with_an_empty_slice() {
    let t0 = Instant::now();
    let (a, mut g) = group(2, MediaSecurity::EndToEnd);
    assert!(a.permit(s(0)));
    a.add_route(s(0), s(1));
    let (mut out, mut t) = (FanOut::new(), Tally::default());
    judge(&mut g, 0, t0, &mut rtp(7, 1, &[1]), &mut out, &mut t).unwrap();
    assert_eq!(
        judge(&mut g, 0, t0, &mut rtp(8, 2, &[1]), &mut out, &mut t),
        Err(DropReason::UnknownSsrc)
    );
    g.set_transmitter_ssrcs(s(0), &[]);
    judge(&mut g, 0, t0, &mut rtp(8, 3, &[1]), &mut out, &mut t).unwrap();
    g.set_transmitter_ssrcs(s(0), &[SSRC, 9]);
    judge(&mut g, 0, t0, &mut rtp(9, 4, &[1]), &mut out, &mut t).unwrap();
}

#[test]
fn a_receiver_removed_from_the_routes_gets_nothing_more() {
    let t0 = Instant::now();
    let (a, mut g, mut out, mut t) = granted(4, MediaSecurity::EndToEnd, &[1, 2, 3]);
    judge(&mut g, 0, t0, &mut rtp(SSRC, 1, &[1; 10]), &mut out, &mut t).unwrap();
    assert_eq!(members(&out), [1, 2, 3]);
    a.remove_route(s(0), s(2));
    judge(&mut g, 0, t0, &mut rtp(SSRC, 2, &[1; 10]), &mut out, &mut t).unwrap();
    assert_eq!(members(&out), [1, 3]);
    // A member that left the rules (before the server updated the arbiter) gets nothing.
    g.remove_member(s(3));
    judge(&mut g, 0, t0, &mut rtp(SSRC, 3, &[1; 10]), &mut out, &mut t).unwrap();
    assert_eq!(members(&out), [1]);
    a.remove_member(s(1));
    assert_eq!(
        judge(&mut g, 0, t0, &mut rtp(SSRC, 4, &[1; 10]), &mut out, &mut t),
        Err(DropReason::NoReceivers)
    );
    assert!(out.is_empty());
}

#[test]
fn per_leg_each_receiver_decrypts_its_copy_with_its_own_key() {
    let t0 = Instant::now();
    let (_, mut g, mut out, mut t) = granted(4, MediaSecurity::PerLeg, &[1, 2, 3]);
    let plain = rtp(SSRC, 1, &[0x41; 1200]);
    let mut p = protect(&mut SrtpContext::new(&key_in(0)), &plain);
    judge(&mut g, 0, t0, &mut p, &mut out, &mut t).unwrap();
    assert_eq!(members(&out), [1, 2, 3]);
    let copies: Vec<Vec<u8>> = out.iter().map(|(_, b)| b.to_vec()).collect();
    assert_ne!(copies[0], copies[1], "each leg its own encryption");
    for (i, (d, bytes)) in out.iter().enumerate() {
        assert!(!out.is_shared(i));
        let r = d.member.index();
        // Another receiver's key does not open it.
        let mut wrong = SrtpContext::new(&key_out(r % 3 + 1));
        let mut w = bytes.to_vec();
        assert!(wrong.unprotect_rtp(&mut w).is_err());
        let mut rx = SrtpContext::new(&key_out(r));
        let mut b = bytes.to_vec();
        let m = rx.unprotect_rtp(&mut b).unwrap();
        assert_eq!(&b[..m], &plain[..], "receiver {r}");
    }
    // The transmitter's packet under a wrong key is an authentication failure.
    let mut f = protect(&mut SrtpContext::new(&key(99)), &rtp(SSRC, 2, &[0x41; 100]));
    assert_eq!(
        judge(&mut g, 0, t0, &mut f, &mut out, &mut t),
        Err(DropReason::AuthFailure)
    );
    assert!(out.is_empty());
}

/// The members' senders: SRTCP-protects their RTCP in per_leg mode (each its own index).
struct Senders(Vec<SrtpContext>, bool);

impl Senders {
    fn new(n: usize, per_leg: bool) -> Self {
        Senders(
            (0..n).map(|i| SrtpContext::new(&key_in(i))).collect(),
            per_leg,
        )
    }

    /// RTCP from member `m`.
    fn rtcp(&mut self, m: usize, plain: &[u8]) -> Vec<u8> {
        let mut p = plain.to_vec();
        if self.1 {
            p.resize(plain.len() + 32, 0);
            let n = self.0[m].protect_rtcp(&mut p, plain.len()).unwrap();
            p.truncate(n);
        }
        p
    }
}

#[test]
fn feedback_from_three_receivers_reaches_only_the_transmitter_once_per_interval() {
    for security in [MediaSecurity::EndToEnd, MediaSecurity::PerLeg] {
        let per_leg = security == MediaSecurity::PerLeg;
        let t0 = Instant::now();
        let (_, mut g, mut out, mut t) = granted(4, security, &[1, 2, 3]);
        let mut senders = Senders::new(4, per_leg);
        let mut passed = 0;
        for round in 0..3u64 {
            for r in 1..=3usize {
                let now = t0 + Duration::from_millis(round * 200 + r as u64 * 10);
                let mut p = senders.rtcp(r, &pli(0x100 + r as u32, SSRC));
                judge(&mut g, r, now, &mut p, &mut out, &mut t).unwrap();
                for (d, bytes) in out.iter() {
                    assert_eq!((d.member, d.rtcp, d.dest), (s(0), true, addr(0)));
                    let mut b = bytes.to_vec();
                    let n = if per_leg {
                        SrtpContext::new(&key_out(0))
                            .unprotect_rtcp(&mut b)
                            .unwrap()
                    } else {
                        b.len()
                    };
                    let p = RtcpPacket::new_checked(&b[..n]).unwrap();
                    assert_eq!((p.kind(), p.media_ssrc()), (RtcpKind::Pli, Some(SSRC)));
                    passed += 1;
                }
            }
        }
        // 9 requests within 430 ms: one per 500 ms reaches the transmitter.
        assert_eq!(passed, 1, "{security:?}");
        assert_eq!(t.drops[DropReason::RateLimited as usize], 8);
        let later = t0 + KEYFRAME_REQUEST_INTERVAL + Duration::from_millis(50);
        let mut p = senders.rtcp(2, &pli(0x102, SSRC));
        judge(&mut g, 2, later, &mut p, &mut out, &mut t).unwrap();
        assert_eq!(members(&out), [0], "after the interval");
        // The relay's own request shares the transmitter's throttle.
        let mut buf = [0u8; 64];
        assert!(g.keyframe_request(s(0), later, &mut buf).is_none());
        let much_later = later + Duration::from_secs(1);
        let (si, n) = g.keyframe_request(s(0), much_later, &mut buf).unwrap();
        assert_eq!(si, 0);
        assert_eq!(g.rtcp_destination(s(0), 0), Some(addr(0)));
        assert!(n >= 12);
        // NACKs are not throttled, and go to the transmitter only.
        for r in 1..=3usize {
            let mut b = [0u8; 16];
            let n = emit_nack(0x100 + r as u32, SSRC, 7, 0, &mut b).unwrap();
            let mut p = senders.rtcp(r, &b[..n]);
            judge(&mut g, r, much_later, &mut p, &mut out, &mut t).unwrap();
            assert_eq!(members(&out), [0]);
        }
    }
}

#[test]
fn feedback_goes_to_the_transmitter_it_names_and_reports_are_consumed() {
    let t0 = Instant::now();
    let (a, mut g) = group(4, MediaSecurity::EndToEnd);
    // Cx = 2: members 0 and 1 transmit, member 2 receives both, member 3 only member 1.
    grant(&a, &mut g, 0, &[1, 2]);
    assert!(a.permit(s(1)));
    a.add_route(s(1), s(2));
    a.add_route(s(1), s(3));
    g.set_transmitter_ssrcs(s(1), &[0xB]);
    let (mut out, mut t) = (FanOut::new(), Tally::default());
    // RR + PLI about member 1's SSRC: the PLI alone goes to member 1.
    let mut c = rr(0x2, 0xB, 64);
    c.extend(pli(0x2, 0xB));
    judge(&mut g, 2, t0, &mut c, &mut out, &mut t).unwrap();
    assert_eq!(members(&out), [1]);
    assert_eq!(out.bytes(0).unwrap(), &pli(0x2, 0xB)[..], "reduced size");
    // A PLI naming nobody from member 2 (two sources): dropped as unknown.
    let mut p = pli(0x2, 0xDEAD);
    judge(&mut g, 2, t0, &mut p, &mut out, &mut t).unwrap();
    assert!(out.is_empty());
    assert_eq!(t.drops[DropReason::UnknownSsrc as usize], 1);
    // From member 3 (one source): to it whatever it names (after member 1's throttle).
    let mut p = pli(0x3, 0xDEAD);
    let t1 = t0 + Duration::from_secs(1);
    judge(&mut g, 3, t1, &mut p, &mut out, &mut t).unwrap();
    assert_eq!(members(&out), [1]);
    // Receiver reports alone are consumed, and read for quality.
    let mut r = rr(0x3, 0xB, 128);
    judge(&mut g, 3, t0, &mut r, &mut out, &mut t).unwrap();
    assert!(out.is_empty());
    let q = g.quality(t0);
    let m3 = q.iter().find(|q| q.member == s(3)).unwrap();
    assert_eq!(m3.streams[0].1.receiver_report.unwrap().fraction_lost, 128);
    assert_eq!(q.len(), 4);
    // A transmitter's SR + SDES + RR + PLI: SR and SDES to its receivers; its PLI is for
    // nobody (member 0 receives no transmitter): consumed.
    let mut c = sr(SSRC);
    let sdes = [0x81, 202, 0, 1, 0x12, 0x34, 0x56, 0x78];
    c.extend_from_slice(&sdes);
    c.extend(rr(SSRC, 0xB, 0));
    c.extend(pli(SSRC, 0xB));
    judge(&mut g, 0, t0, &mut c, &mut out, &mut t).unwrap();
    assert_eq!(members(&out), [1, 2]);
    let mut expected = sr(SSRC);
    expected.extend_from_slice(&sdes);
    for (d, b) in out.iter() {
        assert!(d.rtcp);
        assert_eq!(b, &expected[..]);
    }
    // BYE from a transmitter is seen and fanned out.
    let mut bye = vec![0x81, 203, 0, 1];
    bye.extend_from_slice(&SSRC.to_be_bytes());
    let mut t2 = Tally::default();
    judge(&mut g, 0, t0, &mut bye, &mut out, &mut t2).unwrap();
    assert!(t2.bye);
    assert_eq!(members(&out), [1, 2]);
    // Malformed RTCP.
    let mut junk = vec![0x80, 201, 0, 9, 0, 0, 0, 1];
    assert_eq!(
        judge(&mut g, 2, t0, &mut junk, &mut out, &mut t),
        Err(DropReason::Malformed)
    );
    // An empty RR from a member that receives nothing: consumed.
    let mut b = [0u8; 8];
    emit_receiver_report_empty(5, &mut b).unwrap();
    let mut b = b.to_vec();
    a.remove_route(s(0), s(1));
    judge(&mut g, 1, t0, &mut b, &mut out, &mut t).unwrap();
    assert!(out.is_empty());
}

#[test]
fn opaque_srtcp_goes_unchanged_to_the_transmitters_it_receives_and_to_its_receivers() {
    let t0 = Instant::now();
    let arbiter = Arc::new(Arbiter::new());
    let mut g = video_group(&arbiter, MediaSecurity::EndToEnd, true);
    for i in 0..4 {
        g.add_member(s(i), &media(i, false)).unwrap();
    }
    grant(&arbiter, &mut g, 0, &[1, 2]);
    let (mut out, mut t) = (FanOut::new(), Tally::default());
    // Looks like SRTCP: an RTCP header, then ciphertext.
    let mut c = vec![0x81, 201, 0, 1, 0, 0, 0, 2];
    c.extend_from_slice(&[0xAB; 30]);
    let sent = c.clone();
    judge(&mut g, 2, t0, &mut c, &mut out, &mut t).unwrap();
    assert_eq!(members(&out), [0]);
    assert_eq!(out.bytes(0).unwrap(), &sent[..]);
    // The transmitter's: to its receivers.
    judge(&mut g, 0, t0, &mut sent.clone(), &mut out, &mut t).unwrap();
    assert_eq!(members(&out), [1, 2]);
    // Member 3 receives nobody: consumed.
    judge(&mut g, 3, t0, &mut sent.clone(), &mut out, &mut t).unwrap();
    assert!(out.is_empty());
}

#[test]
fn a_strangers_packets_are_screened() {
    let t0 = Instant::now();
    let (_, mut g, mut out, mut t) = granted(3, MediaSecurity::EndToEnd, &[1, 2]);
    let stranger = SocketAddr::from(([203, 0, 113, 9], 6666));
    let other = SocketAddr::from(([203, 0, 113, 10], 6666));
    // Before the member speaks: strangers cost a check each, within a budget.
    for i in 0..500 {
        let from = if i % 2 == 0 { stranger } else { other };
        let mut p = rtp(SSRC, i, &[1; 10]);
        if let Err(r) = g.judge(at(0), from, t0, &mut p, &mut out, &mut t) {
            t.drop(r);
        }
        assert!(out.is_empty());
    }
    assert_stranger_budget(&t, 500);
    assert_eq!(t.media, 0);
    // The member speaks from its address; then a stranger is dropped at the screen, RTP or
    // RTCP, and never becomes a destination.
    judge(&mut g, 0, t0, &mut rtp(SSRC, 1, &[1]), &mut out, &mut t).unwrap();
    let later = t0 + Duration::from_secs(10);
    for mut p in [rtp(SSRC, 2, &[1]), pli(5, SSRC)] {
        assert_eq!(
            g.judge(at(0), stranger, later, &mut p, &mut out, &mut t),
            Err(DropReason::WrongSource)
        );
    }
    // A receiver's leg too: spoofed feedback from a stranger never reaches the transmitter.
    judge(&mut g, 1, later, &mut pli(5, SSRC), &mut out, &mut t).unwrap();
    assert_eq!(members(&out), [0]);
    assert_eq!(
        g.judge(at(1), stranger, later, &mut pli(5, SSRC), &mut out, &mut t),
        Err(DropReason::WrongSource)
    );
    assert_eq!(g.rtp_destination(s(1), 0), Some(addr(1)));
}

#[test]
fn control_channel_screen_latch_and_seal() {
    let t0 = Instant::now();
    let (_, mut g) = group(0, MediaSecurity::EndToEnd);
    g.add_member(
        s(3),
        &MemberMedia {
            legs: vec![],
            control: Some(ControlSetup {
                remote: Some(addr(3)),
                key: None,
            }),
        },
    )
    .unwrap();
    assert_eq!(g.members(), s(3).bit());
    let mut msg = vec![0x80, 204, 0, 2, 0, 0, 0, 1, b'M', b'C', b'V', b'0'];
    assert_eq!(g.admit_control(s(3), addr(3), t0, &mut msg), Ok(12));
    assert_eq!(
        g.admit_control(s(3), addr(9), t0, &mut msg),
        Err(DropReason::WrongSource)
    );
    assert_eq!(
        g.admit_control(s(2), addr(2), t0, &mut msg),
        Err(DropReason::Malformed)
    );
    let mut buf = vec![0u8; 64];
    assert_eq!(
        g.seal_control(s(3), &mut buf, 12).unwrap().unwrap(),
        (12, addr(3))
    );
    assert!(g.seal_control(s(2), &mut buf, 12).is_none());
    // A member without legs neither sends nor receives media.
    assert_eq!(g.rtp_destination(s(3), 0), None);
}

#[test]
fn fan_out_of_fifty_reuses_its_buffers() {
    let t0 = Instant::now();
    for security in [MediaSecurity::EndToEnd, MediaSecurity::PerLeg] {
        let per_leg = security == MediaSecurity::PerLeg;
        let (_, mut g, mut out, mut t) = granted(51, security, &(1..=50).collect::<Vec<_>>());
        let mut tx = SrtpContext::new(&key_in(0));
        let mut high_water = 0;
        for seq in 0..20u16 {
            let plain = rtp(SSRC, seq, &[0x41; 1200]);
            let mut p = if per_leg {
                protect(&mut tx, &plain)
            } else {
                plain
            };
            judge(&mut g, 0, t0, &mut p, &mut out, &mut t).unwrap();
            assert_eq!(out.len(), 50);
            if seq == 0 {
                high_water = out.bufs.capacity();
            }
            assert_eq!(out.bufs.capacity(), high_water, "grown once");
            assert_eq!(out.entries.capacity(), 2 * MAX_MEMBERS);
        }
    }
}

#[test]
fn the_relays_keyframe_request_names_the_video_ssrc_the_transmitter_sends_with() {
    let t0 = Instant::now();
    let (a, mut g) = group(3, MediaSecurity::EndToEnd);
    let mut buf = [0u8; 64];
    assert!(
        g.keyframe_request(s(0), t0, &mut buf).is_none(),
        "no SSRC known yet"
    );
    assert!(a.permit(s(0)));
    a.add_route(s(0), s(1));
    // Granted audio and video SSRCs; the video stream's media carries the video one.
    g.set_transmitter_ssrcs(s(0), &[0xA0D1, SSRC]);
    let (mut out, mut t) = (FanOut::new(), Tally::default());
    judge(&mut g, 0, t0, &mut rtp(SSRC, 1, &[0x41]), &mut out, &mut t).unwrap();
    let (si, n) = g.keyframe_request(s(0), t0, &mut buf).unwrap();
    let p = RtcpPacket::new_checked(&buf[..n]).unwrap();
    assert_eq!(
        (si, p.kind(), p.media_ssrc()),
        (0, RtcpKind::Pli, Some(SSRC))
    );
    assert_eq!(p.sender_ssrc(), 1, "the relay's SSRC");
    assert!(
        g.keyframe_request(s(0), t0, &mut buf).is_none(),
        "throttled"
    );
    // A keyframe just passed: a receiver's request within the window is redundant.
    let t1 = t0 + Duration::from_secs(2);
    judge(
        &mut g,
        0,
        t1,
        &mut rtp(SSRC, 2, &[0x65, 0x88]),
        &mut out,
        &mut t,
    )
    .unwrap();
    judge(&mut g, 1, t1, &mut pli(7, SSRC), &mut out, &mut t).unwrap();
    assert!(out.is_empty());
    assert_eq!(g.quality(t1)[0].streams[0].1.keyframes, 1);
    assert!(
        g.keyframe_request(s(9), t1, &mut buf).is_none(),
        "no such member"
    );
}

#[test]
fn per_leg_a_transmitters_sender_report_reaches_each_receiver_under_its_own_key() {
    let t0 = Instant::now();
    let (a, mut g) = group(4, MediaSecurity::PerLeg);
    grant(&a, &mut g, 0, &[1, 2, 3]);
    let mut senders = Senders::new(4, true);
    let mut c = sr(SSRC);
    c.extend(rr(SSRC, 0x77, 0));
    let mut p = senders.rtcp(0, &c);
    let (mut out, mut t) = (FanOut::new(), Tally::default());
    judge(&mut g, 0, t0, &mut p, &mut out, &mut t).unwrap();
    assert_eq!(members(&out), [1, 2, 3]);
    for (d, bytes) in out.iter() {
        assert!(d.rtcp);
        let mut b = bytes.to_vec();
        let n = SrtpContext::new(&key_out(d.member.index()))
            .unprotect_rtcp(&mut b)
            .unwrap();
        assert_eq!(
            &b[..n],
            &sr(SSRC)[..],
            "the SR without the transmitter's RR"
        );
    }
    // Receiver 2 echoes the SR in its RR: the relay measures the round trip.
    let mut echo = rr(0x2, SSRC, 0);
    echo[24..28].copy_from_slice(&0x1234_5678u32.to_be_bytes()); // LSR: NTP middle bits
    let mut p = senders.rtcp(2, &echo);
    judge(
        &mut g,
        2,
        t0 + Duration::from_millis(40),
        &mut p,
        &mut out,
        &mut t,
    )
    .unwrap();
    assert!(out.is_empty(), "reports are consumed");
    let q = g.quality(t0 + Duration::from_millis(40));
    let rtt = q[2].streams[0].1.receiver_report.unwrap().rtt.unwrap();
    assert_eq!(rtt, Duration::from_millis(40));
    // Under a wrong key: an authentication failure.
    let mut forged = Senders(vec![SrtpContext::new(&key(99))], true).rtcp(0, &pli(0x2, SSRC));
    assert_eq!(
        judge(&mut g, 2, t0, &mut forged, &mut out, &mut t),
        Err(DropReason::AuthFailure)
    );
}

#[test]
fn two_streams_with_separate_rtcp_sockets() {
    let t0 = Instant::now();
    let arbiter = Arc::new(Arbiter::new());
    let mut g = GroupRules::new(&GroupRulesSetup {
        arbiter: arbiter.clone(),
        security: MediaSecurity::EndToEnd,
        streams: vec![
            GroupStreamSetup {
                kind: MediaKind::Audio,
                encrypted: false,
                clock_rate: 8_000,
                encoding: None,
            },
            GroupStreamSetup {
                kind: MediaKind::Video,
                encrypted: false,
                clock_rate: 90_000,
                encoding: None,
            },
        ],
        server_ssrc: 1,
        latch_after: 3,
    });
    let port = |i: usize, si: usize, rtcp: bool| {
        SocketAddr::from((
            [10, 0, 0, i as u8 + 1],
            5000 + 10 * si as u16 + u16::from(rtcp),
        ))
    };
    for i in 0..3 {
        let legs = (0..2)
            .map(|si| LegSetup {
                remote_rtp: Some(port(i, si, false)),
                remote_rtcp: Some(port(i, si, true)),
                separate_rtcp: true,
                ..LegSetup::default()
            })
            .collect();
        g.add_member(
            s(i),
            &MemberMedia {
                legs,
                control: None,
            },
        )
        .unwrap();
    }
    assert!(arbiter.permit(s(0)));
    arbiter.add_route(s(0), s(1));
    arbiter.add_route(s(0), s(2));
    g.set_transmitter_ssrcs(s(0), &[0xA, 0xB]);
    let (mut out, mut t) = (FanOut::new(), Tally::default());
    // Member `m`'s packet on its socket of stream `si` (the RTCP one when `rtcp`), from its
    // address there.
    let from = |g: &mut GroupRules, m, si, rtcp, p: &mut [u8], out: &mut FanOut, t: &mut Tally| {
        let at = GroupIngress {
            stream: si,
            member: s(m),
            rtcp_socket: rtcp,
        };
        g.judge(at, port(m, si, rtcp), t0, p, out, t)
    };
    // Audio RTP on stream 0 to each receiver's audio RTP address.
    let mut p = rtp(0xA, 1, &[1; 160]);
    from(&mut g, 0, 0, false, &mut p, &mut out, &mut t).unwrap();
    let dests: Vec<_> = out
        .iter()
        .map(|(d, _)| (d.stream, d.rtcp, d.dest))
        .collect();
    assert_eq!(
        dests,
        [(0, false, port(1, 0, false)), (0, false, port(2, 0, false))]
    );
    // Video RTCP from a receiver's RTCP socket to the transmitter's video RTCP address; audio
    // feedback is not a keyframe request and is not throttled.
    for _ in 0..2 {
        let mut f = pli(0x5, 0xB);
        from(&mut g, 1, 1, true, &mut f, &mut out, &mut t).unwrap();
    }
    assert_eq!(t.drops[DropReason::RateLimited as usize], 1);
    for _ in 0..2 {
        let mut f = pli(0x5, 0xA);
        from(&mut g, 1, 0, true, &mut f, &mut out, &mut t).unwrap();
        let dests: Vec<_> = out
            .iter()
            .map(|(d, _)| (d.member, d.rtcp, d.dest))
            .collect();
        assert_eq!(dests, [(s(0), true, port(0, 0, true))]);
    }
    // RTCP arriving on the RTP socket of a leg with its own RTCP socket is still RTCP.
    let mut f = pli(0x5, 0xA);
    from(&mut g, 2, 0, false, &mut f, &mut out, &mut t).unwrap();
    assert_eq!(members(&out), [0]);
}

/// Bytes from the network never panic: random datagrams, and mutations of valid ones, at
/// every member, stream and socket, in both security modes.
#[test]
fn random_bytes_never_panic() {
    let t0 = Instant::now();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for security in [MediaSecurity::EndToEnd, MediaSecurity::PerLeg] {
        let (a, mut g, mut out, mut t) = granted(4, security, &[1, 2, 3]);
        assert!(a.permit(s(2)));
        a.add_route(s(2), s(1));
        let seeds = [
            rtp(SSRC, 1, &[0x65; 40]),
            sr(SSRC),
            pli(1, SSRC),
            rr(1, SSRC, 3),
        ];
        for i in 0..20_000u64 {
            let r = rnd();
            let mut p = if r % 3 == 0 {
                (0..(r >> 8) % 120).map(|_| rnd() as u8).collect::<Vec<_>>()
            } else {
                let mut p = seeds[(r >> 4) as usize % seeds.len()].clone();
                for _ in 0..1 + (r >> 12) % 4 {
                    let at = rnd() as usize % p.len();
                    p[at] = rnd() as u8;
                }
                p.truncate(p.len() - (r >> 20) as usize % 6);
                p
            };
            let m = (r >> 24) as usize % 5; // member 4 does not exist
            let at = GroupIngress {
                stream: (r >> 28) as usize % 2,
                member: s(m),
                rtcp_socket: (r >> 30) & 1 == 1,
            };
            let now = t0 + Duration::from_millis(i);
            let _ = g.judge(at, addr(m), now, &mut p, &mut out, &mut t);
            assert!(out.iter().all(|(_, b)| !b.is_empty()));
        }
    }
}

/// One outbound SRTP context holds a bounded number of SSRCs: per_leg feedback from many
/// receivers reaches the transmitter as the relay's.
#[test]
fn per_leg_feedback_from_twenty_receivers_reaches_the_transmitter_as_the_relays() {
    let t0 = Instant::now();
    let receivers: Vec<_> = (1..=20).collect();
    let (_, mut g, mut out, mut t) = granted(21, MediaSecurity::PerLeg, &receivers);
    let mut senders = Senders::new(21, true);
    let mut rx = SrtpContext::new(&key_out(0));
    for r in 1..=20usize {
        let mut b = [0u8; 16];
        let n = emit_nack(0x100 + r as u32, SSRC, r as u16, 0, &mut b).unwrap();
        let mut p = senders.rtcp(r, &b[..n]);
        judge(&mut g, r, t0, &mut p, &mut out, &mut t).unwrap();
        assert_eq!(members(&out), [0], "receiver {r}");
        let mut b = out.bytes(0).unwrap().to_vec();
        let n = rx.unprotect_rtcp(&mut b).unwrap();
        let p = RtcpPacket::new_checked(&b[..n]).unwrap();
        assert_eq!((p.kind(), p.sender_ssrc()), (RtcpKind::Nack, 1));
        assert_eq!(p.media_ssrc(), Some(SSRC));
        assert_eq!(p.nack_entries().next(), Some((r as u16, 0)));
    }
}

#[test]
fn a_receiver_behind_nat_gets_its_copies_where_it_latched() {
    let t0 = Instant::now();
    let (_, mut g, mut out, mut t) = granted(3, MediaSecurity::EndToEnd, &[1, 2]);
    // Receiver 2 sends (ungranted) RTP from a NAT address: three packets latch its leg.
    let nat = SocketAddr::from(([198, 51, 100, 7], 40001));
    for seq in 0..3 {
        let r = g.judge(at(2), nat, t0, &mut rtp(0x22, seq, &[1]), &mut out, &mut t);
        assert_eq!(
            r,
            Err(if seq < 2 {
                DropReason::WrongSource
            } else {
                DropReason::NotGranted
            })
        );
    }
    assert!(t.latched);
    judge(&mut g, 0, t0, &mut rtp(SSRC, 1, &[1]), &mut out, &mut t).unwrap();
    let dests: Vec<_> = out
        .iter()
        .map(|(d, _)| (d.member.index(), d.dest))
        .collect();
    assert_eq!(dests, [(1, addr(1)), (2, nat)]);
    // Its SDP address is a stranger now.
    assert_eq!(
        g.judge(at(2), addr(2), t0, &mut pli(5, SSRC), &mut out, &mut t),
        Err(DropReason::WrongSource)
    );
}

/// A per_leg group's rules rebuilt from a snapshot (a takeover): the transmitter's packets
/// after the snapshot pass (its SSRC kept, its rollover counter across a wrap kept), a replay
/// of one before it does not, and each receiver's context (which saw the packets before)
/// decrypts the restored relay's copies.
#[test]
fn per_leg_group_rules_restored_from_a_snapshot_go_on_across_a_wrap() {
    let t0 = Instant::now();
    let (a, mut g, mut out, mut t) = granted(3, MediaSecurity::PerLeg, &[1, 2]);
    let mut tx = SrtpContext::new(&key_in(0));
    let mut rx: Vec<SrtpContext> = (0..3).map(|i| SrtpContext::new(&key_out(i))).collect();
    let mut send = |g: &mut GroupRules, seq: u16, out: &mut FanOut, t: &mut Tally| {
        let plain = rtp(SSRC, seq, &[0x42; 200]);
        let mut p = protect(&mut tx, &plain);
        out.clear();
        let r = judge(g, 0, t0, &mut p, out, t);
        (r, p, plain)
    };
    let mut kept = Vec::new();
    for seq in 65_530..=65_535u16 {
        let (r, p, _) = send(&mut g, seq, &mut out, &mut t);
        r.unwrap();
        kept.push(p);
        for (d, b) in out.iter() {
            let mut b = b.to_vec();
            rx[d.member.index()].unprotect_rtp(&mut b).unwrap();
        }
    }
    for seq in 0..3u16 {
        // across the wrap: rollover counter 1
        send(&mut g, seq, &mut out, &mut t).0.unwrap();
        for (d, b) in out.iter() {
            let mut b = b.to_vec();
            rx[d.member.index()].unprotect_rtp(&mut b).unwrap();
        }
    }
    let snap = g.snapshot();
    assert!(snap.has_srtp());
    assert_eq!(snap.members.len(), 3);
    assert_eq!(snap.member(s(0)).unwrap().streams[0].ssrcs, [SSRC]);

    // Another relay's rules, from the members' media (their keys) and the snapshot.
    let mut h = video_group(&a, MediaSecurity::PerLeg, true);
    for i in 0..3 {
        h.restore_member(s(i), &media(i, true), snap.member(s(i)).unwrap())
            .unwrap();
    }
    assert_eq!(
        h.snapshot().members[0].streams[0].leg.srtp_in,
        snap.members[0].streams[0].leg.srtp_in
    );
    // A replay of a packet from before the snapshot is refused.
    let mut old = kept[5].clone();
    assert_eq!(
        judge(&mut h, 0, t0, &mut old, &mut out, &mut t),
        Err(DropReason::AuthFailure)
    );
    // The next packets pass, and each receiver decrypts its copy (same rollover counter).
    for seq in 3..6u16 {
        let (r, _, plain) = send(&mut h, seq, &mut out, &mut t);
        r.unwrap();
        assert_eq!(members(&out), [1, 2]);
        for (d, b) in out.iter() {
            let mut b = b.to_vec();
            let m = rx[d.member.index()].unprotect_rtp(&mut b).unwrap();
            assert_eq!(&b[..m], &plain[..]);
        }
    }
    // A snapshot of another group's streams is refused.
    let mut bad = snap.members[1].clone();
    bad.streams.push(Default::default());
    assert!(h
        .restore_member(s(1), &MemberMedia::default(), &bad)
        .is_err());
}

#[test]
fn a_transmitters_idr_access_unit_counts_as_one_keyframe() {
    let t0 = Instant::now();
    let (_, mut g, mut out, mut t) = granted(2, MediaSecurity::EndToEnd, &[1]);
    let with_ts = |seq: u16, ts: u32, payload: &[u8]| {
        let mut p = rtp(SSRC, seq, payload);
        p[4..8].copy_from_slice(&ts.to_be_bytes());
        p
    };
    // An IDR frame as ffmpeg sends it: SPS+PPS in a STAP-A, two slices in FU-A fragments;
    // then a non-IDR frame; then the next IDR frame as single NAL units.
    let frames: [(u32, &[&[u8]]); 3] = [
        (
            3000,
            &[
                &[0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce],
                &[0x7c, 0x85, 1],
                &[0x7c, 0x45, 2],
                &[0x7c, 0x85, 3],
                &[0x7c, 0x45, 4],
            ],
        ),
        (6000, &[&[0x7c, 0x81, 1], &[0x7c, 0x41, 2]]),
        (
            9000,
            &[&[0x67, 0x42], &[0x68, 0xce], &[0x65, 0x88], &[0x65, 0x88]],
        ),
    ];
    let mut seq = 0;
    for (ts, packets) in frames {
        for p in packets {
            seq += 1;
            judge(&mut g, 0, t0, &mut with_ts(seq, ts, p), &mut out, &mut t).unwrap();
        }
    }
    assert_eq!(t.media, 11);
    assert_eq!(g.quality(t0)[0].streams[0].1.keyframes, 2);
}

#[test]
fn a_stream_the_member_only_sends_on_gets_its_rtcp_and_no_rtp() {
    let t0 = Instant::now();
    let arbiter = Arc::new(Arbiter::new());
    let mut g = video_group(&arbiter, MediaSecurity::EndToEnd, false);
    for i in 0..3 {
        let mut m = media(i, false);
        // Member 2 offered `a=sendonly` on the stream.
        m.legs[0].send_only = i == 2;
        g.add_member(s(i), &m).unwrap();
    }
    grant(&arbiter, &mut g, 0, &[1, 2]);
    let (mut out, mut t) = (FanOut::new(), Tally::default());
    let mut p = rtp(SSRC, 1, b"frame");
    judge(&mut g, 0, t0, &mut p, &mut out, &mut t).unwrap();
    assert_eq!(members(&out), [1], "no RTP to the member that only sends");
    assert_eq!(g.rtp_destination(s(2), 0), None, "nor through the kernel");
    assert_eq!(g.rtp_destination(s(1), 0), Some(addr(1)));
    // Its RTCP (the transmitter's sender report) still reaches it.
    judge(&mut g, 0, t0, &mut sr(SSRC), &mut out, &mut t).unwrap();
    assert_eq!(members(&out), [1, 2]);
    assert_eq!(g.rtcp_destination(s(2), 0), Some(addr(2)));
    // Alone as a receiver, the packet has nowhere to go: a counted drop.
    arbiter.remove_route(s(0), s(1));
    let mut p = rtp(SSRC, 2, b"frame");
    assert_eq!(
        judge(&mut g, 0, t0, &mut p, &mut out, &mut t),
        Err(DropReason::NoReceivers)
    );
    // It may itself transmit on the stream.
    let mut p = rtp(0x4321, 1, b"frame");
    grant(&arbiter, &mut g, 2, &[0, 1]);
    g.set_transmitter_ssrcs(s(2), &[0x4321]);
    judge(&mut g, 2, t0, &mut p, &mut out, &mut t).unwrap();
    assert_eq!(members(&out), [0, 1]);
}
