//! SHA-256 of file contents, the identity of a photo across renames and re-adds. Streams with
//! a large buffer so hashing runs at the speed of the SHA extensions (sha2 picks SHA-NI at run
//! time), not at the speed of small reads.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest, Sha256};

/// Read size: large enough that syscalls vanish from the profile, small enough to stay in L2.
const BUF_SIZE: usize = 1 << 20;

/// Lower-case hex SHA-256 of the file at `path`, read once from start to end.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let file = File::open(path)?;
    // A small photo gets a buffer its size (+1 to see the end in one read): zeroing a whole
    // megabyte for a few kilobytes cost more than hashing them.
    let len = file.metadata().map(|m| m.len()).unwrap_or(BUF_SIZE as u64);
    let buf_len =
        usize::try_from(len.saturating_add(1)).map_or(BUF_SIZE, |n| n.clamp(4096, BUF_SIZE));
    sha256_with(file, buf_len)
}

/// Lower-case hex SHA-256 of everything `r` yields.
pub fn sha256_reader(r: impl Read) -> io::Result<String> {
    sha256_with(r, BUF_SIZE)
}

fn sha256_with(r: impl Read, buf_len: usize) -> io::Result<String> {
    digest(r, &mut vec![0u8; buf_len], &|_| {})
}

/// Hashes everything `r` yields through `buf`, telling `on_read` each count of bytes read.
fn digest(mut r: impl Read, buf: &mut [u8], on_read: &(dyn Fn(u64) + Sync)) -> io::Result<String> {
    let mut hasher = Sha256::new();
    loop {
        match r.read(buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                on_read(n as u64);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The SHA-256 of each file of `paths` (in their order), hashed by up to `threads` threads at
/// once, each streaming its files through one buffer; `on_read` hears of every block read (for
/// a progress display). Files are read sequentially (the kernel is told so, for its
/// read-ahead), so a run over many files goes at the speed of the disk or of the SHA
/// extensions, whichever is slower.
pub fn sha256_files(
    paths: &[PathBuf],
    threads: usize,
    on_read: &(dyn Fn(u64) + Sync),
) -> Vec<io::Result<String>> {
    let next = AtomicUsize::new(0);
    let workers = threads.clamp(1, paths.len().max(1));
    let work = || {
        let mut buf = vec![0u8; BUF_SIZE];
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(p) = paths.get(i) else { break };
            // Files are taken in order: the one `workers` places on is this thread's next (or
            // near it), so the disk reads its start while this one is hashed.
            if let Some(ahead) = paths.get(i + workers) {
                ReadAhead::prefetch(ahead);
            }
            let r = File::open(p).and_then(|f| digest(ReadAhead::new(f), &mut buf, on_read));
            done.push((i, r));
        }
        done
    };
    let mut out: Vec<Option<io::Result<String>>> = (0..paths.len()).map(|_| None).collect();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..workers).map(|_| s.spawn(work)).collect();
        for w in workers {
            // A worker that panicked leaves its files unhashed: reported as errors below.
            for (i, r) in w.join().unwrap_or_default() {
                out[i] = Some(r);
            }
        }
    });
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(io::Error::other("the hashing thread failed"))))
        .collect()
}

/// How far ahead of the hash the kernel is asked to read, so the disk works while the CPU
/// hashes (the default read-ahead of 128 KiB leaves a fast disk idle between reads).
const READ_AHEAD: u64 = 8 << 20;

/// A file read from start to end that keeps [`READ_AHEAD`] bytes ahead of the reader asked
/// for (`POSIX_FADV_WILLNEED`: the kernel starts reading them at once, in the background).
struct ReadAhead {
    file: File,
    pos: u64,
    /// Bytes up to here have been asked for.
    asked: u64,
}

impl ReadAhead {
    fn new(file: File) -> ReadAhead {
        let mut r = ReadAhead {
            file,
            pos: 0,
            asked: 0,
        };
        r.advise(libc::POSIX_FADV_SEQUENTIAL, 0, 0);
        r.ask_ahead();
        r
    }

    /// Asks the kernel for the start of the file at `path` (best effort).
    fn prefetch(path: &Path) {
        if let Ok(file) = File::open(path) {
            let r = ReadAhead {
                file,
                pos: 0,
                asked: 0,
            };
            r.advise(libc::POSIX_FADV_WILLNEED, 0, READ_AHEAD);
        }
    }

    fn ask_ahead(&mut self) {
        // Asked in halves of the window, so each hint is large and they stay few.
        if self.asked < self.pos + READ_AHEAD / 2 {
            let from = self.asked.max(self.pos);
            self.advise(libc::POSIX_FADV_WILLNEED, from, READ_AHEAD);
            self.asked = from + READ_AHEAD;
        }
    }

    /// Only a hint: a filesystem that ignores it is read as usual.
    fn advise(&self, advice: libc::c_int, from: u64, len: u64) {
        use std::os::fd::AsRawFd;
        let (from, len) = (from.min(i64::MAX as u64), len.min(i64::MAX as u64));
        // SAFETY: the descriptor is open for the duration of the call; it changes no memory.
        let _ =
            unsafe { libc::posix_fadvise(self.file.as_raw_fd(), from as i64, len as i64, advice) };
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.pos += n as u64;
        self.ask_ahead();
        Ok(n)
    }
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_bytes(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn known_vectors() {
        assert_eq!(sha256_bytes(b""), EMPTY);
        assert_eq!(sha256_bytes(b"abc"), ABC);
    }

    #[test]
    fn file_matches_bytes_across_buffer_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        // Not a multiple of the buffer, so the last read is partial.
        let data: Vec<u8> = (0..(BUF_SIZE * 2 + 12345))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        assert_eq!(sha256_file(&path).unwrap(), sha256_bytes(&data));
        std::fs::write(&path, b"").unwrap();
        assert_eq!(sha256_file(&path).unwrap(), EMPTY);
        assert!(sha256_file(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn many_files_on_several_threads_come_back_in_order_with_their_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for i in 0..9usize {
            let p = dir.path().join(format!("f{i}"));
            std::fs::write(&p, vec![i as u8; i * 1000]).unwrap();
            paths.push(p);
        }
        paths.insert(4, dir.path().join("missing"));
        let read = std::sync::atomic::AtomicU64::new(0);
        let got = sha256_files(&paths, 3, &|n| {
            read.fetch_add(n, Ordering::Relaxed);
        });
        assert_eq!(got.len(), 10);
        for (p, r) in paths.iter().zip(&got) {
            match std::fs::read(p) {
                Ok(data) => assert_eq!(r.as_ref().unwrap(), &sha256_bytes(&data)),
                Err(_) => assert!(r.is_err(), "{p:?}"),
            }
        }
        assert_eq!(
            read.load(Ordering::Relaxed),
            (0..9).map(|i| i * 1000).sum::<u64>()
        );
        assert!(sha256_files(&[], 4, &|_| {}).is_empty());
    }
}
