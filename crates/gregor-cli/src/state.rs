//! `gregor state ...`: list a job's stores and tasks, dump a store's
//! committed contents, rebuild a task's local state from its changelog.
//!
//! Each command reads the job's own config file (`--config`, `--set`), so it
//! sees exactly the systems, stores and state directory the job uses. Keys
//! the job declares for itself are ignored here.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use gregor_api::Config;
use gregor_runtime::inspect::{list_stores, read_store, rebuild_store};
use gregor_runtime::{JobConfig, Systems};
use std::io::Write;
use std::path::PathBuf;

#[derive(Args)]
pub struct JobArgs {
    /// The job's config file.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Override a config key (repeatable), as for the job.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

#[derive(Args)]
pub struct StoreArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Store name (`stores.<name>.*`).
    #[arg(long)]
    store: String,
    /// Task name, e.g. "Partition 0".
    #[arg(long)]
    task: String,
}

#[derive(Subcommand)]
pub enum StateCommand {
    /// Stores and tasks with engine, checkpointed changelog offset, local snapshots and size.
    List(JobArgs),
    /// A store's committed keys and values (`key<TAB>value`), decoded with its serdes.
    Dump(StoreArgs),
    /// Discard a task's local RocksDB state and rebuild it from the changelog.
    Rebuild(StoreArgs),
}

/// The job's config (its own keys accepted) and its systems.
pub fn load(args: &JobArgs) -> Result<(JobConfig, Systems)> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read config file {}", args.config.display()))?;
    let mut config = Config::from_properties(&text, &args.config.display().to_string())?;
    config.apply_overrides(args.overrides.iter().map(String::as_str))?;
    let own: Vec<String> = gregor_runtime::schema::unknown_keys(&config).into_iter().map(str::to_owned).collect();
    let own: Vec<&str> = own.iter().map(String::as_str).collect();
    let job = gregor::systems::job_config(config.clone(), &own)?;
    let systems = Systems::new(&job, &gregor::systems::builtin_kinds())?;
    Ok((job, systems))
}

/// A value as text, decoded with a built-in serde where it is one.
fn render(serde: &str, bytes: &[u8]) -> String {
    let fixed = |n: usize| <[u8; 8]>::try_from(&bytes[..bytes.len().min(8)]).ok().filter(|_| bytes.len() == n);
    match serde {
        "long" | "i64" => fixed(8).map(|b| i64::from_be_bytes(b).to_string()),
        "double" | "f64" => fixed(8).map(|b| f64::from_be_bytes(b).to_string()),
        "integer" | "i32" => <[u8; 4]>::try_from(bytes).ok().map(|b| i32::from_be_bytes(b).to_string()),
        "string" | "json" => std::str::from_utf8(bytes).ok().map(str::to_owned),
        _ => None,
    }
    .unwrap_or_else(|| format!("0x{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

pub fn run(command: StateCommand) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        StateCommand::List(args) => {
            let (job, systems) = load(&args)?;
            writeln!(
                out,
                "{:<16} {:<24} {:<8} {:<40} {:>14} {:>10} {:>12}",
                "STORE", "TASK", "ENGINE", "CHANGELOG", "CHECKPOINTED", "SNAPSHOTS", "LOCAL-BYTES"
            )?;
            for s in list_stores(&job, &systems)? {
                let changelog = s.changelog.map_or("-".to_owned(), |c| c.to_string());
                let checkpointed = s.checkpointed.map_or("-".to_owned(), |o| o.to_string());
                writeln!(
                    out,
                    "{:<16} {:<24} {:<8} {:<40} {:>14} {:>10} {:>12}",
                    s.store,
                    s.task,
                    s.engine,
                    changelog,
                    checkpointed,
                    s.snapshots.len(),
                    s.local_bytes
                )?;
            }
        }
        StateCommand::Dump(args) => {
            let (job, systems) = load(&args.job)?;
            let spec = job.stores.iter().find(|s| s.name == args.store).cloned();
            for (k, v) in read_store(&job, &systems, &args.store, &args.task)? {
                let (ks, vs) =
                    spec.as_ref().map_or(("bytes", "bytes"), |s| (s.key_serde.as_str(), s.msg_serde.as_str()));
                writeln!(out, "{}\t{}", render(ks, &k), render(vs, &v))?;
            }
        }
        StateCommand::Rebuild(args) => {
            let (job, systems) = load(&args.job)?;
            let records = rebuild_store(&job, &systems, &args.store, &args.task)?;
            writeln!(out, "rebuilt store {} of task {} from {records} changelog records", args.store, args.task)?;
        }
    }
    Ok(())
}
