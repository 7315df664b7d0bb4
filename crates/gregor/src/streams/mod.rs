//! The Streams API: a job as a typed graph of operators over streams, with
//! event time, windows, joins and tables.
//!
//! A `describe` function adds inputs, operators and outputs to a
//! [`StreamApp`]; [`app`] turns it into an [`App`] that runs like any gregor
//! job (the same config, command line and execution modes). The graph
//! compiles into the task model: one [`GraphTask`] per task of the job
//! model, operator state in stores with changelogs, repartitioning through
//! intermediate streams that the job creates and reads back.
//!
//! ```no_run
//! use gregor::streams::{self, StreamApp};
//! use gregor::TaskError;
//!
//! fn describe(app: &mut StreamApp) -> Result<(), TaskError> {
//!     let counts = app.output::<String, i64>("word-counts");
//!     app.input::<(), String>("lines")
//!         .flat_map(|_, line: String| {
//!             let words: Vec<(String, ())> =
//!                 line.split_whitespace().map(|w| (w.to_lowercase(), ())).collect();
//!             words
//!         })
//!         .partition_by("by-word")
//!         .count("counts")
//!         .to(&counts);
//!     Ok(())
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     streams::app("wordcount", describe).main()
//! }
//! ```
//!
//! See `docs/streams-api.md` for the operators, time and watermarks,
//! windows, joins, tables and guarantees.
//!
//! This module must never change what the runtime guarantees: everything
//! it keeps lives in stores and is committed with the input offsets.

mod builder;
mod clock;
mod envelope;
mod graph;
mod join;
#[cfg(test)]
mod lookahead_tests;
mod ops;
mod plan;
mod source;
mod state;
mod table;
mod task;
mod window;

pub use builder::{Output, Stream, StreamApp};
pub use graph::Value;
pub use join::JoinWindow;
pub use source::EventTime;
pub use table::Table;
pub use task::GraphTask;
pub use window::{Pane, Timing, Windowed, Windows};

use crate::app::{App, JobError};
use gregor_api::{Config, TaskError};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use task::{Frozen, FrozenSlot};

/// The store in which tasks remember the last record they took from each
/// producer of each intermediate partition (see [`Stream::partition_by`]).
pub(crate) const POSITIONS_STORE: &str = "streams-positions";

/// A job whose tasks run the graph `describe` builds.
///
/// `describe` is called when the job's config is loaded (it may read the
/// job's own settings with [`StreamApp::setting`]); the graph it builds adds
/// the inputs, intermediate streams and stores to the config before the
/// config is validated. Mistakes in the graph (two operators with one name,
/// a window over a stream without event time) stop the job at start-up.
pub fn app(
    name: &str,
    describe: impl Fn(&mut StreamApp) -> Result<(), TaskError> + Send + Sync + 'static,
) -> App<GraphTask> {
    let slot: FrozenSlot = FrozenSlot::default();
    let factory_slot = slot.clone();
    let mut app = App::new(name, move || GraphTask::new(factory_slot.clone()));
    let app_name = name.to_owned();
    let expand_slot = slot.clone();
    app.expand = Some(Arc::new(move |config: &mut Config| {
        let b = Rc::new(RefCell::new(builder::Builder {
            app: app_name.clone(),
            config: config.clone(),
            ..Default::default()
        }));
        let mut handle = StreamApp { b: b.clone() };
        describe(&mut handle).map_err(|e| JobError::Usage(format!("describing the application: {e}")))?;
        drop(handle);
        let b =
            Rc::try_unwrap(b).map_err(|_| JobError::Usage("a stream handle outlived describe".into()))?.into_inner();
        let expansion = builder::expand(&b).map_err(JobError::Usage)?;
        for (k, v) in &expansion.keys {
            config.set(k.clone(), v.clone());
        }
        let job = config.get("job.name").unwrap_or(&app_name).to_owned();
        let builder::Builder { mut graph, sources, read_keys, .. } = b;
        graph.streams = expansion.streams;
        *expand_slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(Frozen { graph, sources, job }));
        Ok(read_keys)
    }));
    app.plan = Some(Arc::new(move |job, counts, format| {
        let frozen = slot.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let frozen = frozen.ok_or_else(|| JobError::Usage("the application was not described".into()))?;
        Ok(plan::render(&frozen, job, counts, format))
    }));
    app
}

/// `docs/streams-api.md`, whose examples compile as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../../docs/streams-api.md")]
pub struct StreamsApiDoc;
