//! The `zookeeper` mode (Samza's standalone mode): every process of the job
//! is a *processor*; they find each other, elect a leader and agree on the
//! job model through ZooKeeper.
//!
//! Layout under `/gregor/<job.name>-<job.id>` (below any chroot in the
//! connect string):
//! - `processors/p-<seq>`: one ephemeral sequential node per live processor,
//!   holding its `processor.id`. The lowest sequence number is the leader.
//! - `model`: the current job model (JSON, with its version). Only the
//!   leader writes it, with a compare-and-set on the node's version.
//! - `barriers/<version>/<processor.id>`: a processor's acknowledgement that
//!   it runs nothing of an older model that the new one gives to others.
//!
//! The protocol: the leader publishes a new model when membership changes
//! (after `job.debounce.time.ms` without further change) or partition
//! counts change. Every processor then stops its container if its tasks
//! changed (the container commits), acknowledges under the new version, and
//! starts its new container only once every processor of the new model has
//! acknowledged. A processor that is not in the new model is dead: its node
//! is gone because its session expired or it left. Before that can happen
//! it has stopped processing, because its container only works under a
//! [`Lease`] the heartbeat extends to *send time + session timeout / 2* on
//! each answer from ZooKeeper. So no task runs on two processors at once.
//!
//! What this must never do: start a container before the barrier of its
//! model version is complete, or extend the lease on anything but an answer
//! from ZooKeeper to this session.

mod leader;
mod session;

use gregor_runtime::{JobConfig, JobModel, Lease, RuntimeError};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;
use std::time::Duration;
use zookeeper_client::{Client, Error as ZkErr};

/// Settings of a processor (from `job.coordinator.zk.*`, `job.debounce.time.ms`, `processor.id`).
#[derive(Debug, Clone)]
pub struct ZkOptions {
    /// ZooKeeper connect string.
    pub connect: String,
    /// The job's node: `/gregor/<job.name>-<job.id>`.
    pub job_path: String,
    /// This processor's id.
    pub processor_id: String,
    /// Session timeout asked of ZooKeeper.
    pub session_timeout: Duration,
    /// How long to try to reach ZooKeeper before failing.
    pub connection_timeout: Duration,
    /// Quiet time after a membership change before the leader publishes.
    pub debounce: Duration,
    /// How often the leader recomputes the model from partition counts.
    pub partition_check: Duration,
    /// This processor's status page, registered (ephemeral) under
    /// `<job_path>/monitors/<processor id>` for `gregor job status`.
    pub monitor_url: Option<String>,
}

impl ZkOptions {
    /// The settings of this process's processor, from the job's config.
    ///
    /// # Errors
    /// A missing connect string or a malformed value, naming the key.
    pub fn from_job(job: &JobConfig) -> Result<ZkOptions, RuntimeError> {
        let c = &job.raw;
        let connect = c
            .require(
                "job.coordinator.zk.connect",
                "the ZooKeeper connect string, e.g. localhost:2181, for job.coordinator=zookeeper",
            )?
            .to_owned();
        let processor_id = match c.get("processor.id") {
            Some(id) if !id.is_empty() && !id.contains('/') => id.to_owned(),
            Some(id) => {
                return Err(gregor_api::config::invalid("processor.id", id, "a non-empty id without '/'").into());
            }
            None => {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                let host = host.trim();
                format!("{}-{}", if host.is_empty() { "localhost" } else { host }, std::process::id())
            }
        };
        Ok(ZkOptions {
            connect,
            job_path: format!("/gregor/{}-{}", job.name, job.id).replace(|c: char| c.is_whitespace(), "_"),
            processor_id,
            session_timeout: c.get_millis("job.coordinator.zk.session.timeout.ms", Duration::from_secs(30))?,
            connection_timeout: c.get_millis("job.coordinator.zk.connection.timeout.ms", Duration::from_secs(60))?,
            debounce: c.get_millis("job.debounce.time.ms", Duration::from_secs(20))?,
            partition_check: c
                .get_millis("job.coordinator.monitor-partition-change.frequency.ms", Duration::from_secs(60))?,
            monitor_url: None,
        })
    }
}

/// What the processor runs: the job, seen from the coordinator.
pub trait ProcessorJob {
    /// The job model over the containers `ids` (current partition counts;
    /// sticky with respect to `previous`).
    ///
    /// # Errors
    /// If partition counts cannot be read.
    fn job_model(&self, ids: &[String], previous: Option<&JobModel>) -> Result<JobModel, RuntimeError>;

    /// Starts container `id` of `model` on a thread; it stops gracefully
    /// when `stop` is set and without committing when `lease` runs out.
    ///
    /// # Errors
    /// If the thread cannot be started.
    fn start_container(
        &self,
        model: &JobModel,
        id: &str,
        lease: Arc<Lease>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<JoinHandle<Result<(), RuntimeError>>>;
}

/// Why a processor stopped.
#[derive(Debug, thiserror::Error)]
pub enum ZkError {
    /// ZooKeeper could not be reached.
    #[error(
        "cannot reach ZooKeeper at '{connect}' within {timeout:?} (job.coordinator.zk.connect, job.coordinator.zk.connection.timeout.ms): {source}"
    )]
    Connect {
        /// The connect string.
        connect: String,
        /// How long it tried.
        timeout: Duration,
        /// The client's error.
        source: ZkErr,
    },
    /// A ZooKeeper operation failed.
    #[error("ZooKeeper {op} of {path} failed: {source}")]
    Op {
        /// The operation.
        op: &'static str,
        /// The node.
        path: String,
        /// The error.
        source: ZkErr,
    },
    /// Another live processor uses this processor's id.
    #[error(
        "processor.id '{id}' is already used by a live processor of this job (ZooKeeper node {node}); give each processor its own id"
    )]
    DuplicateId {
        /// The id.
        id: String,
        /// The other processor's node.
        node: String,
    },
    /// The published model cannot be read.
    #[error("the job model in ZooKeeper ({path}) is unreadable: {message}")]
    BadModel {
        /// The node.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The container or the model computation failed.
    #[error(transparent)]
    Job(#[from] RuntimeError),
    /// A local resource (a thread, the client's runtime) could not be had.
    #[error("{what}: {source}")]
    Local {
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The container's thread panicked (its panic was reported on stderr).
    #[error("the container thread of processor '{processor}' panicked")]
    ContainerPanicked {
        /// This processor's id.
        processor: String,
    },
}

fn op<'p>(op: &'static str, path: &'p str) -> impl FnOnce(ZkErr) -> ZkError + 'p {
    move |source| ZkError::Op { op, path: path.to_owned(), source }
}

/// A session with ZooKeeper, or an error naming the connect string once
/// `connection_timeout` has passed.
async fn connect(opts: &ZkOptions) -> Result<Client, ZkError> {
    let connect_err =
        |source| ZkError::Connect { connect: opts.connect.clone(), timeout: opts.connection_timeout, source };
    let connecting = Client::connector().with_session_timeout(opts.session_timeout).connect(&opts.connect);
    tokio::time::timeout(opts.connection_timeout, connecting)
        .await
        .map_err(|_| connect_err(ZkErr::Timeout))?
        .map_err(connect_err)
}

/// Runs this process as a processor until `shutdown` is set (then its
/// container commits and it leaves the group) or its container stops by
/// itself. A lost session makes it stop its container and join again.
///
/// # Errors
/// ZooKeeper unreachable at start, a duplicate id, or the container's failure.
pub fn run_processor(opts: &ZkOptions, job: &dyn ProcessorJob, shutdown: Arc<AtomicBool>) -> Result<(), ZkError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ZkError::Local { what: "cannot start the ZooKeeper client", source })?;
    runtime.block_on(async {
        loop {
            let mut session = session::Session::join(opts, job).await?;
            let end = session.run(&shutdown).await;
            session.leave().await;
            match end? {
                session::End::Done => return Ok(()),
                session::End::Lost => {
                    tracing::warn!(processor = %opts.processor_id, "lost the ZooKeeper session; joining again")
                }
            }
        }
    })
}

/// What ZooKeeper says about a job now: the published model and the live
/// processors (leader first), for `gregor job status`.
#[derive(Debug, Clone)]
pub struct GroupState {
    /// The current job model, if one was published.
    pub model: Option<JobModel>,
    /// Live processors' ids, leader first.
    pub processors: Vec<String>,
    /// Live processors' status pages: (processor id, URL).
    pub monitors: Vec<(String, String)>,
}

/// Reads the job's group state from ZooKeeper (without joining it).
///
/// # Errors
/// ZooKeeper unreachable, or an unreadable model.
pub fn group_state(opts: &ZkOptions) -> Result<GroupState, ZkError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ZkError::Local { what: "cannot start the ZooKeeper client", source })?;
    runtime.block_on(async {
        let client = connect(opts).await?;
        let dir = format!("{}/processors", opts.job_path);
        let mut nodes = match client.list_children(&dir).await {
            Ok(n) => n,
            Err(ZkErr::NoNode) => Vec::new(),
            Err(e) => return Err(op("list", &dir)(e)),
        };
        nodes.sort();
        let mut processors = Vec::new();
        for node in nodes {
            if let Ok((data, _)) = client.get_data(&format!("{dir}/{node}")).await {
                processors.push(String::from_utf8_lossy(&data).into_owned());
            }
        }
        let path = format!("{}/model", opts.job_path);
        let model = match client.get_data(&path).await {
            Ok((data, _)) => Some(JobModel::from_json(&data).map_err(|message| ZkError::BadModel { path, message })?),
            Err(ZkErr::NoNode) => None,
            Err(e) => return Err(op("read", &path)(e)),
        };
        let dir = format!("{}/monitors", opts.job_path);
        let mut monitors = Vec::new();
        for id in client.list_children(&dir).await.unwrap_or_default() {
            if let Ok((data, _)) = client.get_data(&format!("{dir}/{id}")).await {
                monitors.push((id, String::from_utf8_lossy(&data).into_owned()));
            }
        }
        monitors.sort();
        Ok(GroupState { model, processors, monitors })
    })
}
