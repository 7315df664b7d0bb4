//! The job and the input the benchmarks share (`benches/jobs.rs` runs it in
//! this process, `benches/process_mode.rs` as the `bench-job` binary).

use bytes::Bytes;
use gregor::{
    App, IncomingEnvelope, KeyValueStore, MessageCollector, OutgoingEnvelope, Store, StreamTask, SystemStream,
    TaskContext, TaskCoordinator, TaskError, Upcoming,
};
use gregor_log::{Durability, Log, Record, StreamConfig};

/// Partitions of the benchmark input.
pub const PARTITIONS: u32 = 8;
/// Bytes per message value.
pub const VALUE_LEN: usize = 100;

/// `bench.mode=pass-through` copies every message to `bench.output` (default
/// `log.bench-out`) in the same partition (bytes serde: nothing copied);
/// `bench.mode=count` counts messages per key in the store `counts`;
/// `bench.mode=count-forward` counts them and then copies each message to
/// `bench.output`, as pass-through does (for the latency benchmark: the
/// copy's append time is the result's).
///
/// With `bench.report.first=true` the first message processed prints
/// `first-message-us=<microseconds since the epoch>` on stderr (for the
/// start-up benchmark). The counting modes prefetch each upcoming message's
/// count ([`StreamTask::prefetch`]) unless `bench.prefetch=false`.
#[derive(Default)]
pub struct Bench {
    output: Option<SystemStream>,
    counts: Option<Store<Bytes, i64>>,
    report_first: bool,
    prefetch: bool,
}

impl StreamTask for Bench {
    type Key = Bytes;
    type Message = Bytes;

    fn init(&mut self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        self.report_first = ctx.config().get_bool("bench.report.first", false)?;
        self.prefetch = ctx.config().get_bool("bench.prefetch", true)?;
        match ctx.config().get("bench.mode").unwrap_or("pass-through") {
            "count" => self.counts = Some(ctx.store("counts")?),
            "count-forward" => {
                self.counts = Some(ctx.store("counts")?);
                self.output = SystemStream::parse(ctx.config().get("bench.output").unwrap_or("log.bench-out"));
            }
            _ => self.output = SystemStream::parse(ctx.config().get("bench.output").unwrap_or("log.bench-out")),
        }
        Ok(())
    }

    fn prefetch(&mut self, upcoming: Upcoming<'_>) -> bool {
        match (&self.counts, upcoming.key) {
            (Some(counts), Some(key)) if self.prefetch => counts.prefetch_raw(key),
            (Some(_), None) if self.prefetch => {}
            _ => return false,
        }
        true
    }

    fn process(
        &mut self,
        e: IncomingEnvelope<'_, Bytes, Bytes>,
        c: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        if std::mem::take(&mut self.report_first) {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
            eprintln!("first-message-us={}", now.as_micros());
        }
        if let Some(counts) = &self.counts {
            let key = e.key.as_ref().ok_or_else(|| TaskError::msg("a message without a key"))?;
            counts.put(key, &(counts.get(key)?.unwrap_or(0) + 1))?;
        }
        if let Some(out) = &self.output {
            c.send(OutgoingEnvelope {
                stream: out,
                partition: Some(e.ssp.partition),
                key: e.key,
                message: e.message,
                timestamp: Some(e.timestamp),
                headers: Vec::new(),
            })?;
        }
        Ok(())
    }
}

/// The benchmark job.
pub fn app() -> App<Bench> {
    App::new("bench-job", Bench::default)
        .config_key("bench.mode")
        .config_key("bench.output")
        .config_key("bench.report.first")
}

/// How input messages are keyed.
#[derive(Clone, Copy, Debug)]
pub enum Keys {
    /// No keys.
    None,
    /// Uniformly random over this many keys.
    Uniform(u64),
    /// Every message its own key, in scrambled order.
    Distinct,
    /// 80% of messages over the hottest 1% of this many keys, the rest uniform.
    Skewed(u64),
}

/// Writes `messages` values of [`VALUE_LEN`] bytes to `log.bench-in`
/// ([`PARTITIONS`] partitions, batches of 1000), keyed as `keys` says.
///
/// # Panics
/// If the log cannot be written (benchmarks stop there).
pub fn load(dir: &std::path::Path, messages: u64, keys: Keys) {
    let log = Log::open(dir).expect("log");
    let s = log
        .create_stream("bench-in", StreamConfig { durability: Durability::Os, ..StreamConfig::new(PARTITIONS) })
        .expect("create");
    let value = [b'v'; VALUE_LEN];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let bar = indicatif::ProgressBar::new(messages).with_message("writing input");
    let mut key_bufs: Vec<String> = Vec::with_capacity(1000);
    let mut written = 0;
    while written < messages {
        let n = 1000.min(messages - written);
        key_bufs.clear();
        for _ in 0..n {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let i = written + key_bufs.len() as u64;
            key_bufs.push(match keys {
                Keys::None => String::new(),
                Keys::Uniform(k) => format!("key-{}", rng % k),
                // 2654435761 is odd, so i -> i * p mod 2^32 is a bijection.
                Keys::Distinct => format!("key-{:010}", (i.wrapping_mul(2_654_435_761)) & 0xffff_ffff),
                Keys::Skewed(k) if rng % 10 < 8 => format!("key-{}", (rng >> 8) % (k / 100).max(1)),
                Keys::Skewed(k) => format!("key-{}", (rng >> 8) % k),
            });
        }
        let records: Vec<Record<'_>> = key_bufs
            .iter()
            .map(|k| Record { key: (!k.is_empty()).then_some(k.as_bytes()), ..Record::value(&value) })
            .collect();
        s.append(((written / 1000) % u64::from(PARTITIONS)) as u32, &records).expect("append");
        written += n;
        bar.set_position(written);
    }
    bar.finish_and_clear();
}
