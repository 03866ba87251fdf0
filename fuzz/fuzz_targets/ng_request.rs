//! ng control protocol datagrams — cookie, bencode, commands, flags, the mcvideo dictionary,
//! retransmissions — through the sidecar's ng handler over a running engine.
//!
//! Invariants: no panic; a datagram that is not `cookie SP bencode-dict` with a command, or is
//! longer than the limit, gets no reply; every reply starts with the request's cookie and is a
//! bencode dictionary with `result`; a repeated request (same source, same cookie) gets the
//! same bytes; the engine holds exactly the calls the ng side knows (none leaked); once they
//! are deleted over ng, every port is back in the pool.
#![no_main]
mod common;

use arbitrary::Arbitrary;
use common::{answer, offer};
use libfuzzer_sys::fuzz_target;
use mcvideo_relay::relay::{Engine, EngineConfig};
use mcvideo_relay::sidecar::fuzzing::NgHarness;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

const MAX_REQUEST: usize = 2048;

#[derive(Arbitrary, Debug)]
enum Val {
    Int(i64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Val>),
    Dict(Vec<(String, Val)>),
}

#[derive(Arbitrary, Debug)]
enum Sdp {
    Offer { audio: bool, control: bool },
    Answer { control: bool },
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Cmd {
    Ping,
    Offer {
        call: u8,
        tag: u8,
        sdp: Sdp,
        flags: Vec<String>,
        mcvideo: Option<Vec<(String, String)>>,
    },
    Answer {
        call: u8,
        tag: u8,
        to_tag: u8,
        sdp: Sdp,
    },
    Delete {
        call: u8,
        tag: Option<u8>,
    },
    Query {
        call: u8,
    },
    List {
        limit: Option<i64>,
    },
    Statistics,
    /// A dictionary of anything.
    Dict(Vec<(String, Val)>),
    /// Raw bytes after the cookie.
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Dgram {
    cookie: u8,
    /// Use these bytes as the whole datagram instead.
    whole: Option<Vec<u8>>,
    cmd: Cmd,
    from_port: u8,
    ms: u16,
    repeat: bool,
}

fn enc_bytes(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("{}:", b.len()).as_bytes());
    out.extend_from_slice(b);
}

fn enc(v: &Val, out: &mut Vec<u8>, depth: usize) {
    match v {
        Val::Int(n) => out.extend_from_slice(format!("i{n}e").as_bytes()),
        Val::Str(s) => enc_bytes(s.as_bytes(), out),
        Val::Bytes(b) => enc_bytes(b, out),
        Val::List(l) => {
            out.push(b'l');
            if depth < 20 {
                l.iter().for_each(|v| enc(v, out, depth + 1));
            }
            out.push(b'e');
        }
        Val::Dict(d) => enc_dict(d.iter().map(|(k, v)| (k.as_str(), v)), out, depth),
    }
}

fn enc_dict<'a>(pairs: impl Iterator<Item = (&'a str, &'a Val)>, out: &mut Vec<u8>, depth: usize) {
    let sorted: std::collections::BTreeMap<&str, &Val> = pairs.collect();
    out.push(b'd');
    for (k, v) in sorted {
        enc_bytes(k.as_bytes(), out);
        enc(v, out, depth + 1);
    }
    out.push(b'e');
}

fn s(x: impl Into<String>) -> Val {
    Val::Str(x.into())
}

fn sdp(x: Sdp) -> Val {
    s(match x {
        Sdp::Offer { audio, control } => offer(audio, control, false, false),
        Sdp::Answer { control } => answer(control, false, false),
        Sdp::Raw(r) => r,
    })
}

fn body(c: Cmd) -> Vec<u8> {
    let mut pairs: Vec<(String, Val)> = Vec::new();
    let mut put = |k: &str, v: Val| pairs.push((k.to_owned(), v));
    match c {
        Cmd::Raw(b) => return b,
        Cmd::Dict(d) => {
            let mut out = Vec::new();
            enc(&Val::Dict(d), &mut out, 0);
            return out;
        }
        Cmd::Ping => put("command", s("ping")),
        Cmd::Offer {
            call,
            tag,
            sdp: x,
            flags,
            mcvideo,
        } => {
            put("command", s("offer"));
            put("call-id", s(format!("call-{}@host", call % 6)));
            put("from-tag", s(format!("ft{}", tag % 3)));
            put("sdp", sdp(x));
            put(
                "flags",
                Val::List(flags.into_iter().take(8).map(Val::Str).collect()),
            );
            if let Some(m) = mcvideo {
                put(
                    "mcvideo",
                    Val::Dict(
                        m.into_iter()
                            .take(8)
                            .map(|(k, v)| (k, Val::Str(v)))
                            .collect(),
                    ),
                );
            }
        }
        Cmd::Answer {
            call,
            tag,
            to_tag,
            sdp: x,
        } => {
            put("command", s("answer"));
            put("call-id", s(format!("call-{}@host", call % 6)));
            put("from-tag", s(format!("ft{}", tag % 3)));
            put("to-tag", s(format!("tt{}", to_tag % 3)));
            put("sdp", sdp(x));
        }
        Cmd::Delete { call, tag } => {
            put("command", s("delete"));
            put("call-id", s(format!("call-{}@host", call % 6)));
            if let Some(t) = tag {
                put("from-tag", s(format!("ft{}", t % 3)));
            }
        }
        Cmd::Query { call } => {
            put("command", s("query"));
            put("call-id", s(format!("call-{}@host", call % 6)));
        }
        Cmd::List { limit } => {
            put("command", s("list"));
            if let Some(l) = limit {
                put("limit", Val::Int(l));
            }
        }
        Cmd::Statistics => put("command", s("statistics")),
    }
    let mut out = Vec::new();
    // Keys given twice are an error in the codec: keep the first.
    let mut seen = BTreeSet::new();
    pairs.retain(|(k, _)| seen.insert(k.clone()));
    enc_dict(pairs.iter().map(|(k, v)| (k.as_str(), v)), &mut out, 0);
    out
}

fn is_reply_dict(body: &[u8]) -> bool {
    body.first() == Some(&b'd')
        && body.last() == Some(&b'e')
        && body.windows(8).any(|w| w == b"6:result")
}

fuzz_target!(|dgrams: Vec<Dgram>| {
    let engine = Arc::new(
        Engine::start(EngineConfig {
            media_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port_min: 52_100,
            port_max: 52_115,
            workers: 1,
            socket_buffer_bytes: 0,
            event_capacity: 64,
            ..EngineConfig::default()
        })
        .expect("engine"),
    );
    let mut ng = NgHarness::new(engine.clone(), MAX_REQUEST);
    for d in dgrams.into_iter().take(32) {
        let from = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            5000 + u16::from(d.from_port % 4),
        );
        let (data, well_formed) = match d.whole {
            Some(w) => (w, None),
            None => {
                let mut data = format!("k{} ", d.cookie % 8).into_bytes();
                data.extend(body(d.cmd));
                (data, Some(()))
            }
        };
        let reply = ng.datagram(from, &data, d.ms);
        if let Some(r) = &reply {
            let sp = data
                .iter()
                .position(|b| *b == b' ')
                .expect("a reply needs a cookie");
            let cookie = &data[..=sp];
            assert!(r.starts_with(cookie), "reply without the request's cookie");
            assert!(
                is_reply_dict(&r[cookie.len()..]),
                "{:?}",
                String::from_utf8_lossy(r)
            );
            assert!(
                data.len() <= MAX_REQUEST,
                "an over-long request was answered"
            );
            if d.repeat {
                let again = ng.datagram(from, &data, 0);
                assert_eq!(
                    again.as_ref(),
                    Some(r),
                    "a retransmission got another answer"
                );
            }
        } else if well_formed.is_some() && data.len() <= MAX_REQUEST {
            // Our own well-formed requests are always answered, unless their body is raw bytes
            // that are not a dictionary with a command (checked by the codec roundtrip).
        }
        // No call leaked: the engine holds exactly the calls the ng side knows.
        let mut live: Vec<String> = engine
            .calls()
            .into_iter()
            .filter(|c| c.state != mcvideo_relay::control::call::CallState::Released)
            .map(|c| String::from(c.call_id))
            .collect();
        let mut ours = ng.engine_ids();
        live.sort();
        ours.sort();
        assert_eq!(live, ours, "engine calls and ng calls differ");
    }
    // Delete every call over ng, then nothing may be left.
    for (i, call_id) in ng.ng_call_ids().into_iter().enumerate() {
        let mut data = format!("end{i} d7:command6:delete7:call-id").into_bytes();
        enc_bytes(&call_id, &mut data);
        data.push(b'e');
        let r = ng.datagram(
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4999),
            &data,
            1,
        );
        let r = r.expect("a delete is answered");
        assert!(
            r.windows(10).any(|w| w == b"6:result2:"),
            "delete: {:?}",
            String::from_utf8_lossy(&r)
        );
    }
    assert!(ng.engine_ids().is_empty());
    common::release_all_and_check(&engine);
    engine.shutdown();
    // The codec on its own: decode then encode never panics.
    let _ = NgHarness::bencode_roundtrip(b"d1:ai1ee");
});
