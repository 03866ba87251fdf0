//! The Grafana dashboards and the Prometheus alert rules in `deploy/` use only metric names and
//! label values that `GET /metrics` really exports (promtool checks their syntax: ./test.sh).
//! The HA rules and dashboard are checked against two `serve` processes with `[ha]` on and a
//! real `redis-server` (Debian package; test.sh installs it). Media ports 46940-46999.
#![cfg(feature = "sidecar")]

#[cfg(feature = "ha")]
mod ha_support;
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

/// Every `mcvideo_relay_*` series name of a `/metrics` page.
#[cfg(feature = "ha")]
fn exported_names(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The HA alert rules and the HA dashboard against two relays with `[ha]` on and one Redis:
/// every metric they use is exported there, every HA metric the docs list is used by the rules,
/// the page passes `promtool check metrics`, and the peers-alive gauge counts the other
/// instance.
#[cfg(feature = "ha")]
#[test]
#[allow(clippy::disallowed_methods)] // real processes on real time
fn ha_rules_and_dashboard_use_metrics_a_relay_with_ha_exports() {
    use sidecar_support::{eventually, ServeProcess};
    use std::io::Write;
    use std::process::{Command, Stdio};
    use std::time::Duration;

    let redis = ha_support::RedisServer::start();
    let dir = std::env::temp_dir().join(format!("mcvr-deploy-ha-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let start = |name: &str, standby_for: &[&str], port_min: u16| {
        let cfg = dir.join(format!("{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[api]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"warn\"\n\
                 [media]\nworkers = 1\nport_min = {port_min}\nport_max = {}\n\
                 [ha]\nenabled = true\nredis_url = \"{}\"\ninstance_id = \"{name}\"\n\
                 standby_for = {standby_for:?}\n",
                port_min + 19,
                redis.url()
            ),
        )
        .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcvideo-relay"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&cfg)
            .env(
                "MCVIDEO_RELAY_HA_SEAL_KEY",
                "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
            )
            .env_remove("MCVIDEO_RELAY_HA_REDIS_URL")
            .env_remove("MCVIDEO_RELAY_API_TOKEN")
            .env_remove("RUST_LOG");
        sidecar_support::KilledOnDrop(ServeProcess::start(cmd, name))
    };
    let mut a = start("relay-a", &[], 46_960);
    let b = start("relay-b", &["relay-a"], 46_980);
    let api_a = Api::new(a.0.addr, None);
    let api_b = Api::new(b.0.addr, None);
    let ready = |api: &Api| {
        let m = api.metrics();
        m.has("mcvideo_relay_ha_store_up")
            && m.get("mcvideo_relay_ha_store_up") == 1.0
            && m.get("mcvideo_relay_ha_peers_alive") == 1.0
    };
    assert!(
        eventually(Duration::from_secs(10), || ready(&api_a) && ready(&api_b)),
        "both relays up in Redis and seeing each other; a:\n{}\nb:\n{}\n{}",
        api_a.metrics().0,
        a.0.log(),
        b.0.log()
    );
    let page = api_b.metrics().0;
    let exported = exported_names(&page);
    let dir_deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/");
    let rules = std::fs::read_to_string(format!("{dir_deploy}prometheus-ha-alerts.rules.yml"))
        .expect("HA rules");
    for file in [
        "prometheus-ha-alerts.rules.yml",
        "grafana-ha-dashboard.json",
    ] {
        let text = std::fs::read_to_string(format!("{dir_deploy}{file}")).expect("deploy file");
        let used = metric_names(&text);
        assert!(used.len() >= 8, "{file} names only {used:?}");
        for name in &used {
            assert!(
                exported.contains(name),
                "{file} uses {name}, which /metrics with [ha] does not export"
            );
        }
    }
    // Every HA series of the page has a rule (deploy/README.md lists the same).
    for name in exported
        .iter()
        .filter(|n| n.starts_with("mcvideo_relay_ha_"))
    {
        assert!(
            metric_names(&rules).contains(name),
            "no HA alert rule uses {name}"
        );
    }
    for name in [
        "mcvideo_relay_ha_store_up",
        "mcvideo_relay_ha_backlog",
        "mcvideo_relay_ha_dropped_writes_total",
        "mcvideo_relay_ha_adoptions_total",
        "mcvideo_relay_ha_adoption_failures_total",
        "mcvideo_relay_ha_fenced",
        "mcvideo_relay_ha_epoch",
        "mcvideo_relay_ha_peers_alive",
    ] {
        assert!(exported.contains(name), "/metrics with [ha] lacks {name}");
    }
    // The page with the HA series is valid exposition text.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian package prometheus; test.sh installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The standby's peer dies: it sees no peer alive any more.
    let _ = a.0.child.kill();
    let _ = a.0.child.wait();
    assert!(
        eventually(Duration::from_secs(10), || api_b
            .metrics()
            .get("mcvideo_relay_ha_peers_alive")
            == 0.0),
        "relay-b still counts relay-a alive:\n{}",
        b.0.log()
    );
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}
