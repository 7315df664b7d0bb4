//! The `zookeeper` mode, job side: how a processor computes job models and
//! runs its one container (on a thread of this process). The protocol is in
//! `gregor_coordinator::zookeeper`.

use gregor_api::{Serdes, StreamTask};
use gregor_coordinator::zookeeper::ProcessorJob;
use gregor_runtime::{ContainerOptions, JobConfig, JobModel, Lease, RuntimeError, Systems, job_model_for};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;

pub(crate) struct ZkJob<T: StreamTask> {
    pub(crate) job: Arc<JobConfig>,
    /// Created once per processor: computing a model only queries them.
    pub(crate) systems: Arc<Systems>,
    pub(crate) serdes: Arc<Serdes>,
    pub(crate) factory: Arc<dyn Fn() -> T + Send + Sync>,
    /// What this processor's status page and metrics show.
    pub(crate) monitor: crate::monitor::Monitor,
}

impl<T: StreamTask> ProcessorJob for ZkJob<T> {
    fn job_model(&self, ids: &[String], previous: Option<&JobModel>) -> Result<JobModel, RuntimeError> {
        let partitions = crate::local::partition_counts(&self.job, &self.systems)?;
        Ok(job_model_for(&self.job, &partitions, ids, previous))
    }

    fn start_container(
        &self,
        model: &JobModel,
        id: &str,
        lease: Arc<Lease>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<JoinHandle<Result<(), RuntimeError>>> {
        let (job, systems, serdes, factory) =
            (self.job.clone(), self.systems.clone(), self.serdes.clone(), self.factory.clone());
        let (model, id) = (model.clone(), id.to_owned());
        // A new model may move tasks: the old container's numbers go.
        self.monitor.set_model(&model);
        self.monitor.clear_containers();
        let metrics = self.monitor.container(&id);
        std::thread::Builder::new().name(format!("gregor-container-{id}")).spawn(move || {
            let options = ContainerOptions {
                model_version: model.version,
                lease: Some(lease),
                metrics: Some(metrics),
                ..Default::default()
            };
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                end_departed_transactions(&job, &systems, &model, &id, options.lease.as_deref())?;
                crate::local::run_one(job, systems, serdes, factory, &model, &id, options, stop).map(|_| ())
            }))
            .unwrap_or_else(|p| Err(RuntimeError::Panicked { container: id, message: crate::local::panic_text(&*p) }))
        })
    }
}

/// Under exactly-once, before this processor's container of `model` starts:
/// ends the open transactions of every processor the model no longer has
/// (dead, or frozen past its session: its successors would wait for them)
/// and fences them, so that a frozen one that wakes up can make nothing
/// visible. Every processor of the model does this (whichever comes first
/// ends them; the others find nothing open). Safe against the live ones: a
/// processor's container of a later model starts only after every processor
/// of that model stopped this one (the barrier), so this never fences a
/// container that is running; and a processor whose own lease ran out (it
/// is no member any more) skips it.
fn end_departed_transactions(
    job: &JobConfig,
    systems: &Systems,
    model: &JobModel,
    id: &str,
    lease: Option<&Lease>,
) -> Result<(), RuntimeError> {
    if !job.exactly_once {
        return Ok(());
    }
    if lease.is_some_and(|l| !l.is_valid()) {
        return Err(RuntimeError::LeaseExpired { container: id.to_owned() });
    }
    let member = |p: &str| model.containers.iter().any(|c| c.id == p);
    let n = gregor_runtime::transactions::end_transactions_except(job, systems, &member)?;
    tracing::debug!(producers = n, version = model.version, "ended the transactions of processors not in the model");
    Ok(())
}
