//! rtpengine's ng control protocol over real UDP on 127.0.0.1 against an in-process sidecar:
//! the commands, the reply cache (a retransmitted offer never sets up a second call), errors,
//! refused flags, and garbage datagrams (dropped, counted, never answered).
#![cfg(feature = "sidecar")]
#![allow(clippy::disallowed_methods)] // tests read the clock for their deadlines

mod ng_support;
mod sidecar_support;

use mcvideo_relay::sidecar::{Config, Settings, Sidecar};
use ng_support::{d, s, Ng, B};
use sidecar_support::{relay_video_addr, rtp_packet, Api, Client};
use std::time::Duration;

fn start(port_min: u16) -> (Sidecar, Api, Ng) {
    let mut c = Config::embedded();
    c.api.listen = "127.0.0.1:0".parse().unwrap();
    c.ng.listen = "127.0.0.1:0".into();
    c.media.port_min = port_min;
    c.media.port_max = port_min + 19;
    c.media.workers = 1;
    let sc = Sidecar::start(Settings::new(c)).expect("sidecar starts");
    let api = Api::new(sc.local_addr(), None);
    let ng = Ng::new(sc.ng_addr().expect("ng listening"));
    (sc, api, ng)
}

fn offer(call_id: &str, sdp: &str) -> B {
    d(&[
        ("command", s("offer")),
        ("call-id", s(call_id)),
        ("from-tag", s("caller-tag")),
        ("sdp", s(sdp)),
        (
            "flags",
            B::L(vec![s("trust-address"), s("some-future-flag")]),
        ),
        ("replace", B::L(vec![s("origin"), s("session-connection")])),
        ("received-from", B::L(vec![s("IP4"), s("127.0.0.1")])),
    ])
}

fn answer(call_id: &str, sdp: &str) -> B {
    d(&[
        ("command", s("answer")),
        ("call-id", s(call_id)),
        ("from-tag", s("caller-tag")),
        ("to-tag", s("callee-tag")),
        ("sdp", s(sdp)),
    ])
}

fn active_calls(api: &Api) -> usize {
    api.get("/v1/calls").json()["calls"]
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn ping_offer_answer_media_query_list_delete() {
    let (sc, api, ng) = start(48_400);
    let r = ng.request("p1", &d(&[("command", s("ping"))]));
    assert_eq!(r.str("result").as_deref(), Some("pong"));

    let events = api.events();
    let caller = Client::new();
    let callee = Client::new();
    let call_id = "a84b4c76e66710@pc33.atlanta.example.com";
    let first = ng.request_raw("c1", &offer(call_id, &caller.sdp("alice", None)));
    // The same cookie again: the same bytes, not a second call.
    let again = ng.request_raw("c1", &offer(call_id, &caller.sdp("alice", None)));
    assert_eq!(first, again);
    // A new cookie with the same offer (the INVITE reached the proxy's script twice).
    let third = ng.request("c2", &offer(call_id, &caller.sdp("alice", None)));
    let o = ng_support::decode(first.strip_prefix(b"c1 ").unwrap());
    assert_eq!(o.str("result").as_deref(), Some("ok"), "{o:?}");
    let callee_sdp = o.str("sdp").unwrap();
    assert_eq!(third.str("sdp").as_deref(), Some(callee_sdp.as_str()));
    assert_eq!(active_calls(&api), 1);
    assert_eq!(sc.engine().stats().active_calls, 1);
    let to_callee = relay_video_addr(&callee_sdp);
    assert_ne!(to_callee.port(), caller.rtp.local_addr().unwrap().port());

    // The call is an engine call like any other: on the HTTP API with the default IDs.
    let calls = api.get("/v1/calls").json();
    let c = &calls["calls"][0];
    assert_eq!(c["state"], "offered");
    assert_eq!(c["caller"]["mcvideo_id"], "tag:caller-tag");
    assert!(c["call_id"].as_str().unwrap().starts_with("ng-"));

    let a = ng.request("c3", &answer(call_id, &callee.sdp("bob", None)));
    assert_eq!(a.str("result").as_deref(), Some("ok"), "{a:?}");
    let to_caller = relay_video_addr(&a.str("sdp").unwrap());
    let a2 = ng.request("c4", &answer(call_id, &callee.sdp("bob", None)));
    assert_eq!(a2.str("sdp"), a.str("sdp"));

    // The caller's video reaches the callee through the relay.
    let mut got = 0;
    for seq in 0..20u16 {
        caller
            .rtp
            .send_to(&rtp_packet(seq, 0x1234, 100), to_caller)
            .unwrap();
        let mut buf = [0u8; 2048];
        callee
            .rtp
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        if callee.rtp.recv_from(&mut buf).is_ok() {
            got += 1;
        }
    }
    assert!(got >= 10, "callee got {got} of 20 packets");

    let q = ng.request(
        "c5",
        &d(&[("command", s("query")), ("call-id", s(call_id))]),
    );
    assert_eq!(q.str("result").as_deref(), Some("ok"), "{q:?}");
    assert!(q.get("tags").and_then(|t| t.get("callee-tag")).is_some());
    assert_eq!(
        q.get("mcvideo").and_then(|m| m.str("state")).as_deref(),
        Some("established")
    );
    match q
        .get("totals")
        .and_then(|t| t.get("push"))
        .and_then(|p| p.get("callee packets out"))
    {
        // The counters are booked a moment after the packets leave: at least one counted.
        Some(B::I(n)) => assert!((1..=20).contains(n), "{q:?}"),
        other => panic!("no totals.push in the query reply: {other:?}"),
    }
    let l = ng.request("c6", &d(&[("command", s("list"))]));
    assert_eq!(l.get("calls"), Some(&B::L(vec![s(call_id)])));
    let st = ng.request("c7", &d(&[("command", s("statistics"))]));
    assert_eq!(
        st.get("statistics")
            .and_then(|x| x.get("currentstatistics"))
            .and_then(|x| x.get("sessionsown")),
        Some(&B::I(1))
    );

    let del = d(&[
        ("command", s("delete")),
        ("call-id", s(call_id)),
        ("from-tag", s("caller-tag")),
    ]);
    let r = ng.request("c8", &del);
    assert_eq!(r.str("result").as_deref(), Some("ok"), "{r:?}");
    // A retransmitted delete: the cached ok, not an error.
    let r2 = ng.request("c8", &del);
    assert_eq!(r, r2);
    assert_eq!(sc.engine().stats().active_calls, 0);
    assert_eq!(active_calls(&api), 0);
    // The event stream saw the whole call, under its engine ID.
    let engine_id = c["call_id"].as_str().unwrap().to_owned();
    let evs = events.until_released(&engine_id, Duration::from_secs(5));
    let names = sidecar_support::names(&evs);
    assert!(names.contains(&"call.progress"), "{names:?}");
    assert!(names.contains(&"call.established"), "{names:?}");
    assert_eq!(names.last(), Some(&"call.released"), "{names:?}");
    let m = api.metrics();
    assert_eq!(
        m.get("mcvideo_relay_ng_requests_total{command=\"offer\",result=\"ok\"}"),
        2.0
    );
    assert_eq!(m.get("mcvideo_relay_ng_retransmissions_total"), 2.0);
    sc.shutdown();
}

#[test]
fn errors_unknown_calls_refused_flags_and_mcvideo_keys() {
    let (sc, api, ng) = start(48_420);
    let r = ng.request(
        "e1",
        &d(&[
            ("command", s("delete")),
            ("call-id", s("nope")),
            ("from-tag", s("x")),
        ]),
    );
    assert_eq!(r.str("result").as_deref(), Some("error"));
    assert!(r.str("error-reason").unwrap().contains("Unknown call-id"));
    let r = ng.request("e2", &answer("nope", "v=0\r\n"));
    assert_eq!(r.str("result").as_deref(), Some("error"));
    let r = ng.request("e3", &d(&[("command", s("frobnicate"))]));
    assert_eq!(r.str("result").as_deref(), Some("error"));

    let caller = Client::new();
    let sdp = caller.sdp("alice", None);
    for (cookie, extra) in [
        ("f1", ("flags", B::L(vec![s("transcode-PCMA")]))),
        ("f2", ("ICE", s("force"))),
        ("f3", ("DTLS", s("passive"))),
        ("f4", ("codec", d(&[("strip", B::L(vec![s("all")]))]))),
        ("f5", ("transport-protocol", s("RTP/SAVP"))),
    ] {
        let mut req = offer("refused", &sdp);
        if let B::D(m) = &mut req {
            m.insert(extra.0.as_bytes().to_vec(), extra.1.clone());
        }
        let r = ng.request(cookie, &req);
        assert_eq!(r.str("result").as_deref(), Some("error"), "{cookie}: {r:?}");
        assert!(
            r.str("error-reason").unwrap().contains("not supported"),
            "{r:?}"
        );
    }
    assert_eq!(sc.engine().stats().active_calls, 0);

    // The mcvideo dictionary sets the IDs and the modes; video-push "no" is refused.
    let mut req = offer("mc-1", &sdp);
    if let B::D(m) = &mut req {
        m.insert(
            b"mcvideo".to_vec(),
            d(&[
                ("video-push", s("yes")),
                ("caller", s("sip:alice@police.example")),
                ("callee", s("sip:bob@police.example")),
                ("commencement-mode", s("automatic")),
            ]),
        );
    }
    let r = ng.request("m1", &req);
    assert_eq!(r.str("result").as_deref(), Some("ok"), "{r:?}");
    let c = &api.get("/v1/calls").json()["calls"][0];
    assert_eq!(c["caller"]["mcvideo_id"], "sip:alice@police.example");
    assert_eq!(c["callee"]["mcvideo_id"], "sip:bob@police.example");
    assert_eq!(c["commencement_mode"], "automatic");
    let mut req = offer("mc-2", &sdp);
    if let B::D(m) = &mut req {
        m.insert(b"mcvideo".to_vec(), d(&[("video-push", s("no"))]));
    }
    let r = ng.request("m2", &req);
    assert_eq!(r.str("result").as_deref(), Some("error"));
    assert_eq!(r.str("mcvideo-error").as_deref(), Some("not_video_push"));
    // Deleting a call still offered rejects it.
    let r = ng.request(
        "m3",
        &d(&[("command", s("delete")), ("call-id", s("mc-1"))]),
    );
    assert_eq!(r.str("result").as_deref(), Some("ok"), "{r:?}");
    assert_eq!(sc.engine().stats().active_calls, 0);

    // A call released by someone else (here the HTTP API; usually the end of the push): the
    // BYE's delete that follows is still ok, with a warning.
    let r = ng.request("r1", &offer("ended-1", &sdp));
    assert_eq!(r.str("result").as_deref(), Some("ok"), "{r:?}");
    let id = api.get("/v1/calls").json()["calls"][0]["call_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(api.delete(&format!("/v1/calls/{id}")).status, 200);
    assert!(sidecar_support::eventually(Duration::from_secs(3), || {
        let l = ng.request(
            &format!("l{}", rand_cookie()),
            &d(&[("command", s("list"))]),
        );
        l.get("calls") == Some(&B::L(vec![]))
    }));
    let r = ng.request(
        "r2",
        &d(&[("command", s("delete")), ("call-id", s("ended-1"))]),
    );
    assert_eq!(r.str("result").as_deref(), Some("ok"), "{r:?}");
    assert!(r.str("warning").is_some(), "{r:?}");
    sc.shutdown();
}

fn rand_cookie() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[test]
fn garbage_and_over_long_datagrams_are_dropped_and_counted() {
    let (sc, api, ng) = start(48_440);
    let short = Duration::from_millis(300);
    let garbage: [&[u8]; 7] = [
        b"",
        b"nocookie",
        b"c1 ",
        b"c1 d7:command",
        b"c1 i42e",
        b"c1 d3:foo3:bare",
        b" d7:command4:pinge",
    ];
    for g in garbage {
        assert_eq!(ng.raw(g, short), None, "{:?}", String::from_utf8_lossy(g));
    }
    let mut long = b"c2 d7:command4:ping3:pad".to_vec();
    long.extend_from_slice(b"70000:");
    long.resize(40_000, b'x');
    assert_eq!(ng.raw(&long, short), None);
    // The listener still answers.
    let r = ng.request("c3", &d(&[("command", s("ping"))]));
    assert_eq!(r.str("result").as_deref(), Some("pong"));
    let m = api.metrics();
    assert_eq!(
        m.get("mcvideo_relay_ng_dropped_total{reason=\"malformed\"}"),
        garbage.len() as f64
    );
    assert_eq!(
        m.get("mcvideo_relay_ng_dropped_total{reason=\"too_long\"}"),
        1.0
    );
    sc.shutdown();
}

#[test]
fn ng_off_loopback_needs_an_allow_list() {
    let mut c = Config::embedded();
    c.ng.listen = "0.0.0.0:0".into();
    let problems = c.validate();
    assert!(
        problems.iter().any(|p| p.key == "ng.allow_from"),
        "{problems:?}"
    );
    assert!(Sidecar::start(Settings::new(c.clone())).is_err());
    c.ng.allow_from = vec!["10.0.0.0/8".into(), "192.0.2.7".into()];
    assert!(c.validate().is_empty(), "{:?}", c.validate());
    c.ng.allow_from = vec!["10.0.0.0/40".into()];
    assert!(c.validate().iter().any(|p| p.key == "ng.allow_from[0]"));
    c.ng.listen = "off".into();
    c.ng.allow_from.clear();
    assert!(c.validate().is_empty());
}

#[test]
fn authorization_refusals_name_the_party() {
    let mut c = Config::embedded();
    c.api.listen = "127.0.0.1:0".parse().unwrap();
    c.ng.listen = "127.0.0.1:0".into();
    c.media.port_min = 48_460;
    c.media.port_max = 48_479;
    c.media.workers = 1;
    let mut settings = Settings::new(c);
    settings.policy = Some(std::sync::Arc::new(
        mcvideo_relay::control::policy::RulePolicy {
            push_allow: vec!["sip:alice@*".into()],
            push_deny: vec![],
            receive_allow: vec!["sip:bob@*".into()],
            receive_deny: vec![],
        },
    ));
    let sc = Sidecar::start(settings).expect("sidecar starts");
    let ng = Ng::new(sc.ng_addr().unwrap());
    let caller = Client::new();
    let with_ids = |caller_id: &str, callee_id: &str, call_id: &str| {
        let mut req = offer(call_id, &caller.sdp("x", None));
        if let B::D(m) = &mut req {
            m.insert(
                b"mcvideo".to_vec(),
                d(&[("caller", s(caller_id)), ("callee", s(callee_id))]),
            );
        }
        req
    };
    let r = ng.request("a1", &with_ids("sip:mallory@x", "sip:bob@x", "auth-1"));
    assert_eq!(r.str("result").as_deref(), Some("error"));
    assert_eq!(r.str("mcvideo-error").as_deref(), Some("not_authorized"));
    let reason = r.str("error-reason").unwrap();
    assert!(
        reason.contains("caller") && reason.contains("sip:mallory@x"),
        "{reason}"
    );
    let r = ng.request("a2", &with_ids("sip:alice@x", "sip:eve@x", "auth-2"));
    let reason = r.str("error-reason").unwrap();
    assert!(
        reason.contains("callee") && reason.contains("sip:eve@x"),
        "{reason}"
    );
    let r = ng.request("a3", &with_ids("sip:alice@x", "sip:bob@x", "auth-3"));
    assert_eq!(r.str("result").as_deref(), Some("ok"), "{r:?}");
    assert_eq!(sc.engine().stats().active_calls, 1);
    sc.shutdown();
}

#[test]
fn the_ng_section_and_flag_parse() {
    let (c, problems) = Config::parse(
        "[ng]\nlisten = \"off\"\nallow_from = [\"192.0.2.0/24\"]\nreply_cache_secs = 5\n",
    );
    assert!(problems.is_empty(), "{problems:?}");
    assert!(!c.ng.enabled());
    assert_eq!(c.ng.reply_cache_secs, 5);
    let (_, problems) = Config::parse("[ng]\nlisten_on = \"x\"\n");
    assert_eq!(problems[0].key, "ng.listen_on");
    let (c, _) = Config::parse("[ng]\nmedia_security = \"none\"\nmax_request_bytes = 10\n");
    let keys: Vec<String> = c.validate().into_iter().map(|p| p.key).collect();
    assert!(keys.contains(&"ng.media_security".to_owned()), "{keys:?}");
    assert!(
        keys.contains(&"ng.max_request_bytes".to_owned()),
        "{keys:?}"
    );
    let o = mcvideo_relay::sidecar::ServeOptions::parse(&["--ng-listen".into(), "off".into()])
        .unwrap()
        .unwrap();
    let mut c = Config::embedded();
    assert!(o.apply(&mut c).is_empty());
    assert!(!c.ng.enabled());
    assert_eq!(Config::embedded().ng.listen, "127.0.0.1:2223");
}
