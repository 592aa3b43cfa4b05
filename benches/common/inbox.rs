//! A bench's inbox of distinct small photos: one JPEG, numbered by a comment segment so each
//! file has its own content (and so its own identity and charge). Benches take this file with
//! `#[path = "common/inbox.rs"] mod inbox;`.

use std::path::Path;

use hili::repair::Repair;
use hili::store::{NewJob, Store};

fn base_jpeg() -> Vec<u8> {
    let img = image::RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x ^ y) * 7) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg)
        .expect("encoding the bench JPEG");
    out.into_inner()
}

fn numbered_jpeg(base: &[u8], n: u32) -> Vec<u8> {
    let payload = format!("hili bench photo {n:08}");
    let len = (payload.len() + 2) as u16;
    let mut v = Vec::with_capacity(base.len() + payload.len() + 4);
    v.extend_from_slice(&base[..2]); // SOI
    v.extend_from_slice(&[0xFF, 0xFE]);
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(payload.as_bytes());
    v.extend_from_slice(&base[2..]);
    v
}

pub(crate) fn write_inbox(inbox: &Path, n: usize) {
    let base = base_jpeg();
    for i in 0..n {
        let sub = inbox.join(format!("d{:02}", i / 100));
        std::fs::create_dir_all(&sub).expect("creating inbox dir");
        let p = sub.join(format!("IMG_{i:05}.jpg"));
        std::fs::write(&p, numbered_jpeg(&base, i as u32)).expect("writing a photo");
    }
    // The bench photos must pass the same input check as real ones.
    let probe = hili::media::probe(&inbox.join("d00/IMG_00000.jpg"));
    assert!(probe.is_ok(), "bench JPEG fails the probe: {probe:?}");
}

/// Queues every photo under `inbox` for super-resolution into `out`; returns how many.
pub(crate) async fn queue_inbox(store: &Store, inbox: &Path, out: &Path) -> usize {
    let jobs: Vec<NewJob> = hili::media::walk(&[inbox.to_path_buf()])
        .map(|f| f.expect("walking the inbox"))
        .map(|f| NewJob::from_found(f, out.to_path_buf(), Repair::Sr, None))
        .collect();
    let n = jobs.len();
    store.enqueue_many(jobs).await.expect("enqueuing");
    n
}
