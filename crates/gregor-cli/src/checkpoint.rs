//! `gregor checkpoint ...`: an operator's tool to inspect a job's
//! checkpoints and to move them (rewind to reprocess, or skip ahead) while
//! the job is stopped. See docs/checkpoint-tool.md.
//!
//! It finds the checkpoints from the job's own config, as `gregor job
//! status` does, and writes new ones in the runtime's encoding. It must
//! never rewrite the checkpoints of a running job (unless forced), never
//! write anything before every argument was checked against the job, and
//! never leave a rewound task with state that already counts what it will
//! read again: stores are reset to empty unless `--keep-stores`.

mod plan;
mod stores;

use crate::job::zookeeper_group;
use crate::state::{JobArgs, load};
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use gregor_api::SystemStreamPartition;
use gregor_api::system::SystemError;
use gregor_runtime::inspect::last_job_model;
use gregor_runtime::run_lock::{RunLock, run_lock_path};
use gregor_runtime::{Checkpoint, JobConfig, Systems, TaskModel, job_model_after, read_checkpoints, write_checkpoints};
use plan::{Choice, InputKind, Target, Why};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;

#[derive(Subcommand)]
pub enum CheckpointCommand {
    /// Per task and input partition: checkpointed, oldest and next offsets and lag; per store: changelog offset.
    Show(ShowArgs),
    /// Move a stopped job's checkpointed input offsets (rewind or skip ahead), resetting its stores.
    Set(SetArgs),
}

#[derive(Args)]
pub struct ShowArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Print a JSON document instead of tables (see docs/checkpoint-tool.md).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct SetArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Where to: oldest, newest, offset:N, or time:T (RFC 3339 such as 2026-12-01T08:00:00Z, or epoch ms).
    #[arg(long, value_name = "WHERE", value_parser = plan::parse_target)]
    to: Target,
    /// Only this task (repeatable), e.g. "Partition 0".
    #[arg(long = "task", value_name = "NAME")]
    tasks: Vec<String>,
    /// Only this input: a stream id or system.stream.
    #[arg(long, value_name = "ID")]
    stream: Option<String>,
    /// Only this partition of --stream.
    #[arg(long, value_name = "P")]
    partition: Option<u32>,
    /// Keep the stores as they are (only for jobs whose processing is idempotent).
    #[arg(long)]
    keep_stores: bool,
    /// Go on although the job looks running (its next commit overwrites the new checkpoints).
    #[arg(long)]
    force: bool,
    /// Create checkpoints for a job that has none yet (to start it at the chosen position).
    #[arg(long)]
    create: bool,
    /// Print what would change, change nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(command: CheckpointCommand) -> Result<()> {
    match command {
        CheckpointCommand::Show(args) => show(&args),
        CheckpointCommand::Set(args) => set(&args),
    }
}

fn job_name(job: &JobConfig) -> String {
    job.dir_name()
}

/// The tasks of the job model as the job computes it now (an intermediate
/// input the job has not created yet counts with its configured partitions,
/// as the job creates it).
fn tasks(job: &JobConfig, systems: &Systems) -> Result<Vec<TaskModel>> {
    let mut partitions = BTreeMap::new();
    for input in &job.inputs {
        let n = match systems.admin(&input.stream.system)?.partition_count(&input.stream) {
            Err(SystemError::StreamNotFound { .. }) if input.intermediate => job.stream_partitions(&input.stream)?,
            other => Some(other?),
        };
        partitions.insert(input.stream.clone(), n.unwrap_or(0));
    }
    let model = job_model_after(job, &partitions, last_job_model(job).as_ref());
    let mut tasks: Vec<TaskModel> = model.containers.into_iter().flat_map(|c| c.tasks).collect();
    tasks.sort_by_key(|t| natural_key(&t.name));
    Ok(tasks)
}

/// Sorts "Partition 10" after "Partition 9".
fn natural_key(name: &str) -> (String, u64) {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (head, tail) = name.split_at(name.len() - digits);
    (head.to_owned(), tail.parse().unwrap_or(0))
}

fn show(args: &ShowArgs) -> Result<()> {
    let (job, systems) = load(&args.job)?;
    let tasks = tasks(&job, &systems)?;
    let checkpoints = read_checkpoints(&systems, &job.checkpoint_stream)?;
    let mut names: Vec<(String, Option<&TaskModel>)> = tasks.iter().map(|t| (t.name.clone(), Some(t))).collect();
    let mut stale: Vec<&String> = checkpoints.keys().filter(|n| !tasks.iter().any(|t| t.name == **n)).collect();
    stale.sort();
    names.extend(stale.into_iter().map(|n| (n.clone(), None)));
    let mut doc = Vec::new();
    for (name, task) in &names {
        let cp = checkpoints.get(name);
        let mut ssps: Vec<SystemStreamPartition> = task.map(|t| t.inputs.clone()).unwrap_or_default();
        ssps.extend(
            cp.into_iter().flat_map(|c| c.inputs.keys()).filter(|s| !ssps.contains(s)).cloned().collect::<Vec<_>>(),
        );
        let mut inputs = Vec::new();
        for ssp in ssps {
            let range = systems.offsets(&ssp).ok();
            let committed = cp.and_then(|c| c.inputs.get(&ssp)).copied();
            let lag = range.zip(committed).map(|(r, c)| r.next.saturating_sub(c));
            inputs.push(json!({
                "input": ssp.to_string(), "stream": ssp.stream.to_string(), "partition": ssp.partition,
                "checkpoint": committed, "oldest": range.map(|r| r.oldest), "next": range.map(|r| r.next), "lag": lag,
            }));
        }
        let stores: Vec<_> = cp
            .into_iter()
            .flat_map(|c| &c.stores)
            .map(|(s, sc)| json!({"store": s, "changelog": sc.changelog.to_string(), "offset": sc.offset}))
            .collect();
        doc.push(json!({"task": name, "in_model": task.is_some(), "checkpointed": cp.is_some(), "inputs": inputs, "stores": stores}));
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = json!({
            "job": job_name(&job), "checkpoint_stream": job.checkpoint_stream.to_string(),
            "checkpointed": !checkpoints.is_empty(), "tasks": doc,
        });
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
        return Ok(());
    }
    if checkpoints.is_empty() {
        writeln!(
            out,
            "job {} has no checkpoints yet in {} (it has never committed): it starts every input at its samza.offset.default",
            job_name(&job),
            job.checkpoint_stream
        )?;
    } else {
        let with = tasks.iter().filter(|t| checkpoints.contains_key(&t.name)).count();
        writeln!(
            out,
            "job {}: {} tasks, {with} with a checkpoint in {}",
            job_name(&job),
            tasks.len(),
            job.checkpoint_stream
        )?;
    }
    let text = |v: &serde_json::Value| if v.is_null() { "-".to_owned() } else { v.to_string() };
    writeln!(out, "{:<20} {:<44} {:>12} {:>12} {:>12} {:>10}", "TASK", "INPUT", "CHECKPOINT", "OLDEST", "NEXT", "LAG")?;
    for t in &doc {
        let name = t["task"].as_str().unwrap_or_default();
        let name = if t["in_model"] == true { name.to_owned() } else { format!("{name} (not in the job model)") };
        for i in t["inputs"].as_array().into_iter().flatten() {
            let (c, o, n, l) = (text(&i["checkpoint"]), text(&i["oldest"]), text(&i["next"]), text(&i["lag"]));
            writeln!(
                out,
                "{name:<20} {:<44} {c:>12} {o:>12} {n:>12} {l:>10}",
                i["input"].as_str().unwrap_or_default()
            )?;
        }
    }
    if doc.iter().any(|t| t["stores"].as_array().is_some_and(|s| !s.is_empty())) {
        writeln!(out, "{:<20} {:<16} {:<44} {:>12}", "TASK", "STORE", "CHANGELOG", "OFFSET")?;
        for t in &doc {
            for s in t["stores"].as_array().into_iter().flatten() {
                let (task, store) = (t["task"].as_str().unwrap_or_default(), s["store"].as_str().unwrap_or_default());
                let changelog = s["changelog"].as_str().unwrap_or_default();
                writeln!(out, "{task:<20} {store:<16} {changelog:<44} {:>12}", text(&s["offset"]))?;
            }
        }
    }
    Ok(())
}

/// Refuses while the job runs; holds the run lock exclusively, so the job
/// cannot start meanwhile. A held run lock is a live process: `--force`
/// never overrides it. `--force` only accepts a state directory in which
/// the job never ran on this machine (it may run elsewhere: the tool cannot
/// tell) and processors ZooKeeper still lists (their sessions may be stale).
fn ensure_stopped(job: &JobConfig, force: bool) -> Result<Option<RunLock>> {
    let path = run_lock_path(job);
    let zookeeper = job.coordinator() == "zookeeper";
    if !zookeeper && !path.exists() && !force {
        bail!(
            "job {} never ran with the state directory {} on this machine (no {}), so this tool cannot tell whether it runs (here from another directory, or elsewhere); run it where the job runs, with the same job.logged.store.base.dir, or pass --force if the job is stopped",
            job_name(job),
            job.state_dir.display(),
            path.display()
        );
    }
    let lock = RunLock::exclusive(job)?;
    if lock.is_none() {
        bail!("job {} is running ({} is locked by a running job); stop it first", job_name(job), path.display());
    }
    if !force
        && let Some(group) = zookeeper_group(job)?
        && !group.processors.is_empty()
    {
        bail!(
            "job {} is running (live processors in ZooKeeper: {}); stop them first, or pass --force if their sessions are stale",
            job_name(job),
            group.processors.join(", ")
        );
    }
    Ok(lock)
}

/// One input partition's move.
struct Move {
    ssp: SystemStreamPartition,
    old: Option<u64>,
    new: u64,
    why: Why,
}

/// Every move, checked against the job, before anything is written.
fn plan_moves<'m>(
    args: &SetArgs,
    job: &JobConfig,
    systems: &Systems,
    tasks: &'m [TaskModel],
    checkpoints: &HashMap<String, Checkpoint>,
) -> Result<Vec<(&'m TaskModel, Vec<Move>)>> {
    let streams: Vec<_> = job.inputs.iter().map(|i| i.stream.clone()).collect();
    let choice = Choice { tasks: args.tasks.clone(), stream: args.stream.clone(), partition: args.partition };
    let mut plans = Vec::new();
    for (task, inputs) in plan::select(tasks, &streams, &choice).map_err(|e| anyhow!(e))? {
        let mut moves = Vec::new();
        for (ssp, selected) in inputs {
            let spec = job.inputs.iter().find(|i| i.stream == ssp.stream);
            let kind = InputKind {
                intermediate: spec.is_some_and(|s| s.intermediate),
                bootstrap: spec.is_some_and(|s| s.bootstrap),
            };
            let rule = plan::rule(kind, selected, !args.keep_stores, args.to, &ssp).map_err(|e| anyhow!(e))?;
            let Some((target, why)) = rule else { continue };
            let admin = systems.admin(&ssp.stream.system)?;
            let range = match admin.offsets(&ssp) {
                // Not created yet (a job that never ran): nothing to move.
                Err(SystemError::StreamNotFound { .. }) if kind.intermediate => continue,
                other => other?,
            };
            let new = plan::resolve(target, &ssp, range, |t| admin.offset_for_time(&ssp, t).map_err(|e| e.to_string()))
                .map_err(|e| anyhow!(e))?;
            let old = checkpoints.get(&task.name).and_then(|c| c.inputs.get(&ssp)).copied();
            moves.push(Move { ssp, old, new, why });
        }
        plans.push((task, moves));
    }
    Ok(plans)
}

fn row(out: &mut impl Write, task: &str, what: &str, old: Option<u64>, new: Option<u64>, note: &str) -> Result<()> {
    let show = |o: Option<u64>| o.map_or("-".to_owned(), |o| o.to_string());
    let line = format!("{task:<20} {what:<44} {:>12} -> {:<12} {note}", show(old), show(new));
    writeln!(out, "{}", line.trim_end())?;
    Ok(())
}

fn plural(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn set(args: &SetArgs) -> Result<()> {
    let (job, systems) = load(&args.job)?;
    let _lock = if args.dry_run { None } else { ensure_stopped(&job, args.force)? };
    if job.exactly_once && !args.dry_run {
        // The job is stopped (the lock says so): end the transactions its
        // containers left open, which would hold every read-committed read
        // of its streams back.
        gregor_runtime::transactions::end_transactions_except(&job, &systems, &|_| false)?;
    }
    let checkpoints = read_checkpoints(&systems, &job.checkpoint_stream)?;
    if checkpoints.is_empty() && !args.create {
        bail!(
            "job {} has no checkpoints in {} (it has never committed): there is nothing to move; check --config and job.name/job.id, or pass --create to create them",
            job_name(&job),
            job.checkpoint_stream
        );
    }
    let tasks = tasks(&job, &systems)?;
    let plans = plan_moves(args, &job, &systems, &tasks, &checkpoints)?;
    let reset = !args.keep_stores;
    let mut out = std::io::stdout().lock();
    let inputs: usize = plans.iter().map(|(_, m)| m.len()).sum();
    let stores_note = match (job.stores.is_empty(), reset) {
        (true, _) => "",
        (false, true) => "; stores reset to empty",
        (false, false) => "; stores kept (--keep-stores)",
    };
    let dry = if args.dry_run { " (dry run: nothing is written)" } else { "" };
    writeln!(
        out,
        "job {}: moving {} of {} to {}{stores_note}{dry}",
        job_name(&job),
        plural(inputs as u64, "input partition"),
        plural(plans.len() as u64, "task"),
        args.to
    )?;
    let mut written = Vec::new();
    let mut resets: Vec<(String, Vec<stores::StoreReset>)> = Vec::new();
    let pending = |resets: &[(String, Vec<stores::StoreReset>)]| {
        let tasks: Vec<&str> = resets.iter().map(|(t, _)| t.as_str()).collect();
        if tasks.is_empty() {
            "nothing was changed; run the command again".to_owned()
        } else {
            format!(
                "the stores of {} were emptied but no checkpoint was written: run the same command again (it is safe to repeat) before starting the job",
                tasks.join(", ")
            )
        }
    };
    for (task, moves) in &plans {
        for m in moves {
            let ignored = job.inputs.iter().any(|i| i.stream == m.ssp.stream && i.reset_offset);
            let skipped = match (m.why, m.old) {
                (plan::Why::IntermediateSkipped, Some(old)) if m.new > old => {
                    format!("; {} not processed yet are skipped", plural(m.new - old, "message"))
                }
                _ => String::new(),
            };
            let note = if ignored {
                "samza.reset.offset=true: the job ignores this checkpoint".to_owned()
            } else {
                format!("{}{skipped}", m.why.note())
            };
            let note = note.as_str();
            row(&mut out, &task.name, &m.ssp.to_string(), m.old, Some(m.new), note)?;
        }
        let old = checkpoints.get(&task.name);
        let new_stores = match old {
            Some(cp) if reset && !args.dry_run => {
                let (done, entries) =
                    stores::reset_stores(&job, &systems, task, &cp.stores).map_err(|e| e.context(pending(&resets)))?;
                for s in &done {
                    let note = match &s.changelog {
                        Some(c) => format!("reset: {} deleted in {c}", plural(s.deleted, "key")),
                        None => "reset (no changelog)".to_owned(),
                    };
                    row(&mut out, &task.name, &format!("store {}", s.store), s.old_offset, s.new_offset, &note)?;
                }
                resets.push((task.name.clone(), done));
                Some(entries)
            }
            Some(cp) if reset => {
                for (name, s) in &cp.stores {
                    row(&mut out, &task.name, &format!("store {name}"), Some(s.offset), None, "would be reset")?;
                }
                None
            }
            _ => None,
        };
        let inputs: BTreeMap<_, _> = moves.iter().map(|m| (m.ssp.clone(), m.new)).collect();
        written.push((task.name.clone(), plan::rewound(old, &inputs, new_stores.as_ref())));
    }
    if args.dry_run {
        return Ok(());
    }
    // A processor may have joined (on another machine) while the stores were
    // reset: it would overwrite these checkpoints with its own.
    if !args.force
        && let Some(group) = zookeeper_group(&job)?
        && !group.processors.is_empty()
    {
        bail!(
            "processors joined job {} while its checkpoints were being moved ({}): {}",
            job_name(&job),
            group.processors.join(", "),
            pending(&resets)
        );
    }
    write_checkpoints(&systems, &job.checkpoint_stream, &written).map_err(|e| anyhow!(e).context(pending(&resets)))?;
    writeln!(out, "wrote {} to {}", plural(written.len() as u64, "checkpoint"), job.checkpoint_stream)?;
    // Only now may compaction drop what the old checkpoints needed.
    stores::finish_resets(&job, &systems, &mut resets).context(
        "the new checkpoints are written; cleaning up after the reset failed (run the command again to finish)",
    )?;
    let removed = resets.iter().flat_map(|(_, s)| s).filter(|s| s.local_removed).count();
    if removed > 0 {
        let dirs = if removed == 1 { "directory" } else { "directories" };
        writeln!(out, "removed {removed} local store {dirs} on this machine")?;
    }
    Ok(())
}
