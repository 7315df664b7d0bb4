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

fn app() -> App<Join> {
    App::new("stream-table-join", Join::default)
        .config_key("stream-table-join.profiles")
        .config_key("stream-table-join.output")
}

fn main() -> ExitCode {
    app().main()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gregor::Config;
    use gregor::testing::TestJob;

    fn job() -> TestJob<Join> {
        let config =
            Config::from_properties(include_str!("../../config/stream-table-join.properties"), "config").unwrap();
        let job = TestJob::new(app(), config).unwrap();
        job.create_stream("user-profiles", 2).unwrap();
        job.create_stream("page-views", 2).unwrap();
        job
    }

    fn enriched(job: &TestJob<Join>) -> Vec<(String, Value)> {
        let mut out: Vec<(String, Value)> = job
            .output::<String, Value>("enriched-page-views")
            .unwrap()
            .key_values()
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or(Value::Null)))
            .collect();
        out.sort_by_key(|(k, v)| (k.clone(), v.to_string()));
        out
    }

    #[test]
    fn profiles_are_loaded_before_any_view_and_follow_changes() {
        let mut job = job();
        let profiles = job.input::<String, Value>("user-profiles").unwrap();
        let views = job.input::<String, Value>("page-views").unwrap();
        // Views written before the profiles still find them: the profiles
        // stream is bootstrapped first.
        views.send_keyed("alice".into(), json!({"page": "/a"})).unwrap();
        views.send_keyed("bob".into(), json!({"page": "/b"})).unwrap();
        profiles.send_keyed("alice".into(), json!({"name": "Alice", "country": "NZ"})).unwrap();
        profiles.send_keyed("bob".into(), json!({"name": "Bob", "country": "FR"})).unwrap();
        job.run().unwrap();
        assert_eq!(
            enriched(&job),
            vec![
                ("alice".into(), json!({"user": "alice", "page": "/a", "country": "NZ", "name": "Alice"})),
                ("bob".into(), json!({"user": "bob", "page": "/b", "country": "FR", "name": "Bob"})),
            ]
        );
        // A tombstone removes bob's profile; later views find none.
        let p = gregor::partition_for_key(b"bob", 2);
        profiles.send_message(p, Some("bob".into()), None, None).unwrap();
        job.run().unwrap();
        views.send_keyed("bob".into(), json!({"page": "/c"})).unwrap();
        job.run_to_end().unwrap();
        assert_eq!(
            enriched(&job).last(),
            Some(&("bob".into(), json!({"user": "bob", "page": "/c", "country": null, "name": null})))
        );
    }
}
