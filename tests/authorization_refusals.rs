//! Seed step 2: a refused caller or callee gets a typed error naming the party and why, and
//! nothing is allocated or kept.

mod common;
use common::*;
use mcvideo_relay::control::call::{CallConfig, SetupError};
use mcvideo_relay::control::policy::RulePolicy;
use mcvideo_relay::control::Party;
use std::sync::Arc;

fn policy() -> Arc<RulePolicy> {
    Arc::new(RulePolicy {
        push_allow: vec!["sip:*@mcx.example".into()],
        push_deny: vec!["sip:trainee*@mcx.example".into()],
        receive_allow: vec!["sip:*@mcx.example".into()],
        receive_deny: vec!["sip:dispatch@mcx.example".into()],
    })
}

#[test]
fn caller_not_allowed_to_push() {
    let mut h = Harness::with_policy(CallConfig::default(), policy());
    let mut req = create_request(caller_offer());
    req.caller_id = "sip:trainee1@mcx.example".into();
    let err = h.table.create_call(h.now, req, &mut h.ports).unwrap_err();
    match &err {
        SetupError::NotAuthorized {
            party,
            user,
            reason,
        } => {
            assert_eq!(*party, Party::Caller);
            assert_eq!(user, "sip:trainee1@mcx.example");
            assert!(reason.contains("push"), "{reason}");
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(err.code(), "not_authorized");
    assert!(err
        .to_string()
        .starts_with("caller sip:trainee1@mcx.example is not authorized"));
    assert!(h.ports.in_use.is_empty(), "nothing allocated");
    assert!(h.table.is_empty());
}

#[test]
fn callee_not_allowed_to_receive() {
    let mut h = Harness::with_policy(CallConfig::default(), policy());
    let mut req = create_request(caller_offer());
    req.callee_id = "sip:dispatch@mcx.example".into();
    let err = h.table.create_call(h.now, req, &mut h.ports).unwrap_err();
    assert!(
        matches!(
            err,
            SetupError::NotAuthorized {
                party: Party::Callee,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(h.ports.in_use.is_empty());
    // A stranger from another domain matches no allow rule.
    let mut req = create_request(caller_offer());
    req.callee_id = "sip:eve@elsewhere.example".into();
    let err = h.table.create_call(h.now, req, &mut h.ports).unwrap_err();
    assert!(
        matches!(
            err,
            SetupError::NotAuthorized {
                party: Party::Callee,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn allowed_pair_goes_through() {
    let mut h = Harness::with_policy(CallConfig::default(), policy());
    h.established();
}

#[test]
fn request_without_video_push_indication_is_refused() {
    let mut h = Harness::new(CallConfig::default());
    let mut req = create_request(caller_offer());
    req.video_push = false;
    let err = h.table.create_call(h.now, req, &mut h.ports).unwrap_err();
    assert_eq!(err, SetupError::NotVideoPush);
    assert!(h.ports.in_use.is_empty());
}

#[test]
fn port_exhaustion_refuses_and_returns_partial_allocations() {
    let mut h = Harness::new(CallConfig::default());
    h.ports = Ports::new(4); // fewer pairs than one call needs (6)
    let err = h
        .table
        .create_call(h.now, create_request(caller_offer()), &mut h.ports)
        .unwrap_err();
    assert_eq!(err, SetupError::NoPortsAvailable);
    assert!(h.ports.in_use.is_empty(), "partial allocation given back");
    assert!(h.table.is_empty());
}

#[test]
fn call_limit_and_duplicate_ids() {
    let cfg = CallConfig {
        max_calls: 1,
        ..CallConfig::default()
    };
    let mut h = Harness::new(cfg);
    h.create(create_request(caller_offer()));
    let err = h
        .table
        .create_call(h.now, create_request(caller_offer()), &mut h.ports)
        .unwrap_err();
    assert_eq!(err, SetupError::DuplicateCallId("call-1".into()));
    let mut other = create_request(caller_offer());
    other.call_id = Some("call-2".into());
    let err = h.table.create_call(h.now, other, &mut h.ports).unwrap_err();
    assert_eq!(err, SetupError::TooManyCalls);
    assert_eq!(h.ports.in_use.len(), 6, "only the first call holds ports");
}
