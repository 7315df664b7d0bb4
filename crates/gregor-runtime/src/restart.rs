//! When a failed container is started again: one policy for every execution
//! mode that restarts containers (`local` threads, `process` children).
//!
//! A container may fail `cluster-manager.container.retry.count` times within
//! `cluster-manager.container.retry.window.ms`; one more failure within the
//! window fails the job. Restarts back off exponentially with the failures
//! in the window: 200 ms, 400 ms, 800 ms, ... at most 10 s.
//!
//! The decision is a pure function of the failure times it is given; the
//! caller supplies the clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Failures tolerated per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Failures tolerated within `window` (`cluster-manager.container.retry.count`).
    pub count: u32,
    /// The window (`cluster-manager.container.retry.window.ms`).
    pub window: Duration,
}

impl Default for RestartPolicy {
    /// Samza's defaults: 8 failures within 5 minutes.
    fn default() -> Self {
        RestartPolicy { count: 8, window: Duration::from_secs(300) }
    }
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// Start the container again after this wait.
    RestartAfter(Duration),
    /// Too many failures within the window: fail the job.
    GiveUp {
        /// Failures within the window, this one included.
        failures: usize,
    },
}

/// Shortest backoff (after the first failure in a window).
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// One container's failure history under a policy.
#[derive(Debug, Clone)]
pub struct Restarts {
    policy: RestartPolicy,
    failures: VecDeque<Instant>,
}

impl Restarts {
    /// No failures yet.
    pub fn new(policy: RestartPolicy) -> Self {
        Restarts { policy, failures: VecDeque::new() }
    }

    /// Records a failure at `now` and decides.
    pub fn on_failure(&mut self, now: Instant) -> RestartDecision {
        while self.failures.front().is_some_and(|t| now.saturating_duration_since(*t) >= self.policy.window) {
            self.failures.pop_front();
        }
        self.failures.push_back(now);
        let n = self.failures.len();
        if n > self.policy.count as usize {
            return RestartDecision::GiveUp { failures: n };
        }
        let backoff = FIRST_BACKOFF.saturating_mul(1 << (n - 1).min(16)).min(MAX_BACKOFF);
        RestartDecision::RestartAfter(backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RestartDecision::{GiveUp, RestartAfter};

    #[test]
    fn backs_off_and_gives_up_past_the_count_within_the_window() {
        let t = Instant::now();
        let mut r = Restarts::new(RestartPolicy { count: 3, window: Duration::from_secs(60) });
        assert_eq!(r.on_failure(t), RestartAfter(Duration::from_millis(200)));
        assert_eq!(r.on_failure(t + Duration::from_secs(1)), RestartAfter(Duration::from_millis(400)));
        assert_eq!(r.on_failure(t + Duration::from_secs(2)), RestartAfter(Duration::from_millis(800)));
        assert_eq!(r.on_failure(t + Duration::from_secs(3)), GiveUp { failures: 4 });
    }

    #[test]
    fn failures_that_left_the_window_no_longer_count() {
        let t = Instant::now();
        let mut r = Restarts::new(RestartPolicy { count: 2, window: Duration::from_secs(10) });
        r.on_failure(t);
        r.on_failure(t + Duration::from_secs(1));
        // Exactly one window after the first failure, it no longer counts.
        assert_eq!(r.on_failure(t + Duration::from_secs(10)), RestartAfter(Duration::from_millis(400)));
        assert_eq!(r.on_failure(t + Duration::from_secs(30)), RestartAfter(Duration::from_millis(200)));
    }

    #[test]
    fn backoff_is_capped_and_zero_count_never_restarts() {
        let t = Instant::now();
        let mut r = Restarts::new(RestartPolicy { count: 100, window: Duration::from_secs(3600) });
        let last = (0..20).map(|i| r.on_failure(t + Duration::from_secs(i))).last();
        assert_eq!(last, Some(RestartAfter(MAX_BACKOFF)));
        let mut none = Restarts::new(RestartPolicy { count: 0, window: Duration::from_secs(60) });
        assert_eq!(none.on_failure(t), GiveUp { failures: 1 });
    }
}
