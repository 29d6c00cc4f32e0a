//! How a run stops. Ctrl-C (SIGINT) and SIGTERM stop it cleanly: the signal waits for the
//! files being written to be finished and renamed into place, starts no new one, clears the
//! run lock and exits with 130 (143 for SIGTERM); what was finished is kept and the same
//! command resumes. A kill that cannot be handled (SIGKILL, a power cut) leaves at most
//! temporary files, which the next run of that directory removes (SPEC §15).
//!
//! For the fault tests, `KDHARNESS_KILL_AT=STAGE:N` makes the process SIGKILL itself in
//! the middle of its N-th file write of stage STAGE (the temporary file written, not yet
//! renamed): the worst moment a real kill can hit.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, PoisonError, RwLock, RwLockReadGuard};

/// Files being written: each write holds a read guard; a stop takes the write guard.
static WRITES: RwLock<()> = RwLock::new(());
/// Run locks to clear on a stop.
static LOCKS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// The stage in progress and how many files it has written, for `KDHARNESS_KILL_AT`.
static STAGE: Mutex<(String, usize)> = Mutex::new((String::new(), 0));

/// Held while one file is written and renamed into place.
pub(crate) fn writing() -> RwLockReadGuard<'static, ()> {
    WRITES.read().unwrap_or_else(PoisonError::into_inner)
}

/// Handles SIGINT and SIGTERM from now on: call first in `main`, before any thread starts
/// (every later thread inherits the blocked signals; one thread waits for them).
pub fn stop_cleanly_on_interrupt() {
    #[cfg(unix)]
    // SAFETY: plain libc calls on a local signal set; the mask is set before other threads exist.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return;
        }
        let waiter = std::thread::Builder::new().name("kdharness-signals".into()).spawn(move || {
            let mut signal = 0;
            libc::sigwait(&set, &mut signal);
            stop(if signal == libc::SIGTERM { 143 } else { 130 });
        });
        if waiter.is_err() {
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
    }
}

/// Finishes the writes in progress, clears the run locks and exits with `code`.
fn stop(code: i32) -> ! {
    let _no_more_writes = WRITES.write().unwrap_or_else(PoisonError::into_inner);
    for lock in LOCKS.lock().unwrap_or_else(PoisonError::into_inner).iter() {
        let _ = std::fs::File::options().write(true).open(lock).and_then(|f| f.set_len(0));
    }
    eprintln!("\nkdharness: interrupted; finished work is kept: run the same command again to resume");
    std::process::exit(code)
}

/// Registers a held run lock, to be cleared if the run is interrupted.
pub(crate) fn hold_lock(path: PathBuf) {
    LOCKS.lock().unwrap_or_else(PoisonError::into_inner).push(path);
}

/// Marks the start of (a part of) stage `name`: its file writes are counted from here on,
/// across its parts (students, models), for the kill points of the fault tests.
pub(crate) fn enter_stage(name: &str) {
    let mut current = STAGE.lock().unwrap_or_else(PoisonError::into_inner);
    if current.0 != name {
        *current = (name.to_string(), 0);
    }
}

/// A point where a test may kill the process (`KDHARNESS_KILL_AT=STAGE:N`): called with
/// a file's temporary copy written and not yet renamed.
pub(crate) fn kill_point() {
    static AT: OnceLock<Option<(String, usize)>> = OnceLock::new();
    let at = AT.get_or_init(|| {
        let spec = std::env::var("KDHARNESS_KILL_AT").ok()?;
        let (stage, n) = spec.split_once(':')?;
        Some((stage.to_string(), n.parse().ok()?))
    });
    let Some((stage, n)) = at else { return };
    let mut current = STAGE.lock().unwrap_or_else(PoisonError::into_inner);
    if current.0 != *stage {
        return;
    }
    current.1 += 1;
    if current.1 == *n {
        #[cfg(unix)]
        // SAFETY: sends SIGKILL to this process; nothing runs after it.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// Removes the temporary files a killed run left under `dir` (call holding its lock).
pub(crate) fn remove_leftovers(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        match entry.file_type() {
            Ok(t) if t.is_dir() => remove_leftovers(&path),
            Ok(_) if crate::files::is_temporary(&name) && std::fs::remove_file(&path).is_ok() => {
                crate::status::detail(format!("removed {}, left by a run that was killed", path.display()));
            }
            _ => {}
        }
    }
}
