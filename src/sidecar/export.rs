//! `mcvideo-relay recording export DIR`: turns a per_leg or plain recording (docs/recording.md)
//! into one playable H.264 Annex B file per transmission and video stream. The transmission
//! log says which packets each transmission was (its SSRC, first and last RTP sequence
//! numbers); the stream's pcap files hold them; each packet is depacketized per RFC 6184
//! (single NAL unit, STAP-A, FU-A) into start-code-delimited NAL units that ffmpeg plays.
//! An end_to_end recording of SRTP is refused: the relay never held its key.

use serde_json::Value;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// One exported transmission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// The file written.
    pub file: PathBuf,
    /// The member who transmitted.
    pub member: String,
    /// RTP packets found for it in the recording.
    pub packets: u64,
    /// NAL units written.
    pub nal_units: u64,
}

/// One transmission on one stream, as the transmission log says.
#[derive(Debug, Clone)]
struct Segment {
    member: String,
    /// When its media started (the log's `time`).
    time: String,
    stream: usize,
    ssrcs: [u32; 2],
    first_seq: u16,
    last_seq: u16,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Reads recording `dir` and writes one `.h264` file per transmission and video stream into
/// `out` (created). Returns what was written, in the order of the log.
pub fn export_recording(dir: &Path, out: &Path) -> io::Result<Vec<Exported>> {
    let meta: Value = serde_json::from_str(&fs::read_to_string(dir.join("media.json"))?)
        .map_err(|e| invalid(format!("media.json: {e}")))?;
    let streams = meta["streams"].as_array().cloned().unwrap_or_default();
    let video: Vec<usize> = streams
        .iter()
        .filter(|s| s["kind"] == "video")
        .filter_map(|s| s["stream"].as_u64().map(|i| i as usize))
        .collect();
    if let Some(s) = streams.iter().find(|s| s["encrypted"] == true) {
        return Err(invalid(format!(
            "stream {} was recorded encrypted (end_to_end SRTP: the relay holds no key); only \
             per_leg and plain recordings can be exported",
            s["stream"]
        )));
    }
    let log = fs::read_to_string(dir.join("transmissions.jsonl"))?;
    let segments = segments(&log)?;
    fs::create_dir_all(out)?;
    let mut done = Vec::new();
    for stream in video {
        let packets = read_stream(dir, stream)?;
        for seg in segments.iter().filter(|s| s.stream == stream) {
            let name = format!(
                "{}-{}-stream{}.h264",
                safe(&seg.member),
                safe(&seg.time),
                stream
            );
            let file = out.join(name);
            let (n, nals, bytes) = depacketize(&packets, seg);
            let mut f = fs::File::create(&file)?;
            f.write_all(&bytes)?;
            done.push(Exported {
                file,
                member: seg.member.clone(),
                packets: n,
                nal_units: nals,
            });
        }
    }
    Ok(done)
}

/// `s` as one file name component.
fn safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The transmissions of a log: each `media` item of a `transmission_ended` line (or of the
/// `released` line, for one still open), timed by its `media_started` line.
fn segments(log: &str) -> io::Result<Vec<Segment>> {
    let mut out = Vec::new();
    let mut started: Vec<(String, String)> = Vec::new();
    for (i, line) in log.lines().enumerate() {
        let v: Value = serde_json::from_str(line)
            .map_err(|e| invalid(format!("transmissions.jsonl line {}: {e}", i + 1)))?;
        let member = v["member"].as_str().unwrap_or_default().to_owned();
        let time = v["time"].as_str().unwrap_or_default().to_owned();
        match v["event"].as_str() {
            Some("media_started") => started.push((member, time)),
            Some("transmission_ended" | "released") => {
                for m in v["media"].as_array().into_iter().flatten() {
                    let num = |k: &str| m[k].as_u64();
                    let (Some(stream), Some(ssrc), Some(first), Some(last)) = (
                        num("stream"),
                        num("ssrc"),
                        num("first_seq"),
                        num("last_seq"),
                    ) else {
                        continue;
                    };
                    let member = if member.is_empty() {
                        // `released` names no member: the transmission's start does.
                        started.last().map(|s| s.0.clone()).unwrap_or_default()
                    } else {
                        member.clone()
                    };
                    let time = started
                        .iter()
                        .rev()
                        .find(|s| s.0 == member)
                        .map_or_else(|| time.clone(), |s| s.1.clone());
                    out.push(Segment {
                        member,
                        time,
                        stream: stream as usize,
                        ssrcs: [ssrc as u32, num("last_ssrc").unwrap_or(ssrc) as u32],
                        first_seq: first as u16,
                        last_seq: last as u16,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Every RTP packet of stream `stream`'s pcap files, in order.
fn read_stream(dir: &Path, stream: usize) -> io::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for part in 0.. {
        let name = if part == 0 {
            format!("stream-{stream}.pcap")
        } else {
            format!("stream-{stream}.{part}.pcap")
        };
        let b = match fs::read(dir.join(name)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        };
        read_pcap(&b, &mut out)?;
    }
    Ok(out)
}

/// The UDP payloads of a pcap file of raw IP (as the recorder writes it).
fn read_pcap(b: &[u8], out: &mut Vec<Vec<u8>>) -> io::Result<()> {
    let u32_at =
        |i: usize| -> Option<u32> { Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?)) };
    if u32_at(0) != Some(0xa1b2_c3d4) || u32_at(20) != Some(101) {
        return Err(invalid("not a little-endian raw-IP pcap file"));
    }
    let mut at = 24;
    while let Some(incl) = u32_at(at + 8) {
        let start = at + 16;
        let end = start + incl as usize;
        // A file cut short (a full disk) ends with a partial record: what came before stays.
        let Some(p) = b.get(start..end) else { break };
        let ip_len = match p.first().map(|v| v >> 4) {
            Some(4) => usize::from(p.first().copied().unwrap_or(0) & 0x0f) * 4,
            Some(6) => 40,
            _ => return Err(invalid("a record is neither IPv4 nor IPv6")),
        };
        if let Some(udp) = p.get(ip_len + 8..) {
            out.push(udp.to_vec());
        }
        at = end;
    }
    Ok(())
}

/// The RTP header fields the export needs, and the payload (padding removed).
fn rtp(p: &[u8]) -> Option<(u32, u16, &[u8])> {
    let b0 = *p.first()?;
    // RTCP (RFC 5761: packet types 200 to 204 where RTP has its marker and payload type) is
    // not media.
    if b0 >> 6 != 2 || (200..=204).contains(p.get(1)?) {
        return None;
    }
    let seq = u16::from_be_bytes([*p.get(2)?, *p.get(3)?]);
    let ssrc = u32::from_be_bytes(p.get(8..12)?.try_into().ok()?);
    let mut at = 12 + 4 * usize::from(b0 & 0x0f);
    if b0 & 0x10 != 0 {
        let words = u16::from_be_bytes([*p.get(at + 2)?, *p.get(at + 3)?]);
        at += 4 + 4 * usize::from(words);
    }
    let mut end = p.len();
    if b0 & 0x20 != 0 {
        end = end.checked_sub(usize::from(*p.last()?))?;
    }
    Some((ssrc, seq, p.get(at..end)?))
}

/// The Annex B stream of segment `seg` out of `packets`: (RTP packets used, NAL units, bytes).
/// The segment runs from its SSRC's packet `first_seq` to its packet `last_seq`.
fn depacketize(packets: &[Vec<u8>], seg: &Segment) -> (u64, u64, Vec<u8>) {
    const START: [u8; 4] = [0, 0, 0, 1];
    let (mut used, mut nals) = (0u64, 0u64);
    let mut out = Vec::new();
    let mut inside = false;
    // An FU-A unit being put together: whether its start was seen.
    let mut fu_open = false;
    for p in packets {
        let Some((ssrc, seq, payload)) = rtp(p) else {
            continue;
        };
        if !seg.ssrcs.contains(&ssrc) {
            continue;
        }
        if !inside {
            if ssrc != seg.ssrcs[0] || seq != seg.first_seq {
                continue;
            }
            inside = true;
        }
        used += 1;
        let Some(&h) = payload.first() else { continue };
        match h & 0x1f {
            1..=23 => {
                out.extend_from_slice(&START);
                out.extend_from_slice(payload);
                nals += 1;
                fu_open = false;
            }
            24 => {
                // STAP-A: 16-bit sizes, each followed by a NAL unit.
                let mut at = 1;
                while let (Some(&a), Some(&b)) = (payload.get(at), payload.get(at + 1)) {
                    let n = usize::from(u16::from_be_bytes([a, b]));
                    let Some(nal) = payload.get(at + 2..at + 2 + n) else {
                        break;
                    };
                    out.extend_from_slice(&START);
                    out.extend_from_slice(nal);
                    nals += 1;
                    at += 2 + n;
                }
                fu_open = false;
            }
            28 => {
                let (Some(&fu), Some(rest)) = (payload.get(1), payload.get(2..)) else {
                    continue;
                };
                if fu & 0x80 != 0 {
                    out.extend_from_slice(&START);
                    out.push((h & 0xe0) | (fu & 0x1f));
                    nals += 1;
                    fu_open = true;
                }
                if fu_open {
                    out.extend_from_slice(rest);
                }
                if fu & 0x40 != 0 {
                    fu_open = false;
                }
            }
            _ => {}
        }
        if seq == seg.last_seq {
            break;
        }
    }
    (used, nals, out)
}

/// What `mcvideo-relay recording export DIR` prints: one line per file.
pub fn report(done: &[Exported]) -> String {
    let mut s = String::new();
    for e in done {
        let _ = writeln!(
            s,
            "{}\t{}\t{} RTP packets\t{} NAL units",
            e.file.display(),
            e.member,
            e.packets,
            e.nal_units
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 96];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0]);
        p.extend_from_slice(&7u32.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn single_stap_a_and_fu_a_become_annex_b() {
        let seg = Segment {
            member: "A".into(),
            time: "t".into(),
            stream: 0,
            ssrcs: [7, 7],
            first_seq: 10,
            last_seq: 13,
        };
        let packets = [
            pkt(9, &[0x65, 9]),                          // before the segment
            pkt(10, &[0x78, 0, 2, 0x67, 1, 0, 1, 0x68]), // STAP-A: SPS, PPS
            pkt(11, &[0x7c, 0x85, 1, 2]),                // FU-A start of an IDR (type 5)
            pkt(12, &[0x7c, 0x45, 3]),                   // FU-A end
            pkt(13, &[0x41, 4]),                         // a single NAL unit
            pkt(14, &[0x41, 5]),                         // after it
        ];
        let (used, nals, out) = depacketize(&packets, &seg);
        assert_eq!((used, nals), (4, 4));
        assert_eq!(
            out,
            [
                0, 0, 0, 1, 0x67, 1, 0, 0, 0, 1, 0x68, 0, 0, 0, 1, 0x65, 1, 2, 3, 0, 0, 0, 1, 0x41,
                4
            ]
        );
    }
}
