//! What happens to a watched source file after its job: kept, moved into `done_dir` (keeping
//! its path below the watch folder, never overwriting), or deleted — only once the output is
//! durably written, which `done` guarantees. Sources of failed or held jobs go to `failed_dir`
//! when one is set, with a `<name>.reason.txt` beside them saying why.
//!
//! Only what was processed is disposed of. Before a delete or a move the file at the source
//! path must still be the job's: the same device, inode, size and mtime as recorded at
//! enqueue (or, when any differs, the same content hash as uploaded); it must be a regular
//! file, not a symbolic link; it must not be reached through a symbolic link leading outside
//! the watch folder; and no later job may have claimed the path. Otherwise the file is left
//! alone (a new scan saved under the same name is its own job's) and the job's events say why.
//! Moves go through `media::mover`: one atomic rename on the same filesystem; anything longer
//! (a copy to another filesystem, link + unlink) is recorded in the store first, so that a
//! crash mid-move is completed or undone at start-up ([`recover_moves`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::After;
use crate::media::mover::{Fast, MovePlan, Settled};
use crate::media::{self, FileId};
use crate::store::{Job, JobId, State};

use super::{Ctx, PipelineError, blocking};

/// The disposition rules of one watch folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disposition {
    /// The watch folder (jobs' `source_root`).
    pub root: PathBuf,
    /// What happens to a done job's source: the watch table's `after`.
    pub after: After,
    pub done_dir: Option<PathBuf>,
    pub failed_dir: Option<PathBuf>,
}

impl Disposition {
    /// Whether this folder's jobs need any action at all.
    fn acts(&self) -> bool {
        self.after != After::Keep || self.failed_dir.is_some()
    }
}

/// Handles every job whose source awaits its disposition. Cheap when there is none.
pub async fn pass(ctx: &Ctx) -> Result<(), PipelineError> {
    let rules: Vec<Disposition> = ctx
        .dispositions()
        .into_iter()
        .filter(Disposition::acts)
        .collect();
    if rules.is_empty() {
        return Ok(());
    }
    let roots: Vec<PathBuf> = rules.iter().map(|r| r.root.clone()).collect();
    loop {
        let jobs = ctx.store.undisposed(&roots, 100).await?;
        if jobs.is_empty() {
            return Ok(());
        }
        for job in jobs {
            let Some(rule) = rules.iter().find(|r| r.root == job.source_root).cloned() else {
                continue;
            };
            if !dispose_one(ctx, &job, rule).await? {
                // Left undisposed: tried again on the next pass (e.g. a full disk).
                return Ok(());
            }
        }
    }
}

/// Settles the moves a crash interrupted (see `media::mover`). Runs at start-up, before any
/// stage: each is completed (and its job marked disposed) or undone (moved again later).
pub async fn recover_moves(ctx: &Ctx) -> Result<(), PipelineError> {
    for (id, plan) in ctx.store.pending_moves().await? {
        let Some(job) = ctx.store.get(id).await? else {
            ctx.store.clear_move(id).await?;
            continue;
        };
        tracing::info!(
            job = %id,
            "settling the move of {} to {} interrupted when hili stopped",
            plan.source.display(),
            plan.dest.display()
        );
        settle(ctx, &job, plan).await?;
    }
    Ok(())
}

/// Disposes of one job's source; returns whether it is done with (false: try again later).
async fn dispose_one(ctx: &Ctx, job: &Job, rule: Disposition) -> Result<bool, PipelineError> {
    if let Some(plan) = ctx.store.pending_move(job.id).await? {
        return settle(ctx, job, plan).await;
    }
    let later = ctx.store.later_job_at(job.id, &job.source_path).await?;
    let j = job.clone();
    let step = match blocking(move || decide(&j, &rule, later)).await? {
        Ok(step) => step,
        Err(e) => {
            tracing::warn!(job = %job.id, "could not dispose of {}: {e}", job.source_path.display());
            return Ok(false);
        }
    };
    let plan = match step {
        Step::Finished(note) => {
            if let Some(note) = &note {
                tracing::info!(job = %job.id, "{note}");
            }
            ctx.store.mark_disposed(job.id, note.as_deref()).await?;
            return Ok(true);
        }
        Step::Move(plan) => plan,
    };
    // One atomic rename needs no record; anything longer is recorded before it starts.
    let p = plan.clone();
    match blocking(move || media::mover::rename_in_place(&p)).await? {
        Ok(Fast::Moved) => {
            finish(ctx, job, &plan).await?;
            return Ok(true);
        }
        Ok(Fast::OtherFilesystem | Fast::NoNoReplace) => {}
        Err(e) => {
            // Nothing moved (the name was taken, or the file changed): planned again later.
            tracing::warn!(
                job = %job.id,
                "could not move {} to {}: {e}",
                plan.source.display(),
                plan.dest.display()
            );
            return Ok(false);
        }
    }
    ctx.store.record_move(job.id, &plan).await?;
    crate::failpoint::hit("move:after-intent");
    let p = plan.clone();
    match blocking(move || media::mover::execute(&p)).await? {
        Ok(()) => {
            finish(ctx, job, &plan).await?;
            Ok(true)
        }
        Err(e) => {
            warn_move(job, "could not move", &plan, &e);
            // Undone (then planned again next pass) or, if it got far enough, completed.
            settle(ctx, job, plan).await?;
            Ok(false)
        }
    }
}

/// Completes or undoes a recorded move and records the outcome; returns whether the job is
/// disposed of.
async fn settle(ctx: &Ctx, job: &Job, plan: MovePlan) -> Result<bool, PipelineError> {
    let p = plan.clone();
    match blocking(move || media::mover::settle(&p)).await? {
        Ok(Settled::Completed) => {
            finish(ctx, job, &plan).await?;
            Ok(true)
        }
        Ok(Settled::Undone) => {
            ctx.store.clear_move(job.id).await?;
            Ok(false)
        }
        Ok(Settled::SourceGone) => {
            let note = format!(
                "{} was gone before its move to {} (removed by someone else)",
                plan.source.display(),
                plan.dest.display()
            );
            tracing::warn!(job = %job.id, "{note}");
            ctx.store.finish_move(job.id, Some(&note)).await?;
            Ok(true)
        }
        Err(e) => {
            // The record stays: the next start settles it.
            warn_move(job, "could not settle the move of", &plan, &e);
            Ok(false)
        }
    }
}

/// Logs a move of a source that did not go through, naming both ends.
fn warn_move(job: &Job, what: &str, plan: &MovePlan, e: &std::io::Error) {
    tracing::warn!(
        job = %job.id,
        "{what} {} to {}: {e}",
        plan.source.display(),
        plan.dest.display()
    );
}

/// A move carried out: the reason note of a failed source, then the record and the mark.
async fn finish(ctx: &Ctx, job: &Job, plan: &MovePlan) -> Result<(), PipelineError> {
    let failed = matches!(job.state(), State::Failed | State::Held);
    let note = format!(
        "moved {} to {}{}",
        plan.source.display(),
        plan.dest.display(),
        if failed {
            format!(" ({})", job.state())
        } else {
            String::new()
        }
    );
    if failed {
        let (j, dest) = (job.clone(), plan.dest.clone());
        if let Err(e) = blocking(move || write_reason(&j, &dest)).await? {
            // The move is done; only the explanation beside it is missing.
            tracing::warn!(job = %job.id, "could not write the reason beside {}: {e}", plan.dest.display());
        }
    }
    tracing::info!(job = %job.id, "{note}");
    ctx.store.finish_move(job.id, Some(&note)).await?;
    Ok(())
}

fn write_reason(job: &Job, dest: &Path) -> std::io::Result<()> {
    let reason = job.reason.as_deref().unwrap_or("no reason recorded");
    let mut note_path = dest.to_path_buf().into_os_string();
    note_path.push(".reason.txt");
    let mut f = std::fs::File::create(&note_path)?;
    writeln!(f, "hili job {} ({}): {reason}", job.id, job.state())?;
    writeln!(f, "source: {}", job.source_path.display())?;
    f.sync_all()
}

/// What [`decide`] found to do.
enum Step {
    /// Nothing more to do; what was done (or why the file was left alone), for the events.
    Finished(Option<String>),
    /// A move to record and carry out.
    Move(MovePlan),
}

/// Decides one job's disposition and carries out a delete; a move is only planned.
fn decide(job: &Job, rule: &Disposition, later: Option<JobId>) -> std::io::Result<Step> {
    let src = &job.source_path;
    let to_dir = match (job.state(), rule.after, &rule.done_dir, &rule.failed_dir) {
        (State::Done, After::Move, Some(done_dir), _) => Some(done_dir),
        (State::Done, After::Delete, _, _) => None,
        (State::Failed | State::Held, _, _, Some(failed_dir)) => Some(failed_dir),
        _ => return Ok(Step::Finished(None)),
    };
    if let Some(later) = later {
        return Ok(Step::Finished(Some(format!(
            "left {} in place: job {later} has queued the file at that path since",
            src.display()
        ))));
    }
    let meta = match std::fs::symlink_metadata(src) {
        Ok(m) => m,
        // Already moved or deleted (e.g. before a crash, or by the user).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Step::Finished(None)),
        Err(e) => return Err(e),
    };
    if let Some(why) = not_ours(job, &rule.root, &meta)? {
        return Ok(Step::Finished(Some(format!(
            "left {} in place: {why}",
            src.display()
        ))));
    }
    match to_dir {
        Some(dir) => {
            let dest = dest_below(src, &rule.root, dir)?;
            Ok(Step::Move(media::mover::plan(src, &meta, &dest)?))
        }
        None => {
            // `done` is recorded only after the output's rename and directory fsync.
            let output_ok = job.output_path.as_deref().is_some_and(Path::is_file);
            if !output_ok {
                return Ok(Step::Finished(Some(format!(
                    "kept {}: its output is missing",
                    src.display()
                ))));
            }
            // The check may have hashed for a while: the name must still hold what was checked.
            let now = std::fs::symlink_metadata(src)?;
            if FileId::of(&now) != FileId::of(&meta)
                || now.len() != meta.len()
                || media::mtime_ns(&now) != media::mtime_ns(&meta)
            {
                return Ok(Step::Finished(Some(format!(
                    "left {} in place: it changed while it was being checked",
                    src.display()
                ))));
            }
            std::fs::remove_file(src)?;
            if let Some(dir) = src.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(Step::Finished(Some(format!("deleted {}", src.display()))))
        }
    }
}

/// Why the file now at the job's source path must not be deleted or moved, if it must not.
fn not_ours(job: &Job, root: &Path, meta: &std::fs::Metadata) -> std::io::Result<Option<String>> {
    let src = &job.source_path;
    if meta.file_type().is_symlink() {
        return Ok(Some(
            "it is a symbolic link (its target is not hili's to move or delete)".into(),
        ));
    }
    if !meta.is_file() {
        return Ok(Some("it is no longer a regular file".into()));
    }
    // The folder the name lives in, symlinks resolved, must lie in the watch folder's
    // (itself resolved, so a watch folder that is a symlink still works).
    let dir = match src.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let (real_dir, real_root) = (std::fs::canonicalize(dir)?, std::fs::canonicalize(root)?);
    if !real_dir.starts_with(&real_root) {
        return Ok(Some(format!(
            "it is reached through a symbolic link leading outside the watch folder {} (to {})",
            root.display(),
            real_dir.display()
        )));
    }
    let same_stat = meta.len() == job.size
        && media::mtime_ns(meta) == job.mtime_ns
        && job.file_id.is_none_or(|id| id == FileId::of(meta));
    if same_stat {
        return Ok(None);
    }
    // Touched or copied back: still ours if the content is what was uploaded.
    if let Some(sha) = &job.content_sha256
        && media::sha256_file(src)? == *sha
    {
        return Ok(None);
    }
    Ok(Some(format!(
        "it changed since job {} read it (a new version saved under the same name is \
         processed as its own job)",
        job.id
    )))
}

/// Where `src` goes below `dest_root`: its path relative to the watch folder (its bare name
/// if it is not below it).
fn dest_below(src: &Path, root: &Path, dest_root: &Path) -> std::io::Result<PathBuf> {
    let rel = src
        .strip_prefix(root)
        .ok()
        .filter(|r| !r.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .or_else(|| src.file_name().map(PathBuf::from))
        .ok_or_else(|| std::io::Error::other("source has no file name"))?;
    Ok(dest_root.join(rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plans and carries out a move as the pass does (without the store).
    fn move_below(src: &Path, root: &Path, dest_root: &Path) -> PathBuf {
        let meta = std::fs::symlink_metadata(src).unwrap();
        let plan =
            media::mover::plan(src, &meta, &dest_below(src, root, dest_root).unwrap()).unwrap();
        media::mover::execute(&plan).unwrap();
        plan.dest
    }

    #[test]
    fn move_below_keeps_the_relative_path_and_never_overwrites() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("in");
        let done = t.path().join("done");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/x.jpg"), b"one").unwrap();
        let d1 = move_below(&root.join("a/b/x.jpg"), &root, &done);
        assert_eq!(d1, done.join("a/b/x.jpg"));
        std::fs::write(root.join("a/b/x.jpg"), b"two").unwrap();
        let d2 = move_below(&root.join("a/b/x.jpg"), &root, &done);
        assert_ne!(d1, d2);
        assert_eq!(std::fs::read(&d1).unwrap(), b"one");
        assert_eq!(std::fs::read(&d2).unwrap(), b"two");
        assert!(!root.join("a/b/x.jpg").exists());
    }
}
