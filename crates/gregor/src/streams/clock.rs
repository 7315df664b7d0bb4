//! Event time per source: the watermark of one source in one task, as a
//! pure function of what its partitions delivered and of processing time.
//!
//! - An input partition's watermark is the newest event time it delivered
//!   minus the allowed out-of-orderness; before its first record it holds
//!   the watermark back.
//! - An intermediate partition's watermark is the minimum over every
//!   producing task of the job of the last watermark that task sent; until
//!   all have been heard from, it holds the watermark back.
//! - With an idle timeout, a partition that delivered nothing for that long
//!   (processing time) stops holding the watermark back until it delivers
//!   again. If every partition is idle the watermark stays where it is, and
//!   the source reports [`IDLE`] once: operators that combine it with other
//!   streams (merge, join) and the tasks downstream of an intermediate
//!   stream leave it out until it reports a watermark again.
//! - An upstream task that sent [`IDLE`] is left out of an intermediate
//!   partition's minimum until it sends a watermark again.
//! - The source's watermark is the minimum over its partitions, and never
//!   goes back. A task without partitions of the source does not hold
//!   anything back.
//!
//! This module must never read a clock: time comes in as arguments.

use super::graph::IDLE;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone)]
struct Partition {
    newest: i64,
    last_active: Option<i64>,
    upstream: BTreeMap<String, i64>,
    /// Upstream tasks whose last word was [`IDLE`].
    idle_upstream: BTreeSet<String>,
    tasks: u32,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct SourceClock {
    intermediate: bool,
    out_of_order: i64,
    idle: Option<i64>,
    partitions: BTreeMap<u32, Partition>,
    current: i64,
    started: Option<i64>,
    /// [`IDLE`] was reported and no watermark since.
    idle_reported: bool,
    /// Something a watermark is computed from changed since the last
    /// [`SourceClock::advance`]. Without an idle timeout nothing else can
    /// move it, so `advance` skips the computation (every message calls it;
    /// over an intermediate stream it walks every producing task's mark).
    changed: bool,
}

impl SourceClock {
    fn new(partitions: &[u32], intermediate: bool, out_of_order: i64, idle: Option<i64>) -> Self {
        let p = Partition {
            newest: i64::MIN,
            last_active: None,
            upstream: BTreeMap::new(),
            idle_upstream: BTreeSet::new(),
            tasks: 0,
        };
        SourceClock {
            intermediate,
            out_of_order,
            idle,
            partitions: partitions.iter().map(|&n| (n, p.clone())).collect(),
            current: i64::MIN,
            started: None,
            idle_reported: false,
            changed: true,
        }
    }

    /// An input's clock.
    pub(crate) fn input(partitions: &[u32], out_of_order: i64, idle: Option<i64>) -> Self {
        Self::new(partitions, false, out_of_order, idle)
    }

    /// An intermediate stream's clock.
    pub(crate) fn intermediate(partitions: &[u32]) -> Self {
        Self::new(partitions, true, 0, None)
    }

    /// A record with event time `ts` arrived on `partition`.
    pub(crate) fn record(&mut self, partition: u32, ts: i64, now: i64) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.last_active = Some(now);
            if !self.intermediate && ts > p.newest {
                p.newest = ts;
                self.changed = true;
            }
        }
    }

    /// Producing task `task` (of `tasks`) sent its watermark on `partition`.
    pub(crate) fn upstream(&mut self, partition: u32, task: &str, tasks: u32, watermark: i64, now: i64) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            self.changed = true;
            p.last_active = Some(now);
            p.tasks = p.tasks.max(tasks);
            let w = p.upstream.entry(task.to_owned()).or_insert(i64::MIN);
            if watermark == IDLE {
                p.idle_upstream.insert(task.to_owned());
            } else {
                *w = (*w).max(watermark);
                p.idle_upstream.remove(task);
            }
        }
    }

    /// A partition's watermark; `None` if every task producing into it is idle.
    fn partition_watermark(&self, p: &Partition) -> Option<i64> {
        if self.intermediate {
            if p.tasks == 0 || (p.upstream.len() as u32) < p.tasks {
                return Some(i64::MIN);
            }
            let active = p.upstream.iter().filter(|(t, _)| !p.idle_upstream.contains(*t));
            return active.map(|(_, w)| *w).min();
        }
        Some(if p.newest == i64::MIN { i64::MIN } else { p.newest.saturating_sub(self.out_of_order) })
    }

    /// What changed at processing time `now`: the new watermark if it
    /// advanced, [`IDLE`] when every partition just became idle, or the
    /// current watermark when one is active again after that.
    pub(crate) fn advance(&mut self, now: i64) -> Option<i64> {
        if !std::mem::take(&mut self.changed) && self.idle.is_none() && self.started.is_some() {
            // The same inputs give the same watermark, which did not advance
            // (or was already reported) the last time.
            return None;
        }
        let started = *self.started.get_or_insert(now);
        let wm = if self.partitions.is_empty() {
            i64::MAX
        } else {
            let idle = |p: &Partition| {
                self.idle.is_some_and(|limit| now.saturating_sub(p.last_active.unwrap_or(started)) >= limit)
            };
            let active = self.partitions.values().filter(|p| !idle(p)).filter_map(|p| self.partition_watermark(p));
            match active.min() {
                Some(wm) => wm,
                None if self.idle_reported => return None,
                None => {
                    self.idle_reported = true;
                    return Some(IDLE);
                }
            }
        };
        if std::mem::take(&mut self.idle_reported) {
            self.current = self.current.max(wm);
            return Some(self.current);
        }
        (wm > self.current).then(|| {
            self.current = wm;
            wm
        })
    }

    /// The watermark so far.
    pub(crate) fn current(&self) -> i64 {
        self.current
    }

    /// The end of input: the watermark jumps to the end. `false` if it was there.
    pub(crate) fn finish(&mut self) -> bool {
        let moved = self.current < i64::MAX;
        self.current = i64::MAX;
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Record(u32, i64),
        Upstream(u32, u8, i64),
        Advance(i64),
        Finish,
    }

    fn op() -> impl Strategy<Value = Op> {
        // Rarely the end: after it nothing advances any more.
        prop_oneof![
            10 => (0..3u32, 0..1000i64).prop_map(|(p, ts)| Op::Record(p, ts)),
            5 => (0..3u32, 0..3u8, prop_oneof![Just(IDLE), 0..1000i64]).prop_map(|(p, t, w)| Op::Upstream(p, t, w)),
            10 => (0..50i64).prop_map(Op::Advance),
            1 => Just(Op::Finish),
        ]
    }

    proptest! {
        /// Skipping the computation when nothing changed answers exactly
        /// what computing it every time answers.
        #[test]
        fn advance_skips_only_what_would_not_change(
            kind in 0..3u8,
            ops in proptest::collection::vec(op(), 0..80),
        ) {
            let mut skipping = match kind {
                0 => SourceClock::input(&[0, 1], 5, None),
                1 => SourceClock::input(&[0, 1], 5, Some(20)),
                _ => SourceClock::intermediate(&[0, 1]),
            };
            let mut computing = skipping.clone();
            let mut now = 0;
            for op in ops {
                match op {
                    Op::Record(p, ts) => {
                        skipping.record(p, ts, now);
                        computing.record(p, ts, now);
                    }
                    Op::Upstream(p, t, w) => {
                        skipping.upstream(p, &format!("t{t}"), 3, w, now);
                        computing.upstream(p, &format!("t{t}"), 3, w, now);
                    }
                    Op::Advance(by) => {
                        now += by;
                        computing.changed = true;
                        prop_assert_eq!(skipping.advance(now), computing.advance(now));
                        prop_assert_eq!(skipping.current(), computing.current());
                    }
                    Op::Finish => prop_assert_eq!(skipping.finish(), computing.finish()),
                }
            }
        }
    }

    #[test]
    fn an_input_watermark_is_the_slowest_partition_minus_the_allowed_disorder() {
        let mut c = SourceClock::input(&[0, 1], 10, None);
        c.record(0, 100, 0);
        assert_eq!(c.advance(0), None, "partition 1 has delivered nothing");
        c.record(1, 50, 0);
        assert_eq!(c.advance(0), Some(40));
        c.record(1, 30, 0);
        assert_eq!(c.advance(0), None, "an older record does not move it back");
        c.record(1, 200, 0);
        assert_eq!(c.advance(0), Some(90));
        assert_eq!(c.current(), 90);
    }

    #[test]
    fn an_idle_partition_stops_holding_the_watermark_back_until_it_delivers() {
        let mut c = SourceClock::input(&[0, 1], 0, Some(1000));
        assert_eq!(c.advance(5000), None, "the clock starts at the first look");
        c.record(0, 100, 5500);
        assert_eq!(c.advance(5999), None, "partition 1 is not idle yet");
        assert_eq!(c.advance(6000), Some(100), "partition 1 idle");
        c.record(0, 200, 6100);
        assert_eq!(c.advance(6100), Some(200));
        c.record(1, 150, 6200);
        assert_eq!(c.advance(6200), None, "partition 1 is back, and behind: the watermark waits");
        c.record(1, 300, 6300);
        assert_eq!(c.advance(6300), None, "partition 0 is still at 200");
        assert_eq!(c.advance(7200), Some(300), "partition 0 idle now, partition 1 not");
    }

    #[test]
    fn every_partition_idle_keeps_the_watermark_where_it_is_and_says_idle_once() {
        let mut c = SourceClock::input(&[0], 0, Some(10));
        c.record(0, 100, 0);
        assert_eq!(c.advance(0), Some(100));
        assert_eq!(c.advance(1_000_000), Some(IDLE), "idle: combining operators leave it out");
        assert_eq!(c.advance(2_000_000), None, "said once");
        assert_eq!(c.current(), 100);
        c.record(0, 50, 2_000_001);
        assert_eq!(c.advance(2_000_001), Some(100), "active again: its watermark, which did not go back");
        c.record(0, 150, 2_000_002);
        assert_eq!(c.advance(2_000_002), Some(150));
    }

    #[test]
    fn an_idle_upstream_task_is_left_out_until_it_sends_a_watermark() {
        let mut c = SourceClock::intermediate(&[0]);
        c.upstream(0, "Partition 0", 2, 500, 0);
        c.upstream(0, "Partition 1", 2, IDLE, 0);
        assert_eq!(c.advance(0), Some(500), "an idle task counts as heard from, and is left out");
        c.upstream(0, "Partition 1", 2, 200, 0);
        c.upstream(0, "Partition 0", 2, 900, 0);
        assert_eq!(c.advance(0), None, "back, and behind: it holds the watermark again");
        c.upstream(0, "Partition 0", 2, IDLE, 0);
        c.upstream(0, "Partition 1", 2, IDLE, 0);
        assert_eq!(c.advance(0), Some(IDLE), "every task idle: the source is");
    }

    #[test]
    fn an_intermediate_watermark_waits_for_every_producing_task() {
        let mut c = SourceClock::intermediate(&[3]);
        c.upstream(3, "Partition 0", 2, 500, 0);
        assert_eq!(c.advance(0), None, "one of two tasks heard");
        c.upstream(3, "Partition 1", 2, 300, 0);
        assert_eq!(c.advance(0), Some(300));
        c.upstream(3, "Partition 1", 2, 100, 0);
        assert_eq!(c.advance(0), None, "a stale watermark is ignored");
        c.upstream(3, "Partition 1", 2, 900, 0);
        assert_eq!(c.advance(0), Some(500));
        c.record(3, 10, 0);
        assert_eq!(c.advance(0), None, "records do not move an intermediate watermark");
    }

    #[test]
    fn no_partitions_hold_nothing_back_and_the_end_is_the_end() {
        let mut c = SourceClock::input(&[], 0, None);
        assert_eq!(c.advance(0), Some(i64::MAX));
        let mut c = SourceClock::input(&[0], 0, None);
        assert!(c.finish());
        assert!(!c.finish());
        assert_eq!(c.advance(0), None);
    }
}
