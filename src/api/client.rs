//! The HTTP client for the vendor's four endpoints. It builds the multipart forms of the
//! reference's curl examples, stamps each request with a fresh token, streams uploads from disk
//! while hashing exactly the bytes sent, reads the `{"code":..}` envelope and turns every
//! failure into an [`ApiError`]. It never retries on its own except once after errno 9999 when
//! the same answer revealed a skewed clock (9999 is never charged).

use std::fmt;
use std::io::{self, SeekFrom};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::multipart::{Form, Part};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;

use crate::api::clock::{CORRECT_ABOVE_SECS, Clock};
use crate::api::error::{ApiError, ClientBuildError, Endpoint};
use crate::api::token::token;
use crate::repair::{Repair, Rgb};
use crate::secret::Secret;

/// Answers larger than this are not the API's JSON.
const MAX_ANSWER_BYTES: usize = 1 << 20;
/// Read size of streamed uploads: memory use stays at a few of these whatever the file size.
const UPLOAD_CHUNK: usize = 64 * 1024;

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

/// A successful upload: the job's server-side id and what was actually sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub mdf: String,
    pub img_url: String,
    /// Hex SHA-256 of the bytes streamed to the server.
    pub sent_sha256: String,
    pub sent_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Processing,
    Done,
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
            Ok(_)
            | Err(
                ApiError::BadToken { .. }
                | ApiError::NoCredits { .. }
                | ApiError::BadParameters { .. }
                | ApiError::UnsupportedType { .. }
                | ApiError::UploadFailed { .. }
                | ApiError::ImageAbnormal { .. }
                | ApiError::NotFound { .. }
                | ApiError::UnknownAccount { .. }
                | ApiError::Server { .. }
                | ApiError::UnknownErrno { .. },
            ) => *s = (0, None),
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

    /// Uploads a photo. Costs one credit when it succeeds. The file is streamed from disk.
    pub async fn upload(
        &self,
        path: &Path,
        repair: Repair,
        rgb: Option<Rgb>,
    ) -> Result<Uploaded, ApiError> {
        #[derive(Deserialize)]
        struct Data {
            // Only recorded, never fetched: a broken one must not cost the paid result.
            #[serde(default)]
            img_url: Option<Value>,
            mdf: String,
        }
        let (data, tracker): (Data, _) = self
            .call(Endpoint::Upload, || self.upload_form(path, repair, rgb))
            .await?;
        check_mdf(&data.mdf).map_err(|d| bad_body(Endpoint::Upload, &d))?;
        let img_url = match data.img_url {
            Some(Value::String(u)) if check_url(&u).is_ok() => u,
            other => {
                tracing::warn!(mdf = %data.mdf, "upload answer has no usable img_url ({}); not needed, ignored", preview(&other.map(|v| v.to_string()).unwrap_or_default()));
                String::new()
            }
        };
        let (sent_sha256, sent_bytes) = match tracker {
            Some(t) => t.finish(),
            None => (String::new(), 0),
        };
        Ok(Uploaded {
            mdf: data.mdf,
            img_url,
            sent_sha256,
            sent_bytes,
        })
    }

    pub async fn status(&self, mdf: &str) -> Result<JobStatus, ApiError> {
        #[derive(Deserialize)]
        struct Data {
            status: i64,
        }
        let (data, _): (Data, _) = self.call(Endpoint::Status, || self.mdf_form(mdf)).await?;
        match data.status {
            100 => Ok(JobStatus::Processing),
            200 => Ok(JobStatus::Done),
            other => Err(bad_body(
                Endpoint::Status,
                &format!("unknown status {other} (expected 100 or 200)"),
            )),
        }
    }

    /// The URL of a finished result, to fetch with [`ApiClient::http`].
    pub async fn download_url(&self, mdf: &str) -> Result<String, ApiError> {
        #[derive(Deserialize)]
        struct Data {
            url: String,
        }
        let (data, _): (Data, _) = self.call(Endpoint::Download, || self.mdf_form(mdf)).await?;
        check_url(&data.url).map_err(|d| bad_body(Endpoint::Download, &d))?;
        Ok(data.url)
    }

    /// Uploads left on the account.
    pub async fn credits(&self) -> Result<u64, ApiError> {
        #[derive(Deserialize)]
        struct Data {
            nums: u64,
        }
        let third_code = self.inner.third_code.clone();
        let (data, _): (Data, _) = self
            .call(Endpoint::Nums, || {
                let form = Form::new().text("third_code", third_code.clone());
                async move { Ok((form, None)) }
            })
            .await?;
        Ok(data.nums)
    }

    async fn mdf_form(&self, mdf: &str) -> Result<(Form, Option<Arc<Tracker>>), ApiError> {
        let form = Form::new()
            .text("third_code", self.inner.third_code.clone())
            .text("mdf", mdf.to_string());
        Ok((form, None))
    }

    async fn upload_form(
        &self,
        path: &Path,
        repair: Repair,
        rgb: Option<Rgb>,
    ) -> Result<(Form, Option<Arc<Tracker>>), ApiError> {
        let read_err = |source| ApiError::ReadFile {
            endpoint: Endpoint::Upload,
            path: path.to_path_buf(),
            source,
        };
        // Open, check, sniff and rewind in ONE trip to the blocking pool: each tokio::fs call
        // would be a trip of its own.
        let p = path.to_path_buf();
        let (opened, len, head, got) = tokio::task::spawn_blocking(move || open_for_upload(&p))
            .await
            .map_err(|e| read_err(io::Error::other(e)))?
            .map_err(read_err)?;
        let name = wire_file_name(path);
        let tracker = Arc::new(Tracker::new(path));
        let part = match opened {
            Opened::Read(bytes) => {
                tracker.record(&bytes);
                Part::bytes(bytes)
            }
            Opened::Stream(file) => {
                let file = tokio::fs::File::from_std(file);
                let body = reqwest::Body::wrap_stream(hashing_stream(file, len, tracker.clone()));
                Part::stream_with_length(body, len)
            }
        };
        let part = part
            .file_name(name)
            .mime_str(sniff_mime(&head[..got]))
            .expect("constant MIME types parse");
        let mut form = Form::new()
            .text("repair_type", repair.wire())
            .text("third_code", self.inner.third_code.clone())
            .part("file", part);
        if let (true, Some(rgb)) = (repair.needs_rgb(), rgb) {
            form = form.text("rgb", rgb.to_string());
        }
        Ok((form, Some(tracker)))
    }

    /// Sends a form (built afresh per attempt), retrying once after a 9999 whose answer moved
    /// the clock correction, and decodes the success `data` as `T`.
    async fn call<T, F, Fut>(
        &self,
        endpoint: Endpoint,
        mut make_form: F,
    ) -> Result<(T, Option<Arc<Tracker>>), ApiError>
    where
        T: DeserializeOwned,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(Form, Option<Arc<Tracker>>), ApiError>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (form, tracker) = make_form().await?;
            let (result, token_was_stale) =
                self.post_once(endpoint, form, tracker.as_deref()).await;
            self.note_answer(&result);
            match result {
                Err(ApiError::BadToken { .. }) if token_was_stale && attempt == 1 => {
                    tracing::info!(%endpoint, "token rejected by a skewed clock; retrying once with server time");
                }
                Err(e) => return Err(e),
                Ok(data) => {
                    let data = serde_json::from_value(data)
                        .map_err(|e| bad_body(endpoint, &format!("data: {e}")))?;
                    return Ok((data, tracker));
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
        tracker: Option<&Tracker>,
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
                    tracker.and_then(|t| Some((t.path.clone(), t.read_error()?)))
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
        let status = resp.status();
        let body = read_limited(resp).await;
        if status != reqwest::StatusCode::OK {
            let snippet = match &body {
                Ok(b) => snippet(b),
                Err(_) => String::new(),
            };
            let status = status.as_u16();
            return (
                Err(ApiError::HttpStatus {
                    endpoint,
                    status,
                    snippet,
                }),
                stale,
            );
        }
        let body = match body {
            Ok(b) => b,
            Err(ReadError::TooLarge) => {
                return (Err(bad_body(endpoint, "answer larger than 1 MiB")), stale);
            }
            Err(ReadError::Http(e)) => return (Err(self.transport_error(endpoint, &e)), stale),
        };
        (parse_envelope(endpoint, &body), stale)
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

/// Longest `mdf` accepted; the vendor's are 32 hex digits.
const MAX_MDF_CHARS: usize = 128;

/// An `mdf` is echoed back in forms and logs and stored: it must be a plain token
/// (1-128 of `A-Z a-z 0-9 _ -`), never text, a path or markup.
pub fn check_mdf(mdf: &str) -> Result<(), String> {
    let ok = (1..=MAX_MDF_CHARS).contains(&mdf.len())
        && mdf
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "mdf {} ({} bytes) is not a plain token of 1-{MAX_MDF_CHARS} letters, digits, '_' or '-'",
            preview(mdf),
            mdf.len()
        ))
    }
}

/// A result URL must parse as an absolute http(s) URL with a host.
pub fn check_url(url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(u) => Err(format!(
            "url {} is not http(s) with a host (scheme {:?})",
            preview(url),
            preview(u.scheme())
        )),
        Err(e) => Err(format!("url {} does not parse: {e}", preview(url))),
    }
}

/// A server-supplied string, quoted and cut short, safe to put in one log line.
fn preview(s: &str) -> String {
    let head: String = s.chars().take(40).collect();
    let more = if head.len() < s.len() { "…" } else { "" };
    format!("{head:?}{more}")
}

fn bad_body(endpoint: Endpoint, detail: &str) -> ApiError {
    ApiError::BadBody {
        endpoint,
        detail: detail.to_string(),
    }
}

/// Decodes `{"code":200,"data":..}` into `data`, `{"code":9000,"errno":..}` into its error.
fn parse_envelope(endpoint: Endpoint, body: &[u8]) -> Result<Value, ApiError> {
    #[derive(Deserialize)]
    struct Envelope {
        code: i64,
        data: Option<Value>,
        errno: Option<Value>,
        msg: Option<Value>,
    }
    let env: Envelope = serde_json::from_slice(body)
        .map_err(|e| bad_body(endpoint, &format!("{e}; body starts {:?}", snippet(body))))?;
    match env.code {
        200 => env
            .data
            .filter(|d| !d.is_null())
            .ok_or_else(|| bad_body(endpoint, "code 200 without data")),
        9000 => {
            // Lenient on the errno's JSON type: "9005" and 9005 mean the same.
            let errno = match &env.errno {
                Some(Value::Number(n)) => n.as_i64(),
                Some(Value::String(s)) => s.trim().parse().ok(),
                _ => None,
            }
            .ok_or_else(|| bad_body(endpoint, "code 9000 without a numeric errno"))?;
            let msg = match env.msg {
                Some(Value::String(s)) => s,
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            Err(ApiError::from_errno(endpoint, errno, msg))
        }
        other => Err(bad_body(endpoint, &format!("unexpected code {other}"))),
    }
}

enum ReadError {
    TooLarge,
    Http(reqwest::Error),
}

async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, ReadError> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Http)? {
        if buf.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(ReadError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// The start of a body, printable on one line, for error messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(400)]);
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    flat.chars().take(160).collect()
}

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

/// The MIME type the vendor expects, from the file's magic bytes.
fn sniff_mime(head: &[u8]) -> &'static str {
    if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        "image/jpeg"
    } else if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else {
        "application/octet-stream"
    }
}

/// What an upload body stream has sent so far, shared with the request future.
struct Tracker {
    path: std::path::PathBuf,
    state: Mutex<TrackState>,
}

#[derive(Default)]
struct TrackState {
    hasher: Sha256,
    sent: u64,
    read_error: Option<(io::ErrorKind, String)>,
}

impl Tracker {
    fn new(path: &Path) -> Self {
        Tracker {
            path: path.to_path_buf(),
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TrackState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, chunk: &[u8]) {
        let mut st = self.lock();
        st.hasher.update(chunk);
        st.sent += chunk.len() as u64;
    }

    fn fail(&self, e: &io::Error) {
        self.lock().read_error = Some((e.kind(), e.to_string()));
    }

    fn read_error(&self) -> Option<io::Error> {
        self.lock()
            .read_error
            .as_ref()
            .map(|(kind, msg)| io::Error::new(*kind, msg.clone()))
    }

    fn finish(&self) -> (String, u64) {
        let mut st = self.lock();
        let hasher = std::mem::take(&mut st.hasher);
        (hex::encode(hasher.finalize()), st.sent)
    }
}

/// A photo opened for upload: small ones are read whole in the same trip to the blocking pool
/// (streaming a few kilobytes would cost a trip per chunk), larger ones stream from disk.
enum Opened {
    Read(Vec<u8>),
    Stream(std::fs::File),
}

/// Photos up to this size are sent from memory.
const READ_WHOLE: u64 = 256 * 1024;

/// Opens a photo to upload: a regular file, its length, and its first bytes (for the MIME
/// type); read whole when small, else rewound to the start for streaming.
fn open_for_upload(path: &Path) -> io::Result<(Opened, u64, [u8; 8], usize)> {
    use std::io::{Read, Seek};
    let mut file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let len = meta.len();
    let mut head = [0u8; 8];
    if len <= READ_WHOLE {
        let mut bytes = Vec::with_capacity(len as usize);
        // A file that grew since its length was read is cut there, as a stream is.
        (&mut file).take(len).read_to_end(&mut bytes)?;
        if (bytes.len() as u64) < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the file shrank while being read ({} of {len} bytes)",
                    bytes.len()
                ),
            ));
        }
        let got = bytes.len().min(head.len());
        head[..got].copy_from_slice(&bytes[..got]);
        return Ok((Opened::Read(bytes), len, head, got));
    }
    let got = crate::media::read_up_to(&mut file, &mut head)?;
    file.seek(SeekFrom::Start(0))?;
    Ok((Opened::Stream(file), len, head, got))
}

/// Streams exactly `len` bytes of `file`, hashing them as they go; a file that shrinks or
/// fails to read ends the stream with an error (recorded in the tracker).
fn hashing_stream(
    file: tokio::fs::File,
    len: u64,
    tracker: Arc<Tracker>,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let inner = ReaderStream::with_capacity(file.take(len), UPLOAD_CHUNK);
    futures_util::stream::unfold(
        (inner, tracker, false),
        move |(mut inner, tracker, done)| async move {
            if done {
                return None;
            }
            match inner.next().await {
                Some(Ok(chunk)) => {
                    tracker.record(&chunk);
                    Some((Ok(chunk), (inner, tracker, false)))
                }
                Some(Err(e)) => {
                    tracker.fail(&e);
                    Some((Err(e), (inner, tracker, true)))
                }
                None => {
                    let sent = tracker.lock().sent;
                    if sent == len {
                        return None;
                    }
                    let e = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the file shrank while being sent ({sent} of {len} bytes)"),
                    );
                    tracker.fail(&e);
                    Some((Err(e), (inner, tracker, true)))
                }
            }
        },
    )
}

/// The file name sent in the multipart header: the real name, with control characters, quotes
/// and backslashes (which would break or inject into the header) replaced by `_`.
fn wire_file_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "photo".to_string());
    name.chars()
        .map(|c| {
            if c.is_control() || c == '"' || c == '\\' {
                '_'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_parsing() {
        let ep = Endpoint::Status;
        let ok = parse_envelope(ep, br#"{"code":200,"data":{"status":100,"msg":"x"}}"#);
        assert_eq!(ok.unwrap()["status"], 100);
        for (body, errno) in [
            (r#"{"code":9000,"errno":9005,"msg":"no"}"#, 9005),
            (r#"{"code":9000,"errno":"9002"}"#, 9002),
        ] {
            match parse_envelope(ep, body.as_bytes()) {
                Err(e) => assert_eq!(
                    std::mem::discriminant(&e),
                    std::mem::discriminant(&ApiError::from_errno(ep, errno, String::new()))
                ),
                Ok(v) => panic!("{v}"),
            }
        }
        for bad in [
            "<html>oops</html>",
            r#"{"code":200}"#,
            r#"{"code":9000,"msg":"no errno"}"#,
            r#"{"code":"200","data":{}}"#,
            r#"{"code":302,"data":{}}"#,
        ] {
            assert!(
                matches!(
                    parse_envelope(ep, bad.as_bytes()),
                    Err(ApiError::BadBody { .. })
                ),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn a_shrinking_file_ends_the_stream_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.jpg");
        std::fs::write(&path, b"0123456789").unwrap();
        let file = tokio::fs::File::open(&path).await.unwrap();
        let tracker = Arc::new(Tracker::new(&path));
        let items: Vec<_> = hashing_stream(file, 15, tracker.clone()).collect().await;
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].as_ref().unwrap().len(), 10);
        assert!(items[1].is_err());
        let e = tracker.read_error().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        // A file longer than announced is cut at the announced length.
        let file = tokio::fs::File::open(&path).await.unwrap();
        let tracker = Arc::new(Tracker::new(&path));
        let n: usize = hashing_stream(file, 4, tracker.clone())
            .map(|c| c.unwrap().len())
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .sum();
        assert_eq!(n, 4);
        assert_eq!(tracker.finish().0, hex::encode(Sha256::digest(b"0123")));
    }

    #[test]
    fn small_photos_are_read_whole_and_large_ones_streamed() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small.jpg");
        let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xE0];
        bytes.resize(READ_WHOLE as usize, 7);
        std::fs::write(&small, &bytes).unwrap();
        match open_for_upload(&small).unwrap() {
            (Opened::Read(read), len, head, got) => {
                assert_eq!(read, bytes);
                assert_eq!((len, got), (READ_WHOLE, 8));
                assert_eq!(sniff_mime(&head[..got]), "image/jpeg");
            }
            _ => panic!("a file of {READ_WHOLE} bytes is read whole"),
        }
        let large = dir.path().join("large.png");
        let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
        bytes.resize(READ_WHOLE as usize + 1, 1);
        std::fs::write(&large, &bytes).unwrap();
        match open_for_upload(&large).unwrap() {
            (Opened::Stream(mut f), len, head, got) => {
                assert_eq!((len, got), (READ_WHOLE + 1, 8));
                assert_eq!(sniff_mime(&head[..got]), "image/png");
                let mut rest = Vec::new();
                std::io::Read::read_to_end(&mut f, &mut rest).unwrap();
                assert_eq!(rest, bytes, "rewound to the start");
            }
            _ => panic!("a larger file is streamed"),
        }
        assert!(
            open_for_upload(dir.path()).is_err(),
            "a directory is refused"
        );
    }

    #[test]
    fn mdf_and_url_validation() {
        for good in [
            "40b37f58db153e5149f008421797714e",
            "a",
            "A_b-9",
            &"x".repeat(128),
        ] {
            assert!(check_mdf(good).is_ok(), "{good}");
        }
        let huge = "hostile text ".repeat(800);
        for bad in [
            "",
            "../../etc/passwd",
            "a b",
            "a/b",
            "é",
            "a\n",
            &"x".repeat(129),
            &huge,
        ] {
            let e = check_mdf(bad).unwrap_err();
            assert!(e.len() < 200, "error stays short: {e}");
        }
        assert!(check_url("https://photo.example.com/static/life_img/x01100.jpg").is_ok());
        assert!(check_url("http://127.0.0.1:8080/a.jpg").is_ok());
        for bad in [
            "file:///etc/passwd",
            "ftp://127.0.0.1/x.jpg",
            "http//x",
            "/static/x.jpg",
            "https://",
            "data:image/jpeg;base64,AAAA",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mime_from_magic_bytes() {
        assert_eq!(sniff_mime(&[0xFF, 0xD8, 0xFF, 0xE0]), "image/jpeg");
        assert_eq!(sniff_mime(b"\x89PNG\r\n\x1a\n"), "image/png");
        assert_eq!(sniff_mime(b"GIF89a"), "application/octet-stream");
    }

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
