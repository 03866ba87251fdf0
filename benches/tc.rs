//! Transmission control encode/decode (TS 24.581 messages).
#![allow(clippy::unwrap_used)] // a bench may stop on a broken fixture
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mcvideo_relay::wire::tc::{messages, EmitOptions, MessageKind, TcMessage};
use std::hint::black_box;

fn granted() -> TcMessage<'static> {
    let mut m = TcMessage::new(MessageKind::TransmissionGranted, 0x1122_3344);
    m.fields.duration = Some(30);
    m.fields.audio_ssrc = Some(0xaaaa_aaaa);
    m.fields.video_ssrc = Some(0xbbbb_bbbb);
    m
}

fn notification() -> TcMessage<'static> {
    let mut m = TcMessage::new(MessageKind::MediaTransmissionNotification, 0x1122_3344);
    m.fields.transmitting_user_id = Some("sip:alice.responder@mcx.example.org");
    m.fields.audio_ssrc = Some(0xaaaa_aaaa);
    m.fields.video_ssrc = Some(0xbbbb_bbbb);
    m.fields.permission_to_request = Some(0);
    m.fields.reception_mode = Some(0);
    m
}

fn bench(c: &mut Criterion) {
    let opts = EmitOptions::default();
    let mut g = c.benchmark_group("tc");
    g.throughput(Throughput::Elements(1));
    for (name, msg) in [("granted", granted()), ("notification", notification())] {
        let bytes = msg.to_vec(&opts).unwrap();
        let mut buf = vec![0u8; bytes.len()];
        g.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| black_box(&msg).emit(black_box(&mut buf), &opts).unwrap())
        });
        g.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| TcMessage::parse(black_box(&bytes)).unwrap())
        });
    }
    let mut two = granted().to_vec(&opts).unwrap();
    two.extend(notification().to_vec(&opts).unwrap());
    g.bench_function("decode/datagram_of_two", |b| {
        b.iter(|| messages(black_box(&two)).filter(|m| m.is_ok()).count())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
