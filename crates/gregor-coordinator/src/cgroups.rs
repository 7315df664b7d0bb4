//! CPU and memory limits for container processes through cgroups (v2, or v1
//! where only that is mounted). Best effort: where cgroups cannot be written
//! (no permission, not mounted) the limits are skipped with a warning and the
//! containers run without them.

use std::path::{Path, PathBuf};

/// Limits for one container.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// CPU cores (e.g. 0.5 or 2).
    pub cpu_cores: Option<f64>,
    /// Memory in MiB.
    pub memory_mb: Option<u64>,
}

const PERIOD_US: u64 = 100_000;

/// The cgroup directories a container was put in (removed by [`release`]).
#[derive(Debug, Default)]
pub struct Placement {
    dirs: Vec<PathBuf>,
}

impl Placement {
    /// The directories (for tests and diagnostics).
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }
}

fn write(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::write(path, value)
}

/// Puts process `pid` in cgroups named `name` with `limits`.
///
/// # Errors
/// A description of what could not be written.
pub fn place(root: &Path, name: &str, pid: u32, limits: Limits) -> Result<Placement, String> {
    let fail = |what: &str, p: &Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
    let mut placement = Placement::default();
    if root.join("cgroup.controllers").exists() {
        // cgroup v2: one directory with every controller.
        let dir = root.join("gregor").join(name);
        std::fs::create_dir_all(&dir).map_err(|e| fail("creating", &dir, e))?;
        if let Some(cores) = limits.cpu_cores {
            let quota = ((cores * PERIOD_US as f64) as u64).max(1000);
            write(&dir.join("cpu.max"), &format!("{quota} {PERIOD_US}"))
                .map_err(|e| fail("writing", &dir.join("cpu.max"), e))?;
        }
        if let Some(mb) = limits.memory_mb {
            write(&dir.join("memory.max"), &(mb << 20).to_string())
                .map_err(|e| fail("writing", &dir.join("memory.max"), e))?;
        }
        write(&dir.join("cgroup.procs"), &pid.to_string())
            .map_err(|e| fail("writing", &dir.join("cgroup.procs"), e))?;
        placement.dirs.push(dir);
        return Ok(placement);
    }
    // cgroup v1: one hierarchy per controller.
    if let Some(cores) = limits.cpu_cores {
        let dir = root.join("cpu").join(format!("gregor-{name}"));
        std::fs::create_dir_all(&dir).map_err(|e| fail("creating", &dir, e))?;
        let quota = ((cores * PERIOD_US as f64) as u64).max(1000);
        write(&dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string()).map_err(|e| fail("writing", &dir, e))?;
        write(&dir.join("cpu.cfs_quota_us"), &quota.to_string()).map_err(|e| fail("writing", &dir, e))?;
        write(&dir.join("cgroup.procs"), &pid.to_string()).map_err(|e| fail("writing", &dir, e))?;
        placement.dirs.push(dir);
    }
    if let Some(mb) = limits.memory_mb {
        let dir = root.join("memory").join(format!("gregor-{name}"));
        std::fs::create_dir_all(&dir).map_err(|e| fail("creating", &dir, e))?;
        write(&dir.join("memory.limit_in_bytes"), &(mb << 20).to_string()).map_err(|e| fail("writing", &dir, e))?;
        write(&dir.join("cgroup.procs"), &pid.to_string()).map_err(|e| fail("writing", &dir, e))?;
        placement.dirs.push(dir);
    }
    Ok(placement)
}

/// Removes the cgroup directories once their process has exited.
pub fn release(placement: &Placement) {
    for dir in &placement.dirs {
        let _ = std::fs::remove_dir(dir);
    }
}
