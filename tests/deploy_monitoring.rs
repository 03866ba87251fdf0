//! The Grafana dashboard and the Prometheus alert rules in `deploy/` use only metric names and
//! label values that `GET /metrics` really exports (promtool checks their syntax: ./test.sh).
#![cfg(feature = "sidecar")]

mod sidecar_support;

use mcvideo_relay::sidecar::{Config, Settings, Sidecar};
use sidecar_support::Api;
use std::collections::BTreeSet;

/// Every `mcvideo_relay_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("mcvideo_relay_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// Every `label="v1|v2"` / `label=~"v1|v2"` / `label!="v"` selector value for `label`.
fn label_values(text: &str, label: &str) -> BTreeSet<String> {
    let mut values = BTreeSet::new();
    for op in ["=\"", "=~\"", "!=\""] {
        for quote in ["", "\\"] {
            let needle = format!("{label}{op}");
            let needle = needle.replace('"', &format!("{quote}\""));
            let mut rest = text;
            while let Some(i) = rest.find(&needle) {
                let tail = &rest[i + needle.len()..];
                let end = tail.find(['"', '\\']).unwrap_or(tail.len());
                values.extend(tail[..end].split('|').map(str::to_owned));
                rest = &tail[end..];
            }
        }
    }
    values
}

#[test]
fn dashboard_and_alert_rules_use_exported_metrics() {
    let mut c = Config::embedded();
    c.api.listen = "127.0.0.1:0".parse().unwrap();
    c.media.port_min = 46_940;
    c.media.port_max = 46_959;
    c.media.workers = 1;
    let sc = Sidecar::start(Settings::new(c)).expect("sidecar starts");
    let api = Api::new(sc.local_addr(), None);
    assert_eq!(api.get("/healthz").status, 200);
    let page = api.metrics().0;
    let exported: BTreeSet<String> = page
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/");
    for file in ["grafana-dashboard.json", "prometheus-alerts.rules.yml"] {
        let text = std::fs::read_to_string(format!("{dir}{file}")).expect("deploy file");
        let used = metric_names(&text);
        assert!(used.len() >= 5, "{file} names no metrics?");
        for name in &used {
            assert!(
                exported.contains(name),
                "{file} uses {name}, which /metrics does not export"
            );
        }
        assert!(
            !label_values(&text, "reason").is_empty(),
            "{file}: no reason selectors found"
        );
        for label in ["code", "reason", "party", "direction"] {
            for v in label_values(&text, label) {
                let series = format!("{label}=\"{v}\"");
                assert!(
                    page.contains(&series),
                    "{file} selects {series}, which /metrics never exports"
                );
            }
        }
    }
    sc.shutdown();
}
