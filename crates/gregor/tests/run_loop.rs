//! The container run loop with several tasks and containers, on the real
//! embedded log: every message processed exactly once in a crash-free run,
//! per-partition order kept, outputs routed to the right partitions.

mod common;

use gregor::{
    App, IncomingEnvelope, MessageCollector, OutgoingEnvelope, StreamTask, SystemStream, TaskContext, TaskCoordinator,
    TaskError,
};
use gregor_api::system::{PartitionOffsets, StreamKind, SystemAdmin, SystemError, SystemFactory};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Sends each message twice: to `out-same` in the input's partition, and
/// keyed (by the input key) to `out-keyed`.
#[derive(Default)]
struct Copy {
    same: Option<SystemStream>,
    keyed: Option<SystemStream>,
    task: String,
}

impl StreamTask for Copy {
    type Key = String;
    type Message = String;

    fn init(&mut self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        self.same = SystemStream::parse("log.out-same");
        self.keyed = SystemStream::parse("log.out-keyed");
        self.task = ctx.task_name().to_owned();
        Ok(())
    }

    fn process(
        &mut self,
        e: IncomingEnvelope<'_, String, String>,
        c: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        let value = format!("{}|{}|{}", e.message.unwrap_or_default(), e.ssp, self.task);
        let same = self.same.as_ref().unwrap();
        c.send(OutgoingEnvelope::to_partition(same, e.ssp.partition, e.key.clone(), value.clone()))?;
        c.send(OutgoingEnvelope::keyed(self.keyed.as_ref().unwrap(), e.key.unwrap_or_default(), value))?;
        Ok(())
    }
}

fn run_copy(containers: u32, grouper: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut input = Vec::new();
    let texts: Vec<(u32, String, String)> =
        (0..400u32).map(|i| (i % 4, format!("k{}", i % 13), format!("m{i}"))).collect();
    for (p, k, v) in &texts {
        input.push((*p, Some(k.as_str()), v.as_str()));
    }
    common::produce(dir.path(), "in", 4, &input);
    common::produce(dir.path(), "out-same", 4, &[]);
    common::produce(dir.path(), "out-keyed", 3, &[]);
    let config = common::config(
        dir.path(),
        &format!(
            "job.name=copy\ntask.inputs=log.in\njob.container.count={containers}\njob.systemstreampartition.grouper={grouper}\n\
             systems.log.samza.key.serde=string\nsystems.log.samza.msg.serde=string\n"
        ),
    );
    let summary = App::new("copy", Copy::default).run_config(config, true, common::no_signal()).unwrap();
    assert_eq!(summary.processed, 400);

    let same = common::read(dir.path(), "out-same");
    assert_eq!(same.len(), 400, "each input exactly once");
    let mut tasks_per_partition: BTreeMap<u32, std::collections::BTreeSet<String>> = BTreeMap::new();
    for p in 0..4u32 {
        let values: Vec<String> = same.iter().filter(|m| m.0 == p).map(|m| m.3.clone().unwrap()).collect();
        let expected: Vec<String> = texts.iter().filter(|t| t.0 == p).map(|t| t.2.clone()).collect();
        let got: Vec<String> = values.iter().map(|v| v.split('|').next().unwrap().to_owned()).collect();
        assert_eq!(got, expected, "partition {p}: same messages, same order");
        assert!(values.iter().all(|v| v.contains(&format!("log.in[{p}]"))));
        tasks_per_partition
            .entry(p)
            .or_default()
            .extend(values.iter().map(|v| v.rsplit('|').next().unwrap().to_owned()));
    }
    assert!(
        tasks_per_partition.values().all(|t| t.len() == 1),
        "one task per input partition: {tasks_per_partition:?}"
    );
    let keyed = common::read(dir.path(), "out-keyed");
    assert_eq!(keyed.len(), 400);
    for (p, _, k, _) in &keyed {
        assert_eq!(
            *p,
            gregor_api::partition_for_key(k.as_ref().unwrap().as_bytes(), 3),
            "keyed output partitioned like Kafka"
        );
    }
}

#[test]
fn one_container_processes_every_message_once_in_order() {
    run_copy(1, "partition");
}

#[test]
fn three_containers_share_the_tasks() {
    run_copy(3, "partition");
}

#[test]
fn group_by_ssp_gives_one_task_per_partition() {
    run_copy(2, "ssp");
}

#[test]
fn a_second_run_resumes_from_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    common::produce(dir.path(), "in", 2, &[(0, Some("a"), "1"), (1, Some("b"), "2")]);
    let text =
        "job.name=copy\ntask.inputs=log.in\nsystems.log.samza.key.serde=string\nsystems.log.samza.msg.serde=string\n";
    let app = App::new("copy", Copy::default);
    assert_eq!(app.run_config(common::config(dir.path(), text), true, common::no_signal()).unwrap().processed, 2);
    common::produce(dir.path(), "in", 2, &[(0, Some("c"), "3")]);
    assert_eq!(
        app.run_config(common::config(dir.path(), text), true, common::no_signal()).unwrap().processed,
        1,
        "only the new message"
    );
    assert_eq!(common::read(dir.path(), "out-same").len(), 3);
    // reset.offset ignores the checkpoint.
    let reset = format!("{text}streams.in.samza.reset.offset=true\n");
    assert_eq!(app.run_config(common::config(dir.path(), &reset), true, common::no_signal()).unwrap().processed, 3);
}

#[test]
fn a_bounded_input_ends_the_job_without_until_end() {
    let dir = tempfile::tempdir().unwrap();
    common::produce(dir.path(), "in", 2, &[(0, Some("a"), "1"), (1, Some("b"), "2"), (1, Some("c"), "3")]);
    let text = "job.name=copy\ntask.inputs=log.in\nsystems.log.samza.key.serde=string\nsystems.log.samza.msg.serde=string\nstreams.in.samza.bounded=true\n";
    let summary = App::new("copy", Copy::default)
        .run_config(common::config(dir.path(), text), false, common::no_signal())
        .unwrap();
    assert_eq!(summary.processed, 3);
}

/// Partitions the `growing` system adds to every count it reports.
static GROWN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The embedded log, whose streams never change partition count, seen
/// through an admin that reports `GROWN` more partitions (as a Kafka topic
/// that gained some would).
struct Growing(Arc<dyn SystemAdmin>);

impl SystemAdmin for Growing {
    fn partition_count(&self, stream: &SystemStream) -> Result<u32, SystemError> {
        Ok(self.0.partition_count(stream)? + GROWN.load(std::sync::atomic::Ordering::SeqCst))
    }
    fn offsets(&self, ssp: &gregor::SystemStreamPartition) -> Result<PartitionOffsets, SystemError> {
        self.0.offsets(ssp)
    }
    fn ensure_stream(&self, stream: &SystemStream, partitions: u32, kind: StreamKind) -> Result<(), SystemError> {
        self.0.ensure_stream(stream, partitions, kind)
    }
    fn set_compaction_limit(&self, ssp: &gregor::SystemStreamPartition, offset: u64) -> Result<(), SystemError> {
        self.0.set_compaction_limit(ssp, offset)
    }
}

struct GrowingFactory(Arc<dyn SystemFactory>);

impl SystemFactory for GrowingFactory {
    fn admin(&self) -> Result<Arc<dyn SystemAdmin>, SystemError> {
        Ok(Arc::new(Growing(self.0.admin()?)))
    }
    fn consumer(&self) -> Result<Box<dyn gregor_api::system::SystemConsumer>, SystemError> {
        self.0.consumer()
    }
    fn producer(&self) -> Result<Box<dyn gregor_api::system::SystemProducer>, SystemError> {
        self.0.producer()
    }
}

fn growing(config: &gregor::Config, name: &str) -> Result<Arc<dyn SystemFactory>, gregor_api::ConfigError> {
    let log: Arc<dyn SystemFactory> = Arc::new(gregor_log::system::LogSystemFactory::from_config(config, name)?);
    Ok(Arc::new(GrowingFactory(log)))
}

#[test]
fn an_input_that_gains_partitions_stops_the_job_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    common::produce(dir.path(), "in", 2, &[(0, Some("a"), "1"), (1, Some("b"), "2")]);
    common::produce(dir.path(), "out-same", 2, &[]);
    common::produce(dir.path(), "out-keyed", 2, &[]);
    let mut config = common::config(
        dir.path(),
        "job.name=copy\ntask.inputs=log.in\njob.coordinator.monitor-partition-change.frequency.ms=20\n\
         systems.log.samza.key.serde=string\nsystems.log.samza.msg.serde=string\n",
    );
    config.set("systems.log.factory", "growing");
    let job = std::thread::spawn(move || {
        App::new("copy", Copy::default).system_kind("growing", growing).run_config(config, false, common::no_signal())
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while common::read(dir.path(), "out-same").len() < 2 {
        assert!(std::time::Instant::now() < deadline, "the job never processed its input");
        if job.is_finished() {
            panic!("the job stopped early: {:?}", job.join().unwrap().err());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    GROWN.store(3, std::sync::atomic::Ordering::SeqCst);
    let err = job.join().unwrap().unwrap_err().to_string();
    assert!(err.contains("input log.in now has 5 partitions, 2 when the job model was computed"), "{err}");
}
