//! Filesystem events through `notify` (inotify on Linux), reduced to what the watcher acts on:
//! "look at this path" (created, written, closed after writing, attributes changed, renamed
//! in or out, deleted), "a directory arrived" (created or moved in: walk it, its files may
//! predate the watch on it) and "events were lost" (rescan). Reads (open, close-nowrite,
//! access) are dropped: the pipeline reading a photo must not look like a change.

use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

/// What one event asks of the watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interest {
    /// Re-stat these paths; `arrived` paths that are directories get walked.
    Paths { paths: Vec<PathBuf>, arrived: bool },
    /// The kernel queue overflowed or the backend lost track: do a full scan.
    Rescan,
    /// Nothing to do.
    None,
}

/// Classifies one notify event.
pub fn interpret(ev: &Event) -> Interest {
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

/// Starts an inotify watcher on `root` whose events (and errors) are sent to `tx`. When the
/// receiver lags, the notify thread blocks and the kernel queue absorbs the burst; if that
/// overflows, a Rescan event follows, so nothing is silently lost.
pub fn watch(
    root: &Path,
    recursive: bool,
    tx: mpsc::Sender<notify::Result<Event>>,
) -> notify::Result<RecommendedWatcher> {
    let handler = move |res: notify::Result<Event>| {
        // Dropped reads are filtered here, before they cost a channel slot.
        if let Ok(ev) = &res
            && matches!(interpret(ev), Interest::None)
        {
            return;
        }
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
    w.watch(root, mode)?;
    Ok(w)
}

/// Whether a notify error means inotify ran out of watches (or instances).
pub fn out_of_watches(e: &notify::Error) -> bool {
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
}
