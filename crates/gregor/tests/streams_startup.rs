//! Mistakes in a Streams API application or its config that stop the job
//! before it processes anything, with an error that names the problem:
//! two operators with one name, a serde that does not produce the declared
//! type, and operators that pair records of streams not partitioned alike.

mod common;

use gregor::TaskError;
use gregor::streams::{self, JoinWindow, StreamApp};
use gregor::testing::TestJob;
use std::time::Duration;

fn job(
    extra: &str,
    describe: impl Fn(&mut StreamApp) -> Result<(), TaskError> + Send + Sync + 'static,
) -> Result<TestJob<streams::GraphTask>, String> {
    common::streams_job("startup", extra, describe).map_err(|e| e.to_string())
}

#[test]
fn two_operators_with_one_name_are_refused() {
    let Err(err) = job("", |app| {
        let out = app.output::<String, i64>("out");
        let input = app.input::<String, String>("in");
        input.count("counts").to(&out);
        input.map_values(|v| v.len() as i64).reduce("counts", |a, b| a + b).to(&out);
        Ok(())
    }) else {
        panic!("two stores named 'counts' were accepted")
    };
    assert!(err.contains("two operators are named 'counts'"), "{err}");
}

#[test]
fn a_serde_that_does_not_produce_the_declared_type_names_the_stream_and_both_types() {
    let mut job = job("streams.in.samza.msg.serde=string\n", |app| {
        let out = app.output::<String, i64>("out");
        app.input::<String, i64>("in").to(&out);
        Ok(())
    })
    .unwrap();
    job.create_stream("in", 1).unwrap();
    let err = job.run().unwrap_err().to_string();
    assert!(err.contains("log.in") && err.contains("'string'"), "the stream and its serde: {err}");
    assert!(err.contains("i64") && err.contains("String"), "both types: {err}");
}

#[test]
fn a_table_lookup_over_streams_with_other_partition_counts_is_refused() {
    let mut job = job("", |app| {
        let out = app.output::<String, String>("out");
        let profiles = app.table::<String, String>("profiles");
        app.input::<String, String>("views")
            .join_table(&profiles, |_, v, p| Some(format!("{v}{}", p.unwrap_or_default())))
            .to(&out);
        Ok(())
    })
    .unwrap();
    job.create_stream("views", 4).unwrap();
    job.create_stream("profiles", 2).unwrap();
    let err = job.run().unwrap_err().to_string();
    assert!(err.contains("join_table with table 'profiles'"), "{err}");
    assert!(err.contains("log.views has 4 partitions but log.profiles has 2"), "{err}");
}

#[test]
fn a_join_of_streams_with_other_partition_counts_is_refused_unless_repartitioned() {
    for repartition in [false, true] {
        let mut job = job("", move |app| {
            let out = app.output::<String, String>("out");
            let left = app.input::<String, String>("left");
            let right = app.input::<String, String>("right");
            let right = if repartition { right.partition_by("right-by-key") } else { right };
            left.join(&right, "pairs", JoinWindow::within_after(Duration::from_secs(1)), |_, l, r| format!("{l}{r}"))
                .to(&out);
            Ok(())
        })
        .unwrap();
        job.create_stream("left", 3).unwrap();
        job.create_stream("right", 2).unwrap();
        let result = job.run();
        if repartition {
            // The intermediate stream gets the largest input's count (3).
            result.unwrap();
        } else {
            let err = result.unwrap_err().to_string();
            assert!(err.contains("join 'pairs': log.left has 3 partitions but log.right has 2"), "{err}");
        }
    }
}
