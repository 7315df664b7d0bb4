//! The partition head: a 4 KiB file mapped into every process that opens the
//! partition, holding the published end of the log and a futex word to wait on.
//!
//! Writers (holding the partition's `flock`) publish each append by updating
//! the head under a sequence lock; readers in any process take consistent
//! snapshots without locks or system calls, and sleep on the sequence word with
//! `FUTEX_WAIT` (a shared, not private, futex, so wake-ups cross processes).
//! Bytes past the published end are invisible to readers, which is why a writer
//! killed mid-append can never expose a partial batch.
//!
//! The head is a cache of what the segment files say, never the source of
//! truth: it is rebuilt from the files whenever it cannot be trusted (after a
//! reboot, a writer that died mid-append, or a missing or foreign file).
//! This module must never block, allocate or do file I/O on the read path.

use crate::error::{IoContext, Result};
use memmap2::MmapRaw;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use std::time::Duration;

/// Size of the head file.
pub(crate) const HEAD_LEN: u64 = 4096;
const MAGIC: u64 = u64::from_le_bytes(*b"GRGRHEAD");
const VERSION: u64 = 1;
/// `index_last_pos` when the active segment has no index entry yet.
pub(crate) const NO_INDEX: u64 = u64::MAX;

// Byte offsets of the fields (all 8-byte aligned; the map is page aligned).
const F_MAGIC: usize = 0;
const F_VERSION: usize = 8;
const F_SEQ: usize = 16; // u32 seqlock + futex word
const F_WAITERS: usize = 20; // u32
const F_NEXT_OFFSET: usize = 24;
const F_ACTIVE_BASE: usize = 32;
const F_ACTIVE_LEN: usize = 40;
const F_LOG_START: usize = 48;
const F_SEGMENTS_GEN: usize = 56;
const F_PENDING: usize = 64;
const F_RECOVERY_BASE: usize = 72;
const F_RECOVERY_POS: usize = 80;
const F_ACTIVE_MAX_TS: usize = 88;
const F_ACTIVE_CREATED_MS: usize = 96;
const F_INDEX_LAST_POS: usize = 104;
const F_BOOT_ID: usize = 128; // 40 bytes as 5 u64

/// Everything a reader needs, read consistently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub seq: u32,
    pub next_offset: u64,
    pub active_base: u64,
    pub active_len: u64,
    pub log_start: u64,
    pub segments_gen: u64,
}

/// Fields of the head that only writers (holding the flock) read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WriterFields {
    pub next_offset: u64,
    pub active_base: u64,
    pub active_len: u64,
    pub log_start: u64,
    pub segments_gen: u64,
    pub recovery_base: u64,
    pub recovery_pos: u64,
    pub active_max_ts: i64,
    pub active_created_ms: i64,
    pub index_last_pos: u64,
}

/// The mapped head of one partition.
pub(crate) struct Head {
    map: MmapRaw,
    _file: File,
}

impl Head {
    /// Opens (creating if needed) and maps the head file. A file of the wrong
    /// size is reset to zeros, which marks it untrusted so the next lock holder
    /// rebuilds it from the segments.
    pub fn open(path: &Path) -> Result<Head> {
        let file = crate::fsutil::open_rw(path)?;
        crate::fsutil::with_flock(&file, path, || {
            let len = crate::fsutil::file_len(&file, path)?;
            if len != HEAD_LEN {
                if len != 0 {
                    tracing::warn!(path = %path.display(), len, "partition head has the wrong size; rebuilding it from the segments");
                }
                file.set_len(0)
                    .and_then(|_| file.set_len(HEAD_LEN))
                    .context(|| format!("resizing {}", path.display()))?;
            }
            Ok(())
        })?;
        let map = MmapRaw::map_raw(&file).context(|| format!("mapping {}", path.display()))?;
        if map.len() < HEAD_LEN as usize {
            return Err(std::io::Error::other("mapping shorter than the head"))
                .context(|| format!("mapping {}", path.display()));
        }
        Ok(Head { map, _file: file })
    }

    fn u64_at(&self, at: usize) -> &AtomicU64 {
        debug_assert!(at.is_multiple_of(8) && at + 8 <= HEAD_LEN as usize);
        // SAFETY: the mapping is page aligned, at least HEAD_LEN long, lives as
        // long as `self`, and every access to it goes through atomics.
        unsafe { &*(self.map.as_ptr().add(at) as *const AtomicU64) }
    }

    fn u32_at(&self, at: usize) -> &AtomicU32 {
        debug_assert!(at.is_multiple_of(4) && at + 4 <= HEAD_LEN as usize);
        // SAFETY: as for `u64_at`.
        unsafe { &*(self.map.as_ptr().add(at) as *const AtomicU32) }
    }

    fn seq(&self) -> &AtomicU32 {
        self.u32_at(F_SEQ)
    }

    /// A consistent snapshot, or `None` if a writer seems stuck mid-update
    /// (it died there): the caller then repairs the head under the lock.
    pub fn snapshot(&self) -> Option<Snapshot> {
        for attempt in 0..10_000u32 {
            let s1 = self.seq().load(Ordering::Acquire);
            if s1 % 2 == 1 {
                if attempt > 100 {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            let snap = Snapshot {
                seq: s1,
                next_offset: self.u64_at(F_NEXT_OFFSET).load(Ordering::Relaxed),
                active_base: self.u64_at(F_ACTIVE_BASE).load(Ordering::Relaxed),
                active_len: self.u64_at(F_ACTIVE_LEN).load(Ordering::Relaxed),
                log_start: self.u64_at(F_LOG_START).load(Ordering::Relaxed),
                segments_gen: self.u64_at(F_SEGMENTS_GEN).load(Ordering::Relaxed),
            };
            fence(Ordering::Acquire);
            if self.seq().load(Ordering::Relaxed) == s1 {
                return Some(snap);
            }
        }
        None
    }

    /// Whether a writer stopped between starting and finishing a publish.
    /// Meaningful only with the lock held (no live writer can be mid-publish).
    pub fn seq_is_odd(&self) -> bool {
        self.seq().load(Ordering::Acquire) % 2 == 1
    }

    /// Whether the head holds fields written by this code at all (perhaps
    /// before a reboot), so its recovery point can guide recovery.
    pub fn is_initialized(&self) -> bool {
        self.u64_at(F_MAGIC).load(Ordering::Acquire) == MAGIC
            && self.u64_at(F_VERSION).load(Ordering::Relaxed) == VERSION
    }

    pub fn boot_id_matches(&self) -> bool {
        let id = crate::fsutil::boot_id();
        id.chunks_exact(8).enumerate().all(|(i, c)| {
            self.u64_at(F_BOOT_ID + 8 * i).load(Ordering::Relaxed)
                == u64::from_le_bytes(c.try_into().unwrap_or_default())
        })
    }

    /// Writer fields. Call with the lock held.
    pub fn writer_fields(&self) -> WriterFields {
        let l = |at| self.u64_at(at).load(Ordering::Relaxed);
        WriterFields {
            next_offset: l(F_NEXT_OFFSET),
            active_base: l(F_ACTIVE_BASE),
            active_len: l(F_ACTIVE_LEN),
            log_start: l(F_LOG_START),
            segments_gen: l(F_SEGMENTS_GEN),
            recovery_base: l(F_RECOVERY_BASE),
            recovery_pos: l(F_RECOVERY_POS),
            active_max_ts: l(F_ACTIVE_MAX_TS) as i64,
            active_created_ms: l(F_ACTIVE_CREATED_MS) as i64,
            index_last_pos: l(F_INDEX_LAST_POS),
        }
    }

    /// Whether a writer left bytes beyond the published end (it died mid-append).
    pub fn pending(&self) -> bool {
        self.u64_at(F_PENDING).load(Ordering::Acquire) != 0
    }

    /// Marks that bytes beyond the published end are being written; a head
    /// left with this flag tells the next lock holder to recover.
    pub fn set_pending(&self) {
        self.u64_at(F_PENDING).store(1, Ordering::Release);
    }

    /// Publishes new writer fields under the sequence lock, clears the pending
    /// flag and wakes waiting readers. Call with the lock held.
    pub fn publish(&self, f: &WriterFields) {
        let s = self.seq().load(Ordering::Relaxed);
        let odd = if s % 2 == 1 { s } else { s.wrapping_add(1) };
        self.seq().store(odd, Ordering::Relaxed);
        fence(Ordering::Release);
        let st = |at, v: u64| self.u64_at(at).store(v, Ordering::Relaxed);
        st(F_NEXT_OFFSET, f.next_offset);
        st(F_ACTIVE_BASE, f.active_base);
        st(F_ACTIVE_LEN, f.active_len);
        st(F_LOG_START, f.log_start);
        st(F_SEGMENTS_GEN, f.segments_gen);
        st(F_RECOVERY_BASE, f.recovery_base);
        st(F_RECOVERY_POS, f.recovery_pos);
        st(F_ACTIVE_MAX_TS, f.active_max_ts as u64);
        st(F_ACTIVE_CREATED_MS, f.active_created_ms as u64);
        st(F_INDEX_LAST_POS, f.index_last_pos);
        st(F_PENDING, 0);
        self.seq().store(odd.wrapping_add(1), Ordering::Release);
        self.wake();
    }

    /// Marks the head as written by this code on this boot (after recovery).
    pub fn stamp(&self) {
        for (i, c) in crate::fsutil::boot_id().chunks_exact(8).enumerate() {
            self.u64_at(F_BOOT_ID + 8 * i)
                .store(u64::from_le_bytes(c.try_into().unwrap_or_default()), Ordering::Relaxed);
        }
        self.u64_at(F_VERSION).store(VERSION, Ordering::Relaxed);
        self.u64_at(F_MAGIC).store(MAGIC, Ordering::Release);
    }

    fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.u32_at(F_WAITERS).load(Ordering::SeqCst) > 0 {
            // SAFETY: FUTEX_WAKE on an aligned u32 inside a live shared mapping.
            unsafe {
                libc::syscall(libc::SYS_futex, self.seq().as_ptr(), libc::FUTEX_WAKE, i32::MAX, 0usize, 0usize, 0u32);
            }
        }
    }

    /// Sleeps until the head changes from `seq` or `timeout` passes. Spurious
    /// wake-ups are allowed; callers re-check their condition.
    pub fn wait(&self, seq: u32, timeout: Duration) {
        let waiters = self.u32_at(F_WAITERS);
        waiters.fetch_add(1, Ordering::SeqCst);
        if self.seq().load(Ordering::SeqCst) == seq {
            let ts = libc::timespec {
                tv_sec: timeout.as_secs() as libc::time_t,
                tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
            };
            // SAFETY: FUTEX_WAIT on an aligned u32 inside a live shared mapping,
            // with a valid relative timeout.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    self.seq().as_ptr(),
                    libc::FUTEX_WAIT,
                    seq,
                    &ts as *const libc::timespec,
                    0usize,
                    0u32,
                );
            }
        }
        waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Sleeps until any of `heads` changes from its given sequence value, or
/// `timeout` passes, with one `futex_waitv` (Linux 5.16+). Older kernels fall
/// back to waiting on the first head for at most 10 ms at a time.
pub(crate) fn wait_any(heads: &[(&Head, u32)], timeout: Duration) {
    const FUTEX2_SIZE_U32: u32 = 0x02;
    const MAX: usize = 128; // FUTEX_WAITV_MAX
    #[repr(C)]
    struct FutexWaitv {
        val: u64,
        uaddr: u64,
        flags: u32,
        reserved: u32,
    }
    let Some(&(first, first_seq)) = heads.first() else {
        std::thread::sleep(timeout);
        return;
    };
    let heads = &heads[..heads.len().min(MAX)];
    for (h, _) in heads {
        h.u32_at(F_WAITERS).fetch_add(1, Ordering::SeqCst);
    }
    let changed = heads.iter().any(|(h, seq)| h.seq().load(Ordering::SeqCst) != *seq);
    let mut unsupported = false;
    if !changed {
        let waiters: Vec<FutexWaitv> = heads
            .iter()
            .map(|(h, seq)| FutexWaitv {
                val: u64::from(*seq),
                uaddr: h.seq().as_ptr() as u64,
                flags: FUTEX2_SIZE_U32,
                reserved: 0,
            })
            .collect();
        let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes into a valid timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        let end_ns = (now.tv_sec as u128) * 1_000_000_000 + now.tv_nsec as u128 + timeout.as_nanos();
        let deadline = libc::timespec {
            tv_sec: (end_ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (end_ns % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: `waiters` points to `len` valid entries whose addresses are
        // aligned u32 words inside live shared mappings; the deadline is valid.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_futex_waitv,
                waiters.as_ptr(),
                waiters.len() as u32,
                0u32,
                &deadline as *const libc::timespec,
                libc::CLOCK_MONOTONIC,
            )
        };
        unsupported = rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS);
    }
    for (h, _) in heads {
        h.u32_at(F_WAITERS).fetch_sub(1, Ordering::SeqCst);
    }
    if unsupported {
        first.wait(first_seq, timeout.min(Duration::from_millis(10)));
    }
}
