//! Cost of carrying a source's metadata into its result (`media::metadata::carry_over`), per
//! result: a 6 MP JPEG source carrying EXIF (with a thumbnail), XMP, IPTC and an ICC profile,
//! into its 24 MP 2× result, and the same for PNG at 1.5 MP → 6 MP. Two figures each: the
//! pure step (bytes in memory), and the whole step as the download stage runs it (read the
//! source, hash it, read the temp result, carry over, rewrite the temp file; the fsync after
//! it is the commit's, paid with or without this step).
//! Best of 5, files in the page cache. Run with `cargo bench --bench metadata`.

use std::io::{Cursor, Write};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use hili::media::metadata::{Options, Provenance, carry_over, sample};
use image::codecs::jpeg::JpegEncoder;
use image::{ImageBuffer, ImageFormat, Rgb, RgbImage};
use img_parts::jpeg::Jpeg;
use img_parts::png::Png;
use img_parts::{ImageEXIF, ImageICC};

fn best(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// Smooth gradients plus seeded noise, so encoders produce sizes of real camera files.
fn picture(w: u32, h: u32) -> RgbImage {
    let mut x: u32 = 0x9E37_79B9;
    ImageBuffer::from_fn(w, h, |px, py| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let n = (x & 0x1F) as u8;
        Rgb([
            ((px / 24) as u8).wrapping_add(n),
            ((py / 16) as u8).wrapping_add(n / 2),
            (((px + py) / 40) as u8).wrapping_add(n),
        ])
    })
}

fn encode(img: &RgbImage, png: bool) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    if png {
        img.write_to(&mut out, ImageFormat::Png).expect("PNG");
    } else {
        JpegEncoder::new_with_quality(&mut out, 92)
            .encode_image(img)
            .expect("JPEG");
    }
    out.into_inner()
}

/// A photo with the sample's metadata (taken from the small sample, moved onto real pixels).
fn tagged(w: u32, h: u32, png: bool) -> Vec<u8> {
    let pixels = encode(&picture(w, h), png);
    let exif = Bytes::from(sample::exif(w, h));
    let icc = Bytes::from(sample::icc_profile());
    if png {
        let small = Png::from_bytes(sample::tagged_png(8, 8).into()).expect("sample");
        let mut p = Png::from_bytes(pixels.into()).expect("own PNG");
        for c in small
            .chunks()
            .iter()
            .filter(|c| matches!(&c.kind(), b"iTXt" | b"zTXt" | b"pHYs"))
        {
            p.chunks_mut().insert(1, c.clone());
        }
        p.set_exif(Some(exif));
        p.set_icc_profile(Some(icc));
        p.encoder().bytes().to_vec()
    } else {
        let small = Jpeg::from_bytes(sample::tagged_jpeg(8, 8).into()).expect("sample");
        let mut j = Jpeg::from_bytes(pixels.into()).expect("own JPEG");
        for s in small
            .segments()
            .iter()
            .filter(|s| matches!(s.marker(), 0xE1 | 0xED))
        {
            j.segments_mut().insert(1, s.clone());
        }
        j.set_exif(Some(exif));
        j.set_icc_profile(Some(icc));
        j.encoder().bytes().to_vec()
    }
}

fn opts() -> Options {
    Options {
        strip_gps: false,
        software: "hili bench".into(),
        provenance: Provenance {
            source_name: "bench.jpg".into(),
            source_sha256: "0".repeat(64),
            action: "sr (super-resolution)".into(),
            agent: "hili bench".into(),
            when: SystemTime::now(),
        },
    }
}

fn main() {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average: {}", load.trim());
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, w, h, png) in [
        ("JPEG 3000x2000 -> 6000x4000", 3000, 2000, false),
        ("PNG  1500x1000 -> 3000x2000", 1500, 1000, true),
    ] {
        let src = tagged(w, h, png);
        let result = encode(&picture(2 * w, 2 * h), png);
        let (out, report) = carry_over(&src, &result, &opts()).expect("carry over");
        assert_eq!(report.written.len(), 5, "{report:?}");
        let pure = best(5, || {
            carry_over(&src, &result, &opts()).expect("carry over");
        });
        let (src_path, tmp_path) = (dir.path().join("src"), dir.path().join("tmp"));
        std::fs::write(&src_path, &src).expect("write source");
        let whole = (0..5)
            .map(|_| {
                // The downloaded result, as the download stage leaves it in its temp file.
                std::fs::write(&tmp_path, &result).expect("write temp");
                let t = Instant::now();
                let s = std::fs::read(&src_path).expect("read source");
                let _sha = hili::media::sha256_bytes(&s);
                let r = std::fs::read(&tmp_path).expect("read temp");
                let (bytes, _) = carry_over(&s, &r, &opts()).expect("carry over");
                let mut f = std::fs::File::create(&tmp_path).expect("rewrite temp");
                f.write_all(&bytes).expect("rewrite temp");
                f.sync_all().expect("fsync");
                t.elapsed()
            })
            .min()
            .unwrap_or_default();
        println!(
            "{name}: source {:.1} MB, result {:.1} MB (+{} bytes of metadata); carry_over {:.2} ms ({:.0} MB/s of result); whole step (read source, hash it, read temp, carry over, rewrite temp) {:.2} ms",
            src.len() as f64 / 1e6,
            result.len() as f64 / 1e6,
            out.len() - result.len(),
            pure.as_secs_f64() * 1e3,
            result.len() as f64 / 1e6 / pure.as_secs_f64(),
            whole.as_secs_f64() * 1e3,
        );
    }
}
