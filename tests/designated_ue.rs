//! Seed step 4: the call goes to the designated UE when the callee has several; the
//! commencement mode is the caller's request, else the callee's setting, else the default.

mod common;
use common::*;
use mcvideo_relay::control::call::{CallConfig, SetupError};
use mcvideo_relay::control::registry::UeEntry;
use mcvideo_relay::control::CommencementMode;

fn ue(id: &str, designated: bool, mode: Option<CommencementMode>) -> UeEntry {
    UeEntry {
        ue_id: id.into(),
        designated_for_private_calls: designated,
        commencement_mode: mode,
    }
}

#[test]
fn designated_ue_only() {
    let mut h = Harness::new(CallConfig::default());
    let r = h.table.registry_mut();
    r.register(CALLEE, ue("bob-phone", false, None)).unwrap();
    r.register(
        CALLEE,
        ue("bob-vehicle", true, Some(CommencementMode::Automatic)),
    )
    .unwrap();
    r.register(
        CALLEE,
        ue("bob-tablet", false, Some(CommencementMode::Manual)),
    )
    .unwrap();
    let offer = h.create(create_request(caller_offer()));
    assert_eq!(offer.deliver_to, ["bob-vehicle"]);
    assert_eq!(
        offer.commencement_mode,
        CommencementMode::Automatic,
        "the designated UE's setting"
    );
}

#[test]
fn every_ue_when_none_is_designated() {
    let mut h = Harness::new(CallConfig::default());
    let r = h.table.registry_mut();
    r.register(CALLEE, ue("bob-phone", false, None)).unwrap();
    r.register(
        CALLEE,
        ue("bob-tablet", false, Some(CommencementMode::Automatic)),
    )
    .unwrap();
    let offer = h.create(create_request(caller_offer()));
    assert_eq!(offer.deliver_to, ["bob-phone", "bob-tablet"]);
    assert_eq!(offer.commencement_mode, CommencementMode::Automatic);
}

#[test]
fn callers_requested_mode_wins() {
    let mut h = Harness::new(CallConfig::default());
    h.table
        .registry_mut()
        .register(
            CALLEE,
            ue("bob-phone", true, Some(CommencementMode::Automatic)),
        )
        .unwrap();
    let mut req = create_request(caller_offer());
    req.commencement_mode = Some(CommencementMode::Manual);
    assert_eq!(h.create(req).commencement_mode, CommencementMode::Manual);
}

#[test]
fn unregistered_callee_uses_default_or_is_refused_when_required() {
    let mut h = Harness::new(CallConfig {
        default_commencement_mode: CommencementMode::Automatic,
        ..CallConfig::default()
    });
    let offer = h.create(create_request(caller_offer()));
    assert!(offer.deliver_to.is_empty());
    assert_eq!(offer.commencement_mode, CommencementMode::Automatic);

    let mut h = Harness::new(CallConfig {
        require_registered_callee: true,
        ..CallConfig::default()
    });
    let err = h
        .table
        .create_call(h.now, create_request(caller_offer()), &mut h.ports)
        .unwrap_err();
    assert_eq!(err, SetupError::CalleeNotRegistered(CALLEE.into()));
    assert!(h.ports.in_use.is_empty());
}

#[test]
fn unregistering_the_designated_ue_falls_back_to_all() {
    let mut h = Harness::new(CallConfig::default());
    let r = h.table.registry_mut();
    r.register(CALLEE, ue("a", true, None)).unwrap();
    r.register(CALLEE, ue("b", false, None)).unwrap();
    assert!(r.unregister(CALLEE, "a"));
    let offer = h.create(create_request(caller_offer()));
    assert_eq!(offer.deliver_to, ["b"]);
}
