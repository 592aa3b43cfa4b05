//! Metadata carried over (`[output] metadata`): photos carrying EXIF (date taken, camera, GPS,
//! orientation 6, 600 dpi, a thumbnail), an XMP caption, IPTC and an ICC profile go through
//! the simulator — whose results carry no metadata — and come back with all of it, fixed for
//! the result's pixels; `strip_gps`, `metadata = "none"`, an unreadable source, and a crash
//! between the download and the metadata copy.

use std::process::Stdio;

use exif::Tag;
use hili::media::metadata::sample::{self, Seen};
use hili::pipeline::{Metadata, Settings};
use hili::repair::Repair;
use hili::store::{Job, State};

use crate::helpers::*;

/// Queues `name` (holding `bytes`) for `sr` and runs the queue in-process with `settings`.
async fn process(env: &Env, name: &str, bytes: &[u8], settings: Settings) -> (Job, Vec<u8>) {
    std::fs::write(env.inbox.join(name), bytes).unwrap();
    env.add(Repair::Sr, None).await;
    env.run_once(settings).await;
    done_job(env).await
}

/// The one job, done, with its output's bytes (checked against the recorded SHA-256).
async fn done_job(env: &Env) -> (Job, Vec<u8>) {
    let store = env.store().await;
    let jobs = store.all_jobs(None).await.unwrap();
    store.close().await;
    assert_eq!(jobs.len(), 1);
    let job = jobs.into_iter().next().unwrap();
    assert_eq!(job.state(), State::Done, "{:?}", job.reason);
    let out = std::fs::read(job.output_path.as_ref().unwrap()).unwrap();
    assert_eq!(
        Some(hili::media::sha256_bytes(&out)),
        job.output_sha256,
        "the recorded hash is of the final file"
    );
    (job, out)
}

/// Everything survived, fixed for a 2× result of a `w`×`h` source.
fn assert_carried(job: &Job, out: &[u8], (w, h): (u32, u32), gps: bool) {
    let seen = Seen::of(out);
    let tag = |t| seen.tag(t).unwrap_or_else(|| panic!("{t} missing"));
    assert_eq!(tag(Tag::Make), format!("\"{}\"", sample::CAMERA_MAKE));
    assert_eq!(tag(Tag::Model), format!("\"{}\"", sample::CAMERA_MODEL));
    assert_eq!(tag(Tag::DateTimeOriginal), "1952-07-14 10:30:00");
    // The simulator keeps the stored layout, so the viewer still has to turn it.
    assert_eq!(tag(Tag::Orientation), "row 0 at right and column 0 at top");
    assert_eq!(tag(Tag::XResolution), "1200");
    assert_eq!(tag(Tag::YResolution), "1200");
    assert_eq!(tag(Tag::PixelXDimension), (2 * w).to_string());
    assert_eq!(tag(Tag::PixelYDimension), (2 * h).to_string());
    assert!(tag(Tag::Software).contains("hili") && tag(Tag::Software).contains("sr"));
    assert_eq!(seen.thumbnail_fields(), 0, "thumbnail dropped");
    assert_eq!(seen.has_gps(), gps);
    assert!(seen.xmp.contains(sample::CAPTION));
    let name = job.source_path.file_name().unwrap().to_string_lossy();
    assert!(
        seen.xmp
            .contains(&format!("<hili:DerivedFrom>{name}</hili:DerivedFrom>"))
    );
    let sha = job.content_sha256.clone().unwrap();
    assert!(
        seen.xmp
            .contains(&format!("<hili:DerivedFromSHA256>{sha}<"))
    );
    assert!(
        seen.xmp
            .contains("<hili:Action>sr (super-resolution)</hili:Action>")
    );
    assert_eq!(seen.carried.iptc, Some(sample::iptc_records()));
    assert_eq!(seen.carried.icc, Some(sample::icc_profile()));
    let (x, y) = seen.carried.density.expect("a density").dpi();
    assert!(
        (x - 1200.0).abs() < 0.5 && (y - 1200.0).abs() < 0.5,
        "{x}×{y} dpi"
    );
    assert_eq!(seen.carried.dims, (2 * w, 2 * h));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jpeg_s_exif_xmp_iptc_and_icc_survive_into_its_result_fixed() {
    let env = Env::new(fast_sim()).await;
    let (job, out) = process(
        &env,
        "lake.jpg",
        &sample::tagged_jpeg(64, 48),
        env.settings(),
    )
    .await;
    assert_carried(&job, &out, (64, 48), true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_png_s_metadata_survives_into_its_result_fixed() {
    let env = Env::new(fast_sim()).await;
    let (job, out) = process(
        &env,
        "lake.png",
        &sample::tagged_png(64, 48),
        env.settings(),
    )
    .await;
    assert_carried(&job, &out, (64, 48), true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strip_gps_drops_the_location() {
    let env = Env::new(fast_sim()).await;
    let mut settings = env.settings();
    settings.strip_gps = true;
    let (job, out) = process(&env, "lake.jpg", &sample::tagged_jpeg(64, 48), settings).await;
    assert_carried(&job, &out, (64, 48), false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_none_keeps_the_result_as_the_service_sent_it() {
    let env = Env::new(fast_sim()).await;
    let mut settings = env.settings();
    settings.metadata = Metadata::None;
    let (_, out) = process(&env, "lake.jpg", &sample::tagged_jpeg(64, 48), settings).await;
    // The simulator's result carries nothing: what the other tests find, hili wrote.
    let seen = Seen::of(&out);
    assert!(seen.exif.is_none());
    assert!(seen.xmp.is_empty());
    assert_eq!(seen.carried.iptc, None);
    assert_eq!(seen.carried.icc, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_cannot_be_read_still_yields_its_result_with_a_warning() {
    let env = Env::new(fast_sim()).await;
    let path = env.inbox.join("lake.jpg");
    std::fs::write(&path, sample::tagged_jpeg(64, 48)).unwrap();
    env.add(Repair::Sr, None).await;
    // The source is replaced between its upload and the metadata step.
    let gone = path.clone();
    hili::failpoint::on("before-metadata-copy", path.clone(), move || {
        std::fs::write(&gone, b"no longer a photo").unwrap();
    });
    env.run_once(env.settings()).await;
    let (job, out) = done_job(&env).await;
    assert!(Seen::of(&out).exif.is_none(), "kept as the service sent it");
    let store = env.store().await;
    let events = store.events(job.id).await.unwrap();
    store.close().await;
    let note = events
        .iter()
        .filter_map(|e| e.detail.as_deref())
        .find(|d| d.contains("metadata of"))
        .expect("a warning in the job's events");
    assert!(
        note.contains("lake.jpg") && note.contains("changed since it was uploaded"),
        "{note}"
    );
}

/// `hili run --once` as a child aborted at `step`, then run again to the end: one charge,
/// one complete result carrying the metadata. Returns the output directory's files after the
/// crash.
async fn crash_at(step: &str) -> Vec<std::path::PathBuf> {
    let env = Env::new(fast_sim()).await;
    std::fs::write(env.inbox.join("lake.jpg"), sample::tagged_jpeg(64, 48)).unwrap();
    env.add(Repair::Sr, None).await;
    let mut first = env.hili();
    first.env("HILI_CRASH_AT", step);
    let out = first
        .args(["run", "--once"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("aborting on purpose"), "{step}: {stderr}");
    let after_crash = files_under(&env.out);
    // A second later: a provenance time taken from the clock would now differ.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    env.run_hili(["run", "--once"]).await.expect_code(0);
    let (job, out) = done_job(&env).await;
    assert_carried(&job, &out, (64, 48), true);
    let ledger = env.sim.ledger();
    assert_eq!(
        (ledger.total_charges, ledger.duplicate_charges),
        (1, 0),
        "{step}"
    );
    assert_eq!(env.outputs().len(), 1, "{step}: {:?}", env.outputs());
    after_crash
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_metadata_copy_costs_one_charge_and_ends_complete() {
    let after_crash = crash_at("before-metadata-copy").await;
    assert!(
        after_crash.iter().all(|p| p
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".hili-tmp")),
        "nothing placed before the metadata copy: {after_crash:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_placing_the_result_downloads_it_again_into_the_same_file() {
    let after_crash = crash_at("before:downloading->done").await;
    assert_eq!(
        after_crash.len(),
        1,
        "the result was placed: {after_crash:?}"
    );
}
