//! The HA store against a real `redis-server` (started per test on a free port): records,
//! TTLs, Redis crashes and hangs, the bounded backlog, the lease and fencing, failure detection
//! and adoption, churn, and what a Redis dump shows.
#![cfg(feature = "ha")]
#![allow(clippy::disallowed_methods)] // tests read the clock for their deadlines and figures

mod ha_support;

use ha_support::{eventually, RedisServer};
use mcvideo_relay::ha::{CallRecord, HaConfig, HaEvent, HaStore, RedisUrl, SealKey, SEAL_KEY_LEN};
use mcvideo_relay::CallId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

const SEC: Duration = Duration::from_secs(1);

fn seal_key() -> SealKey {
    SealKey::from_bytes(&[0x5a; SEAL_KEY_LEN]).unwrap()
}

fn config(redis: &RedisServer, id: &str) -> HaConfig {
    let mut c = HaConfig::new(RedisUrl::parse(&redis.url()).unwrap(), id, seal_key());
    c.key_ttl = Duration::from_secs(60);
    c.command_timeout = Duration::from_millis(300);
    c
}

/// The owner's live calls (what a resync writes), mirrored into the store.
#[derive(Clone, Default)]
struct Live(Arc<Mutex<HashMap<String, CallRecord>>>);

impl Live {
    fn put(&self, store: &HaStore, r: CallRecord) {
        self.0
            .lock()
            .unwrap()
            .insert(r.call_id.to_string(), r.clone());
        let t = Instant::now();
        store.put(r);
        // well under the command timeout (300 ms): it did not wait for Redis
        assert!(
            t.elapsed() < Duration::from_millis(250),
            "put() took {:?}",
            t.elapsed()
        );
    }
    fn delete(&self, store: &HaStore, id: &str) {
        self.0.lock().unwrap().remove(id);
        let t = Instant::now();
        store.delete(&CallId::from(id));
        assert!(
            t.elapsed() < Duration::from_millis(250),
            "delete() took {:?}",
            t.elapsed()
        );
    }
    fn ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self.0.lock().unwrap().keys().cloned().collect();
        v.sort();
        v
    }
}

fn start(cfg: HaConfig, live: &Live) -> (HaStore, UnboundedReceiver<HaEvent>) {
    let l = live.clone();
    HaStore::start(cfg, move || l.0.lock().unwrap().values().cloned().collect()).unwrap()
}

fn record(id: &str, body: &str) -> CallRecord {
    CallRecord::new(
        CallId::from(id),
        "",
        1_700_000_000_000,
        body.as_bytes().to_vec(),
    )
}

async fn until_written(store: &HaStore, within: Duration) {
    assert!(
        eventually(within, || {
            store.store_up()
                && store.epoch() > 0
                && store.backlog() == 0
                && store.resync_pending() == 0
        })
        .await,
        "not written within {within:?}: up {}, epoch {}, backlog {}",
        store.store_up(),
        store.epoch(),
        store.backlog()
    );
}

fn call_keys(redis: &RedisServer) -> Vec<String> {
    let mut k = redis.keys("mcvr:call:*");
    k.sort();
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_put_lookup_delete_and_ttls() {
    let redis = RedisServer::start();
    let live = Live::default();
    let (store, _ev) = start(config(&redis, "relay-a"), &live);
    let key = seal_key();
    let mut a = record("call-a", r#"{"state":"granted"}"#);
    a.seal_keys(&key, b"srtp master key A").unwrap();
    live.put(&store, a.clone());
    live.put(&store, record("call-b", "b1"));
    live.put(&store, record("call-c", "c1"));
    live.put(&store, record("call-b", "b2")); // the latest wins
    until_written(&store, 5 * SEC).await;

    let got = store.lookup("call-a").await.unwrap().unwrap();
    assert_eq!(got.owner, "relay-a");
    assert_eq!(got.epoch, store.epoch());
    assert_eq!(got.body, a.body);
    assert_eq!(got.open_keys(&key).unwrap().unwrap(), b"srtp master key A");
    assert_eq!(store.lookup("call-b").await.unwrap().unwrap().body, b"b2");
    assert_eq!(store.lookup("nope").await.unwrap(), None);
    assert_eq!(store.lookup("*").await.unwrap(), None);
    assert_eq!(store.lookup("").await.unwrap(), None);

    // every key has a TTL, none longer than configured
    assert!(eventually(2 * SEC, || !redis.keys("mcvr:inst:*").is_empty()).await);
    for k in redis.keys("*") {
        let ttl = redis.pttl(&k);
        assert!(ttl > 0 && ttl <= 60_000, "{k}: PTTL {ttl}");
    }
    // the heartbeat's TTL is 3 x the failure time
    assert!(redis.pttl("mcvr:inst:relay-a") <= 3_000);

    live.delete(&store, "call-c");
    until_written(&store, 5 * SEC).await;
    assert_eq!(store.lookup("call-c").await.unwrap(), None);
    assert_eq!(call_keys(&redis), ["mcvr:call:call-a", "mcvr:call:call-b"]);

    // the cluster view counts the calls once a heartbeat has run
    assert!(
        eventually(2 * SEC, || {
            let s = store.clone();
            futures_lite(async move { s.cluster().await.map(|c| c.first().map(|i| i.calls)) })
                == Ok(Some(2))
        })
        .await
    );
    store.set_load(1234, true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = store.cluster().await.unwrap();
    assert_eq!(c.len(), 1);
    let i = &c[0];
    assert_eq!((i.id.as_str(), i.role.as_str()), ("relay-a", "primary"));
    assert!(i.alive);
    assert_eq!(
        (i.packets_per_sec, i.draining, i.epoch),
        (1234, true, store.epoch())
    );
    store.shutdown();
}

/// Runs a future to completion from inside a sync closure (the polling helper's).
fn futures_lite<T: Send + 'static>(f: impl std::future::Future<Output = T> + Send + 'static) -> T {
    let h = tokio::runtime::Handle::current();
    std::thread::spawn(move || h.block_on(f)).join().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_redis_killed_mid_stream_and_restarted() {
    let mut redis = RedisServer::start();
    let live = Live::default();
    let (store, _ev) = start(config(&redis, "relay-a"), &live);
    for i in 0..200 {
        live.put(&store, record(&format!("call-{i}"), "v1"));
    }
    until_written(&store, 5 * SEC).await;
    assert_eq!(call_keys(&redis).len(), 200);

    redis.kill();
    // writes go on while Redis is gone: updates, new calls, releases
    let t = Instant::now();
    let mut i = 0;
    while store.store_up() {
        live.put(&store, record(&format!("call-{}", i % 200), "v2"));
        i += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(
            t.elapsed() < 5 * SEC,
            "store_up still true {:?} after the kill",
            t.elapsed()
        );
    }
    println!("store_up false {:?} after the kill", t.elapsed());
    for i in 200..300 {
        live.put(&store, record(&format!("call-{i}"), "v3"));
    }
    for i in 0..50 {
        live.delete(&store, &format!("call-{i}"));
    }
    assert!(store.backlog() > 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!store.store_up());

    redis.restart(); // empty: no persistence
    let t = Instant::now();
    until_written(&store, 10 * SEC).await;
    let want: Vec<String> = live
        .ids()
        .iter()
        .map(|i| format!("mcvr:call:{i}"))
        .collect();
    assert!(
        eventually(10 * SEC, || {
            let mut want = want.clone();
            want.sort();
            call_keys(&redis) == want
        })
        .await,
        "every live call back in Redis"
    );
    println!(
        "{} live calls back in Redis {:?} after the restart",
        want.len(),
        t.elapsed()
    );
    assert_eq!(store.lookup("call-250").await.unwrap().unwrap().body, b"v3");
    assert_eq!(store.lookup("call-10").await.unwrap(), None);
    assert!(!store.is_fenced());
    store.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_redis_hung_then_back() {
    let redis = RedisServer::start();
    let live = Live::default();
    let (store, _ev) = start(config(&redis, "relay-a"), &live);
    live.put(&store, record("call-1", "v1"));
    until_written(&store, 5 * SEC).await;
    redis.pause(true); // accepts nothing, answers nothing
    let t = Instant::now();
    for i in 0..1000 {
        live.put(&store, record(&format!("call-{i}"), "v2"));
    }
    assert!(
        eventually(5 * SEC, || !store.store_up()).await,
        "a hung Redis is down"
    );
    println!("store_up false {:?} after Redis hung", t.elapsed());
    redis.pause(false);
    until_written(&store, 10 * SEC).await;
    assert_eq!(call_keys(&redis).len(), 1000);
    assert_eq!(store.lookup("call-1").await.unwrap().unwrap().body, b"v2");
    store.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_backlog_is_bounded_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let live = Live::default();
    let mut cfg = config(&redis, "relay-a");
    cfg.max_backlog = 100;
    let (store, _ev) = start(cfg, &live);
    until_written(&store, 5 * SEC).await;
    redis.kill();
    assert!(eventually(5 * SEC, || !store.store_up()).await);
    let body = "x".repeat(200);
    for i in 0..10_000 {
        live.put(&store, record(&format!("call-{i}"), &body));
        assert!(
            store.backlog() <= 100,
            "backlog {} past the cap",
            store.backlog()
        );
    }
    assert_eq!(store.backlog(), 100);
    // most are dropped (a failed resync attempt empties the backlog too: the next resync
    // covers it, so up to a few hundred more may have been taken in)
    assert!(store.dropped() >= 9_000, "dropped {}", store.dropped());
    let st = store.stats();
    assert!(!st.store_up && !st.fenced);
    assert_eq!((st.backlog, st.dropped), (100, store.dropped()));
    // Redis back: a full resync writes every live call, dropped ones included
    redis.restart();
    assert!(
        eventually(15 * SEC, || store.store_up()
            && call_keys(&redis).len() == 10_000)
        .await,
        "{} of 10000 calls in Redis",
        call_keys(&redis).len()
    );
    assert_eq!(store.backlog(), 0);
    store.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_fencing_old_instance_after_takeover() {
    let redis = RedisServer::start();
    // A beats rarely: to its standby it looks dead while it still runs (a paused or
    // partitioned primary).
    let live_a = Live::default();
    let mut ca = config(&redis, "relay-a");
    ca.heartbeat_interval = Duration::from_secs(5);
    ca.failure_time = Duration::from_secs(10);
    ca.key_ttl = Duration::from_secs(120);
    let (a, mut ev_a) = start(ca, &live_a);
    for i in 0..5 {
        live_a.put(&a, record(&format!("call-{i}"), "from a"));
    }
    until_written(&a, 5 * SEC).await;
    let epoch_a = a.epoch();

    let live_b = Live::default();
    let mut cb = config(&redis, "relay-b");
    cb.standby_for = vec!["relay-a".into()];
    cb.heartbeat_interval = Duration::from_millis(50);
    cb.failure_time = Duration::from_secs(1);
    let (b, mut ev_b) = start(cb, &live_b);
    let down = tokio::time::timeout(5 * SEC, ev_b.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        down,
        HaEvent::PeerDown {
            peer: "relay-a".into()
        }
    );
    let Some(HaEvent::Adopted {
        peer,
        records,
        epoch,
    }) = tokio::time::timeout(5 * SEC, ev_b.recv()).await.unwrap()
    else {
        panic!("no Adopted");
    };
    assert_eq!(peer, "relay-a");
    assert_eq!(records.len(), 5);
    assert!(epoch > epoch_a, "{epoch} > {epoch_a}");
    for r in &records {
        live_b.put(&b, r.clone());
    }

    // A goes on writing: refused, fenced, said once
    assert!(!a.is_fenced());
    live_a.put(&a, record("call-1", "late write from a"));
    live_a.put(&a, record("call-99", "new call from a"));
    let f = tokio::time::timeout(5 * SEC, ev_a.recv())
        .await
        .unwrap()
        .unwrap();
    let HaEvent::Fenced(info) = f else {
        panic!("{f:?}")
    };
    assert_eq!(
        (info.instance.as_str(), info.by.as_str()),
        ("relay-a", "relay-b")
    );
    assert_eq!((info.epoch, info.own_epoch), (epoch, epoch_a));
    assert_eq!(
        info.to_string(),
        format!(
            "fenced: instance relay-a lost its calls to relay-b at epoch {epoch}; not \
             forwarding or answering for them"
        )
    );
    assert!(a.is_fenced());
    assert!(a.stats().fenced);
    assert_eq!(a.fenced().borrow().clone(), Some(info));
    let r1 = b.lookup("call-1").await.unwrap().unwrap();
    assert_eq!(
        (r1.owner.as_str(), r1.body.as_slice()),
        ("relay-b", &b"from a"[..])
    );
    assert_eq!(b.lookup("call-99").await.unwrap(), None);
    a.shutdown();

    // A restarted with the same ID: a new lease, but the adopted calls stay B's
    let live_a2 = Live::default();
    let (a2, _ev) = start(config(&redis, "relay-a"), &live_a2);
    until_written(&a2, 5 * SEC).await;
    assert!(a2.epoch() > epoch, "{} > {epoch}", a2.epoch());
    live_a2.put(&a2, record("call-1", "a2 claims call-1"));
    live_a2.delete(&a2, "call-2");
    live_a2.put(&a2, record("call-new", "a2's own"));
    until_written(&a2, 5 * SEC).await;
    assert_eq!(a2.refused(), 2);
    assert!(!a2.is_fenced());
    let r1 = a2.lookup("call-1").await.unwrap().unwrap();
    assert_eq!(
        (r1.owner.as_str(), r1.body.as_slice()),
        ("relay-b", &b"from a"[..])
    );
    assert!(a2.lookup("call-2").await.unwrap().is_some());
    assert_eq!(
        a2.lookup("call-new").await.unwrap().unwrap().owner,
        "relay-a"
    );
    // B sees A alive again and adopts nothing more
    assert!(
        eventually(3 * SEC, || {
            let b = b.clone();
            let c = futures_lite(async move { b.cluster().await }).unwrap();
            let ids: Vec<_> = c.iter().map(|i| (i.id.clone(), i.alive, i.calls)).collect();
            ids == [
                ("relay-a".to_owned(), true, 1),
                ("relay-b".to_owned(), true, 5),
            ]
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(ev_b.try_recv().is_err());
    a2.shutdown();
    b.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_heartbeat_lapse_peer_down_then_adopted_1000_calls() {
    // MCVIDEO_HA_ADOPT_CALLS=N for a larger adoption (the figure is printed)
    let n: usize = std::env::var("MCVIDEO_HA_ADOPT_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let redis = RedisServer::start();
    let key = seal_key();
    let live_a = Live::default();
    let (a, _ev_a) = start(config(&redis, "relay-a"), &live_a);
    for i in 0..n {
        let mut r = record(&format!("call-{i}"), &format!(r#"{{"n":{i}}}"#));
        r.seal_keys(&key, format!("master key {i}").as_bytes())
            .unwrap();
        live_a.put(&a, r);
    }
    until_written(&a, 10 * SEC + Duration::from_millis(n as u64)).await;
    let epoch_a = a.epoch();

    let mut cb = config(&redis, "relay-b");
    cb.standby_for = vec!["relay-a".into()];
    let (b, mut ev_b) = start(cb, &Live::default());
    until_written(&b, 5 * SEC).await;
    // A alive: nothing happens
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(ev_b.try_recv().is_err(), "no event while the peer beats");

    let killed = Instant::now();
    a.shutdown(); // its heartbeats stop, as in a crash
    let down = tokio::time::timeout(5 * SEC, ev_b.recv())
        .await
        .unwrap()
        .unwrap();
    let down_after = killed.elapsed();
    assert_eq!(
        down,
        HaEvent::PeerDown {
            peer: "relay-a".into()
        }
    );
    let ev = tokio::time::timeout(5 * SEC, ev_b.recv())
        .await
        .unwrap()
        .unwrap();
    let adopted_after = killed.elapsed();
    let HaEvent::Adopted {
        peer,
        records,
        epoch,
    } = ev
    else {
        panic!("{ev:?}")
    };
    println!(
        "heartbeat lapse: PeerDown {down_after:?} after the heartbeats stopped (failure time \
         1 s, heartbeat 200 ms); {n} calls adopted {:?} after PeerDown, {adopted_after:?} after \
         the stop",
        adopted_after - down_after
    );
    assert_eq!(peer, "relay-a");
    assert!(epoch > epoch_a);
    assert_eq!(records.len(), n);
    let mut seen = vec![false; n];
    for r in &records {
        assert_eq!(r.owner, "relay-b");
        assert_eq!(r.epoch, b.epoch());
        let n: usize = r.call_id.strip_prefix("call-").unwrap().parse().unwrap();
        assert_eq!(r.body, format!(r#"{{"n":{n}}}"#).as_bytes());
        assert_eq!(
            r.open_keys(&key).unwrap().unwrap(),
            format!("master key {n}").as_bytes()
        );
        seen[n] = true;
    }
    assert!(seen.iter().all(|s| *s));
    // Redis agrees: every call is B's, A's set is gone, A's lease carries the new epoch
    assert_eq!(
        b.lookup("call-500").await.unwrap().unwrap().owner,
        "relay-b"
    );
    assert!(redis.keys("mcvr:owner:relay-a:calls").is_empty());
    let cluster = b.cluster().await.unwrap();
    let a_info = cluster.iter().find(|i| i.id == "relay-a").unwrap();
    assert!(!a_info.alive);
    assert_eq!((a_info.calls, a_info.epoch), (0, epoch));
    assert!(
        eventually(2 * SEC, || {
            let b = b.clone();
            futures_lite(async move { b.cluster().await })
                .unwrap()
                .iter()
                .any(|i| i.id == "relay-b" && i.calls == n as u64 && i.role == "standby")
        })
        .await
    );
    // adopted once: no second PeerDown while A stays down
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(ev_b.try_recv().is_err());
    b.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_churn_10000_cycles_leave_no_call_key() {
    let redis = RedisServer::start();
    let live = Live::default();
    let (store, _ev) = start(config(&redis, "relay-a"), &live);
    let t = Instant::now();
    // 100 waves of 100 calls, each wave written then released, so that every cycle reaches
    // Redis (put and delete of one call in one wave would coalesce to nothing)
    for wave in 0..100 {
        for i in 0..100 {
            live.put(&store, record(&format!("call-{wave}-{i}"), "{}"));
        }
        until_written(&store, 5 * SEC).await;
        if wave == 0 {
            assert_eq!(call_keys(&redis).len(), 100);
        }
        for i in 0..100 {
            live.delete(&store, &format!("call-{wave}-{i}"));
        }
        until_written(&store, 5 * SEC).await;
    }
    println!("10000 put/delete cycles through Redis in {:?}", t.elapsed());
    assert!(
        call_keys(&redis).is_empty(),
        "{:?}",
        &call_keys(&redis)[..3.min(call_keys(&redis).len())]
    );
    assert!(
        redis.keys("mcvr:owner:*").is_empty(),
        "an empty set is no key"
    );
    for k in redis.keys("*") {
        assert!(redis.pttl(&k) > 0, "{k} has a TTL");
    }
    store.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_redis_dump_holds_no_plaintext_key_material() {
    let redis = RedisServer::start();
    let live = Live::default();
    let (store, _ev) = start(config(&redis, "relay-a"), &live);
    let key = seal_key();
    let secrets: Vec<Vec<u8>> = (0..50u8)
        .map(|i| {
            (0..30u8)
                .map(|j| i.wrapping_mul(31).wrapping_add(j * 7) ^ 0xa5)
                .collect()
        })
        .collect();
    for (i, s) in secrets.iter().enumerate() {
        let mut r = record(
            &format!("call-{i}"),
            r#"{"suite":"AES_CM_128_HMAC_SHA1_80"}"#,
        );
        r.seal_keys(&key, s).unwrap();
        live.put(&store, r);
    }
    until_written(&store, 5 * SEC).await;
    let dump = redis.dump_all();
    assert!(dump.len() > 50 * 30);
    for s in &secrets {
        // not the key, nor any 8-byte piece of it
        for w in s.windows(8) {
            assert!(
                !dump.windows(8).any(|d| d == w),
                "plaintext key bytes in the dump"
            );
        }
    }
    // and what is there opens only with the key
    let r = store.lookup("call-7").await.unwrap().unwrap();
    assert_eq!(r.open_keys(&key).unwrap().unwrap(), secrets[7]);
    let other = SealKey::from_bytes(&[1; SEAL_KEY_LEN]).unwrap();
    assert!(r.open_keys(&other).is_err());
    store.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_ttls_are_refreshed_while_the_owner_lives() {
    let redis = RedisServer::start();
    let live = Live::default();
    let mut cfg = config(&redis, "relay-a");
    cfg.key_ttl = Duration::from_secs(10); // refreshed every 2.5 s
    let (store, _ev) = start(cfg, &live);
    live.put(&store, record("call-1", "v"));
    until_written(&store, 5 * SEC).await;
    let first = redis.pttl("mcvr:call:call-1");
    assert!(first > 9_000, "{first}");
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    // unrefreshed it would be under 7 s now
    for k in [
        "mcvr:call:call-1",
        "mcvr:owner:relay-a:calls",
        "mcvr:lease:relay-a",
    ] {
        let ttl = redis.pttl(k);
        assert!(ttl > 8_500, "{k}: PTTL {ttl} not refreshed");
    }
    store.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_standby_waits_for_a_peer_that_never_ran() {
    let redis = RedisServer::start();
    let mut cb = config(&redis, "relay-b");
    cb.standby_for = vec!["relay-x".into()];
    cb.heartbeat_interval = Duration::from_millis(50);
    cb.failure_time = Duration::from_secs(1);
    let (b, mut ev_b) = start(cb, &Live::default());
    until_written(&b, 5 * SEC).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        ev_b.try_recv().is_err(),
        "nothing to adopt from a peer that never ran"
    );
    // it starts, takes a call, dies: adopted
    let live_x = Live::default();
    let (x, _ev) = start(config(&redis, "relay-x"), &live_x);
    live_x.put(&x, record("call-x", "x"));
    until_written(&x, 5 * SEC).await;
    x.shutdown();
    let ev = tokio::time::timeout(5 * SEC, ev_b.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ev,
        HaEvent::PeerDown {
            peer: "relay-x".into()
        }
    );
    let ev = tokio::time::timeout(5 * SEC, ev_b.recv())
        .await
        .unwrap()
        .unwrap();
    let HaEvent::Adopted { records, .. } = ev else {
        panic!("{ev:?}")
    };
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].call_id, "call-x");
    b.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_two_standbys_one_adopts() {
    let redis = RedisServer::start();
    let live_a = Live::default();
    let (a, _ev_a) = start(config(&redis, "relay-a"), &live_a);
    for i in 0..100 {
        live_a.put(&a, record(&format!("call-{i}"), "a"));
    }
    until_written(&a, 5 * SEC).await;
    let standby = |id: &str| {
        let mut c = config(&redis, id);
        c.standby_for = vec!["relay-a".into()];
        c.heartbeat_interval = Duration::from_millis(20);
        c.failure_time = Duration::from_millis(700);
        start(c, &Live::default())
    };
    let (b, mut ev_b) = standby("relay-b");
    let (c, mut ev_c) = standby("relay-c");
    until_written(&b, 5 * SEC).await;
    until_written(&c, 5 * SEC).await;
    a.shutdown();
    // both see it down; exactly one adopts, all 100 calls
    let mut adopted = Vec::new();
    for (name, ev) in [("relay-b", &mut ev_b), ("relay-c", &mut ev_c)] {
        let e = tokio::time::timeout(5 * SEC, ev.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            e,
            HaEvent::PeerDown {
                peer: "relay-a".into()
            },
            "{name}"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (name, ev) in [("relay-b", &mut ev_b), ("relay-c", &mut ev_c)] {
        while let Ok(e) = ev.try_recv() {
            let HaEvent::Adopted { records, .. } = e else {
                panic!("{e:?}")
            };
            adopted.push((name, records.len()));
        }
    }
    assert_eq!(adopted.len(), 1, "{adopted:?}");
    assert_eq!(adopted[0].1, 100);
    let owner = b.lookup("call-42").await.unwrap().unwrap().owner;
    assert_eq!(owner, adopted[0].0);
    b.shutdown();
    c.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_redis_with_a_password() {
    let redis = RedisServer::start_with_password("s3cret-pw");
    let live = Live::default();
    let mut c = config(&redis, "relay-a");
    c.redis_url = RedisUrl::parse(&format!("redis://:s3cret-pw@127.0.0.1:{}", redis.port)).unwrap();
    let (store, _ev) = start(c, &live);
    live.put(&store, record("call-1", "v"));
    until_written(&store, 5 * SEC).await;
    assert_eq!(store.lookup("call-1").await.unwrap().unwrap().body, b"v");
    store.shutdown();

    // a wrong password: never up, the write waits, nothing fails and nothing shows the password
    let mut c = config(&redis, "relay-b");
    c.redis_url = RedisUrl::parse(&format!("redis://:wr0ng-pw@127.0.0.1:{}", redis.port)).unwrap();
    let (bad, _ev) = start(c, &Live::default());
    bad.put(record("call-2", "v"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!bad.store_up());
    assert_eq!(bad.epoch(), 0);
    assert_eq!(bad.backlog(), 1);
    assert!(bad.lookup("call-1").await.is_err());
    let d = format!("{bad:?}");
    assert!(!d.contains("wr0ng-pw") && d.contains(":***@"), "{d}");
    bad.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_rediss_with_a_private_ca() {
    let (redis, ca) = RedisServer::start_tls();
    let url = RedisUrl::parse(&format!("rediss://127.0.0.1:{}", redis.port)).unwrap();
    let live = Live::default();
    let mut c = config(&redis, "relay-a");
    c.redis_url = url.clone();
    c.tls_ca_pem = Some(ca);
    let (store, _ev) = start(c, &live);
    let key = seal_key();
    let mut r = record("call-1", "over TLS");
    r.seal_keys(&key, b"k").unwrap();
    live.put(&store, r);
    until_written(&store, 10 * SEC).await;
    let got = store.lookup("call-1").await.unwrap().unwrap();
    assert_eq!(got.body, b"over TLS");
    assert_eq!(got.open_keys(&key).unwrap().unwrap(), b"k");
    store.shutdown();

    // the system's roots do not know this CA: the certificate is refused, never up
    let mut c = config(&redis, "relay-b");
    c.redis_url = url;
    let (untrusting, _ev) = start(c, &Live::default());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!untrusting.store_up());
    assert_eq!(untrusting.epoch(), 0);
    untrusting.shutdown();
}

/// The second signal: a peer whose heartbeat is late is probed at its probe address. Refused,
/// where a connection was accepted before (its process is gone), makes it down at once; a
/// connection made leaves the verdict to the failure time; an address that never accepted
/// (firewalled, a loopback address of another host) is never believed. Here the peers beat every
/// 5 s and the failure time is 10 s, so only a probe can make one down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_probe_refused_is_down_at_once_probe_answered_is_not() {
    let redis = RedisServer::start();
    let dying = std::net::TcpListener::bind("127.0.0.1:0").unwrap(); // relay-a's, closed later
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap(); // relay-c's
    let never = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap() // relay-d's: dropped, it never accepts
    };
    let peer = |id: &str, probe| {
        let mut c = config(&redis, id);
        c.heartbeat_interval = Duration::from_secs(5);
        c.failure_time = Duration::from_secs(10);
        c.key_ttl = Duration::from_secs(120);
        c.probe_address = Some(probe);
        c
    };
    let lives = [Live::default(), Live::default(), Live::default()];
    let peers = [
        ("relay-a", dying.local_addr().unwrap()),
        ("relay-c", open.local_addr().unwrap()),
        ("relay-d", never),
    ];
    let mut stores = Vec::new();
    for ((id, probe), live) in peers.iter().zip(&lives) {
        let (st, _ev) = start(peer(id, *probe), live);
        live.put(&st, record(&format!("call-{id}"), "theirs"));
        until_written(&st, 5 * SEC).await;
        stores.push((st, _ev));
    }

    let live_b = Live::default();
    let mut cb = config(&redis, "relay-b");
    cb.standby_for = peers.iter().map(|(id, _)| (*id).to_owned()).collect();
    cb.heartbeat_interval = Duration::from_millis(50);
    cb.failure_time = Duration::from_secs(10);
    cb.key_ttl = Duration::from_secs(120);
    cb.suspect_time = Duration::from_millis(300);
    let (b, mut ev_b) = start(cb, &live_b);
    // relay-b sees every address once (relay-a's and relay-c's accept), and nobody is down:
    // every heartbeat is late, but the probes connect, or were never answered.
    tokio::time::sleep(2 * SEC).await;
    let ev = ev_b.try_recv();
    assert!(ev.is_err(), "a peer taken for dead: {ev:?}");
    // relay-a's process is gone: its address refuses now.
    drop(dying);
    let started = Instant::now();
    let down = tokio::time::timeout(5 * SEC, ev_b.recv()).await.unwrap();
    assert_eq!(
        down,
        Some(HaEvent::PeerDown {
            peer: "relay-a".into()
        })
    );
    let Some(HaEvent::Adopted { peer, records, .. }) =
        tokio::time::timeout(5 * SEC, ev_b.recv()).await.unwrap()
    else {
        panic!("no Adopted");
    };
    assert_eq!((peer.as_str(), records.len()), ("relay-a", 1));
    assert!(started.elapsed() < 2 * SEC, "{:?}", started.elapsed());
    // relay-c answers its probe; relay-d's address never accepted: alive for as long as their
    // heartbeats are younger than 10 s.
    tokio::time::sleep(2 * SEC).await;
    let ev = ev_b.try_recv();
    assert!(ev.is_err(), "relay-c or relay-d taken for dead: {ev:?}");
    for id in ["relay-c", "relay-d"] {
        let r = b.lookup(&format!("call-{id}")).await.unwrap().unwrap();
        assert_eq!(r.owner, id);
    }
    drop(open);
    b.shutdown();
    for (s, _) in stores {
        s.shutdown();
    }
}
