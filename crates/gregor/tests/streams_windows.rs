//! Window edge cases, driven step by step with the manual clock: a record
//! exactly on a boundary, late records within and beyond the allowed
//! lateness, a watermark that stalls on a silent partition (and an idle one
//! that stops holding it back), and a session that a late record merges.

mod common;

use gregor::TaskError;
use gregor::streams::{self, EventTime, Pane, StreamApp, Timing, Windows};
use gregor::testing::TestJob;
use std::time::Duration;

/// A multiple of a minute, so windows start at `T0 + k * MIN`.
const T0: i64 = 1_699_999_980_000;
const SEC: i64 = 1000;
const MIN: i64 = 60 * SEC;

fn job(
    describe: impl Fn(&mut StreamApp) -> Result<(), TaskError> + Send + Sync + 'static,
    partitions: u32,
) -> TestJob<streams::GraphTask> {
    let job = common::streams_job("windows", "", describe).unwrap();
    job.create_stream("in", partitions).unwrap();
    job
}

/// Sends `key` at event time `ts` to `partition`, then lets the timer run
/// (watermarks move on it).
fn send(job: &mut TestJob<streams::GraphTask>, partition: u32, key: &str, ts: i64) {
    let input = job.input::<String, i64>("in").unwrap();
    input.send_message(partition, Some(key.into()), Some(ts), Some(ts)).unwrap();
    tick(job);
}

fn tick(job: &mut TestJob<streams::GraphTask>) {
    job.run().unwrap();
    job.advance_time(Duration::from_millis(200));
    job.run().unwrap();
}

/// (key, start, end, count, timing) of every pane sent, in order.
fn panes(job: &TestJob<streams::GraphTask>) -> Vec<(String, i64, i64, i64, Timing)> {
    match job.output::<String, Pane<i64>>("panes") {
        Ok(out) => out
            .key_values()
            .into_iter()
            .map(|(k, p)| {
                let p = p.unwrap();
                (k, p.start - T0, p.end - T0, p.value, p.timing)
            })
            .collect(),
        Err(_) => Vec::new(), // nothing sent yet
    }
}

fn counts_per_window(windows: Windows, out_of_order: Duration) -> impl Fn(&mut StreamApp) -> Result<(), TaskError> {
    move |app| {
        let panes = app.output::<String, Pane<i64>>("panes");
        let late = app.output::<String, i64>("late");
        app.input::<String, i64>("in")
            .event_time(EventTime::message_time().max_out_of_order(out_of_order))
            .window("w", windows.clone())
            .late_to(&late)
            .count()
            .to(&panes);
        Ok(())
    }
}

#[test]
fn a_record_exactly_on_a_boundary_opens_the_next_window() {
    let mut job = job(counts_per_window(Windows::tumbling(Duration::from_secs(60)), Duration::from_secs(10)), 1);
    send(&mut job, 0, "a", T0 + MIN - 1); // the last ms of [0, 1 min)
    send(&mut job, 0, "a", T0 + MIN); // the first of [1 min, 2 min)
    send(&mut job, 0, "a", T0 + MIN + 10 * SEC - 1); // watermark: 1 ms before 1 min
    assert_eq!(panes(&job), vec![], "the watermark (newest - 10 s) has passed no window's end");
    send(&mut job, 0, "b", T0 + MIN + 10 * SEC); // watermark: 1 min exactly
    assert_eq!(panes(&job), vec![("a".into(), 0, MIN, 1, Timing::OnTime)], "the end is exclusive");
    job.run_to_end().unwrap();
    assert_eq!(panes(&job)[1], ("a".into(), MIN, 2 * MIN, 2, Timing::OnTime));
}

#[test]
fn late_records_update_within_the_allowed_lateness_and_are_set_aside_after_it() {
    let windows = Windows::tumbling(Duration::from_secs(60)).allowed_lateness(Duration::from_secs(30));
    let mut job = job(counts_per_window(windows, Duration::ZERO), 1);
    send(&mut job, 0, "a", T0 + SEC);
    send(&mut job, 0, "a", T0 + MIN + SEC); // closes [0, 1 min)
    send(&mut job, 0, "a", T0 + 2 * SEC); // late, within 30 s of lateness: a late pane
    send(&mut job, 0, "a", T0 + MIN + 35 * SEC); // watermark past 1 min 30 s: [0, 1 min) is gone
    send(&mut job, 0, "a", T0 + 3 * SEC); // later than the lateness: set aside
    assert_eq!(
        panes(&job),
        vec![("a".into(), 0, MIN, 1, Timing::OnTime), ("a".into(), 0, MIN, 2, Timing::Late)],
        "an updated result for the record within the lateness"
    );
    let late = job.output::<String, i64>("late").unwrap();
    assert_eq!(late.values(), vec![T0 + 3 * SEC], "the record beyond it goes to the side output");
    assert_eq!(common::counter(&job, "late-records"), 1);
    job.run_to_end().unwrap();
    assert_eq!(panes(&job).last(), Some(&("a".into(), MIN, 2 * MIN, 2, Timing::OnTime)), "the end closes the rest");
}

/// Two inputs of one partition each, merged: one task reads both.
#[test]
fn a_silent_partition_stalls_the_watermark_unless_it_is_idle() {
    for idle in [false, true] {
        let describe = move |app: &mut StreamApp| {
            let panes = app.output::<String, Pane<i64>>("panes");
            let time = || {
                let time = EventTime::message_time();
                if idle { time.idle_after(Duration::from_secs(1)) } else { time }
            };
            let other = app.input::<String, i64>("other").event_time(time());
            app.input::<String, i64>("in")
                .event_time(time())
                .merge([&other])
                .window("w", Windows::tumbling(Duration::from_secs(60)))
                .count()
                .to(&panes);
            Ok(())
        };
        let mut job = job(describe, 1);
        job.create_stream("other", 1).unwrap();
        send(&mut job, 0, "a", T0 + SEC);
        send(&mut job, 0, "a", T0 + 5 * MIN); // `other` has said nothing
        assert_eq!(panes(&job), vec![], "idle {idle}: `other` holds the watermark back at first");
        job.advance_time(Duration::from_secs(2));
        tick(&mut job);
        if idle {
            assert_eq!(panes(&job), vec![("a".into(), 0, MIN, 1, Timing::OnTime)], "idle for 2 s: left out");
        } else {
            assert_eq!(panes(&job), vec![], "no idle timeout: the watermark stalls");
            job.run_to_end().unwrap();
            assert_eq!(panes(&job).len(), 2, "the end of input closes every window");
        }
    }
}

#[test]
fn a_record_between_two_sessions_merges_them() {
    let sessions = Windows::session(Duration::from_secs(10));
    let mut job = job(counts_per_window(sessions, Duration::from_secs(60)), 1);
    send(&mut job, 0, "a", T0);
    send(&mut job, 0, "a", T0 + 20 * SEC); // 20 s later: a second session
    send(&mut job, 0, "a", T0 + 10 * SEC); // 10 s from both (the gap, inclusive): one session
    send(&mut job, 0, "b", T0 + 10 * MIN); // moves the watermark past them
    assert_eq!(panes(&job), vec![("a".into(), 0, 20 * SEC, 3, Timing::OnTime)]);
}

/// Input partition 1 (task 1) says nothing; after a repartitioning every
/// task's window waits for every task's watermark, unless task 1's input is
/// idle: then task 1 says so downstream and is left out.
#[test]
fn an_idle_task_does_not_hold_back_the_tasks_after_a_repartitioning() {
    for idle in [false, true] {
        let describe = move |app: &mut StreamApp| {
            let panes = app.output::<String, Pane<i64>>("panes");
            let time = EventTime::message_time();
            let time = if idle { time.idle_after(Duration::from_secs(1)) } else { time };
            app.input::<String, i64>("in")
                .event_time(time)
                .partition_by("by-key")
                .window("w", Windows::tumbling(Duration::from_secs(60)))
                .count()
                .to(&panes);
            Ok(())
        };
        let mut job = job(describe, 2);
        send(&mut job, 0, "a", T0 + SEC);
        // Task 0 keeps delivering while task 1 turns idle.
        for i in 0..6 {
            send(&mut job, 0, "a", T0 + 5 * MIN + i);
            job.advance_time(Duration::from_millis(300));
        }
        let fired = panes(&job);
        if idle {
            assert_eq!(fired, vec![("a".into(), 0, MIN, 1, Timing::OnTime)], "task 1 idle: left out downstream");
            // Task 1 wakes up behind: its record is late, and it holds the watermark again.
            send(&mut job, 1, "b", T0 + 2 * MIN);
            send(&mut job, 0, "a", T0 + 10 * MIN);
            assert_eq!(panes(&job).len(), 1, "task 1 is back at 2 min: nothing past it closes");
        } else {
            assert_eq!(fired, vec![], "task 1 holds every downstream watermark back");
        }
        job.run_to_end().unwrap();
    }
}

#[test]
fn early_panes_every_n_records_accumulate_or_discard() {
    for discarding in [false, true] {
        let mut windows = Windows::tumbling(Duration::from_secs(60)).early_every_count(2);
        if discarding {
            windows = windows.discarding();
        }
        let mut job = job(counts_per_window(windows, Duration::ZERO), 1);
        for s in 1..=5 {
            send(&mut job, 0, "a", T0 + s * SEC);
        }
        send(&mut job, 0, "b", T0 + MIN); // closes [0, 1 min)
        let got: Vec<(i64, Timing)> =
            panes(&job).into_iter().filter(|p| p.0 == "a").map(|(_, _, _, n, t)| (n, t)).collect();
        let want = if discarding {
            // Each pane holds what came since the last: 2, 2, then the last record.
            vec![(2, Timing::Early), (2, Timing::Early), (1, Timing::OnTime)]
        } else {
            vec![(2, Timing::Early), (4, Timing::Early), (5, Timing::OnTime)]
        };
        assert_eq!(got, want, "discarding {discarding}");
    }
}

#[test]
fn early_panes_every_interval_of_processing_time() {
    let windows = Windows::tumbling(Duration::from_secs(60)).early_every(Duration::from_secs(1));
    let mut job = job(counts_per_window(windows, Duration::ZERO), 1);
    send(&mut job, 0, "a", T0 + SEC);
    send(&mut job, 0, "a", T0 + 2 * SEC);
    assert_eq!(panes(&job), vec![], "not yet a second since the window opened");
    job.advance_time(Duration::from_millis(1000));
    tick(&mut job);
    assert_eq!(panes(&job), vec![("a".into(), 0, MIN, 2, Timing::Early)]);
    job.advance_time(Duration::from_secs(5));
    tick(&mut job);
    assert_eq!(panes(&job).len(), 1, "nothing new: no early pane");
    send(&mut job, 0, "a", T0 + MIN + SEC);
    assert_eq!(panes(&job).last(), Some(&("a".into(), 0, MIN, 2, Timing::OnTime)));
}
