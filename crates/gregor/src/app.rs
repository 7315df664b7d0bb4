//! `App`: what a job's `main` builds and runs.

use crate::args::{JobArgs, usage};
use gregor_api::{Serde, Serdes, StreamTask};
use gregor_runtime::{ContainerOptions, EndBarrier, JobConfig, JobModel, RunSummary, RuntimeError, SystemKinds};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Why a job did not run to completion.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Bad command line or config file.
    #[error("{0}")]
    Usage(String),
    /// The job failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// A job: a task factory plus the serdes and config keys it adds.
pub struct App<T: StreamTask> {
    name: String,
    factory: Arc<dyn Fn() -> T + Send + Sync>,
    serdes: Serdes,
    config_keys: Vec<&'static str>,
    kinds: SystemKinds,
}

impl<T: StreamTask> App<T> {
    /// A job called `name` whose tasks `factory` creates (once per task).
    pub fn new(name: &str, factory: impl Fn() -> T + Send + Sync + 'static) -> Self {
        App {
            name: name.to_owned(),
            factory: Arc::new(factory),
            serdes: Serdes::new(),
            config_keys: Vec::new(),
            kinds: SystemKinds::default(),
        }
    }

    /// Adds a serde usable by name in the config for values of type `V`.
    pub fn serde<V: 'static>(mut self, name: &str, serde: impl Serde<V>) -> Self {
        self.serdes.register(name, serde);
        self
    }

    /// Declares a config key of the job's own (unknown keys are errors).
    pub fn config_key(mut self, key: &'static str) -> Self {
        self.config_keys.push(key);
        self
    }

    /// Adds a system kind usable as `systems.<name>.factory=<kind>`.
    pub fn system_kind(mut self, kind: &str, constructor: gregor_runtime::SystemConstructor) -> Self {
        self.kinds.register(kind, constructor);
        self
    }

    /// Validates a config as this job would.
    ///
    /// # Errors
    /// The first problem, naming the key.
    pub fn job_config(&self, config: gregor_api::Config) -> Result<JobConfig, JobError> {
        JobConfig::new(config, &self.config_keys).map_err(|e| JobError::Runtime(e.into()))
    }

    /// Runs with parsed arguments; SIGINT/SIGTERM stop it gracefully.
    ///
    /// # Errors
    /// Bad arguments or config, or the job's failure.
    pub fn run(&self, args: &JobArgs) -> Result<RunSummary, JobError> {
        let config = args.load_config().map_err(JobError::Usage)?;
        self.run_config(config, args.until_end, crate::local::shutdown_flag())
    }

    /// Runs with a config; `shutdown` stops the job gracefully when set.
    ///
    /// # Errors
    /// A bad config or the job's failure.
    pub fn run_config(
        &self,
        config: gregor_api::Config,
        until_end: bool,
        shutdown: Arc<AtomicBool>,
    ) -> Result<RunSummary, JobError> {
        let job = Arc::new(self.job_config(config)?);
        let serdes = Arc::new(self.serdes.clone());
        // A child of the `process` mode: run the one container it was given.
        if let Ok(id) = std::env::var(gregor_coordinator::CONTAINER_ENV) {
            let model_path = std::env::var(gregor_coordinator::JOB_MODEL_ENV).map_err(|_| {
                JobError::Usage(format!(
                    "{} is set but {} is not",
                    gregor_coordinator::CONTAINER_ENV,
                    gregor_coordinator::JOB_MODEL_ENV
                ))
            })?;
            let text = std::fs::read(&model_path)
                .map_err(|e| JobError::Usage(format!("cannot read the job model {model_path}: {e}")))?;
            let model: JobModel =
                serde_json::from_slice(&text).map_err(|e| JobError::Usage(format!("job model {model_path}: {e}")))?;
            let barrier = std::env::var_os(gregor_coordinator::END_BARRIER_ENV)
                .map(|dir| Arc::new(EndBarrier::in_directory(std::path::Path::new(&dir), model.containers.len(), &id)));
            let options = ContainerOptions { until_end, end_barrier: barrier };
            return Ok(crate::local::run_one(
                job,
                &self.kinds,
                serdes,
                self.factory.clone(),
                &model,
                &id,
                options,
                shutdown,
            )?);
        }
        if job.raw.get("job.coordinator") == Some("process") {
            return self.supervise(&job, shutdown);
        }
        let options = ContainerOptions { until_end, end_barrier: None };
        Ok(crate::local::run(job, &self.kinds, serdes, self.factory.clone(), options, shutdown)?)
    }

    /// The `process` mode's coordinator: this same binary, re-executed with
    /// the same arguments once per container.
    fn supervise(&self, job: &JobConfig, shutdown: Arc<AtomicBool>) -> Result<RunSummary, JobError> {
        let work_dir = job.state_dir.join(format!("{}-{}", job.name, job.id)).join("coordinator");
        // The last model of this job keeps tasks (and their local state) where they were.
        let previous: Option<JobModel> =
            std::fs::read(work_dir.join("job-model.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let (_, model) = crate::local::prepare(job, &self.kinds, previous.as_ref())?;
        let program = std::env::current_exe()
            .map_err(|e| JobError::Usage(format!("cannot find this program to start containers: {e}")))?;
        let c = &job.raw;
        let opts = gregor_coordinator::SupervisorOptions {
            program,
            args: std::env::args().skip(1).collect(),
            work_dir,
            retry_count: c
                .get_parsed("cluster-manager.container.retry.count", "a count")
                .map_err(|e| JobError::Runtime(e.into()))?
                .unwrap_or(8),
            retry_window: c
                .get_millis("cluster-manager.container.retry.window.ms", std::time::Duration::from_secs(300))
                .map_err(|e| JobError::Runtime(e.into()))?,
        };
        gregor_coordinator::supervise(&model, &opts, shutdown)
            .map_err(|e| JobError::Runtime(RuntimeError::Other(e.to_string())))?;
        Ok(RunSummary::default())
    }

    /// Parses the process's arguments, runs, and turns the outcome into an
    /// exit code (errors as one line on stderr).
    pub fn main(self) -> ExitCode {
        let args = match JobArgs::parse(std::env::args().skip(1)) {
            Ok(Some(a)) => a,
            Ok(None) => {
                print!("{}", usage(&self.name));
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("{}: error: {e}\n{}", self.name, usage(&self.name));
                return ExitCode::from(2);
            }
        };
        init_logging("info");
        self.exit_code(self.run(&args))
    }

    /// Reports an outcome as [`App::main`] does.
    pub fn exit_code(&self, result: Result<RunSummary, JobError>) -> ExitCode {
        match result {
            Ok(summary) => {
                tracing::info!(job = %self.name, processed = summary.processed, "finished");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: error: {e}", self.name);
                ExitCode::FAILURE
            }
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (else by `default`, e.g. `info`).
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false)
        .compact()
        .try_init();
}
