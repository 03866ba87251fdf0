//! Unit tests: published vectors (RFC 3711 Appendix B, RFC 7714 §16–17), round trips, index
//! estimation across the sequence-number wrap, replay protection, tampering, and garbage input.

use super::*;
pub(super) use crate::test_support::hex;
use crate::test_support::Rng;

const SUITES: [SrtpSuite; 2] = [SrtpSuite::AeadAes128Gcm, SrtpSuite::AesCm128HmacSha1_80];

fn key(suite: SrtpSuite, seed: u8) -> MasterKey {
    let n = suite.key_len() + suite.salt_len();
    MasterKey::new(
        suite,
        (0..n as u8).map(|i| i.wrapping_mul(7) ^ seed).collect(),
    )
    .unwrap()
}

fn pair(suite: SrtpSuite) -> (SrtpContext, SrtpContext) {
    let k = key(suite, 0x5a);
    (SrtpContext::new(&k), SrtpContext::new(&k))
}

/// A plain RTP packet: 12-byte header (plus `csrcs` CSRCs and, if `ext`, a one-word extension),
/// payload of `payload_len` bytes.
fn rtp(seq: u16, ssrc: u32, payload_len: usize, csrcs: u8, ext: bool) -> Vec<u8> {
    let mut p = vec![0x80 | csrcs | if ext { 0x10 } else { 0 }, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    for c in 0..csrcs {
        p.extend_from_slice(&(0x1000_0000 + u32::from(c)).to_be_bytes());
    }
    if ext {
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xab, 0, 0]);
    }
    p.extend((0..payload_len).map(|i| (i as u8).wrapping_add(seq as u8)));
    p
}

/// A plain RTCP receiver report with one report block.
fn rtcp(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0, 7];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..24).map(|i| i as u8));
    p
}

/// The `E|SRTCP index` word of an SRTCP packet `ctx` protected.
fn srtcp_word(ctx: &SrtpContext, wire: &[u8]) -> u32 {
    let i = ctx.srtcp.srtcp_word_at(wire.len()).unwrap();
    u32::from_be_bytes(wire[i..i + 4].try_into().unwrap())
}

/// `plain` in a buffer with `overhead` octets to spare, protected in place by `protect`.
fn protected(
    plain: &[u8],
    overhead: usize,
    protect: impl FnOnce(&mut [u8], usize) -> Result<usize, SrtpError>,
) -> Result<Vec<u8>, SrtpError> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + overhead, 0);
    let n = protect(&mut buf, plain.len())?;
    assert_eq!(n, buf.len());
    Ok(buf)
}

/// `wire` opened in place by `unprotect`.
fn opened(
    wire: &[u8],
    unprotect: impl FnOnce(&mut [u8]) -> Result<usize, SrtpError>,
) -> Result<Vec<u8>, SrtpError> {
    let mut buf = wire.to_vec();
    let n = unprotect(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// The receiver refused the packet as not authentic.
#[track_caller]
fn assert_forged(opened: Result<Vec<u8>, SrtpError>) {
    assert_eq!(opened, Err(SrtpError::AuthenticationFailed));
}

fn protect_rtp(ctx: &mut SrtpContext, plain: &[u8]) -> Result<Vec<u8>, SrtpError> {
    protected(plain, ctx.rtp_overhead(), |b, n| ctx.protect_rtp(b, n))
}

fn unprotect_rtp(ctx: &mut SrtpContext, wire: &[u8]) -> Result<Vec<u8>, SrtpError> {
    opened(wire, |b| ctx.unprotect_rtp(b))
}

fn protect_rtcp(ctx: &mut SrtpContext, plain: &[u8]) -> Result<Vec<u8>, SrtpError> {
    protected(plain, ctx.rtcp_overhead(), |b, n| ctx.protect_rtcp(b, n))
}

fn unprotect_rtcp(ctx: &mut SrtpContext, wire: &[u8]) -> Result<Vec<u8>, SrtpError> {
    opened(wire, |b| ctx.unprotect_rtcp(b))
}

/// RFC 3711 Appendix B.2: AES-CM keystream for session key 2B7E…, salt F0F1…FD, SSRC 0,
/// index 0.
#[test]
fn rfc3711_b2_aes_cm_keystream() {
    let key: [u8; 16] = hex("2B7E151628AED2A6ABF7158809CF4F3C").try_into().unwrap();
    let salt: [u8; 14] = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD").try_into().unwrap();
    let t = Transform::cm(&key, &salt, &[0; 20]);
    let mut ks = vec![0u8; 0xff02 * 16];
    t.cm_apply_keystream(0, 0, &mut ks);
    for (block, expected) in [
        (0x0000, "E03EAD0935C95E80E166B16DD92B4EB4"),
        (0x0001, "D23513162B02D0F72A43A2FE4A5F97AB"),
        (0x0002, "41E95B3BB0A2E8DD477901E4FCA894C0"),
        (0xfeff, "EC8CDF7398607CB0F2D21675EA9EA1E4"),
        (0xff00, "362B7C3C6773516318A077D7FC5073AE"),
        (0xff01, "6A2CC3787889374FBEB4C81B17BA6C44"),
    ] {
        assert_eq!(
            ks[block * 16..block * 16 + 16],
            hex(expected)[..],
            "block {block:#06x}"
        );
    }
}

const RFC7714_KEY: &str = "000102030405060708090a0b0c0d0e0f";
const RFC7714_SALT: &str = "517569642070726f2071756f";

fn rfc7714_context() -> SrtpContext {
    SrtpContext::from_gcm_session_keys(
        &hex(RFC7714_KEY).try_into().unwrap(),
        &hex(RFC7714_SALT).try_into().unwrap(),
    )
}

/// RFC 7714 §16: "Gallia est omnis divisa in partes tres", SSRC 0x5501a0b2, SEQ 0xf17b, ROC 0.
const RFC7714_RTP: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973
                           20646976 69736120 696e2070 61727465 73207472 6573";
/// RFC 7714 §16.1.1: the encrypted and tagged packet.
const RFC7714_SRTP: &str = "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca
                            be633bd5 0d294e6f 42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1
                            6a9152cf 765ee439 0cce";

/// RFC 7714 §16.1.1 (encryption) and §16.1.2 (decryption).
#[test]
fn rfc7714_16_1_srtp_aead_aes_128_gcm() {
    let mut tx = rfc7714_context();
    rfc7714_vector(
        &mut tx,
        (protect_rtp, unprotect_rtp),
        RFC7714_RTP,
        RFC7714_SRTP,
    );
}

type Direction = fn(&mut SrtpContext, &[u8]) -> Result<Vec<u8>, SrtpError>;

/// RFC 7714's vector: `tx` protects `plain` into `wire`, and a fresh context (returned) opens
/// `wire` back into `plain`.
fn rfc7714_vector(
    tx: &mut SrtpContext,
    (protect, unprotect): (Direction, Direction),
    plain: &str,
    wire: &str,
) -> SrtpContext {
    assert_eq!(protect(tx, &hex(plain)).unwrap(), hex(wire));
    let mut rx = rfc7714_context();
    assert_eq!(unprotect(&mut rx, &hex(wire)).unwrap(), hex(plain));
    rx
}

/// RFC 7714 §17: the SR packet of SSRC "Mars", SRTCP index 0x5d4.
const RFC7714_RTCP: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930
                            4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeef";
/// RFC 7714 §17.1: encrypted and tagged (E = 1).
const RFC7714_SRTCP: &str = "81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7
                             6c06f32d c676a5f1 730d6fda 4ce09b46 86303ded 0bb9275b c84aa458
                             96cf4d2f c5abf872 45d9eade 800005d4";
/// RFC 7714 §17.3: tagged only (E = 0).
const RFC7714_SRTCP_AUTH_ONLY: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a
                                       0000e930 4c756e61 deadbeef deadbeef deadbeef deadbeef
                                       deadbeef 841dd968 3dd78ec9 2ae58790 125f62b3 000005d4";

/// RFC 7714 §17.1 (SRTCP encryption and decryption) and §17.3 (authentication only).
#[test]
fn rfc7714_17_srtcp_aead_aes_128_gcm() {
    let mut tx = rfc7714_context();
    tx.set_next_srtcp_index(0x4d61_7273, 0x5d4);
    let mut rx = rfc7714_vector(
        &mut tx,
        (protect_rtcp, unprotect_rtcp),
        RFC7714_RTCP,
        RFC7714_SRTCP,
    );
    // Same index again, even authentication-only: a replay.
    assert_eq!(
        unprotect_rtcp(&mut rx, &hex(RFC7714_SRTCP_AUTH_ONLY)),
        Err(SrtpError::Replayed)
    );

    let mut rx = rfc7714_context();
    assert_eq!(
        unprotect_rtcp(&mut rx, &hex(RFC7714_SRTCP_AUTH_ONLY)).unwrap(),
        hex(RFC7714_RTCP)
    );
    // A flipped E bit changes the AAD and the layout: refused.
    let mut flipped = hex(RFC7714_SRTCP_AUTH_ONLY);
    *flipped.last_mut().unwrap() ^= 1;
    let n = flipped.len();
    flipped[n - 4] ^= 0x80;
    assert_forged(unprotect_rtcp(&mut rfc7714_context(), &flipped));
}

#[test]
fn overheads() {
    let (gcm, _) = pair(SrtpSuite::AeadAes128Gcm);
    assert_eq!((gcm.rtp_overhead(), gcm.rtcp_overhead()), (16, 20));
    assert_eq!(gcm.suite(), SrtpSuite::AeadAes128Gcm);
    let (cm, _) = pair(SrtpSuite::AesCm128HmacSha1_80);
    assert_eq!((cm.rtp_overhead(), cm.rtcp_overhead()), (10, 14));
    assert_eq!(cm.suite(), SrtpSuite::AesCm128HmacSha1_80);
}

#[test]
fn round_trips_with_csrcs_and_extensions() {
    for suite in SUITES {
        let (mut tx, mut rx) = pair(suite);
        for (seq, csrcs, ext, len) in [
            (1, 0, false, 1200),
            (2, 2, false, 100),
            (3, 0, true, 17),
            (4, 15, true, 0),
            (5, 1, true, 1),
        ] {
            let plain = rtp(seq, 0xdead_beef, len, csrcs, ext);
            let wire = protect_rtp(&mut tx, &plain).unwrap();
            // The header (AAD) stays in the clear; a non-empty payload does not.
            let header_len = plain.len() - len;
            assert_eq!(wire[..header_len], plain[..header_len]);
            if len > 4 {
                assert_ne!(wire[header_len..plain.len()], plain[header_len..]);
            }
            assert_eq!(
                unprotect_rtp(&mut rx, &wire).unwrap(),
                plain,
                "{suite:?} {seq}"
            );
        }
        for _ in 0..3 {
            let plain = rtcp(0x0102_0304);
            let wire = protect_rtcp(&mut tx, &plain).unwrap();
            assert_eq!(wire[..8], plain[..8]);
            assert_ne!(wire[8..plain.len()], plain[8..]);
            assert_eq!(unprotect_rtcp(&mut rx, &wire).unwrap(), plain);
        }
    }
}

#[test]
fn different_keys_do_not_authenticate() {
    for suite in SUITES {
        let mut tx = SrtpContext::new(&key(suite, 1));
        let mut rx = SrtpContext::new(&key(suite, 2));
        let wire = protect_rtp(&mut tx, &rtp(9, 7, 50, 0, false)).unwrap();
        assert_forged(unprotect_rtp(&mut rx, &wire));
        let wire = protect_rtcp(&mut tx, &rtcp(7)).unwrap();
        assert_forged(unprotect_rtcp(&mut rx, &wire));
    }
}

#[test]
fn srtcp_index_starts_at_one_per_ssrc_with_e_bit() {
    for suite in SUITES {
        let (mut tx, _) = pair(suite);
        let at = srtcp_word;
        let a1 = protect_rtcp(&mut tx, &rtcp(1)).unwrap();
        let a2 = protect_rtcp(&mut tx, &rtcp(1)).unwrap();
        let b1 = protect_rtcp(&mut tx, &rtcp(2)).unwrap();
        assert_eq!(at(&tx, &a1), 0x8000_0001);
        assert_eq!(at(&tx, &a2), 0x8000_0002);
        assert_eq!(at(&tx, &b1), 0x8000_0001);
    }
}

/// A sending context restored from a snapshot: an SSRC the snapshot did not hold (the old
/// context first protected it after the snapshot was taken, from index 1) starts past the
/// skip, never at 1 again (that would reuse a keystream and look like a replay). The state's
/// new field survives export and import; a state without it starts new SSRCs at 1 as before.
#[test]
fn a_restored_sender_starts_ssrcs_the_snapshot_did_not_hold_past_the_skip() {
    for suite in SUITES {
        let (mut old, mut rx) = pair(suite);
        // The index alone, without the E bit.
        let at = |ctx: &SrtpContext, wire: &[u8]| srtcp_word(ctx, wire) & 0x7fff_ffff;
        protect_rtcp(&mut old, &rtcp(1)).unwrap();
        let snap = old.export_state();
        assert_eq!(snap.rtcp_fresh_send_index, 0, "a fresh context has no base");
        // After the snapshot, the old context starts SSRC 2 at index 1 and dies.
        let late = protect_rtcp(&mut old, &rtcp(2)).unwrap();
        assert_eq!(at(&old, &late), 1);
        unprotect_rtcp(&mut rx, &late).unwrap();
        let (mut new, _) = pair(suite);
        new.import_state(&snap.clone().with_srtcp_send_skip(64))
            .unwrap();
        let first = protect_rtcp(&mut new, &rtcp(2)).unwrap();
        assert_eq!(at(&new, &first), 65, "past the skip, not 1");
        assert_eq!(unprotect_rtcp(&mut rx, &first).unwrap(), rtcp(2));
        // A third relay restoring from the second's state keeps the base.
        let again = new.export_state();
        assert_eq!(again.rtcp_fresh_send_index, 65);
        let (mut third, _) = pair(suite);
        third.import_state(&again.with_srtcp_send_skip(64)).unwrap();
        let t = protect_rtcp(&mut third, &rtcp(3)).unwrap();
        assert_eq!(at(&third, &t), 129);
        // Without the skip (a receiving context, an old state), new SSRCs start at 1.
        let (mut plain, _) = pair(suite);
        plain.import_state(&snap).unwrap();
        let p = protect_rtcp(&mut plain, &rtcp(4)).unwrap();
        assert_eq!(at(&plain, &p), 1);
    }
}

#[test]
fn srtcp_index_exhaustion_is_refused() {
    for suite in SUITES {
        let (mut tx, mut rx) = pair(suite);
        tx.set_next_srtcp_index(5, 0x7fff_ffff);
        let last = protect_rtcp(&mut tx, &rtcp(5)).unwrap();
        assert_eq!(unprotect_rtcp(&mut rx, &last).unwrap(), rtcp(5));
        assert_eq!(protect_rtcp(&mut tx, &rtcp(5)), Err(SrtpError::Replayed));
    }
}

/// The ROC increments across 65535 → 0, on both sides, and a late packet from before the wrap
/// still decrypts with the old ROC.
#[test]
fn roc_rollover() {
    for suite in SUITES {
        let (mut tx, mut rx) = pair(suite);
        let seqs: Vec<u16> = (65_530..=65_535).chain(0..5).collect();
        let mut wires = Vec::new();
        for &s in &seqs {
            wires.push(protect_rtp(&mut tx, &rtp(s, 42, 64, 0, false)).unwrap());
        }
        // Deliver in order except the packet of 65535, which comes after 0..5.
        let late = wires.remove(5);
        for (w, &s) in wires.iter().zip(seqs.iter().filter(|&&s| s != 65_535)) {
            assert_eq!(unprotect_rtp(&mut rx, w).unwrap(), rtp(s, 42, 64, 0, false));
        }
        assert_eq!(
            unprotect_rtp(&mut rx, &late).unwrap(),
            rtp(65_535, 42, 64, 0, false)
        );
        assert_eq!(rx.rtp_streams.lookup(42).1.top(), Some((1 << 16) | 4));
        // A receiver that missed the wrap entirely (joined at ROC 1) would not authenticate:
        // the ROC is part of the authenticated data / nonce.
        let (_, mut fresh) = pair(suite);
        let w = protect_rtp(&mut tx, &rtp(5, 42, 64, 0, false)).unwrap();
        assert_forged(unprotect_rtp(&mut fresh, &w));
    }
}

#[test]
fn replayed_and_too_old() {
    for suite in SUITES {
        let (mut tx, mut rx) = pair(suite);
        let wires: Vec<Vec<u8>> = (0..100)
            .map(|s| protect_rtp(&mut tx, &rtp(s, 9, 20, 0, false)).unwrap())
            .collect();
        assert!(unprotect_rtp(&mut rx, &wires[10]).is_ok());
        assert_eq!(unprotect_rtp(&mut rx, &wires[10]), Err(SrtpError::Replayed));
        assert!(unprotect_rtp(&mut rx, &wires[99]).is_ok());
        assert_eq!(unprotect_rtp(&mut rx, &wires[99]), Err(SrtpError::Replayed));
        // 99 - 63 = 36 is the oldest index in the window.
        assert!(unprotect_rtp(&mut rx, &wires[36]).is_ok());
        assert_eq!(unprotect_rtp(&mut rx, &wires[36]), Err(SrtpError::Replayed));
        assert_eq!(unprotect_rtp(&mut rx, &wires[35]), Err(SrtpError::TooOld));
        assert_eq!(unprotect_rtp(&mut rx, &wires[10]), Err(SrtpError::TooOld));

        let rtcps: Vec<Vec<u8>> = (0..70)
            .map(|_| protect_rtcp(&mut tx, &rtcp(9)).unwrap())
            .collect();
        assert!(unprotect_rtcp(&mut rx, &rtcps[69]).is_ok());
        assert_eq!(
            unprotect_rtcp(&mut rx, &rtcps[69]),
            Err(SrtpError::Replayed)
        );
        assert!(unprotect_rtcp(&mut rx, &rtcps[6]).is_ok()); // index 7: 63 behind 70
        assert_eq!(unprotect_rtcp(&mut rx, &rtcps[5]), Err(SrtpError::TooOld));
    }
}

/// Protecting the same index twice would reuse the keystream (a GCM nonce): refused.
#[test]
fn protect_refuses_index_reuse() {
    for suite in SUITES {
        let (mut tx, mut rx) = pair(suite);
        for s in [100, 99, 101] {
            let w = protect_rtp(&mut tx, &rtp(s, 3, 10, 0, false)).unwrap();
            assert!(unprotect_rtp(&mut rx, &w).is_ok());
        }
        assert_eq!(
            protect_rtp(&mut tx, &rtp(100, 3, 10, 0, false)),
            Err(SrtpError::Replayed)
        );
        assert_eq!(
            protect_rtp(&mut tx, &rtp(30, 3, 10, 0, false)),
            Err(SrtpError::TooOld)
        );
        // Another SSRC has its own index space.
        assert!(protect_rtp(&mut tx, &rtp(100, 4, 10, 0, false)).is_ok());
    }
}

/// Any flipped bit is caught, and the failed packet does not advance the window: the genuine
/// packet is accepted afterwards.
#[test]
fn flipped_bits_fail_and_leave_state_alone() {
    for suite in SUITES {
        let (mut tx, mut rx) = pair(suite);
        let plain = rtp(7, 11, 40, 1, true);
        let wire = protect_rtp(&mut tx, &plain).unwrap();
        for bit in 0..wire.len() * 8 {
            let mut bad = wire.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let r = unprotect_rtp(&mut rx, &bad);
            assert!(r.is_err(), "{suite:?} bit {bit} accepted");
        }
        assert_eq!(rx.rtp_streams.len(), 0, "a failed packet created state");
        assert_eq!(unprotect_rtp(&mut rx, &wire).unwrap(), plain);

        // A forged packet far ahead must not move the window either.
        let ahead = protect_rtp(&mut tx, &rtp(5000, 11, 40, 0, false)).unwrap();
        let mut bad = ahead.clone();
        *bad.last_mut().unwrap() ^= 0x40;
        assert_forged(unprotect_rtp(&mut rx, &bad));
        assert_eq!(rx.rtp_streams.lookup(11).1.top(), Some(7));
        assert!(unprotect_rtp(&mut rx, &ahead).is_ok());

        let plain = rtcp(11);
        let wire = protect_rtcp(&mut tx, &plain).unwrap();
        for bit in 0..wire.len() * 8 {
            let mut bad = wire.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                unprotect_rtcp(&mut rx, &bad).is_err(),
                "{suite:?} rtcp bit {bit}"
            );
        }
        assert_eq!(rx.rtcp_streams.len(), 0);
        assert_eq!(unprotect_rtcp(&mut rx, &wire).unwrap(), plain);
    }
}

#[test]
fn a_17th_ssrc_evicts_the_least_recently_used_one() {
    for suite in SUITES {
        let (mut tx, mut rx) = pair(suite);
        for ssrc in 0..ACTIVE_SSRCS as u32 {
            let w = protect_rtp(&mut tx, &rtp(1, ssrc, 8, 0, false)).unwrap();
            assert!(unprotect_rtp(&mut rx, &w).is_ok());
            let w = protect_rtcp(&mut tx, &rtcp(ssrc)).unwrap();
            assert!(unprotect_rtcp(&mut rx, &w).is_ok());
        }
        // A 17th SSRC, RTP and RTCP, both ways: SSRC 0 (least recently used) is evicted.
        let w = protect_rtp(&mut tx, &rtp(1, 1000, 8, 0, false)).unwrap();
        assert!(unprotect_rtp(&mut rx, &w).is_ok());
        let w = protect_rtcp(&mut tx, &rtcp(1000)).unwrap();
        assert!(unprotect_rtcp(&mut rx, &w).is_ok());
        for ctx in [&tx, &rx] {
            assert_eq!(ctx.rtp_streams.len(), ACTIVE_SSRCS);
            assert_eq!(ctx.rtp_streams.evicted_len(), 1);
            assert_eq!(ctx.rtcp_streams.evicted_len(), 1);
            assert_eq!(ctx.ssrc_stats().evicted, 2);
        }
        // Known SSRCs go on working, and so does the evicted one.
        let w = protect_rtp(&mut tx, &rtp(2, 3, 8, 0, false)).unwrap();
        assert!(unprotect_rtp(&mut rx, &w).is_ok());
        let w = protect_rtp(&mut tx, &rtp(2, 0, 8, 0, false)).unwrap();
        assert!(unprotect_rtp(&mut rx, &w).is_ok());
        let w = protect_rtcp(&mut tx, &rtcp(0)).unwrap();
        assert!(unprotect_rtcp(&mut rx, &w).is_ok());
        assert_eq!(tx.ssrc_stats().restored, 2);
        assert_eq!(rx.ssrc_stats().restored, 2);
    }
}

/// `n` distinct SSRCs from `base`.
fn ssrcs(base: u32, n: u32) -> impl Iterator<Item = u32> {
    (0..n).map(move |i| base.wrapping_add(i.wrapping_mul(0x0101_0107)))
}

#[test]
fn hundred_ssrcs_through_one_protect_and_one_unprotect_context() {
    for suite in SUITES {
        let (mut tx, mut rx) = pair(suite);
        // Three rounds over 100 SSRCs: every packet after the first round is an SSRC coming
        // back from the evicted tier, in both contexts; RTCP likewise.
        for round in 0..3u16 {
            for ssrc in ssrcs(0x1000, 100) {
                for k in 0..3 {
                    let plain = rtp(round * 10 + k, ssrc, 20, 0, false);
                    let w = protect_rtp(&mut tx, &plain).unwrap();
                    assert_eq!(unprotect_rtp(&mut rx, &w).unwrap(), plain, "{suite:?}");
                }
                let plain = rtcp(ssrc);
                let w = protect_rtcp(&mut tx, &plain).unwrap();
                assert_eq!(unprotect_rtcp(&mut rx, &w).unwrap(), plain);
            }
        }
        for ctx in [&tx, &rx] {
            let st = ctx.ssrc_stats();
            assert_eq!(st.evicted, 2 * (300 - 16), "{st:?}");
            assert_eq!(st.restored, 2 * 200, "{st:?}");
            assert_eq!(
                (st.folded, st.started_at_floor, st.refused_at_floor),
                (0, 0, 0)
            );
            let state = ctx.export_state();
            assert_eq!((state.rtp.len(), state.rtcp.len()), (100, 100));
        }
    }
}

#[test]
fn an_evicted_ssrc_never_reuses_an_index_nor_accepts_a_replay() {
    for suite in SUITES {
        let (mut tx, mut rx) = pair(suite);
        let x = 0xabcd;
        let sent: Vec<Vec<u8>> = (1..=10)
            .map(|q| protect_rtp(&mut tx, &rtp(q, x, 8, 0, false)).unwrap())
            .collect();
        for w in &sent {
            unprotect_rtp(&mut rx, w).unwrap();
        }
        let sr: Vec<Vec<u8>> = (0..3)
            .map(|_| protect_rtcp(&mut tx, &rtcp(x)).unwrap())
            .collect();
        for w in &sr {
            unprotect_rtcp(&mut rx, w).unwrap();
        }
        // Two depths of eviction: into the evicted tier (16 others), then folded into a floor
        // (272 others).
        for (others, folded) in [(ACTIVE_SSRCS as u32, false), (300, true)] {
            for ssrc in ssrcs(0x7700_0000 + others, others) {
                // Once floors exist, a new SSRC may start under one: refused (see below).
                if let Ok(w) = protect_rtp(&mut tx, &rtp(1, ssrc, 8, 0, false)) {
                    unprotect_rtp(&mut rx, &w).unwrap();
                }
                let w = protect_rtcp(&mut tx, &rtcp(ssrc)).unwrap();
                unprotect_rtcp(&mut rx, &w).unwrap();
            }
            let gone = |c: &SrtpContext| c.export_state().rtp.iter().all(|s| s.ssrc != x);
            assert_eq!(gone(&tx), folded, "{suite:?}");
            assert_eq!(gone(&rx), folded, "{suite:?}");
            // Protect: every index X used is refused (the keystream would repeat).
            for q in 1..=10 {
                assert!(
                    protect_rtp(&mut tx, &rtp(q, x, 8, 0, false)).is_err(),
                    "{suite:?} seq {q} protected twice (folded: {folded})"
                );
            }
            // Unprotect: every packet X sent is a replay.
            for w in &sent {
                assert!(unprotect_rtp(&mut rx, w).is_err(), "{suite:?}");
            }
            for w in &sr {
                assert!(unprotect_rtcp(&mut rx, w).is_err(), "{suite:?}");
            }
        }
        assert!(tx.ssrc_stats().refused_at_floor >= 10);
        assert!(rx.ssrc_stats().refused_at_floor >= 10);
        // X comes back with higher indices: protected, decrypted; SRTCP goes on past 3.
        for q in 11..20 {
            let plain = rtp(q, x, 8, 0, false);
            let w = protect_rtp(&mut tx, &plain).unwrap();
            assert_eq!(unprotect_rtp(&mut rx, &w).unwrap(), plain);
            assert_eq!(unprotect_rtp(&mut rx, &w), Err(SrtpError::Replayed));
        }
        let w = protect_rtcp(&mut tx, &rtcp(x)).unwrap();
        assert_eq!(tx.export_state().rtcp[0].next_send_index, 5);
        unprotect_rtcp(&mut rx, &w).unwrap();
    }
}

#[test]
fn a_returning_ssrc_keeps_its_roc_across_the_wrap() {
    for suite in SUITES {
        let (mut tx, mut rx) = pair(suite);
        // A receiver that never evicts (one SSRC), to check what goes on the wire.
        let mut only_x = pair(suite).1;
        let x = 0x5555;
        for q in 65_530..=65_535u16 {
            let w = protect_rtp(&mut tx, &rtp(q, x, 8, 0, false)).unwrap();
            unprotect_rtp(&mut rx, &w).unwrap();
            unprotect_rtp(&mut only_x, &w).unwrap();
        }
        for q in 0..3u16 {
            let w = protect_rtp(&mut tx, &rtp(q, x, 8, 0, false)).unwrap();
            unprotect_rtp(&mut rx, &w).unwrap();
            unprotect_rtp(&mut only_x, &w).unwrap();
        }
        for ssrc in ssrcs(9, 40) {
            let w = protect_rtp(&mut tx, &rtp(1, ssrc, 8, 0, false)).unwrap();
            unprotect_rtp(&mut rx, &w).unwrap();
        }
        // Back from the evicted tier at ROC 1, and across the next wrap to ROC 2.
        for i in 0..70_000u32 {
            let plain = rtp((3 + i) as u16, x, 8, 0, false);
            let w = protect_rtp(&mut tx, &plain).unwrap();
            assert_eq!(
                unprotect_rtp(&mut only_x, &w).unwrap(),
                plain,
                "{suite:?} {i}"
            );
            assert_eq!(unprotect_rtp(&mut rx, &w).unwrap(), plain, "{suite:?} {i}");
        }
        let roc = |c: &SrtpContext| c.export_state().rtp[0].roc;
        assert_eq!((roc(&tx), roc(&rx), roc(&only_x)), (2, 2, 2));
    }
}

#[test]
fn memory_is_bounded_whatever_the_number_of_ssrcs() {
    let (mut tx, mut rx) = pair(SrtpSuite::AeadAes128Gcm);
    let before = core::mem::size_of::<SrtpContext>();
    for (i, ssrc) in ssrcs(77, 5_000).enumerate() {
        let q = i as u16;
        let w = protect_rtp(&mut tx, &rtp(q, ssrc, 4, 0, false));
        // A fresh SSRC may land under a floor: refused (and counted), never reused.
        if let Ok(w) = w {
            unprotect_rtp(&mut rx, &w).unwrap_or_default();
        }
        if i % 7 == 0 {
            if let Ok(w) = protect_rtcp(&mut tx, &rtcp(ssrc)) {
                unprotect_rtcp(&mut rx, &w).unwrap_or_default();
            }
        }
    }
    for ctx in [&tx, &rx] {
        assert_eq!(ctx.rtp_streams.len(), ACTIVE_SSRCS);
        assert_eq!(ctx.rtp_streams.evicted_len(), EVICTED_SSRCS);
        // The evicted tier never grew past its first allocation; the floors are one array.
        assert_eq!(ctx.rtp_streams.reserved(), (EVICTED_SSRCS, FLOOR_BUCKETS));
        assert_eq!(ctx.rtcp_streams.reserved(), (EVICTED_SSRCS, FLOOR_BUCKETS));
        let state = ctx.export_state();
        assert_eq!(state.rtp.len(), ACTIVE_SSRCS + EVICTED_SSRCS);
        assert!(state.rtp_floors.len() <= FLOOR_BUCKETS);
        assert!(state.rtcp_floors.len() <= FLOOR_BUCKETS);
    }
    assert_eq!(core::mem::size_of::<SrtpContext>(), before);
    let st = tx.ssrc_stats();
    assert!(st.folded > 4_000, "{st:?}");
    // With 5,000 SSRCs over 256 buckets, most fresh SSRCs land under a floor: the rare case
    // made common, to show it is counted.
    assert!(st.started_at_floor + st.refused_at_floor > 0, "{st:?}");
}

/// Random SSRC/sequence-number walks (hot SSRCs, a long tail of 400 so that floors fill,
/// repeats, late packets, jumps across the wrap) through one protect context: no (SSRC, packet
/// index) is ever protected twice, checked two ways: by the index the context computes, and
/// independently by the output (the plaintext is a function of SSRC and sequence number, so
/// two identical protected packets would mean the same keystream twice). Every protected
/// packet goes to one unprotect context, with random replays of earlier ones: none is ever
/// accepted twice.
#[test]
fn random_walks_never_protect_an_index_twice_nor_accept_one_twice() {
    use std::collections::HashSet;
    for (suite, seed, steps) in [
        (SrtpSuite::AeadAes128Gcm, 0x5eed_0001_u64, 60_000),
        (SrtpSuite::AesCm128HmacSha1_80, 0x5eed_0002, 20_000),
    ] {
        let mut rng = Rng(seed);
        let (mut tx, mut rx) = pair(suite);
        let pool: Vec<u32> = (0..400).map(|_| rng.next() as u32).collect();
        let mut seqs: Vec<u16> = pool.iter().map(|_| rng.next() as u16).collect();
        let mut indices = HashSet::new();
        let mut wires = HashSet::new();
        let mut accepted = HashSet::new();
        let mut sent: Vec<Vec<u8>> = Vec::new();
        let (mut protected, mut refused) = (0u32, 0u32);
        for _ in 0..steps {
            let i = if rng.below(10) < 7 {
                rng.below(20)
            } else {
                rng.below(pool.len() as u64)
            } as usize;
            let ssrc = pool[i];
            let seq = match rng.below(100) {
                0..=79 => {
                    seqs[i] = seqs[i].wrapping_add(1 + rng.below(3) as u16);
                    seqs[i]
                }
                80..=89 => seqs[i].wrapping_sub(rng.below(100) as u16),
                90..=94 => {
                    seqs[i] = seqs[i].wrapping_add(rng.below(40_000) as u16);
                    seqs[i]
                }
                _ => rng.next() as u16,
            };
            let (_, window) = tx.rtp_streams.lookup(ssrc);
            let index = replay::estimate_index(&window, seq);
            match protect_rtp(&mut tx, &rtp(seq, ssrc, 4, 0, false)) {
                Ok(w) => {
                    protected += 1;
                    assert!(
                        indices.insert((ssrc, index)),
                        "{suite:?}: {ssrc:#x} {index}"
                    );
                    assert!(wires.insert(w.clone()), "{suite:?}: same output twice");
                    sent.push(w);
                }
                Err(e) => {
                    refused += 1;
                    assert!(matches!(e, SrtpError::Replayed | SrtpError::TooOld));
                }
            }
            // Deliver the newest packet, and now and then replay an older one.
            let mut deliver = sent.last().cloned().into_iter().collect::<Vec<_>>();
            if !sent.is_empty() && rng.below(4) == 0 {
                deliver.push(sent[rng.below(sent.len() as u64) as usize].clone());
            }
            for w in deliver {
                if unprotect_rtp(&mut rx, &w).is_ok() {
                    assert!(accepted.insert(w), "{suite:?}: a packet accepted twice");
                }
            }
        }
        let st = tx.ssrc_stats();
        assert!(
            protected > steps / 2 && refused > 0,
            "{protected} {refused}"
        );
        assert!(
            st.evicted > 1_000 && st.restored > 100 && st.folded > 0,
            "{st:?}"
        );
        assert!(accepted.len() > steps as usize / 3, "{}", accepted.len());
    }
}

#[test]
fn buffer_too_small() {
    for suite in SUITES {
        let (mut tx, _) = pair(suite);
        let plain = rtp(1, 1, 30, 0, false);
        let mut buf = plain.clone();
        buf.resize(plain.len() + tx.rtp_overhead() - 1, 0);
        assert_eq!(
            tx.protect_rtp(&mut buf, plain.len()),
            Err(SrtpError::BufferTooSmall)
        );
        assert_eq!(
            tx.protect_rtp(&mut buf, usize::MAX),
            Err(SrtpError::BufferTooSmall)
        );
        let plain = rtcp(1);
        let mut buf = plain.clone();
        buf.resize(plain.len() + tx.rtcp_overhead() - 1, 0);
        assert_eq!(
            tx.protect_rtcp(&mut buf, plain.len()),
            Err(SrtpError::BufferTooSmall)
        );
        // Nothing was recorded: the first index is still 1.
        buf.push(0);
        tx.protect_rtcp(&mut buf, plain.len()).unwrap();
        assert_eq!(srtcp_word(&tx, &buf), 0x8000_0001);
    }
}

#[test]
fn malformed_plain_packets_are_refused() {
    for suite in SUITES {
        let (mut tx, _) = pair(suite);
        let mut buf = [0u8; 64];
        // Too short, wrong version, CSRCs or extension past the end.
        for (bytes, len) in [
            (&[0x80u8, 0, 0, 1][..], 4),
            (&[0x40, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1][..], 12),
            (&[0x81, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1][..], 12),
            (&[0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe, 0xde][..], 14),
            (
                &[0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe, 0xde, 0, 1][..],
                16,
            ),
        ] {
            buf[..len].copy_from_slice(bytes);
            assert_eq!(tx.protect_rtp(&mut buf, len), Err(SrtpError::Malformed));
        }
        buf[..4].copy_from_slice(&[0x80, 201, 0, 1]);
        assert_eq!(tx.protect_rtcp(&mut buf, 4), Err(SrtpError::Malformed));
        buf[..8].copy_from_slice(&[0x00, 201, 0, 1, 0, 0, 0, 1]);
        assert_eq!(tx.protect_rtcp(&mut buf, 8), Err(SrtpError::Malformed));
    }
}

/// Truncations and garbage never panic and are never accepted.
#[test]
fn truncated_and_garbage_input_is_an_error() {
    for suite in SUITES {
        let (mut tx, mut rx) = pair(suite);
        let wire = protect_rtp(&mut tx, &rtp(1, 5, 48, 2, true)).unwrap();
        for n in 0..wire.len() {
            assert!(
                unprotect_rtp(&mut rx, &wire[..n]).is_err(),
                "{suite:?} rtp[..{n}]"
            );
        }
        let wire = protect_rtcp(&mut tx, &rtcp(5)).unwrap();
        for n in 0..wire.len() {
            assert!(
                unprotect_rtcp(&mut rx, &wire[..n]).is_err(),
                "{suite:?} rtcp[..{n}]"
            );
        }
        let mut state = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..20_000 {
            let len = (state.next() % 80) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| state.next() as u8).collect();
            if round % 2 == 0 && !buf.is_empty() {
                buf[0] = (buf[0] & 0x3f) | 0x80; // version 2, to get past the first check
            }
            assert!(rx.unprotect_rtp(&mut buf.clone()).is_err());
            assert!(rx.unprotect_rtcp(&mut buf.clone()).is_err());
            // Protecting garbage may succeed (it is just bytes) but must not panic.
            let cap = len + 30;
            buf.resize(cap, 0);
            let _ = tx.protect_rtp(&mut buf, len);
            let _ = tx.protect_rtcp(&mut buf, len);
        }
        assert_eq!(rx.rtp_streams.len(), 0);
        assert_eq!(rx.rtcp_streams.len(), 0);
    }
}

#[test]
fn key_of_wrong_length_is_refused_and_debug_redacts() {
    let bad = MasterKey {
        suite: SrtpSuite::AeadAes128Gcm,
        material: vec![0; 30],
    };
    assert!(matches!(
        SrtpContext::try_new(&bad),
        Err(SrtpError::Malformed)
    ));
    let k = MasterKey::new(SrtpSuite::AesCm128HmacSha1_80, vec![0xab; 30]).unwrap();
    let ctx = SrtpContext::new(&k);
    let dbg = format!("{ctx:?}");
    assert!(dbg.contains("redacted") && !dbg.contains("ab"), "{dbg}");
    assert_eq!(
        SrtpError::TooManySsrcs.to_string(),
        "too many SSRCs in one SRTP context"
    );
}

/// The fuzzing-only null cipher: identity "encryption", all-zero "tag", replay rules intact.
#[cfg(fuzzing)]
#[test]
fn null_cipher_for_fuzzing() {
    let mut tx = SrtpContext::new_null_for_fuzzing();
    let mut rx = SrtpContext::new_null_for_fuzzing();
    assert_eq!((tx.rtp_overhead(), tx.rtcp_overhead()), (16, 20));
    let plain = rtp(1, 2, 30, 1, true);
    let wire = protect_rtp(&mut tx, &plain).unwrap();
    assert_eq!(wire[..plain.len()], plain[..]);
    assert!(wire[plain.len()..].iter().all(|&b| b == 0));
    assert_eq!(unprotect_rtp(&mut rx, &wire).unwrap(), plain);
    assert_eq!(unprotect_rtp(&mut rx, &wire), Err(SrtpError::Replayed));
    let mut forged = rtp(2, 2, 30, 0, false);
    forged.extend_from_slice(&[0; 15]);
    forged.push(1);
    assert_forged(unprotect_rtp(&mut rx, &forged));

    let plain = rtcp(2);
    let wire = protect_rtcp(&mut tx, &plain).unwrap();
    assert_eq!(unprotect_rtcp(&mut rx, &wire).unwrap(), plain);
    // E = 0 works the same way.
    let mut auth_only = wire.clone();
    let n = auth_only.len();
    auth_only[n - 4] &= 0x7f;
    auth_only[n - 1] = 9;
    assert_eq!(unprotect_rtcp(&mut rx, &auth_only).unwrap(), plain);
}

/// A receiver's state exported mid-stream and imported into a fresh context with the same key:
/// the next packets pass with no authentication or replay failure, the old ones are still
/// replays (or too old), across a ROC wrap; SRTCP likewise, and a sender restored with a skip
/// never reuses an SRTCP index.
#[test]
fn exported_state_resumes_in_a_fresh_context() {
    for suite in SUITES {
        let k = key(suite, 0x33);
        let mut tx = SrtpContext::new(&k);
        let mut rx = SrtpContext::new(&k);
        let ssrc = 0x1234_5678;
        // Start close to the wrap so the restored context sees ROC go from 0 to 1 and 2.
        let mut wire = Vec::new();
        for i in 0..200u32 {
            let seq = (65_436 + i) as u16;
            let w = protect_rtp(&mut tx, &rtp(seq, ssrc, 40, 0, false)).unwrap();
            wire.push(w);
        }
        // The receiver gets the first 150 (ROC wraps at 100), one of them late.
        for (i, w) in wire.iter().enumerate().take(150) {
            if i != 140 {
                unprotect_rtp(&mut rx, w).unwrap();
            }
        }
        let state = rx.export_state();
        assert_eq!(state.rtp.len(), 1);
        assert_eq!(state.rtp[0].roc, 1);
        assert_eq!(state.rtp[0].highest_seq, 49);
        let mut restored = SrtpContext::new(&k);
        restored.import_state(&state).unwrap();
        assert_eq!(restored.export_state(), state);
        // Old packets: replays, or too old; the late one still passes once.
        assert_eq!(
            unprotect_rtp(&mut restored, &wire[149]),
            Err(SrtpError::Replayed)
        );
        assert_eq!(
            unprotect_rtp(&mut restored, &wire[120]),
            Err(SrtpError::Replayed)
        );
        assert_eq!(
            unprotect_rtp(&mut restored, &wire[10]),
            Err(SrtpError::TooOld)
        );
        unprotect_rtp(&mut restored, &wire[140]).unwrap();
        assert_eq!(
            unprotect_rtp(&mut restored, &wire[140]),
            Err(SrtpError::Replayed)
        );
        // The next ones pass, every one.
        for w in &wire[150..] {
            unprotect_rtp(&mut restored, w).unwrap();
        }
        // ... and on across the next wrap, with zero failures.
        let mut failures = 0;
        for i in 200..66_000u32 {
            let seq = (65_436 + i) as u16;
            let w = protect_rtp(&mut tx, &rtp(seq, ssrc, 4, 0, false)).unwrap();
            failures += usize::from(unprotect_rtp(&mut restored, &w).is_err());
        }
        assert_eq!(failures, 0, "{suite:?}");
        assert_eq!(restored.export_state().rtp[0].roc, 2);

        // A sender's state: restored with the SSRC's protect history, it refuses reuse.
        let mut tx2 = SrtpContext::new(&k);
        tx2.import_state(&tx.export_state()).unwrap();
        assert_eq!(
            protect_rtp(&mut tx2, &rtp(3, ssrc, 4, 0, false)),
            Err(SrtpError::TooOld)
        );

        // SRTCP: receiver resumes, sender skips ahead.
        let mut rtx = SrtpContext::new(&k);
        let mut rrx = SrtpContext::new(&k);
        let sr: Vec<_> = (0..10)
            .map(|_| protect_rtcp(&mut rtx, &rtcp(ssrc)).unwrap())
            .collect();
        for w in &sr[..6] {
            unprotect_rtcp(&mut rrx, w).unwrap();
        }
        let mut rrx2 = SrtpContext::new(&k);
        rrx2.import_state(&rrx.export_state()).unwrap();
        assert_eq!(unprotect_rtcp(&mut rrx2, &sr[5]), Err(SrtpError::Replayed));
        for w in &sr[6..] {
            unprotect_rtcp(&mut rrx2, w).unwrap();
        }
        // The sender's state as of packet 6; the old sender went on to 10 before it died.
        let mut rtx2 = SrtpContext::new(&k);
        let stale = SrtpState {
            rtcp: vec![RtcpStreamState {
                next_send_index: 7,
                ..rtx.export_state().rtcp[0]
            }],
            ..Default::default()
        };
        rtx2.import_state(&stale.with_srtcp_send_skip(1024))
            .unwrap();
        let next = protect_rtcp(&mut rtx2, &rtcp(ssrc)).unwrap();
        unprotect_rtcp(&mut rrx2, &next).unwrap();
    }
}

#[test]
fn import_state_is_bounded_and_all_or_nothing() {
    let k = key(SrtpSuite::AeadAes128Gcm, 1);
    let mut ctx = SrtpContext::new(&k);
    let too_many = SrtpState {
        rtp: (0..=(ACTIVE_SSRCS + EVICTED_SSRCS) as u32)
            .map(|ssrc| RtpStreamState {
                ssrc,
                roc: 0,
                highest_seq: 1,
                window: 1,
            })
            .collect(),
        ..Default::default()
    };
    assert_eq!(ctx.import_state(&too_many), Err(SrtpError::TooManySsrcs));
    assert_eq!(ctx.export_state(), SrtpState::default());
    let bad = SrtpState {
        rtp: Vec::new(),
        rtcp: vec![RtcpStreamState {
            ssrc: 1,
            next_send_index: 1,
            highest_received: Some(u32::MAX),
            window: 1,
        }],
        ..Default::default()
    };
    assert_eq!(ctx.import_state(&bad), Err(SrtpError::Malformed));
    // An exhausted SRTCP index space stays exhausted through a skip.
    let done = SrtpState {
        rtp: Vec::new(),
        rtcp: vec![RtcpStreamState {
            ssrc: 1,
            next_send_index: 0x8000_0000,
            highest_received: None,
            window: 0,
        }],
        ..Default::default()
    };
    ctx.import_state(&done.with_srtcp_send_skip(5)).unwrap();
    assert_eq!(protect_rtcp(&mut ctx, &rtcp(1)), Err(SrtpError::Replayed));
    // Floors: a bucket past the table, an SRTP index past 48 bits.
    let mut ctx = SrtpContext::new(&k);
    for bad in [
        SrtpState {
            rtp_floors: vec![RtpFloor {
                bucket: FLOOR_BUCKETS as u16,
                index: 1,
            }],
            ..Default::default()
        },
        SrtpState {
            rtp_floors: vec![RtpFloor {
                bucket: 0,
                index: 1 << 48,
            }],
            ..Default::default()
        },
        SrtpState {
            rtcp_floors: vec![RtcpFloor {
                bucket: 3,
                next_send_index: 1,
                highest_received: Some(u32::MAX),
            }],
            ..Default::default()
        },
    ] {
        assert_eq!(ctx.import_state(&bad), Err(SrtpError::Malformed));
    }
    assert_eq!(ctx.export_state(), SrtpState::default());
}

/// HA with evictions: a context restored from the state of one that evicted and folded SSRCs
/// refuses every index they used, lets them go on above, and keeps them in the same order.
#[test]
fn state_with_evicted_ssrcs_and_floors_survives_export_and_import() {
    for suite in SUITES {
        let k = key(suite, 9);
        let (mut tx, mut rx) = (SrtpContext::new(&k), SrtpContext::new(&k));
        let x = 0x0dd;
        let sent: Vec<Vec<u8>> = (100..110)
            .map(|q| protect_rtp(&mut tx, &rtp(q, x, 8, 0, false)).unwrap())
            .collect();
        for w in &sent {
            unprotect_rtp(&mut rx, w).unwrap();
        }
        // 20 others: X is evicted (exact); then 300 more: X is folded.
        for (n, folded) in [(20, false), (300, true)] {
            for ssrc in ssrcs(0x4000 + n, n) {
                if let Ok(w) = protect_rtp(&mut tx, &rtp(1, ssrc, 8, 0, false)) {
                    unprotect_rtp(&mut rx, &w).unwrap();
                }
                let w = protect_rtcp(&mut tx, &rtcp(ssrc)).unwrap();
                unprotect_rtcp(&mut rx, &w).unwrap();
            }
            for ctx in [&tx, &rx] {
                let state = ctx.export_state();
                assert_eq!(!state.rtp_floors.is_empty(), folded);
                assert_eq!(!state.rtcp_floors.is_empty(), folded);
                let mut restored = SrtpContext::new(&k);
                restored.import_state(&state).unwrap();
                assert_eq!(restored.export_state(), state, "{suite:?} folded {folded}");
                // Imported with the evicted tier's full capacity: no growth on eviction.
                let floors = if folded { FLOOR_BUCKETS } else { 0 };
                assert_eq!(restored.rtp_streams.reserved(), (EVICTED_SSRCS, floors));
                #[cfg(feature = "ha")]
                {
                    let json = serde_json::to_string(&state).unwrap();
                    assert_eq!(json.contains("rtp_floors"), folded);
                    let back: SrtpState = serde_json::from_str(&json).unwrap();
                    assert_eq!(back, state);
                }
            }
            let (mut tx2, mut rx2) = (SrtpContext::new(&k), SrtpContext::new(&k));
            tx2.import_state(&tx.export_state()).unwrap();
            rx2.import_state(&rx.export_state()).unwrap();
            for q in 100..110 {
                assert!(protect_rtp(&mut tx2, &rtp(q, x, 8, 0, false)).is_err());
            }
            for w in &sent {
                assert!(unprotect_rtp(&mut rx2, w).is_err());
            }
        }
        let (mut tx2, mut rx2) = (SrtpContext::new(&k), SrtpContext::new(&k));
        tx2.import_state(&tx.export_state()).unwrap();
        rx2.import_state(&rx.export_state()).unwrap();
        let plain = rtp(110, x, 8, 0, false);
        let w = protect_rtp(&mut tx2, &plain).unwrap();
        assert_eq!(unprotect_rtp(&mut rx2, &w).unwrap(), plain);
        assert_eq!(unprotect_rtp(&mut rx, &w).unwrap(), plain);
    }
}

/// A state written before evictions existed (no floor lists) reads as it did.
#[cfg(feature = "ha")]
#[test]
fn state_without_floors_reads_as_before() {
    let old = r#"{"rtp":[{"ssrc":7,"roc":1,"highest_seq":9,"window":1}],"rtcp":[{"ssrc":7,"next_send_index":4,"highest_received":null,"window":0}]}"#;
    let state: SrtpState = serde_json::from_str(old).unwrap();
    assert!(state.rtp_floors.is_empty() && state.rtcp_floors.is_empty());
    assert_eq!(state.rtp[0].highest_index(), (1 << 16) | 9);
    assert_eq!(serde_json::to_string(&state).unwrap(), old);
}
