//! Which applications look ahead (`StreamTask::prefetch`): an aggregation
//! right after a source, or after key-keeping operators, says yes; an
//! application without a store says no. Counts stay exact either way.

use super::{GraphTask, StreamApp};
use crate::testing::TestJob;
use gregor_api::{
    Config, IncomingEnvelope, MessageCollector, RawBytes, StreamTask, TaskContext, TaskCoordinator, TaskError, Upcoming,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A Streams API task whose `prefetch` answers are recorded.
struct Watched {
    inner: GraphTask,
    answers: Arc<Mutex<Vec<bool>>>,
}

impl StreamTask for Watched {
    type Key = RawBytes;
    type Message = RawBytes;

    fn init(&mut self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        self.inner.init(ctx)
    }

    fn prefetch(&mut self, upcoming: Upcoming<'_>) -> bool {
        let answer = self.inner.prefetch(upcoming);
        self.answers.lock().unwrap().push(answer);
        answer
    }

    fn process(
        &mut self,
        e: IncomingEnvelope<'_, RawBytes, RawBytes>,
        out: &mut MessageCollector,
        coordinator: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        self.inner.process(e, out, coordinator)
    }

    fn window(&mut self, out: &mut MessageCollector, coordinator: &mut TaskCoordinator) -> Result<(), TaskError> {
        self.inner.window(out, coordinator)
    }

    fn before_commit(
        &mut self,
        out: &mut MessageCollector,
        coordinator: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        self.inner.before_commit(out, coordinator)
    }

    fn end_of_stream(
        &mut self,
        out: &mut MessageCollector,
        coordinator: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        self.inner.end_of_stream(out, coordinator)
    }

    fn close(&mut self) -> Result<(), TaskError> {
        self.inner.close()
    }
}

const KEYS: [&str; 5] = ["a", "b", "c", "d", "e"];

/// Runs `describe` over 100 messages of stream `in` (keys from [`KEYS`],
/// values `0..100`) in one partition; returns the job and every answer
/// `prefetch` gave.
fn run(
    describe: impl Fn(&mut StreamApp) -> Result<(), TaskError> + Send + Sync + 'static,
) -> (TestJob<Watched>, Vec<bool>) {
    let answers = Arc::new(Mutex::new(Vec::new()));
    let shared = answers.clone();
    let app = super::app("lookahead", describe).wrapped(move |inner| Watched { inner, answers: shared.clone() });
    let config = Config::from_properties(
        "job.name=lookahead\nsystems.log.factory=log\nsystems.log.samza.offset.default=oldest\n",
        "test",
    )
    .unwrap();
    let mut job = TestJob::new(app, config).unwrap();
    job.create_stream("in", 1).unwrap();
    let input = job.input::<String, i64>("in").unwrap();
    for i in 0..100_i64 {
        input.send(0, KEYS[i as usize % KEYS.len()].to_owned(), i).unwrap();
    }
    job.run_to_end().unwrap();
    let answers = answers.lock().unwrap().clone();
    (job, answers)
}

fn counts(job: &TestJob<Watched>, output: &str) -> BTreeMap<String, i64> {
    job.output::<String, i64>(output).unwrap().latest_by_key()
}

/// An aggregation fed by a source prefetches: every message is shown and
/// every answer is yes.
#[test]
fn a_count_after_its_source_looks_ahead() {
    let (job, answers) = run(|app| {
        let out = app.output::<String, i64>("out");
        app.input::<String, i64>("in").count("counts").to(&out);
        Ok(())
    });
    assert!(answers.len() >= 99, "shown {} of 100 messages", answers.len());
    assert!(answers.iter().all(|&a| a), "{answers:?}");
    let want: BTreeMap<String, i64> = KEYS.iter().map(|k| ((*k).to_owned(), 20)).collect();
    assert_eq!(counts(&job, "out"), want);
}

/// `filter` and `map_values` keep the key, so the count behind them still
/// prefetches the source's keys.
#[test]
fn key_keeping_operators_pass_the_look_ahead_on() {
    let (job, answers) = run(|app| {
        let out = app.output::<String, i64>("out");
        app.input::<String, i64>("in").filter(|_, v| v % 2 == 0).map_values(|v| v * 10).count("counts").to(&out);
        Ok(())
    });
    assert!(!answers.is_empty() && answers.iter().all(|&a| a), "{answers:?}");
    let want: BTreeMap<String, i64> = KEYS.iter().map(|k| ((*k).to_owned(), 10)).collect();
    assert_eq!(counts(&job, "out"), want);
}

/// Without a store nothing is worth loading early: the task declines at
/// once and is not shown another message.
#[test]
fn an_application_without_a_store_declines() {
    let (job, answers) = run(|app| {
        let out = app.output::<String, i64>("out");
        app.input::<String, i64>("in").map(|k, v| (format!("{k}!"), v)).to(&out);
        Ok(())
    });
    assert_eq!(answers, [false]);
    assert_eq!(job.output::<String, i64>("out").unwrap().len(), 100);
}
