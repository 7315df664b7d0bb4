//! A real ZooKeeper server (Debian's `zookeeper` package, installed by
//! `scripts/test-deps`) on a free loopback port, for one test or benchmark;
//! killed and removed when dropped. Panics (with the fix) when ZooKeeper is
//! not installed: it is for tests, not for jobs.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const JAR: &str = "/usr/share/java/zookeeper.jar";

/// A running server.
pub struct ZkServer {
    child: Child,
    /// Its client port on 127.0.0.1.
    pub port: u16,
    /// Its output.
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ZkServer {
    /// Starts a standalone server with a 200 ms tick (session timeouts from
    /// 400 ms) and waits until it serves.
    pub fn start() -> ZkServer {
        assert!(
            std::path::Path::new(JAR).exists(),
            "ZooKeeper is not installed ({JAR} is missing): run ./scripts/test-deps, or ./scripts/test which runs it"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = dir.path().join("zoo.cfg");
        std::fs::write(
            &config,
            format!(
                "tickTime=200\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\nminSessionTimeout=400\nmaxSessionTimeout=60000\nadmin.enableServer=false\n4lw.commands.whitelist=srvr\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = dir.path().join("zookeeper.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("java")
            .args(["-Xmx256m", "-Dzookeeper.admin.enableServer=false", "-cp", JAR])
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("cannot start java (install default-jre-headless: ./scripts/test-deps)");
        let server = ZkServer { child, port, log, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !server.serving() {
            assert!(
                Instant::now() < deadline,
                "ZooKeeper did not start on port {port}: {}",
                std::fs::read_to_string(&server.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// The connect string.
    pub fn connect(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Whether the server answers the `srvr` command.
    fn serving(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut answer = String::new();
        s.write_all(b"srvr").is_ok() && s.read_to_string(&mut answer).is_ok() && answer.contains("Mode:")
    }
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
