//! Configuration: where the TOML file is found, its keys and defaults, validation, the
//! database location and where the secret key comes from. A missing file is allowed (all
//! defaults); an unknown key is an error naming the key and the file.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::api::client::ClientOptions;
use crate::secret::Secret;
use crate::watch::WatchConfig;

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub api: ApiConfig,
    pub queue: QueueConfig,
    pub input: InputConfig,
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
    /// `None`: see [`Config::database_path`].
    pub database: Option<PathBuf>,
    pub upload_concurrency: usize,
    pub download_concurrency: usize,
    pub max_attempts: u32,
    #[serde(with = "human_duration")]
    pub credits_recheck: Duration,
    pub on_expired: OnExpired,
    pub max_download_bytes: u64,
    /// Most credits to spend; 0 = no limit.
    pub budget: u64,
    /// After SIGINT/SIGTERM, how long requests in flight may take to finish.
    #[serde(with = "human_duration")]
    pub shutdown_grace: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            database: None,
            upload_concurrency: 1,
            download_concurrency: 4,
            max_attempts: 8,
            credits_recheck: Duration::from_secs(600),
            on_expired: OnExpired::Hold,
            max_download_bytes: 512 * 1024 * 1024,
            budget: 0,
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
}

impl Default for InputConfig {
    fn default() -> Self {
        InputConfig {
            max_upload_bytes: 20 * 1024 * 1024,
        }
    }
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

/// An inline `secret_key` whose Debug is redacted.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(from = "String")]
pub struct InlineSecret(pub Secret);

impl From<String> for InlineSecret {
    fn from(s: String) -> Self {
        InlineSecret(Secret::new(s))
    }
}

impl fmt::Debug for InlineSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where the secret key was found (shown by `hili doctor`; never the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env,
    File(PathBuf),
    Credentials(PathBuf),
    Inline(Option<PathBuf>),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env => f.write_str("environment variable HILI_SECRET_KEY"),
            SecretSource::File(p) => write!(f, "api.secret_key_file {}", p.display()),
            SecretSource::Credentials(p) => write!(f, "systemd credential {}", p.display()),
            SecretSource::Inline(Some(p)) => write!(f, "api.secret_key in {}", p.display()),
            SecretSource::Inline(None) => f.write_str("api.secret_key"),
        }
    }
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
    #[error(
        "no secret key found: set HILI_SECRET_KEY, api.secret_key_file, $CREDENTIALS_DIRECTORY/hili-secret or api.secret_key"
    )]
    NoSecret,
    #[error("the secret key from {source_} is empty: put the key there")]
    EmptySecret { source_: SecretSource },
    #[error("cannot read the secret key file {}: {source}; check the path and its permissions", path.display())]
    SecretFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
        for (key, d) in [
            ("api.timeout", a.timeout),
            ("api.poll_interval", a.poll_interval),
            ("queue.credits_recheck", q.credits_recheck),
        ] {
            if d.is_zero() {
                return Err(invalid(key, "must be longer than 0s, e.g. \"60s\""));
            }
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
        crate::watch::config::validate(&self.watch, path)
    }

    /// `queue.database`, else `$STATE_DIRECTORY/hili.db`, `$XDG_STATE_HOME/hili/hili.db`,
    /// `~/.local/state/hili/hili.db`.
    pub fn database_path(&self) -> PathBuf {
        self.database_path_in(&Env::from_process())
    }

    pub fn database_path_in(&self, env: &Env) -> PathBuf {
        if let Some(p) = &self.queue.database {
            return p.clone();
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
        let checked = |value: String, source: SecretSource| {
            if value.trim().is_empty() {
                Err(ConfigError::EmptySecret { source_: source })
            } else {
                Ok((Secret::new(value), source))
            }
        };
        if let Some(v) = env.vars.get("HILI_SECRET_KEY") {
            return checked(v.to_string_lossy().into_owned(), SecretSource::Env);
        }
        if let Some(file) = &self.api.secret_key_file {
            // Relative to the config file, so a config and its key can move together.
            let path = match &self.source {
                Some(src) if file.is_relative() => src
                    .parent()
                    .map(|d| d.join(file))
                    .unwrap_or_else(|| file.clone()),
                _ => file.clone(),
            };
            let key = read_key(&path)?;
            return checked(key, SecretSource::File(path));
        }
        if let Some(dir) = env.path("CREDENTIALS_DIRECTORY") {
            let path = dir.join("hili-secret");
            if path.exists() {
                let key = read_key(&path)?;
                return checked(key, SecretSource::Credentials(path));
            }
        }
        if let Some(inline) = &self.api.secret_key {
            return checked(
                inline.0.expose().to_string(),
                SecretSource::Inline(self.source.clone()),
            );
        }
        Err(ConfigError::NoSecret)
    }

    /// A warning when the config file holds an inline secret and others can read it.
    pub fn insecure_inline_secret(&self) -> Option<String> {
        self.api.secret_key.as_ref()?;
        let path = self.source.as_ref()?;
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        (mode & 0o044 != 0).then(|| {
            format!(
                "{} holds api.secret_key and is readable by group or others (mode {:o}): \
                 run `chmod 600 {}` or move the key to api.secret_key_file",
                path.display(),
                mode & 0o777,
                path.display()
            )
        })
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

fn read_key(path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
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

/// Serde helper for durations written as "60s", "10m", "1h 30m".
pub(crate) mod human_duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?} ({e}): write it like \"90s\", \"10m\" or \"1h\""
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn env(cwd: &Path, vars: &[(&str, &Path)]) -> Env {
        Env {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_os_str().to_owned()))
                .collect(),
            cwd: cwd.to_path_buf(),
        }
    }

    fn write(path: &Path, text: &str) -> PathBuf {
        if let Some(d) = path.parent() {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(path, text).unwrap();
        path.to_path_buf()
    }

    #[test]
    fn example_file_equals_the_defaults() {
        let text = include_str!("../config/hili.example.toml");
        let parsed = Config::parse(text, Path::new("hili.example.toml")).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn search_order() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let cwd = root.join("cwd");
        let xdg = root.join("xdg");
        let home = root.join("home");
        fs::create_dir_all(&cwd).unwrap();
        let e = env(&cwd, &[("XDG_CONFIG_HOME", &xdg), ("HOME", &home)]);
        // Nothing anywhere: defaults (unless this machine has /etc/hili/hili.toml).
        if !Path::new("/etc/hili/hili.toml").exists() {
            let c = Config::load_in(None, &e).unwrap();
            assert_eq!(c.source, None);
            assert_eq!(c, Config::default());
        }
        let homecfg = write(&home.join(".config/hili/hili.toml"), "[api]\nburst = 5\n");
        let no_xdg = env(&cwd, &[("HOME", &home)]);
        assert_eq!(locate(None, &no_xdg), Some(homecfg));
        let xdgcfg = write(&xdg.join("hili/hili.toml"), "[api]\nburst = 6\n");
        assert_eq!(locate(None, &e), Some(xdgcfg));
        let local = write(&cwd.join("hili.toml"), "[api]\nburst = 7\n");
        assert_eq!(locate(None, &e), Some(local.clone()));
        let envcfg = write(&root.join("env.toml"), "[api]\nburst = 8\n");
        let mut e2 = e.clone();
        e2.vars
            .insert("HILI_CONFIG".into(), envcfg.as_os_str().to_owned());
        assert_eq!(Config::load_in(None, &e2).unwrap().api.burst, 8);
        let explicit = write(&root.join("x.toml"), "[api]\nburst = 9\n");
        let c = Config::load_in(Some(&explicit), &e2).unwrap();
        assert_eq!((c.api.burst, c.source), (9, Some(explicit)));
        assert_eq!(Config::load_in(None, &e).unwrap().source, Some(local));
        // An explicit file that is missing is an error, not defaults.
        let err = Config::load_in(Some(&root.join("missing.toml")), &e).unwrap_err();
        assert!(err.to_string().contains("missing.toml"), "{err}");
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        for text in [
            "[api]\nbase_ulr = \"http://x\"\n",
            "[queeue]\n",
            "verbose = true\n",
        ] {
            let err = Config::parse(text, Path::new("/etc/hili/hili.toml")).unwrap_err();
            let msg = err.to_string();
            let key = if text.contains("base_ulr") {
                "base_ulr"
            } else if text.contains("queeue") {
                "queeue"
            } else {
                "verbose"
            };
            assert!(
                msg.contains(key) && msg.contains("/etc/hili/hili.toml"),
                "{msg}"
            );
        }
    }

    #[test]
    fn parse_errors_never_echo_an_inline_secret() {
        for text in [
            "[api]\nsecret_key = 98765432109\n",
            "[api]\nsecret_key = \"98765432109\n",
            "[api]\nsecret_key = '98765432109' x\n",
        ] {
            let msg = Config::parse(text, Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                !msg.contains("98765432109") && msg.contains("line 2"),
                "{msg}"
            );
        }
    }

    #[test]
    fn durations_and_validation() {
        let c = Config::parse(
            "[api]\ntimeout = \"1m 30s\"\npoll_interval = \"500ms\"\n[queue]\ncredits_recheck = \"1h\"\non_expired = \"reupload\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.api.timeout, Duration::from_secs(90));
        assert_eq!(c.api.poll_interval, Duration::from_millis(500));
        assert_eq!(c.queue.credits_recheck, Duration::from_secs(3600));
        assert_eq!(c.queue.on_expired, OnExpired::Reupload);
        for (text, needle) in [
            ("[api]\ntimeout = \"soon\"\n", "soon"),
            ("[api]\ntimeout = 60\n", "timeout"),
            (
                "[api]\nrequests_per_second = 0.0\n",
                "api.requests_per_second",
            ),
            ("[api]\nburst = 0\n", "api.burst"),
            ("[api]\nbase_url = \"ftp://x\"\n", "api.base_url"),
            (
                "[queue]\nupload_concurrency = 0\n",
                "queue.upload_concurrency",
            ),
            (
                "[queue]\ndownload_concurrency = 0\n",
                "queue.download_concurrency",
            ),
            ("[queue]\non_expired = \"retry\"\n", "retry"),
        ] {
            let msg = Config::parse(text, Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                msg.contains(needle) && msg.contains("c.toml"),
                "{text}: {msg}"
            );
        }
    }

    #[test]
    fn database_path_defaults() {
        let t = tempfile::tempdir().unwrap();
        let c = Config::default();
        let p = |vars: &[(&str, &Path)]| c.database_path_in(&env(t.path(), vars));
        assert_eq!(
            p(&[
                ("STATE_DIRECTORY", Path::new("/var/lib/hili")),
                ("HOME", Path::new("/h"))
            ]),
            PathBuf::from("/var/lib/hili/hili.db")
        );
        assert_eq!(
            p(&[
                ("XDG_STATE_HOME", Path::new("/s")),
                ("HOME", Path::new("/h"))
            ]),
            PathBuf::from("/s/hili/hili.db")
        );
        assert_eq!(
            p(&[("HOME", Path::new("/h"))]),
            PathBuf::from("/h/.local/state/hili/hili.db")
        );
        let set = Config::parse("[queue]\ndatabase = \"/d/j.db\"\n", Path::new("c")).unwrap();
        assert_eq!(
            set.database_path_in(&env(t.path(), &[])),
            PathBuf::from("/d/j.db")
        );
    }

    #[test]
    fn secret_source_order() {
        let t = tempfile::tempdir().unwrap();
        let creds = t.path().join("creds");
        write(&creds.join("hili-secret"), "from-creds\n");
        write(&t.path().join("key.txt"), "from-file\r\n");
        let cfg_path = write(
            &t.path().join("hili.toml"),
            "[api]\nsecret_key = \"from-inline\"\nsecret_key_file = \"key.txt\"\n",
        );
        let mut cfg = Config::load_in(Some(&cfg_path), &env(t.path(), &[])).unwrap();
        let key = |c: &Config, e: &Env| {
            let (s, src) = c.resolve_secret_in(e).unwrap();
            (s.expose().to_string(), src)
        };
        let mut e = env(t.path(), &[("CREDENTIALS_DIRECTORY", &creds)]);
        e.vars.insert("HILI_SECRET_KEY".into(), "from-env".into());
        assert_eq!(key(&cfg, &e), ("from-env".into(), SecretSource::Env));
        e.vars.remove("HILI_SECRET_KEY");
        assert_eq!(
            key(&cfg, &e),
            (
                "from-file".into(),
                SecretSource::File(t.path().join("key.txt"))
            )
        );
        cfg.api.secret_key_file = None;
        assert_eq!(
            key(&cfg, &e),
            (
                "from-creds".into(),
                SecretSource::Credentials(creds.join("hili-secret"))
            )
        );
        let bare = env(t.path(), &[]);
        assert_eq!(
            key(&cfg, &bare),
            ("from-inline".into(), SecretSource::Inline(Some(cfg_path)))
        );
        cfg.api.secret_key = None;
        assert!(matches!(
            cfg.resolve_secret_in(&bare),
            Err(ConfigError::NoSecret)
        ));
        cfg.api.secret_key_file = Some(t.path().join("nope"));
        let err = cfg.resolve_secret_in(&bare).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn readable_inline_secret_warns_and_debug_hides_it() {
        let t = tempfile::tempdir().unwrap();
        let p = write(
            &t.path().join("hili.toml"),
            "[api]\nsecret_key = \"inline-secret-value\"\n",
        );
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let c = Config::load_in(Some(&p), &env(t.path(), &[])).unwrap();
        let w = c.insecure_inline_secret().unwrap();
        assert!(w.contains("chmod 600") && w.contains("hili.toml"), "{w}");
        assert!(!format!("{c:?}").contains("inline-secret-value"));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(c.insecure_inline_secret(), None);
    }
}
