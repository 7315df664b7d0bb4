//! Aggregations per key and tables: state in stores with changelogs, named
//! after their operators so that a restart (or a new build that keeps the
//! names) finds it.
//!
//! Aggregations read and write their store once per record through the
//! store's write-back cache; they must never keep a second copy in memory.

use super::builder::{StoreDecl, Stream, StreamApp, default_serde};
use super::graph::{Cx, NodeId, Push, Value};
use super::source::SourceSpec;
use gregor_api::{KeyValueStore, Store, TaskError};
use std::marker::PhantomData;
use std::sync::Arc;

/// The latest value per key, in a store of the job: from
/// [`Stream::to_table`] or loaded from a compacted stream with
/// [`StreamApp::table`]. Streams look it up with [`Stream::join_table`];
/// lookups see the table of the same task, so the stream and the table
/// must be partitioned alike (the same key, the same partition count).
pub struct Table<K, V> {
    pub(crate) store: String,
    /// The node whose records fill it (its sources must be partitioned as
    /// the streams that look it up).
    node: NodeId,
    _t: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for Table<K, V> {
    fn clone(&self) -> Self {
        Table { store: self.store.clone(), node: self.node, _t: PhantomData }
    }
}

struct Aggregate<K, V, A> {
    store: Store<K, A>,
    init: Arc<dyn Fn() -> A + Send + Sync>,
    fold: Arc<dyn Fn(&K, V, A) -> A + Send + Sync>,
    next: Box<dyn Push<K, A>>,
}

impl<K: Value, V: Value, A: Value> Push<K, V> for Aggregate<K, V, A> {
    fn push(&mut self, cx: &mut Cx<'_>, key: K, value: V, ts: i64) -> Result<(), TaskError> {
        let old = self.store.get(&key)?.unwrap_or_else(|| (self.init)());
        let new = (self.fold)(&key, value, old);
        self.store.put(&key, &new)?;
        self.next.push(cx, key, new, ts)
    }
    fn prefetch(&mut self, key: &[u8]) -> bool {
        self.store.prefetch_raw(key);
        true
    }
    fn watermark(&mut self, cx: &mut Cx<'_>, wm: i64) -> Result<(), TaskError> {
        self.next.watermark(cx, wm)
    }
}

struct ToTable<K, V> {
    store: Store<K, V>,
}

impl<K: Value, V: Value> Push<K, V> for ToTable<K, V> {
    fn push(&mut self, _: &mut Cx<'_>, key: K, value: V, _: i64) -> Result<(), TaskError> {
        Ok(self.store.put(&key, &value)?)
    }
    fn prefetch(&mut self, key: &[u8]) -> bool {
        self.store.prefetch_raw(key);
        true
    }
    fn watermark(&mut self, _: &mut Cx<'_>, _: i64) -> Result<(), TaskError> {
        Ok(())
    }
}

struct TableJoin<K, V, T, R> {
    table: Store<K, T>,
    f: Arc<dyn Fn(&K, V, Option<T>) -> Option<R> + Send + Sync>,
    next: Box<dyn Push<K, R>>,
}

impl<K: Value, V: Value, T: Value, R: Value> Push<K, V> for TableJoin<K, V, T, R> {
    fn push(&mut self, cx: &mut Cx<'_>, key: K, value: V, ts: i64) -> Result<(), TaskError> {
        let found = self.table.get(&key)?;
        match (self.f)(&key, value, found) {
            Some(r) => self.next.push(cx, key, r, ts),
            None => Ok(()),
        }
    }
    fn prefetch(&mut self, key: &[u8]) -> bool {
        self.table.prefetch_raw(key);
        true
    }
    fn watermark(&mut self, cx: &mut Cx<'_>, wm: i64) -> Result<(), TaskError> {
        self.next.watermark(cx, wm)
    }
}

impl<K: Value, V: Value> Stream<K, V> {
    /// Folds the records of each key into an aggregate, kept in the store
    /// `name` (with a changelog), and emits every new aggregate, keyed.
    /// Records must be partitioned by key ([`Stream::partition_by`]) unless
    /// the input already is.
    pub fn aggregate<A: Value>(
        &self,
        name: &str,
        init: impl Fn() -> A + Send + Sync + 'static,
        fold: impl Fn(&K, V, A) -> A + Send + Sync + 'static,
    ) -> Stream<K, A> {
        let init: Arc<dyn Fn() -> A + Send + Sync> = Arc::new(init);
        let fold: Arc<dyn Fn(&K, V, A) -> A + Send + Sync> = Arc::new(fold);
        let store = name.to_owned();
        let out = self.then("aggregate", Some(name), format!("store {name}"), move |init_, next| {
            let store: Store<K, A> = init_.ctx.store(&store)?;
            Ok(Box::new(Aggregate { store, init: init.clone(), fold: fold.clone(), next }))
        });
        let decl = StoreDecl {
            name: name.to_owned(),
            key_serde: default_serde::<K>(),
            msg_serde: default_serde::<A>(),
            logged: true,
            small: false,
        };
        self.b.borrow_mut().add_store(out.node, decl);
        out
    }

    /// Counts the records of each key (see [`Stream::aggregate`]).
    pub fn count(&self, name: &str) -> Stream<K, i64> {
        self.aggregate(name, || 0_i64, |_, _, n| n + 1)
    }

    /// Combines the values of each key with `f` (the first value as is).
    pub fn reduce(&self, name: &str, f: impl Fn(V, V) -> V + Send + Sync + 'static) -> Stream<K, V> {
        let f = Arc::new(f);
        let out = self.map_values(Some).aggregate(
            name,
            || None::<V>,
            move |_, v, acc| match (acc, v) {
                (Some(old), Some(v)) => Some(f(old, v)),
                (None, v) => v,
                (old, None) => old,
            },
        );
        out.flat_map_values(|v| v)
    }

    /// Keeps the latest value per key in the store `name` (with a changelog).
    pub fn to_table(&self, name: &str) -> Table<K, V> {
        let store = name.to_owned();
        let out: Stream<K, V> = self.then("to_table", Some(name), format!("store {name}"), move |init, _| {
            Ok(Box::new(ToTable { store: init.ctx.store(&store)? }))
        });
        let decl = StoreDecl {
            name: name.to_owned(),
            key_serde: default_serde::<K>(),
            msg_serde: default_serde::<V>(),
            logged: true,
            small: false,
        };
        self.b.borrow_mut().add_store(out.node, decl);
        Table { store: name.to_owned(), node: self.node, _t: PhantomData }
    }

    /// Looks every record's key up in `table` (this task's part of it) and
    /// emits what `f(key, value, table value or None)` returns: `None` drops
    /// the record (an inner join), a value for `None` makes a left join.
    pub fn join_table<T: Value, R: Value>(
        &self,
        table: &Table<K, T>,
        f: impl Fn(&K, V, Option<T>) -> Option<R> + Send + Sync + 'static,
    ) -> Stream<K, R> {
        let f: Arc<dyn Fn(&K, V, Option<T>) -> Option<R> + Send + Sync> = Arc::new(f);
        let store = table.store.clone();
        self.b.borrow_mut().graph.co_partitioned.push((
            format!("join_table with table '{store}'"),
            self.node,
            table.node,
        ));
        self.then("join_table", None, format!("table {store}"), move |init, next| {
            Ok(Box::new(TableJoin { table: init.ctx.store(&store)?, f: f.clone(), next }))
        })
    }
}

impl StreamApp {
    /// A table loaded from the compacted stream with id `id` (key: the
    /// table's key, value: its latest value, tombstones delete). The stream
    /// is read to its end before anything else at every start (a bootstrap
    /// input) into an in-memory store named `id`, so the table is complete
    /// before the first lookup; it has no changelog of its own.
    pub fn table<K: Value, V: Value>(&mut self, id: &str) -> Table<K, V> {
        let mut b = self.b.borrow_mut();
        let node = b.add_node::<K, V>("table", Some(id), Vec::new(), format!("stream {id} (bootstrap)"));
        let spec = SourceSpec::table::<K, V>(id, node, id.to_owned());
        let decl = StoreDecl {
            name: id.to_owned(),
            key_serde: spec.key_serde,
            msg_serde: spec.msg_serde,
            logged: false,
            small: false,
        };
        b.sources.push(spec);
        b.add_store(node, decl);
        Table { store: id.to_owned(), node, _t: PhantomData }
    }
}
