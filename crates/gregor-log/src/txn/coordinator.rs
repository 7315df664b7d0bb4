//! The coordinator of one transactional producer on the embedded log: a
//! state file per transactional id, changed only under its `flock`, that
//! decides each transaction and fences a replaced producer.
//!
//! ```text
//! <data dir>/.transactions/<transactional id>.json   the state (format below)
//! <data dir>/.transactions/<transactional id>.lock   flock held while changing it
//! ```
//!
//! (`.transactions` cannot be a stream: stream names never start with a dot.)
//!
//! State (format version 1): `{"format_version": 1, "transactional_id",
//! "producer_id", "epoch", "transaction", "state": "ongoing" | {"ending":
//! "commit" | "abort"}, "ending_epoch", "ending_transaction", "partitions":
//! [["stream", partition], ...]}`.
//!
//! The protocol, each step one atomic rename of the state file:
//! - [`Coordinator::init`] (a producer starts, or a successor takes over):
//!   bumps the epoch (from now on the predecessor's [`Coordinator::commit`]
//!   fails with [`TxnError::Fenced`]) and records how the predecessor's
//!   transaction ends: committed if it had decided to commit, aborted if it
//!   was open; then writes those markers and opens transaction 0 with no
//!   registered partition. (A fenced predecessor still writes only to
//!   partitions it had registered, all of which got the marker.)
//! - [`Coordinator::add_partitions`]: before the producer's first write to a
//!   partition, so that whoever ends the transaction knows where to.
//! - [`Coordinator::commit`] / [`Coordinator::end_in`]: records the decision
//!   (the commit point), writes a marker to every registered partition (or
//!   to those the transaction wrote to), opens the next transaction.
//!
//! A crash between the decision and the last marker leaves the decision in
//! the file; the next `init` writes the markers again, to every partition
//! the producer ever registered, since it cannot know which were written (a
//! repeated or needless marker is harmless). This module never writes data
//! records and never decides what a transaction contains.

use super::{Marker, TxnStamp};
use crate::Log;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

/// The coordinator state format this gregor writes.
pub const STATE_FORMAT: u32 = 1;

/// Why a transaction operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    /// A successor took the producer over: this one must stop writing.
    #[error(
        "transactional producer '{id}' was fenced: epoch {mine} was replaced by epoch {current} (another instance took it over)"
    )]
    Fenced {
        /// The transactional id.
        id: String,
        /// This instance's epoch.
        mine: u32,
        /// The epoch in the state file.
        current: u32,
    },
    /// The state file cannot be read or written, or is not valid.
    #[error("transaction state {path}: {reason}")]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Writing a marker failed.
    #[error("writing the {marker:?} marker of transaction {stamp:?} to {stream}[{partition}]: {source}")]
    Marker {
        /// The stream.
        stream: String,
        /// The partition.
        partition: u32,
        /// What was written.
        marker: Marker,
        /// The transaction.
        stamp: TxnStamp,
        /// Why it failed.
        source: crate::LogError,
    },
}

/// Where the producer's transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The transaction `transaction` of `epoch` is open.
    Ongoing,
    /// The transaction `ending_*` is decided; its markers may not all be written.
    Ending(#[serde(with = "marker_name")] Marker),
}

mod marker_name {
    use super::Marker;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(m: &Marker, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if *m == Marker::Commit { "commit" } else { "abort" })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Marker, D::Error> {
        match String::deserialize(d)?.as_str() {
            "commit" => Ok(Marker::Commit),
            "abort" => Ok(Marker::Abort),
            other => Err(serde::de::Error::custom(format!("unknown marker '{other}'"))),
        }
    }
}

/// The state file's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Always [`STATE_FORMAT`] when written by this gregor.
    pub format_version: u32,
    /// The producer's name.
    pub transactional_id: String,
    /// Its id in batch stamps.
    pub producer_id: u64,
    /// The current epoch.
    pub epoch: u32,
    /// The open transaction's number (in `epoch`).
    pub transaction: u32,
    /// Open, or ending (then `ending_epoch`/`ending_transaction` say which).
    pub state: Phase,
    /// The epoch of the ending transaction.
    pub ending_epoch: u32,
    /// The number of the ending transaction.
    pub ending_transaction: u32,
    /// Every partition the producer registered.
    pub partitions: BTreeSet<(String, u32)>,
}

impl State {
    /// The state of a producer never seen before: epoch 0 is bumped to 1 by
    /// its first `init`. Its producer id is new too (not derived from the
    /// name): were the state file ever lost, a recreated producer must not
    /// look like an older epoch of the lost one to readers.
    pub fn new(transactional_id: &str) -> State {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let seed = format!("{transactional_id}/{nanos}/{}", std::process::id());
        State {
            format_version: STATE_FORMAT,
            transactional_id: transactional_id.to_owned(),
            producer_id: xxhash_rust::xxh3::xxh3_64(seed.as_bytes()),
            epoch: 0,
            transaction: 0,
            state: Phase::Ending(Marker::Abort),
            ending_epoch: 0,
            ending_transaction: 0,
            partitions: BTreeSet::new(),
        }
    }

    /// What `init` does with a found state: the new state (next epoch,
    /// transaction 0 open) and the markers that end the predecessor's
    /// transaction (to be written between saving `fenced` and `opened`).
    pub fn take_over(&self) -> (State, Option<(TxnStamp, Marker)>, State) {
        let ending = match self.state {
            Phase::Ongoing => Some((self.stamp(), Marker::Abort)),
            Phase::Ending(m) => Some((
                TxnStamp {
                    producer_id: self.producer_id,
                    epoch: self.ending_epoch,
                    transaction: self.ending_transaction,
                },
                m,
            )),
        };
        let (end_epoch, end_txn, marker) = ending.map_or((0, 0, Marker::Abort), |(s, m)| (s.epoch, s.transaction, m));
        let fenced = State {
            epoch: self.epoch + 1,
            transaction: 0,
            state: Phase::Ending(marker),
            ending_epoch: end_epoch,
            ending_transaction: end_txn,
            ..self.clone()
        };
        // Once the markers are written, nothing of the producer's past is
        // left to end: the new epoch starts with no registered partition
        // (so a second take-over of an idle producer writes no marker).
        let opened = State { state: Phase::Ongoing, partitions: BTreeSet::new(), ..fenced.clone() };
        // A brand-new producer has nothing to end.
        let ending = ending.filter(|_| self.epoch > 0);
        (fenced, ending, opened)
    }

    /// The open transaction's stamp.
    pub fn stamp(&self) -> TxnStamp {
        TxnStamp { producer_id: self.producer_id, epoch: self.epoch, transaction: self.transaction }
    }
}

/// One transactional producer's coordinator (held by the producer).
pub struct Coordinator {
    log: std::sync::Arc<Log>,
    dir: PathBuf,
    state: State,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator").field("dir", &self.dir).field("state", &self.state).finish_non_exhaustive()
    }
}

fn state_err(path: &Path, reason: impl std::fmt::Display) -> TxnError {
    TxnError::State { path: path.to_owned(), reason: reason.to_string() }
}

impl Coordinator {
    fn state_path(&self) -> PathBuf {
        self.dir.join(format!("{}.json", self.state.transactional_id))
    }

    fn lock(dir: &Path, id: &str) -> Result<File, TxnError> {
        let path = dir.join(format!("{id}.lock"));
        std::fs::create_dir_all(dir).map_err(|e| state_err(dir, e))?;
        let f =
            File::options().create(true).truncate(false).write(true).open(&path).map_err(|e| state_err(&path, e))?;
        f.lock().map_err(|e| state_err(&path, e))?;
        Ok(f)
    }

    fn read(path: &Path, id: &str) -> Result<State, TxnError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::new(id)),
            Err(e) => return Err(state_err(path, e)),
        };
        let state: State = serde_json::from_slice(&bytes).map_err(|e| state_err(path, e))?;
        if state.format_version != STATE_FORMAT {
            return Err(state_err(
                path,
                format!(
                    "format version {} (this gregor reads {STATE_FORMAT}; written by a newer gregor?)",
                    state.format_version
                ),
            ));
        }
        if state.transactional_id != id {
            return Err(state_err(path, format!("belongs to '{}', not '{id}'", state.transactional_id)));
        }
        Ok(state)
    }

    fn save(path: &Path, state: &State) -> Result<(), TxnError> {
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(state).map_err(|e| state_err(path, e))?;
        std::fs::write(&tmp, bytes).map_err(|e| state_err(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| state_err(path, e))
    }

    /// Writes `marker` to `only` (those of the registered partitions the
    /// transaction wrote to), or to every registered partition.
    fn markers(&self, stamp: TxnStamp, marker: Marker, only: Option<&BTreeSet<(String, u32)>>) -> Result<(), TxnError> {
        for (stream, partition) in only.unwrap_or(&self.state.partitions) {
            let err =
                |source| TxnError::Marker { stream: stream.clone(), partition: *partition, marker, stamp, source };
            let p = match self.log.stream(stream).and_then(|s| s.partition(*partition)) {
                Ok(p) => p,
                Err(crate::LogError::StreamNotFound { .. }) => {
                    tracing::warn!(stream, partition, "a partition of a transaction is gone; no marker written there");
                    continue;
                }
                Err(e) => return Err(err(e)),
            };
            p.append_marker(stamp, marker).map_err(err)?;
        }
        Ok(())
    }

    /// Takes the producer `transactional_id` over (creating it if new):
    /// fences any previous instance, ends its open transaction, and opens
    /// transaction 0 of a new epoch.
    ///
    /// # Errors
    /// An unreadable state file, or a marker that cannot be written.
    pub fn init(log: std::sync::Arc<Log>, transactional_id: &str) -> Result<Coordinator, TxnError> {
        let dir = log.root().join(".transactions");
        let _lock = Self::lock(&dir, transactional_id)?;
        let path = dir.join(format!("{transactional_id}.json"));
        let found = Self::read(&path, transactional_id)?;
        let (fenced, ending, opened) = found.take_over();
        Self::save(&path, &fenced)?;
        let mut c = Coordinator { log, dir, state: fenced };
        if let Some((stamp, marker)) = ending {
            // Which partitions it wrote is not known: all it registered.
            c.markers(stamp, marker, None)?;
            tracing::info!(id = transactional_id, ?stamp, ?marker, "ended the previous instance's transaction");
        }
        Self::save(&path, &opened)?;
        c.state = opened;
        Ok(c)
    }

    /// The open transaction: the stamp of every batch written in it.
    pub fn stamp(&self) -> TxnStamp {
        self.state.stamp()
    }

    /// Every partition registered so far.
    pub fn partitions(&self) -> &BTreeSet<(String, u32)> {
        &self.state.partitions
    }

    /// Re-reads the state under the lock and checks this instance still owns it.
    fn current(&self) -> Result<State, TxnError> {
        let found = Self::read(&self.state_path(), &self.state.transactional_id)?;
        if found.epoch != self.state.epoch {
            return Err(TxnError::Fenced {
                id: self.state.transactional_id.clone(),
                mine: self.state.epoch,
                current: found.epoch,
            });
        }
        Ok(found)
    }

    /// Registers partitions before the producer first writes to them.
    ///
    /// # Errors
    /// [`TxnError::Fenced`], or the state cannot be written.
    pub fn add_partitions<'a>(&mut self, partitions: impl IntoIterator<Item = (&'a str, u32)>) -> Result<(), TxnError> {
        let new: Vec<(String, u32)> = partitions
            .into_iter()
            .filter(|(s, p)| !self.state.partitions.contains(&((*s).to_owned(), *p)))
            .map(|(s, p)| (s.to_owned(), p))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let _lock = Self::lock(&self.dir, &self.state.transactional_id)?;
        let mut state = self.current()?;
        state.partitions.extend(new);
        Self::save(&self.state_path(), &state)?;
        self.state = state;
        Ok(())
    }

    /// Ends the open transaction with `marker` in every partition and opens
    /// the next one. The caller has made every record of the transaction
    /// durable to its own liking (appended) before.
    ///
    /// # Errors
    /// [`TxnError::Fenced`] (nothing is decided then: the successor aborts
    /// the transaction), or an I/O failure (then the decision, if it was
    /// recorded, is completed by the next `init`).
    pub fn end(&mut self, marker: Marker) -> Result<(), TxnError> {
        self.end_in(marker, None)
    }

    /// [`Self::end`], writing markers only to `written` (the registered
    /// partitions the transaction wrote to; a reader of any other partition
    /// has nothing of it to decide). A crash before they are all written
    /// leaves the decision to `init`, which writes markers everywhere.
    ///
    /// # Errors
    /// As [`Self::end`].
    pub fn end_in(&mut self, marker: Marker, written: Option<&BTreeSet<(String, u32)>>) -> Result<(), TxnError> {
        let _lock = Self::lock(&self.dir, &self.state.transactional_id)?;
        let current = self.current()?;
        let stamp = current.stamp();
        let ending = State {
            state: Phase::Ending(marker),
            ending_epoch: stamp.epoch,
            ending_transaction: stamp.transaction,
            ..current
        };
        let path = self.state_path();
        Self::save(&path, &ending)?;
        self.state = ending;
        gregor_api::failpoint::failpoint("txn-decided");
        self.markers(stamp, marker, written)?;
        let next = State { state: Phase::Ongoing, transaction: stamp.transaction + 1, ..self.state.clone() };
        Self::save(&path, &next)?;
        self.state = next;
        Ok(())
    }

    /// At a clean stop, when the open transaction wrote nothing: forgets
    /// the registered partitions, so that whoever takes the producer over
    /// next has nothing to end and writes no marker. (The caller knows what
    /// it wrote; with anything written, it must not call this: those records
    /// need their abort marker.) A fenced instance changes nothing.
    ///
    /// # Errors
    /// The state cannot be read or written.
    pub fn close_idle(&mut self) -> Result<(), TxnError> {
        let _lock = Self::lock(&self.dir, &self.state.transactional_id)?;
        let current = match self.current() {
            Ok(c) => c,
            Err(TxnError::Fenced { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        if current.state != Phase::Ongoing || current.partitions.is_empty() {
            return Ok(());
        }
        let idle = State { partitions: BTreeSet::new(), ..current };
        Self::save(&self.state_path(), &idle)?;
        self.state = idle;
        Ok(())
    }

    /// [`Self::end`] with a commit.
    ///
    /// # Errors
    /// As [`Self::end`].
    pub fn commit(&mut self) -> Result<(), TxnError> {
        self.end(Marker::Commit)
    }

    /// [`Self::end`] with an abort.
    ///
    /// # Errors
    /// As [`Self::end`].
    pub fn abort(&mut self) -> Result<(), TxnError> {
        self.end(Marker::Abort)
    }
}

#[cfg(test)]
mod tests;
