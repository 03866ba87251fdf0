//! The control API over real HTTP on 127.0.0.1: the router runs in-process ([`Sidecar`]) on
//! port 0 with a small media port range; requests go through a raw HTTP/1.1 client.
#![cfg(feature = "sidecar")]
#![allow(clippy::disallowed_methods)] // tests read the clock for their deadlines

mod sidecar_support;

use mcvideo_relay::sidecar::{Config, Settings, Sidecar};
use serde_json::{json, Value};
use sidecar_support::{create_body, eventually, names, relay_video_addr, rtp_packet, Api, Client};
use std::time::Duration;

const CALLER: &str = "sip:alice@police.example";
const CALLEE: &str = "sip:bob@police.example";

fn config(port_min: u16, port_max: u16) -> Config {
    let mut c = Config::embedded();
    c.api.listen = "127.0.0.1:0".parse().unwrap();
    c.media.port_min = port_min;
    c.media.port_max = port_max;
    c.media.workers = 1;
    c
}

fn start(settings: Settings) -> (Sidecar, Api) {
    let token = settings.token.clone();
    let s = Sidecar::start(settings).expect("sidecar starts");
    let api = Api::new(s.local_addr(), token.as_deref());
    (s, api)
}

fn start_plain(port_min: u16, port_max: u16) -> (Sidecar, Api) {
    start(Settings::new(config(port_min, port_max)))
}

const SEC: Duration = Duration::from_secs(1);

#[test]
fn bearer_token_is_required_everywhere_but_healthz() {
    let mut s = Settings::new(config(46_000, 46_019));
    s.token = Some("correct-horse-battery-staple".into());
    let (sc, api) = start(s);
    let anon = Api::new(api.addr, None);
    let wrong = Api::new(api.addr, Some("correct-horse-battery-stapler"));

    let h = anon.get("/healthz");
    assert_eq!(h.status, 200, "{}", h.body);
    assert_eq!(h.json()["status"], "ok");

    let routes: [(&str, &str); 12] = [
        ("GET", "/v1/calls"),
        ("POST", "/v1/calls"),
        ("GET", "/v1/calls/x"),
        ("DELETE", "/v1/calls/x"),
        ("POST", "/v1/calls/x/answer"),
        ("POST", "/v1/calls/x/reject"),
        ("PUT", "/v1/users/u/ues/e"),
        ("DELETE", "/v1/users/u/ues/e"),
        ("GET", "/v1/events"),
        ("GET", "/metrics"),
        ("POST", "/v1/admin/drain"),
        ("GET", "/no/such/route"),
    ];
    for (method, path) in routes {
        let r = anon.raw(method, path, &[], b"{}");
        assert_eq!(
            r.error().0,
            401,
            "{method} {path} without a token: {}",
            r.body
        );
        assert_eq!(r.error().1, "unauthorized");
        assert!(r.error().2.contains("Authorization"), "{}", r.body);
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        let r = wrong.raw(method, path, &[], b"{}");
        assert_eq!(r.status, 401, "{method} {path} with a wrong token");
        assert!(r.error().2.contains("not valid"), "{}", r.body);
    }
    let r = Api::new(api.addr, None).raw(
        "GET",
        "/v1/calls",
        &[("Authorization", "Basic Zm9vOmJhcg==")],
        b"",
    );
    assert_eq!(r.status, 401);
    let r = Api::new(api.addr, None).raw(
        "GET",
        "/v1/calls",
        &[("Authorization", "bearer correct-horse-battery-staple")],
        b"",
    );
    assert_eq!(r.status, 200, "the scheme is case-insensitive");

    assert_eq!(api.get("/v1/calls").status, 200);
    assert_eq!(api.get("/metrics").status, 200);
    let r = api.get("/no/such/route");
    assert_eq!(r.error().0, 404);
    assert_eq!(r.error().1, "not_found");
    let r = api.raw("PATCH", "/v1/calls", &[], b"");
    assert_eq!(r.error().0, 405);
    let m = api.metrics();
    assert!(
        m.get(r#"mcvideo_relay_api_requests_total{route="/v1/calls",method="GET",status="401"}"#)
            >= 2.0,
        "{}",
        m.0
    );
    sc.shutdown();
}

#[test]
fn a_call_over_http_with_events_in_order_and_metrics() {
    let (sc, api) = start_plain(46_100, 46_139);
    let events = api.events();
    let before = api.metrics();
    assert_eq!(before.get("mcvideo_relay_sse_clients"), 1.0);

    // UEs: two, one designated for private calls.
    let r = api.put(
        &format!("/v1/users/{CALLEE}/ues/phone"),
        &json!({"designated_for_private_calls": false, "commencement_mode": "automatic"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = api.put(
        &format!("/v1/users/{CALLEE}/ues/tablet"),
        &json!({"designated_for_private_calls": true}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = api.put(
        &format!("/v1/users/{CALLEE}/ues/tablet"),
        &json!({"designated_for_private_calls": true}),
    );
    assert_eq!(r.status, 200, "an update is 200: {}", r.body);
    let ues = api.get(&format!("/v1/users/{CALLEE}/ues")).json();
    assert_eq!(ues["ues"].as_array().unwrap().len(), 2, "{ues}");
    let r = api.put(
        &format!("/v1/users/{CALLEE}/ues/x"),
        &json!({"commencement_mode": "sometimes"}),
    );
    assert_eq!(r.error().0, 400);

    // Seed steps 1-4.
    let caller = Client::new();
    let callee = Client::new();
    let ssrc = 0x1234_5678;
    let r = api.post(
        "/v1/calls",
        &create_body("call-1", CALLER, CALLEE, &caller.sdp("alice", Some(ssrc))),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("location"), Some("/v1/calls/call-1"));
    let offer = r.json();
    assert_eq!(offer["call_id"], "call-1");
    assert_eq!(offer["state"], "offered");
    assert_eq!(
        offer["deliver_to"],
        json!(["tablet"]),
        "the designated UE only"
    );
    assert_eq!(offer["commencement_mode"], "manual");
    let callee_offer = offer["sdp_offer"].as_str().unwrap();
    assert!(
        callee_offer.contains("c=IN IP4 127.0.0.1"),
        "{callee_offer}"
    );

    let got = api.get("/v1/calls/call-1").json();
    assert_eq!(got["state"], "offered");
    assert_eq!(got["caller"]["mcvideo_id"], CALLER);
    let list = api.get("/v1/calls").json();
    assert_eq!(list["calls"].as_array().unwrap().len(), 1);

    // Seed steps 6-11.
    let r = api.post(
        "/v1/calls/call-1/answer",
        &json!({"sdp_answer": callee.sdp("bob", None)}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let answer = r.json();
    assert_eq!(answer["state"], "established");
    let to_relay = relay_video_addr(answer["sdp_answer"].as_str().unwrap());

    const N: u16 = 20;
    const PAYLOAD: usize = 100;
    for seq in 0..N {
        caller
            .rtp
            .send_to(&rtp_packet(seq, ssrc, PAYLOAD), to_relay)
            .unwrap();
    }
    let mut buf = [0u8; 2048];
    for _ in 0..N {
        let (n, _) = callee.rtp.recv_from(&mut buf).expect("forwarded RTP");
        assert_eq!(n, 12 + PAYLOAD);
    }
    assert!(
        eventually(5 * SEC, || api.get("/v1/calls/call-1").json()["callee"]
            ["packets_out"]
            == u64::from(N)),
        "{}",
        api.get("/v1/calls/call-1").body
    );
    let live = api.get("/v1/calls/call-1").json();
    assert_eq!(live["state"], "established");
    assert_eq!(live["transmission"], "granted");
    assert_eq!(live["caller"]["packets_in"], u64::from(N));

    // Release: 200 with the final statistics.
    let r = api.delete("/v1/calls/call-1");
    assert_eq!(r.status, 200, "{}", r.body);
    let fin = r.json();
    assert_eq!(fin["state"], "released");
    assert_eq!(fin["release_reason"], "released");
    assert_eq!(fin["caller"]["packets_in"], u64::from(N));
    assert_eq!(
        fin["callee"]["bytes_out"],
        u64::from(N) * (12 + PAYLOAD as u64)
    );
    assert_eq!(api.get("/v1/calls/call-1").error().0, 404);
    assert_eq!(api.delete("/v1/calls/call-1").error().1, "unknown_call");

    let evs = events.until_released("call-1", 5 * SEC);
    assert_eq!(
        names(&evs),
        [
            "call.progress",
            "call.established",
            "transmission.granted",
            "transmission.media_started",
            "transmission.ended",
            "call.released"
        ],
        "{evs:?}"
    );
    assert_eq!(
        evs[2].data["video_ssrc"], ssrc,
        "Granted carries the announced SSRC"
    );
    assert!(evs[2].data["audio_ssrc"].is_u64());
    assert_eq!(evs[4].data["reason"], "released");
    assert_eq!(evs[5].data["reason"], "released");

    // Metrics moved by exactly this call.
    let n = f64::from(N);
    let bytes = n * (12 + PAYLOAD) as f64;
    assert!(eventually(5 * SEC, || {
        let m = api.metrics();
        m.get("mcvideo_relay_calls_active") == 0.0
            && m.get("mcvideo_relay_port_pairs_in_use") == 0.0
    }));
    let after = api.metrics();
    let d = |k: &str| after.get(k) - before.get(k);
    assert_eq!(d("mcvideo_relay_calls_created_total"), 1.0);
    assert_eq!(
        d(r#"mcvideo_relay_calls_released_total{reason="released"}"#),
        1.0
    );
    assert_eq!(
        d(r#"mcvideo_relay_packets_total{party="caller",direction="in"}"#),
        n
    );
    assert_eq!(
        d(r#"mcvideo_relay_bytes_total{party="caller",direction="in"}"#),
        bytes
    );
    assert_eq!(
        d(r#"mcvideo_relay_packets_total{party="callee",direction="out"}"#),
        n
    );
    assert_eq!(
        d(r#"mcvideo_relay_bytes_total{party="callee",direction="out"}"#),
        bytes
    );
    assert_eq!(
        d(r#"mcvideo_relay_dropped_packets_total{party="caller",reason="not_granted"}"#),
        0.0
    );
    assert_eq!(after.get("mcvideo_relay_port_pairs_capacity"), 20.0);
    for route in [
        r#"route="/v1/calls",method="POST",status="201""#,
        r#"route="/v1/calls/{id}/answer",method="POST",status="200""#,
        r#"route="/v1/calls/{id}",method="DELETE",status="200""#,
        r#"route="/v1/calls/{id}",method="DELETE",status="404""#,
    ] {
        assert_eq!(
            after.get(&format!("mcvideo_relay_api_requests_total{{{route}}}")),
            1.0,
            "{route}\n{}",
            after.0
        );
    }
    assert_eq!(
        after.get(
            r#"mcvideo_relay_api_request_duration_seconds_count{route="/v1/calls",method="POST"}"#
        ),
        1.0
    );
    assert_eq!(
        after.get(
            r#"mcvideo_relay_api_request_duration_seconds_bucket{route="/v1/calls",method="POST",le="+Inf"}"#
        ),
        1.0
    );
    assert!(after
        .0
        .contains("# TYPE mcvideo_relay_api_request_duration_seconds histogram"));
    assert!(after
        .0
        .contains("mcvideo_relay_tc_messages_received_total{type="));

    // UEs go away.
    let r = api.delete(&format!("/v1/users/{CALLEE}/ues/phone"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["ues"].as_array().unwrap().len(), 1);
    assert_eq!(
        api.delete(&format!("/v1/users/{CALLEE}/ues/phone")).error(),
        (
            404,
            "unknown_ue".into(),
            format!("user {CALLEE} has no registered UE phone")
        )
    );
    sc.shutdown();
}

#[test]
fn refusals_are_clear_errors() {
    let (sc, api) = start_plain(46_200, 46_239);
    let c = Client::new();
    let sdp = c.sdp("alice", None);

    // Malformed JSON, and JSON of the wrong shape.
    let r = api.raw("POST", "/v1/calls", &[], b"{\"caller\": ");
    assert_eq!(r.error().0, 400);
    assert_eq!(r.error().1, "bad_json");
    let r = api.post("/v1/calls", &json!({"caller": {"mcvideo_id": CALLER}}));
    let (status, code, msg) = r.error();
    assert_eq!((status, code.as_str()), (400, "bad_json"));
    assert!(msg.contains("sdp_offer"), "names the missing field: {msg}");
    let mut body = create_body("x", CALLER, CALLEE, &sdp);
    body["colour"] = json!("blue");
    assert_eq!(api.post("/v1/calls", &body).error().1, "bad_json");

    // A key in the wrong place never comes back in an error (found by the api_request fuzz
    // target): not in a malformed SDP line, not in a JSON value of the wrong type.
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==";
    let spliced = sdp.replacen("s=", &format!("s{key}\r\nx="), 1);
    let mut bodies = vec![create_body("x", CALLER, CALLEE, &spliced)];
    let mut body = create_body("x", CALLER, CALLEE, &sdp);
    body["video_push"] = json!(key);
    bodies.push(body);
    for body in bodies {
        let r = api.post("/v1/calls", &body);
        let (status, code, msg) = r.error();
        assert_eq!(status, 400, "{code}: {msg}");
        assert!(msg.contains("<redacted>"), "{msg}");
        assert!(!msg.contains("ICAwQFBgc"), "a key came back: {msg}");
    }

    // No video push indication.
    let mut body = create_body("x", CALLER, CALLEE, &sdp);
    body["video_push"] = json!(false);
    assert_eq!(api.post("/v1/calls", &body).error().1, "not_video_push");

    // Bad SDP names the line.
    let bad = sdp.replace("m=video", "m=video notaport");
    let (status, code, msg) = api
        .post("/v1/calls", &create_body("x", CALLER, CALLEE, &bad))
        .error();
    assert_eq!((status, code.as_str()), (400, "bad_sdp"), "{msg}");
    assert!(msg.contains("line 6"), "{msg}");
    assert!(msg.contains("caller"), "{msg}");

    // Bad fields.
    let mut body = create_body("x", CALLER, CALLEE, &sdp);
    body["caller"]["tc_key"] = json!({"suite": "AES_CM_128_HMAC_SHA1_80", "key": "bm90IGEga2V5"});
    let (status, code, msg) = api.post("/v1/calls", &body).error();
    assert_eq!((status, code.as_str()), (400, "bad_tc_key"));
    assert!(msg.starts_with("caller.tc_key.key"), "{msg}");
    body["caller"]["tc_key"] =
        json!({"suite": "NULL", "key": "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e"});
    assert_eq!(api.post("/v1/calls", &body).error().1, "bad_tc_key");
    let mut body = create_body("x", CALLER, CALLEE, &sdp);
    body["media_security"] = json!("none");
    assert_eq!(api.post("/v1/calls", &body).error().0, 400);
    body["media_security"] = json!("per_leg");
    body["commencement_mode"] = json!("whenever");
    assert_eq!(api.post("/v1/calls", &body).error().0, 400);

    // Unknown calls.
    for (m, p) in [
        ("GET", "/v1/calls/nope"),
        ("DELETE", "/v1/calls/nope"),
        ("POST", "/v1/calls/nope/reject"),
    ] {
        let (status, code, msg) = api.raw(m, p, &[], b"").error();
        assert_eq!((status, code.as_str()), (404, "unknown_call"), "{m} {p}");
        assert!(msg.contains("nope"));
    }
    let r = api.post("/v1/calls/nope/answer", &json!({"sdp_answer": sdp}));
    assert_eq!(r.error().1, "unknown_call");

    // A call with a tc_key and per_leg: then duplicate ID, reject, wrong state.
    let mut body = create_body("c1", CALLER, CALLEE, &sdp);
    body["caller"]["tc_key"] =
        json!({"suite": "AEAD_AES_128_GCM", "key": "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHA=="});
    body["commencement_mode"] = json!("automatic");
    let r = api.post("/v1/calls", &body);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["commencement_mode"], "automatic");
    assert_eq!(
        api.post("/v1/calls", &body).error(),
        (
            409,
            "duplicate_call_id".into(),
            "a call with id c1 exists already".into()
        )
    );
    let r = api.raw("POST", "/v1/calls/c1/reject", &[], b"");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["release_reason"], "rejected");
    assert_eq!(r.json()["state"], "released");

    let r = api.post("/v1/calls", &create_body("c2", CALLER, CALLEE, &sdp));
    assert_eq!(r.status, 201);
    let callee = Client::new();
    let r = api.post(
        "/v1/calls/c2/answer",
        &json!({"sdp_answer": callee.sdp("bob", None)}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let (status, code, _) = api.raw("POST", "/v1/calls/c2/reject", &[], b"").error();
    assert_eq!((status, code.as_str()), (409, "wrong_state"));
    let (status, code, _) = api
        .post(
            "/v1/calls/c2/answer",
            &json!({"sdp_answer": callee.sdp("bob", None)}),
        )
        .error();
    assert_eq!((status, code.as_str()), (409, "wrong_state"));
    let r = api.post(
        "/v1/calls/c2/answer",
        &json!({"sdp_answer": "v=0\r\n", "tc_key": {"suite": "x", "key": "y"}}),
    );
    assert_eq!(r.error().1, "bad_tc_key");
    assert_eq!(api.delete("/v1/calls/c2").status, 200);

    let m = api.metrics();
    assert_eq!(
        m.get(r#"mcvideo_relay_calls_refused_total{code="bad_sdp"}"#),
        2.0,
        "the spliced key and the bad port"
    );
    assert_eq!(
        m.get(r#"mcvideo_relay_calls_refused_total{code="not_video_push"}"#),
        1.0
    );
    assert_eq!(
        m.get(r#"mcvideo_relay_calls_refused_total{code="duplicate_call_id"}"#),
        1.0
    );
    assert_eq!(
        m.get(r#"mcvideo_relay_calls_released_total{reason="rejected"}"#),
        1.0
    );
    sc.shutdown();
}

#[test]
fn body_over_the_limit_is_413() {
    let mut cfg = config(46_300, 46_319);
    cfg.api.max_body_bytes = 4096;
    let (sc, api) = start(Settings::new(cfg));
    // Declared too large: refused before a byte of the body is read (the client waits for
    // 100 Continue, which never comes).
    let r = api.raw(
        "POST",
        "/v1/calls",
        &[("Content-Length", "300000"), ("Expect", "100-continue")],
        b"",
    );
    let (status, code, msg) = r.error();
    assert_eq!((status, code.as_str()), (413, "payload_too_large"));
    assert!(msg.contains("4096"), "{msg}");
    let r = api.raw(
        "PUT",
        "/v1/users/u/ues/e",
        &[("Content-Length", "4097"), ("Expect", "100-continue")],
        b"",
    );
    assert_eq!(r.error().0, 413);
    // At the limit: parsed (and refused for what it says, not for its size).
    let mut body = create_body("big", CALLER, CALLEE, "v=0\r\n").to_string();
    body.push_str(&" ".repeat(4096 - body.len()));
    let r = api.raw("POST", "/v1/calls", &[], body.as_bytes());
    assert_eq!(r.error().0, 400, "{}", r.body);
    // The default limit is 256 KiB.
    assert_eq!(Config::embedded().api.max_body_bytes, 256 * 1024);
    sc.shutdown();
}

#[test]
fn policy_refusal_is_403_naming_the_party_and_allocates_nothing() {
    let dir = std::env::temp_dir().join(format!("mcv-sidecar-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("policy.toml"),
        "push_allow = [\"sip:*@police.example\"]\npush_deny = [\"sip:cadet*@police.example\"]\n\
         receive_allow = [\"*\"]\nreceive_deny = [\"sip:blocked*\"]\n",
    )
    .unwrap();
    let mut cfg = config(46_400, 46_439);
    cfg.policy.file = Some("policy.toml".into());
    let settings = Settings::resolve(cfg, Some(&dir)).expect("policy loads");
    let (sc, api) = start(settings);
    let c = Client::new();
    let sdp = c.sdp("x", None);

    let (status, code, msg) = api
        .post(
            "/v1/calls",
            &create_body("a", "sip:eve@fire.example", CALLEE, &sdp),
        )
        .error();
    assert_eq!((status, code.as_str()), (403, "not_authorized"));
    assert!(msg.starts_with("caller sip:eve@fire.example"), "{msg}");
    let (status, _, msg) = api
        .post(
            "/v1/calls",
            &create_body("b", "sip:cadet1@police.example", CALLEE, &sdp),
        )
        .error();
    assert_eq!(status, 403);
    assert!(msg.contains("caller") && msg.contains("denied"), "{msg}");
    let (status, _, msg) = api
        .post(
            "/v1/calls",
            &create_body("c", CALLER, "sip:blocked7@police.example", &sdp),
        )
        .error();
    assert_eq!(status, 403);
    assert!(
        msg.starts_with("callee sip:blocked7@police.example"),
        "{msg}"
    );

    let m = api.metrics();
    assert_eq!(
        m.get(r#"mcvideo_relay_calls_refused_total{code="not_authorized"}"#),
        3.0
    );
    assert_eq!(
        m.get("mcvideo_relay_port_pairs_in_use"),
        0.0,
        "nothing allocated"
    );
    assert_eq!(m.get("mcvideo_relay_calls_active"), 0.0);
    assert_eq!(
        api.post("/v1/calls", &create_body("ok", CALLER, CALLEE, &sdp))
            .status,
        201
    );
    sc.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn port_pool_exhaustion_is_503_until_a_call_is_released() {
    // Two port pairs: one video-only call takes both (one per leg). Below the kernel's
    // ephemeral range (32768-60999 by default), where no client socket of a test running
    // beside this one can be holding them.
    let (sc, api) = start_plain(31_600, 31_603);
    let c = Client::new();
    let sdp = c.sdp("x", None);
    let r = api.post("/v1/calls", &create_body("one", CALLER, CALLEE, &sdp));
    assert_eq!(r.status, 201, "{}", r.body);
    let m = api.metrics();
    assert_eq!(m.get("mcvideo_relay_port_pairs_capacity"), 2.0);
    assert_eq!(m.get("mcvideo_relay_port_pairs_in_use"), 2.0);

    let r = api.post("/v1/calls", &create_body("two", CALLER, CALLEE, &sdp));
    let (status, code, _) = r.error();
    assert_eq!(
        (status, code.as_str()),
        (503, "no_ports_available"),
        "{}",
        r.body
    );
    assert_eq!(r.header("retry-after"), Some("5"));
    assert_eq!(
        api.metrics()
            .get(r#"mcvideo_relay_calls_refused_total{code="no_ports_available"}"#),
        1.0
    );

    assert_eq!(api.delete("/v1/calls/one").status, 200);
    assert!(eventually(5 * SEC, || api
        .metrics()
        .get("mcvideo_relay_port_pairs_in_use")
        == 0.0));
    let r = api.post("/v1/calls", &create_body("three", CALLER, CALLEE, &sdp));
    assert_eq!(r.status, 201, "{}", r.body);
    sc.shutdown();
}

#[test]
fn drain_mode_refuses_new_calls_and_lets_live_ones_finish() {
    let (sc, api) = start_plain(46_600, 46_639);
    let c = Client::new();
    let sdp = c.sdp("x", None);
    assert_eq!(
        api.post("/v1/calls", &create_body("live", CALLER, CALLEE, &sdp))
            .status,
        201
    );

    let r = api.raw("POST", "/v1/admin/drain", &[], b"");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"draining": true, "active_calls": 1}));
    assert_eq!(api.get("/healthz").json()["status"], "draining");
    assert_eq!(api.get("/v1/admin/drain").json()["draining"], true);
    assert_eq!(api.metrics().get("mcvideo_relay_draining"), 1.0);
    let (status, code, _) = api
        .post("/v1/calls", &create_body("new", CALLER, CALLEE, &sdp))
        .error();
    assert_eq!((status, code.as_str()), (503, "draining"));
    assert_eq!(api.get("/v1/calls/live").json()["state"], "offered");

    let r = api.post("/v1/admin/drain", &json!({"draining": false}));
    assert_eq!(r.json()["draining"], false);
    assert_eq!(
        api.post("/v1/admin/drain", &json!({"draining": true}))
            .json()["draining"],
        true
    );
    let r = api.delete("/v1/admin/drain");
    assert_eq!(r.json()["draining"], false);
    assert_eq!(api.get("/healthz").json()["status"], "ok");
    assert_eq!(
        api.post("/v1/calls", &create_body("new", CALLER, CALLEE, &sdp))
            .status,
        201
    );
    assert_eq!(api.delete("/v1/calls/live").status, 200);
    sc.shutdown();
}

#[test]
fn shutdown_releases_live_calls_and_event_streams_get_it() {
    let (sc, api) = start_plain(46_700, 46_739);
    let events = api.events();
    let a = Client::new();
    let b = Client::new();
    assert_eq!(
        api.post(
            "/v1/calls",
            &create_body("offered", CALLER, CALLEE, &a.sdp("a", None))
        )
        .status,
        201
    );
    assert_eq!(
        api.post(
            "/v1/calls",
            &create_body("established", CALLER, CALLEE, &a.sdp("a", None))
        )
        .status,
        201
    );
    let r = api.post(
        "/v1/calls/established/answer",
        &json!({"sdp_answer": b.sdp("b", None)}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    sc.shutdown();

    let mut released: Vec<(String, Value)> = Vec::new();
    while let Some(ev) = events.next(5 * SEC) {
        if ev.name == "<end of stream>" {
            break;
        }
        if ev.name == "call.released" {
            released.push((
                ev.data["call_id"].as_str().unwrap().to_owned(),
                ev.data["reason"].clone(),
            ));
        }
    }
    released.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        released,
        [
            ("established".to_owned(), json!("shutdown")),
            ("offered".to_owned(), json!("shutdown"))
        ]
    );
}

#[test]
fn a_non_loopback_api_needs_a_token() {
    let mut cfg = config(46_800, 46_819);
    cfg.api.listen = "0.0.0.0:0".parse().unwrap();
    let e = Sidecar::start(Settings::new(cfg.clone())).expect_err("refused");
    assert!(
        e.0.contains("refusing to start") && e.0.contains("loopback"),
        "{e}"
    );
    let mut s = Settings::new(cfg);
    s.token = Some("t0ken-for-the-test".into());
    let sc = Sidecar::start(s).expect("with a token it starts");
    let api = Api::new(
        format!("127.0.0.1:{}", sc.local_addr().port())
            .parse()
            .unwrap(),
        Some("t0ken-for-the-test"),
    );
    assert_eq!(api.get("/v1/calls").status, 200);
    assert_eq!(Api::new(api.addr, None).get("/v1/calls").status, 401);
    sc.shutdown();
}

#[test]
fn quality_events_and_figures_over_http() {
    let mut c = config(46_860, 46_879);
    c.api.quality_event_secs = 1;
    let (_sc, api) = start(Settings::new(c));
    let events = api.events();
    let (caller, callee) = (Client::new(), Client::new());
    let ssrc = 0x0bad_cafe;
    let r = api.post(
        "/v1/calls",
        &create_body("q-1", CALLER, CALLEE, &caller.sdp("alice", Some(ssrc))),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = api.post(
        "/v1/calls/q-1/answer",
        &json!({"sdp_answer": callee.sdp("bob", None)}),
    );
    let to_relay = relay_video_addr(r.json()["sdp_answer"].as_str().unwrap());
    // Twenty packets, five of them (seq 5..10) never sent.
    for seq in (0..20u16).filter(|s| !(5..10).contains(s)) {
        caller
            .rtp
            .send_to(&rtp_packet(seq, ssrc, 100), to_relay)
            .unwrap();
    }
    let got = |api: &Api| api.get("/v1/calls/q-1").json();
    assert!(
        eventually(5 * SEC, || got(&api)["quality"][0]["caller"]["packets"]
            == 15),
        "{}",
        got(&api)
    );
    let q = got(&api);
    assert_eq!(q["kind"], "video_push");
    assert_eq!(q["quality"][0]["kind"], "video");
    assert_eq!(q["quality"][0]["caller"]["lost"], 5, "{q}");
    assert!(q["quality"][0]["caller"]["jitter_ms"].is_f64());
    // A call.quality event with the same figures, for the established call. One may have gone
    // out before the packets arrived (the interval runs from the start): wait for one that
    // counts them.
    let mut quality = None;
    for _ in 0..40 {
        match events.next(SEC) {
            Some(ev)
                if ev.name == "call.quality"
                    && ev.data["quality"][0]["caller"]["packets"] == 15 =>
            {
                quality = Some(ev);
                break;
            }
            _ => {}
        }
    }
    let ev = quality.expect("a call.quality event within the interval");
    assert_eq!(ev.data["call_id"], "q-1");
    assert_eq!(ev.data["quality"][0]["caller"]["lost"], 5, "{:?}", ev.data);
    // And the histograms across calls in /metrics.
    let m = api.metrics();
    assert_eq!(m.get("mcvideo_relay_media_streams"), 1.0);
    assert_eq!(
        m.get(r#"mcvideo_relay_media_loss_ratio_bucket{le="+Inf"}"#),
        1.0
    );
    assert_eq!(
        m.get(r#"mcvideo_relay_media_loss_ratio_bucket{le="0.1"}"#),
        0.0
    );
    assert_eq!(
        m.get(r#"mcvideo_relay_media_loss_ratio_bucket{le="0.5"}"#),
        1.0
    );
    assert_eq!(m.get("mcvideo_relay_media_loss_ratio_sum"), 0.25);
}
