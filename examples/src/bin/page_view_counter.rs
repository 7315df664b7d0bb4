//! Page views per user, reported every window (`task.window.ms`).
//!
//! `page-view-counter --config config/page-view-counter.properties [--until-end]`
//!
//! Shows `window()`: counts accumulate in a changelogged store between
//! windows; each window sends one report per user and clears the store. At
//! the end of bounded input the last, partial window is reported too.

use gregor::{
    App, IncomingEnvelope, KeyValueStore, MessageCollector, OutgoingEnvelope, Store, StreamTask, SystemStream,
    TaskContext, TaskCoordinator, TaskError,
};
use serde_json::{Value, json};
use std::process::ExitCode;

#[derive(Default)]
struct PageViewCounter {
    output: Option<SystemStream>,
    views: Option<Store<String, i64>>,
}

impl PageViewCounter {
    /// Sends one report per user seen in this window (ending at processing
    /// time `now`), then empties the window.
    fn report(&mut self, collector: &mut MessageCollector, now: i64) -> Result<(), TaskError> {
        let (Some(output), Some(views)) = (&self.output, &self.views) else {
            return Err(TaskError::msg("not initialised"));
        };
        let mut users = Vec::new();
        for entry in views.all()? {
            let (user, n) = entry?;
            collector.send(OutgoingEnvelope::keyed(
                output,
                user.clone(),
                json!({ "user": user, "views": n, "window_end": now }),
            ))?;
            users.push(user);
        }
        views.delete_all(&users)?;
        Ok(())
    }
}

impl StreamTask for PageViewCounter {
    type Key = String;
    type Message = Value;

    fn init(&mut self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        let out =
            ctx.config().require("page-view-counter.output", "name the output stream, e.g. log.page-view-counts")?;
        self.output =
            Some(SystemStream::parse(out).ok_or_else(|| TaskError::msg(format!("'{out}' is not system.stream")))?);
        self.views = Some(ctx.store("views")?);
        Ok(())
    }

    fn process(
        &mut self,
        envelope: IncomingEnvelope<'_, String, Value>,
        _: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        let user = match (envelope.key, envelope.message.as_ref().and_then(|m| m.get("user")).and_then(Value::as_str)) {
            (Some(k), _) => k,
            (None, Some(u)) => u.to_owned(),
            (None, None) => return Err(TaskError::msg(format!("page view at offset {} has no user", envelope.offset))),
        };
        let views = self.views.as_ref().ok_or_else(|| TaskError::msg("not initialised"))?;
        let n = views.get(&user)?.unwrap_or(0) + 1;
        views.put(&user, &n)?;
        Ok(())
    }

    fn window(&mut self, collector: &mut MessageCollector, c: &mut TaskCoordinator) -> Result<(), TaskError> {
        self.report(collector, c.now_ms())
    }

    fn end_of_stream(&mut self, collector: &mut MessageCollector, c: &mut TaskCoordinator) -> Result<(), TaskError> {
        self.report(collector, c.now_ms())
    }
}

fn app() -> App<PageViewCounter> {
    App::new("page-view-counter", PageViewCounter::default).config_key("page-view-counter.output")
}

fn main() -> ExitCode {
    app().main()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gregor::Config;
    use gregor::testing::{Clock, TestJob};
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn job() -> TestJob<PageViewCounter> {
        let config =
            Config::from_properties(include_str!("../../config/page-view-counter.properties"), "config").unwrap();
        let job = TestJob::new(app(), config).unwrap();
        job.create_stream("page-views", 2).unwrap();
        job.create_stream("page-view-counts", 2).unwrap();
        job
    }

    fn view(job: &TestJob<PageViewCounter>, user: &str, page: &str) {
        let views = job.input::<String, Value>("page-views").unwrap();
        views.send_keyed(user.to_owned(), json!({ "user": user, "page": page })).unwrap();
    }

    /// (user, views, window_end) of every report.
    fn reports(job: &TestJob<PageViewCounter>) -> Vec<(String, i64, i64)> {
        let out = job.output::<String, Value>("page-view-counts").unwrap();
        let mut r: Vec<(String, i64, i64)> = out
            .values()
            .iter()
            .map(|v| {
                (
                    v["user"].as_str().unwrap().to_owned(),
                    v["views"].as_i64().unwrap(),
                    v["window_end"].as_i64().unwrap(),
                )
            })
            .collect();
        r.sort();
        r
    }

    #[test]
    fn each_window_reports_the_views_it_saw_per_user() {
        let mut job = job();
        let start = job.clock().wall_ms();
        for (user, page) in [("alice", "/a"), ("bob", "/b"), ("alice", "/c")] {
            view(&job, user, page);
        }
        job.run().unwrap();
        assert!(reports(&job).is_empty(), "nothing before the window ends");
        job.advance_time(Duration::from_secs(10));
        job.run().unwrap();
        let first_end = start + 10_000;
        assert_eq!(reports(&job), vec![("alice".into(), 2, first_end), ("bob".into(), 1, first_end)]);
        // The next window starts empty; the last, partial one is reported at the end.
        view(&job, "bob", "/d");
        job.advance_time(Duration::from_secs(3));
        job.run_to_end().unwrap();
        assert_eq!(reports(&job).last(), Some(&("bob".to_owned(), 1, first_end + 3_000)));
        assert_eq!(reports(&job).len(), 3);
    }

    #[test]
    fn a_crash_keeps_the_committed_counts_of_the_current_window() {
        let mut job = job();
        for i in 0..20 {
            view(&job, ["alice", "bob", "carol"][i % 3], "/p");
        }
        job.run().unwrap();
        job.advance_time(Duration::from_secs(1)); // task.commit.ms
        job.run().unwrap();
        job.crash("0").unwrap();
        job.restart("0").unwrap();
        job.run_to_end().unwrap();
        let totals: BTreeMap<String, i64> = reports(&job).into_iter().map(|(u, n, _)| (u, n)).collect();
        assert_eq!(totals, BTreeMap::from([("alice".into(), 7), ("bob".into(), 7), ("carol".into(), 6)]));
    }
}
