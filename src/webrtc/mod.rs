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

mod peer;
mod viewer;
mod whip;

pub use peer::{BrowserCounters, LATENCY_BUCKETS};

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
use str0m::{Candidate, Rtc, RtcConfig};

/// How viewers run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebrtcConfig {
    /// The address viewer sockets bind to and offer as their ICE candidate.
    pub address: IpAddr,
    /// Browsers at most, all calls together.
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
    /// The leg has too many commands waiting: try again.
    Busy,
}

impl core::fmt::Display for WhepError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WhepError::Call(e) => e.fmt(f),
            WhepError::BadOffer(m) => write!(f, "the SDP offer is not usable: {m}"),
            WhepError::Codec(m) => f.write_str(m),
            WhepError::TooMany => f.write_str("the relay runs its maximum number of viewers"),
            WhepError::Io(e) => write!(f, "no socket for the viewer: {e}"),
            WhepError::UnknownViewer => f.write_str("no such browser leg (on this call)"),
            WhepError::Busy => f.write_str("the browser leg is busy: try again"),
        }
    }
}

impl std::error::Error for WhepError {}

/// What a browser leg is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "sidecar", derive(serde::Serialize))]
#[cfg_attr(feature = "sidecar", serde(rename_all = "snake_case"))]
pub enum BrowserRole {
    /// It watches the call (WHEP).
    Viewer,
    /// It transmits into the call (WHIP).
    Publisher,
}

/// How a running leg is told to end.
enum Control {
    Viewer(Sender<()>),
    Publisher(Sender<whip::Cmd>),
}

/// A running browser leg, as the registry holds it.
struct Running {
    call_id: String,
    control: Control,
    thread: Option<JoinHandle<()>>,
    counters: Arc<BrowserCounters>,
    started: Instant,
    local: SocketAddr,
    /// A publisher's push: the SDP offer for the callee (what the signalling server delivers).
    callee_offer: Option<String>,
}

impl Running {
    fn role(&self) -> BrowserRole {
        match self.control {
            Control::Viewer(_) => BrowserRole::Viewer,
            Control::Publisher(_) => BrowserRole::Publisher,
        }
    }

    fn stop(&mut self) {
        match &self.control {
            Control::Viewer(s) => {
                let _ = s.try_send(());
            }
            Control::Publisher(s) => {
                let _ = s.try_send(whip::Cmd::Stop);
            }
        }
    }

    fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One browser leg, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "sidecar", derive(serde::Serialize))]
pub struct BrowserInfo {
    /// Its ID (the last part of its resource's path).
    pub id: String,
    /// Viewer or publisher.
    pub role: BrowserRole,
    /// The call it is in.
    pub call_id: String,
    /// The relay's socket toward the browser.
    pub local: String,
    /// ICE and DTLS are up.
    pub connected: bool,
    /// A publisher holds the grant.
    pub granted: bool,
    /// Packets passed on (to the browser, or into the call).
    pub packets: u64,
    /// Packets not passed on.
    pub skipped: u64,
    /// Keyframe requests (from a viewer's browser, or to a publisher's).
    pub keyframe_requests: u64,
    /// Seconds since it was made.
    pub age_s: u64,
    /// A viewer's in-relay latency (a packet's arrival at the relay to its datagram leaving
    /// toward the browser), µs: the median and the 99th percentile, each the upper edge of
    /// its power-of-two bucket. `None` before the first packet.
    pub latency_p50_us: Option<u64>,
    /// See `latency_p50_us`.
    pub latency_p99_us: Option<u64>,
    /// A publisher's push: the SDP offer for the callee.
    #[cfg_attr(feature = "sidecar", serde(skip_serializing_if = "Option::is_none"))]
    pub callee_offer: Option<String>,
}

/// Where a publisher transmits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishTo {
    /// A new one-to-one video push (`per_leg`) from the browser to `callee_id`; the callee
    /// accepts it as any push (`POST /v1/calls/{id}/answer`).
    Push {
        /// The call's ID (`None`: one is made).
        call_id: Option<String>,
        /// The browser's MCVideo ID.
        caller_id: String,
        /// Who receives.
        callee_id: String,
    },
    /// A running group call, which the browser joins as a member that may transmit.
    Group {
        /// The group call.
        call_id: String,
        /// The browser's MCVideo ID.
        mcvideo_id: String,
        /// Its transmission priority.
        priority: u8,
    },
}

/// A publisher made: its ID, its call, the SDP answer for the browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The publisher's ID.
    pub id: String,
    /// The call it transmits into.
    pub call_id: String,
    /// The SDP answer for the browser.
    pub answer: String,
}

/// A leg being made, counted against `max_viewers` until it runs (or fails).
struct Admitted<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Every browser leg of the relay: viewers (WHEP) and publishers (WHIP).
pub struct Browsers {
    engine: Arc<Engine>,
    config: WebrtcConfig,
    running: Mutex<HashMap<String, Running>>,
    /// Legs being made.
    making: std::sync::atomic::AtomicUsize,
    next: AtomicU64,
    provider: Arc<str0m::crypto::CryptoProvider>,
}

impl core::fmt::Debug for Browsers {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Browsers")
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

/// A bridge's AES_CM_128_HMAC_SHA1_80 master key and salt, and its SSRC: random, from the
/// operating system's generator (the SSRC drawn apart from the key).
fn random_key() -> Result<(crate::keys::MasterKey, u32), WhepError> {
    use ring::rand::SecureRandom;
    let rng = ring::rand::SystemRandom::new();
    let no_random = |_| WhepError::Io(std::io::Error::other("no random numbers"));
    let mut m = vec![0u8; 30];
    rng.fill(&mut m).map_err(no_random)?;
    let mut s = [0u8; 4];
    rng.fill(&mut s).map_err(no_random)?;
    let key = crate::keys::MasterKey::new(crate::keys::SrtpSuite::AesCm128HmacSha1_80, m)
        .map_err(|e| WhepError::Io(std::io::Error::other(e.to_string())))?;
    Ok((key, u32::from_be_bytes(s).max(1)))
}

impl Browsers {
    /// Browser legs of `engine`'s calls.
    pub fn new(engine: Arc<Engine>, config: WebrtcConfig) -> Self {
        Browsers {
            engine,
            config,
            running: Mutex::new(HashMap::new()),
            making: std::sync::atomic::AtomicUsize::new(0),
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

    /// Forgets the legs whose thread ended.
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

    /// Browser legs running now.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Room for one more leg (held until the returned guard drops: legs being made count
    /// against `max_viewers` too), and its ID.
    fn admit(&self, prefix: char) -> Result<(String, Admitted<'_>), WhepError> {
        self.reap();
        let held = self.making.fetch_add(1, Ordering::SeqCst) + 1;
        let guard = Admitted(&self.making);
        if self.count() + held > self.config.max_viewers {
            return Err(WhepError::TooMany);
        }
        let id = format!("{prefix}{}", self.next.fetch_add(1, Ordering::Relaxed));
        Ok((id, guard))
    }

    /// An ICE-lite str0m peer for `codec` with a socket of its own, and the browser's
    /// `offer` accepted: the peer, its socket and the SDP answer.
    fn peer(&self, codec: Codec, offer: &str) -> Result<(Rtc, UdpSocket, String), WhepError> {
        let offer =
            SdpOffer::from_sdp_string(offer).map_err(|e| WhepError::BadOffer(e.to_string()))?;
        let mut cfg = RtcConfig::new()
            .set_crypto_provider(self.provider.clone())
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .clear_codecs();
        // Opus too, never written: a browser that offers audio besides video gets a valid
        // answer (an audio line with no format would be refused by it).
        cfg = cfg.enable_opus(true, false);
        cfg = match codec {
            Codec::H264 => cfg.enable_h264(true),
            Codec::Vp8 => cfg.enable_vp8(true),
            Codec::Vp9 => cfg.enable_vp9(true),
            _ => cfg.enable_av1(true),
        };
        let mut rtc = cfg.build(Instant::now());
        let socket =
            UdpSocket::bind(SocketAddr::new(self.config.address, 0)).map_err(WhepError::Io)?;
        let local = socket.local_addr().map_err(WhepError::Io)?;
        let cand = Candidate::host(local, "udp").map_err(|e| WhepError::BadOffer(e.to_string()))?;
        rtc.add_local_candidate(cand);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| WhepError::BadOffer(e.to_string()))?
            .to_sdp_string();
        if !answer
            .lines()
            .any(|l| l.starts_with("m=video") && !l.starts_with("m=video 0 "))
        {
            return Err(WhepError::Codec(format!(
                "the browser's offer has no video the relay can take as {codec}"
            )));
        }
        Ok((rtc, socket, answer))
    }

    /// Leg `id`'s peer, its socket read by a thread of its own.
    fn peer_thread(
        &self,
        rtc: Rtc,
        socket: UdpSocket,
        counters: &Arc<BrowserCounters>,
        id: &str,
    ) -> Result<peer::Peer, WhepError> {
        let timeout = self.config.connect_timeout;
        peer::Peer::start(
            rtc,
            socket,
            counters.clone(),
            timeout,
            &format!("{id}-socket"),
        )
        .map_err(|e| WhepError::Io(std::io::Error::other(e)))
    }

    /// Starts leg `id`'s thread running `run` and registers it.
    fn start(
        &self,
        id: &str,
        call_id: &str,
        (control, counters, local, callee_offer): (
            Control,
            Arc<BrowserCounters>,
            SocketAddr,
            Option<String>,
        ),
        run: impl FnOnce() -> &'static str + Send + 'static,
    ) -> Result<(), WhepError> {
        let (cid, vid) = (call_id.to_owned(), id.to_owned());
        let thread = std::thread::Builder::new()
            .name(format!("browser-{id}"))
            .spawn(move || {
                let why = run();
                tracing::info!(call = %cid, leg = %vid, why, "browser leg ended");
            })
            .map_err(WhepError::Io)?;
        self.lock().insert(
            id.to_owned(),
            Running {
                call_id: call_id.to_owned(),
                control,
                thread: Some(thread),
                counters,
                started: Instant::now(),
                local,
                callee_offer,
            },
        );
        Ok(())
    }

    /// Makes a viewer of call `call_id` for the browser's SDP `offer`: its ID and the SDP
    /// answer.
    pub async fn open(&self, call_id: &str, offer: &str) -> Result<(String, String), WhepError> {
        let (id, _admitted) = self.admit('v')?;
        // A malformed offer is refused before the call is touched.
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
        let (rtc, socket, answer) = self.peer(codec, offer)?;
        let local = socket.local_addr().map_err(WhepError::Io)?;
        let counters = Arc::new(BrowserCounters::default());
        let (stop, stop_rx) = crossbeam_channel::bounded(1);
        let peer = self.peer_thread(rtc, socket, &counters, &id)?;
        let session = viewer::Session {
            peer,
            watch,
            engine: self.engine.clone(),
            call_id: call_id.to_owned(),
            codec,
            stop: stop_rx,
            last_ask: None,
        };
        let parts = (Control::Viewer(stop), counters, local, None);
        self.start(&id, call_id, parts, move || session.run())?;
        tracing::info!(call = %call_id, viewer = %id, %local, %codec, "WHEP viewer made");
        Ok((id, answer))
    }

    /// Makes a publisher for the browser's SDP `offer` that transmits into `to` (H.264): its
    /// ID, its call and the SDP answer for the browser. A push is created here (the callee's
    /// offer is in [`Self::list`]); a group is joined.
    pub async fn publish(&self, to: PublishTo, offer: &str) -> Result<Published, WhepError> {
        let (id, _admitted) = self.admit('p')?;
        SdpOffer::from_sdp_string(offer).map_err(|e| WhepError::BadOffer(e.to_string()))?;
        self.may_publish(&to).await?;
        let (rtc, socket, answer) = self.peer(Codec::H264, offer)?;
        let local = socket.local_addr().map_err(WhepError::Io)?;
        let bind = || UdpSocket::bind(SocketAddr::new(self.config.address, 0));
        let (media, control) = (
            bind().map_err(WhepError::Io)?,
            bind().map_err(WhepError::Io)?,
        );
        let (key, ssrc) = random_key()?;
        let sdp = whip::bridge_sdp(
            &format!("whip-{id}"),
            media.local_addr().map_err(WhepError::Io)?,
            control.local_addr().map_err(WhepError::Io)?,
            &key,
            ssrc,
        );
        let member = match &to {
            PublishTo::Group { mcvideo_id, .. } => Some(mcvideo_id.clone()),
            PublishTo::Push { .. } => None,
        };
        let (call_id, relay, callee_offer) = self.enter_call(to, sdp).await?;
        let counters = Arc::new(BrowserCounters::default());
        let (cmds, cmds_rx) = crossbeam_channel::bounded(16);
        let peer = self.peer_thread(rtc, socket, &counters, &id)?;
        let live = {
            let (engine, cid) = (self.engine.clone(), call_id.clone());
            Box::new(move || engine.has_call(&cid))
        };
        let bridge = whip::Bridge::new(peer, (media, control), &key, ssrc, relay, cmds_rx, live);
        let parts = (
            Control::Publisher(cmds),
            counters.clone(),
            local,
            callee_offer,
        );
        // When the browser goes, so does its member. A push that held the grant completes with
        // the End Request the bridge sends last (the call procedure releases it); one that
        // never got it is released here. A group member leaves.
        let (engine, cid, c) = (self.engine.clone(), call_id.clone(), counters.clone());
        let run = move || {
            let why = bridge.run();
            let gone = match &member {
                Some(m) => engine.remove_group_member(&cid, m).map(drop),
                None if c.granted.load(Ordering::Relaxed) => Ok(()),
                None => engine.release_call(&cid).map(drop),
            };
            if let Err(e) = gone {
                tracing::debug!(call = %cid, error = %e, "the browser's member was already gone");
            }
            why
        };
        self.start(&id, &call_id, parts, run)?;
        tracing::info!(call = %call_id, publisher = %id, %local, "WHIP publisher made");
        Ok(Published {
            id,
            call_id,
            answer,
        })
    }

    /// A browser transmits into a group only in per_leg: the bridge keys its own leg, and the
    /// other members can decrypt it only where the relay re-encrypts for them.
    async fn may_publish(&self, to: &PublishTo) -> Result<(), WhepError> {
        let PublishTo::Group { call_id, .. } = to else {
            return Ok(());
        };
        let g = self
            .engine
            .group_call_async(call_id)
            .await
            .map_err(WhepError::Call)?;
        if g.media_security == crate::control::MediaSecurity::PerLeg {
            return Ok(());
        }
        Err(WhepError::Call(SetupError::NotWatchable {
            call_id: call_id.clone(),
            reason: "a browser can transmit only into a per_leg call: in end_to_end the members \
                     share a key the relay does not hold"
                .into(),
        }))
    }

    /// The bridge (offering `sdp`) enters its call: a push is created, a group joined. The
    /// call's ID, the relay's leg toward the bridge where it is known now (a group member's
    /// answer; a push's caller learns it when the callee accepts) and a push's offer for the
    /// callee.
    async fn enter_call(
        &self,
        to: PublishTo,
        sdp: String,
    ) -> Result<(String, Option<whip::RelayLeg>, Option<String>), WhepError> {
        Ok(match to {
            PublishTo::Push {
                call_id,
                caller_id,
                callee_id,
            } => {
                let offer = self
                    .engine
                    .create_call(crate::control::call::CreateCall {
                        call_id: call_id.map(Into::into),
                        caller_id,
                        caller_sdp: sdp,
                        callee_id,
                        video_push: true,
                        video_pull: false,
                        commencement_mode: None,
                        media_security: crate::control::MediaSecurity::PerLeg,
                        caller_tc_key: None,
                        callee_interface: None,
                        caller_interface: None,
                    })
                    .map_err(WhepError::Call)?;
                (offer.call_id.to_string(), None, Some(offer.sdp_offer))
            }
            PublishTo::Group {
                call_id,
                mcvideo_id,
                priority,
            } => {
                let spec = crate::relay::GroupMemberSpec {
                    mcvideo_id,
                    sdp_offer: sdp,
                    priority,
                    receive_only: false,
                    tc_key: None,
                };
                let a = self
                    .engine
                    .add_group_member_async(&call_id, spec)
                    .await
                    .map_err(WhepError::Call)?;
                (call_id, whip::relay_leg(&a.sdp_answer), None)
            }
        })
    }

    /// The callee of a publisher's push accepted: the relay's answer for the caller (the
    /// bridge) says where to send. The sidecar calls this after `POST /v1/calls/{id}/answer`;
    /// a server that links the engine calls it with [`Engine::accept_call`]'s answer.
    pub fn caller_answered(&self, call_id: &str, sdp_answer: &str) {
        let Some(leg) = whip::relay_leg(sdp_answer) else {
            return;
        };
        for r in self.lock().values() {
            if let (true, Control::Publisher(tx)) = (r.call_id == call_id, &r.control) {
                let _ = tx.try_send(whip::Cmd::Relay(leg.clone()));
            }
        }
    }

    /// Asks publisher `id` to send Transmission Request (`request`) or End Request.
    pub fn transmission(&self, id: &str, request: bool) -> Result<(), WhepError> {
        let m = self.lock();
        match m.get(id).map(|r| &r.control) {
            Some(Control::Publisher(tx)) => {
                let cmd = if request {
                    whip::Cmd::Request
                } else {
                    whip::Cmd::End
                };
                tx.try_send(cmd).map_err(|_| WhepError::Busy)
            }
            _ => Err(WhepError::UnknownViewer),
        }
    }

    /// Ends leg `id` in role `role`; with `call_id`, only if it is in that call.
    pub fn close(
        &self,
        call_id: Option<&str>,
        role: BrowserRole,
        id: &str,
    ) -> Result<(), WhepError> {
        let r = {
            let mut m = self.lock();
            match m.get(id) {
                Some(r) if call_id.is_none_or(|c| r.call_id == c) && r.role() == role => {
                    m.remove(id)
                }
                _ => None,
            }
        };
        let mut r = r.ok_or(WhepError::UnknownViewer)?;
        r.stop();
        r.join();
        Ok(())
    }

    /// The legs of call `call_id` (every call's: `None`), or leg `id` alone.
    pub fn list(&self, call_id: Option<&str>, id: Option<&str>) -> Vec<BrowserInfo> {
        self.reap();
        let mut v: Vec<BrowserInfo> = self
            .lock()
            .iter()
            .filter(|(i, r)| call_id.is_none_or(|c| c == r.call_id) && id.is_none_or(|x| x == *i))
            .map(|(i, r)| {
                let c = &r.counters;
                BrowserInfo {
                    id: i.clone(),
                    role: r.role(),
                    call_id: r.call_id.clone(),
                    local: r.local.to_string(),
                    connected: c.connected.load(Ordering::Relaxed),
                    granted: c.granted.load(Ordering::Relaxed),
                    packets: c.packets.load(Ordering::Relaxed),
                    skipped: c.skipped.load(Ordering::Relaxed),
                    keyframe_requests: c.keyframe_requests.load(Ordering::Relaxed),
                    age_s: r.started.elapsed().as_secs(),
                    latency_p50_us: c.latency_quantile(0.5),
                    latency_p99_us: c.latency_quantile(0.99),
                    callee_offer: r.callee_offer.clone(),
                }
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Ends every leg (shutdown).
    pub fn close_all(&self) {
        let mut all: Vec<Running> = self.lock().drain().map(|(_, r)| r).collect();
        for r in &mut all {
            r.stop();
        }
        for r in &mut all {
            r.join();
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
