//! Recording: what a call leaves behind as evidence. That is the **transmission log**, one
//! JSON-lines file per call of every transmission control event (who asked, who was granted,
//! queued, rejected, pre-empted, with the causes and queue positions, and the RTP sequence
//! numbers and timestamps of each transmission's first and last packets), and for the calls
//! asked for (or all, by policy) the **media**: one pcap file per stream of the RTP and RTCP
//! as the relay received them (decrypted in per_leg), rotated by size, with `media.json`.
//!
//! The worker never writes a file: it formats a record (a few per transmission, none per
//! packet) and hands it to the one writer thread through a bounded queue with `try_send`; a
//! recorded packet is copied into a preallocated buffer of a pool (`MediaTap`) and handed
//! over the same way. A full queue (or no free buffer) drops the record and counts it; a file
//! that cannot be written stops that recording (counted, logged once); the media goes on
//! either way. Every recording is one directory `<dir>/<call id>-<unix ms>/` (mode 0700) with
//! files of mode 0600; no key material is ever written. Old recordings are removed by age and
//! by total size.

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The transmission log's file name in a recording's directory.
pub const TRANSMISSION_LOG_FILE: &str = "transmissions.jsonl";

/// How often the writer applies retention and closes the logs of calls that are gone (when a
/// call's close was lost to a full queue), at most.
const TICK: Duration = Duration::from_secs(10);

/// Where and how recordings are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingConfig {
    /// The directory every recording goes in (created, mode 0700).
    pub dir: PathBuf,
    /// A recording starts only while the directory's file system has this much free space.
    pub min_free_bytes: u64,
    /// Recordings older than this are removed (`None`: kept whatever their age).
    pub max_age: Option<Duration>,
    /// The oldest recordings are removed while all of them take more than this (0: no limit).
    pub max_total_bytes: u64,
    /// Every call keeps a transmission log.
    pub transmission_log: bool,
    /// Records waiting for the writer at most; more are dropped (and counted).
    pub queue: usize,
    /// Every call's media is recorded (pcap), not only the calls asked for.
    pub media_all: bool,
    /// A media file is rotated once it holds this many bytes.
    pub max_file_bytes: u64,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig {
            dir: PathBuf::from("/var/lib/mcvideo-relay/recordings"),
            min_free_bytes: 256 << 20,
            max_age: Some(Duration::from_secs(30 * 86_400)),
            max_total_bytes: 0,
            transmission_log: true,
            queue: 65_536,
            media_all: false,
            max_file_bytes: 256 << 20,
        }
    }
}

/// The recorder's counters since the engine started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordingStats {
    /// Recordings started.
    pub started: u64,
    /// Recordings not started: too little free space, or the directory could not be made.
    pub refused: u64,
    /// Recordings stopped early because a file could not be written (disk full, ...).
    pub stopped: u64,
    /// Records written.
    pub records_written: u64,
    /// Records dropped: the writer's queue was full, or their recording had stopped.
    pub records_dropped: u64,
    /// Recordings removed by retention.
    pub removed: u64,
    /// Media packets written to a pcap file.
    pub packets_written: u64,
    /// Media packets not recorded: no free buffer, the writer's queue full, or their
    /// recording stopped (the media itself was forwarded).
    pub packets_dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    started: AtomicU64,
    refused: AtomicU64,
    stopped: AtomicU64,
    records_written: AtomicU64,
    records_dropped: AtomicU64,
    removed: AtomicU64,
    packets_written: AtomicU64,
    packets_dropped: AtomicU64,
    /// The first media packet lost to a full queue (or no free buffer) has been logged.
    warned_media: AtomicBool,
    /// The first record lost to a full queue has been logged.
    warned_full: AtomicBool,
    /// A refused recording has been logged since the last one that started.
    warned_refused: AtomicBool,
    /// A stopped recording has been logged since the last lines written.
    warned_stopped: AtomicBool,
    /// The recordings the writer has open (still being written): named here before their
    /// directory is made, until they are closed.
    open: Mutex<HashSet<Arc<str>>>,
}

impl Counters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether `flag` was down (and puts it up): what is logged once sets it.
    fn first(flag: &AtomicBool) -> bool {
        !flag.swap(true, Ordering::Relaxed)
    }

    /// A recording (`what`: its log, or its media) stopped for `e` with `lost` items unwritten:
    /// counted, and warned about once until something is written again (a full disk stops
    /// every call's recording), then at debug.
    fn stopped(&self, id: &str, e: &io::Error, lost: u64, what: &str) {
        Self::bump(&self.stopped);
        if Self::first(&self.warned_stopped) {
            tracing::warn!(
                recording = %id,
                error = %e,
                lost,
                "{what} stopped: cannot write (the media goes on; the next ones unlogged \
                 until something is written again, counted in \
                 mcvideo_relay_recordings_stopped_total)"
            );
        } else {
            tracing::debug!(recording = %id, error = %e, lost, "{what} stopped: cannot write");
        }
    }

    /// A record lost to a full queue: counted, and logged the first time only (the worker
    /// must not log per record).
    fn dropped_full(&self) {
        Self::bump(&self.records_dropped);
        self.warn_full();
    }

    /// Media packets not recorded for want of a buffer or room in the queue: counted, logged
    /// the first time only.
    fn media_dropped(&self, n: u64) {
        self.packets_dropped.fetch_add(n, Ordering::Relaxed);
        if Self::first(&self.warned_media) {
            tracing::warn!(
                "recording: no free media buffer or the writer's queue is full, media packets \
                 are not recorded (they are forwarded; counted in \
                 mcvideo_relay_recording_packets_dropped_total; logged once)"
            );
        }
    }

    fn warn_full(&self) {
        if Self::first(&self.warned_full) {
            tracing::warn!(
                "recording: the writer's queue is full, transmission log records are dropped \
                 (counted in mcvideo_relay_recording_records_dropped_total; logged once)"
            );
        }
    }

    /// A recording not started: counted; logged once until one starts again (a full disk
    /// would otherwise log every call).
    fn refuse(&self, call: &str, why: &dyn std::fmt::Display) {
        Self::bump(&self.refused);
        if Self::first(&self.warned_refused) {
            tracing::warn!(
                call,
                %why,
                "not recording the call (nor the next ones, unlogged, until a recording starts; \
                 counted in mcvideo_relay_recordings_refused_total)"
            );
        } else {
            tracing::debug!(call, %why, "not recording the call");
        }
    }
}

/// What the writer thread is asked to do.
#[derive(Debug)]
enum Job {
    /// Start recording `id` (with its transmission log when the flag says so); the recording
    /// is over once `alive` is gone (its handle dropped).
    Open(Arc<str>, Weak<()>, bool),
    /// One line of `id`'s transmission log.
    Line(Arc<str>, String),
    /// Start recording `id`'s media: its metadata (JSON) for `media.json`, the pool its
    /// buffers go back to, and the flag the writer raises when the recording stops.
    MediaOpen(Arc<str>, String, Pool, Arc<AtomicBool>),
    /// One media packet of a recording.
    Media(Box<MediaPacket>),
    /// `id` is over.
    Close(Arc<str>),
    /// The engine stops.
    Stop,
}

/// The engine's recorder: the writer thread and the queue to it.
#[derive(Debug)]
pub(crate) struct Recorder {
    config: RecordingConfig,
    tx: Sender<Job>,
    counters: Arc<Counters>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The media buffers, made when the first media recording starts.
    pool: std::sync::OnceLock<Pool>,
}

/// Bytes of a media packet kept at most (a longer one is cut, as a capture's snap length
/// cuts it: the pcap record says how long it was).
pub(crate) const MEDIA_SNAP: usize = 2048;

/// The media file format's link type: raw IP (an IPv4 or IPv6 header and UDP are synthesized
/// in front of each packet, with the addresses and ports it came from and to).
pub(crate) const LINKTYPE_RAW: u32 = 101;

/// The media recording's metadata file in a recording's directory.
pub(crate) const MEDIA_META_FILE: &str = "media.json";

/// The preallocated buffers media packets are copied into: workers take them, the writer
/// gives them back once written. A bounded channel holding every buffer: taking and giving
/// back allocate nothing.
#[derive(Debug, Clone)]
struct Pool {
    take: Receiver<Box<MediaPacket>>,
    give: Sender<Box<MediaPacket>>,
}

impl Pool {
    fn new(n: usize) -> Pool {
        let (give, take) = crossbeam_channel::bounded(n);
        for _ in 0..n {
            let _ = give.try_send(Box::new(MediaPacket::default()));
        }
        Pool { take, give }
    }

    /// Gives `p` back (its recording's name let go).
    fn give_back(&self, mut p: Box<MediaPacket>) {
        p.rec = None;
        let _ = self.give.try_send(p);
    }
}

/// One media packet on its way to the writer, in a preallocated buffer.
#[derive(Debug)]
pub(crate) struct MediaPacket {
    /// The recording it belongs to.
    rec: Option<Arc<str>>,
    /// The index of its stream.
    stream: usize,
    /// When it arrived: microseconds since the Unix epoch.
    wall_us: u64,
    /// Where it came from, and the relay's address it came to.
    src: SocketAddr,
    dst: SocketAddr,
    /// Its length, and how much of it is in `data`.
    orig_len: usize,
    len: usize,
    data: Box<[u8]>,
}

impl Default for MediaPacket {
    fn default() -> Self {
        let any = SocketAddr::from(([0, 0, 0, 0], 0));
        MediaPacket {
            rec: None,
            stream: 0,
            wall_us: 0,
            src: any,
            dst: any,
            orig_len: 0,
            len: 0,
            data: vec![0; MEDIA_SNAP].into_boxed_slice(),
        }
    }
}

/// A call's media recording as the per-packet rules hold it: each RTP packet that passed
/// every rule (and each RTCP datagram admitted from a member) is copied (decrypted where the relay decrypts, else as received) into a free
/// buffer of the pool and handed to the writer with `try_send`. No buffer free, or the queue
/// full: the packet is not recorded (counted, logged once); it is forwarded all the same.
/// Nothing here allocates or reads the clock: the arrival time is the batch's `now`, made
/// wall-clock time from the instant the recording started.
#[derive(Debug)]
pub(crate) struct MediaTap {
    rec: Arc<RecHandle>,
    pool: Pool,
    /// The instant and the wall-clock time (µs since the epoch) the recording started at.
    base: (Instant, u64),
    /// The relay's address of the socket the batch being judged came in on.
    dst: SocketAddr,
    /// Raised by the writer once the recording stopped (a file could not be written): the
    /// packets are then counted as dropped here, not copied.
    stopped: Arc<AtomicBool>,
}

impl MediaTap {
    /// The relay's address the next packets come in on (set per receive batch).
    #[inline]
    pub(crate) fn set_local(&mut self, dst: SocketAddr) {
        self.dst = dst;
    }

    /// Rewrites the recording's metadata (`media.json`), e.g. once a one-to-one call's
    /// streams are known. A full queue keeps the old one.
    pub(crate) fn meta(&self, meta: String) {
        let job = Job::MediaOpen(
            self.rec.id.clone(),
            meta,
            self.pool.clone(),
            self.stopped.clone(),
        );
        if self.rec.tx.try_send(job).is_err() {
            self.rec.counters.warn_full();
        }
    }

    /// Records RTP packet (or RTCP datagram) `bytes` of stream `stream` from `from`,
    /// received at `now`.
    #[inline]
    pub(crate) fn packet(&mut self, stream: usize, from: SocketAddr, now: Instant, bytes: &[u8]) {
        if self.stopped.load(Ordering::Relaxed) {
            // Logged when it stopped.
            let c = &self.rec.counters.packets_dropped;
            c.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Ok(mut p) = self.pool.take.try_recv() else {
            self.rec.counters.media_dropped(1);
            return;
        };
        let n = bytes.len().min(p.data.len());
        if let (Some(d), Some(b)) = (p.data.get_mut(..n), bytes.get(..n)) {
            d.copy_from_slice(b);
        }
        p.len = n;
        p.orig_len = bytes.len();
        p.rec = Some(self.rec.id.clone());
        p.stream = stream;
        p.src = from;
        p.dst = self.dst;
        let since = now.saturating_duration_since(self.base.0).as_micros();
        p.wall_us = self
            .base
            .1
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX));
        if let Err(e) = self.rec.tx.try_send(Job::Media(p)) {
            if let Job::Media(p) = e.into_inner() {
                self.pool.give_back(p);
            }
            self.rec.counters.media_dropped(1);
        }
    }
}

/// One call's recording, as the worker holds it: records go to the writer, and dropping it
/// closes the recording.
#[derive(Debug)]
pub(crate) struct RecHandle {
    id: Arc<str>,
    tx: Sender<Job>,
    counters: Arc<Counters>,
    /// The writer holds a weak reference: when it is gone, so is the call.
    _alive: Arc<()>,
}

impl RecHandle {
    /// Hands one transmission log line to the writer; a full queue drops it (counted, logged
    /// once).
    pub(crate) fn line(&self, line: String) {
        if self.tx.try_send(Job::Line(self.id.clone(), line)).is_err() {
            self.counters.dropped_full();
        }
    }
}

#[cfg(test)]
impl RecHandle {
    /// A handle whose lines are kept for a test: read them with the function returned.
    pub(crate) fn for_test() -> (RecHandle, impl Fn() -> Vec<String>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let h = RecHandle {
            id: "test".into(),
            tx,
            counters: Arc::new(Counters::default()),
            _alive: Arc::new(()),
        };
        let lines = move || {
            rx.try_iter()
                .filter_map(|j| match j {
                    Job::Line(_, l) => Some(l),
                    _ => None,
                })
                .collect()
        };
        (h, lines)
    }
}

impl Drop for RecHandle {
    fn drop(&mut self) {
        // A close lost to a full queue: the writer's next tick sees the handle gone and closes
        // the file.
        let _ = self.tx.try_send(Job::Close(self.id.clone()));
    }
}

impl Recorder {
    /// Makes the directory and starts the writer thread (which applies retention at once).
    pub(crate) fn start(config: RecordingConfig) -> io::Result<Recorder> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.dir)?;
        let (tx, rx) = crossbeam_channel::bounded(config.queue.max(16));
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            config: config.clone(),
            counters: counters.clone(),
            open: HashMap::new(),
            last_tick: Instant::now(),
            pool: None,
        };
        let thread = std::thread::Builder::new()
            .name("mcv-recorder".into())
            .spawn(move || writer.run(&rx))?;
        Ok(Recorder {
            config,
            tx,
            counters,
            thread: Mutex::new(Some(thread)),
            pool: std::sync::OnceLock::new(),
        })
    }

    /// The configuration it runs with.
    pub(crate) fn config(&self) -> &RecordingConfig {
        &self.config
    }

    /// Starts recording call `call_id` (started at `wall`), if the disk has room and the
    /// writer's queue takes it.
    /// `log`: with its transmission log.
    pub(crate) fn open(&self, call_id: &str, wall: SystemTime, log: bool) -> Option<RecHandle> {
        if !self.room(call_id) {
            return None;
        }
        let id: Arc<str> = recording_name(call_id, wall).into();
        let alive = Arc::new(());
        match self
            .tx
            .try_send(Job::Open(id.clone(), Arc::downgrade(&alive), log))
        {
            Ok(()) => Some(RecHandle {
                id,
                tx: self.tx.clone(),
                counters: self.counters.clone(),
                _alive: alive,
            }),
            Err(_) => {
                self.counters.refuse(call_id, &"the writer's queue is full");
                self.counters.warn_full();
                None
            }
        }
    }

    /// Whether the recording directory has `min_free_bytes` free; if not, the recording of
    /// `call_id` is refused (counted, logged once).
    fn room(&self, call_id: &str) -> bool {
        let free = free_bytes(&self.config.dir);
        if free.is_none_or(|f| f < self.config.min_free_bytes) {
            let why = format!(
                "too little free space in the recording directory: {} bytes, {} needed",
                free.map_or_else(|| "unknown".to_owned(), |f| f.to_string()),
                self.config.min_free_bytes
            );
            self.counters.refuse(call_id, &why);
            return false;
        }
        true
    }

    /// Starts recording the media of call `call_id` in recording `rec`, whose metadata is
    /// `meta` (a JSON object for `media.json`), if the disk has room and the writer's queue
    /// takes it. The instant and wall-clock time given are the same moment.
    pub(crate) fn media(
        &self,
        call_id: &str,
        rec: &Arc<RecHandle>,
        meta: String,
        at: (Instant, SystemTime),
    ) -> Option<MediaTap> {
        if !self.room(call_id) {
            return None;
        }
        let pool = self
            .pool
            .get_or_init(|| Pool::new(self.config.queue.clamp(16, 4096)))
            .clone();
        let stopped = Arc::new(AtomicBool::new(false));
        let job = Job::MediaOpen(rec.id.clone(), meta, pool.clone(), stopped.clone());
        if self.tx.try_send(job).is_err() {
            self.counters.refuse(call_id, &"the writer's queue is full");
            self.counters.warn_full();
            return None;
        }
        let wall =
            at.1.duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_micros();
        Some(MediaTap {
            rec: rec.clone(),
            pool,
            base: (at.0, u64::try_from(wall).unwrap_or(u64::MAX)),
            dst: SocketAddr::from(([0, 0, 0, 0], 0)),
            stopped,
        })
    }

    /// Whether recording `name` (a directory name) is still being written: its call has not
    /// ended, or the writer has not closed it yet.
    pub(crate) fn is_open(&self, name: &str) -> bool {
        self.counters
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }

    /// The counters.
    pub(crate) fn stats(&self) -> RecordingStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RecordingStats {
            started: get(&c.started),
            refused: get(&c.refused),
            stopped: get(&c.stopped),
            records_written: get(&c.records_written),
            records_dropped: get(&c.records_dropped),
            removed: get(&c.removed),
            packets_written: get(&c.packets_written),
            packets_dropped: get(&c.packets_dropped),
        }
    }

    /// Stops the writer after what is queued (waits for it). Idempotent.
    pub(crate) fn shutdown(&self) {
        let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) else {
            return;
        };
        let _ = self.tx.send(Job::Stop);
        let _ = t.join();
    }
}

/// The directory name of call `call_id`'s recording started at `wall`: `<call id>-<unix ms>`,
/// one path component whatever the ID holds (call IDs are `[A-Za-z0-9._-]` already; anything
/// else becomes `_`).
fn recording_name(call_id: &str, wall: SystemTime) -> String {
    let ms = wall
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let safe: String = call_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}-{ms}")
}

/// Creates file `path` for writing, mode 0600 (it must not exist).
fn create_private(path: &Path) -> io::Result<File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Free space for an unprivileged writer on `dir`'s file system.
fn free_bytes(dir: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

/// One recording the writer has open.
struct OpenLog {
    /// Its transmission log; `None` once it could not be written.
    file: Option<BufWriter<File>>,
    /// Gone once the call's handle is dropped.
    alive: Weak<()>,
    /// Lines in the buffer, not yet flushed.
    pending: u64,
    /// Its media files, once its media is recorded.
    media: Option<MediaFiles>,
}

/// One recording's media files: one pcap file per stream (rotated by size).
struct MediaFiles {
    /// Per stream, the file being written (opened at the stream's first packet).
    streams: Vec<Option<Pcap>>,
    /// A file could not be written: the media recording stopped.
    stopped: bool,
    /// Packets in the buffers, not yet flushed.
    pending: u64,
    /// Raised with `stopped`: the call's tap stops copying packets.
    flag: Arc<AtomicBool>,
}

/// One pcap file being written.
struct Pcap {
    file: BufWriter<File>,
    /// Bytes in it so far.
    bytes: u64,
    /// Its part of the stream (0: the first file).
    part: u32,
}

/// A pcap file's global header: microsecond timestamps, version 2.4, snap length, raw IP.
fn pcap_header() -> [u8; 24] {
    let mut h = [0u8; 24];
    let fields: [(usize, &[u8]); 5] = [
        (0, &0xa1b2_c3d4u32.to_le_bytes()),
        (4, &2u16.to_le_bytes()),
        (6, &4u16.to_le_bytes()),
        (16, &(MEDIA_SNAP as u32 + 48).to_le_bytes()),
        (20, &LINKTYPE_RAW.to_le_bytes()),
    ];
    for (at, b) in fields {
        if let Some(d) = h.get_mut(at..at + b.len()) {
            d.copy_from_slice(b);
        }
    }
    h
}

/// The name of part `part` of stream `stream`'s media file.
pub(crate) fn media_file_name(stream: usize, part: u32) -> String {
    if part == 0 {
        format!("stream-{stream}.pcap")
    } else {
        format!("stream-{stream}.{part}.pcap")
    }
}

/// The ones' complement sum of `b` (16-bit big-endian words) added to `acc`.
fn csum_add(mut acc: u32, b: &[u8]) -> u32 {
    let mut it = b.chunks_exact(2);
    for w in &mut it {
        acc += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = it.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn csum_fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The IP and UDP headers synthesized in front of a packet of `len` bytes from `src` to
/// `dst` (IPv6 when either is; an IPv4 address is then written mapped), in `out`; returns
/// their length.
fn ip_udp_header(src: SocketAddr, dst: SocketAddr, payload: &[u8], out: &mut [u8; 48]) -> usize {
    let udp_len = 8 + payload.len();
    let mut udp = [0u8; 8];
    udp[0..2].copy_from_slice(&src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
            ip[6] = 0x40; // don't fragment
            ip[8] = 64;
            ip[9] = 17;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let c = csum_fold(csum_add(0, &ip));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            // UDP checksum 0: none (allowed over IPv4).
            out[..20].copy_from_slice(&ip);
            out[20..28].copy_from_slice(&udp);
            28
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            let (s, d) = (v6(s).octets(), v6(d).octets());
            let mut ip = [0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
            ip[6] = 17;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&s);
            ip[24..40].copy_from_slice(&d);
            let mut acc = csum_add(0, &s);
            acc = csum_add(acc, &d);
            acc += udp_len as u32 + 17;
            acc = csum_add(acc, &udp);
            acc = csum_add(acc, payload);
            let c = match csum_fold(acc) {
                0 => 0xffff,
                c => c,
            };
            udp[6..8].copy_from_slice(&c.to_be_bytes());
            out[..40].copy_from_slice(&ip);
            out[40..48].copy_from_slice(&udp);
            48
        }
    }
}

/// The writer thread's state.
struct Writer {
    config: RecordingConfig,
    counters: Arc<Counters>,
    open: HashMap<Arc<str>, OpenLog>,
    last_tick: Instant,
    /// Where media buffers go back (known from the first media recording).
    pool: Option<Pool>,
}

impl Writer {
    fn run(mut self, rx: &Receiver<Job>) {
        self.retain();
        loop {
            match rx.recv_timeout(TICK) {
                Ok(Job::Open(id, alive, log)) => self.start(id, alive, log),
                Ok(Job::MediaOpen(id, meta, pool, stopped)) => {
                    self.pool = Some(pool);
                    self.start_media(&id, &meta, stopped);
                }
                Ok(Job::Media(p)) => {
                    let id = p.rec.clone();
                    self.write_media(&p);
                    if let Some(pool) = &self.pool {
                        pool.give_back(p);
                    }
                    if let (Some(id), true) = (id, rx.is_empty()) {
                        self.flush(&id);
                    }
                }
                Ok(Job::Line(id, line)) => {
                    self.write(&id, &line);
                    if rx.is_empty() {
                        self.flush(&id);
                    }
                }
                Ok(Job::Close(id)) => self.close(&id),
                Ok(Job::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if self.last_tick.elapsed() >= TICK {
                self.tick(rx);
            }
        }
        let ids: Vec<Arc<str>> = self.open.keys().cloned().collect();
        for id in ids {
            self.flush(&id);
        }
        self.set_open(None, false);
    }

    /// Notes recording `id` open (or closed); `None`: every recording closed.
    fn set_open(&self, id: Option<&Arc<str>>, open: bool) {
        let mut set = self.counters.open.lock().unwrap_or_else(|e| e.into_inner());
        match (id, open) {
            (Some(id), true) => {
                set.insert(id.clone());
            }
            (Some(id), false) => {
                set.remove(id);
            }
            (None, _) => set.clear(),
        }
    }

    /// Every [`TICK`] at most: closes the logs of calls that are gone (their close was lost to
    /// a full queue), then applies retention.
    fn tick(&mut self, rx: &Receiver<Job>) {
        self.last_tick = Instant::now();
        // Once a handle is gone, every line it sent is in the queue or written: with the queue
        // empty, none is left for the logs closed here.
        let gone: Vec<Arc<str>> = self
            .open
            .iter()
            .filter(|(_, o)| o.alive.strong_count() == 0)
            .map(|(id, _)| id.clone())
            .collect();
        if rx.is_empty() {
            for id in &gone {
                self.close(id);
            }
        }
        self.retain();
    }

    /// Recording `id` is over: flushed and closed.
    fn close(&mut self, id: &Arc<str>) {
        self.flush(id);
        self.open.remove(id);
        self.set_open(Some(id), false);
    }

    /// Makes recording `id`'s directory and opens its transmission log (when `log`).
    fn start(&mut self, id: Arc<str>, alive: Weak<()>, log: bool) {
        // Noted open before its directory exists: whoever sees the directory sees it open.
        self.set_open(Some(&id), true);
        let dir = self.config.dir.join(&*id);
        let made = fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .and_then(|()| {
                if !log {
                    return Ok(None);
                }
                create_private(&dir.join(TRANSMISSION_LOG_FILE)).map(Some)
            });
        let file = match made {
            Ok(f) => {
                Counters::bump(&self.counters.started);
                self.counters.warned_refused.store(false, Ordering::Relaxed);
                f.map(BufWriter::new)
            }
            Err(e) => {
                self.counters.refuse(&id, &e);
                None
            }
        };
        self.open.insert(
            id,
            OpenLog {
                file,
                alive,
                pending: 0,
                media: None,
            },
        );
    }

    /// Starts recording `id`'s media: writes its metadata. Its files are made at each
    /// stream's first packet.
    fn start_media(&mut self, id: &Arc<str>, meta: &str, flag: Arc<AtomicBool>) {
        let dir = self.config.dir.join(&**id);
        let Some(o) = self.open.get_mut(id) else {
            return;
        };
        let again = o.media.is_some();
        let media = o.media.get_or_insert_with(|| MediaFiles {
            streams: Vec::new(),
            stopped: false,
            pending: 0,
            flag,
        });
        if media.stopped {
            return;
        }
        let path = dir.join(MEDIA_META_FILE);
        let file = if again {
            fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&path)
        } else {
            create_private(&path)
        };
        let r = file.and_then(|mut f| {
            f.write_all(meta.as_bytes())?;
            f.write_all(b"\n")
        });
        if let Err(e) = r {
            media.stopped = true;
            media.flag.store(true, Ordering::Relaxed);
            self.counters.refuse(id, &e);
        }
    }

    /// Writes media packet `p` to its stream's file (opened, or rotated past
    /// `max_file_bytes`, first); a write error stops the recording's media (counted, logged
    /// once), and a packet of a stopped one is dropped (counted).
    fn write_media(&mut self, p: &MediaPacket) {
        let Some(id) = p.rec.as_ref() else {
            return;
        };
        let root = &self.config.dir;
        let max = self.config.max_file_bytes;
        let Some(m) = self
            .open
            .get_mut(id)
            .and_then(|o| o.media.as_mut())
            .filter(|m| !m.stopped)
        else {
            self.counters
                .packets_dropped
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        let payload = p.data.get(..p.len).unwrap_or_default();
        let mut hdr = [0u8; 48];
        let hl = ip_udp_header(p.src, p.dst, payload, &mut hdr);
        let rec_len = 16 + hl + payload.len();
        let r = (|| -> io::Result<()> {
            if m.streams.len() <= p.stream {
                m.streams.resize_with(p.stream + 1, || None);
            }
            let slot = m
                .streams
                .get_mut(p.stream)
                .ok_or(io::ErrorKind::InvalidInput)?;
            let rotate = slot
                .as_ref()
                .is_some_and(|f| f.bytes > 24 && f.bytes + rec_len as u64 > max);
            if slot.is_none() || rotate {
                let part = match slot.take() {
                    Some(mut old) => {
                        old.file.flush()?;
                        old.part + 1
                    }
                    None => 0,
                };
                let name = media_file_name(p.stream, part);
                let f = create_private(&root.join(&**id).join(name))?;
                let mut file = BufWriter::with_capacity(64 << 10, f);
                file.write_all(&pcap_header())?;
                *slot = Some(Pcap {
                    file,
                    bytes: 24,
                    part,
                });
            }
            let f = slot.as_mut().ok_or(io::ErrorKind::InvalidInput)?;
            let secs = (p.wall_us / 1_000_000) as u32;
            let usecs = (p.wall_us % 1_000_000) as u32;
            let mut rh = [0u8; 16];
            rh[0..4].copy_from_slice(&secs.to_le_bytes());
            rh[4..8].copy_from_slice(&usecs.to_le_bytes());
            rh[8..12].copy_from_slice(&((hl + payload.len()) as u32).to_le_bytes());
            rh[12..16].copy_from_slice(&((hl + p.orig_len) as u32).to_le_bytes());
            f.file.write_all(&rh)?;
            f.file.write_all(hdr.get(..hl).unwrap_or_default())?;
            f.file.write_all(payload)?;
            f.bytes += rec_len as u64;
            Ok(())
        })();
        m.pending += 1;
        if let Err(e) = r {
            self.stop_media(id, &e);
        }
    }

    /// Recording `id`'s media cannot be written: it stops (its unwritten packets are
    /// dropped, counted), the media goes on. Logged as a stopped log is.
    fn stop_media(&mut self, id: &Arc<str>, e: &io::Error) {
        let Some(m) = self.open.get_mut(id).and_then(|o| o.media.as_mut()) else {
            return;
        };
        let lost = std::mem::take(&mut m.pending);
        m.stopped = true;
        m.flag.store(true, Ordering::Relaxed);
        for f in m.streams.drain(..).flatten() {
            // Dropping the writer would try one more flush; its error is the one logged.
            let _ = f.file.into_parts();
        }
        self.counters
            .packets_dropped
            .fetch_add(lost, Ordering::Relaxed);
        self.counters.stopped(id, e, lost, "media recording");
    }

    /// Appends `line` to `id`'s log; a write error stops the recording (counted, logged once).
    /// A line counts as written once it is flushed to the file.
    fn write(&mut self, id: &Arc<str>, line: &str) {
        let Some(o) = self.open.get_mut(id).filter(|o| o.file.is_some()) else {
            Counters::bump(&self.counters.records_dropped);
            return;
        };
        o.pending += 1;
        let Some(w) = o.file.as_mut() else {
            return;
        };
        let r = w
            .write_all(line.as_bytes())
            .and_then(|()| w.write_all(b"\n"));
        if let Err(e) = r {
            self.stop(id, &e);
        }
    }

    fn flush(&mut self, id: &Arc<str>) {
        self.flush_media(id);
        let Some(o) = self.open.get_mut(id) else {
            return;
        };
        let Some(w) = o.file.as_mut() else {
            return;
        };
        match w.flush() {
            Ok(()) => {
                let n = std::mem::take(&mut o.pending);
                self.counters
                    .records_written
                    .fetch_add(n, Ordering::Relaxed);
                if n > 0 {
                    self.counters.warned_stopped.store(false, Ordering::Relaxed);
                }
            }
            Err(e) => self.stop(id, &e),
        }
    }

    /// Flushes recording `id`'s media files: their packets count as written.
    fn flush_media(&mut self, id: &Arc<str>) {
        let Some(m) = self.open.get_mut(id).and_then(|o| o.media.as_mut()) else {
            return;
        };
        if m.stopped || m.pending == 0 {
            return;
        }
        let r = m
            .streams
            .iter_mut()
            .flatten()
            .try_for_each(|f| f.file.flush());
        match r {
            Ok(()) => {
                let n = std::mem::take(&mut m.pending);
                self.counters
                    .packets_written
                    .fetch_add(n, Ordering::Relaxed);
                self.counters.warned_stopped.store(false, Ordering::Relaxed);
            }
            Err(e) => self.stop_media(id, &e),
        }
    }

    /// Recording `id` cannot be written: it stops here (its unwritten lines are dropped), the
    /// media goes on. Logged once until lines are written again (a full disk stops every
    /// call's recording).
    fn stop(&mut self, id: &Arc<str>, e: &io::Error) {
        let Some(o) = self.open.get_mut(id) else {
            return;
        };
        let lost = std::mem::take(&mut o.pending);
        self.counters
            .records_dropped
            .fetch_add(lost, Ordering::Relaxed);
        self.counters.stopped(id, e, lost, "recording");
        // Dropping the writer would try one more flush; its error is the one just logged.
        if let Some(w) = o.file.take() {
            let _ = w.into_parts();
        }
    }

    /// Removes finished recordings older than `max_age`, then the oldest while all of them
    /// take more than `max_total_bytes`.
    fn retain(&mut self) {
        let mut all = match recordings(&self.config.dir) {
            Ok(all) => all,
            Err(e) => {
                tracing::warn!(dir = %self.config.dir.display(), error = %e, "cannot list recordings");
                return;
            }
        };
        all.sort_by_key(|r| r.modified);
        let now = SystemTime::now();
        let mut total: u64 = all.iter().map(|r| r.bytes).sum();
        for r in &all {
            if self.open.contains_key(r.name.as_str()) {
                continue;
            }
            let age = now.duration_since(r.modified).unwrap_or_default();
            let too_old = self.config.max_age.is_some_and(|max| age > max);
            let too_big = self.config.max_total_bytes > 0 && total > self.config.max_total_bytes;
            if !(too_old || too_big) {
                continue;
            }
            match fs::remove_dir_all(self.config.dir.join(&r.name)) {
                Ok(()) => {
                    total = total.saturating_sub(r.bytes);
                    Counters::bump(&self.counters.removed);
                    tracing::info!(recording = %r.name, too_old, too_big, "recording removed");
                }
                Err(e) => {
                    tracing::warn!(recording = %r.name, error = %e, "cannot remove a recording")
                }
            }
        }
    }
}

/// A recording on disk.
#[derive(Debug, Clone)]
pub(crate) struct OnDisk {
    /// Its ID (the directory's name).
    pub(crate) name: String,
    /// When a file of it was last written.
    pub(crate) modified: SystemTime,
    /// Its files' sizes.
    pub(crate) bytes: u64,
}

/// Every recording in `dir`.
pub(crate) fn recordings(dir: &Path) -> io::Result<Vec<OnDisk>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        if !e.file_type()?.is_dir() {
            continue;
        }
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        let mut modified = e.metadata()?.modified().unwrap_or(UNIX_EPOCH);
        let mut bytes = 0;
        for f in fs::read_dir(e.path())? {
            let m = f?.metadata()?;
            bytes += m.len();
            modified = modified.max(m.modified().unwrap_or(UNIX_EPOCH));
        }
        out.push(OnDisk {
            name,
            modified,
            bytes,
        });
    }
    Ok(out)
}

/// `t` as RFC 3339 in UTC with milliseconds (`2026-12-05T14:55:01.123Z`).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// `s` as a JSON string, quotes included.
pub(crate) fn json_str(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        let at = |s: u64, ms: u64| UNIX_EPOCH + Duration::from_millis(s * 1000 + ms);
        assert_eq!(rfc3339(at(0, 0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(at(951_782_400, 5)), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(at(1_764_946_501, 123)), "2025-12-05T14:55:01.123Z");
    }

    fn writer(dir: &Path) -> Writer {
        Writer {
            config: RecordingConfig {
                dir: dir.to_owned(),
                ..RecordingConfig::default()
            },
            counters: Arc::new(Counters::default()),
            open: HashMap::new(),
            last_tick: Instant::now(),
            pool: None,
        }
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mcvr-rec-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_full_queue_drops_records_and_counts_them() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let counters = Arc::new(Counters::default());
        let h = RecHandle {
            id: "c-1".into(),
            tx,
            counters: counters.clone(),
            _alive: Arc::new(()),
        };
        for _ in 0..3 {
            h.line("{}".into());
        }
        assert_eq!(rx.len(), 1, "one record fits");
        assert_eq!(counters.records_dropped.load(Ordering::Relaxed), 2);
        assert!(
            counters.warned_full.load(Ordering::Relaxed),
            "logged (once)"
        );
        drop(h);
        assert_eq!(rx.len(), 1, "the close is lost too, and nothing blocks");
    }

    #[test]
    fn a_full_queue_or_an_empty_pool_drops_media_packets_and_counts_them() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let counters = Arc::new(Counters::default());
        let rec = Arc::new(RecHandle {
            id: "c-m".into(),
            tx,
            counters: counters.clone(),
            _alive: Arc::new(()),
        });
        let pool = Pool::new(2);
        let base = Instant::now();
        let mut tap = MediaTap {
            rec,
            pool: pool.clone(),
            base: (base, 1_000_000),
            dst: SocketAddr::from(([127, 0, 0, 1], 4000)),
            stopped: Arc::default(),
        };
        let from = SocketAddr::from(([127, 0, 0, 1], 5000));
        let later = base + Duration::from_millis(1500);
        for _ in 0..3 {
            tap.packet(1, from, later, &[0x80, 96, 0, 1]);
        }
        assert_eq!(rx.len(), 1, "one packet fits the queue");
        assert_eq!(counters.packets_dropped.load(Ordering::Relaxed), 2);
        assert!(counters.warned_media.load(Ordering::Relaxed), "logged once");
        assert_eq!(pool.take.len(), 1, "a dropped packet's buffer went back");
        let Ok(Job::Media(p)) = rx.try_recv() else {
            panic!("a media packet")
        };
        assert_eq!(
            (p.stream, p.len, p.orig_len, p.wall_us),
            (1, 4, 4, 2_500_000)
        );
        assert_eq!((p.src, p.dst), (from, tap.dst));
        // The pool runs dry while the writer holds its buffers: dropped too.
        let (tx2, _rx2) = crossbeam_channel::bounded(8);
        tap.rec = Arc::new(RecHandle {
            id: "c-m".into(),
            tx: tx2,
            counters: counters.clone(),
            _alive: Arc::new(()),
        });
        tap.packet(0, from, later, &[0x80; 3000]);
        tap.packet(0, from, later, &[0x80; 20]);
        assert_eq!(counters.packets_dropped.load(Ordering::Relaxed), 3);
        pool.give_back(p);
        assert_eq!(pool.take.len(), 1);
        // Once the writer says the recording stopped, nothing is copied: counted only.
        tap.stopped.store(true, Ordering::Relaxed);
        tap.packet(0, from, later, &[0x80; 20]);
        assert_eq!(counters.packets_dropped.load(Ordering::Relaxed), 4);
        assert_eq!(pool.take.len(), 1, "no buffer taken");
    }

    #[test]
    fn a_media_file_is_a_pcap_of_raw_ip_rotated_by_size() {
        let dir = tmp("pcap");
        let mut w = writer(&dir);
        w.config.max_file_bytes = 200;
        let alive = Arc::new(());
        let id: Arc<str> = "c-p".into();
        w.start(id.clone(), Arc::downgrade(&alive), false);
        w.start_media(&id, "{}", Arc::default());
        let mut p = MediaPacket {
            rec: Some(id.clone()),
            src: "10.0.0.1:5000".parse().unwrap(),
            dst: "10.0.0.2:6000".parse().unwrap(),
            wall_us: 1_700_000_000_123_456,
            ..MediaPacket::default()
        };
        p.len = 100;
        p.orig_len = 100;
        p.data[..100].fill(7);
        for _ in 0..3 {
            w.write_media(&p);
        }
        w.flush(&id);
        let rec = dir.join(&*id);
        assert!(
            !rec.join(TRANSMISSION_LOG_FILE).exists(),
            "no log asked for"
        );
        let a = fs::read(rec.join("stream-0.pcap")).unwrap();
        let b = fs::read(rec.join("stream-0.1.pcap")).unwrap();
        let c = fs::read(rec.join("stream-0.2.pcap")).unwrap();
        assert_eq!(
            a.len(),
            24 + 16 + 28 + 100,
            "one packet a file at 200 bytes"
        );
        assert_eq!((b.len(), c.len()), (a.len(), a.len()));
        assert_eq!(a[..24], pcap_header());
        let u32_at = |i: usize| u32::from_le_bytes(a[i..i + 4].try_into().unwrap());
        assert_eq!(
            (u32_at(20), u32_at(24), u32_at(28)),
            (101, 1_700_000_000, 123_456)
        );
        assert_eq!((u32_at(32), u32_at(36)), (128, 128));
        let ip = &a[40..68];
        assert_eq!(ip[0], 0x45);
        assert_eq!(
            csum_fold(csum_add(0, &ip[..20])),
            0,
            "a valid IPv4 checksum"
        );
        assert_eq!(&ip[12..20], &[10, 0, 0, 1, 10, 0, 0, 2]);
        assert_eq!(&ip[20..26], &[0x13, 0x88, 0x17, 0x70, 0, 108]);
        assert_eq!(w.counters.packets_written.load(Ordering::Relaxed), 3);
        // IPv6: a valid UDP checksum over the pseudo-header.
        let mut hdr = [0u8; 48];
        let (s6, d6): (SocketAddr, SocketAddr) = (
            "[2001:db8::1]:5000".parse().unwrap(),
            "[2001:db8::2]:6000".parse().unwrap(),
        );
        let payload = [1u8, 2, 3];
        assert_eq!(ip_udp_header(s6, d6, &payload, &mut hdr), 48);
        let mut acc = csum_add(0, &hdr[8..40]);
        acc += 11 + 17;
        acc = csum_add(acc, &hdr[40..48]);
        acc = csum_add(acc, &payload);
        assert_eq!(csum_fold(acc), 0, "a valid UDP checksum");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failing_disk_stops_the_log_and_counts_what_it_lost() {
        let dir = tmp("full");
        let mut w = writer(&dir);
        let alive = Arc::new(());
        let id: Arc<str> = "c-2".into();
        let full = fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        w.open.insert(
            id.clone(),
            OpenLog {
                file: Some(BufWriter::new(full)),
                alive: Arc::downgrade(&alive),
                pending: 0,
                media: None,
            },
        );
        w.write(&id, "{\"a\":1}");
        w.write(&id, "{\"a\":2}");
        w.flush(&id);
        w.write(&id, "{\"a\":3}");
        w.flush(&id);
        let c = &w.counters;
        assert_eq!(c.stopped.load(Ordering::Relaxed), 1, "stopped once");
        assert_eq!(c.records_dropped.load(Ordering::Relaxed), 3);
        assert_eq!(c.records_written.load(Ordering::Relaxed), 0);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_recording_is_written_with_its_modes_and_closed_when_its_call_is_gone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tmp("write");
        let mut w = writer(&dir);
        let (_tx, rx) = crossbeam_channel::bounded::<Job>(4);
        let alive = Arc::new(());
        let id: Arc<str> = recording_name("c/../3", UNIX_EPOCH + Duration::from_millis(7)).into();
        assert_eq!(&*id, "c_.._3-7", "one path component");
        w.start(id.clone(), Arc::downgrade(&alive), true);
        w.write(&id, "{\"a\":1}");
        w.flush(&id);
        let rec = dir.join(&*id);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&rec), 0o700);
        let file = rec.join(TRANSMISSION_LOG_FILE);
        assert_eq!(mode(&file), 0o600);
        assert_eq!(fs::read_to_string(&file).unwrap(), "{\"a\":1}\n");
        assert_eq!(w.counters.records_written.load(Ordering::Relaxed), 1);
        w.tick(&rx);
        assert!(w.open.contains_key(&id), "its call is still there");
        drop(alive);
        w.tick(&rx);
        assert!(
            w.open.is_empty(),
            "a close lost to a full queue is made up for"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\n");
        assert_eq!(s, r#""a\"b\\c\u000a""#);
    }
}
