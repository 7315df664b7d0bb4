//! Cost of the store layers for a counting workload, without any streaming:
//! `cargo bench -p gregor-kv`. The in-memory store (one layer, changelog
//! sent at the flush), and the write-back cache over the changelog layer
//! over the memory engine (the cache's own cost, as it sits over RocksDB).

use bytes::Bytes;
use gregor_api::{KeyValueStore, RawStore, Serdes, Store};
use gregor_kv::{CacheLimits, CachedStore, ChangelogSink, Engine, KvError, LoggedEngine, MemoryEngine, MemoryStore};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

struct Discard(u64);

impl ChangelogSink for Discard {
    fn send(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), KvError> {
        self.0 += (key.len() + value.map_or(0, <[u8]>::len)) as u64;
        Ok(())
    }
}

/// `cache: None` is the in-memory store; `Some(n)` the cache of `n` entries.
fn run(label: &str, keys: u64, ops: u64, cache: Option<usize>) {
    let raw: Rc<RefCell<dyn RawStore>> = match cache {
        None => Rc::new(RefCell::new(MemoryStore::new("s", MemoryEngine::new(), Some(Box::new(Discard(0))), 10_000))),
        Some(entries) => {
            let engine: Box<dyn Engine> = Box::new(LoggedEngine::new(MemoryEngine::new(), Box::new(Discard(0))));
            let limits = CacheLimits { entries, bytes: usize::MAX, dirty: 10_000 };
            Rc::new(RefCell::new(CachedStore::new("s", engine, limits)))
        }
    };
    let serdes = Serdes::new();
    let store: Store<Bytes, i64> =
        Store::new("s", raw.clone(), serdes.resolve("bytes").unwrap(), serdes.resolve("long").unwrap());
    let key_strings: Vec<Bytes> = (0..keys).map(|k| Bytes::from(format!("key-{k}"))).collect();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let start = Instant::now();
    for _ in 0..ops {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let k = &key_strings[(rng % keys) as usize];
        let n = store.get(k).unwrap().unwrap_or(0) + 1;
        store.put(k, &n).unwrap();
    }
    raw.borrow_mut().flush().unwrap();
    let secs = start.elapsed().as_secs_f64();
    println!("{label:<40} {:>12.0} increments/s ({:.0} ns each)", ops as f64 / secs, secs * 1e9 / ops as f64);
}

fn main() {
    for keys in [100_000, 1_000_000] {
        run(&format!("{keys} keys, in-memory store"), keys, 2_000_000, None);
    }
    for (keys, cache) in [(100_000, 1000), (100_000, 0), (100_000, 200_000), (1_000_000, 1000), (1_000_000, 2_000_000)]
    {
        run(&format!("{keys} keys, cache {cache} entries"), keys, 2_000_000, Some(cache));
    }
}
