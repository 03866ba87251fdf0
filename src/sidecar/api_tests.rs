//! What the API answers when a worker misbehaves (the crate's test hooks make it do so): a
//! worker that does not answer in time is 503 `worker_timeout`, a bug while it handles a
//! command is 500 `internal_error`, never 404 `unknown_call` or 400 `bad_request`.

use super::api::{router, AppState};
use crate::control::call::AnswerCall;
use crate::relay::{Engine, EngineConfig};
use crate::test_support::{live, paused, push_call};
use axum::body::Body;
use axum::http::{header, Method, Request};
use axum::Router;
use serde_json::{json, Value};
use std::net::UdpSocket;
use std::sync::Arc;
use tower_service::Service as _;

fn engine(port_min: u16) -> Arc<Engine> {
    Arc::new(
        Engine::start(EngineConfig {
            port_min,
            port_max: port_min + 99,
            workers: 1,
            ..EngineConfig::default()
        })
        .unwrap(),
    )
}

fn sdp(s: &UdpSocket) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=video {} RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=rtcp-mux\r\n",
        s.local_addr().unwrap().port()
    )
}

/// An established push call `id`; returns its peers' sockets.
fn call(engine: &Engine, id: &str) -> [UdpSocket; 2] {
    let peers = [(); 2].map(|()| UdpSocket::bind("127.0.0.1:0").unwrap());
    engine.create_call(push_call(id, sdp(&peers[0]))).unwrap();
    engine
        .accept_call(
            id,
            AnswerCall {
                callee_sdp: sdp(&peers[1]),
                callee_tc_key: None,
            },
        )
        .unwrap();
    peers
}

/// An engine on ports from `port_min` with the established push call `id`, its peers' sockets
/// and the API's router over it.
fn api_with_call(port_min: u16, id: &str) -> (Arc<Engine>, [UdpSocket; 2], Router) {
    let engine = engine(port_min);
    let peers = call(&engine, id);
    let api = router(Arc::new(AppState::new(engine.clone(), None, 65_536, None)));
    (engine, peers, api)
}

/// One request through the whole router on `rt`: (status, `Retry-After`, JSON body).
fn request(
    rt: &tokio::runtime::Runtime,
    router: &mut Router,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    rt.block_on(async {
        let resp = router.call(req).await.unwrap_or_else(|e| match e {});
        let status = resp.status().as_u16();
        let retry = resp
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, retry, serde_json::from_slice(&bytes).unwrap())
    })
}

#[test]
fn a_worker_that_does_not_answer_is_503_worker_timeout() {
    let (engine, _peers, mut api) = api_with_call(46_100, "test-stall-api");
    let rt = paused();
    let held = crate::relay::test_hooks::STALL.lock().unwrap();
    for (method, uri) in [
        (Method::GET, "/v1/calls/test-stall-api"),
        (Method::GET, "/v1/calls"),
        (Method::POST, "/v1/calls/test-stall-api/reject"),
        (Method::DELETE, "/v1/calls/test-stall-api"),
    ] {
        let (status, retry, body) = request(&rt, &mut api, method.clone(), uri, None);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (503, Some("worker_timeout")),
            "{method} {uri}: {body}"
        );
        assert_eq!(retry.as_deref(), Some("5"), "{method} {uri}");
    }
    // Unknown calls are still 404 (no worker is asked).
    let (status, _, body) = request(&rt, &mut api, Method::GET, "/v1/calls/nope", None);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("unknown_call"))
    );
    drop(held);
    let (status, _, body) = request(&live(), &mut api, Method::GET, "/v1/calls", None);
    assert_eq!(status, 200, "{body}");
    engine.shutdown();
}

#[test]
fn a_bug_in_a_worker_command_is_500_internal_error() {
    let (engine, _peers, mut api) = api_with_call(46_200, "test-panic-cmd-reading");
    let rt = live();
    let (status, _, body) = request(
        &rt,
        &mut api,
        Method::GET,
        "/v1/calls/test-panic-cmd-reading",
        None,
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (500, Some("internal_error")),
        "{body}"
    );
    // The call was released: now it is unknown.
    let (status, _, _) = request(
        &rt,
        &mut api,
        Method::GET,
        "/v1/calls/test-panic-cmd-reading",
        None,
    );
    assert_eq!(status, 404);
    let member = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (status, _, body) = request(
        &rt,
        &mut api,
        Method::POST,
        "/v1/group-calls",
        Some(json!({
            "call_id": "test-panic-cmd-setting-up",
            "group_id": "g",
            "members": [{"mcvideo_id": "alice", "sdp_offer": sdp(&member)}],
        })),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (500, Some("internal_error")),
        "{body}"
    );
    assert_eq!(engine.stats().ports_in_use, 0);
    engine.shutdown();
}
