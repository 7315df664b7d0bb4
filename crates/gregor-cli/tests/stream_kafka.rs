//! `gregor stream ... --system kafka` against a real Kafka-protocol broker
//! (Tansu, started for the test): the same commands and formats as on the
//! embedded log.

use gregor_examples::kafka_broker::KafkaBroker;
use std::process::Command;

mod common;

use common::{GREGOR, Target};

fn ok(broker: &KafkaBroker, args: &[&str], stdin: &str) -> String {
    common::ok(Target::Kafka(&broker.bootstrap()), args, stdin)
}

fn fails(broker: &KafkaBroker, args: &[&str]) -> String {
    common::fails(Target::Kafka(&broker.bootstrap()), args)
}

#[test]
fn stream_commands_work_on_kafka() {
    let broker = KafkaBroker::start();
    assert_eq!(
        ok(&broker, &["stream", "create", "clicks", "--partitions", "3"], ""),
        "created stream clicks with 3 partitions\n"
    );
    assert!(ok(&broker, &["stream", "list"], "").lines().any(|l| l == "clicks"));
    let err = fails(&broker, &["stream", "create", "clicks", "--partitions", "3"]);
    assert!(err.contains("stream clicks already exists"), "{err}");

    let input: String = (0..30).map(|i| format!("user-{}:click {i}\n", i % 7)).collect();
    ok(&broker, &["stream", "produce", "clicks", "--key-separator", ":"], &input);
    let json = ok(&broker, &["stream", "consume", "clicks", "--until-end", "--format", "json"], "");
    let lines: Vec<serde_json::Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 30);
    for m in &lines {
        let key = m["key"].as_str().unwrap();
        assert_eq!(m["partition"].as_u64().unwrap() as u32, gregor::partition_for_key(key.as_bytes(), 3), "{m}");
    }
    // Per partition, in order.
    let text = ok(&broker, &["stream", "consume", "clicks", "--partition", "0", "--until-end"], "");
    let expected: Vec<String> = (0..30)
        .filter(|i| gregor::partition_for_key(format!("user-{}", i % 7).as_bytes(), 3) == 0)
        .map(|i| format!("user-{}\tclick {i}", i % 7))
        .collect();
    assert_eq!(text.lines().collect::<Vec<_>>(), expected);

    let describe = ok(&broker, &["stream", "describe", "clicks"], "");
    assert!(describe.contains("partitions:     3"), "{describe}");
    let total: u64 = describe
        .lines()
        .skip_while(|l| !l.contains("PARTITION"))
        .skip(1)
        .map(|l| l.split_whitespace().nth(3).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 30, "{describe}");

    let err = fails(&broker, &["stream", "consume", "nope", "--until-end"]);
    assert!(err.contains("stream kafka.nope does not exist"), "{err}");
    let err = fails(&broker, &["stream", "compact", "clicks"]);
    assert!(err.contains("embedded log only"), "{err}");
    assert_eq!(ok(&broker, &["stream", "delete", "clicks"], ""), "deleted stream clicks\n");
    assert!(!ok(&broker, &["stream", "list"], "").lines().any(|l| l == "clicks"));
    let out = Command::new(GREGOR)
        .args(["--system", "kafka", "stream", "list"])
        .env_remove("GREGOR_BOOTSTRAP_SERVERS")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--system kafka needs --bootstrap-servers"));
}
