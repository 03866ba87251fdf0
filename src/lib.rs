//! # mcvideo-relay
//!
//! Media-plane engine for 3GPP Mission Critical Video (MCVideo) calls, with MCVideo
//! transmission control (TS 24.581):
//!
//! * **one-to-one video push** (TS 23.281 §7.4, TS 24.281 §13.2): a private call in which only
//!   the calling party sends video to the called party, released when the transmission is
//!   completed;
//! * **one-to-one video pull** (TS 23.281 §7.3.2.3): the mirror, only the called party sends
//!   video to the caller;
//! * **group video calls** (TS 23.281 §7.7.1.1): any member the server grants may transmit (up
//!   to Cx at once, with queueing, priorities and pre-emption), and the relay fans its media out
//!   to every receiving member.
//!
//! The design (call kinds, the call procedure mapped to the engine, media security modes,
//! per-packet rules) is in `docs/design.md` in the repository; the transmission control
//! messages, fields, causes and timers as implemented are in `docs/transmission-control.md`.
//!
//! ## Layers
//!
//! | module | what | I/O |
//! |---|---|---|
//! | [`wire`] | zero-copy views of RTP, RTCP (compound walk, feedback), RTP/RTCP demux, and every MCVideo transmission control message (`MCV0/MCV1/MCV2`) as typed messages | none |
//! | [`sdp`] | line-preserving SDP reader and rewriter (only `c=`, `m=` ports, `a=rtcp`, and `a=crypto` in per_leg mode change) | none |
//! | [`keys`], [`srtp`] | SDES suites and master keys; in-place SRTP/SRTCP (AEAD_AES_128_GCM, AES_CM_128_HMAC_SHA1_80) with replay protection | none |
//! | [`control`] | the **sans-IO core**: one [`control::server::TransmissionControlServer`] for every kind of call (a one-to-one call is its private procedure, two members; a group call its group procedure), the lock-free [`control::arbiter::Arbiter`], and the call procedure of one-to-one calls ([`control::call::CallTable`], [`control::call::Call`]) | given time, never reads the clock |
//! | `relay` | the engine: the per-packet rules as plain state (`relay::rules`, sans-IO), one socket layer (`relay::io`: batched UDP, GRO/GSO, epoll), worker threads that own their calls (plain epoll loops, no async runtime), the control plane below them | sockets, clock |
//! | `ha` | high availability (feature `ha`): call records with an opaque body and sealed keys in Redis, heartbeats, a lease with an epoch that fences a dead primary, adoption by a standby | Redis |
//! | `sidecar` | `mcvideo-relay serve`: the HTTP/JSON control API, metrics, config | HTTP |
//!
//! ## The sans-IO contract
//!
//! Every input to the core carries the `now` at which it happened (`handle_control`,
//! `handle_media`, `handle_rtcp_bye`, `handle_timeout`); outputs are polled — `poll_transmit`
//! until `None`, then `poll_event` until `None`, then `poll_timeout` to re-arm the one timer.
//! Nothing in the core touches a socket or a clock (`clippy.toml` forbids `Instant::now`), so a
//! signalling server can drive it on its own runtime and tests run it on virtual time.
//!
//! ## The per-packet path
//!
//! The forwarding side asks the call's arbiter "may this packet from this party pass?" with one
//! atomic load. Everything else a packet needs — the leg's source latch, the SSRC filter, SRTP
//! contexts — lives on the worker thread that owns the call, so the path takes no lock and
//! allocates nothing. Bytes from the network never panic: every reader returns an error that the
//! relay counts by reason and drops.
//!
//! ## Choices the sources leave open
//!
//! Where the sources say nothing or disagree (UNCONFIRMED in `docs/transmission-control.md` in
//! the repository), the choice sits in one named constant or config key, e.g.
//! [`wire::tc::VIDEO_SSRC_FIELD_ID`] (23; 24 is also decoded) and
//! [`control::server::PUSH_RECEPTION_MODE`].
#![cfg_attr(docsrs, feature(doc_cfg))]
// Bytes from the network never panic: no unwrap in the library (tests may).
#![warn(clippy::unwrap_used)]

pub mod control;
#[cfg(feature = "ha")]
pub mod ha;
pub mod ids;
pub mod keys;
#[cfg(feature = "loadgen")]
pub mod loadgen;
mod reader;
#[cfg(feature = "relay")]
pub mod relay;
pub mod sdp;
#[cfg(feature = "sidecar")]
pub mod sidecar;
pub mod srtp;
#[cfg(test)]
mod test_support;
#[cfg(feature = "webrtc")]
#[allow(clippy::disallowed_methods)] // a viewer's thread gives str0m the time
pub mod webrtc;
pub mod wire;

pub use ids::{CallId, Ssrc};
