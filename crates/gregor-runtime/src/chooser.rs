//! The message chooser: buffers of polled messages per input partition and
//! the rule that picks the next one to process.
//!
//! Bootstrap inputs are drained (up to their end as of start-up) before
//! anything else is chosen; otherwise higher-priority inputs come first,
//! and inputs of equal priority take turns of up to 32 messages each (short
//! runs keep caches warm), so a busy partition never starves a quiet one.

use gregor_api::RawMessage;
use std::collections::VecDeque;

pub(crate) struct Chooser {
    queues: Vec<VecDeque<RawMessage>>,
    /// Priority level of each input.
    level_of: Vec<usize>,
    /// Per priority level (highest first): inputs with messages, in turn order.
    ready: Vec<VecDeque<usize>>,
    /// Bootstrap inputs still below their end.
    bootstrapping: Vec<usize>,
    buffered: usize,
    /// The input being served and how many more of its messages it may
    /// have in a row (short runs keep caches warm; turns stay fair).
    run: Option<(usize, usize)>,
    /// Per input: how many messages at the front of its queue were shown
    /// ahead ([`Self::show_ahead`]); kept while `showing`, until
    /// [`Self::stop_showing`].
    shown: Vec<usize>,
    showing: bool,
}

/// Messages one input may have in a row before the next input's turn.
const RUN: usize = 32;

impl Chooser {
    /// `priorities[i]` and `bootstrap[i]` describe input `i`.
    pub fn new(priorities: &[i64], bootstrap: &[bool]) -> Self {
        let mut distinct: Vec<i64> = priorities.to_vec();
        distinct.sort_unstable_by(|a, b| b.cmp(a));
        distinct.dedup();
        Chooser {
            queues: (0..priorities.len()).map(|_| VecDeque::new()).collect(),
            level_of: priorities.iter().map(|p| distinct.iter().position(|d| d == p).unwrap_or(0)).collect(),
            ready: distinct.iter().map(|_| VecDeque::new()).collect(),
            bootstrapping: (0..bootstrap.len()).filter(|&i| bootstrap[i]).collect(),
            buffered: 0,
            run: None,
            shown: vec![0; priorities.len()],
            showing: true,
        }
    }

    /// The messages of `input` among the next `distance` it will give that
    /// were not shown yet, in order; each is shown once.
    pub fn show_ahead(&mut self, input: usize, distance: usize) -> std::collections::vec_deque::Iter<'_, RawMessage> {
        let queue = &self.queues[input];
        let to = distance.min(queue.len());
        let from = self.shown[input].min(to);
        self.shown[input] = to.max(self.shown[input]);
        queue.range(from..to)
    }

    /// Whether messages are still shown ahead (no [`Self::stop_showing`] yet).
    pub fn showing(&self) -> bool {
        self.showing
    }

    /// Stops counting what was shown (nothing will be shown any more):
    /// taking a message then costs nothing more than without look-ahead.
    pub fn stop_showing(&mut self) {
        self.showing = false;
        self.shown.fill(0);
    }

    pub fn push(&mut self, input: usize, message: RawMessage) {
        if self.queues[input].is_empty() && self.run.is_none_or(|(i, _)| i != input) {
            self.ready[self.level_of[input]].push_back(input);
        }
        self.queues[input].push_back(message);
        self.buffered += 1;
    }

    pub fn len(&self, input: usize) -> usize {
        self.queues[input].len()
    }

    pub fn is_empty(&self) -> bool {
        self.buffered == 0
    }

    /// Messages buffered over all inputs.
    pub fn buffered(&self) -> usize {
        self.buffered
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
        self.bootstrap_done(input);
        self.buffered -= self.queues[input].len();
        self.queues[input].clear();
        self.shown[input] = 0;
        self.ready[self.level_of[input]].retain(|&i| i != input);
        if self.run.is_some_and(|(i, _)| i == input) {
            self.run = None;
        }
    }

    /// The next message to process, and its input: O(1), taking turns (of
    /// up to `RUN` messages) among the inputs of the highest priority level
    /// that has messages.
    pub fn next(&mut self) -> Option<(usize, RawMessage)> {
        if !self.bootstrapping.is_empty() {
            self.end_run();
            let found = self.bootstrapping.iter().copied().find(|&i| !self.queues[i].is_empty())?;
            let level = &mut self.ready[self.level_of[found]];
            let at = level.iter().position(|&i| i == found)?;
            level.remove(at);
            self.run = Some((found, 1));
            let taken = self.take(found);
            self.end_run();
            return taken;
        }
        let input = match self.run {
            // A run ends early when a higher-priority input has messages.
            Some((i, left))
                if left > 0
                    && !self.queues[i].is_empty()
                    && self.ready[..self.level_of[i]].iter().all(VecDeque::is_empty) =>
            {
                self.run = Some((i, left - 1));
                i
            }
            _ => {
                self.end_run();
                let i = self.ready.iter_mut().find_map(VecDeque::pop_front)?;
                self.run = Some((i, RUN - 1));
                i
            }
        };
        self.take(input)
    }

    /// Ends the current input's run: back in line if it has more messages.
    fn end_run(&mut self) {
        if let Some((i, _)) = self.run.take()
            && !self.queues[i].is_empty()
        {
            self.ready[self.level_of[i]].push_back(i);
        }
    }

    /// Pops a message of the input being served (not in its ready list).
    // Inlined: the message moves straight to `next`'s caller.
    #[inline]
    fn take(&mut self, input: usize) -> Option<(usize, RawMessage)> {
        let m = self.queues[input].pop_front()?;
        self.buffered -= 1;
        if self.showing {
            self.shown[input] = self.shown[input].saturating_sub(1);
        }
        Some((input, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(offset: u64) -> RawMessage {
        RawMessage { offset, timestamp: 0, key: None, value: None, headers: Default::default() }
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
        // Priority first, then turns of up to RUN messages per input.
        assert_eq!(drain(&mut c), vec![(2, 100), (0, 0), (0, 1), (0, 2), (1, 10), (1, 11), (1, 12)]);
        assert!(c.is_empty());
    }

    #[test]
    fn busy_inputs_take_turns() {
        let mut c = Chooser::new(&[0, 0], &[false, false]);
        for o in 0..(2 * RUN as u64) {
            c.push(0, msg(o));
            c.push(1, msg(1000 + o));
        }
        let order: Vec<usize> = drain(&mut c).into_iter().map(|(i, _)| i).collect();
        let expected: Vec<usize> = [0, 1, 0, 1].iter().flat_map(|&i| std::iter::repeat_n(i, RUN)).collect();
        assert_eq!(order, expected);
    }

    #[test]
    fn each_message_is_shown_ahead_once_before_it_is_given() {
        let mut c = Chooser::new(&[0, 0], &[false, false]);
        for o in 0..5 {
            c.push(0, msg(o));
        }
        let shown = |c: &mut Chooser, d| c.show_ahead(0, d).map(|m| m.offset).collect::<Vec<_>>();
        assert_eq!(shown(&mut c, 3), [0, 1, 2]);
        assert_eq!(shown(&mut c, 3), [] as [u64; 0], "already shown");
        assert_eq!(c.next().map(|(_, m)| m.offset), Some(0));
        assert_eq!(shown(&mut c, 3), [3], "one more within the distance");
        c.push(0, msg(5));
        assert_eq!(shown(&mut c, 10), [4, 5]);
        assert!(c.show_ahead(1, 10).next().is_none(), "an empty input");
        c.clear(0);
        c.push(0, msg(6));
        assert_eq!(shown(&mut c, 3), [6], "what a cleared input held is forgotten");
        c.stop_showing();
        assert!(!c.showing());
        c.push(0, msg(7));
        assert_eq!(c.next().map(|(_, m)| m.offset), Some(6));
        assert_eq!(shown(&mut c, 3), [7], "counting starts afresh");
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
