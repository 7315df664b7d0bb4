//! The log system's producer: one batch being built per partition, appended
//! when full and at flush; optionally transactional (exactly-once), then
//! every batch carries the open transaction's stamp, a partition is
//! registered with the coordinator before its first batch, and a commit ends
//! the transaction in every registered partition. It never appends a
//! transactional batch to a partition its coordinator does not know.

use super::{Shared, partition, to_system_error};
use crate::Record;
use crate::batch::BatchEncoder;
use crate::txn::{Coordinator, TxnError};
use gregor_api::SystemStreamPartition;
use gregor_api::system::{SystemError, SystemProducer};
use hashbrown::HashMap;
use std::sync::Arc;

/// One partition this producer writes to: its batch being built.
struct Slot {
    ssp: SystemStreamPartition,
    partition: Arc<crate::Partition>,
    encoder: BatchEncoder,
}

pub(super) struct LogProducer {
    shared: Arc<Shared>,
    slots: Vec<Slot>,
    index: HashMap<SystemStreamPartition, u32>,
    /// Slots with records not appended yet.
    filled: Vec<u32>,
    next_offsets: HashMap<SystemStreamPartition, u64>,
    /// The coordinator, once transactional.
    txn: Option<Coordinator>,
    /// The slots appended to in the open transaction.
    written: std::collections::BTreeSet<u32>,
}

fn txn_error(e: TxnError) -> SystemError {
    SystemError::other("transaction", e)
}

impl LogProducer {
    const MAX_RECORDS: u32 = 5000;
    const MAX_BYTES: usize = 1 << 20;

    pub(super) fn new(shared: Arc<Shared>) -> Self {
        LogProducer {
            shared,
            slots: Vec::new(),
            index: HashMap::new(),
            filled: Vec::new(),
            next_offsets: HashMap::new(),
            txn: None,
            written: std::collections::BTreeSet::new(),
        }
    }

    fn append(&mut self, slot: u32) -> Result<(), SystemError> {
        let s = &mut self.slots[slot as usize];
        if s.encoder.is_empty() {
            return Ok(());
        }
        let at = s.partition.append_encoded(&mut s.encoder).map_err(|e| to_system_error(e, &s.ssp.stream))?;
        if self.txn.is_some() {
            self.written.insert(slot);
        }
        match self.next_offsets.get_mut(&s.ssp) {
            Some(n) => *n = at.last_offset + 1,
            None => {
                self.next_offsets.insert(s.ssp.clone(), at.last_offset + 1);
            }
        }
        Ok(())
    }
}

impl SystemProducer for LogProducer {
    fn slot(&mut self, ssp: &SystemStreamPartition) -> Result<u32, SystemError> {
        if let Some(&slot) = self.index.get(ssp) {
            return Ok(slot);
        }
        let partition = partition(&self.shared, ssp)?;
        if let Some(c) = &mut self.txn {
            c.add_partitions([(&*ssp.stream.stream, ssp.partition)]).map_err(txn_error)?;
        }
        let slot = self.slots.len() as u32;
        self.slots.push(Slot { ssp: ssp.clone(), partition, encoder: BatchEncoder::new() });
        self.index.insert(ssp.clone(), slot);
        Ok(slot)
    }

    fn send_with_headers(
        &mut self,
        slot: u32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
        headers: &[(&str, &[u8])],
    ) -> Result<(), SystemError> {
        let s = &mut self.slots[slot as usize];
        if s.encoder.is_empty() {
            self.filled.push(slot);
            if let Some(c) = &self.txn {
                s.encoder.begin_transaction(c.stamp());
            }
        }
        let n = s.encoder.count();
        s.encoder.push(n, timestamp, &Record { key, value, timestamp: Some(timestamp), headers });
        if n + 1 >= Self::MAX_RECORDS || s.encoder.len() >= Self::MAX_BYTES {
            self.append(slot)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SystemError> {
        let mut filled = std::mem::take(&mut self.filled);
        for (i, &slot) in filled.iter().enumerate() {
            if let Err(e) = self.append(slot) {
                self.filled = filled.split_off(i); // still to append
                return Err(e);
            }
        }
        filled.clear();
        self.filled = filled; // keeps its capacity
        Ok(())
    }

    fn next_offset(&self, ssp: &SystemStreamPartition) -> Option<u64> {
        self.next_offsets.get(ssp).copied()
    }

    fn stop(&mut self) -> Result<(), SystemError> {
        self.flush()?;
        // Stopped cleanly after its last commit: leave nothing to end.
        if let Some(c) = &mut self.txn
            && self.written.is_empty()
        {
            c.close_idle().map_err(txn_error)?;
        }
        Ok(())
    }

    fn supports_transactions(&self) -> bool {
        true
    }

    fn init_transactions(&mut self, transactional_id: &str) -> Result<(), SystemError> {
        // What was sent before is not part of any transaction.
        self.flush()?;
        let mut c = Coordinator::init(self.shared.log.clone(), transactional_id).map_err(txn_error)?;
        c.add_partitions(self.slots.iter().map(|s| (&*s.ssp.stream.stream, s.ssp.partition))).map_err(txn_error)?;
        self.txn = Some(c);
        self.written.clear();
        Ok(())
    }

    fn commit_transaction(&mut self) -> Result<(), SystemError> {
        self.flush()?;
        let Some(c) = &mut self.txn else {
            return Err(SystemError::other("committing a transaction", "init_transactions was not called"));
        };
        // Markers go where the transaction wrote; an idle one writes none.
        if !self.written.is_empty() {
            let slots = &self.slots;
            let written = self
                .written
                .iter()
                .map(|&i| (slots[i as usize].ssp.stream.stream.to_string(), slots[i as usize].ssp.partition))
                .collect();
            c.end_in(crate::txn::Marker::Commit, Some(&written)).map_err(txn_error)?;
            self.written.clear();
        }
        Ok(())
    }
}
