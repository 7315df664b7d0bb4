//! The message chooser: buffers of polled messages per input partition and
//! the rule that picks the next one to process.
//!
//! Bootstrap inputs are drained (up to their end as of start-up) before
//! anything else is chosen; otherwise higher-priority inputs come first,
//! and inputs of equal priority take turns one message at a time, so a busy
//! partition never starves a quiet one.

use gregor_api::RawMessage;
use std::collections::VecDeque;

pub(crate) struct Chooser {
    queues: Vec<VecDeque<RawMessage>>,
    /// Input indexes by priority, highest first.
    levels: Vec<Vec<usize>>,
    cursors: Vec<usize>,
    /// Bootstrap inputs still below their end.
    bootstrapping: Vec<usize>,
    buffered: usize,
}

impl Chooser {
    /// `priorities[i]` and `bootstrap[i]` describe input `i`.
    pub fn new(priorities: &[i64], bootstrap: &[bool]) -> Self {
        let mut distinct: Vec<i64> = priorities.to_vec();
        distinct.sort_unstable_by(|a, b| b.cmp(a));
        distinct.dedup();
        let levels: Vec<Vec<usize>> =
            distinct.iter().map(|p| (0..priorities.len()).filter(|&i| priorities[i] == *p).collect()).collect();
        Chooser {
            queues: (0..priorities.len()).map(|_| VecDeque::new()).collect(),
            cursors: vec![0; levels.len()],
            levels,
            bootstrapping: (0..bootstrap.len()).filter(|&i| bootstrap[i]).collect(),
            buffered: 0,
        }
    }

    pub fn push(&mut self, input: usize, message: RawMessage) {
        self.queues[input].push_back(message);
        self.buffered += 1;
    }

    pub fn len(&self, input: usize) -> usize {
        self.queues[input].len()
    }

    pub fn is_empty(&self) -> bool {
        self.buffered == 0
    }

    /// Bootstrap inputs not yet caught up (only these are chosen meanwhile).
    pub fn bootstrapping(&self) -> &[usize] {
        &self.bootstrapping
    }

    /// Marks a bootstrap input as caught up.
    pub fn bootstrap_done(&mut self, input: usize) {
        self.bootstrapping.retain(|&i| i != input);
    }

    /// Drops everything buffered for an input (its task stopped, or it ended).
    pub fn clear(&mut self, input: usize) {
        self.buffered -= self.queues[input].len();
        self.queues[input].clear();
    }

    /// The next message to process, and its input.
    pub fn next(&mut self) -> Option<(usize, RawMessage)> {
        if !self.bootstrapping.is_empty() {
            let found = self.bootstrapping.iter().copied().find(|&i| !self.queues[i].is_empty())?;
            return self.pop(found);
        }
        for (level, inputs) in self.levels.iter().enumerate() {
            let n = inputs.len();
            for k in 0..n {
                let i = inputs[(self.cursors[level] + k) % n];
                if !self.queues[i].is_empty() {
                    self.cursors[level] = (self.cursors[level] + k + 1) % n;
                    return self.pop(i);
                }
            }
        }
        None
    }

    fn pop(&mut self, input: usize) -> Option<(usize, RawMessage)> {
        let m = self.queues[input].pop_front()?;
        self.buffered -= 1;
        Some((input, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(offset: u64) -> RawMessage {
        RawMessage { offset, timestamp: 0, key: None, value: None }
    }

    fn drain(c: &mut Chooser) -> Vec<(usize, u64)> {
        std::iter::from_fn(|| c.next().map(|(i, m)| (i, m.offset))).collect()
    }

    #[test]
    fn round_robin_within_priority_and_priority_first() {
        let mut c = Chooser::new(&[0, 0, 5], &[false, false, false]);
        for o in 0..3 {
            c.push(0, msg(o));
            c.push(1, msg(10 + o));
        }
        c.push(2, msg(100));
        assert_eq!(drain(&mut c), vec![(2, 100), (0, 0), (1, 10), (0, 1), (1, 11), (0, 2), (1, 12)]);
        assert!(c.is_empty());
    }

    #[test]
    fn bootstrap_inputs_go_first_until_done() {
        let mut c = Chooser::new(&[0, 0], &[false, true]);
        c.push(0, msg(0));
        assert_eq!(c.next().map(|(i, _)| i), None, "nothing else while bootstrapping");
        c.push(1, msg(7));
        assert_eq!(c.next().map(|(i, m)| (i, m.offset)), Some((1, 7)));
        c.bootstrap_done(1);
        assert_eq!(c.next().map(|(i, m)| (i, m.offset)), Some((0, 0)));
    }
}
