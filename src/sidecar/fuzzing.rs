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
