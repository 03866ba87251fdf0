//! Group calls on the forward path, excluding syscalls.
//!
//! * `group_arbiter`: the per-packet check of a group (`may_forward`, then `receivers`): alone,
//!   and while another thread churns grants, pre-emptions and route changes on the same arbiter.
//! * `fanout`: CPU per **delivered** packet (`Throughput::Elements(receivers)`) for one
//!   transmitter to 1, 10 and 50 receivers, 1212-byte packets, end_to_end (one shared buffer)
//!   and per_leg (SRTP unprotect once, protect once per receiver leg), against the 1:1 forward
//!   of `CallRules` (`forward_1to1`); and a receiver's keyframe request routed to the
//!   transmitter and throttled (`feedback_pli_from_50_receivers`).
#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // a bench may stop on a broken fixture; it reads the clock
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use mcvideo_relay::control::arbiter::{slots, Arbiter, Slot};
use mcvideo_relay::keys::{MasterKey, SrtpSuite};
use mcvideo_relay::relay::bench_support::{ForwardPath, GroupFanOutPath};
use mcvideo_relay::srtp::SrtpContext;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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

fn s(i: usize) -> Slot {
    Slot::new(i).unwrap()
}

/// What the forward path asks the arbiter per packet: may it pass, and to whom.
#[inline]
fn check(a: &Arbiter, from: Slot) -> u64 {
    if a.may_forward(from) {
        a.receivers(from)
    } else {
        0
    }
}

fn arbiter(c: &mut Criterion) {
    let mut g = c.benchmark_group("group_arbiter");
    g.throughput(Throughput::Elements(1));
    let a = Arc::new(Arbiter::new());
    a.permit(s(0));
    for r in 1..=50 {
        a.add_route(s(0), s(r));
    }
    g.bench_function("may_forward+receivers/alone", |b| {
        b.iter(|| check(black_box(&*a), black_box(s(0))))
    });

    // Another thread churns: member 1 pre-empts member 0 and back (Cx = 1), a receiver joins
    // and leaves each one's routes, a third member is granted and ended (Cx = 2).
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (a, stop) = (a.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for (from, to) in [(0, 1), (1, 0)] {
                    a.forbid(s(from));
                    a.permit(s(to));
                    for r in 2..=50 {
                        a.add_route(s(to), s(r));
                    }
                    a.remove_route(s(to), s(7));
                    a.add_route(s(to), s(7));
                }
                a.permit(s(60));
                a.add_route(s(60), s(2));
                a.forbid(s(60));
                n += 1;
            }
            n
        })
    };
    g.bench_function("may_forward+receivers/churned_by_writer", |b| {
        b.iter(|| check(black_box(&*a), black_box(s(0))))
    });
    stop.store(true, Ordering::Relaxed);
    black_box(writer.join().unwrap());
    // The walk over the receiver set that follows (50 bits).
    let set = (1..=50).fold(0u64, |set, r| set | s(r).bit());
    g.throughput(Throughput::Elements(50));
    g.bench_function("slots/50_receivers", |b| {
        b.iter(|| slots(black_box(set)).fold(0usize, |acc, r| acc + r.index()))
    });
    g.finish();
}

fn gcm(b: u8) -> MasterKey {
    MasterKey::new(SrtpSuite::AeadAes128Gcm, vec![b; 28]).unwrap()
}

fn fanout(c: &mut Criterion) {
    let now = Instant::now();
    let mut g = c.benchmark_group("fanout");

    // The 1:1 forward (CallRules), per forwarded packet.
    g.throughput(Throughput::Elements(1));
    let mut one = ForwardPath::new(SSRC, None).unwrap();
    let mut pkt = rtp(1);
    g.bench_function("forward_1to1/e2e", |b| {
        b.iter(|| one.forward(black_box(&mut pkt), now).unwrap())
    });
    let mut one = ForwardPath::new(SSRC, Some((gcm(1), gcm(2)))).unwrap();
    let mut sender = SrtpContext::new(&gcm(1));
    let mut seq = 0u16;
    g.bench_function("forward_1to1/per_leg", |b| {
        b.iter_batched_ref(
            || protected(&mut sender, &mut seq),
            |p| one.forward(black_box(p), now).unwrap(),
            BatchSize::SmallInput,
        )
    });

    for receivers in [1usize, 10, 50] {
        g.throughput(Throughput::Elements(receivers as u64));
        let mut path = GroupFanOutPath::new(SSRC, receivers, None).unwrap();
        let mut pkt = rtp(1);
        g.bench_function(format!("group_1to{receivers}/e2e"), |b| {
            b.iter(|| {
                let n = path.forward(black_box(&mut pkt), now).unwrap();
                debug_assert_eq!(n, receivers);
                n
            })
        });
        let keys = (0..receivers).map(|r| gcm(10 + r as u8)).collect();
        let mut path = GroupFanOutPath::new(SSRC, receivers, Some((gcm(1), keys))).unwrap();
        let mut sender = SrtpContext::new(&gcm(1));
        let mut seq = 0u16;
        g.bench_function(format!("group_1to{receivers}/per_leg"), |b| {
            b.iter_batched_ref(
                || protected(&mut sender, &mut seq),
                |p| path.forward(black_box(p), now).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    // 50 receivers ask for a keyframe at once (plain RTCP): each PLI is read, routed to the
    // transmitter and throttled; one of them goes out per interval.
    g.throughput(Throughput::Elements(1));
    let mut path = GroupFanOutPath::new(SSRC, 50, None).unwrap();
    let mut pli = [0u8; 12];
    mcvideo_relay::wire::rtcp::emit_pli(0x100, SSRC, &mut pli).unwrap();
    let mut r = 0usize;
    g.bench_function("feedback_pli_from_50_receivers", |b| {
        b.iter(|| {
            r = r % 50 + 1;
            let mut p = pli;
            path.judge_from_member(r, black_box(&mut p), now).unwrap()
        })
    });
    g.finish();
}

/// The transmitter's next packet, SRTP-protected (not timed).
fn protected(sender: &mut SrtpContext, seq: &mut u16) -> Vec<u8> {
    *seq = seq.wrapping_add(1);
    let mut p = rtp(*seq);
    let len = p.len();
    p.resize(len + sender.rtp_overhead(), 0);
    let n = sender.protect_rtp(&mut p, len).unwrap();
    p.truncate(n);
    p
}

criterion_group!(benches, arbiter, fanout);
criterion_main!(benches);
