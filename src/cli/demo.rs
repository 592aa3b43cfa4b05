//! `hili demo`: the whole product on one machine in a few seconds. Starts the simulator on
//! 127.0.0.1, writes generated sample photos (an old greyscale photo, a portrait on a plain
//! background, a small picture with sharp letters and lines) into `<dir>/inbox`, queues each
//! with a fitting repair type, runs the pipeline once, says which original gave which result,
//! and writes the report (`hili report`) of the run into `<dir>/hili-report.html`.
//!
//! It takes no configuration: `--config` is refused rather than ignored, because a
//! configuration names the real service and its queue, and the demo must never spend a credit
//! or touch a real queue. Everything it makes stays in `--dir`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use image::{ImageBuffer, Luma, Rgb as Px, RgbImage};

use super::Exit;
use super::args::DemoArgs;
use super::html_report::{self, Selection};
use crate::api::client::{ApiClient, ClientOptions};
use crate::config::Config;
use crate::pipeline::{Ctx, RunOptions, Settings};
use crate::repair::{Repair, Rgb};
use crate::secret::Secret;
use crate::sim::{self, SimOptions};
use crate::store::{NewJob, Store};

pub(super) async fn demo(args: DemoArgs, config: Option<&Path>) -> anyhow::Result<Exit> {
    if let Some(path) = config {
        eprintln!(
            "hili: demo takes no --config (given {}): it runs against its own built-in \
             simulator with its own queue in --dir, so it never spends a real credit nor \
             touches your queue. Run `hili demo` without --config; to process your photos \
             with that configuration, use `hili add` and `hili run --once`.",
            path.display()
        );
        return Ok(Exit::Config);
    }
    let dir = std::path::absolute(&args.dir).context("cannot resolve the demo directory")?;
    let inbox = dir.join("inbox");
    let results = dir.join("results");
    std::fs::create_dir_all(&inbox)
        .with_context(|| format!("{}: cannot create the demo inbox", inbox.display()))?;

    let sim_opts = SimOptions {
        credits: 20,
        processing: Duration::from_millis(800),
        seed: 7,
        ..SimOptions::default()
    };
    let (third_code, secret) = (sim_opts.third_code.clone(), sim_opts.secret.clone());
    let sim = sim::serve(sim_opts)
        .await
        .context("could not start the simulator on 127.0.0.1")?;
    println!(
        "simulator (a stand-in for the real service, not AI) at {}",
        sim.base_url()
    );

    let db = dir.join("hili.db");
    let _lock = crate::store::RunLock::acquire(&db)?;
    let store = Store::open(&db).await?;
    store.mark_run_started().await?;
    queue_samples(&store, &inbox, &results).await?;

    let api = ApiClient::new(ClientOptions {
        base_url: sim.base_url(),
        third_code,
        secret: Secret::new(secret),
        timeout: Duration::from_secs(30),
    })?;
    let mut settings = Settings::from_config(&Config::default());
    settings.requests_per_second = 20.0;
    settings.burst = 10;
    settings.poll_interval = Duration::from_millis(300);
    let ctx = Ctx::new(store, api, settings, super::stop_on_signal());
    let opts = RunOptions {
        once: true,
        exit_when_blocked: true,
    };
    let summary = super::run::run_with_progress(ctx, opts).await?;
    let ledger = sim.ledger();
    sim.shutdown().await;

    let store = Store::open(&db).await?;
    let said = tell_outcomes(&store, &dir).await;
    let report = dir.join("hili-report.html");
    let built = html_report::write(&store, &db, Selection::LastRun, &report).await;
    store.close().await;
    said?;
    println!(
        "the simulator charged {} credit(s), {} duplicate charge(s)",
        ledger.total_charges, ledger.duplicate_charges
    );
    html_report::print_written(&report, &built?);
    println!("  open it in a browser to compare each original with its result");
    Ok(super::run::exit_code(&summary))
}

/// Writes the samples into `inbox` and queues each with the repair it demonstrates.
async fn queue_samples(store: &Store, inbox: &Path, results: &Path) -> anyhow::Result<()> {
    let samples = {
        let inbox = inbox.to_path_buf();
        tokio::task::spawn_blocking(move || write_samples(&inbox)).await??
    };
    let mut jobs = Vec::new();
    for (path, repair, rgb) in samples {
        let meta = std::fs::metadata(&path)?;
        jobs.push(NewJob {
            source_path: path,
            source_root: inbox.to_path_buf(),
            output_dir: results.to_path_buf(),
            repair,
            rgb,
            size: meta.len(),
            mtime_ns: crate::media::mtime_ns(&meta),
            file_id: Some(crate::media::FileId::of(&meta)),
            force: false,
        });
    }
    store.enqueue_many(jobs).await?;
    Ok(())
}

/// Says where the originals are and which original gave which result (or why none).
async fn tell_outcomes(store: &Store, dir: &Path) -> anyhow::Result<()> {
    let started = store.last_run_started().await?.unwrap_or(0);
    let short = |p: &Path| p.strip_prefix(dir).unwrap_or(p).display().to_string();
    println!(
        "in {}: the originals are in inbox/ (left as they were), the results in results/; \
         each original gave:",
        dir.display()
    );
    for job in store.all_jobs(None).await? {
        if job.updated_at_ms < started {
            continue;
        }
        let outcome = match (&job.output_path, &job.reason) {
            (Some(out), _) => short(out),
            (None, Some(why)) => format!("{}: {why}", job.state()),
            (None, None) => job.state().to_string(),
        };
        println!(
            "  {}  --{}-->  {outcome}",
            short(&job.source_path),
            job.repair
        );
    }
    Ok(())
}

/// Generates the sample photos; returns each with the repair it demonstrates.
fn write_samples(inbox: &Path) -> anyhow::Result<Vec<(PathBuf, Repair, Option<Rgb>)>> {
    let (w, h) = (240u32, 180u32);
    // An "old photo": greyscale gradient sky, a dark hill, scratches of noise.
    let old: ImageBuffer<Luma<u8>, Vec<u8>> = ImageBuffer::from_fn(w, h, |x, y| {
        let hill = (h as f32 * 0.6 + 20.0 * ((x as f32) / 30.0).sin()) as u32;
        let base = if y > hill {
            60
        } else {
            200 - (y * 80 / h) as u8
        };
        let scratch = if (x * 7 + y * 13) % 97 == 0 { 60 } else { 0 };
        Luma([base.saturating_add(scratch)])
    });
    // A portrait on a plain light-blue background: head and shoulders.
    let portrait: RgbImage = ImageBuffer::from_fn(w, h, |x, y| {
        let (cx, cy) = (w as f32 / 2.0, h as f32 * 0.42);
        let dx = (x as f32 - cx) / 38.0;
        let dy = (y as f32 - cy) / 50.0;
        if dx * dx + dy * dy < 1.0 {
            Px([224, 182, 150])
        } else if y as f32 > h as f32 * 0.78 && (x as f32 - cx).abs() < 80.0 {
            Px([40, 50, 90])
        } else {
            Px([170, 205, 240])
        }
    });
    let snap = sharp_snapshot();
    let mut out = Vec::new();
    let p = inbox.join("grandparents-1952.jpg");
    old.save(&p)
        .with_context(|| format!("{}: cannot write sample", p.display()))?;
    out.push((p.clone(), Repair::Colour, None));
    let p2 = inbox.join("old-street-scan.png");
    old.save(&p2)
        .with_context(|| format!("{}: cannot write sample", p2.display()))?;
    out.push((p2, Repair::Repair, None));
    let p3 = inbox.join("passport-portrait.png");
    portrait
        .save(&p3)
        .with_context(|| format!("{}: cannot write sample", p3.display()))?;
    out.push((p3, Repair::Bg, Some(Rgb(255, 255, 255))));
    let p4 = inbox.join("shop-sign.png");
    snap.save(&p4)
        .with_context(|| format!("{}: cannot write sample", p4.display()))?;
    out.push((p4, Repair::Sr, None));
    Ok(out)
}

/// 5×7 bitmaps of the letters H, I and L (one row a byte, the leftmost pixel the high bit).
const GLYPHS: [[u8; 7]; 3] = [
    [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
    [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x1F],
    [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
];

/// A small picture with sharp detail for super-resolution: the word HILI in 2-pixel strokes,
/// thin diagonal lines and a checkerboard, 96×64. Its edges look coarse when it is shown
/// larger; the 2× result's look finer (a smooth gradient would look the same both ways).
fn sharp_snapshot() -> RgbImage {
    let word = [0usize, 1, 2, 1];
    ImageBuffer::from_fn(96, 64, |x, y| {
        if y >= 46 {
            return if (x / 4 + y / 4) % 2 == 0 {
                Px([245, 245, 245])
            } else {
                Px([30, 30, 30])
            };
        }
        let (gx, gy) = (x.wrapping_sub(8), y.wrapping_sub(10));
        let (letter, col, row) = ((gx / 14) as usize, (gx % 14) / 2, gy / 2);
        let lit = letter < word.len()
            && col < 5
            && row < 7
            && GLYPHS[word[letter]][row as usize] & (0x10 >> col) != 0;
        if lit {
            Px([20, 30, 130])
        } else if (x + 2 * y) % 11 == 0 {
            Px([200, 40, 40])
        } else {
            Px([238, 226, 200])
        }
    })
}
