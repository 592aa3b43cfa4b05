//! Configuration: where the TOML file is found, its `[api]`, `[queue]`, `[input]`, `[output]`
//! keys and defaults, their validation and the database location. A missing file is allowed
//! (all defaults); an unknown key is an error naming the key and the file. `[account]`, the
//! `[[watch]]` tables, the secret key's sources, and `[metrics]` and `[notify]` live in
//! [`account`], [`watch`], [`secret`] and [`operator`]: leaves this module assembles, so none
//! imports it back.

mod account;
mod human_duration;
mod operator;
mod place;
mod secret;
mod watch;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod watch_tests;

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use account::AccountConfig;
pub use operator::{MetricsConfig, NotifyConfig};
pub use place::Database;
pub use secret::{InlineSecret, SecretError, SecretSource};
pub use watch::{After, PollMode, WatchConfig};

use crate::api::client::ClientOptions;
use crate::secret::Secret;

/// The longest `api.poll_interval` accepted (results live one hour after processing).
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub api: ApiConfig,
    pub queue: QueueConfig,
    pub input: InputConfig,
    pub output: OutputConfig,
    pub account: AccountConfig,
    /// `[metrics]` and `[notify]`: the operator's hooks (`config/operator.rs`).
    pub metrics: MetricsConfig,
    pub notify: NotifyConfig,
    /// `[[watch]]` tables: the drop folders of `hili run`.
    pub watch: Vec<WatchConfig>,
    /// The file that was read; `None` when running on defaults.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub base_url: String,
    pub third_code: String,
    /// Inline key: discouraged (prefer `secret_key_file`, `HILI_SECRET_KEY` or systemd creds).
    pub secret_key: Option<InlineSecret>,
    pub secret_key_file: Option<PathBuf>,
    pub requests_per_second: f64,
    pub burst: u32,
    #[serde(with = "human_duration")]
    pub timeout: Duration,
    #[serde(with = "human_duration")]
    pub poll_interval: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            base_url: "http://sdkphoto.fangtangtv.com".into(),
            third_code: String::new(),
            secret_key: None,
            secret_key_file: None,
            requests_per_second: 2.0,
            burst: 4,
            timeout: Duration::from_secs(60),
            poll_interval: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// A file, or a `postgres://` URL for a queue shared by several nodes; `None`: see
    /// [`Config::database_path`].
    pub database: Option<Database>,
    /// This process's name on a shared queue (default: the host name).
    pub node: Option<String>,
    pub upload_concurrency: usize,
    pub download_concurrency: usize,
    pub max_attempts: u32,
    #[serde(with = "human_duration")]
    pub credits_recheck: Duration,
    pub on_expired: OnExpired,
    pub max_download_bytes: u64,
    /// Most credits one run spends (`run --once --budget N` overrides it); 0 = no limit.
    pub budget: u64,
    /// Most credits spent per local day (counted from the queue's events); 0 = no limit.
    pub budget_per_day: u64,
    /// After SIGINT/SIGTERM, how long requests in flight may take to finish.
    #[serde(with = "human_duration")]
    pub shutdown_grace: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            database: None,
            node: None,
            upload_concurrency: 1,
            download_concurrency: 4,
            max_attempts: 8,
            credits_recheck: Duration::from_secs(600),
            on_expired: OnExpired::Hold,
            max_download_bytes: 512 * 1024 * 1024,
            budget: 0,
            budget_per_day: 0,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// `[input]`: what hili accepts as a photo before any byte is sent.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputConfig {
    /// Largest file sent, in bytes. The service states no limit; a larger file is refused
    /// locally (failed, no request) rather than sent and refused again and again.
    pub max_upload_bytes: u64,
    /// A photo with a side over the service's 6000 px: failed (no credit) or downscaled.
    pub oversize: Oversize,
}

impl Default for InputConfig {
    fn default() -> Self {
        InputConfig {
            max_upload_bytes: 20 * 1024 * 1024,
            oversize: Oversize::Fail,
        }
    }
}

/// `input.oversize`: what to do with a photo whose longer side is over 6000 px.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Oversize {
    /// Fail the job with a reason before any credit is spent.
    #[default]
    Fail,
    /// Fit it within 6000 px locally (Lanczos) and send that.
    Downscale,
}

/// `[output]`: what a result carries besides its pixels, and what its folder keeps.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Copy the source's EXIF, XMP, IPTC and ICC profile into the result.
    pub metadata: Metadata,
    /// Drop location tags from the copied metadata.
    pub strip_gps: bool,
    /// Keep a BagIt-style `manifest-sha256.txt` of the results in each output folder.
    pub manifest: bool,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            metadata: Metadata::Copy,
            strip_gps: false,
            manifest: false,
        }
    }
}

/// `output.metadata`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metadata {
    /// The result gets the source's metadata, corrected for the new pixels.
    #[default]
    Copy,
    /// The result is written as the service sent it.
    None,
}

/// `queue.on_expired`: what to do when a result is found expired at download (errno 9002),
/// its credit spent and lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnExpired {
    /// Hold the job for a person: the credit is lost.
    #[default]
    Hold,
    /// Queue it again: a second credit will be spent.
    Reupload,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}; check the path and its permissions", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {} is invalid: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("config {where_}: {key} {problem}")]
    Invalid {
        where_: String,
        key: &'static str,
        problem: String,
    },
    /// No usable secret key (its own type: [`secret`] needs nothing else from here).
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// The process environment, made explicit so tests need not change the real one.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub vars: HashMap<String, OsString>,
    pub cwd: PathBuf,
}

impl Env {
    pub fn from_process() -> Env {
        Env {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v)))
                .collect(),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        }
    }

    fn var(&self, key: &str) -> Option<&OsString> {
        self.vars.get(key).filter(|v| !v.is_empty())
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        self.var(key).map(PathBuf::from)
    }
}

impl Config {
    /// Finds and reads the config: `explicit`, `$HILI_CONFIG`, `./hili.toml`,
    /// `$XDG_CONFIG_HOME/hili/hili.toml` (or `~/.config/…`), `/etc/hili/hili.toml`, else defaults.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_in(explicit, &Env::from_process())
    }

    pub fn load_in(explicit: Option<&Path>, env: &Env) -> Result<Config, ConfigError> {
        let Some(path) = locate(explicit, env) else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let mut config = Self::parse(&text, &path)?;
        config.source = Some(path);
        if let Some(w) = config.insecure_inline_secret() {
            tracing::warn!("{w}");
        }
        Ok(config)
    }

    /// Parses and validates TOML text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let message = e.message().trim_end().replace('\n', " ");
            // Name the line and show it: it holds the key even when the span is the value.
            let message = match e.span().and_then(|s| text.get(..s.start)) {
                Some(before) => {
                    let n = before.matches('\n').count() + 1;
                    let line = text.lines().nth(n - 1).unwrap_or("").trim();
                    // Only the key is shown: the value may be the secret.
                    match line.split_once('=') {
                        Some((key, _)) if key.trim() == "secret_key" => format!(
                            "line {n} `secret_key = ...`: not a valid string (value not shown)"
                        ),
                        Some((key, _)) => format!("line {n} `{} = ...`: {message}", key.trim()),
                        None if line.starts_with('[') => format!("line {n} `{line}`: {message}"),
                        None => format!("line {n}: {message}"),
                    }
                }
                None => message,
            };
            ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            }
        })?;
        // Relative watch paths are relative to the config file, like `secret_key_file`.
        let base = path.parent().unwrap_or(Path::new(""));
        for w in &mut config.watch {
            w.resolve_relative(base);
        }
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| ConfigError::Invalid {
            where_: path.display().to_string(),
            key,
            problem: problem.to_string(),
        };
        let a = &self.api;
        let q = &self.queue;
        if !(a.base_url.starts_with("http://") || a.base_url.starts_with("https://")) {
            return Err(invalid(
                "api.base_url",
                &format!("{:?} must start with http:// or https://", a.base_url),
            ));
        }
        if !(a.requests_per_second.is_finite() && a.requests_per_second > 0.0) {
            return Err(invalid("api.requests_per_second", "must be > 0, e.g. 2.0"));
        }
        if a.burst < 1 {
            return Err(invalid("api.burst", "must be at least 1"));
        }
        if let Some(node) = &q.node
            && let Err(problem) = node.parse::<crate::store::NodeName>()
        {
            return Err(invalid("queue.node", &problem));
        }
        for (key, d) in [
            ("api.timeout", a.timeout),
            ("api.poll_interval", a.poll_interval),
            ("queue.credits_recheck", q.credits_recheck),
        ] {
            if d.is_zero() {
                return Err(invalid(key, "must be longer than 0s, e.g. \"60s\""));
            }
        }
        // The service deletes a result an hour after processing: a photo asked about less often
        // than this could be ready, then gone before hili looked, its credit lost.
        if a.poll_interval > MAX_POLL_INTERVAL {
            return Err(invalid(
                "api.poll_interval",
                "must be at most \"10m\": results are deleted one hour after processing, and a \
                 photo asked about less often could expire before it is fetched",
            ));
        }
        if q.upload_concurrency < 1 {
            return Err(invalid("queue.upload_concurrency", "must be at least 1"));
        }
        if q.download_concurrency < 1 {
            return Err(invalid("queue.download_concurrency", "must be at least 1"));
        }
        if q.max_attempts < 1 {
            return Err(invalid("queue.max_attempts", "must be at least 1"));
        }
        if self.input.max_upload_bytes < 1024 {
            return Err(invalid(
                "input.max_upload_bytes",
                "must be at least 1024 (bytes), e.g. 20971520 for 20 MiB",
            ));
        }
        if let Some((key, problem)) = self.account.problem() {
            return Err(invalid(key, &problem));
        }
        operator::validate(&self.metrics, &self.notify, path)?;
        watch::validate(&self.watch).map_err(|p| ConfigError::Invalid {
            where_: path.display().to_string(),
            key: p.key,
            problem: p.problem,
        })
    }

    /// `queue.database` (when a file: for a shared queue, the default below, where node-local
    /// files go), else `$STATE_DIRECTORY/hili.db`, `$XDG_STATE_HOME/hili/hili.db`,
    /// `~/.local/state/hili/hili.db`.
    pub fn database_path(&self) -> PathBuf {
        self.database_path_in(&Env::from_process())
    }

    pub fn database_path_in(&self, env: &Env) -> PathBuf {
        // A shared queue's URL is no file: this machine's own files still go in the state
        // directory, as if its queue were there.
        if let Some(p) = self
            .queue
            .database
            .as_ref()
            .filter(|d| d.postgres_url().is_none())
        {
            return p.to_path_buf();
        }
        if let Some(dir) = env.path("STATE_DIRECTORY") {
            // systemd may pass several, colon-separated: the first is ours.
            let first = dir.to_string_lossy().split(':').next().map(PathBuf::from);
            return first.unwrap_or(dir).join("hili.db");
        }
        let state = env
            .path("XDG_STATE_HOME")
            .or_else(|| env.path("HOME").map(|h| h.join(".local/state")))
            .unwrap_or_else(|| PathBuf::from("."));
        state.join("hili").join("hili.db")
    }

    /// The secret key, from the first source that has one: `HILI_SECRET_KEY`,
    /// `api.secret_key_file`, `$CREDENTIALS_DIRECTORY/hili-secret`, inline `api.secret_key`.
    pub fn resolve_secret(&self) -> Result<(Secret, SecretSource), ConfigError> {
        self.resolve_secret_in(&Env::from_process())
    }

    pub fn resolve_secret_in(&self, env: &Env) -> Result<(Secret, SecretSource), ConfigError> {
        let credentials_dir = env.path("CREDENTIALS_DIRECTORY");
        Ok(secret::resolve(secret::Places {
            env_key: env.vars.get("HILI_SECRET_KEY").map(OsString::as_os_str),
            key_file: self.api.secret_key_file.as_deref(),
            credentials_dir: credentials_dir.as_deref(),
            inline: self.api.secret_key.as_ref(),
            config_file: self.source.as_deref(),
        })?)
    }

    /// A warning when the config file holds an inline secret and others can read it.
    pub fn insecure_inline_secret(&self) -> Option<String> {
        self.api.secret_key.as_ref()?;
        secret::readable_by_others(self.source.as_ref()?)
    }

    /// What the API client needs, with the secret resolved.
    pub fn client_options(&self) -> Result<ClientOptions, ConfigError> {
        if self.api.third_code.trim().is_empty() {
            return Err(ConfigError::Invalid {
                where_: self.where_(),
                key: "api.third_code",
                problem: "is empty: set the customer code the vendor gave you".into(),
            });
        }
        let (secret, _) = self.resolve_secret()?;
        Ok(ClientOptions {
            base_url: self.api.base_url.clone(),
            third_code: self.api.third_code.clone(),
            secret,
            timeout: self.api.timeout,
        })
    }

    fn where_(&self) -> String {
        match &self.source {
            Some(p) => p.display().to_string(),
            None => "(defaults, no file)".into(),
        }
    }
}

/// The config file to read, if any. An explicit or `$HILI_CONFIG` path is returned even when
/// missing, so reading it reports the error instead of silently using defaults.
fn locate(explicit: Option<&Path>, env: &Env) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = env.path("HILI_CONFIG") {
        return Some(p);
    }
    let mut candidates = vec![env.cwd.join("hili.toml")];
    let xdg = env
        .path("XDG_CONFIG_HOME")
        .or_else(|| env.path("HOME").map(|h| h.join(".config")));
    if let Some(dir) = xdg {
        candidates.push(dir.join("hili").join("hili.toml"));
    }
    candidates.push(PathBuf::from("/etc/hili/hili.toml"));
    candidates.into_iter().find(|p| p.is_file())
}
