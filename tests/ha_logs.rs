//! What the HA store writes in the log (its own process: the subscriber is global): an outage
//! of Redis once, its end once, a fencing once, and never the Redis password.
#![cfg(all(feature = "ha", feature = "sidecar"))]
#![allow(clippy::disallowed_methods)] // tests read the clock for their deadlines

mod ha_support;

use ha_support::{eventually, RedisServer};
use mcvideo_relay::ha::{CallRecord, HaConfig, HaEvent, HaStore, RedisUrl, SealKey, SEAL_KEY_LEN};
use mcvideo_relay::CallId;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);
const PASSWORD: &str = "pw-n0t-in-logs";

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    fn count(&self, needle: &str) -> usize {
        self.text().matches(needle).count()
    }
}

fn record(id: &str) -> CallRecord {
    CallRecord::new(CallId::from(id), "", 0, b"{}".to_vec())
}

fn config(redis: &RedisServer, id: &str) -> HaConfig {
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}", redis.port);
    let mut c = HaConfig::new(
        RedisUrl::parse(&url).unwrap(),
        id,
        SealKey::from_bytes(&[9; SEAL_KEY_LEN]).unwrap(),
    );
    c.command_timeout = Duration::from_millis(300);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_logs_say_it_once_and_never_the_password() {
    let log = Log::default();
    let w = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_max_level(tracing::Level::INFO)
        .init();

    let mut redis = RedisServer::start_with_password(PASSWORD);
    let mut ca = config(&redis, "relay-a");
    ca.heartbeat_interval = Duration::from_secs(5);
    ca.failure_time = Duration::from_secs(10);
    ca.key_ttl = Duration::from_secs(120);
    // A's live calls, written again after Redis comes back empty
    let live: Vec<CallRecord> = (0..100).map(|i| record(&format!("call-{i}"))).collect();
    let (a, mut ev_a) = HaStore::start(ca, move || live.clone()).unwrap();
    a.put(record("call-1"));
    assert!(eventually(5 * SEC, || a.store_up() && a.backlog() == 0).await);
    assert_eq!(log.count("HA store: lease taken"), 1, "{}", log.text());

    // an outage with many failed attempts: said once, and its end once
    redis.kill();
    for i in 0..100 {
        a.put(record(&format!("call-{i}")));
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    assert!(!a.store_up());
    redis.restart();
    assert!(eventually(10 * SEC, || a.store_up() && a.backlog() == 0).await);
    assert!(eventually(2 * SEC, || log.count("Redis reachable again") == 1).await);
    assert_eq!(
        log.count("HA store: Redis unreachable"),
        1,
        "{}",
        log.text()
    );

    // a takeover: the old primary is fenced, and says so once however often it writes
    let mut cb = config(&redis, "relay-b");
    cb.standby_for = vec!["relay-a".into()];
    cb.failure_time = Duration::from_secs(1);
    let (b, mut ev_b) = HaStore::start(cb, Vec::new).unwrap();
    loop {
        let e = tokio::time::timeout(5 * SEC, ev_b.recv())
            .await
            .unwrap()
            .unwrap();
        if matches!(e, HaEvent::Adopted { .. }) {
            break;
        }
    }
    for i in 0..20 {
        a.put(record(&format!("call-{i}")));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let e = tokio::time::timeout(5 * SEC, ev_a.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(e, HaEvent::Fenced(_)), "{e:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fenced = "fenced: instance relay-a lost its calls to relay-b at epoch";
    assert_eq!(log.count(fenced), 1, "{}", log.text());
    assert_eq!(log.count("HA: adopted the calls of a dead peer"), 1);

    let text = log.text();
    assert!(!text.contains(PASSWORD), "the password in the log:\n{text}");
    assert!(
        text.contains(":***@127.0.0.1"),
        "the redacted URL is there:\n{text}"
    );
    a.shutdown();
    b.shutdown();
}
