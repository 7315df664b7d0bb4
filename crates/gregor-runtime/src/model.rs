//! The job model: which container runs which tasks, and which input
//! partitions each task consumes. Computing it is a pure function of the
//! config and the partition counts (so it is unit-tested without I/O).
//!
//! Stored as JSON (the `process` coordinator's model file, the `zookeeper`
//! mode's model node) with a format version: `{"format_version": 1,
//! "version": <model version>, "task_count": n, "containers": [...]}`.
//! Models written before the field existed are read as format 1; a newer
//! format is refused with an error naming it.

use crate::job_config::{Grouper, JobConfig};
use gregor_api::{SystemStream, SystemStreamPartition};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One task: its name, its input partitions, and its changelog partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskModel {
    /// e.g. `Partition 3`.
    pub name: String,
    /// Input partitions, each owned by this task only.
    pub inputs: Vec<SystemStreamPartition>,
    /// The partition of every store changelog that belongs to this task.
    pub changelog_partition: u32,
}

/// One container and its tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerModel {
    /// Container id (`0`, `1`, ...).
    pub id: String,
    /// Its tasks.
    pub tasks: Vec<TaskModel>,
}

/// The whole job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobModel {
    /// Incremented whenever the model changes.
    pub version: u64,
    /// Number of tasks (= partitions of every changelog).
    pub task_count: u32,
    /// Containers.
    pub containers: Vec<ContainerModel>,
}

/// The job model format this gregor writes.
pub const JOB_MODEL_FORMAT: u32 = 1;

#[derive(Serialize)]
struct Versioned<'a> {
    format_version: u32,
    #[serde(flatten)]
    model: &'a JobModel,
}

#[derive(Deserialize)]
struct Read {
    #[serde(default = "legacy_format")]
    format_version: u32,
    #[serde(flatten)]
    model: JobModel,
}

fn legacy_format() -> u32 {
    1
}

impl JobModel {
    /// The model as stored (pretty JSON with its format version).
    pub fn to_json(&self) -> Vec<u8> {
        // A model is plain data (strings, numbers): encoding cannot fail.
        serde_json::to_vec_pretty(&Versioned { format_version: JOB_MODEL_FORMAT, model: self }).unwrap_or_default()
    }

    /// Reads a stored model.
    ///
    /// # Errors
    /// Malformed JSON, or a format version this gregor does not read.
    pub fn from_json(bytes: &[u8]) -> Result<JobModel, String> {
        let read: Read = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if read.format_version != JOB_MODEL_FORMAT {
            return Err(format!(
                "job model format version {} is not supported by this gregor (it reads version {JOB_MODEL_FORMAT}); was it written by a newer gregor?",
                read.format_version
            ));
        }
        Ok(read.model)
    }
}

/// Groups input partitions into tasks (sorted by name, changelog partitions assigned).
pub fn group_tasks(grouper: Grouper, partitions: &BTreeMap<SystemStream, u32>) -> Vec<TaskModel> {
    match grouper {
        Grouper::Partition => {
            let max = partitions.values().copied().max().unwrap_or(0);
            (0..max)
                .map(|p| TaskModel {
                    name: format!("Partition {p}"),
                    inputs: partitions.iter().filter(|(_, n)| p < **n).map(|(s, _)| s.partition(p)).collect(),
                    changelog_partition: p,
                })
                .collect()
        }
        Grouper::Ssp => {
            let mut ssps: Vec<SystemStreamPartition> =
                partitions.iter().flat_map(|(s, n)| (0..*n).map(|p| s.partition(p))).collect();
            ssps.sort();
            ssps.into_iter()
                .enumerate()
                .map(|(i, ssp)| TaskModel {
                    name: format!("SystemStreamPartition {ssp}"),
                    inputs: vec![ssp],
                    changelog_partition: i as u32,
                })
                .collect()
        }
    }
}

/// The job model for `job` (first version: no previous model).
pub fn job_model(job: &JobConfig, partitions: &BTreeMap<SystemStream, u32>) -> JobModel {
    job_model_after(job, partitions, None)
}

/// The job model for `job`, keeping tasks where `previous` had them as far as
/// balance allows (see [`assign`]); its version follows the previous one.
pub fn job_model_after(
    job: &JobConfig,
    partitions: &BTreeMap<SystemStream, u32>,
    previous: Option<&JobModel>,
) -> JobModel {
    let ids: Vec<String> = (0..job.container_count.max(1)).map(|i| i.to_string()).collect();
    job_model_for(job, partitions, &ids, previous)
}

/// The job model over containers named `ids` (in `zookeeper` mode, the live
/// processors), sticky and balanced as [`job_model_after`].
pub fn job_model_for(
    job: &JobConfig,
    partitions: &BTreeMap<SystemStream, u32>,
    ids: &[String],
    previous: Option<&JobModel>,
) -> JobModel {
    let tasks = group_tasks(job.grouper, partitions);
    let containers = assign_to(&tasks, ids, previous);
    let task_count = tasks.len() as u32;
    let version = match previous {
        Some(p) if p.containers == containers && p.task_count == task_count => p.version,
        Some(p) => p.version + 1,
        None => 1,
    };
    JobModel { version, task_count, containers }
}

/// Deals tasks over `n` containers (`0`..`n-1`) so that counts differ by at
/// most one, moving as few tasks as possible from where `previous` had them:
/// each container keeps its previous tasks up to its share; only the excess
/// and new tasks move, to the containers with room. Deterministic: the same
/// inputs give the same model on every process.
pub fn assign(tasks: &[TaskModel], n: usize, previous: Option<&JobModel>) -> Vec<ContainerModel> {
    let ids: Vec<String> = (0..n.max(1)).map(|i| i.to_string()).collect();
    assign_to(tasks, &ids, previous)
}

/// [`assign`] over containers named `ids` (in this order; at least one).
/// Stickiness follows the names: a task stays with the container of the
/// same id in `previous`.
pub fn assign_to(tasks: &[TaskModel], ids: &[String], previous: Option<&JobModel>) -> Vec<ContainerModel> {
    let fallback = [String::from("0")];
    let ids = if ids.is_empty() { &fallback[..] } else { ids };
    let n = ids.len();
    let base = tasks.len() / n;
    let mut extra = tasks.len() % n;
    let mut sorted: Vec<&TaskModel> = tasks.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out: Vec<ContainerModel> =
        ids.iter().map(|id| ContainerModel { id: id.clone(), tasks: Vec::new() }).collect();
    let was: BTreeMap<&str, usize> = previous
        .into_iter()
        .flat_map(|p| p.containers.iter())
        .filter_map(|c| ids.iter().position(|id| *id == c.id).map(|i| (c, i)))
        .flat_map(|(c, i)| c.tasks.iter().map(move |t| (t.name.as_str(), i)))
        .collect();
    let mut pool = Vec::new();
    // Keep previous tasks up to each container's base share.
    for t in &sorted {
        match was.get(t.name.as_str()) {
            Some(&i) if out[i].tasks.len() < base => out[i].tasks.push((*t).clone()),
            _ => pool.push(*t),
        }
    }
    // Previous tasks beyond the base share may stay while extra slots last.
    let mut rest = Vec::new();
    for t in pool {
        match was.get(t.name.as_str()) {
            Some(&i) if extra > 0 && out[i].tasks.len() == base => {
                out[i].tasks.push(t.clone());
                extra -= 1;
            }
            _ => rest.push(t),
        }
    }
    // Everything else goes where there is room, in container order.
    for t in rest {
        let i = match out.iter().position(|c| c.tasks.len() < base) {
            Some(i) => i,
            None => {
                extra = extra.saturating_sub(1);
                out.iter().position(|c| c.tasks.len() == base).unwrap_or(0)
            }
        };
        out[i].tasks.push(t.clone());
    }
    for c in &mut out {
        c.tasks.sort_by(|a, b| a.name.cmp(&b.name));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tasks(n: u32) -> Vec<TaskModel> {
        (0..n)
            .map(|p| TaskModel { name: format!("Partition {p:02}"), inputs: vec![], changelog_partition: p })
            .collect()
    }

    fn location(containers: &[ContainerModel]) -> BTreeMap<String, String> {
        containers.iter().flat_map(|c| c.tasks.iter().map(move |t| (t.name.clone(), c.id.clone()))).collect()
    }

    #[test]
    fn assignment_is_balanced_deterministic_and_sticky() {
        for (t, n) in [(8, 3), (10, 4), (3, 5), (16, 1)] {
            let a = assign(&tasks(t), n, None);
            let sizes: Vec<usize> = a.iter().map(|c| c.tasks.len()).collect();
            assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{t} tasks over {n}: {sizes:?}");
            assert_eq!(sizes.iter().sum::<usize>(), t as usize);
            assert_eq!(a, assign(&tasks(t), n, None), "deterministic");
        }
        // Growing from 3 to 4 containers moves only what the new one needs.
        let before = JobModel { version: 1, task_count: 12, containers: assign(&tasks(12), 3, None) };
        let after = assign(&tasks(12), 4, Some(&before));
        let (b, a) = (location(&before.containers), location(&after));
        let moved = b.iter().filter(|(t, c)| a[*t] != **c).count();
        assert_eq!(moved, 3, "12 tasks over 4 containers: the new one takes 3, nothing else moves");
        // Shrinking from 4 to 3 moves only the removed container's tasks.
        let four = JobModel { version: 2, task_count: 12, containers: after };
        let three = assign(&tasks(12), 3, Some(&four));
        let moved = location(&four.containers).iter().filter(|(t, c)| location(&three)[*t] != **c).count();
        assert_eq!(moved, 3);
        // An unchanged model keeps its version.
        let job_like = |m: &JobModel| assign(&tasks(12), 3, Some(m)) == m.containers;
        let same = JobModel { version: 7, task_count: 12, containers: three.clone() };
        assert!(job_like(&same));
    }

    #[test]
    fn named_containers_keep_their_tasks_when_one_leaves_or_joins() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let three =
            JobModel { version: 1, task_count: 8, containers: assign_to(&tasks(8), &names(&["a", "b", "c"]), None) };
        // "b" dies: only its tasks move.
        let two = assign_to(&tasks(8), &names(&["a", "c"]), Some(&three));
        let (before, after) = (location(&three.containers), location(&two));
        let moved: Vec<_> = before.iter().filter(|(t, c)| after[*t] != **c).map(|(_, c)| c.as_str()).collect();
        assert!(moved.iter().all(|c| *c == "b"), "only b's tasks move: {moved:?}");
        let sizes: Vec<usize> = two.iter().map(|c| c.tasks.len()).collect();
        assert_eq!(sizes, vec![4, 4]);
        // "d" joins: it takes 2, the others keep the rest.
        let two = JobModel { version: 2, task_count: 8, containers: two };
        let three = assign_to(&tasks(8), &names(&["a", "c", "d"]), Some(&two));
        let moved = location(&two.containers).iter().filter(|(t, c)| location(&three)[*t] != **c).count();
        assert_eq!(moved, 2);
    }

    #[test]
    fn group_by_partition_spans_inputs_and_balances_containers() {
        let partitions = BTreeMap::from([(SystemStream::new("log", "a"), 4), (SystemStream::new("log", "b"), 2)]);
        let tasks = group_tasks(Grouper::Partition, &partitions);
        assert_eq!(tasks.len(), 4);
        assert_eq!(
            tasks[1].inputs,
            vec![SystemStream::new("log", "a").partition(1), SystemStream::new("log", "b").partition(1)]
        );
        assert_eq!(tasks[3].inputs, vec![SystemStream::new("log", "a").partition(3)]);
        let by_ssp = group_tasks(Grouper::Ssp, &partitions);
        assert_eq!(by_ssp.len(), 6);
        assert!(by_ssp.iter().enumerate().all(|(i, t)| t.changelog_partition == i as u32 && t.inputs.len() == 1));
    }
}
