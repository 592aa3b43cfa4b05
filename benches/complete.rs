//! Cost of the completeness check run before every upload (`media::check_size`, which walks a
//! JPEG's markers and scan data to EOI, a PNG's chunks and CRCs to IEND), on a 24 MP JPEG and
//! a 24 MP PNG generated here, next to the SHA-256 the upload stage computes anyway and a full
//! decode (the alternative). Best of 5 (decode: of 2), files in the page cache.
//! Run with `cargo bench --bench complete`; prints figures to stdout.

#[path = "common/mod.rs"]
mod common;

use std::fs::File;
use std::io::{BufWriter, Read};
use std::path::Path;
use std::time::Duration;

use common::{best, picture};
use image::ImageEncoder;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};

const W: u32 = 6000;
const H: u32 = 4000;

fn report(what: &str, path: &Path, d: Duration) {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    println!(
        "{what:<34} {:>6.1} MB  {:8.2} ms  {:8.1} MB/s",
        size as f64 / 1e6,
        d.as_secs_f64() * 1e3,
        size as f64 / 1e6 / d.as_secs_f64()
    );
}

fn main() {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average: {}", load.trim());
    let dir = tempfile::tempdir().expect("temp dir");
    let img = picture(W, H);
    let jpg = dir.path().join("24mp.jpg");
    let png = dir.path().join("24mp.png");
    JpegEncoder::new_with_quality(BufWriter::new(File::create(&jpg).expect("jpg")), 92)
        .write_image(img.as_raw(), W, H, image::ExtendedColorType::Rgb8)
        .expect("encoding the JPEG");
    PngEncoder::new_with_quality(
        BufWriter::new(File::create(&png).expect("png")),
        CompressionType::Fast,
        FilterType::Sub,
    )
    .write_image(img.as_raw(), W, H, image::ExtendedColorType::Rgb8)
    .expect("encoding the PNG");
    drop(img);

    for (name, path) in [("JPEG 6000x4000", &jpg), ("PNG  6000x4000", &png)] {
        // The upload stage's exact call, once to warm the page cache and prove it passes.
        let probe = hili::media::probe(path).expect("probe");
        hili::media::check_size(path, &probe).expect("a complete file passes");
        let d = best(5, || {
            let p = hili::media::probe(path).expect("probe");
            hili::media::check_size(path, &p).expect("check");
        });
        report(&format!("{name} probe+check_size"), path, d);
        let d = best(5, || {
            hili::media::sha256_file(path).expect("hash");
        });
        report(&format!("{name} sha256_file"), path, d);
        // The floor: reading the file through the same 256 KiB buffer, doing nothing else.
        let d = best(5, || {
            let mut f = File::open(path).expect("open");
            let mut buf = vec![0u8; 256 << 10];
            while f.read(&mut buf).expect("read") > 0 {}
        });
        report(&format!("{name} read only"), path, d);
        let d = best(2, || {
            image::open(path).expect("decode");
        });
        report(&format!("{name} full decode"), path, d);
        // A truncated copy fails, and costs no more than the complete one.
        let data = std::fs::read(path).expect("read");
        let cut = dir.path().join(format!("cut-{}", name.replace(' ', "")));
        std::fs::write(&cut, &data[..data.len() * 9 / 10]).expect("write cut");
        let d = best(5, || {
            let p = hili::media::probe(&cut).expect("probe");
            assert!(hili::media::check_size(&cut, &p).is_err());
        });
        report(&format!("{name} cut at 90%"), &cut, d);
        // One bit flipped 100 bytes before the end: a PNG fails its last IDAT's CRC (proof that
        // every byte went through the CRC); a JPEG's scan data is not checked bit by bit.
        let mut flipped = data.clone();
        let at = flipped.len() - 100;
        flipped[at] ^= 0x01;
        std::fs::write(&cut, &flipped).expect("write flipped");
        let p = hili::media::probe(&cut).expect("probe");
        let r = hili::media::check_size(&cut, &p);
        println!("{name} one bit flipped near the end: {r:?}");
    }
}
