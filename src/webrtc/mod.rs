//! Browsers as members of a call: WHEP viewers (feature `webrtc`).
//!
//! A dispatcher's browser watches a live call over WebRTC: it POSTs an SDP offer
//! (`POST /v1/calls/{id}/whep`, WHEP style, with the API's bearer token), the relay answers
//! as an ICE-lite peer on a UDP socket of its own on the media address, terminates DTLS-SRTP
//! toward the browser and writes the call's video into the browser's track as it forwards it
//! ([`crate::relay::watch`]); `DELETE` on the resource the answer names ends it.
//!
//! **Security.** A browser leg needs the relay to decrypt the call's media and encrypt it
//! again for the browser, so only a `per_leg` call can be watched; an `end_to_end` call is
//! refused with `409 not_watchable` (the relay holds no media key there, and must not get
//! one behind the users' backs). The endpoint is behind the API's bearer token like every
//! other route.
//!
//! WebRTC is [str0m](https://docs.rs/str0m) (sans-IO, the field's Rust model) with its
//! pure-Rust crypto (`rust-crypto`: no C crypto library to build). Each viewer is one thread
//! (and one for its socket): viewers are a few dispatchers, not the forwarding path, and
//! they are bounded by `webrtc.max_viewers`.

mod viewer;

pub use viewer::ViewerCounters;

use crate::control::call::SetupError;
use crate::relay::Engine;
use crossbeam_channel::Sender;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::{Candidate, RtcConfig};

/// How viewers run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebrtcConfig {
    /// The address viewer sockets bind to and offer as their ICE candidate.
    pub address: IpAddr,
    /// Viewers at most, all calls together.
    pub max_viewers: usize,
    /// How long a browser may take to connect (ICE and DTLS) before it is given up.
    pub connect_timeout: Duration,
    /// Watched packets a viewer may have waiting; more are dropped (and counted).
    pub queue: usize,
}

impl WebrtcConfig {
    /// Defaults on `address`.
    pub fn new(address: IpAddr) -> Self {
        WebrtcConfig {
            address,
            max_viewers: 32,
            connect_timeout: Duration::from_secs(20),
            queue: 2048,
        }
    }
}

/// Why a viewer could not be made.
#[derive(Debug)]
pub enum WhepError {
    /// The call cannot be watched (unknown, end_to_end, no video, ...).
    Call(SetupError),
    /// The browser's offer is not usable.
    BadOffer(String),
    /// The call's video codec is not one WebRTC carries (H.264, VP8, VP9, AV1), or the
    /// browser did not offer it.
    Codec(String),
    /// `max_viewers` viewers are running.
    TooMany,
    /// No socket for the viewer.
    Io(std::io::Error),
    /// No viewer with this ID on this call.
    UnknownViewer,
}

impl core::fmt::Display for WhepError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WhepError::Call(e) => e.fmt(f),
            WhepError::BadOffer(m) => write!(f, "the SDP offer is not usable: {m}"),
            WhepError::Codec(m) => f.write_str(m),
            WhepError::TooMany => f.write_str("the relay runs its maximum number of viewers"),
            WhepError::Io(e) => write!(f, "no socket for the viewer: {e}"),
            WhepError::UnknownViewer => f.write_str("no such viewer on this call"),
        }
    }
}

impl std::error::Error for WhepError {}

/// A running viewer, as the registry holds it.
struct Running {
    call_id: String,
    stop: Sender<()>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<ViewerCounters>,
    started: Instant,
    local: SocketAddr,
}

/// One viewer, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "sidecar", derive(serde::Serialize))]
pub struct ViewerInfo {
    /// Its ID (the last part of its resource's path).
    pub id: String,
    /// The call it watches.
    pub call_id: String,
    /// The relay's socket for it.
    pub local: String,
    /// ICE and DTLS are up.
    pub connected: bool,
    /// Packets written to it.
    pub packets: u64,
    /// Watched packets not written to it.
    pub skipped: u64,
    /// Its keyframe requests passed on.
    pub keyframe_requests: u64,
    /// Seconds since it was made.
    pub age_s: u64,
}

/// Every viewer of the relay.
pub struct Viewers {
    engine: Arc<Engine>,
    config: WebrtcConfig,
    running: Mutex<HashMap<String, Running>>,
    next: AtomicU64,
    provider: Arc<str0m::crypto::CryptoProvider>,
}

impl core::fmt::Debug for Viewers {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Viewers")
            .field("config", &self.config)
            .field("running", &self.count())
            .finish_non_exhaustive()
    }
}

/// The str0m codec of a call's encoding name.
fn codec_of(encoding: Option<&str>) -> Option<Codec> {
    let e = encoding?;
    [
        ("H264", Codec::H264),
        ("VP8", Codec::Vp8),
        ("VP9", Codec::Vp9),
        ("AV1", Codec::Av1),
    ]
    .into_iter()
    .find(|(n, _)| e.eq_ignore_ascii_case(n))
    .map(|(_, c)| c)
}

impl Viewers {
    /// Viewers of `engine`'s calls.
    pub fn new(engine: Arc<Engine>, config: WebrtcConfig) -> Self {
        Viewers {
            engine,
            config,
            running: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            provider: Arc::new(str0m::crypto::from_feature_flags()),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &WebrtcConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets the viewers whose thread ended.
    fn reap(&self) {
        let mut done = Vec::new();
        self.lock().retain(|_, r| {
            let finished = r.thread.as_ref().is_none_or(JoinHandle::is_finished);
            if finished {
                done.extend(r.thread.take());
            }
            !finished
        });
        for t in done {
            let _ = t.join();
        }
    }

    /// Viewers running now.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Makes a viewer of call `call_id` for the browser's SDP `offer`: its ID and the SDP
    /// answer.
    pub async fn open(&self, call_id: &str, offer: &str) -> Result<(String, String), WhepError> {
        self.reap();
        if self.count() >= self.config.max_viewers {
            return Err(WhepError::TooMany);
        }
        let offer =
            SdpOffer::from_sdp_string(offer).map_err(|e| WhepError::BadOffer(e.to_string()))?;
        let watch = self
            .engine
            .watch_call_async(call_id, crate::sdp::MediaKind::Video, self.config.queue)
            .await
            .map_err(WhepError::Call)?;
        let codec = codec_of(watch.stream.encoding.as_deref()).ok_or_else(|| {
            WhepError::Codec(format!(
                "the call's video is {}, which WebRTC does not carry (H264, VP8, VP9, AV1)",
                watch
                    .stream
                    .encoding
                    .as_deref()
                    .unwrap_or("of an unnamed format")
            ))
        })?;
        let now = Instant::now();
        let mut cfg = RtcConfig::new()
            .set_crypto_provider(self.provider.clone())
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .clear_codecs();
        cfg = match codec {
            Codec::H264 => cfg.enable_h264(true),
            Codec::Vp8 => cfg.enable_vp8(true),
            Codec::Vp9 => cfg.enable_vp9(true),
            _ => cfg.enable_av1(true),
        };
        let mut rtc = cfg.build(now);
        let socket =
            UdpSocket::bind(SocketAddr::new(self.config.address, 0)).map_err(WhepError::Io)?;
        let local = socket.local_addr().map_err(WhepError::Io)?;
        let cand = Candidate::host(local, "udp").map_err(|e| WhepError::BadOffer(e.to_string()))?;
        rtc.add_local_candidate(cand);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| WhepError::BadOffer(e.to_string()))?;
        let answer = answer.to_sdp_string();
        if !answer
            .lines()
            .any(|l| l.starts_with("m=video") && !l.starts_with("m=video 0 "))
        {
            return Err(WhepError::Codec(format!(
                "the browser's offer has no video it can receive as {codec}"
            )));
        }
        let id = format!("v{}", self.next.fetch_add(1, Ordering::Relaxed));
        let counters = Arc::new(ViewerCounters::default());
        let (stop, stop_rx) = crossbeam_channel::bounded(1);
        let session = viewer::Session {
            rtc,
            socket,
            watch,
            engine: self.engine.clone(),
            call_id: call_id.to_owned(),
            codec,
            counters: counters.clone(),
            stop: stop_rx,
            connect_timeout: self.config.connect_timeout,
        };
        let (cid, vid) = (call_id.to_owned(), id.clone());
        let thread = std::thread::Builder::new()
            .name("whep".into())
            .spawn(move || {
                let why = session.run();
                tracing::info!(call = %cid, viewer = %vid, why, "WHEP viewer ended");
            })
            .map_err(WhepError::Io)?;
        tracing::info!(call = %call_id, viewer = %id, %local, %codec, "WHEP viewer made");
        self.lock().insert(
            id.clone(),
            Running {
                call_id: call_id.to_owned(),
                stop,
                thread: Some(thread),
                counters,
                started: now,
                local,
            },
        );
        Ok((id, answer))
    }

    /// Ends viewer `id` of call `call_id`.
    pub fn close(&self, call_id: &str, id: &str) -> Result<(), WhepError> {
        let r = {
            let mut m = self.lock();
            match m.get(id) {
                Some(r) if r.call_id == call_id => m.remove(id),
                _ => None,
            }
        };
        let mut r = r.ok_or(WhepError::UnknownViewer)?;
        let _ = r.stop.try_send(());
        if let Some(t) = r.thread.take() {
            let _ = t.join();
        }
        Ok(())
    }

    /// The viewers of call `call_id` (every call's: `None`).
    pub fn list(&self, call_id: Option<&str>) -> Vec<ViewerInfo> {
        self.reap();
        let mut v: Vec<ViewerInfo> = self
            .lock()
            .iter()
            .filter(|(_, r)| call_id.is_none_or(|c| c == r.call_id))
            .map(|(id, r)| ViewerInfo {
                id: id.clone(),
                call_id: r.call_id.clone(),
                local: r.local.to_string(),
                connected: r.counters.connected.load(Ordering::Relaxed),
                packets: r.counters.packets.load(Ordering::Relaxed),
                skipped: r.counters.skipped.load(Ordering::Relaxed),
                keyframe_requests: r.counters.keyframe_requests.load(Ordering::Relaxed),
                age_s: r.started.elapsed().as_secs(),
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Ends every viewer (shutdown).
    pub fn close_all(&self) {
        let all: Vec<Running> = self.lock().drain().map(|(_, r)| r).collect();
        for r in &all {
            let _ = r.stop.try_send(());
        }
        for mut r in all {
            if let Some(t) = r.thread.take() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codecs_by_name() {
        assert_eq!(codec_of(Some("h264")), Some(Codec::H264));
        assert_eq!(codec_of(Some("VP8")), Some(Codec::Vp8));
        assert_eq!(codec_of(Some("H265")), None);
        assert_eq!(codec_of(None), None);
    }
}
