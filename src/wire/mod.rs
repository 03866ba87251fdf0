//! Wire formats: zero-copy, allocation-free views over bytes from the network.
//!
//! The contract, borrowed from smoltcp's `wire` module:
//!
//! * A *packet view* (`RtpPacket<T>`, `RtcpPacket<T>`) wraps any `T: AsRef<[u8]>`.
//!   `new_checked` validates the buffer once, so every getter afterwards is infallible and cheap.
//!   Setters exist only when `T: AsMut<[u8]>`.
//! * Typed messages (`tc::TcMessage`) borrow their variable-length fields from the buffer and
//!   emit into a caller-owned buffer.
//! * Bytes from the network **never panic**: every malformed input is a [`Error`], which callers
//!   count and drop. Protocol numbers are open enums that keep unknown values.
#![warn(clippy::indexing_slicing)]

use core::fmt;

pub mod demux;
pub mod rtcp;
pub mod rtp;
pub mod tc;

/// Why a buffer could not be read as the packet it was claimed to be.
///
/// `Copy` and cheap: the hot path counts it and drops the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// The buffer ends before the structure it must hold.
    Truncated(&'static str),
    /// A length field points past the end of the buffer or disagrees with it.
    BadLength(&'static str),
    /// The RTP/RTCP version is not 2.
    BadVersion,
    /// A field holds a value the format does not allow.
    Malformed(&'static str),
    /// The output buffer is too small for the message being emitted.
    BufferTooSmall,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated(what) => write!(f, "truncated: {what}"),
            Error::BadLength(what) => write!(f, "bad length: {what}"),
            Error::BadVersion => f.write_str("version is not 2"),
            Error::Malformed(what) => write!(f, "malformed: {what}"),
            Error::BufferTooSmall => f.write_str("output buffer too small"),
        }
    }
}

impl std::error::Error for Error {}

/// Result of reading or writing wire formats.
pub type Result<T> = core::result::Result<T, Error>;
