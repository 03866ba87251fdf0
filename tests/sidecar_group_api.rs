//! The group call routes of the control API over real HTTP on 127.0.0.1: create with members,
//! a late joiner, a member removed, the call's transmissions and queue in `GET`, release; the
//! group events on the SSE stream; metrics by call kind; and clear 4xx errors.
//!
//! Media ports 49_400–49_479 (no other test uses them).
#![cfg(feature = "sidecar")]
#![allow(clippy::disallowed_methods)] // tests read the clock for their deadlines

mod sidecar_support;

use mcvideo_relay::sidecar::{Config, Settings, Sidecar};
use mcvideo_relay::wire::tc::{EmitOptions, MessageKind, TcMessage};
use serde_json::{json, Value};
use sidecar_support::{eventually, Api, SseEvent};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);
const TOKEN: &str = "group-calls-token";

fn start() -> (Sidecar, Api) {
    let mut c = Config::embedded();
    c.api.listen = "127.0.0.1:0".parse().unwrap();
    c.media.port_min = 49_400;
    c.media.port_max = 49_479;
    c.media.workers = 1;
    let mut s = Settings::new(c);
    s.token = Some(TOKEN.into());
    let sc = Sidecar::start(s).expect("sidecar starts");
    let api = Api::new(sc.local_addr(), Some(TOKEN));
    (sc, api)
}

/// A member's client: video (RTP and RTCP) and a transmission control socket.
struct Member {
    rtp: UdpSocket,
    rtcp: UdpSocket,
    ctl: UdpSocket,
}

impl Member {
    fn new() -> Member {
        let b = || {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            s
        };
        Member {
            rtp: b(),
            rtcp: b(),
            ctl: b(),
        }
    }

    fn sdp(&self, name: &str) -> String {
        let port = |s: &UdpSocket| s.local_addr().unwrap().port();
        format!(
            "v=0\r\no={name} 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=video {} RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=rtcp:{}\r\n\
             m=application {} udp MCVideo\r\na=fmtp:MCVideo mc_queueing\r\n",
            port(&self.rtp),
            port(&self.rtcp),
            port(&self.ctl)
        )
    }

    fn body(&self, name: &str) -> Value {
        json!({"mcvideo_id": name, "sdp_offer": self.sdp(name), "priority": 3})
    }
}

/// The relay's control address in an SDP answer.
fn control_addr(sdp: &str) -> SocketAddr {
    let port = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=application "))
        .and_then(|m| m.split_whitespace().next())
        .expect("m=application");
    format!("127.0.0.1:{port}").parse().unwrap()
}

fn events_of(evs: &sidecar_support::Events, call: &str, until: &str) -> Vec<SseEvent> {
    let mut got = Vec::new();
    while let Some(ev) = evs.next(3 * SEC) {
        if ev.data["call_id"] == call {
            let done = ev.name == until;
            got.push(ev);
            if done {
                return got;
            }
        }
    }
    panic!(
        "no {until} for {call}: {:?}",
        got.iter().map(|e| &e.name).collect::<Vec<_>>()
    );
}

#[test]
fn sidecar_group_calls_routes_events_and_metrics() {
    let (sc, api) = start();
    let events = api.events();
    let members: Vec<Member> = (0..4).map(|_| Member::new()).collect();
    let names = ["alice", "bob", "carol", "dave"];

    // Authenticated like every other route.
    let anon = Api::new(api.addr, None);
    for (m, p) in [
        ("POST", "/v1/group-calls"),
        ("GET", "/v1/group-calls"),
        ("GET", "/v1/group-calls/x"),
        ("DELETE", "/v1/group-calls/x"),
        ("POST", "/v1/group-calls/x/members"),
        ("DELETE", "/v1/group-calls/x/members/y"),
    ] {
        assert_eq!(anon.raw(m, p, &[], b"{}").status, 401, "{m} {p}");
    }

    // Create with three members.
    let r = api.post(
        "/v1/group-calls",
        &json!({
            "call_id": "grp-1",
            "group_id": "sip:fire-brigade@mcx.example",
            "max_transmitters": 1,
            "members": [members[0].body(names[0]), members[1].body(names[1]), members[2].body(names[2])],
        }),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("location"), Some("/v1/group-calls/grp-1"));
    let created = r.json();
    assert_eq!(created["call_id"], "grp-1");
    assert_eq!(created["kind"], "group");
    let answers = created["members"].as_array().unwrap().clone();
    assert_eq!(answers.len(), 3);
    assert_eq!(answers[1]["mcvideo_id"], "bob");
    let ctl_alice = control_addr(answers[0]["sdp_answer"].as_str().unwrap());
    let evs = events_of(&events, "grp-1", "transmission.idle");
    let joined: Vec<&Value> = evs
        .iter()
        .filter(|e| e.name == "participant.joined")
        .map(|e| &e.data["mcvideo_id"])
        .collect();
    assert_eq!(joined, ["alice", "bob", "carol"]);

    // Alice asks to transmit, Bob too: Alice granted, Bob queued, both in GET and as events.
    let req = TcMessage::new(MessageKind::TransmissionRequest, 0x1111)
        .to_vec(&EmitOptions::default())
        .unwrap();
    members[0].ctl.send_to(&req, ctl_alice).unwrap();
    let evs = events_of(&events, "grp-1", "transmission.granted");
    let g = evs.last().unwrap();
    assert_eq!(g.data["mcvideo_id"], "alice");
    assert!(g.data["video_ssrc"].as_u64().is_some());
    let ctl_bob = control_addr(answers[1]["sdp_answer"].as_str().unwrap());
    members[1].ctl.send_to(&req, ctl_bob).unwrap();
    let evs = events_of(&events, "grp-1", "transmission.queued");
    assert_eq!(evs.last().unwrap().data["mcvideo_id"], "bob");
    assert_eq!(evs.last().unwrap().data["position"], 1);
    let s = api.get("/v1/group-calls/grp-1");
    assert_eq!(s.status, 200, "{}", s.body);
    let s = s.json();
    assert_eq!(s["group_id"], "sip:fire-brigade@mcx.example");
    assert_eq!(s["state"], "established");
    assert_eq!(s["reception_mode"], "automatic");
    assert_eq!(s["transmissions"][0]["mcvideo_id"], "alice");
    assert_eq!(s["transmissions"][0]["receivers"], json!(["bob", "carol"]));
    assert_eq!(s["queue"][0]["mcvideo_id"], "bob");
    assert_eq!(s["queue"][0]["position"], 1);
    assert_eq!(s["members"].as_array().unwrap().len(), 3);
    let list = api.get("/v1/group-calls").json();
    assert_eq!(list["group_calls"][0]["call_id"], "grp-1");

    // A late joiner; then a member leaves.
    let r = api.post("/v1/group-calls/grp-1/members", &members[3].body(names[3]));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["mcvideo_id"], "dave");
    assert!(r.json()["sdp_answer"]
        .as_str()
        .unwrap()
        .contains("m=video "));
    let evs = events_of(&events, "grp-1", "participant.joined");
    assert_eq!(evs.last().unwrap().data["mcvideo_id"], "dave");
    let s = api.get("/v1/group-calls/grp-1").json();
    assert_eq!(
        s["transmissions"][0]["receivers"],
        json!(["bob", "carol", "dave"])
    );
    let r = api.delete("/v1/group-calls/grp-1/members/carol");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["members"].as_array().unwrap().len(), 3);
    let evs = events_of(&events, "grp-1", "participant.left");
    assert_eq!(evs.last().unwrap().data["mcvideo_id"], "carol");

    // Metrics by kind (the existing series unchanged).
    let m = api.metrics();
    assert_eq!(
        m.get("mcvideo_relay_calls_active_by_kind{kind=\"group\"}"),
        1.0
    );
    assert_eq!(
        m.get("mcvideo_relay_calls_active_by_kind{kind=\"video_push\"}"),
        0.0
    );
    assert_eq!(
        m.get("mcvideo_relay_calls_created_by_kind_total{kind=\"group\"}"),
        1.0
    );
    assert!(m.has("mcvideo_relay_calls_active"));
    assert_eq!(api.get("/healthz").json()["active_group_calls"], 1);
    assert!(m.has("mcvideo_relay_group_member_packets_total{direction=\"out\"}"));

    // Release: final summary, call.released, the ID is free, every port back.
    let r = api.delete("/v1/group-calls/grp-1");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "released");
    assert_eq!(r.json()["release_reason"], "released");
    let evs = events_of(&events, "grp-1", "call.released");
    assert_eq!(evs.last().unwrap().data["reason"], "released");
    assert!(evs.iter().any(|e| e.name == "transmission.ended"));
    assert_eq!(api.get("/v1/group-calls/grp-1").error().1, "unknown_call");
    assert!(eventually(2 * SEC, || {
        api.metrics()
            .get("mcvideo_relay_calls_active_by_kind{kind=\"group\"}")
            == 0.0
    }));
    drop(sc);
}

#[test]
fn sidecar_group_call_errors_are_clear_4xx() {
    let (sc, api) = start();
    let a = Member::new();
    let b = Member::new();
    let post = |body: Value| api.post("/v1/group-calls", &body);

    let e = post(json!({"group_id": "g", "members": []})).error();
    assert_eq!((e.0, e.1.as_str()), (400, "bad_request"), "{e:?}");
    assert!(e.2.contains("member"), "{e:?}");
    let e = post(json!({"members": [a.body("a")]})).error();
    assert_eq!((e.0, e.1.as_str()), (400, "bad_json"), "{e:?}");
    let e = post(json!({"group_id": "g", "reception_mode": "sometimes", "members": [a.body("a")]}))
        .error();
    assert_eq!((e.0, e.1.as_str()), (400, "bad_request"), "{e:?}");
    assert!(e.2.contains("reception_mode"), "{e:?}");
    let e =
        post(json!({"group_id": "g", "media_security": "none", "members": [a.body("a")]})).error();
    assert_eq!(e.0, 400, "{e:?}");
    let e = post(json!({"group_id": "g", "max_transmitters": 0, "members": [a.body("a")]})).error();
    assert!(e.2.contains("Cx"), "{e:?}");
    let e = post(json!({"group_id": "g", "members": [a.body("a"), a.body("a")]})).error();
    assert!(e.2.contains("twice"), "{e:?}");
    let e = post(json!({"group_id": "g", "members": [a.body("a"), {"mcvideo_id": "b", "sdp_offer": "v=0\r\nm=video x"}]})).error();
    assert_eq!(e.0, 400, "{e:?}");
    assert!(e.2.contains("member b"), "names the member: {e:?}");
    let e = post(json!({"group_id": "g", "members": [{"mcvideo_id": "a", "sdp_offer": a.sdp("a"), "tc_key": {"suite": "NULL", "key": "x"}}]})).error();
    assert_eq!((e.0, e.1.as_str()), (400, "bad_tc_key"), "{e:?}");
    assert_eq!(
        api.metrics()
            .get("mcvideo_relay_calls_active_by_kind{kind=\"group\"}"),
        0.0
    );

    let r = post(json!({"call_id": "g-1", "group_id": "g", "members": [a.body("a")]}));
    assert_eq!(r.status, 201, "{}", r.body);
    let e = post(json!({"call_id": "g-1", "group_id": "g", "members": [b.body("b")]})).error();
    assert_eq!((e.0, e.1.as_str()), (409, "duplicate_call_id"), "{e:?}");
    let e = api
        .post("/v1/group-calls/g-1/members", &a.body("a"))
        .error();
    assert_eq!(e.0, 400, "{e:?}");
    assert!(e.2.contains("already"), "{e:?}");
    let e = api
        .post("/v1/group-calls/nope/members", &b.body("b"))
        .error();
    assert_eq!((e.0, e.1.as_str()), (404, "unknown_call"), "{e:?}");
    let e = api.delete("/v1/group-calls/g-1/members/zed").error();
    assert_eq!((e.0, e.1.as_str()), (404, "unknown_member"), "{e:?}");
    let e = api.delete("/v1/group-calls/nope/members/a").error();
    assert_eq!((e.0, e.1.as_str()), (404, "unknown_call"), "{e:?}");
    let e = api.get("/v1/group-calls/nope").error();
    assert_eq!((e.0, e.1.as_str()), (404, "unknown_call"), "{e:?}");
    // A group call is not a one-to-one call.
    let e = api.delete("/v1/calls/g-1").error();
    assert_eq!((e.0, e.1.as_str()), (409, "wrong_state"), "{e:?}");
    assert_eq!(api.delete("/v1/group-calls/g-1").status, 200);
    assert_eq!(api.delete("/v1/group-calls/g-1").error().0, 404);
    drop(sc);
}

#[test]
fn sidecar_group_calls_config_section() {
    let (c, problems) = Config::parse(
        "[group_calls]\nmax_transmitters = 2\nmax_streams_per_receiver = 3\n\
         reception_mode = \"manual\"\nt1_inactivity_secs = 60\nt2_idle_ms = 500\n",
    );
    assert!(problems.is_empty(), "{problems:?}");
    assert!(c.validate().is_empty());
    let g = c.engine_config().group;
    assert_eq!(g.max_transmitters, 2);
    assert_eq!(g.max_streams_per_receiver, 3);
    assert_eq!(
        g.reception_mode,
        mcvideo_relay::control::server::ReceptionMode::Manual
    );
    assert_eq!(g.t1_inactivity, Duration::from_secs(60));
    assert_eq!(g.t2_idle, Duration::from_millis(500));
    // Defaults: Cx 1, C9 4, automatic.
    let d = Config::embedded().engine_config().group;
    assert_eq!((d.max_transmitters, d.max_streams_per_receiver), (1, 4));

    let (c, problems) = Config::parse(
        "[group_calls]\nmax_transmitters = 0\nreception_mode = \"sometimes\"\nbogus = 1\n",
    );
    let mut keys: Vec<String> = problems
        .iter()
        .chain(&c.validate())
        .map(|p| p.to_string())
        .collect();
    keys.sort();
    assert!(
        keys.iter().any(|k| k.starts_with("group_calls.bogus")),
        "{keys:?}"
    );
    assert!(
        keys.iter()
            .any(|k| k.starts_with("group_calls.max_transmitters")),
        "{keys:?}"
    );
    assert!(
        keys.iter()
            .any(|k| k.starts_with("group_calls.reception_mode")),
        "{keys:?}"
    );
}

/// `GET /v1/calls` lists every kind of call with its `kind` (a one-to-one entry keeps every
/// field it had); `calls.max_calls` counts one-to-one and group calls together; a member's
/// unusable SDP names the member in the error body.
#[test]
fn sidecar_lists_and_counts_every_kind_of_call() {
    let mut c = Config::embedded();
    c.api.listen = "127.0.0.1:0".parse().unwrap();
    c.media.port_min = 49_400;
    c.media.port_max = 49_479;
    c.media.workers = 1;
    c.calls.max_calls = 2;
    let mut s = Settings::new(c);
    s.token = Some(TOKEN.into());
    let sc = Sidecar::start(s).expect("sidecar starts");
    let api = Api::new(sc.local_addr(), Some(TOKEN));
    let (a, b) = (Member::new(), Member::new());

    let e = api.post(
        "/v1/group-calls",
        &json!({"group_id": "g", "members": [a.body("alice"), {"mcvideo_id": "bob", "sdp_offer": "v=0\r\nm=video x"}]}),
    );
    let v = e.json();
    assert_eq!(
        (e.status, &v["error"]["code"]),
        (400, &json!("bad_sdp")),
        "{v}"
    );
    assert_eq!(v["error"]["member"], "bob", "names the member: {v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("line"),
        "{v}"
    );
    let e = api.post(
        "/v1/group-calls",
        &json!({"group_id": "g", "members": [a.body("alice"), a.body("alice")]}),
    );
    assert_eq!(e.json()["error"]["member"], "alice", "{}", e.body);
    let e = api.post(
        "/v1/group-calls",
        &json!({"group_id": "g", "members": [a.body("alice"), {"mcvideo_id": "bob", "sdp_offer": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"}]}),
    );
    let v = e.json();
    assert_eq!(v["error"]["member"], "bob", "{v}");
    assert_eq!(v["error"]["code"], "no_acceptable_media", "{v}");

    let r = api.post(
        "/v1/group-calls",
        &json!({"call_id": "grp-all", "group_id": "g", "members": [a.body("alice")]}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let caller = sidecar_support::Client::new();
    let r = api.post(
        "/v1/calls",
        &sidecar_support::create_body("one-all", "sip:a@x", "sip:b@x", &caller.sdp("a", None)),
    );
    assert_eq!(r.status, 201, "{}", r.body);

    let list = api.get("/v1/calls").json();
    let calls = list["calls"].as_array().unwrap();
    let ids: Vec<(&str, &str)> = calls
        .iter()
        .map(|c| (c["call_id"].as_str().unwrap(), c["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(ids, [("grp-all", "group"), ("one-all", "video_push")]);
    let keys = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    let group = api.get("/v1/group-calls/grp-all").json();
    assert_eq!(
        keys(&calls[0]),
        keys(&group),
        "a group entry is the group call's body"
    );
    assert_eq!(calls[0]["members"][0]["mcvideo_id"], "alice");
    let one = api.get("/v1/calls/one-all").json();
    assert_eq!(
        keys(&calls[1]),
        keys(&one),
        "a one-to-one entry keeps its fields"
    );
    for k in ["caller", "callee", "state", "transmission", "quality"] {
        assert!(calls[1].get(k).is_some(), "{k}");
    }

    // Two calls, of two kinds: the maximum is reached for both kinds.
    let r = api.post(
        "/v1/calls",
        &sidecar_support::create_body("one-more", "sip:a@x", "sip:b@x", &caller.sdp("a", None)),
    );
    assert_eq!(r.error().0, 503, "{}", r.body);
    assert_eq!(r.error().1, "too_many_calls");
    let r = api.post(
        "/v1/group-calls",
        &json!({"group_id": "g", "members": [b.body("bob")]}),
    );
    assert_eq!((r.error().0, r.error().1.as_str()), (503, "too_many_calls"));
    assert_eq!(api.delete("/v1/group-calls/grp-all").status, 200);
    let r = api.post(
        "/v1/group-calls",
        &json!({"call_id": "grp-again", "group_id": "g", "members": [b.body("bob")]}),
    );
    assert_eq!(
        r.status, 201,
        "a released group call frees its place: {}",
        r.body
    );
    drop(sc);
}
