//! Page views enriched with a user-profile table loaded from a compacted
//! stream (a stream-table join in the Streams API).
//!
//! `page-view-enrich --config examples/config/page-view-enrich.properties
//! [--set k=v]... [--until-end]` loads `user-profiles` (key: user id,
//! value: any JSON object, tombstones delete) to its end before anything
//! else, then sends every view of `page-views` (key: user id, value:
//! `{"page", "ts"}`) to `enriched-page-views` with a `"profile"` member: the
//! user's latest profile, or null. Later profile updates apply to later
//! views. The two streams must be partitioned alike (keyed by user id, the
//! same partition count): each task holds its partitions' profiles.

use gregor::TaskError;
use gregor::streams::{self, StreamApp};
use serde_json::Value;
use std::process::ExitCode;

fn describe(app: &mut StreamApp) -> Result<(), TaskError> {
    let profiles = app.table::<String, Value>("user-profiles");
    let enriched = app.output::<String, Value>("enriched-page-views");
    app.input::<String, Value>("page-views")
        .join_table(&profiles, |_, mut view: Value, profile| {
            if let Some(fields) = view.as_object_mut() {
                fields.insert("profile".into(), profile.unwrap_or(Value::Null));
            }
            Some(view)
        })
        .to(&enriched);
    Ok(())
}

fn main() -> ExitCode {
    streams::app("page-view-enrich", describe).main()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gregor::Config;
    use gregor::testing::TestJob;
    use serde_json::json;

    #[test]
    fn views_carry_the_latest_profile_loaded_before_any_view() {
        let text = include_str!("../../config/page-view-enrich.properties");
        let mut config = Config::from_properties(text, "config").unwrap();
        config.set("task.processing.guarantee", "at-least-once");
        let mut job = TestJob::new(streams::app("page-view-enrich", describe), config).unwrap();
        job.create_stream("user-profiles", 2).unwrap();
        job.create_stream("page-views", 2).unwrap();
        let views = job.input::<String, Value>("page-views").unwrap();
        let profiles = job.input::<String, Value>("user-profiles").unwrap();
        // Views are in the stream before the profiles: the bootstrap still
        // loads every profile first.
        views.send_keyed("alice".into(), json!({"page": "/a", "ts": 1})).unwrap();
        views.send_keyed("bob".into(), json!({"page": "/b", "ts": 2})).unwrap();
        views.send_keyed("carol".into(), json!({"page": "/c", "ts": 3})).unwrap();
        profiles.send_keyed("alice".into(), json!({"name": "Alice", "tier": 1})).unwrap();
        profiles.send_keyed("alice".into(), json!({"name": "Alice", "tier": 2})).unwrap();
        profiles.send_keyed("carol".into(), json!({"name": "Carol"})).unwrap();
        let p = gregor::partition_for_key(b"carol", 2);
        profiles.send_message(p, Some("carol".into()), None, None).unwrap(); // carol deleted
        job.run_to_end().unwrap();
        let mut got = job.output::<String, Value>("enriched-page-views").unwrap().key_values();
        got.sort_by_key(|(k, _)| k.clone());
        assert_eq!(
            got,
            vec![
                ("alice".into(), Some(json!({"page": "/a", "ts": 1, "profile": {"name": "Alice", "tier": 2}}))),
                ("bob".into(), Some(json!({"page": "/b", "ts": 2, "profile": null}))),
                ("carol".into(), Some(json!({"page": "/c", "ts": 3, "profile": null}))),
            ]
        );
    }
}
