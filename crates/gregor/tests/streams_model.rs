//! Every Streams API operator against a model: property tests generate
//! input (random keys and partitions, event times out of order), run the
//! application in a [`TestJob`] through random steps, clock moves and
//! crashes (between commits and inside them), run it to the end, and
//! compare the results with the same computation written plainly here.
//!
//! The in-memory system has no transactions, so outputs are at-least-once
//! after a crash (a crash's interval is sent again): each check is that
//! every result the model gives was sent, and nothing else was. Records
//! carry unique ids, so a lost or double-counted record changes a result.
//! Event times are out of order by less than the inputs'
//! `max_out_of_order`, so nothing is late and results do not depend on when
//! watermarks move (late records have their own tests, in the examples).

use gregor::streams::{self, EventTime, JoinWindow, Pane, StreamApp, Timing, Windows};
use gregor::testing::{CommitPoint, TestJob};
use gregor::{Config, TaskError};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Rec {
    id: u32,
    ts: i64,
}

const T0: i64 = 1_700_000_000_000;
/// Inputs' allowed out-of-orderness; generated times stay within 3 s of it.
const DISORDER: Duration = Duration::from_secs(5);

/// One generated input record: (stream index, partition seed, key, how far
/// back in time from the running clock, in steps of 2 ms).
type Gen = (usize, u32, u8, u16);

/// What happens between batches of input.
#[derive(Debug, Clone)]
enum Action {
    /// Process at most this many messages.
    Step(usize),
    /// Let processing time pass (timers: watermarks, commits).
    Advance(u64),
    /// Kill container `0` or `1` and start it again from its checkpoint.
    Crash(usize),
    /// Make a container crash at this point of its next commit, then restart it.
    CrashInCommit(usize, usize),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (0usize..80).prop_map(Action::Step),
        3 => (0u64..400).prop_map(Action::Advance),
        1 => (0usize..2).prop_map(Action::Crash),
        1 => (0usize..2, 0usize..5).prop_map(|(c, p)| Action::CrashInCommit(c, p)),
    ]
}

/// A run: the records (times rise 1 s per record, minus up to 3 s), the
/// partition count of each input, containers, guarantee, and the actions.
#[derive(Debug, Clone)]
struct Run {
    records: Vec<Gen>,
    partitions: Vec<u32>,
    containers: usize,
    exactly_once: bool,
    actions: Vec<Action>,
}

fn run_of(inputs: usize, keys: u8) -> impl Strategy<Value = Run> {
    (
        prop::collection::vec((0..inputs, any::<u32>(), 0..keys, 0u16..1500), 1..120),
        prop::collection::vec(1u32..5, inputs),
        1usize..3,
        any::<bool>(),
        prop::collection::vec(action(), 0..12),
    )
        .prop_map(|(records, partitions, containers, exactly_once, actions)| Run {
            records,
            partitions,
            containers,
            exactly_once,
            actions,
        })
}

/// The records of a run as (input index, key, record): unique ids, even
/// times (so odd gaps and bounds are never hit exactly).
fn records(run: &Run) -> Vec<(usize, String, Rec)> {
    run.records
        .iter()
        .enumerate()
        .map(|(i, &(input, _, key, back))| {
            let rec = Rec { id: i as u32, ts: T0 + i as i64 * 1000 - 2 * i64::from(back) };
            (input, format!("k{key}"), rec)
        })
        .collect()
}

/// How a run's records are sent.
#[derive(Clone, Copy, PartialEq)]
enum Sending {
    /// To a partition from the record's seed.
    Anywhere,
    /// By key (so inputs are partitioned alike), input 1 all before the
    /// job starts.
    KeyedInput1First,
}

/// Runs `describe` over `run`: input `i` is stream `in{i}`; returns the job
/// after its end.
fn drive(
    run: &Run,
    describe: impl Fn(&mut StreamApp) -> Result<(), TaskError> + Send + Sync + 'static,
    sending: Sending,
) -> TestJob<streams::GraphTask> {
    // No more containers than tasks.
    let containers = run.containers.min(run.partitions.iter().copied().max().unwrap_or(1) as usize);
    let text = format!(
        "job.name=model\njob.container.count={}\ntask.commit.ms=50\ntask.processing.guarantee={}\n\
         systems.log.factory=log\nsystems.log.samza.offset.default=oldest\n",
        containers,
        if run.exactly_once { "exactly-once" } else { "at-least-once" }
    );
    let config = Config::from_properties(&text, "test").unwrap();
    let mut job = TestJob::new(streams::app("model", describe), config).unwrap();
    for (i, &n) in run.partitions.iter().enumerate() {
        // A table and the stream that looks it up are partitioned alike.
        let n = if sending == Sending::KeyedInput1First { run.partitions[0] } else { n };
        job.create_stream(&format!("in{i}"), n).unwrap();
    }
    let inputs: Vec<_> =
        (0..run.partitions.len()).map(|i| job.input::<String, Rec>(&format!("in{i}")).unwrap()).collect();
    let mut all: Vec<_> = records(run).into_iter().zip(run.records.iter().map(|g| g.1)).collect();
    if sending == Sending::KeyedInput1First {
        all.sort_by_key(|((input, _, _), _)| *input != 1);
    }
    // Input 1 (the table) goes in whole before the job starts.
    let first =
        if sending == Sending::KeyedInput1First { all.iter().filter(|((i, _, _), _)| *i == 1).count() } else { 0 };
    let batch = (all.len() - first).div_ceil(run.actions.len() + 1);
    let mut sent = all.iter();
    let mut send_batch = |n: usize| {
        for ((input, key, rec), seed) in sent.by_ref().take(n) {
            if sending == Sending::KeyedInput1First {
                inputs[*input].send_keyed(key.clone(), rec.clone()).unwrap();
            } else {
                inputs[*input].send(seed % run.partitions[*input], key.clone(), rec.clone()).unwrap();
            }
        }
    };
    let points = [
        CommitPoint::Start,
        CommitPoint::StoresFlushed,
        CommitPoint::OutputsFlushed,
        CommitPoint::CheckpointsSent,
        CommitPoint::CheckpointsFlushed,
    ];
    send_batch(first);
    for a in &run.actions {
        send_batch(batch);
        let id = |c: usize| (c % containers).to_string();
        match *a {
            Action::Step(n) => {
                job.step(n).unwrap();
            }
            Action::Advance(ms) => {
                job.advance_time(Duration::from_millis(ms));
                job.run().unwrap();
            }
            Action::Crash(c) => {
                job.step(1).unwrap();
                job.crash(&id(c)).unwrap();
                job.restart(&id(c)).unwrap();
            }
            Action::CrashInCommit(c, p) => {
                job.crash_at_commit(&id(c), points[p]).unwrap();
                job.commit().unwrap();
                if !job.is_running(&id(c)) {
                    job.restart(&id(c)).unwrap();
                }
            }
        }
    }
    send_batch(usize::MAX);
    // A crash point no commit reached yet is reached by the final one.
    for _ in 0..5 {
        match job.run_to_end() {
            Ok(_) => return job,
            Err(e) => {
                // "container 0: crash injected at ..." or "container 0 crashed before the end".
                let text = e.to_string();
                let id = text.strip_prefix("container ").and_then(|t| t.split([' ', ':']).next());
                let Some(id) = id.filter(|_| text.contains("crash")) else { panic!("{text}") };
                job.restart(id).unwrap();
            }
        }
    }
    job.run_to_end().unwrap();
    job
}

/// What was sent to output `id` as (key, value); nothing if it was never
/// created (nothing was sent).
fn sent<V: gregor::Data + Clone>(job: &TestJob<streams::GraphTask>, id: &str) -> Vec<(String, V)> {
    match job.output::<String, V>(id) {
        Ok(out) => out.key_values().into_iter().map(|(k, v)| (k, v.expect("no tombstones"))).collect(),
        Err(e) if e.to_string().contains("does not exist") => Vec::new(),
        Err(e) => panic!("{e}"),
    }
}

/// Every model result was sent and nothing else was (at-least-once: copies allowed).
fn assert_sent<T: Ord + std::fmt::Debug + Clone>(got: Vec<T>, want: Vec<T>, what: &str) {
    let got: BTreeSet<T> = got.into_iter().collect();
    let want: BTreeSet<T> = want.into_iter().collect();
    let missing: Vec<_> = want.difference(&got).take(5).collect();
    let extra: Vec<_> = got.difference(&want).take(5).collect();
    assert!(missing.is_empty() && extra.is_empty(), "{what}: missing {missing:?}, not in the model {extra:?}");
}

fn event_time() -> EventTime<String, Rec> {
    EventTime::extract(|_, r: &Rec, _| r.ts).max_out_of_order(DISORDER)
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    /// branch, filter, map_values, flat_map, merge, map, to.
    #[test]
    fn stateless_operators_match_the_model(run in run_of(1, 5)) {
        let job = drive(&run, |app| {
            let out = app.output::<String, String>("out");
            let branches = app.input::<String, Rec>("in0").branch(vec![
                Box::new(|_, r: &Rec| r.id.is_multiple_of(2)),
                Box::new(|_, _: &Rec| true),
            ]);
            let evens = branches[0].map_values(|r| format!("e{}", r.id));
            let odds = branches[1].filter(|_, r| r.id % 3 != 0).flat_map(|k: String, r: Rec| {
                (0..r.id % 3).map(|i| (k.clone(), format!("o{}-{i}", r.id))).collect::<Vec<_>>()
            });
            evens.merge([&odds]).map(|k, v| (format!("{k}!"), v)).to(&out);
            Ok(())
        }, Sending::Anywhere);
        let mut want = Vec::new();
        for (_, key, r) in records(&run) {
            if r.id.is_multiple_of(2) {
                want.push((format!("{key}!"), format!("e{}", r.id)));
            } else if r.id % 3 != 0 {
                want.extend((0..r.id % 3).map(|i| (format!("{key}!"), format!("o{}-{i}", r.id))));
            }
        }
        assert_sent(sent::<String>(&job, "out"), want, "stateless");
    }

    /// partition_by, group_by, count, reduce, aggregate: every count
    /// 1..=n is sent, the last value per key is the model's.
    #[test]
    fn aggregations_after_repartitioning_match_the_model(run in run_of(1, 6)) {
        let job = drive(&run, |app| {
            let counts = app.output::<String, i64>("counts");
            let sums = app.output::<String, i64>("sums");
            let ids = app.output::<String, Vec<u32>>("ids");
            let input = app.input::<String, Rec>("in0");
            let by_key = input.partition_by("by-key");
            by_key.count("counts").to(&counts);
            by_key.map_values(|r| i64::from(r.id)).reduce("sums", |a, b| a + b).to(&sums);
            input
                .group_by("by-parity", |_, r| format!("p{}", r.id % 2))
                .aggregate("ids", Vec::new, |_, r, mut ids: Vec<u32>| { ids.push(r.id); ids.sort_unstable(); ids })
                .to(&ids);
            Ok(())
        }, Sending::Anywhere);
        let mut count: BTreeMap<String, i64> = BTreeMap::new();
        let mut sum: BTreeMap<String, i64> = BTreeMap::new();
        let mut by_parity: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (_, key, r) in records(&run) {
            *count.entry(key.clone()).or_default() += 1;
            *sum.entry(key).or_default() += i64::from(r.id);
            by_parity.entry(format!("p{}", r.id % 2)).or_default().push(r.id);
        }
        let out = job.output::<String, i64>("counts").unwrap();
        prop_assert_eq!(out.latest_by_key(), count.clone());
        let sent: Vec<(String, i64)> = out.key_values().into_iter().map(|(k, v)| (k, v.unwrap())).collect();
        let every: Vec<(String, i64)> = count.iter().flat_map(|(k, &n)| (1..=n).map(move |i| (k.clone(), i))).collect();
        assert_sent(sent, every, "counts");
        prop_assert_eq!(job.output::<String, i64>("sums").unwrap().latest_by_key(), sum);
        for ids in by_parity.values_mut() {
            ids.sort_unstable();
        }
        prop_assert_eq!(job.output::<String, Vec<u32>>("ids").unwrap().latest_by_key(), by_parity);
    }

    /// Tumbling, hopping and session windows over event time.
    #[test]
    fn windows_match_the_model(run in run_of(1, 4)) {
        const GAP: i64 = 2501;
        let job = drive(&run, |app| {
            let tumbling = app.output::<String, Pane<i64>>("tumbling");
            let hopping = app.output::<String, Pane<Vec<u32>>>("hopping");
            let sessions = app.output::<String, Pane<i64>>("sessions");
            let by_key = app.input::<String, Rec>("in0").event_time(event_time()).partition_by("by-key");
            by_key.window("tumbling", Windows::tumbling(Duration::from_secs(5))).count().to(&tumbling);
            by_key
                .window("hopping", Windows::hopping(Duration::from_secs(6), Duration::from_secs(2)))
                .aggregate(Vec::new, |_, r: Rec, mut ids: Vec<u32>| { ids.push(r.id); ids.sort_unstable(); ids })
                .to(&hopping);
            by_key.window("sessions", Windows::session(Duration::from_millis(GAP as u64))).count().to(&sessions);
            Ok(())
        }, Sending::Anywhere);
        let recs = records(&run);
        let mut tumbling: BTreeMap<(String, i64), i64> = BTreeMap::new();
        let mut hopping: BTreeMap<(String, i64), Vec<u32>> = BTreeMap::new();
        let mut times: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for (_, key, r) in &recs {
            *tumbling.entry((key.clone(), r.ts - r.ts.rem_euclid(5000))).or_default() += 1;
            let mut start = r.ts - r.ts.rem_euclid(2000);
            while start > r.ts - 6000 {
                hopping.entry((key.clone(), start)).or_default().push(r.id);
                start -= 2000;
            }
            times.entry(key.clone()).or_default().push(r.ts);
        }
        fn pane<A>(start: i64, end: i64, value: A) -> Pane<A> {
            Pane { start, end, value, timing: Timing::OnTime }
        }
        let t_want: Vec<_> = tumbling.into_iter().map(|((k, s), n)| (k, format!("{:?}", pane(s, s + 5000, n)))).collect();
        let h_want: Vec<_> = hopping
            .into_iter()
            .map(|((k, s), mut ids)| { ids.sort_unstable(); (k, format!("{:?}", pane(s, s + 6000, ids))) })
            .collect();
        let mut s_want = Vec::new();
        for (key, mut ts) in times {
            ts.sort_unstable();
            let mut first = 0;
            for i in 1..=ts.len() {
                if i == ts.len() || ts[i] - ts[i - 1] > GAP {
                    s_want.push((key.clone(), format!("{:?}", pane(ts[first], ts[i - 1], (i - first) as i64))));
                    first = i;
                }
            }
        }
        let as_debug = |id: &str, f: &dyn Fn(serde_json::Value) -> String| -> Vec<(String, String)> {
            sent::<serde_json::Value>(&job, id).into_iter().map(|(k, v)| (k, f(v))).collect()
        };
        let count_pane = |v: serde_json::Value| format!("{:?}", serde_json::from_value::<Pane<i64>>(v).unwrap());
        let ids_pane = |v: serde_json::Value| format!("{:?}", serde_json::from_value::<Pane<Vec<u32>>>(v).unwrap());
        assert_sent(as_debug("tumbling", &count_pane), t_want, "tumbling");
        assert_sent(as_debug("hopping", &ids_pane), h_want, "hopping");
        assert_sent(as_debug("sessions", &count_pane), s_want, "sessions");
    }

    /// Inner, left and outer stream-stream joins within a time bound.
    #[test]
    fn joins_match_the_model(run in run_of(2, 4)) {
        let bound = JoinWindow::between(Duration::from_secs(2), Duration::from_secs(3));
        let job = drive(&run, move |app| {
            let inner = app.output::<String, String>("inner");
            let left_out = app.output::<String, String>("left");
            let outer = app.output::<String, String>("outer");
            let l = app.input::<String, Rec>("in0").event_time(event_time()).partition_by("l");
            let r = app.input::<String, Rec>("in1").event_time(event_time()).partition_by("r");
            let name = |l: Option<&Rec>, r: Option<&Rec>| {
                format!("{}-{}", l.map_or("none".into(), |l| l.id.to_string()), r.map_or("none".into(), |r| r.id.to_string()))
            };
            l.join(&r, "inner-join", bound, move |_, a, b| name(Some(a), Some(b))).to(&inner);
            l.left_join(&r, "left-join", bound, move |_, a, b| name(Some(a), b)).to(&left_out);
            l.outer_join(&r, "outer-join", bound, move |_, a, b| name(a, b)).to(&outer);
            Ok(())
        }, Sending::Anywhere);
        let recs = records(&run);
        let side = |i: usize| recs.iter().filter(move |(input, _, _)| *input == i);
        let mut inner = Vec::new();
        let mut left_unmatched = Vec::new();
        let mut matched_right = BTreeSet::new();
        for (_, lk, l) in side(0) {
            let mut any = false;
            for (_, rk, r) in side(1) {
                if lk == rk && l.ts - 2000 <= r.ts && r.ts <= l.ts + 3000 {
                    inner.push((lk.clone(), format!("{}-{}", l.id, r.id)));
                    matched_right.insert(r.id);
                    any = true;
                }
            }
            if !any {
                left_unmatched.push((lk.clone(), format!("{}-none", l.id)));
            }
        }
        let right_unmatched: Vec<_> =
            side(1).filter(|(_, _, r)| !matched_right.contains(&r.id)).map(|(_, k, r)| (k.clone(), format!("none-{}", r.id))).collect();
        let got = |id: &str| sent::<String>(&job, id);
        assert_sent(got("inner"), inner.clone(), "inner join");
        assert_sent(got("left"), [inner.clone(), left_unmatched.clone()].concat(), "left join");
        assert_sent(got("outer"), [inner, left_unmatched, right_unmatched].concat(), "outer join");
    }

    /// A table loaded from a compacted stream (bootstrapped before
    /// anything else), looked up by a stream partitioned alike.
    #[test]
    fn table_lookups_match_the_model(run in run_of(2, 6)) {
        let job = drive(&run, |app| {
            let out = app.output::<String, String>("out");
            let table = app.table::<String, Rec>("in1");
            app.input::<String, Rec>("in0")
                .join_table(&table, |_, v, t| Some(format!("{}:{}", v.id, t.map_or("none".into(), |t| t.id.to_string()))))
                .to(&out);
            Ok(())
        }, Sending::KeyedInput1First);
        let recs = records(&run);
        // Every table record is loaded before any lookup (and sent before any view).
        let latest: BTreeMap<&String, u32> = recs.iter().filter(|(i, _, _)| *i == 1).map(|(_, k, r)| (k, r.id)).collect();
        let want: Vec<(String, String)> = recs
            .iter()
            .filter(|(i, _, _)| *i == 0)
            .map(|(_, k, r)| (k.clone(), format!("{}:{}", r.id, latest.get(k).map_or("none".into(), |t| t.to_string()))))
            .collect();
        assert_sent(sent::<String>(&job, "out"), want, "table join");
    }
}
