//! The systems a job uses, created from `systems.<name>.factory`.
//!
//! System kinds are plug-ins: each kind name (`log`, `kafka`, `memory`)
//! maps to a constructor taking the config and the system's name; the
//! runtime knows none of them (the `gregor` facade registers the built-in
//! kinds). [`Systems::new`] creates every configured system's factory and
//! admin once per process (or per tool invocation); each container then asks
//! the factories for its own consumers and producers.

use crate::error::RuntimeError;
use crate::job_config::JobConfig;
use gregor_api::config::invalid;
use gregor_api::system::{PartitionOffsets, SystemAdmin, SystemError, SystemFactory};
use gregor_api::{Config, ConfigError, RawMessage, StartOffset, SystemStreamPartition};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Builds a system called `name` from the config.
pub type SystemConstructor = fn(&Config, &str) -> Result<Arc<dyn SystemFactory>, ConfigError>;

/// The system kinds a job can use, by `systems.<name>.factory` value.
#[derive(Clone, Default)]
pub struct SystemKinds {
    kinds: BTreeMap<String, SystemConstructor>,
}

impl SystemKinds {
    /// No kinds yet.
    pub fn new() -> Self {
        SystemKinds { kinds: BTreeMap::new() }
    }

    /// Adds (or replaces) a kind.
    pub fn register(&mut self, kind: &str, constructor: SystemConstructor) {
        self.kinds.insert(kind.to_owned(), constructor);
    }
}

/// The job's systems and their admins.
pub struct Systems {
    factories: BTreeMap<String, Arc<dyn SystemFactory>>,
    admins: BTreeMap<String, Arc<dyn SystemAdmin>>,
}

impl Systems {
    /// Creates every system the config defines.
    ///
    /// # Errors
    /// An unknown kind, or a system that cannot start.
    pub fn new(job: &JobConfig, kinds: &SystemKinds) -> Result<Systems, RuntimeError> {
        let mut factories = BTreeMap::new();
        let mut admins = BTreeMap::new();
        for (name, kind) in &job.systems {
            let key = format!("systems.{name}.factory");
            let constructor = kinds.kinds.get(kind).ok_or_else(|| {
                let known: Vec<&str> = kinds.kinds.keys().map(String::as_str).collect();
                invalid(&key, kind, &format!("one of: {}", known.join(", ")))
            })?;
            let factory = constructor(&job.raw, name)?;
            admins.insert(name.clone(), factory.admin()?);
            factories.insert(name.clone(), factory);
        }
        Ok(Systems { factories, admins })
    }

    fn missing(system: &str) -> SystemError {
        SystemError::other(format!("system '{system}'"), format!("is not configured (add systems.{system}.factory)"))
    }

    /// The factory of `system`.
    pub fn factory(&self, system: &str) -> Result<&Arc<dyn SystemFactory>, SystemError> {
        self.factories.get(system).ok_or_else(|| Self::missing(system))
    }

    /// The admin of `system`.
    pub fn admin(&self, system: &str) -> Result<&Arc<dyn SystemAdmin>, SystemError> {
        self.admins.get(system).ok_or_else(|| Self::missing(system))
    }

    /// Oldest and next offsets of a partition.
    pub fn offsets(&self, ssp: &SystemStreamPartition) -> Result<PartitionOffsets, SystemError> {
        self.admin(&ssp.stream.system)?.offsets(ssp)
    }

    /// Reads `ssp` from `start` until the consumer's position reaches `end`,
    /// handing each message below `end` to `f`. Used for restores and
    /// checkpoints; gives up if no progress is made for `stall`.
    pub fn read_until(
        &self,
        ssp: &SystemStreamPartition,
        start: StartOffset,
        end: u64,
        stall: Duration,
        mut f: impl FnMut(RawMessage) -> Result<(), RuntimeError>,
    ) -> Result<(), RuntimeError> {
        let mut consumer = self.factory(&ssp.stream.system)?.consumer()?;
        consumer.register(ssp, start)?;
        consumer.start()?;
        let mut last_progress = Instant::now();
        let mut error = None;
        loop {
            let position = consumer.position(ssp).unwrap_or(0);
            if position >= end {
                break;
            }
            let delivered = consumer.poll(
                &|_| true,
                &mut |_, m| {
                    if error.is_none() && m.offset < end {
                        error = f(m).err();
                    }
                },
                Duration::from_millis(100),
            )?;
            if let Some(e) = error.take() {
                consumer.stop();
                return Err(e);
            }
            if delivered > 0 || consumer.position(ssp).unwrap_or(0) > position {
                last_progress = Instant::now();
            } else if last_progress.elapsed() > stall {
                consumer.stop();
                return Err(RuntimeError::Stalled { ssp: ssp.to_string(), position, end, stall_secs: stall.as_secs() });
            }
        }
        consumer.stop();
        Ok(())
    }
}
