//! SDP offer/answer reading and line-preserving rewriting (RFC 4566 / RFC 3264, MCVideo flavour).
//!
//! The contract:
//!
//! * [`SessionDescription::parse`] reads an SDP from **untrusted** input. It never panics, refuses
//!   documents over [`MAX_SDP_LEN`] bytes, over [`MAX_LINES`] lines or with more than
//!   [`MAX_MEDIA`] media sections, and reports every malformed line as an [`SdpError`] that names
//!   the line (1-based number and the line itself, cut to 100 characters, with `a=crypto` key
//!   material redacted).
//! * The parser only interprets what the relay needs: `c=`, `m=`, and the media attributes
//!   `a=rtcp`, `a=rtcp-mux`, `a=ssrc`, `a=crypto`, `a=fmtp:MCVideo` (TS 24.581 §14) and the
//!   direction attributes. Everything else is kept as opaque text.
//! * [`SessionDescription::rewrite`] hands the SDP on with only the relay's changes: every `c=`
//!   line becomes `c=IN IP4|IP6 <relay address>`, `m=` ports are replaced, `a=rtcp` gets the relay's
//!   RTCP port, and (only when asked, for per-leg SRTP) the `a=crypto` lines are replaced. **Every
//!   other line passes byte for byte** (e.g. `a=key-mgmt:mikey ...`), and each line keeps its own
//!   line ending (CRLF or LF). Not even `o=` is touched.
//! * [`SessionDescription::with_origin`] changes only the `o=` line's address and address
//!   family, when a proxy asks for it (rtpengine's `replace origin`).
//!
//! ```
//! use mcvideo_relay::sdp::{MediaRewrite, Rewrite, SessionDescription};
//!
//! let offer = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
//!              m=video 40000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";
//! let sdp = SessionDescription::parse(offer)?;
//! assert_eq!(sdp.media()[0].rtp_addr(), Some("192.0.2.10:40000".parse()?));
//! let plan = Rewrite {
//!     connection: "198.51.100.1".parse()?,
//!     media: vec![MediaRewrite::Keep { port: 20000, rtcp_port: None, crypto: None }],
//! };
//! let out = sdp.rewrite(&plan)?;
//! assert!(out.contains("\r\nc=IN IP4 198.51.100.1\r\n"));
//! assert!(out.contains("\r\nm=video 20000 RTP/AVP 96\r\n"));
//! assert!(out.starts_with("v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\n")); // o= untouched
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(clippy::indexing_slicing)]

mod crypto;
mod limits;
mod parse;
mod rewrite;
#[cfg(test)]
mod tests;
mod token;

pub use crypto::Crypto;
pub use limits::{MAX_LINES, MAX_MEDIA, MAX_SDP_LEN};
pub use rewrite::{MediaRewrite, Rewrite};

use limits::ERR_CONTENT_CHARS;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

/// Why an SDP could not be read or rewritten.
///
/// Displayed as ``SDP line 5 `m=video x RTP/AVP 96`: bad port``.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpError {
    /// 1-based number of the offending line; 0 means the whole document (or the rewrite plan).
    pub line: usize,
    /// The offending line (without its line ending), cut to 100 characters. Key material of
    /// `a=crypto` lines is redacted.
    pub content: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl SdpError {
    fn at(line: usize, content: &str, reason: &'static str) -> Self {
        SdpError {
            line,
            content: error_content(content),
            reason,
        }
    }

    fn doc(reason: &'static str) -> Self {
        SdpError {
            line: 0,
            content: String::new(),
            reason,
        }
    }
}

impl fmt::Display for SdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.content.is_empty()) {
            (0, true) => write!(f, "SDP: {}", self.reason),
            (0, false) => write!(f, "SDP `{}`: {}", self.content, self.reason),
            (n, _) => write!(f, "SDP line {} `{}`: {}", n, self.content, self.reason),
        }
    }
}

impl std::error::Error for SdpError {}

/// The media type of an `m=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "ha",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum MediaKind {
    /// `m=audio`.
    Audio,
    /// `m=video`.
    Video,
    /// `m=application <port> udp MCVideo` (transmission control, TS 24.581 §12).
    Control,
    /// Any other media (the media token as written, e.g. `"application"` or `"text"`).
    Other(String),
}

/// Media direction attribute (RFC 4566 §6 / RFC 3264 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Direction {
    /// `a=sendrecv` (the default when no direction attribute is given).
    #[default]
    SendRecv,
    /// `a=sendonly`.
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

impl Direction {
    /// Whether the party that wrote this SDP sends media on the stream.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the party that wrote this SDP receives media on the stream.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    fn from_attr(s: &str) -> Option<Self> {
        match s {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }
}

/// `a=rtcp:<port> [IN IP4|IP6 <addr>]` (RFC 3605).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcpAttr {
    /// RTCP port.
    pub port: u16,
    /// RTCP address, when the attribute carries one.
    pub addr: Option<IpAddr>,
}

/// Parameters of `a=fmtp:MCVideo` (TS 24.581 §14). Unknown parameters are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct McVideoFmtp {
    /// `mc_queueing`: the client supports queueing of transmission requests.
    pub mc_queueing: bool,
    /// `mc_priority=<n>`: requested transmission priority.
    pub mc_priority: Option<u8>,
    /// `mc_reception_priority=<n>`: requested reception priority.
    pub mc_reception_priority: Option<u8>,
    /// `mc_granted`: the implicit transmission request was granted.
    pub mc_granted: bool,
    /// `mc_implicit_request`: the offerer asks to transmit as the call is set up.
    pub mc_implicit_request: bool,
    /// `mc_audio_ssrc=<n>`: SSRC for the audio of the transmission.
    pub mc_audio_ssrc: Option<u32>,
    /// `mc_video_ssrc=<n>`: SSRC for the video of the transmission.
    pub mc_video_ssrc: Option<u32>,
    /// `mc_transmission_ssrc=<n>`: SSRC of the transmission control channel.
    pub mc_transmission_ssrc: Option<u32>,
}

/// One media section (`m=` line and the lines up to the next `m=`), as far as the relay needs it.
#[derive(Debug, Clone)]
pub struct Media {
    /// Media type.
    pub kind: MediaKind,
    /// Port of the `m=` line (0 = rejected/disabled stream).
    pub port: u16,
    /// Transport protocol as written, e.g. `"RTP/AVP"`, `"RTP/SAVP"`, `"udp"`.
    pub proto: String,
    /// Media formats (payload types, or `MCVideo`), at least one.
    pub formats: Vec<String>,
    /// Effective connection address: media-level `c=` else session-level `c=`.
    pub connection: Option<IpAddr>,
    /// `a=rtcp:<port> [IN IP4 <addr>]`, if present.
    pub rtcp: Option<RtcpAttr>,
    /// `a=rtcp-mux` present.
    pub rtcp_mux: bool,
    /// Distinct SSRCs from `a=ssrc:<id> ...`, in order of appearance.
    pub ssrcs: Vec<u32>,
    /// `a=crypto` lines, in order.
    pub crypto: Vec<Crypto>,
    /// `a=fmtp:MCVideo ...`, if present.
    pub mcvideo: Option<McVideoFmtp>,
    /// RTP clock rate of the first format, from its `a=rtpmap` (e.g. 90000 for `H264/90000`).
    pub clock_rate: Option<u32>,
    /// The encoding name of the first format, from its `a=rtpmap` (e.g. `H264`, `VP8`): what
    /// a WebRTC viewer of the stream is offered.
    pub encoding: Option<String>,
    /// Media-level direction attribute, else the session-level one, else `SendRecv`.
    pub direction: Direction,
    /// 1-based line number of the `m=` line.
    pub line: usize,
}

impl Media {
    /// Where the peer says it receives RTP: connection + port.
    ///
    /// `None` if the port is 0, there is no address, or the address is unspecified
    /// (`0.0.0.0` / `::`, the old "hold" convention): nothing may be sent there.
    pub fn rtp_addr(&self) -> Option<SocketAddr> {
        let ip = self.connection?;
        if self.port == 0 || ip.is_unspecified() {
            return None;
        }
        Some(SocketAddr::new(ip, self.port))
    }

    /// Where the peer receives RTCP: with `a=rtcp-mux` the RTP address; with `a=rtcp` that port
    /// (and its address if given, else the connection address); else RTP port + 1.
    ///
    /// `None` when [`rtp_addr`](Self::rtp_addr) is `None`, or the RTCP port would be 0 or beyond
    /// 65535, or the RTCP address is unspecified.
    pub fn rtcp_addr(&self) -> Option<SocketAddr> {
        let rtp = self.rtp_addr()?;
        if self.rtcp_mux {
            return Some(rtp);
        }
        let (ip, port) = match self.rtcp {
            Some(RtcpAttr { port, addr }) => (addr.unwrap_or(rtp.ip()), port),
            None => (rtp.ip(), rtp.port().checked_add(1)?),
        };
        if port == 0 || ip.is_unspecified() {
            return None;
        }
        Some(SocketAddr::new(ip, port))
    }
}

// ---------------------------------------------------------------------------------------------
// Internal representation
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eol {
    CrLf,
    Lf,
    None,
}

impl Eol {
    fn as_str(self) -> &'static str {
        match self {
            Eol::CrLf => "\r\n",
            Eol::Lf => "\n",
            Eol::None => "",
        }
    }
}

#[derive(Clone)]
struct Line {
    /// The line without its line ending.
    text: String,
    eol: Eol,
}

/// Where a media section's interesting lines are (indices into `lines`).
#[derive(Debug, Clone)]
struct Section {
    /// Index of the `m=` line.
    start: usize,
    /// One past the last line of the section (trailing blank lines excluded).
    end: usize,
    /// Byte range of the port token (with any `/count`) in the `m=` line text.
    port_span: (usize, usize),
    /// Index of the first `a=` line of the section.
    first_attr: Option<usize>,
    /// Index of the `a=rtcp` line.
    rtcp_line: Option<usize>,
    /// Indices of the `a=crypto` lines.
    crypto_lines: Vec<usize>,
}

/// A parsed SDP that keeps its original lines, so that it can be handed on with only the
/// relay's changes (see the [module documentation](crate::sdp)).
///
/// `Display` gives back the original text unchanged. `Debug` does not show the lines (they may
/// carry key material).
#[derive(Clone)]
pub struct SessionDescription {
    lines: Vec<Line>,
    /// One past the last non-blank line.
    content_end: usize,
    session_connection: Option<IpAddr>,
    session_direction: Direction,
    media: Vec<Media>,
    sections: Vec<Section>,
}

impl fmt::Debug for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionDescription")
            .field("lines", &self.lines.len())
            .field("session_connection", &self.session_connection)
            .field("session_direction", &self.session_direction)
            .field("media", &self.media)
            .finish()
    }
}

impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.lines {
            f.write_str(&l.text)?;
            f.write_str(l.eol.as_str())?;
        }
        Ok(())
    }
}

/// A media section being read.
struct Building {
    media: Media,
    section: Section,
    /// First media-level `c=` address.
    conn: Option<IpAddr>,
    /// Media-level direction attribute.
    direction: Option<Direction>,
}

impl SessionDescription {
    /// The media sections, in order.
    pub fn media(&self) -> &[Media] {
        &self.media
    }

    /// Session-level c= address, if any.
    pub fn session_connection(&self) -> Option<IpAddr> {
        self.session_connection
    }

    /// Session-level direction attribute (default `SendRecv`); media-level ones override it
    /// in [`Media::direction`].
    pub fn session_direction(&self) -> Direction {
        self.session_direction
    }
}

/// The offending line for an error, cut to 100 characters, with anything that may be key
/// material redacted ([`crate::keys::redact`]).
fn error_content(line: &str) -> String {
    crate::keys::redact(line)
        .chars()
        .take(ERR_CONTENT_CHARS)
        .collect()
}
