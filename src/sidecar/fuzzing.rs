//! Fuzzing entry point, built only with `--cfg fuzzing` (cargo-fuzz sets it): the control API's
//! whole router — authentication, body limit, JSON parsing, validation, handlers — over an
//! in-process [`Engine`], driven one request at a time without a socket.
#![allow(missing_docs, unreachable_pub, clippy::missing_panics_doc)]

use super::api::{router, AppState};
use crate::relay::Engine;
use axum::body::Body;
use axum::http::{header, Method, Request};
use axum::Router;
use std::sync::Arc;
use tower_service::Service as _;

/// The bearer token the harness's API expects.
pub const TOKEN: &str = "fuzz-token";

/// What came back.
#[derive(Debug)]
pub struct ApiResponse {
    pub status: u16,
    pub content_type: Option<String>,
    /// Empty for an event stream (it never ends; it is not read).
    pub body: Vec<u8>,
}

/// The router over an engine, on a current-thread runtime.
pub struct ApiHarness {
    rt: tokio::runtime::Runtime,
    router: Router,
}

impl ApiHarness {
    /// `max_body` as the config's `api.max_body_bytes`.
    pub fn new(engine: Arc<Engine>, max_body: usize) -> ApiHarness {
        let state = Arc::new(AppState::new(engine, Some(TOKEN), max_body, None));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        ApiHarness {
            rt,
            router: router(state),
        }
    }

    /// One request. `None` when the method, URI or a header is not valid HTTP (hyper would
    /// have refused it before the router saw it).
    pub fn request(
        &mut self,
        method: &str,
        uri: &str,
        headers: &[(&str, Vec<u8>)],
        body: Vec<u8>,
    ) -> Option<ApiResponse> {
        let method = Method::from_bytes(method.as_bytes()).ok()?;
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, v.as_slice());
        }
        let req = b.body(Body::from(body)).ok()?;
        let router = &mut self.router;
        self.rt.block_on(async move {
            let resp = router.call(req).await.unwrap_or_else(|e| match e {});
            let status = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = if content_type
                .as_deref()
                .is_some_and(|c| c.starts_with("text/event-stream"))
            {
                Vec::new()
            } else {
                axum::body::to_bytes(resp.into_body(), usize::MAX)
                    .await
                    .map(|b| b.to_vec())
                    .unwrap_or_default()
            };
            Some(ApiResponse {
                status,
                content_type,
                body,
            })
        })
    }
}

/// The ng control protocol's datagram handler (allow-list, size limit, cookie, bencode, reply
/// cache, commands) over an engine, without a socket.
pub struct NgHarness {
    svc: super::ng::NgService,
    now: std::time::Instant,
}

impl NgHarness {
    /// `max_request` as `ng.max_request_bytes`; sources on loopback are allowed.
    pub fn new(engine: Arc<Engine>, max_request: usize) -> NgHarness {
        let cfg = super::config::NgConfig {
            max_request_bytes: max_request,
            reply_cache_entries: 16,
            ..super::config::NgConfig::default()
        };
        NgHarness {
            svc: super::ng::NgService::new(engine, &cfg),
            #[allow(clippy::disallowed_methods)]
            now: std::time::Instant::now(),
        }
    }

    /// One datagram from `from`, `ms` milliseconds after the previous one; the reply.
    pub fn datagram(
        &mut self,
        from: std::net::SocketAddr,
        data: &[u8],
        ms: u16,
    ) -> Option<Vec<u8>> {
        self.now += std::time::Duration::from_millis(u64::from(ms));
        self.svc.tick(self.now);
        self.svc.datagram(from, data, self.now)
    }

    /// Engine call IDs of the calls the ng side holds.
    pub fn engine_ids(&self) -> Vec<String> {
        self.svc.engine_ids()
    }

    /// The ng `call-id`s of those calls.
    pub fn ng_call_ids(&self) -> Vec<Vec<u8>> {
        self.svc.ng_call_ids()
    }

    /// Decodes a bencode value (None when it does not decode); re-encoding it gives the input
    /// back when dictionary keys were sorted.
    pub fn bencode_roundtrip(data: &[u8]) -> Option<Vec<u8>> {
        super::ng::bencode::decode(data).ok().map(|v| v.encode())
    }
}
