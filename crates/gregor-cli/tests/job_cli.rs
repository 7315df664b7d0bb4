//! `gregor job status` shows where a running job serves its status page and
//! metrics, and that a stopped one serves nothing.

use gregor::{App, IncomingEnvelope, MessageCollector, StreamTask, TaskCoordinator, TaskError};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const GREGOR: &str = env!("CARGO_BIN_EXE_gregor");

#[derive(Default)]
struct Ignore;

impl StreamTask for Ignore {
    type Key = String;
    type Message = String;
    fn process(
        &mut self,
        _: IncomingEnvelope<'_, String, String>,
        _: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        Ok(())
    }
}

fn status(config: &std::path::Path) -> String {
    let out = Command::new(GREGOR).args(["job", "status", "--config", config.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn job_status_shows_the_running_jobs_status_page() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config_path = dir.path().join("ignore.properties");
    let text = format!(
        "job.name=ignore\ntask.inputs=log.words\nsystems.log.factory=log\nsystems.log.path={}\n\
         systems.log.samza.key.serde=string\nsystems.log.samza.msg.serde=string\n",
        data.display()
    );
    std::fs::write(&config_path, &text).unwrap();
    gregor_log::Log::open(&data).unwrap().create_stream("words", gregor_log::StreamConfig::new(2)).unwrap();
    let config = gregor::Config::from_properties(&text, "ignore.properties").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let job = std::thread::spawn(move || App::new("ignore", || Ignore).run_config(config, false, flag));

    let deadline = Instant::now() + Duration::from_secs(60);
    let shown = loop {
        let s = status(&config_path);
        if s.contains("status page: http://127.0.0.1:") {
            break s;
        }
        assert!(Instant::now() < deadline, "no status page shown: {s}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let url = shown.lines().find_map(|l| l.strip_prefix("status page: ")).unwrap().split(' ').next().unwrap();
    assert!(shown.contains(&format!("(metrics: {url}metrics; pid {})", std::process::id())), "{shown}");

    stop.store(true, Ordering::SeqCst);
    job.join().unwrap().unwrap();
    let after = status(&config_path);
    assert!(after.contains("status page: none"), "{after}");
}
