//! Why a result could not be fetched and stored, and which of those are the server's fault
//! (retried `max_attempts` times, then held) rather than our disk's or network's (retried
//! until the result expires). Shared by the download and the metadata step.

use std::path::PathBuf;
use std::time::Duration;

/// The slowest average a result GET may keep up once its grace period (`api.timeout`) is over.
/// With the size cap this bounds the total time of any result GET, even one that trickles.
pub(crate) const MIN_BYTES_PER_SEC: u64 = 16 * 1024;

/// Why a result could not be fetched and stored.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("the result URL {0:?} is not http or https")]
    BadUrl(String),
    #[error("fetching the result failed: {}", crate::api::client::error_chain(.0))]
    Http(reqwest::Error),
    #[error("the result host answered HTTP {0}")]
    Status(u16),
    #[error("the result is not a JPEG or PNG image")]
    NotImage,
    #[error("the result is larger than max_download_bytes ({0} bytes)")]
    TooLarge(u64),
    #[error("the result host sent nothing for {0:?}")]
    Stalled(Duration),
    #[error(
        "the result came too slowly ({bytes} bytes in {after:?}, under {} bytes/s)",
        MIN_BYTES_PER_SEC
    )]
    TooSlow { bytes: u64, after: Duration },
    #[error("writing the result to {dir} failed: {source}; check free space and permissions")]
    Write {
        dir: PathBuf,
        source: std::io::Error,
    },
}

impl FetchError {
    /// Failures of our own disk or the network are retried until the result expires; a server
    /// that sends something wrong is retried `max_attempts` times, then the job is held.
    /// A result host that answers but stalls, trickles or loops counts as sending something
    /// wrong; a connection that cannot be made or breaks is treated as our network.
    pub(super) fn remote_fault(&self) -> bool {
        match self {
            FetchError::BadUrl(_)
            | FetchError::Status(_)
            | FetchError::NotImage
            | FetchError::TooLarge(_)
            | FetchError::Stalled(_)
            | FetchError::TooSlow { .. } => true,
            FetchError::Http(e) => e.is_redirect() || e.is_timeout(),
            FetchError::Write { .. } => false,
        }
    }
}
