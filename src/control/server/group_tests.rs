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
    let req = TcMessage::new(MessageKind::TransmissionRequest, 9)
        .to_vec(&EmitOptions::default())
        .unwrap();
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
    let req = TcMessage::new(MessageKind::TransmissionRequest, 9)
        .to_vec(&EmitOptions::default())
        .unwrap();
    s.handle_datagram(t0, a, &req);
    assert_eq!(s.member_view(b).unwrap().receiving, [a]);
    s.release(ReleaseReason::Released);
    assert!(s.member_view(b).unwrap().receiving.is_empty());
    assert!(s.transmissions().is_empty());
}
