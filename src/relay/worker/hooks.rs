//! Test hooks the worker calls (built for the crate's own tests only): a bug while handling a
//! command, and a worker that does not answer.

/// Held by a test to stall the worker: a command for a call whose ID starts with
/// `test-stall` waits for it, so the worker cannot answer until the test lets go.
pub(crate) static STALL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Stalls the worker on [`STALL`] for calls named `test-stall…`.
pub(crate) fn stall_hook(id: &str) {
    if id.starts_with("test-stall") {
        drop(STALL.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// Panics while the worker handles a command `doing` for the call named
/// `test-panic-cmd-<doing, with - for spaces>`, as a bug in that command would.
pub(crate) fn panic_hook(id: &str, doing: &str) {
    if let Some(what) = id.strip_prefix("test-panic-cmd-") {
        if what == doing.replace(' ', "-") {
            panic!("test hook: a bug while {doing} call {id}");
        }
    }
}
