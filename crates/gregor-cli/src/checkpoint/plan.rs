//! The pure decisions of `gregor checkpoint set`: parsing `--to`, which
//! input partitions move where, the offset a target means in a partition,
//! and the checkpoint a task gets.
//!
//! Everything here is a function of its arguments (the time lookup is
//! passed in), so every rule is unit-tested without a system. This module
//! never reads or writes streams, files or checkpoints.

use gregor_api::SystemStreamPartition;
use gregor_api::system::PartitionOffsets;
use gregor_runtime::{Checkpoint, StoreCheckpoint, TaskModel};
use std::collections::BTreeMap;
use std::fmt;

/// Where `--to` moves input partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The oldest retained offset: reprocess everything still there.
    Oldest,
    /// The next offset: skip everything present.
    Newest,
    /// An explicit offset, within `[oldest, next]`.
    Offset(u64),
    /// The first message at or after this time (ms since the epoch).
    Time(i64),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Oldest => f.write_str("oldest"),
            Target::Newest => f.write_str("newest"),
            Target::Offset(o) => write!(f, "offset {o}"),
            Target::Time(t) => write!(f, "time {}", format_time(*t)),
        }
    }
}

/// Parses `oldest`, `newest`, `offset:N` or `time:T`.
///
/// # Errors
/// A one-line description naming the bad part.
pub fn parse_target(text: &str) -> Result<Target, String> {
    match text {
        "oldest" => return Ok(Target::Oldest),
        "newest" => return Ok(Target::Newest),
        _ => {}
    }
    if let Some(n) = text.strip_prefix("offset:") {
        return n.trim().parse().map(Target::Offset).map_err(|_| format!("'{n}' is not an offset (offset:N)"));
    }
    if let Some(t) = text.strip_prefix("time:") {
        return parse_time(t.trim()).map(Target::Time);
    }
    Err(format!("'{text}' is not oldest, newest, offset:N or time:T"))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let (d, m) = (doy - (153 * mp + 2) / 5 + 1, if mp < 10 { mp + 3 } else { mp - 9 });
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Parses an RFC 3339 time (`2026-12-01T08:00:00Z`, `...08:00:00.250+01:00`;
/// a bare date means midnight UTC) or epoch milliseconds, to epoch ms.
///
/// # Errors
/// A one-line description with an example of the accepted forms.
pub fn parse_time(text: &str) -> Result<i64, String> {
    let bad = || format!("'{text}' is not a time: use RFC 3339 (e.g. 2026-12-01T08:00:00Z) or epoch milliseconds");
    if !text.is_empty() && text.bytes().enumerate().all(|(i, b)| b.is_ascii_digit() || (i == 0 && b == b'-')) {
        return text.parse().map_err(|_| bad());
    }
    let num = |s: &str, len: usize| -> Result<i64, String> {
        if s.len() == len && s.bytes().all(|b| b.is_ascii_digit()) { s.parse().map_err(|_| bad()) } else { Err(bad()) }
    };
    let (date, rest) = text.split_at(text.find(['T', 't', ' ']).unwrap_or(text.len()));
    let mut parts = date.split('-');
    let (y, m, d) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(y), Some(m), Some(d), None) => (num(y, 4)?, num(m, 2)?, num(d, 2)?),
        _ => return Err(bad()),
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&m) || d < 1 || d > month_days[(m - 1) as usize] {
        return Err(format!("'{text}' is not a time: {date} is not a date"));
    }
    let mut ms = days_from_civil(y, m, d) * 86_400_000;
    if rest.is_empty() {
        return Ok(ms);
    }
    let rest = &rest[1..];
    let zone_at = rest.find(['Z', 'z', '+', '-']).ok_or_else(bad)?;
    let (clock, zone) = rest.split_at(zone_at);
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut hms = hms.split(':');
    let (h, min, s) = match (hms.next(), hms.next(), hms.next(), hms.next()) {
        (Some(h), Some(min), Some(s), None) => (num(h, 2)?, num(min, 2)?, num(s, 2)?),
        _ => return Err(bad()),
    };
    if h > 23 || min > 59 || s > 60 || (!frac.is_empty() && !frac.bytes().all(|b| b.is_ascii_digit())) {
        return Err(bad());
    }
    let millis = format!("{frac:0<3}")[..3].parse::<i64>().map_err(|_| bad())?;
    ms += (h * 3600 + min * 60 + s) * 1000 + millis;
    let offset = match zone {
        "Z" | "z" => 0,
        _ => {
            let (sign, hhmm) = zone.split_at(1);
            let (oh, om) = hhmm.split_once(':').ok_or_else(bad)?;
            let minutes = num(oh, 2)? * 60 + num(om, 2)?;
            if sign == "-" { -minutes } else { minutes }
        }
    };
    Ok(ms - offset * 60_000)
}

/// Epoch ms as RFC 3339 in UTC (milliseconds shown when not zero).
pub fn format_time(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    let (h, min, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    let frac = if milli == 0 { String::new() } else { format!(".{milli:03}") };
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}{frac}Z")
}

/// What kind of input a partition belongs to (from the job's config).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InputKind {
    /// Also written by the job (`streams.<id>.samza.intermediate`).
    pub intermediate: bool,
    /// Read to its end before other inputs (`streams.<id>.samza.bootstrap`).
    pub bootstrap: bool,
}

/// How the command line selected an input partition of an affected task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selected {
    /// Every input of the task (no `--stream`).
    All,
    /// Named with `--stream` (and `--partition`).
    Named,
    /// Another input of a task a `--stream` selection affects.
    Other,
}

/// Why an input partition moves where it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// As `--to` asked.
    Asked,
    /// An intermediate input: skipped to its end, since re-reading the
    /// inputs upstream regenerates what it holds.
    IntermediateSkipped,
    /// A bootstrap input of a task whose stores are reset: re-read from
    /// its oldest offset, so the table it fills is rebuilt whole.
    BootstrapReread,
}

impl Why {
    /// The note printed beside the move.
    pub fn note(self) -> &'static str {
        match self {
            Why::Asked => "",
            Why::IntermediateSkipped => "intermediate input: skipped to its end (re-reading upstream regenerates it)",
            Why::BootstrapReread => "bootstrap input: re-read from oldest (its stores are reset)",
        }
    }
}

/// Where one input partition of an affected task goes (`None`: it keeps its checkpoint).
///
/// # Errors
/// A bootstrap input named with `--stream` while stores are reset, moved
/// anywhere but its oldest offset (the table it fills would miss entries).
pub fn rule(
    kind: InputKind,
    selected: Selected,
    reset_stores: bool,
    target: Target,
    ssp: &SystemStreamPartition,
) -> Result<Option<(Target, Why)>, String> {
    let reread = kind.bootstrap && reset_stores;
    Ok(match selected {
        Selected::Named if reread && target != Target::Oldest => {
            return Err(format!(
                "{ssp} is a bootstrap input and the task's stores are reset, so it is re-read from its oldest offset; \
                 pass --keep-stores to move it to {target}"
            ));
        }
        Selected::Named => Some((target, Why::Asked)),
        Selected::All | Selected::Other if reread => Some((Target::Oldest, Why::BootstrapReread)),
        Selected::All if kind.intermediate => Some((Target::Newest, Why::IntermediateSkipped)),
        Selected::All => Some((target, Why::Asked)),
        Selected::Other => None,
    })
}

/// The offset `target` means in a partition with `range`; `lookup` finds
/// the offset of a time (the system's `offset_for_time`).
///
/// # Errors
/// An explicit offset outside `[oldest, next]` (naming the partition and
/// range), or the lookup's error.
pub fn resolve(
    target: Target,
    ssp: &SystemStreamPartition,
    range: PartitionOffsets,
    lookup: impl FnOnce(i64) -> Result<u64, String>,
) -> Result<u64, String> {
    match target {
        Target::Oldest => Ok(range.oldest),
        Target::Newest => Ok(range.next),
        Target::Offset(o) if (range.oldest..=range.next).contains(&o) => Ok(o),
        Target::Offset(o) => Err(format!(
            "offset {o} is out of range for {ssp}: it must lie between its oldest offset {} and its next offset {}",
            range.oldest, range.next
        )),
        Target::Time(t) => Ok(lookup(t)?.clamp(range.oldest, range.next)),
    }
}

/// A task's new checkpoint: its old one (or none) with `inputs` moved and,
/// when `stores` is given, those store entries replaced (others kept). A
/// moved input forgets the sequence numbers it has seen (exactly-once
/// without transactions): what it reads again is processed again, as asked,
/// not dropped as a duplicate. The task's own `sequence` only grows.
pub fn rewound(
    old: Option<&Checkpoint>,
    inputs: &BTreeMap<SystemStreamPartition, u64>,
    stores: Option<&BTreeMap<String, StoreCheckpoint>>,
) -> Checkpoint {
    let mut cp = old.cloned().unwrap_or_default();
    cp.inputs.extend(inputs.iter().map(|(ssp, o)| (ssp.clone(), *o)));
    cp.seen.retain(|ssp, _| !inputs.contains_key(ssp));
    if let Some(stores) = stores {
        cp.stores.extend(stores.iter().map(|(name, s)| (name.clone(), s.clone())));
    }
    cp
}

/// The `--task`/`--stream`/`--partition` choice.
#[derive(Debug, Clone, Default)]
pub struct Choice {
    /// Task names (empty: every task).
    pub tasks: Vec<String>,
    /// A stream id or `system.stream`.
    pub stream: Option<String>,
    /// A partition of `stream`.
    pub partition: Option<u32>,
}

/// A list for an error message, cut after ten items.
fn listing(items: &[String]) -> String {
    let shown: Vec<&str> = items.iter().take(10).map(String::as_str).collect();
    let more = if items.len() > 10 { format!(", ... ({} in all)", items.len()) } else { String::new() };
    format!("{}{more}", shown.join(", "))
}

/// The affected tasks and, per task, how each input partition was selected.
///
/// # Errors
/// `--partition` without `--stream`, an unknown task, stream or partition,
/// or a partition that is not an input of the chosen tasks.
pub fn select<'m>(
    model: &'m [TaskModel],
    inputs: &[gregor_api::SystemStream],
    choice: &Choice,
) -> Result<Vec<(&'m TaskModel, Vec<(SystemStreamPartition, Selected)>)>, String> {
    if choice.partition.is_some() && choice.stream.is_none() {
        return Err("--partition needs --stream (the stream whose partition to move)".into());
    }
    let names: Vec<String> = model.iter().map(|t| t.name.clone()).collect();
    if let Some(unknown) = choice.tasks.iter().find(|t| !names.contains(t)) {
        return Err(format!("the job has no task '{unknown}' (its tasks: {})", listing(&names)));
    }
    let chosen: Vec<&TaskModel> =
        model.iter().filter(|t| choice.tasks.is_empty() || choice.tasks.contains(&t.name)).collect();
    let Some(id) = &choice.stream else {
        let all = |t: &TaskModel| t.inputs.iter().map(|s| (s.clone(), Selected::All)).collect();
        return Ok(chosen.into_iter().map(|t| (t, all(t))).collect());
    };
    let matching: Vec<&gregor_api::SystemStream> =
        inputs.iter().filter(|s| s.to_string() == *id || *s.stream == **id).collect();
    let stream = match matching.as_slice() {
        [one] => *one,
        [] => {
            let known: Vec<String> = inputs.iter().map(ToString::to_string).collect();
            return Err(format!("the job has no input stream '{id}' (its inputs: {})", listing(&known)));
        }
        many => {
            let names: Vec<String> = many.iter().map(ToString::to_string).collect();
            return Err(format!("'{id}' names several inputs ({}); give system.stream", names.join(", ")));
        }
    };
    let wanted =
        |ssp: &SystemStreamPartition| ssp.stream == *stream && choice.partition.is_none_or(|p| p == ssp.partition);
    let mut out = Vec::new();
    for t in chosen {
        if t.inputs.iter().any(wanted) {
            let inputs = t
                .inputs
                .iter()
                .map(|s| (s.clone(), if wanted(s) { Selected::Named } else { Selected::Other }))
                .collect();
            out.push((t, inputs));
        }
    }
    if out.is_empty() {
        let owner = model.iter().find(|t| t.inputs.iter().any(wanted));
        let partitions: Vec<u32> =
            model.iter().flat_map(|t| &t.inputs).filter(|s| s.stream == *stream).map(|s| s.partition).collect();
        return Err(match (owner, choice.partition) {
            (Some(owner), Some(p)) => {
                format!("{stream}[{p}] is not an input of the chosen tasks (task '{}' reads it)", owner.name)
            }
            (Some(_), None) => format!("{stream} is not an input of the chosen tasks"),
            (None, p) => format!(
                "input {stream} has no partition {} (its partitions: {})",
                p.map_or("-".into(), |p| p.to_string()),
                listing(&partitions.iter().map(ToString::to_string).collect::<Vec<_>>())
            ),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
