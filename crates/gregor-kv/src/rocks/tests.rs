//! The RocksDB engine against real databases: damaged files, deferred and
//! ingested writes in order, background snapshots, bulk loads, TTL stores.

use super::*;

fn small() -> RocksOptions {
    RocksOptions { block_cache_bytes: 1 << 20, write_buffer_bytes: 1 << 20, ..RocksOptions::default() }
}

/// A background snapshot, once the writer has room for it (the tests that
/// pause every writer thread run beside this one's).
fn started_snapshot(db: &mut RocksDbEngine, dir: &Path) -> crate::PendingSnapshot {
    loop {
        match db.start_snapshot(dir).unwrap() {
            Some(pending) => return pending,
            None => db.wait_applied().unwrap(),
        }
    }
}

/// A database with a few keys flushed to an SST file (a snapshot flushes).
fn written(dir: &Path) {
    let mut db = RocksDbEngine::open(dir, &small()).unwrap();
    db.write_batch(&[(b"a", Some(b"1")), (b"b", Some(b"2"))]).unwrap();
    db.snapshot(&dir.with_extension("snap")).unwrap();
}

#[test]
fn missing_or_damaged_files_are_typed_as_corrupt() {
    let base = tempfile::tempdir().unwrap();
    // An SST file the manifest names is gone.
    let dir = base.path().join("missing");
    written(&dir);
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "sst") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let err = RocksDbEngine::open(&dir, &small()).err().unwrap();
    assert!(err.is_corrupt(), "{err}");
    // CURRENT names a manifest that is not there.
    let dir = base.path().join("manifest");
    written(&dir);
    std::fs::write(dir.join("CURRENT"), "MANIFEST-999999\n").unwrap();
    let err = RocksDbEngine::open(&dir, &small()).err().unwrap();
    assert!(err.is_corrupt(), "{err}");
}

#[test]
fn deferred_writes_apply_in_order_and_scans_and_closing_wait_for_them() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("db");
    let mut db = RocksDbEngine::open(&dir, &small()).unwrap();
    let mut last = 0;
    for i in 0..200u32 {
        let key = format!("k{}", i % 10);
        last = db.write_batch_deferred(&[(key.as_bytes(), Some(&i.to_be_bytes()[..]))]).unwrap();
    }
    let mut out = Vec::new();
    db.scan(Bound::Unbounded, None, usize::MAX, &mut out).unwrap();
    assert_eq!(out.len(), 10);
    assert_eq!(&out[9].1[..], &199u32.to_be_bytes(), "the last write of k9 won");
    assert_eq!(db.applied(), last);
    // Sorted by key for RocksDB, but of two writes to one key the later wins.
    db.write_batch_deferred(&[(b"z", Some(b"1")), (b"k0", None), (b"z", Some(b"2")), (b"k0", Some(b"3"))]).unwrap();
    let mut v = Vec::new();
    db.wait_applied().unwrap();
    assert!(db.get(b"z", &mut v).unwrap() && v == b"2");
    assert!(db.get(b"k0", &mut v).unwrap() && v == b"3");
    db.write_batch_deferred(&[(b"late", Some(b"1"))]).unwrap();
    drop(db); // applies the queued batch before the database closes
    let mut db = RocksDbEngine::open(&dir, &small()).unwrap();
    assert!(db.get(b"late", &mut Vec::new()).unwrap());
}

/// Batches of at least `ingest_min_entries` go in as SST files, the
/// others through the memtable: mixed, over the same keys, with deletes,
/// the database and its snapshot hold what the writes in order give.
#[test]
fn ingested_and_inserted_batches_apply_in_order() {
    let base = tempfile::tempdir().unwrap();
    let o = RocksOptions { ingest_min_entries: 4, ..small() };
    let mut db = RocksDbEngine::open(&base.path().join("db"), &o).unwrap();
    let mut model = std::collections::BTreeMap::new();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..300u32 {
        let size = 1 + next() % 8;
        let writes: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..size)
            .map(|i| {
                let key = format!("k{:02}", next() % 20).into_bytes();
                let value = (next() % 5 != 0).then(|| format!("{round}.{i}").into_bytes());
                (key, value)
            })
            .collect();
        for (k, v) in &writes {
            match v {
                Some(v) => model.insert(k.clone(), v.clone()),
                None => model.remove(k),
            };
        }
        let batch: Vec<(&[u8], Option<&[u8]>)> = writes.iter().map(|(k, v)| (&k[..], v.as_deref())).collect();
        db.write_batch_deferred(&batch).unwrap();
        if round % 50 == 49 {
            db.wait_applied().unwrap();
            let mut v = Vec::new();
            for k in 0..20 {
                let key = format!("k{k:02}").into_bytes();
                let found = db.get(&key, &mut v).unwrap();
                assert_eq!(found.then(|| v.clone()), model.get(&key).cloned(), "{} after round {round}", k);
            }
        }
    }
    let read_all = |db: &mut RocksDbEngine| {
        let mut out = Vec::new();
        db.scan(Bound::Unbounded, None, usize::MAX, &mut out).unwrap();
        out.into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(read_all(&mut db), model);
    let snap = base.path().join("snap");
    db.snapshot(&snap).unwrap();
    drop(db);
    assert_eq!(read_all(&mut RocksDbEngine::open(&snap, &o).unwrap()), model);
    let left: Vec<_> = std::fs::read_dir(base.path().join("db"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("write-"))
        .collect();
    assert!(left.is_empty(), "ingested files left behind: {left:?}");
}

/// A background snapshot holds exactly the writes made before it started,
/// including staged and ingested ones, and none made after; the writes
/// after it still apply.
#[test]
fn a_background_snapshot_holds_the_writes_before_it_and_none_after() {
    let base = tempfile::tempdir().unwrap();
    let o = RocksOptions { ingest_min_entries: 3, ..small() };
    let mut db = RocksDbEngine::open(&base.path().join("db"), &o).unwrap();
    db.write_batch_deferred(&[(b"a", Some(b"1")), (b"b", Some(b"1")), (b"c", Some(b"1"))]).unwrap();
    db.flush().unwrap(); // handed over (ingested)
    db.write_batch_deferred(&[(b"a", Some(b"2")), (b"b", None)]).unwrap(); // still staged
    let snap = base.path().join("snap");
    let pending = started_snapshot(&mut db, &snap);
    db.write_batch_deferred(&[(b"a", Some(b"3")), (b"d", Some(b"3"))]).unwrap();
    db.flush().unwrap();
    pending.wait().unwrap();
    let read_all = |db: &mut RocksDbEngine| {
        let mut out = Vec::new();
        db.scan(Bound::Unbounded, None, usize::MAX, &mut out).unwrap();
        out.into_iter().map(|(k, v)| (String::from_utf8(k.to_vec()).unwrap(), v.to_vec())).collect::<Vec<_>>()
    };
    let own = |kv: &[(&str, &[u8])]| kv.iter().map(|(k, v)| ((*k).to_owned(), v.to_vec())).collect::<Vec<_>>();
    assert_eq!(read_all(&mut db), own(&[("a", b"3"), ("c", b"1"), ("d", b"3")]));
    drop(db);
    assert_eq!(read_all(&mut RocksDbEngine::open(&snap, &o).unwrap()), own(&[("a", b"2"), ("c", b"1")]));
}

/// A snapshot nobody waits for is background work and takes turns with
/// the other writers (here: another writer holds the turn); once someone
/// waits for it, it and the writes before it skip the turns. Waiting for
/// snapshots one by one while each writer still took its turn made a
/// commit of 4 snapshots take 100-200 ms.
#[test]
fn a_snapshot_waited_for_and_the_writes_before_it_do_not_wait_for_the_turn() {
    let base = tempfile::tempdir().unwrap();
    let mut db = RocksDbEngine::open(&base.path().join("db"), &small()).unwrap();
    let background = turns::Waiters::default();
    let held = turns::take(&background).expect("no other writer runs in this test");
    db.write_batch_deferred(&[(b"a", Some(b"1"))]).unwrap(); // staged, queued before the snapshot
    let mut pending = started_snapshot(&mut db, &base.path().join("snap"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(pending.outcome().is_none(), "taken in the background while another writer had the turn");
    let (done, taken) = std::sync::mpsc::channel();
    let waiting = std::thread::spawn(move || done.send(pending.wait()).unwrap());
    let outcome = taken.recv_timeout(std::time::Duration::from_secs(20));
    drop(held);
    waiting.join().unwrap();
    assert!(matches!(outcome, Ok(Ok(()))), "the snapshot waited for another writer's turn: {outcome:?}");
    let mut value = Vec::new();
    assert!(RocksDbEngine::open(&base.path().join("snap"), &small()).unwrap().get(b"a", &mut value).unwrap());
    assert_eq!(value, b"1");
}

/// While the writer thread cannot apply anything (here: the test pauses
/// it), commits keep their writes staged instead of waiting for room in its
/// queue; once it runs, everything applies in order.
#[test]
fn commits_do_not_wait_for_a_writer_that_is_behind() {
    let base = tempfile::tempdir().unwrap();
    let o = RocksOptions { ingest_min_entries: 2, ..small() };
    let mut db = RocksDbEngine::open(&base.path().join("db"), &o).unwrap();
    let paused = writer::PAUSE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let (done, finished) = std::sync::mpsc::channel();
    let committing = std::thread::spawn(move || {
        for round in 0..8u8 {
            db.write_batch_deferred(&[(b"a", Some(&[round])), (&[b'k', round], Some(b"v"))]).unwrap();
            db.flush().unwrap();
        }
        done.send(()).unwrap();
        db
    });
    let waited = finished.recv_timeout(std::time::Duration::from_secs(20));
    drop(paused);
    assert!(waited.is_ok(), "a commit waited for the writer thread");
    let mut db = committing.join().unwrap();
    db.wait_applied().unwrap();
    let mut out = Vec::new();
    db.scan(Bound::Unbounded, None, usize::MAX, &mut out).unwrap();
    assert_eq!(out.len(), 9);
    assert_eq!((&out[0].0[..], &out[0].1[..]), (&b"a"[..], &[7u8][..]), "the last write wins");
}

/// A snapshot is not started behind a writer whose queue is full (here:
/// the test pauses it): `start_snapshot` returns at once and leaves
/// nothing behind; once the writer catches up, a snapshot holds every
/// write made before it.
#[test]
fn a_snapshot_is_put_off_while_the_writer_is_behind() {
    let base = tempfile::tempdir().unwrap();
    let o = RocksOptions { ingest_min_entries: 2, ..small() };
    let mut db = RocksDbEngine::open(&base.path().join("db"), &o).unwrap();
    let snap = base.path().join("snap");
    let paused = writer::PAUSE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let (done, finished) = std::sync::mpsc::channel();
    let committing = {
        let snap = snap.clone();
        std::thread::spawn(move || {
            for round in 0..4u8 {
                db.write_batch_deferred(&[(&[b'k', round], Some(b"v"))]).unwrap();
                db.flush().unwrap();
            }
            let started = db.start_snapshot(&snap).unwrap().is_some();
            // Staged writes of the hand-over size (8 entries here) that the
            // full queue refused.
            for k in 0..8u8 {
                db.write_batch_deferred(&[(&[b'x', k], Some(b"v"))]).unwrap();
            }
            let behind = db.behind();
            done.send(()).unwrap();
            (db, started, behind)
        })
    };
    let waited = finished.recv_timeout(std::time::Duration::from_secs(20));
    drop(paused);
    assert!(waited.is_ok(), "starting a snapshot waited for the writer thread");
    let (mut db, started, behind) = committing.join().unwrap();
    assert!(behind, "staged writes past the hand-over size say the writer is behind");
    assert!(!started, "a snapshot was queued behind a full queue");
    db.wait_applied().unwrap();
    assert!(!db.behind());
    assert!(!snap.exists(), "a put-off snapshot wrote {}", snap.display());
    started_snapshot(&mut db, &snap).wait().unwrap();
    drop(db);
    let mut out = Vec::new();
    RocksDbEngine::open(&snap, &o).unwrap().scan(Bound::Unbounded, None, usize::MAX, &mut out).unwrap();
    assert_eq!(out.len(), 12, "the snapshot holds the writes before it");
}

#[test]
fn other_failures_are_not_corruption() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("db");
    let _open = RocksDbEngine::open(&dir, &small()).unwrap();
    // RocksDB's own lock is held by the open database.
    let err = RocksDbEngine::open(&dir, &small()).err().unwrap();
    assert!(!err.is_corrupt() && matches!(err, KvError::Engine { .. }), "{err}");
    let err =
        RocksDbEngine::open(&dir.join("x"), &RocksOptions { compression: "zip".into(), ..small() }).err().unwrap();
    assert!(matches!(err, KvError::InvalidOption(_)), "{err}");
}

/// A TTL store's values carry RocksDB's timestamps, which ingested SST
/// files would lack: its bulk load goes through memtables and reads
/// back intact.
#[test]
fn a_bulk_load_of_a_ttl_store_reads_back_intact() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("db");
    let o = RocksOptions { ttl: Some(Duration::from_secs(3600)), ..small() };
    let mut db = RocksDbEngine::open_bulk_load(&dir, &o).unwrap();
    assert!(db.bulk.is_none(), "no SST runs with a TTL");
    db.write_batch_deferred(&[(b"a", Some(b"12345678")), (b"b", Some(b"x"))]).unwrap();
    let mut db = db.end_bulk_load(&o).unwrap();
    let mut v = Vec::new();
    assert!(db.get(b"a", &mut v).unwrap() && v == b"12345678");
    assert!(db.get(b"b", &mut v).unwrap() && v == b"x");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 32, ..Default::default() })]

    /// A bulk load (runs of a few hundred bytes here, so many SST files,
    /// over existing data) ends with what the same writes applied in
    /// order give: the last write of each key wins, deletes delete.
    #[test]
    fn a_bulk_load_equals_the_writes_applied_in_order(
        before in proptest::collection::vec((0u8..40, proptest::option::of(0u8..9)), 0..40),
        writes in proptest::collection::vec((0u8..40, proptest::option::of(0u8..9)), 0..400),
        batch in 1usize..50,
    ) {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("db");
        let mut model = std::collections::BTreeMap::new();
        // 1 to 20 bytes, some ending in zeros: across the 16-byte prefix
        // the runs are sorted by.
        let key = |k: u8| {
            let mut v = vec![b'k'; usize::from(k % 20)];
            v.push(k % 3);
            v
        };
        let mut db = RocksDbEngine::open(&dir, &small()).unwrap();
        for (k, v) in &before {
            let v = v.map(|v| vec![v; 3]);
            db.write_batch(&[(&key(*k), v.as_deref())]).unwrap();
            match v { Some(v) => model.insert(key(*k), v), None => model.remove(&key(*k)) };
        }
        drop(db);
        let mut db = RocksDbEngine::open_bulk_load(&dir, &small()).unwrap();
        if let Some(b) = &mut db.bulk {
            b.run_bytes = 300;
        }
        for chunk in writes.chunks(batch) {
            let owned: Vec<(Vec<u8>, Option<Vec<u8>>)> = chunk.iter().map(|(k, v)| (key(*k), v.map(|v| vec![v; 3]))).collect();
            let slices: Vec<(&[u8], Option<&[u8]>)> = owned.iter().map(|(k, v)| (&k[..], v.as_deref())).collect();
            db.write_batch_deferred(&slices).unwrap();
            for (k, v) in owned {
                match v { Some(v) => model.insert(k, v), None => model.remove(&k) };
            }
        }
        db.wait_applied().unwrap();
        proptest::prop_assert_eq!(db.applied(), db.submitted, "waited: every batch applied");
        let mut db = db.end_bulk_load(&small()).unwrap();
        let mut out = Vec::new();
        db.scan(Bound::Unbounded, None, usize::MAX, &mut out).unwrap();
        let got: Vec<(Vec<u8>, Vec<u8>)> = out.into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
        let want: Vec<(Vec<u8>, Vec<u8>)> = model.into_iter().collect();
        proptest::prop_assert_eq!(got, want);
    }
}
