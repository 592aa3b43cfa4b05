//! Where the API secret key comes from: the environment, a key file, a systemd credential or
//! (discouraged) the config file itself, in that order; which source was used (shown by
//! `hili doctor`, never the value); and the warning for an inline key others can read. It
//! knows nothing of the config file's layout: [`super::Config`] hands it the places to look.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::secret::Secret;

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
    /// `HILI_SECRET_KEY`.
    Env,
    /// `api.secret_key_file`, resolved against the config file's folder.
    File(PathBuf),
    /// `$CREDENTIALS_DIRECTORY/hili-secret` (systemd `LoadCredential=`).
    Credentials(PathBuf),
    /// `api.secret_key` in the config file (`None`: running on defaults).
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

/// Why no usable key was found.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// No source holds a key.
    #[error(
        "no secret key found: set HILI_SECRET_KEY, api.secret_key_file, $CREDENTIALS_DIRECTORY/hili-secret or api.secret_key"
    )]
    NoSecret,
    /// The first source that has one holds only blanks.
    #[error("the secret key from {source_} is empty: put the key there")]
    EmptySecret {
        /// The source that was empty.
        source_: SecretSource,
    },
    /// A key file that is named but cannot be read.
    #[error("cannot read the secret key file {}: {source}; check the path and its permissions", path.display())]
    SecretFile {
        /// The file named.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
}

/// The places a key may be, as the config and the environment name them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Places<'a> {
    /// `HILI_SECRET_KEY`, even when empty (an empty one is an error, not a skip).
    pub(super) env_key: Option<&'a OsStr>,
    /// `api.secret_key_file` as written.
    pub(super) key_file: Option<&'a Path>,
    /// `$CREDENTIALS_DIRECTORY`, when set and not empty.
    pub(super) credentials_dir: Option<&'a Path>,
    /// `api.secret_key`.
    pub(super) inline: Option<&'a InlineSecret>,
    /// The config file that was read, if any.
    pub(super) config_file: Option<&'a Path>,
}

/// The secret key, from the first place that has one: `HILI_SECRET_KEY`,
/// `api.secret_key_file`, `$CREDENTIALS_DIRECTORY/hili-secret`, inline `api.secret_key`.
pub(super) fn resolve(places: Places<'_>) -> Result<(Secret, SecretSource), SecretError> {
    let checked = |value: String, source: SecretSource| {
        if value.trim().is_empty() {
            Err(SecretError::EmptySecret { source_: source })
        } else {
            Ok((Secret::new(value), source))
        }
    };
    if let Some(v) = places.env_key {
        return checked(v.to_string_lossy().into_owned(), SecretSource::Env);
    }
    if let Some(file) = places.key_file {
        // Relative to the config file, so a config and its key can move together.
        let path = match places.config_file {
            Some(src) if file.is_relative() => src
                .parent()
                .map_or_else(|| file.to_path_buf(), |d| d.join(file)),
            _ => file.to_path_buf(),
        };
        let key = read_key(&path)?;
        return checked(key, SecretSource::File(path));
    }
    if let Some(dir) = places.credentials_dir {
        let path = dir.join("hili-secret");
        if path.exists() {
            let key = read_key(&path)?;
            return checked(key, SecretSource::Credentials(path));
        }
    }
    if let Some(inline) = places.inline {
        return checked(
            inline.0.expose().to_string(),
            SecretSource::Inline(places.config_file.map(Path::to_path_buf)),
        );
    }
    Err(SecretError::NoSecret)
}

/// A warning when `config_file` (which holds an inline key) is readable by group or others.
pub(super) fn readable_by_others(config_file: &Path) -> Option<String> {
    let mode = std::fs::metadata(config_file).ok()?.permissions().mode();
    (mode & 0o044 != 0).then(|| {
        format!(
            "{} holds api.secret_key and is readable by group or others (mode {:o}): \
             run `chmod 600 {}` or move the key to api.secret_key_file",
            config_file.display(),
            mode & 0o777,
            config_file.display()
        )
    })
}

fn read_key(path: &Path) -> Result<String, SecretError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::SecretFile {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}
