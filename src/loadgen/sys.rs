//! What the load generator reads from the system: CPU time and resident memory from `/proc`, and
//! Ctrl-C (SIGINT) through tokio's signal handling on a small thread of its own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// Waits up to `within` (looking every `every`) for `child` to exit, then kills it.
pub(crate) fn reap(child: &mut std::process::Child, within: Duration, every: Duration) {
    let until = std::time::Instant::now() + within;
    while std::time::Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(every);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Starts `cmd` in a process group of its own: the terminal's Ctrl-C reaches only the
/// loadgen, which then winds the child down itself (releases its calls, stops it).
pub(crate) fn spawn_own_group(
    cmd: &mut std::process::Command,
) -> std::io::Result<std::process::Child> {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    cmd.spawn()
}

/// Clock ticks per second of `/proc/*/stat` (`getconf CLK_TCK`; 100 when it cannot be asked).
pub(crate) fn clk_tck() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t: &u64| t > 0)
            .unwrap_or(100)
    })
}

/// utime + stime of a `/proc/.../stat` line.
fn stat_cpu(text: &str) -> Option<Duration> {
    // The command name is in parentheses and may hold spaces: count fields after the last ')'.
    let rest = text.get(text.rfind(')')? + 1..)?;
    let mut f = rest.split_whitespace();
    // Fields 3.. of proc(5): state(3) ... utime(14) stime(15).
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    let ticks = utime + stime;
    let tck = clk_tck();
    Some(Duration::from_nanos(
        ticks.saturating_mul(1_000_000_000) / tck,
    ))
}

/// CPU time (user + system) of a process; `None` = this process.
pub(crate) fn process_cpu(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    stat_cpu(&std::fs::read_to_string(path).ok()?)
}

/// A thread's time on a CPU, to the nanosecond: the first field of its `schedstat`
/// (`sum_exec_runtime`). `stat`'s utime + stime come in clock ticks (10 ms at 100 Hz), too
/// coarse for a thread that works a few milliseconds a second, such as a worker whose packets
/// the kernel forwards.
fn schedstat_cpu(text: &str) -> Option<Duration> {
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// CPU time of this process's threads whose name starts with `prefix` (threads that ended are
/// not counted: sample while they run), from each thread's `schedstat` (nanoseconds), or its
/// `stat` (clock ticks) where the kernel has no `schedstat`.
pub(crate) fn threads_cpu(prefix: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut any = false;
    for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let dir = entry.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        let cpu = std::fs::read_to_string(dir.join("schedstat"))
            .ok()
            .and_then(|s| schedstat_cpu(&s))
            .or_else(|| {
                std::fs::read_to_string(dir.join("stat"))
                    .ok()
                    .and_then(|s| stat_cpu(&s))
            });
        if let Some(cpu) = cpu {
            total += cpu;
            any = true;
        }
    }
    any.then_some(total)
}

/// Busy time of all CPUs (user + nice + system + irq + softirq + steal; not idle nor iowait) of
/// the `cpu` line of `/proc/stat`, in clock ticks. Guest time is already in user and nice.
fn stat_busy_ticks(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // proc(5): user nice system idle iowait irq softirq steal guest guest_nice.
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    (f.len() >= 4).then(|| at(0) + at(1) + at(2) + at(5) + at(6) + at(7))
}

/// Busy time of all the machine's CPUs since boot (see [`stat_busy_ticks`]).
pub(crate) fn machine_busy() -> Option<Duration> {
    let ticks = stat_busy_ticks(&std::fs::read_to_string("/proc/stat").ok()?)?;
    Some(Duration::from_nanos(
        ticks.saturating_mul(1_000_000_000) / clk_tck(),
    ))
}

/// Idle + iowait of the `cpu` line of `/proc/stat` in clock ticks, and how many CPUs have a
/// line of their own (the online ones).
fn stat_idle_ticks(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let mut f = line.split_whitespace().skip(4);
    let idle: u64 = f.next()?.parse().ok()?;
    let iowait: u64 = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let cpus = text
        .lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count() as u64;
    Some((idle + iowait, cpus))
}

/// The machine's busy time as the CPUs' time less their idle and iowait time, counted from the
/// first call (its difference between two calls is what matters). A kernel without
/// `NO_HZ_FULL` or `VIRT_CPU_ACCOUNTING` measures idle time exactly but samples the busy
/// fields at each tick, so a CPU busy for bursts shorter than a tick between idle spells (a
/// softirq per packet) can be missed by [`machine_busy`] and not by this.
pub(crate) fn machine_busy_by_idle() -> Option<Duration> {
    static START: OnceLock<(std::time::Instant, u64)> = OnceLock::new();
    let (idle, cpus) = stat_idle_ticks(&std::fs::read_to_string("/proc/stat").ok()?)?;
    let now = std::time::Instant::now();
    let (t0, idle0) = *START.get_or_init(|| (now, idle));
    let wall = now.saturating_duration_since(t0).as_nanos();
    let idle_ns = u128::from(idle.saturating_sub(idle0)) * 1_000_000_000 / u128::from(clk_tck());
    let busy = (wall * u128::from(cpus)).saturating_sub(idle_ns);
    Some(Duration::from_nanos(
        u64::try_from(busy).unwrap_or(u64::MAX),
    ))
}

/// Voluntary + involuntary context switches of a `/proc/.../status` text.
fn status_switches(text: &str) -> Option<u64> {
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))?
            .trim()
            .parse()
            .ok()
    };
    Some(field("voluntary_ctxt_switches:")? + field("nonvoluntary_ctxt_switches:")?)
}

/// Context switches of all the threads of process `pid` (`/proc/PID/task/*/status`; threads
/// that ended are not counted): how often it was woken, or gave the CPU up.
pub(crate) fn process_switches(pid: u32) -> Option<u64> {
    let mut total = 0;
    let mut any = false;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        if let Some(n) = std::fs::read_to_string(entry.path().join("status"))
            .ok()
            .and_then(|s| status_switches(&s))
        {
            total += n;
            any = true;
        }
    }
    any.then_some(total)
}

/// `--pin-cpu`: the CPU the load generator's send and receive threads run on, if set.
static PIN: OnceLock<usize> = OnceLock::new();

/// Pins this run's send and receive threads to `cpu` (they call [`pin_this_thread`] when they
/// start). Checked now: an error when the CPU does not exist or may not be used.
pub(crate) fn set_pin(cpu: usize) -> Result<(), String> {
    let mut set = rustix::thread::CpuSet::new();
    if cpu >= rustix::thread::CpuSet::MAX_CPU {
        return Err(format!("--pin-cpu {cpu}: no such CPU"));
    }
    set.set(cpu);
    // Try it on a thread of its own, so that this one keeps every CPU.
    std::thread::spawn(move || rustix::thread::sched_setaffinity(None, &set))
        .join()
        .map_err(|_| "--pin-cpu: the probe thread panicked".to_owned())?
        .map_err(|e| format!("--pin-cpu {cpu}: {e}"))?;
    let _ = PIN.set(cpu);
    Ok(())
}

/// Pins the calling thread to the `--pin-cpu` CPU, if one was set (best effort: checked by
/// [`set_pin`]).
pub(crate) fn pin_this_thread() {
    if let Some(&cpu) = PIN.get() {
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu);
        let _ = rustix::thread::sched_setaffinity(None, &set);
    }
}

/// `run_time_ns` of a BPF program's `/proc/PID/fdinfo/N`.
fn fdinfo_run_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("run_time_ns:"))?
        .trim()
        .parse()
        .ok()
}

/// Time spent in the BPF programs process `pid` holds (the relay's kernel fast path), by the
/// kernel's own statistics: only while `kernel.bpf_stats_enabled` is 1 (`None` otherwise, and
/// for a process that holds no program).
pub(crate) fn bpf_run_time(pid: u32) -> Option<Duration> {
    let on = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").ok()?;
    if on.trim() == "0" {
        return None;
    }
    let mut total = None;
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        if !std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().contains("bpf-prog")) {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            e.file_name().to_string_lossy()
        ))
        .ok();
        if let Some(ns) = info.as_deref().and_then(fdinfo_run_time) {
            total = Some(total.unwrap_or(0) + ns);
        }
    }
    total.map(Duration::from_nanos)
}

/// Resident memory in KiB (`VmRSS` of `/proc/.../status`); `None` = this process.
pub(crate) fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The soft limit on open files (`Max open files` of `/proc/self/limits`).
pub(crate) fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

static SIGINTS: AtomicUsize = AtomicUsize::new(0);

/// Installs the SIGINT handler once per process: the first Ctrl-C asks every run to stop (and
/// tear its calls down), the second exits at once with status 130. Best effort: when the handler
/// cannot be installed, Ctrl-C keeps its default action.
pub(crate) fn install_sigint() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<bool>();
        let spawned = std::thread::Builder::new()
            .name("lg-signal".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(_) => {
                        let _ = tx.send(false);
                        return;
                    }
                };
                rt.block_on(async move {
                    // Registered before reporting ready, so a Ctrl-C right after start is seen.
                    #[cfg(unix)]
                    let mut sig = match tokio::signal::unix::signal(
                        tokio::signal::unix::SignalKind::interrupt(),
                    ) {
                        Ok(s) => s,
                        Err(_) => {
                            let _ = tx.send(false);
                            return;
                        }
                    };
                    let _ = tx.send(true);
                    loop {
                        #[cfg(unix)]
                        let got = sig.recv().await.is_some();
                        #[cfg(not(unix))]
                        let got = tokio::signal::ctrl_c().await.is_ok();
                        if !got {
                            return;
                        }
                        if SIGINTS.fetch_add(1, Ordering::SeqCst) == 0 {
                            eprintln!(
                                "loadgen: interrupted: stopping and releasing every call \
                                 (Ctrl-C again to exit at once)"
                            );
                        } else {
                            eprintln!("loadgen: second interrupt: exiting without teardown");
                            std::process::exit(130);
                        }
                    }
                });
            });
        if spawned.is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(2));
        }
    });
}

/// A run's view of Ctrl-C: stop once an interrupt arrived after it started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stop {
    base: usize,
}

impl Stop {
    pub(crate) fn new() -> Stop {
        Stop {
            base: SIGINTS.load(Ordering::SeqCst),
        }
    }

    pub(crate) fn requested(&self) -> bool {
        SIGINTS.load(Ordering::Relaxed) > self.base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_status() {
        let line = "1234 (a (weird) name) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0 20 0 4 0";
        assert_eq!(
            stat_cpu(line),
            Some(Duration::from_nanos(200 * 1_000_000_000 / clk_tck()))
        );
        assert!(process_cpu(None).is_some());
        assert_eq!(
            schedstat_cpu("1234567 89 10\n"),
            Some(Duration::from_nanos(1_234_567))
        );
        assert_eq!(schedstat_cpu(""), None);
        assert_eq!(schedstat_cpu("x 1 2"), None);
        assert!(rss_kib(None).unwrap() > 0);
        assert!(open_files_limit().unwrap() > 0);
    }

    #[test]
    fn a_thread_that_worked_five_milliseconds_reports_them() {
        // Clock ticks (stat) would say 0 or 10 ms; schedstat says what the thread ran.
        let own = || {
            std::fs::read_to_string("/proc/thread-self/schedstat")
                .ok()
                .and_then(|s| schedstat_cpu(&s))
        };
        if own().is_none() {
            eprintln!("skipped: no schedstat in this kernel");
            return;
        }
        let (done, wait) = std::sync::mpsc::channel();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let spin = std::thread::Builder::new()
            .name("lg-test-spin".into())
            .spawn(move || {
                let mut x = 0u64;
                while own().is_some_and(|t| t < Duration::from_millis(5)) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                done.send(()).unwrap();
                let _ = stopped.recv();
            })
            .unwrap();
        wait.recv().unwrap();
        let cpu = threads_cpu("lg-test-spin").unwrap();
        stop.send(()).unwrap();
        spin.join().unwrap();
        assert!(cpu >= Duration::from_millis(5), "{cpu:?}");
        assert!(cpu < Duration::from_secs(5), "{cpu:?}");
    }

    #[test]
    fn parses_proc_stat_busy_time() {
        let stat = "cpu  100 20 300 4000 50 6 7 8 9 10\n\
                    cpu0 50 10 150 2000 25 3 3 4 4 5\n\
                    cpu1 50 10 150 2000 25 3 4 4 5 5\n\
                    intr 123 0 0\n\
                    ctxt 456\n";
        // user + nice + system + irq + softirq + steal; idle, iowait and guest left out.
        assert_eq!(stat_busy_ticks(stat), Some(100 + 20 + 300 + 6 + 7 + 8));
        // An old kernel's four fields.
        assert_eq!(stat_busy_ticks("cpu 1 2 3 4\n"), Some(6));
        assert_eq!(stat_busy_ticks("cpu0 1 2 3 4\n"), None);
        assert_eq!(stat_busy_ticks("cpu 1 x 3 4\n"), None);
        assert!(machine_busy().is_some());
        assert_eq!(stat_idle_ticks(stat), Some((4000 + 50, 2)));
        assert_eq!(stat_idle_ticks("cpu 1 2 3 4\ncpu0 1 2 3 4\n"), Some((4, 1)));
        assert_eq!(stat_idle_ticks("cpu 1 2 3\n"), None);
        assert!(machine_busy_by_idle().is_some());
    }

    #[test]
    fn parses_context_switches() {
        let status = "Name:\tmcvideo-relay\nState:\tS (sleeping)\n\
                      voluntary_ctxt_switches:\t1500\n\
                      nonvoluntary_ctxt_switches:\t25\n";
        assert_eq!(status_switches(status), Some(1525));
        assert_eq!(status_switches("Name:\tx\n"), None);
        assert!(process_switches(std::process::id()).unwrap() > 0);
        // This process holds no BPF program.
        assert_eq!(
            bpf_run_time(std::process::id()).filter(|d| !d.is_zero()),
            None
        );
        let info = "pos:\t0\nflags:\t02000002\nprog_type:\t3\nprog_id:\t81\n\
                    run_time_ns:\t123456\nrun_cnt:\t789\n";
        assert_eq!(fdinfo_run_time(info), Some(123_456));
        assert_eq!(fdinfo_run_time("prog_id:\t1\n"), None);
    }
}
