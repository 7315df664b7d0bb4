//! Transactions on the embedded log: records that become visible to
//! read-committed readers together, in every partition a producer wrote,
//! or not at all.
//!
//! A transactional producer (one per container under exactly-once) writes
//! its records in version-2 batches stamped with (producer id, epoch,
//! transaction). Its coordinator state (`coordinator`) says which
//! partitions it writes and whether its open transaction is being
//! committed; a commit is decided by one atomic write of that state, then
//! a commit marker (a control batch) goes to every partition. A successor
//! taking the producer over bumps the epoch (fencing the predecessor) and
//! ends the predecessor's open transaction: committed if it was decided,
//! aborted otherwise. Readers (`filter`) deliver a transaction's records
//! once its marker says commit, drop them on abort, and keep offset order.
//!
//! This module never decides what a job's transaction contains; the
//! runtime does.

pub mod coordinator;
pub mod filter;

pub use crate::batch::{Marker, TxnStamp};
pub use coordinator::{Coordinator, TxnError};
pub use filter::CommittedFilter;
