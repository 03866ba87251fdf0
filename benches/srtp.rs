//! SRTP protect / unprotect of one RTP packet (12-byte header + 1200-byte payload), ours
//! (`mcvideo_relay::srtp`, in place) next to webrtc-srtp 0.17 (allocates a fresh `Bytes` per
//! packet; its replay protection is off, its default), for both suites.
//!
//! Run: `cargo bench --bench srtp`. Groups `srtp_protect_1200` and `srtp_unprotect_1200`, each
//! with `{suite}/ours` and `{suite}/webrtc-srtp`. Every iteration uses a new sequence number
//! (the replay window refuses repeats); unprotect inputs are protected in the untimed setup.
//! Group `srtp_protect_1200_ssrcs`: ours, packets of `n` SSRCs in turn through one context,
//! `n` = 16 (all active) and 64 (every packet evicts the least recently used SSRC and brings
//! one back from the evicted tier).
#![allow(clippy::unwrap_used)] // a bench may stop on a broken fixture

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use mcvideo_relay::keys::{MasterKey, SrtpSuite};
use mcvideo_relay::srtp::SrtpContext;
use webrtc_srtp::context::Context as WebrtcContext;
use webrtc_srtp::protection_profile::ProtectionProfile;

/// Payload octets: a typical video packet under a 1280-byte MTU budget.
const PAYLOAD: usize = 1200;
/// Header octets.
const HEADER: usize = 12;

const SUITES: [(SrtpSuite, &str); 2] = [
    (SrtpSuite::AeadAes128Gcm, "AEAD_AES_128_GCM"),
    (SrtpSuite::AesCm128HmacSha1_80, "AES_CM_128_HMAC_SHA1_80"),
];

fn key(suite: SrtpSuite) -> MasterKey {
    let n = suite.key_len() + suite.salt_len();
    MasterKey::new(suite, (1..=n as u8).collect()).unwrap()
}

fn webrtc(key: &MasterKey) -> WebrtcContext {
    let profile = match key.suite {
        SrtpSuite::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
        SrtpSuite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
    };
    WebrtcContext::new(key.key(), key.salt(), profile, None, None).unwrap()
}

/// A plain RTP packet with room for the tag after it.
fn packet(room: usize) -> Vec<u8> {
    let mut p = vec![0x80, 96, 0, 0, 0, 1, 0x5f, 0x90, 0x12, 0x34, 0x56, 0x78];
    p.extend((0..PAYLOAD).map(|i| i as u8));
    p.resize(HEADER + PAYLOAD + room, 0);
    p
}

fn set_seq(p: &mut [u8], seq: u16) {
    p[2..4].copy_from_slice(&seq.to_be_bytes());
}

fn bench_protect(c: &mut Criterion) {
    let mut g = c.benchmark_group("srtp_protect_1200");
    g.throughput(Throughput::Elements(1));
    for (suite, name) in SUITES {
        let key = key(suite);

        let mut ctx = SrtpContext::new(&key);
        let mut buf = packet(ctx.rtp_overhead());
        let mut seq = 0u16;
        g.bench_function(format!("{name}/ours"), |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                set_seq(&mut buf, seq);
                // Encrypting the previous ciphertext again costs the same as a fresh payload.
                black_box(ctx.protect_rtp(&mut buf, HEADER + PAYLOAD).unwrap())
            })
        });

        let mut theirs = webrtc(&key);
        let mut plain = packet(0);
        let mut seq = 0u16;
        g.bench_function(format!("{name}/webrtc-srtp"), |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                set_seq(&mut plain, seq);
                black_box(theirs.encrypt_rtp(&plain).unwrap())
            })
        });
    }
    g.finish();
}

fn bench_unprotect(c: &mut Criterion) {
    let mut g = c.benchmark_group("srtp_unprotect_1200");
    g.throughput(Throughput::Elements(1));
    for (suite, name) in SUITES {
        let key = key(suite);

        let mut tx = SrtpContext::new(&key);
        let mut rx = SrtpContext::new(&key);
        let overhead = tx.rtp_overhead();
        let mut seq = 0u16;
        g.bench_function(format!("{name}/ours"), |b| {
            b.iter_batched_ref(
                || {
                    seq = seq.wrapping_add(1);
                    let mut p = packet(overhead);
                    set_seq(&mut p, seq);
                    tx.protect_rtp(&mut p, HEADER + PAYLOAD).unwrap();
                    p
                },
                |p| black_box(rx.unprotect_rtp(p).unwrap()),
                BatchSize::SmallInput,
            )
        });

        let mut tx = webrtc(&key);
        let mut rx = webrtc(&key);
        let mut seq = 0u16;
        g.bench_function(format!("{name}/webrtc-srtp"), |b| {
            b.iter_batched_ref(
                || {
                    seq = seq.wrapping_add(1);
                    let mut p = packet(0);
                    set_seq(&mut p, seq);
                    tx.encrypt_rtp(&p).unwrap()
                },
                |p| black_box(rx.decrypt_rtp(p).unwrap()),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn bench_protect_ssrcs(c: &mut Criterion) {
    let mut g = c.benchmark_group("srtp_protect_1200_ssrcs");
    g.throughput(Throughput::Elements(1));
    for (suite, name) in SUITES {
        let key = key(suite);
        for n in [16u32, 64] {
            let mut ctx = SrtpContext::new(&key);
            let mut buf = packet(ctx.rtp_overhead());
            let (mut i, mut seq) = (0u32, 0u16);
            g.bench_function(format!("{name}/ours/{n}"), |b| {
                b.iter(|| {
                    i = (i + 1) % n;
                    if i == 0 {
                        seq = seq.wrapping_add(1);
                    }
                    set_seq(&mut buf, seq);
                    buf[8..12].copy_from_slice(&(0x1000 + i).to_be_bytes());
                    black_box(ctx.protect_rtp(&mut buf, HEADER + PAYLOAD).unwrap())
                })
            });
            assert_eq!(ctx.ssrc_stats().folded, 0);
        }
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(60)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_protect, bench_unprotect, bench_protect_ssrcs
}
criterion_main!(benches);
