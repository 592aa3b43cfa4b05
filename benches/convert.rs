//! Cost of converting a 6000 × 4000 16-bit RGB TIFF scan before its upload
//! (`media::convert`: decode, 16 → 8-bit, PNG, and the JPEG at quality 95 when the PNG is over
//! the 20 MiB default upload limit), time and peak memory. Two pictures: a scan with film
//! grain (its PNG is over the limit, so both encoders run) and a smooth one (the PNG fits).
//! The peak (VmHWM, reset through /proc/self/clear_refs before each conversion, once the
//! generated samples are freed) is the conversion's.
//! Best time of 3. Run with `cargo bench --bench convert`; prints figures to stdout.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::time::{Duration, Instant};

use hili::media::{self, Format, Plan};
use tiff::encoder::{Compression, TiffEncoder, colortype};

const W: u32 = 6000;
const H: u32 = 4000;
const LIMIT: u64 = 20 << 20;

/// Writes a `W`×`H` 16-bit RGB TIFF whose samples come from `px(x, y, noise)`. The samples
/// are freed (unmapped) before the conversion is measured.
fn write_tiff(path: &Path, compression: Compression, px: impl Fn(u32, u32, u16) -> [u16; 3]) {
    let f = BufWriter::new(File::create(path).expect("create tiff"));
    let mut enc = TiffEncoder::new(f)
        .expect("tiff encoder")
        .with_compression(compression);
    let mut state: u32 = 0x9E37_79B9;
    let mut samples = Vec::with_capacity((W * H * 3) as usize);
    for y in 0..H {
        for x in 0..W {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            samples.extend_from_slice(&px(x, y, (state & 0x7FF) as u16));
        }
    }
    enc.write_image::<colortype::RGB16>(W, H, &samples)
        .expect("tiff image");
}

/// Peak resident memory of this process, in MiB, since the last [`reset_peak`].
fn peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// "5" resets the peak resident set size (Linux ≥ 4.0).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn run(what: &str, src: &Path, out: &Path) {
    let plan = Plan {
        from: Format::Tiff,
        width: W,
        height: H,
        size: std::fs::metadata(src).map(|m| m.len()).unwrap_or(0),
        fit: None,
    };
    let mut best = Duration::MAX;
    let mut peak: f64 = 0.0;
    let mut result = None;
    for _ in 0..3 {
        reset_peak();
        let t = Instant::now();
        let c = media::convert(src, &plan, out, "bench", LIMIT).expect("convert");
        best = best.min(t.elapsed());
        peak = peak.max(peak_mib());
        result = Some(c);
    }
    let c = result.expect("three runs");
    println!(
        "{what:<30} TIFF {:>6.1} MB → {} {:>5.1} MB  {:>7.0} ms  peak RSS {:>5.0} MiB",
        plan.size as f64 / 1e6,
        c.kind,
        c.size as f64 / 1e6,
        best.as_secs_f64() * 1e3,
        peak
    );
}

fn main() {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average: {}", load.trim());
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("converted");

    let grain = dir.path().join("grain.tif");
    write_tiff(&grain, Compression::Uncompressed, |x, y, n| {
        [
            ((x * 10) as u16).wrapping_add(n),
            ((y * 16) as u16).wrapping_add(n / 2),
            (((x + y) * 6) as u16).wrapping_add(n),
        ]
    });
    let smooth = dir.path().join("smooth.tif");
    write_tiff(&smooth, Compression::Lzw, |x, y, _| {
        [(x * 10) as u16, (y * 16) as u16, ((x + y) * 6) as u16]
    });
    println!("peak RSS while generating the TIFFs: {:.0} MiB", peak_mib());
    run("scan with grain, uncompressed", &grain, &out);
    run("smooth scan, LZW", &smooth, &out);
}
