//! Watching a running job: one HTTP server per job process serving
//! `/metrics` (Prometheus), `/status.json` and the status page at `/`.
//!
//! Where the numbers come from: containers running in this process (the
//! `local` and `zookeeper` modes) are read live from their registries; the
//! `process` mode's containers write a report file every second
//! ([`publish_reports`]) that their supervisor reads at each request, so one
//! scrape of the supervisor covers the job. The server runs on its own thread
//! and only reads; a container waits for it only when it looks a metric up
//! while a scrape copies the registry under its lock (~0.3 ms). A failed
//! request never fails the job.
//!
//! `metrics.http.address` (`host:port`, default `127.0.0.1:0`: loopback, a
//! free port; `off` serves nothing) says where. The chosen URL is logged and
//! written to `<job.logged.store.base.dir>/<job>-<id>/monitor.json`, where
//! `gregor job status` finds it.

pub mod events;
pub mod prometheus;
pub mod status;

use gregor_api::metrics::Sample;
use gregor_api::{Group, MetricsRegistry};
use gregor_runtime::{JobConfig, JobModel};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The config key naming the server's address.
pub const ADDRESS_KEY: &str = "metrics.http.address";

/// Throughput points kept for the status page's chart (10 minutes).
const HISTORY: usize = 120;
const HISTORY_EVERY: Duration = Duration::from_secs(5);
/// How often a `process` container writes its report.
const REPORT_EVERY: Duration = Duration::from_secs(1);

const PAGE: &str = include_str!("page.html");

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Where to serve, from `metrics.http.address`; `None` for `off`.
///
/// # Errors
/// A value that is neither `off` nor a `host:port` that resolves.
pub fn address(job: &JobConfig) -> Result<Option<SocketAddr>, gregor_api::ConfigError> {
    let value = job.raw.get(ADDRESS_KEY).unwrap_or("127.0.0.1:0");
    if value == "off" {
        return Ok(None);
    }
    let expected = "host:port (e.g. 127.0.0.1:9100, 0.0.0.0:9100, port 0 picks a free one) or off";
    value
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .map(Some)
        .ok_or_else(|| gregor_api::config::invalid(ADDRESS_KEY, value, expected))
}

/// What a `process` container hands its supervisor.
#[derive(Debug, Serialize, Deserialize)]
struct Report {
    reported_ms: i64,
    pid: u32,
    samples: Vec<Sample>,
    events: Vec<events::Event>,
}

/// What `monitor.json` holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct Published {
    /// The status page's URL.
    pub url: String,
    /// The serving process.
    pub pid: u32,
}

/// The path of the file naming a job's monitor URL.
pub fn published_path(job: &JobConfig) -> PathBuf {
    job.job_dir().join("monitor.json")
}

/// Where `process` containers write their reports.
pub(crate) fn reports_dir(job: &JobConfig) -> PathBuf {
    job.job_dir().join("coordinator").join("reports")
}

/// The numbers one job process serves.
#[derive(Clone)]
pub struct Monitor {
    inner: Arc<Inner>,
}

struct Inner {
    job: Mutex<status::JobInfo>,
    model: Mutex<Option<JobModel>>,
    local: Mutex<Vec<(String, MetricsRegistry)>>,
    reports: Option<PathBuf>,
    /// This process's own metrics (restarts per container).
    own: MetricsRegistry,
    history: Mutex<VecDeque<(i64, u64)>>,
}

impl Monitor {
    /// A monitor of `job` in `mode`; `reports` is the directory `process`
    /// containers report to, if this process supervises them.
    pub fn new(job: &JobConfig, mode: &str, reports: Option<PathBuf>) -> Monitor {
        let info = status::JobInfo {
            name: job.name.clone(),
            id: job.id.clone(),
            mode: mode.to_owned(),
            started_ms: now_ms(),
            url: String::new(),
        };
        Monitor {
            inner: Arc::new(Inner {
                job: Mutex::new(info),
                model: Mutex::new(None),
                local: Mutex::new(Vec::new()),
                reports,
                own: MetricsRegistry::new(),
                history: Mutex::new(VecDeque::new()),
            }),
        }
    }

    /// The model the job runs now.
    pub fn set_model(&self, model: &JobModel) {
        *lock(&self.inner.model) = Some(model.clone());
    }

    /// The registry of container `id`, running in this process (created on
    /// first use; kept across restarts of the container).
    pub fn container(&self, id: &str) -> MetricsRegistry {
        let mut local = lock(&self.inner.local);
        if let Some((_, r)) = local.iter().find(|(c, _)| c == id) {
            return r.clone();
        }
        let r = MetricsRegistry::new();
        local.push((id.to_owned(), r.clone()));
        r
    }

    /// Forgets the in-process containers (a new model moved them).
    pub fn clear_containers(&self) {
        lock(&self.inner.local).clear();
    }

    /// Counts a restart of container `id` (by a supervisor), and forgets
    /// its dead process's last report: the restarted one reports anew.
    pub fn restarted(&self, id: &str) {
        self.restarts_counter(id).inc();
        if let Some(dir) = &self.inner.reports {
            let _ = std::fs::remove_file(dir.join(format!("{id}.json")));
        }
    }

    /// The counter [`Monitor::restarted`] adds to.
    pub fn restarts_counter(&self, id: &str) -> gregor_api::Counter {
        let group = Group { kind: "container".into(), labels: vec![("container".into(), id.into())] };
        self.inner.own.counter(group, "restarts")
    }

    /// The containers' metrics; `fresh_only` leaves out `process` reports
    /// older than [`status::STALE_MS`].
    fn views(&self, fresh_only: bool) -> (Vec<status::ContainerView>, Vec<events::Event>) {
        let mut views: Vec<status::ContainerView> = lock(&self.inner.local)
            .iter()
            .map(|(id, r)| status::ContainerView { id: id.clone(), reported_ms: None, samples: r.samples() })
            .collect();
        let mut events = events::recent();
        if let Some(dir) = &self.inner.reports {
            for (id, report) in read_reports(dir) {
                views.push(status::ContainerView {
                    id,
                    reported_ms: Some(report.reported_ms),
                    samples: report.samples,
                });
                events.extend(report.events);
            }
        }
        // Shown on the status page as stale; not served as current numbers.
        if fresh_only {
            let now = now_ms();
            views.retain(|v| v.reported_ms.is_none_or(|t| now - t <= status::STALE_MS));
        }
        views.sort_by(|a, b| natural(&a.id).cmp(&natural(&b.id)));
        events.sort_by_key(|e| e.timestamp_ms);
        events.dedup();
        let skip = events.len().saturating_sub(events::KEPT);
        (views, events.split_off(skip))
    }

    /// `/metrics`.
    pub fn prometheus(&self) -> String {
        let (views, _) = self.views(true);
        let job = lock(&self.inner.job).clone();
        let mut sources: Vec<prometheus::Source> =
            views.into_iter().map(|v| prometheus::Source { container: Some(v.id), samples: v.samples }).collect();
        sources.push(prometheus::Source { container: None, samples: self.inner.own.samples() });
        prometheus::render(&job.name, &job.id, &sources)
    }

    /// `/status.json`.
    pub fn status(&self) -> serde_json::Value {
        let (views, events) = self.views(false);
        let job = lock(&self.inner.job).clone();
        let model = lock(&self.inner.model).clone();
        let history: Vec<(i64, u64)> = lock(&self.inner.history).iter().copied().collect();
        let restarts = |id: &str| self.restarts_counter(id).get();
        status::status(&job, model.as_ref(), &views, &restarts, &history, &events, now_ms())
    }

    fn sample_history(&self) {
        let (views, _) = self.views(false);
        let mut h = lock(&self.inner.history);
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back((now_ms(), status::processed_total(&views)));
    }

    /// Serves at `address` until the returned server is dropped.
    ///
    /// # Errors
    /// The address cannot be listened on (in use, not local, no permission).
    pub fn serve(&self, address: SocketAddr, publish: Option<PathBuf>) -> Result<MonitorServer, crate::JobError> {
        let failed = |reason: String| crate::JobError::MetricsServer { address: address.to_string(), reason };
        let listener = std::net::TcpListener::bind(address).map_err(|e| failed(e.to_string()))?;
        no_delay(&listener);
        let server = tiny_http::Server::from_listener(listener, None).map_err(|e| failed(e.to_string()))?;
        let bound = server.server_addr().to_ip().unwrap_or(address);
        let url = format!("http://{bound}/");
        lock(&self.inner.job).url = url.clone();
        tracing::info!(%url, metrics = %format!("{url}metrics"), "serving the job's status page and metrics");
        if let Some(path) = &publish {
            let text = serde_json::to_vec(&Published { url: url.clone(), pid: std::process::id() }).unwrap_or_default();
            if let Err(e) = write_atomically(path, &text) {
                tracing::warn!("cannot write {}: {e} (gregor job status will not show the URL)", path.display());
            }
        }
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let (monitor, s, st) = (self.clone(), server.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("gregor-monitor".into())
            .spawn(move || serve_loop(&monitor, &s, &st))
            .map_err(|e| crate::JobError::MetricsServer { address: url.clone(), reason: e.to_string() })?;
        Ok(MonitorServer { server, stop, thread: Some(thread), url, publish })
    }
}

/// A running server; dropping it stops it.
pub struct MonitorServer {
    server: Arc<tiny_http::Server>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The status page's URL.
    pub url: String,
    publish: Option<PathBuf>,
}

impl Drop for MonitorServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(p) = &self.publish {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn serve_loop(monitor: &Monitor, server: &tiny_http::Server, stop: &AtomicBool) {
    let mut next_sample = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        if Instant::now() >= next_sample {
            monitor.sample_history();
            next_sample = Instant::now() + HISTORY_EVERY;
        }
        let request = match server.recv_timeout(Duration::from_millis(500)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!("monitor: {e}");
                continue;
            }
        };
        let path = request.url().split('?').next().unwrap_or("/").to_owned();
        let (body, content_type, code) = match (request.method(), path.as_str()) {
            (tiny_http::Method::Get, "/metrics") => {
                (monitor.prometheus(), "application/openmetrics-text; version=1.0.0; charset=utf-8", 200)
            }
            (tiny_http::Method::Get, "/status.json") => (monitor.status().to_string(), "application/json", 200),
            (tiny_http::Method::Get, "/" | "/index.html") => (PAGE.to_owned(), "text/html; charset=utf-8", 200),
            (tiny_http::Method::Get, _) => {
                ("not found: try /, /status.json or /metrics\n".to_owned(), "text/plain", 404)
            }
            _ => ("only GET is served\n".to_owned(), "text/plain", 405),
        };
        let header = tiny_http::Header::from_bytes("Content-Type", content_type).ok();
        let mut response = tiny_http::Response::from_string(body).with_status_code(code);
        if let Some(h) = header {
            response.add_header(h);
        }
        // A client that went away is its own problem.
        let _ = request.respond(response);
    }
}

/// In a `process` container: writes this container's metrics and recent
/// warnings to `dir/<id>.json` every second, for its supervisor to serve.
/// The thread ends with the process.
pub(crate) fn publish_reports(dir: PathBuf, id: String, registry: MetricsRegistry) {
    let spawned = std::thread::Builder::new().name("gregor-report".into()).spawn(move || {
        let path = dir.join(format!("{id}.json"));
        loop {
            let report = Report {
                reported_ms: now_ms(),
                pid: std::process::id(),
                samples: registry.samples(),
                events: events::recent(),
            };
            let written = std::fs::create_dir_all(&dir)
                .and_then(|()| write_atomically(&path, &serde_json::to_vec(&report).unwrap_or_default()));
            if let Err(e) = written {
                tracing::debug!("cannot write the container report {}: {e}", path.display());
            }
            std::thread::sleep(REPORT_EVERY);
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("no metrics reports to the supervisor: {e}");
    }
}

fn read_reports(dir: &Path) -> Vec<(String, Report)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name.strip_suffix(".json")?.to_owned();
            let report: Report = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            // A container process that died: its numbers are not current.
            process_alive(report.pid).then_some((id, report))
        })
        .collect()
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Sets TCP_NODELAY on the listening socket; Linux hands it down to every
/// accepted connection. tiny_http writes a response's head and body
/// separately, and without it a keep-alive client (Prometheus) waits for
/// its delayed ACK: 40 ms per scrape instead of 1.
fn no_delay(listener: &std::net::TcpListener) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a pointer to a c_int of the
    // length given, alive for the call.
    let r = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        tracing::debug!("TCP_NODELAY not set on the monitor's socket: {}", std::io::Error::last_os_error());
    }
}

/// Whether process `pid` exists (for files that name their writer).
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    // SAFETY: signal 0 only checks that the process exists.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

/// Container ids sort as numbers where they are numbers (`2` before `10`).
fn natural(id: &str) -> (u64, &str) {
    (id.parse().unwrap_or(u64::MAX), id)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
