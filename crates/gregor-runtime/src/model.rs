//! The job model: which container runs which tasks, and which input
//! partitions each task consumes. Computing it is a pure function of the
//! config and the partition counts (so it is unit-tested without I/O).

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

/// The job model for `job`: tasks dealt round-robin over the containers
/// (container `i` gets tasks `i`, `i + n`, ...), so counts differ by at most one.
pub fn job_model(job: &JobConfig, partitions: &BTreeMap<SystemStream, u32>) -> JobModel {
    let tasks = group_tasks(job.grouper, partitions);
    let n = job.container_count.max(1) as usize;
    let mut containers: Vec<ContainerModel> =
        (0..n).map(|i| ContainerModel { id: i.to_string(), tasks: Vec::new() }).collect();
    for (i, t) in tasks.iter().enumerate() {
        containers[i % n].tasks.push(t.clone());
    }
    JobModel { version: 1, task_count: tasks.len() as u32, containers }
}

#[cfg(test)]
mod tests {
    use super::*;

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
