//! The `gregor` command-line tool: manage and inspect streams, jobs' state
//! and checkpoints.
//!
//! Every failure exits non-zero with one line on stderr that names the problem;
//! this binary never prints a backtrace or a usage dump for a user error.

mod checkpoint;
mod job;
mod kafka_stream;
mod state;
mod stream;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// gregor: stream processing in the Samza model.
#[derive(Parser)]
#[command(name = "gregor", version, about, propagate_version = true)]
struct Cli {
    /// Data directory of the embedded log.
    #[arg(long, global = true, env = "GREGOR_DATA_DIR", default_value = "./gregor-data", value_name = "DIR")]
    data_dir: PathBuf,
    /// Which system `stream` commands work on: the embedded `log`, or `kafka`.
    #[arg(long, global = true, env = "GREGOR_SYSTEM", default_value = "log", value_parser = ["log", "kafka"])]
    system: String,
    /// Kafka brokers (host:port, comma-separated), with --system kafka.
    #[arg(long, global = true, env = "GREGOR_BOOTSTRAP_SERVERS", value_name = "SERVERS")]
    bootstrap_servers: Option<String>,
    /// A librdkafka setting (e.g. security.protocol=SSL), with --system kafka; repeatable.
    #[arg(long, global = true, value_name = "KEY=VALUE")]
    kafka_config: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create, inspect, write and read streams.
    #[command(subcommand)]
    Stream(stream::StreamCommand),
    /// Inspect and rebuild jobs' store state.
    #[command(subcommand)]
    State(state::StateCommand),
    /// A job's model and status.
    #[command(subcommand)]
    Job(job::JobCommand),
    /// Inspect a job's checkpoints, and move them to reprocess or skip input.
    #[command(subcommand)]
    Checkpoint(checkpoint::CheckpointCommand),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // One line: clap's first line names the problem; usage stays in --help.
            let text = e.render().to_string();
            let line = text.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ");
            eprintln!("gregor: error: {line} (see gregor --help)");
            return ExitCode::from(2);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_target(false)
        .compact()
        .init();
    let result = match cli.command {
        Command::Stream(cmd) if cli.system == "kafka" => match cli.bootstrap_servers {
            Some(bootstrap) => {
                kafka_stream::run(&kafka_stream::KafkaTarget { bootstrap, settings: cli.kafka_config }, cmd)
            }
            None => {
                Err(anyhow::anyhow!("--system kafka needs --bootstrap-servers HOST:PORT (or GREGOR_BOOTSTRAP_SERVERS)"))
            }
        },
        Command::Stream(cmd) => stream::run(&cli.data_dir, cmd),
        Command::State(cmd) => state::run(cmd),
        Command::Job(cmd) => job::run(cmd),
        Command::Checkpoint(cmd) => checkpoint::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gregor: error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

/// `gregor stream consume | head` closes our stdout early; that is not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}
