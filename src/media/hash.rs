//! SHA-256 of file contents, the identity of a photo across renames and re-adds. Streams with
//! a large buffer so hashing runs at the speed of the SHA extensions (sha2 picks SHA-NI at run
//! time), not at the speed of small reads.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

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

fn sha256_with(mut r: impl Read, buf_len: usize) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; buf_len];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hex::encode(hasher.finalize()))
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
}
