//! The container's clock: processing time for commits, windows, metrics
//! reports and the timestamps of messages a task sends without one.
//!
//! Production containers read the system clock; tests inject a
//! [`ManualClock`] and move time forward by hand, so that timing decisions
//! (when to commit, when `window` runs) are deterministic.
//!
//! This never affects the lease (fencing must follow real time, whatever a
//! test's clock says) or event time (which is data, carried by messages).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of processing time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Monotonic time, for intervals and deadlines.
    fn now(&self) -> Instant;
    /// Wall-clock time in milliseconds since the epoch, for timestamps.
    fn wall_ms(&self) -> i64;
    /// Whether the container may block waiting for input until a deadline
    /// of this clock (a manual clock never moves while the container waits,
    /// so a container under one never blocks).
    fn may_wait(&self) -> bool {
        true
    }
}

/// The operating system's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall_ms(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
    }
}

/// A clock that moves only when told to; clones share the same time.
///
/// ```
/// use gregor_runtime::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new(1_700_000_000_000);
/// let start = clock.now();
/// clock.advance(Duration::from_millis(1500));
/// assert_eq!(clock.now() - start, Duration::from_millis(1500));
/// assert_eq!(clock.wall_ms(), 1_700_000_001_500);
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    base: Instant,
    base_wall_ms: i64,
    elapsed_nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock whose wall time starts at `wall_ms` (milliseconds since the epoch).
    pub fn new(wall_ms: i64) -> Self {
        ManualClock { base: Instant::now(), base_wall_ms: wall_ms, elapsed_nanos: Arc::new(AtomicU64::new(0)) }
    }

    /// Moves time forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.elapsed_nanos.fetch_add(by.as_nanos().min(u64::MAX as u128) as u64, Ordering::SeqCst);
    }

    /// Time moved so far.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.elapsed_nanos.load(Ordering::SeqCst))
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + self.elapsed()
    }

    fn wall_ms(&self) -> i64 {
        self.base_wall_ms + self.elapsed().as_millis() as i64
    }

    fn may_wait(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clocks_move_together_and_only_when_told() {
        let a = ManualClock::new(1000);
        let b = a.clone();
        let t0 = a.now();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(a.now(), t0, "real time does not move a manual clock");
        b.advance(Duration::from_secs(2));
        assert_eq!(a.now() - t0, Duration::from_secs(2));
        assert_eq!(a.wall_ms(), 3000);
        assert!(!a.may_wait() && SystemClock.may_wait());
    }
}
