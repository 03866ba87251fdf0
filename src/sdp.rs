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

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Largest SDP text accepted, in bytes.
pub const MAX_SDP_LEN: usize = 64 * 1024;
/// Largest number of media sections (`m=` lines) accepted.
pub const MAX_MEDIA: usize = 64;
/// Largest number of lines accepted (including trailing blank lines).
pub const MAX_LINES: usize = 4096;

/// Characters of the offending line kept in an [`SdpError`].
const ERR_CONTENT_CHARS: usize = 100;

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

/// An `a=crypto` line (RFC 4568 SDES).
///
/// `Debug` redacts the key material.
#[derive(Clone, PartialEq, Eq)]
pub struct Crypto {
    /// The crypto tag.
    pub tag: u32,
    /// The crypto suite, e.g. `AEAD_AES_128_GCM` or `AES_CM_128_HMAC_SHA1_80`.
    pub suite: String,
    /// The text after `inline:` up to `|`, `;` or a space: base64 master key and salt.
    pub key_b64: String,
    /// The whole attribute value after `a=crypto:`, as written.
    pub raw: String,
}

impl fmt::Debug for Crypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Crypto")
            .field("tag", &self.tag)
            .field("suite", &self.suite)
            .field("key_b64", &"<redacted>")
            .field("raw", &"<redacted>")
            .finish()
    }
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

/// What to do with an SDP before handing it to the other side: see [`SessionDescription::rewrite`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// The relay's address, written into every `c=` line.
    pub connection: IpAddr,
    /// One entry per media section, in order (`len()` must equal the SDP's media count).
    pub media: Vec<MediaRewrite>,
}

/// What to do with one media section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaRewrite {
    /// Keep the section, with relay port(s); `crypto: Some(values)` replaces every a=crypto line
    /// of the section with `a=crypto:<value>` lines at the position of the first original one
    /// (or at the end of the section if none).
    ///
    /// `rtcp_port: Some(p)` rewrites an existing `a=rtcp` line to port `p` (and to the relay
    /// address if the line carried an address); without an `a=rtcp` line, and when the section is
    /// not `a=rtcp-mux` and `p != port + 1`, `a=rtcp:<p>` is inserted before the section's first
    /// `a=` line. `rtcp_port: None` means "rtcp-mux or don't care": `a=rtcp` is left untouched.
    Keep {
        /// Relay RTP port for the `m=` line.
        port: u16,
        /// Relay RTCP port, if it must be announced.
        rtcp_port: Option<u16>,
        /// Replacement `a=crypto` values (per-leg SRTP), or `None` to keep the lines as they are.
        crypto: Option<Vec<String>>,
    },
    /// RFC 3264 rejected stream: port 0, other lines kept (`c=` still becomes the relay address).
    Reject,
    /// Leave the whole section out (media subset offered to the other side).
    Omit,
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
/// relay's changes (see the [module documentation](self)).
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

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

impl SessionDescription {
    /// Reads an SDP. See the [module documentation](self) for the contract.
    ///
    /// # Errors
    ///
    /// An [`SdpError`] naming the first offending line: the first line is not `v=0`; a line is not
    /// `<letter>=<value>` (trailing blank lines are tolerated) or holds NUL / a lone CR; a bad
    /// `m=` (port must be decimal ≤ 65535), `c=` (`IN IP4|IP6 <addr>[/ttl[/n]]`), `a=rtcp`,
    /// `a=ssrc`, `a=crypto` or known `a=fmtp:MCVideo` number; a duplicate `a=rtcp` or
    /// `a=fmtp:MCVideo` in a section; a section with a nonzero port and no connection address
    /// (named by its `m=` line). Line 0: empty, over [`MAX_SDP_LEN`], or no `m=` line.
    pub fn parse(text: &str) -> Result<Self, SdpError> {
        if text.len() > MAX_SDP_LEN {
            return Err(SdpError::doc("SDP larger than 64 KiB"));
        }
        let mut lines = Vec::new();
        for (i, piece) in text.split_inclusive('\n').enumerate() {
            let (body, eol) = if let Some(b) = piece.strip_suffix("\r\n") {
                (b, Eol::CrLf)
            } else if let Some(b) = piece.strip_suffix('\n') {
                (b, Eol::Lf)
            } else {
                (piece, Eol::None)
            };
            if i >= MAX_LINES {
                return Err(SdpError::at(i + 1, body, "too many lines"));
            }
            lines.push(Line {
                text: body.to_owned(),
                eol,
            });
        }
        let content_end = lines
            .iter()
            .rposition(|l| !l.text.trim().is_empty())
            .map_or(0, |i| i + 1);
        if content_end == 0 {
            return Err(SdpError::doc("empty SDP"));
        }

        let mut session_connection = None;
        let mut session_direction = None;
        let mut media: Vec<Media> = Vec::new();
        let mut sections: Vec<Section> = Vec::new();
        let mut cur: Option<Building> = None;

        for (idx, line) in lines.iter().enumerate().take(content_end) {
            let no = idx + 1;
            let text = line.text.as_str();
            let err = |reason| SdpError::at(no, text, reason);
            if text.contains(['\0', '\r']) {
                return Err(err("control character in line"));
            }
            let (ty, value) = split_type(text).ok_or_else(|| err("expected <type>=<value>"))?;
            if idx == 0 {
                if ty != 'v' || value.trim_end() != "0" {
                    return Err(err("first line must be v=0"));
                }
                continue;
            }
            match ty {
                'm' => {
                    if let Some(b) = cur.take() {
                        finish(
                            b,
                            idx,
                            session_connection,
                            session_direction,
                            &mut media,
                            &mut sections,
                        );
                    }
                    if media.len() >= MAX_MEDIA {
                        return Err(err("too many media sections"));
                    }
                    cur = Some(parse_m_line(value, idx).map_err(err)?);
                }
                'c' => {
                    let addr = parse_connection(value).map_err(err)?;
                    match cur.as_mut() {
                        Some(b) => {
                            b.conn.get_or_insert(addr);
                        }
                        None => {
                            session_connection.get_or_insert(addr);
                        }
                    }
                }
                'a' => match cur.as_mut() {
                    Some(b) => media_attr(b, idx, value).map_err(err)?,
                    None => {
                        if let Some(d) = Direction::from_attr(value.trim_end()) {
                            session_direction = Some(d);
                        }
                    }
                },
                _ => {}
            }
        }
        if let Some(b) = cur.take() {
            finish(
                b,
                content_end,
                session_connection,
                session_direction,
                &mut media,
                &mut sections,
            );
        }
        if media.is_empty() {
            return Err(SdpError::doc("no media section (m= line)"));
        }

        for m in &media {
            if m.port != 0 && m.connection.is_none() {
                let content = lines
                    .get(m.line.saturating_sub(1))
                    .map_or("", |l| l.text.as_str());
                return Err(SdpError::at(
                    m.line,
                    content,
                    "no connection address (c=) for media",
                ));
            }
        }

        Ok(SessionDescription {
            lines,
            content_end,
            session_connection,
            session_direction: session_direction.unwrap_or_default(),
            media,
            sections,
        })
    }

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

    /// Produce the rewritten text. `plan.media.len()` must equal `self.media().len()` (else Err).
    ///
    /// Every `c=` line (session and media level, also in rejected sections) becomes
    /// `c=IN IP4|IP6 <plan.connection>`; each section is treated as its [`MediaRewrite`] says;
    /// every other line is copied byte for byte with its own line ending. Lines inserted by the
    /// rewrite use the line ending of their section's `m=` line.
    ///
    /// # Errors
    ///
    /// Line 0: a plan of the wrong length, or a replacement `a=crypto` value that is not
    /// a well-formed single-line crypto attribute value.
    pub fn rewrite(&self, plan: &Rewrite) -> Result<String, SdpError> {
        if plan.media.len() != self.media.len() {
            return Err(SdpError {
                line: 0,
                content: format!(
                    "plan has {} entries, SDP has {} media sections",
                    plan.media.len(),
                    self.media.len()
                ),
                reason: "rewrite plan does not match the media sections",
            });
        }
        for rw in &plan.media {
            if let MediaRewrite::Keep {
                crypto: Some(values),
                ..
            } = rw
            {
                for v in values {
                    if v.contains(['\r', '\n', '\0']) || parse_crypto(v).is_err() {
                        return Err(SdpError {
                            line: 0,
                            content: error_content(&format!("a=crypto:{v}")),
                            reason: "bad a=crypto value in rewrite plan",
                        });
                    }
                }
            }
        }

        let default_eol = self
            .lines
            .iter()
            .map(|l| l.eol)
            .find(|e| *e != Eol::None)
            .unwrap_or(Eol::CrLf);
        let conn_line = connection_line(plan.connection);
        let mut out: Vec<(Cow<'_, str>, Eol)> = Vec::with_capacity(self.lines.len() + 8);

        let first_m = self.sections.first().map_or(self.content_end, |s| s.start);
        for l in self.lines.iter().take(first_m) {
            out.push((self.keep_or_conn(l, &conn_line), l.eol));
        }

        for ((sec, m), rw) in self.sections.iter().zip(&self.media).zip(&plan.media) {
            let m_line = self.line(sec.start)?;
            let sec_eol = if m_line.eol == Eol::None {
                default_eol
            } else {
                m_line.eol
            };
            match rw {
                MediaRewrite::Omit => {}
                MediaRewrite::Reject => {
                    out.push((Cow::Owned(replace_port(m_line, sec, 0)?), m_line.eol));
                    for idx in sec.start + 1..sec.end {
                        let l = self.line(idx)?;
                        out.push((self.keep_or_conn(l, &conn_line), l.eol));
                    }
                }
                MediaRewrite::Keep {
                    port,
                    rtcp_port,
                    crypto,
                } => {
                    let insert_rtcp = match *rtcp_port {
                        Some(p)
                            if !m.rtcp_mux
                                && sec.rtcp_line.is_none()
                                && Some(p) != port.checked_add(1) =>
                        {
                            Some(p)
                        }
                        _ => None,
                    };
                    let rtcp_at = sec.first_attr.unwrap_or(sec.end);
                    let crypto_at = sec.crypto_lines.first().copied().unwrap_or(sec.end);
                    let inserts = |idx: usize, out: &mut Vec<(Cow<'_, str>, Eol)>| {
                        if idx == rtcp_at {
                            if let Some(p) = insert_rtcp {
                                out.push((Cow::Owned(format!("a=rtcp:{p}")), sec_eol));
                            }
                        }
                        if idx == crypto_at {
                            if let Some(values) = crypto {
                                for v in values {
                                    out.push((Cow::Owned(format!("a=crypto:{v}")), sec_eol));
                                }
                            }
                        }
                    };
                    for idx in sec.start..sec.end {
                        inserts(idx, &mut out);
                        let l = self.line(idx)?;
                        if idx == sec.start {
                            out.push((Cow::Owned(replace_port(l, sec, *port)?), l.eol));
                        } else if crypto.is_some() && sec.crypto_lines.contains(&idx) {
                            // replaced by the plan's values (inserted at `crypto_at`)
                        } else if let (Some(p), true) = (rtcp_port, sec.rtcp_line == Some(idx)) {
                            let text = match m.rtcp.and_then(|r| r.addr) {
                                Some(_) => format!(
                                    "a=rtcp:{p} IN {} {}",
                                    addr_type(plan.connection),
                                    plan.connection
                                ),
                                None => format!("a=rtcp:{p}"),
                            };
                            out.push((Cow::Owned(text), l.eol));
                        } else {
                            out.push((self.keep_or_conn(l, &conn_line), l.eol));
                        }
                    }
                    inserts(sec.end, &mut out);
                }
            }
        }

        for l in self.lines.iter().skip(self.content_end) {
            out.push((Cow::Borrowed(l.text.as_str()), l.eol));
        }

        // A line that was last in the original but no longer is needs a line ending.
        let n = out.len();
        let mut s =
            String::with_capacity(self.lines.iter().map(|l| l.text.len() + 2).sum::<usize>() + 256);
        for (i, (text, eol)) in out.iter().enumerate() {
            s.push_str(text);
            let eol = if *eol == Eol::None && i + 1 < n {
                default_eol
            } else {
                *eol
            };
            s.push_str(eol.as_str());
        }
        Ok(s)
    }

    fn line(&self, idx: usize) -> Result<&Line, SdpError> {
        self.lines
            .get(idx)
            .ok_or(SdpError::doc("internal error: line index out of range"))
    }

    fn keep_or_conn<'a>(&'a self, l: &'a Line, conn_line: &str) -> Cow<'a, str> {
        if l.text.starts_with("c=") {
            Cow::Owned(conn_line.to_owned())
        } else {
            Cow::Borrowed(l.text.as_str())
        }
    }
}

/// Closes a media section. Session-level `c=` and direction lines all precede the first `m=`,
/// so they are final here.
fn finish(
    mut b: Building,
    end: usize,
    session_connection: Option<IpAddr>,
    session_direction: Option<Direction>,
    media: &mut Vec<Media>,
    sections: &mut Vec<Section>,
) {
    b.section.end = end;
    b.media.connection = b.conn.or(session_connection);
    b.media.direction = b.direction.or(session_direction).unwrap_or_default();
    media.push(b.media);
    sections.push(b.section);
}

/// Splits `x=value` into its type letter and value.
fn split_type(line: &str) -> Option<(char, &str)> {
    let (ty, value) = line.split_once('=')?;
    let mut chars = ty.chars();
    let c = chars.next()?;
    if chars.next().is_some() || !c.is_ascii_alphabetic() {
        return None;
    }
    Some((c, value))
}

/// Whitespace-separated tokens with their byte offsets.
fn tokens(s: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in s.char_indices() {
        if c == ' ' || c == '\t' {
            if let Some(st) = start.take() {
                if let Some(t) = s.get(st..i) {
                    out.push((st, t));
                }
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(st) = start {
        if let Some(t) = s.get(st..) {
            out.push((st, t));
        }
    }
    out
}

/// A decimal number made of ASCII digits only (no sign, no spaces), that fits `T`.
fn num<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_m_line(value: &str, idx: usize) -> Result<Building, &'static str> {
    let toks = tokens(value);
    let (media_tok, port_tok, proto, fmts) = match toks.as_slice() {
        [(_, m), port, (_, proto), fmts @ ..] if !fmts.is_empty() => (*m, *port, *proto, fmts),
        _ => return Err("m= line needs <media> <port> <proto> <fmt>"),
    };
    let (port_off, port_str) = port_tok;
    let port_num = match port_str.split_once('/') {
        Some((p, count)) => {
            num::<u16>(count).ok_or("bad port count")?;
            p
        }
        None => port_str,
    };
    let port = num::<u16>(port_num).ok_or("bad port")?;
    let formats: Vec<String> = fmts.iter().map(|(_, f)| (*f).to_owned()).collect();
    let kind = if media_tok.eq_ignore_ascii_case("audio") {
        MediaKind::Audio
    } else if media_tok.eq_ignore_ascii_case("video") {
        MediaKind::Video
    } else if media_tok.eq_ignore_ascii_case("application")
        && proto.eq_ignore_ascii_case("udp")
        && formats
            .first()
            .is_some_and(|f| f.eq_ignore_ascii_case("MCVideo"))
    {
        MediaKind::Control
    } else {
        MediaKind::Other(media_tok.to_owned())
    };
    // The line is "m=" + value: the type letter and '=' are one byte each.
    let start = port_off + 2;
    Ok(Building {
        media: Media {
            kind,
            port,
            proto: proto.to_owned(),
            formats,
            connection: None,
            rtcp: None,
            rtcp_mux: false,
            ssrcs: Vec::new(),
            crypto: Vec::new(),
            mcvideo: None,
            clock_rate: None,
            direction: Direction::SendRecv,
            line: idx + 1,
        },
        section: Section {
            start: idx,
            end: idx + 1,
            port_span: (start, start + port_str.len()),
            first_attr: None,
            rtcp_line: None,
            crypto_lines: Vec::new(),
        },
        conn: None,
        direction: None,
    })
}

/// `IN IP4|IP6 <addr>` (no TTL / count suffix).
fn parse_addr3(net: &str, atype: &str, addr: &str) -> Result<IpAddr, &'static str> {
    if net != "IN" {
        return Err("network type must be IN");
    }
    let ip: IpAddr = addr.parse().map_err(|_| "bad address")?;
    match (atype, ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Ok(ip),
        ("IP4", _) | ("IP6", _) => Err("address does not match address type"),
        _ => Err("address type must be IP4 or IP6"),
    }
}

/// `c=IN IP4|IP6 <addr>[/ttl[/count]]`.
fn parse_connection(value: &str) -> Result<IpAddr, &'static str> {
    let toks = tokens(value);
    let [(_, net), (_, atype), (_, addr)] = toks.as_slice() else {
        return Err("c= must be IN IP4|IP6 <address>");
    };
    let mut parts = addr.split('/');
    let host = parts.next().unwrap_or_default();
    for (i, p) in parts.enumerate() {
        if i >= 2 || num::<u32>(p).is_none() {
            return Err("bad address suffix");
        }
    }
    parse_addr3(net, atype, host)
}

/// `<port> [IN IP4|IP6 <addr>]`.
fn parse_rtcp(value: &str) -> Result<RtcpAttr, &'static str> {
    const BAD: &str = "bad a=rtcp";
    match tokens(value).as_slice() {
        [(_, port)] => Ok(RtcpAttr {
            port: num(port).ok_or(BAD)?,
            addr: None,
        }),
        [(_, port), (_, net), (_, atype), (_, addr)] => Ok(RtcpAttr {
            port: num(port).ok_or(BAD)?,
            addr: Some(parse_addr3(net, atype, addr).map_err(|_| BAD)?),
        }),
        _ => Err(BAD),
    }
}

/// `<tag> <suite> inline:<key>[|...][;inline:...] [session params]`.
fn parse_crypto(value: &str) -> Result<Crypto, &'static str> {
    const BAD: &str = "bad a=crypto (need <tag> <suite> inline:<key>)";
    let toks = tokens(value);
    let [(_, tag), (_, suite), (_, key_params), ..] = toks.as_slice() else {
        return Err(BAD);
    };
    let tag = num::<u32>(tag).filter(|t| *t <= 999_999_999).ok_or(BAD)?;
    let method = key_params.get(..7).ok_or(BAD)?;
    if !method.eq_ignore_ascii_case("inline:") {
        return Err(BAD);
    }
    let rest = key_params.get(7..).ok_or(BAD)?;
    let key = rest.split(['|', ';']).next().unwrap_or_default();
    let b64 = |b: u8| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=';
    if key.is_empty() || !key.bytes().all(b64) {
        return Err(BAD);
    }
    Ok(Crypto {
        tag,
        suite: (*suite).to_owned(),
        key_b64: key.to_owned(),
        raw: value.to_owned(),
    })
}

/// `MCVideo <param>[;<param>...]` parameters (the part after the format).
fn parse_mcvideo_fmtp(params: &str) -> Result<McVideoFmtp, &'static str> {
    const BAD: &str = "bad a=fmtp:MCVideo parameter value";
    let mut f = McVideoFmtp::default();
    for p in params.split(';') {
        let p = p.trim();
        if p.is_empty() {
            continue;
        }
        let (key, val) = match p.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (p, None),
        };
        let key = key.to_ascii_lowercase();
        let n8 = || val.and_then(num::<u8>).ok_or(BAD);
        let n32 = || val.and_then(num::<u32>).ok_or(BAD);
        match key.as_str() {
            "mc_queueing" => f.mc_queueing = true,
            "mc_granted" => f.mc_granted = true,
            "mc_implicit_request" => f.mc_implicit_request = true,
            "mc_priority" => f.mc_priority = Some(n8()?),
            "mc_reception_priority" => f.mc_reception_priority = Some(n8()?),
            "mc_audio_ssrc" => f.mc_audio_ssrc = Some(n32()?),
            "mc_video_ssrc" => f.mc_video_ssrc = Some(n32()?),
            "mc_transmission_ssrc" => f.mc_transmission_ssrc = Some(n32()?),
            _ => {}
        }
    }
    Ok(f)
}

/// A media-level `a=` line.
fn media_attr(b: &mut Building, idx: usize, value: &str) -> Result<(), &'static str> {
    b.section.first_attr.get_or_insert(idx);
    let (name, arg) = match value.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (value.trim_end(), None),
    };
    match (name, arg) {
        ("rtcp", Some(a)) => {
            if b.section.rtcp_line.is_some() {
                return Err("duplicate a=rtcp");
            }
            b.media.rtcp = Some(parse_rtcp(a)?);
            b.section.rtcp_line = Some(idx);
        }
        ("rtcp", None) => return Err("bad a=rtcp"),
        ("rtcp-mux", None) => b.media.rtcp_mux = true,
        ("ssrc", a) => {
            let id = a
                .and_then(|a| tokens(a).first().map(|(_, t)| *t))
                .and_then(num::<u32>)
                .ok_or("bad a=ssrc id")?;
            if !b.media.ssrcs.contains(&id) {
                b.media.ssrcs.push(id);
            }
        }
        ("rtpmap", Some(a)) => {
            // `<format> <encoding>/<clock>[/<channels>]`; anything else is left alone (the
            // line passes through byte for byte either way).
            let mut t = a.split_whitespace();
            let (fmt, enc) = (t.next(), t.next());
            if b.media.clock_rate.is_none()
                && fmt.is_some()
                && fmt == b.media.formats.first().map(String::as_str)
            {
                b.media.clock_rate = enc
                    .and_then(|e| e.split('/').nth(1))
                    .and_then(num::<u32>)
                    .filter(|&c| c > 0);
            }
        }
        ("crypto", a) => {
            let c = parse_crypto(a.unwrap_or_default())?;
            b.media.crypto.push(c);
            b.section.crypto_lines.push(idx);
        }
        ("fmtp", Some(a)) => {
            let a = a.trim_start();
            let (fmt, params) = match a.find([' ', '\t']) {
                Some(i) => (
                    a.get(..i).unwrap_or_default(),
                    a.get(i..).unwrap_or_default(),
                ),
                None => (a, ""),
            };
            if fmt.eq_ignore_ascii_case("MCVideo") {
                if b.media.mcvideo.is_some() {
                    return Err("duplicate a=fmtp:MCVideo");
                }
                b.media.mcvideo = Some(parse_mcvideo_fmtp(params)?);
            }
        }
        (d, None) => {
            if let Some(d) = Direction::from_attr(d) {
                b.direction = Some(d);
            }
        }
        _ => {}
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Rewriting helpers
// ---------------------------------------------------------------------------------------------

fn addr_type(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    }
}

fn connection_line(ip: IpAddr) -> String {
    format!("c=IN {} {}", addr_type(ip), ip)
}

fn replace_port(l: &Line, sec: &Section, port: u16) -> Result<String, SdpError> {
    let (a, b) = sec.port_span;
    match (l.text.get(..a), l.text.get(b..)) {
        (Some(head), Some(tail)) => Ok(format!("{head}{port}{tail}")),
        _ => Err(SdpError::doc("internal error: m= port position")),
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

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;

    const KEY_MGMT: &str =
        "a=key-mgmt:mikey AQAFgM0XflABAAAAAAAAAAAAAAsAyO7JV6p0TRYAsGU/aP7sAAAAAAAAA+Qv1A==";

    /// A realistic MCVideo one-to-one video push offer (CRLF), with MIKEY key management.
    fn offer() -> String {
        [
            "v=0",
            "o=mcvideo-client 2890844526 2890844526 IN IP4 192.0.2.10",
            "s=-",
            "c=IN IP4 192.0.2.10",
            "t=0 0",
            "m=audio 49170 RTP/SAVP 98",
            "i=audio component of MCVideo",
            "a=rtpmap:98 AMR-WB/16000",
            "a=fmtp:98 mode-change-capability=2; max-red=0",
            "a=ssrc:11111 cname:caller@example.org",
            KEY_MGMT,
            "a=sendonly",
            "m=video 49172 RTP/SAVP 96",
            "i=video component of MCVideo",
            "a=rtpmap:96 H264/90000",
            "a=fmtp:96 profile-level-id=42e01f;packetization-mode=1",
            "a=ssrc:22222 cname:caller@example.org",
            "a=ssrc:22222 msid:stream video",
            "a=ssrc:33333 cname:caller@example.org",
            "a=rtcp-mux",
            KEY_MGMT,
            "a=sendonly",
            "m=application 5000 udp MCVideo",
            "a=fmtp:MCVideo mc_queueing;mc_priority=5;mc_implicit_request",
            "",
        ]
        .join("\r\n")
    }

    fn keep(port: u16) -> MediaRewrite {
        MediaRewrite::Keep {
            port,
            rtcp_port: None,
            crypto: None,
        }
    }

    fn relay() -> IpAddr {
        "198.51.100.7".parse().unwrap()
    }

    fn plan(media: Vec<MediaRewrite>) -> Rewrite {
        Rewrite {
            connection: relay(),
            media,
        }
    }

    fn err(text: &str) -> SdpError {
        SessionDescription::parse(text).unwrap_err()
    }

    /// Minimal valid SDP with `extra` media-section lines after `m=video 4000 RTP/AVP 96`.
    fn with_media_lines(extra: &[&str]) -> String {
        let mut l = vec![
            "v=0",
            "o=- 1 1 IN IP4 192.0.2.1",
            "s=-",
            "c=IN IP4 192.0.2.1",
            "t=0 0",
        ];
        l.push("m=video 4000 RTP/AVP 96");
        l.extend_from_slice(extra);
        l.push("");
        l.join("\n")
    }

    #[test]
    fn parses_mcvideo_offer() {
        let sdp = SessionDescription::parse(&offer()).unwrap();
        assert_eq!(
            sdp.session_connection(),
            Some("192.0.2.10".parse().unwrap())
        );
        assert_eq!(sdp.session_direction(), Direction::SendRecv);
        let m = sdp.media();
        assert_eq!(m.len(), 3);

        assert_eq!(m[0].kind, MediaKind::Audio);
        assert_eq!(m[0].port, 49170);
        assert_eq!(m[0].proto, "RTP/SAVP");
        assert_eq!(m[0].formats, vec!["98"]);
        assert_eq!(m[0].line, 6);
        assert_eq!(m[0].ssrcs, vec![11111]);
        assert_eq!(m[0].direction, Direction::SendOnly);
        assert!(!m[0].rtcp_mux);
        assert!(m[0].crypto.is_empty());
        assert!(m[0].mcvideo.is_none());

        assert_eq!(m[1].kind, MediaKind::Video);
        assert_eq!(m[1].port, 49172);
        assert_eq!(m[1].line, 13);
        assert_eq!(m[1].ssrcs, vec![22222, 33333]);
        assert!(m[1].rtcp_mux);

        assert_eq!(m[2].kind, MediaKind::Control);
        assert_eq!(m[2].port, 5000);
        assert_eq!(m[2].proto, "udp");
        assert_eq!(m[2].formats, vec!["MCVideo"]);
        assert_eq!(m[2].line, 23);
        assert_eq!(m[2].direction, Direction::SendRecv);
        let f = m[2].mcvideo.unwrap();
        assert!(f.mc_queueing && f.mc_implicit_request && !f.mc_granted);
        assert_eq!(f.mc_priority, Some(5));
        assert_eq!(f.mc_reception_priority, None);
        assert_eq!(f.mc_video_ssrc, None);

        for x in m {
            assert_eq!(x.connection, Some("192.0.2.10".parse().unwrap()));
        }
        assert_eq!(sdp.to_string(), offer(), "Display gives back the original");
    }

    #[test]
    fn rewrite_changes_only_addresses_and_ports() {
        let text = offer();
        let sdp = SessionDescription::parse(&text).unwrap();
        let out = sdp
            .rewrite(&plan(vec![keep(20000), keep(20002), keep(20004)]))
            .unwrap();
        let orig: Vec<&str> = text.split("\r\n").collect();
        let new: Vec<&str> = out.split("\r\n").collect();
        assert_eq!(orig.len(), new.len());
        for (a, b) in orig.iter().zip(&new) {
            if a.starts_with("c=") {
                assert_eq!(*b, "c=IN IP4 198.51.100.7");
            } else if a.starts_with("m=audio") {
                assert_eq!(*b, "m=audio 20000 RTP/SAVP 98");
            } else if a.starts_with("m=video") {
                assert_eq!(*b, "m=video 20002 RTP/SAVP 96");
            } else if a.starts_with("m=application") {
                assert_eq!(*b, "m=application 20004 udp MCVideo");
            } else {
                assert_eq!(a, b, "line must pass byte for byte");
            }
        }
        assert_eq!(
            out.matches(KEY_MGMT).count(),
            2,
            "key-mgmt survives untouched"
        );
        assert!(out.contains(&format!("\r\n{KEY_MGMT}\r\n")));
        assert!(out.contains("o=mcvideo-client 2890844526 2890844526 IN IP4 192.0.2.10\r\n"));
        assert!(!out.contains("\n\n") && out.matches('\n').count() == out.matches("\r\n").count());
    }

    #[test]
    fn line_endings_preserved_per_line() {
        // Mixed endings, and no final newline.
        let text = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\ns=-\r\nc=IN IP4 192.0.2.1\nt=0 0\r\n\
                    m=audio 4000 RTP/AVP 0\na=x-custom:1\r\nm=video 4002 RTP/AVP 96";
        let sdp = SessionDescription::parse(text).unwrap();
        let out = sdp.rewrite(&plan(vec![keep(1), keep(2)])).unwrap();
        assert_eq!(
            out,
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\ns=-\r\nc=IN IP4 198.51.100.7\nt=0 0\r\n\
             m=audio 1 RTP/AVP 0\na=x-custom:1\r\nm=video 2 RTP/AVP 96"
        );
    }

    #[test]
    fn trailing_blank_lines_tolerated_and_kept() {
        let text = format!("{}\r\n  \r\n", offer().trim_end());
        let sdp = SessionDescription::parse(&text).unwrap();
        assert_eq!(sdp.media().len(), 3);
        let out = sdp.rewrite(&plan(vec![keep(1), keep(2), keep(3)])).unwrap();
        assert!(
            out.ends_with("a=fmtp:MCVideo mc_queueing;mc_priority=5;mc_implicit_request\r\n  \r\n")
        );
        // A crypto insertion at the end of the last section goes before the blank lines.
        let p = plan(vec![
            keep(1),
            keep(2),
            MediaRewrite::Keep {
                port: 3,
                rtcp_port: None,
                crypto: Some(vec!["1 AES_CM_128_HMAC_SHA1_80 inline:QUJD".into()]),
            },
        ]);
        let out = sdp.rewrite(&p).unwrap();
        assert!(out.ends_with(
            "mc_implicit_request\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:QUJD\r\n  \r\n"
        ));
    }

    #[test]
    fn rtp_and_rtcp_addresses() {
        let sdp = SessionDescription::parse(&with_media_lines(&[
            "m=audio 5000 RTP/AVP 0",
            "a=rtcp:5009",
            "m=audio 5010 RTP/AVP 0",
            "a=rtcp:6000 IN IP4 203.0.113.9",
            "m=audio 5020 RTP/AVP 0",
            "a=rtcp-mux",
            "m=audio 0 RTP/AVP 0",
            "m=audio 65535 RTP/AVP 0",
            "m=audio 5030 RTP/AVP 0",
            "c=IN IP6 2001:db8::1",
            "m=audio 5040 RTP/AVP 0",
            "c=IN IP4 0.0.0.0",
        ]))
        .unwrap();
        let m = sdp.media();
        let sa = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
        // port + 1
        assert_eq!(m[0].rtp_addr(), sa("192.0.2.1:4000"));
        assert_eq!(m[0].rtcp_addr(), sa("192.0.2.1:4001"));
        // a=rtcp port only
        assert_eq!(
            m[1].rtcp,
            Some(RtcpAttr {
                port: 5009,
                addr: None
            })
        );
        assert_eq!(m[1].rtcp_addr(), sa("192.0.2.1:5009"));
        // a=rtcp with address
        assert_eq!(m[2].rtcp_addr(), sa("203.0.113.9:6000"));
        // rtcp-mux
        assert_eq!(m[3].rtcp_addr(), sa("192.0.2.1:5020"));
        // port 0: nothing
        assert_eq!(m[4].rtp_addr(), None);
        assert_eq!(m[4].rtcp_addr(), None);
        // port + 1 overflows
        assert_eq!(m[5].rtp_addr(), sa("192.0.2.1:65535"));
        assert_eq!(m[5].rtcp_addr(), None);
        // media-level c= wins, IPv6
        assert_eq!(m[6].rtp_addr(), sa("[2001:db8::1]:5030"));
        assert_eq!(m[6].rtcp_addr(), sa("[2001:db8::1]:5031"));
        // unspecified address: never a destination
        assert_eq!(m[7].connection, Some("0.0.0.0".parse().unwrap()));
        assert_eq!(m[7].rtp_addr(), None);
        assert_eq!(m[7].rtcp_addr(), None);
    }

    #[test]
    fn media_without_session_connection() {
        let text = "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\nm=video 4000 RTP/AVP 96\n\
                    c=IN IP4 192.0.2.5/127\nm=audio 0 RTP/AVP 0\n";
        let sdp = SessionDescription::parse(text).unwrap();
        assert_eq!(sdp.session_connection(), None);
        assert_eq!(
            sdp.media()[0].connection,
            Some("192.0.2.5".parse().unwrap())
        );
        assert_eq!(sdp.media()[1].connection, None, "port 0 needs no address");
        let out = sdp
            .rewrite(&plan(vec![keep(7), MediaRewrite::Reject]))
            .unwrap();
        assert_eq!(
            out,
            "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\nm=video 7 RTP/AVP 96\n\
             c=IN IP4 198.51.100.7\nm=audio 0 RTP/AVP 0\n"
        );
    }

    #[test]
    fn rewrite_rtcp_lines() {
        let sdp = SessionDescription::parse(&with_media_lines(&[
            "a=rtpmap:96 H264/90000",
            "m=audio 5000 RTP/AVP 0",
            "a=rtcp:5009",
            "m=audio 5010 RTP/AVP 0",
            "a=rtcp:6000 IN IP4 203.0.113.9",
            "m=audio 5020 RTP/AVP 0",
            "a=rtcp-mux",
            "m=audio 5030 RTP/AVP 0",
        ]))
        .unwrap();
        let p = |rtcp: Option<u16>| {
            plan(vec![
                MediaRewrite::Keep {
                    port: 100,
                    rtcp_port: rtcp,
                    crypto: None,
                },
                MediaRewrite::Keep {
                    port: 200,
                    rtcp_port: rtcp,
                    crypto: None,
                },
                MediaRewrite::Keep {
                    port: 300,
                    rtcp_port: rtcp,
                    crypto: None,
                },
                MediaRewrite::Keep {
                    port: 400,
                    rtcp_port: rtcp,
                    crypto: None,
                },
                MediaRewrite::Keep {
                    port: 500,
                    rtcp_port: rtcp,
                    crypto: None,
                },
            ])
        };
        let out = sdp.rewrite(&p(Some(901))).unwrap();
        let want = "m=video 100 RTP/AVP 96\na=rtcp:901\na=rtpmap:96 H264/90000\n\
                    m=audio 200 RTP/AVP 0\na=rtcp:901\n\
                    m=audio 300 RTP/AVP 0\na=rtcp:901 IN IP4 198.51.100.7\n\
                    m=audio 400 RTP/AVP 0\na=rtcp-mux\n\
                    m=audio 500 RTP/AVP 0\na=rtcp:901\n";
        assert!(out.ends_with(want), "{out}");
        // rtcp_port None: a=rtcp lines untouched, nothing inserted
        let out = sdp.rewrite(&p(None)).unwrap();
        let want = "m=video 100 RTP/AVP 96\na=rtpmap:96 H264/90000\n\
                    m=audio 200 RTP/AVP 0\na=rtcp:5009\n\
                    m=audio 300 RTP/AVP 0\na=rtcp:6000 IN IP4 203.0.113.9\n\
                    m=audio 400 RTP/AVP 0\na=rtcp-mux\n\
                    m=audio 500 RTP/AVP 0\n";
        assert!(out.ends_with(want), "{out}");
        // rtcp_port == port + 1: nothing inserted, existing line still rewritten
        let sdp2 = SessionDescription::parse(&with_media_lines(&[
            "a=rtcp:4001",
            "m=audio 5000 RTP/AVP 0",
        ]))
        .unwrap();
        let out = sdp2
            .rewrite(&plan(vec![
                MediaRewrite::Keep {
                    port: 100,
                    rtcp_port: Some(101),
                    crypto: None,
                },
                MediaRewrite::Keep {
                    port: 200,
                    rtcp_port: Some(201),
                    crypto: None,
                },
            ]))
            .unwrap();
        assert!(
            out.ends_with("m=video 100 RTP/AVP 96\na=rtcp:101\nm=audio 200 RTP/AVP 0\n"),
            "{out}"
        );
    }

    #[test]
    fn rtcp_inserted_after_m_and_c_lines() {
        let sdp = SessionDescription::parse(&with_media_lines(&[
            "i=video component of MCVideo",
            "c=IN IP4 192.0.2.99",
            "b=AS:512",
            "a=sendonly",
        ]))
        .unwrap();
        let p = plan(vec![MediaRewrite::Keep {
            port: 10,
            rtcp_port: Some(20),
            crypto: None,
        }]);
        let out = sdp.rewrite(&p).unwrap();
        assert!(out.ends_with(
            "m=video 10 RTP/AVP 96\ni=video component of MCVideo\nc=IN IP4 198.51.100.7\n\
             b=AS:512\na=rtcp:20\na=sendonly\n"
        ));
    }

    #[test]
    fn crypto_parse_and_replace() {
        let text = with_media_lines(&[
            "a=rtpmap:96 H264/90000",
            "a=crypto:1 AEAD_AES_128_GCM inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4;inline:QUJD",
            "a=ssrc:1234 cname:x",
            "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj UNENCRYPTED_SRTCP",
            "m=audio 5000 RTP/SAVP 0",
            "a=sendrecv",
        ]);
        let sdp = SessionDescription::parse(&text).unwrap();
        let c = &sdp.media()[0].crypto;
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].tag, 1);
        assert_eq!(c[0].suite, "AEAD_AES_128_GCM");
        assert_eq!(c[0].key_b64, "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz");
        assert_eq!(c[0].raw, "1 AEAD_AES_128_GCM inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4;inline:QUJD");
        assert_eq!(c[1].tag, 2);
        assert_eq!(c[1].key_b64, "d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj");
        assert!(
            !format!("{:?}", c[0]).contains("WVNf"),
            "Debug redacts keys"
        );
        assert!(!format!("{sdp:?}").contains("WVNf"), "Debug redacts keys");

        let new = vec![
            "7 AEAD_AES_128_GCM inline:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_string(),
            "8 AES_CM_128_HMAC_SHA1_80 inline:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB".to_string(),
        ];
        let p = plan(vec![
            MediaRewrite::Keep {
                port: 10,
                rtcp_port: None,
                crypto: Some(new.clone()),
            },
            MediaRewrite::Keep {
                port: 20,
                rtcp_port: None,
                crypto: Some(vec![new[0].clone()]),
            },
        ]);
        let out = sdp.rewrite(&p).unwrap();
        assert!(
            out.ends_with(
                "m=video 10 RTP/AVP 96\na=rtpmap:96 H264/90000\n\
                 a=crypto:7 AEAD_AES_128_GCM inline:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n\
                 a=crypto:8 AES_CM_128_HMAC_SHA1_80 inline:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB\n\
                 a=ssrc:1234 cname:x\n\
                 m=audio 20 RTP/SAVP 0\na=sendrecv\n\
                 a=crypto:7 AEAD_AES_128_GCM inline:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"
            ),
            "{out}"
        );
        assert!(!out.contains("WVNf") && !out.contains("d0Rm"));

        // Some(empty) removes them; None keeps them.
        let out = sdp
            .rewrite(&plan(vec![
                MediaRewrite::Keep {
                    port: 10,
                    rtcp_port: None,
                    crypto: Some(vec![]),
                },
                keep(20),
            ]))
            .unwrap();
        assert!(!out.contains("a=crypto"));
        let out = sdp.rewrite(&plan(vec![keep(10), keep(20)])).unwrap();
        assert_eq!(out.matches("a=crypto:").count(), 2);

        // A plan value that would inject lines, or is malformed, is refused.
        for bad in ["1 AES_CM_128_HMAC_SHA1_80 inline:QUJD\r\na=evil", "1 X", ""] {
            let e = sdp
                .rewrite(&plan(vec![
                    MediaRewrite::Keep {
                        port: 10,
                        rtcp_port: None,
                        crypto: Some(vec![bad.into()]),
                    },
                    keep(20),
                ]))
                .unwrap_err();
            assert_eq!(
                (e.line, e.reason),
                (0, "bad a=crypto value in rewrite plan")
            );
        }
    }

    #[test]
    fn reject_and_omit() {
        let sdp = SessionDescription::parse(&offer()).unwrap();
        let out = sdp
            .rewrite(&plan(vec![
                MediaRewrite::Omit,
                keep(20002),
                MediaRewrite::Reject,
            ]))
            .unwrap();
        assert!(
            !out.contains("m=audio") && !out.contains("AMR-WB") && !out.contains("a=ssrc:11111")
        );
        assert_eq!(out.matches(KEY_MGMT).count(), 1);
        assert!(
            out.contains("t=0 0\r\nm=video 20002 RTP/SAVP 96\r\ni=video component of MCVideo\r\n")
        );
        assert!(out.ends_with(
            "a=sendonly\r\nm=application 0 udp MCVideo\r\n\
             a=fmtp:MCVideo mc_queueing;mc_priority=5;mc_implicit_request\r\n"
        ));
        let again = SessionDescription::parse(&out).unwrap();
        assert_eq!(again.media().len(), 2);
        assert_eq!(again.media()[1].port, 0);
        assert_eq!(again.media()[1].kind, MediaKind::Control);

        // /count dropped, for Keep and Reject.
        let sdp =
            SessionDescription::parse(&with_media_lines(&["m=audio 5000/2 RTP/AVP 0"])).unwrap();
        let out = sdp
            .rewrite(&plan(vec![MediaRewrite::Reject, keep(9)]))
            .unwrap();
        assert!(out.ends_with("m=video 0 RTP/AVP 96\nm=audio 9 RTP/AVP 0\n"));

        // Omitting the last section of a document without a final newline.
        let sdp = SessionDescription::parse(
            "v=0\nc=IN IP4 192.0.2.1\nm=audio 1 RTP/AVP 0\nm=video 2 RTP/AVP 96",
        )
        .unwrap();
        let out = sdp
            .rewrite(&plan(vec![keep(3), MediaRewrite::Omit]))
            .unwrap();
        assert_eq!(out, "v=0\nc=IN IP4 198.51.100.7\nm=audio 3 RTP/AVP 0\n");
        // Inserting after a last line without newline adds one in between.
        let out = sdp
            .rewrite(&plan(vec![
                keep(3),
                MediaRewrite::Keep {
                    port: 4,
                    rtcp_port: Some(9),
                    crypto: None,
                },
            ]))
            .unwrap();
        assert_eq!(
            out,
            "v=0\nc=IN IP4 198.51.100.7\nm=audio 3 RTP/AVP 0\nm=video 4 RTP/AVP 96\na=rtcp:9\n"
        );
    }

    #[test]
    fn plan_length_must_match() {
        let sdp = SessionDescription::parse(&offer()).unwrap();
        let e = sdp.rewrite(&plan(vec![keep(1)])).unwrap_err();
        assert_eq!(e.line, 0);
        assert_eq!(e.reason, "rewrite plan does not match the media sections");
    }

    #[test]
    fn ipv6_relay_address() {
        let sdp = SessionDescription::parse(&with_media_lines(&["a=rtcp:4009 IN IP4 192.0.2.1"]))
            .unwrap();
        let p = Rewrite {
            connection: "2001:db8::7".parse().unwrap(),
            media: vec![MediaRewrite::Keep {
                port: 6,
                rtcp_port: Some(8),
                crypto: None,
            }],
        };
        let out = sdp.rewrite(&p).unwrap();
        assert!(out.contains("\nc=IN IP6 2001:db8::7\n"));
        assert!(out.ends_with("m=video 6 RTP/AVP 96\na=rtcp:8 IN IP6 2001:db8::7\n"));
        let again = SessionDescription::parse(&out).unwrap();
        assert_eq!(
            again.media()[0].rtcp_addr(),
            Some("[2001:db8::7]:8".parse().unwrap())
        );
    }

    #[test]
    fn idempotent_with_same_ports() {
        let sdp = SessionDescription::parse(&offer()).unwrap();
        let same = Rewrite {
            connection: "192.0.2.10".parse().unwrap(),
            media: sdp.media().iter().map(|m| keep(m.port)).collect(),
        };
        assert_eq!(sdp.rewrite(&same).unwrap(), offer());

        // And rewriting a rewritten SDP with the same plan changes nothing more.
        let p = plan(vec![
            MediaRewrite::Keep {
                port: 30000,
                rtcp_port: Some(30011),
                crypto: Some(vec!["1 AEAD_AES_128_GCM inline:QUJDRA==".into()]),
            },
            MediaRewrite::Keep {
                port: 30002,
                rtcp_port: None,
                crypto: None,
            },
            MediaRewrite::Reject,
        ]);
        let once = sdp.rewrite(&p).unwrap();
        let twice = SessionDescription::parse(&once)
            .unwrap()
            .rewrite(&p)
            .unwrap();
        assert_eq!(once, twice);
    }

    #[test]
    fn directions() {
        let sdp = SessionDescription::parse(&with_media_lines(&[
            "m=audio 5000 RTP/AVP 0",
            "a=recvonly",
            "m=audio 5002 RTP/AVP 0",
            "a=inactive",
        ]))
        .unwrap();
        let d: Vec<_> = sdp.media().iter().map(|m| m.direction).collect();
        assert_eq!(
            d,
            vec![
                Direction::SendRecv,
                Direction::RecvOnly,
                Direction::Inactive
            ]
        );
        // Session-level direction is the default for the media.
        let text = "v=0\nc=IN IP4 192.0.2.1\na=sendonly\nm=video 1 RTP/AVP 96\nm=audio 2 RTP/AVP 0\na=sendrecv\n";
        let sdp = SessionDescription::parse(text).unwrap();
        assert_eq!(sdp.session_direction(), Direction::SendOnly);
        assert_eq!(sdp.media()[0].direction, Direction::SendOnly);
        assert_eq!(sdp.media()[1].direction, Direction::SendRecv);
        assert!(Direction::SendOnly.sends() && !Direction::SendOnly.receives());
        assert!(Direction::RecvOnly.receives() && !Direction::Inactive.sends());
    }

    #[test]
    fn kinds() {
        let sdp = SessionDescription::parse(&with_media_lines(&[
            "m=application 5000 UDP MCVideo",
            "m=application 5002 udp wsd",
            "m=application 5004 TCP/MCVideo MCVideo",
            "m=text 5006 RTP/AVP 98",
        ]))
        .unwrap();
        let k: Vec<_> = sdp.media().iter().map(|m| m.kind.clone()).collect();
        assert_eq!(
            k,
            vec![
                MediaKind::Video,
                MediaKind::Control,
                MediaKind::Other("application".into()),
                MediaKind::Other("application".into()),
                MediaKind::Other("text".into()),
            ]
        );
    }

    #[test]
    fn mcvideo_fmtp_parameters() {
        let sdp = SessionDescription::parse(&with_media_lines(&[
            "m=application 5000 udp MCVideo",
            "a=fmtp:MCVideo mc_granted ; mc_priority=255; mc_reception_priority = 3;mc_audio_ssrc=4294967295;\
             mc_video_ssrc=12345;mc_transmission_ssrc=7;mc_future=abc;;",
        ]))
        .unwrap();
        let f = sdp.media()[1].mcvideo.unwrap();
        assert_eq!(
            f,
            McVideoFmtp {
                mc_queueing: false,
                mc_priority: Some(255),
                mc_reception_priority: Some(3),
                mc_granted: true,
                mc_implicit_request: false,
                mc_audio_ssrc: Some(u32::MAX),
                mc_video_ssrc: Some(12345),
                mc_transmission_ssrc: Some(7),
            }
        );
        assert!(sdp.media()[0].mcvideo.is_none());
    }

    #[test]
    fn error_display() {
        let e = err(&with_media_lines(&["m=video x RTP/AVP 96"]));
        assert_eq!(e.to_string(), "SDP line 7 `m=video x RTP/AVP 96`: bad port");
        let e = err("");
        assert_eq!(e.line, 0);
        assert_eq!(e.to_string(), "SDP: empty SDP");
        let long = format!("a=x-{}", "é".repeat(300));
        let e = err(&format!("{}{long}", with_media_lines(&["m=audio"])));
        assert_eq!(e.content.chars().count(), 7);
        let e = err(&format!("v=1{long}"));
        assert_eq!(e.content.chars().count(), 100);
        let _: &dyn std::error::Error = &e;
    }

    /// (text, expected line, expected reason)
    #[test]
    fn errors_name_the_line() {
        let m = |extra: &[&str]| with_media_lines(extra);
        let cases: Vec<(String, usize, &str)> = vec![
            (
                "v=1\nc=IN IP4 1.2.3.4\nm=audio 1 RTP/AVP 0\n".into(),
                1,
                "first line must be v=0",
            ),
            (
                "o=- 1 1 IN IP4 1.2.3.4\nv=0\n".into(),
                1,
                "first line must be v=0",
            ),
            (
                "\nv=0\nm=audio 1 RTP/AVP 0\n".into(),
                1,
                "expected <type>=<value>",
            ),
            (
                "v=0\nc=IN IP4 1.2.3.4\n\nm=audio 1 RTP/AVP 0\n".into(),
                3,
                "expected <type>=<value>",
            ),
            (
                m(&["a=rtpmap:96 H264/90000", "garbage"]),
                8,
                "expected <type>=<value>",
            ),
            (m(&["ab=1"]), 7, "expected <type>=<value>"),
            (m(&["1=1"]), 7, "expected <type>=<value>"),
            (m(&[" a=sendonly"]), 7, "expected <type>=<value>"),
            (m(&["a=x\0y"]), 7, "control character in line"),
            (m(&["a=x\ry"]), 7, "control character in line"),
            (m(&["m=audio x RTP/AVP 0"]), 7, "bad port"),
            (m(&["m=audio 65536 RTP/AVP 0"]), 7, "bad port"),
            (m(&["m=audio -1 RTP/AVP 0"]), 7, "bad port"),
            (m(&["m=audio +5 RTP/AVP 0"]), 7, "bad port"),
            (m(&["m=audio 5000/x RTP/AVP 0"]), 7, "bad port count"),
            (
                m(&["m=audio 5000 RTP/AVP"]),
                7,
                "m= line needs <media> <port> <proto> <fmt>",
            ),
            (m(&["m="]), 7, "m= line needs <media> <port> <proto> <fmt>"),
            (m(&["c=IN IP4"]), 7, "c= must be IN IP4|IP6 <address>"),
            (
                m(&["c=IN IP4 1.2.3.4 extra"]),
                7,
                "c= must be IN IP4|IP6 <address>",
            ),
            (m(&["c=XX IP4 1.2.3.4"]), 7, "network type must be IN"),
            (
                m(&["c=IN IP5 1.2.3.4"]),
                7,
                "address type must be IP4 or IP6",
            ),
            (m(&["c=IN IP4 host.example.org"]), 7, "bad address"),
            (m(&["c=IN IP4 300.1.1.1"]), 7, "bad address"),
            (
                m(&["c=IN IP4 2001:db8::1"]),
                7,
                "address does not match address type",
            ),
            (
                m(&["c=IN IP6 1.2.3.4"]),
                7,
                "address does not match address type",
            ),
            (m(&["c=IN IP4 224.2.1.1/x"]), 7, "bad address suffix"),
            (m(&["c=IN IP4 224.2.1.1/127/3/4"]), 7, "bad address suffix"),
            (
                "v=0\no=- 1 1 IN IP4 1.2.3.4\nc=IN IP4 1.2.3\nm=audio 1 RTP/AVP 0\n".into(),
                3,
                "bad address",
            ),
            (m(&["a=sendonly", "a=rtcp:abc"]), 8, "bad a=rtcp"),
            (m(&["a=rtcp:70000"]), 7, "bad a=rtcp"),
            (m(&["a=rtcp"]), 7, "bad a=rtcp"),
            (m(&["a=rtcp:5 IN IP4"]), 7, "bad a=rtcp"),
            (m(&["a=rtcp:5 IN IP4 nothing"]), 7, "bad a=rtcp"),
            (m(&["a=rtcp:5", "a=rtcp:6"]), 8, "duplicate a=rtcp"),
            (m(&["a=ssrc:x cname:a"]), 7, "bad a=ssrc id"),
            (m(&["a=ssrc:4294967296 cname:a"]), 7, "bad a=ssrc id"),
            (m(&["a=ssrc:"]), 7, "bad a=ssrc id"),
            (m(&["a=ssrc"]), 7, "bad a=ssrc id"),
            (
                m(&["a=crypto:1 AES_CM_128_HMAC_SHA1_80"]),
                7,
                "bad a=crypto (need <tag> <suite> inline:<key>)",
            ),
            (
                m(&["a=crypto:x AES_CM_128_HMAC_SHA1_80 inline:QUJD"]),
                7,
                "bad a=crypto (need <tag> <suite> inline:<key>)",
            ),
            (
                m(&["a=crypto:1 AES_CM_128_HMAC_SHA1_80 uri:http://x"]),
                7,
                "bad a=crypto (need <tag> <suite> inline:<key>)",
            ),
            (
                m(&["a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"]),
                7,
                "bad a=crypto (need <tag> <suite> inline:<key>)",
            ),
            (
                m(&["a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:ab$%"]),
                7,
                "bad a=crypto (need <tag> <suite> inline:<key>)",
            ),
            (
                m(&["a=crypto"]),
                7,
                "bad a=crypto (need <tag> <suite> inline:<key>)",
            ),
            (
                m(&["a=fmtp:MCVideo mc_priority=256"]),
                7,
                "bad a=fmtp:MCVideo parameter value",
            ),
            (
                m(&["a=fmtp:MCVideo mc_priority"]),
                7,
                "bad a=fmtp:MCVideo parameter value",
            ),
            (
                m(&["a=fmtp:MCVideo mc_queueing;mc_video_ssrc=0x10"]),
                7,
                "bad a=fmtp:MCVideo parameter value",
            ),
            (
                m(&["a=fmtp:MCVideo mc_audio_ssrc=-1"]),
                7,
                "bad a=fmtp:MCVideo parameter value",
            ),
            (
                m(&["a=fmtp:MCVideo mc_transmission_ssrc="]),
                7,
                "bad a=fmtp:MCVideo parameter value",
            ),
            (
                m(&["a=fmtp:MCVideo mc_queueing", "a=fmtp:MCVideo mc_granted"]),
                8,
                "duplicate a=fmtp:MCVideo",
            ),
            (
                "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nt=0 0\n".into(),
                0,
                "no media section (m= line)",
            ),
            ("v=0\r\n".into(), 0, "no media section (m= line)"),
            ("   \n\n".into(), 0, "empty SDP"),
            (
                "v=0\nm=audio 0 RTP/AVP 0\nm=video 5 RTP/AVP 96\n".into(),
                3,
                "no connection address (c=) for media",
            ),
            (
                "v=0\nm=video 5 RTP/AVP 96\nc=IN IP4 1.2.3.4\nm=audio 5 RTP/AVP 0\n".into(),
                4,
                "no connection address (c=) for media",
            ),
        ];
        for (text, line, reason) in cases {
            let e = err(&text);
            assert_eq!((e.line, e.reason), (line, reason), "for {text:?}");
            if line > 0 {
                let l = text.split('\n').nth(line - 1).unwrap();
                assert_eq!(e.content, error_content(l), "for {text:?}");
                assert!(e.to_string().starts_with(&format!("SDP line {line} `")));
            }
        }
    }

    /// Found by the `api_request` fuzz target: a key spliced into a malformed line came back in
    /// the error.
    #[test]
    fn key_material_redacted_wherever_it_stands() {
        let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==";
        for bad in [
            format!("s{key}"),
            format!("a=CRYPTO:1 AEAD_AES_128_GCM inline:{key}"),
            format!("a=x y{key}z"),
            format!("x=inline:{key}"),
        ] {
            let text = format!("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\n{bad}\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=video 5000 RTP/AVP 96\r\n");
            let e = SessionDescription::parse(&text)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            let content = error_content(&bad);
            assert!(!content.contains("ICAwQFBgc"), "{content}");
            assert!(!e.contains("ICAwQFBgc"), "{e}");
        }
        // Short tokens and ordinary text are quoted as they are.
        assert_eq!(
            error_content("a=rtpmap:96 H264/90000"),
            "a=rtpmap:96 H264/90000"
        );
        assert_eq!(error_content("b=AS:4000"), "b=AS:4000");
    }

    #[test]
    fn crypto_key_redacted_in_errors() {
        let e = err(&with_media_lines(&[
            "a=crypto:x AES_CM_128_HMAC_SHA1_80 inline:U0VDUkVUU0VDUkVU",
        ]));
        assert_eq!(e.line, 7);
        assert!(!e.to_string().contains("U0VD"), "{e}");
        assert_eq!(
            e.content,
            "a=crypto:x AES_CM_128_HMAC_SHA1_80 inline:<redacted>"
        );
    }

    #[test]
    fn limits() {
        // Too large.
        let big = format!(
            "{}a=x-pad:{}\n",
            with_media_lines(&[]),
            "x".repeat(MAX_SDP_LEN)
        );
        assert_eq!(
            (err(&big).line, err(&big).reason),
            (0, "SDP larger than 64 KiB")
        );
        // Exactly at the limit is fine.
        let base = with_media_lines(&[]);
        let pad = MAX_SDP_LEN - base.len() - "a=x-pad:\n".len();
        let at = format!("{base}a=x-pad:{}\n", "y".repeat(pad));
        assert_eq!(at.len(), MAX_SDP_LEN);
        assert!(SessionDescription::parse(&at).is_ok());
        // Too many lines.
        let many = format!("{}{}", with_media_lines(&[]), "a=x\n".repeat(MAX_LINES));
        let e = err(&many);
        assert_eq!((e.line, e.reason), (MAX_LINES + 1, "too many lines"));
        // Too many media sections: the 65th m= line is named.
        let mut l = vec!["v=0".to_string(), "c=IN IP4 192.0.2.1".to_string()];
        for i in 0..=MAX_MEDIA {
            l.push(format!("m=audio {} RTP/AVP 0", 1000 + 2 * i));
        }
        let e = err(&l.join("\n"));
        assert_eq!(
            (e.line, e.reason),
            (MAX_MEDIA + 3, "too many media sections")
        );
        l.pop();
        assert_eq!(
            SessionDescription::parse(&l.join("\n"))
                .unwrap()
                .media()
                .len(),
            MAX_MEDIA
        );
    }

    /// xorshift64*, deterministic.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Whatever parses can be rewritten, and the result parses again with the same media count.
    fn check_roundtrip(text: &str) {
        if let Ok(sdp) = SessionDescription::parse(text) {
            let n = sdp.media().len();
            let p = plan(
                (0..n)
                    .map(|i| match i % 4 {
                        0 => MediaRewrite::Keep {
                            port: 20000,
                            rtcp_port: Some(20009),
                            crypto: Some(vec!["1 AEAD_AES_128_GCM inline:QUJD".into()]),
                        },
                        1 => MediaRewrite::Reject,
                        2 => keep(20002),
                        _ => MediaRewrite::Keep {
                            port: 20004,
                            rtcp_port: Some(20005),
                            crypto: None,
                        },
                    })
                    .collect(),
            );
            let out = sdp.rewrite(&p).unwrap();
            let again = SessionDescription::parse(&out).unwrap();
            assert_eq!(again.media().len(), n);
            assert!(sdp.rewrite(&plan(vec![])).is_err());
        }
    }

    #[test]
    fn garbage_does_not_panic() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let alphabet: Vec<char> = "v=0mcaIN IP46:/.\r\n \t1234567890tMCVideo;_=rtcpssrcinline|é\0"
            .chars()
            .collect();
        for _ in 0..3000 {
            let len = rng.below(200);
            let s: String = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            check_roundtrip(&s);
            check_roundtrip(&format!("v=0\nc=IN IP4 1.2.3.4\n{s}"));
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            check_roundtrip(&String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn mutated_offers_do_not_panic() {
        let base = format!(
            "{}a=crypto:1 AEAD_AES_128_GCM inline:QUJDRA==|2^31\r\na=rtcp:5001 IN IP4 192.0.2.3\r\n",
            offer()
        );
        // Every truncation.
        for (i, _) in base.char_indices() {
            check_roundtrip(&base[..i]);
        }
        // Random edits.
        let mut rng = Rng(42);
        let pieces = [
            "", " ", "\n", "\r\n", "=", ":", "/", ";", "0", "65536", "m=", "c=", "a=", "IP6", "\0",
        ];
        let chars: Vec<char> = base.chars().collect();
        for _ in 0..3000 {
            let mut c = chars.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(c.len());
                let cut = rng.below(4).min(c.len() - at);
                let ins: Vec<char> = pieces[rng.below(pieces.len())].chars().collect();
                c.splice(at..at + cut, ins);
            }
            let s: String = c.into_iter().collect();
            check_roundtrip(&s);
        }
    }

    #[test]
    fn huge_inputs_do_not_panic() {
        let huge = "a".repeat(10 * MAX_SDP_LEN);
        assert_eq!(err(&huge).line, 0);
        let long_line = format!(
            "v=0\nc=IN IP4 1.2.3.4\nm=audio 1 RTP/AVP {}\n",
            "9 ".repeat(30_000)
        );
        assert_eq!(
            SessionDescription::parse(&long_line).unwrap().media()[0]
                .formats
                .len(),
            30_000
        );
        let newlines = "\n".repeat(MAX_SDP_LEN);
        assert!(SessionDescription::parse(&newlines).is_err());
        let ssrcs: String = (0..3000).map(|i| format!("a=ssrc:{i} cname:x\n")).collect();
        let sdp = SessionDescription::parse(&with_media_lines(&[&ssrcs])).unwrap();
        assert_eq!(sdp.media()[0].ssrcs.len(), 3000);
    }
}
