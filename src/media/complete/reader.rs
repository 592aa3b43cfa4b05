//! What the JPEG and PNG walks share: the error they return ([`Incomplete`]) and a buffered
//! reader that knows its offset, so every message can say at which byte the file stops. The
//! reader hands out `Result<_, Eof>` inside the I/O result, so a walk tells "the file ended
//! here" (a truncation, reported with the walk's own words) from "the read failed".

use std::io::{self, BufRead};

/// Why a file is not a complete image.
#[derive(Debug, thiserror::Error)]
pub enum Incomplete {
    /// The file ends before its structure does; the text says where.
    #[error("{0}")]
    Truncated(String),
    /// The structure is wrong (bad CRC, data where a marker belongs…); the text says how.
    #[error("{0}")]
    Damaged(String),
    /// The file could not be read.
    #[error(transparent)]
    Io(io::Error),
}

/// A buffered reader that knows its offset, so messages can say where the file stops.
pub(super) struct Reader<R> {
    inner: R,
    pub(super) pos: u64,
}

/// A read that hit the end of the file.
pub(super) struct Eof;

impl<R: BufRead> Reader<R> {
    pub(super) fn new(inner: R) -> Self {
        Reader { inner, pos: 0 }
    }

    /// The next buffered bytes; empty at the end of the file.
    pub(super) fn fill(&mut self) -> Result<&[u8], Incomplete> {
        // Retries EINTR; the second fill_buf returns the buffered bytes without a read.
        loop {
            match self.inner.fill_buf() {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Incomplete::Io(e)),
            }
        }
        self.inner.fill_buf().map_err(Incomplete::Io)
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.inner.consume(n);
        self.pos += n as u64;
    }

    pub(super) fn u8(&mut self) -> Result<Result<u8, Eof>, Incomplete> {
        let Some(&b) = self.fill()?.first() else {
            return Ok(Err(Eof));
        };
        self.consume(1);
        Ok(Ok(b))
    }

    pub(super) fn exact<const N: usize>(&mut self) -> Result<Result<[u8; N], Eof>, Incomplete> {
        let mut out = [0u8; N];
        let mut n = 0;
        while n < N {
            let b = self.fill()?;
            if b.is_empty() {
                return Ok(Err(Eof));
            }
            let k = b.len().min(N - n);
            out[n..n + k].copy_from_slice(&b[..k]);
            self.consume(k);
            n += k;
        }
        Ok(Ok(out))
    }

    /// Passes the next `len` bytes to `f`; `Err(Eof)` if the file ends first.
    pub(super) fn stream(
        &mut self,
        mut len: u64,
        mut f: impl FnMut(&[u8]),
    ) -> Result<Result<(), Eof>, Incomplete> {
        while len > 0 {
            let b = self.fill()?;
            if b.is_empty() {
                return Ok(Err(Eof));
            }
            let k = usize::try_from(len).map_or(b.len(), |l| l.min(b.len()));
            f(&b[..k]);
            self.consume(k);
            len -= k as u64;
        }
        Ok(Ok(()))
    }
}
