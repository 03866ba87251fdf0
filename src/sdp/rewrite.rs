//! Handing an SDP on with only the relay's changes.

use super::crypto::parse_crypto;
use super::*;
use std::borrow::Cow;

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

impl SessionDescription {
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

    /// The SDP's text with its session `o=` line naming `ip` (`IN IP4|IP6 <ip>`) instead of
    /// the sender's address and address family (rtpengine's `replace origin`): the username,
    /// session ID and version stay as they are, every other line passes byte for byte.
    ///
    /// # Errors
    ///
    /// Line 0 when there is no `o=` line before the first `m=`; the `o=` line when it does not
    /// have its six fields:
    /// `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>`.
    pub fn with_origin(&self, ip: IpAddr) -> Result<String, SdpError> {
        let first_m = self.sections.first().map_or(self.content_end, |s| s.start);
        let idx = self
            .lines
            .iter()
            .take(first_m)
            .position(|l| l.text.starts_with("o="))
            .ok_or(SdpError::doc(
                "no o= line (origin) to replace the address of",
            ))?;
        let l = self.line(idx)?;
        let value = l.text.get(2..).unwrap_or_default();
        let toks = super::token::tokens(value);
        let origin = match toks.get(3) {
            Some((at, _)) if toks.len() == 6 => value
                .get(..*at)
                .map(|head| format!("o={head}IN {} {ip}", addr_type(ip))),
            _ => None,
        }
        .ok_or_else(|| {
            SdpError::at(
                idx + 1,
                &l.text,
                "o= must be <username> <sess-id> <sess-version> <nettype> <addrtype> <address>",
            )
        })?;
        let mut out = String::with_capacity(self.lines.iter().map(|l| l.text.len() + 2).sum());
        for (i, l) in self.lines.iter().enumerate() {
            out.push_str(if i == idx { &origin } else { &l.text });
            out.push_str(l.eol.as_str());
        }
        Ok(out)
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

pub(super) fn addr_type(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    }
}

pub(super) fn connection_line(ip: IpAddr) -> String {
    format!("c=IN {} {}", addr_type(ip), ip)
}

pub(super) fn replace_port(l: &Line, sec: &Section, port: u16) -> Result<String, SdpError> {
    let (a, b) = sec.port_span;
    match (l.text.get(..a), l.text.get(b..)) {
        (Some(head), Some(tail)) => Ok(format!("{head}{port}{tail}")),
        _ => Err(SdpError::doc("internal error: m= port position")),
    }
}
