//! `hili report`'s room: one self-contained HTML file that shows what hili did, for people who
//! would rather look than read. Per job a before/after comparison of thumbnails (a slider), the
//! sizes in bytes and pixels, the repair, how the input was converted, the notes of its events,
//! its state, the reason of a failed or held job and the credits spent; totals at the top.
//!
//! The page names nothing outside itself: its style and script are inline and its pictures are
//! `data:` URIs of small JPEGs ([`thumbs`]), cached beside the queue database so a report of
//! thousands of jobs is rebuilt in seconds. Thumbnails are made on the blocking pool, several at
//! once, and each job's section is written as soon as it is ready, in job order, into a temp file
//! that replaces the report only once complete.

mod html;
mod thumbs;

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::store::{Job, now_ms};
pub use html::when;
pub use thumbs::LONG_SIDE;

/// A job as the report shows it: its row and the notes of its events trail (oldest first).
#[derive(Debug, Clone)]
pub struct ReportJob {
    pub job: Job,
    pub notes: Vec<String>,
}

/// What a report build did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Built {
    pub jobs: u64,
    /// Thumbnails decoded and made by this build (the others came from the cache).
    pub thumbnails_made: u64,
    pub thumbnails_cached: u64,
    /// The report's size in bytes.
    pub bytes: u64,
}

/// Why no report was written. Each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{}: cannot write the report: {source}; give a writable path with -o", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{}: cannot create the thumbnail cache: {source}; check that the folder of the queue \
         database is writable", .path.display()
    )]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("making thumbnails stopped: {0}")]
    Worker(#[from] tokio::task::JoinError),
}

/// The thumbnail cache of the queue database `db`: `<db>-thumbs`, beside it.
pub fn cache_dir(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-thumbs");
    PathBuf::from(p)
}

/// How many thumbnails are made at once: one per core, at most 8 (each holds a decoded photo).
fn parallelism() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(8))
}

/// Writes the report of `jobs` (in the order given) to `out`, with `scope` saying which jobs
/// they are, using and filling the thumbnail cache `cache`.
pub async fn build(
    jobs: Vec<ReportJob>,
    scope: &str,
    cache: &Path,
    out: &Path,
) -> Result<Built, ReportError> {
    tokio::fs::create_dir_all(cache)
        .await
        .map_err(|source| ReportError::Cache {
            path: cache.to_path_buf(),
            source,
        })?;
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let temp = dir.join(format!(".hili-report-{:016x}.tmp", rand::random::<u64>()));
    let written = write(jobs, scope, cache, &temp).await;
    let renamed = match written {
        Ok(built) => tokio::fs::rename(&temp, out)
            .await
            .map(|()| built)
            .map_err(|source| ReportError::Write {
                path: out.to_path_buf(),
                source,
            }),
        Err(e) => Err(e),
    };
    if renamed.is_err() {
        let _ = tokio::fs::remove_file(&temp).await;
    }
    renamed
}

/// Writes the whole page into `temp`.
async fn write(
    jobs: Vec<ReportJob>,
    scope: &str,
    cache: &Path,
    temp: &Path,
) -> Result<Built, ReportError> {
    let io = |source| ReportError::Write {
        path: temp.to_path_buf(),
        source,
    };
    let file = tokio::fs::File::create(temp).await.map_err(io)?;
    let mut w = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let totals = html::Totals::of(&jobs);
    w.write_all(html::start(scope, &totals, now_ms()).as_bytes())
        .await
        .map_err(io)?;
    let mut built = Built {
        jobs: totals.jobs,
        ..Built::default()
    };
    let mut sections = futures_util::stream::iter(jobs)
        .map(|r| {
            let cache = cache.to_path_buf();
            crate::media::blocking(move || job_section(&r, &cache))
        })
        .buffered(parallelism());
    while let Some(done) = sections.next().await {
        let (text, made, cached) = done?;
        built.thumbnails_made += made;
        built.thumbnails_cached += cached;
        w.write_all(text.as_bytes()).await.map_err(io)?;
    }
    w.write_all(html::end().as_bytes()).await.map_err(io)?;
    w.flush().await.map_err(io)?;
    let file = w.into_inner();
    file.sync_all().await.map_err(io)?;
    built.bytes = file.metadata().await.map_err(io)?.len();
    Ok(built)
}

/// One job's section (blocking: it reads, and may decode, its pictures), with how many
/// thumbnails were made and how many came from the cache.
fn job_section(r: &ReportJob, cache: &Path) -> (String, u64, u64) {
    let j = &r.job;
    let source = thumbs::Wanted {
        path: source_now(r),
        key: j
            .content_sha256
            .clone()
            .unwrap_or_else(|| unhashed_key(&j.source_path, j.size, j.mtime_ns)),
        expect: Some((j.size, j.mtime_ns)),
    };
    let before = thumbs::picture(&source, cache);
    let after = match (&j.output_path, &j.output_sha256) {
        (Some(path), Some(sha)) => Some(thumbs::picture(
            &thumbs::Wanted {
                path: path.clone(),
                key: sha.clone(),
                expect: None,
            },
            cache,
        )),
        _ => None,
    };
    let (mut made, mut cached) = (0, 0);
    for p in std::iter::once(&before).chain(after.as_ref()) {
        match (&p.thumb, p.made) {
            (Ok(_), true) => made += 1,
            (Ok(_), false) => cached += 1,
            _ => {}
        }
    }
    (html::section(r, &before, after.as_ref()), made, cached)
}

/// Where the job's source is now: where its note says it was moved after its job (into a
/// watch folder's done or failed folder) when it is there, else where it was queued.
fn source_now(r: &ReportJob) -> PathBuf {
    let prefix = format!("source: moved {} to ", r.job.source_path.display());
    r.notes
        .iter()
        .rev()
        .find_map(|n| n.strip_prefix(&prefix))
        .map(|dest| {
            let dest = [" (failed)", " (held)"]
                .iter()
                .fold(dest, |d, suffix| d.strip_suffix(suffix).unwrap_or(d));
            PathBuf::from(dest)
        })
        .filter(|moved| moved.is_file())
        .unwrap_or_else(|| r.job.source_path.clone())
}

/// The cache key of a file not hashed yet (a queued job, or one refused before its hash):
/// its path, size and mtime, hashed, so another version of the file gets another key.
fn unhashed_key(path: &Path, size: u64, mtime_ns: i64) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut id = path.as_os_str().as_bytes().to_vec();
    id.extend_from_slice(format!("\0{size}\0{mtime_ns}").as_bytes());
    format!("file-{}", crate::media::sha256_bytes(&id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repair::Repair;
    use crate::store::{EnqueueOutcome, NewJob, Store};

    #[tokio::test]
    async fn a_source_moved_after_its_job_is_found_where_its_note_says() {
        let dir = tempfile::tempdir().unwrap();
        let (source, moved) = (
            dir.path().join("in/a b.jpg"),
            dir.path().join("done/a b.jpg"),
        );
        std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
        std::fs::write(&moved, b"photo").unwrap();
        let store = Store::open(&dir.path().join("q.db")).await.unwrap();
        let job = NewJob {
            source_path: source.clone(),
            source_root: dir.path().join("in"),
            output_dir: dir.path().join("out"),
            repair: Repair::Sr,
            rgb: None,
            size: 5,
            mtime_ns: 1,
            file_id: None,
            force: false,
        };
        let [EnqueueOutcome::Queued(id)] = store.enqueue_many(vec![job]).await.unwrap()[..] else {
            panic!("not queued");
        };
        let job = store.get(id).await.unwrap().unwrap();
        store.close().await;
        let with = |notes: Vec<String>| ReportJob {
            job: job.clone(),
            notes,
        };
        let note = |suffix: &str| {
            format!(
                "source: moved {} to {}{suffix}",
                source.display(),
                moved.display()
            )
        };
        assert_eq!(source_now(&with(vec![note("")])), moved);
        assert_eq!(source_now(&with(vec![note(" (failed)")])), moved);
        assert_eq!(source_now(&with(vec![])), source);
        std::fs::remove_file(&moved).unwrap();
        assert_eq!(
            source_now(&with(vec![note("")])),
            source,
            "gone from there too"
        );
    }
}
