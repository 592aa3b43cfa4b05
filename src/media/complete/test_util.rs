//! Test helpers shared by the JPEG and PNG walks' tests: images made by the `image` crate,
//! and assertions on what kind of failure a check reports.

use std::io;

use image::{ImageBuffer, Rgb, RgbImage};

use super::{Incomplete, check_complete_bytes};
use crate::media::ImageKind;

fn picture(w: u32, h: u32) -> RgbImage {
    ImageBuffer::from_fn(w, h, |x, y| {
        Rgb([(x * 7 + y) as u8, (y * 3) as u8, ((x ^ y) * 5) as u8])
    })
}

pub(super) fn jpeg_bytes(w: u32, h: u32) -> Vec<u8> {
    let mut v = Vec::new();
    picture(w, h)
        .write_to(&mut io::Cursor::new(&mut v), image::ImageFormat::Jpeg)
        .unwrap();
    v
}

pub(super) fn png_bytes(w: u32, h: u32) -> Vec<u8> {
    let mut v = Vec::new();
    picture(w, h)
        .write_to(&mut io::Cursor::new(&mut v), image::ImageFormat::Png)
        .unwrap();
    v
}

pub(super) fn truncated(r: Result<(), Incomplete>) -> String {
    match r {
        Err(Incomplete::Truncated(s)) => s,
        other => panic!("expected truncated, got {other:?}"),
    }
}

pub(super) fn damaged(r: Result<(), Incomplete>) -> String {
    match r {
        Err(Incomplete::Damaged(s)) => s,
        other => panic!("expected damaged, got {other:?}"),
    }
}

/// Every cut of `data` shorter than `min_ok` fails; `data` itself passes.
pub(super) fn every_cut_fails(data: &[u8], kind: ImageKind) {
    check_complete_bytes(data, kind).unwrap();
    for n in 0..data.len() {
        let r = check_complete_bytes(&data[..n], kind);
        assert!(r.is_err(), "{kind} cut at {n} of {} passed", data.len());
    }
}
