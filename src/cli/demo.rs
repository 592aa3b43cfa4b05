//! `hili demo`: the whole product on one machine in a few seconds. Starts the simulator on
//! 127.0.0.1, writes generated sample photos (an old greyscale photo, a portrait on a plain
//! background, a small snapshot) into `<dir>/inbox`, queues each with a fitting repair type,
//! runs the pipeline once and says where the results are.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use image::{ImageBuffer, Luma, Rgb as Px, RgbImage};

use super::Exit;
use super::args::DemoArgs;
use crate::api::client::{ApiClient, ClientOptions};
use crate::config::Config;
use crate::pipeline::{Ctx, RunOptions, Settings};
use crate::repair::{Repair, Rgb};
use crate::secret::Secret;
use crate::sim::{self, SimOptions};
use crate::store::{NewJob, Store};

pub(super) async fn demo(args: DemoArgs) -> anyhow::Result<Exit> {
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

    let samples = {
        let inbox = inbox.clone();
        tokio::task::spawn_blocking(move || write_samples(&inbox)).await??
    };
    let _lock = crate::store::RunLock::acquire(&dir.join("hili.db"))?;
    let store = Store::open(&dir.join("hili.db")).await?;
    let mut jobs = Vec::new();
    for (path, repair, rgb) in samples {
        let meta = std::fs::metadata(&path)?;
        jobs.push(NewJob {
            source_path: path,
            source_root: inbox.clone(),
            output_dir: results.clone(),
            repair,
            rgb,
            size: meta.len(),
            mtime_ns: crate::media::mtime_ns(&meta),
            file_id: Some(crate::media::FileId::of(&meta)),
            force: false,
        });
    }
    store.enqueue_many(jobs).await?;

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

    println!("results are in {}:", results.display());
    for entry in walk_files(&results) {
        println!("  {}", entry.display());
    }
    println!(
        "the simulator charged {} credit(s), {} duplicate charge(s)",
        ledger.total_charges, ledger.duplicate_charges
    );
    Ok(super::run::exit_code(&summary))
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    v.sort();
    v
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
    // A small colourful snapshot for super-resolution.
    let snap: RgbImage = ImageBuffer::from_fn(120, 90, |x, y| {
        Px([(x * 2) as u8, (y * 2) as u8, ((x + y) % 256) as u8])
    });

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
    let p4 = inbox.join("holiday-snapshot.jpg");
    snap.save(&p4)
        .with_context(|| format!("{}: cannot write sample", p4.display()))?;
    out.push((p4, Repair::Sr, None));
    Ok(out)
}
