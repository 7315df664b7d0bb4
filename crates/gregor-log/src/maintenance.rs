//! Background upkeep of the partitions a process has open: interval fsyncs,
//! retention and compaction, on one thread.
//!
//! Between interval fsyncs each tick also starts the kernel writing a
//! partition's new bytes (once [`WRITEBACK_MIN_BYTES`] are new), without
//! waiting for the disk: the fsync, and the one when the log closes, then
//! wait for one tick's writes instead of a whole interval's. A job that
//! stops after writing 240 MB in half a second spent 50-100 ms in those
//! fsyncs before.
//!
//! Each job takes the partition's own locks, so several processes may run
//! maintenance on the same partitions without harm. Maintenance never blocks
//! appends for longer than a head update.
//!
//! Compaction first runs one interval after the start, not at once: a
//! compaction pass reads every sealed segment of a compacted partition (a
//! store's changelog can hold gigabytes), and a short-lived process (a
//! restart that finds nothing to do, a CLI command) must not pay for it. A
//! stop request is honoured between partitions, so closing the log waits for
//! at most one partition's pass.

use crate::config::{CleanupPolicy, Durability};
use crate::fsutil::now_ms;
use crate::log::Log;
use crate::partition::{Partition, WritebackMark};
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// New bytes in a partition's active segment that make a tick start their writeback.
pub(crate) const WRITEBACK_MIN_BYTES: u64 = 1 << 20;

/// How often background maintenance does what.
#[derive(Debug, Clone, Copy)]
pub struct MaintenanceOptions {
    /// How often the thread wakes up (interval fsyncs are checked, and
    /// writeback of new bytes started, each time).
    pub tick: Duration,
    /// How often retention runs (Kafka's `log.retention.check.interval.ms`).
    pub retention_interval: Duration,
    /// How often compacted partitions with newly sealed segments are compacted.
    pub compaction_interval: Duration,
}

impl Default for MaintenanceOptions {
    fn default() -> Self {
        MaintenanceOptions {
            tick: Duration::from_millis(100),
            retention_interval: Duration::from_secs(60),
            compaction_interval: Duration::from_secs(30),
        }
    }
}

/// The running maintenance thread; stops (and joins) when dropped.
pub struct Maintenance {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Maintenance {
    fn drop(&mut self) {
        let (flag, cv) = &*self.stop;
        *flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[derive(Default)]
struct State {
    last_flush: HashMap<(String, u32), Instant>,
    writeback: HashMap<(String, u32), WritebackMark>,
    last_compacted_active: HashMap<(String, u32), u64>,
    last_retention: Option<Instant>,
    last_compaction: Option<Instant>,
}

impl State {
    /// Drops what is kept about partitions no longer open (a deleted
    /// stream's), so that a stream deleted and created again under the
    /// same name starts afresh (a stale writeback mark would skip its
    /// writeback), and the maps do not grow with every stream ever opened.
    fn forget_all_but(&mut self, open: &[(String, u32)]) {
        let open: std::collections::HashSet<&(String, u32)> = open.iter().collect();
        self.last_flush.retain(|k, _| open.contains(k));
        self.writeback.retain(|k, _| open.contains(k));
        self.last_compacted_active.retain(|k, _| open.contains(k));
    }
}

/// Starts background maintenance of every partition `log` has opened.
pub fn start(log: Arc<Log>, options: MaintenanceOptions) -> Maintenance {
    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    let stop2 = stop.clone();
    let handle = std::thread::Builder::new()
        .name("gregor-log-maintenance".into())
        .spawn(move || {
            let mut state = State { last_compaction: Some(Instant::now()), ..State::default() };
            let (flag, cv) = &*stop2;
            let stopped = || *flag.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                let guard = flag.lock().unwrap_or_else(|p| p.into_inner());
                let (guard, _) =
                    cv.wait_timeout_while(guard, options.tick, |stopped| !*stopped).unwrap_or_else(|p| p.into_inner());
                if *guard {
                    return;
                }
                drop(guard);
                run_once(&log, &options, &mut state, &stopped);
            }
        })
        .ok();
    if handle.is_none() {
        tracing::error!(
            "could not start the log maintenance thread; interval fsyncs, retention and compaction will not run in the background"
        );
    }
    Maintenance { stop, handle }
}

fn run_once(log: &Log, options: &MaintenanceOptions, state: &mut State, stopped: &dyn Fn() -> bool) {
    let now = Instant::now();
    let due = |last: Option<Instant>, every: Duration| last.is_none_or(|l| now.duration_since(l) >= every);
    let retention_due = due(state.last_retention, options.retention_interval);
    let compaction_due = due(state.last_compaction, options.compaction_interval);
    let mut open = Vec::new();
    for stream in log.opened_streams() {
        for partition in stream.opened_partitions() {
            if stopped() {
                return;
            }
            let key = (stream.name().to_owned(), partition.id());
            if let Durability::IntervalMs(ms) = stream.config().durability {
                if due(state.last_flush.get(&key).copied(), Duration::from_millis(ms)) {
                    report(partition, "fsync", partition.flush());
                    state.last_flush.insert(key.clone(), now);
                } else {
                    match partition.start_writeback(state.writeback.get(&key).copied(), WRITEBACK_MIN_BYTES) {
                        Ok(Some(mark)) => {
                            state.writeback.insert(key.clone(), mark);
                        }
                        Ok(None) => {}
                        // Loses nothing (the next fsync writes it, and reports
                        // a failing disk); logged quietly, as it repeats every tick.
                        Err(e) => tracing::debug!(
                            stream = partition.stream(),
                            partition = partition.id(),
                            "starting writeback failed: {e}"
                        ),
                    }
                }
            }
            if retention_due {
                report(partition, "retention", partition.enforce_retention(now_ms()).map(|_| ()));
            }
            if compaction_due && stream.config().cleanup_policy == CleanupPolicy::Compact {
                let active = partition.snapshot().map(|s| s.active_base).unwrap_or(0);
                if state.last_compacted_active.get(&key) != Some(&active) {
                    report(partition, "compaction", partition.compact(now_ms(), false).map(|_| ()));
                    state.last_compacted_active.insert(key.clone(), active);
                }
            }
            open.push(key);
        }
    }
    state.forget_all_but(&open);
    if retention_due {
        state.last_retention = Some(now);
    }
    if compaction_due {
        state.last_compaction = Some(now);
    }
}

fn report(partition: &Partition, job: &str, result: crate::Result<()>) {
    if let Err(e) = result {
        tracing::error!(stream = partition.stream(), partition = partition.id(), "background {job} failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StreamConfig;
    use crate::record::Record;

    /// A deleted stream's partitions are forgotten at the next tick; an
    /// open one's are kept.
    #[test]
    fn a_deleted_streams_partitions_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path()).unwrap();
        for name in ["kept", "doomed"] {
            // Compacted, so that every map holds its partitions.
            let config = StreamConfig { durability: Durability::IntervalMs(60_000), ..StreamConfig::compacted(2) };
            let stream = log.create_stream(name, config).unwrap();
            for p in 0..2 {
                stream.append(p, &[Record::keyed(b"k", &[7u8; 64])]).unwrap();
            }
        }
        let options = MaintenanceOptions::default();
        let mut state = State::default();
        run_once(&log, &options, &mut state, &|| false);
        assert_eq!(state.last_flush.len(), 4, "every open partition is fsynced once");
        assert_eq!(state.last_compacted_active.len(), 4, "and compacted once");
        log.delete_stream("doomed").unwrap();
        run_once(&log, &options, &mut state, &|| false);
        let mut kept: Vec<_> = state.last_flush.keys().cloned().collect();
        kept.sort();
        assert_eq!(kept, [("kept".to_owned(), 0), ("kept".to_owned(), 1)]);
        assert!(state.writeback.keys().chain(state.last_compacted_active.keys()).all(|(s, _)| s == "kept"));
    }
}
