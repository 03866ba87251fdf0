//! Emergency and imminent peril indications raise a request above every normal one.
use super::harness::*;
use mcvideo_relay::control::server::{TcConfig, TcEvent};
use mcvideo_relay::wire::tc::{MessageKind as K, INDICATOR_EMERGENCY, INDICATOR_IMMINENT_PERIL};

#[test]
fn an_emergency_request_preempts_a_normal_transmitter_of_any_priority() {
    let mut g = G::new(TcConfig::default());
    let chief = g.join(member("chief", 255));
    let officer = g.join(member("officer", 10));
    let c = g.join(member("c", 100));
    g.s.start(g.now);
    g.request(chief, Some(255), None);
    g.out();
    g.request(officer, None, Some(INDICATOR_EMERGENCY));
    let out = g.out();
    assert_eq!(cause_of(&one(&out, chief, K::TransmissionRevoked)), 4);
    let gr = one(&out, officer, K::TransmissionGranted);
    assert_eq!(
        gr.msg().fields.transmission_indicator,
        Some(INDICATOR_EMERGENCY)
    );
    let n = one(&out, c, K::MediaTransmissionNotification);
    assert_eq!(
        n.msg().fields.transmission_indicator,
        Some(INDICATOR_EMERGENCY)
    );
    assert!(g.events().contains(&TcEvent::Preempted {
        member: chief,
        by: officer
    }));

    // A normal request, however high, does not pre-empt the emergency: it is queued.
    g.request(chief, Some(255), None);
    one(&g.out(), chief, K::QueuePositionInfo);
    assert!(g.arbiter().may_forward(officer));
}

#[test]
fn emergency_outranks_imminent_peril_which_outranks_normal() {
    let mut g = G::new(TcConfig::default());
    let a = g.join(member("a", 100));
    let peril = g.join(member("peril", 1));
    let normal = g.join(member("normal", 255));
    let emerg = g.join(member("emergency", 1));
    g.s.start(g.now);
    g.request(a, None, None);
    g.request(peril, None, Some(INDICATOR_IMMINENT_PERIL));
    let out = g.out();
    one(&out, a, K::TransmissionRevoked);
    one(&out, peril, K::TransmissionGranted);
    g.request(normal, Some(255), None);
    one(&g.out(), normal, K::QueuePositionInfo);
    g.request(emerg, None, Some(INDICATOR_EMERGENCY));
    let out = g.out();
    one(&out, peril, K::TransmissionRevoked);
    one(&out, emerg, K::TransmissionGranted);
    // The queue keeps the normal request; it is next when the emergency ends.
    g.end(emerg);
    one(&g.out(), normal, K::TransmissionGranted);
}

#[test]
fn a_queued_member_that_raises_an_emergency_preempts() {
    let mut g = G::new(TcConfig::default());
    let a = g.join(member("a", 100));
    let b = g.join(member("b", 100));
    g.s.start(g.now);
    g.request(a, None, None);
    g.request(b, None, None);
    one(&g.out(), b, K::QueuePositionInfo);
    g.request(b, None, Some(INDICATOR_EMERGENCY));
    let out = g.out();
    one(&out, a, K::TransmissionRevoked);
    one(&out, b, K::TransmissionGranted);
    assert!(g.s.queue().is_empty());
}
