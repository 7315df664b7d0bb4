//! The command line every gregor job accepts.

use gregor_api::Config;
use std::path::PathBuf;

/// How a job logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event (the default).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl LogFormat {
    /// `text` or `json`.
    ///
    /// # Errors
    /// Anything else, described.
    pub fn parse(text: &str) -> Result<LogFormat, String> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => {
                Err(format!("the log format (--log-format or GREGOR_LOG_FORMAT) must be text or json, not '{other}'"))
            }
        }
    }
}

/// A job's command line: `--config FILE [--set key=value]... [--until-end]
/// [--log-format text|json]`.
#[derive(Debug, Clone, Default)]
pub struct JobArgs {
    /// The config file.
    pub config_file: Option<PathBuf>,
    /// `key=value` overrides, applied after the file.
    pub overrides: Vec<String>,
    /// Stop once every input reached its newest offset as of start-up.
    pub until_end: bool,
    /// The log format (`--log-format`, else `GREGOR_LOG_FORMAT`, else text).
    pub log_format: LogFormat,
    /// `--plan[=text|json]`: print what a Streams API job would run, and exit.
    pub plan: Option<String>,
}

/// Usage text of a job binary.
pub fn usage(job: &str) -> String {
    format!(
        "usage: {job} --config FILE [--set key=value]... [--until-end] [--log-format text|json] [--plan[=json]]\n\n  \
         --config FILE      job configuration (Samza-style key=value properties)\n  \
         --set key=value    override a config key (repeatable)\n  \
         --until-end        stop once every input partition has been read up to the\n                     \
         newest offset it had at start, after a final commit\n  \
         --log-format F     text (default) or json: one JSON object per line\n  \
         --plan[=FORMAT]    a Streams API job: print its operators, tasks, intermediate\n                     \
         streams and stores (text, or json), and exit\n"
    )
}

impl JobArgs {
    /// Parses arguments (without the program name).
    ///
    /// # Errors
    /// A one-line description of the first bad argument. `Ok(None)` means
    /// `--help` was asked for.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<JobArgs>, String> {
        let mut out = JobArgs::default();
        let mut format_given = false;
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
                _ => (arg.clone(), None),
            };
            let mut value =
                |name: &str| inline.clone().or_else(|| it.next()).ok_or_else(|| format!("{name} needs a value"));
            match flag.as_str() {
                "--config" => out.config_file = Some(PathBuf::from(value("--config")?)),
                "--set" => out.overrides.push(value("--set")?),
                "--until-end" => out.until_end = true,
                "--log-format" => {
                    out.log_format = LogFormat::parse(&value("--log-format")?)?;
                    format_given = true;
                }
                "--plan" => match inline.as_deref() {
                    None | Some("text") => out.plan = Some("text".into()),
                    Some("json") => out.plan = Some("json".into()),
                    Some(other) => return Err(format!("--plan takes text or json, not '{other}'")),
                },
                "--help" | "-h" => return Ok(None),
                other => return Err(format!("unexpected argument '{other}'")),
            }
        }
        if !format_given && let Ok(env) = std::env::var("GREGOR_LOG_FORMAT") {
            out.log_format = LogFormat::parse(&env)?;
        }
        Ok(Some(out))
    }

    /// Reads the config file and applies the overrides.
    ///
    /// # Errors
    /// A missing `--config`, an unreadable file, or a malformed line.
    pub fn load_config(&self) -> Result<Config, String> {
        let path = self.config_file.as_ref().ok_or("--config FILE is required")?;
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        let mut config = Config::from_properties(&text, &path.display().to_string()).map_err(|e| e.to_string())?;
        config.apply_overrides(self.overrides.iter().map(String::as_str)).map_err(|e| e.to_string())?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<JobArgs>, String> {
        JobArgs::parse(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn parses_flags_both_ways() {
        let a = parse(&["--config", "f.properties", "--set", "a=1", "--set=b=2", "--until-end"]).unwrap().unwrap();
        assert_eq!(a.config_file.unwrap().to_str(), Some("f.properties"));
        assert_eq!(a.overrides, ["a=1", "b=2"]);
        assert!(a.until_end);
        assert!(parse(&["--help"]).unwrap().is_none());
        assert_eq!(parse(&["--bogus"]).unwrap_err(), "unexpected argument '--bogus'");
        assert_eq!(parse(&["--set"]).unwrap_err(), "--set needs a value");
        assert_eq!(parse(&["--log-format", "json"]).unwrap().unwrap().log_format, LogFormat::Json);
        assert_eq!(
            parse(&["--log-format=xml"]).unwrap_err(),
            "the log format (--log-format or GREGOR_LOG_FORMAT) must be text or json, not 'xml'"
        );
        assert_eq!(JobArgs::default().load_config().unwrap_err(), "--config FILE is required");
    }
}
