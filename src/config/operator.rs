//! The operator's sections: `[metrics]` (a Prometheus endpoint while `hili run` runs) and
//! `[notify]` (a command run when a run, or a daemon's batch, is over). Both are off by
//! default. Kept apart from the processing knobs so each section reads, defaults and validates
//! in one place.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, human_duration};

/// `[metrics]`: where to serve `/metrics`, if anywhere.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `"127.0.0.1:9464"`; unset (the default) serves nothing.
    pub listen: Option<String>,
    /// A non-loopback `listen` is refused unless this is set: the endpoint has no
    /// authentication and tells anyone who can reach it the queue's size and the credits left.
    pub allow_remote: bool,
}

impl MetricsConfig {
    /// The address to listen on; `None` when metrics are off (or `listen` is invalid, which
    /// validation refuses first).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.as_deref()?.trim().parse().ok()
    }
}

/// `[notify]`: a command told how each run went.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Program and arguments, run without a shell; empty (the default) runs nothing.
    pub on_finish: Vec<String>,
    /// How long the command may run before it is killed.
    #[serde(with = "human_duration")]
    pub timeout: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            on_finish: Vec::new(),
            timeout: Duration::from_secs(60),
        }
    }
}

/// A key of these sections and what is wrong with it.
struct Problem {
    key: &'static str,
    problem: String,
}

fn problem(key: &'static str, problem: impl Into<String>) -> Problem {
    Problem {
        key,
        problem: problem.into(),
    }
}

/// Checks both sections; `path` names the file in the error.
pub(super) fn validate(
    metrics: &MetricsConfig,
    notify: &NotifyConfig,
    path: &Path,
) -> Result<(), ConfigError> {
    check(metrics, notify).map_err(|p| ConfigError::Invalid {
        where_: path.display().to_string(),
        key: p.key,
        problem: p.problem,
    })
}

fn check(metrics: &MetricsConfig, notify: &NotifyConfig) -> Result<(), Problem> {
    if let Some(listen) = &metrics.listen {
        let addr: SocketAddr = listen.trim().parse().map_err(|_| {
            problem(
                "metrics.listen",
                format!("{listen:?} is not an IP address and port: write e.g. \"127.0.0.1:9464\""),
            )
        })?;
        if !addr.ip().is_loopback() && !metrics.allow_remote {
            return Err(problem(
                "metrics.listen",
                format!(
                    "{listen:?} is reachable from other machines and the endpoint has no \
                     password: use \"127.0.0.1:{}\", or add `allow_remote = true` to [metrics] \
                     if a firewall guards it",
                    addr.port()
                ),
            ));
        }
    }
    if notify
        .on_finish
        .first()
        .is_some_and(|p| p.trim().is_empty())
    {
        return Err(problem(
            "notify.on_finish",
            "starts with an empty program name: write e.g. [\"/usr/local/bin/hili-mail\", \"--to\", \"me\"]",
        ));
    }
    if notify.timeout.is_zero() {
        return Err(problem(
            "notify.timeout",
            "must be longer than 0s, e.g. \"60s\"",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(listen: &str, allow_remote: bool) -> MetricsConfig {
        MetricsConfig {
            listen: Some(listen.into()),
            allow_remote,
        }
    }

    #[test]
    fn loopback_is_fine_and_remote_needs_saying_so() {
        let n = NotifyConfig::default();
        assert!(check(&metrics("127.0.0.1:9464", false), &n).is_ok());
        assert!(check(&metrics("[::1]:9464", false), &n).is_ok());
        let e = check(&metrics("0.0.0.0:9464", false), &n).unwrap_err();
        assert_eq!(e.key, "metrics.listen");
        assert!(e.problem.contains("allow_remote"), "{}", e.problem);
        assert!(check(&metrics("0.0.0.0:9464", true), &n).is_ok());
        let e = check(&metrics("localhost:9464", false), &n).unwrap_err();
        assert!(e.problem.contains("127.0.0.1:9464"), "{}", e.problem);
        assert_eq!(
            metrics("127.0.0.1:9464", false).listen_addr(),
            Some("127.0.0.1:9464".parse().unwrap())
        );
        assert_eq!(MetricsConfig::default().listen_addr(), None);
    }

    #[test]
    fn notify_needs_a_program_and_a_timeout() {
        let m = MetricsConfig::default();
        let mut n = NotifyConfig {
            on_finish: vec![String::new(), "x".into()],
            ..NotifyConfig::default()
        };
        assert_eq!(check(&m, &n).unwrap_err().key, "notify.on_finish");
        n.on_finish = vec!["/bin/true".into()];
        n.timeout = Duration::ZERO;
        assert_eq!(check(&m, &n).unwrap_err().key, "notify.timeout");
    }
}
