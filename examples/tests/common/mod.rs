//! Running the example binaries as a user would.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

pub fn config_path(name: &str) -> String {
    format!("{}/config/{name}", env!("CARGO_MANIFEST_DIR"))
}

pub fn job(binary: &str, config: &str, dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(binary);
    cmd.args(["--config", &config_path(config), "--set", &format!("systems.log.path={}", dir.display())]);
    for e in extra {
        cmd.args(["--set", e]);
    }
    cmd.env("RUST_LOG", "warn").stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

pub fn run_to_end(binary: &str, config: &str, dir: &Path, extra: &[&str]) -> Output {
    let out = job(binary, config, dir, extra).arg("--until-end").output().unwrap();
    assert!(out.status.success(), "{binary} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

pub fn spawn(binary: &str, config: &str, dir: &Path, extra: &[&str], until_end: bool) -> Child {
    let mut cmd = job(binary, config, dir, extra);
    if until_end {
        cmd.arg("--until-end");
    }
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
}

/// Messages in all partitions of a stream (0 if it does not exist yet).
pub fn stream_size(dir: &Path, stream: &str) -> u64 {
    let Ok(log) = gregor_log::Log::open(dir) else { return 0 };
    let Ok(s) = log.stream(stream) else { return 0 };
    (0..s.partition_count()).map(|p| s.partition(p).and_then(|p| p.next_offset()).unwrap_or(0)).sum()
}

/// Deterministic pseudo-random lines over a small vocabulary.
pub fn text(lines: usize, seed: u64) -> Vec<String> {
    let mut s = seed;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    (0..lines)
        .map(|_| {
            let n = 3 + next() % 12;
            (0..n).map(|_| format!("w{}", next() % 300)).collect::<Vec<_>>().join(if next() % 2 == 0 {
                " "
            } else {
                ", "
            })
        })
        .collect()
}

/// Lets `child` run until `progressed()` (then kills it with SIGKILL and
/// returns `true`) or until it exits by itself, which must be a success
/// (returns `false`). Fails the test after two minutes without either.
pub fn kill_once(child: &mut Child, what: &str, mut progressed: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{what}: the job failed");
            return false;
        }
        if progressed() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return true;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: no progress");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// The pid of `process`-mode container `id` from the supervisor's report in
/// `reports` (`<state>/<job>/coordinator/reports`), if it runs: not one in
/// `killed` (a process just sent SIGKILL can still look alive for a
/// moment) and not a zombie waiting for the supervisor to reap it.
pub fn live_container_pid(reports: &Path, id: usize, killed: &std::collections::HashSet<i64>) -> Option<i64> {
    let report = std::fs::read(reports.join(format!("{id}.json"))).ok()?;
    let pid = serde_json::from_slice::<serde_json::Value>(&report).ok()?["pid"].as_i64()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    (!killed.contains(&pid) && !stat.split(") ").nth(1).is_some_and(|r| r.starts_with('Z'))).then_some(pid)
}
