//! The sim's work directory: where uploads stream to and results live. Either given (kept
//! at exit) or a fresh temp dir that the sim removes at shutdown.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The directory holding uploads and results; removed at shutdown if the sim created it.
pub(crate) struct WorkDir {
    path: PathBuf,
    owned: bool,
}

impl WorkDir {
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn create(given: Option<PathBuf>) -> io::Result<WorkDir> {
        if let Some(path) = given {
            std::fs::create_dir_all(&path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("sim: cannot create work dir {}: {e}", path.display()),
                )
            })?;
            return Ok(WorkDir { path, owned: false });
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        for attempt in 0..100u32 {
            let name = format!("hili-sim-{}-{nanos}-{attempt}", std::process::id());
            let path = std::env::temp_dir().join(name);
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(WorkDir { path, owned: true }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!(
                            "sim: cannot create a temp dir in {}: {e}",
                            std::env::temp_dir().display()
                        ),
                    ));
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "sim: could not find a free temp dir name; clean up hili-sim-* in the temp dir",
        ))
    }

    pub(super) fn remove(&mut self) {
        if std::mem::take(&mut self.owned)
            && let Err(e) = std::fs::remove_dir_all(&self.path)
        {
            tracing::warn!(
                "sim: could not remove temp dir {}: {e}",
                self.path.display()
            );
        }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        self.remove();
    }
}
