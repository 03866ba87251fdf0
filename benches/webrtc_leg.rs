//! CPU per delivered packet toward a browser (a WHEP viewer, feature `webrtc`) next to a
//! per_leg SRTP receiver leg, both without the socket send (docs/webrtc.md, BENCHMARKING.md):
//!
//! * `browser_leg_1200/viewer`: what the viewer thread does per watched packet (12-byte header,
//!   1200-byte payload): the worker's copy into the watch channel's buffer, the track rewrite,
//!   str0m's `write_rtp` in RTP mode, and `poll_output` until it hands over the SRTP datagram
//!   (AES_CM_128_HMAC_SHA1_80, str0m's pure-Rust crypto), on a connected str0m peer set up as
//!   the relay sets up a viewer (ICE-lite, H.264 only);
//! * `browser_leg_1200/per_leg_srtp`: a per_leg receiver leg's copy and SRTP protect
//!   (`mcvideo_relay::srtp`, the same suite).
//!
//! Run: `cargo bench --features webrtc --bench webrtc_leg`.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // a bench has a fixture and a clock

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mcvideo_relay::keys::{MasterKey, SrtpSuite};
use mcvideo_relay::srtp::SrtpContext;
use str0m::change::SdpOffer;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

const PAYLOAD: usize = 1200;

fn config() -> RtcConfig {
    RtcConfig::new()
        .set_crypto_provider(std::sync::Arc::new(str0m::crypto::from_feature_flags()))
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_h264(true)
}

/// Delivers everything `from` has to say to `to` (addressed `src` → `dst`); the mid of an
/// added video media, if one was announced.
fn pump(
    from: &mut Rtc,
    to: &mut Rtc,
    src: SocketAddr,
    dst: SocketAddr,
    now: Instant,
) -> Option<Mid> {
    let mut mid = None;
    from.handle_input(Input::Timeout(now)).unwrap();
    loop {
        match from.poll_output().unwrap() {
            Output::Timeout(_) => return mid,
            Output::Transmit(t) => {
                let bytes: &[u8] = &t.contents;
                let contents = bytes.try_into().unwrap();
                let r = Receive {
                    proto: Protocol::Udp,
                    source: src,
                    destination: dst,
                    contents,
                };
                to.handle_input(Input::Receive(now, r)).unwrap();
            }
            Output::Event(Event::MediaAdded(m)) if m.kind == MediaKind::Video => mid = Some(m.mid),
            Output::Event(_) => {}
        }
    }
}

/// A relay-side peer (ICE-lite, as a viewer) connected to a browser-side peer that offered a
/// receive-only video; the relay side's video mid and its payload type.
fn connected() -> (Rtc, Mid, str0m::media::Pt) {
    let mut now = Instant::now();
    let relay_addr = SocketAddr::from((Ipv4Addr::new(10, 0, 0, 1), 40_000));
    let browser_addr = SocketAddr::from((Ipv4Addr::new(10, 0, 0, 2), 50_000));
    let mut relay = config().set_ice_lite(true).build(now);
    let mut browser = config().build(now);
    relay.add_local_candidate(Candidate::host(relay_addr, "udp").unwrap());
    browser.add_local_candidate(Candidate::host(browser_addr, "udp").unwrap());
    let mut change = browser.sdp_api();
    change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending) = change.apply().unwrap();
    let offer = SdpOffer::from_sdp_string(&offer.to_sdp_string()).unwrap();
    let answer = relay.sdp_api().accept_offer(offer).unwrap();
    browser.sdp_api().accept_answer(pending, answer).unwrap();
    let mut mid = None;
    for _ in 0..2000 {
        mid = pump(&mut relay, &mut browser, relay_addr, browser_addr, now).or(mid);
        pump(&mut browser, &mut relay, browser_addr, relay_addr, now);
        if relay.is_connected() && browser.is_connected() && mid.is_some() {
            break;
        }
        now += Duration::from_millis(5);
    }
    assert!(relay.is_connected(), "the peers connect");
    let mid = mid.expect("a video media");
    let media = relay.media(mid).unwrap();
    let pt = relay
        .codec_config()
        .params()
        .iter()
        .find(|p| media.remote_pts().contains(&p.pt()))
        .unwrap()
        .pt();
    (relay, mid, pt)
}

fn packet(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend((0..PAYLOAD).map(|i| i as u8));
    p
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("browser_leg_1200");
    g.throughput(Throughput::Elements(1));
    let template = packet(1);

    let (mut rtc, mid, pt) = connected();
    let mut seq: u64 = 1;
    let start = Instant::now();
    let one = |rtc: &mut Rtc, seq: &mut u64| -> usize {
        // The worker's copy for the watcher.
        let copy = black_box(template.clone());
        *seq += 1;
        let seq = *seq;
        let payload: std::sync::Arc<[u8]> = std::sync::Arc::from(&copy[12..]);
        let now = start + Duration::from_micros(seq * 100);
        let mut api = rtc.direct_api();
        let tx = api.stream_tx_by_mid(mid, None).unwrap();
        tx.write_rtp(
            RtpWrite::new(pt, SeqNo::from(seq), (seq * 3000) as u32, now, payload)
                .marker(seq % 8 == 0)
                .nackable(true),
        );
        rtc.handle_input(Input::Timeout(now)).unwrap();
        let mut sent = 0;
        loop {
            match rtc.poll_output().unwrap() {
                Output::Timeout(_) => break,
                Output::Transmit(t) => {
                    sent += t.contents.len();
                    black_box(&t);
                }
                Output::Event(_) => {}
            }
        }
        sent
    };
    // Each write leaves as one SRTP datagram at once (str0m's pacer holds nothing back).
    for _ in 0..100 {
        let sent = one(&mut rtc, &mut seq);
        assert!(
            sent > PAYLOAD + 12,
            "one datagram per packet: {sent} octets"
        );
    }
    g.bench_function("viewer", |b| b.iter(|| black_box(one(&mut rtc, &mut seq))));

    let key = MasterKey::new(SrtpSuite::AesCm128HmacSha1_80, (1..=30).collect()).unwrap();
    let mut ctx = SrtpContext::new(&key);
    let mut buf = vec![0u8; 12 + PAYLOAD + 64];
    let mut seq16: u16 = 1;
    g.bench_function("per_leg_srtp", |b| {
        b.iter(|| {
            seq16 = seq16.wrapping_add(1);
            let n = template.len();
            buf[..n].copy_from_slice(&template);
            buf[2..4].copy_from_slice(&seq16.to_be_bytes());
            black_box(ctx.protect_rtp(&mut buf, n).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
