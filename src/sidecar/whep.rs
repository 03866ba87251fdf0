//! The browser routes (docs/webrtc.md): WHEP, a browser watches a call; WHIP, a browser's
//! camera transmits into one.
//!
//! * `POST /v1/calls/{id}/whep` with the browser's SDP offer (`Content-Type:
//!   application/sdp`): `201` with the SDP answer and `Location` naming the viewer;
//! * `DELETE /v1/calls/{id}/whep/{viewer}`: `204`, the viewer ends;
//! * `GET /v1/calls/{id}/whep`: the call's viewers (JSON);
//! * `POST /v1/whip?callee=ID[&caller=ID][&call_id=ID]` (a new push) or
//!   `POST /v1/whip?group=ID&mcvideo_id=ID[&priority=N]` (join a group) with the browser's
//!   offer: `201` with the answer, `Location: /v1/whip/{publisher}` and the call's ID in
//!   `MCVideo-Call-Id`;
//! * `GET /v1/whip/{publisher}`: the publisher (a push's `callee_offer` for the signalling
//!   server to deliver); `POST .../request`, `POST .../end`: Transmission Request and End
//!   Request for it; `DELETE`: it ends.
//!
//! The bearer token is checked as on every route. A relay built without the `webrtc` feature
//! answers `501 not_built`.

use super::api::AppState;
use super::error::ApiError;
use axum::http::StatusCode;
use axum::response::Response;
#[cfg(feature = "webrtc")]
use {
    axum::extract::{Path, State},
    std::sync::Arc,
};

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

/// Every browser route of a relay built without the `webrtc` feature: `501 not_built`.
#[cfg(not(feature = "webrtc"))]
pub(super) async fn not_built() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "not_built",
        "this relay was built without WebRTC (cargo feature `webrtc`)",
    )
}

#[cfg(not(feature = "webrtc"))]
pub(super) use self::{
    not_built as close, not_built as list, not_built as open, not_built as publish,
    not_built as publisher, not_built as transmission, not_built as unpublish,
};

#[cfg(feature = "webrtc")]
fn viewers(st: &AppState) -> Result<&Arc<crate::webrtc::Browsers>, ApiError> {
    st.browsers.get().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "webrtc_off",
            "WHEP is off (webrtc.max_viewers = 0)",
        )
    })
}

/// Ends browser `id` (of `call`, when given) on a blocking thread: `204`.
#[cfg(feature = "webrtc")]
async fn close_browser(
    st: &AppState,
    call: Option<String>,
    role: crate::webrtc::BrowserRole,
    id: String,
) -> Result<StatusCode, ApiError> {
    let v = viewers(st)?.clone();
    super::error::blocking("close", move || Ok(v.close(call.as_deref(), role, &id)?)).await?;
    Ok(StatusCode::NO_CONTENT)
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
            W::Busy => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", msg),
        }
    }
}

/// The browser's SDP offer: the body of a `Content-Type: application/sdp` request.
#[cfg(feature = "webrtc")]
fn sdp_offer<'a>(headers: &axum::http::HeaderMap, body: &'a [u8]) -> Result<&'a str, ApiError> {
    use axum::http::header;
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
    std::str::from_utf8(body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad_sdp", "the offer is not UTF-8"))
}

/// `201` with SDP answer `answer` and `Location: location`.
#[cfg(feature = "webrtc")]
fn sdp_created(answer: String, location: &str) -> Response {
    use axum::http::{header, HeaderValue};
    use axum::response::IntoResponse;
    let mut r = (StatusCode::CREATED, answer).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(l) = HeaderValue::try_from(location) {
        h.insert(header::LOCATION, l);
    }
    r
}

/// `POST /v1/calls/{id}/whep`.
#[cfg(feature = "webrtc")]
pub(super) async fn open(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let offer = sdp_offer(&headers, &body)?;
    let (viewer, answer) = viewers(&st)?.open(&id, offer).await?;
    Ok(sdp_created(
        answer,
        &format!("/v1/calls/{}/whep/{viewer}", escape(&id)),
    ))
}

/// Percent-encodes a path segment (every octet but unreserved characters, RFC 3986).
#[cfg(feature = "webrtc")]
fn escape(v: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Percent-decodes a query value (`+` is a space).
#[cfg(feature = "webrtc")]
fn unescape(v: &str) -> Option<String> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Where a WHIP request transmits, from its query.
#[cfg(feature = "webrtc")]
fn publish_to(query: Option<&str>) -> Result<crate::webrtc::PublishTo, ApiError> {
    let bad = |m: &str| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m);
    let mut q = std::collections::HashMap::new();
    for kv in query
        .unwrap_or_default()
        .split('&')
        .filter(|s| !s.is_empty())
    {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let v = unescape(v).ok_or_else(|| bad("a query value is not percent-encoded UTF-8"))?;
        if q.insert(k.to_owned(), v).is_some() {
            return Err(bad(&format!("query parameter {k} is given twice")));
        }
    }
    let mut take = |k: &str| q.remove(k).filter(|v| !v.is_empty());
    let to = match (take("callee"), take("group")) {
        (Some(callee_id), None) => crate::webrtc::PublishTo::Push {
            call_id: take("call_id"),
            caller_id: take("caller").unwrap_or_else(|| "whip:browser".to_owned()),
            callee_id,
        },
        (None, Some(call_id)) => crate::webrtc::PublishTo::Group {
            call_id,
            mcvideo_id: take("mcvideo_id")
                .ok_or_else(|| bad("joining a group needs mcvideo_id"))?,
            priority: match take("priority") {
                Some(p) => p.parse().map_err(|_| bad("priority is 0-255"))?,
                None => 0,
            },
        },
        _ => {
            return Err(bad(
                "exactly one of callee (a push) and group (join a group call) is needed",
            ))
        }
    };
    if let Some(k) = q.keys().next() {
        return Err(bad(&format!(
            "unknown query parameter {k} (the parameters are callee, caller, call_id, group, mcvideo_id, priority)"
        )));
    }
    Ok(to)
}

/// `POST /v1/whip`.
#[cfg(feature = "webrtc")]
pub(super) async fn publish(
    State(st): State<Arc<AppState>>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let to = publish_to(uri.query())?;
    let offer = sdp_offer(&headers, &body)?;
    let p = viewers(&st)?.publish(to, offer).await?;
    let mut r = sdp_created(p.answer, &format!("/v1/whip/{}", p.id));
    if let Ok(v) = axum::http::HeaderValue::try_from(p.call_id) {
        r.headers_mut().insert("mcvideo-call-id", v);
    }
    Ok(r)
}

/// `GET /v1/whip/{publisher}`.
#[cfg(feature = "webrtc")]
pub(super) async fn publisher(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let v = viewers(&st)?.list(None, Some(&id));
    let p = v
        .into_iter()
        .find(|p| p.role == crate::webrtc::BrowserRole::Publisher)
        .ok_or(crate::webrtc::WhepError::UnknownViewer)?;
    Ok(super::error::json_response(StatusCode::OK, &p))
}

/// `POST /v1/whip/{publisher}/request` and `/end`.
#[cfg(feature = "webrtc")]
pub(super) async fn transmission(
    State(st): State<Arc<AppState>>,
    Path((id, what)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let request = match what.as_str() {
        "request" => true,
        "end" => false,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route",
            ))
        }
    };
    viewers(&st)?.transmission(&id, request)?;
    Ok(StatusCode::ACCEPTED)
}

/// `DELETE /v1/whip/{publisher}`.
#[cfg(feature = "webrtc")]
pub(super) async fn unpublish(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    close_browser(&st, None, crate::webrtc::BrowserRole::Publisher, id).await
}

/// A push's callee accepted: a publisher that is its caller learns where to send.
pub(super) fn caller_answered(st: &AppState, call_id: &str, sdp_answer: &str) {
    #[cfg(feature = "webrtc")]
    if let Some(b) = st.browsers.get() {
        b.caller_answered(call_id, sdp_answer);
    }
    #[cfg(not(feature = "webrtc"))]
    let _ = (st, call_id, sdp_answer);
}

/// `DELETE /v1/calls/{id}/whep/{viewer}`.
#[cfg(feature = "webrtc")]
pub(super) async fn close(
    State(st): State<Arc<AppState>>,
    Path((id, viewer)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    close_browser(&st, Some(id), crate::webrtc::BrowserRole::Viewer, viewer).await
}

/// `GET /v1/calls/{id}/whep`.
#[cfg(feature = "webrtc")]
pub(super) async fn list(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let mut v = viewers(&st)?.list(Some(&id), None);
    v.retain(|b| b.role == crate::webrtc::BrowserRole::Viewer);
    Ok(super::error::json_response(
        StatusCode::OK,
        &serde_json::json!({ "viewers": v }),
    ))
}

#[cfg(all(test, feature = "webrtc"))]
mod tests {
    use super::*;
    use crate::webrtc::PublishTo;

    #[test]
    fn a_whip_query_names_a_push_or_a_group() {
        assert_eq!(
            publish_to(Some("callee=sip%3Aunit%40x&call_id=c1")).unwrap(),
            PublishTo::Push {
                call_id: Some("c1".into()),
                caller_id: "whip:browser".into(),
                callee_id: "sip:unit@x".into(),
            }
        );
        assert_eq!(
            publish_to(Some("group=g&mcvideo_id=sip:d@x&priority=7")).unwrap(),
            PublishTo::Group {
                call_id: "g".into(),
                mcvideo_id: "sip:d@x".into(),
                priority: 7,
            }
        );
        for bad in [
            None,
            Some("callee=a&group=b"),
            Some("group=g"),
            Some("callee=a&callee=b"),
            Some("callee=a&colour=red"),
            Some("group=g&mcvideo_id=m&priority=300"),
            Some("callee=%zz"),
            Some("callee=%ff"),
        ] {
            assert!(publish_to(bad).is_err(), "{bad:?}");
        }
        assert_eq!(unescape("a+b%20c").as_deref(), Some("a b c"));
        assert_eq!(escape("sip:a@b/c d"), "sip%3Aa%40b%2Fc%20d");
        assert_eq!(unescape("%4"), None);
    }
}
