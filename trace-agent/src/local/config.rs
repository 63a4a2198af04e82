//! Settings of local mode (`apm_config.local.*`), typed; loading lives in [`crate::config`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::env::EnvSource;

/// Default port of the web view (loopback only).
pub const DEFAULT_WEB_PORT: u16 = 8128;
/// Default age after which stored data is deleted.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Default size cap of the database, in MiB.
pub const DEFAULT_MAX_SIZE_MB: u64 = 512;
/// File name of the database inside the data directory.
pub const DB_FILE_NAME: &str = "local.sqlite3";

/// Whether local mode runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LocalMode {
    /// On when there is neither an API key nor an OTLP endpoint (the default).
    #[default]
    Auto,
    /// Always on (also next to the Datadog or OTLP upstreams).
    On,
    /// Never.
    Off,
}

impl LocalMode {
    /// Parses `auto`, or a boolean (`true`/`false`/`1`/`0`…).
    ///
    /// # Errors
    /// The expected values, for the config error message.
    pub fn parse(v: &str) -> Result<Self, String> {
        if v.trim().eq_ignore_ascii_case("auto") {
            return Ok(Self::Auto);
        }
        match crate::env::parse_bool(v) {
            Some(true) => Ok(Self::On),
            Some(false) => Ok(Self::Off),
            None => Err("expected auto, true or false".to_owned()),
        }
    }

    /// Whether local mode runs, given the other upstreams that are configured.
    pub fn is_active(self, has_api_key: bool, has_otlp_endpoint: bool) -> bool {
        match self {
            Self::Auto => !has_api_key && !has_otlp_endpoint,
            Self::On => true,
            Self::Off => false,
        }
    }

    /// `auto`, `true` or `false`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::On => "true",
            Self::Off => "false",
        }
    }
}

/// Local-mode settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalConfig {
    /// `apm_config.local.enabled`.
    pub mode: LocalMode,
    /// `apm_config.local.data_dir`: holds [`DB_FILE_NAME`].
    pub data_dir: PathBuf,
    /// `apm_config.local.retention`: data older than this (by its own timestamps) is deleted.
    pub retention: Duration,
    /// `apm_config.local.max_size_mb`, in bytes: the oldest data goes first above it.
    pub max_size_bytes: u64,
    /// `apm_config.local.web_port` (0: an ephemeral port); bound on 127.0.0.1 only.
    pub web_port: u16,
    /// Payloads accepted and not yet written; past it (or [`Self::queue_max_bytes`]) the
    /// pipeline waits for room (bounded), then drops and counts.
    pub queue_capacity: usize,
    /// Estimated bytes (decoded payloads in memory) accepted and not yet written.
    pub queue_max_bytes: usize,
    /// How long the pipeline waits for room in a full queue before it drops and counts (the
    /// receiver answers 429 well before: see `LocalStore::pressure`).
    pub offer_wait: Duration,
    /// Most payloads written in one transaction.
    pub batch_max: usize,
    /// Most estimated bytes written in one transaction (a batch is also what the files may
    /// exceed the size cap by).
    pub batch_max_bytes: usize,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// `apm_config.local.monitors`, `.webhooks`, `.downtimes`, `.monitor_interval`.
    pub monitors: super::monitor::MonitorConfig,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            mode: LocalMode::Auto,
            data_dir: std::env::temp_dir().join("trace-agent"),
            retention: DEFAULT_RETENTION,
            max_size_bytes: DEFAULT_MAX_SIZE_MB * 1024 * 1024,
            web_port: DEFAULT_WEB_PORT,
            queue_capacity: 1024,
            queue_max_bytes: 64 << 20,
            offer_wait: Duration::from_secs(5),
            batch_max: 256,
            batch_max_bytes: 8 << 20,
            retention_interval: Duration::from_secs(60),
            monitors: super::monitor::MonitorConfig::default(),
        }
    }
}

impl LocalConfig {
    /// Defaults with `data_dir` at its documented place (see [`default_data_dir`]).
    pub fn with_env_defaults(env: &dyn EnvSource) -> Self {
        Self {
            data_dir: default_data_dir(env),
            ..Self::default()
        }
    }

    /// Defaults with the data in `dir` (tests, embedding).
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            data_dir: dir.to_owned(),
            ..Self::default()
        }
    }

    /// Path of the database file.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join(DB_FILE_NAME)
    }
}

/// `$XDG_DATA_HOME/trace-agent`, else `$HOME/.local/share/trace-agent`, else
/// `<temp dir>/trace-agent` (never the working directory).
pub fn default_data_dir(env: &dyn EnvSource) -> PathBuf {
    let non_empty = |v: &str| env.get(v).filter(|s| !s.trim().is_empty()).map(PathBuf::from);
    if let Some(xdg) = non_empty("XDG_DATA_HOME") {
        return xdg.join("trace-agent");
    }
    if let Some(home) = non_empty("HOME") {
        return home.join(".local").join("share").join("trace-agent");
    }
    std::env::temp_dir().join("trace-agent")
}

/// Parses a duration: a number of seconds, or a number with a unit `s`, `m`, `h` or `d`
/// (`90`, `30m`, `24h`, `7d`).
///
/// # Errors
/// What is expected, for the config error message.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    let (num, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{v:?} is not a duration (e.g. 3600, 90m, 24h, 7d)"))?;
    let secs = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{v:?}: unknown unit (use s, m, h or d)")),
    };
    n.checked_mul(secs)
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{v:?} must be more than 0 and fit in 64 bits of seconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("3w").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn data_dir_follows_xdg_then_home() {
        let map = |pairs: &[(&str, &str)]| -> std::collections::HashMap<String, String> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        let env = map(&[("HOME", "/home/u"), ("XDG_DATA_HOME", "/x")]);
        assert_eq!(default_data_dir(&env), PathBuf::from("/x/trace-agent"));
        let env = map(&[("HOME", "/home/u"), ("XDG_DATA_HOME", "")]);
        assert_eq!(
            default_data_dir(&env),
            PathBuf::from("/home/u/.local/share/trace-agent")
        );
    }

    #[test]
    fn modes() {
        assert_eq!(LocalMode::parse("auto"), Ok(LocalMode::Auto));
        assert_eq!(LocalMode::parse("false"), Ok(LocalMode::Off));
        assert!(LocalMode::Auto.is_active(false, false));
        assert!(!LocalMode::Auto.is_active(true, false));
        assert!(!LocalMode::Auto.is_active(false, true));
        assert!(LocalMode::On.is_active(true, true));
        assert!(LocalMode::parse("maybe").is_err());
    }
}
