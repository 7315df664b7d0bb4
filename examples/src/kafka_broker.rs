//! A real Kafka-protocol broker for tests and benchmarks: Tansu (built into
//! `~/.cache/gregor-tools` by `scripts/test-deps`) on a free loopback port,
//! with SQLite storage in a temporary directory; stopped when dropped.
//! Panics (with the fix) when Tansu is not installed: it is for tests.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped, for restart tests) broker.
pub struct KafkaBroker {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    _slot: Slot,
}

/// Brokers one process runs at once. A test binary runs its tests in
/// parallel; with ten brokers and their jobs on 2 cores, a broker left
/// metadata requests unanswered for over 10 s and a job gave up.
const MAX_BROKERS: usize = 4;

static RUNNING: std::sync::Mutex<usize> = std::sync::Mutex::new(0);
static FREED: std::sync::Condvar = std::sync::Condvar::new();

/// One of the [`MAX_BROKERS`] places, held for a broker's life.
struct Slot;

impl Slot {
    fn take() -> Slot {
        let mut running = RUNNING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while *running >= MAX_BROKERS {
            running = FREED.wait(running).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *running += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *RUNNING.lock().unwrap_or_else(std::sync::PoisonError::into_inner) -= 1;
        FREED.notify_one();
    }
}

/// Where `scripts/test-deps` puts its tools.
pub fn tools_dir() -> PathBuf {
    std::env::var_os("GREGOR_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/gregor-tools"))
}

impl KafkaBroker {
    /// Starts a broker and waits until it answers metadata requests (and,
    /// first, until fewer than [`MAX_BROKERS`] of this process run).
    pub fn start() -> KafkaBroker {
        let slot = Slot::take();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut broker = KafkaBroker { child: None, port, dir: tempfile::tempdir().unwrap(), _slot: slot };
        broker.resume();
        broker
    }

    /// `host:port`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the broker (SIGTERM; its data stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling the broker this helper started.
            unsafe { kill(child.id() as i32, 15) };
            let _ = child.wait();
        }
    }

    /// Starts the stopped broker again on the same port and data.
    pub fn resume(&mut self) {
        let tansu = tools_dir().join("bin/tansu");
        assert!(tansu.exists(), "Tansu is not installed ({}): run ./scripts/test-deps", tansu.display());
        if self.dir.path().join("tansu.db").exists() {
            self.pause_compaction();
        }
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("tansu.log")).unwrap();
        let child = Command::new(&tansu)
            .current_dir(self.dir.path())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            // Tansu's maintenance compacts every compacted topic down to
            // the latest record per key, ignoring min.compaction.lag.ms,
            // which gregor sets on changelogs so that a restore after a crash
            // finds the values at its checkpoint. An hourly run stands for a
            // broker that honours the lag (no test runs that long).
            .args(["--storage-engine", "sqlite://tansu.db?maintenance_interval=1h"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut config = gregor::Config::new();
            config.set("systems.k.bootstrap.servers", self.bootstrap());
            let ready = gregor_kafka::KafkaSystemFactory::from_config(&config, "k")
                .ok()
                .is_some_and(|f| f.kafka_admin().topics().is_ok());
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "the Kafka broker did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Tansu runs its maintenance (compaction included) as soon as it
    /// starts, not one interval later, and ignores `min.compaction.lag.ms`:
    /// a restarted broker would compact away changelog records a restore to
    /// the checkpoint needs (those superseded by writes of an interval that
    /// never committed). Apache Kafka leaves records younger than the lag
    /// (gregor sets 4 hours on changelogs) alone, and every record of a test
    /// is younger, so the restarted broker stands for Kafka best without
    /// compaction: its compacted topics become `delete` topics (retention
    /// 7 days) in its database while it is stopped.
    fn pause_compaction(&self) {
        let sql = "update topic_configuration set value = 'delete' \
                   where name = 'cleanup.policy' and value like '%compact%';";
        let out = Command::new("sqlite3")
            .arg(self.dir.path().join("tansu.db"))
            .arg(sql)
            .output()
            .expect("sqlite3 is installed by ./scripts/test-deps");
        assert!(out.status.success(), "sqlite3 failed on Tansu's database: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The broker's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}
