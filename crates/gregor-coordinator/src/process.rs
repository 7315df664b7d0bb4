//! The supervisor of container processes.

use gregor_runtime::JobModel;
use std::collections::VecDeque;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Environment variable naming the container a child process runs.
pub const CONTAINER_ENV: &str = "GREGOR_CONTAINER_ID";
/// Environment variable naming the job model file the children share.
pub const JOB_MODEL_ENV: &str = "GREGOR_JOB_MODEL";
/// Environment variable naming the directory of the `--until-end` barrier.
pub const END_BARRIER_ENV: &str = "GREGOR_END_BARRIER";

/// Why the supervisor gave up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisorError {
    /// A container kept failing.
    #[error(
        "container {container} failed {failures} times within {window_ms} ms (last: {last}); giving up (raise cluster-manager.container.retry.count to tolerate more)"
    )]
    TooManyFailures {
        /// The container.
        container: String,
        /// Failures counted.
        failures: usize,
        /// The window.
        window_ms: u64,
        /// The last exit status.
        last: String,
    },
    /// A process could not be started or a file written.
    #[error("{0}")]
    Io(String),
}

/// How the supervisor runs containers.
#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    /// The program (the job's own binary) and its arguments, re-executed per container.
    pub program: PathBuf,
    /// Arguments passed to every container.
    pub args: Vec<String>,
    /// Where the job model file and barrier directory go.
    pub work_dir: PathBuf,
    /// Failures of one container tolerated within `retry_window`.
    pub retry_count: usize,
    /// The window failures are counted in.
    pub retry_window: Duration,
}

struct Slot {
    id: String,
    child: Option<Child>,
    failures: VecDeque<Instant>,
    restart_at: Option<Instant>,
    done: bool,
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "unknown exit".to_owned(),
    }
}

fn spawn(opts: &SupervisorOptions, id: &str, model: &Path, barrier: &Path) -> Result<Child, SupervisorError> {
    let mut cmd = Command::new(&opts.program);
    cmd.args(&opts.args).env(CONTAINER_ENV, id).env(JOB_MODEL_ENV, model).env(END_BARRIER_ENV, barrier);
    // SAFETY: prctl is async-signal-safe; the child asks the kernel to send it
    // SIGTERM when the coordinator dies, so no container outlives it.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| SupervisorError::Io(format!("cannot start container {id} ({}): {e}", opts.program.display())))
}

fn terminate(slots: &mut [Slot]) {
    for s in slots.iter_mut() {
        if let Some(child) = &s.child {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
    }
    for s in slots.iter_mut() {
        if let Some(mut child) = s.child.take() {
            let _ = child.wait();
        }
    }
}

/// Runs every container of `model` as a child process until they are all
/// done (a container that exits with code 0 stopped cleanly: it reached the
/// end of bounded input or was asked to stop, and is not restarted),
/// `shutdown` is set (then each is stopped with
/// SIGTERM and waited for), or one fails too often.
///
/// # Errors
/// [`SupervisorError`] when a container exceeds its retries or cannot start.
pub fn supervise(model: &JobModel, opts: &SupervisorOptions, shutdown: Arc<AtomicBool>) -> Result<(), SupervisorError> {
    let io = |what: &str, p: &Path, e: std::io::Error| SupervisorError::Io(format!("{what} {}: {e}", p.display()));
    std::fs::create_dir_all(&opts.work_dir).map_err(|e| io("creating", &opts.work_dir, e))?;
    let model_path = opts.work_dir.join("job-model.json");
    let text =
        serde_json::to_vec_pretty(model).map_err(|e| SupervisorError::Io(format!("encoding the job model: {e}")))?;
    std::fs::write(&model_path, text).map_err(|e| io("writing", &model_path, e))?;
    let barrier = opts.work_dir.join(format!("until-end-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&barrier);
    let mut slots: Vec<Slot> = model
        .containers
        .iter()
        .map(|c| Slot {
            id: c.id.clone(),
            child: None,
            failures: VecDeque::new(),
            restart_at: Some(Instant::now()),
            done: false,
        })
        .collect();
    tracing::info!(containers = slots.len(), model = %model_path.display(), "supervising container processes");
    let result = loop {
        if shutdown.load(Ordering::SeqCst) {
            tracing::info!("stopping every container");
            terminate(&mut slots);
            break Ok(());
        }
        let now = Instant::now();
        let mut failed = None;
        for s in slots.iter_mut().filter(|s| !s.done) {
            if s.restart_at.is_some_and(|t| now >= t) {
                s.child = Some(spawn(opts, &s.id, &model_path, &barrier)?);
                s.restart_at = None;
                continue;
            }
            let Some(child) = &mut s.child else { continue };
            let Some(status) =
                child.try_wait().map_err(|e| SupervisorError::Io(format!("watching container {}: {e}", s.id)))?
            else {
                continue;
            };
            s.child = None;
            if status.success() {
                tracing::info!(container = %s.id, "container finished (exit code 0); not restarting it");
                s.done = true;
                continue;
            }
            s.failures.push_back(now);
            while s.failures.front().is_some_and(|t| now.duration_since(*t) > opts.retry_window) {
                s.failures.pop_front();
            }
            if s.failures.len() > opts.retry_count {
                failed = Some(SupervisorError::TooManyFailures {
                    container: s.id.clone(),
                    failures: s.failures.len(),
                    window_ms: opts.retry_window.as_millis() as u64,
                    last: describe(status),
                });
                break;
            }
            let backoff = Duration::from_millis(100 << s.failures.len().min(7)).min(Duration::from_secs(10));
            tracing::warn!(container = %s.id, status = %describe(status), restart_in_ms = backoff.as_millis() as u64, "container stopped; restarting");
            s.restart_at = Some(now + backoff);
        }
        if let Some(e) = failed {
            terminate(&mut slots);
            break Err(e);
        }
        if slots.iter().all(|s| s.done) {
            break Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = std::fs::remove_dir_all(&barrier);
    result
}
