//! The sidecar's configuration: embedded defaults, the example file, every problem reported
//! with its key, the policy file, and the command-line flags.
#![cfg(feature = "sidecar")]

use mcvideo_relay::control::CommencementMode;
use mcvideo_relay::sidecar::config::LogFormat;
use mcvideo_relay::sidecar::{Config, PolicyFile, ServeOptions, Settings};
use std::path::Path;
use std::time::Duration;

fn keys(problems: &[mcvideo_relay::sidecar::Problem]) -> Vec<&str> {
    problems.iter().map(|p| p.key.as_str()).collect()
}

#[test]
fn embedded_defaults_are_valid_and_match_the_design() {
    let c = Config::embedded();
    assert!(c.validate().is_empty(), "{:?}", c.validate());
    assert_eq!(c.api.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.api.token_env, "MCVIDEO_RELAY_API_TOKEN");
    assert_eq!(c.api.max_body_bytes, 256 * 1024);
    assert_eq!(
        (
            c.media.ip.to_string().as_str(),
            c.media.port_min,
            c.media.port_max
        ),
        ("127.0.0.1", 40_000, 49_999)
    );
    assert_eq!(
        c,
        Config::default(),
        "the embedded file says what the defaults are"
    );
    assert!(c.policy.file.is_none());
    let e = c.engine_config();
    assert_eq!(e.media_ip.to_string(), "127.0.0.1");
    assert_eq!((e.port_min, e.port_max), (40_000, 49_999));
    assert_eq!(e.call.tc.t1_inactivity, Duration::from_secs(30));
    assert_eq!(e.call.tc.video_ssrc_field_id, 23);
    assert_eq!(e.call.tc.max_duration, None);
}

#[test]
fn the_example_config_passes_and_sets_what_it_says() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let (c, problems) = Config::read_file(&dir.join("config.example.toml"));
    assert!(problems.is_empty(), "{problems:?}");
    assert!(c.validate().is_empty(), "{:?}", c.validate());
    assert_eq!(c.policy.file.as_deref(), Some("policy.example.toml"));
    let s = Settings::resolve(c, Some(&dir)).expect("the example policy loads");
    let p = s.policy.expect("a policy");
    assert!(p.may_push("sip:alice@police.example").is_ok());
    assert!(p.may_push("sip:trainee-1@police.example").is_err());
    assert!(p.may_push("sip:mallory@example.com").is_err());
    assert!(p.may_receive_push("sip:anyone@anywhere").is_ok());
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let text = r#"
[api]
listen = "localhost:8080"
max_body_bytes = "big"
tokn_env = "X"

[media]
ip = "0.0.0.0"
port_min = 50000
port_max = 40000
workers = -2
latch_after_packets = 0

[calls]
default_commencement_mode = "sometimes"
offer_timeout_secs = 0
max_calls = 0

[transmission_control]
video_ssrc_field_id = 25
t4_granted_ms = 1
max_duration_secs = "forever"

[logs]
format = "xml"

[log]
format = "xml"
level = "info,=="
"#;
    let (c, mut problems) = Config::parse(text);
    problems.extend(c.validate());
    let got = keys(&problems);
    for want in [
        "api.listen",
        "api.max_body_bytes",
        "api.tokn_env",
        "media.ip",
        "media.port_min",
        "media.workers",
        "media.latch_after_packets",
        "calls.default_commencement_mode",
        "calls.offer_timeout_secs",
        "calls.max_calls",
        "transmission_control.video_ssrc_field_id",
        "transmission_control.t4_granted_ms",
        "transmission_control.max_duration_secs",
        "logs",
        "log.format",
        "log.level",
    ] {
        assert!(got.contains(&want), "{want} missing from {problems:#?}");
    }
    let by_key = |k: &str| problems.iter().find(|p| p.key == k).unwrap().to_string();
    assert_eq!(
        by_key("media.port_min"),
        "media.port_min: must be <= media.port_max (50000 > 40000)"
    );
    assert!(
        by_key("api.tokn_env").contains("unknown key"),
        "{}",
        by_key("api.tokn_env")
    );
    assert!(by_key("api.max_body_bytes").contains("invalid type"));
    assert!(by_key("logs").contains("unknown section"));
    for (key, says) in [
        ("api.listen", "`localhost:8080` is not an IP:port address"),
        ("media.ip", "must be a unicast address"),
        (
            "calls.default_commencement_mode",
            "must be \"automatic\" or \"manual\", not \"sometimes\"",
        ),
        ("log.format", "xml"),
        ("log.level", "not a log filter"),
    ] {
        assert!(by_key(key).contains(says), "{}", by_key(key));
    }
    // Keys of the wrong type keep their defaults; the rest of the file is still read.
    assert_eq!(c.api.max_body_bytes, 256 * 1024);
    assert_eq!(c.media.port_min, 50_000);

    let (_, problems) = Config::parse("[api]\nlisten = \n");
    assert_eq!(problems.len(), 1);
    assert!(problems[0].message.starts_with("line 2"), "{}", problems[0]);
    let (_, problems) = Config::parse("api = 3\n");
    assert_eq!(keys(&problems), ["api"]);
    let (_, problems) = Config::parse("[media]\nport_min = 40000\nport_max = 40002\n");
    let c = Config::parse("[media]\nport_min = 40000\nport_max = 40002\n").0;
    assert!(problems.is_empty());
    assert_eq!(
        keys(&c.validate()),
        ["media.port_max"],
        "fewer than two pairs"
    );
}

#[test]
fn settings_read_the_token_from_the_environment_or_a_file() {
    let dir = std::env::temp_dir().join(format!("mcv-sidecar-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut c = Config::embedded();
    c.api.token_env = "MCVIDEO_RELAY_TEST_TOKEN_UNSET_9f2".into();
    assert_eq!(Settings::resolve(c.clone(), None).unwrap().token, None);
    std::fs::write(dir.join("token"), "  from-a-file\n").unwrap();
    c.api.token_file = Some("token".into());
    assert_eq!(
        Settings::resolve(c.clone(), Some(&dir))
            .unwrap()
            .token
            .as_deref(),
        Some("from-a-file")
    );
    c.api.token_file = Some("missing".into());
    let e = Settings::resolve(c.clone(), Some(&dir)).unwrap_err();
    assert_eq!(keys(&e), ["api.token_file"]);
    c.api.token_file = None;
    c.policy.file = Some("absent-policy.toml".into());
    let e = Settings::resolve(c, Some(&dir)).unwrap_err();
    assert_eq!(keys(&e), ["policy.file"]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn policy_files_are_checked_key_by_key() {
    let p = PolicyFile::parse("push_allow = [\"sip:*\"]\nreceive_allow = [\"*\"]\n").unwrap();
    assert!(p.warnings().is_empty());
    let e = PolicyFile::parse("push_alow = [\"x\"]\npush_deny = \"x\"\nreceive_allow = [\"\"]\n")
        .unwrap_err();
    assert_eq!(
        keys(&e),
        ["push_alow", "push_deny", "receive_allow[0]"],
        "{e:?}"
    );
    assert_eq!(
        PolicyFile::parse("").unwrap().warnings().len(),
        2,
        "empty allow lists refuse everyone"
    );
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn serve_flags_override_the_file() {
    let o = ServeOptions::parse(&args(&[
        "--config",
        "x.toml",
        "--listen=127.0.0.1:0",
        "--media-ip",
        "127.0.0.2",
        "--ports",
        "41000-41099",
        "--log-format",
        "json",
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(o.config.as_deref(), Some(Path::new("x.toml")));
    let mut c = Config::embedded();
    assert!(o.apply(&mut c).is_empty());
    assert_eq!(c.api.listen.to_string(), "127.0.0.1:0");
    assert_eq!(c.media.ip.to_string(), "127.0.0.2");
    assert_eq!((c.media.port_min, c.media.port_max), (41_000, 41_099));
    assert_eq!(c.log.format, LogFormat::Json);
    assert!(c.validate().is_empty());

    assert_eq!(ServeOptions::parse(&args(&["--help"])), Ok(None));
    assert!(ServeOptions::parse(&args(&["--bogus"]))
        .unwrap_err()
        .contains("--bogus"));
    assert!(ServeOptions::parse(&args(&["--listen"]))
        .unwrap_err()
        .contains("a value is required for '--listen <ADDR>'"));
    let help = ServeOptions::help();
    for flag in [
        "--config <FILE>",
        "--listen <ADDR>",
        "--media-ip <IP>",
        "--ports <MIN-MAX>",
        "--log-format <FORMAT>",
        "MCVIDEO_RELAY_API_TOKEN",
        "RUST_LOG",
    ] {
        assert!(help.contains(flag), "{flag} not in:\n{help}");
    }
    let o = ServeOptions::parse(&args(&["--ports", "9-x", "--log-format", "yaml"]))
        .unwrap()
        .unwrap();
    assert_eq!(keys(&o.apply(&mut c)), ["--ports", "--log-format"]);
    let o = ServeOptions::parse(&args(&["--ports", "5000-4000"]))
        .unwrap()
        .unwrap();
    assert!(o.apply(&mut c).is_empty());
    assert_eq!(keys(&c.validate()), ["media.port_min"]);
    assert_eq!(
        Config::embedded().calls.default_commencement_mode,
        CommencementMode::Manual
    );
    let o = ServeOptions::parse(&args(&["--listen", "localhost", "--media-ip", "x"]))
        .unwrap()
        .unwrap();
    assert_eq!(keys(&o.apply(&mut c)), ["--listen", "--media-ip"]);
}

#[test]
fn ha_flags_override_the_file_and_keep_passwords_off_the_command_line() {
    let o = ServeOptions::parse(&args(&[
        "--ha-instance-id",
        "relay-b",
        "--ha-standby-for",
        "relay-a, relay-c",
        "--ha-redis-url",
        "redis://10.0.0.5:6379",
    ]))
    .unwrap()
    .unwrap();
    let mut c = Config::embedded();
    assert!(!c.ha.enabled);
    assert!(o.apply(&mut c).is_empty());
    assert!(c.ha.enabled);
    assert_eq!(c.ha.instance_id, "relay-b");
    assert_eq!(c.ha.standby_for, ["relay-a", "relay-c"]);
    assert_eq!(c.ha.redis_url, "redis://10.0.0.5:6379");
    let o = ServeOptions::parse(&args(&[
        "--ha-redis-url",
        "rediss://relay:s3cret@redis:6380",
    ]))
    .unwrap()
    .unwrap();
    let problems = o.apply(&mut c);
    assert_eq!(keys(&problems), ["--ha-redis-url"]);
    assert!(!format!("{problems:?}").contains("s3cret"));
    assert_eq!(c.ha.redis_url, "redis://10.0.0.5:6379", "unchanged");
    let help = ServeOptions::help();
    for flag in [
        "--ha-instance-id <ID>",
        "--ha-standby-for <ID,...>",
        "--ha-redis-url <URL>",
        "MCVIDEO_RELAY_HA_SEAL_KEY",
    ] {
        assert!(help.contains(flag), "{flag} not in:\n{help}");
    }
}

#[test]
fn media_interfaces_are_read_checked_and_handed_to_the_engine() {
    let text = "[media]\n\
        [[media.interfaces]]\nname = \"access\"\nip = \"127.0.0.1\"\nport_min = 30000\nport_max = 30999\n\
        [[media.interfaces]]\nname = \"core\"\nip = \"::1\"\nadvertised = \"::1\"\nport_min = 31000\nport_max = 31999\n";
    let (c, problems) = Config::parse(text);
    assert!(problems.is_empty(), "{problems:?}");
    assert!(c.validate().is_empty(), "{:?}", c.validate());
    let e = c.engine_config();
    let names: Vec<&str> = e.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["access", "core"]);
    assert!(e.interfaces[1].ip.is_ipv6() && e.interfaces[1].advertised.is_some());
    // Every problem with its key.
    let bad = "[media]\n\
        [[media.interfaces]]\nname = \"a b\"\nip = \"0.0.0.0\"\nport_min = 10\nport_max = 11\n\
        [[media.interfaces]]\nname = \"a b\"\nip = \"0.0.0.0\"\nport_min = 10\nport_max = 20\n";
    let (c, problems) = Config::parse(bad);
    assert!(problems.is_empty(), "types are fine: {problems:?}");
    let problems = c.validate();
    let k = keys(&problems);
    for want in [
        "media.interfaces[0].name",
        "media.interfaces[0].ip",
        "media.interfaces[0].port_min",
        "media.interfaces[1].name",
    ] {
        assert!(k.contains(&want), "{want} in {k:?}");
    }
    let (_, problems) = Config::parse(
        "[[media.interfaces]]\nname = \"x\"\nip = \"nope\"\nport_min = 1\nport_max = 9\n",
    );
    assert_eq!(keys(&problems), ["media.interfaces"], "{problems:?}");
}

#[test]
fn the_recording_section_is_checked_and_reaches_the_engine() {
    assert_eq!(
        Config::embedded().engine_config().recording,
        None,
        "off by default"
    );
    let (c, problems) =
        Config::parse("[recording]\ndir = \"relative/dir\"\nqueue = 1\nmax_age_hours = 100000\n");
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        keys(&c.validate()),
        [
            "recording.dir",
            "recording.queue",
            "recording.max_age_hours"
        ]
    );
    let (c, _) = Config::parse(
        "[recording]\ndir = \"/var/rec\"\nmax_age_hours = 2\nmax_total_bytes = 1000\n\
         transmission_log = false\n",
    );
    assert!(c.validate().is_empty(), "{:?}", c.validate());
    let r = c.engine_config().recording.expect("recording on");
    assert_eq!(r.dir, Path::new("/var/rec"));
    assert_eq!(r.max_age, Some(Duration::from_secs(7200)));
    assert_eq!((r.max_total_bytes, r.transmission_log), (1000, false));
    let (c, _) = Config::parse("[recording]\ndir = \"/var/rec\"\nmax_age_hours = 0\n");
    assert_eq!(c.engine_config().recording.unwrap().max_age, None);
}
