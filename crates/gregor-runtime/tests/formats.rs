//! The formats gregor reads back, decoded from checked-in fixture files
//! (`tests/fixtures`), forever: checkpoints (with and without stores, from
//! before the version field, with sequences (version 2), and from a future
//! version, which is refused)
//! and job models. A change that cannot read these breaks existing jobs.

use gregor_api::SystemStream;
use gregor_runtime::{
    CHECKPOINT_FORMAT, Checkpoint, JOB_MODEL_FORMAT, JobModel, StoreCheckpoint, decode_checkpoint, encode_checkpoint,
};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn wordcount_checkpoint() -> Checkpoint {
    let mut cp = Checkpoint::default();
    cp.inputs.insert(SystemStream::new("log", "words").partition(2), 1207);
    cp.inputs.insert(SystemStream::new("log", "wordcount-words").partition(2), 5120);
    cp.stores.insert(
        "counts".into(),
        StoreCheckpoint {
            changelog: SystemStream::new("log", "wordcount-counts-changelog").partition(2),
            offset: 4410,
        },
    );
    cp
}

/// Version 2: exactly-once without transactions (on Kafka) adds sequences.
fn sequenced_checkpoint() -> Checkpoint {
    let kafka = |name: &str, p| SystemStream::new("kafka", name).partition(p);
    let mut cp = Checkpoint::default();
    cp.inputs.insert(kafka("words", 2), 1207);
    cp.inputs.insert(kafka("wordcount-words", 2), 5120);
    cp.stores
        .insert("counts".into(), StoreCheckpoint { changelog: kafka("wordcount-counts-changelog", 2), offset: 4410 });
    cp.sequence = 20833;
    cp.seen.insert(
        kafka("wordcount-words", 2),
        [("0f3a5c7e9b1d2468".to_owned(), 7311), ("a1b2c3d4e5f60718".to_owned(), 20100)].into(),
    );
    cp
}

#[test]
fn checkpoints_of_every_version_decode() {
    assert_eq!(CHECKPOINT_FORMAT, 2, "a new format needs new fixtures; keep these");
    assert_eq!(decode_checkpoint(&fixture("checkpoint-v2.json")).unwrap(), sequenced_checkpoint());
    assert_eq!(decode_checkpoint(&fixture("checkpoint-v1.json")).unwrap(), wordcount_checkpoint());
    assert_eq!(decode_checkpoint(&fixture("checkpoint-legacy.json")).unwrap(), wordcount_checkpoint());
    let no_stores = decode_checkpoint(&fixture("checkpoint-v1-no-stores.json")).unwrap();
    assert_eq!(no_stores.inputs[&SystemStream::new("kafka", "page.views").partition(0)], 0);
    assert!(no_stores.stores.is_empty());
}

#[test]
fn checkpoints_are_written_as_the_fixture() {
    // Without sequences a checkpoint stays version 1, which older gregors read.
    assert_eq!(encode_checkpoint(&wordcount_checkpoint()).unwrap(), fixture("checkpoint-v1.json"));
    assert_eq!(encode_checkpoint(&sequenced_checkpoint()).unwrap(), fixture("checkpoint-v2.json"));
}

#[test]
fn a_checkpoint_of_a_newer_format_is_refused_naming_its_version() {
    let err = decode_checkpoint(&fixture("checkpoint-v9.json")).unwrap_err();
    assert!(err.contains("format version 9 is not supported") && err.contains("reads versions 1 to 2"), "{err}");
}

#[test]
fn job_models_of_every_version_decode_and_round_trip() {
    assert_eq!(JOB_MODEL_FORMAT, 1, "a new format needs new fixtures; keep these");
    let legacy = JobModel::from_json(&fixture("job-model-legacy.json")).unwrap();
    let v1 = JobModel::from_json(&fixture("job-model-v1.json")).unwrap();
    assert_eq!(legacy, v1);
    assert_eq!((v1.version, v1.task_count, v1.containers.len()), (3, 2, 2));
    assert_eq!(v1.containers[1].tasks[0].inputs[1], SystemStream::new("log", "wordcount-words").partition(1));
    assert_eq!(JobModel::from_json(&v1.to_json()).unwrap(), v1);
    let text = String::from_utf8(v1.to_json()).unwrap();
    assert!(text.contains("\"format_version\": 1"), "{text}");
    let future = String::from_utf8(fixture("job-model-v1.json"))
        .unwrap()
        .replace("\"format_version\": 1", "\"format_version\": 2");
    assert!(JobModel::from_json(future.as_bytes()).unwrap_err().contains("format version 2"));
}
