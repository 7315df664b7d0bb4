//! The page-view counter (windows) and the stream-table join (bootstrap
//! stream, table store) run end to end as users run them.

mod common;

use gregor_examples::latest_values;
use serde_json::Value;

fn produce_keyed(dir: &std::path::Path, stream: &str, partitions: u32, messages: &[(&str, String)]) {
    let log = gregor_log::Log::open(dir).unwrap();
    let s =
        log.stream(stream).or_else(|_| log.create_stream(stream, gregor_log::StreamConfig::new(partitions))).unwrap();
    for (k, v) in messages {
        let p = gregor::partition_for_key(k.as_bytes(), partitions);
        s.append(p, &[gregor_log::Record::keyed(k.as_bytes(), v.as_bytes())]).unwrap();
    }
}

fn all_values(dir: &std::path::Path, stream: &str) -> Vec<Value> {
    let log = gregor_log::Log::open(dir).unwrap();
    let s = log.stream(stream).unwrap();
    let mut out = Vec::new();
    for p in 0..s.partition_count() {
        let part = s.partition(p).unwrap();
        let end = part.next_offset().unwrap();
        let mut r = gregor_log::PartitionReader::new(part, 0);
        while r.next_offset() < end {
            for m in r.poll(1 << 20).unwrap().messages() {
                out.push(serde_json::from_slice(&m.unwrap().value.unwrap()).unwrap());
            }
        }
    }
    out
}

#[test]
fn page_view_counter_reports_every_view_once_across_windows() {
    let dir = tempfile::tempdir().unwrap();
    let users = ["alice", "bob", "carol", "dave", "erin"];
    let views: Vec<(&str, String)> = (0..500)
        .map(|i| {
            (
                users[i % 5 * (i % 3 + 1) % 5],
                format!("{{\"user\":\"{}\",\"page\":\"/p{i}\"}}", users[i % 5 * (i % 3 + 1) % 5]),
            )
        })
        .collect();
    produce_keyed(dir.path(), "page-views", 2, &views);
    common::run_to_end(
        env!("CARGO_BIN_EXE_page-view-counter"),
        "page-view-counter.properties",
        dir.path(),
        &["task.window.ms=5"],
    );
    let mut totals = std::collections::BTreeMap::new();
    for report in all_values(dir.path(), "page-view-counts") {
        *totals.entry(report["user"].as_str().unwrap().to_owned()).or_insert(0) += report["views"].as_i64().unwrap();
        assert!(report["window_end"].as_u64().is_some());
    }
    for u in users {
        let expected = views.iter().filter(|(k, _)| *k == u).count() as i64;
        assert_eq!(totals.get(u).copied().unwrap_or(0), expected, "{u}");
    }
}

#[test]
fn stream_table_join_enriches_every_view_with_the_bootstrapped_profile() {
    let dir = tempfile::tempdir().unwrap();
    // Page views are written first: bootstrap still makes the profiles win.
    let views: Vec<(&str, String)> =
        (0..200).map(|i| (["u1", "u2", "u3"][i % 3], format!("{{\"page\":\"/p{i}\"}}"))).collect();
    produce_keyed(dir.path(), "page-views", 2, &views);
    let profiles = vec![
        ("u1", "{\"name\":\"Ana\",\"country\":\"NZ\"}".to_owned()),
        ("u2", "{\"name\":\"Bo\",\"country\":\"SE\"}".to_owned()),
        ("u3", "{\"name\":\"Cy\",\"country\":\"KE\"}".to_owned()),
    ];
    produce_keyed(dir.path(), "user-profiles", 2, &profiles);
    common::run_to_end(env!("CARGO_BIN_EXE_stream-table-join"), "stream-table-join.properties", dir.path(), &[]);
    let enriched = all_values(dir.path(), "enriched-page-views");
    assert_eq!(enriched.len(), 200);
    for e in &enriched {
        let expected = match e["user"].as_str().unwrap() {
            "u1" => "NZ",
            "u2" => "SE",
            _ => "KE",
        };
        assert_eq!(e["country"], expected, "{e}");
    }
    // The table survives a restart through its changelog: a new view for u2
    // finds the profile although the profiles stream is not re-read.
    produce_keyed(dir.path(), "page-views", 2, &[("u2", "{\"page\":\"/later\"}".to_owned())]);
    common::run_to_end(env!("CARGO_BIN_EXE_stream-table-join"), "stream-table-join.properties", dir.path(), &[]);
    let latest = latest_values(dir.path(), "enriched-page-views").unwrap();
    let later: Value = serde_json::from_str(&latest["u2"]).unwrap();
    assert_eq!((later["page"].as_str(), later["name"].as_str()), (Some("/later"), Some("Bo")));
}

/// A checkpoint that is past the end of its partition (the input was
/// deleted and created again, shorter) falls back to the input's
/// `samza.offset.default` (`oldest` here): the new data is processed, not
/// skipped by starting at the end.
#[test]
fn a_recreated_input_is_processed_from_the_offset_default() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        common::run_to_end(
            env!("CARGO_BIN_EXE_key-counter"),
            "key-counter.properties",
            dir.path(),
            &["job.coordinator=local", "task.commit.ms=100"],
        )
    };
    let keys: Vec<(&str, String)> = (0..10).map(|i| (["a", "b", "c"][i % 3], format!("m{i}"))).collect();
    produce_keyed(dir.path(), "events", 2, &keys);
    run();
    assert_eq!(gregor_examples::message_count(dir.path(), "key-counter-audit", true).unwrap(), 10);
    let log = gregor_log::Log::open(dir.path()).unwrap();
    log.delete_stream("events").unwrap();
    drop(log);
    produce_keyed(dir.path(), "events", 2, &keys[..3]);
    let out = run();
    assert_eq!(
        gregor_examples::message_count(dir.path(), "key-counter-audit", true).unwrap(),
        13,
        "the 3 messages of the recreated input were processed"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the checkpoint is past the end of the partition"), "a warning names it: {stderr}");
}
