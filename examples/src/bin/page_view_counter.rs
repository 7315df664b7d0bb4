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
    /// Sends one report per user seen in this window, then empties the window.
    fn report(&mut self, collector: &mut MessageCollector) -> Result<(), TaskError> {
        let (Some(output), Some(views)) = (&self.output, &self.views) else {
            return Err(TaskError::msg("not initialised"));
        };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
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

    fn window(&mut self, collector: &mut MessageCollector, _: &mut TaskCoordinator) -> Result<(), TaskError> {
        self.report(collector)
    }

    fn end_of_stream(&mut self, collector: &mut MessageCollector, _: &mut TaskCoordinator) -> Result<(), TaskError> {
        self.report(collector)
    }
}

fn main() -> ExitCode {
    App::new("page-view-counter", PageViewCounter::default).config_key("page-view-counter.output").main()
}
