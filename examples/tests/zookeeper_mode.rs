//! The `zookeeper` execution mode with a real ZooKeeper and real processes:
//! processors of `key-counter` join, die (SIGKILL), freeze past their
//! session timeout (SIGSTOP) and come back, while input keeps arriving.
//! At the end every count is exact, and the audit stream (one record per
//! processed message, tagged with the job model version it ran under, a
//! fencing token) shows that no partition was ever processed under an
//! older assignment after a newer one began, and never by two processors
//! under one version.

mod common;

use gregor_examples::zookeeper_server::ZkServer;
use gregor_examples::{latest_values, values_by_partition};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEY_COUNTER: &str = env!("CARGO_BIN_EXE_key-counter");
const PARTITIONS: u32 = 8;
const SESSION_MS: u64 = 3000;

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling a process this test started.
    unsafe { libc_kill(child.id() as i32, sig) };
}

const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;
const SIGSTOP: i32 = 19;
const SIGCONT: i32 = 18;

struct Cluster {
    zk: ZkServer,
    dir: PathBuf,
    keys: BTreeMap<String, u64>,
    loaded: u64,
}

impl Cluster {
    fn processor(&self, id: &str) -> Child {
        let log = std::fs::File::create(self.dir.join(format!("{id}.log"))).unwrap();
        Command::new(KEY_COUNTER)
            .args(["--config", &common::config_path("key-counter.properties")])
            .args(["--set", &format!("systems.log.path={}", self.dir.join("data").display())])
            .args(["--set", &format!("job.coordinator.zk.connect={}", self.zk.connect())])
            .args(["--set", &format!("processor.id={id}")])
            // Each processor keeps local state apart, as on its own machine:
            // tasks that move to it restore from the changelog.
            .args(["--set", &format!("job.logged.store.base.dir={}", self.dir.join(format!("state-{id}")).display())])
            .args(["--set", &format!("job.coordinator.zk.session.timeout.ms={SESSION_MS}")])
            .args(["--set", "job.debounce.time.ms=300", "--set", "task.commit.ms=200"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Appends `n` keyed messages (keys partitioned as the job's output is).
    fn load(&mut self, n: u64) {
        let log = gregor_log::Log::open(self.dir.join("data")).unwrap();
        let stream = match log.stream("events") {
            Ok(s) => s,
            Err(_) => log.create_stream("events", gregor_log::StreamConfig::new(PARTITIONS)).unwrap(),
        };
        let mut batches: Vec<Vec<String>> = vec![Vec::new(); PARTITIONS as usize];
        for i in self.loaded..self.loaded + n {
            let key = format!("k{}", (i * 7919) % 997);
            *self.keys.entry(key.clone()).or_default() += 1;
            batches[gregor::partition_for_key(key.as_bytes(), PARTITIONS) as usize].push(key);
        }
        for (p, keys) in batches.iter().enumerate() {
            let records: Vec<gregor_log::Record<'_>> =
                keys.iter().map(|k| gregor_log::Record::keyed(k.as_bytes(), b"x")).collect();
            if !records.is_empty() {
                stream.append(p as u32, &records).unwrap();
            }
        }
        self.loaded += n;
    }

    fn audit(&self) -> Vec<Audit> {
        let data = self.dir.join("data");
        if gregor_log::Log::open(&data).and_then(|l| l.stream("key-counter-audit")).is_err() {
            return Vec::new();
        }
        values_by_partition(&data, "key-counter-audit")
            .unwrap()
            .into_iter()
            .flatten()
            .map(|r| {
                let f: Vec<&str> = r.split(' ').collect();
                Audit {
                    partition: f[0].parse().unwrap(),
                    offset: f[1].parse().unwrap(),
                    processor: f[2].to_owned(),
                    version: f[3].parse().unwrap(),
                }
            })
            .collect()
    }

    /// Keeps adding input until `processor` processes some of it (it got
    /// tasks in a new job model).
    fn wait_for_tasks_on(&mut self, processor: &str) {
        let before = self.audit().len();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !owners(&self.audit(), before).contains(processor) {
            assert!(Instant::now() < deadline, "{processor} never got tasks\n{}", self.logs());
            self.load(500);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The tail of every processor's log, for failure messages.
    fn logs(&self) -> String {
        std::fs::read_dir(&self.dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
            .map(|e| format!("--- {}\n{}\n", e.path().display(), tail(&e.path())))
            .collect()
    }

    /// Waits until every loaded message was processed (the counts match).
    fn wait_counted(&self, what: &str, timeout: Duration) -> Duration {
        let started = Instant::now();
        let truth: BTreeMap<String, String> = self.keys.iter().map(|(k, n)| (k.clone(), n.to_string())).collect();
        loop {
            let data = self.dir.join("data");
            let now = gregor_log::Log::open(&data)
                .and_then(|l| l.stream("key-counts"))
                .ok()
                .map(|_| latest_values(&data, "key-counts").unwrap());
            if now.as_ref() == Some(&truth) {
                return started.elapsed();
            }
            if started.elapsed() > timeout {
                panic!("{what}: counts not exact after {timeout:?}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[derive(Debug, Clone)]
struct Audit {
    partition: u32,
    offset: u64,
    processor: String,
    version: u64,
}

/// Per partition, versions never go back in the audit's (append) order, and
/// one version's records of a partition all come from one processor.
fn check_fencing(audit: &[Audit]) {
    let mut last: BTreeMap<u32, &Audit> = BTreeMap::new();
    let mut owner: BTreeMap<(u32, u64), &str> = BTreeMap::new();
    for a in audit {
        if let Some(prev) = last.get(&a.partition) {
            assert!(
                a.version >= prev.version,
                "partition {} processed under version {} by {} (offset {}) after version {} by {} (offset {}) had begun",
                a.partition,
                a.version,
                a.processor,
                a.offset,
                prev.version,
                prev.processor,
                prev.offset
            );
        }
        let o = owner.entry((a.partition, a.version)).or_insert(&a.processor);
        assert_eq!(*o, a.processor, "partition {} had two processors under version {}", a.partition, a.version);
        last.insert(a.partition, a);
    }
}

fn owners(audit: &[Audit], since: usize) -> BTreeSet<String> {
    audit[since.min(audit.len())..].iter().map(|a| a.processor.clone()).collect()
}

#[test]
fn processors_join_die_freeze_and_counts_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster { zk: ZkServer::start(), dir: dir.path().to_owned(), keys: BTreeMap::new(), loaded: 0 };
    std::fs::create_dir_all(c.dir.join("data")).unwrap();
    c.load(20_000);
    let mut procs: BTreeMap<&str, Child> = ["p1", "p2", "p3"].into_iter().map(|id| (id, c.processor(id))).collect();
    c.wait_counted("three processors", Duration::from_secs(60));
    // All three get work once the first model is out (3-3-2 tasks).
    c.load(20_000);
    c.wait_counted("three processors, more input", Duration::from_secs(60));
    let audit = c.audit();
    let newest = audit.iter().map(|a| a.version).max().unwrap();
    let working: BTreeSet<String> = audit.iter().filter(|a| a.version == newest).map(|a| a.processor.clone()).collect();
    assert_eq!(working, ["p1", "p2", "p3"].map(String::from).into());
    let p2_partitions: BTreeSet<u32> =
        audit.iter().filter(|a| a.version == newest && a.processor == "p2").map(|a| a.partition).collect();

    // kill -9 one: after its session expires, its tasks move to the others
    // (restored from the changelog) and nothing is lost or double counted.
    let before = c.audit().len();
    signal(&procs["p2"], SIGKILL);
    procs.remove("p2").unwrap().wait().unwrap();
    let killed = Instant::now();
    c.load(20_000);
    c.wait_counted("after p2 was killed", Duration::from_secs(60));
    let moved = killed.elapsed();
    let audit = c.audit();
    assert!(audit[before..].iter().all(|a| a.processor != "p2"));
    let taken: BTreeSet<u32> = audit[before..].iter().map(|a| a.partition).collect();
    assert!(
        p2_partitions.is_subset(&taken),
        "p2's partitions {p2_partitions:?} were not all processed after its death"
    );
    eprintln!("p2's tasks processed elsewhere and all input counted {moved:?} after kill -9");

    // A fourth joins: tasks rebalance to it.
    procs.insert("p4", c.processor("p4"));
    c.wait_for_tasks_on("p4");
    c.load(20_000);
    c.wait_counted("after p4 joined", Duration::from_secs(60));
    // What `gregor job status` shows: the published model and who is live.
    let group = gregor_coordinator::zookeeper::group_state(&gregor_coordinator::zookeeper::ZkOptions {
        connect: c.zk.connect(),
        job_path: "/gregor/key-counter-1".into(),
        processor_id: "status".into(),
        session_timeout: Duration::from_secs(5),
        connection_timeout: Duration::from_secs(10),
        debounce: Duration::ZERO,
        partition_check: Duration::from_secs(60),
        monitor_url: None,
    })
    .unwrap();
    let mut live = group.processors.clone();
    live.sort();
    assert_eq!(live, ["p1", "p3", "p4"]);
    // Each live processor serves its own status page and registered it.
    let ids: Vec<&str> = group.monitors.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["p1", "p3", "p4"], "status pages registered: {:?}", group.monitors);
    for (id, url) in &group.monitors {
        let (code, body) = gregor_examples::observe::http_get(&format!("{url}status.json")).unwrap();
        assert_eq!(code, 200);
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status["job"]["mode"], "zookeeper");
        assert_eq!(status["containers"][0]["id"], id.as_str(), "{url} shows another processor: {body}");
    }
    let model = group.model.expect("a published model");
    assert_eq!(model.version, c.audit().iter().map(|a| a.version).max().unwrap());
    let mut in_model: Vec<&str> = model.containers.iter().map(|c| c.id.as_str()).collect();
    in_model.sort();
    assert_eq!(in_model, ["p1", "p3", "p4"]);

    // Freeze p1 past its session timeout: the others take its tasks; once
    // thawed it finds its lease gone and processes nothing under its old
    // assignment (checked by the fencing audit below), then joins again.
    let p1_version = c.audit().iter().filter(|a| a.processor == "p1").map(|a| a.version).max().unwrap();
    signal(&procs["p1"], SIGSTOP);
    let frozen = Instant::now();
    c.load(20_000);
    c.wait_counted("while p1 is frozen", Duration::from_secs(60));
    assert!(
        frozen.elapsed() > Duration::from_millis(SESSION_MS),
        "p1's partitions were processed before its session could expire"
    );
    let audit = c.audit();
    let newest = audit.iter().map(|a| a.version).max().unwrap();
    assert!(newest > p1_version, "no new job model while p1 was frozen");
    signal(&procs["p1"], SIGCONT);
    // p1 comes back as a new member; more input, everything still exact.
    c.wait_for_tasks_on("p1");
    c.load(20_000);
    c.wait_counted("after p1 rejoined", Duration::from_secs(60));

    for (id, child) in &procs {
        signal(child, SIGTERM);
        let status = procs_wait(child.id(), Duration::from_secs(60));
        assert!(status, "processor {id} did not stop after SIGTERM");
    }
    for (_, mut child) in procs {
        assert!(child.wait().unwrap().success(), "a processor failed; see its log");
    }
    let audit = c.audit();
    check_fencing(&audit);
    let versions: BTreeSet<u64> = audit.iter().map(|a| a.version).collect();
    assert!(versions.len() >= 4, "expected a rebalance at each membership change, saw versions {versions:?}");
    let truth: BTreeMap<String, String> = c.keys.iter().map(|(k, n)| (k.clone(), n.to_string())).collect();
    assert_eq!(latest_values(&c.dir.join("data"), "key-counts").unwrap(), truth);
}

/// Waits until process `pid` has exited (is gone or a zombie).
fn procs_wait(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn unreachable_zookeeper_is_a_clear_error_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let started = Instant::now();
    let out = Command::new(KEY_COUNTER)
        .args(["--config", &common::config_path("key-counter.properties")])
        .args(["--set", &format!("systems.log.path={}", dir.path().display())])
        .args(["--set", &format!("job.coordinator.zk.connect=127.0.0.1:{port}")])
        .args(["--set", "job.coordinator.zk.connection.timeout.ms=1500"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot reach ZooKeeper at '127.0.0.1:{port}'")), "{err}");
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
}
