//! Job configuration: Samza-style `key=value` properties with typed getters.
//!
//! A `Config` is a flat, ordered map of keys to strings. Getters turn values
//! into types and, when a value is malformed or a required key is missing,
//! return an error that names the key and says what form is expected. This
//! module knows no key's meaning; the runtime validates keys against its
//! documented schema.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

/// A configuration problem, always naming the key or line at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required key is absent.
    #[error("missing required config key '{key}': {hint}")]
    Missing {
        /// The key.
        key: String,
        /// What to add.
        hint: String,
    },
    /// A value that does not have the expected form.
    #[error("config key '{key}' has invalid value '{value}': expected {expected}")]
    Invalid {
        /// The key.
        key: String,
        /// The value found.
        value: String,
        /// The form expected.
        expected: String,
    },
    /// A key no component knows.
    #[error("unknown config key '{key}'{suggestion}")]
    Unknown {
        /// The key.
        key: String,
        /// ` (did you mean ...?)`, or empty.
        suggestion: String,
    },
    /// A line of a properties file that is not `key=value`.
    #[error("{source_name}:{line}: expected 'key=value', found '{text}'")]
    Syntax {
        /// The file (or other source) name.
        source_name: String,
        /// 1-based line number.
        line: usize,
        /// The offending line.
        text: String,
    },
    /// Keys that contradict each other.
    #[error("config keys conflict: {0}")]
    Conflict(String),
}

/// A job's configuration.
///
/// ```
/// use gregor_api::Config;
/// let config = Config::from_properties("job.name = wordcount\ntask.commit.ms=500\n# a comment\n", "job.properties")?;
/// assert_eq!(config.get("job.name"), Some("wordcount"));
/// assert_eq!(config.get_parsed::<u64>("task.commit.ms", "milliseconds")?, Some(500));
/// assert!(config.require("task.inputs", "list the input streams").is_err());
/// # Ok::<(), gregor_api::ConfigError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    entries: BTreeMap<String, String>,
}

impl Config {
    /// An empty configuration.
    pub fn new() -> Self {
        Config::default()
    }

    /// Parses Java-properties-style text: `key=value` or `key: value` per
    /// line, surrounding blanks trimmed, `#` and `!` start comment lines.
    /// Line continuations and escapes are not supported.
    ///
    /// # Errors
    /// [`ConfigError::Syntax`] naming `source_name` and the line.
    pub fn from_properties(text: &str, source_name: &str) -> Result<Config, ConfigError> {
        let mut config = Config::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let split = line.find(['=', ':']).filter(|&at| at > 0);
            let Some(at) = split else {
                return Err(ConfigError::Syntax {
                    source_name: source_name.to_owned(),
                    line: i + 1,
                    text: raw.to_owned(),
                });
            };
            config.set(line[..at].trim(), line[at + 1..].trim());
        }
        Ok(config)
    }

    /// Sets (or overrides) a key.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.entries.insert(key.into(), value.into());
    }

    /// Applies `key=value` overrides (as given to `--set`).
    ///
    /// # Errors
    /// [`ConfigError::Syntax`] for an override without `=`.
    pub fn apply_overrides<'a>(&mut self, overrides: impl IntoIterator<Item = &'a str>) -> Result<(), ConfigError> {
        for (i, o) in overrides.into_iter().enumerate() {
            let Some((k, v)) = o.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
                return Err(ConfigError::Syntax { source_name: "--set".into(), line: i + 1, text: o.to_owned() });
            };
            self.set(k.trim(), v.trim());
        }
        Ok(())
    }

    /// The raw value of a key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// The value of a required key.
    ///
    /// # Errors
    /// [`ConfigError::Missing`] carrying `hint` (what to add).
    pub fn require(&self, key: &str, hint: &str) -> Result<&str, ConfigError> {
        self.get(key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ConfigError::Missing { key: key.to_owned(), hint: hint.to_owned() })
    }

    /// A value parsed with `FromStr`; `expected` describes the form in errors.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] if the value does not parse.
    pub fn get_parsed<T: FromStr>(&self, key: &str, expected: &str) -> Result<Option<T>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| invalid(key, v, expected)),
        }
    }

    /// A boolean (`true`/`false`), or `default` when absent.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for anything but `true` or `false`.
    pub fn get_bool(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        Ok(self.get_parsed(key, "true or false")?.unwrap_or(default))
    }

    /// A duration in milliseconds, or `default` when absent.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] if not a non-negative integer.
    pub fn get_millis(&self, key: &str, default: Duration) -> Result<Duration, ConfigError> {
        Ok(self.get_parsed::<u64>(key, "a number of milliseconds")?.map_or(default, Duration::from_millis))
    }

    /// A comma-separated list (blank items dropped); empty when absent.
    pub fn get_list(&self, key: &str) -> Vec<String> {
        self.get(key)
            .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// All keys and values, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Keys starting with `prefix`, with the prefix removed.
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.entries
            .range(prefix.to_owned()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(move |(k, v)| (&k[prefix.len()..], v.as_str()))
    }
}

/// An [`ConfigError::Invalid`] for `key`.
pub fn invalid(key: &str, value: &str, expected: &str) -> ConfigError {
    ConfigError::Invalid { key: key.to_owned(), value: value.to_owned(), expected: expected.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_properties_and_reports_lines() {
        let c = Config::from_properties("a=1\n  b : two words \n\n! bang\nc=x=y\n", "f").unwrap();
        assert_eq!(c.get("b"), Some("two words"));
        assert_eq!(c.get("c"), Some("x=y"));
        let err = Config::from_properties("a=1\nnonsense\n", "job.properties").unwrap_err();
        assert_eq!(err.to_string(), "job.properties:2: expected 'key=value', found 'nonsense'");
    }

    #[test]
    fn typed_getters_name_the_key() {
        let mut c = Config::new();
        c.apply_overrides(["task.commit.ms=soon", "flag=yes", "l= a, ,b "]).unwrap();
        let err = c.get_millis("task.commit.ms", Duration::ZERO).unwrap_err().to_string();
        assert_eq!(err, "config key 'task.commit.ms' has invalid value 'soon': expected a number of milliseconds");
        assert!(c.get_bool("flag", false).is_err());
        assert_eq!(c.get_list("l"), ["a", "b"]);
        assert!(c.apply_overrides(["novalue"]).is_err());
        let prefixed: Vec<_> = c.with_prefix("task.").collect();
        assert_eq!(prefixed, [("commit.ms", "soon")]);
    }
}
