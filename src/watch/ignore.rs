//! What a watch folder never ingests: the built-in names of [`crate::media::is_ignored_name`]
//! (dotfiles, `.DS_Store`, `~$*`, `*.part`, `@eaDir`…), the folder's own `ignore` globs, and
//! excluded directories (output, done and failed folders, and watch folders nested inside this
//! one, which belong to their own watch).
//!
//! Globs are case-insensitive (cameras write `.JPG` and `.jpg` alike). A glob without `/`
//! matches any file or directory NAME; a glob with `/` (or starting with one) matches the path
//! relative to the watch folder (`*` stays within one component, `**` crosses them). A matching directory hides
//! everything under it.

use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::media::is_ignored_name;

#[derive(Debug, Clone)]
pub struct Ignore {
    root: PathBuf,
    names: GlobSet,
    paths: GlobSet,
    excluded: Vec<PathBuf>,
}

impl Ignore {
    /// `globs` are the folder's `ignore` key; `excluded` are absolute directories never
    /// entered (only those under `root` matter).
    pub fn new(
        root: &Path,
        globs: &[String],
        excluded: impl IntoIterator<Item = PathBuf>,
    ) -> Result<Ignore, globset::Error> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for g in globs {
            let g = g.trim().trim_end_matches('/');
            // A leading `/` anchors the glob at the watch folder.
            let anchored = g.contains('/');
            let g = g.trim_start_matches('/');
            let glob = GlobBuilder::new(g)
                .case_insensitive(true)
                .literal_separator(true)
                .build()?;
            if anchored {
                paths.add(glob);
            } else {
                names.add(glob);
            }
        }
        Ok(Ignore {
            root: root.to_path_buf(),
            names: names.build()?,
            paths: paths.build()?,
            excluded: excluded
                .into_iter()
                .filter(|d| d.starts_with(root) && d != root)
                .collect(),
        })
    }

    /// Whether `path` itself is ignored, its ancestors below the root being known to be
    /// kept (what a walk that prunes directories needs). Paths outside the root are ignored.
    pub fn skips_entry(&self, path: &Path) -> bool {
        let Ok(rel) = path.strip_prefix(&self.root) else {
            return true;
        };
        if rel.as_os_str().is_empty() {
            return false;
        }
        rel.file_name()
            .is_some_and(|n| is_ignored_name(n) || self.names.is_match(Path::new(n)))
            || self.paths.is_match(rel)
            || self.excluded.iter().any(|d| d == path)
    }

    /// Whether `path` or any directory between the root and it is ignored (for event paths).
    pub fn skips_path(&self, path: &Path) -> bool {
        if !path.starts_with(&self.root) {
            return true;
        }
        if self.excluded.iter().any(|d| path.starts_with(d)) {
            return true;
        }
        path.ancestors()
            .take_while(|a| *a != self.root)
            .any(|a| self.skips_entry(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ig(globs: &[&str], excluded: &[&str]) -> Ignore {
        let globs: Vec<String> = globs.iter().map(|g| g.to_string()).collect();
        Ignore::new(Path::new("/w"), &globs, excluded.iter().map(PathBuf::from)).unwrap()
    }

    #[test]
    fn built_ins_globs_and_excluded_dirs() {
        let i = ig(
            &["*.raw", "scratch", "keep/tmp/*", "/top.jpg"],
            &["/w/out", "/x/done"],
        );
        for p in [
            "/w/.DS_Store",
            "/w/x.part",
            "/w/~$x.jpg",
            "/w/@eaDir/a.jpg",
            "/w/sub/@eaDir/thumb.jpg",
            "/w/._a.jpg",
            "/w/Thumbs.db",
            "/w/a.RAW",
            "/w/deep/b.raw",
            "/w/scratch/a.jpg",
            "/w/a/scratch",
            "/w/keep/tmp/a.jpg",
            "/w/keep/tmp/sub/a.jpg",
            "/w/top.jpg",
            "/w/out",
            "/w/out/a.jpg",
            "/elsewhere/a.jpg",
        ] {
            assert!(i.skips_path(Path::new(p)), "{p}");
        }
        for p in [
            "/w/a.jpg",
            "/w/sub/a.jpg",
            "/w/keep/a.jpg",
            "/w/keep/tmpx/a.jpg",
            "/w/sub/top.jpg",
            "/w/output/a.jpg",
            "/w/raw.jpg",
            "/w",
        ] {
            assert!(!i.skips_path(Path::new(p)), "{p}");
        }
        assert!(i.skips_entry(Path::new("/w/out")));
        assert!(!i.skips_entry(Path::new("/w/out2")));
        // An excluded dir outside the root does not matter; the root itself is never skipped.
        assert!(!ig(&[], &["/w"]).skips_path(Path::new("/w/a.jpg")));
    }

    #[test]
    fn bad_glob_is_an_error() {
        assert!(Ignore::new(Path::new("/w"), &["a[".to_string()], []).is_err());
    }
}
