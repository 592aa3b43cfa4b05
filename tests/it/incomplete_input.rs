//! Truncated and structurally damaged photos through the real pipeline (in-process, against
//! the simulator): they end `failed` with a reason that names the file, says what is wrong and
//! what to do, and never reach the upload endpoint (the simulator counts every upload request,
//! answered or not). Complete photos of the same run, including one with data after its EOI
//! marker, are processed.

use std::io::Cursor;
use std::path::PathBuf;

use hili::repair::Repair;
use hili::store::State;

use crate::helpers::*;

fn encoded(seed: u32, format: image::ImageFormat) -> Vec<u8> {
    let mut buf = Vec::new();
    // Big enough that the scan data is most of the file, as in a real photo.
    photo(seed, 160, 120)
        .write_to(&mut Cursor::new(&mut buf), format)
        .unwrap();
    buf
}

#[tokio::test]
async fn truncated_png_and_jpegs_never_reach_the_upload_endpoint() {
    let env = Env::new(fast_sim()).await;
    let put = |name: &str, data: &[u8]| -> PathBuf {
        let p = env.inbox.join(name);
        std::fs::write(&p, data).unwrap();
        p
    };
    let jpeg = encoded(1, image::ImageFormat::Jpeg);
    let png = encoded(2, image::ImageFormat::Png);
    let good_jpeg = put("good.jpg", &jpeg);
    let good_png = put("good.png", &png);
    // A phone's motion photo: a video after EOI. Complete; must still be sent.
    let mut motion = encoded(3, image::ImageFormat::Jpeg);
    motion.extend_from_slice(b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom");
    let trailing = put("motion.jpg", &motion);

    // What `head -c` leaves: cut in the middle, and cut just short of the end.
    let no_eoi = "truncated: JPEG has no EOI marker after its scan data";
    let no_iend = "truncated: PNG ends before IEND";
    let sos = jpeg.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    let mut bad_crc = png.clone();
    let idat = bad_crc.windows(4).position(|w| w == b"IDAT").unwrap();
    bad_crc[idat + 20] ^= 0x40;
    let bad: Vec<(PathBuf, &str)> = vec![
        (put("half.jpg", &jpeg[..jpeg.len() / 2]), no_eoi),
        (put("no-eoi.jpg", &jpeg[..jpeg.len() - 2]), no_eoi),
        (
            put("cut-in-sos.jpg", &jpeg[..sos + 6]),
            "truncated: JPEG ends at byte",
        ),
        (put("half.png", &png[..png.len() / 2]), no_iend),
        (put("no-iend.png", &png[..png.len() - 12]), no_iend),
        (
            put("bad-crc.png", &bad_crc),
            "damaged: PNG chunk IDAT fails its CRC check",
        ),
    ];
    // The simulator itself would take some of these (a decoder fills a cut scan with grey),
    // so only the local check can keep them from being sent, and charged.
    assert_eq!(env.add(Repair::Sr, None).await, 3 + bad.len());

    let summary = env.run_once(env.settings()).await;
    assert_eq!(
        (summary.done, summary.failed),
        (3, bad.len() as u64),
        "{summary:?}"
    );
    let store = env.store().await;
    let jobs = store.all_jobs(None).await.unwrap();
    store.close().await;
    let job = |p: &PathBuf| {
        jobs.iter()
            .find(|j| &j.source_path == p)
            .unwrap_or_else(|| panic!("no job for {}", p.display()))
    };
    for p in [&good_jpeg, &good_png, &trailing] {
        assert_eq!(
            job(p).state(),
            State::Done,
            "{}: {:?}",
            p.display(),
            job(p).reason
        );
    }
    for (p, what) in &bad {
        let j = job(p);
        let reason = j.reason.clone().unwrap_or_default();
        assert_eq!(j.state(), State::Failed, "{}: {reason}", p.display());
        assert!(!j.credit_spent, "{reason}");
        assert!(
            reason.starts_with(&format!("{}: {what}", p.display())),
            "the reason names the file and what is wrong: {reason}"
        );
        assert!(
            reason.contains("copy the complete photo again")
                || reason.contains("export or copy the photo again"),
            "the reason says what to do: {reason}"
        );
    }

    // Three upload requests in all, each charged: none of the broken files was sent.
    let ledger = env.sim.ledger();
    assert_eq!(ledger.upload_requests, 3, "{ledger:?}");
    assert_eq!(ledger.total_charges, 3, "{ledger:?}");
    for (p, _) in &bad {
        let sha = hili::media::sha256_file(p).unwrap();
        assert!(
            !ledger.charges.iter().any(|c| c.sha256 == sha),
            "{} was charged",
            p.display()
        );
    }
}
