//! Word count in the Streams API: the high-level twin of `wordcount`.
//!
//! `streams-wordcount --config examples/config/streams-wordcount.properties
//! [--set k=v]... [--until-end]` reads text lines from the stream id
//! `lines` and sends `word -> new count` to `word-counts` (one message per
//! counted word, the count as a JSON number). Words are maximal runs of
//! ASCII letters and digits, lower-cased. Counts stay exact after any crash
//! with no de-duplication code here: see docs/streams-api.md.

use gregor::streams;
use gregor_examples::describe_streams_wordcount as describe;
use std::process::ExitCode;

fn main() -> ExitCode {
    streams::app("streams-wordcount", describe).main()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gregor::Config;
    use gregor::streams::GraphTask;
    use gregor::testing::{CommitPoint, TestJob};
    use gregor_examples::ascii_words;
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn job(guarantee: &str) -> TestJob<GraphTask> {
        let text = include_str!("../../config/streams-wordcount.properties");
        let mut config = Config::from_properties(text, "config").unwrap();
        config.set("task.processing.guarantee", guarantee);
        let job = TestJob::new(streams::app("streams-wordcount", describe), config).unwrap();
        job.create_stream("lines", 4).unwrap();
        job
    }

    fn load(job: &TestJob<GraphTask>, lines: &[String]) {
        let input = job.input::<(), String>("lines").unwrap();
        for (i, line) in lines.iter().enumerate() {
            input.send_value(i as u32 % 4, line.clone()).unwrap();
        }
    }

    fn model(lines: &[String]) -> BTreeMap<String, i64> {
        let mut m = BTreeMap::new();
        for w in lines.iter().flat_map(|l| ascii_words(l)) {
            *m.entry(w).or_insert(0) += 1;
        }
        m
    }

    fn lines(n: usize, seed: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                format!("The {} fox, the {} dog; and THE end-{}", ["quick", "lazy", "réd"][(i + seed) % 3], i % 7, seed)
            })
            .collect()
    }

    #[test]
    fn counts_every_word_and_sends_one_message_per_counted_word() {
        let mut job = job("at-least-once");
        let text = lines(40, 0);
        load(&job, &text);
        job.run_to_end().unwrap();
        let out = job.output::<String, i64>("word-counts").unwrap();
        assert_eq!(out.latest_by_key(), model(&text));
        assert_eq!(out.len() as i64, model(&text).values().sum::<i64>());
        assert_eq!(out.latest_by_key()["the"], 120);
        assert_eq!(out.latest_by_key()["r"], 13, "é splits a word: only ASCII letters and digits count");
    }

    #[test]
    fn counts_stay_exact_across_crashes_without_deduplication_code() {
        // The in-memory system has no transactions: this is the
        // at-least-once path, exact through the intermediate stream's
        // de-duplication (exactly-once is killed for real in
        // examples/tests/streams_api.rs).
        {
            let guarantee = "at-least-once";
            let mut job = job(guarantee);
            let mut text = Vec::new();
            for round in 0..6 {
                let more = lines(25, round);
                load(&job, &more);
                text.extend(more);
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
            let out = job.output::<String, i64>("word-counts").unwrap();
            assert_eq!(out.latest_by_key(), model(&text), "{guarantee}");
        }
    }
}
