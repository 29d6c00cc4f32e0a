//! One `kdharness eval` per run directory: an advisory lock on `RUN/.lock` (released by
//! the operating system when its holder dies, however it dies), holding the holder's PID.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// The held lock of a run directory; released (and its PID cleared) when dropped.
pub(super) struct RunLock {
    file: File,
}

impl RunLock {
    /// Takes the lock of `dir`, or fails with one line naming the directory and the PID
    /// of the process that holds it. A lock left by a process that died (its PID still in
    /// the file, the lock itself released) is taken over and said so.
    pub(super) fn take(dir: &Path) -> Result<RunLock> {
        let path = dir.join(".lock");
        let mut file = File::options().read(true).write(true).create(true).truncate(false).open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        let holder = || {
            let mut text = String::new();
            File::open(&path).and_then(|mut f| f.read_to_string(&mut text)).ok().map(|_| text.trim().to_string()).filter(|t| !t.is_empty())
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let by = holder().map_or_else(|| "`--cell` runs".to_string(), |pid| format!("PID {pid}"));
                bail!("run directory {} is in use by kdharness ({by}); wait for it to finish or stop it, or give another --out", dir.display());
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e).with_context(|| format!("cannot lock {}", path.display())),
        }
        if let Some(pid) = holder() {
            crate::status::warn(format!("{}: took over the lock of PID {pid}, which stopped without releasing it", dir.display()));
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        file.sync_all()?;
        crate::stop::hold_lock(path);
        // What a killed run was writing when it died is of no use to anyone.
        crate::stop::remove_leftovers(dir);
        Ok(RunLock { file })
    }
}

impl RunLock {
    /// Shares the lock of `dir` with other `--cell` runs (each cell then has its own lock,
    /// [`CellLock`]); fails like [`RunLock::take`] while a whole `eval` holds it.
    pub(super) fn share(dir: &Path) -> Result<SharedLock> {
        let path = dir.join(".lock");
        let file = File::options().read(true).write(true).create(true).truncate(false).open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock_shared() {
            Ok(()) => Ok(SharedLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => {
                let pid = std::fs::read_to_string(&path).unwrap_or_default().trim().to_string();
                bail!("run directory {} is in use by kdharness (PID {pid}); wait for it to finish or stop it", dir.display());
            }
            Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
        }
    }
}

/// A run directory's lock shared by `--cell` runs; released when dropped.
pub(super) struct SharedLock {
    _file: File,
}

/// One cell's lock, `RUN/.cells/ID.lock`: a process that needs a cell another one is
/// running waits for it (and then finds it done).
pub(super) struct CellLock {
    _file: File,
}

impl CellLock {
    /// Takes the lock of cell `id` of `dir`, waiting while another process holds it.
    pub(super) fn take(dir: &Path, id: &str) -> Result<CellLock> {
        let cells = dir.join(".cells");
        std::fs::create_dir_all(&cells).with_context(|| format!("cannot create {}", cells.display()))?;
        let path = cells.join(format!("{id}.lock"));
        let file = File::options().write(true).create(true).truncate(false).open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        if file.try_lock().is_err() {
            crate::status::info(format!("cell `{id}` is being run by another process; waiting for it"));
            file.lock().with_context(|| format!("cannot lock {}", path.display()))?;
        }
        Ok(CellLock { _file: file })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // An empty file is a free lock; the lock itself goes with the file handle.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}
