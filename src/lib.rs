//! # mcvideo-relay
//!
//! Media-plane engine for 3GPP Mission Critical Video **one-to-one video push** (TS 23.281 §7.4,
//! TS 24.281 §13.2, TS 24.581): a private call in which only the calling party sends video to the
//! called party, and the call is released when the transmission is completed.
//!
//! (Design overview: see the README; this page is completed as modules land.)
#![cfg_attr(docsrs, feature(doc_cfg))]
// Bytes from the network never panic: no unwrap in the library (tests may).
#![warn(clippy::unwrap_used)]

pub mod control;
pub mod keys;
#[cfg(feature = "relay")]
pub mod relay;
pub mod sdp;
#[cfg(feature = "sidecar")]
pub mod sidecar;
pub mod srtp;
pub mod wire;
