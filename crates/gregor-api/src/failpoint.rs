//! A test hook for crash tests with real processes: `GREGOR_FAILPOINT=<name>:<n>`
//! makes the process abort (as abruptly as `kill -9`: no destructor, no
//! flush) the `n`-th time it reaches the place called `name`. Unset, a
//! check costs one relaxed atomic load. Places: the runtime's commit points
//! (`Start`, `StoresFlushed`, `OutputsFlushed`, `CheckpointsSent`,
//! `CheckpointsFlushed`, `TransactionCommitted`) and the embedded log's
//! `txn-decided` (a commit recorded in its coordinator's state, before any
//! marker).
//!
//! `GREGOR_FAILPOINT_SKIP=<name>` switches a safety check off instead, so that
//! a test can prove the next line of defence holds on its own. Checks:
//! `lease-check` (a `zookeeper` processor's container goes on after its
//! lease ran out, as if its clock were wrong; only the log's epoch fencing
//! then keeps its writes invisible under exactly-once).
//!
//! Never set either outside tests.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct Armed {
    name: String,
    at: u64,
    seen: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let text = std::env::var("GREGOR_FAILPOINT").ok()?;
            let (name, at) = text.rsplit_once(':')?;
            Some(Armed { name: name.to_owned(), at: at.parse().ok()?, seen: AtomicU64::new(0) })
        })
        .as_ref()
}

/// Aborts the process if `GREGOR_FAILPOINT` names `name` and this is its
/// `n`-th visit.
pub fn failpoint(name: &str) {
    if let Some(a) = armed()
        && a.name == name
        && a.seen.fetch_add(1, Ordering::Relaxed) + 1 == a.at
    {
        eprintln!("GREGOR_FAILPOINT: aborting at {name} (visit {})", a.at);
        std::process::abort();
    }
}

/// Whether `GREGOR_FAILPOINT_SKIP` names the check `name` (read once).
pub fn skipped(name: &str) -> bool {
    static SKIP: OnceLock<Option<String>> = OnceLock::new();
    SKIP.get_or_init(|| std::env::var("GREGOR_FAILPOINT_SKIP").ok()).as_deref() == Some(name)
}
