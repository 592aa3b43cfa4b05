//! What several benches share: a best-of timer and a photo-like test picture. Each bench is
//! its own crate and takes this file with `#[path = "common/mod.rs"] mod common;`.

use std::time::{Duration, Instant};

use image::{ImageBuffer, Rgb, RgbImage};

/// The shortest of `runs` timings of `f` (the least disturbed by the rest of the machine).
pub(crate) fn best(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// A photo-like picture: smooth gradients plus seeded noise, so the encoders produce sizes of
/// real camera files (a flat picture would compress to almost nothing).
pub(crate) fn picture(w: u32, h: u32) -> RgbImage {
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
