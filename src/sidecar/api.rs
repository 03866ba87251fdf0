//! The HTTP/JSON control API (`deploy/README.md` in the repository, "Control API"): routes for
//! one-to-one video push and pull calls and group video calls, the recordings (in
//! [`super::recordings`]), bearer-token auth, the body limit, errors as
//! `{"error": {"code", "message"}}` (plus `member` for a group member's error), and the event
//! stream. Response bodies are the typed structs of [`super::body`].
//!
//! No handler blocks a runtime thread on a worker: what needs a worker's reply uses the
//! engine's `_async` methods (a oneshot under a timer: a worker that does not answer within
//! 5 s is 503 `worker_timeout`, a bug while it handles the command 500 `internal_error`).
//! The other engine calls are short (one mutex, socket binds). Request bodies are never
//! logged: SDP carries SDES keys, tc_key carries keys.

use super::body;
use super::error::{json_response, ApiError};
use super::metrics::{self, ApiMetrics};
use crate::control::call::{AnswerCall, CallEvent, CallState, CreateCall, SetupError};
use crate::control::registry::{RegistryError, UeEntry};
use crate::control::server::ReceptionMode;
use crate::control::{CommencementMode, MediaSecurity};
use crate::keys::{MasterKey, SrtpSuite};
use crate::relay::{CreateGroupCall, Engine, GroupMemberSpec};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use futures_util::Stream;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};
use tracing::{debug, info, warn};

/// The bearer tokens accepted now: SHA-256 digests.
#[derive(Debug, Clone, Copy, Default)]
struct Tokens {
    /// The configured token; `None` = no authentication (loopback only).
    current: Option<[u8; 32]>,
    /// The token a reload replaced, accepted until the instant given (`api.token_overlap_secs`).
    previous: Option<([u8; 32], Instant)>,
}

/// What a token reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenChange {
    /// The same token as before.
    Unchanged,
    /// A new token; the old one is still accepted for the overlap.
    Rotated,
    /// A token where there was none.
    Added,
    /// No token any more.
    Removed,
}

/// What every handler shares.
pub(crate) struct AppState {
    pub(crate) engine: Arc<Engine>,
    pub(crate) metrics: ApiMetrics,
    /// The bearer tokens accepted now (replaced on reload).
    tokens: std::sync::RwLock<Tokens>,
    /// SIGHUP and `POST /v1/admin/reload`: `None` when there is no config file to re-read.
    pub(crate) reloader: Option<super::Reloader>,
    max_body: usize,
    /// Set when shutdown starts: drain mode can no longer be turned off.
    pub(crate) stopping: AtomicBool,
    /// Set once the engine has shut down: event streams flush what they hold and end.
    pub(crate) closing: watch::Sender<bool>,
    /// The ng listener's counters, when it runs.
    pub(crate) ng_metrics: std::sync::OnceLock<Arc<super::ng::NgMetrics>>,
    /// Periodic `call.quality` events (JSON data), when switched on.
    pub(crate) quality: broadcast::Sender<String>,
    /// The HA store, when `[ha]` is on.
    #[cfg(feature = "ha")]
    pub(crate) ha: std::sync::OnceLock<Arc<super::ha::HaRuntime>>,
    /// The WHEP viewers, when WebRTC is on.
    #[cfg(feature = "webrtc")]
    pub(crate) browsers: std::sync::OnceLock<Arc<crate::webrtc::Browsers>>,
}

impl AppState {
    pub(crate) fn new(
        engine: Arc<Engine>,
        token: Option<&str>,
        max_body: usize,
        reloader: Option<super::Reloader>,
    ) -> Self {
        AppState {
            engine,
            metrics: ApiMetrics::default(),
            tokens: std::sync::RwLock::new(Tokens {
                current: token.map(digest),
                previous: None,
            }),
            reloader,
            max_body,
            stopping: AtomicBool::new(false),
            closing: watch::channel(false).0,
            ng_metrics: std::sync::OnceLock::new(),
            quality: broadcast::channel(1024).0,
            #[cfg(feature = "ha")]
            ha: std::sync::OnceLock::new(),
            #[cfg(feature = "webrtc")]
            browsers: std::sync::OnceLock::new(),
        }
    }
}

/// Publishes a `call.quality` event per established call every `every` until shutdown.
pub(crate) async fn publish_quality(st: Arc<AppState>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = st.closing.subscribe();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = closing.wait_for(|c| *c) => return,
        }
        if st.quality.receiver_count() == 0 {
            continue; // nobody listens: do not ask the workers
        }
        let Ok(calls) = st.engine.calls_async().await else {
            continue; // a worker did not answer: next tick
        };
        for c in calls.iter().filter(|c| c.state == CallState::Established) {
            let data = body::QualityEvent {
                call_id: &c.call_id,
                quality: body::quality_list(c),
            };
            if let Ok(data) = serde_json::to_string(&data) {
                let _ = st.quality.send(data);
            }
        }
    }
}

impl AppState {
    /// Puts `token` in force; a token it replaces is still accepted for `overlap`.
    #[allow(clippy::disallowed_methods)] // the I/O layer reads the clock
    pub(crate) fn set_token(&self, token: Option<&str>, overlap: Duration) -> TokenChange {
        let mut t = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        let new = token.map(digest);
        let change = match (t.current, new) {
            (Some(old), Some(new)) if ct_eq(&old, &new) => TokenChange::Unchanged,
            (None, None) => TokenChange::Unchanged,
            (Some(_), Some(_)) => TokenChange::Rotated,
            (None, Some(_)) => TokenChange::Added,
            (Some(_), None) => TokenChange::Removed,
        };
        if change == TokenChange::Rotated {
            t.previous = t.current.map(|old| (old, Instant::now() + overlap));
        }
        t.current = new;
        change
    }

    /// Whether a token is configured.
    fn token_required(&self) -> bool {
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .current
            .is_some()
    }

    /// Whether `given` (a digest) is a token accepted now: the configured one, or the one it
    /// replaced while the overlap lasts.
    #[allow(clippy::disallowed_methods)] // the I/O layer reads the clock
    fn token_ok(&self, given: &[u8; 32]) -> bool {
        let t = *self.tokens.read().unwrap_or_else(|e| e.into_inner());
        let Some(current) = t.current else {
            return true;
        };
        // Both compared every time: no early exit that would tell which one matched.
        let now_ok = ct_eq(given, &current);
        let old_ok = t
            .previous
            .is_some_and(|(old, until)| ct_eq(given, &old) & (Instant::now() < until));
        now_ok | old_ok
    }
}

fn digest(s: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Constant-time equality of two digests (no early exit on the first difference).
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn ok(body: &impl Serialize) -> Response {
    json_response(StatusCode::OK, body)
}

/// Reads the body within the limit: a `Content-Length` over it is refused before any byte is
/// read (so `Expect: 100-continue` clients never send it); chunked bodies are cut off by
/// [`DefaultBodyLimit`].
async fn read_body(req: Request, st: &Arc<AppState>) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > st.max_body as u64) {
        return Err(ApiError::too_large(st.max_body));
    }
    Bytes::from_request(req, st).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(st.max_body)
        } else {
            ApiError::new(r.status(), "bad_body", r.body_text())
        }
    })
}

/// A JSON body; malformed = 400 `bad_json`.
struct ApiJson<T>(T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, st: &Arc<AppState>) -> Result<Self, ApiError> {
        let body = read_body(req, st).await?;
        parse_json(&body).map(ApiJson)
    }
}

/// A JSON body that may be absent (empty = `T::default()`).
struct OptJson<T>(T);

impl<T: DeserializeOwned + Default> FromRequest<Arc<AppState>> for OptJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, st: &Arc<AppState>) -> Result<Self, ApiError> {
        let body = read_body(req, st).await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptJson(T::default()));
        }
        parse_json(&body).map(OptJson)
    }
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        // serde_json quotes a string value of the wrong type: a key in the wrong field must not
        // come back (nor reach a client's log).
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!(
                "malformed JSON body: {}",
                crate::keys::redact(&e.to_string())
            ),
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TcKeyBody {
    suite: String,
    key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallerBody {
    mcvideo_id: String,
    sdp_offer: String,
    #[serde(default)]
    tc_key: Option<TcKeyBody>,
    /// The media interface for the caller's leg (by name, of its SDP's address family);
    /// default: the first of that family.
    #[serde(default)]
    interface: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CalleeBody {
    mcvideo_id: String,
    /// The media interface for the callee's leg (by name); default: the caller's.
    #[serde(default)]
    interface: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[serde(default)]
    call_id: Option<String>,
    caller: CallerBody,
    callee: CalleeBody,
    #[serde(default)]
    video_push: bool,
    #[serde(default)]
    video_pull: bool,
    #[serde(default)]
    commencement_mode: Option<String>,
    #[serde(default)]
    media_security: Option<String>,
    /// Record the call's media (docs/recording.md).
    #[serde(default)]
    record: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerBody {
    sdp_answer: String,
    #[serde(default)]
    tc_key: Option<TcKeyBody>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UeBody {
    #[serde(default)]
    designated_for_private_calls: bool,
    #[serde(default)]
    commencement_mode: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DrainBody {
    #[serde(default)]
    draining: Option<bool>,
}

fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

fn tc_key(field: &str, k: Option<TcKeyBody>) -> Result<Option<MasterKey>, ApiError> {
    let Some(k) = k else { return Ok(None) };
    let suite = SrtpSuite::from_name(&k.suite).ok_or_else(|| {
        bad_request(
            "bad_tc_key",
            format!("{field}.suite: must be AEAD_AES_128_GCM or AES_CM_128_HMAC_SHA1_80"),
        )
    })?;
    MasterKey::from_base64(suite, &k.key)
        .map(Some)
        .map_err(|e| bad_request("bad_tc_key", format!("{field}.key: {e}")))
}

/// An enumeration field of a request, by its serde `snake_case` name (the name the API
/// reports it with); `expected` lists the names for the error.
fn api_enum<T: DeserializeOwned>(
    field: &str,
    value: Option<&str>,
    expected: &str,
) -> Result<Option<T>, ApiError> {
    use serde::de::value::{Error, StrDeserializer};
    value
        .map(|s| {
            T::deserialize(StrDeserializer::<Error>::new(s))
                .map_err(|_| bad_request("bad_request", format!("{field}: must be {expected}")))
        })
        .transpose()
}

fn commencement(field: &str, m: Option<&str>) -> Result<Option<CommencementMode>, ApiError> {
    api_enum(field, m, "\"automatic\" or \"manual\"")
}

async fn create_call(
    State(st): State<Arc<AppState>>,
    ApiJson(b): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let commencement_mode = commencement("commencement_mode", b.commencement_mode.as_deref())?;
    let media_security = media_security("media_security", b.media_security.as_deref())?;
    let caller_tc_key = tc_key("caller.tc_key", b.caller.tc_key)?;
    let offer = st.engine.create_call(CreateCall {
        call_id: b.call_id.map(Into::into),
        caller_id: b.caller.mcvideo_id,
        caller_sdp: b.caller.sdp_offer,
        callee_id: b.callee.mcvideo_id,
        video_push: b.video_push,
        video_pull: b.video_pull,
        callee_interface: b.callee.interface,
        caller_interface: b.caller.interface,
        commencement_mode,
        media_security,
        caller_tc_key,
    })?;
    let recording = record_if(&st, b.record, &offer.call_id).await;
    let body = body::CallOffered {
        call_id: &offer.call_id,
        commencement_mode: offer.commencement_mode,
        deliver_to: &offer.deliver_to,
        sdp_offer: &offer.sdp_offer,
        state: CallState::Offered,
        recording,
    };
    Ok(created(&format!("/v1/calls/{}", offer.call_id), &body))
}

/// Starts recording call `id`'s media when `record` asks for it (before the answer that gives
/// anyone the relay's ports goes out, so no packet comes before it): whether it is recorded,
/// `None` when not asked.
async fn record_if(st: &AppState, record: bool, id: &str) -> Option<bool> {
    if !record {
        return None;
    }
    match st.engine.record_call_async(id).await {
        Ok(on) => Some(on),
        Err(e) => {
            tracing::warn!(call = id, error = %e, "cannot record the call");
            Some(false)
        }
    }
}

/// 201 Created with `body`, at `location`.
fn created(location: &str, body: &impl Serialize) -> Response {
    let mut r = json_response(StatusCode::CREATED, body);
    if let Ok(l) = HeaderValue::try_from(location) {
        r.headers_mut().insert(header::LOCATION, l);
    }
    r
}

async fn answer_call(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<AnswerBody>,
) -> Result<Response, ApiError> {
    let callee_tc_key = tc_key("tc_key", b.tc_key)?;
    let a = st
        .engine
        .accept_call_async(
            &id,
            AnswerCall {
                callee_sdp: b.sdp_answer,
                callee_tc_key,
            },
        )
        .await?;
    super::whep::caller_answered(&st, &id, &a.sdp_answer);
    Ok(ok(&body::CallAnswered {
        call_id: &a.call_id,
        sdp_answer: &a.sdp_answer,
        state: CallState::Established,
    }))
}

/// Handlers that ask the engine to act on (or show) the call in the path and answer with the
/// call's view.
macro_rules! call_view_handlers {
    ($( $handler:ident: $method:ident -> $($view:ident)::+; )*) => {
        $(
            async fn $handler(
                State(st): State<Arc<AppState>>,
                Path(id): Path<String>,
            ) -> Result<Response, ApiError> {
                let s = st.engine.$method(&id).await?;
                Ok(ok(&$($view)::+::from(&s)))
            }
        )*
    };
}

call_view_handlers! {
    reject_call: reject_call_async -> body::Call;
    release_call: release_call_async -> body::Call;
    get_group_call: group_call_async -> body::GroupCall;
    release_group_call: release_group_call_async -> body::GroupCall;
}

async fn get_call(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let s = match st.engine.call_async(&id).await {
        Ok(s) => s,
        Err(SetupError::UnknownCall(_)) => {
            #[cfg(feature = "ha")]
            if let Some(ha) = st.ha.get() {
                if let Some(v) = ha.lookup(&id).await? {
                    return Ok(ok(&v));
                }
            }
            return Err(SetupError::UnknownCall(id).into());
        }
        Err(e) => return Err(e.into()),
    };
    #[allow(unused_mut)]
    let mut v = body::Call::from(&s);
    #[cfg(feature = "ha")]
    if let Some(ha) = st.ha.get() {
        v.owner = Some(ha.store.instance_id());
    }
    Ok(ok(&v))
}

/// `GET /v1/cluster`: the HA instances (404 `ha_not_enabled` without `[ha]`).
async fn cluster(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    #[cfg(feature = "ha")]
    if let Some(ha) = st.ha.get() {
        return Ok(ok(&ha.cluster_json().await?));
    }
    let _ = st;
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "ha_not_enabled",
        "high availability is off ([ha] enabled = false)",
    ))
}

/// `GET /v1/calls`: every call of every kind (push, pull and group), each with its `kind`,
/// by call ID.
async fn list_calls(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let (calls, groups) = tokio::join!(st.engine.calls_async(), st.engine.group_calls_async());
    let (calls, groups) = (calls?, groups?);
    let mut all: Vec<body::AnyCall<'_>> = calls
        .iter()
        .map(|c| body::AnyCall::OneToOne(c.into()))
        .chain(groups.iter().map(|g| body::AnyCall::Group(g.into())))
        .collect();
    all.sort_by(|a, b| a.call_id().cmp(b.call_id()));
    Ok(ok(&body::CallList { calls: all }))
}

// ---- group calls ------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupMemberBody {
    mcvideo_id: String,
    sdp_offer: String,
    #[serde(default)]
    priority: Option<u8>,
    #[serde(default)]
    receive_only: bool,
    #[serde(default)]
    tc_key: Option<TcKeyBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateGroupBody {
    #[serde(default)]
    call_id: Option<String>,
    group_id: String,
    #[serde(default)]
    media_security: Option<String>,
    #[serde(default)]
    max_transmitters: Option<u8>,
    #[serde(default)]
    max_streams_per_receiver: Option<u8>,
    #[serde(default)]
    reception_mode: Option<String>,
    members: Vec<GroupMemberBody>,
    /// Record the call's media (docs/recording.md).
    #[serde(default)]
    record: bool,
}

fn media_security(field: &str, m: Option<&str>) -> Result<MediaSecurity, ApiError> {
    api_enum(field, m, "\"end_to_end\" or \"per_leg\"").map(Option::unwrap_or_default)
}

fn group_member(field: &str, b: GroupMemberBody) -> Result<GroupMemberSpec, ApiError> {
    Ok(GroupMemberSpec {
        tc_key: tc_key(&format!("{field}.tc_key"), b.tc_key)?,
        mcvideo_id: b.mcvideo_id,
        sdp_offer: b.sdp_offer,
        priority: b.priority.unwrap_or(0),
        receive_only: b.receive_only,
    })
}

async fn create_group_call(
    State(st): State<Arc<AppState>>,
    ApiJson(b): ApiJson<CreateGroupBody>,
) -> Result<Response, ApiError> {
    let media_security = media_security("media_security", b.media_security.as_deref())?;
    let reception_mode: Option<ReceptionMode> = api_enum(
        "reception_mode",
        b.reception_mode.as_deref(),
        "\"automatic\" or \"manual\"",
    )?;
    let members = b
        .members
        .into_iter()
        .enumerate()
        .map(|(i, m)| group_member(&format!("members[{i}]"), m))
        .collect::<Result<Vec<_>, _>>()?;
    let req = CreateGroupCall {
        call_id: b.call_id.map(Into::into),
        group_id: b.group_id,
        media_security,
        max_transmitters: b.max_transmitters,
        max_streams_per_receiver: b.max_streams_per_receiver,
        reception_mode,
        members,
    };
    let group = st.engine.create_group_call_async(req).await?;
    let recording = record_if(&st, b.record, &group.call_id).await;
    let body = body::GroupCreated {
        call_id: &group.call_id,
        kind: body::GroupKind::Group,
        members: group.members.iter().map(body::MemberAnswer::from).collect(),
        state: CallState::Established,
        recording,
    };
    Ok(created(
        &format!("/v1/group-calls/{}", group.call_id),
        &body,
    ))
}

async fn add_group_member(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<GroupMemberBody>,
) -> Result<Response, ApiError> {
    let spec = group_member("member", b)?;
    let a = st.engine.add_group_member_async(&id, spec).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &body::MemberAdded {
            call_id: &id,
            member: (&a).into(),
        },
    ))
}

async fn remove_group_member(
    State(st): State<Arc<AppState>>,
    Path((id, user)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let s = st.engine.group_call_async(&id).await?;
    if !s.members.iter().any(|m| m.mcvideo_id == user) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_member",
            format!("call {id} has no member {user}"),
        ));
    }
    st.engine.remove_group_member_async(&id, &user).await?;
    let s = st.engine.group_call_async(&id).await?;
    Ok(ok(&body::GroupCall::from(&s)))
}

async fn list_group_calls(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let mut calls = st.engine.group_calls_async().await?;
    calls.sort_by(|a, b| a.call_id.cmp(&b.call_id));
    Ok(ok(&body::GroupCallList {
        group_calls: calls.iter().map(body::GroupCall::from).collect(),
    }))
}

async fn put_ue(
    State(st): State<Arc<AppState>>,
    Path((user, ue_id)): Path<(String, String)>,
    OptJson(b): OptJson<UeBody>,
) -> Result<Response, ApiError> {
    let commencement_mode = commencement("commencement_mode", b.commencement_mode.as_deref())?;
    let created = st
        .engine
        .register_ue(
            &user,
            UeEntry {
                ue_id,
                designated_for_private_calls: b.designated_for_private_calls,
                commencement_mode,
            },
        )
        .map_err(|e| match e {
            RegistryError::BadId(_) => bad_request("bad_id", e.to_string()),
            RegistryError::TooManyUes => {
                ApiError::new(StatusCode::CONFLICT, "too_many_ues", e.to_string())
            }
        })?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(
        status,
        &body::Ues::new(&user, &st.engine.ues(&user)),
    ))
}

async fn delete_ue(
    State(st): State<Arc<AppState>>,
    Path((user, ue_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    if !st.engine.unregister_ue(&user, &ue_id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_ue",
            format!("user {user} has no registered UE {ue_id}"),
        ));
    }
    Ok(ok(&body::Ues::new(&user, &st.engine.ues(&user))))
}

async fn list_ues(State(st): State<Arc<AppState>>, Path(user): Path<String>) -> Response {
    ok(&body::Ues::new(&user, &st.engine.ues(&user)))
}

fn drain_json(st: &AppState) -> body::Drain {
    let s = st.engine.stats();
    body::Drain {
        active_calls: s.active_calls,
        draining: s.draining,
    }
}

async fn set_drain(State(st): State<Arc<AppState>>, OptJson(b): OptJson<DrainBody>) -> Response {
    let on = b.draining.unwrap_or(true);
    if st.stopping.load(Ordering::SeqCst) && !on {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the relay is shutting down",
        )
        .into_response();
    }
    st.engine.set_draining(on);
    info!(draining = on, "drain mode changed");
    ok(&drain_json(&st))
}

async fn undrain(State(st): State<Arc<AppState>>) -> Response {
    set_drain(
        State(st),
        OptJson(DrainBody {
            draining: Some(false),
        }),
    )
    .await
}

/// `POST /v1/admin/reload`: re-reads the config file's policy file, log level and API token
/// (as SIGHUP does). 400 with every problem when the new configuration is not valid (the old
/// settings stay).
async fn reload(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let changes = super::error::blocking("reload", move || {
        super::reload_logged(&st, "POST /v1/admin/reload").map_err(|e| match e {
            super::ReloadError::NoConfigFile => ApiError::new(
                StatusCode::CONFLICT,
                "no_config_file",
                "the relay was started without --config: there is nothing to re-read",
            ),
            super::ReloadError::Invalid(problems) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_config",
                format!(
                    "the configuration was not reloaded (the old settings stay): {}",
                    super::config::one_line(&problems)
                ),
            ),
        })
    })
    .await?;
    Ok(ok(&body::Reloaded {
        changes: &changes,
        reloaded: true,
    }))
}

async fn get_drain(State(st): State<Arc<AppState>>) -> Response {
    ok(&drain_json(&st))
}

async fn healthz(State(st): State<Arc<AppState>>) -> Response {
    let s = st.engine.stats();
    #[cfg(feature = "ha")]
    let fenced = st.ha.get().is_some_and(|ha| ha.store.is_fenced());
    #[cfg(not(feature = "ha"))]
    let fenced = false;
    let status = match (fenced, s.draining) {
        (true, _) => body::Status::Fenced,
        (false, true) => body::Status::Draining,
        (false, false) => body::Status::Ok,
    };
    let health = body::Health {
        active_calls: s.active_calls,
        active_group_calls: s.by_kind.get("group").map_or(0, |k| k.active),
        status,
        uptime_secs: st.engine.uptime().as_secs(),
    };
    let code = if fenced {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json_response(code, &health)
}

async fn metrics_text(State(st): State<Arc<AppState>>) -> Response {
    let quality = st.engine.quality_async().await;
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        {
            let mut text = metrics::render(&st.engine, &st.metrics, &quality);
            if let Some(ng) = st.ng_metrics.get() {
                ng.render(&mut text);
            }
            #[cfg(feature = "ha")]
            if let Some(ha) = st.ha.get() {
                ha.render(&st.engine, &mut text);
            }
            text
        },
    )
        .into_response()
}

/// The SSE `data` of an event: the call ID and the event's fields.
pub(crate) fn event_data(ev: &CallEvent) -> String {
    serde_json::to_string(&body::Event::from(ev)).unwrap_or_default()
}

/// The SSE `data` of an event as a JSON value (the SSE `event` is
/// [`CallEventKind::name`](crate::control::call::CallEventKind::name)).
pub fn event_json(ev: &CallEvent) -> serde_json::Value {
    serde_json::to_value(body::Event::from(ev)).unwrap_or_default()
}

/// Keeps the `sse_clients` gauge right however the stream ends.
struct SseClient(Arc<AppState>);

impl Drop for SseClient {
    fn drop(&mut self) {
        self.0.metrics.sse_clients.fetch_sub(1, Ordering::Relaxed);
    }
}

struct SseState {
    rx: broadcast::Receiver<CallEvent>,
    quality: broadcast::Receiver<String>,
    closing: watch::Receiver<bool>,
    done: bool,
    _client: SseClient,
}

fn sse_item(r: Result<CallEvent, broadcast::error::RecvError>) -> Option<Event> {
    match r {
        Ok(ev) => Some(Event::default().event(ev.kind.name()).data(event_data(&ev))),
        Err(broadcast::error::RecvError::Lagged(n)) => Some(
            Event::default()
                .event("events.lagged")
                .data(serde_json::to_string(&body::Lagged { missed: n }).unwrap_or_default()),
        ),
        Err(broadcast::error::RecvError::Closed) => None,
    }
}

async fn next_event(mut s: SseState) -> Option<(Result<Event, Infallible>, SseState)> {
    if s.done {
        return None;
    }
    let item = tokio::select! {
        biased;
        r = s.rx.recv() => sse_item(r),
        Ok(q) = s.quality.recv() => Some(Event::default().event("call.quality").data(q)),
        _ = s.closing.wait_for(|c| *c) => {
            // Shutting down: the engine has published its last events; hand over what is
            // queued, then end the stream so the connection can close.
            match s.rx.try_recv() {
                Ok(ev) => sse_item(Ok(ev)),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    sse_item(Err(broadcast::error::RecvError::Lagged(n)))
                }
                Err(_) => None,
            }
        }
    };
    match item {
        Some(ev) => Some((Ok(ev), s)),
        None => {
            s.done = true;
            None
        }
    }
}

async fn events(
    State(st): State<Arc<AppState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // Subscribe now, before the response goes out: a client that has read the response head
    // sees every event from then on.
    let rx = st.engine.subscribe();
    let closing = st.closing.subscribe();
    st.metrics.sse_clients.fetch_add(1, Ordering::Relaxed);
    let hello = futures_util::stream::iter([Ok(Event::default().comment("mcvideo-relay events"))]);
    let rest = futures_util::stream::unfold(
        SseState {
            rx,
            quality: st.quality.subscribe(),
            closing,
            done: false,
            _client: SseClient(st.clone()),
        },
        next_event,
    );
    Sse::new(futures_util::StreamExt::chain(hello, rest))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// Bearer-token check on every route but `/healthz`, when a token is configured.
async fn authorize(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if !st.token_required() {
        return next.run(req).await;
    }
    // The console page is static and holds no secret: its requests carry the token.
    if matches!(req.uri().path(), "/healthz" | "/console") {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| digest(t.trim()));
    match given {
        Some(d) if st.token_ok(&d) => next.run(req).await,
        Some(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the bearer token is not valid",
        )
        .into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "an `Authorization: Bearer <token>` header is required",
        )
        .into_response(),
    }
}

/// Request count and latency by route; one debug line per request (never the body).
#[allow(clippy::disallowed_methods)] // the I/O layer reads the clock
async fn observe(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = req.method().clone();
    let resp = next.run(req).await;
    let took = started.elapsed();
    let status = resp.status().as_u16();
    st.metrics.observe(&route, &method, status, took);
    if resp.status().is_server_error() && status != 503 {
        warn!(%method, %route, status, "request failed");
    } else {
        debug!(%method, %route, status, micros = took.as_micros() as u64, "request");
    }
    resp
}

/// The whole control API.
pub(crate) fn router(st: Arc<AppState>) -> Router {
    let limit = st.max_body;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/console", get(super::whep::console))
        .route("/v1/calls", post(create_call).get(list_calls))
        .route("/v1/calls/{id}", get(get_call).delete(release_call))
        .route("/v1/calls/{id}/answer", post(answer_call))
        .route("/v1/calls/{id}/reject", post(reject_call))
        .route(
            "/v1/calls/{id}/whep",
            post(super::whep::open).get(super::whep::list),
        )
        .route(
            "/v1/calls/{id}/whep/{viewer}",
            axum::routing::delete(super::whep::close),
        )
        .route("/v1/whip", post(super::whep::publish))
        .route(
            "/v1/whip/{id}",
            get(super::whep::publisher).delete(super::whep::unpublish),
        )
        .route("/v1/whip/{id}/{action}", post(super::whep::transmission))
        .route(
            "/v1/group-calls",
            post(create_group_call).get(list_group_calls),
        )
        .route(
            "/v1/group-calls/{id}",
            get(get_group_call).delete(release_group_call),
        )
        .route("/v1/group-calls/{id}/members", post(add_group_member))
        .route(
            "/v1/group-calls/{id}/members/{mcvideo_id}",
            axum::routing::delete(remove_group_member),
        )
        .route("/v1/users/{mcvideo_id}/ues", get(list_ues))
        .route(
            "/v1/users/{mcvideo_id}/ues/{ue_id}",
            put(put_ue).delete(delete_ue),
        )
        .route("/v1/events", get(events))
        .route(
            "/v1/admin/drain",
            post(set_drain).delete(undrain).get(get_drain),
        )
        .route("/v1/admin/reload", post(reload))
        .route("/v1/cluster", get(cluster))
        .route("/v1/recordings", get(super::recordings::list))
        .route(
            "/v1/recordings/{id}",
            get(super::recordings::get).delete(super::recordings::delete),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(st.clone(), authorize))
        .layer(middleware::from_fn_with_state(st.clone(), observe))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(st)
}
