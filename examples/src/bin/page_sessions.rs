//! Page-view sessions per user: session windows over event time, in the
//! Streams API.
//!
//! `page-sessions --config examples/config/page-sessions.properties
//! [--set k=v]... [--until-end]` reads `page-views` (key: user id, value:
//! `{"page": "<text>", "ts": <epoch ms>}`) and sends one message per closed
//! session to `user-sessions` (key: user id, value: `{"start": <ts of first
//! view>, "end": <ts of last view>, "views": <n>}`).
//!
//! A session closes when the watermark passes its last view plus
//! `sessions.gap.ms` (default 30 min); the watermark trails the newest view
//! by `sessions.max.out.of.order.ms` (default 1 min). Views later than that
//! go to `late-page-views` and are counted in the `late-records` metric.
//! With `--until-end`, the end of the input closes every open session.

use gregor::TaskError;
use gregor::streams::{self, EventTime, StreamApp, Timing, Windows};
use serde::{Deserialize, Serialize};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PageView {
    page: String,
    ts: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Session {
    start: i64,
    end: i64,
    views: i64,
}

fn describe(app: &mut StreamApp) -> Result<(), TaskError> {
    let gap = app.setting_ms("sessions.gap.ms", Duration::from_secs(30 * 60))?;
    let disorder = app.setting_ms("sessions.max.out.of.order.ms", Duration::from_secs(60))?;
    let sessions = app.output::<String, Session>("user-sessions");
    let late = app.output::<String, PageView>("late-page-views");
    app.input::<String, PageView>("page-views")
        .event_time(EventTime::extract(|_, v: &PageView, _| v.ts).max_out_of_order(disorder))
        .partition_by("by-user")
        .window("sessions", Windows::session(gap))
        .late_to(&late)
        .count()
        .filter(|_, pane| pane.timing != Timing::Early)
        .map_values(|pane| Session { start: pane.start, end: pane.end, views: pane.value })
        .to(&sessions);
    Ok(())
}

fn main() -> ExitCode {
    streams::app("page-sessions", describe).main()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gregor::Config;
    use gregor::testing::TestJob;

    const MIN: i64 = 60_000;

    #[test]
    fn sessions_close_on_event_time_with_out_of_order_views_and_late_ones_set_aside() {
        let text = include_str!("../../config/page-sessions.properties");
        let mut config = Config::from_properties(text, "config").unwrap();
        // The in-memory system has no transactions.
        config.set("task.processing.guarantee", "at-least-once");
        let mut job = TestJob::new(streams::app("page-sessions", describe), config).unwrap();
        job.create_stream("page-views", 1).unwrap();
        let views = job.input::<String, PageView>("page-views").unwrap();
        let t0 = 1_700_000_000_000;
        let view = |ts: i64| PageView { page: "/".into(), ts };
        // alice: 0, 10, then 9.5 (out of order, within the minute), then 55.
        for (user, ts) in [("alice", 0), ("alice", 10 * MIN), ("bob", 3 * MIN), ("alice", 10 * MIN - 30_000)] {
            views.send_keyed(user.into(), view(t0 + ts)).unwrap();
        }
        views.send_keyed("alice".into(), view(t0 + 55 * MIN)).unwrap();
        // carol moves event time far ahead...
        views.send_keyed("carol".into(), view(t0 + 300 * MIN)).unwrap();
        views.send_keyed("carol".into(), view(t0 + 300 * MIN)).unwrap();
        job.run().unwrap();
        // ...(the watermark reaches the windows on the next timer tick)...
        job.advance_time(Duration::from_millis(200));
        job.run().unwrap();
        let closed = job.output::<String, Session>("user-sessions").unwrap();
        assert_eq!(closed.len(), 3, "alice's two sessions and bob's closed; carol's is open");
        // ...so a view 200 minutes back is late: set aside, not counted.
        views.send_keyed("alice".into(), view(t0 + 100 * MIN)).unwrap();
        job.run_to_end().unwrap();
        let late = job.output::<String, PageView>("late-page-views").unwrap();
        assert_eq!(late.values().iter().map(|v| v.ts).collect::<Vec<_>>(), vec![t0 + 100 * MIN]);
        let out = job.output::<String, Session>("user-sessions").unwrap();
        let mut got: Vec<(String, Session)> = out.key_values().into_iter().map(|(k, v)| (k, v.unwrap())).collect();
        got.sort_by_key(|(k, s)| (k.clone(), s.start));
        let s = |start: i64, end: i64, views| Session { start: t0 + start, end: t0 + end, views };
        assert_eq!(
            got,
            vec![
                ("alice".into(), s(0, 10 * MIN, 3)),
                ("alice".into(), s(55 * MIN, 55 * MIN, 1)),
                ("bob".into(), s(3 * MIN, 3 * MIN, 1)),
                ("carol".into(), s(300 * MIN, 300 * MIN, 2)),
            ]
        );
    }
}
