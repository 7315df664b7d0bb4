//! `StreamTask::prefetch`, driven with the test harness: which messages a
//! task is shown and when, a task that declines, a panic in it, and counts
//! that stay exact in a RocksDB store whose keys are prefetched.

use gregor::testing::TestJob;
use gregor::{
    App, Config, IncomingEnvelope, JobError, KeyValueStore, MessageCollector, Store, StreamTask, TaskContext,
    TaskCoordinator, TaskError, Upcoming,
};
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy)]
enum Answer {
    Prefetch,
    Decline,
    Panic,
}

/// What the task saw: `(shown, offset)`, `shown` for a `prefetch` call and
/// not for a `process` call.
type Events = Arc<Mutex<Vec<(bool, u64)>>>;

/// Counts messages per key in the RocksDB store `counts`, prefetching each
/// upcoming key as `answer` says.
struct Watch {
    events: Events,
    answer: Answer,
    counts: Option<Store<String, i64>>,
}

impl StreamTask for Watch {
    type Key = String;
    type Message = String;

    fn init(&mut self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        self.counts = Some(ctx.store("counts")?);
        Ok(())
    }

    fn prefetch(&mut self, upcoming: Upcoming<'_>) -> bool {
        self.events.lock().unwrap().push((true, upcoming.offset));
        match self.answer {
            Answer::Prefetch => {
                if let (Some(counts), Some(key)) = (&self.counts, upcoming.key) {
                    counts.prefetch_raw(key);
                }
                true
            }
            Answer::Decline => false,
            Answer::Panic => panic!("no look-ahead today"),
        }
    }

    fn process(
        &mut self,
        e: IncomingEnvelope<'_, String, String>,
        _: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        self.events.lock().unwrap().push((false, e.offset));
        let (Some(counts), Some(key)) = (&self.counts, &e.key) else { return Ok(()) };
        counts.put(key, &(counts.get(key)?.unwrap_or(0) + 1))?;
        Ok(())
    }
}

const MESSAGES: u64 = 200;

/// A job over one partition holding [`MESSAGES`] messages keyed over 7 keys.
fn job(answer: Answer) -> (TestJob<Watch>, Events) {
    let config = Config::from_properties(
        "job.name=watch\ntask.inputs=log.in\nsystems.log.factory=log\nsystems.log.samza.offset.default=oldest\n\
         systems.log.samza.key.serde=string\nsystems.log.samza.msg.serde=string\n\
         stores.counts.factory=rocksdb\nstores.counts.key.serde=string\nstores.counts.msg.serde=long\n\
         stores.counts.changelog=log.watch-counts\n",
        "test",
    )
    .unwrap();
    let events = Events::default();
    let shared = events.clone();
    let app = App::new("watch", move || Watch { events: shared.clone(), answer, counts: None });
    let job = TestJob::new(app, config).unwrap();
    job.create_stream("in", 1).unwrap();
    let input = job.input::<String, String>("in").unwrap();
    for i in 0..MESSAGES {
        input.send(0, format!("k{}", i % 7), "v".to_owned()).unwrap();
    }
    (job, events)
}

#[test]
fn messages_are_shown_in_order_a_few_ahead_of_process_and_counts_stay_exact() {
    let (mut job, events) = job(Answer::Prefetch);
    job.run_to_end().unwrap();
    let events = events.lock().unwrap().clone();
    let processed: Vec<u64> = events.iter().filter(|e| !e.0).map(|e| e.1).collect();
    assert_eq!(processed, (0..MESSAGES).collect::<Vec<_>>());
    let shown: Vec<u64> = events.iter().filter(|e| e.0).map(|e| e.1).collect();
    assert!(shown.windows(2).all(|w| w[0] < w[1]), "each shown once, in order: {shown:?}");
    assert!(shown.len() as u64 >= MESSAGES - 10, "all but the first of each fetch: {} shown", shown.len());
    // Each message is shown before it is processed, within the 8 messages
    // that come next.
    let mut last_processed: Option<u64> = None;
    for &(is_shown, offset) in &events {
        if is_shown {
            let next = last_processed.map_or(0, |p| p + 1);
            assert!(offset >= next && offset < next + 8, "offset {offset} shown when {next} comes next");
        } else {
            last_processed = Some(offset);
        }
    }
    let counts = job.store::<String, i64>("Partition 0", "counts").unwrap();
    let expected: Vec<(String, i64)> = (0..7).map(|k| (format!("k{k}"), ((MESSAGES - k) as i64 + 6) / 7)).collect();
    assert_eq!(counts.into_iter().collect::<Vec<_>>(), expected);
}

#[test]
fn a_task_that_declines_is_shown_one_message() {
    let (mut job, events) = job(Answer::Decline);
    job.run_to_end().unwrap();
    let events = events.lock().unwrap();
    assert_eq!(events.iter().filter(|e| e.0).count(), 1);
    assert_eq!(events.iter().filter(|e| !e.0).count() as u64, MESSAGES);
}

#[test]
fn a_panic_in_prefetch_stops_the_container_naming_it_and_commits_nothing() {
    let (mut job, events) = job(Answer::Panic);
    let err = job.run().unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, JobError::Runtime(_)), "{text}");
    assert!(text.contains("prefetch panicked: no look-ahead today") && text.contains("offset 1"), "{text}");
    // The panic came right after the first message was processed (the
    // look-ahead follows each message).
    let processed: Vec<u64> = events.lock().unwrap().iter().filter(|e| !e.0).map(|e| e.1).collect();
    assert_eq!(processed, [0]);
    assert!(job.store::<String, i64>("Partition 0", "counts").unwrap().is_empty());
}
