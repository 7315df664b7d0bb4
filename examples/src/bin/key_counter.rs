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
        collector.send(OutgoingEnvelope {
            stream: audit,
            partition: Some(0),
            key: None::<String>,
            message: Some(self.record.clone()),
            timestamp: None,
        })?;
        collector.send(OutgoingEnvelope::keyed(output, key, n.to_string()))?;
        Ok(())
    }
}

fn main() -> ExitCode {
    App::new("key-counter", KeyCounter::default).config_key("key-counter.output").config_key("key-counter.audit").main()
}
