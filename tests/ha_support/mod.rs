//! A real `redis-server` for the HA tests: started on a free port in a temporary directory, no
//! persistence (`--save "" --appendonly no`), killed on drop. Debian package `redis-server`
//! (test.sh installs it when missing).
#![allow(dead_code, clippy::disallowed_methods)] // not every test uses every helper; deadlines read the clock

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`.
pub(crate) struct RedisServer {
    pub(crate) port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Extra arguments (auth, TLS).
    extra: Vec<String>,
    /// Served over TLS only (`rediss://`): the helper's own commands cannot reach it.
    tls: bool,
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "mcvr-ha-redis-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    /// Starts one on a free port; panics (with the reason) if `redis-server` is missing.
    pub(crate) fn start() -> RedisServer {
        RedisServer::start_with(&[], false)
    }

    fn start_with(extra: &[String], tls: bool) -> RedisServer {
        let dir = temp_dir();
        let mut s = RedisServer {
            port: free_port(),
            dir,
            child: None,
            extra: extra.to_vec(),
            tls,
        };
        s.spawn();
        s
    }

    /// One that wants a password for the default user.
    pub(crate) fn start_with_password(password: &str) -> RedisServer {
        RedisServer::start_with(&["--requirepass".into(), password.into()], false)
    }

    /// One served over TLS only, with a certificate for 127.0.0.1 from a CA made for it; the
    /// CA's PEM comes along.
    pub(crate) fn start_tls() -> (RedisServer, Vec<u8>) {
        let certs = temp_dir();
        let sh = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&certs)
                .output()
                .expect("openssl runs");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        sh(&[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=mcvr test CA",
            ],
        ]
        .concat());
        sh(&[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat());
        std::fs::write(
            certs.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        sh(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
        let p = |f: &str| certs.join(f).to_str().unwrap().to_owned();
        let tls_port = free_port();
        let extra = vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            p("server.crt"),
            "--tls-key-file".into(),
            p("server.key"),
            "--tls-ca-cert-file".into(),
            p("ca.crt"),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        let ca = std::fs::read(certs.join("ca.crt")).unwrap();
        let mut s = RedisServer {
            port: 0,
            dir: certs,
            child: None,
            extra,
            tls: true,
        };
        s.port = tls_port;
        s.spawn();
        (s, ca)
    }

    fn spawn(&mut self) {
        let plain_port = if self.tls { 0 } else { self.port };
        let child = Command::new("redis-server")
            .args(["--port", &plain_port.to_string()])
            .args(&self.extra)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--dir", self.dir.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server; test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return;
            }
            if self.tls && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn ping(&self) -> bool {
        // a server with a password answers -NOAUTH: up all the same
        matches!(self.command(&["PING"]), Some(r) if r.starts_with(b"+PONG") || r.starts_with(b"-NOAUTH"))
    }

    /// Sends one command, returns the raw RESP reply (`None` when not reachable).
    pub(crate) fn command(&self, args: &[&str]) -> Option<Vec<u8>> {
        self.command_bytes(
            &args
                .iter()
                .map(|a| a.as_bytes().to_vec())
                .collect::<Vec<_>>(),
        )
    }

    fn command_bytes(&self, args: &[Vec<u8>]) -> Option<Vec<u8>> {
        command_at(self.port, args)
    }

    /// Starts a replica of the server on `127.0.0.1:master_port`, on a free port, and waits
    /// until its link to the master is up.
    pub(crate) fn start_replica_of(master_port: u16) -> RedisServer {
        let s = RedisServer::start_with(
            &[
                "--replicaof".into(),
                "127.0.0.1".into(),
                master_port.to_string(),
            ],
            false,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(r) = s.command(&["INFO", "replication"]) {
                if String::from_utf8_lossy(&r).contains("master_link_status:up") {
                    return s;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the replica on port {} never synced", s.port);
    }
}

/// Sends one command to `127.0.0.1:port`, returns the raw RESP reply.
fn command_at(port: u16, args: &[Vec<u8>]) -> Option<Vec<u8>> {
    {
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a);
            req.extend_from_slice(b"\r\n");
        }
        s.write_all(&req).ok()?;
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        // read until the reply is complete: parse it
        loop {
            let n = s.read(&mut buf).ok()?;
            if n == 0 {
                return None;
            }
            out.extend_from_slice(&buf[..n]);
            if resp_complete(&out) {
                return Some(out);
            }
        }
    }
}

impl RedisServer {
    /// `KEYS pattern` (tests only: small databases).
    pub(crate) fn keys(&self, pattern: &str) -> Vec<String> {
        let r = self.command(&["KEYS", pattern]).unwrap();
        parse_array(&r)
            .into_iter()
            .map(|b| String::from_utf8(b).unwrap())
            .collect()
    }

    /// `PTTL key` in ms (-1 no TTL, -2 no key).
    pub(crate) fn pttl(&self, key: &str) -> i64 {
        let r = self.command(&["PTTL", key]).unwrap();
        std::str::from_utf8(&r[1..r.len() - 2])
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Every key's raw dump (`DUMP`), the bytes an attacker with Redis access gets.
    pub(crate) fn dump_all(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for k in self.keys("*") {
            all.extend_from_slice(k.as_bytes());
            if let Some(r) = self.command(&["DUMP", &k]) {
                all.extend_from_slice(&r);
            }
            // and the hash fields as plain values
            if let Some(r) = self.command(&["HGETALL", &k]) {
                all.extend_from_slice(&r);
            }
            if let Some(r) = self.command(&["GET", &k]) {
                all.extend_from_slice(&r);
            }
            if let Some(r) = self.command(&["SMEMBERS", &k]) {
                all.extend_from_slice(&r);
            }
        }
        all
    }

    pub(crate) fn flushall(&self) {
        self.command(&["FLUSHALL"]).unwrap();
    }

    /// Kills it (SIGKILL): Redis crashed. Its data is gone (no persistence).
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Stops it (SIGSTOP) or resumes it (SIGCONT): Redis hangs.
    pub(crate) fn pause(&self, paused: bool) {
        if let Some(c) = &self.child {
            let sig = if paused { "-STOP" } else { "-CONT" };
            let _ = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.pause(false);
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `b` holds one whole RESP reply.
fn resp_complete(b: &[u8]) -> bool {
    resp_len(b).is_some()
}

fn line(b: &[u8]) -> Option<(&[u8], usize)> {
    let i = b.windows(2).position(|w| w == b"\r\n")?;
    Some((&b[..i], i + 2))
}

/// Length of the first RESP value in `b`, if complete.
fn resp_len(b: &[u8]) -> Option<usize> {
    let (l, n) = line(b)?;
    match l.first()? {
        b'+' | b'-' | b':' => Some(n),
        b'$' => {
            let len: i64 = std::str::from_utf8(&l[1..]).ok()?.parse().ok()?;
            if len < 0 {
                return Some(n);
            }
            let total = n + len as usize + 2;
            (b.len() >= total).then_some(total)
        }
        b'*' => {
            let count: i64 = std::str::from_utf8(&l[1..]).ok()?.parse().ok()?;
            let mut at = n;
            for _ in 0..count.max(0) {
                at += resp_len(&b[at..])?;
            }
            Some(at)
        }
        _ => None,
    }
}

/// The bulk strings of a flat RESP array.
fn parse_array(b: &[u8]) -> Vec<Vec<u8>> {
    let (l, mut at) = line(b).unwrap();
    assert_eq!(l[0], b'*', "{}", String::from_utf8_lossy(b));
    let count: usize = std::str::from_utf8(&l[1..]).unwrap().parse().unwrap();
    let mut out = Vec::new();
    for _ in 0..count {
        let (h, n) = line(&b[at..]).unwrap();
        let len: usize = std::str::from_utf8(&h[1..]).unwrap().parse().unwrap();
        let start = at + n;
        out.push(b[start..start + len].to_vec());
        at = start + len + 2;
    }
    out
}

/// Polls `f` until it is true or `within` has passed; says whether it became true.
pub(crate) async fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The element count of a RESP array reply (`None`: not an array).
fn array_len(b: &[u8]) -> Option<usize> {
    let (l, _) = line(b)?;
    if l.first() != Some(&b'*') {
        return None;
    }
    std::str::from_utf8(&l[1..]).ok()?.parse().ok()
}

/// A TCP proxy in front of a Redis server that every client (sentinels, replica, relay) goes
/// through, so that the test can cut the replication one way: once cut, what the server sends
/// on a replication link (a connection whose client sent `PSYNC`) is dropped, so the replica
/// misses every write from then on while its link looks up (the way a replica lags when its
/// primary dies). The sentinels monitor the proxy's address, which is also the one the
/// replica replicates from: they see nothing to "fix".
pub(crate) struct RedisProxy {
    pub(crate) port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl RedisProxy {
    pub(crate) fn to(server_port: u16) -> RedisProxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let cut_all = cut.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", server_port)) else {
                    continue; // the server is gone: the client sees its connection closed
                };
                let replication = Arc::new(AtomicBool::new(false));
                let pipe = |mut from: TcpStream, mut to: TcpStream, upstream: bool| {
                    let (replication, cut) = (replication.clone(), cut_all.clone());
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if upstream {
                                if buf[..n]
                                    .windows(5)
                                    .any(|w| w.eq_ignore_ascii_case(b"PSYNC"))
                                {
                                    replication.store(true, Ordering::SeqCst);
                                }
                            } else if replication.load(Ordering::SeqCst)
                                && cut.load(Ordering::SeqCst)
                            {
                                continue;
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                };
                pipe(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    true,
                );
                pipe(server, client, false);
            }
        });
        RedisProxy { port, cut }
    }

    /// From now on the replicas get nothing more from the server.
    pub(crate) fn cut_replication(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// One `redis-server --sentinel` on a free port, killed on drop.
pub(crate) struct Sentinel {
    pub(crate) port: u16,
    dir: PathBuf,
    child: Child,
}

impl Sentinel {
    /// Monitors `127.0.0.1:master_port` as `name` with quorum 2, down after 500 ms, failover
    /// timeout 5 s (an election that fails is tried again after twice that).
    pub(crate) fn start(name: &str, master_port: u16) -> Sentinel {
        let dir = temp_dir();
        let port = free_port();
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {}\n\
                 sentinel monitor {name} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {name} 500\n\
                 sentinel failover-timeout {name} 5000\n\
                 sentinel parallel-syncs {name} 1\n",
                dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server --sentinel runs (Debian package redis-server; test.sh installs it)",
            );
        let s = Sentinel { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if s.command(&["PING"])
                .is_some_and(|r| r.starts_with(b"+PONG"))
            {
                return s;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("sentinel on port {port} did not answer PING");
    }

    pub(crate) fn command(&self, args: &[&str]) -> Option<Vec<u8>> {
        command_at(
            self.port,
            &args
                .iter()
                .map(|a| a.as_bytes().to_vec())
                .collect::<Vec<_>>(),
        )
    }

    /// The port of the primary this sentinel names for `name`.
    pub(crate) fn primary_port(&self, name: &str) -> Option<u16> {
        let r = self.command(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", name])?;
        if array_len(&r) != Some(2) {
            return None;
        }
        let a = parse_array(&r);
        std::str::from_utf8(a.get(1)?).ok()?.parse().ok()
    }

    /// How many other sentinels and replicas this sentinel knows for `name`.
    pub(crate) fn peers(&self, name: &str) -> (usize, usize) {
        let n = |sub: &str| {
            self.command(&["SENTINEL", sub, name])
                .and_then(|r| array_len(&r))
                .unwrap_or(0)
        };
        (n("SENTINELS"), n("REPLICAS"))
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
