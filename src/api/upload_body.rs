//! The body of an upload: the photo's multipart part, streamed from disk (or sent from memory
//! when small) while hashing exactly the bytes that leave, so the queue records what the
//! vendor was paid to process. A file that shrinks or fails mid-send ends the body with an
//! error the request can report as the file's fault, not the network's. The MIME type comes
//! from the photo's magic bytes via [`crate::media::sniff`].

use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::multipart::Part;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;

use crate::api::error::{ApiError, Endpoint};
use crate::media::{self, ImageKind};

/// Read size of streamed uploads: memory use stays at a few of these whatever the file size.
const UPLOAD_CHUNK: usize = 64 * 1024;

/// The photo's multipart part (named, typed) and the tally of what its body sends.
pub(crate) async fn photo_part(path: &Path) -> Result<(Part, Arc<SentTally>), ApiError> {
    let read_err = |source| ApiError::ReadFile {
        endpoint: Endpoint::Upload,
        path: path.to_path_buf(),
        source,
    };
    // Open, check, sniff and rewind in ONE trip to the blocking pool: each tokio::fs call
    // would be a trip of its own.
    let p = path.to_path_buf();
    let (opened, len, head, got) = tokio::task::spawn_blocking(move || open_for_upload(&p))
        .await
        .map_err(|e| read_err(io::Error::other(e)))?
        .map_err(read_err)?;
    let tally = Arc::new(SentTally::new(path));
    let part = match opened {
        Opened::Read(bytes) => {
            tally.record(&bytes);
            Part::bytes(bytes)
        }
        Opened::Stream(file) => {
            let file = tokio::fs::File::from_std(file);
            let body = reqwest::Body::wrap_stream(hashing_stream(file, len, tally.clone()));
            Part::stream_with_length(body, len)
        }
    };
    let part = part
        .file_name(wire_file_name(path))
        .mime_str(upload_mime(&head[..got]))
        .expect("constant MIME types parse");
    Ok((part, tally))
}

/// The MIME type the vendor expects, from the file's magic bytes.
fn upload_mime(head: &[u8]) -> &'static str {
    media::sniff(head).map_or("application/octet-stream", ImageKind::mime)
}

/// What an upload body stream has sent so far, shared with the request future.
pub(crate) struct SentTally {
    pub(crate) path: PathBuf,
    state: Mutex<TallyState>,
}

#[derive(Default)]
struct TallyState {
    hasher: Sha256,
    sent: u64,
    read_error: Option<(io::ErrorKind, String)>,
}

impl SentTally {
    fn new(path: &Path) -> Self {
        SentTally {
            path: path.to_path_buf(),
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TallyState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, chunk: &[u8]) {
        let mut st = self.lock();
        st.hasher.update(chunk);
        st.sent += chunk.len() as u64;
    }

    fn fail(&self, e: &io::Error) {
        self.lock().read_error = Some((e.kind(), e.to_string()));
    }

    pub(crate) fn read_error(&self) -> Option<io::Error> {
        self.lock()
            .read_error
            .as_ref()
            .map(|(kind, msg)| io::Error::new(*kind, msg.clone()))
    }

    pub(crate) fn finish(&self) -> (String, u64) {
        let mut st = self.lock();
        let hasher = std::mem::take(&mut st.hasher);
        (hex::encode(hasher.finalize()), st.sent)
    }
}

/// A photo opened for upload: small ones are read whole in the same trip to the blocking pool
/// (streaming a few kilobytes would cost a trip per chunk), larger ones stream from disk.
enum Opened {
    Read(Vec<u8>),
    Stream(std::fs::File),
}

/// Photos up to this size are sent from memory.
const READ_WHOLE: u64 = 256 * 1024;

/// Opens a photo to upload: a regular file, its length, and its first bytes (for the MIME
/// type); read whole when small, else rewound to the start for streaming.
fn open_for_upload(path: &Path) -> io::Result<(Opened, u64, [u8; 8], usize)> {
    use std::io::{Read, Seek};
    let mut file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let len = meta.len();
    let mut head = [0u8; 8];
    if len <= READ_WHOLE {
        let mut bytes = Vec::with_capacity(len as usize);
        // A file that grew since its length was read is cut there, as a stream is.
        (&mut file).take(len).read_to_end(&mut bytes)?;
        if (bytes.len() as u64) < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the file shrank while being read ({} of {len} bytes)",
                    bytes.len()
                ),
            ));
        }
        let got = bytes.len().min(head.len());
        head[..got].copy_from_slice(&bytes[..got]);
        return Ok((Opened::Read(bytes), len, head, got));
    }
    let got = crate::media::read_up_to(&mut file, &mut head)?;
    file.seek(SeekFrom::Start(0))?;
    Ok((Opened::Stream(file), len, head, got))
}

/// Streams exactly `len` bytes of `file`, hashing them as they go; a file that shrinks or
/// fails to read ends the stream with an error (recorded in the tally).
fn hashing_stream(
    file: tokio::fs::File,
    len: u64,
    tally: Arc<SentTally>,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let inner = ReaderStream::with_capacity(file.take(len), UPLOAD_CHUNK);
    futures_util::stream::unfold(
        (inner, tally, false),
        move |(mut inner, tally, done)| async move {
            if done {
                return None;
            }
            match inner.next().await {
                Some(Ok(chunk)) => {
                    tally.record(&chunk);
                    Some((Ok(chunk), (inner, tally, false)))
                }
                Some(Err(e)) => {
                    tally.fail(&e);
                    Some((Err(e), (inner, tally, true)))
                }
                None => {
                    let sent = tally.lock().sent;
                    if sent == len {
                        return None;
                    }
                    let e = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the file shrank while being sent ({sent} of {len} bytes)"),
                    );
                    tally.fail(&e);
                    Some((Err(e), (inner, tally, true)))
                }
            }
        },
    )
}

/// The file name sent in the multipart header: the real name, with control characters, quotes
/// and backslashes (which would break or inject into the header) replaced by `_`.
fn wire_file_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "photo".to_string());
    name.chars()
        .map(|c| {
            if c.is_control() || c == '"' || c == '\\' {
                '_'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_shrinking_file_ends_the_stream_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.jpg");
        std::fs::write(&path, b"0123456789").unwrap();
        let file = tokio::fs::File::open(&path).await.unwrap();
        let tally = Arc::new(SentTally::new(&path));
        let items: Vec<_> = hashing_stream(file, 15, tally.clone()).collect().await;
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].as_ref().unwrap().len(), 10);
        assert!(items[1].is_err());
        let e = tally.read_error().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        // A file longer than announced is cut at the announced length.
        let file = tokio::fs::File::open(&path).await.unwrap();
        let tally = Arc::new(SentTally::new(&path));
        let n: usize = hashing_stream(file, 4, tally.clone())
            .map(|c| c.unwrap().len())
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .sum();
        assert_eq!(n, 4);
        assert_eq!(tally.finish().0, hex::encode(Sha256::digest(b"0123")));
    }

    #[test]
    fn small_photos_are_read_whole_and_large_ones_streamed() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small.jpg");
        let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xE0];
        bytes.resize(READ_WHOLE as usize, 7);
        std::fs::write(&small, &bytes).unwrap();
        match open_for_upload(&small).unwrap() {
            (Opened::Read(read), len, head, got) => {
                assert_eq!(read, bytes);
                assert_eq!((len, got), (READ_WHOLE, 8));
                assert_eq!(upload_mime(&head[..got]), "image/jpeg");
            }
            _ => panic!("a file of {READ_WHOLE} bytes is read whole"),
        }
        let large = dir.path().join("large.png");
        let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
        bytes.resize(READ_WHOLE as usize + 1, 1);
        std::fs::write(&large, &bytes).unwrap();
        match open_for_upload(&large).unwrap() {
            (Opened::Stream(mut f), len, head, got) => {
                assert_eq!((len, got), (READ_WHOLE + 1, 8));
                assert_eq!(upload_mime(&head[..got]), "image/png");
                let mut rest = Vec::new();
                std::io::Read::read_to_end(&mut f, &mut rest).unwrap();
                assert_eq!(rest, bytes, "rewound to the start");
            }
            _ => panic!("a larger file is streamed"),
        }
        assert!(
            open_for_upload(dir.path()).is_err(),
            "a directory is refused"
        );
    }

    #[test]
    fn mime_from_magic_bytes() {
        assert_eq!(upload_mime(&[0xFF, 0xD8, 0xFF, 0xE0]), "image/jpeg");
        assert_eq!(upload_mime(b"\x89PNG\r\n\x1a\n"), "image/png");
        assert_eq!(upload_mime(b"GIF89a"), "application/octet-stream");
    }
}
