//! Control API requests — method, path, bearer token, headers and body — through the sidecar's
//! real router (auth, body limit, JSON parsing, validation, handlers) over a running engine:
//! one-to-one calls, group calls and their members, UEs, drain, reload, recordings, the
//! cluster view, health and metrics.
//!
//! Invariants: no panic; no 5xx but 503 (draining, no ports, too many calls); every error is
//! JSON `{"error": {"code", "message"}}`; nothing but `/healthz` and `/console` (the page holds
//! no secret) answers without the right token; an error never echoes the SDES or tc_key
//! secrets of the request; a created call's answer is JSON with its `call_id`; once every call
//! is released, every port is back in the pool.
#![no_main]
mod common;

use arbitrary::Arbitrary;
use common::{answer, offer, CALLEE_KEY, CALLER_KEY};
use libfuzzer_sys::fuzz_target;
use mcvideo_relay::relay::{Engine, EngineConfig};
use mcvideo_relay::sidecar::fuzzing::{ApiHarness, TOKEN};
use serde_json::{json, Map, Value};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

/// A tc_key that must never come back in an error (nor may the SDES keys of `common`).
const TC_KEY: &str = "q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNF";
const MAX_BODY: usize = 4096;

#[derive(Arbitrary, Debug)]
enum Method {
    Get,
    Post,
    Put,
    Delete,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Id {
    Known(u8),
    Named(u8),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Path {
    Calls,
    Call(Id),
    Answer(Id),
    Reject(Id),
    Ues(u8),
    Ue(u8, u8),
    Drain,
    Health,
    Metrics,
    GroupCalls,
    GroupCall(Id),
    GroupMembers(Id),
    GroupMember(Id, u8),
    Recordings(Option<String>),
    Reload,
    Cluster,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Auth {
    Good,
    Missing,
    Wrong(String),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Word {
    Good(u8),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Sdp {
    Offer {
        audio: bool,
        control: bool,
        per_leg: bool,
        ssrc: bool,
    },
    Answer {
        control: bool,
        reject_audio: bool,
        per_leg: bool,
    },
    /// A good one with bytes spliced in.
    Spliced {
        offer: bool,
        at: u16,
        cut: u8,
        insert: String,
    },
    Raw(String),
}

#[derive(Arbitrary, Debug)]
struct TcKey {
    suite: Word,
    key: Word,
}

#[derive(Arbitrary, Debug)]
enum Body {
    Empty,
    Raw(Vec<u8>),
    Create {
        call_id: Option<Id>,
        caller: Word,
        callee: Word,
        sdp: Sdp,
        video_push: Option<bool>,
        commencement: Option<Word>,
        security: Option<Word>,
        tc_key: Option<TcKey>,
        extra: Option<(String, u32)>,
    },
    Answer {
        sdp: Sdp,
        tc_key: Option<TcKey>,
        extra: Option<(String, u32)>,
    },
    Ue {
        designated: Option<bool>,
        commencement: Option<Word>,
    },
    Drain(Option<bool>),
    /// Valid JSON of the wrong shape.
    Json(Vec<(String, u8)>),
    Group {
        call_id: Option<Id>,
        group_id: Word,
        security: Option<Word>,
        max_transmitters: Option<i16>,
        reception: Option<Word>,
        members: Vec<Member>,
        record: Option<bool>,
        extra: Option<(String, u32)>,
    },
    Member(Member),
}

/// A group member, as `POST /v1/group-calls` lists them and `.../members` adds one.
#[derive(Arbitrary, Debug)]
struct Member {
    user: u8,
    sdp: Sdp,
    priority: Option<i16>,
    receive_only: Option<bool>,
    tc_key: Option<TcKey>,
}

#[derive(Arbitrary, Debug)]
struct Req {
    method: Method,
    path: Path,
    auth: Auth,
    json_type: bool,
    declared_length: Option<u32>,
    body: Body,
}

fn sdp(s: Sdp) -> String {
    match s {
        Sdp::Offer {
            audio,
            control,
            per_leg,
            ssrc,
        } => offer(audio, control, per_leg, ssrc),
        Sdp::Answer {
            control,
            reject_audio,
            per_leg,
        } => answer(control, reject_audio, per_leg),
        Sdp::Spliced {
            offer: o,
            at,
            cut,
            insert,
        } => {
            let mut s = if o {
                offer(true, true, true, true)
            } else {
                answer(true, false, true)
            };
            let at = usize::from(at) % (s.len() + 1);
            let end = (at + usize::from(cut)).min(s.len());
            s.replace_range(at..end, &insert);
            s
        }
        Sdp::Raw(s) => s,
    }
}

fn word(w: Word, good: &[&str]) -> Value {
    match w {
        Word::Good(i) => Value::from(good[usize::from(i) % good.len()]),
        Word::Raw(s) => Value::from(s),
    }
}

fn tc_key(k: TcKey) -> Value {
    json!({
        "suite": word(k.suite, &["AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80", "aead_aes_128_gcm"]),
        "key": word(k.key, &[TC_KEY, CALLER_KEY, "not base64!", ""]),
    })
}

fn id(i: Id, known: &[String]) -> String {
    match i {
        Id::Known(n) if !known.is_empty() => known[usize::from(n) % known.len()].clone(),
        Id::Known(n) | Id::Named(n) => format!("c{}", n % 4),
        Id::Raw(s) => s,
    }
}

fn users(i: u8) -> &'static str {
    [
        "sip:alice@example.org",
        "sip:bob@example.org",
        "tel:+15551234",
        "x",
    ][usize::from(i % 4)]
}

fn encode(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:@+".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn member(m: Member) -> Value {
    let mut v = json!({ "mcvideo_id": users(m.user), "sdp_offer": sdp(m.sdp) });
    let o = v.as_object_mut().expect("object");
    if let Some(p) = m.priority {
        o.insert("priority".into(), Value::from(p));
    }
    if let Some(r) = m.receive_only {
        o.insert("receive_only".into(), Value::from(r));
    }
    if let Some(k) = m.tc_key {
        o.insert("tc_key".into(), tc_key(k));
    }
    v
}

fn body(b: Body, known: &[String]) -> Vec<u8> {
    let with_extra = |mut v: Value, extra: Option<(String, u32)>| {
        if let (Some((k, n)), Some(m)) = (extra, v.as_object_mut()) {
            m.insert(k, Value::from(n));
        }
        v.to_string().into_bytes()
    };
    match b {
        Body::Empty => Vec::new(),
        Body::Raw(b) => b,
        Body::Create {
            call_id,
            caller,
            callee,
            sdp: s,
            video_push,
            commencement,
            security,
            tc_key: k,
            extra,
        } => {
            let mut caller_obj = json!({
                "mcvideo_id": word(caller, &["sip:alice@example.org", ""]),
                "sdp_offer": sdp(s),
            });
            if let (Some(k), Some(m)) = (k, caller_obj.as_object_mut()) {
                m.insert("tc_key".into(), tc_key(k));
            }
            let mut v = json!({
                "caller": caller_obj,
                "callee": {"mcvideo_id": word(callee, &["sip:bob@example.org", "sip:alice@example.org", "tel:+15551234"])},
            });
            let m = v.as_object_mut().expect("object");
            if let Some(i) = call_id {
                m.insert("call_id".into(), Value::from(id(i, known)));
            }
            if let Some(p) = video_push {
                m.insert("video_push".into(), Value::from(p));
            }
            if let Some(c) = commencement {
                m.insert(
                    "commencement_mode".into(),
                    word(c, &["automatic", "manual"]),
                );
            }
            if let Some(s) = security {
                m.insert("media_security".into(), word(s, &["end_to_end", "per_leg"]));
            }
            with_extra(v, extra)
        }
        Body::Answer {
            sdp: s,
            tc_key: k,
            extra,
        } => {
            let mut v = json!({ "sdp_answer": sdp(s) });
            if let (Some(k), Some(m)) = (k, v.as_object_mut()) {
                m.insert("tc_key".into(), tc_key(k));
            }
            with_extra(v, extra)
        }
        Body::Ue {
            designated,
            commencement,
        } => {
            let mut m = Map::new();
            if let Some(d) = designated {
                m.insert("designated_for_private_calls".into(), Value::from(d));
            }
            if let Some(c) = commencement {
                m.insert(
                    "commencement_mode".into(),
                    word(c, &["automatic", "manual"]),
                );
            }
            Value::Object(m).to_string().into_bytes()
        }
        Body::Drain(d) => match d {
            Some(d) => json!({ "draining": d }).to_string().into_bytes(),
            None => b"{}".to_vec(),
        },
        Body::Group {
            call_id,
            group_id,
            security,
            max_transmitters,
            reception,
            members,
            record,
            extra,
        } => {
            let mut v = json!({
                "group_id": word(group_id, &["sip:group@example.org", ""]),
                "members": members.into_iter().take(6).map(member).collect::<Vec<_>>(),
            });
            let m = v.as_object_mut().expect("object");
            if let Some(i) = call_id {
                m.insert("call_id".into(), Value::from(id(i, known)));
            }
            if let Some(s) = security {
                m.insert("media_security".into(), word(s, &["end_to_end", "per_leg"]));
            }
            if let Some(n) = max_transmitters {
                m.insert("max_transmitters".into(), Value::from(n));
            }
            if let Some(r) = reception {
                m.insert("reception_mode".into(), word(r, &["automatic", "manual"]));
            }
            if let Some(r) = record {
                m.insert("record".into(), Value::from(r));
            }
            with_extra(v, extra)
        }
        Body::Member(m) => member(m).to_string().into_bytes(),
        Body::Json(fields) => {
            let m: Map<String, Value> = fields
                .into_iter()
                .map(|(k, v)| (k, Value::from(v)))
                .collect();
            Value::Object(m).to_string().into_bytes()
        }
    }
}

fuzz_target!(|reqs: Vec<Req>| {
    let engine = Arc::new(
        Engine::start(EngineConfig {
            media_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port_min: 52_000,
            port_max: 52_015,
            workers: 1,
            socket_buffer_bytes: 0,
            event_capacity: 64,
            ..EngineConfig::default()
        })
        .expect("engine"),
    );
    let mut api = ApiHarness::new(engine.clone(), MAX_BODY);
    let mut known: Vec<String> = Vec::new();
    for r in reqs.into_iter().take(32) {
        let method = match r.method {
            Method::Get => "GET".to_owned(),
            Method::Post => "POST".to_owned(),
            Method::Put => "PUT".to_owned(),
            Method::Delete => "DELETE".to_owned(),
            Method::Raw(s) => s,
        };
        let uri = match r.path {
            Path::Calls => "/v1/calls".to_owned(),
            Path::Call(i) => format!("/v1/calls/{}", encode(&id(i, &known))),
            Path::Answer(i) => format!("/v1/calls/{}/answer", encode(&id(i, &known))),
            Path::Reject(i) => format!("/v1/calls/{}/reject", encode(&id(i, &known))),
            Path::Ues(u) => format!("/v1/users/{}/ues", encode(users(u))),
            Path::Ue(u, e) => format!("/v1/users/{}/ues/ue{}", encode(users(u)), e % 5),
            Path::Drain => "/v1/admin/drain".to_owned(),
            Path::Health => "/healthz".to_owned(),
            Path::Metrics => "/metrics".to_owned(),
            Path::GroupCalls => "/v1/group-calls".to_owned(),
            Path::GroupCall(i) => format!("/v1/group-calls/{}", encode(&id(i, &known))),
            Path::GroupMembers(i) => {
                format!("/v1/group-calls/{}/members", encode(&id(i, &known)))
            }
            Path::GroupMember(i, u) => format!(
                "/v1/group-calls/{}/members/{}",
                encode(&id(i, &known)),
                encode(users(u))
            ),
            Path::Recordings(q) => match q {
                Some(q) => format!("/v1/recordings?{q}"),
                None => "/v1/recordings".to_owned(),
            },
            Path::Reload => "/v1/admin/reload".to_owned(),
            Path::Cluster => "/v1/cluster".to_owned(),
            Path::Raw(s) => s,
        };
        let mut headers: Vec<(&str, Vec<u8>)> = Vec::new();
        let authorized = match &r.auth {
            Auth::Good => true,
            Auth::Missing => false,
            Auth::Wrong(t) => t.trim() == TOKEN,
            Auth::Raw(v) => std::str::from_utf8(v)
                .ok()
                .filter(|v| v.bytes().all(|b| b == b'\t' || (32..127).contains(&b)))
                .and_then(|v| v.split_once(' '))
                .is_some_and(|(scheme, t)| {
                    scheme.eq_ignore_ascii_case("bearer") && t.trim() == TOKEN
                }),
        };
        match r.auth {
            Auth::Good => headers.push(("authorization", format!("Bearer {TOKEN}").into_bytes())),
            Auth::Missing => {}
            Auth::Wrong(t) => headers.push(("authorization", format!("Bearer {t}").into_bytes())),
            Auth::Raw(v) => headers.push(("authorization", v)),
        }
        if r.json_type {
            headers.push(("content-type", b"application/json".to_vec()));
        }
        let body = body(r.body, &known);
        if let Some(n) = r.declared_length {
            headers.push(("content-length", n.to_string().into_bytes()));
        }
        let Some(resp) = api.request(&method, &uri, &headers, body) else {
            continue;
        };
        let s = resp.status;
        assert!(
            s < 500 || s == 503,
            "{method} {uri}: status {s}: {:?}",
            String::from_utf8_lossy(&resp.body)
        );
        let path = uri.split('?').next().unwrap_or("");
        // The two public routes: the health check, and the console page, which holds no
        // secret (the token is typed into it).
        if !authorized && path != "/healthz" && path != "/console" && uri.starts_with('/') {
            assert_eq!(s, 401, "{method} {uri} without the token");
        }
        // HEAD answers carry no body (HTTP); the status and headers still count.
        if s >= 400 && method != "HEAD" {
            assert_eq!(
                resp.content_type.as_deref(),
                Some("application/json"),
                "{s} is JSON"
            );
            let v: Value = serde_json::from_slice(&resp.body).expect("error body is JSON");
            assert!(
                v["error"]["code"].is_string() && v["error"]["message"].is_string(),
                "{v}"
            );
            let text = String::from_utf8_lossy(&resp.body);
            for secret in [CALLER_KEY, CALLEE_KEY, TC_KEY] {
                assert!(!text.contains(secret), "an error echoed a key: {text}");
            }
        }
        if s == 201 && method == "POST" && path == "/v1/group-calls" {
            let v: Value = serde_json::from_slice(&resp.body).expect("created group is JSON");
            let id = v["call_id"].as_str().expect("call_id").to_owned();
            assert!(v["members"].is_array(), "{v}");
            if known.len() < 8 {
                known.push(id);
            }
        }
        if s == 201 && method == "POST" && path == "/v1/calls" {
            let v: Value = serde_json::from_slice(&resp.body).expect("created call is JSON");
            let id = v["call_id"].as_str().expect("call_id").to_owned();
            assert!(v["sdp_offer"].is_string());
            if known.len() < 8 {
                known.push(id);
            }
        }
    }
    common::release_all_and_check(&engine);
    drop(api);
    engine.shutdown();
});
