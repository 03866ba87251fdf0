//! SDP parsing and rewriting never panic; a rewrite of a parsed SDP parses again with the same
//! number of media sections.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mcvideo_relay::sdp::{MediaRewrite, Rewrite, SessionDescription};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(sdp) = SessionDescription::parse(text) else {
        return;
    };
    for m in sdp.media() {
        let _ = (m.rtp_addr(), m.rtcp_addr());
    }
    let plan = Rewrite {
        connection: "127.0.0.1".parse().unwrap(),
        media: sdp
            .media()
            .iter()
            .enumerate()
            // The relay keeps only streams the peer enabled (port != 0); the rest are rejected.
            .map(|(i, m)| match if m.port == 0 { 2 } else { i % 3 } {
                0 => MediaRewrite::Keep {
                    port: 40_000 + i as u16 * 2,
                    rtcp_port: Some(40_001 + i as u16 * 2),
                    crypto: None,
                },
                1 => MediaRewrite::Keep {
                    port: 41_000,
                    rtcp_port: None,
                    crypto: Some(vec!["1 AEAD_AES_128_GCM inline:AAAA".into()]),
                },
                _ => MediaRewrite::Reject,
            })
            .collect(),
    };
    if let Ok(out) = sdp.rewrite(&plan) {
        let again = SessionDescription::parse(&out).expect("a rewritten SDP parses");
        assert_eq!(again.media().len(), sdp.media().len());
    }
});
