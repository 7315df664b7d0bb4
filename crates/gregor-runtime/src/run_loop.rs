//! The event loop: poll -> choose -> process -> route sends, and on time
//! `window`, commit and metrics reports. One call to [`Container::step`] is
//! one turn, so tests can drive a container deterministically (with a
//! manual clock, see [`ContainerOptions::clock`](crate::ContainerOptions)).

use crate::container::Container;
use crate::error::{RuntimeError, call_task, panic_message};
use crate::job_config::DeserializationPolicy;
use bytes::Bytes;
use gregor_api::{IncomingEnvelope, RawMessage, Serde, SerdeError, ShutdownScope, StreamTask, Upcoming};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Messages processed per turn before timers are checked and output is
/// written (so output appears within one turn, not only at commit).
pub const TURN: usize = 10_000;
/// Sends a task may collect before they are routed (else at the end of the turn).
const ROUTE_AT: usize = 4096;
/// Dirty cache entries a store writes out per idle moment: a slice of a
/// few hundred microseconds, so input that arrives meanwhile waits little.
const IDLE_WRITE_OUT: usize = 1024;

/// Longest a turn waits for input.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// How many messages ahead of `process` a task that prefetches is shown
/// its input's messages ([`StreamTask::prefetch`]): enough for the memory
/// reads of about eight messages to overlap, few enough that what they
/// load is still in the CPU's caches when `process` needs it.
const PREFETCH_AHEAD: usize = 8;
/// One message in this many has its `process` call timed (a clock read per
/// message would cost more than many tasks' work).
const PROCESS_SAMPLE: u64 = 64;

/// How often input offset and lag gauges are refreshed.
pub(crate) const GAUGE_REFRESH: Duration = Duration::from_secs(2);

/// Runs a serde's decode, turning a panic in it (a custom serde or a user
/// `Deserialize`) into an ordinary decoding error, subject to the policy.
fn guarded_decode<T>(f: impl FnOnce() -> Result<T, SerdeError>) -> Result<T, SerdeError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(SerdeError(panic_message(&*p))))
}

/// The buffer itself as the task's type, for an identity serde (`bytes` for
/// `Bytes`): no virtual call and no panic guard per message. The serde is
/// only called if the types disagree, which [`Serde::is_identity`] rules out.
#[inline]
fn handed_over<T: 'static>(serde: &Arc<dyn Serde<T>>, buf: Bytes) -> Result<T, SerdeError> {
    gregor_api::serde::bytes_as::<T>(buf).or_else(|buf| guarded_decode(|| serde.decode_owned(buf)))
}

/// What a finished container did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Messages processed.
    pub processed: u64,
}

/// What one turn of the loop did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepOutcome {
    /// Messages processed (including ones set aside by the deserialization policy).
    pub processed: usize,
    /// Messages still buffered, polled but not processed yet.
    pub buffered: usize,
    /// The container should stop (its inputs ended, its tasks asked to, or
    /// the shutdown flag is set): call [`Container::finish`].
    pub done: bool,
}

impl<T: StreamTask> Container<T> {
    /// Runs until the inputs end (bounded or `until_end`), a task asks for
    /// shutdown, or the shutdown flag is set; then commits and closes tasks.
    ///
    /// # Errors
    /// The first failure; nothing after the last successful commit is
    /// committed then.
    pub fn run(mut self) -> Result<RunSummary, RuntimeError> {
        while !self.step()?.done {}
        self.finish()
    }

    /// One turn of the loop (up to [`TURN`] messages).
    ///
    /// # Errors
    /// As [`Self::run`].
    pub fn step(&mut self) -> Result<StepOutcome, RuntimeError> {
        self.step_at_most(TURN)
    }

    /// One turn of the loop processing at most `limit` messages (a test can
    /// stop a container after exactly N messages).
    ///
    /// # Errors
    /// As [`Self::run`].
    pub fn step_at_most(&mut self, limit: usize) -> Result<StepOutcome, RuntimeError> {
        if self.shutdown.load(Ordering::Relaxed) || self.stop_requested {
            return Ok(StepOutcome { done: true, ..StepOutcome::default() });
        }
        let now_ms = self.clock.wall_ms();
        self.producers.borrow_mut().now_ms = now_ms;
        for t in &mut self.tasks {
            t.coordinator.set_now_ms(now_ms);
        }
        self.poll()?;
        self.check_lease()?;
        let mut processed = 0;
        while processed < limit {
            let Some((input, message)) = self.chooser.next() else { break };
            self.process(input, message)?;
            // Until every task said it does not prefetch.
            if self.chooser.showing() {
                self.show_ahead(input)?;
            }
            processed += 1;
            if self.commit_requested || self.stop_requested || self.shutdown.load(Ordering::Relaxed) {
                break;
            }
        }
        self.route_all()?;
        for t in &mut self.tasks {
            t.processed.report();
        }
        for i in &mut self.inputs {
            i.processed.report();
        }
        self.check_ends()?;
        let now = self.clock.now();
        if let Some(at) = self.next_window
            && now >= at
        {
            self.window()?;
            self.next_window = self.job.window_interval.map(|w| now + w);
        }
        self.check_lease()?;
        // What this turn's messages and window produced becomes visible now.
        self.producers.borrow_mut().flush_sent()?;
        if self.commit_requested || now >= self.next_commit {
            self.commit(false)?;
        }
        self.report(now)?;
        self.check_partitions(now)?;
        let done = self.stop_requested || self.tasks.iter().all(|t| t.stopped || t.end_of_stream_called);
        Ok(StepOutcome { processed, buffered: self.chooser.buffered(), done })
    }

    /// Final commit, then `close` on every task and the consumers and
    /// producers stopped. A container dropped without this commits nothing
    /// more (as after a crash).
    ///
    /// # Errors
    /// As [`Self::run`].
    pub fn finish(mut self) -> Result<RunSummary, RuntimeError> {
        // A last metrics snapshot, so short runs report too.
        let now = self.clock.now();
        for r in &mut self.reporters {
            r.next = now;
        }
        self.report(now)?;
        self.commit(true)?;
        // A container that stops cleanly before reaching the barrier (no
        // tasks, asked to stop) still arrives, so the others are not left
        // waiting; a failed one does not (it may be restarted and send more).
        if let Some((barrier, false)) = &self.end_barrier {
            barrier.arrive(&self.id)?;
        }
        for t in &mut self.tasks {
            call_task(&t.name, "close", || t.task.close())?;
        }
        for c in &mut self.consumers {
            c.stop();
        }
        self.producers.borrow_mut().stop()?;
        Ok(RunSummary { processed: self.processed() })
    }

    /// Fails when an input's partition count is not what the job model was
    /// computed from (its new partitions would go unprocessed).
    fn check_partitions(&mut self, now: Instant) -> Result<(), RuntimeError> {
        let Some((every, next)) = self.partition_check else { return Ok(()) };
        if now < next {
            return Ok(());
        }
        self.partition_check = Some((every, now + every));
        for (stream, was) in &self.partition_counts {
            let count = self.systems.admin(&stream.system)?.partition_count(stream)?;
            if count != *was {
                return Err(RuntimeError::PartitionCountChanged { stream: stream.to_string(), was: *was, now: count });
            }
        }
        Ok(())
    }

    /// Fails (so nothing more is sent or committed) once the lease is gone.
    pub(crate) fn check_lease(&self) -> Result<(), RuntimeError> {
        match &self.lease {
            Some(lease) if !lease.is_valid() && !gregor_api::failpoint::skipped("lease-check") => {
                Err(RuntimeError::LeaseExpired { container: self.id.clone() })
            }
            _ => Ok(()),
        }
    }

    /// Writes out up to [`IDLE_WRITE_OUT`] dirty entries of each store;
    /// `true` if any store had some.
    fn write_out_idle(&mut self) -> Result<bool, RuntimeError> {
        let mut wrote = false;
        for task in self.tasks.iter().filter(|t| !t.stopped) {
            for store in &task.stores {
                wrote |= store.store.borrow_mut().write_some(IDLE_WRITE_OUT)?;
            }
        }
        Ok(wrote)
    }

    fn wants(&self, i: usize) -> bool {
        let input = &self.inputs[i];
        !input.ended && !self.tasks[input.task].stopped && self.chooser.len(i) < self.job.max_buffered
    }

    /// Fills the chooser's buffers; waits (on every partition at once) only
    /// when there is nothing to process.
    fn poll(&mut self) -> Result<(), RuntimeError> {
        let wants: Vec<bool> = (0..self.inputs.len()).map(|i| self.wants(i)).collect();
        let now = self.clock.now();
        let idle = self.chooser.is_empty()
            || !self.chooser.bootstrapping().iter().any(|&i| self.chooser.len(i) > 0)
                && !self.chooser.bootstrapping().is_empty();
        let mut deadline = self.next_commit.min(now + MAX_WAIT);
        if let Some(w) = self.next_window {
            deadline = deadline.min(w);
        }
        for r in &self.reporters {
            deadline = deadline.min(r.next);
        }
        // An input that reached its end is about to end (check_ends, after
        // this poll): nothing to wait for then.
        let ending = self.inputs.iter().any(|i| {
            !i.ended && i.end.is_some_and(|e| self.consumers[i.consumer].position(&i.ssp).is_some_and(|p| p >= e))
        });
        // Idle: write out some dirty cache entries before waiting, so that the
        // next commit's pause stays short; then only look for input (the
        // slice took time), and wait once nothing is left to write.
        let timeout = if idle && !ending && self.clock.may_wait() && !self.write_out_idle()? {
            deadline.saturating_duration_since(now)
        } else {
            Duration::ZERO
        };
        let per_consumer = timeout / self.consumers.len().max(1) as u32;
        let Container { consumers, inputs, input_index, chooser, .. } = self;
        for (c, consumer) in consumers.iter_mut().enumerate() {
            let lookup = |ssp: &gregor_api::SystemStreamPartition| input_index.get(ssp).copied();
            // Consumers deliver runs of one partition, named by clones of the
            // registered SSP (which compare by pointer): comparing with the
            // last one saves a lookup per message.
            let mut last: Option<usize> = None;
            consumer.poll(
                &|ssp| lookup(ssp).is_some_and(|i| wants[i] && inputs[i].consumer == c),
                &mut |ssp, m| {
                    let i = match last {
                        Some(i) if inputs[i].ssp == *ssp => i,
                        _ => match lookup(ssp) {
                            Some(i) => {
                                last = Some(i);
                                i
                            }
                            None => return,
                        },
                    };
                    // Past a bounded input's end: left for a later run.
                    if inputs[i].end.is_none_or(|e| m.offset < e) {
                        chooser.push(i, m);
                    }
                },
                per_consumer,
            )?;
        }
        Ok(())
    }

    fn process(&mut self, i: usize, mut m: RawMessage) -> Result<(), RuntimeError> {
        if let Some(seen) = &mut self.inputs[i].seen
            && let Some((producer, sequence)) = crate::sequences::stamp_of(&m.headers)
            && !seen.admit(producer, sequence)
        {
            // A copy a restarted producer sent again: processed before.
            self.inputs[i].next_offset = m.offset + 1;
            self.duplicates.inc();
            return Ok(());
        }
        let input = &self.inputs[i];
        // The serdes take the message's buffers (no copy, no reference
        // count for `bytes`), unless a bad message must be set aside whole.
        let keep = matches!(self.job.deserialization, DeserializationPolicy::DeadLetter(_));
        let key = match &input.key_serde {
            s if keep => m.key.as_ref().map(|k| guarded_decode(|| s.decode_shared(k))),
            s if input.key_is_identity => m.key.take().map(|k| handed_over(s, k)),
            s => m.key.take().map(|k| guarded_decode(|| s.decode_owned(k))),
        };
        let key = match key.transpose() {
            Ok(k) => k,
            Err(e) => return self.bad_message(i, &m, "key", e),
        };
        let message = match &input.msg_serde {
            s if keep => m.value.as_ref().map(|v| guarded_decode(|| s.decode_shared(v))),
            s if input.msg_is_identity => m.value.take().map(|v| handed_over(s, v)),
            s => m.value.take().map(|v| guarded_decode(|| s.decode_owned(v))),
        };
        let message = match message.transpose() {
            Ok(v) => v,
            Err(e) => return self.bad_message(i, &m, "message", e),
        };
        let t = input.task;
        let task = &mut self.tasks[t];
        let envelope = IncomingEnvelope {
            ssp: &input.ssp,
            offset: m.offset,
            timestamp: m.timestamp,
            key,
            message,
            headers: &m.headers,
        };
        let fail = |message: String| RuntimeError::Process {
            task: task.name.clone(),
            ssp: input.ssp.to_string(),
            offset: m.offset,
            message,
        };
        let started = task.processed.count.is_multiple_of(PROCESS_SAMPLE).then(Instant::now);
        let result =
            catch_unwind(AssertUnwindSafe(|| task.task.process(envelope, &mut task.collector, &mut task.coordinator)));
        if let Some(t) = started {
            task.process_time.record(t.elapsed());
        }
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(fail(e.to_string())),
            Err(p) => return Err(fail(panic_message(&*p))),
        }
        task.processed.count += 1;
        let input = &mut self.inputs[i];
        input.processed.count += 1;
        input.next_offset = m.offset + 1;
        // Sends are routed at the end of the turn, in bulk, unless many piled up.
        if self.tasks[t].collector.pending().0.len() >= ROUTE_AT {
            self.route(t)?;
        }
        self.coordinate(t);
        Ok(())
    }

    /// Shows the task of input `i`, which just processed a message of `i`,
    /// the next messages of `i` up to [`PREFETCH_AHEAD`] that it was not
    /// shown yet, unless it said it does not prefetch. A panic in
    /// `prefetch` fails the container as one in `process` does.
    fn show_ahead(&mut self, i: usize) -> Result<(), RuntimeError> {
        let input = &self.inputs[i];
        let task = &mut self.tasks[input.task];
        if !task.prefetches {
            return Ok(());
        }
        for m in self.chooser.show_ahead(i, PREFETCH_AHEAD) {
            let upcoming =
                Upcoming { ssp: &input.ssp, offset: m.offset, key: m.key.as_deref(), message: m.value.as_deref() };
            match catch_unwind(AssertUnwindSafe(|| task.task.prefetch(upcoming))) {
                Ok(true) => {}
                Ok(false) => {
                    task.prefetches = false;
                    if !self.tasks.iter().any(|t| t.prefetches) {
                        self.chooser.stop_showing();
                    }
                    break;
                }
                Err(p) => {
                    return Err(RuntimeError::Process {
                        task: task.name.clone(),
                        ssp: input.ssp.to_string(),
                        offset: m.offset,
                        message: format!("prefetch {}", panic_message(&*p)),
                    });
                }
            }
        }
        Ok(())
    }

    /// Applies the deserialization policy to message `m` of input `i`.
    fn bad_message(&mut self, i: usize, m: &RawMessage, what: &'static str, e: SerdeError) -> Result<(), RuntimeError> {
        let ssp = self.inputs[i].ssp.to_string();
        match &self.job.deserialization {
            DeserializationPolicy::Fail => {
                return Err(RuntimeError::Deserialization { ssp, offset: m.offset, what, reason: e.0 });
            }
            DeserializationPolicy::Drop => {
                tracing::warn!(%ssp, offset = m.offset, "skipping a message whose {what} does not deserialize: {}", e.0);
            }
            DeserializationPolicy::DeadLetter(stream) => {
                tracing::warn!(%ssp, offset = m.offset, dead_letters = %stream, "setting aside a message whose {what} does not deserialize: {}", e.0);
                let t = self.inputs[i].task;
                self.tasks[t].collector.send_raw(stream, None, m.key.as_deref(), m.value.as_deref(), Some(m.timestamp));
                self.route(t)?;
            }
        }
        self.metrics.counter("container", "deserialization-errors").inc();
        self.inputs[i].next_offset = m.offset + 1;
        Ok(())
    }

    /// Sends what every task collected.
    fn route_all(&mut self) -> Result<(), RuntimeError> {
        for t in 0..self.tasks.len() {
            self.route(t)?;
        }
        Ok(())
    }

    /// Sends what task `t` collected.
    pub(crate) fn route(&mut self, t: usize) -> Result<(), RuntimeError> {
        let task = &mut self.tasks[t];
        let (sends, buf) = task.collector.pending();
        if sends.is_empty() {
            return Ok(());
        }
        // Streams the task sends to for the first time get their routes.
        let streams = task.collector.streams();
        while task.routes.len() < streams.len() {
            let stream = &streams[task.routes.len()];
            task.routes.push(self.router.route_of(&self.job, &self.systems, stream)?);
        }
        let mut producers = self.producers.borrow_mut();
        for send in sends {
            self.router.send(task.routes[send.stream as usize], &mut producers, send, buf, task.stamp.as_mut())?;
        }
        self.sends.add(sends.len() as u64);
        task.collector.clear();
        Ok(())
    }

    /// Acts on what task `t` asked of its coordinator.
    fn coordinate(&mut self, t: usize) {
        let task = &mut self.tasks[t];
        if task.coordinator.take_commit() {
            self.commit_requested = true;
        }
        match task.coordinator.take_shutdown() {
            Some(ShutdownScope::Container) => {
                self.commit_requested = true;
                self.stop_requested = true;
            }
            Some(ShutdownScope::Task) => {
                task.stopped = true;
                self.commit_requested = true;
                for &i in &task.inputs {
                    self.chooser.clear(i);
                }
            }
            None => {}
        }
    }

    /// Marks inputs that reached their end, finishes bootstrapping, and calls
    /// `end_of_stream` on tasks whose inputs all ended.
    fn check_ends(&mut self) -> Result<(), RuntimeError> {
        self.check_barrier()?;
        for i in 0..self.inputs.len() {
            let input = &self.inputs[i];
            let position = self.consumers[input.consumer].position(&input.ssp).unwrap_or(0);
            let buffered = self.chooser.len(i);
            let caught_up = |end: u64| input.next_offset >= end || (position >= end && buffered == 0);
            let end = input.end.or_else(|| self.consumers[input.consumer].end_of_stream(&input.ssp));
            let ended = !input.ended && end.is_some_and(caught_up);
            let bootstrapped = input.bootstrap_end.is_some_and(caught_up) && self.chooser.bootstrapping().contains(&i);
            if ended {
                self.inputs[i].ended = true;
            }
            if bootstrapped {
                self.chooser.bootstrap_done(i);
            }
        }
        for t in 0..self.tasks.len() {
            let task = &self.tasks[t];
            let ended = !task.inputs.is_empty() && task.inputs.iter().all(|&i| self.inputs[i].ended);
            if task.end_of_stream_called || task.stopped || !ended {
                continue;
            }
            let task = &mut self.tasks[t];
            task.end_of_stream_called = true;
            call_task(&task.name, "end_of_stream", || {
                task.task.end_of_stream(&mut task.collector, &mut task.coordinator)
            })?;
            self.route(t)?;
            self.coordinate(t);
        }
        Ok(())
    }

    /// Under `until_end`: arrive at the barrier once all non-intermediate
    /// inputs ended (after a commit, so our sends are durable); once everyone
    /// arrived, fix the ends of the intermediate inputs.
    fn check_barrier(&mut self) -> Result<(), RuntimeError> {
        let Some((barrier, arrived)) = self.end_barrier.clone() else { return Ok(()) };
        if !arrived {
            // Every container arrives (even one without intermediate inputs,
            // or without tasks), once its other inputs are done.
            if self.inputs.iter().all(|i| i.intermediate || i.ended || self.tasks[i.task].stopped) {
                self.commit(false)?;
                barrier.arrive(&self.id)?;
                self.end_barrier = Some((barrier, true));
            }
            return Ok(());
        }
        if barrier.complete() && self.inputs.iter().any(|i| i.intermediate && i.end.is_none()) {
            for i in self.inputs.iter_mut().filter(|i| i.intermediate && i.end.is_none()) {
                i.end = Some(self.systems.offsets(&i.ssp)?.next);
            }
            // What this container sent to intermediate streams since its last
            // commit (a Streams API task's watermarks, `window` sends) lies
            // before those ends in an open transaction, which read-committed
            // readers wait for: commit at the end of this turn rather than at
            // the next interval.
            if self.router.sent_to_inputs {
                self.commit_requested = true;
            }
        }
        Ok(())
    }

    fn window(&mut self) -> Result<(), RuntimeError> {
        for t in 0..self.tasks.len() {
            let task = &mut self.tasks[t];
            if task.stopped {
                continue;
            }
            call_task(&task.name, "window", || task.task.window(&mut task.collector, &mut task.coordinator))?;
            self.route(t)?;
            self.coordinate(t);
        }
        Ok(())
    }

    /// Input offsets and lags every [`GAUGE_REFRESH`], from what the
    /// consumers know without I/O; before a report, a consumer that knows
    /// nothing is asked its system (a broker round trip, as before metrics
    /// were served). A failed read leaves the gauge as it was.
    fn report(&mut self, now: Instant) -> Result<(), RuntimeError> {
        let reporting = self.reporters.iter().any(|r| now >= r.next);
        if !reporting && now < self.next_gauges {
            return Ok(());
        }
        self.next_gauges = now + GAUGE_REFRESH;
        for (n, i) in self.inputs.iter().enumerate() {
            let group = gregor_api::Group::input(&i.ssp);
            self.metrics.gauge(&group, "offset").set(i.next_offset as i64);
            // Past what the consumer skipped (transaction markers, aborted
            // records, compaction gaps) once nothing of it waits here.
            let consumer = &self.consumers[i.consumer];
            let read = match consumer.position(&i.ssp) {
                Some(p) if self.chooser.len(n) == 0 => p.max(i.next_offset),
                _ => i.next_offset,
            };
            let end = match consumer.end_hint(&i.ssp) {
                Some(end) => Some(end),
                None if reporting => self.systems.offsets(&i.ssp).map(|o| o.next).ok(),
                None => None,
            };
            if let Some(end) = end {
                self.metrics.gauge(&group, "lag").set(end.saturating_sub(read) as i64);
            }
        }
        if !reporting {
            return Ok(());
        }
        let mut producers = self.producers.borrow_mut();
        for r in &mut self.reporters {
            if now >= r.next {
                r.report(now, &self.job, &self.id, &self.metrics, &mut self.router, &self.systems, &mut producers)?;
            }
        }
        Ok(())
    }
}
