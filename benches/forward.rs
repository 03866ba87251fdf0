//! The in-process forward path, per packet, excluding syscalls: what a worker does to each
//! caller RTP packet between `recvmmsg` and the GSO send (source screen, latch, arbiter, SSRC
//! filter, keyframe scan; in per_leg mode SRTP unprotect with the caller's key and protect
//! with the callee leg's key), and what a junk packet from a stranger costs. 1212-byte packets.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // a bench may stop on a broken fixture; it reads the clock
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use mcvideo_relay::keys::{MasterKey, SrtpSuite};
use mcvideo_relay::relay::bench_support::ForwardPath;
use mcvideo_relay::srtp::SrtpContext;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

const SSRC: u32 = 0x1234_5678;

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&SSRC.to_be_bytes());
    p.extend(std::iter::repeat_n(0x41u8, 1200)); // non-IDR slice
    p
}

fn bench(c: &mut Criterion) {
    let now = Instant::now();
    let mut g = c.benchmark_group("forward");
    g.throughput(Throughput::Elements(1));

    let mut plain = ForwardPath::new(SSRC, None).unwrap();
    let mut pkt = rtp(1);
    g.bench_function("plain_rtp", |b| {
        b.iter(|| plain.forward(black_box(&mut pkt), now).unwrap())
    });

    // Junk at a live call: a stranger to a leg that has its source (dropped at the screen), and
    // per_leg SRTP with a wrong key from an unknown address before the caller spoke (the
    // stranger budget runs out after its burst; then dropped at the screen too).
    let stranger = SocketAddr::from(([127, 0, 0, 1], 9999));
    plain.forward(&mut rtp(2), now).unwrap(); // the caller has spoken: the leg has its source
    let mut junk = rtp(2);
    g.bench_function("stranger_after_latch", |b| {
        b.iter(|| {
            plain
                .judge_from(black_box(&mut junk), stranger, now)
                .unwrap_err()
        })
    });
    let gcm = |b: u8| MasterKey::new(SrtpSuite::AeadAes128Gcm, vec![b; 28]).unwrap();
    let mut fresh = ForwardPath::new(SSRC, Some((gcm(1), gcm(2)))).unwrap();
    let mut forged = rtp(3);
    forged.resize(forged.len() + 16, 0);
    g.bench_function("stranger_wrong_key_before_latch", |b| {
        b.iter(|| {
            fresh
                .judge_from(black_box(&mut forged), stranger, now)
                .unwrap_err()
        })
    });

    for suite in [SrtpSuite::AeadAes128Gcm, SrtpSuite::AesCm128HmacSha1_80] {
        let key = |b: u8| MasterKey::new(suite, vec![b; 16 + suite.salt_len()]).unwrap();
        let mut path = ForwardPath::new(SSRC, Some((key(1), key(2)))).unwrap();
        let mut sender = SrtpContext::new(&key(1));
        let overhead = sender.rtp_overhead();
        let mut seq = 0u16;
        g.bench_function(format!("per_leg_{}", suite.name()), |b| {
            b.iter_batched_ref(
                || {
                    seq = seq.wrapping_add(1);
                    let mut p = rtp(seq);
                    let len = p.len();
                    p.resize(len + overhead, 0);
                    let n = sender.protect_rtp(&mut p, len).unwrap();
                    p.truncate(n);
                    p
                },
                |p| path.forward(black_box(p), now).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
