//! The `process` execution mode with real processes: containers killed with
//! SIGKILL are restarted by the coordinator and the counts stay exact; a
//! killed coordinator leaves no container behind.

mod common;

use gregor_examples::{latest_values, load_lines, word_counts, words};
use std::time::{Duration, Instant};

const WORDCOUNT: &str = env!("CARGO_BIN_EXE_wordcount");

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn alive(pid: u32) -> bool {
    // A zombie has exited: count only processes that still run.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
}

fn kill(pid: u32, signal: i32) {
    // SAFETY: signalling a process this test started (or its child).
    unsafe { libc_kill(pid as i32, signal) };
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn killed_containers_are_restarted_and_counts_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    // Enough input that several kills land before the job finishes.
    let text = common::text(20_000, 0x9e37_79b9_7f4a_7c15);
    let refs: Vec<&str> = text.iter().map(String::as_str).collect();
    load_lines(dir.path(), "words", 4, &refs).unwrap();
    let extra = ["job.coordinator=process", "job.container.count=2", "task.commit.ms=20"];
    let mut coordinator = common::spawn(WORDCOUNT, "wordcount.properties", dir.path(), &extra, true);
    let pid = coordinator.id();
    let mut kills = 0;
    let mut progress = 0;
    for round in 0..6 {
        let mut victim = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        while coordinator.try_wait().unwrap().is_none() && Instant::now() < deadline {
            let size = common::stream_size(dir.path(), "word-counts");
            // Any live container (one may be restarting after the last kill).
            let kids: Vec<u32> = children(pid).into_iter().filter(|&k| alive(k)).collect();
            if size > progress && !kids.is_empty() {
                progress = size + 500;
                victim = Some(kids[round % kids.len()]);
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let Some(victim) = victim else { break };
        kill(victim, 9);
        kills += 1;
    }
    assert!(kills >= 3, "only {kills} containers were killed before the job finished");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = coordinator.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the coordinator did not finish");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "the job failed: {status:?}");
    assert_eq!(latest_values(dir.path(), "word-counts").unwrap(), word_counts(&text), "after {kills} container kills");
}

#[test]
fn a_killed_coordinator_leaves_no_container_behind() {
    let dir = tempfile::tempdir().unwrap();
    let text = common::text(100, 0x9e37_79b9_7f4a_7c15);
    let refs: Vec<&str> = text.iter().map(String::as_str).collect();
    load_lines(dir.path(), "words", 4, &refs).unwrap();
    // Without --until-end the containers would run forever.
    let mut coordinator = common::spawn(
        WORDCOUNT,
        "wordcount.properties",
        dir.path(),
        &["job.coordinator=process", "job.container.count=2"],
        false,
    );
    let pid = coordinator.id();
    wait_until("two containers", Duration::from_secs(30), || children(pid).len() == 2);
    let kids = children(pid);
    kill(pid, 9);
    coordinator.wait().unwrap();
    wait_until("the containers to stop", Duration::from_secs(30), || kids.iter().all(|&k| !alive(k)));
}

#[test]
fn sigterm_to_the_coordinator_stops_every_container_cleanly() {
    stop_cleanly(|coordinator| kill(coordinator, 15));
}

#[test]
fn ctrl_c_at_a_terminal_stops_every_container_cleanly() {
    // A terminal's Ctrl-C goes to the whole foreground process group.
    stop_cleanly(|coordinator| kill_group(coordinator, 2));
}

fn kill_group(pgid: u32, signal: i32) {
    // SAFETY: signalling the process group this test created for the job.
    unsafe { libc_kill(-(pgid as i32), signal) };
}

fn stop_cleanly(stop: impl Fn(u32)) {
    let dir = tempfile::tempdir().unwrap();
    let text = common::text(300, 0x9e37_79b9_7f4a_7c15);
    let refs: Vec<&str> = text.iter().map(String::as_str).collect();
    load_lines(dir.path(), "words", 4, &refs).unwrap();
    let total: u64 = text.iter().map(|l| words(l).count() as u64).sum();
    // At-least-once: output shows before the (never reached) periodic
    // commit, so only the commit on the way out can make the rerun add nothing.
    let extra = [
        "job.coordinator=process",
        "job.container.count=2",
        "task.commit.ms=600000",
        "task.processing.guarantee=at-least-once",
    ];
    // Its own process group, like a job started from a shell.
    let mut coordinator = {
        use std::os::unix::process::CommandExt;
        let mut cmd = common::job(WORDCOUNT, "wordcount.properties", dir.path(), &extra);
        cmd.process_group(0).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap()
    };
    wait_until("all words counted", Duration::from_secs(60), || {
        common::stream_size(dir.path(), "word-counts") >= total
    });
    stop(coordinator.id());
    let status = coordinator.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // The containers committed on the way out: nothing is processed again.
    common::run_to_end(WORDCOUNT, "wordcount.properties", dir.path(), &["task.processing.guarantee=at-least-once"]);
    assert_eq!(common::stream_size(dir.path(), "word-counts"), total);
}

#[test]
fn containers_get_cpu_and_memory_limits_where_cgroups_are_writable() {
    let dir = tempfile::tempdir().unwrap();
    let text = common::text(50, 0x9e37_79b9_7f4a_7c15);
    let refs: Vec<&str> = text.iter().map(String::as_str).collect();
    load_lines(dir.path(), "words", 4, &refs).unwrap();
    let total: u64 = text.iter().map(|l| words(l).count() as u64).sum();
    let extra = [
        "job.coordinator=process",
        "job.container.count=2",
        "cluster-manager.container.cpu.cores=0.5",
        "cluster-manager.container.memory.mb=512",
    ];
    let coordinator = common::job(WORDCOUNT, "wordcount.properties", dir.path(), &extra)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = coordinator.id();
    wait_until("two containers", Duration::from_secs(30), || children(pid).len() == 2);
    let kids = children(pid);
    let v1 = std::path::Path::new("/sys/fs/cgroup/cpu");
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let probe = if v2 { std::path::PathBuf::from("/sys/fs/cgroup/gregor/probe") } else { v1.join("gregor-probe") };
    let writable = std::fs::create_dir_all(&probe).is_ok();
    let _ = std::fs::remove_dir(&probe);
    if writable {
        let mut placed = Vec::new();
        for i in 0..2 {
            let (procs, quota) = if v2 {
                let d = std::path::PathBuf::from(format!("/sys/fs/cgroup/gregor/wordcount-1-{i}"));
                (d.join("cgroup.procs"), d.join("cpu.max"))
            } else {
                let d = v1.join(format!("gregor-wordcount-1-{i}"));
                (d.join("cgroup.procs"), d.join("cpu.cfs_quota_us"))
            };
            wait_until("a container in each cgroup", Duration::from_secs(10), || {
                let found = std::fs::read_to_string(&procs).ok().and_then(|p| {
                    p.lines().filter_map(|l| l.trim().parse::<u32>().ok()).find(|pid| kids.contains(pid))
                });
                found.map(|pid| placed.push(pid)).is_some()
            });
            assert!(std::fs::read_to_string(&quota).unwrap().starts_with("50000"), "half a core");
        }
        placed.sort_unstable();
        let mut expected = kids.clone();
        expected.sort_unstable();
        assert_eq!(placed, expected, "each container in its own cgroup");
    }
    // With or without limits, the containers do the job.
    wait_until("all words counted", Duration::from_secs(60), || {
        common::stream_size(dir.path(), "word-counts") >= total
    });
    kill(pid, 15);
    let out = coordinator.wait_with_output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    if writable {
        if !v2 {
            assert!(!v1.join("gregor-wordcount-1-0").exists(), "cgroups are removed at the end");
        }
    } else {
        // Not writable (most CI machines): the coordinator says the limits
        // are not applied, once, instead of failing or staying silent.
        let warning = "containers run without CPU and memory limits";
        assert_eq!(stderr.matches(warning).count(), 1, "one warning that the limits are not applied: {stderr}");
    }
}
