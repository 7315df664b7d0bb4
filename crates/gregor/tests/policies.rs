//! Config errors, deserialization policies, task failures and coordinator
//! requests, on the real embedded log.

mod common;

use gregor::runtime::Checkpoint;
use gregor::{
    App, IncomingEnvelope, MessageCollector, OutgoingEnvelope, ShutdownScope, StreamTask, SystemStream,
    TaskCoordinator, TaskError,
};
use serde_json::Value;
use std::path::Path;

/// Copies JSON messages to `log.out`; fails on {"fail":"error"}, panics on
/// {"fail":"panic"}; asks for a commit on {"commit":true} and for shutdown on
/// {"stop":true}.
#[derive(Default)]
struct Json;

impl StreamTask for Json {
    type Key = String;
    type Message = Value;

    fn process(
        &mut self,
        e: IncomingEnvelope<'_, String, Value>,
        c: &mut MessageCollector,
        co: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        let m = e.message.unwrap_or(Value::Null);
        match m.get("fail").and_then(Value::as_str) {
            Some("error") => return Err(TaskError::msg("the message asked to fail")),
            Some("panic") => panic!("the message asked to panic"),
            _ => {}
        }
        if m.get("commit") == Some(&Value::Bool(true)) {
            co.commit();
        }
        if m.get("stop") == Some(&Value::Bool(true)) {
            co.shutdown(ShutdownScope::Container);
        }
        let out = SystemStream::new("log", "out");
        c.send(OutgoingEnvelope::to_partition(&out, 0, e.key, m))?;
        Ok(())
    }
}

const BASE: &str =
    "job.name=j\ntask.inputs=log.in\nsystems.log.samza.key.serde=string\nsystems.log.samza.msg.serde=json\n";

fn setup(messages: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let input: Vec<(u32, Option<&str>, &str)> = messages.iter().map(|m| (0, Some("k"), *m)).collect();
    common::produce(dir.path(), "in", 1, &input);
    dir
}

fn run(dir: &Path, extra: &str) -> Result<gregor::RunSummary, gregor::JobError> {
    App::new("j", || Json).run_config(common::config(dir, &format!("{BASE}{extra}")), true, common::no_signal())
}

fn checkpointed_offset(dir: &Path) -> Option<u64> {
    let cps = common::read(dir, "__gregor-checkpoints-j-1");
    let last = cps.iter().rev().find(|m| m.2.as_deref() == Some("Partition 0"))?;
    let cp: Checkpoint = serde_json::from_str(last.3.as_ref()?).unwrap();
    cp.inputs.values().next().copied()
}

#[test]
fn config_mistakes_are_reported_before_any_work() {
    let dir = setup(&["{}"]);
    let err = run(dir.path(), "task.comit.ms=10\n").unwrap_err().to_string();
    assert!(err.contains("unknown config key 'task.comit.ms' (did you mean 'task.commit.ms'?)"), "{err}");
    let err = run(dir.path(), "systems.log.samza.msg.serde=long\n").unwrap_err().to_string();
    assert!(err.contains("serde 'long' produces i64"), "{err}");
    let err = run(dir.path(), "task.inputs=log.nope\n").unwrap_err().to_string();
    assert!(err.contains("stream log.nope does not exist"), "{err}");
    assert!(common::read(dir.path(), "in").len() == 1);
}

#[test]
fn an_undecodable_message_fails_the_job_by_default_and_names_its_position() {
    let dir = setup(&["{\"a\":1}", "not json", "{\"a\":3}"]);
    let err = run(dir.path(), "").unwrap_err().to_string();
    assert!(err.contains("message at offset 1 of log.in[0]"), "{err}");
    assert!(err.contains("task.drop.deserialization.errors"), "the error says how to change the policy: {err}");
    assert!(checkpointed_offset(dir.path()).is_none_or(|o| o <= 1), "nothing committed past the bad message");
}

#[test]
fn undecodable_messages_can_be_dropped_or_set_aside() {
    let dir = setup(&["{\"a\":1}", "not json", "{\"a\":3}"]);
    assert_eq!(run(dir.path(), "task.drop.deserialization.errors=true\n").unwrap().processed, 2);
    assert_eq!(common::read(dir.path(), "out").len(), 2);
    assert_eq!(checkpointed_offset(dir.path()), Some(3));

    let dir = setup(&["{\"a\":1}", "not json", "{\"a\":3}"]);
    assert_eq!(run(dir.path(), "task.deserialization.errors.stream=log.dead-letters\n").unwrap().processed, 2);
    let dead = common::read(dir.path(), "dead-letters");
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].2.as_deref(), dead[0].3.as_deref()), (Some("k"), Some("not json")), "set aside byte for byte");
}

#[test]
fn a_failing_task_stops_without_committing_past_the_failure() {
    for (how, expected) in [("error", "the message asked to fail"), ("panic", "panicked: the message asked to panic")] {
        let bad = format!("{{\"fail\":\"{how}\"}}");
        // The task commits after each of the first two messages, right before the failure.
        let dir = setup(&["{\"n\":0,\"commit\":true}", "{\"n\":1,\"commit\":true}", &bad, "{\"n\":3}"]);
        let err = run(dir.path(), "").unwrap_err().to_string();
        assert!(err.contains("task 'Partition 0' failed processing log.in[0] at offset 2"), "{err}");
        assert!(err.contains(expected), "{err}");
        assert_eq!(checkpointed_offset(dir.path()), Some(2), "{how}: committed up to, not past, the failing message");
    }
}

#[test]
fn a_task_can_stop_its_container() {
    let dir = setup(&["{\"n\":0}", "{\"stop\":true}", "{\"n\":2}"]);
    // Without --until-end the job would run forever; the task stops it.
    let summary =
        App::new("j", || Json).run_config(common::config(dir.path(), BASE), false, common::no_signal()).unwrap();
    assert_eq!(summary.processed, 2);
    assert_eq!(checkpointed_offset(dir.path()), Some(2), "the final commit covers what was processed");
}

#[test]
fn metrics_snapshots_go_to_a_stream() {
    let dir = setup(&["{}", "{}", "{}"]);
    let extra =
        "metrics.reporters=snap\nmetrics.reporter.snap.factory=stream\nmetrics.reporter.snap.stream=log.metrics\n";
    run(dir.path(), extra).unwrap();
    let snapshots = common::read(dir.path(), "metrics");
    let last: Value = serde_json::from_str(snapshots.last().unwrap().3.as_ref().unwrap()).unwrap();
    assert_eq!(last["job"], "j");
    assert_eq!(last["metrics"]["task.Partition 0"]["messages-processed"], 3);
    assert_eq!(last["metrics"]["input.log.in[0]"]["messages-processed"], 3);
}
