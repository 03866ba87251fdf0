//! The per-packet arbiter check: alone, and while another thread keeps changing the state
//! (forbid/permit cycles on the same cache line). A private call's arbiter: two member slots.
#![allow(clippy::unwrap_used)] // a bench may stop on a broken fixture
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mcvideo_relay::control::arbiter::Arbiter;
use mcvideo_relay::control::Party;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("arbiter");
    g.throughput(Throughput::Elements(1));
    let a = Arc::new(Arbiter::with_members(2));
    let caller = Party::Caller.slot();
    assert!(a.permit(caller));
    g.bench_function("may_forward/alone", |b| {
        b.iter(|| black_box(&*a).may_forward(black_box(caller)))
    });

    // A writer hammering transitions on another thread.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (a, stop) = (a.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                a.forbid(caller);
                let _ = a.permit(caller);
                n += 1;
            }
            n
        })
    };
    g.bench_function("may_forward/contended_by_writer", |b| {
        b.iter(|| black_box(&*a).may_forward(black_box(caller)))
    });
    stop.store(true, Ordering::Relaxed);
    let cycles = writer.join().unwrap();
    black_box(cycles);

    // A second reader only (the realistic case: two forwarding threads, rare transitions).
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (a, stop) = (a.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += u64::from(a.may_forward(caller));
            }
            n
        })
    };
    g.bench_function("may_forward/with_second_reader", |b| {
        b.iter(|| black_box(&*a).may_forward(black_box(caller)))
    });
    stop.store(true, Ordering::Relaxed);
    black_box(reader.join().unwrap());
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
