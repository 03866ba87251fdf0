//! Hot-path costs of the `wire` views, one packet per iteration (`Throughput::Elements(1)`).
//!
//! Run: `cargo bench --bench wire`. Groups:
//!
//! * `rtp/view_parse`: `RtpPacket::new_checked` + ssrc/seq/pt/marker on a 1212-byte packet;
//! * `rtp/rtp_crate_unmarshal`: webrtc-rs `rtp::packet::Packet::unmarshal` on the same packet
//!   (the owned model this crate's view replaces on the hot path);
//! * `rtp/rewrite_ssrc_seq`: `new_checked` + SSRC and sequence-number rewrite in place;
//! * `rtcp/compound_walk`, `rtcp/validate_compound`: an SR + SDES + PLI datagram;
//! * `demux/classify`: first-bytes classification.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mcvideo_relay::wire::demux::classify;
use mcvideo_relay::wire::rtcp::{self, compound, validate_compound, RtcpKind};
use mcvideo_relay::wire::rtp::{RtpHeader, RtpPacket};

/// 12-byte header + 1200-byte payload: a typical video packet under a 1280-byte MTU budget.
const RTP_LEN: usize = 1212;

fn rtp_packet() -> Vec<u8> {
    let mut buf = vec![0u8; RTP_LEN];
    let header = RtpHeader {
        marker: true,
        payload_type: 96,
        sequence_number: 4711,
        timestamp: 90_000,
        ssrc: 0x1234_5678,
    };
    let n = header
        .emit(&mut buf)
        .expect("buffer is longer than the header");
    for (i, b) in buf.iter_mut().enumerate().skip(n) {
        *b = i as u8;
    }
    buf
}

/// SR with one report block (52 bytes) + SDES CNAME (52 bytes) + PLI (12 bytes).
fn rtcp_datagram() -> Vec<u8> {
    let mut buf = vec![
        // SR, RC=1, length 12
        0x81, 0xc8, 0x00, 0x0c, 0x90, 0x2f, 0x9e, 0x2e, 0xe9, 0x6e, 0x3e, 0x1a, 0x10, 0x62, 0x4d,
        0xd3, 0x00, 0x01, 0x5f, 0x90, 0x00, 0x00, 0x01, 0x2c, 0x00, 0x05, 0x7e, 0x40, 0xbc, 0x5e,
        0x9a, 0x40, 0x01, 0x00, 0x00, 0x02, 0x00, 0x00, 0x46, 0xe1, 0x00, 0x00, 0x01, 0x11, 0x09,
        0xf3, 0x64, 0x32, 0x00, 0x02, 0x4a, 0x79,
        // SDES, SC=1, length 12, CNAME (38 bytes), END + pad
        0x81, 0xca, 0x00, 0x0c, 0x90, 0x2f, 0x9e, 0x2e, 0x01, 0x26,
    ];
    buf.extend_from_slice(b"{9c00eb92-1afb-9d49-a47d-91f64eee69f5}");
    buf.extend_from_slice(&[0; 4]);
    let at = buf.len();
    buf.resize(at + 12, 0);
    let n = rtcp::emit_pli(0x902f_9e2e, 0xbc5e_9a40, &mut buf[at..])
        .expect("12 bytes were reserved for the PLI");
    assert_eq!(at + n, 116);
    assert_eq!(validate_compound(&buf), Ok(3));
    buf
}

fn bench_rtp(c: &mut Criterion) {
    let packet = rtp_packet();
    let mut group = c.benchmark_group("rtp");
    group.throughput(Throughput::Elements(1));

    group.bench_function("view_parse", |b| {
        b.iter(|| {
            RtpPacket::new_checked(black_box(&packet[..]))
                .map(|p| (p.ssrc(), p.sequence_number(), p.payload_type(), p.marker()))
        })
    });

    // The webrtc-rs `rtp` crate's own parser, for comparison (owned header, `Bytes` payload).
    let bytes = bytes::Bytes::from(packet.clone());
    group.bench_function("rtp_crate_unmarshal", |b| {
        use webrtc_util::marshal::Unmarshal;
        b.iter(|| rtp::packet::Packet::unmarshal(&mut black_box(bytes.clone())))
    });

    let mut buf = packet.clone();
    let mut seq = 0u16;
    group.bench_function("rewrite_ssrc_seq", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            if let Ok(mut p) = RtpPacket::new_checked(black_box(&mut buf[..])) {
                p.set_ssrc(black_box(0xfeed_f00d));
                p.set_sequence_number(seq);
            }
        })
    });
    group.finish();
}

fn bench_rtcp(c: &mut Criterion) {
    let datagram = rtcp_datagram();
    let mut group = c.benchmark_group("rtcp");
    group.throughput(Throughput::Elements(1));

    group.bench_function("compound_walk", |b| {
        b.iter(|| {
            let mut plis = 0u32;
            let mut ssrcs = 0u32;
            for packet in compound(black_box(&datagram[..])).flatten() {
                ssrcs ^= packet.sender_ssrc();
                if packet.kind() == RtcpKind::Pli {
                    plis += 1;
                }
            }
            (plis, ssrcs)
        })
    });

    group.bench_function("validate_compound", |b| {
        b.iter(|| validate_compound(black_box(&datagram[..])))
    });
    group.finish();
}

fn bench_demux(c: &mut Criterion) {
    let packet = rtp_packet();
    let mut group = c.benchmark_group("demux");
    group.throughput(Throughput::Elements(1));
    group.bench_function("classify", |b| b.iter(|| classify(black_box(&packet[..]))));
    group.finish();
}

criterion_group!(benches, bench_rtp, bench_rtcp, bench_demux);
criterion_main!(benches);
