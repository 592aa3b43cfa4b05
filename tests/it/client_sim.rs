//! The real `ApiClient` against the real simulator over 127.0.0.1: the four endpoints in a
//! full round trip, every error the simulator can produce mapped to its `ApiError` variant and
//! class, tokens that are too old or from the future, and clock-skew correction in both
//! directions. The simulator's ledger is the witness for what was charged.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hili::api::client::{ApiClient, ClientOptions, JobStatus};
use hili::api::clock::Clock;
use hili::api::error::{ApiError, ErrorClass};
use hili::api::token::token;
use hili::repair::{Repair, Rgb};
use hili::secret::Secret;
use hili::sim::{Faults, SimOptions};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::helpers::*;

/// Every test body runs under this bound, so a hang fails instead of stalling the suite.
async fn bounded<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .expect("test took longer than 60 s")
}

fn client_with(env: &Env, third_code: &str, secret: &str, timeout: Duration) -> ApiClient {
    ApiClient::new(ClientOptions {
        base_url: env.sim.base_url(),
        third_code: third_code.into(),
        secret: Secret::new(secret),
        timeout,
    })
    .unwrap()
}

/// A sim started with `opts` and the default client for it.
async fn env_and_client(opts: SimOptions) -> (Env, ApiClient) {
    let env = Env::new(opts).await;
    let c = env.client();
    (env, c)
}

/// Faults with only the named one, always on.
macro_rules! always {
    ($fault:ident) => {
        Faults {
            $fault: 1.0,
            ..Faults::default()
        }
    };
}

/// Polls `mdf` every 100 ms until it is no longer processing (at most 10 s).
async fn wait_processed(c: &ApiClient, mdf: &str) {
    let mut polls = 0;
    while c.status(mdf).await.unwrap() == JobStatus::Processing {
        polls += 1;
        assert!(polls < 100, "still processing after 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

fn jpeg(env: &Env, name: &str, seed: u32) -> PathBuf {
    let p = env.inbox.join(name);
    write_jpeg(&p, seed);
    p
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Asserts `r` failed with the variant `pat` and the class `class`; returns the error.
macro_rules! assert_err {
    ($r:expr, $pat:pat, $class:expr) => {{
        let e = match $r {
            Ok(v) => panic!("expected an error, got {v:?}"),
            Err(e) => e,
        };
        assert!(matches!(e, $pat), "wrong variant: {e:?}");
        assert_eq!(e.class(), $class, "wrong class for {e:?}");
        assert!(!e.to_string().contains(SECRET), "secret in message: {e}");
        e
    }};
}

#[tokio::test]
async fn all_four_endpoints_round_trip() {
    bounded(async {
        // Processing long enough that the first status answer is surely 100.
        let (env, c) = env_and_client(SimOptions {
            processing: Duration::from_millis(1500),
            ..fast_sim()
        })
        .await;
        assert_eq!(c.credits().await.unwrap(), 1000);

        let src = jpeg(&env, "p.jpg", 1);
        let up = c.upload(&src, Repair::Sr, None).await.unwrap();
        assert!(!up.mdf.is_empty() && up.img_url.starts_with("http://127.0.0.1:"));
        assert_eq!(up.sent_sha256, sha256_of(&src));
        assert_eq!(up.sent_bytes, std::fs::metadata(&src).unwrap().len());
        assert_eq!(c.credits().await.unwrap(), 999, "one upload, one credit");

        assert_eq!(c.status(&up.mdf).await.unwrap(), JobStatus::Processing);
        wait_processed(&c, &up.mdf).await;

        let url = c.download_url(&up.mdf).await.unwrap();
        assert!(url.starts_with(&env.sim.base_url()), "{url}");
        let resp = c.http().get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let bytes = resp.bytes().await.unwrap();
        let img = image::load_from_memory(&bytes).expect("the result decodes");
        // sr doubles both sides of the 48×32 input.
        assert_eq!((img.width(), img.height()), (96, 64));

        let ledger = env.sim.ledger();
        assert_eq!(ledger.total_charges, 1);
        assert_eq!(ledger.charges[0].mdf, up.mdf);
        assert_eq!(ledger.charges[0].sha256, up.sent_sha256);
        assert_eq!(ledger.charges[0].repair_type, "sr");
    })
    .await
}

#[tokio::test]
async fn bg_with_rgb_is_sent_and_charged_with_its_colour() {
    bounded(async {
        let env = Env::new(fast_sim()).await;
        let src = jpeg(&env, "id.jpg", 2);
        env.client()
            .upload(&src, Repair::Bg, Some(Rgb(255, 0, 0)))
            .await
            .unwrap();
        let l = env.sim.ledger();
        assert_eq!(l.charges[0].repair_type, "bg");
        assert_eq!(l.charges[0].rgb.as_deref(), Some("255,0,0"));
    })
    .await
}

#[tokio::test]
async fn wrong_secret_is_9999_misconfigured_and_never_charged() {
    bounded(async {
        let env = Env::new(fast_sim()).await;
        let c = client_with(&env, THIRD, "not-the-secret", Duration::from_secs(5));
        assert_err!(
            c.credits().await,
            ApiError::BadToken { .. },
            ErrorClass::Misconfigured
        );
        let src = jpeg(&env, "p.jpg", 1);
        assert_err!(
            c.upload(&src, Repair::Sr, None).await,
            ApiError::BadToken { .. },
            ErrorClass::Misconfigured
        );
        assert_err!(
            c.status("0123456789abcdef").await,
            ApiError::BadToken { .. },
            ErrorClass::Misconfigured
        );
        assert_eq!(env.sim.ledger().total_charges, 0);
        assert_eq!(env.sim.credits(), 1000);
    })
    .await
}

#[tokio::test]
async fn unknown_third_code_is_9002_on_nums_and_9999_on_upload() {
    bounded(async {
        let env = Env::new(fast_sim()).await;
        let c = client_with(&env, "nobody", SECRET, Duration::from_secs(5));
        assert_err!(
            c.credits().await,
            ApiError::UnknownAccount { .. },
            ErrorClass::Misconfigured
        );
        let src = jpeg(&env, "p.jpg", 1);
        assert_err!(
            c.upload(&src, Repair::Sr, None).await,
            ApiError::BadToken { .. },
            ErrorClass::Misconfigured
        );
        assert_eq!(env.sim.ledger().total_charges, 0);
    })
    .await
}

#[tokio::test]
async fn zero_credits_is_9101_account_wide() {
    bounded(async {
        let (env, c) = env_and_client(SimOptions {
            credits: 0,
            ..fast_sim()
        })
        .await;
        assert_eq!(c.credits().await.unwrap(), 0);
        let src = jpeg(&env, "p.jpg", 1);
        assert_err!(
            c.upload(&src, Repair::Sr, None).await,
            ApiError::NoCredits { .. },
            ErrorClass::AccountWide
        );
        // Topped up, the same upload goes through.
        env.sim.add_credits(1);
        c.upload(&src, Repair::Sr, None).await.unwrap();
        assert_eq!(c.credits().await.unwrap(), 0);
        assert_eq!(env.sim.ledger().total_charges, 1);
    })
    .await
}

#[tokio::test]
async fn input_the_service_refuses_is_permanent_and_not_charged() {
    bounded(async {
        let (env, c) = env_and_client(fast_sim()).await;

        // 9001: bg without a colour (the client sends no rgb field).
        let src = jpeg(&env, "p.jpg", 1);
        assert_err!(
            c.upload(&src, Repair::Bg, None).await,
            ApiError::BadParameters { .. },
            ErrorClass::PermanentForPhoto
        );

        // 9005: not an image at all, whatever its name says.
        let text = env.inbox.join("notes.jpg");
        std::fs::write(&text, "shopping list: milk, eggs\n").unwrap();
        assert_err!(
            c.upload(&text, Repair::Sr, None).await,
            ApiError::UnsupportedType { .. },
            ErrorClass::PermanentForPhoto
        );

        // 9009: a real PNG wider than the 6000 px limit.
        let wide = env.inbox.join("wide.png");
        image::RgbImage::from_pixel(7000, 10, image::Rgb([10, 20, 30]))
            .save_with_format(&wide, image::ImageFormat::Png)
            .unwrap();
        assert_err!(
            c.upload(&wide, Repair::Sr, None).await,
            ApiError::ImageAbnormal { .. },
            ErrorClass::PermanentForPhoto
        );

        // 9002 on status and download for an mdf the service never issued.
        assert_err!(
            c.status("feedfacefeedface").await,
            ApiError::NotFound { .. },
            ErrorClass::PermanentForPhoto
        );
        assert_err!(
            c.download_url("feedfacefeedface").await,
            ApiError::NotFound { .. },
            ErrorClass::PermanentForPhoto
        );

        let l = env.sim.ledger();
        assert_eq!((l.total_charges, l.credits_left), (0, 1000));
    })
    .await
}

#[tokio::test]
async fn download_before_processing_ends_is_errno_500_transient() {
    bounded(async {
        let (env, c) = env_and_client(SimOptions {
            processing: Duration::from_secs(30),
            ..fast_sim()
        })
        .await;
        let up = c
            .upload(&jpeg(&env, "p.jpg", 1), Repair::Sr, None)
            .await
            .unwrap();
        assert_err!(
            c.download_url(&up.mdf).await,
            ApiError::Server { .. },
            ErrorClass::Transient
        );
    })
    .await
}

#[tokio::test]
async fn injected_9006_and_9009_are_not_charged() {
    bounded(async {
        let (env, c) = env_and_client(fast_sim()).await;
        let src = jpeg(&env, "p.jpg", 1);
        env.sim.set_faults(always!(e9006));
        assert_err!(
            c.upload(&src, Repair::Sr, None).await,
            ApiError::UploadFailed { .. },
            ErrorClass::Transient
        );
        env.sim.set_faults(always!(e9009));
        assert_err!(
            c.upload(&src, Repair::Sr, None).await,
            ApiError::ImageAbnormal { .. },
            ErrorClass::PermanentForPhoto
        );
        // Upload-only faults leave the read-only endpoints alone.
        assert_eq!(c.credits().await.unwrap(), 1000);
        assert_eq!(env.sim.ledger().total_charges, 0);
    })
    .await
}

#[tokio::test]
async fn html_500_is_http_status_transient_on_every_endpoint() {
    bounded(async {
        let (env, c) = env_and_client(fast_sim()).await;
        env.sim.set_faults(always!(http500));
        let e = assert_err!(
            c.credits().await,
            ApiError::HttpStatus { status: 500, .. },
            ErrorClass::Transient
        );
        assert!(e.to_string().contains("500"), "{e}");
        assert_err!(
            c.upload(&jpeg(&env, "p.jpg", 1), Repair::Sr, None).await,
            ApiError::HttpStatus { status: 500, .. },
            ErrorClass::Transient
        );
        assert_err!(
            c.status("feedface").await,
            ApiError::HttpStatus { status: 500, .. },
            ErrorClass::Transient
        );
        assert_eq!(env.sim.ledger().total_charges, 0);
    })
    .await
}

#[tokio::test]
async fn reset_is_ambiguous_on_upload_and_transient_on_status() {
    bounded(async {
        let (env, c) = env_and_client(fast_sim()).await;
        let src = jpeg(&env, "p.jpg", 1);
        let up = c.upload(&src, Repair::Sr, None).await.unwrap();

        env.sim.set_faults(always!(reset));
        // The reset comes before the sim does anything, but the client cannot know that.
        assert_err!(
            c.upload(&src, Repair::Sr, None).await,
            ApiError::Transport { .. },
            ErrorClass::Ambiguous
        );
        assert_err!(
            c.status(&up.mdf).await,
            ApiError::Transport { .. },
            ErrorClass::Transient
        );
        assert_err!(
            c.credits().await,
            ApiError::Transport { .. },
            ErrorClass::Transient
        );
        env.sim.set_faults(Faults::default());
        assert_eq!(
            env.sim.ledger().total_charges,
            1,
            "the reset upload was not charged"
        );
        assert_eq!(c.credits().await.unwrap(), 999);
    })
    .await
}

#[tokio::test]
async fn charge_drop_is_ambiguous_and_the_ledger_shows_the_charge() {
    bounded(async {
        let (env, c) = env_and_client(fast_sim()).await;
        let src = jpeg(&env, "p.jpg", 1);
        env.sim.set_faults(always!(charge_drop));
        let e = assert_err!(
            c.upload(&src, Repair::Sr, None).await,
            ApiError::Transport { .. },
            ErrorClass::Ambiguous
        );
        assert!(e.to_string().contains("may have been charged"), "{e}");
        env.sim.set_faults(Faults::default());
        let l = env.sim.ledger();
        assert_eq!((l.total_charges, l.credits_left), (1, 999));
        assert_eq!(l.charges[0].sha256, sha256_of(&src));
        // The credit count is how the queue learns of it.
        assert_eq!(c.credits().await.unwrap(), 999);
    })
    .await
}

#[tokio::test]
async fn slow_answer_past_the_timeout_is_a_timeout() {
    bounded(async {
        let env = Env::new(SimOptions {
            latency: Duration::from_secs(4),
            ..fast_sim()
        })
        .await;
        let c = client_with(&env, THIRD, SECRET, Duration::from_secs(1));
        env.sim.set_faults(always!(slow));
        let t0 = std::time::Instant::now();
        assert_err!(
            c.credits().await,
            ApiError::Timeout { .. },
            ErrorClass::Transient
        );
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        // A slow upload is delayed after the work: charged, answer too late.
        assert_err!(
            c.upload(&jpeg(&env, "p.jpg", 1), Repair::Sr, None).await,
            ApiError::Timeout { .. },
            ErrorClass::Ambiguous
        );
        assert_eq!(env.sim.ledger().total_charges, 1);
    })
    .await
}

/// Collects everything logged (at any level) while the guard lives, on this thread. The
/// tests using it run on tokio's current-thread runtime, so the sim's handlers log here too.
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuf {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let w = self.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .finish();
        tracing::subscriber::set_default(sub)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A workstation clock `skew` s off: the sim rejects the first request (token too old or
/// from the future), the client learns the offset from the Date header and its one retry
/// succeeds; later requests succeed at once.
async fn skewed_workstation(skew: i64) {
    let env = Env::new(fast_sim()).await;
    let logs = LogBuf::default();
    let _guard = logs.capture();
    let c = env.client().with_clock(Clock::with_local_skew(skew));
    assert_eq!(c.clock().offset(), None);

    assert_eq!(c.credits().await.unwrap(), 1000);
    let text = logs.text();
    assert_eq!(
        text.matches("sim: POST /api/third/company/nums").count(),
        2,
        "one rejected request, one retry:\n{text}"
    );
    assert!(
        text.contains("token rejected by a skewed clock; retrying once"),
        "{text}"
    );
    let offset = c.clock().offset().unwrap();
    assert!(
        (offset + skew).abs() <= 2,
        "offset {offset} for skew {skew}"
    );

    // Corrected from now on: one request each, all succeed.
    let up = c
        .upload(&jpeg(&env, "p.jpg", 1), Repair::Sr, None)
        .await
        .unwrap();
    c.status(&up.mdf).await.unwrap();
    let text = logs.text();
    assert_eq!(
        text.matches("sim: POST /api/third/photo/upload").count(),
        1,
        "{text}"
    );
    assert_eq!(text.matches("retrying once").count(), 1, "{text}");
    assert!(!text.contains(SECRET), "secret logged:\n{text}");
    assert_eq!(env.sim.ledger().total_charges, 1);
}

#[tokio::test]
async fn workstation_clock_behind_first_token_expired_then_corrected() {
    bounded(skewed_workstation(-200)).await
}

#[tokio::test]
async fn workstation_clock_ahead_first_token_from_the_future_then_corrected() {
    bounded(skewed_workstation(200)).await
}

#[tokio::test]
async fn wrong_secret_with_a_skewed_clock_is_retried_only_once() {
    bounded(async {
        let env = Env::new(fast_sim()).await;
        let logs = LogBuf::default();
        let _guard = logs.capture();
        let c = client_with(&env, THIRD, "wrong", Duration::from_secs(5))
            .with_clock(Clock::with_local_skew(-200));
        assert_err!(
            c.credits().await,
            ApiError::BadToken { .. },
            ErrorClass::Misconfigured
        );
        let text = logs.text();
        assert_eq!(
            text.matches("sim: POST /api/third/company/nums").count(),
            2,
            "{text}"
        );
    })
    .await
}

async fn raw_nums(env: &Env, token: &str) -> Value {
    let form = reqwest::multipart::Form::new().text("third_code", THIRD);
    reqwest::Client::new()
        .post(format!("{}/api/third/company/nums", env.sim.base_url()))
        .header("token", token)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn tokens_older_than_120_s_or_from_the_future_are_rejected() {
    bounded(async {
        let env = Env::new(fast_sim()).await;
        let key = Secret::new(SECRET);
        let now = unix_now();
        let fresh = raw_nums(&env, &token(&key, now - 100)).await;
        assert_eq!(fresh["code"], 200, "{fresh}");
        for (t, what) in [(now - 121, "121 s old"), (now + 60, "60 s in the future")] {
            let v = raw_nums(&env, &token(&key, t)).await;
            assert_eq!(
                (v["code"].as_i64(), v["errno"].as_i64()),
                (Some(9000), Some(9999)),
                "{what}: {v}"
            );
        }
        let forged = format!("{},{now}", "0".repeat(32));
        assert_eq!(raw_nums(&env, &forged).await["errno"], 9999);
    })
    .await
}

#[tokio::test]
async fn sim_clock_300_s_ahead_is_learnt_and_requests_succeed() {
    bounded(async {
        let (env, c) = env_and_client(SimOptions {
            clock_offset_secs: 300,
            ..fast_sim()
        })
        .await;
        assert_eq!(c.credits().await.unwrap(), 1000);
        let offset = c.clock().offset().unwrap();
        assert!((offset - 300).abs() <= 2, "offset {offset}");
        assert!((c.clock().now() - (unix_now() + 300)).abs() <= 2);

        let up = c
            .upload(&jpeg(&env, "p.jpg", 1), Repair::Colour, None)
            .await
            .unwrap();
        wait_processed(&c, &up.mdf).await;
        let url = c.download_url(&up.mdf).await.unwrap();
        let bytes = c
            .http()
            .get(&url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        image::load_from_memory(&bytes).unwrap();
        let l = env.sim.ledger();
        assert_eq!(l.total_charges, 1);
        // Charged at the sim's time, which the client now shares.
        assert!((l.charges[0].time - (unix_now() + 300)).abs() <= 3);
    })
    .await
}
