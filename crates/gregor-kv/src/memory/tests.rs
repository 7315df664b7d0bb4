//! The memory store behaves like a map, its changelog replays to the same
//! state, and each key reaches the changelog once per flush.

use super::*;
use proptest::prelude::*;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

type Log = Rc<RefCell<Vec<(Vec<u8>, Option<Vec<u8>>)>>>;

#[derive(Clone, Default)]
struct Recorder {
    log: Log,
    /// Refuse sends from the nth on.
    fail_at: Option<usize>,
}

impl ChangelogSink for Recorder {
    fn send(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), KvError> {
        if self.fail_at.is_some_and(|n| self.log.borrow().len() >= n) {
            return Err(KvError::Changelog("the log is full".into()));
        }
        self.log.borrow_mut().push((key.to_vec(), value.map(<[u8]>::to_vec)));
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, Vec<u8>),
    Delete(u8),
    Get(u8),
    Scan(u8, u8),
    Flush,
    /// A hint that changes nothing the store answers.
    Prefetch(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        // Values from empty to past the inline size, so buffers grow and shrink.
        4 => (0u8..20, proptest::collection::vec(any::<u8>(), 0..40)).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (0u8..20).prop_map(Op::Delete),
        3 => (0u8..20).prop_map(Op::Get),
        2 => (0u8..24).prop_map(Op::Prefetch),
        1 => (0u8..20, 0u8..21).prop_map(|(a, b)| Op::Scan(a, b)),
        1 => Just(Op::Flush),
    ]
}

fn replay(log: &Log) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut state = BTreeMap::new();
    for (k, v) in log.borrow().iter() {
        match v {
            Some(v) => state.insert(k.clone(), v.clone()),
            None => state.remove(k),
        };
    }
    state
}

proptest! {
    #[test]
    fn behaves_like_a_map_and_the_changelog_replays_to_the_same_state(
        ops in proptest::collection::vec(op(), 1..300), limit in 1usize..6, logged in any::<bool>(),
    ) {
        let rec = Recorder::default();
        let sink: Option<Box<dyn ChangelogSink>> = logged.then(|| Box::new(rec.clone()) as _);
        let mut store = MemoryStore::new("s", MemoryEngine::new(), sink, limit);
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for op in &ops {
            match op {
                Op::Put(k, v) => { store.put(&[*k], v).unwrap(); model.insert(vec![*k], v.clone()); }
                Op::Delete(k) => { store.delete(&[*k]).unwrap(); model.remove(&vec![*k]); }
                Op::Prefetch(k) => store.prefetch(&[*k]),
                Op::Get(k) => {
                    let mut out = Vec::new();
                    let found = store.get(&[*k], &mut out).unwrap();
                    prop_assert_eq!(found.then_some(out), model.get(&vec![*k]).cloned());
                }
                Op::Scan(a, b) => {
                    let mut out = Vec::new();
                    store.scan(Bound::Included(&[*a]), Some(&[*b]), 100, &mut out).unwrap();
                    let got: Vec<_> = out.into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
                    let want: Vec<_> = model.range(vec![*a]..).take_while(|(k, _)| k[..] < [*b][..]).map(|(k, v)| (k.clone(), v.clone())).collect();
                    prop_assert_eq!(got, want);
                }
                Op::Flush => store.flush().unwrap(),
            }
            prop_assert_eq!(store.engine.len(), model.len());
        }
        store.flush().unwrap();
        if logged {
            prop_assert_eq!(replay(&rec.log), model.clone());
        }
        // Deleted entries were forgotten at the flush: only live keys stay indexed.
        prop_assert_eq!(store.engine.index.len(), model.len());
    }
}

#[test]
fn repeated_writes_to_a_key_reach_the_changelog_once_per_flush() {
    let rec = Recorder::default();
    let mut store = MemoryStore::new("s", MemoryEngine::new(), Some(Box::new(rec.clone())), 100);
    for i in 0..10u8 {
        store.put(b"hot", &[i]).unwrap();
    }
    store.put(b"gone", b"x").unwrap();
    store.delete(b"gone").unwrap();
    store.delete(b"never").unwrap();
    store.flush().unwrap();
    assert_eq!(*rec.log.borrow(), vec![(b"hot".to_vec(), Some(vec![9])), (b"gone".to_vec(), None)]);
    store.flush().unwrap();
    assert_eq!(rec.log.borrow().len(), 2, "a flush with nothing changed sends nothing");
}

#[test]
fn the_dirty_limit_sends_before_the_flush() {
    let rec = Recorder::default();
    let mut store = MemoryStore::new("s", MemoryEngine::new(), Some(Box::new(rec.clone())), 3);
    store.put(b"a", b"1").unwrap();
    store.put(b"b", b"1").unwrap();
    assert!(rec.log.borrow().is_empty());
    store.put(b"c", b"1").unwrap();
    assert_eq!(rec.log.borrow().len(), 3, "the third dirty key reached the limit");
}

#[test]
fn a_refused_changelog_write_makes_the_store_unusable() {
    let rec = Recorder { fail_at: Some(1), ..Recorder::default() };
    let mut store = MemoryStore::new("s", MemoryEngine::new(), Some(Box::new(rec.clone())), 100);
    store.put(b"a", b"1").unwrap();
    store.put(b"b", b"1").unwrap();
    let err = store.flush().unwrap_err().to_string();
    assert!(err.contains("the log is full"), "{err}");
    let again = store.get(b"a", &mut Vec::new()).unwrap_err().to_string();
    assert!(again.contains("unusable after an earlier failure"), "{again}");
}

#[test]
fn a_restored_engine_is_the_stores_starting_state() {
    let mut engine = MemoryEngine::new();
    engine.write_batch(&[(b"a", Some(b"1")), (b"b", Some(b"2")), (b"a", None)]).unwrap();
    let rec = Recorder::default();
    let mut store = MemoryStore::new("s", engine, Some(Box::new(rec.clone())), 100);
    let mut out = Vec::new();
    assert!(!store.get(b"a", &mut out).unwrap());
    assert!(store.get(b"b", &mut out).unwrap() && out == b"2");
    store.flush().unwrap();
    assert!(rec.log.borrow().is_empty(), "restored entries are not sent again");
}
