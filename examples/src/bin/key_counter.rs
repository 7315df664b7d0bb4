//! Counts messages per key, on as many machines as you start it on.
//!
//! `key-counter --config config/key-counter.properties`
//!
//! Made for the `zookeeper` coordinator: start the same command several
//! times (with `--set processor.id=...` for readable ids) and the processes
//! share the input's partitions, rebalancing when one joins or dies. Each
//! count lives in a changelogged RocksDB store, so it moves with its task.
//!
//! Every processed message is also recorded in the audit stream as
//! `partition offset container model-version`: the job model version is a
//! fencing token, so the audit shows which assignment processed what (the
//! tests check that no partition was processed under an older assignment
//! after a newer one began).

use gregor::{
    App, IncomingEnvelope, KeyValueStore, MessageCollector, OutgoingEnvelope, Store, StreamTask, SystemStream,
    TaskContext, TaskCoordinator, TaskError,
};
use std::fmt::Write;
use std::process::ExitCode;

#[derive(Default)]
struct KeyCounter {
    output: Option<SystemStream>,
    audit: Option<SystemStream>,
    counts: Option<Store<String, i64>>,
    /// "<container> <version>", the tail of every audit record.
    who: String,
    record: String,
}

fn stream(ctx: &TaskContext<'_>, key: &str, example: &str) -> Result<SystemStream, TaskError> {
    let name = ctx.config().require(key, &format!("name the stream, e.g. {example}"))?;
    SystemStream::parse(name).ok_or_else(|| TaskError::msg(format!("{key}: '{name}' is not system.stream")))
}

impl StreamTask for KeyCounter {
    type Key = String;
    type Message = String;

    fn init(&mut self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        self.output = Some(stream(ctx, "key-counter.output", "log.key-counts")?);
        self.audit = Some(stream(ctx, "key-counter.audit", "log.key-counter-audit")?);
        self.counts = Some(ctx.store("counts")?);
        self.who = format!("{} {}", ctx.container_id(), ctx.job_model_version());
        Ok(())
    }

    fn process(
        &mut self,
        envelope: IncomingEnvelope<'_, String, String>,
        collector: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        let (Some(output), Some(audit), Some(counts)) = (&self.output, &self.audit, &self.counts) else {
            return Err(TaskError::msg("not initialised"));
        };
        let key = envelope.key.unwrap_or_default();
        let n = counts.get(&key)?.unwrap_or(0) + 1;
        counts.put(&key, &n)?;
        self.record.clear();
        let _ = write!(self.record, "{} {} {}", envelope.ssp.partition, envelope.offset, self.who);
        collector.send(OutgoingEnvelope::to_partition(audit, 0, None::<String>, self.record.clone()))?;
        collector.send(OutgoingEnvelope::keyed(output, key, n.to_string()))?;
        Ok(())
    }
}

fn app() -> App<KeyCounter> {
    App::new("key-counter", KeyCounter::default).config_key("key-counter.output").config_key("key-counter.audit")
}

fn main() -> ExitCode {
    app().main()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gregor::Config;
    use gregor::testing::TestJob;

    #[test]
    fn counts_per_key_and_audits_who_processed_what() {
        let mut config =
            Config::from_properties(include_str!("../../config/key-counter.properties"), "config").unwrap();
        config.set("job.container.count", "2");
        let mut job = TestJob::new(app(), config).unwrap();
        job.create_stream("events", 4).unwrap();
        let events = job.input::<String, String>("events").unwrap();
        for i in 0..30 {
            events.send_keyed(format!("k{}", i % 5), format!("e{i}")).unwrap();
        }
        job.run_to_end().unwrap();
        let counts = job.output::<String, String>("key-counts").unwrap().latest_by_key();
        assert_eq!(counts.len(), 5);
        assert!(counts.values().all(|n| n == "6"), "{counts:?}");
        let audit = job.output::<String, String>("key-counter-audit").unwrap().values();
        assert_eq!(audit.len(), 30, "one audit record per message");
        let model = job.model().unwrap();
        for record in &audit {
            let f: Vec<&str> = record.split(' ').collect();
            let (partition, container, version) = (f[0], f[2], f[3]);
            let task = format!("Partition {partition}");
            let owner = model.containers.iter().find(|c| c.tasks.iter().any(|t| t.name == task)).unwrap();
            assert_eq!((container, version), (owner.id.as_str(), model.version.to_string().as_str()), "{record}");
        }
    }
}
