//! `App`: what a job's `main` builds and runs.

use crate::args::{JobArgs, LogFormat, usage};
use crate::monitor::Monitor;
use gregor_api::{Serde, Serdes, StreamTask};
use gregor_runtime::{
    ContainerOptions, EndBarrier, JobConfig, JobModel, RestartPolicy, RunSummary, RuntimeError, SystemKinds, Systems,
};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Why a job did not run to completion.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// Bad command line or config file, or a misuse of a test harness.
    #[error("{0}")]
    Usage(String),
    /// The job failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The `process` mode's supervisor gave up.
    #[error(transparent)]
    Supervisor(#[from] gregor_coordinator::SupervisorError),
    /// The `zookeeper` mode's processor failed.
    #[error(transparent)]
    ZooKeeper(#[from] gregor_coordinator::zookeeper::ZkError),
    /// The status page and metrics cannot be served where configured.
    #[error(
        "metrics.http.address={address}: cannot serve the status page and metrics there: {reason} (choose another host:port, port 0 for any free one, or off)"
    )]
    MetricsServer {
        /// The address asked for.
        address: String,
        /// Why it failed.
        reason: String,
    },
}

impl From<gregor_api::ConfigError> for JobError {
    fn from(e: gregor_api::ConfigError) -> Self {
        JobError::Runtime(e.into())
    }
}

/// A job: a task factory plus the serdes and config keys it adds.
pub struct App<T: StreamTask> {
    name: String,
    pub(crate) factory: Arc<dyn Fn() -> T + Send + Sync>,
    pub(crate) serdes: Serdes,
    config_keys: Vec<String>,
    kinds: SystemKinds,
    /// Adds generated keys to a config before it is validated (the Streams
    /// API's inputs, intermediate streams and stores), and names the job's
    /// own keys it read.
    pub(crate) expand: Option<Expansion>,
    /// Describes what the job would run, for `--plan`.
    pub(crate) plan: Option<PlanPrinter>,
}

/// See [`App::expand`].
pub(crate) type Expansion = Arc<dyn Fn(&mut gregor_api::Config) -> Result<Vec<String>, JobError> + Send + Sync>;
/// See [`App::plan`].
pub(crate) type PlanPrinter = Arc<
    dyn Fn(&JobConfig, &std::collections::BTreeMap<gregor_api::SystemStream, u32>, &str) -> Result<String, JobError>
        + Send
        + Sync,
>;

impl<T: StreamTask> App<T> {
    /// A job called `name` whose tasks `factory` creates (once per task).
    pub fn new(name: &str, factory: impl Fn() -> T + Send + Sync + 'static) -> Self {
        App {
            name: name.to_owned(),
            factory: Arc::new(factory),
            serdes: Serdes::new(),
            config_keys: Vec::new(),
            kinds: crate::systems::builtin_kinds(),
            expand: None,
            plan: None,
        }
    }

    /// The same job with each task wrapped by `wrap` (tests that watch
    /// what the container asks of a task).
    #[cfg(test)]
    pub(crate) fn wrapped<U: StreamTask>(self, wrap: impl Fn(T) -> U + Send + Sync + 'static) -> App<U> {
        let factory = self.factory;
        App {
            name: self.name,
            factory: Arc::new(move || wrap(factory())),
            serdes: self.serdes,
            config_keys: self.config_keys,
            kinds: self.kinds,
            expand: self.expand,
            plan: self.plan,
        }
    }

    /// Adds a serde usable by name in the config for values of type `V`.
    pub fn serde<V: 'static>(mut self, name: &str, serde: impl Serde<V>) -> Self {
        self.serdes.register(name, serde);
        self
    }

    /// Declares a config key of the job's own (unknown keys are errors).
    pub fn config_key(mut self, key: &str) -> Self {
        self.config_keys.push(key.to_owned());
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
    pub fn job_config(&self, mut config: gregor_api::Config) -> Result<JobConfig, JobError> {
        let mut keys: Vec<&str> = self.config_keys.iter().map(String::as_str).collect();
        let generated = match &self.expand {
            Some(expand) => expand(&mut config)?,
            None => Vec::new(),
        };
        keys.extend(generated.iter().map(String::as_str));
        Ok(crate::systems::job_config(config, &keys)?)
    }

    /// Runs with parsed arguments; SIGINT/SIGTERM stop it gracefully.
    ///
    /// # Errors
    /// Bad arguments or config, or the job's failure.
    pub fn run(&self, args: &JobArgs) -> Result<RunSummary, JobError> {
        let config = args.load_config().map_err(JobError::Usage)?;
        if let Some(format) = &args.plan {
            let printer = self.plan.as_ref().ok_or_else(|| {
                JobError::Usage(format!("--plan: job '{}' is a StreamTask, not a Streams API application", self.name))
            })?;
            let job = self.job_config(config)?;
            // Partition counts as the systems know them now (a query: a
            // stream that does not exist yet is planned from its config).
            let systems = Systems::new(&job, &self.kinds)?;
            let mut counts = std::collections::BTreeMap::new();
            for input in &job.inputs {
                if let Ok(n) = systems.admin(&input.stream.system).and_then(|a| a.partition_count(&input.stream)) {
                    counts.insert(input.stream.clone(), n);
                }
            }
            print!("{}", printer(&job, &counts, format)?);
            return Ok(RunSummary::default());
        }
        self.run_config(config, args.until_end, crate::local::shutdown_flag(true))
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
        let address = crate::monitor::address(&job)?;
        match job.coordinator() {
            "process" => return self.supervise(&job, until_end, shutdown, address),
            "zookeeper" => return self.run_processor(job, serdes, until_end, shutdown, address),
            _ => {}
        }
        let monitor = Monitor::new(&job, "local", None);
        let _server = match address {
            Some(a) => Some(monitor.serve(a, Some(crate::monitor::published_path(&job)))?),
            None => None,
        };
        let options =
            ContainerOptions { until_end, partition_check: Some(partition_check(&job)?), ..Default::default() };
        let restart = RestartPolicy { count: retry_count(&job)?, window: retry_window(&job)? };
        Ok(crate::local::run(job, &self.kinds, serdes, self.factory.clone(), options, restart, shutdown, &monitor)?)
    }

    /// The `zookeeper` mode: this process is one processor of the job.
    fn run_processor(
        &self,
        job: Arc<JobConfig>,
        serdes: Arc<Serdes>,
        until_end: bool,
        shutdown: Arc<AtomicBool>,
        address: Option<std::net::SocketAddr>,
    ) -> Result<RunSummary, JobError> {
        if until_end {
            return Err(JobError::Usage(
                "--until-end does not apply with job.coordinator=zookeeper (processors join and leave; stop each with SIGTERM)"
                    .into(),
            ));
        }
        let mut options = gregor_coordinator::zookeeper::ZkOptions::from_job(&job)?;
        let systems = Arc::new(Systems::new(&job, &self.kinds)?);
        // Once, here: the leader's model computations only query the systems.
        crate::local::create_intermediate_streams(&job, &systems)?;
        // Each processor serves its own; ZooKeeper lists where.
        let monitor = Monitor::new(&job, "zookeeper", None);
        let _server = match address {
            Some(a) => Some(monitor.serve(a, None)?),
            None => None,
        };
        options.monitor_url = _server.as_ref().map(|s| s.url.clone());
        let processor = crate::zk::ZkJob { job, systems, serdes, factory: self.factory.clone(), monitor };
        gregor_coordinator::zookeeper::run_processor(&options, &processor, shutdown)?;
        Ok(RunSummary::default())
    }

    /// The `process` mode's coordinator: this same binary, re-executed with
    /// the same arguments once per container.
    fn supervise(
        &self,
        job: &JobConfig,
        until_end: bool,
        shutdown: Arc<AtomicBool>,
        address: Option<std::net::SocketAddr>,
    ) -> Result<RunSummary, JobError> {
        // `gregor checkpoint set` refuses while the coordinator runs.
        let _running = crate::local::run_lock(job);
        let work_dir = job.job_dir().join("coordinator");
        // The last model of this job keeps tasks (and their local state) where they were.
        let previous = gregor_runtime::inspect::last_job_model(job);
        let systems = Systems::new(job, &self.kinds)?;
        let (_, model) = crate::local::prepare(job, &systems, previous.as_ref())?;
        // Reports of an earlier run's containers would show as stale ones.
        let reports = crate::monitor::reports_dir(job);
        let _ = std::fs::remove_dir_all(&reports);
        let monitor = Monitor::new(job, "process", Some(reports));
        monitor.set_model(&model);
        for c in &model.containers {
            monitor.restarts_counter(&c.id);
        }
        let _server = match address {
            Some(a) => Some(monitor.serve(a, Some(crate::monitor::published_path(job)))?),
            None => None,
        };
        let program = std::env::current_exe()
            .map_err(|e| JobError::Usage(format!("cannot find this program to start containers: {e}")))?;
        let c = &job.raw;
        let opts = gregor_coordinator::SupervisorOptions {
            program,
            args: std::env::args().skip(1).collect(),
            work_dir,
            restart: RestartPolicy { count: retry_count(job)?, window: retry_window(job)? },
            until_end,
            limits: gregor_coordinator::cgroups::Limits {
                cpu_cores: match c.get("cluster-manager.container.cpu.cores") {
                    None => None,
                    Some(v) => Some(v.parse::<f64>().ok().filter(|c| *c > 0.0).ok_or_else(|| {
                        JobError::Runtime(
                            gregor_api::config::invalid(
                                "cluster-manager.container.cpu.cores",
                                v,
                                "a positive number of cores, e.g. 0.5",
                            )
                            .into(),
                        )
                    })?),
                },
                memory_mb: c
                    .get_parsed("cluster-manager.container.memory.mb", "a number of MiB")
                    .map_err(|e| JobError::Runtime(e.into()))?,
            },
            cgroup_prefix: job.dir_name(),
            cgroup_root: std::path::PathBuf::from("/sys/fs/cgroup"),
            on_restart: Some(Arc::new(move |id: &str| monitor.restarted(id))),
        };
        gregor_coordinator::supervise(&model, &opts, shutdown)?;
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
        // Started by a `process` coordinator? Take the variables out of the
        // environment (nothing else runs yet) so nothing this process starts
        // mistakes itself for a container.
        let child = std::env::var(gregor_coordinator::CONTAINER_ENV).ok().map(|id| {
            let model = std::env::var_os(gregor_coordinator::JOB_MODEL_ENV);
            let barrier = std::env::var_os(gregor_coordinator::END_BARRIER_ENV);
            for var in [
                gregor_coordinator::CONTAINER_ENV,
                gregor_coordinator::JOB_MODEL_ENV,
                gregor_coordinator::END_BARRIER_ENV,
            ] {
                // SAFETY: single-threaded here: no thread has been started yet.
                unsafe { std::env::remove_var(var) };
            }
            (id, model, barrier)
        });
        init_logging_as("info", args.log_format);
        let result = match child {
            Some((id, model, barrier)) => self.run_container(&args, &id, model, barrier),
            None => self.run(&args),
        };
        self.exit_code(result)
    }

    /// A child of the `process` mode: runs the one container it was given.
    fn run_container(
        &self,
        args: &JobArgs,
        id: &str,
        model_path: Option<std::ffi::OsString>,
        barrier: Option<std::ffi::OsString>,
    ) -> Result<RunSummary, JobError> {
        let not_child = |why: String| {
            JobError::Usage(format!(
                "{why}; unset {} unless a gregor coordinator (job.coordinator=process) started this process",
                gregor_coordinator::CONTAINER_ENV
            ))
        };
        let model_path =
            model_path.ok_or_else(|| not_child(format!("{} is not set", gregor_coordinator::JOB_MODEL_ENV)))?;
        let text = std::fs::read(&model_path)
            .map_err(|e| not_child(format!("cannot read the job model {}: {e}", model_path.display())))?;
        let model =
            JobModel::from_json(&text).map_err(|e| not_child(format!("job model {}: {e}", model_path.display())))?;
        let job = Arc::new(self.job_config(args.load_config().map_err(JobError::Usage)?)?);
        let ids = model.containers.iter().map(|c| c.id.clone()).collect();
        let barrier = barrier.map(|dir| Arc::new(EndBarrier::in_directory(std::path::Path::new(&dir), ids)));
        // The supervisor serves this container's metrics from its reports.
        let metrics = gregor_api::MetricsRegistry::new();
        if crate::monitor::address(&job)?.is_some() {
            crate::monitor::publish_reports(crate::monitor::reports_dir(&job), id.to_owned(), metrics.clone());
        }
        let options = ContainerOptions {
            metrics: Some(metrics),
            until_end: args.until_end,
            end_barrier: barrier,
            model_version: model.version,
            partition_check: Some(partition_check(&job)?),
            ..Default::default()
        };
        // The coordinator stops containers with one SIGTERM; a second signal
        // must not cut the final commit short.
        let shutdown = crate::local::shutdown_flag(false);
        let systems = Arc::new(Systems::new(&job, &self.kinds)?);
        let summary = crate::local::run_one(
            job,
            systems,
            Arc::new(self.serdes.clone()),
            self.factory.clone(),
            &model,
            id,
            options,
            shutdown,
        )?;
        Ok(summary)
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

/// `cluster-manager.container.retry.count`: failures tolerated per window.
fn retry_count(job: &JobConfig) -> Result<u32, JobError> {
    let key = "cluster-manager.container.retry.count";
    Ok(job.raw.get_parsed(key, "a count").map_err(|e| JobError::Runtime(e.into()))?.unwrap_or(8))
}

/// `cluster-manager.container.retry.window.ms`.
fn retry_window(job: &JobConfig) -> Result<std::time::Duration, JobError> {
    let key = "cluster-manager.container.retry.window.ms";
    job.raw.get_millis(key, std::time::Duration::from_secs(300)).map_err(|e| JobError::Runtime(e.into()))
}

/// How often `local` and `process` containers re-read partition counts.
pub(crate) fn partition_check(job: &JobConfig) -> Result<std::time::Duration, JobError> {
    let key = "job.coordinator.monitor-partition-change.frequency.ms";
    job.raw.get_millis(key, std::time::Duration::from_secs(60)).map_err(|e| JobError::Runtime(e.into()))
}

/// Logs to stderr, filtered by `RUST_LOG` (else by `default`, e.g. `info`),
/// in the format `GREGOR_LOG_FORMAT` names (`text`, the default, or `json`).
pub fn init_logging(default: &str) {
    let format = std::env::var("GREGOR_LOG_FORMAT").ok().and_then(|f| LogFormat::parse(&f).ok());
    init_logging_as(default, format.unwrap_or_default());
}

/// [`init_logging`] in a given format. Warnings and errors are also kept
/// for the status page (`crate::monitor::events`).
pub fn init_logging_as(default: &str, format: LogFormat) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = || tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    // The status page keeps warnings whatever RUST_LOG says.
    let recent = crate::monitor::events::RecentEvents.with_filter(tracing_subscriber::filter::LevelFilter::WARN);
    let registry = tracing_subscriber::registry().with(recent);
    let _ = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(false)
                    .compact()
                    .with_filter(filter()),
            )
            .try_init(),
        // One JSON object per line, fields flattened, for log shippers.
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .json()
                    .flatten_event(true)
                    .with_filter(filter()),
            )
            .try_init(),
    };
}
