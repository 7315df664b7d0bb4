//! Event-time edge cases of the Streams API that users hit with bad data:
//! timestamps far in the future (clamped and counted), records without a
//! timestamp reaching a window or a join (an error naming the operator),
//! and late records (counted).

mod common;

use common::counter;
use gregor::TaskError;
use gregor::streams::{self, EventTime, JoinWindow, Pane, StreamApp, Windows};
use gregor::testing::{START_MS, TestJob};
use std::time::Duration;

fn job(
    describe: impl Fn(&mut StreamApp) -> Result<(), TaskError> + Send + Sync + 'static,
) -> TestJob<streams::GraphTask> {
    common::streams_job("time", "", describe).unwrap()
}

const MIN: i64 = 60_000;

#[test]
fn a_timestamp_far_in_the_future_is_clamped_and_counted_so_others_are_not_late() {
    let mut job = job(|app| {
        let out = app.output::<String, Pane<i64>>("counts");
        let late = app.output::<String, i64>("late");
        app.input::<String, i64>("in")
            .event_time(
                EventTime::message_time()
                    .max_out_of_order(Duration::from_secs(7200))
                    .max_ahead(Duration::from_secs(3600)),
            )
            .window("minutes", Windows::tumbling(Duration::from_secs(60)))
            .late_to(&late)
            .count()
            .to(&out);
        Ok(())
    });
    job.create_stream("in", 1).unwrap();
    let input = job.input::<String, i64>("in").unwrap();
    let now = START_MS; // the test clock's wall time
    input.send_message(0, Some("a".into()), Some(1), Some(now - 5 * MIN)).unwrap();
    // A bad clock: ten days ahead. Counted once, and taken as one hour ahead.
    input.send_message(0, Some("a".into()), Some(2), Some(now + 10 * 24 * 60 * MIN)).unwrap();
    input.send_message(0, Some("a".into()), Some(3), Some(now - 4 * MIN)).unwrap();
    job.run().unwrap();
    assert_eq!(counter(&job, "future-records"), 1);
    job.run_to_end().unwrap();
    let panes: Vec<(i64, i64)> =
        job.output::<String, Pane<i64>>("counts").unwrap().values().iter().map(|p| (p.start, p.value)).collect();
    let minute = |t: i64| t - t.rem_euclid(MIN);
    assert_eq!(panes, vec![(minute(now - 5 * MIN), 1), (minute(now - 4 * MIN), 1), (minute(now + 60 * MIN), 1)]);
    // Unclamped, the watermark would be ten days ahead less two hours, and
    // the third record late.
    assert_eq!(counter(&job, "late-records"), 0, "the future record did not make the others late");
}

#[test]
fn a_record_without_a_timestamp_stops_a_window_and_a_join_naming_them() {
    for op in ["window", "join"] {
        let mut job = job(move |app| {
            let out = app.output::<String, String>("out");
            let left = app.input::<String, String>("left");
            if op == "window" {
                left.window("per-minute", Windows::tumbling(Duration::from_secs(60)))
                    .count()
                    .map_values(|p| p.value.to_string())
                    .to(&out);
            } else {
                let right = app.input::<String, String>("right");
                left.join(&right, "pairs", JoinWindow::within_after(Duration::from_secs(60)), |_, l, r| {
                    format!("{l}{r}")
                })
                .to(&out);
            }
            Ok(())
        });
        job.create_stream("left", 1).unwrap();
        job.create_stream("right", 1).unwrap();
        // -1: the message carries no timestamp (as Kafka's format v0 delivers it).
        job.input::<String, String>("left")
            .unwrap()
            .send_message(0, Some("k".into()), Some("v".into()), Some(-1))
            .unwrap();
        let err = job.run().unwrap_err().to_string();
        let name = if op == "window" { "window 'per-minute'" } else { "join 'pairs'" };
        assert!(err.contains(name) && err.contains("no event time"), "{op}: {err}");
        assert!(err.contains("log.left") && err.contains("offset 0"), "{op}: the message is named: {err}");
    }
}
