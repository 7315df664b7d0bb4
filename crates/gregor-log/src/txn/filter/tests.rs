//! The read-committed filter against a model: producers write, commit,
//! abort, crash (their successor's recovery ends the open transaction) and
//! linger as zombies; whatever the interleaving, a reader delivers exactly
//! the records of committed transactions and the non-transactional ones,
//! in offset order, and never delivers one it would later have to take back.

use super::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Producer `p` writes a record in its open transaction.
    Write(usize),
    /// A non-transactional record.
    Plain,
    /// Producer `p` commits (a marker here, after its coordinator's decision).
    Commit(usize),
    /// Producer `p` aborts.
    Abort(usize),
    /// Producer `p` dies; its successor's recovery aborts the open
    /// transaction, or, `true`, rolls a prepared commit forward.
    Crash(usize, bool),
    /// Producer `p`'s previous incarnation (a zombie) writes in its old,
    /// already decided transaction.
    Zombie(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize).prop_map(Op::Write),
        1 => Just(Op::Plain),
        2 => (0..3usize).prop_map(Op::Commit),
        1 => (0..3usize).prop_map(Op::Abort),
        1 => ((0..3usize), any::<bool>()).prop_map(|(p, c)| Op::Crash(p, c)),
        1 => (0..3usize).prop_map(Op::Zombie),
    ]
}

#[derive(Clone, Copy)]
struct Sim {
    epoch: u32,
    txn: u32,
    /// The last decided stamp of the previous epoch (what a zombie reuses).
    zombie: Option<TxnStamp>,
}

fn stamp(p: usize, s: &Sim) -> TxnStamp {
    TxnStamp { producer_id: 100 + p as u64, epoch: s.epoch, transaction: s.txn }
}

proptest! {
    #[test]
    fn delivers_exactly_the_committed_records_in_order(ops in proptest::collection::vec(op(), 1..120)) {
        let mut sims = [Sim { epoch: 0, txn: 0, zombie: None }; 3];
        let mut filter: CommittedFilter<u32> = CommittedFilter::new();
        // Per record: its transaction (None: plain) and whether it counts.
        let mut log: Vec<Option<TxnStamp>> = Vec::new();
        let mut decided: HashMap<TxnStamp, Marker> = HashMap::new();
        let mut zombie_records: Vec<usize> = Vec::new();
        let mut delivered: Vec<u32> = Vec::new();
        let end = |p: usize, sims: &mut [Sim; 3], marker: Marker, filter: &mut CommittedFilter<u32>, decided: &mut HashMap<TxnStamp, Marker>| {
            let s = stamp(p, &sims[p]);
            filter.push_marker(s, marker);
            decided.insert(s, marker);
            sims[p].txn += 1;
        };
        for op in &ops {
            match *op {
                Op::Write(p) => {
                    log.push(Some(stamp(p, &sims[p])));
                    filter.push_record(log.last().copied().flatten(), (log.len() - 1) as u32);
                }
                Op::Plain => {
                    log.push(None);
                    filter.push_record(None, (log.len() - 1) as u32);
                }
                Op::Commit(p) => end(p, &mut sims, Marker::Commit, &mut filter, &mut decided),
                Op::Abort(p) => end(p, &mut sims, Marker::Abort, &mut filter, &mut decided),
                Op::Crash(p, prepared) => {
                    let open = stamp(p, &sims[p]);
                    end(p, &mut sims, if prepared { Marker::Commit } else { Marker::Abort }, &mut filter, &mut decided);
                    sims[p] = Sim { epoch: sims[p].epoch + 1, txn: 0, zombie: Some(open) };
                }
                Op::Zombie(p) => {
                    if let Some(z) = sims[p].zombie {
                        log.push(Some(z));
                        zombie_records.push(log.len() - 1);
                        filter.push_record(Some(z), (log.len() - 1) as u32);
                    }
                }
            }
            while let Some(i) = filter.pop() {
                delivered.push(i);
            }
        }
        // Every producer ends its open transaction (committing or not).
        for p in 0..3 {
            end(p, &mut sims, Marker::Abort, &mut filter, &mut decided);
        }
        while let Some(i) = filter.pop() {
            delivered.push(i);
        }
        let expected: Vec<u32> = log
            .iter()
            .enumerate()
            .filter(|(i, t)| match t {
                None => true,
                Some(s) => decided.get(s) == Some(&Marker::Commit) && !zombie_records.contains(i),
            })
            .map(|(i, _)| i as u32)
            .collect();
        prop_assert_eq!(&delivered, &expected);
        prop_assert_eq!(filter.held(), 0);
        prop_assert!(filter.blocked_by().is_none());
    }
}

#[test]
fn an_open_transaction_holds_back_what_follows() {
    let t = TxnStamp { producer_id: 1, epoch: 0, transaction: 0 };
    let mut f = CommittedFilter::new();
    f.push_record(None, "a");
    f.push_record(Some(t), "b");
    f.push_record(None, "c");
    assert_eq!(f.pop(), Some("a"));
    assert_eq!(f.pop(), None, "c waits behind the open transaction");
    assert_eq!(f.blocked_by(), Some(t));
    f.push_marker(t, Marker::Commit);
    assert_eq!(f.pop(), Some("b"));
    assert_eq!(f.pop(), Some("c"));
}

#[test]
fn a_newer_epoch_releases_what_its_predecessor_left_undecided() {
    let old = TxnStamp { producer_id: 1, epoch: 0, transaction: 4 };
    let new = TxnStamp { producer_id: 1, epoch: 1, transaction: 0 };
    let mut f = CommittedFilter::new();
    f.push_record(Some(old), 1);
    f.push_record(None, 2);
    assert_eq!(f.pop(), None);
    f.push_record(Some(new), 3);
    assert_eq!(f.pop(), Some(2), "the old epoch's record is dropped, not waited for");
    f.push_marker(new, Marker::Commit);
    assert_eq!(f.pop(), Some(3));
    assert_eq!(f.dropped(), 1);
}

#[test]
fn read_uncommitted_lets_everything_through_in_order() {
    let t = TxnStamp { producer_id: 1, epoch: 0, transaction: 0 };
    let mut f = CommittedFilter::read_uncommitted();
    f.push_record(Some(t), "a");
    f.push_record(None, "b");
    f.push_marker(t, Marker::Abort);
    assert_eq!((f.pop(), f.pop(), f.pop()), (Some("a"), Some("b"), None));
}
