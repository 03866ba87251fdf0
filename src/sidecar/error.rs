//! The control API's errors: `{"error": {"code", "message"}}` with the HTTP status each code
//! maps to, and the one JSON response writer every route uses.

use super::body;
use crate::control::call::SetupError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An API error: `{"error": {"code": "...", "message": "..."}}`, with `"member"` naming the
/// group member a member-specific setup error is about.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    member: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            member: None,
        }
    }

    pub(crate) fn too_large(limit: usize) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {limit} bytes (api.max_body_bytes)"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = body::ErrorBody {
            error: body::ErrorDetail {
                code: self.code,
                member: self.member.as_deref(),
                message: &self.message,
            },
        };
        let mut r = json_response(self.status, &body);
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        r
    }
}

impl From<SetupError> for ApiError {
    fn from(e: SetupError) -> Self {
        let status = match &e {
            SetupError::NotVideoPush
            | SetupError::BadRequest(_)
            | SetupError::BadSdp { .. }
            | SetupError::NoAcceptableMedia { .. }
            | SetupError::MemberSdp { .. }
            | SetupError::MemberMedia { .. }
            | SetupError::MemberRequest { .. } => StatusCode::BAD_REQUEST,
            SetupError::NotAuthorized { .. } => StatusCode::FORBIDDEN,
            SetupError::CalleeNotRegistered(_) | SetupError::UnknownCall(_) => {
                StatusCode::NOT_FOUND
            }
            SetupError::NoPortsAvailable
            | SetupError::TooManyCalls
            | SetupError::Draining
            | SetupError::WorkerTimeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            SetupError::DuplicateCallId(_)
            | SetupError::WrongState { .. }
            | SetupError::NotWatchable { .. } => StatusCode::CONFLICT,
            SetupError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            member: e.member().map(str::to_owned),
            ..ApiError::new(status, e.code(), e.to_string())
        }
    }
}

/// Runs blocking work `f` (file system, sockets torn down, a config re-read) off the tokio
/// workers; a panic in it is `500 internal_error` ("`what` panicked"), never a lost handler.
pub(crate) async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|_| {
        Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            format!("{what} panicked"),
        ))
    })
}

pub(crate) fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_string(body) {
        Ok(text) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            text,
        )
            .into_response(),
        // Not reached: the bodies are plain structs of strings, numbers and maps.
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            format!("cannot encode the response: {e}"),
        )
        .into_response(),
    }
}
