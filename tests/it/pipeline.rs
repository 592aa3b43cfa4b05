//! The queue and pipeline against the simulator, in-process: every repair type end to end,
//! the errno paths, retries, expiry, dedupe, and upload concurrency (pauses: `pauses.rs`). The
//! simulator's ledger is the witness for every credit claim. Each test runs on both backends (`NAME::sqlite`,
//! `NAME::postgres`: see `helpers::backend`).

use std::time::Duration;

use hili::pipeline::OnExpired;
use hili::repair::{Repair, Rgb};
use hili::sim::Faults;
use hili::store::State;

use crate::helpers::backend::{Backend, both_backends};
use crate::helpers::*;

both_backends!(every_repair_type_end_to_end);
async fn every_repair_type_end_to_end(backend: Backend) {
    let Some(env) = Env::on(backend, fast_sim()).await else {
        return;
    };
    let cases = [
        (Repair::Sr, None, "sr"),
        (Repair::Repair, None, "repair"),
        (Repair::Colour, None, "colour"),
        (Repair::Bg, Some(Rgb(255, 255, 255)), "bg"),
    ];
    let store = env.store().await;
    for (i, (repair, rgb, name)) in cases.iter().enumerate() {
        let src = env.inbox.join(format!("{name}/photo{i}.jpg"));
        write_jpeg(&src, i as u32);
        let meta = std::fs::metadata(&src).unwrap();
        store
            .enqueue(hili::store::NewJob {
                source_path: src.clone(),
                source_root: env.inbox.clone(),
                output_dir: env.out.clone(),
                repair: *repair,
                rgb: *rgb,
                size: meta.len(),
                mtime_ns: hili::media::mtime_ns(&meta),
                file_id: Some(hili::media::FileId::of(&meta)),
                force: false,
            })
            .await
            .unwrap();
    }
    store.close().await;

    let summary = env.run_once(env.settings()).await;
    assert_eq!(
        (summary.done, summary.failed, summary.held),
        (4, 0, 0),
        "{summary:?}"
    );
    assert_eq!(summary.credits_spent, 4);

    let ledger = env.sim.ledger();
    assert_eq!(ledger.total_charges, 4);
    assert_eq!(ledger.duplicate_charges, 0);
    let mut wires: Vec<_> = ledger
        .charges
        .iter()
        .map(|c| c.repair_type.clone())
        .collect();
    wires.sort();
    assert_eq!(wires, ["bg", "sr", "sr,repair", "sr,repair,colour"]);

    // Outputs keep the source's folder and are named <stem>.<repair>.<ext>.
    for (i, (_, _, name)) in cases.iter().enumerate() {
        let out = env.out.join(format!("{name}/photo{i}.{name}.jpg"));
        let img = image::open(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
        if *name == "bg" {
            assert_eq!((img.width(), img.height()), (48, 32));
        } else {
            assert_eq!(
                (img.width(), img.height()),
                (96, 64),
                "{name} is a 2x upscale"
            );
        }
    }
    // The store recorded each output's sha256, and it matches the file.
    let store = env.store().await;
    for j in store.all_jobs(None).await.unwrap() {
        let out = j.output_path.clone().unwrap();
        assert_eq!(
            hili::media::sha256_file(&out).unwrap(),
            j.output_sha256.clone().unwrap()
        );
        let path: Vec<_> = store
            .events(j.id)
            .await
            .unwrap()
            .iter()
            .map(|e| e.to)
            .collect();
        assert_eq!(
            path,
            [
                State::Queued,
                State::Uploading,
                State::Processing,
                State::Downloading,
                State::Done
            ]
        );
    }
}

both_backends!(the_same_photo_twice_is_charged_once_and_gets_two_outputs);
async fn the_same_photo_twice_is_charged_once_and_gets_two_outputs(backend: Backend) {
    let Some(env) = Env::on(backend, fast_sim()).await else {
        return;
    };
    write_jpeg(&env.inbox.join("a.jpg"), 7);
    std::fs::copy(env.inbox.join("a.jpg"), env.inbox.join("copy of a.jpg")).unwrap();
    assert_eq!(env.add(Repair::Sr, None).await, 2);
    let summary = env.run_once(env.settings()).await;
    assert_eq!(summary.done, 2, "{summary:?}");
    assert_eq!(env.sim.ledger().total_charges, 1);
    let outs = env.outputs();
    assert_eq!(outs.len(), 2, "{outs:?}");
    assert_eq!(
        std::fs::read(&outs[0]).unwrap(),
        std::fs::read(&outs[1]).unwrap()
    );
    // Adding the same files again queues nothing.
    assert_eq!(env.add(Repair::Sr, None).await, 2);
    let summary = env.run_once(env.settings()).await;
    assert_eq!(summary.done, 0);
    assert_eq!(env.sim.ledger().total_charges, 1);
}

both_backends!(invalid_input_fails_before_any_request);
async fn invalid_input_fails_before_any_request(backend: Backend) {
    let Some(env) = Env::on(backend, fast_sim()).await else {
        return;
    };
    std::fs::write(env.inbox.join("notes.jpg"), b"this is text, not a photo").unwrap();
    std::fs::write(env.inbox.join("empty.png"), b"").unwrap();
    let big = image::RgbImage::new(7000, 10);
    big.save(env.inbox.join("wide.png")).unwrap();
    env.add(Repair::Sr, None).await;
    let summary = env.run_once(env.settings()).await;
    assert_eq!(summary.failed, 3, "{summary:?}");
    assert_eq!(env.sim.ledger().total_charges, 0);
    let store = env.store().await;
    for j in store.jobs_in(State::Failed).await.unwrap() {
        let reason = j.reason.unwrap();
        let name = j
            .source_path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        assert!(reason.contains(&name), "reason names the file: {reason}");
        assert!(!j.credit_spent);
    }
}

both_backends!(errno_9009_fails_the_photo_without_a_charge);
async fn errno_9009_fails_the_photo_without_a_charge(backend: Backend) {
    let Some(env) = Env::on(backend, fast_sim()).await else {
        return;
    };
    env.sim.set_faults(Faults {
        e9009: 1.0,
        ..Faults::default()
    });
    write_jpeg(&env.inbox.join("a.jpg"), 1);
    env.add(Repair::Sr, None).await;
    let summary = env.run_once(env.settings()).await;
    assert_eq!(
        (summary.failed, summary.credits_spent),
        (1, 0),
        "{summary:?}"
    );
    assert_eq!(env.sim.ledger().total_charges, 0);
}

both_backends!(transient_failures_are_retried_then_give_up_after_max_attempts);
async fn transient_failures_are_retried_then_give_up_after_max_attempts(backend: Backend) {
    let Some(env) = Env::on_with_queue(backend, fast_sim(), "max_attempts = 2").await else {
        return;
    };
    env.sim.set_faults(Faults {
        e9006: 1.0,
        ..Faults::default()
    });
    write_jpeg(&env.inbox.join("a.jpg"), 1);
    env.add(Repair::Sr, None).await;
    let summary = env.run_once(env.settings()).await;
    assert_eq!(summary.failed, 1, "{summary:?}");
    let store = env.store().await;
    let j = &store.jobs_in(State::Failed).await.unwrap()[0];
    assert_eq!(j.attempts, 2);
    assert!(
        j.reason.as_deref().unwrap().contains("2 attempts"),
        "{:?}",
        j.reason
    );
    assert_eq!(env.sim.ledger().total_charges, 0);
}

both_backends!(http_500_and_9006_are_retried_until_done);
async fn http_500_and_9006_are_retried_until_done(backend: Backend) {
    // Enough attempts that a run of bad luck (about a third of all attempts fail here) cannot
    // end a job as failed: this test is about retrying, the attempt limit has its own test.
    // (9006 three times in a row for one photo fails it on purpose — see `promises` — so the
    // random phase has HTTP 500s only; 9006 is retried deterministically below.)
    let Some(env) = Env::on_with_queue(backend, fast_sim(), "max_attempts = 40").await else {
        return;
    };
    env.sim.set_faults(Faults {
        http500: 0.3,
        ..Faults::default()
    });
    for i in 0..6 {
        write_jpeg(&env.inbox.join(format!("p{i}.jpg")), i);
    }
    env.add(Repair::Sr, None).await;
    // A job may fail ten times in a row: with the usual 50 ms base its backoff alone
    // (doubling each time) would then outlast the run's time limit. A 5 ms base keeps even
    // twelve failures in a row under 25 s.
    let mut settings = env.settings();
    settings.retry_base = std::time::Duration::from_millis(5);
    let summary = env.run_once(settings).await;
    assert_eq!(summary.done, 6, "{summary:?}");
    let ledger = env.sim.ledger();
    assert_eq!((ledger.total_charges, ledger.duplicate_charges), (6, 0));
    assert!(ledger.faults["http500"] > 0, "faults really happened");

    // 9006 twice in a row: retried, then done (not charged meanwhile).
    let Some(env) = Env::on(backend, fast_sim()).await else {
        return;
    };
    let env = std::sync::Arc::new(env);
    env.sim.set_faults(Faults {
        e9006: 1.0,
        ..Faults::default()
    });
    write_jpeg(&env.inbox.join("q.jpg"), 9);
    env.add(Repair::Sr, None).await;
    let mut settings = env.settings();
    settings.retry_base = std::time::Duration::from_millis(600);
    let run = {
        let env = env.clone();
        tokio::spawn(async move { env.run_once(settings).await })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while env.sim.ledger().faults["e9006"] < 2 {
        assert!(std::time::Instant::now() < deadline, "two 9006 refusals");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    env.sim.set_faults(Faults::default());
    let summary = run.await.unwrap();
    assert_eq!(summary.done, 1, "{summary:?}");
    let ledger = env.sim.ledger();
    assert_eq!((ledger.total_charges, ledger.upload_requests), (1, 3));
}

both_backends!(an_expired_result_is_held_as_a_lost_credit);
async fn an_expired_result_is_held_as_a_lost_credit(backend: Backend) {
    let mut opts = fast_sim();
    opts.processing = Duration::from_millis(20);
    opts.retention = Duration::from_millis(1);
    let Some(env) = Env::on(backend, opts).await else {
        return;
    };
    write_jpeg(&env.inbox.join("a.jpg"), 1);
    env.add(Repair::Sr, None).await;
    let summary = env.run_once(env.settings()).await;
    assert_eq!(summary.held, 1, "{summary:?}");
    let store = env.store().await;
    let j = &store.jobs_in(State::Held).await.unwrap()[0];
    assert!(
        j.reason.as_deref().unwrap().contains("expired"),
        "{:?}",
        j.reason
    );
    assert!(env.outputs().is_empty());
}

both_backends!(an_expired_result_is_uploaded_again_when_configured);
async fn an_expired_result_is_uploaded_again_when_configured(backend: Backend) {
    let mut opts = fast_sim();
    opts.processing = Duration::from_millis(20);
    opts.retention = Duration::from_millis(1);
    let Some(env) = Env::on(backend, opts).await else {
        return;
    };
    write_jpeg(&env.inbox.join("a.jpg"), 1);
    env.add(Repair::Sr, None).await;
    let mut settings = env.settings();
    settings.on_expired = OnExpired::Reupload;
    // Every attempt expires here: hili re-uploads once by itself, then holds the job rather
    // than spend credit after credit.
    let summary = env.run_once(settings).await;
    assert_eq!(summary.held, 1, "{summary:?}");
    assert_eq!(
        env.sim.ledger().total_charges,
        2,
        "re-uploaded once after expiry"
    );
    assert_eq!(
        env.sim.ledger().duplicate_charges,
        1,
        "the re-upload is the one asked for"
    );
}

both_backends!(a_large_result_streams_to_disk_and_lands_intact);
/// Results up to 256 KiB are written from memory in one go; larger ones stream into their
/// temp file as they arrive. Both must land byte for byte.
async fn a_large_result_streams_to_disk_and_lands_intact(backend: Backend) {
    let opts = hili::sim::SimOptions {
        passthrough: true, // the result is the upload itself, so the bytes can be compared
        ..fast_sim()
    };
    let Some(env) = Env::on(backend, opts).await else {
        return;
    };
    // Seeded noise compresses badly: a 700×700 JPEG of it is well over 256 KiB.
    let mut x: u32 = 12345;
    let noise = image::RgbImage::from_fn(700, 700, |_, _| {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let b = x.to_be_bytes();
        image::Rgb([b[0], b[1], b[2]])
    });
    let big = env.inbox.join("big.jpg");
    noise
        .save_with_format(&big, image::ImageFormat::Jpeg)
        .unwrap();
    let small = env.inbox.join("small.jpg");
    write_jpeg(&small, 7);
    let big_bytes = std::fs::read(&big).unwrap();
    assert!(
        big_bytes.len() > 256 * 1024,
        "only {} bytes",
        big_bytes.len()
    );

    env.add(Repair::Sr, None).await;
    // Byte for byte as the service sent it: without the metadata step, which adds an XMP packet.
    let mut settings = env.settings();
    settings.metadata = hili::pipeline::Metadata::None;
    let summary = env.run_once(settings).await;
    assert_eq!(summary.done, 2, "{summary:?}");
    let mut outputs: Vec<Vec<u8>> = env
        .outputs()
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    outputs.sort_by_key(|b| b.len());
    assert_eq!(outputs, vec![std::fs::read(&small).unwrap(), big_bytes]);
}

/// Each upload's intent and answer as (event id, time) pairs, in the order of the intents.
/// Event ids follow commit order.
async fn upload_spans(env: &Env) -> Vec<((i64, i64), (i64, i64))> {
    let store = env.store().await;
    let mut spans = Vec::new();
    for j in store.all_jobs(None).await.unwrap() {
        let events = store.events(j.id).await.unwrap();
        let at = |to: State| {
            let e = events.iter().find(|e| e.to == to).unwrap();
            (e.id, e.at_ms)
        };
        spans.push((at(State::Uploading), at(State::Processing)));
    }
    store.close().await;
    spans.sort();
    spans
}

both_backends!(uploads_never_overlap_beyond_upload_concurrency_while_the_next_photo_is_prepared);
async fn uploads_never_overlap_beyond_upload_concurrency_while_the_next_photo_is_prepared(
    backend: Backend,
) {
    // Each request takes 30 ms at the sim, so uploads started together would overlap.
    let mut opts = fast_sim();
    opts.latency = Duration::from_millis(30);
    opts.processing = Duration::ZERO;
    let Some(env) = Env::on(backend, opts).await else {
        return;
    };
    for i in 0..6 {
        write_jpeg(&env.inbox.join(format!("p{i}.jpg")), i);
    }
    env.add(Repair::Sr, None).await;

    let mut settings = env.settings();
    settings.upload_concurrency = 1;
    let summary = env.run_once(settings).await;
    assert_eq!(summary.done, 6, "{summary:?}");
    let spans = upload_spans(&env).await;
    for w in spans.windows(2) {
        let (((_, began), _), (_, (_, answered))) = (w[1], w[0]);
        assert!(
            began >= answered,
            "with upload_concurrency = 1 an upload began at {began} before the one before it \
             was answered at {answered}: {spans:?}"
        );
        // The next intent is committed after the answer before it (or with it, later in
        // the same transaction): a crash never leaves a newer intent without the older mdf.
        let (((intent, _), _), (_, (answer, _))) = (w[1], w[0]);
        assert!(
            intent > answer,
            "intent event {intent} before answer {answer}: {spans:?}"
        );
    }
    assert_eq!(env.sim.ledger().total_charges, 6);
}
