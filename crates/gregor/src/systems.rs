//! The streaming systems a gregor job can use out of the box, and the
//! defaults that depend on them.
//!
//! The runtime knows no particular system; this is where the built-in kinds
//! are registered: `log` (the embedded log), `kafka` and `memory`.

use gregor_api::{Config, ConfigError};
use gregor_runtime::{JobConfig, SystemKinds};
use std::sync::Arc;

/// `log`, `kafka` and `memory`.
pub fn builtin_kinds() -> SystemKinds {
    let mut kinds = SystemKinds::new();
    kinds
        .register("log", |config, name| Ok(Arc::new(gregor_log::system::LogSystemFactory::from_config(config, name)?)));
    kinds.register("kafka", |config, name| Ok(Arc::new(gregor_kafka::KafkaSystemFactory::from_config(config, name)?)));
    kinds.register("memory", |config, name| {
        Ok(Arc::new(crate::memory::MemorySystemFactory::from_config(config, name)?))
    });
    kinds
}

/// The config key of the stores' local state.
const STATE_DIR: &str = "job.logged.store.base.dir";

/// Validates `config` into a [`JobConfig`] (accepting `app_keys` as the
/// job's own), first giving `job.logged.store.base.dir` its default when
/// unset: `__state` under the data directory of the job's default system if
/// that is a `log` system (`systems.<name>.path`, else `$GREGOR_DATA_DIR`,
/// else `./gregor-data`), else `./gregor-data/__state`.
///
/// # Errors
/// The first problem found, naming the key.
pub fn job_config(mut config: Config, app_keys: &[&str]) -> Result<JobConfig, ConfigError> {
    if config.get(STATE_DIR).is_none() {
        let default_system = config.get("job.default.system").map(str::to_owned).or_else(|| {
            config.get_list("task.inputs").first().and_then(|s| s.split_once('.')).map(|(s, _)| s.to_owned())
        });
        let data_dir = default_system
            .and_then(|s| config.get(&format!("systems.{s}.path")).map(std::path::PathBuf::from))
            .unwrap_or_else(gregor_log::system::default_data_dir);
        config.set(STATE_DIR, data_dir.join("__state").display().to_string());
    }
    JobConfig::new(config, app_keys)
}
