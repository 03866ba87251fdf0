//! Recording: what a call leaves behind as evidence. Today that is the **transmission log**,
//! one JSON-lines file per call of every transmission control event (who asked, who was
//! granted, queued, rejected, pre-empted, with the causes and queue positions, and the RTP
//! sequence numbers and timestamps of each transmission's first and last packets).
//!
//! The worker never writes a file: it formats a record (a few per transmission, none per
//! packet) and hands it to the one writer thread through a bounded queue with `try_send`.
//! A full queue drops the record and counts it; a file that cannot be written stops that
//! recording (counted, logged once); the media goes on either way. Every recording is one
//! directory `<dir>/<call id>-<unix ms>/` (mode 0700) with files of mode 0600; no key
//! material is ever written. Old recordings are removed by age and by total size.

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
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
}

#[derive(Debug, Default)]
struct Counters {
    started: AtomicU64,
    refused: AtomicU64,
    stopped: AtomicU64,
    records_written: AtomicU64,
    records_dropped: AtomicU64,
    removed: AtomicU64,
    /// The first record lost to a full queue has been logged.
    warned_full: AtomicBool,
    /// A refused recording has been logged since the last one that started.
    warned_refused: AtomicBool,
    /// A stopped recording has been logged since the last lines written.
    warned_stopped: AtomicBool,
}

impl Counters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether `flag` was down (and puts it up): what is logged once sets it.
    fn first(flag: &AtomicBool) -> bool {
        !flag.swap(true, Ordering::Relaxed)
    }

    /// A record lost to a full queue: counted, and logged the first time only (the worker
    /// must not log per record).
    fn dropped_full(&self) {
        Self::bump(&self.records_dropped);
        self.warn_full();
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
    /// Start recording `id`; the recording is over once `alive` is gone (its handle dropped).
    Open(Arc<str>, Weak<()>),
    /// One line of `id`'s transmission log.
    Line(Arc<str>, String),
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
        };
        let thread = std::thread::Builder::new()
            .name("mcv-recorder".into())
            .spawn(move || writer.run(&rx))?;
        Ok(Recorder {
            config,
            tx,
            counters,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The configuration it runs with.
    pub(crate) fn config(&self) -> &RecordingConfig {
        &self.config
    }

    /// Starts recording call `call_id` (started at `wall`), if the disk has room and the
    /// writer's queue takes it.
    pub(crate) fn open(&self, call_id: &str, wall: SystemTime) -> Option<RecHandle> {
        let free = free_bytes(&self.config.dir);
        if free.is_none_or(|f| f < self.config.min_free_bytes) {
            let why = format!(
                "too little free space in the recording directory: {} bytes, {} needed",
                free.map_or_else(|| "unknown".to_owned(), |f| f.to_string()),
                self.config.min_free_bytes
            );
            self.counters.refuse(call_id, &why);
            return None;
        }
        let id: Arc<str> = recording_name(call_id, wall).into();
        let alive = Arc::new(());
        match self
            .tx
            .try_send(Job::Open(id.clone(), Arc::downgrade(&alive)))
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
}

/// The writer thread's state.
struct Writer {
    config: RecordingConfig,
    counters: Arc<Counters>,
    open: HashMap<Arc<str>, OpenLog>,
    last_tick: Instant,
}

impl Writer {
    fn run(mut self, rx: &Receiver<Job>) {
        self.retain();
        loop {
            match rx.recv_timeout(TICK) {
                Ok(Job::Open(id, alive)) => self.start(id, alive),
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
    }

    /// Makes recording `id`'s directory and opens its transmission log.
    fn start(&mut self, id: Arc<str>, alive: Weak<()>) {
        let dir = self.config.dir.join(&*id);
        let made = fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .and_then(|()| {
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(dir.join(TRANSMISSION_LOG_FILE))
            });
        match made {
            Ok(f) => {
                Counters::bump(&self.counters.started);
                self.counters.warned_refused.store(false, Ordering::Relaxed);
                let file = Some(BufWriter::new(f));
                self.open.insert(
                    id,
                    OpenLog {
                        file,
                        alive,
                        pending: 0,
                    },
                );
            }
            Err(e) => {
                self.counters.refuse(&id, &e);
                self.open.insert(
                    id,
                    OpenLog {
                        file: None,
                        alive,
                        pending: 0,
                    },
                );
            }
        }
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
        Counters::bump(&self.counters.stopped);
        if Counters::first(&self.counters.warned_stopped) {
            tracing::warn!(
                recording = %id,
                error = %e,
                lost,
                "recording stopped: cannot write (the media goes on; the next ones unlogged \
                 until lines are written again, counted in \
                 mcvideo_relay_recordings_stopped_total)"
            );
        } else {
            tracing::debug!(recording = %id, error = %e, lost, "recording stopped: cannot write");
        }
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
        w.start(id.clone(), Arc::downgrade(&alive));
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
