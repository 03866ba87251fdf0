//! Named media interfaces as a Kamailio user drives them: ng's `direction` (the interface of
//! the message's sender, then the other side's) in offers and answers, unknown names and names
//! of the wrong address family refused, `replace origin` honoured; and the HTTP API's
//! `caller.interface` / `callee.interface` refused the same way.
//!
//! Three interfaces on loopback: two IPv4 networks ("access" on 127.0.0.1, "access-b" on
//! 127.0.0.2, each with its own port range) and an IPv6 one ("core" on ::1).
#![cfg(feature = "sidecar")]
#![allow(clippy::disallowed_methods)] // tests read the clock for their deadlines

mod ng_support;
mod sidecar_support;

use mcvideo_relay::sidecar::config::InterfaceConfig;
use mcvideo_relay::sidecar::{Config, Settings, Sidecar};
use ng_support::{d, s, Ng, B};
use sidecar_support::{rtp_packet, Api, Client};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::ops::RangeInclusive;
use std::time::Duration;

/// Port ranges: access, access-b, core (20 ports each from the base).
const BASE: u16 = 44_000;

fn range(i: u16) -> RangeInclusive<u16> {
    BASE + 20 * i..=BASE + 20 * i + 19
}

fn start() -> (Sidecar, Api, Ng) {
    let mut c = Config::embedded();
    c.api.listen = "127.0.0.1:0".parse().unwrap();
    c.ng.listen = "127.0.0.1:0".into();
    c.media.workers = 1;
    c.media.interfaces = [
        ("access", "127.0.0.1"),
        ("access-b", "127.0.0.2"),
        ("core", "::1"),
    ]
    .iter()
    .enumerate()
    .map(|(i, (name, ip))| InterfaceConfig {
        name: (*name).into(),
        ip: ip.parse().unwrap(),
        advertised: None,
        port_min: *range(i as u16).start(),
        port_max: *range(i as u16).end(),
    })
    .collect();
    assert!(c.validate().is_empty(), "{:?}", c.validate());
    let sc = Sidecar::start(Settings::new(c)).expect("sidecar starts");
    let api = Api::new(sc.local_addr(), None);
    let ng = Ng::new(sc.ng_addr().expect("ng listening"));
    (sc, api, ng)
}

/// A plain H.264 SDP naming `sock`, with an `o=` line of its own address.
fn sdp_of(name: &str, sock: &UdpSocket) -> String {
    let a = sock.local_addr().unwrap();
    let fam = if a.is_ipv4() { "IP4" } else { "IP6" };
    format!(
        "v=0\r\no={name} 5365 1 IN {fam} {ip}\r\ns=-\r\nc=IN {fam} {ip}\r\nt=0 0\r\n\
         m=video {port} RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=rtcp-mux\r\n",
        ip = a.ip(),
        port = a.port()
    )
}

fn v6_socket() -> UdpSocket {
    let s = UdpSocket::bind("[::1]:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s
}

fn names(l: &[&str]) -> B {
    B::L(l.iter().map(|n| s(n)).collect())
}

fn offer(call_id: &str, sdp: &str, extra: &[(&str, B)]) -> B {
    let mut pairs = vec![
        ("command", s("offer")),
        ("call-id", s(call_id)),
        ("from-tag", s("caller-tag")),
        ("sdp", s(sdp)),
    ];
    pairs.extend(extra.iter().cloned());
    d(&pairs)
}

fn answer(call_id: &str, sdp: &str, extra: &[(&str, B)]) -> B {
    let mut pairs = vec![
        ("command", s("answer")),
        ("call-id", s(call_id)),
        ("from-tag", s("caller-tag")),
        ("to-tag", s("callee-tag")),
        ("sdp", s(sdp)),
    ];
    pairs.extend(extra.iter().cloned());
    d(&pairs)
}

fn ok_sdp(r: &B) -> String {
    assert_eq!(r.str("result").as_deref(), Some("ok"), "{r:?}");
    r.str("sdp").unwrap()
}

fn refused(r: &B) -> String {
    assert_eq!(r.str("result").as_deref(), Some("error"), "{r:?}");
    r.str("error-reason").unwrap()
}

/// The relay's video address in an SDP it handed out (IPv4 or IPv6).
fn media_addr(sdp: &str) -> SocketAddr {
    let ip: IpAddr = sdp
        .lines()
        .find_map(|l| {
            l.strip_prefix("c=IN IP4 ")
                .or_else(|| l.strip_prefix("c=IN IP6 "))
        })
        .expect("c= line")
        .trim()
        .parse()
        .unwrap();
    let port = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=video "))
        .and_then(|m| m.split_whitespace().next())
        .expect("m=video line")
        .parse()
        .unwrap();
    SocketAddr::new(ip, port)
}

fn origin(sdp: &str) -> &str {
    sdp.lines().find(|l| l.starts_with("o=")).expect("o= line")
}

fn active_calls(sc: &Sidecar) -> usize {
    sc.engine().stats().active_calls
}

/// Finding 1: an unknown name in either place of `direction` (or `from-interface`) is refused,
/// naming it and why, and no call is set up.
#[test]
fn an_unknown_interface_name_is_refused_wherever_it_is() {
    let (sc, _api, ng) = start();
    let caller = Client::new();
    let sdp = caller.sdp("camera", None);
    for (n, (extra, label, name)) in [
        (
            ("direction", names(&["nowhere", "core"])),
            "direction[0]",
            "nowhere",
        ),
        (
            ("direction", names(&["access", "bogus"])),
            "direction[1]",
            "bogus",
        ),
        (
            ("from-interface", s("elsewhere")),
            "from-interface",
            "elsewhere",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let r = ng.request(&format!("u{n}"), &offer(&format!("u{n}"), &sdp, &[extra]));
        let why = refused(&r);
        assert!(
            why.contains(&format!("{label} \"{name}\""))
                && why.contains("no media interface of that name")
                && why.contains("\"access\", \"access-b\", \"core\""),
            "{why}"
        );
    }
    assert_eq!(active_calls(&sc), 0);
    assert_eq!(sc.engine().stats().ports_in_use, 0);
    sc.shutdown();
}

/// Finding 2: `direction[0]` chooses the caller's interface (the second IPv4 network here, not
/// the first of the family), `direction[1]` the callee's; media flows IPv4 -> IPv6 through
/// them. A first name of the other address family than the caller's SDP is refused.
#[test]
fn direction_0_puts_the_caller_on_the_named_interface() {
    let (sc, _api, ng) = start();
    let caller = Client::new();
    let callee = v6_socket();
    let dir = ("direction", names(&["access-b", "core"]));
    let to_callee = ok_sdp(&ng.request("b1", &offer("b", &caller.sdp("camera", None), &[dir])));
    let callee_side = media_addr(&to_callee);
    assert_eq!(
        callee_side.ip(),
        "::1".parse::<IpAddr>().unwrap(),
        "{to_callee}"
    );
    assert!(range(2).contains(&callee_side.port()), "{to_callee}");
    let to_caller = ok_sdp(&ng.request(
        "b2",
        &answer(
            "b",
            &sdp_of("viewer", &callee),
            &[("direction", names(&["core", "access-b"]))],
        ),
    ));
    let caller_side = media_addr(&to_caller);
    assert_eq!(
        caller_side.ip(),
        "127.0.0.2".parse::<IpAddr>().unwrap(),
        "the caller is on access-b: {to_caller}"
    );
    assert!(
        range(1).contains(&caller_side.port()),
        "the caller's port is in access-b's range: {to_caller}"
    );
    let mut got = 0;
    let mut buf = [0u8; 2048];
    for seq in 0..20u16 {
        caller
            .rtp
            .send_to(&rtp_packet(seq, 0x1234, 100), caller_side)
            .unwrap();
        if let Ok((n, from)) = callee.recv_from(&mut buf) {
            assert_eq!(&buf[..n], &rtp_packet(seq, 0x1234, 100)[..]);
            assert_eq!(from.ip(), "::1".parse::<IpAddr>().unwrap());
            got += 1;
        }
    }
    assert!(got >= 10, "the callee got {got} of 20 packets over IPv6");

    // ["access", "core"]: the first IPv4 network, in its own range.
    let c2 = Client::new();
    let to_callee = ok_sdp(&ng.request(
        "a1",
        &offer(
            "a",
            &c2.sdp("camera", None),
            &[("direction", names(&["access", "core"]))],
        ),
    ));
    assert!(range(2).contains(&media_addr(&to_callee).port()));
    let to_caller = ok_sdp(&ng.request("a2", &answer("a", &sdp_of("viewer", &v6_socket()), &[])));
    let a = media_addr(&to_caller);
    assert!(
        a.ip() == "127.0.0.1".parse::<IpAddr>().unwrap() && range(0).contains(&a.port()),
        "{to_caller}"
    );

    // ["core", "access"] with an IPv4 caller: refused, naming the name and the families.
    let why = refused(&ng.request(
        "w1",
        &offer(
            "w",
            &Client::new().sdp("camera", None),
            &[("direction", names(&["core", "access"]))],
        ),
    ));
    assert!(
        why.contains("direction[0] \"core\"") && why.contains("IPv6") && why.contains("IPv4"),
        "{why}"
    );
    assert_eq!(active_calls(&sc), 2);
    sc.shutdown();
}

/// Finding 3: an answer's `direction` is read: its first name is the callee's side (the
/// answer's sender), its second the caller's; unknown names, a family that does not fit the
/// answer, or a side other than the one the offer chose are refused, and the call is still
/// there to be answered properly.
#[test]
fn an_answers_direction_is_read_and_checked() {
    let (sc, _api, ng) = start();
    let caller = Client::new();
    let callee = v6_socket();
    ok_sdp(&ng.request(
        "o",
        &offer(
            "c",
            &caller.sdp("camera", None),
            &[("direction", names(&["access-b", "core"]))],
        ),
    ));
    let viewer = sdp_of("viewer", &callee);
    for (n, (dir, expect)) in [
        (["nowhere", "bogus"], "direction[0] \"nowhere\": the relay has no media interface"),
        (["core", "bogus"], "direction[1] \"bogus\": the relay has no media interface"),
        // The offer's order again: the callee's answer is IPv6, "access-b" is IPv4.
        (
            ["access-b", "core"],
            "direction[0] \"access-b\": it is an IPv4 interface and the SDP's media address is IPv6",
        ),
        // Right family, but the caller's leg is on access-b since the offer.
        (
            ["core", "access"],
            "direction[1] \"access\": the caller's leg is on interface \"access-b\"",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let why = refused(&ng.request(
            &format!("a{n}"),
            &answer("c", &viewer, &[("direction", names(&dir))]),
        ));
        assert!(why.contains(expect), "{dir:?}: {why}");
    }
    let to_caller = ok_sdp(&ng.request(
        "ok",
        &answer("c", &viewer, &[("direction", names(&["core", "access-b"]))]),
    ));
    assert_eq!(
        media_addr(&to_caller).ip(),
        "127.0.0.2".parse::<IpAddr>().unwrap()
    );
    assert_eq!(active_calls(&sc), 1);
    sc.shutdown();
}

/// Finding 4: `replace: ["origin"]` (and the `replace-origin` flag) makes the `o=` address and
/// address family the relay's on the side the SDP goes to; without it `o=` passes untouched.
/// `session-connection` and `sdp-version` are accepted (in effect anyway).
#[test]
fn replace_origin_puts_the_relays_address_in_o() {
    let (sc, _api, ng) = start();
    let caller = Client::new();
    let callee = v6_socket();
    let to_callee = ok_sdp(&ng.request(
        "r1",
        &offer(
            "r",
            &sdp_of("camera", &caller.rtp),
            &[
                ("direction", names(&["access-b", "core"])),
                (
                    "replace",
                    names(&["origin", "session-connection", "SDP version"]),
                ),
            ],
        ),
    ));
    assert_eq!(
        origin(&to_callee),
        "o=camera 5365 1 IN IP6 ::1",
        "{to_callee}"
    );
    assert!(!to_callee.contains("127.0.0.1"), "{to_callee}");
    let to_caller = ok_sdp(&ng.request(
        "r2",
        &answer(
            "r",
            &sdp_of("viewer", &callee),
            &[
                ("direction", names(&["core", "access-b"])),
                ("flags", names(&["trust-address", "replace-origin"])),
            ],
        ),
    ));
    assert_eq!(
        origin(&to_caller),
        "o=viewer 5365 1 IN IP4 127.0.0.2",
        "{to_caller}"
    );
    assert!(!to_caller.contains("::1"), "{to_caller}");

    // Without `replace origin`, o= is the sender's.
    let c2 = Client::new();
    let to_callee = ok_sdp(&ng.request(
        "k1",
        &offer(
            "k",
            &sdp_of("camera", &c2.rtp),
            &[("direction", names(&["access", "core"]))],
        ),
    ));
    assert_eq!(origin(&to_callee), "o=camera 5365 1 IN IP4 127.0.0.1");

    // An o= line the relay cannot rewrite: refused before any call is set up.
    let bad = sdp_of("camera", &Client::new().rtp).replace(" 5365 1 IN IP4", " 5365 IN IP4");
    let why = refused(&ng.request("x1", &offer("x", &bad, &[("replace", names(&["origin"]))])));
    assert!(
        why.contains("replace origin") && why.contains("line 2"),
        "{why}"
    );
    assert_eq!(active_calls(&sc), 2);
    sc.shutdown();
}

/// The HTTP API: `caller.interface` and `callee.interface` are checked as ng's `direction` is
/// (400 `bad_request` naming the name and why), `caller.interface` chooses the caller's, and
/// an answer of the other family than the callee's interface is a 400 naming both.
#[test]
fn the_apis_interfaces_are_refused_the_same_way_and_honoured() {
    let (sc, api, _ng) = start();
    let caller = Client::new();
    let body = |caller_if: Option<&str>, callee_if: Option<&str>| {
        let mut b = serde_json::json!({
            "caller": {"mcvideo_id": "sip:cam@x", "sdp_offer": caller.sdp("camera", None)},
            "callee": {"mcvideo_id": "sip:viewer@x"},
            "video_push": true,
        });
        if let Some(i) = caller_if {
            b["caller"]["interface"] = i.into();
        }
        if let Some(i) = callee_if {
            b["callee"]["interface"] = i.into();
        }
        b
    };
    for (caller_if, callee_if, expect) in [
        (Some("nowhere"), Some("core"), "caller interface \"nowhere\": the relay has no media interface of that name (it has \"access\", \"access-b\", \"core\")"),
        (Some("core"), None, "caller interface \"core\": it is an IPv6 interface and the SDP's media address is IPv4"),
        (Some("access"), Some("bogus"), "callee interface \"bogus\": the relay has no media interface of that name"),
    ] {
        let r = api.post("/v1/calls", &body(caller_if, callee_if));
        let (status, code, message) = r.error();
        assert_eq!((status, code.as_str()), (400, "bad_request"), "{message}");
        assert!(message.contains(expect), "{message}");
    }
    assert_eq!(active_calls(&sc), 0);
    let r = api.post("/v1/calls", &body(Some("access-b"), Some("core")));
    assert_eq!(r.status, 201, "{:?}", r.json());
    let id = r.json()["call_id"].as_str().unwrap().to_owned();
    assert_eq!(
        media_addr(r.json()["sdp_offer"].as_str().unwrap()).ip(),
        "::1".parse::<IpAddr>().unwrap()
    );
    // The callee's leg is on core: an IPv4 answer is refused (400), naming both families, and
    // the call can still be answered.
    let wrong = api.post(
        &format!("/v1/calls/{id}/answer"),
        &serde_json::json!({"sdp_answer": Client::new().sdp("viewer", None)}),
    );
    let (status, code, message) = wrong.error();
    assert_eq!(
        (status, code.as_str()),
        (400, "no_acceptable_media"),
        "{message}"
    );
    assert!(
        message.contains("the callee's address is IPv4") && message.contains("IPv6 interface"),
        "{message}"
    );
    let a = api.post(
        &format!("/v1/calls/{id}/answer"),
        &serde_json::json!({"sdp_answer": sdp_of("viewer", &v6_socket())}),
    );
    assert_eq!(a.status, 200, "{:?}", a.json());
    let to_caller = media_addr(a.json()["sdp_answer"].as_str().unwrap());
    assert!(
        to_caller.ip() == "127.0.0.2".parse::<IpAddr>().unwrap()
            && range(1).contains(&to_caller.port()),
        "{to_caller}"
    );
    sc.shutdown();
}

/// What is ignored is logged once: `force-increment-sdp-ver` and an unknown `replace` name
/// (in the `replace` list or as a `replace-*` flag), however many offers carry them; the
/// offers themselves succeed.
#[test]
fn ignored_replace_names_are_logged_once() {
    let ng_port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mcvideo-relay"));
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0", "--ports", "44080-44099"])
        .args(["--log-format", "text"])
        .args(["--ng-listen", &format!("127.0.0.1:{ng_port}")])
        .env_remove("RUST_LOG");
    let mut p = sidecar_support::ServeProcess::start(cmd, "serve");
    let ng = Ng::new(SocketAddr::from(([127, 0, 0, 1], ng_port)));
    let mut engine_ids = Vec::new();
    let clients: Vec<Client> = (0..3).map(|_| Client::new()).collect();
    for (n, c) in clients.iter().enumerate() {
        let id = format!("log{n}");
        ok_sdp(&ng.request(
            &id,
            &offer(
                &id,
                &c.sdp("camera", None),
                &[
                    ("replace", names(&["force-increment-sdp-ver", "zz-future"])),
                    ("flags", names(&["replace-zz-future", "replace-origin"])),
                ],
            ),
        ));
        let q = ng.request(
            &format!("q{n}"),
            &d(&[("command", s("query")), ("call-id", s(&id))]),
        );
        engine_ids.push(q.get("mcvideo").unwrap().str("call-id").unwrap());
    }
    // The last call's "call offered" line comes after anything its offer logged.
    let last = engine_ids.last().unwrap().clone();
    assert!(
        sidecar_support::eventually(Duration::from_secs(5), || p.log().contains(&last)),
        "{}",
        p.log()
    );
    let log = p.log();
    for name in ["force-increment-sdp-ver", "zz-future"] {
        assert_eq!(
            log.lines().filter(|l| l.contains(name)).count(),
            1,
            "{name} logged once: {log}"
        );
    }
    let _ = p.child.kill();
    let _ = p.child.wait();
}
