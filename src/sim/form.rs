//! Reading a request's form, multipart or `application/x-www-form-urlencoded`. A multipart
//! `file` part is streamed to a temp file on disk by a blocking writer thread that hashes
//! (SHA-256) as it writes, through a small bounded channel: the sim's memory does not grow
//! with the size of an upload.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header::CONTENT_TYPE;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// Text fields are tiny in this API; anything bigger is a broken client.
const MAX_TEXT_FIELD: usize = 64 * 1024;
/// Chunks in flight between the network and the disk writer.
const CHANNEL_DEPTH: usize = 8;

#[derive(Debug, thiserror::Error)]
pub(crate) enum FormError {
    #[error(
        "the request body is not a readable form ({0}); send multipart/form-data or application/x-www-form-urlencoded"
    )]
    Malformed(String),
    #[error(
        "could not store the uploaded file at {path}: {source}; check free space in the sim's work dir"
    )]
    Store { path: PathBuf, source: io::Error },
}

/// An uploaded file on disk; deleted on drop unless [`Upload::keep`] took it.
#[derive(Debug)]
pub(crate) struct Upload {
    path: Option<PathBuf>,
    pub sha256: String,
    pub size: u64,
    /// The first bytes, for magic-number checks.
    pub head: Vec<u8>,
}

impl Upload {
    pub(super) fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// Takes ownership of the file: it is no longer deleted on drop.
    pub(super) fn keep(mut self) -> PathBuf {
        self.path.take().unwrap_or_default()
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Form {
    pub fields: HashMap<String, String>,
    pub file: Option<Upload>,
}

impl Form {
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(|s| s.trim())
    }
}

/// Reads the form. `upload_to` gives a path for the `file` part; without it (endpoints
/// that take no file) a file part is read and discarded.
pub(crate) async fn read_form(req: Request, upload_to: Option<PathBuf>) -> Result<Form, FormError> {
    let ct = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ct.starts_with("application/x-www-form-urlencoded") {
        let axum::Form(fields) = axum::Form::<HashMap<String, String>>::from_request(req, &())
            .await
            .map_err(|e| FormError::Malformed(e.body_text()))?;
        return Ok(Form { fields, file: None });
    }
    let mut mp = Multipart::from_request(req, &())
        .await
        .map_err(|e| FormError::Malformed(e.body_text()))?;
    let mut form = Form::default();
    let malformed =
        |e: axum::extract::multipart::MultipartError| FormError::Malformed(e.body_text());
    while let Some(mut field) = mp.next_field().await.map_err(malformed)? {
        let name = field.name().unwrap_or("").to_string();
        match (&upload_to, name.as_str()) {
            (Some(path), "file") if form.file.is_none() => {
                form.file = Some(stream_to_disk(&mut field, path.clone()).await?);
            }
            _ if field.file_name().is_some() || name == "file" => {
                while field.chunk().await.map_err(malformed)?.is_some() {}
            }
            _ => {
                let mut text = Vec::new();
                while let Some(c) = field.chunk().await.map_err(malformed)? {
                    if text.len() + c.len() > MAX_TEXT_FIELD {
                        return Err(FormError::Malformed(format!("field {name} is too long")));
                    }
                    text.extend_from_slice(&c);
                }
                let text = String::from_utf8(text)
                    .map_err(|_| FormError::Malformed(format!("field {name} is not UTF-8")))?;
                form.fields.insert(name, text);
            }
        }
    }
    Ok(form)
}

async fn stream_to_disk(
    field: &mut axum::extract::multipart::Field<'_>,
    path: PathBuf,
) -> Result<Upload, FormError> {
    let (tx, rx) = mpsc::channel::<Chunk>(CHANNEL_DEPTH);
    let writer_path = path.clone();
    let writer = tokio::task::spawn_blocking(move || write_hashing(&writer_path, rx));
    let mut net_error = None;
    loop {
        match field.chunk().await {
            Ok(Some(c)) => {
                if tx.send(Chunk::Data(c)).await.is_err() {
                    break; // the writer failed; its error is reported below
                }
            }
            Ok(None) => {
                let _ = tx.send(Chunk::End).await;
                break;
            }
            Err(e) => {
                net_error = Some(FormError::Malformed(e.body_text()));
                break;
            }
        }
    }
    drop(tx);
    let written = match writer.await {
        Ok(r) => r,
        Err(e) => Err(io::Error::other(e.to_string())),
    };
    if let Some(e) = net_error {
        return Err(e); // the writer saw no End and deleted the partial file
    }
    match written {
        Ok((sha256, size, head)) => Ok(Upload {
            path: Some(path),
            sha256,
            size,
            head,
        }),
        Err(source) => Err(FormError::Store { path, source }),
    }
}

/// What the network side sends the disk writer.
enum Chunk {
    Data(Bytes),
    /// The part ended normally. A channel closed without it means the request was
    /// abandoned (client gone, handler dropped): the writer deletes its own file then, since
    /// nobody else is left to.
    End,
}

/// Blocking: writes every chunk to `path`, hashing as it goes.
fn write_hashing(path: &Path, rx: mpsc::Receiver<Chunk>) -> io::Result<(String, u64, Vec<u8>)> {
    let r = write_chunks(path, rx);
    if r.is_err() {
        let _ = std::fs::remove_file(path);
    }
    r
}

fn write_chunks(path: &Path, mut rx: mpsc::Receiver<Chunk>) -> io::Result<(String, u64, Vec<u8>)> {
    let mut file = File::create(path)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut head = Vec::with_capacity(16);
    loop {
        let chunk = match rx.blocking_recv() {
            Some(Chunk::Data(c)) => c,
            Some(Chunk::End) => break,
            None => return Err(io::Error::other("upload abandoned before its end")),
        };
        if head.len() < 16 {
            let n = (16 - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..n]);
        }
        hasher.update(&chunk);
        file.write_all(&chunk)?;
        size += chunk.len() as u64;
    }
    file.flush()?;
    Ok((hex::encode(hasher.finalize()), size, head))
}
