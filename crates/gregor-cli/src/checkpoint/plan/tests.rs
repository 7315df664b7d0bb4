use super::*;
use gregor_api::SystemStream;

fn ssp(text: &str) -> SystemStreamPartition {
    SystemStreamPartition::parse(text).unwrap()
}

#[test]
fn targets_parse_and_bad_ones_are_named() {
    assert_eq!(parse_target("oldest"), Ok(Target::Oldest));
    assert_eq!(parse_target("newest"), Ok(Target::Newest));
    assert_eq!(parse_target("offset:42"), Ok(Target::Offset(42)));
    assert_eq!(parse_target("time:1764576000000"), Ok(Target::Time(1_764_576_000_000)));
    assert_eq!(parse_target("time:2026-12-01T08:00:00Z"), Ok(Target::Time(1_796_112_000_000)));
    let err = parse_target("yesterday").unwrap_err();
    assert!(err.contains("'yesterday' is not oldest, newest, offset:N or time:T"), "{err}");
    assert!(parse_target("offset:-3").unwrap_err().contains("'-3' is not an offset"));
    let err = parse_target("time:next tuesday").unwrap_err();
    assert!(err.contains("'next tuesday' is not a time") && err.contains("2026-12-01T08:00:00Z"), "{err}");
}

#[test]
fn times_parse_as_rfc_3339_or_epoch_milliseconds() {
    assert_eq!(parse_time("0"), Ok(0));
    assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
    assert_eq!(parse_time("2026-12-01T08:00:00Z"), Ok(1_796_112_000_000));
    assert_eq!(parse_time("2026-12-01t08:00:00z"), Ok(1_796_112_000_000));
    assert_eq!(parse_time("2026-12-01 09:30:00+01:30"), Ok(1_796_112_000_000));
    assert_eq!(parse_time("2026-12-01T03:00:00-05:00"), Ok(1_796_112_000_000));
    assert_eq!(parse_time("2026-12-01T08:00:00.25Z"), Ok(1_796_112_000_250));
    assert_eq!(parse_time("2026-12-01T08:00:00.123456Z"), Ok(1_796_112_000_123));
    assert_eq!(parse_time("2026-12-01"), Ok(1_796_083_200_000), "a date is its midnight, UTC");
    assert_eq!(parse_time("2024-02-29T00:00:00Z"), Ok(1_709_164_800_000), "a leap day");
    assert_eq!(parse_time("1969-12-31T23:59:59Z"), Ok(-1000));
    for bad in [
        "",
        "2026-13-01T00:00:00Z",
        "2025-02-29",
        "2026-12-01T08:00:00",
        "2026-12-01T25:00:00Z",
        "12/01/2026",
        "2026-1-1",
    ] {
        assert!(parse_time(bad).is_err(), "{bad} was accepted");
    }
    assert!(parse_time("2025-02-29").unwrap_err().contains("2025-02-29 is not a date"));
}

#[test]
fn times_print_as_rfc_3339_and_round_trip() {
    assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
    assert_eq!(format_time(1_796_112_000_250), "2026-12-01T08:00:00.250Z");
    assert_eq!(format_time(-1000), "1969-12-31T23:59:59Z");
    for ms in [0, 951_782_400_000, 1_709_164_800_000, 4_102_444_800_000, 1_796_112_000_999] {
        assert_eq!(parse_time(&format_time(ms)), Ok(ms), "{ms}");
    }
    assert_eq!(Target::Time(0).to_string(), "time 1970-01-01T00:00:00Z");
}

#[test]
fn targets_resolve_within_the_partition() {
    let p = ssp("log.words[2]");
    let range = PartitionOffsets { oldest: 10, next: 50 };
    let never = |_| -> Result<u64, String> { panic!("no lookup expected") };
    assert_eq!(resolve(Target::Oldest, &p, range, never), Ok(10));
    assert_eq!(resolve(Target::Newest, &p, range, never), Ok(50));
    assert_eq!(resolve(Target::Offset(10), &p, range, never), Ok(10));
    assert_eq!(resolve(Target::Offset(50), &p, range, never), Ok(50), "the next offset: nothing left to read");
    let err = resolve(Target::Offset(51), &p, range, never).unwrap_err();
    assert!(err.contains("offset 51 is out of range for log.words[2]: it must lie between its oldest offset 10 and its next offset 50"), "{err}");
    assert!(resolve(Target::Offset(9), &p, range, never).is_err());
    assert_eq!(resolve(Target::Time(7), &p, range, |t| Ok(t as u64 * 3)), Ok(21), "the system's answer");
    assert_eq!(resolve(Target::Time(1), &p, range, |_| Ok(0)), Ok(10), "clamped into the range");
    assert_eq!(resolve(Target::Time(1), &p, range, |_| Err("no broker".into())), Err("no broker".into()));
}

#[test]
fn intermediate_inputs_skip_to_their_end_and_bootstrap_inputs_are_reread() {
    let p = ssp("log.x[0]");
    let plain = InputKind::default();
    let inter = InputKind { intermediate: true, bootstrap: false };
    let boot = InputKind { intermediate: false, bootstrap: true };
    let t = Target::Time(5);
    assert_eq!(rule(plain, Selected::All, true, t, &p), Ok(Some((t, Why::Asked))));
    assert_eq!(rule(inter, Selected::All, true, t, &p), Ok(Some((Target::Newest, Why::IntermediateSkipped))));
    assert_eq!(rule(inter, Selected::All, false, t, &p), Ok(Some((Target::Newest, Why::IntermediateSkipped))));
    assert_eq!(rule(inter, Selected::Named, true, t, &p), Ok(Some((t, Why::Asked))), "named: as asked");
    assert_eq!(rule(boot, Selected::All, true, t, &p), Ok(Some((Target::Oldest, Why::BootstrapReread))));
    assert_eq!(rule(boot, Selected::All, false, t, &p), Ok(Some((t, Why::Asked))), "stores kept: as asked");
    assert_eq!(rule(boot, Selected::Other, true, t, &p), Ok(Some((Target::Oldest, Why::BootstrapReread))));
    assert_eq!(rule(plain, Selected::Other, true, t, &p), Ok(None), "not chosen: unchanged");
    assert_eq!(rule(boot, Selected::Named, true, Target::Oldest, &p), Ok(Some((Target::Oldest, Why::Asked))));
    let err = rule(boot, Selected::Named, true, t, &p).unwrap_err();
    assert!(err.contains("log.x[0] is a bootstrap input") && err.contains("--keep-stores"), "{err}");
}

#[test]
fn the_new_checkpoint_moves_inputs_and_replaces_reset_stores_only() {
    let store = |s: &str, o| StoreCheckpoint { changelog: ssp(s), offset: o };
    let old = Checkpoint {
        inputs: [(ssp("log.a[0]"), 100), (ssp("log.b[0]"), 7)].into(),
        stores: [("counts".to_owned(), store("log.c[0]", 40)), ("gone".to_owned(), store("log.g[0]", 3))].into(),
        sequence: 90,
        seen: [(ssp("log.a[0]"), [("00000000000000aa".to_owned(), 5)].into()), (ssp("log.b[0]"), BTreeMap::new())]
            .into(),
    };
    let moved = [(ssp("log.a[0]"), 0)].into();
    let kept = rewound(Some(&old), &moved, None);
    assert_eq!(kept.inputs, [(ssp("log.a[0]"), 0), (ssp("log.b[0]"), 7)].into());
    assert_eq!(kept.seen.keys().collect::<Vec<_>>(), [&ssp("log.b[0]")], "a moved input reads again what it saw");
    assert_eq!(kept.sequence, 90);
    assert_eq!(kept.stores, old.stores, "--keep-stores: store positions unchanged");
    let reset = [("counts".to_owned(), store("log.c[0]", 55))].into();
    let cp = rewound(Some(&old), &moved, Some(&reset));
    assert_eq!(cp.stores["counts"].offset, 55, "the changelog's end after the tombstones");
    assert_eq!(cp.stores["gone"], old.stores["gone"], "a store the config no longer has is left alone");
    let fresh = rewound(None, &moved, Some(&BTreeMap::new()));
    assert_eq!(fresh, Checkpoint { inputs: moved.clone(), ..Checkpoint::default() }, "a task without a checkpoint");
}

fn model() -> Vec<TaskModel> {
    (0..3)
        .map(|p| TaskModel {
            name: format!("Partition {p}"),
            inputs: vec![ssp(&format!("log.words[{p}]")), ssp(&format!("log.inter[{p}]"))],
            changelog_partition: p,
        })
        .collect()
}

fn inputs() -> Vec<SystemStream> {
    vec![SystemStream::new("log", "words"), SystemStream::new("log", "inter")]
}

#[test]
fn tasks_streams_and_partitions_are_selected() {
    let model = model();
    let all = select(&model, &inputs(), &Choice::default()).unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|(_, i)| i.len() == 2 && i.iter().all(|(_, s)| *s == Selected::All)));
    let choice = Choice { tasks: vec!["Partition 1".into()], ..Choice::default() };
    let one = select(&model, &inputs(), &choice).unwrap();
    assert_eq!(one.iter().map(|(t, _)| t.name.as_str()).collect::<Vec<_>>(), ["Partition 1"]);
    let choice = Choice { stream: Some("words".into()), partition: Some(2), ..Choice::default() };
    let part = select(&model, &inputs(), &choice).unwrap();
    assert_eq!(part.len(), 1);
    assert_eq!(part[0].1, vec![(ssp("log.words[2]"), Selected::Named), (ssp("log.inter[2]"), Selected::Other)]);
    let choice = Choice { stream: Some("log.inter".into()), ..Choice::default() };
    assert_eq!(select(&model, &inputs(), &choice).unwrap().len(), 3, "a stream without --partition: all of them");
}

#[test]
fn selection_mistakes_are_named() {
    let model = model();
    let err = |choice: Choice| select(&model, &inputs(), &choice).unwrap_err();
    let e = err(Choice { partition: Some(1), ..Choice::default() });
    assert!(e.contains("--partition needs --stream"), "{e}");
    let e = err(Choice { tasks: vec!["Partition 9".into()], ..Choice::default() });
    assert!(e.contains("no task 'Partition 9'") && e.contains("Partition 0, Partition 1, Partition 2"), "{e}");
    let e = err(Choice { stream: Some("clicks".into()), ..Choice::default() });
    assert!(e.contains("no input stream 'clicks'") && e.contains("log.words, log.inter"), "{e}");
    let e = err(Choice { stream: Some("words".into()), partition: Some(7), ..Choice::default() });
    assert!(e.contains("input log.words has no partition 7 (its partitions: 0, 1, 2)"), "{e}");
    let e = err(Choice { tasks: vec!["Partition 0".into()], stream: Some("words".into()), partition: Some(2) });
    assert!(e.contains("log.words[2] is not an input of the chosen tasks (task 'Partition 2' reads it)"), "{e}");
    let two = [SystemStream::new("log", "words"), SystemStream::new("kafka", "words")];
    let e = select(&model, &two, &Choice { stream: Some("words".into()), ..Choice::default() }).unwrap_err();
    assert!(e.contains("'words' names several inputs (log.words, kafka.words)"), "{e}");
}
