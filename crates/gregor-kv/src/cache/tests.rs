//! The cached store behaves like a plain map, whatever the cache size, and
//! coalesces writes before the changelog.

use super::*;
use crate::{ChangelogSink, LoggedEngine, MemoryEngine};
use proptest::prelude::*;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

#[derive(Clone, Default)]
struct Recorder(Rc<RefCell<Vec<(Vec<u8>, Option<Vec<u8>>)>>>);

impl ChangelogSink for Recorder {
    fn send(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), KvError> {
        self.0.borrow_mut().push((key.to_vec(), value.map(<[u8]>::to_vec)));
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u8),
    Delete(u8),
    Get(u8),
    Scan(u8, u8),
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..20, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        1 => (0u8..20).prop_map(Op::Delete),
        3 => (0u8..20).prop_map(Op::Get),
        1 => (0u8..20, 0u8..21).prop_map(|(a, b)| Op::Scan(a, b)),
        1 => Just(Op::Flush),
    ]
}

proptest! {
    #[test]
    fn behaves_like_a_map_and_the_changelog_replays_to_the_same_state(ops in proptest::collection::vec(op(), 1..200), cache in 0usize..8, batch in 1usize..6) {
        let log = Recorder::default();
        let engine = LoggedEngine::new(MemoryEngine::new(), Box::new(log.clone()));
        let mut store = CachedStore::new("s", engine, cache, batch);
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for op in &ops {
            match op {
                Op::Put(k, v) => { store.put(&[*k], &[*v]).unwrap(); model.insert(vec![*k], vec![*v]); }
                Op::Delete(k) => { store.delete(&[*k]).unwrap(); model.remove(&vec![*k]); }
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
        }
        store.flush().unwrap();
        let mut replayed: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for (k, v) in log.0.borrow().iter() {
            match v { Some(v) => { replayed.insert(k.clone(), v.clone()); } None => { replayed.remove(k); } }
        }
        prop_assert_eq!(replayed, model);
    }
}

#[test]
fn repeated_writes_to_a_key_reach_the_changelog_once_per_flush() {
    let log = Recorder::default();
    let engine = LoggedEngine::new(MemoryEngine::new(), Box::new(log.clone()));
    let mut store = CachedStore::new("s", engine, 100, 50);
    for i in 0..10u8 {
        store.put(b"hot", &[i]).unwrap();
    }
    store.flush().unwrap();
    assert_eq!(*log.0.borrow(), vec![(b"hot".to_vec(), Some(vec![9]))]);
}
