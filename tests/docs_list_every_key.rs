//! deploy/README.md lists every configuration key and every field of `POST /v1/calls`: the
//! lists the relay itself gives (in its "unknown key" and "unknown field" errors) are compared
//! with the README's, so a key or field added without its documentation fails here.
#![cfg(feature = "sidecar")]

mod sidecar_support;

use mcvideo_relay::sidecar::{Config, Settings, Sidecar};
use sidecar_support::Api;
use std::collections::BTreeSet;

fn readme() -> String {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/README.md");
    std::fs::read_to_string(p).unwrap()
}

/// Words in backticks or separated by commas, braces, spaces (a field list as the README
/// writes it: `{call_id?, caller: {mcvideo_id, ...}}`), without `?`.
fn words(s: &str) -> BTreeSet<String> {
    s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The names a message lists after `after`: in backticks ("... expected one of `a`, `b`",
/// "expected `a` or `b`") or plain ("keys are: a, b)").
fn listed(message: &str, after: &str) -> BTreeSet<String> {
    let rest = message
        .split_once(after)
        .unwrap_or_else(|| panic!("{after:?} not in {message:?}"))
        .1;
    if rest.contains('`') {
        return rest
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
    }
    words(rest.split(')').next().unwrap_or(rest))
}

#[test]
fn every_config_key_is_in_the_readme() {
    let readme = readme();
    let flat = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    let (_, problems) = Config::parse("[zz_not_a_section]\n");
    let sections = listed(&problems[0].message, "the sections are:");
    assert!(
        sections.contains("media") && sections.contains("ng"),
        "{sections:?}"
    );
    for section in &sections {
        let (_, problems) = Config::parse(&format!("[{section}]\nzz_not_a_key = 1\n"));
        let keys = listed(&problems[0].message, "keys are:");
        // The README's "Sections:" list: `[media] ip, port_min, ...` up to the closing backtick.
        let marker = format!("`[{section}] ");
        let documented = flat
            .split_once(&marker)
            .map(|(_, rest)| words(rest.split('`').next().unwrap_or_default()))
            .unwrap_or_else(|| panic!("deploy/README.md has no {marker}...` list"));
        let missing: Vec<_> = keys.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "deploy/README.md's [{section}] list leaves out {missing:?}"
        );
    }
    // The keys of one [[media.interfaces]] entry.
    let (_, problems) = Config::parse(
        "[[media.interfaces]]\nname = \"a\"\nip = \"127.0.0.1\"\nport_min = 1\nport_max = 9\nzz = 1\n",
    );
    let keys = listed(&problems[0].message, "expected");
    let documented = flat
        .split_once("`[[media.interfaces]] ")
        .map(|(_, rest)| words(rest.split('`').next().unwrap_or_default()))
        .expect("deploy/README.md has no `[[media.interfaces]] ...` list");
    let missing: Vec<_> = keys.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "deploy/README.md's [[media.interfaces]] list leaves out {missing:?}"
    );
}

#[test]
fn every_field_of_post_v1_calls_is_in_the_readme() {
    let mut c = Config::embedded();
    c.api.listen = "127.0.0.1:0".parse().unwrap();
    c.ng.listen = "off".into();
    let sc = Sidecar::start(Settings::new(c)).expect("sidecar starts");
    let api = Api::new(sc.local_addr(), None);
    // The API names the fields it takes when it refuses one it does not know.
    let fields = |body: serde_json::Value| {
        let (status, _, message) = api.post("/v1/calls", &body).error();
        assert_eq!(status, 400, "{message}");
        listed(&message, "expected")
    };
    let caller = fields(serde_json::json!({"caller": {"zz": 1}}));
    let callee = fields(serde_json::json!({
        "caller": {"mcvideo_id": "a", "sdp_offer": "v=0"}, "callee": {"zz": 1}
    }));
    let top = fields(serde_json::json!({"zz": 1}));
    assert!(caller.contains("interface") && callee.contains("interface"));
    let readme = readme();
    let row = readme
        .lines()
        .find(|l| l.starts_with("| `POST /v1/calls` |"))
        .expect("the POST /v1/calls row");
    let object = |key: &str| {
        let rest = row
            .split_once(&format!("{key}: {{"))
            .unwrap_or_else(|| panic!("no `{key}: {{...}}` in {row}"))
            .1;
        words(rest.split('}').next().unwrap_or_default())
    };
    for (what, want, documented) in [
        ("caller", caller, object("caller")),
        ("callee", callee, object("callee")),
        ("the request", top, words(row)),
    ] {
        let missing: Vec<_> = want.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "the POST /v1/calls row leaves out {what}'s {missing:?}: {row}"
        );
    }
    sc.shutdown();
}
