//! Watching jobs from tests and benchmarks: a plain HTTP GET, a real
//! Prometheus server (Debian's `prometheus`, installed by
//! `scripts/test-deps`) scraping a job, and headless Chromium loading its
//! status page. Panics with the fix when a tool is missing: it is for tests.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `GET url` (`http://host:port/path`): (status code, body).
///
/// # Errors
/// A malformed URL, or no answer.
pub fn http_get(url: &str) -> Result<(u16, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("not an http:// URL: {url}"))?;
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut stream = TcpStream::connect(host).map_err(|e| format!("{url}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").map_err(|e| format!("{url}: {e}"))?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(|e| format!("{url}: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("{url}: no HTTP response"))?;
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| format!("{url}: {head}"))?;
    Ok((code, body.to_owned()))
}

/// Waits up to `timeout` for `f` to give a value.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The URL a job publishes in `<state dir>/<job>-<id>/monitor.json`.
pub fn published_url(state_dir: &Path, job: &str) -> Option<String> {
    let text = std::fs::read(state_dir.join(format!("{job}-1")).join("monitor.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    v["url"].as_str().map(str::to_owned)
}

/// A Prometheus server scraping one target every 500 ms; stopped when dropped.
pub struct Prometheus {
    child: Child,
    /// `http://127.0.0.1:<port>/`.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus on a free loopback port, scraping `target`
    /// (`host:port`) at `/metrics`, and waits until it is ready.
    pub fn start(target: &str) -> Prometheus {
        assert!(
            Command::new("prometheus").arg("--version").output().is_ok(),
            "prometheus is not installed: run ./scripts/test-deps"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // honor_labels: the job's own `job` label stays (see docs/operations.md).
        let config = format!(
            "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\nscrape_configs:\n  - job_name: gregor\n    honor_labels: true\n    static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let p = Prometheus { child, url: format!("http://127.0.0.1:{port}/"), _dir: dir };
        wait_for("Prometheus to be ready", Duration::from_secs(60), || {
            http_get(&format!("{}-/ready", p.url)).ok().filter(|(code, _)| *code == 200)
        });
        p
    }

    /// The value of an instant query's only series, if it has one.
    pub fn query(&self, promql: &str) -> Option<f64> {
        let url = format!("{}api/v1/query?query={}", self.url, encode(promql));
        let (_, body) = http_get(&url).ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// Whether an instant query returns at least one series.
    pub fn has_data(&self, promql: &str) -> bool {
        let url = format!("{}api/v1/query?query={}", self.url, encode(promql));
        let Ok((_, body)) = http_get(&url) else { return false };
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["data"]["result"].as_array().map(|r| !r.is_empty()))
            .unwrap_or(false)
    }

    /// Prometheus's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Headless Chromium (Debian's `chromium`, installed by `scripts/test-deps`)
/// loads `url`, runs its scripts for `budget`, and returns the DOM; with
/// `screenshot`, also saves a PNG there.
pub fn chromium_dom(url: &str, budget: Duration, screenshot: Option<&Path>) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1100,1000",
    ]
    .map(String::from)
    .to_vec();
    args.push(format!("--user-data-dir={}", profile.path().display()));
    args.push(format!("--virtual-time-budget={}", budget.as_millis()));
    let run = |extra: &[String]| {
        let out = Command::new(chromium())
            .args(&args)
            .args(extra)
            .arg(url)
            .stdin(Stdio::null())
            .output()
            .expect("chromium is installed by ./scripts/test-deps");
        assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    if let Some(png) = screenshot {
        run(&[format!("--screenshot={}", png.display())]);
    }
    run(&["--dump-dom".to_owned()])
}

fn chromium() -> PathBuf {
    PathBuf::from(std::env::var_os("GREGOR_CHROMIUM").unwrap_or_else(|| "chromium".into()))
}
