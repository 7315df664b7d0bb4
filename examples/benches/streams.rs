//! What the Streams API costs over hand-written `StreamTask`s doing the
//! same work, on the embedded log, in this process, 1 container, run to the
//! end (final commit included), median of `--runs` (default 3), under the
//! default guarantee (exactly-once: both are exact after a crash).
//!
//! `cargo bench -p gregor-examples --bench streams [-- --only wordcount|windowed] [--runs N] [--messages N] [--side api|hand]`
//!
//! - `wordcount`: `--messages` words (default 10 million) in lines of 5
//!   over 100,000 distinct words, 8 partitions: split, repartitioned by
//!   word through an intermediate stream, counted in RocksDB with a
//!   changelog, every new count sent. The hand-written twin is two stages
//!   in one task type, as `examples/src/bin/wordcount.rs` without its
//!   duplicate suppression (the log's transactions make it exact).
//! - `windowed`: `--messages` messages (default 10 million) keyed over
//!   10,000 keys, partitioned by key, 1 ms of event time apart (the message
//!   timestamp), counted per key in 10-minute tumbling windows, each pane
//!   sent when the watermark passes its end. The hand-written twin keeps
//!   the open windows in a `HashMap`, writes the changed ones to a store
//!   with a changelog before each commit and emits closed ones as the
//!   time moves.
//!
//! Prints messages/s for both and the overhead (API time / hand-written
//! time - 1).

use gregor::streams::{self, Pane, StreamApp, Timing, Windows};
use gregor::{
    App, Config, IncomingEnvelope, KeyValueStore, MessageCollector, OutgoingEnvelope, Store, StreamTask, SystemStream,
    TaskContext, TaskCoordinator, TaskError,
};
use gregor_examples::ascii_words;
use gregor_log::{Durability, Log, Record, StreamConfig};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

const PARTITIONS: u32 = 8;
const WORDS_PER_LINE: u64 = 5;
const VOCABULARY: u64 = 100_000;
const KEYS: u64 = 10_000;
const WINDOW_MS: i64 = 600_000;
const T0: i64 = 1_700_000_000_000;

/// `lines` lines of [`WORDS_PER_LINE`] words, round-robin over the partitions.
fn load_lines(dir: &std::path::Path, lines: u64) {
    let log = Log::open(dir).expect("log");
    let s = log.create_stream("lines", StreamConfig { durability: Durability::Os, ..StreamConfig::new(PARTITIONS) });
    let s = s.expect("create");
    let mut rng = gregor_examples::Rng(0x5eed);
    let bar = indicatif::ProgressBar::new(lines).with_message("writing lines");
    let mut texts: Vec<String> = Vec::with_capacity(1000);
    let mut written = 0;
    while written < lines {
        texts.clear();
        for _ in 0..1000.min(lines - written) {
            let words: Vec<String> = (0..WORDS_PER_LINE).map(|_| format!("w{}", rng.below(VOCABULARY))).collect();
            texts.push(words.join(" "));
        }
        let records: Vec<Record<'_>> = texts.iter().map(|t| Record::value(t.as_bytes())).collect();
        s.append(((written / 1000) % u64::from(PARTITIONS)) as u32, &records).expect("append");
        written += texts.len() as u64;
        bar.set_position(written);
    }
    bar.finish_and_clear();
}

/// `messages` events keyed over [`KEYS`] keys (partitioned by key), 1 ms apart from [`T0`].
fn load_events(dir: &std::path::Path, messages: u64) {
    let log = Log::open(dir).expect("log");
    let s = log.create_stream("events", StreamConfig { durability: Durability::Os, ..StreamConfig::new(PARTITIONS) });
    let s = s.expect("create");
    let keys: Vec<String> = (0..KEYS).map(|k| format!("key-{k}")).collect();
    let value = [b'v'; 100];
    let mut rng = gregor_examples::Rng(0xe7e7);
    let bar = indicatif::ProgressBar::new(messages).with_message("writing events");
    let mut written = 0;
    while written < messages {
        let mut by_partition: Vec<Vec<Record<'_>>> = vec![Vec::new(); PARTITIONS as usize];
        for i in 0..8000.min(messages - written) {
            let key = &keys[rng.below(KEYS) as usize];
            let p = gregor::partition_for_key(key.as_bytes(), PARTITIONS) as usize;
            let ts = T0 + (written + i) as i64;
            by_partition[p].push(Record { key: Some(key.as_bytes()), timestamp: Some(ts), ..Record::value(&value) });
        }
        for (p, records) in by_partition.iter().enumerate() {
            s.append(p as u32, records).expect("append");
            written += records.len() as u64;
        }
        bar.set_position(written);
    }
    bar.finish_and_clear();
}

/// The job's config; `GREGOR_BENCH_EXTRA="key=value;key=value"` adds to both sides.
fn config(dir: &std::path::Path, job: &str, extra: &str) -> Config {
    let more = std::env::var("GREGOR_BENCH_EXTRA").unwrap_or_default().replace(';', "\n");
    let text = format!(
        "job.name={job}\ntask.commit.ms=1000\nsystems.log.factory=log\nsystems.log.path={}\n\
         systems.log.samza.offset.default=oldest\n{extra}\n{more}\n",
        dir.display()
    );
    Config::from_properties(&text, "bench").expect("config")
}

/// Runs `app` to the end; returns its wall time and the messages it sent to `output`.
fn time<T: StreamTask>(app: &App<T>, config: Config, dir: &std::path::Path, output: &str) -> (f64, u64) {
    let start = Instant::now();
    app.run_config(config, true, Arc::new(AtomicBool::new(false))).expect("run");
    let took = start.elapsed().as_secs_f64();
    (took, gregor_examples::message_count(dir, output, true).expect("output"))
}

/// Times the API and the hand-written job `runs` times each, alternating,
/// checking they sent the same number of results; returns the median times.
fn compare(
    runs: usize,
    side: Option<&str>,
    mut api: impl FnMut() -> (f64, u64),
    mut hand: impl FnMut() -> (f64, u64),
) -> (f64, f64) {
    let (mut a, mut h) = (vec![f64::NAN], vec![f64::NAN]);
    for _ in 0..runs {
        let x = (side != Some("hand")).then(&mut api);
        let y = (side != Some("api")).then(&mut hand);
        if let (Some(x), Some(y)) = (x, y) {
            assert_eq!(x.1, y.1, "the API and the hand-written job sent different numbers of results");
        }
        a.extend(x.map(|x| x.0));
        h.extend(y.map(|y| y.0));
    }
    let median = |mut v: Vec<f64>| {
        v.retain(|x| !x.is_nan());
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    (median(a), median(h))
}

// ---- word count ----

fn wordcount_api() -> App<streams::GraphTask> {
    streams::app("streams-wordcount", gregor_examples::describe_streams_wordcount)
}

/// Stage 1 splits lines into `words` (keyed by word); stage 2 counts them.
struct HandWordCount {
    words: SystemStream,
    output: SystemStream,
    counts: Option<Store<String, i64>>,
}

impl StreamTask for HandWordCount {
    type Key = String;
    type Message = String;

    fn init(&mut self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        self.counts = Some(ctx.store("counts")?);
        Ok(())
    }

    fn process(
        &mut self,
        e: IncomingEnvelope<'_, String, String>,
        c: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        if e.ssp.stream != self.words {
            for word in ascii_words(&e.message.unwrap_or_default()) {
                c.send(OutgoingEnvelope::keyed(&self.words, word, String::new()))?;
            }
            return Ok(());
        }
        let counts = self.counts.as_ref().ok_or_else(|| TaskError::msg("not initialised"))?;
        let word = e.key.ok_or_else(|| TaskError::msg("a word without a key"))?;
        let n = counts.get(&word)?.unwrap_or(0) + 1;
        counts.put(&word, &n)?;
        c.send(OutgoingEnvelope::keyed(&self.output, word, n))?;
        Ok(())
    }
}

fn wordcount_hand() -> App<HandWordCount> {
    App::new("hand-wordcount", || HandWordCount {
        words: SystemStream::new("log", "hand-words"),
        output: SystemStream::new("log", "word-counts"),
        counts: None,
    })
}

const HAND_WORDCOUNT: &str = "task.inputs=log.lines,log.hand-words\n\
    systems.log.samza.key.serde=string\nsystems.log.samza.msg.serde=string\n\
    streams.hand-words.samza.intermediate=true\nstreams.hand-words.partitions=8\n\
    streams.word-counts.samza.msg.serde=json\n\
    stores.counts.factory=rocksdb\nstores.counts.key.serde=string\nstores.counts.msg.serde=long\n\
    stores.counts.changelog=log.hand-counts-changelog\n";

// ---- windowed count ----

fn windowed_api() -> App<streams::GraphTask> {
    streams::app("streams-windowed", |app: &mut StreamApp| {
        let panes = app.output::<String, Pane<i64>>("panes");
        app.input::<String, bytes::Bytes>("events")
            .window("per-10-min", Windows::tumbling(Duration::from_millis(WINDOW_MS as u64)))
            .count()
            .to(&panes);
        Ok(())
    })
}

/// Counts per key and 10-minute window; a window closes when the
/// partition's newest time passes its end (the watermark, in order input).
#[derive(Default)]
struct HandWindowed {
    open: HashMap<(String, i64), i64>,
    dirty: Vec<(String, i64)>,
    closed: Vec<(String, i64)>,
    newest: i64,
    store: Option<Store<String, i64>>,
    output: Option<SystemStream>,
}

impl HandWindowed {
    fn fire(&mut self, watermark: i64, c: &mut MessageCollector) -> Result<(), TaskError> {
        let out = self.output.as_ref().ok_or_else(|| TaskError::msg("not initialised"))?;
        let due: Vec<(String, i64)> = self.open.keys().filter(|(_, s)| s + WINDOW_MS <= watermark).cloned().collect();
        for k in due {
            let n = self.open.remove(&k).unwrap_or(0);
            let pane = Pane { start: k.1, end: k.1 + WINDOW_MS, value: n, timing: Timing::OnTime };
            let mut envelope = OutgoingEnvelope::keyed(out, k.0.clone(), pane);
            envelope.timestamp = Some(k.1 + WINDOW_MS - 1);
            c.send(envelope)?;
            self.closed.push(k);
        }
        Ok(())
    }
}

impl StreamTask for HandWindowed {
    type Key = String;
    type Message = bytes::Bytes;

    fn init(&mut self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        let store: Store<String, i64> = ctx.store("windows")?;
        for entry in store.all()? {
            let (k, n) = entry?;
            let (key, start) = k.rsplit_once('@').ok_or_else(|| TaskError::msg("bad window key"))?;
            self.open.insert((key.to_owned(), start.parse().map_err(|_| TaskError::msg("bad window start"))?), n);
        }
        self.store = Some(store);
        self.output = Some(SystemStream::new("log", "panes"));
        self.newest = i64::MIN;
        Ok(())
    }

    fn process(
        &mut self,
        e: IncomingEnvelope<'_, String, bytes::Bytes>,
        c: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        let key = e.key.ok_or_else(|| TaskError::msg("an event without a key"))?;
        let start = e.timestamp - e.timestamp.rem_euclid(WINDOW_MS);
        if e.timestamp > self.newest {
            let passed_a_window_end =
                self.newest != i64::MIN && start > self.newest - self.newest.rem_euclid(WINDOW_MS);
            self.newest = e.timestamp;
            if passed_a_window_end {
                self.fire(self.newest, c)?;
            }
        }
        let k = (key, start);
        *self.open.entry(k.clone()).or_insert(0) += 1;
        self.dirty.push(k);
        Ok(())
    }

    fn before_commit(&mut self, _: &mut MessageCollector, _: &mut TaskCoordinator) -> Result<(), TaskError> {
        let store = self.store.as_ref().ok_or_else(|| TaskError::msg("not initialised"))?;
        for (key, start) in self.closed.drain(..) {
            store.delete(&format!("{key}@{start}"))?;
        }
        self.dirty.sort_unstable();
        self.dirty.dedup();
        for k in self.dirty.drain(..) {
            if let Some(n) = self.open.get(&k) {
                store.put(&format!("{}@{}", k.0, k.1), n)?;
            }
        }
        Ok(())
    }

    fn end_of_stream(&mut self, c: &mut MessageCollector, _: &mut TaskCoordinator) -> Result<(), TaskError> {
        self.fire(i64::MAX, c)
    }
}

const HAND_WINDOWED: &str = "task.inputs=log.events\n\
    systems.log.samza.key.serde=string\nsystems.log.samza.msg.serde=bytes\n\
    streams.panes.samza.msg.serde=json\n\
    stores.windows.factory=rocksdb\nstores.windows.key.serde=string\nstores.windows.msg.serde=long\n\
    stores.windows.changelog=log.hand-windows-changelog\n";

fn report(name: &str, messages: u64, api: f64, hand: f64) {
    println!(
        "{name:<10} {messages:>11} {:>14.0} {:>14.0} {:>9.1}%",
        messages as f64 / api,
        messages as f64 / hand,
        (api / hand - 1.0) * 100.0
    );
}

fn main() {
    gregor::init_logging("warn");
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let runs: usize = arg("--runs").and_then(|n| n.parse().ok()).unwrap_or(3);
    let messages: u64 = arg("--messages").and_then(|n| n.parse().ok()).unwrap_or(10_000_000);
    let only = arg("--only");
    // `--side api|hand`: run one side only (for profiling).
    let side = arg("--side");
    let wanted = |job: &str| only.as_deref().is_none_or(|o| o == job);
    let base = std::env::var_os("GREGOR_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    println!("Streams API vs hand-written StreamTask: 1 container, exactly-once, median of {runs} (alternating)");
    println!("{:<10} {:>11} {:>14} {:>14} {:>10}", "job", "messages", "API msg/s", "hand msg/s", "overhead");
    if wanted("wordcount") {
        let lines = messages / WORDS_PER_LINE;
        let run = |hand: bool| {
            let dir = tempfile::tempdir_in(&base).expect("dir");
            load_lines(dir.path(), lines);
            if hand {
                time(&wordcount_hand(), config(dir.path(), "hand-wordcount", HAND_WORDCOUNT), dir.path(), "word-counts")
            } else {
                time(&wordcount_api(), config(dir.path(), "streams-wordcount", ""), dir.path(), "word-counts")
            }
        };
        let (api, hand) = compare(runs, side.as_deref(), || run(false), || run(true));
        report("wordcount", lines * WORDS_PER_LINE, api, hand);
    }
    if wanted("windowed") {
        let run = |hand: bool| {
            let dir = tempfile::tempdir_in(&base).expect("dir");
            load_events(dir.path(), messages);
            if hand {
                let app = App::new("hand-windowed", HandWindowed::default);
                time(&app, config(dir.path(), "hand-windowed", HAND_WINDOWED), dir.path(), "panes")
            } else {
                time(&windowed_api(), config(dir.path(), "streams-windowed", ""), dir.path(), "panes")
            }
        };
        let (api, hand) = compare(runs, side.as_deref(), || run(false), || run(true));
        report("windowed", messages, api, hand);
    }
}
