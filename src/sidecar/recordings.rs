//! The recordings routes (docs/recording.md, "The recordings API"): `GET /v1/recordings` lists
//! the recordings in `recording.dir` (filtered by call, member and start time, newest first,
//! at most `limit`), `GET /v1/recordings/{id}` tells one's metadata and files, `DELETE
//! /v1/recordings/{id}` removes a finished one (409 while it is being written).
//!
//! A recording's ID is its directory's name, `<call id>-<unix ms>`; an ID that is not of that
//! form (`[A-Za-z0-9._-]`, no `..`, not starting with `.`, digits after the last `-`) is 400
//! before any file is touched, so it never names anything outside the directory. The file
//! system work runs on tokio's blocking threads.

use super::api::AppState;
use super::body;
use super::error::{blocking, json_response, ApiError};
use crate::relay::recording::{rfc3339, TRANSMISSION_LOG_FILE};
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use std::collections::BTreeSet;
use std::fs;
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// `limit` when the request gives none.
pub(crate) const DEFAULT_LIMIT: usize = 100;
/// The largest `limit` taken.
pub(crate) const MAX_LIMIT: usize = 1000;
/// The media metadata's file name in a recording's directory.
const MEDIA_FILE: &str = "media.json";

/// The call ID and start time (unix ms) of recording `id`, if `id` is a recording's directory
/// name: `[A-Za-z0-9._-]`, at most 255 bytes, no `..`, not starting with `.`, then `-` and
/// the unix milliseconds.
pub(crate) fn parse_id(id: &str) -> Option<(&str, u64)> {
    if id.is_empty() || id.len() > 255 || id.starts_with('.') || id.contains("..") {
        return None;
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return None;
    }
    let (call, ms) = id.rsplit_once('-')?;
    if call.is_empty() || ms.is_empty() || ms.len() > 19 || !ms.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some((call, ms.parse().ok()?))
}

/// A time filter: unix milliseconds, or RFC 3339 (`2026-12-05T14:55:01Z`,
/// `2026-12-05T16:55:01.123+02:00`).
pub(crate) fn parse_time(s: &str) -> Option<u64> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    let b = s.as_bytes();
    let num = |from: usize, to: usize| -> Option<i64> {
        let t = s.get(from..to)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        for (i, c) in frac.bytes().take(3).take(n).enumerate() {
            millis += i64::from(c - b'0') * [100, 10, 1][i];
        }
        rest = &frac[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let ob = rest.as_bytes();
            if ob.len() != 6 || ob[3] != b':' {
                return None;
            }
            let sign = match ob[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
    };
    // Howard Hinnant's days_from_civil.
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec.min(59) - offset;
    u64::try_from(secs * 1000 + millis).ok()
}

/// `%XX` and `+` decoded; `None` when not UTF-8 or a `%` is not followed by two hex digits.
fn pct_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The filters of `GET /v1/recordings`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Filter {
    pub(crate) call: Option<String>,
    pub(crate) member: Option<String>,
    /// Started at or after (unix ms).
    pub(crate) since: Option<u64>,
    /// Started at or before (unix ms).
    pub(crate) until: Option<u64>,
    pub(crate) limit: usize,
}

fn bad_filter(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_filter", message)
}

/// The query string's filters: `call`, `member`, `since`, `until`, `limit` (each at most once);
/// anything else is 400 `bad_filter`.
pub(crate) fn parse_filter(query: Option<&str>) -> Result<Filter, ApiError> {
    let mut f = Filter {
        limit: DEFAULT_LIMIT,
        ..Filter::default()
    };
    let mut seen = BTreeSet::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = pct_decode(k).ok_or_else(|| bad_filter("the query string is not valid"))?;
        let v = pct_decode(v).ok_or_else(|| bad_filter("the query string is not valid"))?;
        if !seen.insert(k.clone()) {
            return Err(bad_filter(format!("{k}: given more than once")));
        }
        let time = |v: &str| {
            parse_time(v).ok_or_else(|| {
                bad_filter(format!(
                    "{k}: must be unix milliseconds or an RFC 3339 time (2026-12-05T14:55:01Z)"
                ))
            })
        };
        match k.as_str() {
            "call" if !v.is_empty() => f.call = Some(v),
            "member" if !v.is_empty() => f.member = Some(v),
            "since" => f.since = Some(time(&v)?),
            "until" => f.until = Some(time(&v)?),
            "limit" => {
                f.limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| bad_filter(format!("limit: must be 1 to {MAX_LIMIT}")))?;
            }
            "call" | "member" => return Err(bad_filter(format!("{k}: must not be empty"))),
            _ => {
                return Err(bad_filter(format!(
                    "unknown filter {k:?} (call, member, since, until, limit)"
                )))
            }
        }
    }
    if let (Some(s), Some(u)) = (f.since, f.until) {
        if s > u {
            return Err(bad_filter("since: must not be after until"));
        }
    }
    Ok(f)
}

/// The recordings directory, or 404 `recording_off`.
fn dir(st: &AppState) -> Result<PathBuf, ApiError> {
    st.engine
        .recording_dir()
        .map(Path::to_path_buf)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "recording_off",
                "recording is not configured (recording.dir is empty)",
            )
        })
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        format!("cannot read the recordings: {e}"),
    )
}

/// Recording `id`'s directory: 400 `bad_recording_id` for an ID not of the form, 404
/// `unknown_recording` when there is no such directory (a symbolic link is not one).
fn recording_path(dir: &Path, id: &str) -> Result<(PathBuf, String, u64), ApiError> {
    let (call, ms) = parse_id(id).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_recording_id",
            "a recording ID is its directory's name, <call id>-<unix ms> ([A-Za-z0-9._-], no ..)",
        )
    })?;
    let path = dir.join(id);
    match fs::symlink_metadata(&path) {
        Ok(m) if m.is_dir() => Ok((path, call.to_owned(), ms)),
        _ => Err(unknown(id)),
    }
}

fn unknown(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_recording",
        format!("no recording {id}"),
    )
}

/// The regular files of recording directory `path` and of its subdirectories (one level:
/// `export/`), by name, with their sizes. Symbolic links are left out.
fn files(path: &Path) -> io::Result<Vec<body::RecordingFile>> {
    let mut out = Vec::new();
    for e in fs::read_dir(path)? {
        let e = e?;
        let t = e.file_type()?;
        let name = e.file_name().to_string_lossy().into_owned();
        if t.is_file() {
            out.push(body::RecordingFile {
                bytes: e.metadata()?.len(),
                name,
            });
        } else if t.is_dir() {
            for f in fs::read_dir(e.path())? {
                let f = f?;
                if f.file_type()?.is_file() {
                    out.push(body::RecordingFile {
                        bytes: f.metadata()?.len(),
                        name: format!("{name}/{}", f.file_name().to_string_lossy()),
                    });
                }
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The members a transmission log names (`member`, `by`, `transmitter`); a line that is not
/// JSON (the last one, while being written) is skipped. No log: none.
fn members(path: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(f) = fs::File::open(path.join(TRANSMISSION_LOG_FILE)) else {
        return out;
    };
    for line in io::BufReader::new(f).lines() {
        let Ok(line) = line else { break };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        for k in ["member", "by", "transmitter"] {
            if let Some(m) = v.get(k).and_then(|m| m.as_str()) {
                if !out.contains(m) {
                    out.insert(m.to_owned());
                }
            }
        }
    }
    out
}

fn started_at(ms: u64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_millis(ms))
}

/// `GET /v1/recordings`.
pub(crate) async fn list(State(st): State<Arc<AppState>>, uri: Uri) -> Result<Response, ApiError> {
    let f = parse_filter(uri.query())?;
    let dir = dir(&st)?;
    let list = blocking("reading the recordings", move || {
        let mut found: Vec<(u64, String, String)> = Vec::new();
        for e in fs::read_dir(&dir).map_err(internal)? {
            let Ok(e) = e else { continue };
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            let Some((call, ms)) = parse_id(&name) else {
                continue;
            };
            if f.call.as_deref().is_some_and(|c| c != call)
                || f.since.is_some_and(|s| ms < s)
                || f.until.is_some_and(|u| ms > u)
            {
                continue;
            }
            let call = call.to_owned();
            found.push((ms, name, call));
        }
        found.sort_by(|a, b| b.cmp(a));
        let mut recordings = Vec::new();
        let mut more = false;
        for (ms, name, call) in found {
            let path = dir.join(&name);
            if f.member
                .as_ref()
                .is_some_and(|m| !members(&path).contains(m))
            {
                continue;
            }
            if recordings.len() == f.limit {
                more = true;
                break;
            }
            let Ok(files) = files(&path) else {
                continue; // removed meanwhile (retention)
            };
            recordings.push((ms, name, call, files.iter().map(|f| f.bytes).sum()));
        }
        Ok((recordings, more))
    })
    .await?;
    let (recordings, more) = list;
    let recordings = recordings
        .into_iter()
        .map(|(ms, id, call_id, bytes)| body::RecordingItem {
            bytes,
            call_id,
            writing: st.engine.recording_open(&id),
            id,
            started_at: started_at(ms),
            started_ms: ms,
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &body::RecordingList { more, recordings },
    ))
}

/// `GET /v1/recordings/{id}`.
pub(crate) async fn get(
    State(st): State<Arc<AppState>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let dir = dir(&st)?;
    let writing = st.engine.recording_open(&id);
    let rec = blocking("reading the recordings", move || {
        let (path, call_id, ms) = recording_path(&dir, &id)?;
        let files = files(&path).map_err(|_| unknown(&id))?;
        let meta: Option<serde_json::Value> = fs::read(path.join(MEDIA_FILE))
            .ok()
            .and_then(|t| serde_json::from_slice(&t).ok());
        let field = |k: &str| {
            meta.as_ref()
                .and_then(|m| m.get(k))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        Ok(body::Recording {
            bytes: files.iter().map(|f| f.bytes).sum(),
            call_id,
            kind: field("kind"),
            media: files.iter().any(|f| f.name == MEDIA_FILE),
            media_security: field("media_security"),
            members: members(&path).into_iter().collect(),
            started_at: started_at(ms),
            started_ms: ms,
            transmission_log: files.iter().any(|f| f.name == TRANSMISSION_LOG_FILE),
            files,
            id,
            writing,
        })
    })
    .await?;
    Ok(json_response(StatusCode::OK, &rec))
}

/// `DELETE /v1/recordings/{id}`: 409 `recording_in_progress` while it is being written.
pub(crate) async fn delete(
    State(st): State<Arc<AppState>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let dir = dir(&st)?;
    let st2 = st.clone();
    let id = blocking("deleting the recording", move || {
        let (path, _, _) = recording_path(&dir, &id)?;
        // A recording is noted open before its directory is made and never reopened: one
        // that is not open now is finished for good.
        if st2.engine.recording_open(&id) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "recording_in_progress",
                format!("recording {id} is still being written (its call is live)"),
            ));
        }
        match fs::remove_dir_all(&path) {
            Ok(()) => Ok(id),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(unknown(&id)),
            Err(e) => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                format!("cannot remove recording {id}: {e}"),
            )),
        }
    })
    .await?;
    tracing::info!(recording = %id, "recording deleted over the API");
    Ok(json_response(
        StatusCode::OK,
        &body::RecordingDeleted {
            deleted: true,
            id: &id,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn ids_are_directory_names_and_nothing_else() {
        assert_eq!(
            parse_id("push-1-1764946501123"),
            Some(("push-1", 1_764_946_501_123))
        );
        assert_eq!(parse_id("a.b_c-0"), Some(("a.b_c", 0)));
        for bad in [
            "",
            "..",
            ".",
            "../x-1",
            "a/b-1",
            "a..b-1",
            ".hidden-1",
            "nodigits",
            "x-",
            "-1",
            "x-1a",
            "x-1/..",
            "x%2F-1",
            "x\0-1",
            "x -1",
            "x-99999999999999999999",
        ] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
        assert_eq!(parse_id(&format!("{}-1", "a".repeat(300))), None);
    }

    #[test]
    fn times_are_unix_ms_or_rfc3339() {
        assert_eq!(parse_time("1764946501123"), Some(1_764_946_501_123));
        for ms in [0u64, 1_764_946_501_123, 951_782_400_000, 4_102_444_800_999] {
            let t = rfc3339(UNIX_EPOCH + Duration::from_millis(ms));
            assert_eq!(parse_time(&t), Some(ms), "{t}");
        }
        assert_eq!(
            parse_time("2026-12-05T16:55:01.5+02:00"),
            parse_time("2026-12-05T14:55:01.500Z")
        );
        assert_eq!(
            parse_time("2026-12-05T14:55:01Z"),
            parse_time("2026-12-05T14:55:01.000Z")
        );
        let now = SystemTime::now();
        let ms = now.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        assert_eq!(parse_time(&rfc3339(now)), Some(ms));
        for bad in [
            "",
            "yesterday",
            "2026-13-05T14:55:01Z",
            "2026-12-05T24:55:01Z",
            "2026-12-05T14:55:01",
            "2026-12-05T14:55:01.Z",
            "2026-12-05T14:55:01+2:00",
            "-5",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn filters_are_checked() {
        let f = parse_filter(Some("call=c1&member=sip%3Aa%40x&since=5&until=9&limit=3")).unwrap();
        assert_eq!(
            f,
            Filter {
                call: Some("c1".into()),
                member: Some("sip:a@x".into()),
                since: Some(5),
                until: Some(9),
                limit: 3
            }
        );
        assert_eq!(parse_filter(None).unwrap().limit, DEFAULT_LIMIT);
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=x",
            "since=soon",
            "since=9&until=5",
            "call=",
            "call=a&call=b",
            "colour=red",
            "member=%zz",
        ] {
            assert!(parse_filter(Some(bad)).is_err(), "{bad}");
        }
    }
}
