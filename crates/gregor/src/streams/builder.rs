//! [`StreamApp`]: what a Streams API job's `describe` function builds, and
//! how that description becomes config (inputs, intermediate streams,
//! stores) before the job's config is validated.
//!
//! Nothing here runs per message; it must never touch a system or a store.

use super::graph::{Factory, Graph, Init, NodeId, Push, Value};
use super::source::SourceSpec;
use gregor_api::{Config, SystemStream, TaskError};
use std::any::TypeId;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;

/// A store an operator owns.
#[derive(Debug, Clone)]
pub(crate) struct StoreDecl {
    pub name: String,
    pub key_serde: &'static str,
    pub msg_serde: &'static str,
    /// `false`: an in-memory store with no changelog (a table reloaded from
    /// its compacted stream at every start).
    pub logged: bool,
    /// A few entries per task: kept in memory (restored from the changelog
    /// at start) rather than in a RocksDB instance of its own, whose
    /// opening, files and threads would cost more than its data.
    pub small: bool,
}

/// What the description names, beyond the operators.
#[derive(Default)]
pub(crate) struct Builder {
    pub graph: Graph,
    pub app: String,
    pub config: Config,
    pub read_keys: Vec<String>,
    pub errors: Vec<String>,
    pub sources: Vec<SourceSpec>,
    /// Output stream ids, with the serdes their types default to.
    pub outputs: Vec<(String, &'static str, &'static str)>,
    pub stores: Vec<StoreDecl>,
    pub counters: HashMap<&'static str, usize>,
}

impl Builder {
    pub(crate) fn add_node<K: Value, V: Value>(
        &mut self,
        op: &'static str,
        name: Option<&str>,
        inputs: Vec<NodeId>,
        detail: String,
    ) -> NodeId {
        let name = match name {
            Some(n) => {
                if !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') || n.is_empty() {
                    self.errors.push(format!(
                        "operator name '{n}' ({op}): use letters, digits, '-' and '_' only (it names streams and stores)"
                    ));
                }
                if self.graph.nodes.iter().any(|x| x.name == n) {
                    self.errors.push(format!(
                        "two operators are named '{n}': names identify state and intermediate streams, so each must be unique"
                    ));
                }
                n.to_owned()
            }
            None => {
                let c = self.counters.entry(op).or_default();
                *c += 1;
                format!("{op}-{c}")
            }
        };
        let outs: Vec<Factory<K, V>> = Vec::new();
        self.graph.nodes.push(super::graph::Node {
            name,
            op,
            inputs,
            detail,
            stores: Vec::new(),
            outs: Box::new(outs),
        });
        self.graph.nodes.len() - 1
    }

    pub(crate) fn add_store(&mut self, node: NodeId, store: StoreDecl) {
        self.graph.nodes[node].stores.push(store.name.clone());
        self.stores.push(store);
    }
}

/// The serde a type defaults to when config names none.
pub(crate) fn default_serde<T: 'static>() -> &'static str {
    let t = TypeId::of::<T>();
    if t == TypeId::of::<String>() {
        "string"
    } else if t == TypeId::of::<i64>() {
        "long"
    } else if t == TypeId::of::<i32>() {
        "integer"
    } else if t == TypeId::of::<f64>() {
        "double"
    } else if t == TypeId::of::<bytes::Bytes>() || t == TypeId::of::<Vec<u8>>() {
        "bytes"
    } else {
        "json"
    }
}

/// Whether `T` is `()`: a stream without keys.
pub(crate) fn is_unit<T: 'static>() -> bool {
    TypeId::of::<T>() == TypeId::of::<()>()
}

/// A Streams API application under construction: inputs, outputs and the
/// operators between them. Handed to the `describe` function given to
/// [`super::app`].
pub struct StreamApp {
    pub(crate) b: Rc<RefCell<Builder>>,
}

/// A typed output stream, by stream id (`streams.<id>.*` maps it to a
/// system and physical stream; serdes default to the types' own).
pub struct Output<K, V> {
    pub(crate) id: String,
    _t: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for Output<K, V> {
    fn clone(&self) -> Self {
        Output { id: self.id.clone(), _t: PhantomData }
    }
}

/// A stream of records of key type `K` and value type `V` in the
/// description; its methods add operators.
pub struct Stream<K, V> {
    pub(crate) b: Rc<RefCell<Builder>>,
    pub(crate) node: NodeId,
    _t: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for Stream<K, V> {
    fn clone(&self) -> Self {
        Stream { b: self.b.clone(), node: self.node, _t: PhantomData }
    }
}

impl<K: Value, V: Value> Stream<K, V> {
    pub(crate) fn at(b: &Rc<RefCell<Builder>>, node: NodeId) -> Self {
        Stream { b: b.clone(), node, _t: PhantomData }
    }

    /// Adds an operator consuming this stream and producing `Stream<K2, V2>`:
    /// `make` builds the operator of one task around its consumers.
    pub(crate) fn then<K2: Value, V2: Value>(
        &self,
        op: &'static str,
        name: Option<&str>,
        detail: String,
        make: impl Fn(&mut Init<'_, '_>, Box<dyn Push<K2, V2>>) -> Result<Box<dyn Push<K, V>>, TaskError>
        + Send
        + Sync
        + 'static,
    ) -> Stream<K2, V2> {
        let mut b = self.b.borrow_mut();
        let id = b.add_node::<K2, V2>(op, name, vec![self.node], detail);
        let factory: Factory<K, V> = Arc::new(move |init| {
            let next = init.downstream::<K2, V2>(id)?;
            make(init, next)
        });
        b.graph.add_out(self.node, factory);
        drop(b);
        Stream::at(&self.b, id)
    }

    /// Attaches `factory` as one more consumer of this stream.
    pub(crate) fn attach(&self, factory: Factory<K, V>) {
        self.b.borrow_mut().graph.add_out(self.node, factory);
    }
}

impl StreamApp {
    /// The job's configuration (reads through [`StreamApp::setting`] also
    /// declare the key as the job's own).
    pub fn config(&self) -> Config {
        self.b.borrow().config.clone()
    }

    /// The application's name.
    pub fn name(&self) -> String {
        self.b.borrow().app.clone()
    }

    /// A setting of the job's own (accepted by config validation).
    pub fn setting(&self, key: &str) -> Option<String> {
        let mut b = self.b.borrow_mut();
        b.read_keys.push(key.to_owned());
        b.config.get(key).map(str::to_owned)
    }

    /// A duration setting of the job's own, in milliseconds.
    ///
    /// # Errors
    /// A value that is not a non-negative number of milliseconds, naming the key.
    pub fn setting_ms(&self, key: &str, default: std::time::Duration) -> Result<std::time::Duration, TaskError> {
        let mut b = self.b.borrow_mut();
        b.read_keys.push(key.to_owned());
        Ok(b.config.get_millis(key, default)?)
    }

    /// An input stream, by stream id, whose keys decode as `K` and values
    /// as `V` (with `streams.<id>.samza.key.serde` and `.msg.serde`, which
    /// default to the types' own: `string`, `long`, ... else `json`).
    /// `K = ()` ignores keys. Tombstones (no value) are skipped.
    pub fn input<K: Value, V: Value>(&mut self, id: &str) -> Stream<K, V> {
        let node = self.b.borrow_mut().add_node::<K, V>("input", Some(id), Vec::new(), format!("stream {id}"));
        let spec = SourceSpec::input::<K, V>(id, node);
        self.b.borrow_mut().sources.push(spec);
        Stream::at(&self.b, node)
    }

    /// An output stream, by stream id.
    pub fn output<K: Value, V: Value>(&mut self, id: &str) -> Output<K, V> {
        let mut b = self.b.borrow_mut();
        if !b.outputs.iter().any(|(o, _, _)| o == id) {
            let key = if is_unit::<K>() { "json" } else { default_serde::<K>() };
            b.outputs.push((id.to_owned(), key, default_serde::<V>()));
        }
        Output { id: id.to_owned(), _t: PhantomData }
    }
}

/// What the description adds to the user's config, and the keys it read.
pub(crate) struct Expansion {
    pub keys: BTreeMap<String, String>,
    pub streams: HashMap<String, SystemStream>,
}

/// The system of stream id `id`: `streams.<id>.samza.system`, else
/// `job.default.system`, else the only system configured.
fn system_of(config: &Config, id: &str) -> Result<String, String> {
    if let Some(s) = config.get(&format!("streams.{id}.samza.system")) {
        return Ok(s.to_owned());
    }
    if let Some(s) = config.get("job.default.system") {
        return Ok(s.to_owned());
    }
    let systems: Vec<&str> = config.with_prefix("systems.").filter_map(|(k, _)| k.strip_suffix(".factory")).collect();
    match systems.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => Err(format!(
            "stream '{id}': no system is configured (add systems.<name>.factory, e.g. systems.log.factory=log)"
        )),
        _ => Err(format!(
            "stream '{id}': set streams.{id}.samza.system or job.default.system (systems {} are configured)",
            systems.join(", ")
        )),
    }
}

/// Computes the generated config. User-set keys always win.
pub(crate) fn expand(b: &Builder) -> Result<Expansion, String> {
    let c = &b.config;
    if let Some(e) = b.errors.first() {
        return Err(e.clone());
    }
    if c.get("task.inputs").is_some() {
        return Err(
            "task.inputs: a Streams API job lists its inputs in code (app.input, app.table, partition_by); remove task.inputs from the config"
                .into(),
        );
    }
    if b.sources.is_empty() {
        return Err("the application has no input: call app.input or app.table in describe".into());
    }
    let job = c.get("job.name").unwrap_or(&b.app).to_owned();
    let mut keys = BTreeMap::new();
    let mut set = |k: String, v: String| {
        if c.get(&k).is_none() {
            keys.insert(k, v);
        }
    };
    let mut streams = HashMap::new();
    let mut inputs = Vec::new();
    let mut resolve = |id: &str, set: &mut dyn FnMut(String, String)| -> Result<SystemStream, String> {
        let system = system_of(c, id)?;
        let physical = c.get(&format!("streams.{id}.samza.physical.name")).unwrap_or(id).to_owned();
        set(format!("streams.{id}.samza.system"), system.clone());
        set(format!("streams.{id}.samza.physical.name"), physical.clone());
        let s = SystemStream::new(&system, &physical);
        streams.insert(id.to_owned(), s.clone());
        Ok(s)
    };
    for s in &b.sources {
        let id = s.stream_id(&job);
        let stream = resolve(&id, &mut set)?;
        inputs.push(stream.to_string());
        set(format!("streams.{id}.samza.key.serde"), s.key_serde.to_owned());
        set(format!("streams.{id}.samza.msg.serde"), s.msg_serde.to_owned());
        for (k, v) in s.extra_keys() {
            set(format!("streams.{id}.{k}"), v.to_owned());
        }
    }
    for (id, key, msg) in &b.outputs {
        resolve(id, &mut set)?;
        set(format!("streams.{id}.samza.key.serde"), (*key).to_owned());
        set(format!("streams.{id}.samza.msg.serde"), (*msg).to_owned());
    }
    // Changelogs go where the first input is (or job.default.system).
    let store_system = match c.get("job.default.system") {
        Some(s) => s.to_owned(),
        None => system_of(c, &b.sources[0].stream_id(&job))?,
    };
    for s in &b.stores {
        set(format!("stores.{}.factory", s.name), if s.logged && !s.small { "rocksdb" } else { "memory" }.to_owned());
        set(format!("stores.{}.key.serde", s.name), s.key_serde.to_owned());
        set(format!("stores.{}.msg.serde", s.name), s.msg_serde.to_owned());
        if s.logged {
            set(format!("stores.{}.changelog", s.name), format!("{store_system}.{job}-{}-changelog", s.name));
        }
    }
    set("task.inputs".into(), inputs.join(","));
    // Processing-time duties (idle inputs, early firings, watermarks sent
    // downstream) run on the window timer.
    set("task.window.ms".into(), "100".into());
    Ok(Expansion { keys, streams })
}
