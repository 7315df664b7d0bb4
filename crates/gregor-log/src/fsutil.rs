//! Small file-system helpers: positioned I/O, fsync, advisory locks, clocks.
//!
//! Every helper attaches the path to its error so a failing disk names itself.

use crate::error::{IoContext, Result};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Writes a whole file and fsyncs it (not its directory).
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    let file = File::create(path).context(|| format!("creating {}", path.display()))?;
    file.write_all_at(bytes, 0).context(|| format!("writing {}", path.display()))?;
    file.sync_all().context(|| format!("syncing {}", path.display()))
}

/// fsyncs a directory so that file creations, renames and deletions in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).context(|| format!("syncing directory {}", dir.display()))
}

/// Starts the kernel writing `file`'s dirty pages in `from..to` to disk
/// without waiting for them (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`),
/// so that a later `fdatasync` waits for less. Elsewhere it does nothing.
/// It makes nothing durable by itself.
pub(crate) fn start_writeback(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let (Ok(offset), Ok(len)) = (i64::try_from(from), i64::try_from(to.saturating_sub(from))) else {
            return Ok(());
        };
        // SAFETY: a plain syscall on a file descriptor `file` keeps open.
        let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, from, to);
    Ok(())
}

/// Opens a file for reading and writing, creating it if missing.
pub(crate) fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .context(|| format!("opening {}", path.display()))
}

/// Reads exactly `buf.len()` bytes at `pos`.
pub(crate) fn read_exact_at(file: &File, buf: &mut [u8], pos: u64, path: &Path) -> Result<()> {
    file.read_exact_at(buf, pos).context(|| format!("reading {} at byte {pos}", path.display()))
}

/// Length of an open file.
pub(crate) fn file_len(file: &File, path: &Path) -> Result<u64> {
    file.metadata().map(|m| m.len()).context(|| format!("reading the size of {}", path.display()))
}

/// An exclusive lock between threads *and* processes: a mutex for the
/// threads of this process plus an `flock` for other processes.
///
/// `flock` alone is not enough: it belongs to an open file description, so
/// every thread using the same handle would "hold" it at once, and one
/// thread's unlock would release it for all. The kernel releases the `flock`
/// when a process dies, even by `kill -9`.
pub(crate) struct ProcessLock {
    mutex: std::sync::Mutex<()>,
    file: File,
    path: std::path::PathBuf,
}

/// A held [`ProcessLock`].
pub(crate) struct LockGuard<'a> {
    file: &'a File,
    _thread: std::sync::MutexGuard<'a, ()>,
}

impl ProcessLock {
    /// A lock on the file at `path` (created if missing).
    pub(crate) fn open(path: &Path) -> Result<Self> {
        Ok(ProcessLock { mutex: std::sync::Mutex::new(()), file: open_rw(path)?, path: path.to_owned() })
    }

    /// Blocks until this thread holds the lock.
    pub(crate) fn lock(&self) -> Result<LockGuard<'_>> {
        let thread = self.mutex.lock().unwrap_or_else(|p| p.into_inner());
        flock(&self.file, &self.path)?;
        Ok(LockGuard { file: &self.file, _thread: thread })
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: unlocking a lock this guard holds on a valid descriptor.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Takes an exclusive `flock` on `file`, retrying on EINTR.
fn flock(file: &File, path: &Path) -> Result<()> {
    loop {
        // SAFETY: flock on a valid descriptor owned by `file`.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).context(|| format!("locking {}", path.display()));
        }
    }
}

/// Runs `f` holding an exclusive `flock` on a handle no other code uses.
pub(crate) fn with_flock<T>(file: &File, path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    flock(file, path)?;
    let out = f();
    // SAFETY: unlocking the lock taken above on a valid descriptor.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
    out
}

/// The kernel's boot id: it changes when the machine reboots, which is the
/// only time data acknowledged to a reader can vanish from the page cache.
pub(crate) fn boot_id() -> [u8; 40] {
    let mut id = [0u8; 40];
    if let Ok(text) = std::fs::read("/proc/sys/kernel/random/boot_id") {
        let text = text.trim_ascii();
        let n = text.len().min(40);
        id[..n].copy_from_slice(&text[..n]);
    }
    id
}
