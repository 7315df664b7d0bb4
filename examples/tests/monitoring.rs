//! Watching running jobs with real tools: a real Prometheus server scrapes
//! a job and its numbers match what the job did; headless Chromium loads
//! the status page and shows containers, tasks and lags; in `process` mode
//! the supervisor serves every container's metrics and counts a container
//! killed with SIGKILL; bad addresses and JSON logs.

mod common;

use gregor_examples::observe::{Prometheus, chromium_dom, http_get, published_url, wait_for};
use gregor_examples::{load_lines, words};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

const WORDCOUNT: &str = env!("CARGO_BIN_EXE_wordcount");
const MINUTE: Duration = Duration::from_secs(60);

/// Loads `n` lines into `words`; returns what the word count processes:
/// every line (stage 1) and every word (stage 2).
fn load(dir: &Path, n: usize) -> u64 {
    load_counted(dir, n).0
}

/// [`load`], also returning the number of distinct words.
fn load_counted(dir: &Path, n: usize) -> (u64, usize) {
    let lines = common::text(n, 0x5eed_0b5e_7ab1_e000);
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    load_lines(dir, "words", 4, &refs).unwrap();
    let distinct = gregor_examples::word_counts(&lines).len();
    ((lines.len() + lines.iter().map(|l| words(l).count()).sum::<usize>()) as u64, distinct)
}

/// A running job, killed if the test fails before stopping it.
struct Job(Option<Child>);

impl Drop for Job {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start(dir: &Path, extra: &[&str]) -> Job {
    let mut all = vec!["metrics.http.address=127.0.0.1:0", "task.commit.ms=200"];
    all.extend_from_slice(extra);
    let mut cmd = common::job(WORDCOUNT, "wordcount.properties", dir, &all);
    cmd.stdout(Stdio::null()).stderr(std::fs::File::create(dir.join("job.log")).unwrap());
    Job(Some(cmd.spawn().unwrap()))
}

fn status(url: &str) -> Option<serde_json::Value> {
    let (code, body) = http_get(&format!("{url}status.json")).ok()?;
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

fn stop(mut job: Job) {
    let mut child = job.0.take().unwrap();
    // SAFETY: signalling a process this test started.
    unsafe { kill(child.id() as i32, 15) };
    assert!(child.wait().unwrap().success(), "the job did not stop cleanly on SIGTERM");
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// Sums a metric's samples in a Prometheus text exposition.
fn sum_metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn prometheus_and_a_browser_see_what_a_running_job_did() {
    let dir = tempfile::tempdir().unwrap();
    let (expected, distinct) = load_counted(dir.path(), 3000);
    let job = start(dir.path(), &[]);
    let url = wait_for("the job's status page URL", MINUTE, || published_url(&dir.path().join("__state"), "wordcount"));
    wait_for("the job to process all input", MINUTE, || {
        status(&url).filter(|s| s["totals"]["processed"] == expected && s["totals"]["lag"] == 0)
    });

    // A real Prometheus scrapes /metrics; its queries give the job's numbers.
    let target = url.trim_start_matches("http://").trim_end_matches('/');
    let prometheus = Prometheus::start(target);
    let processed = |q: &str| prometheus.query(q).filter(|v| *v == expected as f64);
    wait_for("Prometheus to see every processed message", MINUTE, || {
        processed(r#"sum(gregor_input_messages_processed_total{job="wordcount"})"#)
    });
    processed(r#"sum(gregor_task_messages_processed_total{job="wordcount",job_id="1"})"#)
        .unwrap_or_else(|| panic!("per-task counts disagree: {}", prometheus.log()));
    assert_eq!(prometheus.query(r#"sum(gregor_input_lag{job="wordcount"})"#), Some(0.0));
    assert_eq!(prometheus.query(r#"count(gregor_input_lag{job="wordcount"})"#), Some(8.0), "4 tasks x 2 inputs");
    assert!(prometheus.query("sum(gregor_container_commits_total)").is_some_and(|c| c >= 1.0));
    // Every query of the Grafana dashboard in docs/ finds its data.
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../docs/grafana-dashboard.json")).expect("the dashboard is JSON");
    for panel in dashboard["panels"].as_array().unwrap() {
        let expr = panel["targets"][0]["expr"].as_str().unwrap().replace("$job", "wordcount");
        wait_for(&format!("data for the dashboard panel {}: {expr}", panel["title"]), MINUTE, || {
            prometheus.has_data(&expr).then_some(())
        });
    }

    // The status page in headless Chromium: one row per task and input
    // partition, with its lag, filled in by the page's own script.
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("monitoring");
    std::fs::create_dir_all(&shots).unwrap();
    let png = shots.join("status-page.png");
    let dom = chromium_dom(&url, Duration::from_secs(5), Some(&png));
    assert!(dom.contains(r#"data-loaded="true""#), "the page did not load status.json: {dom}");
    assert!(dom.contains("gregor job wordcount-1"), "{dom}");
    for task in 0..4 {
        for stream in ["words", "wordcount-words"] {
            let row =
                format!(r#"data-container="0" data-task="Partition {task}" data-partition="log.{stream}[{task}]""#);
            assert!(dom.contains(&row), "no row for task {task}, {stream}: {dom}");
        }
    }
    assert_eq!(dom.matches(r#"<td class="num lag">0</td>"#).count(), 8, "every lag shown as 0: {dom}");
    // Every distinct word has one entry in exactly one task's `counts` store.
    let s = status(&url).unwrap();
    let entries: i64 = s["containers"][0]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["stores"].as_array().unwrap())
        .filter(|st| st["name"] == "counts")
        .map(|st| st["entries"].as_i64().unwrap())
        .sum();
    assert_eq!(entries as usize, distinct, "store entries on the status page");
    assert_eq!(dom.matches(r#"data-store="counts""#).count(), 4, "{dom}");
    assert!(std::fs::metadata(&png).is_ok_and(|m| m.len() > 10_000), "no screenshot at {}", png.display());

    stop(job);
    assert!(published_url(&dir.path().join("__state"), "wordcount").is_none(), "a stopped job still publishes its URL");
}

#[test]
fn the_process_supervisor_serves_every_container_and_counts_a_killed_one() {
    let dir = tempfile::tempdir().unwrap();
    let expected = load(dir.path(), 2000);
    let job = start(dir.path(), &["job.coordinator=process", "job.container.count=2"]);
    let url = wait_for("the supervisor's status page URL", MINUTE, || {
        published_url(&dir.path().join("__state"), "wordcount")
    });
    let done = |s: &serde_json::Value| {
        s["totals"]["processed"] == expected
            && s["containers"].as_array().is_some_and(|c| c.len() == 2 && c.iter().all(|c| c["stale"] == false))
    };
    let s = wait_for("both containers' reports", MINUTE, || status(&url).filter(done));
    assert_eq!(s["job"]["mode"], "process");
    let (_, metrics) = http_get(&format!("{url}metrics")).unwrap();
    for c in ["0", "1"] {
        assert!(metrics.contains(&format!(r#"container="{c}",task="#)), "no metrics of container {c}: {metrics}");
    }
    assert_eq!(sum_metric(&metrics, "gregor_task_messages_processed_total"), expected as f64, "{metrics}");

    // kill -9 container 1: the supervisor restarts it and counts the restart.
    let report = dir.path().join("__state/wordcount-1/coordinator/reports/1.json");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    let pid = report["pid"].as_u64().unwrap() as i32;
    // SAFETY: signalling the container process this test's job started.
    unsafe { kill(pid, 9) };
    let restarted = |s: &serde_json::Value| {
        s["containers"].as_array().and_then(|c| c.iter().find(|c| c["id"] == "1")).is_some_and(|c| c["restarts"] == 1)
    };
    wait_for("the restart in status.json", MINUTE, || status(&url).filter(restarted));
    let (_, metrics) = http_get(&format!("{url}metrics")).unwrap();
    assert!(
        metrics.contains(r#"gregor_container_restarts_total{job="wordcount",job_id="1",container="1"} 1"#),
        "{metrics}"
    );
    // A new process of container 1 reports (its counters start again at 0);
    // the killed one's last report is never served as current.
    let report_path = dir.path().join("__state/wordcount-1/coordinator/reports/1.json");
    wait_for("the restarted container's own report", MINUTE, || {
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report_path).ok()?).ok()?;
        (r["pid"].as_i64()? != i64::from(pid)).then_some(())
    });
    // Both live again, and caught up (lags refresh every 2 s).
    wait_for("two live containers again, caught up", MINUTE, || {
        status(&url).filter(|s| {
            s["totals"]["lag"] == 0
                && s["containers"].as_array().is_some_and(|c| c.len() == 2 && c.iter().all(|c| c["stale"] == false))
        })
    });
    stop(job);
}

#[test]
fn bad_addresses_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    load(dir.path(), 10);
    let out = common::job(WORDCOUNT, "wordcount.properties", dir.path(), &["metrics.http.address=nowhere"])
        .arg("--until-end")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("metrics.http.address") && err.contains("nowhere"), "{err}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let out = common::job(WORDCOUNT, "wordcount.properties", dir.path(), &[&format!("metrics.http.address={address}")])
        .arg("--until-end")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the job ran although its metrics port was taken");
    assert!(err.contains(&format!("metrics.http.address={address}: cannot serve")), "{err}");
    // Nothing ran: the input is still unprocessed.
    assert_eq!(common::stream_size(dir.path(), "word-counts"), 0);
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    load(dir.path(), 10);
    let out = common::job(WORDCOUNT, "wordcount.properties", dir.path(), &[])
        .args(["--until-end", "--log-format", "json"])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.iter().all(|l| l["level"].is_string() && l["timestamp"].is_string()));
    let finished = lines.iter().find(|l| l["message"] == "finished").expect("a 'finished' event");
    assert_eq!(finished["job"], "wordcount");
    assert!(finished["processed"].as_u64().is_some_and(|n| n > 0), "{finished}");
}
