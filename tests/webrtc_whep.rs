//! A browser watches a live call: `serve` with WHEP (feature `webrtc`), Debian's Chromium
//! headless on the relay's own console page (docs/webrtc.md), ffmpeg as the transmitter.
#![cfg(feature = "webrtc")]
#![allow(missing_docs, clippy::unwrap_used)]

mod common;
mod sidecar_support;

use common::{browser, ffmpeg};
use serde_json::{json, Value};
use sidecar_support::{relay_video_addr, Api, KilledOnDrop, ServeProcess};
use std::process::Command;
use std::time::Duration;

const TOKEN: &str = "whep-test-token";

/// A relay this test started, killed when the test ends (however it ends).
type Relay = KilledOnDrop;

/// `serve` with a token, its media on ports from `port_min`.
fn serve(port_min: u16) -> Relay {
    let dir = ffmpeg::tmpdir(&format!("whep-{port_min}"));
    let cfg = dir.join("relay.toml");
    std::fs::write(
        &cfg,
        format!(
            "[api]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"info\"\n\
             [media]\nworkers = 1\nport_min = {port_min}\nport_max = {}\n",
            port_min + 39
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcvideo-relay"));
    cmd.arg("serve")
        .arg("--config")
        .arg(&cfg)
        .env("MCVIDEO_RELAY_API_TOKEN", TOKEN)
        .env_remove("RUST_LOG");
    KilledOnDrop(ServeProcess::start(cmd, "serve"))
}

/// A push from an ffmpeg caller on `caller_port` to a callee that only listens, in
/// `security`: the relay's address the caller sends to, and the callee's sockets (held).
fn push(
    api: &Api,
    id: &str,
    caller_port: u16,
    security: &str,
) -> (
    std::net::SocketAddr,
    (std::net::UdpSocket, std::net::UdpSocket),
) {
    let created = api.post(
        "/v1/calls",
        &json!({
            "call_id": id,
            "caller": {"mcvideo_id": "sip:camera@mcx.example",
                       "sdp_offer": ffmpeg::video_sdp("camera", caller_port, ffmpeg::SENDER_KEY, Some(ffmpeg::SSRC))},
            "callee": {"mcvideo_id": "sip:unit@mcx.example"},
            "video_push": true,
            "media_security": security,
        }),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let (recv_port, a, b) = ffmpeg::port_pair();
    let answered = api.post(
        &format!("/v1/calls/{id}/answer"),
        &json!({"sdp_answer": ffmpeg::video_sdp("unit", recv_port, ffmpeg::SENDER_KEY, None)}),
    );
    assert_eq!(answered.status, 200, "{}", answered.body);
    let caller_answer = answered.json()["sdp_answer"].as_str().unwrap().to_owned();
    (relay_video_addr(&caller_answer), (a, b))
}

/// Waits for an ffmpeg receiver (`who`) to exit cleanly and checks it decoded at least 50
/// frames of the browser's camera from `out`.
fn assert_receiver_decoded(receiver: std::process::Child, out: &std::path::Path, who: &str) {
    let got = receiver.wait_with_output().unwrap();
    assert!(
        got.status.success(),
        "receiver: {}",
        String::from_utf8_lossy(&got.stderr)
    );
    let frames = ffmpeg::frames(out);
    eprintln!("{who} decoded {frames} frames of the browser's camera");
    assert!(
        frames >= 50,
        "{who} decodes the browser's camera: {frames} frames"
    );
}

fn console_url(api: &Api, call: &str) -> String {
    format!(
        "http://{}/console#token={TOKEN}&call={call}&debug=1",
        api.addr
    )
}

#[test]
fn a_browser_watches_an_ffmpeg_push_through_whep_and_decodes_its_frames() {
    ffmpeg::require("ffmpeg");
    browser::require();
    let relay = serve(35_200);
    let api = Api::new(relay.addr, Some(TOKEN));
    let (relay_addr, _callee) = push(&api, "whep-push", ffmpeg::port_pair().0, "per_leg");

    // The offer has audio besides video, as most WHEP players' do.
    let mut b = browser::Browser::open(&(console_url(&api, "whep-push") + "&audio=1"));
    let up = b.wait_for("MCV-STATS ", Duration::from_secs(30), |v| {
        v["ice"] == "connected" || v["ice"] == "completed"
    });
    assert!(
        up.is_some(),
        "the browser connects; its last lines:\n{}\nrelay log:\n{}",
        b.tail(),
        relay.log()
    );
    let viewers = api.get("/v1/calls/whep-push/whep").json();
    assert_eq!(viewers["viewers"][0]["connected"], true, "{viewers}");
    // The console lists the call with who holds the grant.
    let listed = b.wait_for("MCV-CALLS ", Duration::from_secs(5), |v| {
        v.as_array().is_some_and(|calls| {
            calls
                .iter()
                .any(|c| c["call"] == "whep-push" && c["transmitting"] == "sip:camera@mcx.example")
        })
    });
    assert!(
        listed.is_some(),
        "the console lists the call and its transmitter:\n{}",
        b.tail()
    );

    // A screenshot of the console with the live call (saved as a test artifact) while it runs.
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-live-call.png");
    let _ = std::fs::remove_file(&shot);
    let console = format!("http://{}/console#token={TOKEN}", api.addr);
    let shooter = {
        let shot = shot.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(2500));
            browser::screenshot(&console, &shot, Duration::from_secs(3));
        })
    };
    let sent = ffmpeg::send(relay_addr);
    ffmpeg::assert_exited_ok("ffmpeg sender", &sent);
    shooter.join().expect("the screenshot is taken");
    let size = std::fs::metadata(&shot).unwrap().len();
    assert!(size > 10_000, "a real picture of the console: {size} bytes");
    eprintln!("console screenshot: {}", shot.display());
    // The decoder has every frame shortly after the last one was sent.
    let mut last = Value::Null;
    let done = b.wait_for("MCV-STATS ", Duration::from_secs(10), |v| {
        last = v.clone();
        v["framesDecoded"].as_u64().unwrap_or(0) >= 120
    });
    assert!(
        done.is_some(),
        "the browser decodes at least 120 of {} frames: last stats {last}\n{}\nrelay log:\n{}",
        ffmpeg::FRAMES,
        b.tail(),
        relay.log()
    );
    let v = b
        .last_within("MCV-STATS ", Duration::from_secs(2))
        .or(done)
        .unwrap();
    eprintln!("the browser's stats after the push: {v}");
    assert!(
        v["width"].as_u64() == Some(640),
        "the picture is the sender's 640x360: {v}"
    );

    // What the relay says of it.
    let viewers = api.get("/v1/calls/whep-push/whep").json();
    eprintln!("the viewer as the relay shows it: {viewers}");
    let packets = viewers["viewers"][0]["packets"].as_u64().unwrap();
    assert!(
        viewers["viewers"][0]["latency_p99_us"].is_u64(),
        "{viewers}"
    );
    assert!(
        packets > 100,
        "the viewer was written the packets: {viewers}"
    );
    let call = api.get("/v1/calls/whep-push").json();
    assert_eq!(call["media_security"], "per_leg");

    // DELETE ends the viewer.
    let loc = format!(
        "/v1/calls/whep-push/whep/{}",
        viewers["viewers"][0]["id"].as_str().unwrap()
    );
    assert_eq!(api.delete(&loc).status, 204);
    assert_eq!(api.delete(&loc).status, 404, "a second DELETE finds none");
    let viewers = api.get("/v1/calls/whep-push/whep").json();
    assert_eq!(viewers["viewers"].as_array().unwrap().len(), 0, "{viewers}");
}

#[test]
fn an_end_to_end_call_is_not_watched_and_whep_needs_the_token() {
    browser::require();
    let relay = serve(35_260);
    let api = Api::new(relay.addr, Some(TOKEN));
    let _call = push(&api, "whep-e2e", ffmpeg::port_pair().0, "end_to_end");

    // The browser's offer is refused with the reason.
    let mut b = browser::Browser::open(&console_url(&api, "whep-e2e"));
    let refused = b.wait_for("MCV-REFUSED ", Duration::from_secs(30), |_| true);
    let refused = refused.unwrap_or_else(|| panic!("refused; browser said:\n{}", b.tail()));
    assert_eq!(refused["status"], 409, "{refused}");
    let msg = refused["message"].as_str().unwrap();
    assert!(
        msg.contains("not_watchable") && msg.contains("end_to_end"),
        "{msg}"
    );

    // No token: 401, and no viewer.
    let anon = Api::new(relay.addr, None);
    let r = anon.raw(
        "POST",
        "/v1/calls/whep-e2e/whep",
        &[("Content-Type", "application/sdp")],
        b"v=0\r\n",
    );
    assert_eq!(r.status, 401, "{}", r.body);
    // The console page itself needs none (it holds no secret).
    let page = anon.get("/console");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("mcvideo-relay console"));
    // A body that is not SDP is refused as such.
    let post = |path: &str, ctype: &str, body: &[u8]| {
        api.raw("POST", path, &[("Content-Type", ctype)], body)
    };
    let r = post("/v1/calls/whep-e2e/whep", "application/json", b"{}");
    assert_eq!(r.status, 415, "{}", r.body);
    let r = post("/v1/calls/whep-e2e/whep", "application/sdp", b"not sdp");
    assert_eq!(r.status, 400, "{}", r.body);
    let r = post("/v1/calls/nope/whep", "application/sdp", b"not sdp");
    assert!(matches!(r.status, 400 | 404), "{}", r.body);

    // WHIP: where to transmit must be said, and the group must exist.
    let sdp = [("Content-Type", "application/sdp")];
    let r = api.raw("POST", "/v1/whip", &sdp, b"v=0\r\n");
    assert_eq!(
        (r.status, r.error().1.as_str()),
        (400, "bad_request"),
        "{}",
        r.body
    );
    let r = api.raw("POST", "/v1/whip?callee=sip:u@x", &sdp, b"not sdp");
    assert_eq!(r.status, 400, "{}", r.body);
    let r = anon.raw("POST", "/v1/whip?callee=sip:u@x", &sdp, b"v=0\r\n");
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(api.get("/v1/whip/p999").status, 404);
    assert_eq!(
        api.raw("POST", "/v1/whip/p999/request", &[], b"").status,
        404
    );
}

/// A group member's SDP: `video_sdp` with the MCVideo control channel on `ctl_port`.
fn member_sdp(name: &str, port: u16, ssrc: u32, ctl_port: u16) -> String {
    format!(
        "{}m=application {ctl_port} udp MCVideo\r\na=fmtp:MCVideo mc_queueing\r\n",
        ffmpeg::video_sdp(name, port, ffmpeg::SENDER_KEY, Some(ssrc))
    )
}

/// Sends transmission control message `kind` (SSRC `ssrc`) from `ctl` to `to` and waits for
/// one of `want` in reply.
fn control(
    ctl: &std::net::UdpSocket,
    to: std::net::SocketAddr,
    kind: mcvideo_relay::wire::tc::MessageKind,
    ssrc: u32,
    want: mcvideo_relay::wire::tc::MessageKind,
) {
    use mcvideo_relay::wire::tc::{self, EmitOptions, TcMessage};
    let msg = TcMessage::new(kind, ssrc)
        .to_vec(&EmitOptions::default())
        .unwrap();
    ctl.send_to(&msg, to).unwrap();
    ctl.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 1500];
    let got = (0..25).any(|_| {
        ctl.recv_from(&mut buf)
            .is_ok_and(|(n, _)| tc::messages(&buf[..n]).flatten().any(|m| m.kind == want))
    });
    assert!(got, "{want:?} in reply to {kind:?}");
}

#[test]
fn a_browser_watching_a_group_sees_the_next_transmitter_on_the_same_track() {
    use common::net::RelayAddrs;
    use mcvideo_relay::wire::tc::MessageKind as K;
    ffmpeg::require("ffmpeg");
    browser::require();
    let relay = serve(35_320);
    let api = Api::new(relay.addr, Some(TOKEN));
    const SSRCS: [u32; 2] = [0x0A0A_0001, 0x0B0B_0002];
    let mut ctls = Vec::new();
    let mut members = Vec::new();
    let mut held = Vec::new();
    for (i, name) in ["alpha", "bravo"].iter().enumerate() {
        let ctl = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (port, a, b) = ffmpeg::port_pair();
        held.push((a, b));
        members.push(json!({
            "mcvideo_id": format!("sip:{name}@mcx.example"),
            "sdp_offer": member_sdp(name, port, SSRCS[i], ctl.local_addr().unwrap().port()),
        }));
        ctls.push(ctl);
    }
    let created = api.post(
        "/v1/group-calls",
        &json!({
            "call_id": "whep-group",
            "group_id": "sip:dispatch@mcx.example",
            "media_security": "per_leg",
            "members": members,
        }),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let created = created.json();
    let addrs: Vec<RelayAddrs> = (0..2)
        .map(|i| RelayAddrs::from_sdp(created["members"][i]["sdp_answer"].as_str().unwrap()))
        .collect();

    let mut b = browser::Browser::open(&console_url(&api, "whep-group"));
    let up = b.wait_for("MCV-STATS ", Duration::from_secs(30), |v| {
        v["ice"] == "connected" || v["ice"] == "completed"
    });
    assert!(up.is_some(), "the browser connects:\n{}", b.tail());

    let mut decoded_after = Vec::new();
    let mut ssrc_seen = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        let ctl_to = a.control.expect("a control channel");
        control(
            &ctls[i],
            ctl_to,
            K::TransmissionRequest,
            SSRCS[i],
            K::TransmissionGranted,
        );
        let sent = ffmpeg::send_as(None, a.video, SSRCS[i], ffmpeg::SENDER_KEY);
        ffmpeg::assert_exited_ok("ffmpeg sender", &sent);
        let want = 120 * (i as u64 + 1);
        let mut last = Value::Null;
        let v = b.wait_for("MCV-STATS ", Duration::from_secs(10), |v| {
            last = v.clone();
            v["framesDecoded"].as_u64().unwrap_or(0) >= want
        });
        assert!(
            v.is_some(),
            "after member {i}'s transmission the browser has decoded {want} frames: {last}\n{}",
            b.tail()
        );
        let v = v.unwrap();
        decoded_after.push(v["framesDecoded"].as_u64().unwrap());
        ssrc_seen.push(v["ssrc"].clone());
        control(
            &ctls[i],
            ctl_to,
            K::TransmissionEndRequest,
            SSRCS[i],
            K::TransmissionEndResponse,
        );
    }
    eprintln!("frames decoded after each transmission: {decoded_after:?}, ssrc {ssrc_seen:?}");
    assert_eq!(
        ssrc_seen[0], ssrc_seen[1],
        "one track, one SSRC toward the browser"
    );
    assert!(
        decoded_after[1] - decoded_after[0] >= 115,
        "bravo's frames decode after alpha's: {decoded_after:?}"
    );
    let viewers = api.get("/v1/calls/whep-group/whep").json();
    assert!(
        viewers["viewers"][0]["keyframe_requests"].is_u64(),
        "{viewers}"
    );
}

#[test]
fn a_browser_camera_pushes_through_whip_to_an_ffmpeg_receiver() {
    use mcvideo_relay::sdp::{MediaKind, SessionDescription};
    ffmpeg::require("ffmpeg");
    ffmpeg::require("ffprobe");
    browser::require();
    let relay = serve(35_380);
    let api = Api::new(relay.addr, Some(TOKEN));
    let url = format!(
        "http://{}/console#token={TOKEN}&publish=sip%3Aunit%40mcx.example&me=sip%3Adispatcher%40mcx.example&call_id=whip-push&debug=1",
        api.addr
    );
    let mut b = browser::Browser::open(&url);
    let published = b.wait_for("MCV-PUBLISHED ", Duration::from_secs(30), |_| true);
    let published = published.unwrap_or_else(|| {
        panic!(
            "the WHIP request is answered:\n{}\nrelay log:\n{}",
            b.tail(),
            relay.log()
        )
    });
    assert_eq!(published["call"], "whip-push", "{published}");
    let resource = published["resource"].as_str().unwrap().to_owned();

    // The signalling server's part: the callee's offer, delivered to an ffmpeg receiver.
    let p = api.get(&resource);
    assert_eq!(p.status, 200, "{}", p.body);
    let p = p.json();
    assert_eq!(p["role"], "publisher");
    let offer = p["callee_offer"].as_str().unwrap().to_owned();
    let video = SessionDescription::parse(&offer)
        .unwrap()
        .media()
        .iter()
        .find(|m| m.kind == MediaKind::Video)
        .cloned()
        .unwrap();
    assert_eq!(video.encoding.as_deref(), Some("H264"));
    let key = video.crypto[0].key_b64.clone();
    let dir = ffmpeg::tmpdir("whip-recv");
    let (recv_port, a, b2) = ffmpeg::port_pair();
    let sdp = dir.join("recv.sdp");
    std::fs::write(&sdp, ffmpeg::video_sdp("unit", recv_port, &key, None)).unwrap();
    let out = dir.join("out.mkv");
    drop((a, b2));
    let up = b.wait_for("MCV-PUB-STATS ", Duration::from_secs(30), |v| {
        v["ice"] == "connected" || v["ice"] == "completed"
    });
    assert!(up.is_some(), "the browser connects:\n{}", b.tail());
    let receiver = ffmpeg::spawn_receiver(&sdp, &out);
    // ffmpeg opens its socket before the callee's answer makes the relay send to it.
    std::thread::sleep(Duration::from_millis(700));
    let answered = api.post(
        "/v1/calls/whip-push/answer",
        &json!({"sdp_answer": format!(
            "{}m=application 0 udp MCVideo\r\n",
            ffmpeg::video_sdp("unit", recv_port, ffmpeg::SENDER_KEY, None)
        )}),
    );
    assert_eq!(answered.status, 200, "{}", answered.body);

    // The bridge is granted (implicitly, as the push's caller) and the camera's frames flow.
    assert!(
        sidecar_support::eventually(Duration::from_secs(10), || {
            let p = api.get(&resource).json();
            p["granted"] == true && p["packets"].as_u64().unwrap_or(0) > 100
        }),
        "the publisher is granted and sends: {}\n{}\nrelay log:\n{}",
        api.get(&resource).body,
        b.tail(),
        relay.log()
    );
    std::thread::sleep(Duration::from_secs(3));
    eprintln!("publisher: {}", api.get(&resource).body);
    let call = api.get("/v1/calls/whip-push").json();
    eprintln!("call: {call}");
    assert_eq!(call["transmission"], "granted", "{call}");
    // The publisher ends: its Transmission End Request completes the push, which is released.
    assert_eq!(api.delete(&resource).status, 204);
    assert!(
        sidecar_support::eventually(Duration::from_secs(5), || {
            let c = api.get("/v1/calls/whip-push").json();
            c["state"] == "released" || c["error"]["code"] == "unknown_call"
        }),
        "the push is released when the browser's transmission ends: {}",
        api.get("/v1/calls/whip-push").body
    );
    assert_receiver_decoded(receiver, &out, "the receiver");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_browser_joins_a_group_through_whip_and_transmits_when_granted() {
    use mcvideo_relay::sdp::{MediaKind, SessionDescription};
    ffmpeg::require("ffmpeg");
    ffmpeg::require("ffprobe");
    browser::require();
    let relay = serve(35_440);
    let api = Api::new(relay.addr, Some(TOKEN));
    // A per_leg group with one receiving member, an ffmpeg receiver.
    let (recv_port, a, b2) = ffmpeg::port_pair();
    let created = api.post(
        "/v1/group-calls",
        &json!({
            "call_id": "whip-group",
            "group_id": "sip:dispatch@mcx.example",
            "media_security": "per_leg",
            "members": [{
                "mcvideo_id": "sip:unit@mcx.example",
                "sdp_offer": ffmpeg::video_sdp("unit", recv_port, ffmpeg::SENDER_KEY, None),
                "receive_only": true,
            }],
        }),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let answer = created.json()["members"][0]["sdp_answer"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = SessionDescription::parse(&answer)
        .unwrap()
        .media()
        .iter()
        .find(|m| m.kind == MediaKind::Video)
        .unwrap()
        .crypto[0]
        .key_b64
        .clone();
    let dir = ffmpeg::tmpdir("whip-group");
    let sdp = dir.join("recv.sdp");
    std::fs::write(&sdp, ffmpeg::video_sdp("unit", recv_port, &key, None)).unwrap();
    let out = dir.join("out.mkv");

    // An end_to_end group is refused: the members share a key the relay does not hold.
    let e2e = api.post(
        "/v1/group-calls",
        &json!({
            "call_id": "whip-group-e2e",
            "group_id": "sip:sealed@mcx.example",
            "media_security": "end_to_end",
            "members": [{
                "mcvideo_id": "sip:unit2@mcx.example",
                "sdp_offer": ffmpeg::video_sdp("unit2", ffmpeg::port_pair().0, ffmpeg::SENDER_KEY, None),
                "receive_only": true,
            }],
        }),
    );
    assert_eq!(e2e.status, 201, "{}", e2e.body);
    let mut refused = browser::Browser::open(&format!(
        "http://{}/console#token={TOKEN}&join=whip-group-e2e&me=sip%3Adispatcher%40mcx.example&debug=1",
        api.addr
    ));
    let r = refused.wait_for("MCV-PUB-REFUSED ", Duration::from_secs(30), |_| true);
    let r = r.unwrap_or_else(|| panic!("refused:\n{}", refused.tail()));
    assert_eq!(r["status"], 409, "{r}");
    assert!(r["message"].as_str().unwrap().contains("end_to_end"), "{r}");
    drop(refused);

    // The browser joins the per_leg group; it transmits only once granted.
    let mut b = browser::Browser::open(&format!(
        "http://{}/console#token={TOKEN}&join=whip-group&me=sip%3Adispatcher%40mcx.example&debug=1",
        api.addr
    ));
    let published = b.wait_for("MCV-PUBLISHED ", Duration::from_secs(30), |_| true);
    let published = published.unwrap_or_else(|| panic!("joined:\n{}", b.tail()));
    assert_eq!(published["call"], "whip-group");
    let resource = published["resource"].as_str().unwrap().to_owned();
    let up = b.wait_for("MCV-PUB-STATS ", Duration::from_secs(30), |v| {
        v["ice"] == "connected" || v["ice"] == "completed"
    });
    assert!(up.is_some(), "the browser connects:\n{}", b.tail());
    let group = api.get("/v1/group-calls/whip-group").json();
    assert_eq!(group["members"].as_array().unwrap().len(), 2, "{group}");
    std::thread::sleep(Duration::from_millis(500));
    let before = api.get(&resource).json();
    assert_eq!(before["granted"], false, "{before}");

    // The receiver listens (it gives up after a few idle seconds: started only now).
    drop((a, b2));
    let receiver = ffmpeg::spawn_receiver(&sdp, &out);
    std::thread::sleep(Duration::from_millis(700));
    // The console's Request button: Transmission Request for the browser, granted.
    assert_eq!(
        api.raw("POST", &format!("{resource}/request"), &[], b"")
            .status,
        202
    );
    assert!(
        sidecar_support::eventually(Duration::from_secs(10), || {
            let p = api.get(&resource).json();
            p["granted"] == true && p["packets"].as_u64().unwrap_or(0) > 100
        }),
        "granted and sending: {}\n{}",
        api.get(&resource).body,
        relay.log()
    );
    let group = api.get("/v1/group-calls/whip-group").json();
    let me = group["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mcvideo_id"] == "sip:dispatcher@mcx.example")
        .cloned()
        .unwrap();
    assert_eq!(me["transmitting"], true, "{group}");
    // Its bridge offers `a=sendonly`: a send-only member, routed nothing.
    assert_eq!(me["send_only"], true, "{group}");
    assert_eq!(me["receiving"], json!([]), "{group}");
    std::thread::sleep(Duration::from_secs(4));
    // The End button: the transmission ends, the browser stays a member.
    assert_eq!(
        api.raw("POST", &format!("{resource}/end"), &[], b"").status,
        202
    );
    assert!(
        sidecar_support::eventually(Duration::from_secs(5), || {
            api.get(&resource).json()["granted"] == false
        }),
        "the transmission ends: {}",
        api.get(&resource).body
    );
    assert_receiver_decoded(receiver, &out, "the group's receiver");
    // The browser goes: its member leaves the group.
    assert_eq!(api.delete(&resource).status, 204);
    let group = api.get("/v1/group-calls/whip-group").json();
    assert_eq!(group["members"].as_array().unwrap().len(), 1, "{group}");
    let _ = std::fs::remove_dir_all(dir);
}
