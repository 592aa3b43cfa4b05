//! Filesystem events through `notify` (inotify on Linux), reduced to what the watcher acts on:
//! "look at this path" (created, written, closed after writing, attributes changed, renamed
//! in or out, deleted), "a directory arrived" (created or moved in: walk it, its files may
//! predate the watch on it) and "events were lost" (rescan). Reads (open, close-nowrite,
//! access) are dropped: the pipeline reading a photo must not look like a change.
//!
//! A watch folder that is itself a symbolic link is watched through its resolved target
//! (notify's recursive walk does not follow a root link, so its top level would raise no
//! event), and event paths are reported under the configured path again.

use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

/// What one event asks of the watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Interest {
    /// Re-stat these paths; `arrived` paths that are directories get walked.
    Paths { paths: Vec<PathBuf>, arrived: bool },
    /// The kernel queue overflowed or the backend lost track: do a full scan.
    Rescan,
    /// Nothing to do.
    None,
}

/// Classifies one notify event.
pub(super) fn interpret(ev: &Event) -> Interest {
    if ev.need_rescan() {
        return Interest::Rescan;
    }
    let arrived = match ev.kind {
        EventKind::Create(_) => true,
        EventKind::Modify(ModifyKind::Name(
            RenameMode::To | RenameMode::Both | RenameMode::Any,
        )) => true,
        EventKind::Modify(_) | EventKind::Remove(_) => false,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => false,
        EventKind::Access(_) | EventKind::Other => return Interest::None,
        EventKind::Any => false,
    };
    if ev.paths.is_empty() {
        return Interest::None;
    }
    Interest::Paths {
        paths: ev.paths.clone(),
        arrived,
    }
}

/// `path` with the prefix `from` replaced by `to` (unchanged when it is not under `from`).
fn reroot(path: PathBuf, from: &Path, to: &Path) -> PathBuf {
    match path.strip_prefix(from) {
        Ok(rest) if rest.as_os_str().is_empty() => to.to_path_buf(),
        Ok(rest) => to.join(rest),
        Err(_) => path,
    }
}

/// Starts an inotify watcher on `root` whose events (and errors) are sent to `tx`. When the
/// receiver lags, the notify thread blocks and the kernel queue absorbs the burst; if that
/// overflows, a Rescan event follows, so nothing is silently lost. `root` is resolved first
/// (symbolic links followed): notify's recursive mode never watches a root that is a link,
/// only the folders below it. Events come back with paths under `root` as configured, so
/// ignore rules, exclusions and job paths do not depend on where the link points.
pub(super) fn watch(
    root: &Path,
    recursive: bool,
    tx: mpsc::Sender<notify::Result<Event>>,
) -> notify::Result<RecommendedWatcher> {
    let resolved =
        std::fs::canonicalize(root).map_err(|e| notify::Error::io(e).add_path(root.into()))?;
    if resolved != root {
        tracing::info!(
            "watch folder {} resolves to {}: watching that folder for events",
            root.display(),
            resolved.display()
        );
    }
    let (from, to) = (resolved.clone(), root.to_path_buf());
    let handler = move |res: notify::Result<Event>| {
        // Dropped reads are filtered here, before they cost a channel slot.
        let res = match res {
            Ok(ev) if matches!(interpret(&ev), Interest::None) => return,
            Ok(mut ev) if from != to => {
                ev.paths = ev
                    .paths
                    .into_iter()
                    .map(|p| reroot(p, &from, &to))
                    .collect();
                Ok(ev)
            }
            other => other,
        };
        // Runs on notify's own thread (not a runtime thread), where blocking is allowed.
        let _ = tx.blocking_send(res);
    };
    let config = notify::Config::default().with_follow_symlinks(false);
    let mut w = RecommendedWatcher::new(handler, config)?;
    let mode = if recursive {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    };
    w.watch(&resolved, mode)?;
    Ok(w)
}

/// Whether a notify error means inotify ran out of watches (or instances).
pub(super) fn out_of_watches(e: &notify::Error) -> bool {
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => true,
        notify::ErrorKind::Io(io) => matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EMFILE)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, Flag, RemoveKind};

    fn ev(kind: EventKind, p: &str) -> Event {
        Event::new(kind).add_path(PathBuf::from(p))
    }

    #[test]
    fn classification() {
        let paths = |arrived| Interest::Paths {
            paths: vec![PathBuf::from("/w/a")],
            arrived,
        };
        assert_eq!(
            interpret(&ev(EventKind::Create(CreateKind::File), "/w/a")),
            paths(true)
        );
        assert_eq!(
            interpret(&ev(
                EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                "/w/a"
            )),
            paths(true)
        );
        assert_eq!(
            interpret(&ev(
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                "/w/a"
            )),
            paths(false)
        );
        assert_eq!(
            interpret(&ev(
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                "/w/a"
            )),
            paths(false)
        );
        assert_eq!(
            interpret(&ev(EventKind::Remove(RemoveKind::File), "/w/a")),
            paths(false)
        );
        assert_eq!(
            interpret(&ev(
                EventKind::Access(AccessKind::Close(AccessMode::Read)),
                "/w/a"
            )),
            Interest::None
        );
        assert_eq!(
            interpret(&ev(
                EventKind::Access(AccessKind::Open(AccessMode::Any)),
                "/w/a"
            )),
            Interest::None
        );
        assert_eq!(
            interpret(&Event::new(EventKind::Other).set_flag(Flag::Rescan)),
            Interest::Rescan
        );
        assert!(out_of_watches(&notify::Error::new(
            notify::ErrorKind::MaxFilesWatch
        )));
        assert!(!out_of_watches(&notify::Error::path_not_found()));
    }

    #[test]
    fn event_paths_return_under_the_configured_root() {
        let (from, to) = (Path::new("/data/in"), Path::new("/w/link"));
        assert_eq!(
            reroot("/data/in/a.jpg".into(), from, to),
            Path::new("/w/link/a.jpg")
        );
        assert_eq!(
            reroot("/data/in/s/b.jpg".into(), from, to),
            Path::new("/w/link/s/b.jpg")
        );
        // The root itself maps to the root exactly (the folder task compares it with ==).
        assert_eq!(reroot("/data/in".into(), from, to).as_os_str(), "/w/link");
        assert_eq!(
            reroot("/other/c.jpg".into(), from, to),
            Path::new("/other/c.jpg")
        );
        // A sibling sharing a name prefix is not under the root.
        assert_eq!(
            reroot("/data/inbox/d.jpg".into(), from, to),
            Path::new("/data/inbox/d.jpg")
        );
    }

    #[tokio::test]
    async fn a_symlinked_root_raises_events_for_its_top_level() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("target");
        std::fs::create_dir(&target).unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let (tx, mut rx) = mpsc::channel(64);
        let _w = watch(&link, true, tx).unwrap();
        std::fs::write(target.join("top.jpg"), b"x").unwrap();
        let want = link.join("top.jpg");
        let seen = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while let Some(Ok(ev)) = rx.recv().await {
                if ev.paths.contains(&want) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(seen, Ok(true), "no event for {}", want.display());
    }
}
