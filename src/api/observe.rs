//! The client's one hook for whoever watches it (the metrics): after every request, the
//! endpoint, a short fixed name for how it ended and how long it took. The client knows
//! nothing of what is done with them.

use std::time::Duration;

use crate::api::error::{ApiError, Endpoint};

/// Told about every request the client sends (each attempt, retries included).
pub trait CallObserver: Send + Sync {
    fn request_done(&self, endpoint: Endpoint, outcome: &'static str, took: Duration);
}

/// The endpoint's short name, fit for a metric label.
pub fn endpoint_name(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Upload => "upload",
        Endpoint::Status => "status",
        Endpoint::Download => "download",
        Endpoint::Nums => "nums",
    }
}

/// How a request ended, from a small fixed set (so a metric has few series): `ok`, the
/// vendor's errno (`errno_9101`…), or the way the transport failed.
pub fn outcome<T>(result: &Result<T, ApiError>) -> &'static str {
    use ApiError::*;
    let Err(e) = result else {
        return "ok";
    };
    match e {
        BadToken { .. } => "errno_9999",
        NoCredits { .. } => "errno_9101",
        BadParameters { .. } => "errno_9001",
        UnsupportedType { .. } => "errno_9005",
        UploadFailed { .. } => "errno_9006",
        ImageAbnormal { .. } => "errno_9009",
        NotFound { .. } | UnknownAccount { .. } => "errno_9002",
        Server { .. } => "errno_500",
        UnknownErrno { .. } => "errno_other",
        Timeout { .. } => "timeout",
        Connect { .. } => "connect",
        Transport { .. } => "transport",
        HttpStatus { .. } => "http_status",
        BadBody { .. } => "bad_body",
        ReadFile { .. } => "read_file",
    }
}
