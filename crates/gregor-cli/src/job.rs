//! `gregor job ...`: the job model a job computes, and its status (tasks,
//! checkpointed offsets, lag per input partition).

use crate::state::{JobArgs, load};
use anyhow::Result;
use clap::Subcommand;
use gregor_coordinator::zookeeper;
use gregor_runtime::inspect::current_job_model;
use gregor_runtime::read_checkpoints;
use std::io::Write;

#[derive(Subcommand)]
pub enum JobCommand {
    /// Print the job model (containers -> tasks -> input partitions) as JSON.
    Model(JobArgs),
    /// Containers, tasks, and per input partition: checkpointed offset, newest offset and lag.
    Status(JobArgs),
}

/// In `zookeeper` mode the model is whatever the leader published (and
/// who is live); `None` in the other modes.
pub(crate) fn zookeeper_group(job: &gregor_runtime::JobConfig) -> Result<Option<zookeeper::GroupState>> {
    if job.coordinator() != "zookeeper" {
        return Ok(None);
    }
    let mut options = zookeeper::ZkOptions::from_job(job)?;
    options.connection_timeout = options.connection_timeout.min(std::time::Duration::from_secs(10));
    Ok(Some(zookeeper::group_state(&options)?))
}

fn no_model(job: &gregor_runtime::JobConfig) -> anyhow::Error {
    anyhow::anyhow!(
        "no job model published in ZooKeeper for job {}-{} yet (is a processor running with this config?)",
        job.name,
        job.id
    )
}

/// Where the running job serves its status page, from the file it writes
/// (`local` and `process` modes).
fn monitor_line(job: &gregor_runtime::JobConfig) -> String {
    let path = gregor::monitor::published_path(job);
    let published =
        std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<gregor::monitor::Published>(&b).ok());
    match published {
        Some(p) if gregor::monitor::process_alive(p.pid) => {
            format!("status page: {} (metrics: {}metrics; pid {})", p.url, p.url, p.pid)
        }
        Some(p) => format!("status page: none (the job that served {} is gone)", p.url),
        None => "status page: none (the job is not running, or runs with metrics.http.address=off)".to_owned(),
    }
}

pub fn run(command: JobCommand) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        JobCommand::Model(args) => {
            let (job, systems) = load(&args)?;
            let model = match zookeeper_group(&job)? {
                Some(group) => group.model.ok_or_else(|| no_model(&job))?,
                None => current_job_model(&job, &systems)?,
            };
            serde_json::to_writer_pretty(&mut out, &model)?;
            writeln!(out)?;
        }
        JobCommand::Status(args) => {
            let (job, systems) = load(&args)?;
            let group = zookeeper_group(&job)?;
            let model = match &group {
                Some(group) => group.model.clone().ok_or_else(|| no_model(&job))?,
                None => current_job_model(&job, &systems)?,
            };
            let checkpoints = read_checkpoints(&systems, &job.checkpoint_stream)?;
            let mode = job.coordinator();
            writeln!(
                out,
                "job {}-{}: model version {}, {} tasks in {} containers ({mode} mode)",
                job.name,
                job.id,
                model.version,
                model.task_count,
                model.containers.len()
            )?;
            match &group {
                Some(group) => {
                    let leader = group.processors.first().map_or("none", String::as_str);
                    writeln!(out, "live processors: {} (leader {leader})", group.processors.join(", "))?;
                    for (id, url) in &group.monitors {
                        writeln!(out, "status page of processor {id}: {url} (metrics: {url}metrics)")?;
                    }
                }
                None => writeln!(out, "{}", monitor_line(&job))?,
            }
            writeln!(
                out,
                "{:<10} {:<28} {:<36} {:>12} {:>12} {:>10}",
                "CONTAINER", "TASK", "INPUT", "CHECKPOINT", "NEXT", "LAG"
            )?;
            let mut total_lag = 0u64;
            for c in &model.containers {
                for t in &c.tasks {
                    for ssp in &t.inputs {
                        let next = systems.offsets(ssp)?.next;
                        let committed = checkpoints.get(&t.name).and_then(|cp| cp.inputs.get(ssp)).copied();
                        let lag = next.saturating_sub(committed.unwrap_or(0));
                        total_lag += lag;
                        let shown = committed.map_or("-".to_owned(), |o| o.to_string());
                        writeln!(
                            out,
                            "{:<10} {:<28} {:<36} {:>12} {:>12} {:>10}",
                            c.id,
                            t.name,
                            ssp.to_string(),
                            shown,
                            next,
                            lag
                        )?;
                    }
                }
            }
            writeln!(out, "total lag: {total_lag}")?;
        }
    }
    Ok(())
}
