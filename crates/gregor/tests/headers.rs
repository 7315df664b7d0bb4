//! Message headers end to end: a task reads the headers of what it
//! receives and adds its own to what it sends (under the test harness), and
//! the embedded log stores and returns them byte for byte, in order, with
//! repeated names kept.

use gregor::testing::TestJob;
use gregor::{
    App, Config, IncomingEnvelope, MessageCollector, OutgoingEnvelope, StreamTask, SystemStream, TaskCoordinator,
    TaskError,
};
use gregor_api::StartOffset;
use gregor_api::system::SystemFactory;
use std::time::Duration;

/// Forwards each message to `log.out` with the incoming `trace-id` header
/// and a `hop` header of its own.
#[derive(Default)]
struct Forward;

impl StreamTask for Forward {
    type Key = String;
    type Message = String;

    fn process(
        &mut self,
        e: IncomingEnvelope<'_, String, String>,
        c: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        let trace = e.header("trace-id").unwrap_or(b"none").to_vec();
        let out = SystemStream::new("log", "out");
        let message = e.message.unwrap_or_default();
        c.send(
            OutgoingEnvelope::to_partition(&out, 0, None::<String>, message)
                .with_header("trace-id", &trace)
                .with_header("hop", b"1"),
        )?;
        Ok(())
    }
}

#[test]
fn a_task_reads_and_writes_headers() {
    let config = Config::from_properties(
        "job.name=fwd\ntask.inputs=log.in\ntask.processing.guarantee=at-least-once\nsystems.log.factory=log\n\
         systems.log.samza.offset.default=oldest\nsystems.log.samza.key.serde=string\nsystems.log.samza.msg.serde=string\n",
        "test",
    )
    .unwrap();
    let mut job = TestJob::new(App::new("fwd", || Forward), config).unwrap();
    job.create_stream("in", 1).unwrap();
    job.create_stream("out", 1).unwrap();
    let input = job.input::<String, String>("in").unwrap();
    input.send_with_headers(0, None, Some("a".into()), &[("trace-id", b"t-1")]).unwrap();
    input.send_value(0, "b".into()).unwrap();
    job.run().unwrap();
    let out = job.output::<String, String>("out").unwrap();
    let headers: Vec<Vec<(String, Vec<u8>)>> =
        out.records().iter().map(|r| r.headers.iter().map(|(n, v)| (n.clone(), v.to_vec())).collect()).collect();
    let h = |n: &str, v: &[u8]| (n.to_owned(), v.to_vec());
    assert_eq!(headers, [vec![h("trace-id", b"t-1"), h("hop", b"1")], vec![h("trace-id", b"none"), h("hop", b"1")]]);
}

#[test]
fn the_embedded_log_keeps_headers_in_order_with_repeated_names() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new();
    config.set("systems.log.factory", "log");
    config.set("systems.log.path", dir.path().display().to_string());
    let log = gregor_log::system::LogSystemFactory::from_config(&config, "log").unwrap();
    let stream = SystemStream::new("log", "h");
    log.admin().unwrap().ensure_stream(&stream, 1, gregor_api::system::StreamKind::Regular).unwrap();
    let mut producer = log.producer().unwrap();
    let slot = producer.slot(&stream.partition(0)).unwrap();
    let binary = [0u8, 255, 7];
    producer.send_with_headers(slot, None, Some(b"x"), 5, &[("a", b"1"), ("bin", &binary), ("a", b"2")]).unwrap();
    producer.send(slot, None, Some(b"y"), 6).unwrap();
    producer.flush().unwrap();
    let mut consumer = log.consumer().unwrap();
    consumer.register(&stream.partition(0), StartOffset::Oldest).unwrap();
    consumer.start().unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        consumer.poll(&|_| true, &mut |_, m| got.push(m), Duration::from_millis(100)).unwrap();
    }
    let headers: Vec<(String, Vec<u8>)> = got[0].headers.iter().map(|(n, v)| (n.clone(), v.to_vec())).collect();
    assert_eq!(
        headers,
        [("a".to_owned(), b"1".to_vec()), ("bin".to_owned(), binary.to_vec()), ("a".to_owned(), b"2".to_vec())]
    );
    assert!(got[1].headers.is_empty());
}
