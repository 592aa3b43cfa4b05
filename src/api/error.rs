//! Every way an API call can fail, and the one place that decides what each failure means for
//! the queue ([`ErrorClass`]): retry later, give up on this photo, stop the whole account, or
//! reconcile a possibly charged upload. Each message names the endpoint and says what to do.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Which vendor endpoint a call went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Upload,
    Status,
    Download,
    Nums,
}

impl Endpoint {
    /// The path under the base URL.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Upload => "/api/third/photo/upload",
            Endpoint::Status => "/api/third/photo/status",
            Endpoint::Download => "/api/third/photo/download",
            Endpoint::Nums => "/api/third/company/nums",
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Endpoint::Upload => "upload",
            Endpoint::Status => "status",
            Endpoint::Download => "download",
            Endpoint::Nums => "credits (nums)",
        })
    }
}

/// What a failure means for the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Try the same request again later (with backoff); nothing was charged.
    Transient,
    /// This photo cannot succeed as it is; no credit was spent. Fail the job.
    PermanentForPhoto,
    /// No upload will succeed until credits are bought: pause uploads, re-check now and then.
    AccountWide,
    /// Nothing will succeed until a person changes the configuration, and waiting will not
    /// help: the token is rejected (after the clock correction), the service does not know the
    /// third_code, or the base URL answers but is not the API. `run --once` ends with code 2.
    Misconfigured,
    /// An upload whose answer never arrived or could not be read: it may have been charged.
    /// Reconcile with the credit count before sending it again.
    Ambiguous,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "{endpoint}: the API rejected the token (errno 9999): check the secret key (api.secret_key_file or HILI_SECRET_KEY) and the clock"
    )]
    BadToken { endpoint: Endpoint },
    #[error("{endpoint}: no uploads left on the account (errno 9101): buy credits, then resume")]
    NoCredits { endpoint: Endpoint },
    #[error(
        "{endpoint}: the API rejected the parameters (errno 9001: {msg}): check api.third_code and the repair type/colour"
    )]
    BadParameters { endpoint: Endpoint, msg: String },
    #[error(
        "{endpoint}: file type not supported (errno 9005: {msg}): convert the photo to JPEG or PNG"
    )]
    UnsupportedType { endpoint: Endpoint, msg: String },
    #[error(
        "{endpoint}: the server says the upload failed (errno 9006: {msg}); not charged, it will be retried"
    )]
    UploadFailed { endpoint: Endpoint, msg: String },
    #[error(
        "{endpoint}: the server could not process the image (errno 9009: {msg}); not charged: check the photo opens and is under 6000 px"
    )]
    ImageAbnormal { endpoint: Endpoint, msg: String },
    #[error(
        "{endpoint}: not found or expired on the server (errno 9002: {msg}); results live 1 hour: upload again if the result was lost"
    )]
    NotFound { endpoint: Endpoint, msg: String },
    #[error(
        "{endpoint}: the service does not know this account (errno 9002: {msg}); check api.third_code in the configuration"
    )]
    UnknownAccount { endpoint: Endpoint, msg: String },
    #[error("{endpoint}: the server reported an error (errno 500: {msg}); it will be retried")]
    Server { endpoint: Endpoint, msg: String },
    #[error(
        "{endpoint}: the server answered an unknown errno {errno} ({msg}); it will be retried, report it if it persists"
    )]
    UnknownErrno {
        endpoint: Endpoint,
        errno: i64,
        msg: String,
    },
    #[error(
        "{endpoint}: no answer within {after:?}; check the network or raise api.timeout{}",
        upload_hint(*endpoint)
    )]
    Timeout { endpoint: Endpoint, after: Duration },
    #[error(
        "{endpoint}: could not connect ({detail}); nothing was sent: check api.base_url and the network"
    )]
    Connect { endpoint: Endpoint, detail: String },
    #[error(
        "{endpoint}: the connection failed mid-request ({detail}){}",
        upload_hint(*endpoint)
    )]
    Transport { endpoint: Endpoint, detail: String },
    #[error(
        "{endpoint}: HTTP {status} instead of an API answer ({snippet:?}); {}",
        status_hint(*status)
    )]
    HttpStatus {
        endpoint: Endpoint,
        status: u16,
        snippet: String,
    },
    #[error(
        "{endpoint}: the answer is malformed, not the expected JSON or values ({detail}){}",
        upload_hint(*endpoint)
    )]
    BadBody { endpoint: Endpoint, detail: String },
    #[error(
        "{endpoint}: could not read {}: {source}; check the file exists and is readable, then retry it",
        path.display()
    )]
    ReadFile {
        endpoint: Endpoint,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn status_hint(status: u16) -> &'static str {
    match status {
        500..=599 | 408 | 429 => "the service is struggling: it will be retried",
        _ => "check api.base_url: it must be the API's address (scheme, host and port, no path)",
    }
}

fn upload_hint(endpoint: Endpoint) -> &'static str {
    if endpoint == Endpoint::Upload {
        "; the upload may have been charged: hili reconciles it with the credit count"
    } else {
        "; it will be retried"
    }
}

/// One errno of the vendor's (an answer with `code = 9000`), and what it means for the queue.
#[derive(Debug, Clone, Copy)]
pub struct Errno {
    /// The number in the answer's `errno`.
    pub errno: i64,
    /// The endpoint this row is limited to; `None`: any endpoint.
    pub at: Option<Endpoint>,
    /// What hili does with it.
    pub class: ErrorClass,
    /// Builds the error from the endpoint and the answer's `msg`.
    make: fn(Endpoint, String) -> ApiError,
}

impl Errno {
    const fn new(
        errno: i64,
        at: Option<Endpoint>,
        class: ErrorClass,
        make: fn(Endpoint, String) -> ApiError,
    ) -> Errno {
        Errno {
            errno,
            at,
            class,
            make,
        }
    }
}

/// The errnos hili knows, the one table of them: [`ApiError::from_errno`] builds its error
/// from the first row whose errno and endpoint match, and [`ApiError::class`] reads an errno's
/// class here. A `code = 9000` answer is never charged, so none of these is ambiguous.
/// `docs/hili-api.md` says why each class.
#[rustfmt::skip] // a table: one row a line
pub static ERRNOS: &[Errno] = &[
    // The client already retried a 9999 once after correcting its clock. The vendor says
    // failed uploads (9006) are not charged, so sending again is safe. The credits endpoint
    // looks the account up by third_code, so there a 9002 can only mean the account.
    Errno::new(9999, None,                 ErrorClass::Misconfigured,     |endpoint, _| ApiError::BadToken { endpoint }),
    Errno::new(9101, None,                 ErrorClass::AccountWide,       |endpoint, _| ApiError::NoCredits { endpoint }),
    Errno::new(9001, None,                 ErrorClass::PermanentForPhoto, |endpoint, msg| ApiError::BadParameters { endpoint, msg }),
    Errno::new(9005, None,                 ErrorClass::PermanentForPhoto, |endpoint, msg| ApiError::UnsupportedType { endpoint, msg }),
    Errno::new(9006, None,                 ErrorClass::Transient,         |endpoint, msg| ApiError::UploadFailed { endpoint, msg }),
    Errno::new(9009, None,                 ErrorClass::PermanentForPhoto, |endpoint, msg| ApiError::ImageAbnormal { endpoint, msg }),
    Errno::new(9002, Some(Endpoint::Nums), ErrorClass::Misconfigured,     |endpoint, msg| ApiError::UnknownAccount { endpoint, msg }),
    Errno::new(9002, None,                 ErrorClass::PermanentForPhoto, |endpoint, msg| ApiError::NotFound { endpoint, msg }),
    Errno::new(500,  None,                 ErrorClass::Transient,         |endpoint, msg| ApiError::Server { endpoint, msg }),
];

/// The class of an errno not in [`ERRNOS`]: a `code = 9000` answer is never charged, so it is
/// safe to retry.
pub const UNKNOWN_ERRNO_CLASS: ErrorClass = ErrorClass::Transient;

/// The row of [`ERRNOS`] for an errno answered by `endpoint`.
fn errno_row(endpoint: Endpoint, errno: i64) -> Option<&'static Errno> {
    ERRNOS
        .iter()
        .find(|row| row.errno == errno && row.at.is_none_or(|at| at == endpoint))
}

/// What an errno answered by `endpoint` means for the queue.
pub fn errno_class(endpoint: Endpoint, errno: i64) -> ErrorClass {
    errno_row(endpoint, errno).map_or(UNKNOWN_ERRNO_CLASS, |row| row.class)
}

impl ApiError {
    /// Maps a `code = 9000` answer's errno to its error.
    pub fn from_errno(endpoint: Endpoint, errno: i64, msg: String) -> ApiError {
        match errno_row(endpoint, errno) {
            Some(row) => (row.make)(endpoint, msg),
            None => ApiError::UnknownErrno {
                endpoint,
                errno,
                msg,
            },
        }
    }

    /// The errno the API answered, for the failures that are answers with `code = 9000`.
    pub fn errno(&self) -> Option<i64> {
        use ApiError::*;
        match self {
            BadToken { .. } => Some(9999),
            NoCredits { .. } => Some(9101),
            BadParameters { .. } => Some(9001),
            UnsupportedType { .. } => Some(9005),
            UploadFailed { .. } => Some(9006),
            ImageAbnormal { .. } => Some(9009),
            NotFound { .. } | UnknownAccount { .. } => Some(9002),
            Server { .. } => Some(500),
            UnknownErrno { errno, .. } => Some(*errno),
            Timeout { .. }
            | Connect { .. }
            | Transport { .. }
            | HttpStatus { .. }
            | BadBody { .. }
            | ReadFile { .. } => None,
        }
    }

    pub fn endpoint(&self) -> Endpoint {
        use ApiError::*;
        match self {
            BadToken { endpoint }
            | NoCredits { endpoint }
            | BadParameters { endpoint, .. }
            | UnsupportedType { endpoint, .. }
            | UploadFailed { endpoint, .. }
            | ImageAbnormal { endpoint, .. }
            | NotFound { endpoint, .. }
            | UnknownAccount { endpoint, .. }
            | Server { endpoint, .. }
            | UnknownErrno { endpoint, .. }
            | Timeout { endpoint, .. }
            | Connect { endpoint, .. }
            | Transport { endpoint, .. }
            | HttpStatus { endpoint, .. }
            | BadBody { endpoint, .. }
            | ReadFile { endpoint, .. } => *endpoint,
        }
    }

    /// The one classification of failures; retry and hold decisions follow from it.
    pub fn class(&self) -> ErrorClass {
        use ApiError::*;
        use ErrorClass::*;
        let upload = self.endpoint() == Endpoint::Upload;
        match self {
            // Answers with `code = 9000`: the errno table says.
            BadToken { .. }
            | NoCredits { .. }
            | BadParameters { .. }
            | UnsupportedType { .. }
            | UploadFailed { .. }
            | ImageAbnormal { .. }
            | NotFound { .. }
            | UnknownAccount { .. }
            | Server { .. }
            | UnknownErrno { .. } => self
                .errno()
                .map_or(UNKNOWN_ERRNO_CLASS, |n| errno_class(self.endpoint(), n)),
            // Nothing left the machine: nothing was charged.
            Connect { .. } => Transient,
            Timeout { .. } | Transport { .. } | BadBody { .. } if upload => Ambiguous,
            Timeout { .. } | Transport { .. } | BadBody { .. } => Transient,
            HttpStatus { status, .. } => match status {
                // A gateway that lost its upstream's answer: the upload may have gone through.
                502 | 504 if upload => Ambiguous,
                500..=599 | 408 | 429 => Transient,
                // Redirects (not followed), 4xx: the URL or a proxy is wrong; the user must act.
                _ => Misconfigured,
            },
            // The body was cut short of its declared length, so the server cannot have taken
            // it; retrying will not help until the file is readable again.
            ReadFile { .. } => PermanentForPhoto,
        }
    }
}

/// Building the HTTP client failed (bad base URL, TLS backend could not start).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the API client: {0}; check api.base_url (http:// or https://)")]
pub struct ClientBuildError(pub String);

/// An error and its causes on one line ("error sending request: connection refused").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorClass::*;

    const ENDPOINTS: [Endpoint; 4] = [
        Endpoint::Upload,
        Endpoint::Status,
        Endpoint::Download,
        Endpoint::Nums,
    ];

    #[test]
    fn every_errno_has_its_class() {
        for row in ERRNOS {
            let eps = ENDPOINTS
                .iter()
                .filter(|&&ep| row.at.is_none_or(|at| at == ep));
            let mut reached = false;
            for &ep in eps {
                let e = ApiError::from_errno(ep, row.errno, "m".into());
                assert_eq!(e.errno(), Some(row.errno), "{ep}: {e}");
                assert_eq!(e.endpoint(), ep);
                assert_eq!(e.class(), errno_class(ep, row.errno), "{ep}: {e}");
                reached |= errno_row(ep, row.errno).is_some_and(|r| std::ptr::eq(r, row));
            }
            assert!(reached, "errno {} row is shadowed by another", row.errno);
        }
        for ep in ENDPOINTS {
            let e = ApiError::from_errno(ep, 42, "x".into());
            assert!(
                matches!(e, ApiError::UnknownErrno { errno: 42, .. }),
                "{e:?}"
            );
            assert_eq!(e.class(), UNKNOWN_ERRNO_CLASS);
        }
    }

    #[test]
    fn errno_9002_is_the_account_only_at_the_credits_endpoint() {
        let e = ApiError::from_errno(Endpoint::Nums, 9002, "m".into());
        assert!(matches!(e, ApiError::UnknownAccount { .. }), "{e:?}");
        assert_eq!(e.class(), Misconfigured);
        for ep in [Endpoint::Upload, Endpoint::Status, Endpoint::Download] {
            let e = ApiError::from_errno(ep, 9002, "m".into());
            assert!(matches!(e, ApiError::NotFound { .. }), "{e:?}");
            assert_eq!(e.class(), PermanentForPhoto);
        }
    }

    #[test]
    fn transport_failures_are_ambiguous_only_for_uploads() {
        for endpoint in ENDPOINTS {
            let unknown = if endpoint == Endpoint::Upload {
                Ambiguous
            } else {
                Transient
            };
            let detail = || "x".to_string();
            let http = |status| ApiError::HttpStatus {
                endpoint,
                status,
                snippet: detail(),
            };
            let after = Duration::from_secs(1);
            let source = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
            #[rustfmt::skip] // a table: one case a line
            let cases = [
                (ApiError::Timeout { endpoint, after }, unknown),
                (ApiError::Transport { endpoint, detail: detail() }, unknown),
                (ApiError::BadBody { endpoint, detail: detail() }, unknown),
                (ApiError::Connect { endpoint, detail: detail() }, Transient),
                (http(500), Transient),
                (http(503), Transient),
                (http(502), unknown),
                (http(404), Misconfigured),
                (http(301), Misconfigured),
                (ApiError::ReadFile { endpoint, path: "/p.jpg".into(), source }, PermanentForPhoto),
            ];
            for (e, class) in cases {
                assert_eq!(e.class(), class, "{e}");
            }
        }
    }

    #[test]
    fn malformed_answers_are_ambiguous_only_for_uploads() {
        let e = |endpoint| ApiError::BadBody {
            endpoint,
            detail: "mdf \"../../etc\" is not a plain token".into(),
        };
        let up = e(Endpoint::Upload);
        assert_eq!(up.class(), Ambiguous);
        let s = up.to_string();
        assert!(s.contains("malformed") && s.contains("reconciles"), "{s}");
        let dl = e(Endpoint::Download);
        assert_eq!(dl.class(), Transient);
        assert!(dl.to_string().contains("retried"));
    }

    #[test]
    fn messages_name_endpoint_and_next_step() {
        let e = ApiError::Timeout {
            endpoint: Endpoint::Upload,
            after: Duration::from_secs(60),
        };
        let s = e.to_string();
        assert!(s.starts_with("upload:") && s.contains("reconciles"), "{s}");
        let s = ApiError::from_errno(Endpoint::Nums, 9101, String::new()).to_string();
        assert!(s.contains("buy credits"), "{s}");
    }
}
