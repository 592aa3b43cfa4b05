//! Integration tests: the API client against small hand-made servers on 127.0.0.1 (the real
//! simulator lives elsewhere): wire format, tokens, error classes, clock skew, secrecy and
//! streaming memory use.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hili::api::client::{ApiClient, ClientOptions, JobStatus};
use hili::api::clock::Clock;
use hili::api::error::{ApiError, ERRNOS, ErrorClass, errno_class};
use hili::repair::{Repair, Rgb};
use hili::secret::Secret;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SECRET: &str = "s3cr3t-never-shown-4711";
const JPEG: &[u8] = &[
    0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F', 0, 1, 2, 3,
];

/// What the test server saw of one request.
#[derive(Debug, Clone, Default)]
struct Seen {
    path: String,
    token: Option<String>,
    /// Form fields in order: (name, text value or file summary).
    fields: Vec<(String, String)>,
    file_name: Option<String>,
    file_type: Option<String>,
    file_sha256: Option<String>,
    file_len: u64,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How the server answers.
struct Reply {
    status: u16,
    body: String,
    date_skew: i64,
    delay: Duration,
}

fn reply(body: Value) -> Reply {
    Reply {
        status: 200,
        body: body.to_string(),
        date_skew: 0,
        delay: Duration::ZERO,
    }
}

fn errno(n: i64) -> Reply {
    reply(json!({"code": 9000, "errno": n, "msg": "nope"}))
}

/// The success answer of each endpoint.
fn success(path: &str) -> Reply {
    reply(match path {
        "/api/third/photo/upload" => {
            json!({"code":200,"data":{"img_url":"https://x/y.jpg","mdf":"40b37f58db153e5149f008421797714e"}})
        }
        "/api/third/photo/status" => json!({"code":200,"data":{"msg":"ok","status":200}}),
        "/api/third/photo/download" => json!({"code":200,"data":{"url":"https://x/r.jpg"}}),
        _ => json!({"code":200,"data":{"code":"tc","nums":98}}),
    })
}

type Script = dyn Fn(&Seen, usize) -> Reply + Send + Sync;

struct Srv {
    seen: Mutex<Vec<Seen>>,
    count: AtomicUsize,
    script: Box<Script>,
}

async fn handle(
    State(srv): State<Arc<Srv>>,
    uri: Uri,
    headers: HeaderMap,
    mut mp: Multipart,
) -> Response {
    let mut seen = Seen {
        path: uri.path().to_string(),
        token: headers
            .get("token")
            .and_then(|v| v.to_str().ok())
            .map(String::from),
        ..Seen::default()
    };
    while let Ok(Some(mut field)) = mp.next_field().await {
        let name = field.name().unwrap_or("").to_string();
        if let Some(f) = field.file_name() {
            seen.file_name = Some(f.to_string());
            seen.file_type = field.content_type().map(String::from);
            let mut h = Sha256::new();
            while let Ok(Some(chunk)) = field.chunk().await {
                h.update(&chunk);
                seen.file_len += chunk.len() as u64;
            }
            seen.file_sha256 = Some(hex::encode(h.finalize()));
            seen.fields.push((name, "<file>".into()));
        } else {
            let text = field.text().await.unwrap_or_default();
            seen.fields.push((name, text));
        }
    }
    let n = srv.count.fetch_add(1, Ordering::SeqCst);
    let r = (srv.script)(&seen, n);
    srv.seen.lock().unwrap().push(seen);
    tokio::time::sleep(r.delay).await;
    let date = SystemTime::now() + Duration::from_secs(r.date_skew.max(0) as u64)
        - Duration::from_secs((-r.date_skew).max(0) as u64);
    (
        StatusCode::from_u16(r.status).unwrap(),
        [(header::DATE, httpdate::fmt_http_date(date))],
        r.body,
    )
        .into_response()
}

/// Starts an axum server answering every path by `script`; returns its base URL and state.
async fn serve(
    script: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static,
) -> (String, Arc<Srv>) {
    let srv = Arc::new(Srv {
        seen: Mutex::new(Vec::new()),
        count: AtomicUsize::new(0),
        script: Box::new(script),
    });
    let app = axum::Router::new()
        .fallback(axum::routing::post(handle))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(srv.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), srv)
}

/// A server that accepts connections, reads a little, and drops them without answering.
async fn serve_drop() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = [0u8; 512];
            let _ = sock.read(&mut buf).await;
            drop(sock);
        }
    });
    format!("http://{addr}")
}

/// An address where nothing listens.
async fn refused() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

fn client(base_url: &str, third_code: &str, timeout: Duration) -> ApiClient {
    ApiClient::new(ClientOptions {
        base_url: base_url.to_string(),
        third_code: third_code.to_string(),
        secret: Secret::new(SECRET),
        timeout,
    })
    .unwrap()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Checks a token as the vendor would: md5(secret + time), time within 120 s of `server_now`.
fn token_ok(token: Option<&str>, server_now: i64) -> bool {
    let Some((md, t)) = token.and_then(|t| t.split_once(',')) else {
        return false;
    };
    let Ok(t) = t.parse::<i64>() else {
        return false;
    };
    md == hili::api::token::digest(SECRET, t) && (t - server_now).abs() <= 120
}

fn photo(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Runs each of the four calls and returns its error, if any.
async fn all_calls(c: &ApiClient, file: &Path) -> Vec<(&'static str, Result<(), ApiError>)> {
    vec![
        ("upload", c.upload(file, Repair::Sr, None).await.map(|_| ())),
        ("status", c.status("m").await.map(|_| ())),
        ("download", c.download_url("m").await.map(|_| ())),
        ("nums", c.credits().await.map(|_| ())),
    ]
}

#[tokio::test]
async fn upload_form_matches_the_curl_example() {
    let dir = tempfile::tempdir().unwrap();
    let (url, srv) = serve(|s, _| success(&s.path)).await;
    let c = client(&url, "TC-42", Duration::from_secs(10));
    let jpg = photo(dir.path(), "photo.jpg", JPEG);
    let up = c
        .upload(&jpg, Repair::Bg, Some(Rgb(255, 255, 255)))
        .await
        .unwrap();
    assert_eq!(up.mdf, "40b37f58db153e5149f008421797714e");
    assert_eq!(up.img_url, "https://x/y.jpg");
    assert_eq!(up.sent_bytes, JPEG.len() as u64);
    assert_eq!(up.sent_sha256, hex::encode(Sha256::digest(JPEG)));
    // A PNG with sr: no rgb even if one is given.
    let png_bytes = b"\x89PNG\r\n\x1a\n0000rest";
    let png = photo(dir.path(), "scan 01.png", png_bytes);
    c.upload(&png, Repair::Colour, Some(Rgb(1, 2, 3)))
        .await
        .unwrap();
    let seen = srv.seen.lock().unwrap().clone();
    let names = |s: &Seen| s.fields.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(seen[0].path, "/api/third/photo/upload");
    assert_eq!(
        names(&seen[0]),
        ["repair_type", "third_code", "file", "rgb"]
    );
    assert_eq!(seen[0].field("repair_type"), Some("bg"));
    assert_eq!(seen[0].field("third_code"), Some("TC-42"));
    assert_eq!(seen[0].field("rgb"), Some("255,255,255"));
    assert_eq!(seen[0].file_name.as_deref(), Some("photo.jpg"));
    assert_eq!(seen[0].file_type.as_deref(), Some("image/jpeg"));
    assert_eq!(
        seen[0].file_sha256.as_deref(),
        Some(up.sent_sha256.as_str())
    );
    assert_eq!(seen[0].file_len, JPEG.len() as u64);
    assert_eq!(names(&seen[1]), ["repair_type", "third_code", "file"]);
    assert_eq!(seen[1].field("repair_type"), Some("sr,repair,colour"));
    assert_eq!(seen[1].file_name.as_deref(), Some("scan 01.png"));
    assert_eq!(seen[1].file_type.as_deref(), Some("image/png"));
    assert_eq!(seen[1].file_len, png_bytes.len() as u64);
}

#[tokio::test]
async fn read_only_calls_send_third_code_and_mdf() {
    let (url, srv) = serve(|s, _| success(&s.path)).await;
    let c = client(&url, "TC-42", Duration::from_secs(10));
    assert_eq!(c.status("abc").await.unwrap(), JobStatus::Done);
    assert_eq!(c.download_url("abc").await.unwrap(), "https://x/r.jpg");
    assert_eq!(c.credits().await.unwrap(), 98);
    let seen = srv.seen.lock().unwrap().clone();
    let pairs = |s: &Seen| s.fields.clone();
    let with_mdf = vec![
        ("third_code".to_string(), "TC-42".to_string()),
        ("mdf".to_string(), "abc".to_string()),
    ];
    assert_eq!(seen[0].path, "/api/third/photo/status");
    assert_eq!(pairs(&seen[0]), with_mdf);
    assert_eq!(seen[1].path, "/api/third/photo/download");
    assert_eq!(pairs(&seen[1]), with_mdf);
    assert_eq!(seen[2].path, "/api/third/company/nums");
    assert_eq!(pairs(&seen[2]), vec![with_mdf[0].clone()]);
}

#[tokio::test]
async fn status_processing_is_reported() {
    let (url, _srv) =
        serve(|_, _| reply(json!({"code":200,"data":{"msg":"wait","status":100}}))).await;
    let c = client(&url, "tc", Duration::from_secs(10));
    assert_eq!(c.status("m").await.unwrap(), JobStatus::Processing);
}

#[tokio::test]
async fn token_is_valid_and_fresh_per_request() {
    let (url, srv) = serve(|s, _| success(&s.path)).await;
    let c = client(&url, "tc", Duration::from_secs(10));
    c.credits().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.status("m").await.unwrap();
    let seen = srv.seen.lock().unwrap().clone();
    let now = unix_now();
    let tokens: Vec<_> = seen.iter().map(|s| s.token.clone().unwrap()).collect();
    for t in &tokens {
        let (_, ts) = t.split_once(',').unwrap();
        assert!((ts.parse::<i64>().unwrap() - now).abs() <= 3, "{t}");
        assert!(token_ok(Some(t), now), "{t}");
    }
    assert_ne!(tokens[0], tokens[1], "a token must be made per request");
}

#[tokio::test]
async fn every_errno_over_the_wire_has_its_class() {
    let dir = tempfile::tempdir().unwrap();
    let file = photo(dir.path(), "a.jpg", JPEG);
    // The server answers the errno written in third_code.
    let (url, _srv) = serve(|s, _| errno(s.field("third_code").unwrap().parse().unwrap())).await;
    // Every errno of the one table, and one it does not know.
    let mut errnos: Vec<i64> = ERRNOS.iter().map(|row| row.errno).collect();
    errnos.push(7777);
    errnos.dedup();
    for n in errnos {
        let c = client(&url, &n.to_string(), Duration::from_secs(10));
        for (call, r) in all_calls(&c, &file).await {
            let e = r.unwrap_err();
            assert_eq!(e.errno(), Some(n), "{call} errno {n}: {e}");
            let class = errno_class(e.endpoint(), n);
            assert_eq!(e.class(), class, "{call} errno {n}: {e}");
        }
    }
}

#[tokio::test]
async fn transport_failures_have_their_class() {
    let dir = tempfile::tempdir().unwrap();
    let file = photo(dir.path(), "a.jpg", JPEG);
    let (slow, _a) = serve(|s, _| Reply {
        delay: Duration::from_secs(3),
        ..success(&s.path)
    })
    .await;
    let (html, _b) = serve(|_, _| Reply {
        status: 500,
        body: "<html><body><h1>500 Internal Server Error</h1></body></html>".into(),
        ..reply(json!({}))
    })
    .await;
    let (garbage, _c) = serve(|_, _| Reply {
        body: "<html>maintenance</html>".into(),
        ..reply(json!({}))
    })
    .await;
    let (fields, _d) = serve(|_, _| reply(json!({"code":200,"data":{"unrelated":1}}))).await;
    let (wrong_type, _e) = serve(|_, _| {
        reply(json!({"code":200,"data":{"mdf":5,"img_url":[],"status":"x","url":1,"nums":-1}}))
    })
    .await;
    let dropper = serve_drop().await;
    let nobody = refused().await;
    use ErrorClass::*;
    let cases: Vec<(&str, String, ErrorClass, ErrorClass)> = vec![
        ("timeout", slow, Ambiguous, Transient),
        ("html 500", html, Transient, Transient),
        ("non-json", garbage, Ambiguous, Transient),
        ("missing fields", fields, Ambiguous, Transient),
        ("wrong types", wrong_type, Ambiguous, Transient),
        ("closed", dropper, Ambiguous, Transient),
        ("refused", nobody, Transient, Transient),
    ];
    for (what, url, upload_class, read_class) in cases {
        let c = client(&url, "tc", Duration::from_secs(1));
        for (call, r) in all_calls(&c, &file).await {
            let e = r.unwrap_err();
            let want = if call == "upload" {
                upload_class
            } else {
                read_class
            };
            assert_eq!(e.class(), want, "{what} on {call}: {e:?}");
            let kind_ok = match what {
                "timeout" => matches!(e, ApiError::Timeout { .. }),
                "html 500" => {
                    matches!(&e, ApiError::HttpStatus { status: 500, snippet, .. } if snippet.contains("Internal Server Error"))
                }
                "closed" => matches!(e, ApiError::Transport { .. }),
                "refused" => matches!(e, ApiError::Connect { .. }),
                _ => matches!(e, ApiError::BadBody { .. }),
            };
            assert!(kind_ok, "{what} on {call}: {e:?}");
        }
    }
}

#[tokio::test]
async fn unreadable_file_is_a_read_error_and_sends_nothing() {
    let (url, srv) = serve(|s, _| success(&s.path)).await;
    let c = client(&url, "tc", Duration::from_secs(5));
    let e = c
        .upload(Path::new("/nonexistent/x.jpg"), Repair::Sr, None)
        .await
        .unwrap_err();
    assert!(matches!(e, ApiError::ReadFile { .. }), "{e:?}");
    assert_eq!(e.class(), ErrorClass::PermanentForPhoto);
    assert!(e.to_string().contains("/nonexistent/x.jpg"), "{e}");
    assert_eq!(srv.count.load(Ordering::SeqCst), 0);
}

/// A `MakeWriter` into a shared buffer, to capture tracing output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let sub = tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(sub)
    }
}

/// A vendor whose clock runs `skew` seconds ahead of true time and checks tokens against it.
async fn skewed_vendor(skew: i64) -> (String, Arc<Srv>) {
    serve(move |s, _| {
        let r = if token_ok(s.token.as_deref(), unix_now() + skew) {
            success(&s.path)
        } else {
            errno(9999)
        };
        Reply {
            date_skew: skew,
            ..r
        }
    })
    .await
}

#[tokio::test]
async fn server_clock_ahead_is_corrected_after_one_9999() {
    let logs = Captured::default();
    let _guard = logs.install();
    let dir = tempfile::tempdir().unwrap();
    let file = photo(dir.path(), "a.jpg", JPEG);
    let (url, srv) = skewed_vendor(300).await;
    let c = client(&url, "tc", Duration::from_secs(10));
    // The first answer is 9999 with a Date 300 s ahead: the upload is retried once, corrected.
    let up = c.upload(&file, Repair::Sr, None).await.unwrap();
    assert_eq!(up.sent_bytes, JPEG.len() as u64);
    assert_eq!(srv.count.load(Ordering::SeqCst), 2);
    assert!((c.clock().offset().unwrap() - 300).abs() <= 2);
    // Later calls are stamped right the first time.
    assert_eq!(c.credits().await.unwrap(), 98);
    c.status("m").await.unwrap();
    assert_eq!(srv.count.load(Ordering::SeqCst), 4);
    let text = logs.text();
    let warnings: Vec<_> = text.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(
        warnings[0].contains("NTP") && warnings[0].contains("behind"),
        "{text}"
    );
}

#[tokio::test]
async fn skewed_workstation_is_corrected_and_wrong_secret_is_not_retried() {
    let (url, srv) = skewed_vendor(0).await;
    let c = client(&url, "tc", Duration::from_secs(10)).with_clock(Clock::with_local_skew(-400));
    assert_eq!(c.credits().await.unwrap(), 98);
    assert_eq!(srv.count.load(Ordering::SeqCst), 2);
    // A wrong secret with a right clock: 9999 once, no retry.
    let wrong = ApiClient::new(ClientOptions {
        base_url: url.clone(),
        third_code: "tc".into(),
        secret: Secret::new("wrong"),
        timeout: Duration::from_secs(10),
    })
    .unwrap();
    let e = wrong.credits().await.unwrap_err();
    assert!(matches!(e, ApiError::BadToken { .. }), "{e:?}");
    assert_eq!(srv.count.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn the_secret_never_shows() {
    let logs = Captured::default();
    let _guard = logs.install();
    let dir = tempfile::tempdir().unwrap();
    let file = photo(dir.path(), "a.jpg", JPEG);
    let (url, _srv) = skewed_vendor(500).await;
    let (echo, _e) = serve(|s, _| Reply {
        status: 502,
        body: format!("bad gateway for token {:?}", s.token),
        ..reply(json!({}))
    })
    .await;
    let mut shown = Vec::new();
    for base in [url, echo, serve_drop().await, refused().await] {
        let c = client(&base, "tc", Duration::from_secs(5)).with_clock(Clock::new());
        shown.push(format!("{c:?}"));
        for (_, r) in all_calls(&c, &file).await {
            if let Err(e) = r {
                shown.push(format!("{e} {e:?}"));
            }
        }
        let e = c
            .upload(Path::new("/missing.jpg"), Repair::Sr, None)
            .await
            .unwrap_err();
        shown.push(format!("{e} {e:?}"));
    }
    shown.push(logs.text());
    let all = shown.join("\n");
    assert!(
        all.contains("WARN"),
        "the test should have logged something"
    );
    assert!(!all.contains(SECRET), "{all}");
}

/// Peak resident memory of this process, in KiB.
fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A raw HTTP server that reads the request, discards its body, and answers an upload success.
async fn serve_discard() -> (String, Arc<Mutex<Option<u64>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(None));
    let rec = received.clone();
    tokio::spawn(async move {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if sock.read(&mut byte).await.unwrap_or(0) == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let len: u64 = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .expect("the upload must declare its length");
        let mut left = len;
        let mut buf = vec![0u8; 256 * 1024];
        while left > 0 {
            let n = sock.read(&mut buf).await.unwrap();
            assert!(n > 0, "body cut short");
            left -= n.min(left as usize) as u64;
        }
        *rec.lock().unwrap() = Some(len);
        let body = r#"{"code":200,"data":{"img_url":"https://x/y.jpg","mdf":"big"}}"#;
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = sock.write_all(resp.as_bytes()).await;
    });
    (format!("http://{addr}"), received)
}

#[tokio::test]
async fn a_300_mb_upload_streams_in_bounded_memory() {
    const SIZE: u64 = 300 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.jpg");
    {
        let f = std::fs::File::create(&path).unwrap();
        (&f).write_all(JPEG).unwrap();
        f.set_len(SIZE).unwrap();
    }
    // Reset the peak counter if the kernel allows, so earlier tests do not mask growth.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = vm_hwm_kib();
    let (url, received) = serve_discard().await;
    let c = client(&url, "tc", Duration::from_secs(120));
    let up = c.upload(&path, Repair::Sr, None).await.unwrap();
    let after = vm_hwm_kib();
    assert_eq!(up.sent_bytes, SIZE);
    assert!(received.lock().unwrap().unwrap() > SIZE);
    let mut h = Sha256::new();
    h.update(JPEG);
    let zeros = vec![0u8; 1 << 20];
    let mut left = SIZE - JPEG.len() as u64;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        h.update(&zeros[..n]);
        left -= n as u64;
    }
    assert_eq!(up.sent_sha256, hex::encode(h.finalize()));
    let grown_mib = after.saturating_sub(before) / 1024;
    eprintln!("HWM before {before} KiB after {after} KiB");
    assert!(grown_mib < 64, "peak RSS grew by {grown_mib} MiB");
}
