//! The WHEP routes (docs/webrtc.md): a browser watches a call.
//!
//! * `POST /v1/calls/{id}/whep` with the browser's SDP offer (`Content-Type:
//!   application/sdp`): `201` with the SDP answer and `Location` naming the viewer;
//! * `DELETE /v1/calls/{id}/whep/{viewer}`: `204`, the viewer ends;
//! * `GET /v1/calls/{id}/whep`: the call's viewers (JSON).
//!
//! The bearer token is checked as on every route. A relay built without the `webrtc` feature
//! answers `501 not_built`.

use super::api::AppState;
use super::error::ApiError;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use std::sync::Arc;

/// The console page (`GET /console`), compiled in: the live calls from the API and a WHEP
/// player. It holds no secret (the token is typed in, or given in the URL's fragment, which
/// is never sent); every request it makes carries the token.
pub(super) async fn console() -> Response {
    use axum::http::{header, HeaderValue};
    use axum::response::IntoResponse;
    let mut r = include_str!("console/index.html").into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    r
}

#[cfg(not(feature = "webrtc"))]
fn not_built() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "not_built",
        "this relay was built without WebRTC (cargo feature `webrtc`)",
    )
}

#[cfg(feature = "webrtc")]
fn viewers(st: &AppState) -> Result<&Arc<crate::webrtc::Viewers>, ApiError> {
    st.viewers.get().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "webrtc_off",
            "WHEP is off (webrtc.max_viewers = 0)",
        )
    })
}

#[cfg(feature = "webrtc")]
impl From<crate::webrtc::WhepError> for ApiError {
    fn from(e: crate::webrtc::WhepError) -> Self {
        use crate::webrtc::WhepError as W;
        let msg = e.to_string();
        match e {
            W::Call(s) => s.into(),
            W::BadOffer(_) => ApiError::new(StatusCode::BAD_REQUEST, "bad_sdp", msg),
            W::Codec(_) => ApiError::new(StatusCode::BAD_REQUEST, "no_acceptable_media", msg),
            W::TooMany => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "too_many_viewers", msg),
            W::Io(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_ports_available", msg),
            W::UnknownViewer => ApiError::new(StatusCode::NOT_FOUND, "unknown_viewer", msg),
        }
    }
}

/// `POST /v1/calls/{id}/whep`.
#[cfg(feature = "webrtc")]
pub(super) async fn open(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    use axum::http::{header, HeaderValue};
    use axum::response::IntoResponse;
    let sdp_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("application/sdp"));
    if !sdp_type {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "bad_content_type",
            "a WHEP offer is `Content-Type: application/sdp`",
        ));
    }
    let offer = std::str::from_utf8(&body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad_sdp", "the offer is not UTF-8"))?;
    let (viewer, answer) = viewers(&st)?.open(&id, offer).await?;
    let location = format!("/v1/calls/{id}/whep/{viewer}");
    let mut r = (StatusCode::CREATED, answer).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(l) = HeaderValue::try_from(location) {
        h.insert(header::LOCATION, l);
    }
    Ok(r)
}

/// `POST /v1/calls/{id}/whep`.
#[cfg(not(feature = "webrtc"))]
pub(super) async fn open(
    State(_): State<Arc<AppState>>,
    Path(_): Path<String>,
) -> Result<Response, ApiError> {
    Err(not_built())
}

/// `DELETE /v1/calls/{id}/whep/{viewer}`.
#[cfg(feature = "webrtc")]
pub(super) async fn close(
    State(st): State<Arc<AppState>>,
    Path((id, viewer)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let v = viewers(&st)?.clone();
    tokio::task::spawn_blocking(move || v.close(&id, &viewer))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "viewer close panicked",
            )
        })??;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/calls/{id}/whep/{viewer}`.
#[cfg(not(feature = "webrtc"))]
pub(super) async fn close(
    State(_): State<Arc<AppState>>,
    Path(_): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    Err(not_built())
}

/// `GET /v1/calls/{id}/whep`.
#[cfg(feature = "webrtc")]
pub(super) async fn list(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let v = viewers(&st)?.list(Some(&id));
    Ok(super::error::json_response(
        StatusCode::OK,
        &serde_json::json!({ "viewers": v }),
    ))
}

/// `GET /v1/calls/{id}/whep`.
#[cfg(not(feature = "webrtc"))]
pub(super) async fn list(
    State(_): State<Arc<AppState>>,
    Path(_): Path<String>,
) -> Result<Response, ApiError> {
    Err(not_built())
}
