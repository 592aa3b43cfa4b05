//! Integration tests: sim. The simulator is booted in-process and spoken to over 127.0.0.1
//! with plain reqwest (not the product's client), checking the vendor's shapes and errnos,
//! credits and the ledger, processing/retention timing, the transforms and every fault.

use std::io::{Cursor, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hili::api::token::{digest, token};
use hili::secret::Secret;
use hili::sim::{Faults, Ledger, SimHandle, SimOptions, serve};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

const UPLOAD: &str = "/api/third/photo/upload";
const STATUS: &str = "/api/third/photo/status";
const DOWNLOAD: &str = "/api/third/photo/download";
const NUMS: &str = "/api/third/company/nums";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn fresh_token() -> String {
    token(&Secret::new("demo-secret"), now())
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn sim(opts: SimOptions) -> SimHandle {
    serve(opts).await.unwrap()
}

fn fast() -> SimOptions {
    SimOptions {
        processing: Duration::from_millis(200),
        ..SimOptions::default()
    }
}

/// A 64×48 picture: a red block on a blue background.
fn picture(format: ImageFormat) -> Vec<u8> {
    sized_picture(64, 48, format)
}

fn sized_picture(w: u32, h: u32, format: ImageFormat) -> Vec<u8> {
    let img = RgbImage::from_fn(w, h, |x, y| {
        if (16..48).contains(&x) && (12..36).contains(&y) {
            Rgb([220, 30, 30])
        } else {
            Rgb([20, 40, 230])
        }
    });
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img)
        .write_to(&mut out, format)
        .unwrap();
    out.into_inner()
}

fn upload_form(bytes: Vec<u8>, repair: &str, rgb: Option<&str>) -> Form {
    let mut f = Form::new()
        .text("third_code", "demo")
        .text("repair_type", repair.to_string())
        .part("file", Part::bytes(bytes).file_name("photo.bin"));
    if let Some(rgb) = rgb {
        f = f.text("rgb", rgb.to_string());
    }
    f
}

async fn post_multipart(s: &SimHandle, path: &str, tok: &str, form: Form) -> Value {
    let r = client()
        .post(format!("{}{path}", s.base_url()))
        .header("token", tok)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn upload(s: &SimHandle, bytes: Vec<u8>, repair: &str, rgb: Option<&str>) -> Value {
    post_multipart(s, UPLOAD, &fresh_token(), upload_form(bytes, repair, rgb)).await
}

/// Posts an urlencoded form.
async fn post_form(s: &SimHandle, path: &str, tok: &str, fields: &[(&str, &str)]) -> Value {
    let r = client()
        .post(format!("{}{path}", s.base_url()))
        .header("token", tok)
        .form(fields)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn call(s: &SimHandle, path: &str, mdf: &str) -> Value {
    post_form(
        s,
        path,
        &fresh_token(),
        &[("third_code", "demo"), ("mdf", mdf)],
    )
    .await
}

fn errno(v: &Value) -> i64 {
    assert_eq!(v["code"], 9000, "{v}");
    v["errno"].as_i64().unwrap()
}

fn mdf_of(v: &Value) -> String {
    assert_eq!(v["code"], 200, "{v}");
    v["data"]["mdf"].as_str().unwrap().to_string()
}

/// Polls status until 200 (bounded), returning how many 100s were seen.
async fn wait_done(s: &SimHandle, mdf: &str) -> usize {
    let mut seen_100 = 0;
    let t0 = Instant::now();
    loop {
        let v = call(s, STATUS, mdf).await;
        assert_eq!(v["code"], 200, "{v}");
        match v["data"]["status"].as_i64() {
            Some(200) => return seen_100,
            Some(100) => seen_100 += 1,
            _ => panic!("bad status answer {v}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "never finished");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

/// Download URL, then GET it: (content-type, bytes).
async fn fetch_result(s: &SimHandle, mdf: &str) -> (String, Vec<u8>) {
    let v = call(s, DOWNLOAD, mdf).await;
    let url = v["data"]["url"].as_str().unwrap_or_else(|| panic!("{v}"));
    assert!(url.starts_with(&format!("{}/static/life_img/{mdf}01100.", s.base_url())));
    let r = client().get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    (ct, r.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn tokens_are_checked_against_the_sim_clock() {
    let s = sim(fast()).await;
    let at = |t: i64| token(&Secret::new("demo-secret"), t);
    let nums = |tok: String| {
        let s = &s;
        async move { post_form(s, NUMS, &tok, &[("third_code", "demo")]).await }
    };
    let ok = nums(at(now())).await;
    assert_eq!(
        ok,
        json!({"code": 200, "data": {"code": "demo", "nums": 100}})
    );
    assert_eq!(errno(&nums(at(now() - 200)).await), 9999, "expired");
    assert_eq!(errno(&nums(at(now() + 60)).await), 9999, "future");
    assert_eq!(
        errno(&nums(token(&Secret::new("wrong"), now())).await),
        9999
    );
    assert_eq!(errno(&nums("nonsense".into()).await), 9999);
    assert_eq!(
        errno(&nums(format!("{},abc", digest("demo-secret", now()))).await),
        9999
    );
    let v = post_multipart(
        &s,
        UPLOAD,
        "bad",
        upload_form(picture(ImageFormat::Png), "sr", None),
    )
    .await;
    assert_eq!(
        v,
        json!({"code": 9000, "errno": 9999, "msg": "请求参数token不合法"})
    );
    assert_eq!(s.ledger().total_charges, 0);
    s.shutdown().await;
}

#[tokio::test]
async fn unknown_third_code() {
    let s = sim(fast()).await;
    let tok = fresh_token();
    let bad = [("third_code", "nobody"), ("mdf", "00")];
    for path in [STATUS, DOWNLOAD] {
        assert_eq!(
            errno(&post_form(&s, path, &tok, &bad).await),
            9999,
            "{path}"
        );
    }
    let v = post_form(&s, NUMS, &tok, &bad[..1]).await;
    assert_eq!(v, json!({"code": 9000, "errno": 9002, "msg": "数据未找到"}));
    let form = Form::new()
        .text("third_code", "nobody")
        .text("repair_type", "sr")
        .part("file", Part::bytes(picture(ImageFormat::Png)));
    assert_eq!(errno(&post_multipart(&s, UPLOAD, &tok, form).await), 9999);
    // Unknown mdf with the right code.
    assert_eq!(errno(&call(&s, STATUS, "ffff").await), 9002);
    assert_eq!(s.credits(), 100);
    s.shutdown().await;
}

#[tokio::test]
async fn credits_are_spent_only_by_successful_uploads() {
    let s = sim(SimOptions {
        credits: 2,
        ..fast()
    })
    .await;
    upload(&s, b"not an image".to_vec(), "sr", None).await;
    assert_eq!(s.credits(), 2);
    mdf_of(&upload(&s, picture(ImageFormat::Png), "sr", None).await);
    mdf_of(&upload(&s, picture(ImageFormat::Jpeg), "sr,repair", None).await);
    assert_eq!(s.credits(), 0);
    let v = upload(&s, picture(ImageFormat::Png), "sr", None).await;
    assert_eq!(
        v,
        json!({"code": 9000, "errno": 9101, "msg": "剩余下载次数为0"})
    );
    // Credits run out before parameters are looked at.
    assert_eq!(errno(&upload(&s, b"x".to_vec(), "zz", None).await), 9101);
    s.add_credits(1);
    let nums = post_form(&s, NUMS, &fresh_token(), &[("third_code", "demo")]).await;
    assert_eq!(nums["data"]["nums"], 1);
    mdf_of(&upload(&s, picture(ImageFormat::Png), "sr", None).await);
    // Admin endpoint, as a test running the sim as a child process would use it.
    let c = client();
    let r: Value = c
        .post(format!("{}/__sim/credits", s.base_url()))
        .json(&json!({"set": 5}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["credits_left"], 5);
    c.post(format!("{}/__sim/credits", s.base_url()))
        .json(&json!({"add": 2}))
        .send()
        .await
        .unwrap();
    let l: Ledger = c
        .get(format!("{}/__sim/ledger", s.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((l.total_charges, l.credits_left), (3, 7));
    s.shutdown().await;
}

#[tokio::test]
async fn every_validation_errno_and_none_charged() {
    let s = sim(fast()).await;
    let png = || picture(ImageFormat::Png);
    let v = upload(&s, b"hello, I am text".to_vec(), "sr", None).await;
    assert_eq!(
        v,
        json!({"code": 9000, "errno": 9005, "msg": "文件上传类型不支持"})
    );
    assert_eq!(
        errno(&upload(&s, png(), "bg", None).await),
        9001,
        "bg without rgb"
    );
    assert_eq!(errno(&upload(&s, png(), "bg", Some("256,0,0")).await), 9001);
    assert_eq!(errno(&upload(&s, png(), "bg", Some("red")).await), 9001);
    assert_eq!(
        errno(&upload(&s, png(), "repair", None).await),
        9001,
        "friendly name"
    );
    assert_eq!(errno(&upload(&s, png(), "sharpen", None).await), 9001);
    let no_type = Form::new()
        .text("third_code", "demo")
        .part("file", Part::bytes(png()));
    assert_eq!(
        errno(&post_multipart(&s, UPLOAD, &fresh_token(), no_type).await),
        9001
    );
    let no_file = Form::new()
        .text("third_code", "demo")
        .text("repair_type", "sr");
    assert_eq!(
        errno(&post_multipart(&s, UPLOAD, &fresh_token(), no_file).await),
        9001
    );
    let wide = sized_picture(7000, 10, ImageFormat::Png);
    let v = upload(&s, wide, "sr", None).await;
    assert_eq!(
        v,
        json!({"code": 9000, "errno": 9009, "msg": "图片异常,处理失败"})
    );
    // Right magic bytes, broken body: fails the decode, 9009, not charged.
    let mut broken = picture(ImageFormat::Jpeg);
    broken.truncate(200);
    assert_eq!(errno(&upload(&s, broken, "sr", None).await), 9009);
    assert_eq!((s.credits(), s.ledger().total_charges), (100, 0));
    s.shutdown().await;
}

#[tokio::test]
async fn status_goes_100_then_200_and_sr_doubles_the_size() {
    let s = sim(fast()).await;
    for (format, ct) in [
        (ImageFormat::Png, "image/png"),
        (ImageFormat::Jpeg, "image/jpeg"),
    ] {
        let v = upload(&s, picture(format), "sr", None).await;
        let mdf = mdf_of(&v);
        assert_eq!(mdf.len(), 32);
        assert!(mdf.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(
            v["data"]["img_url"]
                .as_str()
                .unwrap()
                .starts_with(&s.base_url())
        );
        let early = call(&s, STATUS, &mdf).await;
        assert_eq!(
            early,
            json!({"code": 200, "data": {"msg": "图片处理中", "status": 100}})
        );
        assert!(wait_done(&s, &mdf).await >= 1);
        let (got_ct, bytes) = fetch_result(&s, &mdf).await;
        assert_eq!(got_ct, ct);
        let img = image::load_from_memory_with_format(&bytes, format).unwrap();
        assert_eq!((img.width(), img.height()), (128, 96));
    }
    for repair in ["sr,repair", "sr,repair,colour"] {
        let mdf = mdf_of(&upload(&s, picture(ImageFormat::Png), repair, None).await);
        wait_done(&s, &mdf).await;
        let img = image::load_from_memory(&fetch_result(&s, &mdf).await.1).unwrap();
        assert_eq!((img.width(), img.height()), (128, 96), "{repair}");
    }
    s.shutdown().await;
}

#[tokio::test]
async fn results_expire_after_retention() {
    let s = sim(SimOptions {
        processing: Duration::from_millis(100),
        retention: Duration::from_millis(300),
        ..SimOptions::default()
    })
    .await;
    let mdf = mdf_of(&upload(&s, picture(ImageFormat::Png), "sr", None).await);
    wait_done(&s, &mdf).await;
    let url = call(&s, DOWNLOAD, &mdf).await["data"]["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(client().get(&url).send().await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(450)).await;
    let v = call(&s, DOWNLOAD, &mdf).await;
    assert_eq!(
        v,
        json!({"code": 9000, "errno": 9002, "msg": "数据已失效,请重新上传"})
    );
    assert_eq!(client().get(&url).send().await.unwrap().status(), 404);
    s.shutdown().await;
}

#[tokio::test]
async fn bg_replaces_the_border_colour() {
    let s = sim(fast()).await;
    let mdf = mdf_of(&upload(&s, picture(ImageFormat::Png), "bg", Some("255,255,0")).await);
    wait_done(&s, &mdf).await;
    let img = image::load_from_memory(&fetch_result(&s, &mdf).await.1)
        .unwrap()
        .to_rgb8();
    assert_eq!(img.dimensions(), (64, 48));
    assert_eq!(img.get_pixel(0, 0).0, [255, 255, 0]);
    assert_eq!(img.get_pixel(63, 47).0, [255, 255, 0]);
    assert_eq!(
        img.get_pixel(32, 24).0,
        [220, 30, 30],
        "the subject is kept"
    );
    assert_eq!(s.ledger().charges[0].rgb.as_deref(), Some("255,255,0"));
    s.shutdown().await;
}

#[tokio::test]
async fn passthrough_returns_the_uploaded_bytes() {
    let s = sim(SimOptions {
        passthrough: true,
        ..fast()
    })
    .await;
    let bytes = picture(ImageFormat::Jpeg);
    let mdf = mdf_of(&upload(&s, bytes.clone(), "sr,repair,colour", None).await);
    wait_done(&s, &mdf).await;
    let (ct, got) = fetch_result(&s, &mdf).await;
    assert_eq!((ct.as_str(), got), ("image/jpeg", bytes));
    s.shutdown().await;
}

#[tokio::test]
async fn ledger_counts_duplicate_charges() {
    let s = sim(fast()).await;
    let a = picture(ImageFormat::Png);
    upload(&s, a.clone(), "sr", None).await;
    upload(&s, a.clone(), "bg", Some("1,2,3")).await;
    upload(&s, a.clone(), "bg", Some("1,2,4")).await;
    upload(&s, picture(ImageFormat::Jpeg), "sr", None).await;
    assert_eq!(s.ledger().duplicate_charges, 0);
    upload(&s, a.clone(), "sr", None).await;
    upload(&s, a.clone(), "bg", Some("1,2,3")).await;
    let l = s.ledger();
    assert_eq!(
        (l.total_charges, l.duplicate_charges, l.credits_left),
        (6, 2, 94)
    );
    let sha = l.charges[0].sha256.clone();
    assert_eq!(sha.len(), 64);
    assert_eq!(l.charges[4].sha256, sha);
    assert_eq!(l.charges[1].repair_type, "bg");
    assert!((l.charges[0].time - now()).abs() <= 2);
    s.shutdown().await;
}

async fn set_faults_via_admin(s: &SimHandle, f: Value) {
    let r = client()
        .post(format!("{}/__sim/faults", s.base_url()))
        .json(&f)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn faults_at_probability_one_do_what_they_say() {
    let s = sim(SimOptions {
        latency: Duration::from_millis(300),
        ..fast()
    })
    .await;
    let nums_url = format!("{}{NUMS}", s.base_url());
    let nums = || {
        client()
            .post(&nums_url)
            .header("token", fresh_token())
            .form(&[("third_code", "demo")])
            .send()
    };

    set_faults_via_admin(&s, json!({"http500": 1.0})).await;
    let r = nums().await.unwrap();
    assert_eq!(r.status(), 500);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(r.text().await.unwrap().contains("<html>"));

    s.set_faults(Faults {
        reset: 1.0,
        ..Faults::default()
    });
    let e = nums().await.unwrap_err();
    assert!(!e.is_timeout(), "{e:?}");
    // Raw socket: the kernel must report a reset, not a clean close. (Blocking I/O, off
    // the runtime that also runs the sim.)
    let (addr, tok) = (s.addr(), fresh_token());
    let err = tokio::task::spawn_blocking(move || {
        let mut raw = TcpStream::connect(addr).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let body = "third_code=demo";
        // One write, so the whole request is in flight before the server can reset.
        let req = format!(
            "POST {NUMS} HTTP/1.1\r\nHost: x\r\ntoken: {tok}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        raw.write_all(req.as_bytes()).unwrap();
        raw.read(&mut [0u8; 64]).unwrap_err()
    })
    .await
    .unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);

    s.set_faults(Faults {
        slow: 1.0,
        ..Faults::default()
    });
    let t0 = Instant::now();
    assert_eq!(nums().await.unwrap().status(), 200);
    assert!(t0.elapsed() >= Duration::from_millis(300));

    for (kind, want) in [("e9006", 9006), ("e9009", 9009)] {
        set_faults_via_admin(&s, json!({ kind: 1.0 })).await;
        let v = upload(&s, picture(ImageFormat::Png), "sr", None).await;
        assert_eq!(errno(&v), want);
        // Upload-only: the other endpoints are untouched.
        assert_eq!(nums().await.unwrap().status(), 200);
    }
    assert_eq!(s.ledger().total_charges, 0);

    s.set_faults(Faults {
        charge_drop: 1.0,
        ..Faults::default()
    });
    let e = client()
        .post(format!("{}{UPLOAD}", s.base_url()))
        .header("token", fresh_token())
        .multipart(upload_form(picture(ImageFormat::Png), "sr", None))
        .send()
        .await
        .unwrap_err();
    assert!(!e.is_timeout(), "{e:?}");
    let l = s.ledger();
    assert_eq!((l.total_charges, l.credits_left), (1, 99));
    // The job exists: the charged upload gets processed.
    wait_done(&s, &l.charges[0].mdf).await;

    set_faults_via_admin(&s, json!({})).await;
    let l = s.ledger();
    let count = |k: &str| l.faults.get(k).copied().unwrap_or(0);
    assert_eq!(count("http500"), 1);
    assert_eq!(count("reset"), 2);
    assert_eq!(count("slow"), 1);
    assert_eq!(count("e9006"), 1);
    assert_eq!(count("e9009"), 1);
    assert_eq!(count("charge_drop"), 1);
    // Admin endpoints were never faulted while all this was on.
    s.shutdown().await;
}

#[tokio::test]
async fn same_seed_same_mdf_sequence() {
    async fn mdfs(seed: u64) -> Vec<String> {
        let s = sim(SimOptions { seed, ..fast() }).await;
        let mut out = Vec::new();
        for _ in 0..3 {
            out.push(mdf_of(
                &upload(&s, picture(ImageFormat::Png), "sr", None).await,
            ));
        }
        s.shutdown().await;
        out
    }
    let a = mdfs(7).await;
    assert_eq!(a, mdfs(7).await);
    assert_ne!(a, mdfs(8).await);
    assert_eq!(a.iter().collect::<std::collections::HashSet<_>>().len(), 3);
}

#[tokio::test]
async fn clock_offset_shows_in_date_header_and_token_check() {
    let s = sim(SimOptions {
        clock_offset_secs: -3600,
        ..fast()
    })
    .await;
    let r = client()
        .get(format!("{}/__sim/ledger", s.base_url()))
        .send()
        .await
        .unwrap();
    let date = httpdate::parse_http_date(r.headers()["date"].to_str().unwrap()).unwrap();
    let secs = date.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((secs - (now() - 3600)).abs() <= 2, "{secs}");
    // A real-time token is an hour in this sim's future.
    let v = post_form(&s, NUMS, &fresh_token(), &[("third_code", "demo")]).await;
    assert_eq!(errno(&v), 9999);
    let skewed = token(&Secret::new("demo-secret"), now() - 3600);
    let v = post_form(&s, NUMS, &skewed, &[("third_code", "demo")]).await;
    assert_eq!(v["code"], 200);
    s.shutdown().await;
}

#[tokio::test]
async fn multipart_works_on_every_endpoint() {
    let s = sim(fast()).await;
    let mdf = mdf_of(&upload(&s, picture(ImageFormat::Png), "sr", None).await);
    let form = || {
        Form::new()
            .text("third_code", "demo")
            .text("mdf", mdf.clone())
    };
    let v = post_multipart(&s, STATUS, &fresh_token(), form()).await;
    assert_eq!(v["data"]["status"], 100);
    let v = post_multipart(&s, DOWNLOAD, &fresh_token(), form()).await;
    assert_eq!(v["code"], 9000, "not ready yet: {v}");
    let v = post_multipart(&s, NUMS, &fresh_token(), form()).await;
    assert_eq!(v["data"]["nums"], 99);
    s.shutdown().await;
}

#[tokio::test]
async fn a_large_upload_is_streamed_and_hashed() {
    use sha2::{Digest, Sha256};
    let s = sim(SimOptions {
        passthrough: true,
        ..fast()
    })
    .await;
    // A real JPEG header followed by 24 MiB of padding.
    let mut bytes = picture(ImageFormat::Jpeg);
    bytes.extend((0..24u32 << 20).map(|i| (i % 251) as u8));
    let sha = hex::encode(Sha256::digest(&bytes));
    let mdf = mdf_of(&upload(&s, bytes.clone(), "sr", None).await);
    assert_eq!(s.ledger().charges[0].sha256, sha);
    wait_done(&s, &mdf).await;
    assert!(fetch_result(&s, &mdf).await.1 == bytes);
    s.shutdown().await;
}

/// Run alone (`cargo test --test it sim::memory -- --ignored`): a 300 MB streamed upload
/// must not grow the process's peak RSS by anything near its size.
#[tokio::test]
#[ignore]
async fn memory_stays_flat_for_a_300mb_upload() {
    let s = sim(SimOptions {
        passthrough: true,
        ..fast()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.jpg");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        f.write_all(&picture(ImageFormat::Jpeg)).unwrap();
        let block = vec![7u8; 1 << 20];
        for _ in 0..300 {
            f.write_all(&block).unwrap();
        }
    }
    let hwm_before = peak_rss_kib();
    let file = tokio::fs::File::open(&path).await.unwrap();
    let len = file.metadata().await.unwrap().len();
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
    let form = Form::new()
        .text("third_code", "demo")
        .text("repair_type", "sr")
        .part(
            "file",
            Part::stream_with_length(body, len).file_name("big.jpg"),
        );
    let v = post_multipart(&s, UPLOAD, &fresh_token(), form).await;
    mdf_of(&v);
    let grew = peak_rss_kib() - hwm_before;
    eprintln!("peak RSS grew by {grew} KiB for a {len}-byte upload");
    assert!(grew < 64 * 1024, "peak RSS grew by {grew} KiB");
    s.shutdown().await;
}

fn peak_rss_kib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn rejected_and_abandoned_uploads_leave_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = sim(SimOptions {
        work_dir: Some(dir.path().to_path_buf()),
        ..fast()
    })
    .await;
    upload(&s, b"text, not a picture".to_vec(), "sr", None).await;
    let v = post_form(&s, UPLOAD, &fresh_token(), &[("third_code", "demo")]).await;
    assert_eq!(errno(&v), 9001, "urlencoded upload has no file");
    // A client that dies mid-body: the stream fails after 1 MiB.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(picture(ImageFormat::Png)),
        Ok(vec![0u8; 1 << 20]),
        Err(std::io::Error::other("client died")),
    ];
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let form = Form::new()
        .text("third_code", "demo")
        .text("repair_type", "sr")
        .part("file", Part::stream(body).file_name("a.png"));
    let sent = client()
        .post(format!("{}{UPLOAD}", s.base_url()))
        .header("token", fresh_token())
        .multipart(form)
        .send()
        .await;
    assert!(sent.is_err());
    let t0 = Instant::now();
    loop {
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        if left.is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "left behind: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.ledger().total_charges, 0);
    s.shutdown().await;
    assert!(dir.path().exists(), "a given work dir is not removed");
}
