//! The event-time Streams API examples (`page-sessions`, `ad-clicks`,
//! `page-view-enrich`) as a user runs them: real processes on the embedded
//! log, killed with SIGKILL mid-way through several rounds of new input,
//! then run to the end. What a read-committed reader sees must equal the
//! same computation written plainly here: every result once, none missing.
//!
//! Inputs are out of order within each example's allowed out-of-orderness,
//! so no record is late and the results do not depend on when a kill
//! lands. The kill rounds run without `--until-end`: the end of input
//! closes every window, which later rounds' records would then miss.

mod common;

use gregor_examples::{Rng, keyed_values_by_partition, load_keyed};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

const T0: i64 = 1_700_000_000_000;

/// Runs `binary` `rounds` times, each after `load(round)` appended input,
/// killing it with SIGKILL once `progress()` grew by a round-dependent
/// amount; then runs it with `--until-end`. Returns the kills.
fn kill_rounds(
    binary: &str,
    config: &str,
    dir: &Path,
    rounds: usize,
    mut load: impl FnMut(usize),
    progress: impl Fn() -> u64,
) -> usize {
    let extra = ["task.commit.ms=30", "cluster-manager.container.retry.count=100000"];
    let mut kills = 0;
    for round in 0..rounds {
        load(round);
        let target = progress() + 40 + (round as u64 * 37) % 150;
        let mut child = common::spawn(binary, config, dir, &extra, false);
        if common::kill_once(&mut child, &format!("{binary} round {round}"), || progress() >= target) {
            kills += 1;
        }
    }
    common::run_to_end(binary, config, dir, &extra);
    kills
}

/// The committed messages of `stream` as sorted (key, JSON value) pairs.
fn committed_json(dir: &Path, stream: &str) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = keyed_values_by_partition(dir, stream, true)
        .unwrap()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k, serde_json::from_str(&v).unwrap()))
        .collect();
    out.sort_by_key(|(k, v)| (k.clone(), v.to_string()));
    out
}

fn sorted(mut pairs: Vec<(String, Value)>) -> Vec<(String, Value)> {
    pairs.sort_by_key(|(k, v)| (k.clone(), v.to_string()));
    pairs
}

const GAP: i64 = 1_800_000;

/// Sessions per user: views sorted by time, split where two are more than
/// the gap apart.
fn sessions_model(views: &BTreeMap<String, Vec<i64>>) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (user, times) in views {
        let mut times = times.clone();
        times.sort_unstable();
        let mut start = 0;
        for i in 1..=times.len() {
            if i == times.len() || times[i] - times[i - 1] > GAP {
                let (s, e) = (times[start], times[i - 1]);
                out.push((user.clone(), json!({"start": s, "end": e, "views": i - start})));
                start = i;
            }
        }
    }
    sorted(out)
}

#[test]
fn page_sessions_are_exact_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x5e55_1075);
    let mut views: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut now = T0;
    let mut n = 0;
    let load = |_round: usize| {
        let mut batch: Vec<(String, String)> = Vec::new();
        for _ in 0..300 {
            now += rng.below(120_000) as i64;
            let user = format!("u{}", rng.below(25));
            // Up to 30 s out of order (the job allows 60 s).
            let mut ts = now - rng.below(30_000) as i64;
            let seen = views.entry(user.clone()).or_default();
            // Exactly one gap apart is a boundary the model need not argue about.
            while seen.iter().any(|&t| (ts - t).abs() == GAP) {
                ts -= 1;
            }
            seen.push(ts);
            n += 1;
            batch.push((user, json!({"page": format!("/p{n}"), "ts": ts}).to_string()));
        }
        let refs: Vec<(&str, Option<&str>)> = batch.iter().map(|(k, v)| (k.as_str(), Some(v.as_str()))).collect();
        load_keyed(dir.path(), "page-views", 4, &refs).unwrap();
    };
    // Sessions close in bursts as the watermark moves: kill inside one.
    let progress = || common::stream_size(dir.path(), "user-sessions") * 4;
    let kills =
        kill_rounds(env!("CARGO_BIN_EXE_page-sessions"), "page-sessions.properties", dir.path(), 12, load, progress);
    assert!(kills >= 8, "only {kills} runs were killed mid-way");
    assert_eq!(common::stream_size(dir.path(), "late-page-views"), 0, "no view was late");
    let got = committed_json(dir.path(), "user-sessions");
    let want = sessions_model(&views);
    assert!(want.len() > 500, "{} sessions is too few to test", want.len());
    assert_eq!(got.len(), want.len(), "one message per closed session");
    assert_eq!(got, want);
}

#[test]
fn ad_clicks_are_exact_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0xad_c11c);
    let window = 600_000;
    // (impression id, ad, ts) and (impression id, ts).
    let mut impressions: Vec<(String, String, i64)> = Vec::new();
    let mut clicks: Vec<(String, i64)> = Vec::new();
    let mut now = T0;
    let load = |round: usize| {
        let mut events: Vec<(i64, bool, String, String)> = Vec::new(); // (ts, is click, id, value)
        for i in 0..150 {
            now += rng.below(20_000) as i64;
            // One in ten impressions repeats a recent id.
            let id = if i > 0 && rng.below(10) == 0 {
                impressions[impressions.len() - 1 - rng.below(5.min(impressions.len() as u64)) as usize].0.clone()
            } else {
                format!("i{round}-{i}")
            };
            let ad = format!("ad{}", rng.below(7));
            events.push((now, false, id.clone(), json!({"ad": ad, "ts": now}).to_string()));
            impressions.push((id.clone(), ad, now));
            for _ in 0..rng.below(3) {
                let ts = match rng.below(10) {
                    0 => now + window,     // on the bound: joins
                    1 => now + window + 1, // 1 ms past it
                    _ => now - 60_000 + rng.below(window as u64 + 120_000) as i64,
                };
                events.push((ts, true, id.clone(), json!({ "ts": ts }).to_string()));
                clicks.push((id.clone(), ts));
            }
            if rng.below(20) == 0 {
                events.push((now, true, format!("x{round}-{i}"), json!({ "ts": now }).to_string()));
                clicks.push((format!("x{round}-{i}"), now));
            }
        }
        // Appended in event-time order (the job allows 1 h of disorder; a
        // click's time is at most 10 min past the newest impression).
        events.sort_by_key(|e| e.0);
        for (is_click, stream, partitions) in [(false, "impressions", 2), (true, "clicks", 3)] {
            let batch: Vec<(&str, Option<&str>)> =
                events.iter().filter(|e| e.1 == is_click).map(|e| (e.2.as_str(), Some(e.3.as_str()))).collect();
            load_keyed(dir.path(), stream, partitions, &batch).unwrap();
        }
    };
    let progress = || {
        common::stream_size(dir.path(), "ad-clicks-impressions-by-id")
            + common::stream_size(dir.path(), "ad-clicks-clicks-by-id")
    };
    let kills = kill_rounds(env!("CARGO_BIN_EXE_ad-clicks"), "ad-clicks.properties", dir.path(), 12, load, progress);
    assert!(kills >= 8, "only {kills} runs were killed mid-way");
    let mut want = Vec::new();
    for (id, cts) in &clicks {
        for (iid, ad, its) in &impressions {
            if iid == id && *its <= *cts && *cts <= its + window {
                want.push((id.clone(), json!({"ad": ad, "impression_ts": its, "click_ts": cts})));
            }
        }
    }
    let want = sorted(want);
    assert!(want.len() > 500, "{} joined clicks is too few to test", want.len());
    let got = committed_json(dir.path(), "ad-clicks-joined");
    assert_eq!(got.len(), want.len(), "every pair once");
    assert_eq!(got, want);
}

#[test]
fn page_view_enrich_is_exact_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0xe_1c4);
    // Profiles first: several versions per user, some deleted at the end.
    let mut latest: BTreeMap<String, Value> = BTreeMap::new();
    let mut profiles: Vec<(String, Option<String>)> = Vec::new();
    for version in 0..4 {
        for u in 0..40 {
            let user = format!("u{u}");
            if version == 3 && u % 7 == 0 {
                latest.remove(&user);
                profiles.push((user, None));
            } else if rng.below(3) > 0 {
                let profile = json!({"name": format!("User {u}"), "version": version});
                profiles.push((user.clone(), Some(profile.to_string())));
                latest.insert(user, profile);
            }
        }
    }
    let refs: Vec<(&str, Option<&str>)> = profiles.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
    load_keyed(dir.path(), "user-profiles", 4, &refs).unwrap();
    let mut want = Vec::new();
    let mut n = 0;
    let load = |_round: usize| {
        let mut batch = Vec::new();
        for _ in 0..400 {
            n += 1;
            let user = format!("u{}", rng.below(50)); // u40..u49 have no profile
            let view = json!({"page": format!("/p{n}"), "ts": T0 + n});
            let mut enriched = view.clone();
            enriched["profile"] = latest.get(&user).cloned().unwrap_or(Value::Null);
            want.push((user.clone(), enriched));
            batch.push((user, view.to_string()));
        }
        let refs: Vec<(&str, Option<&str>)> = batch.iter().map(|(k, v)| (k.as_str(), Some(v.as_str()))).collect();
        load_keyed(dir.path(), "page-views", 4, &refs).unwrap();
    };
    let progress = || common::stream_size(dir.path(), "enriched-page-views");
    let binary = env!("CARGO_BIN_EXE_page-view-enrich");
    let kills = kill_rounds(binary, "page-view-enrich.properties", dir.path(), 12, load, progress);
    assert!(kills >= 8, "only {kills} runs were killed mid-way");
    let got = committed_json(dir.path(), "enriched-page-views");
    let want = sorted(want);
    assert_eq!(got.len(), want.len(), "every view once");
    assert_eq!(got, want);
}
