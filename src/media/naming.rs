//! Output naming: where the result of a photo goes (a mirror of its place under the source
//! root, confined to the output root) and how a free name is found without ever overwriting a
//! different file.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use super::hash::sha256_file;
use super::kind::ImageKind;
use crate::repair::Repair;

/// Longest file name most filesystems accept, in bytes.
const NAME_MAX: usize = 255;
/// Room kept in a name for a `-N` suffix.
const SUFFIX_ROOM: usize = 6;
/// How many numbered names are tried before giving up.
pub const MAX_NUMBERED: u32 = 9999;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{}: has no file name, so no output name can be made from it: add the photo by its own path", .path.display())]
    NoFileName { path: PathBuf },
    #[error("{}: is a symbolic link inside the output directory; hili never writes through links, so results cannot leave the output directory: replace the link with a real directory (or point the output setting at the target)", .link.display())]
    SymlinkInOutput { link: PathBuf },
}

/// Where a result should go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A file with the same content is already there: nothing to write.
    AlreadyThere(PathBuf),
    /// Nothing is at this path yet.
    Free(PathBuf),
}

impl Destination {
    pub fn path(&self) -> &Path {
        match self {
            Destination::AlreadyThere(p) | Destination::Free(p) => p,
        }
    }
}

/// Resolves `.` and `..` without touching the filesystem (symbolic links are not followed),
/// and drops trailing slashes, so paths compare reliably. `..` at the root stays at the root
/// (`/..` is `/`, as the kernel reads it); leading `..` of a relative path are kept (such a
/// path is then outside any relative root).
pub fn normalise(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(".."),
            },
            other => out.push(other),
        }
    }
    out
}

/// Cuts `s` to at most `max` bytes, on a character boundary when it is UTF-8.
fn truncate_name(s: &OsStr, max: usize) -> OsString {
    let bytes = s.as_bytes();
    if bytes.len() <= max {
        return s.to_os_string();
    }
    let mut end = max;
    if let Some(text) = s.to_str() {
        while !text.is_char_boundary(end) {
            end -= 1;
        }
    }
    OsString::from_vec(bytes[..end].to_vec())
}

/// `<output_root>/<source's directory relative to source_root>/<stem>.<repair>.<ext>`.
///
/// Confined to `output_root` whatever the input: `.` and `..` are resolved lexically first, a
/// source outside `source_root` keeps only its file name, a directory below `output_root`
/// that is a symbolic link is refused ([`OutputError::SymlinkInOutput`]), and a stem starting with `.` gets
/// `_` instead so an output is never hidden (nor mistaken for a `.hili-tmp-` file).
pub fn output_path(
    output_root: &Path,
    source_root: &Path,
    source: &Path,
    repair: Repair,
    kind: ImageKind,
) -> Result<PathBuf, OutputError> {
    let src = normalise(source);
    let no_name = || OutputError::NoFileName {
        path: source.to_path_buf(),
    };
    let file_name = src.file_name().ok_or_else(no_name)?;
    let stem = Path::new(file_name).file_stem().ok_or_else(no_name)?;

    let mut out = match src.parent() {
        Some(dir) => output_folder(output_root, source_root, dir)?,
        None => output_root.to_path_buf(),
    };

    let stem_bytes = stem.as_bytes();
    let dots = stem_bytes.iter().take_while(|&&b| b == b'.').count();
    let mut stem_fixed = vec![b'_'; dots];
    stem_fixed.extend_from_slice(&stem_bytes[dots..]);
    let tail = format!(".{}.{}", repair.name(), kind.ext());
    let room = NAME_MAX - SUFFIX_ROOM - tail.len();
    let mut name = truncate_name(OsStr::from_bytes(&stem_fixed), room);
    name.push(tail);
    out.push(name);
    debug_assert!(out.starts_with(output_root));
    Ok(out)
}

/// The folder that receives the outputs of the photos in `source_dir`:
/// `<output_root>/<source_dir relative to source_root>`, or `output_root` itself when
/// `source_dir` is not below `source_root`. Confined as [`output_path`] says.
pub fn output_folder(
    output_root: &Path,
    source_root: &Path,
    source_dir: &Path,
) -> Result<PathBuf, OutputError> {
    let mut out = output_root.to_path_buf();
    if let Ok(rel) = normalise(source_dir).strip_prefix(normalise(source_root)) {
        for c in rel.components() {
            if let Component::Normal(part) = c {
                out.push(part);
                // A link inside the output tree would carry the result (and its temp file)
                // outside it. The output root itself may be a link: the user chose it.
                if fs::symlink_metadata(&out).is_ok_and(|m| m.file_type().is_symlink()) {
                    return Err(OutputError::SymlinkInOutput { link: out });
                }
            }
        }
    }
    Ok(out)
}

/// `candidate` for `n == 0`, otherwise the candidate with `-n` before its last extension:
/// `x.sr.jpg` → `x.sr-1.jpg`.
pub fn numbered(candidate: &Path, n: u32) -> PathBuf {
    if n == 0 {
        return candidate.to_path_buf();
    }
    let stem = candidate.file_stem().unwrap_or_default();
    let mut name = stem.to_os_string();
    name.push(format!("-{n}"));
    if let Some(ext) = candidate.extension() {
        name.push(".");
        name.push(ext);
    }
    candidate.with_file_name(name)
}

/// The one search for a free `-N` name: calls `try_name` with `candidate`, `candidate-1`,
/// `candidate-2`… (see [`numbered`]) until it returns `Some`, and fails with `AlreadyExists`
/// after [`MAX_NUMBERED`] names. What "free" means (nothing there, or nothing placed there
/// yet, or the very same content) is the caller's.
pub fn first_numbered<T>(
    candidate: &Path,
    mut try_name: impl FnMut(PathBuf) -> io::Result<Option<T>>,
) -> io::Result<T> {
    for n in 0..=MAX_NUMBERED {
        if let Some(found) = try_name(numbered(candidate, n))? {
            return Ok(found);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "{}: {MAX_NUMBERED} numbered names are all taken: move some files away",
            candidate.display()
        ),
    ))
}

/// The first of `candidate`, `candidate-1`, `candidate-2`… that is either free or already
/// holds exactly `content_sha256`. A different existing file (or anything that is not a
/// regular file, symlinks included) is never chosen, so nothing is ever overwritten.
pub fn unique_destination(candidate: &Path, content_sha256: &str) -> io::Result<Destination> {
    first_numbered(candidate, |path| match fs::symlink_metadata(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Some(Destination::Free(path))),
        Err(e) => Err(e),
        Ok(meta) if meta.is_file() && sha256_file(&path)?.eq_ignore_ascii_case(content_sha256) => {
            Ok(Some(Destination::AlreadyThere(path)))
        }
        Ok(_) => Ok(None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(root: &str, source: &str) -> PathBuf {
        output_path(
            Path::new("/out"),
            Path::new(root),
            Path::new(source),
            Repair::Sr,
            ImageKind::Jpeg,
        )
        .unwrap()
    }

    #[test]
    fn mirrors_the_source_tree() {
        assert_eq!(
            out("/in", "/in/a/b/photo.JPG"),
            Path::new("/out/a/b/photo.sr.jpg")
        );
        assert_eq!(out("/in", "/in/photo.png"), Path::new("/out/photo.sr.jpg"));
        assert_eq!(
            out("/in/", "/in/./a/../b/p.tar.jpg"),
            Path::new("/out/b/p.tar.sr.jpg")
        );
        assert_eq!(out("/in", "/in/noext"), Path::new("/out/noext.sr.jpg"));
    }

    #[test]
    fn the_output_folder_is_where_output_path_puts_the_file() {
        let cases = [
            ("/in", "/in/a/b/photo.JPG"),
            ("/in", "/in/photo.png"),
            ("/in/", "/in/./a/../b/p.tar.jpg"),
            ("/in", "/in/../etc/passwd.jpg"),
            ("/in", "/elsewhere/x/p.jpg"),
            ("/in", "/in/../../../../p.jpg"),
            ("in", "../in/p.jpg"),
            ("in", "in/a/p.jpg"),
        ];
        for (root, src) in cases {
            let dir = Path::new(src).parent().unwrap();
            let folder = output_folder(Path::new("/out"), Path::new(root), dir).unwrap();
            assert_eq!(Some(folder.as_path()), out(root, src).parent(), "{src}");
        }
    }

    #[test]
    fn stays_confined() {
        assert_eq!(
            out("/in", "/in/../etc/passwd.jpg"),
            Path::new("/out/passwd.sr.jpg")
        );
        assert_eq!(out("/in", "/elsewhere/x/p.jpg"), Path::new("/out/p.sr.jpg"));
        assert_eq!(
            out("/in", "/in/../../../../p.jpg"),
            Path::new("/out/p.sr.jpg")
        );
        assert_eq!(out("in", "../in/p.jpg"), Path::new("/out/p.sr.jpg"));
        assert_eq!(
            out("/in", "/in/.hili-tmp-x.jpg"),
            Path::new("/out/_hili-tmp-x.sr.jpg")
        );
        assert_eq!(
            out("/in", "/in/a/.hidden"),
            Path::new("/out/a/_hidden.sr.jpg")
        );
        let err = output_path(
            Path::new("/out"),
            Path::new("/"),
            Path::new("/"),
            Repair::Sr,
            ImageKind::Png,
        );
        assert!(matches!(err, Err(OutputError::NoFileName { .. })));
    }

    #[test]
    fn symlinked_subdirectories_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let (out, src, elsewhere) = (
            d.path().join("out"),
            d.path().join("in"),
            d.path().join("x"),
        );
        fs::create_dir_all(&out).unwrap();
        fs::create_dir_all(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, out.join("a")).unwrap();
        let r = output_path(
            &out,
            &src,
            &src.join("a/b/p.jpg"),
            Repair::Sr,
            ImageKind::Jpeg,
        );
        assert!(
            matches!(&r, Err(OutputError::SymlinkInOutput { link }) if *link == out.join("a")),
            "{r:?}"
        );
        // The root itself may be a link.
        let root_link = d.path().join("root-link");
        std::os::unix::fs::symlink(&elsewhere, &root_link).unwrap();
        let p = output_path(
            &root_link,
            &src,
            &src.join("c/p.jpg"),
            Repair::Sr,
            ImageKind::Jpeg,
        );
        assert_eq!(p.unwrap(), root_link.join("c/p.sr.jpg"));
    }

    #[test]
    fn long_names_are_cut_to_fit() {
        let long = format!("/in/{}.jpg", "é".repeat(200));
        let p = out("/in", &long);
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(name.len() <= NAME_MAX - SUFFIX_ROOM, "{}", name.len());
        assert!(name.ends_with(".sr.jpg"));
    }

    #[test]
    fn normalise_is_lexical_and_stops_at_the_root() {
        for (path, want) in [
            ("/a/./b/../c/", "/a/c"),
            ("x/y", "x/y"),
            ("./x/./y/", "x/y"),
            // The root's parent is the root.
            ("/..", "/"),
            ("/../a", "/a"),
            ("/a/../../b", "/b"),
            // A relative path's leading `..` are kept, however many.
            ("..", ".."),
            ("../a", "../a"),
            ("../..", "../.."),
            ("a/../..", ".."),
            ("a/..", ""),
        ] {
            assert_eq!(normalise(Path::new(path)), PathBuf::from(want), "{path}");
        }
    }

    #[test]
    fn the_numbered_search_stops_at_the_first_taker_or_gives_up() {
        let mut seen = Vec::new();
        let found = first_numbered(Path::new("/o/x.jpg"), |p| {
            seen.push(p.clone());
            Ok((seen.len() == 3).then_some(p))
        });
        assert_eq!(found.unwrap(), Path::new("/o/x-2.jpg"));
        let none = first_numbered(Path::new("/o/x.jpg"), |_| Ok(None::<()>)).unwrap_err();
        assert_eq!(none.kind(), io::ErrorKind::AlreadyExists);
        assert!(none.to_string().contains("all taken"), "{none}");
    }

    #[test]
    fn numbering_goes_before_the_last_extension() {
        assert_eq!(
            numbered(Path::new("/o/x.sr.jpg"), 0),
            Path::new("/o/x.sr.jpg")
        );
        assert_eq!(
            numbered(Path::new("/o/x.sr.jpg"), 2),
            Path::new("/o/x.sr-2.jpg")
        );
        assert_eq!(numbered(Path::new("/o/x"), 1), Path::new("/o/x-1"));
    }
}
