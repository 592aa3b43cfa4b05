//! One process drives a queue. `hili run` (the daemon and `--once`) holds an exclusive
//! `flock(2)` on `<database>.lock` for as long as it runs. The kernel releases the lock when the
//! process ends however it ends (`kill -9`, OOM, power cut), so a crash never leaves it stuck,
//! and a stale pid written in the file means nothing on its own.
//!
//! Why: two pipelines on one queue each take the other's upload in flight for a crash, and
//! reconcile it by the credit count: one uploads the photo again (paying twice), or holds a job
//! whose answer the other is about to receive. Commands that only read the queue or make
//! single guarded writes (`add`, `status`, `jobs`, `retry`) do not take the lock.
//!
//! The lock is a separate file rather than the database itself because SQLite's own locks are
//! `fcntl` locks on the database file, which NFS servers emulate with the same mechanism as
//! `flock`: one lock must never be able to block the other.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why the run lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum RunLockError {
    #[error(
        "another `hili run` is already driving the queue {db} ({holder}); only one process may \
         upload from a queue, or a photo could be paid for twice. Stop it first (or let it \
         finish), or give this run another [queue] database. `hili status`, `jobs`, `add` and \
         `retry` work next to it"
    )]
    Held { db: PathBuf, holder: String },
    #[error(
        "cannot take the run lock {path}: {source}; check that the queue database's directory \
         is writable"
    )]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The exclusive right to drive one queue; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
    // Kept open: closing the last descriptor releases the flock.
    _file: File,
}

impl RunLock {
    /// The lock file of the queue database at `db`.
    pub fn path_for(db: &Path) -> PathBuf {
        let mut name = db.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Takes the lock of the queue at `queue`: a SQLite queue's as [`RunLock::acquire`]; on a
    /// shared queue, this node's (one `hili run` per node name on this machine, in the state
    /// directory: nodes of other names run beside it, and another machine claiming the same
    /// name is refused by `hili run` from the nodes table).
    pub fn acquire_for(queue: &super::Location) -> Result<RunLock, RunLockError> {
        match queue {
            super::Location::Sqlite(db) => Self::acquire(db),
            super::Location::Postgres {
                node, local_dir, ..
            } => Self::acquire(&local_dir.join(format!("shared-queue-node-{node}"))),
        }
    }

    /// Takes the lock of the queue at `db` without waiting, and writes this process's pid into
    /// the lock file so a second run can name the holder. Creates the database's directory
    /// (0700) if needed, as opening the store would.
    pub fn acquire(db: &Path) -> Result<RunLock, RunLockError> {
        let path = Self::path_for(db);
        let io = |source| RunLockError::Io {
            path: path.clone(),
            source,
        };
        super::private_parent(&path).map_err(io)?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        // SAFETY: flock on a descriptor this function owns; no memory is shared.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = match text.trim().parse::<u32>() {
                    Ok(pid) => format!("pid {pid}"),
                    Err(_) => "a process that is starting".to_string(),
                };
                return Err(RunLockError::Held {
                    db: db.to_path_buf(),
                    holder,
                });
            }
            return Err(io(err));
        }
        // The pid is informative only: the flock is the lock.
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(RunLock { path, _file: file })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_named_until_the_first_lets_go() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("state/q.db");
        let first = RunLock::acquire(&db).expect("first lock");
        assert_eq!(first.path(), dir.path().join("state/q.db.lock"));
        // flock locks belong to the open file description: a second open in the same process
        // conflicts exactly as another process would.
        let err = RunLock::acquire(&db).expect_err("second lock must be refused");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("q.db"), "{msg}");
        drop(first);
        RunLock::acquire(&db).expect("free again once the first is dropped");
    }
}
