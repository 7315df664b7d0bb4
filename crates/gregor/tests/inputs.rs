//! How a container reads its inputs, driven with the test harness: where
//! inputs start after a checkpoint that no longer fits the stream, the
//! bootstrap and priority choosers, deserialization policies, partition
//! count changes, and `window` timing under the manual clock.

use gregor::runtime::RuntimeError;
use gregor::testing::{MetricValue, TestJob};
use gregor::{
    App, Config, IncomingEnvelope, JobError, MessageCollector, OutgoingEnvelope, StreamTask, SystemStream,
    TaskCoordinator, TaskError,
};
use std::time::Duration;

/// Sends `<stream>:<offset>:<value>` of every message to `log.seen`
/// (partition 0, so the order of processing is kept), and `window` to
/// `log.windows` at each window call.
#[derive(Default)]
struct Record;

impl StreamTask for Record {
    type Key = String;
    type Message = String;

    fn process(
        &mut self,
        e: IncomingEnvelope<'_, String, String>,
        c: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        let seen = format!("{}:{}:{}", e.ssp.stream.stream, e.offset, e.message.unwrap_or_default());
        c.send(OutgoingEnvelope::to_partition(&SystemStream::new("log", "seen"), 0, None::<String>, seen))?;
        Ok(())
    }

    fn window(&mut self, c: &mut MessageCollector, _: &mut TaskCoordinator) -> Result<(), TaskError> {
        c.send(OutgoingEnvelope::to_partition(
            &SystemStream::new("log", "windows"),
            0,
            None::<String>,
            "window".to_owned(),
        ))?;
        Ok(())
    }
}

fn job(inputs: &str, extra: &str) -> TestJob<Record> {
    let config = Config::from_properties(
        &format!(
            "job.name=rec\ntask.inputs={inputs}\ntask.commit.ms=1000\nsystems.log.factory=log\n\
             systems.log.samza.offset.default=oldest\nsystems.log.samza.key.serde=string\n\
             systems.log.samza.msg.serde=string\n{extra}"
        ),
        "test",
    )
    .unwrap();
    let job = TestJob::new(App::new("rec", || Record), config).unwrap();
    job.create_stream("seen", 1).unwrap();
    job.create_stream("windows", 1).unwrap();
    job
}

fn seen(job: &TestJob<Record>) -> Vec<String> {
    job.output::<String, String>("seen").unwrap().values()
}

fn send(job: &TestJob<Record>, stream: &str, values: &[&str]) {
    let input = job.input::<String, String>(stream).unwrap();
    for v in values {
        input.send_value(0, (*v).to_owned()).unwrap();
    }
}

#[test]
fn a_checkpoint_past_the_end_of_a_recreated_stream_falls_back_to_the_offset_default() {
    for (default, expected) in
        [("oldest", vec!["in:0:new-a", "in:1:new-b", "in:2:new-c"]), ("upcoming", vec!["in:2:new-c"])]
    {
        let mut job = job("log.in", &format!("streams.in.samza.offset.default={default}\n"));
        job.create_stream("in", 1).unwrap();
        job.run().unwrap(); // started (an `upcoming` input starts at the end: 0)
        send(&job, "in", &["a", "b", "c", "d", "e"]);
        job.run().unwrap();
        job.commit().unwrap();
        assert_eq!(seen(&job).len(), 5);
        job.crash("0").unwrap();
        // The stream is deleted and created again, shorter than the checkpoint (5).
        let streams = job.memory_streams("log").unwrap();
        streams.delete_stream("in").unwrap();
        streams.create_stream("in", 1).unwrap();
        send(&job, "in", &["new-a", "new-b"]);
        job.restart("0").unwrap();
        send(&job, "in", &["new-c"]);
        job.run().unwrap();
        let after: Vec<String> = seen(&job).into_iter().skip(5).collect();
        assert_eq!(after, expected, "samza.offset.default={default}: not the stream's end, not skipped data");
    }
}

#[test]
fn bootstrap_inputs_are_read_to_their_end_before_anything_else() {
    let mut job = job("log.events,log.profiles", "streams.profiles.samza.bootstrap=true\n");
    job.create_stream("events", 1).unwrap();
    job.create_stream("profiles", 1).unwrap();
    send(&job, "events", &["e1", "e2"]);
    send(&job, "profiles", &["p1", "p2", "p3"]);
    job.run().unwrap();
    let order: Vec<String> = seen(&job).iter().map(|s| s.split(':').next().unwrap().to_owned()).collect();
    assert_eq!(order, ["profiles", "profiles", "profiles", "events", "events"]);
}

#[test]
fn higher_priority_inputs_are_chosen_first() {
    let mut job = job("log.low,log.high", "streams.high.samza.priority=5\n");
    job.create_stream("low", 1).unwrap();
    job.create_stream("high", 1).unwrap();
    send(&job, "low", &["l1", "l2"]);
    send(&job, "high", &["h1", "h2"]);
    job.run().unwrap();
    let values: Vec<String> = seen(&job).iter().map(|s| s.rsplit(':').next().unwrap().to_owned()).collect();
    assert_eq!(values, ["h1", "h2", "l1", "l2"]);
}

#[test]
fn deserialization_policies() {
    let bad = bytes::Bytes::from_static(&[0xff, 0xfe]); // not UTF-8
    let feed = |job: &TestJob<Record>| {
        job.create_stream("in", 1).unwrap();
        send(job, "in", &["ok-1"]);
        job.memory_streams("log").unwrap().append("in", 0, [(None, Some(bad.clone()), 0)]).unwrap();
        send(job, "in", &["ok-2"]);
    };
    // Default: the job fails, naming the offset, and commits nothing past it.
    let mut job = job("log.in", "");
    feed(&job);
    let err = job.run().unwrap_err();
    assert!(
        matches!(&err, JobError::Runtime(RuntimeError::Deserialization { offset: 1, what: "message", .. })),
        "{err}"
    );
    assert!(!job.is_running("0"));
    job.restart("0").unwrap();
    assert!(job.run().is_err(), "after a restart the same message fails again: nothing was skipped");
    // Dropped and counted.
    let mut job = job_with("task.drop.deserialization.errors=true\n");
    feed(&job);
    job.run().unwrap();
    let values: Vec<String> = seen(&job).iter().map(|s| s.rsplit(':').next().unwrap().to_owned()).collect();
    assert_eq!(values, ["ok-1", "ok-2"]);
    assert_eq!(job.metrics("0").unwrap()["container"]["deserialization-errors"], MetricValue::Counter(1));
    // Set aside, bytes unchanged.
    let mut job = job_with("task.deserialization.errors.stream=log.dead\nstreams.dead.samza.msg.serde=bytes\n");
    job.create_stream("dead", 1).unwrap();
    feed(&job);
    job.run().unwrap();
    assert_eq!(job.output::<String, bytes::Bytes>("dead").unwrap().values(), vec![bad]);
}

fn job_with(extra: &str) -> TestJob<Record> {
    job("log.in", extra)
}

#[test]
fn a_partition_count_change_stops_the_job_naming_the_stream() {
    let mut job = job("log.in", "job.coordinator.monitor-partition-change.frequency.ms=10000\n");
    job.create_stream("in", 2).unwrap();
    send(&job, "in", &["a"]);
    job.run().unwrap();
    job.memory_streams("log").unwrap().grow_stream("in", 3).unwrap();
    job.advance_time(Duration::from_millis(9_999));
    job.run().unwrap();
    job.advance_time(Duration::from_millis(1));
    let err = job.run().unwrap_err().to_string();
    assert!(err.contains("log.in now has 3 partitions, 2 when the job model was computed"), "{err}");
}

#[test]
fn window_is_called_on_time_by_the_manual_clock() {
    let mut job = job("log.in", "task.window.ms=500\n");
    job.create_stream("in", 1).unwrap();
    job.run().unwrap();
    let windows = |job: &TestJob<Record>| job.output::<String, String>("windows").unwrap().len();
    job.advance_time(Duration::from_millis(499));
    job.run().unwrap();
    assert_eq!(windows(&job), 0);
    job.advance_time(Duration::from_millis(1));
    job.run().unwrap();
    assert_eq!(windows(&job), 1);
    job.run().unwrap();
    assert_eq!(windows(&job), 1, "not again before another 500 ms");
    job.advance_time(Duration::from_millis(500));
    job.run().unwrap();
    assert_eq!(windows(&job), 2);
}

#[test]
fn an_ended_stream_ends_its_tasks() {
    let mut job = job("log.in", "");
    job.create_stream("in", 1).unwrap();
    send(&job, "in", &["a", "b"]);
    job.run().unwrap();
    assert!(job.is_running("0"));
    job.end_stream("in").unwrap();
    let summary = job.run_to_end().unwrap();
    assert_eq!(summary.processed, 2);
    assert_eq!(seen(&job).len(), 2);
}

/// Receives `bytes::Bytes` and sends each message's text to `log.seen`.
#[derive(Default)]
struct RecordBytes;

impl StreamTask for RecordBytes {
    type Key = bytes::Bytes;
    type Message = bytes::Bytes;

    fn process(
        &mut self,
        e: IncomingEnvelope<'_, bytes::Bytes, bytes::Bytes>,
        c: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        let text = String::from_utf8_lossy(&e.message.unwrap_or_default()).into_owned();
        let key = e.key.map(|k| String::from_utf8_lossy(&k).into_owned());
        c.send(OutgoingEnvelope::to_partition(&SystemStream::new("log", "seen"), 0, key, text))?;
        Ok(())
    }
}

/// Decodes by upper-casing (encodes as is).
struct Upper;

impl gregor::Serde<bytes::Bytes> for Upper {
    fn encode(&self, v: &bytes::Bytes, out: &mut Vec<u8>) -> Result<(), gregor::SerdeError> {
        out.extend_from_slice(v);
        Ok(())
    }
    fn decode(&self, b: &[u8]) -> Result<bytes::Bytes, gregor::SerdeError> {
        Ok(b.to_ascii_uppercase().into())
    }
}

#[test]
fn input_bytes_reach_the_task_as_they_are_unless_the_app_registers_its_own_serde() {
    // The built-in `bytes` serde hands the buffers over without being called;
    // a serde the app registers for `Bytes`, even under that name, is called.
    for (app, expected) in [
        (App::new("rec", || RecordBytes), ("k1", "hello")),
        (App::new("rec", || RecordBytes).serde("bytes", Upper), ("K1", "HELLO")),
    ] {
        let config = Config::from_properties(
            "job.name=rec\ntask.inputs=log.in\nsystems.log.factory=log\nsystems.log.samza.offset.default=oldest\n\
             systems.log.samza.key.serde=bytes\nsystems.log.samza.msg.serde=bytes\n\
             streams.seen.samza.key.serde=string\nstreams.seen.samza.msg.serde=string\n",
            "test",
        )
        .unwrap();
        let mut job = TestJob::new(app, config).unwrap();
        job.create_stream("in", 1).unwrap();
        job.create_stream("seen", 1).unwrap();
        let input = job.input::<bytes::Bytes, bytes::Bytes>("in").unwrap();
        input.send(0, bytes::Bytes::from_static(b"k1"), bytes::Bytes::from_static(b"hello")).unwrap();
        job.run_to_end().unwrap();
        let seen = job.output::<String, String>("seen").unwrap();
        let out = seen.records();
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].key.as_deref(), out[0].value.as_deref()), (Some(expected.0), Some(expected.1)));
    }
}
