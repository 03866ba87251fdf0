//! Unit checks of the group server's bookkeeping; the behaviour, rule by rule, is in
//! `tests/group_rules/`.
use super::*;
use crate::wire::tc::EmitOptions;

fn server(cfg: TcConfig) -> TransmissionControlServer {
    TransmissionControlServer::group(
        cfg,
        ServerIdentity {
            call_id: "sip:group@mcx".into(),
            server_ssrc: Ssrc(0x5e5e_5e5e),
        },
        Arc::new(Arbiter::new()),
        Arc::new(SsrcRegistry::new(1)),
    )
}

/// A Transmission Request with no fields, from SSRC 9.
fn transmission_request() -> Vec<u8> {
    TcMessage::new(MessageKind::TransmissionRequest, 9)
        .to_vec(&EmitOptions::default())
        .unwrap()
}

fn member(id: &str) -> MemberSetup {
    MemberSetup {
        user_id: id.into(),
        priority: 100,
        control: true,
        ..MemberSetup::default()
    }
}

#[test]
fn join_limits_and_duplicates() {
    let t0 = Instant::now();
    let mut s = server(TcConfig::default());
    for i in 0..MAX_MEMBERS {
        s.join(t0, member(&format!("sip:u{i}@mcx"))).unwrap();
    }
    assert_eq!(s.join(t0, member("sip:x@mcx")), Err(JoinError::Full));
    let a = s.slot_of("sip:u3@mcx").unwrap();
    assert!(s.leave(t0, a));
    assert_eq!(s.join(t0, member("sip:u4@mcx")), Err(JoinError::Duplicate));
    assert_eq!(
        s.join(t0, member("sip:x@mcx")),
        Ok(a),
        "a freed slot is reused"
    );
    s.release(ReleaseReason::Released);
    assert_eq!(s.join(t0, member("sip:y@mcx")), Err(JoinError::Released));
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn ssrcs_go_back_to_the_registry() {
    let t0 = Instant::now();
    let reg = Arc::new(SsrcRegistry::new(1));
    let mut s = TransmissionControlServer::group(
        TcConfig::default(),
        ServerIdentity {
            call_id: "g".into(),
            server_ssrc: Ssrc(1),
        },
        Arc::new(Arbiter::new()),
        reg.clone(),
    );
    let a = s.join(t0, member("a")).unwrap();
    s.join(t0, member("b")).unwrap();
    s.start(t0);
    let req = transmission_request();
    s.handle_datagram(t0, a, &req);
    assert_eq!(reg.in_use(), 2);
    assert!(s.arbiter().may_forward(a));
    s.release(ReleaseReason::Released);
    assert_eq!(reg.in_use(), 0);
    assert!(!s.arbiter().may_forward(a));
}

/// Found by `call_ops`: a released group kept its members' Active SSRC Lists while the arbiter's
/// routes were cleared.
#[test]
fn release_clears_every_reception() {
    let t0 = Instant::now();
    let mut s = server(TcConfig::default());
    let a = s.join(t0, member("a")).unwrap();
    let b = s.join(t0, member("b")).unwrap();
    s.start(t0);
    let req = transmission_request();
    s.handle_datagram(t0, a, &req);
    assert_eq!(s.member_view(b).unwrap().receiving, [a]);
    s.release(ReleaseReason::Released);
    assert!(s.member_view(b).unwrap().receiving.is_empty());
    assert!(s.transmissions().is_empty());
}

/// A granted member that floods Transmission Requests gets its Granted confirmed from its reply
/// budget, as a private call's transmitter does: the confirmations once bypassed the budget
/// (one Granted per request, the out queue full).
#[test]
fn reply_budget_bounds_granted_confirmations_to_a_flood() {
    let t0 = Instant::now();
    let mut s = server(TcConfig::default());
    let a = s.join(t0, member("sip:a@mcx")).unwrap();
    s.join(t0, member("sip:b@mcx")).unwrap();
    s.start(t0);
    let req = transmission_request();
    s.handle_datagram(t0, a, &req);
    assert!(s.arbiter().may_forward(a), "granted");
    let mut buf = Vec::new();
    while s.poll_transmit(&mut buf).is_some() {}
    let limited = s.stats().rate_limited;
    for _ in 0..10_000 {
        s.handle_datagram(t0, a, &req);
    }
    let mut granted = 0;
    while let Some(to) = s.poll_transmit(&mut buf) {
        if to == a && TcMessage::parse(&buf).unwrap().kind == MessageKind::TransmissionGranted {
            granted += 1;
        }
    }
    assert!(granted <= 64, "{granted} Granted confirmations");
    assert!(s.stats().rate_limited - limited > 9_000);
}
