//! What happens to a watched source file after its job: kept, moved into `done_dir` (keeping
//! its path below the watch folder, never overwriting), or deleted — only once the output is
//! durably written, which `done` guarantees. Sources of failed or held jobs go to `failed_dir`
//! when one is set, with a `<name>.reason.txt` beside them saying why.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::media;
use crate::store::{Job, State};

use super::{Ctx, PipelineError, blocking};

/// What to do with a source after its job is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceAfter {
    Keep,
    Move,
    Delete,
}

/// The disposition rules of one watch folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disposition {
    /// The watch folder (jobs' `source_root`).
    pub root: PathBuf,
    pub after: SourceAfter,
    pub done_dir: Option<PathBuf>,
    pub failed_dir: Option<PathBuf>,
}

impl Disposition {
    /// Whether this folder's jobs need any action at all.
    fn acts(&self) -> bool {
        self.after != SourceAfter::Keep || self.failed_dir.is_some()
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
            let j = job.clone();
            match blocking(move || dispose(&j, &rule)).await? {
                Ok(Some(note)) => tracing::info!(job = %job.id, "{note}"),
                Ok(None) => {}
                Err(e) => {
                    // Left undisposed: tried again on the next pass (e.g. a full disk).
                    tracing::warn!(job = %job.id, "could not dispose of {}: {e}", job.source_path.display());
                    return Ok(());
                }
            }
            ctx.store.mark_disposed(job.id).await?;
        }
    }
}

/// Carries out one job's disposition; returns what was done, for the log.
fn dispose(job: &Job, rule: &Disposition) -> std::io::Result<Option<String>> {
    let src = &job.source_path;
    if std::fs::symlink_metadata(src).is_err() {
        return Ok(None); // already moved or deleted (e.g. before a crash)
    }
    match (job.state, rule.after, &rule.done_dir, &rule.failed_dir) {
        (State::Done, SourceAfter::Move, Some(done_dir), _) => {
            let dest = move_below(src, &rule.root, done_dir)?;
            Ok(Some(format!(
                "moved {} to {}",
                src.display(),
                dest.display()
            )))
        }
        (State::Done, SourceAfter::Delete, _, _) => {
            // `done` is recorded only after the output's rename and directory fsync.
            let output_ok = job.output_path.as_deref().is_some_and(Path::is_file);
            if !output_ok {
                return Ok(Some(format!(
                    "kept {}: its output is missing",
                    src.display()
                )));
            }
            std::fs::remove_file(src)?;
            Ok(Some(format!("deleted {}", src.display())))
        }
        (State::Failed | State::Held, _, _, Some(failed_dir)) => {
            let dest = move_below(src, &rule.root, failed_dir)?;
            let reason = job.reason.as_deref().unwrap_or("no reason recorded");
            let mut note_path = dest.clone().into_os_string();
            note_path.push(".reason.txt");
            let mut f = std::fs::File::create(&note_path)?;
            writeln!(f, "hili job {} ({}): {reason}", job.id, job.state)?;
            writeln!(f, "source: {}", src.display())?;
            f.sync_all()?;
            Ok(Some(format!(
                "moved {} to {} ({})",
                src.display(),
                dest.display(),
                job.state
            )))
        }
        _ => Ok(None),
    }
}

/// Moves `src` to the same relative path below `dest_root`, never overwriting (adds -1,
/// -2…), across filesystems if need be. Returns where it went.
fn move_below(src: &Path, root: &Path, dest_root: &Path) -> std::io::Result<PathBuf> {
    let rel = src
        .strip_prefix(root)
        .ok()
        .filter(|r| !r.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .or_else(|| src.file_name().map(PathBuf::from))
        .ok_or_else(|| std::io::Error::other("source has no file name"))?;
    let candidate = dest_root.join(rel);
    if let Some(parent) = candidate.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut dest = candidate.clone();
    let mut n = 0;
    while std::fs::symlink_metadata(&dest).is_ok() {
        n += 1;
        dest = media::numbered(&candidate, n);
    }
    match std::fs::rename(src, &dest) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let (copied, _) = media::copy_atomic(src, &dest)?;
            dest = copied;
            std::fs::remove_file(src)?;
        }
        Err(e) => return Err(e),
    }
    if let Some(parent) = dest.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn move_below_keeps_the_relative_path_and_never_overwrites() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("in");
        let done = t.path().join("done");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/x.jpg"), b"one").unwrap();
        let d1 = move_below(&root.join("a/b/x.jpg"), &root, &done).unwrap();
        assert_eq!(d1, done.join("a/b/x.jpg"));
        std::fs::write(root.join("a/b/x.jpg"), b"two").unwrap();
        let d2 = move_below(&root.join("a/b/x.jpg"), &root, &done).unwrap();
        assert_ne!(d1, d2);
        assert_eq!(std::fs::read(&d1).unwrap(), b"one");
        assert_eq!(std::fs::read(&d2).unwrap(), b"two");
        assert!(!root.join("a/b/x.jpg").exists());
    }
}
