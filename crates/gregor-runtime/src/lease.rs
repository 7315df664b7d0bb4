//! A time-bounded right to process: the fence that keeps a processor which
//! lost contact with its coordinator from working on tasks that may already
//! run elsewhere.
//!
//! The coordinator extends the lease each time it hears from its
//! coordination service (to the request's send time plus a margin shorter
//! than the time after which the others may take the tasks); the container
//! checks it before processing, before sending and before committing, and
//! stops without committing once it has run out. Time is the monotonic
//! clock, which keeps running while a process is stopped (SIGSTOP), so a
//! frozen process finds its lease expired when it resumes.
//!
//! It must never be extended past a point the coordinator cannot vouch for.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The lease; shared by the coordinator (which extends it) and containers.
#[derive(Debug)]
pub struct Lease {
    base: Instant,
    /// Valid until `base` + this many nanoseconds.
    until_nanos: AtomicU64,
    revoked: AtomicBool,
}

impl Lease {
    /// A lease valid until `until`.
    pub fn until(until: Instant) -> Lease {
        let base = Instant::now();
        let lease = Lease { base, until_nanos: AtomicU64::new(0), revoked: AtomicBool::new(false) };
        lease.extend_to(until);
        lease
    }

    /// Moves the end to `until` if that is later than the current end.
    pub fn extend_to(&self, until: Instant) {
        let nanos = until.saturating_duration_since(self.base).as_nanos().min(u64::MAX as u128) as u64;
        self.until_nanos.fetch_max(nanos, Ordering::AcqRel);
    }

    /// Ends the lease now, for good (later extensions do not revive it).
    pub fn revoke(&self) {
        self.revoked.store(true, Ordering::Release);
    }

    /// Whether processing may go on now.
    pub fn is_valid(&self) -> bool {
        !self.revoked.load(Ordering::Acquire)
            && self.base.elapsed() < Duration::from_nanos(self.until_nanos.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_extends_and_stays_revoked() {
        let lease = Lease::until(Instant::now() + Duration::from_secs(60));
        assert!(lease.is_valid());
        lease.extend_to(Instant::now()); // earlier: no effect
        assert!(lease.is_valid());
        let short = Lease::until(Instant::now());
        assert!(!short.is_valid());
        short.extend_to(Instant::now() + Duration::from_secs(60));
        assert!(short.is_valid());
        short.revoke();
        short.extend_to(Instant::now() + Duration::from_secs(120));
        assert!(!short.is_valid());
    }
}
