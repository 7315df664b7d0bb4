//! The leader's decisions, as pure functions of what it observed: when to
//! compute a new job model (membership stable for the debounce time, or the
//! periodic partition-count check), and whether a computed model is worth
//! publishing and under which version.
//!
//! The session does the I/O (reading members and the model from ZooKeeper,
//! reading partition counts, writing the model); nothing here does any.

use gregor_runtime::JobModel;
use std::time::{Duration, Instant};

/// What the leader remembers between looks at the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LeaderState {
    /// The live processor ids (sorted) at the last look.
    members_seen: Vec<String>,
    /// When membership, unchanged since, may be published.
    debounce_until: Option<Instant>,
    /// When partition counts are read again.
    next_partition_check: Instant,
}

/// What the leader should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LeaderAction {
    /// Nothing yet; look again by this time (or when ZooKeeper reports a change).
    WaitUntil(Instant),
    /// Compute the model from current partition counts and offer it to
    /// [`publish_decision`]; `membership_differs` says whether the published
    /// model's processors differ from the live ones.
    Compute {
        /// The live processors are not those of the published model.
        membership_differs: bool,
    },
}

impl LeaderState {
    /// A new leader, first checking partition counts after `partition_check`.
    pub(super) fn new(now: Instant, partition_check: Duration) -> Self {
        LeaderState { members_seen: Vec::new(), debounce_until: None, next_partition_check: now + partition_check }
    }

    /// Decides, from the live processor ids and those of the published
    /// model (`None`: nothing published yet), at time `now`.
    ///
    /// Membership that differs from the model is published once it has
    /// been stable for `debounce` (every change restarts the wait, so a
    /// rolling restart causes one rebalance, not one per process); partition
    /// counts are checked every `partition_check`.
    pub(super) fn decide(
        &mut self,
        live: &[String],
        published: Option<&[String]>,
        now: Instant,
        debounce: Duration,
        partition_check: Duration,
    ) -> LeaderAction {
        let mut live = live.to_vec();
        live.sort();
        let published = published.map(|p| {
            let mut p = p.to_vec();
            p.sort();
            p
        });
        let differs = published.as_ref() != Some(&live);
        if live != self.members_seen {
            self.members_seen = live;
            self.debounce_until = differs.then_some(now + debounce);
        } else if differs && self.debounce_until.is_none() {
            self.debounce_until = Some(now + debounce);
        } else if !differs {
            self.debounce_until = None;
        }
        let debounced = self.debounce_until.is_some_and(|d| now >= d);
        if !debounced && now < self.next_partition_check {
            let wake = self.debounce_until.map_or(self.next_partition_check, |d| d.min(self.next_partition_check));
            return LeaderAction::WaitUntil(wake);
        }
        self.debounce_until = None;
        self.next_partition_check = now + partition_check;
        LeaderAction::Compute { membership_differs: differs }
    }
}

/// Whether to publish `computed` (a model over the live processors and the
/// current partition counts) after `previous`: yes when nothing was
/// published, or when processors or partition counts changed; the version
/// published is then one more than the previous one. `None`: publish nothing.
pub(super) fn publish_decision(
    previous: Option<&JobModel>,
    mut computed: JobModel,
    membership_differs: bool,
) -> Option<JobModel> {
    let Some(p) = previous else { return Some(computed) };
    let same_assignment = computed.containers == p.containers && computed.task_count == p.task_count;
    if same_assignment && !membership_differs {
        return None;
    }
    computed.version = p.version + 1;
    Some(computed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gregor_runtime::{ContainerModel, TaskModel};

    const DEBOUNCE: Duration = Duration::from_secs(20);
    const CHECK: Duration = Duration::from_secs(60);

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn model(version: u64, containers: &[(&str, u32)]) -> JobModel {
        let containers: Vec<ContainerModel> = containers
            .iter()
            .map(|(id, tasks)| ContainerModel {
                id: (*id).to_owned(),
                tasks: (0..*tasks)
                    .map(|t| TaskModel { name: format!("Partition {t}"), inputs: vec![], changelog_partition: t })
                    .collect(),
            })
            .collect();
        let task_count = containers.iter().map(|c| c.tasks.len() as u32).sum();
        JobModel { version, task_count, containers }
    }

    #[test]
    fn a_new_membership_is_published_once_stable_for_the_debounce_time() {
        let t = Instant::now();
        let mut s = LeaderState::new(t, CHECK);
        let a = ids(&["a"]);
        assert_eq!(s.decide(&a, None, t, DEBOUNCE, CHECK), LeaderAction::WaitUntil(t + DEBOUNCE));
        assert_eq!(
            s.decide(&a, None, t + DEBOUNCE - Duration::from_millis(1), DEBOUNCE, CHECK),
            LeaderAction::WaitUntil(t + DEBOUNCE)
        );
        assert_eq!(
            s.decide(&a, None, t + DEBOUNCE, DEBOUNCE, CHECK),
            LeaderAction::Compute { membership_differs: true }
        );
    }

    #[test]
    fn every_change_restarts_the_debounce() {
        let t = Instant::now();
        let mut s = LeaderState::new(t, CHECK);
        let published = ids(&["a"]);
        s.decide(&ids(&["a", "b"]), Some(&published), t, DEBOUNCE, CHECK);
        let later = t + Duration::from_secs(15);
        // "c" joins 15 s later: the wait starts again from there.
        assert_eq!(
            s.decide(&ids(&["a", "b", "c"]), Some(&published), later, DEBOUNCE, CHECK),
            LeaderAction::WaitUntil(later + DEBOUNCE)
        );
        assert!(
            matches!(
                s.decide(&ids(&["c", "b", "a"]), Some(&published), t + DEBOUNCE, DEBOUNCE, CHECK),
                LeaderAction::WaitUntil(_)
            ),
            "order does not matter; 20 s after the first change is too early"
        );
        assert_eq!(
            s.decide(&ids(&["a", "b", "c"]), Some(&published), later + DEBOUNCE, DEBOUNCE, CHECK),
            LeaderAction::Compute { membership_differs: true }
        );
    }

    #[test]
    fn a_membership_that_returns_to_the_published_one_publishes_nothing() {
        let t = Instant::now();
        let mut s = LeaderState::new(t, CHECK);
        let published = ids(&["a", "b"]);
        s.decide(&ids(&["a"]), Some(&published), t, DEBOUNCE, CHECK);
        // "b" is back before the debounce ended (a quick restart).
        assert_eq!(
            s.decide(&published, Some(&published), t + Duration::from_secs(5), DEBOUNCE, CHECK),
            LeaderAction::WaitUntil(t + CHECK)
        );
        assert_eq!(
            s.decide(&published, Some(&published), t + DEBOUNCE, DEBOUNCE, CHECK),
            LeaderAction::WaitUntil(t + CHECK)
        );
    }

    #[test]
    fn partition_counts_are_checked_periodically() {
        let t = Instant::now();
        let mut s = LeaderState::new(t, CHECK);
        let members = ids(&["a"]);
        assert_eq!(
            s.decide(&members, Some(&members), t + CHECK, DEBOUNCE, CHECK),
            LeaderAction::Compute { membership_differs: false }
        );
        assert_eq!(
            s.decide(&members, Some(&members), t + CHECK, DEBOUNCE, CHECK),
            LeaderAction::WaitUntil(t + CHECK + CHECK)
        );
    }

    #[test]
    fn publishes_the_first_model_and_changes_with_the_next_version() {
        let first = model(1, &[("a", 4)]);
        assert_eq!(publish_decision(None, first.clone(), true), Some(first.clone()));
        // Same processors and partitions: nothing to publish.
        assert_eq!(publish_decision(Some(&first), model(1, &[("a", 4)]), false), None);
        // More partitions.
        assert_eq!(publish_decision(Some(&first), model(1, &[("a", 6)]), false).map(|m| m.version), Some(2));
        // A processor joined.
        let two = publish_decision(Some(&first), model(1, &[("a", 2), ("b", 2)]), true).unwrap();
        assert_eq!((two.version, two.containers.len()), (2, 2));
        // A processor with no tasks joined: the assignment is the same, but
        // the processors are not, so it is published (it must acknowledge).
        let idle = publish_decision(Some(&first), model(1, &[("a", 4)]), true).unwrap();
        assert_eq!(idle.version, 2);
    }
}
