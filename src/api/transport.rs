//! The API client's handle and its one way of talking to the vendor: [`ApiClient`] holds the
//! connections, the skew-corrected clock and the account's credentials, and `call` sends one
//! endpoint's form with a fresh token, reads the answer and turns every failure into an
//! [`ApiError`]. It never retries on its own except once after errno 9999 when the same
//! answer revealed a skewed clock (9999 is never charged). It also counts requests in a row
//! that found nobody there ([`ApiClient::unanswered_streak`]). The endpoints themselves are in
//! [`crate::api::client`]; the protocol is described in `docs/hili-api.md`.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::multipart::Form;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::clock::{CORRECT_ABOVE_SECS, Clock};
use crate::api::envelope::{ReadError, bad_body, parse_envelope, read_limited, snippet};
use crate::api::error::{ApiError, ClientBuildError, Endpoint, error_chain};
use crate::api::observe::{CallObserver, outcome};
use crate::api::token::token;
use crate::api::upload_body::SentTally;
use crate::secret::Secret;

/// A request's form, and the tally of its upload body when it has one.
pub(crate) type Request = (Form, Option<Arc<SentTally>>);

#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub base_url: String,
    pub third_code: String,
    pub secret: Secret,
    /// Whole-request timeout of every API call.
    pub timeout: Duration,
}

/// Cheap to clone; clones share connections and the clock.
#[derive(Clone)]
pub struct ApiClient {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    api: reqwest::Client,
    http: reqwest::Client,
    base_url: String,
    third_code: String,
    secret: Secret,
    timeout: Duration,
    clock: Clock,
    /// Requests in a row that got no answer from the API at all, and the last such failure.
    unanswered: Arc<Mutex<(u32, Option<String>)>>,
    /// Told how each request went (the metrics), if anyone listens.
    observer: Option<Arc<dyn CallObserver>>,
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("base_url", &self.inner.base_url)
            .field("third_code", &self.inner.third_code)
            .field("secret", &self.inner.secret)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    pub fn new(opts: ClientOptions) -> Result<Self, ClientBuildError> {
        let base_url = opts.base_url.trim_end_matches('/').to_string();
        let url = reqwest::Url::parse(&base_url)
            .map_err(|e| ClientBuildError(format!("base URL {base_url:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ClientBuildError(format!(
                "base URL {base_url:?} is not http:// or https://"
            )));
        }
        // A short connect timeout makes an unreachable host a Connect error (nothing sent)
        // rather than a Timeout, which for uploads would be ambiguous.
        let connect = (opts.timeout / 2).min(Duration::from_secs(10));
        let agent = concat!("hili/", env!("CARGO_PKG_VERSION"));
        let api = reqwest::Client::builder()
            .user_agent(agent)
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never())
            .connect_timeout(connect)
            .timeout(opts.timeout)
            .build()
            .map_err(|e| ClientBuildError(e.to_string()))?;
        // Results may be large and may redirect; a stall (not the total time) is what fails.
        let http = reqwest::Client::builder()
            .user_agent(agent)
            .redirect(reqwest::redirect::Policy::limited(5))
            .connect_timeout(connect)
            .read_timeout(opts.timeout)
            .build()
            .map_err(|e| ClientBuildError(e.to_string()))?;
        Ok(ApiClient {
            inner: Arc::new(Inner {
                api,
                http,
                base_url,
                third_code: opts.third_code,
                secret: opts.secret,
                timeout: opts.timeout,
                clock: Clock::new(),
                unanswered: Arc::default(),
                observer: None,
            }),
        })
    }

    /// Replaces the clock (tests inject a skewed one).
    pub fn with_clock(self, clock: Clock) -> Self {
        let mut inner = (*self.inner).clone();
        inner.clock = clock;
        ApiClient {
            inner: Arc::new(inner),
        }
    }

    /// Tells `observer` about every request from now on (clones made after share it).
    pub fn with_observer(self, observer: Arc<dyn CallObserver>) -> Self {
        let mut inner = (*self.inner).clone();
        inner.observer = Some(observer);
        ApiClient {
            inner: Arc::new(inner),
        }
    }

    /// The API's base URL, as configured (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// How many requests in a row could not even connect (refused, no route, connect timeout:
    /// nothing was sent), and the last such failure. Any answer of the API resets it. A caller that must
    /// end (`run --once`) uses it to tell "the service is not there" from a passing fault.
    pub fn unanswered_streak(&self) -> (u32, Option<String>) {
        let s = self
            .inner
            .unanswered
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        s.clone()
    }

    fn note_answer(&self, result: &Result<Value, ApiError>) {
        let mut s = self
            .inner
            .unanswered
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match result {
            Err(e @ ApiError::Connect { .. }) => {
                s.0 = s.0.saturating_add(1);
                s.1 = Some(e.to_string());
            }
            // An envelope was read: the API is there (even if it said no).
            Ok(_) => *s = (0, None),
            Err(e) if e.errno().is_some() => *s = (0, None),
            // Timeouts, resets, HTTP errors, malformed answers: something is there, and
            // whether it is the API struggling is for the caller's retry budget to judge.
            Err(_) => {}
        }
    }

    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// The client for fetching result URLs (follows up to 5 redirects, read timeout only).
    pub fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// The account's customer identifier, sent in every form.
    pub(crate) fn third_code(&self) -> &str {
        &self.inner.third_code
    }

    /// Sends a form (built afresh per attempt), retrying once after a 9999 whose answer moved
    /// the clock correction, and decodes the success `data` as `T`.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        endpoint: Endpoint,
        mut make_form: F,
    ) -> Result<(T, Option<Arc<SentTally>>), ApiError>
    where
        T: DeserializeOwned,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Request, ApiError>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (form, tally) = make_form().await?;
            let sent = Instant::now();
            let (result, token_was_stale) = self.post_once(endpoint, form, tally.as_deref()).await;
            self.note_answer(&result);
            if let Some(o) = &self.inner.observer {
                o.request_done(endpoint, outcome(&result), sent.elapsed());
            }
            match result {
                Err(ApiError::BadToken { .. }) if token_was_stale && attempt == 1 => {
                    tracing::info!(%endpoint, "token rejected by a skewed clock; retrying once with server time");
                }
                Err(e) => return Err(e),
                Ok(data) => {
                    let data = serde_json::from_value(data)
                        .map_err(|e| bad_body(endpoint, &format!("data: {e}")))?;
                    return Ok((data, tally));
                }
            }
        }
    }

    /// One request. Returns the envelope's `data` and whether the answer changed the clock
    /// correction enough that the token sent was stamped with the wrong time.
    async fn post_once(
        &self,
        endpoint: Endpoint,
        form: Form,
        tally: Option<&SentTally>,
    ) -> (Result<Value, ApiError>, bool) {
        let clock = &self.inner.clock;
        let applied = clock.applied_offset();
        let tok = token(&self.inner.secret, clock.local_now() + applied);
        let url = format!("{}{}", self.inner.base_url, endpoint.path());
        tracing::debug!(%endpoint, %url, "API request");
        let sent = self
            .inner
            .api
            .post(&url)
            .header("token", tok)
            .multipart(form)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                if let Some((path, source)) =
                    tally.and_then(|t| Some((t.path.clone(), t.read_error()?)))
                {
                    return (
                        Err(ApiError::ReadFile {
                            endpoint,
                            path,
                            source,
                        }),
                        false,
                    );
                }
                return (Err(self.transport_error(endpoint, &e)), false);
            }
        };
        if let Some(date) = resp
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
        {
            clock.observe_date_header(date);
        }
        let stale = (clock.applied_offset() - applied).abs() > CORRECT_ABOVE_SECS;
        (self.read_answer(endpoint, resp).await, stale)
    }

    /// The answer of one request: its envelope's `data`, or why there is none.
    async fn read_answer(
        &self,
        endpoint: Endpoint,
        resp: reqwest::Response,
    ) -> Result<Value, ApiError> {
        let status = resp.status();
        let body = read_limited(resp).await;
        if status != reqwest::StatusCode::OK {
            let snippet = match &body {
                Ok(b) => snippet(b),
                Err(_) => String::new(),
            };
            return Err(ApiError::HttpStatus {
                endpoint,
                status: status.as_u16(),
                snippet,
            });
        }
        match body {
            Ok(b) => parse_envelope(endpoint, &b),
            Err(ReadError::TooLarge) => Err(bad_body(endpoint, "answer larger than 1 MiB")),
            Err(ReadError::Http(e)) => Err(self.transport_error(endpoint, &e)),
        }
    }

    fn transport_error(&self, endpoint: Endpoint, e: &reqwest::Error) -> ApiError {
        let detail = error_chain(e);
        if e.is_connect() {
            ApiError::Connect { endpoint, detail }
        } else if e.is_timeout() {
            ApiError::Timeout {
                endpoint,
                after: self.inner.timeout,
            }
        } else {
            ApiError::Transport { endpoint, detail }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_secret() {
        let c = ApiClient::new(ClientOptions {
            base_url: "http://127.0.0.1:1".into(),
            third_code: "tc".into(),
            secret: Secret::new("hush-hush-key"),
            timeout: Duration::from_secs(1),
        })
        .unwrap();
        assert!(!format!("{c:?}").contains("hush-hush"));
        assert!(
            ApiClient::new(ClientOptions {
                base_url: "ftp://x".into(),
                third_code: String::new(),
                secret: Secret::new("k"),
                timeout: Duration::from_secs(1),
            })
            .is_err()
        );
    }
}
