//! Unit tests: published vectors (RFC 3711 Appendix B, RFC 7714 §16–17), round trips, index
//! estimation across the sequence-number wrap, replay protection, tampering, and garbage input.

use super::*;

/// Decodes hex, ignoring whitespace.
pub(super) fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

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

fn protect_rtp(ctx: &mut SrtpContext, plain: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + ctx.rtp_overhead(), 0);
    let n = ctx.protect_rtp(&mut buf, plain.len())?;
    assert_eq!(n, buf.len());
    Ok(buf)
}

fn unprotect_rtp(ctx: &mut SrtpContext, wire: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = wire.to_vec();
    let n = ctx.unprotect_rtp(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn protect_rtcp(ctx: &mut SrtpContext, plain: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + ctx.rtcp_overhead(), 0);
    let n = ctx.protect_rtcp(&mut buf, plain.len())?;
    assert_eq!(n, buf.len());
    Ok(buf)
}

fn unprotect_rtcp(ctx: &mut SrtpContext, wire: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = wire.to_vec();
    let n = ctx.unprotect_rtcp(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
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
    assert_eq!(
        protect_rtp(&mut tx, &hex(RFC7714_RTP)).unwrap(),
        hex(RFC7714_SRTP)
    );
    let mut rx = rfc7714_context();
    assert_eq!(
        unprotect_rtp(&mut rx, &hex(RFC7714_SRTP)).unwrap(),
        hex(RFC7714_RTP)
    );
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
    assert_eq!(
        protect_rtcp(&mut tx, &hex(RFC7714_RTCP)).unwrap(),
        hex(RFC7714_SRTCP)
    );

    let mut rx = rfc7714_context();
    assert_eq!(
        unprotect_rtcp(&mut rx, &hex(RFC7714_SRTCP)).unwrap(),
        hex(RFC7714_RTCP)
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
    assert_eq!(
        unprotect_rtcp(&mut rfc7714_context(), &flipped),
        Err(SrtpError::AuthenticationFailed)
    );
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
        assert_eq!(
            unprotect_rtp(&mut rx, &wire),
            Err(SrtpError::AuthenticationFailed)
        );
        let wire = protect_rtcp(&mut tx, &rtcp(7)).unwrap();
        assert_eq!(
            unprotect_rtcp(&mut rx, &wire),
            Err(SrtpError::AuthenticationFailed)
        );
    }
}

#[test]
fn srtcp_index_starts_at_one_per_ssrc_with_e_bit() {
    for suite in SUITES {
        let (mut tx, _) = pair(suite);
        let at = |ctx: &SrtpContext, wire: &[u8]| {
            let i = ctx.srtcp.srtcp_word_at(wire.len()).unwrap();
            u32::from_be_bytes(wire[i..i + 4].try_into().unwrap())
        };
        let a1 = protect_rtcp(&mut tx, &rtcp(1)).unwrap();
        let a2 = protect_rtcp(&mut tx, &rtcp(1)).unwrap();
        let b1 = protect_rtcp(&mut tx, &rtcp(2)).unwrap();
        assert_eq!(at(&tx, &a1), 0x8000_0001);
        assert_eq!(at(&tx, &a2), 0x8000_0002);
        assert_eq!(at(&tx, &b1), 0x8000_0001);
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
        assert_eq!(
            rx.rtp_streams.lookup(42).unwrap().1.top(),
            Some((1 << 16) | 4)
        );
        // A receiver that missed the wrap entirely (joined at ROC 1) would not authenticate:
        // the ROC is part of the authenticated data / nonce.
        let (_, mut fresh) = pair(suite);
        let w = protect_rtp(&mut tx, &rtp(5, 42, 64, 0, false)).unwrap();
        assert_eq!(
            unprotect_rtp(&mut fresh, &w),
            Err(SrtpError::AuthenticationFailed)
        );
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
        assert_eq!(
            unprotect_rtp(&mut rx, &bad),
            Err(SrtpError::AuthenticationFailed)
        );
        assert_eq!(rx.rtp_streams.lookup(11).unwrap().1.top(), Some(7));
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
fn too_many_ssrcs() {
    for suite in SUITES {
        let (mut tx, mut rx) = pair(suite);
        for ssrc in 0..MAX_SSRCS as u32 {
            let w = protect_rtp(&mut tx, &rtp(1, ssrc, 8, 0, false)).unwrap();
            assert!(unprotect_rtp(&mut rx, &w).is_ok());
            let w = protect_rtcp(&mut tx, &rtcp(ssrc)).unwrap();
            assert!(unprotect_rtcp(&mut rx, &w).is_ok());
        }
        assert_eq!(
            protect_rtp(&mut tx, &rtp(1, 1000, 8, 0, false)),
            Err(SrtpError::TooManySsrcs)
        );
        assert_eq!(
            protect_rtcp(&mut tx, &rtcp(1000)),
            Err(SrtpError::TooManySsrcs)
        );
        // Known SSRCs go on working.
        let w = protect_rtp(&mut tx, &rtp(2, 3, 8, 0, false)).unwrap();
        assert!(unprotect_rtp(&mut rx, &w).is_ok());

        let (mut other, _) = pair(suite);
        let w = protect_rtp(&mut other, &rtp(1, 1000, 8, 0, false)).unwrap();
        assert_eq!(unprotect_rtp(&mut rx, &w), Err(SrtpError::TooManySsrcs));
        let w = protect_rtcp(&mut other, &rtcp(1000)).unwrap();
        assert_eq!(unprotect_rtcp(&mut rx, &w), Err(SrtpError::TooManySsrcs));
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
        let i = tx.srtcp.srtcp_word_at(buf.len()).unwrap();
        assert_eq!(buf[i..i + 4], [0x80, 0, 0, 1]);
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

/// xorshift64*: deterministic pseudo-random bytes for the garbage test.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
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
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..20_000 {
            let len = (next(&mut state) % 80) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| next(&mut state) as u8).collect();
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
    assert_eq!(
        unprotect_rtp(&mut rx, &forged),
        Err(SrtpError::AuthenticationFailed)
    );

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
        rtp: (0..=MAX_SSRCS as u32)
            .map(|ssrc| RtpStreamState {
                ssrc,
                roc: 0,
                highest_seq: 1,
                window: 1,
            })
            .collect(),
        rtcp: Vec::new(),
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
    };
    ctx.import_state(&done.with_srtcp_send_skip(5)).unwrap();
    assert_eq!(protect_rtcp(&mut ctx, &rtcp(1)), Err(SrtpError::Replayed));
}
