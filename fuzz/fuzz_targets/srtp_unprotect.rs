//! SRTP/SRTCP unprotect as the per_leg relay does it, on any input: with the fuzzing-only null
//! cipher (identity, all-zero tag) so inputs reach the code behind authentication — index
//! estimation, replay windows, the SSRC table, re-protection toward the other leg — and with
//! real keys for the authentication-failure paths. Never panics; what unprotects re-protects
//! and unprotects again to the same plain packet.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mcvideo_relay::keys::{MasterKey, SrtpSuite};
use mcvideo_relay::srtp::SrtpContext;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, packets)) = data.split_first() else {
        return;
    };
    let mut inbound = SrtpContext::new_null_for_fuzzing();
    let mut outbound = SrtpContext::new_null_for_fuzzing();
    let mut check = SrtpContext::new_null_for_fuzzing();
    let real = |suite| {
        SrtpContext::new(&MasterKey::new(suite, vec![7; 16 + suite.salt_len()]).expect("key"))
    };
    let mut gcm = real(SrtpSuite::AeadAes128Gcm);
    let mut cm = real(SrtpSuite::AesCm128HmacSha1_80);
    let rtcp = mode & 1 == 1;
    // Packets are separated by 0xff 0xfe (a crude framing that lets the fuzzer send sequences).
    for chunk in packets.split(|&b| b == 0xfe).take(64) {
        let mut buf = [0u8; 2048];
        let Some(slot) = buf.get_mut(..chunk.len()) else {
            continue;
        };
        slot.copy_from_slice(chunk);
        let mut real_buf = buf;
        let _ = gcm.unprotect_rtp(&mut real_buf[..chunk.len()]);
        let mut real_buf = buf;
        let _ = cm.unprotect_rtcp(&mut real_buf[..chunk.len()]);
        let plain = if rtcp {
            inbound.unprotect_rtcp(&mut buf[..chunk.len()])
        } else {
            inbound.unprotect_rtp(&mut buf[..chunk.len()])
        };
        let Ok(len) = plain else { continue };
        let original = buf[..len].to_vec();
        let out = if rtcp {
            outbound.protect_rtcp(&mut buf, len)
        } else {
            outbound.protect_rtp(&mut buf, len)
        };
        let Ok(out_len) = out else { continue };
        let back = if rtcp {
            check.unprotect_rtcp(&mut buf[..out_len])
        } else {
            check.unprotect_rtp(&mut buf[..out_len])
        };
        let back = back.expect("what the relay protects, its peer unprotects");
        assert_eq!(&buf[..back], &original[..]);
    }
});
