//! The supervisor of container processes.

use gregor_runtime::{JobModel, RestartDecision, RestartPolicy, Restarts};
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

/// How long containers get to commit and exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Why the supervisor gave up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisorError {
    /// A container kept failing.
    #[error(
        "container {container} failed {failures} times within {window_ms} ms (last: {last}); giving up. Its errors are on the coordinator's stderr; to tolerate more failures raise cluster-manager.container.retry.count or lower cluster-manager.container.retry.window.ms"
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
    /// Containers did not stop cleanly when asked.
    #[error(
        "containers did not stop cleanly: {0} (their last commits may be missing; they restart from their checkpoints)"
    )]
    UncleanStop(String),
    /// A file could not be written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// How the supervisor runs containers.
#[derive(Clone)]
pub struct SupervisorOptions {
    /// The program (the job's own binary), re-executed per container.
    pub program: PathBuf,
    /// Arguments passed to every container.
    pub args: Vec<String>,
    /// Where the job model file and barrier directory go.
    pub work_dir: PathBuf,
    /// Failures of one container tolerated, and the window they are counted in.
    pub restart: RestartPolicy,
    /// The job runs with `--until-end` (containers are expected to exit 0).
    pub until_end: bool,
    /// CPU and memory limits per container (cgroups), if any.
    pub limits: crate::cgroups::Limits,
    /// The job's name and id, naming the cgroups.
    pub cgroup_prefix: String,
    /// The cgroup filesystem (normally `/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// Told the id of every container restarted after a failure (metrics).
    pub on_restart: Option<Arc<dyn Fn(&str) + Send + Sync>>,
}

struct Slot {
    id: String,
    child: Option<Child>,
    placement: Option<crate::cgroups::Placement>,
    restarts: Restarts,
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

fn spawn(opts: &SupervisorOptions, id: &str, model: &Path, barrier: &Path) -> std::io::Result<Child> {
    let mut cmd = Command::new(&opts.program);
    cmd.args(&opts.args).env(CONTAINER_ENV, id).env(JOB_MODEL_ENV, model).env(END_BARRIER_ENV, barrier);
    // Its own process group: a Ctrl-C at the terminal reaches the coordinator
    // only, which then stops each container once, gracefully.
    cmd.process_group(0);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: prctl, getppid and _exit are async-signal-safe. The child asks
    // the kernel for SIGTERM when the coordinator dies; if it already died
    // before that request (it would never come), the child exits at once.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Sends SIGTERM to every running container, waits up to [`STOP_GRACE`] for
/// each (then SIGKILL), and reports those that did not exit cleanly.
fn terminate(slots: &mut [Slot]) -> Result<(), SupervisorError> {
    for s in slots.iter() {
        if let Some(child) = &s.child {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    let mut unclean = Vec::new();
    for s in slots.iter_mut() {
        let Some(mut child) = s.child.take() else { continue };
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        match status {
            Some(st) if st.success() => {}
            Some(st) => unclean.push(format!("container {} ({})", s.id, describe(st))),
            None => unclean.push(format!("container {} (killed after {} s)", s.id, STOP_GRACE.as_secs())),
        }
    }
    if unclean.is_empty() { Ok(()) } else { Err(SupervisorError::UncleanStop(unclean.join(", "))) }
}

/// Writes the model where the containers (and the next coordinator) read it:
/// to a temporary file renamed into place.
fn write_model(model: &JobModel, work_dir: &Path) -> Result<PathBuf, SupervisorError> {
    let io = |what, path: &Path, source| SupervisorError::Io { what, path: path.to_owned(), source };
    std::fs::create_dir_all(work_dir).map_err(|e| io("creating", work_dir, e))?;
    let path = work_dir.join("job-model.json");
    let tmp = work_dir.join("job-model.json.tmp");
    std::fs::write(&tmp, model.to_json()).map_err(|e| io("writing", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io("renaming", &tmp, e))?;
    Ok(path)
}

/// Runs every container of `model` as a child process until they are all
/// done (a container that exits with code 0 stopped cleanly: it reached the
/// end of bounded input or was asked to stop, and is not restarted),
/// `shutdown` is set (then each is stopped with SIGTERM and waited for), or
/// one fails too often.
///
/// # Errors
/// [`SupervisorError`] when a container exceeds its retries, containers do
/// not stop cleanly, or the model cannot be written.
pub fn supervise(model: &JobModel, opts: &SupervisorOptions, shutdown: Arc<AtomicBool>) -> Result<(), SupervisorError> {
    let model_path = write_model(model, &opts.work_dir)?;
    let barrier = opts.work_dir.join(format!("until-end-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&barrier);
    let mut slots: Vec<Slot> = model
        .containers
        .iter()
        .map(|c| Slot {
            id: c.id.clone(),
            child: None,
            placement: None,
            restarts: Restarts::new(opts.restart),
            restart_at: Some(Instant::now()),
            done: false,
        })
        .collect();
    tracing::info!(containers = slots.len(), version = model.version, model = %model_path.display(), "supervising container processes");
    let mut limits_warned = false;
    let outcome = watch(&mut slots, opts, &model_path, &barrier, &shutdown, &mut limits_warned);
    // Whatever happened, no container is left running.
    let stopped = terminate(&mut slots);
    for s in &slots {
        if let Some(p) = &s.placement {
            crate::cgroups::release(p);
        }
    }
    let _ = std::fs::remove_dir_all(&barrier);
    outcome.and(stopped)
}

fn watch(
    slots: &mut [Slot],
    opts: &SupervisorOptions,
    model: &Path,
    barrier: &Path,
    shutdown: &AtomicBool,
    limits_warned: &mut bool,
) -> Result<(), SupervisorError> {
    loop {
        if shutdown.load(Ordering::SeqCst) {
            tracing::info!("stopping every container");
            return Ok(());
        }
        let now = Instant::now();
        for s in slots.iter_mut().filter(|s| !s.done) {
            let exited = if s.restart_at.is_some_and(|t| now >= t) {
                s.restart_at = None;
                match spawn(opts, &s.id, model, barrier) {
                    Ok(child) => {
                        if opts.limits != crate::cgroups::Limits::default() {
                            let name = format!("{}-{}", opts.cgroup_prefix, s.id);
                            match crate::cgroups::place(&opts.cgroup_root, &name, child.id(), opts.limits) {
                                Ok(p) => s.placement = Some(p),
                                Err(e) if !*limits_warned => {
                                    tracing::warn!(
                                        "cannot apply cgroup limits ({e}); containers run without CPU and memory limits"
                                    );
                                    *limits_warned = true;
                                }
                                Err(_) => {}
                            }
                        }
                        s.child = Some(child);
                        continue;
                    }
                    Err(e) => format!("could not start ({}: {e})", opts.program.display()),
                }
            } else {
                let Some(child) = &mut s.child else { continue };
                match child.try_wait() {
                    Ok(None) => continue,
                    Ok(Some(status)) if status.success() => {
                        s.child = None;
                        s.done = true;
                        if opts.until_end {
                            tracing::info!(container = %s.id, "container finished");
                        } else {
                            tracing::warn!(container = %s.id, "container stopped with exit code 0 (asked to stop?); it is not restarted, so its tasks are not processed until the job restarts");
                        }
                        continue;
                    }
                    Ok(Some(status)) => {
                        s.child = None;
                        describe(status)
                    }
                    Err(e) => {
                        s.child = None;
                        format!("could not be watched: {e}")
                    }
                }
            };
            let backoff = match s.restarts.on_failure(now) {
                RestartDecision::RestartAfter(wait) => wait,
                RestartDecision::GiveUp { failures } => {
                    return Err(SupervisorError::TooManyFailures {
                        container: s.id.clone(),
                        failures,
                        window_ms: opts.restart.window.as_millis() as u64,
                        last: exited,
                    });
                }
            };
            tracing::warn!(container = %s.id, status = %exited, restart_in_ms = backoff.as_millis() as u64, "container stopped; restarting it");
            if let Some(hook) = &opts.on_restart {
                hook(&s.id);
            }
            s.restart_at = Some(now + backoff);
        }
        if slots.iter().all(|s| s.done) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
