//! What a read-committed reader of one partition may deliver: a pure state
//! machine fed the partition's records and markers in offset order.
//!
//! Records of a transaction wait until its marker: a commit makes them
//! deliverable, an abort drops them. Nothing after an undecided record is
//! delivered before it (offset order is kept, as Kafka's last stable offset
//! does). Records that can never be committed are dropped at once: those of
//! a producer epoch older than one already seen (a fenced zombie), those
//! that follow their own transaction's marker, and undecided ones of an
//! epoch a newer epoch of the same producer has replaced (its recovery
//! decided them). This module never does I/O and never looks at payloads.

use crate::batch::{Marker, RecordRef, TxnStamp};
use crate::reader::Entry;
use std::collections::{HashMap, VecDeque};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ready,
    Dropped,
    Pending(TxnStamp),
}

/// What the reader knows of one producer in this partition.
#[derive(Debug, Default, Clone, Copy)]
struct Producer {
    /// The largest epoch seen.
    epoch: u32,
    /// The newest transaction decided by a marker: (epoch, transaction).
    decided: Option<(u32, u32)>,
}

/// The read-committed view of one partition.
#[derive(Debug)]
pub struct CommittedFilter<T> {
    queue: VecDeque<(State, T)>,
    producers: HashMap<u64, Producer>,
    dropped: u64,
    /// `false`: read-uncommitted (every record passes, markers are ignored).
    committed: bool,
}

impl<T> Default for CommittedFilter<T> {
    fn default() -> Self {
        CommittedFilter { queue: VecDeque::new(), producers: HashMap::new(), dropped: 0, committed: true }
    }
}

impl<T> CommittedFilter<T> {
    /// An empty filter (a reader starting anywhere in the partition).
    pub fn new() -> Self {
        Self::default()
    }

    /// A filter that lets every record through in order (a read-uncommitted
    /// reader), so that one reading loop serves both isolation levels.
    pub fn read_uncommitted() -> Self {
        CommittedFilter { committed: false, ..Self::default() }
    }

    /// Feeds one entry of a fetch: a record becomes `item(record)`, a
    /// marker decides its transaction.
    pub fn push_entry<'a>(&mut self, entry: Entry<'a>, item: impl FnOnce(RecordRef<'a>) -> T) {
        match entry {
            Entry::Record(txn, r) => self.push_record(txn, item(r)),
            Entry::Marker(stamp, marker) => self.push_marker(stamp, marker),
        }
    }

    /// The next record, `txn` its transaction (`None` for a
    /// non-transactional one).
    pub fn push_record(&mut self, txn: Option<TxnStamp>, item: T) {
        let txn = txn.filter(|_| self.committed);
        let state = match txn {
            None => State::Ready,
            Some(s) => {
                let p = self.producers.entry(s.producer_id).or_default();
                let stale = s.epoch < p.epoch || p.decided.is_some_and(|d| (s.epoch, s.transaction) <= d);
                if s.epoch > p.epoch {
                    p.epoch = s.epoch;
                    self.retire_older_epochs(s.producer_id, s.epoch);
                }
                if stale { State::Dropped } else { State::Pending(s) }
            }
        };
        if state == State::Dropped {
            self.dropped += 1;
        }
        self.queue.push_back((state, item));
    }

    /// A marker ending transaction `stamp` in this partition.
    pub fn push_marker(&mut self, stamp: TxnStamp, marker: Marker) {
        if !self.committed {
            return;
        }
        let p = self.producers.entry(stamp.producer_id).or_default();
        let key = (stamp.epoch, stamp.transaction);
        p.decided = Some(p.decided.map_or(key, |d| d.max(key)));
        let newer_epoch = stamp.epoch > p.epoch;
        p.epoch = p.epoch.max(stamp.epoch);
        if newer_epoch {
            self.retire_older_epochs(stamp.producer_id, stamp.epoch);
        }
        let mut dropped = 0;
        for (state, _) in &mut self.queue {
            let State::Pending(s) = *state else { continue };
            if s.producer_id != stamp.producer_id {
                continue;
            }
            if s == stamp {
                *state = if marker == Marker::Commit { State::Ready } else { State::Dropped };
                dropped += u64::from(marker == Marker::Abort);
            } else if (s.epoch, s.transaction) < key {
                // An earlier transaction of this producer that no marker
                // ended here: it cannot have committed in this partition.
                *state = State::Dropped;
                dropped += 1;
            }
        }
        self.dropped += dropped;
    }

    /// Undecided records of `producer` from epochs before `epoch`: its
    /// successor's recovery decided them, so they are not waited for.
    fn retire_older_epochs(&mut self, producer: u64, epoch: u32) {
        for (state, _) in &mut self.queue {
            if let State::Pending(s) = *state
                && s.producer_id == producer
                && s.epoch < epoch
            {
                *state = State::Dropped;
                self.dropped += 1;
            }
        }
    }

    /// The next deliverable record, in offset order; `None` when there is
    /// none or the next one waits for its transaction's marker.
    pub fn pop(&mut self) -> Option<T> {
        loop {
            match self.queue.front()?.0 {
                State::Pending(_) => return None,
                State::Dropped => {
                    self.queue.pop_front();
                }
                State::Ready => return self.queue.pop_front().map(|(_, item)| item),
            }
        }
    }

    /// The oldest record held (delivered next, or dropped, once decided).
    pub fn front(&self) -> Option<&T> {
        self.queue.front().map(|(_, item)| item)
    }

    /// The transaction the reader waits for, if it is blocked.
    pub fn blocked_by(&self) -> Option<TxnStamp> {
        self.queue.iter().find_map(|(s, _)| match s {
            State::Pending(t) => Some(*t),
            State::Ready => None,
            State::Dropped => None,
        })
    }

    /// Records held (waiting, or behind a waiting one).
    pub fn held(&self) -> usize {
        self.queue.len()
    }

    /// Records dropped so far (aborted or never committable).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests;
