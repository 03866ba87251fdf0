//! The recordings API (docs/recording.md, "The recordings API") against an in-process sidecar
//! with `[recording] media = "all"` and a token: recorded calls listed newest first, filtered by
//! call, member and start time, bounded by `limit`; one recording's metadata and files; a
//! recording still being written refused to `DELETE` (409), removed once its call is over; IDs
//! that would leave the directory refused (400), a symbolic link in it not followed; bad filters
//! 400; the token required; a relay without recording says so (404 `recording_off`).
//!
//! Ports 35_000–35_069.
#![cfg(feature = "sidecar")]
#![allow(clippy::disallowed_methods)] // tests read the clock for their deadlines

mod sidecar_support;

use mcvideo_relay::sidecar::{Config, Settings, Sidecar};
use serde_json::{json, Value};
use sidecar_support::{create_body, eventually, Api, Client};
use std::path::{Path, PathBuf};
use std::time::Duration;

const TOKEN: &str = "recordings-token";

fn config(port_min: u16) -> Config {
    let mut c = Config::embedded();
    c.api.listen = "127.0.0.1:0".parse().unwrap();
    c.media.port_min = port_min;
    c.media.port_max = port_min + 49;
    c.media.workers = 1;
    c
}

fn start(port_min: u16, dir: &Path) -> (Sidecar, Api) {
    let mut c = config(port_min);
    c.recording.dir = dir.to_string_lossy().into_owned();
    c.recording.min_free_bytes = 0;
    c.recording.media = "all".into();
    let mut s = Settings::new(c);
    s.token = Some(TOKEN.into());
    let sc = Sidecar::start(s).expect("sidecar starts");
    let api = Api::new(sc.local_addr(), Some(TOKEN));
    (sc, api)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mcvr-recapi-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn ids(r: &Value) -> Vec<String> {
    r["recordings"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_owned())
        .collect()
}

fn list(api: &Api, query: &str) -> Value {
    let r = api.get(&format!("/v1/recordings{query}"));
    assert_eq!(r.status, 200, "{query}: {}", r.body);
    r.json()
}

#[test]
fn recordings_are_listed_filtered_shown_and_deleted() {
    let dir = tmp("main");
    let (sc, api) = start(35_000, &dir);

    // A one-to-one call, then a group call of A and B (a millisecond later at least).
    let caller = Client::new();
    let r = api.post(
        "/v1/calls",
        &create_body("rec-p", "sip:a@x", "sip:b@x", &caller.sdp("a", None)),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    std::thread::sleep(Duration::from_millis(20));
    let (a, b) = (Client::new(), Client::new());
    let r = api.post(
        "/v1/group-calls",
        &json!({
            "call_id": "rec-g",
            "group_id": "g",
            "members": [
                {"mcvideo_id": "A", "sdp_offer": a.sdp("A", None)},
                {"mcvideo_id": "B", "sdp_offer": b.sdp("B", None)},
            ],
        }),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(
        eventually(Duration::from_secs(5), || ids(&list(&api, "")).len() == 2),
        "two recordings: {}",
        list(&api, "")
    );

    // Newest first, each with its call, start time and whether it is being written.
    let all = list(&api, "");
    assert_eq!(all["more"], false);
    let recs = all["recordings"].as_array().unwrap();
    assert_eq!(recs[0]["call_id"], "rec-g");
    assert_eq!(recs[1]["call_id"], "rec-p");
    let (g, p) = (ids(&all)[0].clone(), ids(&all)[1].clone());
    assert!(g.starts_with("rec-g-") && p.starts_with("rec-p-"), "{all}");
    assert!(recs[0]["started_ms"].as_u64() >= recs[1]["started_ms"].as_u64());
    assert_eq!(recs[0]["writing"], true);
    assert!(recs[0]["started_at"].as_str().unwrap().ends_with('Z'));

    // Filters.
    assert_eq!(ids(&list(&api, "?call=rec-p")), [p.as_str()]);
    assert_eq!(ids(&list(&api, "?call=nobody")), Vec::<String>::new());
    // Both joins are in the group call's log once the writer has flushed them.
    assert!(
        eventually(Duration::from_secs(3), || {
            api.get(&format!("/v1/recordings/{g}")).json()["members"] == json!(["A", "B"])
        }),
        "{}",
        api.get(&format!("/v1/recordings/{g}")).body
    );
    assert_eq!(ids(&list(&api, "?member=A")), [g.as_str()]);
    assert_eq!(ids(&list(&api, "?member=B&call=rec-g")), [g.as_str()]);
    assert_eq!(
        ids(&list(&api, "?member=B&call=rec-p")),
        Vec::<String>::new()
    );
    assert_eq!(ids(&list(&api, "?member=Z")), Vec::<String>::new());
    let g_ms = recs[0]["started_ms"].as_u64().unwrap();
    let p_ms = recs[1]["started_ms"].as_u64().unwrap();
    assert_eq!(ids(&list(&api, &format!("?since={g_ms}"))), [g.as_str()]);
    assert_eq!(ids(&list(&api, &format!("?until={p_ms}"))), [p.as_str()]);
    assert_eq!(
        ids(&list(
            &api,
            "?since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00%2B01:00"
        ))
        .len(),
        2
    );
    assert_eq!(ids(&list(&api, "?since=2999-01-01T00:00:00Z")).len(), 0);
    let one = list(&api, "?limit=1");
    assert_eq!((ids(&one), &one["more"]), (vec![g.clone()], &json!(true)));

    // One recording: metadata and files.
    assert!(eventually(Duration::from_secs(3), || {
        api.get(&format!("/v1/recordings/{g}")).json()["media"] == true
    }));
    let r = api.get(&format!("/v1/recordings/{g}"));
    assert_eq!(r.status, 200, "{}", r.body);
    let m = r.json();
    assert_eq!(m["id"], g.as_str());
    assert_eq!(m["call_id"], "rec-g");
    assert_eq!(m["started_ms"], g_ms);
    assert_eq!(
        (&m["kind"], &m["media_security"]),
        (&json!("group"), &json!("end_to_end"))
    );
    assert_eq!(m["transmission_log"], true);
    assert_eq!(m["writing"], true);
    assert_eq!(m["members"], json!(["A", "B"]));
    let names: Vec<&str> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"media.json"), "{m}");
    assert!(names.contains(&"transmissions.jsonl"), "{m}");
    let sum: u64 = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(m["bytes"], sum);
    assert!(sum > 0);

    // Still being written: refused; once the call is over: removed.
    let r = api.delete(&format!("/v1/recordings/{g}"));
    assert_eq!(r.error().0, 409, "{}", r.body);
    assert_eq!(r.error().1, "recording_in_progress");
    assert!(dir.join(&g).is_dir());
    let r = api.delete("/v1/group-calls/rec-g");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        eventually(Duration::from_secs(5), || api
            .get(&format!("/v1/recordings/{g}"))
            .json()["writing"]
            == false),
        "the writer closes the released call's recording"
    );
    let r = api.delete(&format!("/v1/recordings/{g}"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"deleted": true, "id": g}));
    assert!(!dir.join(&g).exists());
    let r = api.get(&format!("/v1/recordings/{g}"));
    assert_eq!(r.error().0, 404);
    assert_eq!(r.error().1, "unknown_recording");
    assert_eq!(
        api.delete(&format!("/v1/recordings/{g}")).error().1,
        "unknown_recording"
    );
    assert_eq!(ids(&list(&api, "")), [p.as_str()]);

    // IDs that would leave the directory, or are not recording names: 400, nothing touched.
    let outside = tmp("outside-1");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("keep"), b"x").unwrap();
    let out_name = outside.file_name().unwrap().to_string_lossy().into_owned();
    for bad in [
        "..".to_owned(),
        "%2e%2e".to_owned(),
        format!("..%2F{out_name}"),
        format!("%2E%2E%2F{out_name}"),
        format!("{p}%2F..%2F..%2F{out_name}"),
        "..%2F..%2Fetc%2Fpasswd-1".to_owned(),
        "a..b-1".to_owned(),
        ".hidden-1".to_owned(),
        "no-digits".to_owned(),
        "sp%20ace-1".to_owned(),
    ] {
        for method in ["GET", "DELETE"] {
            let r = api.raw(method, &format!("/v1/recordings/{bad}"), &[], b"");
            assert_eq!(r.error().0, 400, "{method} {bad}: {}", r.body);
            assert_eq!(r.error().1, "bad_recording_id", "{method} {bad}");
        }
    }
    // A symbolic link in the directory, named as a recording, is not one.
    std::os::unix::fs::symlink(&outside, dir.join("link-1")).unwrap();
    assert_eq!(
        api.get("/v1/recordings/link-1").error().1,
        "unknown_recording"
    );
    assert_eq!(
        api.delete("/v1/recordings/link-1").error().1,
        "unknown_recording"
    );
    assert!(outside.join("keep").exists(), "nothing outside removed");
    assert_eq!(ids(&list(&api, "")), [p.as_str()], "the link is not listed");
    let r = api.get("/v1/recordings/nope-123");
    assert_eq!(
        (r.error().0, r.error().1),
        (404, "unknown_recording".into())
    );

    // Bad filters: 400 bad_filter.
    for q in [
        "?limit=0",
        "?limit=1001",
        "?since=tomorrow",
        "?until=2026-13-01T00:00:00Z",
        "?since=9&until=5",
        "?colour=red",
        "?call=a&call=b",
    ] {
        let r = api.get(&format!("/v1/recordings{q}"));
        assert_eq!(r.error().0, 400, "{q}: {}", r.body);
        assert_eq!(r.error().1, "bad_filter", "{q}");
    }

    // The token is required.
    let anon = Api::new(api.addr, None);
    for (method, path) in [
        ("GET", "/v1/recordings".to_owned()),
        ("GET", format!("/v1/recordings/{p}")),
        ("DELETE", format!("/v1/recordings/{p}")),
    ] {
        let r = anon.raw(method, &path, &[], b"");
        assert_eq!(r.error().0, 401, "{method} {path}");
        assert_eq!(r.error().1, "unauthorized");
    }
    assert!(dir.join(&p).is_dir(), "not removed without the token");

    sc.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&outside);
}

#[test]
fn without_recording_the_routes_say_so() {
    let sc = Sidecar::start(Settings::new(config(35_050))).expect("sidecar starts");
    let api = Api::new(sc.local_addr(), None);
    for (method, path) in [
        ("GET", "/v1/recordings"),
        ("GET", "/v1/recordings/x-1"),
        ("DELETE", "/v1/recordings/x-1"),
    ] {
        let r = api.raw(method, path, &[], b"");
        assert_eq!(r.error().0, 404, "{method} {path}: {}", r.body);
        assert_eq!(r.error().1, "recording_off", "{method} {path}");
    }
    sc.shutdown();
}
