//! How a call's media recording is switched on (docs/recording.md), against an in-process
//! sidecar: `"record": true` on `POST /v1/calls` and `POST /v1/group-calls` (the answer says
//! `"recording": true`), rtpengine's `record-call` flag and `record call` key on an ng offer
//! (and the flag on an answer);
//! a call created without them leaves no media files. The metrics name the media counters.
//!
//! Ports 33_900–33_999.
#![cfg(feature = "sidecar")]
#![allow(clippy::disallowed_methods)] // tests read the clock for their deadlines

mod ng_support;
mod sidecar_support;

use mcvideo_relay::sidecar::{Config, Settings, Sidecar};
use ng_support::{d, s, Ng, B};
use serde_json::{json, Value};
use sidecar_support::{create_body, eventually, Api, Client};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn start(port_min: u16, dir: &Path) -> (Sidecar, Api, Ng) {
    let mut c = Config::embedded();
    c.api.listen = "127.0.0.1:0".parse().unwrap();
    c.ng.listen = "127.0.0.1:0".into();
    c.media.port_min = port_min;
    c.media.port_max = port_min + 49;
    c.media.workers = 1;
    c.recording.dir = dir.to_string_lossy().into_owned();
    c.recording.min_free_bytes = 0;
    let sc = Sidecar::start(Settings::new(c)).expect("sidecar starts");
    let api = Api::new(sc.local_addr(), None);
    let ng = Ng::new(sc.ng_addr().expect("ng listening"));
    (sc, api, ng)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mcvr-recsw-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The metadata of the media recording of the call whose ID starts with `id`, once written.
fn media_meta(dir: &Path, id: &str) -> Option<Value> {
    let rec = std::fs::read_dir(dir).ok()?.flatten().find(|e| {
        e.file_name()
            .to_string_lossy()
            .starts_with(&format!("{id}-"))
    })?;
    let text = std::fs::read_to_string(rec.path().join("media.json")).ok()?;
    serde_json::from_str(&text).ok()
}

fn recorded(dir: &Path, id: &str) -> bool {
    eventually(Duration::from_secs(3), || media_meta(dir, id).is_some())
}

#[test]
fn the_api_records_the_calls_that_ask_for_it() {
    let dir = tmp("api");
    let (sc, api, _ng) = start(33_900, &dir);
    let caller = Client::new();
    let mut body = create_body("api-rec", "sip:a@x", "sip:b@x", &caller.sdp("a", None));
    body["record"] = json!(true);
    let r = api.post("/v1/calls", &body);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["recording"], true);
    assert!(recorded(&dir, "api-rec"), "media.json written");
    assert_eq!(media_meta(&dir, "api-rec").unwrap()["kind"], "private");

    let other = Client::new();
    let body = create_body("api-plain", "sip:a@x", "sip:b@x", &other.sdp("a", None));
    let r = api.post("/v1/calls", &body);
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.json().get("recording").is_none(), "not asked: not said");

    let member = Client::new();
    let r = api.post(
        "/v1/group-calls",
        &json!({
            "call_id": "api-group",
            "group_id": "g",
            "record": true,
            "members": [{"mcvideo_id": "A", "sdp_offer": member.sdp("A", None)}],
        }),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["recording"], true);
    assert!(recorded(&dir, "api-group"));
    let meta = media_meta(&dir, "api-group").unwrap();
    assert_eq!(
        (&meta["kind"], &meta["media_security"]),
        (&json!("group"), &json!("end_to_end"))
    );
    assert_eq!(meta["streams"][0]["kind"], "video");

    // The call nobody asked to record has its log and no media files.
    std::thread::sleep(Duration::from_millis(200));
    assert!(media_meta(&dir, "api-plain").is_none());
    let m = api.metrics();
    assert!(m.has("mcvideo_relay_recording_packets_written_total"));
    assert!(m.has("mcvideo_relay_recording_packets_dropped_total"));
    sc.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

fn offer(call_id: &str, sdp: &str, extra: Option<(&str, B)>) -> B {
    let mut o = d(&[
        ("command", s("offer")),
        ("call-id", s(call_id)),
        ("from-tag", s("caller-tag")),
        ("sdp", s(sdp)),
    ]);
    if let (B::D(m), Some((k, v))) = (&mut o, extra) {
        m.insert(k.as_bytes().to_vec(), v);
    }
    o
}

#[test]
fn ng_records_on_the_record_call_flag_and_key() {
    let dir = tmp("ng");
    let (sc, api, ng) = start(33_950, &dir);
    let cases = [
        ("ng-flag", Some(("flags", B::L(vec![s("record-call")])))),
        ("ng-key", Some(("record call", s("yes")))),
        ("ng-none", None),
        ("ng-no", Some(("record call", s("no")))),
    ];
    let entries = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    for (id, extra) in cases {
        let before = entries(&dir);
        let c = Client::new();
        let wants = extra.as_ref().is_some_and(|(_, v)| *v != s("no"));
        let r = ng.request(id, &offer(id, &c.sdp("alice", None), extra));
        assert_eq!(r.str("result").as_deref(), Some("ok"), "{id}: {r:?}");
        // The call's recording directory (its transmission log) is the new one.
        let mut rec = None;
        assert!(
            eventually(Duration::from_secs(3), || {
                rec = entries(&dir).into_iter().find(|e| !before.contains(e));
                rec.is_some()
            }),
            "{id}: a recording directory"
        );
        let meta = rec.unwrap().join("media.json");
        if wants {
            assert!(
                eventually(Duration::from_secs(3), || meta.exists()),
                "{id}: recorded"
            );
        } else {
            std::thread::sleep(Duration::from_millis(200));
            assert!(!meta.exists(), "{id}: not recorded");
        }
    }
    // On an answer too: the offer of `ng-none` was not recorded, its answer asks for it.
    let before = entries(&dir);
    let callee = Client::new();
    let mut a = d(&[
        ("command", s("answer")),
        ("call-id", s("ng-none")),
        ("from-tag", s("caller-tag")),
        ("to-tag", s("callee-tag")),
        ("sdp", s(&callee.sdp("bob", None))),
    ]);
    if let B::D(m) = &mut a {
        m.insert(b"flags".to_vec(), B::L(vec![s("record-call")]));
    }
    let r = ng.request("a1", &a);
    assert_eq!(r.str("result").as_deref(), Some("ok"), "{r:?}");
    let metas = || {
        entries(&dir)
            .iter()
            .filter(|e| e.join("media.json").exists())
            .count()
    };
    assert!(
        eventually(Duration::from_secs(3), || metas() == 3),
        "the answer's flag records its call"
    );
    assert_eq!(
        entries(&dir).len(),
        before.len(),
        "in the call's own recording"
    );
    assert_eq!(
        api.get("/v1/calls").json()["calls"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    sc.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
