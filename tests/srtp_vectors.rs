//! `mcvideo_relay::srtp` against two independent implementations, byte for byte:
//!
//! * **libsrtp** (through pylibsrtp 1.0.0): `tests/fixtures/libsrtp/vectors.txt`, written by
//!   `tests/fixtures/libsrtp/gen.py` (no Python needed at test time);
//! * **webrtc-srtp** 0.17 (dev-dependency), live.
//!
//! Both suites, SRTP and SRTCP, protect and unprotect in both directions, several SSRCs, a
//! sequence-number wrap and a late packet from before it.

use mcvideo_relay::keys::{MasterKey, SrtpSuite};
use mcvideo_relay::srtp::{SrtpContext, SrtpError};
use webrtc_srtp::context::Context as WebrtcContext;
use webrtc_srtp::protection_profile::ProtectionProfile;

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn protect_rtp(ctx: &mut SrtpContext, plain: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = vec![0u8; plain.len() + ctx.rtp_overhead()];
    buf[..plain.len()].copy_from_slice(plain);
    let n = ctx.protect_rtp(&mut buf, plain.len())?;
    buf.truncate(n);
    Ok(buf)
}

fn unprotect_rtp(ctx: &mut SrtpContext, wire: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = wire.to_vec();
    let n = ctx.unprotect_rtp(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn protect_rtcp(ctx: &mut SrtpContext, plain: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = vec![0u8; plain.len() + ctx.rtcp_overhead()];
    buf[..plain.len()].copy_from_slice(plain);
    let n = ctx.protect_rtcp(&mut buf, plain.len())?;
    buf.truncate(n);
    Ok(buf)
}

fn unprotect_rtcp(ctx: &mut SrtpContext, wire: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = wire.to_vec();
    let n = ctx.unprotect_rtcp(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// One `suite` block of vectors.txt.
struct LibsrtpSuite {
    key: MasterKey,
    rtp: Vec<(Vec<u8>, Vec<u8>)>,
    rtcp: Vec<(Vec<u8>, Vec<u8>)>,
    rtcp_auth: Vec<(Vec<u8>, Vec<u8>)>,
}

fn libsrtp_vectors() -> Vec<LibsrtpSuite> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/libsrtp/vectors.txt"
    );
    let text = std::fs::read_to_string(path).expect("vectors.txt (run gen.py)");
    let mut suites: Vec<LibsrtpSuite> = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let fields: Vec<&str> = line.split(' ').collect();
        match fields.as_slice() {
            ["suite", name, material] => {
                let suite = SrtpSuite::from_name(name).expect("suite name");
                suites.push(LibsrtpSuite {
                    key: MasterKey::new(suite, hex(material)).expect("key length"),
                    rtp: Vec::new(),
                    rtcp: Vec::new(),
                    rtcp_auth: Vec::new(),
                });
            }
            [kind, plain, protected] => {
                let s = suites.last_mut().expect("suite line first");
                let pair = (hex(plain), hex(protected));
                match *kind {
                    "rtp" => s.rtp.push(pair),
                    "rtcp" => s.rtcp.push(pair),
                    "rtcp_auth" => s.rtcp_auth.push(pair),
                    other => panic!("unknown record {other}"),
                }
            }
            _ => panic!("bad line {line}"),
        }
    }
    suites
}

#[test]
fn libsrtp_agrees_byte_for_byte() {
    let suites = libsrtp_vectors();
    let names: Vec<SrtpSuite> = suites.iter().map(|s| s.key.suite).collect();
    assert_eq!(
        names,
        [SrtpSuite::AesCm128HmacSha1_80, SrtpSuite::AeadAes128Gcm]
    );
    for s in &suites {
        let suite = s.key.suite;
        assert!(s.rtp.len() >= 15 && s.rtcp.len() >= 6 && s.rtcp_auth.len() >= 3);
        let mut tx = SrtpContext::new(&s.key);
        let mut rx = SrtpContext::new(&s.key);
        for (i, (plain, protected)) in s.rtp.iter().enumerate() {
            // Ours → libsrtp: the bytes libsrtp produced (and its receiver accepted).
            assert_eq!(
                &protect_rtp(&mut tx, plain).unwrap(),
                protected,
                "{suite:?} rtp #{i} protect"
            );
            // libsrtp → ours.
            assert_eq!(
                &unprotect_rtp(&mut rx, protected).unwrap(),
                plain,
                "{suite:?} rtp #{i} unprotect"
            );
            assert_eq!(
                unprotect_rtp(&mut rx, protected),
                Err(SrtpError::Replayed),
                "{suite:?} rtp #{i} replay"
            );
        }
        for (i, (plain, protected)) in s.rtcp.iter().enumerate() {
            assert_eq!(
                &protect_rtcp(&mut tx, plain).unwrap(),
                protected,
                "{suite:?} rtcp #{i} protect"
            );
            assert_eq!(
                &unprotect_rtcp(&mut rx, protected).unwrap(),
                plain,
                "{suite:?} rtcp #{i} unprotect"
            );
        }
        // E = 0 (authenticated only): we never send it, but accept it.
        let mut rx = SrtpContext::new(&s.key);
        for (i, (plain, protected)) in s.rtcp_auth.iter().enumerate() {
            assert_eq!(
                &unprotect_rtcp(&mut rx, protected).unwrap(),
                plain,
                "{suite:?} rtcp_auth #{i}"
            );
            let mut bad = protected.clone();
            bad[9] ^= 1; // in the clear, but authenticated
            assert_eq!(
                unprotect_rtcp(&mut SrtpContext::new(&s.key), &bad),
                Err(SrtpError::AuthenticationFailed)
            );
        }
    }
}

fn webrtc_profile(suite: SrtpSuite) -> ProtectionProfile {
    match suite {
        SrtpSuite::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
        SrtpSuite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
    }
}

fn webrtc_context(key: &MasterKey) -> WebrtcContext {
    WebrtcContext::new(key.key(), key.salt(), webrtc_profile(key.suite), None, None)
        .expect("webrtc-srtp context")
}

/// A plain RTP packet.
fn rtp(seq: u16, ssrc: u32, payload_len: usize, csrcs: u8, ext: bool) -> Vec<u8> {
    let mut p = vec![0x80 | csrcs | if ext { 0x10 } else { 0 }, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq).wrapping_mul(3000)).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    for c in 0..csrcs {
        p.extend_from_slice(&(0x0c5c_0000 + u32::from(c)).to_be_bytes());
    }
    if ext {
        // One-byte header extension (RFC 8285): ID 1 with 2 bytes, ID 2 with 1 byte, padding.
        p.extend_from_slice(&[0xbe, 0xde, 0, 2, 0x11, 0xab, 0xcd, 0x20, 0xef, 0, 0, 0]);
    }
    p.extend((0..payload_len).map(|i| (i as u8) ^ (seq as u8)));
    p
}

/// A plain RTCP receiver report (with `blocks` report blocks) from `ssrc`.
fn rtcp_rr(ssrc: u32, blocks: u8) -> Vec<u8> {
    let mut p = vec![0x80 | blocks, 201, 0, 1 + 6 * blocks];
    p.extend_from_slice(&ssrc.to_be_bytes());
    for b in 0..blocks {
        p.extend_from_slice(&(0x1000 + u32::from(b)).to_be_bytes());
        p.extend((0..20).map(|i| i as u8 ^ b));
    }
    p
}

/// A plain RTCP sender report from `ssrc` followed by an APP packet (a compound packet).
fn rtcp_sr_app(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..20).map(|i| i as u8));
    p.extend_from_slice(&[0x80, 204, 0, 4]);
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(b"MCV1");
    p.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    p
}

/// The RTP schedule: three SSRCs, a wrap on the first, a late packet from before the wrap,
/// CSRCs and header extensions, payloads from 0 to 1200 octets.
fn rtp_schedule() -> Vec<Vec<u8>> {
    let (a, b, c) = (0x1122_3344, 0xcafe_babe, 7);
    let mut out = Vec::new();
    for seq in [65_529u16, 65_530, 65_531, 65_533, 65_534, 65_535] {
        out.push(rtp(seq, a, 1200, 0, false));
    }
    out.push(rtp(1000, b, 160, 2, false));
    for seq in 0..4u16 {
        out.push(rtp(seq, a, 1200, 0, seq == 2));
    }
    out.push(rtp(65_532, a, 500, 0, false)); // late, from before the wrap
    out.push(rtp(1001, b, 0, 0, true));
    out.push(rtp(12, c, 1, 15, false));
    out.push(rtp(13, c, 1200, 1, true));
    for seq in 4..70u16 {
        out.push(rtp(seq, a, (seq as usize * 37) % 1201, 0, false));
    }
    out.push(rtp(1002, b, 33, 0, false));
    out
}

fn rtcp_schedule() -> Vec<Vec<u8>> {
    let (a, b) = (0x1122_3344, 0xcafe_babe);
    vec![
        rtcp_rr(a, 1),
        rtcp_sr_app(b),
        rtcp_rr(a, 0),
        rtcp_rr(b, 3),
        rtcp_sr_app(a),
        rtcp_rr(a, 2),
    ]
}

#[test]
fn webrtc_srtp_agrees_byte_for_byte() {
    for (suite, seed) in [
        (SrtpSuite::AeadAes128Gcm, 3u8),
        (SrtpSuite::AesCm128HmacSha1_80, 11),
    ] {
        let n = suite.key_len() + suite.salt_len();
        let key = MasterKey::new(
            suite,
            (0..n as u8).map(|i| i.wrapping_mul(29) ^ seed).collect(),
        )
        .unwrap();

        // Ours → webrtc-srtp.
        let mut ours_tx = SrtpContext::new(&key);
        let mut theirs_rx = webrtc_context(&key);
        // webrtc-srtp → ours.
        let mut theirs_tx = webrtc_context(&key);
        let mut ours_rx = SrtpContext::new(&key);

        for (i, plain) in rtp_schedule().iter().enumerate() {
            let ours = protect_rtp(&mut ours_tx, plain).unwrap();
            let theirs = theirs_tx.encrypt_rtp(plain).expect("webrtc encrypt_rtp");
            assert_eq!(ours, theirs.as_ref(), "{suite:?} rtp #{i} protect");

            let decrypted = theirs_rx.decrypt_rtp(&ours).expect("webrtc decrypt_rtp");
            assert_eq!(
                decrypted.as_ref(),
                plain.as_slice(),
                "{suite:?} rtp #{i} ours→them"
            );
            assert_eq!(
                &unprotect_rtp(&mut ours_rx, &theirs).unwrap(),
                plain,
                "{suite:?} rtp #{i} them→ours"
            );
        }
        for (i, plain) in rtcp_schedule().iter().enumerate() {
            let ours = protect_rtcp(&mut ours_tx, plain).unwrap();
            let theirs = theirs_tx.encrypt_rtcp(plain).expect("webrtc encrypt_rtcp");
            assert_eq!(ours, theirs.as_ref(), "{suite:?} rtcp #{i} protect");

            let decrypted = theirs_rx.decrypt_rtcp(&ours).expect("webrtc decrypt_rtcp");
            assert_eq!(
                decrypted.as_ref(),
                plain.as_slice(),
                "{suite:?} rtcp #{i} ours→them"
            );
            assert_eq!(
                &unprotect_rtcp(&mut ours_rx, &theirs).unwrap(),
                plain,
                "{suite:?} rtcp #{i} them→ours"
            );
        }
    }
}

/// Ours and webrtc-srtp reject the same tampered packets.
#[test]
fn webrtc_srtp_rejects_what_we_reject() {
    for suite in [SrtpSuite::AeadAes128Gcm, SrtpSuite::AesCm128HmacSha1_80] {
        let n = suite.key_len() + suite.salt_len();
        let key = MasterKey::new(suite, vec![0x42; n]).unwrap();
        let mut tx = SrtpContext::new(&key);
        let wire = protect_rtp(&mut tx, &rtp(9, 1, 100, 0, false)).unwrap();
        for at in [4, 20, wire.len() - 1] {
            let mut bad = wire.clone();
            bad[at] ^= 0x10;
            assert!(
                webrtc_context(&key).decrypt_rtp(&bad).is_err(),
                "{suite:?} {at}"
            );
            assert_eq!(
                unprotect_rtp(&mut SrtpContext::new(&key), &bad),
                Err(SrtpError::AuthenticationFailed)
            );
        }
    }
}
