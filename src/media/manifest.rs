//! The BagIt-style `manifest-sha256.txt` of an output folder (`[output] manifest = true`):
//! one line per result, `<sha256>  <path>`, the path relative to the folder, sorted by path.
//! As BagIt asks, `%`, CR and LF in a name are percent-encoded; other bytes are written as
//! they are, so `sha256sum -c manifest-sha256.txt` run in the folder checks it too.
//!
//! The file is only ever replaced whole: written to a temp file beside it, fsynced, renamed
//! over the old one and the folder fsynced, so a crash leaves the old manifest or the new one,
//! never a torn one. Which results it lists is the caller's business (the store's done jobs).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::atomic::{TEMP_PREFIX, sync_dir};

/// The manifest's name in its folder.
pub const MANIFEST_NAME: &str = "manifest-sha256.txt";

/// One line of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ManifestEntry {
    /// Relative to the manifest's folder.
    pub path: PathBuf,
    /// Lowercase hex SHA-256 of the file.
    pub sha256: String,
}

/// A manifest that cannot be read or is not a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read the manifest {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the manifest {path} is damaged at line {line} ({detail}); the next `hili run` with \
         [output] manifest = true rewrites it from the queue"
    )]
    Malformed {
        path: PathBuf,
        line: usize,
        detail: String,
    },
}

/// The manifest entries of `results` (absolute paths with their SHA-256) in `dir`: paths made
/// relative to it, sorted, each once. A result outside `dir` is left out.
pub fn entries_in(dir: &Path, results: Vec<(PathBuf, String)>) -> Vec<ManifestEntry> {
    let mut v: Vec<ManifestEntry> = results
        .into_iter()
        .filter_map(|(p, sha)| {
            let rel = p.strip_prefix(dir).ok()?;
            (!rel.as_os_str().is_empty()).then(|| ManifestEntry {
                path: rel.to_path_buf(),
                sha256: sha.to_ascii_lowercase(),
            })
        })
        .collect();
    v.sort();
    v.dedup_by(|a, b| a.path == b.path);
    v
}

/// The manifest's bytes.
pub fn render(entries: &[ManifestEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * 100);
    for e in entries {
        out.extend_from_slice(e.sha256.as_bytes());
        out.extend_from_slice(b"  ");
        for &b in e.path.as_os_str().as_bytes() {
            match b {
                b'%' => out.extend_from_slice(b"%25"),
                b'\n' => out.extend_from_slice(b"%0A"),
                b'\r' => out.extend_from_slice(b"%0D"),
                b => out.push(b),
            }
        }
        out.push(b'\n');
    }
    out
}

/// Parses a manifest's bytes; on failure, the 1-based line and what is wrong with it.
pub fn parse(bytes: &[u8]) -> Result<Vec<ManifestEntry>, (usize, String)> {
    if !bytes.is_empty() && !bytes.ends_with(b"\n") {
        let line = bytes.split(|&b| b == b'\n').count();
        return Err((
            line,
            "the last line has no end: the file is cut short".into(),
        ));
    }
    let mut out = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let bad = |what: &str| (i + 1, what.to_string());
        let (sha, rest) = line.split_at(line.len().min(64));
        if sha.len() != 64 || !sha.iter().all(u8::is_ascii_hexdigit) {
            return Err(bad("it does not start with a SHA-256"));
        }
        let path = rest.trim_ascii_start();
        if path.len() == rest.len() || path.is_empty() {
            return Err(bad("no path after the SHA-256"));
        }
        out.push(ManifestEntry {
            path: PathBuf::from(std::ffi::OsStr::from_bytes(&decode(path))),
            sha256: String::from_utf8_lossy(sha).to_ascii_lowercase(),
        });
    }
    Ok(out)
}

/// Undoes [`render`]'s percent-encoding (only `%25`, `%0A`, `%0D`; anything else is literal).
fn decode(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let code = path.get(i + 1..i + 3).map(|c| c.to_ascii_uppercase());
        match (path[i], code.as_deref()) {
            (b'%', Some(b"25")) => out.push(b'%'),
            (b'%', Some(b"0A")) => out.push(b'\n'),
            (b'%', Some(b"0D")) => out.push(b'\r'),
            (b, _) => {
                out.push(b);
                i += 1;
                continue;
            }
        }
        i += 3;
    }
    out
}

/// Reads the manifest of `dir`; `None` when there is none.
pub fn read(dir: &Path) -> Result<Option<Vec<ManifestEntry>>, ManifestError> {
    let path = dir.join(MANIFEST_NAME);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ManifestError::Io { path, source }),
    };
    parse(&bytes)
        .map(Some)
        .map_err(|(line, detail)| ManifestError::Malformed { path, line, detail })
}

/// Makes the manifest of `dir` list exactly `entries` (see [`entries_in`]), replacing it
/// atomically and durably. Nothing is written when it already does, nor when there is no
/// manifest yet and nothing to list. Returns whether the file was (re)written.
pub fn write(dir: &Path, entries: &[ManifestEntry]) -> io::Result<bool> {
    let path = dir.join(MANIFEST_NAME);
    let bytes = render(entries);
    match fs::read(&path) {
        Ok(old) if old == bytes => return Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound && entries.is_empty() => return Ok(false),
        _ => {}
    }
    let with_path = |e: io::Error, what: &str, p: &Path| {
        io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
    };
    // One fixed temp name: writers of a folder are serialised, and a temp left by a crash is
    // simply overwritten by the next write (or cleared with the other temps at start-up).
    let temp = dir.join(format!("{TEMP_PREFIX}{MANIFEST_NAME}"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .map_err(|e| with_path(e, "creating", &temp))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| with_path(e, "writing", &temp))?;
    drop(file);
    crate::failpoint::hit("before-manifest-rename");
    fs::rename(&temp, &path).map_err(|e| with_path(e, "replacing", &path))?;
    sync_dir(dir)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, fill: char) -> ManifestEntry {
        ManifestEntry {
            path: PathBuf::from(path),
            sha256: fill.to_string().repeat(64),
        }
    }

    #[test]
    fn entries_are_relative_sorted_once_and_inside_the_folder() {
        let sha = |c: char| c.to_string().repeat(64);
        let got = entries_in(
            Path::new("/out"),
            vec![
                (PathBuf::from("/out/b/2.sr.jpg"), sha('B')),
                (PathBuf::from("/out/a.sr.jpg"), sha('a')),
                (PathBuf::from("/elsewhere/x.jpg"), sha('c')),
                (PathBuf::from("/out/a.sr.jpg"), sha('a')),
            ],
        );
        assert_eq!(got, vec![entry("a.sr.jpg", 'a'), entry("b/2.sr.jpg", 'b')]);
    }

    #[test]
    fn render_and_parse_round_trip_awkward_names() {
        let names = [
            "plain.jpg",
            "100% done.jpg",
            "line\nbreak.png",
            "cr\r.jpg",
            "sp  ace.jpg",
        ];
        let entries: Vec<ManifestEntry> = names.iter().map(|n| entry(n, 'e')).collect();
        let bytes = render(&entries);
        assert!(bytes.starts_with(&[b'e'; 64]));
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("  100%25 done.jpg\n"), "{text}");
        assert!(text.contains("  line%0Abreak.png\n"), "{text}");
        assert_eq!(text.lines().count(), names.len());
        assert_eq!(parse(&bytes).unwrap(), entries);
        assert_eq!(parse(b"").unwrap(), vec![]);
    }

    #[test]
    fn a_cut_or_foreign_manifest_is_refused_with_its_line() {
        let good = render(&[entry("a.jpg", 'a'), entry("b.jpg", 'b')]);
        let cut = &good[..good.len() - 3];
        assert_eq!(parse(cut).unwrap_err().0, 2);
        assert_eq!(parse(b"hello  a.jpg\n").unwrap_err().0, 1);
        let no_path = format!("{}\n", "a".repeat(64));
        assert_eq!(parse(no_path.as_bytes()).unwrap_err().0, 1);
    }

    #[test]
    fn write_replaces_the_whole_file_and_skips_when_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!write(dir.path(), &[]).unwrap(), "no manifest for nothing");
        assert_eq!(read(dir.path()).unwrap(), None);
        let one = vec![entry("a.jpg", 'a')];
        assert!(write(dir.path(), &one).unwrap());
        assert!(
            !write(dir.path(), &one).unwrap(),
            "unchanged: not rewritten"
        );
        let two = vec![entry("a.jpg", 'a'), entry("b.jpg", 'b')];
        assert!(write(dir.path(), &two).unwrap());
        assert_eq!(read(dir.path()).unwrap(), Some(two));
        // Only the manifest is left: the temp file was renamed into place.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(MANIFEST_NAME)]);
        fs::write(dir.path().join(MANIFEST_NAME), b"garbage").unwrap();
        assert!(matches!(
            read(dir.path()),
            Err(ManifestError::Malformed { line: 1, .. })
        ));
    }
}
