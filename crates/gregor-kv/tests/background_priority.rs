//! RocksDB's background work (the writer threads, flushes and compactions)
//! runs under `SCHED_IDLE`, and nothing else does: checked on the threads of
//! this test process, which opens a real database.
#![cfg(target_os = "linux")]

use gregor_kv::{Engine, RocksDbEngine, RocksOptions};

/// (name, scheduling policy) of every thread of this process.
fn threads() -> Vec<(String, i32)> {
    std::fs::read_dir("/proc/self/task")
        .expect("threads")
        .filter_map(Result::ok)
        .filter_map(|t| {
            let name = std::fs::read_to_string(t.path().join("comm")).ok()?.trim().to_owned();
            let tid: libc::pid_t = t.file_name().to_str()?.parse().ok()?;
            // SAFETY: sched_getscheduler only reads the named thread's policy.
            Some((name, unsafe { libc::sched_getscheduler(tid) }))
        })
        .collect()
}

#[test]
fn background_threads_run_under_sched_idle_and_the_callers_thread_does_not() {
    let dir = tempfile::tempdir().expect("dir");
    let mut db = RocksDbEngine::open(dir.path(), &RocksOptions::default()).expect("open");
    db.write_batch_deferred(&[(b"k", Some(b"v"))]).expect("write");
    db.flush().expect("flush");
    db.wait_applied().expect("applied");
    // RocksDB's threads name themselves once running: wait for the names.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let kinds = ["rocksdb:low", "rocksdb:high", "rocksdb-write"];
    let found = loop {
        let found = threads();
        let all_named = kinds.iter().all(|k| found.iter().any(|(n, _)| n.starts_with(k)));
        if all_named || std::time::Instant::now() > deadline {
            break found;
        }
        std::thread::yield_now();
    };
    for kind in kinds {
        let of_kind: Vec<_> = found.iter().filter(|(n, _)| n.starts_with(kind)).collect();
        assert!(!of_kind.is_empty(), "no {kind} thread among {found:?}");
        assert!(of_kind.iter().all(|(_, p)| *p == libc::SCHED_IDLE), "{kind} threads not all SCHED_IDLE: {found:?}");
    }
    // SAFETY: as above, for the calling thread.
    assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_OTHER, "the caller's thread was lowered");
}
