//! Unit tests of the SDP reader and rewriter.
#![allow(clippy::indexing_slicing, clippy::unwrap_used)]

use super::*;
use crate::test_support::Rng;

const KEY_MGMT: &str =
    "a=key-mgmt:mikey AQAFgM0XflABAAAAAAAAAAAAAAsAyO7JV6p0TRYAsGU/aP7sAAAAAAAAA+Qv1A==";

/// A realistic MCVideo one-to-one video push offer (CRLF), with MIKEY key management.
fn offer() -> String {
    [
        "v=0",
        "o=mcvideo-client 2890844526 2890844526 IN IP4 192.0.2.10",
        "s=-",
        "c=IN IP4 192.0.2.10",
        "t=0 0",
        "m=audio 49170 RTP/SAVP 98",
        "i=audio component of MCVideo",
        "a=rtpmap:98 AMR-WB/16000",
        "a=fmtp:98 mode-change-capability=2; max-red=0",
        "a=ssrc:11111 cname:caller@example.org",
        KEY_MGMT,
        "a=sendonly",
        "m=video 49172 RTP/SAVP 96",
        "i=video component of MCVideo",
        "a=rtpmap:96 H264/90000",
        "a=fmtp:96 profile-level-id=42e01f;packetization-mode=1",
        "a=ssrc:22222 cname:caller@example.org",
        "a=ssrc:22222 msid:stream video",
        "a=ssrc:33333 cname:caller@example.org",
        "a=rtcp-mux",
        KEY_MGMT,
        "a=sendonly",
        "m=application 5000 udp MCVideo",
        "a=fmtp:MCVideo mc_queueing;mc_priority=5;mc_implicit_request",
        "",
    ]
    .join("\r\n")
}

fn keep(port: u16) -> MediaRewrite {
    MediaRewrite::Keep {
        port,
        rtcp_port: None,
        crypto: None,
    }
}

fn relay() -> IpAddr {
    "198.51.100.7".parse().unwrap()
}

fn plan(media: Vec<MediaRewrite>) -> Rewrite {
    Rewrite {
        connection: relay(),
        media,
    }
}

fn err(text: &str) -> SdpError {
    SessionDescription::parse(text).unwrap_err()
}

/// Minimal valid SDP with `extra` media-section lines after `m=video 4000 RTP/AVP 96`.
fn with_media_lines(extra: &[&str]) -> String {
    let mut l = vec![
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
    ];
    l.push("m=video 4000 RTP/AVP 96");
    l.extend_from_slice(extra);
    l.push("");
    l.join("\n")
}

#[test]
fn parses_mcvideo_offer() {
    let sdp = SessionDescription::parse(&offer()).unwrap();
    assert_eq!(
        sdp.session_connection(),
        Some("192.0.2.10".parse().unwrap())
    );
    assert_eq!(sdp.session_direction(), Direction::SendRecv);
    let m = sdp.media();
    assert_eq!(m.len(), 3);

    assert_eq!(m[0].kind, MediaKind::Audio);
    assert_eq!(m[0].port, 49170);
    assert_eq!(m[0].proto, "RTP/SAVP");
    assert_eq!(m[0].formats, vec!["98"]);
    assert_eq!(m[0].line, 6);
    assert_eq!(m[0].ssrcs, vec![11111]);
    assert_eq!(m[0].direction, Direction::SendOnly);
    assert!(!m[0].rtcp_mux);
    assert!(m[0].crypto.is_empty());
    assert!(m[0].mcvideo.is_none());

    assert_eq!(m[1].kind, MediaKind::Video);
    assert_eq!(m[1].port, 49172);
    assert_eq!(m[1].line, 13);
    assert_eq!(m[1].ssrcs, vec![22222, 33333]);
    assert!(m[1].rtcp_mux);

    assert_eq!(m[2].kind, MediaKind::Control);
    assert_eq!(m[2].port, 5000);
    assert_eq!(m[2].proto, "udp");
    assert_eq!(m[2].formats, vec!["MCVideo"]);
    assert_eq!(m[2].line, 23);
    assert_eq!(m[2].direction, Direction::SendRecv);
    let f = m[2].mcvideo.unwrap();
    assert!(f.mc_queueing && f.mc_implicit_request && !f.mc_granted);
    assert_eq!(f.mc_priority, Some(5));
    assert_eq!(f.mc_reception_priority, None);
    assert_eq!(f.mc_video_ssrc, None);

    for x in m {
        assert_eq!(x.connection, Some("192.0.2.10".parse().unwrap()));
    }
    assert_eq!(sdp.to_string(), offer(), "Display gives back the original");
}

#[test]
fn rewrite_changes_only_addresses_and_ports() {
    let text = offer();
    let sdp = SessionDescription::parse(&text).unwrap();
    let out = sdp
        .rewrite(&plan(vec![keep(20000), keep(20002), keep(20004)]))
        .unwrap();
    let orig: Vec<&str> = text.split("\r\n").collect();
    let new: Vec<&str> = out.split("\r\n").collect();
    assert_eq!(orig.len(), new.len());
    for (a, b) in orig.iter().zip(&new) {
        if a.starts_with("c=") {
            assert_eq!(*b, "c=IN IP4 198.51.100.7");
        } else if a.starts_with("m=audio") {
            assert_eq!(*b, "m=audio 20000 RTP/SAVP 98");
        } else if a.starts_with("m=video") {
            assert_eq!(*b, "m=video 20002 RTP/SAVP 96");
        } else if a.starts_with("m=application") {
            assert_eq!(*b, "m=application 20004 udp MCVideo");
        } else {
            assert_eq!(a, b, "line must pass byte for byte");
        }
    }
    assert_eq!(
        out.matches(KEY_MGMT).count(),
        2,
        "key-mgmt survives untouched"
    );
    assert!(out.contains(&format!("\r\n{KEY_MGMT}\r\n")));
    assert!(out.contains("o=mcvideo-client 2890844526 2890844526 IN IP4 192.0.2.10\r\n"));
    assert!(!out.contains("\n\n") && out.matches('\n').count() == out.matches("\r\n").count());
}

#[test]
fn line_endings_preserved_per_line() {
    // Mixed endings, and no final newline.
    let text = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\ns=-\r\nc=IN IP4 192.0.2.1\nt=0 0\r\n\
                    m=audio 4000 RTP/AVP 0\na=x-custom:1\r\nm=video 4002 RTP/AVP 96";
    let sdp = SessionDescription::parse(text).unwrap();
    let out = sdp.rewrite(&plan(vec![keep(1), keep(2)])).unwrap();
    assert_eq!(
        out,
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\ns=-\r\nc=IN IP4 198.51.100.7\nt=0 0\r\n\
             m=audio 1 RTP/AVP 0\na=x-custom:1\r\nm=video 2 RTP/AVP 96"
    );
}

#[test]
fn trailing_blank_lines_tolerated_and_kept() {
    let text = format!("{}\r\n  \r\n", offer().trim_end());
    let sdp = SessionDescription::parse(&text).unwrap();
    assert_eq!(sdp.media().len(), 3);
    let out = sdp.rewrite(&plan(vec![keep(1), keep(2), keep(3)])).unwrap();
    assert!(out.ends_with("a=fmtp:MCVideo mc_queueing;mc_priority=5;mc_implicit_request\r\n  \r\n"));
    // A crypto insertion at the end of the last section goes before the blank lines.
    let p = plan(vec![
        keep(1),
        keep(2),
        MediaRewrite::Keep {
            port: 3,
            rtcp_port: None,
            crypto: Some(vec!["1 AES_CM_128_HMAC_SHA1_80 inline:QUJD".into()]),
        },
    ]);
    let out = sdp.rewrite(&p).unwrap();
    assert!(out.ends_with(
        "mc_implicit_request\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:QUJD\r\n  \r\n"
    ));
}

/// Audio lines with each way of giving RTCP: `a=rtcp:<port>`, `a=rtcp:<port> <address>`,
/// `a=rtcp-mux`.
const RTCP_MEDIA: [&str; 6] = [
    "m=audio 5000 RTP/AVP 0",
    "a=rtcp:5009",
    "m=audio 5010 RTP/AVP 0",
    "a=rtcp:6000 IN IP4 203.0.113.9",
    "m=audio 5020 RTP/AVP 0",
    "a=rtcp-mux",
];

#[test]
fn rtp_and_rtcp_addresses() {
    let more = [
        "m=audio 0 RTP/AVP 0",
        "m=audio 65535 RTP/AVP 0",
        "m=audio 5030 RTP/AVP 0",
        "c=IN IP6 2001:db8::1",
        "m=audio 5040 RTP/AVP 0",
        "c=IN IP4 0.0.0.0",
    ];
    let sdp =
        SessionDescription::parse(&with_media_lines(&[&RTCP_MEDIA[..], &more].concat())).unwrap();
    let m = sdp.media();
    let sa = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
    // port + 1
    assert_eq!(m[0].rtp_addr(), sa("192.0.2.1:4000"));
    assert_eq!(m[0].rtcp_addr(), sa("192.0.2.1:4001"));
    // a=rtcp port only
    assert_eq!(
        m[1].rtcp,
        Some(RtcpAttr {
            port: 5009,
            addr: None
        })
    );
    assert_eq!(m[1].rtcp_addr(), sa("192.0.2.1:5009"));
    // a=rtcp with address
    assert_eq!(m[2].rtcp_addr(), sa("203.0.113.9:6000"));
    // rtcp-mux
    assert_eq!(m[3].rtcp_addr(), sa("192.0.2.1:5020"));
    // port 0: nothing
    assert_eq!(m[4].rtp_addr(), None);
    assert_eq!(m[4].rtcp_addr(), None);
    // port + 1 overflows
    assert_eq!(m[5].rtp_addr(), sa("192.0.2.1:65535"));
    assert_eq!(m[5].rtcp_addr(), None);
    // media-level c= wins, IPv6
    assert_eq!(m[6].rtp_addr(), sa("[2001:db8::1]:5030"));
    assert_eq!(m[6].rtcp_addr(), sa("[2001:db8::1]:5031"));
    // unspecified address: never a destination
    assert_eq!(m[7].connection, Some("0.0.0.0".parse().unwrap()));
    assert_eq!(m[7].rtp_addr(), None);
    assert_eq!(m[7].rtcp_addr(), None);
}

#[test]
fn media_without_session_connection() {
    let text = "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\nm=video 4000 RTP/AVP 96\n\
                    c=IN IP4 192.0.2.5/127\nm=audio 0 RTP/AVP 0\n";
    let sdp = SessionDescription::parse(text).unwrap();
    assert_eq!(sdp.session_connection(), None);
    assert_eq!(
        sdp.media()[0].connection,
        Some("192.0.2.5".parse().unwrap())
    );
    assert_eq!(sdp.media()[1].connection, None, "port 0 needs no address");
    let out = sdp
        .rewrite(&plan(vec![keep(7), MediaRewrite::Reject]))
        .unwrap();
    assert_eq!(
        out,
        "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\nm=video 7 RTP/AVP 96\n\
             c=IN IP4 198.51.100.7\nm=audio 0 RTP/AVP 0\n"
    );
}

#[test]
fn rewrite_rtcp_lines() {
    let sdp = SessionDescription::parse(&with_media_lines(
        &[
            &["a=rtpmap:96 H264/90000"][..],
            &RTCP_MEDIA,
            &["m=audio 5030 RTP/AVP 0"],
        ]
        .concat(),
    ))
    .unwrap();
    let p = |rtcp: Option<u16>| {
        plan(vec![
            MediaRewrite::Keep {
                port: 100,
                rtcp_port: rtcp,
                crypto: None,
            },
            MediaRewrite::Keep {
                port: 200,
                rtcp_port: rtcp,
                crypto: None,
            },
            MediaRewrite::Keep {
                port: 300,
                rtcp_port: rtcp,
                crypto: None,
            },
            MediaRewrite::Keep {
                port: 400,
                rtcp_port: rtcp,
                crypto: None,
            },
            MediaRewrite::Keep {
                port: 500,
                rtcp_port: rtcp,
                crypto: None,
            },
        ])
    };
    let out = sdp.rewrite(&p(Some(901))).unwrap();
    let want = "m=video 100 RTP/AVP 96\na=rtcp:901\na=rtpmap:96 H264/90000\n\
                    m=audio 200 RTP/AVP 0\na=rtcp:901\n\
                    m=audio 300 RTP/AVP 0\na=rtcp:901 IN IP4 198.51.100.7\n\
                    m=audio 400 RTP/AVP 0\na=rtcp-mux\n\
                    m=audio 500 RTP/AVP 0\na=rtcp:901\n";
    assert!(out.ends_with(want), "{out}");
    // rtcp_port None: a=rtcp lines untouched, nothing inserted
    let out = sdp.rewrite(&p(None)).unwrap();
    let want = "m=video 100 RTP/AVP 96\na=rtpmap:96 H264/90000\n\
                    m=audio 200 RTP/AVP 0\na=rtcp:5009\n\
                    m=audio 300 RTP/AVP 0\na=rtcp:6000 IN IP4 203.0.113.9\n\
                    m=audio 400 RTP/AVP 0\na=rtcp-mux\n\
                    m=audio 500 RTP/AVP 0\n";
    assert!(out.ends_with(want), "{out}");
    // rtcp_port == port + 1: nothing inserted, existing line still rewritten
    let sdp2 = SessionDescription::parse(&with_media_lines(&[
        "a=rtcp:4001",
        "m=audio 5000 RTP/AVP 0",
    ]))
    .unwrap();
    let out = sdp2
        .rewrite(&plan(vec![
            MediaRewrite::Keep {
                port: 100,
                rtcp_port: Some(101),
                crypto: None,
            },
            MediaRewrite::Keep {
                port: 200,
                rtcp_port: Some(201),
                crypto: None,
            },
        ]))
        .unwrap();
    assert!(
        out.ends_with("m=video 100 RTP/AVP 96\na=rtcp:101\nm=audio 200 RTP/AVP 0\n"),
        "{out}"
    );
}

#[test]
fn rtcp_inserted_after_m_and_c_lines() {
    let sdp = SessionDescription::parse(&with_media_lines(&[
        "i=video component of MCVideo",
        "c=IN IP4 192.0.2.99",
        "b=AS:512",
        "a=sendonly",
    ]))
    .unwrap();
    let p = plan(vec![MediaRewrite::Keep {
        port: 10,
        rtcp_port: Some(20),
        crypto: None,
    }]);
    let out = sdp.rewrite(&p).unwrap();
    assert!(out.ends_with(
        "m=video 10 RTP/AVP 96\ni=video component of MCVideo\nc=IN IP4 198.51.100.7\n\
             b=AS:512\na=rtcp:20\na=sendonly\n"
    ));
}

#[test]
fn crypto_parse_and_replace() {
    let text = with_media_lines(&[
            "a=rtpmap:96 H264/90000",
            "a=crypto:1 AEAD_AES_128_GCM inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4;inline:QUJD",
            "a=ssrc:1234 cname:x",
            "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj UNENCRYPTED_SRTCP",
            "m=audio 5000 RTP/SAVP 0",
            "a=sendrecv",
        ]);
    let sdp = SessionDescription::parse(&text).unwrap();
    let c = &sdp.media()[0].crypto;
    assert_eq!(c.len(), 2);
    assert_eq!(c[0].tag, 1);
    assert_eq!(c[0].suite, "AEAD_AES_128_GCM");
    assert_eq!(c[0].key_b64, "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz");
    assert_eq!(
        c[0].raw,
        "1 AEAD_AES_128_GCM inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4;inline:QUJD"
    );
    assert_eq!(c[1].tag, 2);
    assert_eq!(c[1].key_b64, "d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj");
    assert!(
        !format!("{:?}", c[0]).contains("WVNf"),
        "Debug redacts keys"
    );
    assert!(!format!("{sdp:?}").contains("WVNf"), "Debug redacts keys");

    let new = vec![
        "7 AEAD_AES_128_GCM inline:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_string(),
        "8 AES_CM_128_HMAC_SHA1_80 inline:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB".to_string(),
    ];
    let p = plan(vec![
        MediaRewrite::Keep {
            port: 10,
            rtcp_port: None,
            crypto: Some(new.clone()),
        },
        MediaRewrite::Keep {
            port: 20,
            rtcp_port: None,
            crypto: Some(vec![new[0].clone()]),
        },
    ]);
    let out = sdp.rewrite(&p).unwrap();
    assert!(
            out.ends_with(
                "m=video 10 RTP/AVP 96\na=rtpmap:96 H264/90000\n\
                 a=crypto:7 AEAD_AES_128_GCM inline:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n\
                 a=crypto:8 AES_CM_128_HMAC_SHA1_80 inline:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB\n\
                 a=ssrc:1234 cname:x\n\
                 m=audio 20 RTP/SAVP 0\na=sendrecv\n\
                 a=crypto:7 AEAD_AES_128_GCM inline:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"
            ),
            "{out}"
        );
    assert!(!out.contains("WVNf") && !out.contains("d0Rm"));

    // Some(empty) removes them; None keeps them.
    let out = sdp
        .rewrite(&plan(vec![
            MediaRewrite::Keep {
                port: 10,
                rtcp_port: None,
                crypto: Some(vec![]),
            },
            keep(20),
        ]))
        .unwrap();
    assert!(!out.contains("a=crypto"));
    let out = sdp.rewrite(&plan(vec![keep(10), keep(20)])).unwrap();
    assert_eq!(out.matches("a=crypto:").count(), 2);

    // A plan value that would inject lines, or is malformed, is refused.
    for bad in ["1 AES_CM_128_HMAC_SHA1_80 inline:QUJD\r\na=evil", "1 X", ""] {
        let e = sdp
            .rewrite(&plan(vec![
                MediaRewrite::Keep {
                    port: 10,
                    rtcp_port: None,
                    crypto: Some(vec![bad.into()]),
                },
                keep(20),
            ]))
            .unwrap_err();
        assert_eq!(
            (e.line, e.reason),
            (0, "bad a=crypto value in rewrite plan")
        );
    }
}

#[test]
fn reject_and_omit() {
    let sdp = SessionDescription::parse(&offer()).unwrap();
    let out = sdp
        .rewrite(&plan(vec![
            MediaRewrite::Omit,
            keep(20002),
            MediaRewrite::Reject,
        ]))
        .unwrap();
    assert!(!out.contains("m=audio") && !out.contains("AMR-WB") && !out.contains("a=ssrc:11111"));
    assert_eq!(out.matches(KEY_MGMT).count(), 1);
    assert!(out.contains("t=0 0\r\nm=video 20002 RTP/SAVP 96\r\ni=video component of MCVideo\r\n"));
    assert!(out.ends_with(
        "a=sendonly\r\nm=application 0 udp MCVideo\r\n\
             a=fmtp:MCVideo mc_queueing;mc_priority=5;mc_implicit_request\r\n"
    ));
    let again = SessionDescription::parse(&out).unwrap();
    assert_eq!(again.media().len(), 2);
    assert_eq!(again.media()[1].port, 0);
    assert_eq!(again.media()[1].kind, MediaKind::Control);

    // /count dropped, for Keep and Reject.
    let sdp = SessionDescription::parse(&with_media_lines(&["m=audio 5000/2 RTP/AVP 0"])).unwrap();
    let out = sdp
        .rewrite(&plan(vec![MediaRewrite::Reject, keep(9)]))
        .unwrap();
    assert!(out.ends_with("m=video 0 RTP/AVP 96\nm=audio 9 RTP/AVP 0\n"));

    // Omitting the last section of a document without a final newline.
    let sdp = SessionDescription::parse(
        "v=0\nc=IN IP4 192.0.2.1\nm=audio 1 RTP/AVP 0\nm=video 2 RTP/AVP 96",
    )
    .unwrap();
    let out = sdp
        .rewrite(&plan(vec![keep(3), MediaRewrite::Omit]))
        .unwrap();
    assert_eq!(out, "v=0\nc=IN IP4 198.51.100.7\nm=audio 3 RTP/AVP 0\n");
    // Inserting after a last line without newline adds one in between.
    let out = sdp
        .rewrite(&plan(vec![
            keep(3),
            MediaRewrite::Keep {
                port: 4,
                rtcp_port: Some(9),
                crypto: None,
            },
        ]))
        .unwrap();
    assert_eq!(
        out,
        "v=0\nc=IN IP4 198.51.100.7\nm=audio 3 RTP/AVP 0\nm=video 4 RTP/AVP 96\na=rtcp:9\n"
    );
}

#[test]
fn plan_length_must_match() {
    let sdp = SessionDescription::parse(&offer()).unwrap();
    let e = sdp.rewrite(&plan(vec![keep(1)])).unwrap_err();
    assert_eq!(e.line, 0);
    assert_eq!(e.reason, "rewrite plan does not match the media sections");
}

#[test]
fn ipv6_relay_address() {
    let sdp =
        SessionDescription::parse(&with_media_lines(&["a=rtcp:4009 IN IP4 192.0.2.1"])).unwrap();
    let p = Rewrite {
        connection: "2001:db8::7".parse().unwrap(),
        media: vec![MediaRewrite::Keep {
            port: 6,
            rtcp_port: Some(8),
            crypto: None,
        }],
    };
    let out = sdp.rewrite(&p).unwrap();
    assert!(out.contains("\nc=IN IP6 2001:db8::7\n"));
    assert!(out.ends_with("m=video 6 RTP/AVP 96\na=rtcp:8 IN IP6 2001:db8::7\n"));
    let again = SessionDescription::parse(&out).unwrap();
    assert_eq!(
        again.media()[0].rtcp_addr(),
        Some("[2001:db8::7]:8".parse().unwrap())
    );
}

#[test]
fn idempotent_with_same_ports() {
    let sdp = SessionDescription::parse(&offer()).unwrap();
    let same = Rewrite {
        connection: "192.0.2.10".parse().unwrap(),
        media: sdp.media().iter().map(|m| keep(m.port)).collect(),
    };
    assert_eq!(sdp.rewrite(&same).unwrap(), offer());

    // And rewriting a rewritten SDP with the same plan changes nothing more.
    let p = plan(vec![
        MediaRewrite::Keep {
            port: 30000,
            rtcp_port: Some(30011),
            crypto: Some(vec!["1 AEAD_AES_128_GCM inline:QUJDRA==".into()]),
        },
        MediaRewrite::Keep {
            port: 30002,
            rtcp_port: None,
            crypto: None,
        },
        MediaRewrite::Reject,
    ]);
    let once = sdp.rewrite(&p).unwrap();
    let twice = SessionDescription::parse(&once)
        .unwrap()
        .rewrite(&p)
        .unwrap();
    assert_eq!(once, twice);
}

#[test]
fn directions() {
    let sdp = SessionDescription::parse(&with_media_lines(&[
        "m=audio 5000 RTP/AVP 0",
        "a=recvonly",
        "m=audio 5002 RTP/AVP 0",
        "a=inactive",
    ]))
    .unwrap();
    let d: Vec<_> = sdp.media().iter().map(|m| m.direction).collect();
    assert_eq!(
        d,
        vec![
            Direction::SendRecv,
            Direction::RecvOnly,
            Direction::Inactive
        ]
    );
    // Session-level direction is the default for the media.
    let text = "v=0\nc=IN IP4 192.0.2.1\na=sendonly\nm=video 1 RTP/AVP 96\nm=audio 2 RTP/AVP 0\na=sendrecv\n";
    let sdp = SessionDescription::parse(text).unwrap();
    assert_eq!(sdp.session_direction(), Direction::SendOnly);
    assert_eq!(sdp.media()[0].direction, Direction::SendOnly);
    assert_eq!(sdp.media()[1].direction, Direction::SendRecv);
    assert!(Direction::SendOnly.sends() && !Direction::SendOnly.receives());
    assert!(Direction::RecvOnly.receives() && !Direction::Inactive.sends());
}

#[test]
fn kinds() {
    let sdp = SessionDescription::parse(&with_media_lines(&[
        "m=application 5000 UDP MCVideo",
        "m=application 5002 udp wsd",
        "m=application 5004 TCP/MCVideo MCVideo",
        "m=text 5006 RTP/AVP 98",
    ]))
    .unwrap();
    let k: Vec<_> = sdp.media().iter().map(|m| m.kind.clone()).collect();
    assert_eq!(
        k,
        vec![
            MediaKind::Video,
            MediaKind::Control,
            MediaKind::Other("application".into()),
            MediaKind::Other("application".into()),
            MediaKind::Other("text".into()),
        ]
    );
}

#[test]
fn mcvideo_fmtp_parameters() {
    let sdp = SessionDescription::parse(&with_media_lines(&[
            "m=application 5000 udp MCVideo",
            "a=fmtp:MCVideo mc_granted ; mc_priority=255; mc_reception_priority = 3;mc_audio_ssrc=4294967295;\
             mc_video_ssrc=12345;mc_transmission_ssrc=7;mc_future=abc;;",
        ]))
        .unwrap();
    let f = sdp.media()[1].mcvideo.unwrap();
    assert_eq!(
        f,
        McVideoFmtp {
            mc_queueing: false,
            mc_priority: Some(255),
            mc_reception_priority: Some(3),
            mc_granted: true,
            mc_implicit_request: false,
            mc_audio_ssrc: Some(u32::MAX),
            mc_video_ssrc: Some(12345),
            mc_transmission_ssrc: Some(7),
        }
    );
    assert!(sdp.media()[0].mcvideo.is_none());
}

#[test]
fn error_display() {
    let e = err(&with_media_lines(&["m=video x RTP/AVP 96"]));
    assert_eq!(e.to_string(), "SDP line 7 `m=video x RTP/AVP 96`: bad port");
    let e = err("");
    assert_eq!(e.line, 0);
    assert_eq!(e.to_string(), "SDP: empty SDP");
    let long = format!("a=x-{}", "é".repeat(300));
    let e = err(&format!("{}{long}", with_media_lines(&["m=audio"])));
    assert_eq!(e.content.chars().count(), 7);
    let e = err(&format!("v=1{long}"));
    assert_eq!(e.content.chars().count(), 100);
    let _: &dyn std::error::Error = &e;
}

/// (text, expected line, expected reason)
#[test]
fn errors_name_the_line() {
    const BAD_CRYPTO: &str = "bad a=crypto (need <tag> <suite> inline:<key>)";
    const BAD_FMTP: &str = "bad a=fmtp:MCVideo parameter value";
    const WRONG_FAMILY: &str = "address does not match address type";
    const NOT_TYPE_VALUE: &str = "expected <type>=<value>";
    const SHORT_M: &str = "m= line needs <media> <port> <proto> <fmt>";
    const BAD_C: &str = "c= must be IN IP4|IP6 <address>";
    let m = |extra: &[&str]| with_media_lines(extra);
    let cases: Vec<(String, usize, &str)> = vec![
        (
            "v=1\nc=IN IP4 1.2.3.4\nm=audio 1 RTP/AVP 0\n".into(),
            1,
            "first line must be v=0",
        ),
        (
            "o=- 1 1 IN IP4 1.2.3.4\nv=0\n".into(),
            1,
            "first line must be v=0",
        ),
        ("\nv=0\nm=audio 1 RTP/AVP 0\n".into(), 1, NOT_TYPE_VALUE),
        (
            "v=0\nc=IN IP4 1.2.3.4\n\nm=audio 1 RTP/AVP 0\n".into(),
            3,
            NOT_TYPE_VALUE,
        ),
        (m(&["a=rtpmap:96 H264/90000", "garbage"]), 8, NOT_TYPE_VALUE),
        (m(&["ab=1"]), 7, NOT_TYPE_VALUE),
        (m(&["1=1"]), 7, NOT_TYPE_VALUE),
        (m(&[" a=sendonly"]), 7, NOT_TYPE_VALUE),
        (m(&["a=x\0y"]), 7, "control character in line"),
        (m(&["a=x\ry"]), 7, "control character in line"),
        (m(&["m=audio x RTP/AVP 0"]), 7, "bad port"),
        (m(&["m=audio 65536 RTP/AVP 0"]), 7, "bad port"),
        (m(&["m=audio -1 RTP/AVP 0"]), 7, "bad port"),
        (m(&["m=audio +5 RTP/AVP 0"]), 7, "bad port"),
        (m(&["m=audio 5000/x RTP/AVP 0"]), 7, "bad port count"),
        (m(&["m=audio 5000 RTP/AVP"]), 7, SHORT_M),
        (m(&["m="]), 7, SHORT_M),
        (m(&["c=IN IP4"]), 7, BAD_C),
        (m(&["c=IN IP4 1.2.3.4 extra"]), 7, BAD_C),
        (m(&["c=XX IP4 1.2.3.4"]), 7, "network type must be IN"),
        (
            m(&["c=IN IP5 1.2.3.4"]),
            7,
            "address type must be IP4 or IP6",
        ),
        (m(&["c=IN IP4 host.example.org"]), 7, "bad address"),
        (m(&["c=IN IP4 300.1.1.1"]), 7, "bad address"),
        (m(&["c=IN IP4 2001:db8::1"]), 7, WRONG_FAMILY),
        (m(&["c=IN IP6 1.2.3.4"]), 7, WRONG_FAMILY),
        (m(&["c=IN IP4 224.2.1.1/x"]), 7, "bad address suffix"),
        (m(&["c=IN IP4 224.2.1.1/127/3/4"]), 7, "bad address suffix"),
        (
            "v=0\no=- 1 1 IN IP4 1.2.3.4\nc=IN IP4 1.2.3\nm=audio 1 RTP/AVP 0\n".into(),
            3,
            "bad address",
        ),
        (m(&["a=sendonly", "a=rtcp:abc"]), 8, "bad a=rtcp"),
        (m(&["a=rtcp:70000"]), 7, "bad a=rtcp"),
        (m(&["a=rtcp"]), 7, "bad a=rtcp"),
        (m(&["a=rtcp:5 IN IP4"]), 7, "bad a=rtcp"),
        (m(&["a=rtcp:5 IN IP4 nothing"]), 7, "bad a=rtcp"),
        (m(&["a=rtcp:5", "a=rtcp:6"]), 8, "duplicate a=rtcp"),
        (m(&["a=ssrc:x cname:a"]), 7, "bad a=ssrc id"),
        (m(&["a=ssrc:4294967296 cname:a"]), 7, "bad a=ssrc id"),
        (m(&["a=ssrc:"]), 7, "bad a=ssrc id"),
        (m(&["a=ssrc"]), 7, "bad a=ssrc id"),
        (m(&["a=crypto:1 AES_CM_128_HMAC_SHA1_80"]), 7, BAD_CRYPTO),
        (
            m(&["a=crypto:x AES_CM_128_HMAC_SHA1_80 inline:QUJD"]),
            7,
            BAD_CRYPTO,
        ),
        (
            m(&["a=crypto:1 AES_CM_128_HMAC_SHA1_80 uri:http://x"]),
            7,
            BAD_CRYPTO,
        ),
        (
            m(&["a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"]),
            7,
            BAD_CRYPTO,
        ),
        (
            m(&["a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:ab$%"]),
            7,
            BAD_CRYPTO,
        ),
        (m(&["a=crypto"]), 7, BAD_CRYPTO),
        (m(&["a=fmtp:MCVideo mc_priority=256"]), 7, BAD_FMTP),
        (m(&["a=fmtp:MCVideo mc_priority"]), 7, BAD_FMTP),
        (
            m(&["a=fmtp:MCVideo mc_queueing;mc_video_ssrc=0x10"]),
            7,
            BAD_FMTP,
        ),
        (m(&["a=fmtp:MCVideo mc_audio_ssrc=-1"]), 7, BAD_FMTP),
        (m(&["a=fmtp:MCVideo mc_transmission_ssrc="]), 7, BAD_FMTP),
        (
            m(&["a=fmtp:MCVideo mc_queueing", "a=fmtp:MCVideo mc_granted"]),
            8,
            "duplicate a=fmtp:MCVideo",
        ),
        (
            "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nt=0 0\n".into(),
            0,
            "no media section (m= line)",
        ),
        ("v=0\r\n".into(), 0, "no media section (m= line)"),
        ("   \n\n".into(), 0, "empty SDP"),
        (
            "v=0\nm=audio 0 RTP/AVP 0\nm=video 5 RTP/AVP 96\n".into(),
            3,
            "no connection address (c=) for media",
        ),
        (
            "v=0\nm=video 5 RTP/AVP 96\nc=IN IP4 1.2.3.4\nm=audio 5 RTP/AVP 0\n".into(),
            4,
            "no connection address (c=) for media",
        ),
    ];
    for (text, line, reason) in cases {
        let e = err(&text);
        assert_eq!((e.line, e.reason), (line, reason), "for {text:?}");
        if line > 0 {
            let l = text.split('\n').nth(line - 1).unwrap();
            assert_eq!(e.content, error_content(l), "for {text:?}");
            assert!(e.to_string().starts_with(&format!("SDP line {line} `")));
        }
    }
}

/// Found by the `api_request` fuzz target: a key spliced into a malformed line came back in
/// the error.
#[test]
fn key_material_redacted_wherever_it_stands() {
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==";
    for bad in [
        format!("s{key}"),
        format!("a=CRYPTO:1 AEAD_AES_128_GCM inline:{key}"),
        format!("a=x y{key}z"),
        format!("x=inline:{key}"),
    ] {
        let text = format!("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\n{bad}\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=video 5000 RTP/AVP 96\r\n");
        let e = SessionDescription::parse(&text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        let content = error_content(&bad);
        assert!(!content.contains("ICAwQFBgc"), "{content}");
        assert!(!e.contains("ICAwQFBgc"), "{e}");
    }
    // Short tokens and ordinary text are quoted as they are.
    assert_eq!(
        error_content("a=rtpmap:96 H264/90000"),
        "a=rtpmap:96 H264/90000"
    );
    assert_eq!(error_content("b=AS:4000"), "b=AS:4000");
}

#[test]
fn crypto_key_redacted_in_errors() {
    let e = err(&with_media_lines(&[
        "a=crypto:x AES_CM_128_HMAC_SHA1_80 inline:U0VDUkVUU0VDUkVU",
    ]));
    assert_eq!(e.line, 7);
    assert!(!e.to_string().contains("U0VD"), "{e}");
    assert_eq!(
        e.content,
        "a=crypto:x AES_CM_128_HMAC_SHA1_80 inline:<redacted>"
    );
}

#[test]
fn limits() {
    // Too large.
    let big = format!(
        "{}a=x-pad:{}\n",
        with_media_lines(&[]),
        "x".repeat(MAX_SDP_LEN)
    );
    assert_eq!(
        (err(&big).line, err(&big).reason),
        (0, "SDP larger than 64 KiB")
    );
    // Exactly at the limit is fine.
    let base = with_media_lines(&[]);
    let pad = MAX_SDP_LEN - base.len() - "a=x-pad:\n".len();
    let at = format!("{base}a=x-pad:{}\n", "y".repeat(pad));
    assert_eq!(at.len(), MAX_SDP_LEN);
    assert!(SessionDescription::parse(&at).is_ok());
    // Too many lines.
    let many = format!("{}{}", with_media_lines(&[]), "a=x\n".repeat(MAX_LINES));
    let e = err(&many);
    assert_eq!((e.line, e.reason), (MAX_LINES + 1, "too many lines"));
    // Too many media sections: the 65th m= line is named.
    let mut l = vec!["v=0".to_string(), "c=IN IP4 192.0.2.1".to_string()];
    for i in 0..=MAX_MEDIA {
        l.push(format!("m=audio {} RTP/AVP 0", 1000 + 2 * i));
    }
    let e = err(&l.join("\n"));
    assert_eq!(
        (e.line, e.reason),
        (MAX_MEDIA + 3, "too many media sections")
    );
    l.pop();
    assert_eq!(
        SessionDescription::parse(&l.join("\n"))
            .unwrap()
            .media()
            .len(),
        MAX_MEDIA
    );
}

/// Whatever parses can be rewritten, and the result parses again with the same media count.
fn check_roundtrip(text: &str) {
    if let Ok(sdp) = SessionDescription::parse(text) {
        let n = sdp.media().len();
        let p = plan(
            (0..n)
                .map(|i| match i % 4 {
                    0 => MediaRewrite::Keep {
                        port: 20000,
                        rtcp_port: Some(20009),
                        crypto: Some(vec!["1 AEAD_AES_128_GCM inline:QUJD".into()]),
                    },
                    1 => MediaRewrite::Reject,
                    2 => keep(20002),
                    _ => MediaRewrite::Keep {
                        port: 20004,
                        rtcp_port: Some(20005),
                        crypto: None,
                    },
                })
                .collect(),
        );
        let out = sdp.rewrite(&p).unwrap();
        let again = SessionDescription::parse(&out).unwrap();
        assert_eq!(again.media().len(), n);
        assert!(sdp.rewrite(&plan(vec![])).is_err());
    }
}

#[test]
fn garbage_does_not_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let alphabet: Vec<char> = "v=0mcaIN IP46:/.\r\n \t1234567890tMCVideo;_=rtcpssrcinline|é\0"
        .chars()
        .collect();
    for _ in 0..3000 {
        let len = rng.index(200);
        let s: String = (0..len)
            .map(|_| alphabet[rng.index(alphabet.len())])
            .collect();
        check_roundtrip(&s);
        check_roundtrip(&format!("v=0\nc=IN IP4 1.2.3.4\n{s}"));
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        check_roundtrip(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn mutated_offers_do_not_panic() {
    let base = format!(
        "{}a=crypto:1 AEAD_AES_128_GCM inline:QUJDRA==|2^31\r\na=rtcp:5001 IN IP4 192.0.2.3\r\n",
        offer()
    );
    // Every truncation.
    for (i, _) in base.char_indices() {
        check_roundtrip(&base[..i]);
    }
    // Random edits.
    let mut rng = Rng(42);
    let pieces = [
        "", " ", "\n", "\r\n", "=", ":", "/", ";", "0", "65536", "m=", "c=", "a=", "IP6", "\0",
    ];
    let chars: Vec<char> = base.chars().collect();
    for _ in 0..3000 {
        let mut c = chars.clone();
        for _ in 0..1 + rng.index(4) {
            let at = rng.index(c.len());
            let cut = rng.index(4).min(c.len() - at);
            let ins: Vec<char> = pieces[rng.index(pieces.len())].chars().collect();
            c.splice(at..at + cut, ins);
        }
        let s: String = c.into_iter().collect();
        check_roundtrip(&s);
    }
}

#[test]
fn huge_inputs_do_not_panic() {
    let huge = "a".repeat(10 * MAX_SDP_LEN);
    assert_eq!(err(&huge).line, 0);
    let long_line = format!(
        "v=0\nc=IN IP4 1.2.3.4\nm=audio 1 RTP/AVP {}\n",
        "9 ".repeat(30_000)
    );
    assert_eq!(
        SessionDescription::parse(&long_line).unwrap().media()[0]
            .formats
            .len(),
        30_000
    );
    let newlines = "\n".repeat(MAX_SDP_LEN);
    assert!(SessionDescription::parse(&newlines).is_err());
    let ssrcs: String = (0..3000).map(|i| format!("a=ssrc:{i} cname:x\n")).collect();
    let sdp = SessionDescription::parse(&with_media_lines(&[&ssrcs])).unwrap();
    assert_eq!(sdp.media()[0].ssrcs.len(), 3000);
}

#[test]
fn clock_rate_comes_from_the_first_formats_rtpmap() {
    let d = SessionDescription::parse(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
         m=audio 5000 RTP/AVP 98 0\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:98 AMR-WB/16000/1\r\n\
         m=video 5002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
         m=application 5004 udp MCVideo\r\na=rtpmap:garbage\r\n",
    )
    .unwrap();
    let clocks: Vec<Option<u32>> = d.media().iter().map(|m| m.clock_rate).collect();
    assert_eq!(clocks, [Some(16_000), Some(90_000), None]);
    let names: Vec<Option<&str>> = d.media().iter().map(|m| m.encoding.as_deref()).collect();
    assert_eq!(names, [Some("AMR-WB"), Some("H264"), None]);
}

#[test]
fn with_origin_names_the_relay_in_o_and_keeps_every_other_byte() {
    let text = "v=0\r\no=camera  5365 1 IN IP4 127.0.0.1\r\ns=-\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                m=video 5000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\no=not-this-one\r\n";
    let d = SessionDescription::parse(text).unwrap();
    let v6 = d.with_origin("2001:db8::1".parse().unwrap()).unwrap();
    assert_eq!(
        v6,
        text.replacen(
            "o=camera  5365 1 IN IP4 127.0.0.1",
            "o=camera  5365 1 IN IP6 2001:db8::1",
            1
        )
    );
    let v4 = d.with_origin("192.0.2.7".parse().unwrap()).unwrap();
    assert!(v4.starts_with("v=0\r\no=camera  5365 1 IN IP4 192.0.2.7\r\ns=-\n"));
    // No o= line, or one without its six fields: an error naming the line.
    let none = SessionDescription::parse("v=0\nc=IN IP4 1.2.3.4\nm=video 1 RTP/AVP 96\n").unwrap();
    assert_eq!(none.with_origin(relay()).unwrap_err().line, 0, "no o= line");
    let short =
        SessionDescription::parse("v=0\no=- 1 1 IN IP4\nc=IN IP4 1.2.3.4\nm=video 1 RTP/AVP 96\n")
            .unwrap();
    assert_eq!(short.with_origin(relay()).unwrap_err().line, 2);
}
