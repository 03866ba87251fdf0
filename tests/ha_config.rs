//! The `[ha]` section of the sidecar's configuration: off by default, checked by
//! `check-config` (every problem keyed `ha.<key>`), secrets from the environment or a file and
//! never in a message.
#![cfg(all(feature = "sidecar", feature = "ha"))]

use mcvideo_relay::sidecar::Config;
use std::time::Duration;

fn keys(text: &str) -> Vec<String> {
    let (c, mut p) = Config::parse(text);
    p.extend(c.validate());
    p.into_iter().map(|p| p.key).collect()
}

fn key_file(name: &str, text: &str) -> String {
    let path = std::env::temp_dir().join(format!("mcvr-ha-{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn ha_config_off_by_default() {
    let c = Config::embedded();
    assert!(!c.ha.enabled);
    assert!(c.validate().is_empty());
    // a section with HA off is not checked further (no key needed)
    assert!(keys("[ha]\nenabled = false\ninstance_id = \"\"\n").is_empty());
}

#[test]
fn ha_config_valid_section() {
    let f = key_file(
        "ok",
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
    );
    let text = format!(
        "[ha]\nenabled = true\nredis_url = \"rediss://relay:pw@redis.example:6380/1\"\n\
         redis_url_env = \"MCVR_TEST_HA_UNSET_URL\"\ninstance_id = \"relay-a\"\n\
         standby_for = [\"relay-b\"]\nheartbeat_ms = 100\nfailure_ms = 500\n\
         seal_key_file = \"{f}\"\nseal_key_env = \"MCVR_TEST_HA_UNSET_KEY\"\n"
    );
    assert_eq!(keys(&text), Vec::<String>::new());
    let (c, _) = Config::parse(&text);
    let h = c.ha.ha_config().unwrap();
    assert_eq!(h.instance_id, "relay-a");
    assert_eq!(h.standby_for, ["relay-b"]);
    assert_eq!(h.heartbeat_interval, Duration::from_millis(100));
    assert_eq!(h.failure_time, Duration::from_millis(500));
    assert!(h.redis_url.is_tls());
    assert_eq!(
        h.redis_url.to_string(),
        "rediss://relay:***@redis.example:6380/1"
    );
    assert!(!format!("{h:?}").contains(":pw@"));
    let _ = std::fs::remove_file(f);
}

#[test]
fn ha_config_every_problem_keyed() {
    let text = "[ha]\nenabled = true\nredis_url = \"http://u:hunter2@h\"\n\
                redis_url_env = \"MCVR_TEST_HA_UNSET_URL\"\nheartbeat_ms = 600\n\
                failure_ms = 1000\nmax_backlog = 0\nseal_key_env = \"MCVR_TEST_HA_UNSET_KEY\"\n\
                bogus = 1\n";
    let (c, mut p) = Config::parse(text);
    p.extend(c.validate());
    let all: Vec<String> = p.iter().map(|p| p.to_string()).collect();
    let k: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        k,
        [
            "ha.bogus",
            "ha.redis_url",
            "ha.seal_key_file",
            "ha.instance_id",
            "ha.failure_ms",
            "ha.max_backlog"
        ],
        "{all:#?}"
    );
    assert!(all.iter().all(|m| !m.contains("hunter2")), "{all:#?}");
    let f = key_file("short", "abcd");
    let text = format!(
        "[ha]\nenabled = true\ninstance_id = \"a\"\nseal_key_env = \"MCVR_TEST_HA_UNSET_KEY\"\n\
         seal_key_file = \"{f}\"\n"
    );
    assert_eq!(keys(&text), ["ha.seal_key_file"]);
    let _ = std::fs::remove_file(f);
    assert_eq!(
        keys("[ha]\nenabled = true\ninstance_id = \"a\"\nseal_key_file = \"/nonexistent/k\"\nseal_key_env = \"MCVR_TEST_HA_UNSET_KEY\"\n"),
        ["ha.seal_key_file"]
    );
    // a CA file that cannot be read (the key comes from the environment here)
    std::env::set_var("MCVR_TEST_HA_KEY_3", "11".repeat(32));
    assert_eq!(
        keys(
            "[ha]\nenabled = true\ninstance_id = \"a\"\nredis_url = \"rediss://h\"\n\
             redis_ca_file = \"/nonexistent/ca.pem\"\nseal_key_env = \"MCVR_TEST_HA_KEY_3\"\n"
        ),
        ["ha.redis_ca_file"]
    );
}

#[test]
fn ha_config_secrets_from_the_environment() {
    std::env::set_var(
        "MCVR_TEST_HA_KEY_1",
        "ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJmqu8zd7v8=",
    );
    std::env::set_var("MCVR_TEST_HA_URL_1", "redis://relay:from-env@10.0.0.9:6379");
    let (c, p) = Config::parse(
        "[ha]\nenabled = true\ninstance_id = \"a\"\nredis_url_env = \"MCVR_TEST_HA_URL_1\"\n\
         seal_key_env = \"MCVR_TEST_HA_KEY_1\"\n",
    );
    assert!(p.is_empty());
    assert!(c.validate().is_empty(), "{:?}", c.validate());
    let h = c.ha.ha_config().unwrap();
    assert_eq!(h.redis_url.to_string(), "redis://relay:***@10.0.0.9:6379");
    std::env::set_var("MCVR_TEST_HA_KEY_2", "not a key");
    let (c, _) = Config::parse(
        "[ha]\nenabled = true\ninstance_id = \"a\"\nseal_key_env = \"MCVR_TEST_HA_KEY_2\"\n",
    );
    let p = c.validate();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].key, "$MCVR_TEST_HA_KEY_2");
}

#[test]
fn ha_config_sentinels() {
    let f = key_file(
        "sentinel",
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
    );
    let base = format!(
        "[ha]\nenabled = true\ninstance_id = \"relay-a\"\nseal_key_file = \"{f}\"\n\
         seal_key_env = \"MCVR_TEST_HA_UNSET_KEY\"\nredis_url_env = \"MCVR_TEST_HA_UNSET_URL\"\n"
    );
    let text = format!(
        "{base}redis_url = \"redis://relay:pw@ignored:1/2\"\n\
         sentinels = [\"10.0.0.7:26379\", \"redis://:spw@10.0.0.8:26379\"]\n\
         master_name = \"mcvr-redis\"\n"
    );
    assert_eq!(keys(&text), Vec::<String>::new());
    let h = Config::parse(&text).0.ha.ha_config().unwrap();
    assert_eq!(h.master_name, "mcvr-redis");
    assert_eq!(h.sentinels.len(), 2);
    assert_eq!(h.sentinels[0].to_string(), "redis://10.0.0.7:26379");
    assert!(
        !format!("{h:?}").contains("spw"),
        "sentinel passwords hidden"
    );
    // a sentinel without a port, no master name, a master name without sentinels
    assert_eq!(
        keys(&format!(
            "{base}sentinels = [\"10.0.0.7\"]\nmaster_name = \"m\"\n"
        )),
        ["ha.sentinels"]
    );
    assert_eq!(
        keys(&format!("{base}sentinels = [\"10.0.0.7:26379\"]\n")),
        ["ha.master_name"]
    );
    assert_eq!(
        keys(&format!("{base}master_name = \"m\"\n")),
        ["ha.master_name"]
    );
    let _ = std::fs::remove_file(f);
}
