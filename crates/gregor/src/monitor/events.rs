//! Recent warnings and errors of this process, for the status page: a
//! `tracing` layer keeps the last [`KEPT`] WARN and ERROR events in memory.
//! It never blocks logging for long (one short lock per warning) and keeps
//! nothing below WARN.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::{Mutex, OnceLock};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// How many events are kept.
pub const KEPT: usize = 50;

/// One warning or error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unix time, ms.
    pub timestamp_ms: i64,
    /// `WARN` or `ERROR`.
    pub level: String,
    /// The message and its fields, as the log shows them.
    pub message: String,
}

fn ring() -> &'static Mutex<VecDeque<Event>> {
    static RING: OnceLock<Mutex<VecDeque<Event>>> = OnceLock::new();
    RING.get_or_init(|| Mutex::new(VecDeque::with_capacity(KEPT)))
}

/// The kept events, oldest first.
pub fn recent() -> Vec<Event> {
    ring().lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
}

pub(crate) fn record(event: Event) {
    let mut ring = ring().lock().unwrap_or_else(|p| p.into_inner());
    if ring.len() == KEPT {
        ring.pop_front();
    }
    ring.push_back(event);
}

/// The layer [`crate::init_logging`] installs.
pub(crate) struct RecentEvents;

#[derive(Default)]
struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RecentEvents {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > tracing::Level::WARN {
            return;
        }
        let mut text = Text::default();
        event.record(&mut text);
        record(Event { timestamp_ms: super::now_ms(), level: level.to_string(), message: text.0 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_events_only() {
        for i in 0..KEPT + 5 {
            record(Event { timestamp_ms: i as i64, level: "WARN".into(), message: format!("w{i}") });
        }
        let kept = recent();
        assert_eq!(kept.len(), KEPT);
        assert_eq!(kept.last().unwrap().message, format!("w{}", KEPT + 4));
    }
}
