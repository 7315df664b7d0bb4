//! A job for benchmarks: `bench.mode=pass-through` copies every message to
//! `bench.output` in the same partition; `bench.mode=count` counts messages
//! per key in the store `counts`.

use bytes::Bytes;
use gregor::{
    App, IncomingEnvelope, KeyValueStore, MessageCollector, OutgoingEnvelope, Store, StreamTask, SystemStream,
    TaskContext, TaskCoordinator, TaskError,
};
use std::process::ExitCode;

#[derive(Default)]
struct Bench {
    output: Option<SystemStream>,
    counts: Option<Store<Bytes, i64>>,
}

impl StreamTask for Bench {
    type Key = Bytes;
    type Message = Bytes;

    fn init(&mut self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        match ctx.config().get("bench.mode").unwrap_or("pass-through") {
            "count" => self.counts = Some(ctx.store("counts")?),
            _ => self.output = SystemStream::parse(ctx.config().get("bench.output").unwrap_or("log.bench-out")),
        }
        Ok(())
    }

    fn process(
        &mut self,
        e: IncomingEnvelope<'_, Bytes, Bytes>,
        c: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        if let Some(counts) = &self.counts {
            let key = e.key.unwrap_or_default();
            counts.put(&key, &(counts.get(&key)?.unwrap_or(0) + 1))?;
        } else if let Some(out) = &self.output {
            c.send(OutgoingEnvelope {
                stream: out,
                partition: Some(e.ssp.partition),
                key: e.key,
                message: e.message,
                timestamp: Some(e.timestamp),
            })?;
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    App::new("bench-job", Bench::default).config_key("bench.mode").config_key("bench.output").main()
}
