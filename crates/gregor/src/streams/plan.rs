//! `--plan`: what a Streams API job would run (operators, tasks,
//! intermediate streams, stores), as text or as JSON (format version 1).
//!
//! Rendering is a pure function of the description, the validated config
//! and the partition counts the systems reported; it must never create or
//! change anything.

use super::source::SourceKind;
use super::task::Frozen;
use gregor_api::SystemStream;
use gregor_runtime::JobConfig;
use gregor_runtime::job_config::{Grouper, StoreEngine};
use serde_json::json;
use std::collections::BTreeMap;

/// See the module docs.
pub(crate) fn render(frozen: &Frozen, job: &JobConfig, counts: &BTreeMap<SystemStream, u32>, format: &str) -> String {
    let count = |s: &SystemStream| -> Option<u32> {
        counts.get(s).copied().or_else(|| job.stream_partitions(s).ok().flatten())
    };
    let inputs: Vec<(String, SystemStream, SourceKind)> = frozen
        .sources
        .iter()
        .map(|s| {
            let id = s.stream_id(&frozen.job);
            let stream = frozen.graph.streams.get(&id).cloned().unwrap_or_else(|| SystemStream::new("?", &id));
            (id, stream, s.kind)
        })
        .collect();
    let largest =
        inputs.iter().filter(|(_, _, k)| *k != SourceKind::Intermediate).filter_map(|(_, s, _)| count(s)).max();
    let partitions = |s: &SystemStream, kind: SourceKind| -> Option<u32> {
        count(s).or_else(|| match kind {
            SourceKind::Intermediate => {
                job.raw.get_parsed::<u32>("job.intermediate.stream.partitions", "partitions").ok().flatten().or(largest)
            }
            _ => None,
        })
    };
    let tasks: u32 = match job.grouper {
        Grouper::Partition => inputs.iter().filter_map(|(_, s, k)| partitions(s, *k)).max().unwrap_or(0),
        Grouper::Ssp => inputs.iter().filter_map(|(_, s, k)| partitions(s, *k)).sum(),
    };
    let operators: Vec<serde_json::Value> = frozen
        .graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let next: Vec<&str> =
                frozen.graph.nodes.iter().filter(|m| m.inputs.contains(&i)).map(|m| m.name.as_str()).collect();
            let inputs: Vec<&str> = n.inputs.iter().map(|&j| frozen.graph.nodes[j].name.as_str()).collect();
            json!({"name": n.name, "op": n.op, "inputs": inputs, "next": next, "detail": n.detail, "stores": n.stores})
        })
        .collect();
    let streams: Vec<serde_json::Value> = inputs
        .iter()
        .map(|(id, s, k)| {
            let kind = match k {
                SourceKind::Input => "input",
                SourceKind::Intermediate => "intermediate",
                SourceKind::Table => "table (bootstrap)",
            };
            json!({"id": id, "stream": s.to_string(), "kind": kind, "partitions": partitions(s, *k)})
        })
        .collect();
    let stores: Vec<serde_json::Value> = job
        .stores
        .iter()
        .map(|s| {
            let engine = match s.engine {
                StoreEngine::Memory => "memory",
                StoreEngine::RocksDb(_) => "rocksdb",
            };
            json!({"name": s.name, "engine": engine, "changelog": s.changelog.as_ref().map(ToString::to_string)})
        })
        .collect();
    let plan = json!({
        "version": 1,
        "job": job.name,
        "job_id": job.id,
        "tasks": tasks,
        "containers": job.container_count,
        "streams": streams,
        "operators": operators,
        "stores": stores,
    });
    if format == "json" {
        return format!("{}\n", serde_json::to_string_pretty(&plan).unwrap_or_default());
    }
    let mut out = format!(
        "job {} (id {}): {} task(s) on {} container(s)\n\nstreams:\n",
        job.name, job.id, tasks, job.container_count
    );
    for s in &streams {
        let p = s["partitions"].as_u64().map_or("? partitions".to_owned(), |n| format!("{n} partitions"));
        out.push_str(&format!(
            "  {:<28} {} ({}, {p})\n",
            s["id"].as_str().unwrap_or(""),
            s["stream"].as_str().unwrap_or(""),
            s["kind"].as_str().unwrap_or("")
        ));
    }
    out.push_str("\noperators:\n");
    for o in &operators {
        let ins: Vec<&str> = o["inputs"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
        let from = if ins.is_empty() { String::new() } else { format!(" <- {}", ins.join(", ")) };
        let detail = o["detail"].as_str().unwrap_or("");
        let detail = if detail.is_empty() { String::new() } else { format!("  [{detail}]") };
        out.push_str(&format!(
            "  {:<14} {}{from}{detail}\n",
            o["op"].as_str().unwrap_or(""),
            o["name"].as_str().unwrap_or("")
        ));
    }
    out.push_str("\nstores:\n");
    for s in &stores {
        let log = s["changelog"].as_str().map_or("no changelog".to_owned(), |c| format!("changelog {c}"));
        out.push_str(&format!(
            "  {:<28} {} ({log})\n",
            s["name"].as_str().unwrap_or(""),
            s["engine"].as_str().unwrap_or("")
        ));
    }
    out
}
