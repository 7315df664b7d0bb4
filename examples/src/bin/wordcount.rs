//! Word count, gregor's quick start.
//!
//! `wordcount --config FILE [--set k=v]... [--until-end]` runs the job over
//! whatever is in its input stream. With no arguments it is the quick start:
//! it loads a bundled text into a fresh data directory, runs the job to the
//! end of its input, and prints the ten most frequent words.
//!
//! The job has two stages in one task type, connected by an intermediate
//! stream partitioned by word (as Samza jobs repartition):
//! 1. a line from the input (`task.inputs`) is split into words, each sent to
//!    `wordcount.words` keyed by the word, tagged with where it came from;
//! 2. a word from `wordcount.words` is counted in the store `counts`, and
//!    `word -> new count` is sent to `wordcount.output` keyed by word.
//!
//! Stage 2 remembers, in the store `positions`, the last position it counted
//! per source partition and skips anything at or before it: after a crash,
//! stage 1 re-sends the words of uncommitted lines, and these duplicates must
//! not be counted twice. Both stores are checkpointed with the input offsets,
//! so the counts stay exact however often the job is killed. Under
//! `task.processing.guarantee=exactly-once` stage 1's uncommitted words are
//! never seen by stage 2, so `wordcount.deduplicate=false` (this check off)
//! stays exact too.

use gregor::{
    App, Config, IncomingEnvelope, KeyValueStore, MessageCollector, OutgoingEnvelope, Store, StreamTask, SystemStream,
    TaskContext, TaskCoordinator, TaskError,
};
use gregor_examples::{latest_values, load_lines, words};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

struct Ready {
    deduplicate: bool,
    words: SystemStream,
    output: SystemStream,
    counts: Store<String, i64>,
    positions: Store<String, String>,
}

#[derive(Default)]
struct WordCount {
    ready: Option<Ready>,
}

fn stream(ctx: &TaskContext<'_>, key: &str) -> Result<SystemStream, TaskError> {
    let text = ctx.config().require(key, "name a stream as system.stream")?;
    SystemStream::parse(text)
        .ok_or_else(|| TaskError::msg(format!("config key '{key}': '{text}' is not system.stream")))
}

/// `"<offset> <index>"` of a word, comparable as a pair.
fn position(text: &str) -> Option<(u64, u64)> {
    let (o, i) = text.split_once(' ')?;
    Some((o.parse().ok()?, i.parse().ok()?))
}

impl StreamTask for WordCount {
    type Key = String;
    type Message = String;

    fn init(&mut self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        let deduplicate = match ctx.config().get("wordcount.deduplicate") {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(TaskError::msg(format!(
                    "config key 'wordcount.deduplicate': '{other}' is not true or false"
                )));
            }
        };
        self.ready = Some(Ready {
            deduplicate,
            words: stream(ctx, "wordcount.words")?,
            output: stream(ctx, "wordcount.output")?,
            counts: ctx.store("counts")?,
            positions: ctx.store("positions")?,
        });
        Ok(())
    }

    fn process(
        &mut self,
        envelope: IncomingEnvelope<'_, String, String>,
        collector: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        let r = self.ready.as_ref().ok_or_else(|| TaskError::msg("not initialised"))?;
        if envelope.ssp.stream != r.words {
            let line = envelope.message.unwrap_or_default();
            for (i, word) in words(&line).enumerate() {
                let tag = format!("{} {} {i}", envelope.ssp, envelope.offset);
                collector.send(OutgoingEnvelope::keyed(&r.words, word, tag))?;
            }
            return Ok(());
        }
        let word = envelope
            .key
            .ok_or_else(|| TaskError::msg(format!("a word without a key at offset {}", envelope.offset)))?;
        let tag = envelope.message.unwrap_or_default();
        let (source, at) = tag.split_once(' ').ok_or_else(|| TaskError::msg(format!("malformed word tag '{tag}'")))?;
        let at_pos = position(at).ok_or_else(|| TaskError::msg(format!("malformed word position '{at}'")))?;
        let source = source.to_owned();
        if r.deduplicate {
            if let Some(last) = r.positions.get(&source)?.as_deref().and_then(position)
                && at_pos <= last
            {
                return Ok(()); // re-sent by a restarted stage 1: already counted
            }
            r.positions.put(&source, &at.to_owned())?;
        }
        let count = r.counts.get(&word)?.unwrap_or(0) + 1;
        r.counts.put(&word, &count)?;
        collector.send(OutgoingEnvelope::keyed(&r.output, word, count))?;
        Ok(())
    }
}

fn app() -> App<WordCount> {
    App::new("wordcount", WordCount::default)
        .config_key("wordcount.output")
        .config_key("wordcount.words")
        .config_key("wordcount.deduplicate")
}

fn main() -> ExitCode {
    if std::env::args().len() > 1 {
        return app().main();
    }
    match quickstart() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wordcount: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Creates the input in a fresh data directory, runs to the end, prints the top words.
fn quickstart() -> Result<(), Box<dyn std::error::Error>> {
    gregor::init_logging("warn");
    let dir = std::env::temp_dir().join(format!("gregor-wordcount-{}", std::process::id()));
    let text = include_str!("../../data/gettysburg.txt");
    let lines: Vec<&str> = text.lines().collect();
    load_lines(&dir, "words", 4, &lines)?;
    let mut config =
        Config::from_properties(include_str!("../../config/wordcount.properties"), "wordcount.properties")?;
    config.set("systems.log.path", dir.display().to_string());
    println!("wordcount: counting the words of {} lines of bundled text with 4 tasks on the embedded log", lines.len());
    let summary = app().run_config(config, true, Arc::new(AtomicBool::new(false)))?;
    let counts = latest_values(&dir, "word-counts")?;
    let mut ranked: Vec<(i64, &String)> = counts.iter().map(|(w, c)| (c.parse().unwrap_or(0), w)).collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    println!("processed {} messages; {} distinct words. Top 10:", summary.processed, counts.len());
    for (count, word) in ranked.iter().take(10) {
        println!("{count:>6}  {word}");
    }
    println!("\ndata directory: {}", dir.display());
    println!("see the output with: gregor --data-dir {} stream consume word-counts --until-end", dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gregor::testing::{CommitPoint, TestJob};
    use gregor_examples::word_counts;
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn job() -> TestJob<WordCount> {
        let config = Config::from_properties(include_str!("../../config/wordcount.properties"), "config").unwrap();
        let job = TestJob::new(app(), config).unwrap();
        job.create_stream("words", 4).unwrap();
        job
    }

    fn load(job: &TestJob<WordCount>, lines: &[String]) {
        let input = job.input::<String, String>("words").unwrap();
        for (i, line) in lines.iter().enumerate() {
            input.send_value(i as u32 % 4, line.clone()).unwrap();
        }
    }

    fn counts(job: &TestJob<WordCount>) -> BTreeMap<String, String> {
        let out = job.output::<String, i64>("word-counts").unwrap();
        out.latest_by_key().into_iter().map(|(w, n)| (w, n.to_string())).collect()
    }

    fn lines(n: usize, seed: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("The {} fox, the {} dog; and THE end", ["quick", "lazy", "red"][(i + seed) % 3], i % 7))
            .collect()
    }

    #[test]
    fn counts_every_word_exactly() {
        let mut job = job();
        let text = lines(40, 0);
        load(&job, &text);
        job.run_to_end().unwrap();
        assert_eq!(counts(&job), word_counts(&text));
        assert_eq!(counts(&job)["the"], "120");
    }

    #[test]
    fn counts_stay_exact_when_containers_crash_mid_stream_and_mid_commit() {
        let mut job = job();
        let mut text = Vec::new();
        for round in 0..6 {
            let more = lines(25, round);
            load(&job, &more);
            text.extend(more);
            // Stage 1 re-sends the words of lines processed since the last
            // commit; the `positions` store drops the duplicates.
            job.step(30 + round * 7).unwrap();
            match round % 3 {
                0 => job.crash("0").unwrap(),
                1 => {
                    job.crash_at_commit("0", CommitPoint::OutputsFlushed).unwrap();
                    job.advance_time(Duration::from_secs(1));
                    job.run().unwrap();
                }
                _ => {
                    job.advance_time(Duration::from_secs(1));
                    job.step(40).unwrap();
                    job.crash("0").unwrap();
                }
            }
            job.restart("0").unwrap();
        }
        job.run_to_end().unwrap();
        assert_eq!(counts(&job), word_counts(&text));
    }
}
