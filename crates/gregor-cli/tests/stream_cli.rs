//! The `gregor stream` commands as a user runs them: real binary, real files.

use std::io::Write;
use std::process::{Command, Stdio};

mod common;

use common::{GREGOR, fails, gregor, ok};

#[test]
fn produce_and_consume_round_trip_with_keys_and_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_eq!(
        ok(d, &["stream", "create", "words", "--partitions", "4"], ""),
        "created stream words with 4 partitions\n"
    );
    let input: String = (0..100).map(|i| format!("user{}:event {i}\n", i % 7)).collect();
    ok(d, &["stream", "produce", "words", "--key-separator", ":"], &input);

    // Keyed messages land in murmur2(key) % 4, like Kafka's default partitioner.
    for p in 0..4u32 {
        let text = ok(d, &["stream", "consume", "words", "--partition", &p.to_string(), "--until-end"], "");
        for line in text.lines() {
            let (key, _) = line.split_once('\t').unwrap();
            assert_eq!(gregor_api::partition_for_key(key.as_bytes(), 4), p, "{key} in partition {p}");
        }
    }
    // Per key, order is kept.
    let all = ok(d, &["stream", "consume", "words", "--until-end"], "");
    assert_eq!(all.lines().count(), 100);
    for user in 0..7 {
        let events: Vec<u32> = all
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("user{user}\tevent ")))
            .map(|n| n.parse().unwrap())
            .collect();
        assert!(events.windows(2).all(|w| w[0] < w[1]), "user{user}: {events:?}");
        assert_eq!(events.len(), (0..100).filter(|i| i % 7 == user).count());
    }
}

#[test]
fn unkeyed_lines_are_spread_round_robin_and_json_is_complete() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["stream", "create", "lines", "--partitions", "3"], "");
    let input: String = (0..9).map(|i| format!("line {i}\n")).collect();
    ok(d, &["stream", "produce", "lines"], &input);
    let out = ok(d, &["stream", "describe", "lines"], "");
    let rows: Vec<&str> = out.lines().skip_while(|l| !l.contains("PARTITION")).skip(1).collect();
    assert_eq!(rows.len(), 3);
    for row in rows {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(&cols[1..4], ["0", "2", "3"], "each partition holds 3 messages: {row}");
    }
    let json = ok(d, &["stream", "consume", "lines", "--partition", "1", "--until-end", "--format", "json"], "");
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(first["partition"], 1);
    assert_eq!(first["offset"], 0);
    assert!(first["key"].is_null());
    assert!(first["value"].as_str().unwrap().starts_with("line "));
    assert!(first["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
    // --from OFFSET and --from newest.
    let from1 = ok(d, &["stream", "consume", "lines", "--partition", "1", "--from", "1", "--until-end"], "");
    assert_eq!(from1.lines().count(), 2);
    assert_eq!(ok(d, &["stream", "consume", "lines", "--from", "newest", "--until-end"], ""), "");
}

#[test]
fn explicit_partition_binary_values_and_data_dir_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dd = d.to_str().unwrap();
    // --data-dir before and after the subcommand, without the env var.
    let run = |args: &[&str], stdin: &str| {
        let mut child = Command::new(GREGOR)
            .args(args)
            .env_remove("GREGOR_DATA_DIR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&["--data-dir", dd, "stream", "create", "b", "--partitions", "2"], "");
    run(&["stream", "produce", "b", "--partition", "1", "--data-dir", dd], "k=\u{fffd}x\n");
    assert_eq!(
        run(&["stream", "--data-dir", dd, "consume", "b", "--partition", "1", "--until-end"], ""),
        "k=\u{fffd}x\n"
    );
    assert_eq!(run(&["stream", "consume", "b", "--partition", "0", "--until-end", "--data-dir", dd], ""), "");
    assert_eq!(run(&["stream", "list", "--data-dir", dd], ""), "b\n");

    // Non-UTF-8 bytes survive JSON output as base64.
    let mut child = Command::new(GREGOR)
        .args(["--data-dir", dd, "stream", "produce", "b", "--partition", "0"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&[0xff, 0xfe, b'\n']).unwrap();
    assert!(child.wait().unwrap().success());
    let json =
        run(&["--data-dir", dd, "stream", "consume", "b", "--partition", "0", "--until-end", "--format", "json"], "");
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["value"]["base64"], "//4=");
}

#[test]
fn compact_describe_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["stream", "create", "counts", "--partitions", "1", "--compact"], "");
    ok(d, &["stream", "produce", "counts", "--key-separator", "="], "a=1\nb=1\na=2\na=3\nb=2\n");
    let summary = ok(d, &["stream", "compact", "counts"], "");
    assert!(summary.starts_with("partition 0: 5 -> 2 messages, "), "{summary}");
    let json = ok(d, &["stream", "consume", "counts", "--until-end", "--format", "json"], "");
    let kept: Vec<(u64, String)> = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| {
            (v["offset"].as_u64().unwrap(), format!("{}={}", v["key"].as_str().unwrap(), v["value"].as_str().unwrap()))
        })
        .collect();
    assert_eq!(kept, [(3, "a=3".to_owned()), (4, "b=2".to_owned())], "latest per key at its original offset");
    let describe = ok(d, &["stream", "describe", "counts"], "");
    assert!(describe.contains("cleanup policy: compact"), "{describe}");
    assert_eq!(ok(d, &["stream", "delete", "counts"], ""), "deleted stream counts\n");
    assert_eq!(ok(d, &["stream", "list"], ""), "");
}

#[test]
fn every_user_error_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let missing = d.join("nothing-here");
    let err = fails(&missing, &["stream", "list"]);
    assert!(err.contains("does not exist"), "{err}");
    ok(d, &["stream", "create", "s", "--partitions", "2"], "");
    ok(d, &["stream", "produce", "s"], "x\n");
    for (args, expected) in [
        (&["stream", "consume", "nope"][..], "unknown stream 'nope'"),
        (&["stream", "describe", "nope"][..], "unknown stream 'nope'"),
        (&["stream", "create", "s", "--partitions", "1"][..], "stream 's' already exists"),
        (&["stream", "create", "bad/name", "--partitions", "1"][..], "invalid stream name"),
        (&["stream", "create", "z", "--partitions", "0"][..], "partitions must be between 1 and 65536"),
        (&["stream", "consume", "s", "--partition", "5"][..], "has no partition 5"),
        (&["stream", "produce", "s", "--partition", "2"][..], "has no partition 2"),
        (&["stream", "consume", "s", "--from", "7", "--partition", "1"][..], "offset 7 is out of range"),
        (&["stream", "consume", "s", "--from", "-3"][..], "is not 'oldest', 'newest' or an offset"),
        (&["stream", "compact", "s"][..], "is not compacted"),
        (&["stream", "create", "d", "--partitions", "1", "--durability", "sometimes"][..], "durability 'sometimes'"),
        (&["stream", "frobnicate"][..], "unrecognized subcommand"),
    ] {
        let err = fails(d, args);
        assert!(err.contains(expected), "gregor {args:?}: expected {expected:?} in {err:?}");
    }
    // A file where the data directory should be.
    let file = d.join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let err = fails(&file, &["stream", "create", "s", "--partitions", "1"]);
    assert!(err.contains("not a directory"), "{err}");
    // A line without the key separator stops with its line number.
    let out = gregor(d, &["stream", "produce", "s", "--key-separator", ":"], "a:1\nno separator\n");
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("line 2 has no key separator"), "{err}");
}

#[test]
fn consume_follows_new_messages_on_every_partition() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["stream", "create", "live", "--partitions", "3"], "");
    let mut follower = Command::new(GREGOR)
        .args(["stream", "consume", "live"])
        .env("GREGOR_DATA_DIR", d)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    // Messages arriving later, on different partitions, each show up.
    for i in 0..3 {
        ok(d, &["stream", "produce", "live", "--partition", &i.to_string()], &format!("message {i}\n"));
        let line = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("the follower prints new messages");
        assert_eq!(line, format!("message {i}"));
    }
    follower.kill().unwrap();
    follower.wait().unwrap();
}
