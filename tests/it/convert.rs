//! Inputs the service does not take as they are: TIFF scans (8- and 16-bit, greyscale and RGB,
//! uncompressed, LZW, Deflate, multi-page), WebP and BMP are converted locally and processed,
//! each paid once even when added twice; a copy too large as PNG goes as JPEG; a photo over
//! 6000 px fails or is downscaled as configured; HEIC and raw files are refused with a reason;
//! a crash between the conversion and the upload still ends with one charge. Every image is
//! generated here.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use hili::pipeline::Oversize;
use hili::repair::Repair;
use hili::store::{JobId, State};
use image::{ImageBuffer, Luma, Rgb};
use tiff::encoder::{Compression, DeflateLevel, TiffEncoder, colortype};

use crate::helpers::*;

/// A 16-bit RGB page whose pixels depend on `seed` (and use the low byte, so the rounding to
/// 8 bits matters).
fn rgb16(seed: u16, w: u32, h: u32) -> Vec<u16> {
    (0..w * h)
        .flat_map(|i| {
            let (x, y) = ((i % w) as u16, (i / w) as u16);
            [
                x.wrapping_mul(997).wrapping_add(seed.wrapping_mul(131)),
                y.wrapping_mul(1499).wrapping_add(seed),
                (x ^ y).wrapping_mul(257).wrapping_add(seed.wrapping_mul(7)),
            ]
        })
        .collect()
}

fn tiff_file(path: &Path, compression: Compression) -> TiffEncoder<BufWriter<File>> {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = BufWriter::new(File::create(path).unwrap());
    TiffEncoder::new(f).unwrap().with_compression(compression)
}

fn write_tiff_rgb16(path: &Path, seed: u16, compression: Compression, pages: u16) {
    let mut t = tiff_file(path, compression);
    for page in 0..pages {
        t.write_image::<colortype::RGB16>(40, 30, &rgb16(seed + page, 40, 30))
            .unwrap();
    }
}

fn write_tiff_gray16(path: &Path, seed: u16, compression: Compression) {
    let data: Vec<u16> = rgb16(seed, 36, 24).into_iter().step_by(3).collect();
    tiff_file(path, compression)
        .write_image::<colortype::Gray16>(36, 24, &data)
        .unwrap();
}

fn write_tiff_gray8(path: &Path, seed: u8, compression: Compression) {
    let data: Vec<u8> = (0..32u32 * 20)
        .map(|i| (i as u8).wrapping_mul(3).wrapping_add(seed))
        .collect();
    tiff_file(path, compression)
        .write_image::<colortype::Gray8>(32, 20, &data)
        .unwrap();
}

fn write_image_as(path: &Path, seed: u32, format: image::ImageFormat) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    photo(seed, 44, 28).save_with_format(path, format).unwrap();
}

/// The job's events' details, oldest first.
async fn details(env: &Env, id: JobId) -> Vec<String> {
    let store = env.store().await;
    let events = store.events(id).await.unwrap();
    store.close().await;
    events.into_iter().filter_map(|e| e.detail).collect()
}

fn converted_dir(env: &Env) -> PathBuf {
    let mut p = env.db.clone().into_os_string();
    p.push("-converted");
    PathBuf::from(p)
}

/// The sources of the first test: (name, writer), each written twice under two folders.
fn write_every_kind(dir: &Path) {
    write_tiff_rgb16(
        &dir.join("rgb16-deflate.tif"),
        1,
        Compression::Deflate(DeflateLevel::Balanced),
        1,
    );
    write_tiff_rgb16(
        &dir.join("rgb16-pages.tiff"),
        2,
        Compression::Uncompressed,
        3,
    );
    write_tiff_gray16(&dir.join("grey16-lzw.tif"), 3, Compression::Lzw);
    write_tiff_gray8(&dir.join("grey8-lzw.tif"), 4, Compression::Lzw);
    write_image_as(&dir.join("rgb8.tif"), 5, image::ImageFormat::Tiff);
    write_image_as(&dir.join("photo.webp"), 6, image::ImageFormat::WebP);
    write_image_as(&dir.join("photo.bmp"), 7, image::ImageFormat::Bmp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiff_webp_and_bmp_are_converted_processed_and_paid_once_even_when_added_twice() {
    let env = Env::new(fast_sim()).await;
    write_every_kind(&env.inbox.join("a"));
    write_every_kind(&env.inbox.join("b"));
    let (o, i) = (
        env.out.display().to_string(),
        env.inbox.display().to_string(),
    );
    let out = env
        .run_hili(["add", "--dry-run", "--repair", "sr", "--output", &o, &i])
        .await;
    out.expect_code(0);
    assert!(
        out.stdout.contains("14 to queue")
            && out
                .stdout
                .contains("14 converted to PNG or JPEG first, 0 downscaled"),
        "{}",
        out.both()
    );
    assert_eq!(env.add(Repair::Sr, None).await, 14);

    let summary = env.run_once(env.settings()).await;
    let ledger = env.sim.ledger();
    assert_eq!(
        ledger.total_charges, 7,
        "one charge per distinct source: {summary:?}"
    );
    assert_eq!(ledger.duplicate_charges, 0);

    let store = env.store().await;
    let jobs = store.all_jobs(None).await.unwrap();
    store.close().await;
    assert_eq!(jobs.len(), 14);
    for j in &jobs {
        assert_eq!(
            j.state(),
            State::Done,
            "{}: {:?}",
            j.source_path.display(),
            j.reason
        );
        let output = j.output_path.clone().unwrap();
        assert_eq!(output.extension().unwrap(), "png", "{}", output.display());
        image::open(&output).unwrap();
        // The identity is the source's content, not the converted copy's (a twin whose
        // result was copied never needed its hash recorded).
        if let Some(sha) = j.content_sha256.as_deref() {
            assert_eq!(sha, hili::media::sha256_file(&j.source_path).unwrap());
        }
    }
    assert!(jobs.iter().filter(|j| j.content_sha256.is_some()).count() >= 7);
    let mut notes = Vec::new();
    for name in [
        "rgb16-pages.tiff",
        "grey16-lzw.tif",
        "photo.webp",
        "photo.bmp",
    ] {
        let j = jobs
            .iter()
            .find(|j| j.source_path.ends_with(format!("a/{name}")));
        let all = details(&env, j.unwrap().id).await;
        notes.push(
            all.into_iter()
                .find(|d| d.starts_with("input: "))
                .unwrap_or_default(),
        );
    }
    assert!(
        notes[0].contains("TIFF 16-bit RGB 40×30 to PNG 8-bit 40×30")
            && notes[0].contains("first of 3 pages"),
        "{notes:?}"
    );
    assert!(notes[1].contains("TIFF 16-bit greyscale"), "{notes:?}");
    assert!(notes[2].contains("converted WebP"), "{notes:?}");
    assert!(notes[3].contains("converted BMP"), "{notes:?}");
    // Nothing is left in the state directory once the uploads are recorded.
    assert_eq!(files_under(&converted_dir(&env)), Vec::<PathBuf>::new());
    // The sources are untouched.
    assert!(env.inbox.join("a/rgb16-pages.tiff").is_file());

    let out = env.run_hili(["jobs"]).await;
    assert!(
        out.stdout.contains("[converted TIFF 16-bit RGB"),
        "{}",
        out.both()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiff_whose_png_would_be_too_large_goes_as_jpeg() {
    let env = Env::new(fast_sim()).await;
    // Grain on a gradient, as in a scan: PNG cannot squeeze it, JPEG at quality 95 can.
    let img = ImageBuffer::from_fn(300, 200, |x, y| {
        let mut h = (x * 7919 + y * 104_729) | 1;
        h ^= h << 13;
        h ^= h >> 17;
        h ^= h << 5;
        let n = (h % 9) as u8;
        Rgb([(x / 2) as u8 + n, y as u8 / 2 + n, ((x + y) / 4) as u8 + n])
    });
    let src = env.inbox.join("noisy.tif");
    img.save_with_format(&src, image::ImageFormat::Tiff)
        .unwrap();
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png).unwrap();
    let png = png.into_inner().len() as u64;
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
        .encode_image(&img)
        .unwrap();
    let jpeg = jpeg.len() as u64;
    assert!(
        jpeg * 3 / 2 < png,
        "the image must favour JPEG: {jpeg} vs {png} bytes"
    );
    env.add(Repair::Sr, None).await;
    let mut s = env.settings();
    // Under what the PNG needs, over the JPEG's size.
    s.max_upload_bytes = (png + jpeg) / 2;
    env.run_once(s).await;

    let store = env.store().await;
    let j = store.all_jobs(None).await.unwrap().remove(0);
    store.close().await;
    assert_eq!(j.state(), State::Done, "{:?}", j.reason);
    let output = j.output_path.clone().unwrap();
    assert_eq!(output.extension().unwrap(), "jpg", "{}", output.display());
    let note = details(&env, j.id).await.join("\n");
    assert!(note.contains("to JPEG 8-bit 300×200"), "{note}");
    assert_eq!(env.sim.ledger().total_charges, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_side_over_6000_px_fails_by_default_and_is_downscaled_when_configured() {
    let env = Env::new(fast_sim()).await;
    let tall = ImageBuffer::from_fn(12, 6400, |x, y| Luma([(x * 9 + y / 50) as u8]));
    let tif = env.inbox.join("tall.tif");
    {
        let mut t = tiff_file(&tif, Compression::Lzw);
        t.write_image::<colortype::Gray8>(12, 6400, tall.as_raw())
            .unwrap();
    }
    let jpg = env.inbox.join("wide.jpg");
    photo(9, 6100, 4)
        .save_with_format(&jpg, image::ImageFormat::Jpeg)
        .unwrap();
    env.add(Repair::Sr, None).await;

    let mut s = env.settings();
    assert_eq!(s.oversize, Oversize::Fail);
    env.run_once(s.clone()).await;
    let store = env.store().await;
    let jobs = store.all_jobs(None).await.unwrap();
    for j in &jobs {
        assert_eq!(j.state(), State::Failed);
        let r = j.reason.clone().unwrap();
        assert!(
            r.contains("at most 6000 px") && r.contains("oversize = \"downscale\""),
            "{r}"
        );
        assert!(!j.credit_spent);
    }
    assert_eq!(env.sim.ledger().upload_requests, 0);

    for j in &jobs {
        store.retry(j.id, false).await.unwrap();
    }
    store.close().await;
    s.oversize = Oversize::Downscale;
    env.run_once(s).await;
    let store = env.store().await;
    let jobs = store.all_jobs(None).await.unwrap();
    store.close().await;
    for j in &jobs {
        assert_eq!(j.state(), State::Done, "{:?}", j.reason);
        let note = details(&env, j.id).await.join("\n");
        assert!(
            note.contains("downscaled (Lanczos) to fit 6000 px"),
            "{note}"
        );
    }
    let by = |name: &str| jobs.iter().find(|j| j.source_path.ends_with(name)).unwrap();
    assert!(
        details(&env, by("tall.tif").id)
            .await
            .join("\n")
            .contains("12×6400 to PNG 8-bit 11×6000")
    );
    let wide = details(&env, by("wide.jpg").id).await.join("\n");
    assert!(
        wide.contains("converted JPEG 8-bit RGB 6100×4 to JPEG 8-bit 6000×4"),
        "{wide}"
    );
    assert_eq!(
        by("wide.jpg")
            .output_path
            .as_ref()
            .unwrap()
            .extension()
            .unwrap(),
        "jpg"
    );
    assert_eq!(env.sim.ledger().total_charges, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heic_and_raw_files_are_refused_with_what_to_do() {
    let env = Env::new(fast_sim()).await;
    std::fs::write(
        env.inbox.join("IMG_0001.HEIC"),
        b"\0\0\0\x18ftypheic\0\0\0\0mif1heic",
    )
    .unwrap();
    std::fs::write(
        env.inbox.join("DSC_0001.NEF"),
        b"MM\0*\0\0\0\x08\0\0\0\0\0\0\0\0",
    )
    .unwrap();
    env.add(Repair::Sr, None).await;
    env.run_once(env.settings()).await;
    let store = env.store().await;
    let jobs = store.all_jobs(None).await.unwrap();
    store.close().await;
    let reason = |name: &str| {
        let j = jobs.iter().find(|j| j.source_path.ends_with(name)).unwrap();
        assert_eq!(j.state(), State::Failed);
        j.reason.clone().unwrap()
    };
    let heic = reason("IMG_0001.HEIC");
    assert!(
        heic.contains("is a HEIC image") && heic.contains("export it as JPEG"),
        "{heic}"
    );
    let raw = reason("DSC_0001.NEF");
    assert!(
        raw.contains("camera raw file (.nef)") && raw.contains("16-bit TIFF"),
        "{raw}"
    );
    assert_eq!(env.sim.ledger().upload_requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_conversion_and_upload_ends_with_one_charge_and_a_complete_result() {
    for step in ["after-convert", "before-upload-request"] {
        let env = Env::new(fast_sim()).await;
        write_tiff_rgb16(&env.inbox.join("scan.tif"), 11, Compression::Lzw, 1);
        env.add(Repair::Repair, None).await;

        let crashed = env
            .hili()
            .args(["run", "--once"])
            .env("HILI_CRASH_AT", step)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&crashed.stderr);
        assert!(log.contains("aborting on purpose"), "{step}: {log}");
        assert_eq!(env.sim.ledger().total_charges, 0, "{step}");
        // The copy the crash left behind, the same bytes the restart rebuilds.
        let left = files_under(&converted_dir(&env));
        assert_eq!(left.len(), 1, "{step}: {left:?}");
        let before = std::fs::read(&left[0]).unwrap();

        let out = env.run_hili(["run", "--once"]).await;
        out.expect_code(0);
        let ledger = env.sim.ledger();
        assert_eq!(
            (ledger.total_charges, ledger.duplicate_charges),
            (1, 0),
            "{step}"
        );
        assert_eq!(
            ledger.charges[0].sha256,
            hili::media::sha256_bytes(&before),
            "{step}: the rebuilt copy differs"
        );
        let store = env.store().await;
        let j = store.all_jobs(None).await.unwrap().remove(0);
        store.close().await;
        assert_eq!(j.state(), State::Done, "{step}: {:?}", j.reason);
        assert_eq!(j.charges, 1);
        let output = j.output_path.unwrap();
        assert_eq!(
            hili::media::sha256_file(&output).unwrap(),
            j.output_sha256.unwrap()
        );
        image::open(&output).unwrap();
        assert_eq!(
            files_under(&converted_dir(&env)),
            Vec::<PathBuf>::new(),
            "{step}"
        );
        let notes = details(&env, j.id).await;
        assert_eq!(
            notes.iter().filter(|d| d.starts_with("input: ")).count(),
            1,
            "{step}: {notes:?}"
        );
    }
}
