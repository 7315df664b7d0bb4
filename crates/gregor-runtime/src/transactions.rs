//! Which transactional producer each container of a job is under
//! exactly-once, and ending the open transactions of containers that will not
//! come back. This module never writes data and never decides a commit.
//!
//! A container's transactional id is `<job.name>-<job.id>-<container id>` in
//! the `local` and `process` modes (container ids are numbers), and
//! `<job.name>-<job.id>-zk-<processor id>` in the `zookeeper` mode (a
//! processor id is any text without `/`). The `zk-` keeps the two apart, so
//! that a job never takes over another job's producers (job `wc` id `1`
//! would otherwise match a job `wc-1` id `x`'s containers).

use crate::{JobConfig, RuntimeError, Systems};

/// Marks the suffix of a `zookeeper`-mode processor's producer.
const ZK: &str = "zk-";

/// Container `container_id`'s transactional id.
pub fn transactional_id(job: &JobConfig, container_id: &str) -> String {
    if job.coordinator() == "zookeeper" {
        format!("{}-{ZK}{container_id}", job.dir_name())
    } else {
        format!("{}-{container_id}", job.dir_name())
    }
}

/// The container (or processor) id a producer's suffix (what follows
/// `<job.name>-<job.id>-`) belongs to, in any mode; `None` for a suffix no
/// container of this job has (another job's producer).
fn container_of(suffix: &str) -> Option<&str> {
    match suffix.strip_prefix(ZK) {
        Some(processor) if !processor.is_empty() => Some(processor),
        Some(_) => None,
        None => (!suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit())).then_some(suffix),
    }
}

/// Under exactly-once, ends the open transaction of (and fences) every
/// container producer this job ever had, in any mode, whose container id
/// `live` does not accept: containers of an earlier run that this one no
/// longer has, or `zookeeper` processors that left the group. Returns how
/// many producers it took over; does nothing under at-least-once.
///
/// # Errors
/// The checkpoint system's transaction state cannot be read or written.
pub fn end_transactions_except(
    job: &JobConfig,
    systems: &Systems,
    live: &dyn Fn(&str) -> bool,
) -> Result<usize, RuntimeError> {
    if !job.exactly_once {
        return Ok(0);
    }
    let prefix = format!("{}-", job.dir_name());
    let which = |suffix: &str| container_of(suffix).is_some_and(|id| !live(id));
    Ok(systems.admin(&job.checkpoint_stream.system)?.recover_transactions(&prefix, &which)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_of_this_jobs_containers_in_both_modes() {
        assert_eq!(container_of("0"), Some("0"));
        assert_eq!(container_of("17"), Some("17"));
        assert_eq!(container_of("zk-p1"), Some("p1"));
        assert_eq!(container_of("zk-host-123"), Some("host-123"));
    }

    #[test]
    fn other_jobs_producers_are_never_taken() {
        // Job `wc` id `1` sees job `wc-1` id `x`'s container 0 as `x-0`.
        assert_eq!(container_of("x-0"), None);
        assert_eq!(container_of(""), None);
        assert_eq!(container_of("zk-"), None);
        assert_eq!(container_of("1a"), None);
    }
}
