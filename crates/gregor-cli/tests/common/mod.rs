//! Running the `gregor` binary as a user does, against the embedded log in
//! a directory or against a Kafka cluster.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

pub const GREGOR: &str = env!("CARGO_BIN_EXE_gregor");

/// Where the commands go.
pub enum Target<'a> {
    /// The embedded log in this data directory.
    Log(&'a Path),
    /// Kafka at these bootstrap servers.
    Kafka(&'a str),
}

impl<'a> From<&'a Path> for Target<'a> {
    fn from(dir: &'a Path) -> Self {
        Target::Log(dir)
    }
}

impl<'a> From<&'a std::path::PathBuf> for Target<'a> {
    fn from(dir: &'a std::path::PathBuf) -> Self {
        Target::Log(dir)
    }
}

pub fn gregor<'a>(target: impl Into<Target<'a>>, args: &[&str], stdin: &str) -> Output {
    let mut cmd = Command::new(GREGOR);
    match target.into() {
        Target::Log(dir) => cmd.env("GREGOR_DATA_DIR", dir),
        Target::Kafka(bootstrap) => cmd.args(["--system", "kafka", "--bootstrap-servers", bootstrap]),
    };
    let mut child = cmd
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// Runs a command that must succeed; returns its stdout.
pub fn ok<'a>(target: impl Into<Target<'a>>, args: &[&str], stdin: &str) -> String {
    let out = gregor(target, args, stdin);
    assert!(out.status.success(), "gregor {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail; returns its single stderr line.
pub fn fails<'a>(target: impl Into<Target<'a>>, args: &[&str]) -> String {
    let out = gregor(target, args, "");
    assert!(!out.status.success(), "gregor {args:?} should fail");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "one line on stderr, got {err:?}");
    assert!(out.stdout.is_empty());
    err
}
