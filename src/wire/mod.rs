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

/// Reads a big-endian `u16` at `at`, or 0 if the buffer ends first.
#[inline]
fn be16(buf: &[u8], at: usize) -> u16 {
    buf.get(at..)
        .and_then(<[u8]>::first_chunk)
        .map_or(0, |b| u16::from_be_bytes(*b))
}

/// Reads a big-endian `u32` at `at`, or `None` if the buffer ends first.
#[inline]
fn be32(buf: &[u8], at: usize) -> Option<u32> {
    buf.get(at..)
        .and_then(<[u8]>::first_chunk)
        .map(|b| u32::from_be_bytes(*b))
}

/// What the packet views (`RtpPacket`, `RtcpPacket`: `V` in the top bits of the first octet,
/// a `buffer: T` field, a `check_len`) share: the two constructors (the doc of
/// `new_unchecked` is the invocation's), the byte reader and the version.
macro_rules! packet_view_basics {
    ($(#[$new_unchecked_doc:meta])*) => {
        $(#[$new_unchecked_doc])*
        #[inline]
        pub const fn new_unchecked(buffer: T) -> Self {
            Self { buffer }
        }

        /// Wraps a buffer after [`check_len`](Self::check_len) accepts it.
        ///
        /// # Errors
        ///
        /// Whatever [`check_len`](Self::check_len) returns.
        #[inline]
        pub fn new_checked(buffer: T) -> Result<Self> {
            let packet = Self::new_unchecked(buffer);
            packet.check_len()?;
            Ok(packet)
        }

        #[inline]
        fn byte(&self, at: usize) -> u8 {
            self.buffer.as_ref().get(at).copied().unwrap_or(0)
        }

        /// Version field `V` (2 for a checked packet).
        #[inline]
        pub fn version(&self) -> u8 {
            self.byte(0) >> 6
        }
    };
}

/// A protocol number as an open enum: one table gives the variants, `From<repr>` (a number
/// the table does not list is `Unknown`, kept as received) and the lossless way back.
macro_rules! open_enum {
    ($(#[$doc:meta])* pub enum $name:ident($repr:ty) { $( $(#[$vdoc:meta])* $variant:ident = $val:literal, )* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vdoc])* $variant, )*
            /// A value the tables do not list, kept as received.
            Unknown($repr),
        }
        impl From<$repr> for $name {
            #[inline]
            fn from(v: $repr) -> Self {
                match v { $( $val => $name::$variant, )* other => $name::Unknown(other) }
            }
        }
        impl From<$name> for $repr {
            #[inline]
            fn from(v: $name) -> $repr {
                match v { $( $name::$variant => $val, )* $name::Unknown(other) => other }
            }
        }
    };
}

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
