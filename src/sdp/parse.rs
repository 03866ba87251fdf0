//! Reading an SDP: lines, `m=`/`c=`/`a=` values, media sections.

use super::crypto::parse_crypto;
use super::token::{num, tokens};
use super::*;

impl SessionDescription {
    /// Reads an SDP. See the [module documentation](crate::sdp) for the contract.
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
        let lines = split_lines(text)?;
        let content_end = lines
            .iter()
            .rposition(|l| !l.text.trim().is_empty())
            .map_or(0, |i| i + 1);
        if content_end == 0 {
            return Err(SdpError::doc("empty SDP"));
        }
        let body = read_body(&lines, content_end)?;
        if body.media.is_empty() {
            return Err(SdpError::doc("no media section (m= line)"));
        }
        check_connections(&lines, &body.media)?;
        Ok(SessionDescription {
            lines,
            content_end,
            session_connection: body.session_connection,
            session_direction: body.session_direction.unwrap_or_default(),
            media: body.media,
            sections: body.sections,
        })
    }
}

/// The lines of an SDP with their line ends.
fn split_lines(text: &str) -> Result<Vec<Line>, SdpError> {
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
    Ok(lines)
}

/// What the lines before `content_end` say: the session-level connection and direction, and
/// the media sections.
struct Body {
    session_connection: Option<IpAddr>,
    session_direction: Option<Direction>,
    media: Vec<Media>,
    sections: Vec<Section>,
}

/// Reads the lines up to `content_end` (the first must be `v=0`) into sections.
fn read_body(lines: &[Line], content_end: usize) -> Result<Body, SdpError> {
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
    Ok(Body {
        session_connection,
        session_direction,
        media,
        sections,
    })
}

/// Every media section with a nonzero port has a connection address (its own or the
/// session's).
fn check_connections(lines: &[Line], media: &[Media]) -> Result<(), SdpError> {
    for m in media {
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
    Ok(())
}

/// Closes a media section. Session-level `c=` and direction lines all precede the first `m=`,
/// so they are final here.
pub(super) fn finish(
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
pub(super) fn split_type(line: &str) -> Option<(char, &str)> {
    let (ty, value) = line.split_once('=')?;
    let mut chars = ty.chars();
    let c = chars.next()?;
    if chars.next().is_some() || !c.is_ascii_alphabetic() {
        return None;
    }
    Some((c, value))
}

pub(super) fn parse_m_line(value: &str, idx: usize) -> Result<Building, &'static str> {
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
            encoding: None,
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
pub(super) fn parse_addr3(net: &str, atype: &str, addr: &str) -> Result<IpAddr, &'static str> {
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
pub(super) fn parse_connection(value: &str) -> Result<IpAddr, &'static str> {
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
pub(super) fn parse_rtcp(value: &str) -> Result<RtcpAttr, &'static str> {
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

/// `MCVideo <param>[;<param>...]` parameters (the part after the format).
pub(super) fn parse_mcvideo_fmtp(params: &str) -> Result<McVideoFmtp, &'static str> {
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
pub(super) fn media_attr(b: &mut Building, idx: usize, value: &str) -> Result<(), &'static str> {
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
                b.media.encoding = enc
                    .and_then(|e| e.split('/').next())
                    .filter(|n| !n.is_empty() && n.len() <= 32)
                    .map(str::to_owned);
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
