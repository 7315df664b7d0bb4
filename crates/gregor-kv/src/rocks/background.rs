//! The CPU priority of RocksDB's background work: the writer threads
//! ([`super::writer`]) and RocksDB's flush and compaction threads run under
//! Linux's `SCHED_IDLE` policy. A task thread that wakes up with a message
//! then preempts them at once, instead of waiting for a commit's SST file,
//! a flush or a compaction to use up its time slice: at half the latency
//! bench's maximum rate, p99 went from 60-250 ms to about 6 ms (see
//! `docs/benchmarks.md`). A nice value does not do this: nice 19 threads
//! still delay a waking nice 0 thread, and eight writer threads at nice 10
//! weigh as much as one task thread.
//!
//! Background work still gets every cycle the task threads leave, and a
//! task thread that needs it (a cache eviction waiting for a write, a
//! commit waiting for a snapshot) sleeps and so leaves its core to it.
//!
//! This module must never raise a thread's priority and never fail an
//! open: a refused change leaves the thread as it was. Elsewhere than on
//! Linux it changes nothing.

/// Puts the calling thread under `SCHED_IDLE`; threads it starts inherit it.
#[cfg(target_os = "linux")]
pub(super) fn become_background() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param for the call's duration; on
    // Linux, pid 0 names the calling thread, whose policy is all it changes.
    let refused = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0;
    if refused {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not lower a RocksDB background thread's priority");
    }
}

#[cfg(not(target_os = "linux"))]
pub(super) fn become_background() {}

/// Starts RocksDB's process-wide flush and compaction threads (the default
/// environment's pools, which every database of the process shares), once
/// per process, from a helper thread under `SCHED_IDLE`: RocksDB starts
/// them from the calling thread, a new thread inherits its creator's
/// policy, and a thread cannot leave `SCHED_IDLE` again without privileges
/// (hence the helper). Each pool gets `jobs` threads, as many as
/// `max_background_jobs = jobs` lets a database use, so that opening one
/// never adds a thread at normal priority. Pools another part of the
/// process started first keep their threads as they are.
pub(super) fn start_pools(jobs: i32) {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let started = std::thread::Builder::new().name("gregor-rocksdb-pools".into()).spawn(move || {
            become_background();
            match rocksdb::Env::new() {
                Ok(mut env) => {
                    env.set_high_priority_background_threads(jobs);
                    env.set_background_threads(jobs);
                }
                Err(e) => tracing::warn!(error = %e, "could not configure RocksDB's background threads"),
            }
        });
        match started.map(std::thread::JoinHandle::join) {
            Ok(Ok(())) => {}
            Ok(Err(_)) => tracing::warn!("configuring RocksDB's background threads panicked"),
            Err(e) => tracing::warn!(error = %e, "could not start a thread to configure RocksDB's background threads"),
        }
    });
}
