//! A stream-table join: page views enriched with user profiles.
//!
//! `stream-table-join --config config/stream-table-join.properties [--until-end]`
//!
//! The profiles stream is a bootstrap input: gregor reads it to its end
//! before delivering any page view, so every view finds the profiles that
//! existed when the job started. Profiles keep flowing into the table
//! afterwards; a tombstone (null profile) removes a user.

use gregor::{
    App, IncomingEnvelope, KeyValueStore, MessageCollector, OutgoingEnvelope, Store, StreamTask, SystemStream,
    TaskContext, TaskCoordinator, TaskError,
};
use serde_json::{Value, json};
use std::process::ExitCode;

struct Ready {
    profiles_stream: SystemStream,
    output: SystemStream,
    profiles: Store<String, Value>,
}

#[derive(Default)]
struct Join {
    ready: Option<Ready>,
}

fn stream(ctx: &TaskContext<'_>, key: &str) -> Result<SystemStream, TaskError> {
    let text = ctx.config().require(key, "name a stream as system.stream")?;
    SystemStream::parse(text)
        .ok_or_else(|| TaskError::msg(format!("config key '{key}': '{text}' is not system.stream")))
}

impl StreamTask for Join {
    type Key = String;
    type Message = Value;

    fn init(&mut self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        self.ready = Some(Ready {
            profiles_stream: stream(ctx, "stream-table-join.profiles")?,
            output: stream(ctx, "stream-table-join.output")?,
            profiles: ctx.store("profiles")?,
        });
        Ok(())
    }

    fn process(
        &mut self,
        envelope: IncomingEnvelope<'_, String, Value>,
        collector: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        let r = self.ready.as_ref().ok_or_else(|| TaskError::msg("not initialised"))?;
        let user = envelope.key.ok_or_else(|| {
            TaskError::msg(format!("message at offset {} of {} has no user key", envelope.offset, envelope.ssp))
        })?;
        if envelope.ssp.stream == r.profiles_stream {
            match envelope.message {
                Some(profile) => r.profiles.put(&user, &profile)?,
                None => r.profiles.delete(&user)?,
            }
            return Ok(());
        }
        let view = envelope.message.unwrap_or(Value::Null);
        let profile = r.profiles.get(&user)?.unwrap_or(Value::Null);
        let enriched = json!({
            "user": user,
            "page": view.get("page").cloned().unwrap_or(Value::Null),
            "country": profile.get("country").cloned().unwrap_or(Value::Null),
            "name": profile.get("name").cloned().unwrap_or(Value::Null),
        });
        collector.send(OutgoingEnvelope::keyed(&r.output, user, enriched))?;
        Ok(())
    }
}

fn main() -> ExitCode {
    App::new("stream-table-join", Join::default)
        .config_key("stream-table-join.profiles")
        .config_key("stream-table-join.output")
        .main()
}
