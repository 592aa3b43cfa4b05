//! Integration tests: media. Fixtures are generated in code (small images via the image
//! crate, hand-made headers); anything that could hang (FIFO, sparse files) runs under a
//! time bound.

use crate::helpers::png_header_only;
use std::ffi::{CString, OsStr};
use std::fs;
use std::io::Cursor;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use hili::media::{
    self, AtomicFile, Destination, ImageKind, InputError, WalkError, output_path, probe,
    sha256_bytes, sha256_file, unique_destination,
};
use hili::repair::Repair;

/// Runs `f` on a thread and fails the test if it takes longer than `secs`.
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("did not finish within {secs}s"))
}

fn image_bytes(w: u32, h: u32, format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 90]));
    let mut buf = Vec::new();
    img.write_to(&mut Cursor::new(&mut buf), format).unwrap();
    buf
}

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    image_bytes(w, h, image::ImageFormat::Jpeg)
}

fn png(w: u32, h: u32) -> Vec<u8> {
    image_bytes(w, h, image::ImageFormat::Png)
}

fn write(dir: &Path, name: impl AsRef<Path>, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(&p, data).unwrap();
    p
}

// ---------------------------------------------------------------- probe

#[test]
fn probe_accepts_jpeg_and_png_with_dimensions() {
    let d = tempfile::tempdir().unwrap();
    let j = jpeg(64, 48);
    let p = probe(&write(d.path(), "a.jpg", &j)).unwrap();
    assert_eq!(
        (p.kind, p.width, p.height, p.size),
        (ImageKind::Jpeg, 64, 48, j.len() as u64)
    );
    let p = probe(&write(d.path(), "b.png", &png(30, 20))).unwrap();
    assert_eq!((p.kind, p.width, p.height), (ImageKind::Png, 30, 20));
    // The bytes decide, not the name.
    let p = probe(&write(d.path(), "really-a-png.jpg", &png(5, 6))).unwrap();
    assert_eq!(p.kind, ImageKind::Png);
    // Exactly at the limit is fine.
    let p = probe(&write(d.path(), "edge.png", &png_header_only(6000, 6000))).unwrap();
    assert_eq!((p.width, p.height), (6000, 6000));
    // Followed symlink.
    let link = d.path().join("link.jpg");
    symlink(d.path().join("a.jpg"), &link).unwrap();
    assert_eq!(probe(&link).unwrap().width, 64);
}

#[test]
fn probe_refuses_empty_text_and_cut_headers() {
    let d = tempfile::tempdir().unwrap();
    let e = probe(&write(d.path(), "empty.jpg", b"")).unwrap_err();
    assert!(matches!(e, InputError::Empty { .. }), "{e}");

    let e = probe(&write(d.path(), "photo.jpg", b"not a photo at all\n")).unwrap_err();
    assert!(matches!(e, InputError::NotAnImage { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("photo.jpg") && msg.contains("text") && msg.contains("convert"),
        "{msg}"
    );

    let j = jpeg(64, 48);
    let e = probe(&write(d.path(), "cut.jpg", &j[..20])).unwrap_err();
    assert!(
        matches!(
            e,
            InputError::TruncatedHeader {
                kind: ImageKind::Jpeg,
                ..
            }
        ),
        "{e}"
    );
    let e = probe(&write(d.path(), "cut.png", &png(8, 8)[..20])).unwrap_err();
    assert!(
        matches!(
            e,
            InputError::TruncatedHeader {
                kind: ImageKind::Png,
                ..
            }
        ),
        "{e}"
    );

    // Cut in the pixel data, header intact: passes (the service decides, for free).
    let p = probe(&write(d.path(), "half.jpg", &j[..j.len() * 3 / 4])).unwrap();
    assert_eq!((p.width, p.height), (64, 48));
}

#[test]
fn probe_refuses_oversized_by_header_alone() {
    let d = tempfile::tempdir().unwrap();
    let huge = write(d.path(), "huge.png", &png_header_only(100_000, 100_000));
    let e = within(5, move || probe(&huge)).unwrap_err();
    assert!(
        matches!(
            e,
            InputError::TooLarge {
                width: 100_000,
                height: 100_000,
                ..
            }
        ),
        "{e}"
    );

    let e = probe(&write(d.path(), "photo.jpg", &jpeg(7000, 10))).unwrap_err();
    assert!(
        matches!(
            e,
            InputError::TooLarge {
                width: 7000,
                height: 10,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "{}: is 7000×10 px; the service accepts at most 6000 px per side: resize it and add it again, or set [input] oversize = \"downscale\" to let hili fit it within 6000 px",
            d.path().join("photo.jpg").display()
        )
    );
}

#[test]
fn probe_refuses_non_files_promptly() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("x.jpg");
    fs::create_dir(&dir).unwrap();
    assert!(matches!(probe(&dir), Err(InputError::Directory { .. })));

    let fifo = d.path().join("pipe.jpg");
    let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let e = within(5, move || probe(&fifo)).unwrap_err();
    assert!(matches!(e, InputError::NotRegular { .. }), "{e}");
    assert!(e.to_string().contains("named pipe"), "{e}");

    let (a, b) = (d.path().join("a.jpg"), d.path().join("b.jpg"));
    symlink(&b, &a).unwrap();
    symlink(&a, &b).unwrap();
    let e = within(5, move || probe(&a)).unwrap_err();
    assert!(matches!(e, InputError::SymlinkLoop { .. }), "{e}");

    let dangling = d.path().join("dangling.jpg");
    symlink(d.path().join("gone.jpg"), &dangling).unwrap();
    assert!(matches!(
        probe(&dangling),
        Err(InputError::BrokenSymlink { .. })
    ));
    assert!(matches!(
        probe(&d.path().join("nope.jpg")),
        Err(InputError::NotFound { .. })
    ));
}

#[test]
fn probe_is_prompt_on_a_2gb_sparse_file() {
    let d = tempfile::tempdir().unwrap();
    let big = write(d.path(), "big.jpg", &jpeg(32, 16));
    fs::OpenOptions::new()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let p = within(5, move || probe(&big)).unwrap();
    assert_eq!((p.width, p.height, p.size), (32, 16, 2 << 30));

    // Only a start-of-image and an APP0 marker, then 2 GB of zeros: refused at once.
    let bogus = write(d.path(), "bogus.jpg", &[0xFF, 0xD8, 0xFF, 0xE0]);
    fs::OpenOptions::new()
        .write(true)
        .open(&bogus)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let e = within(5, move || probe(&bogus)).unwrap_err();
    assert!(matches!(e, InputError::BadHeader { .. }), "{e}");
}

// ---------------------------------------------------------------- naming

#[test]
fn output_path_mirrors_and_stays_confined() {
    let out = Path::new("/srv/out");
    let root = Path::new("/home/me/in");
    let o = |src: &Path| output_path(out, root, src, Repair::Colour, ImageKind::Png).unwrap();
    assert_eq!(
        o(Path::new("/home/me/in/2001/x.jpg")),
        Path::new("/srv/out/2001/x.colour.png")
    );
    let hostile = [
        "/home/me/in/../../../etc/passwd",
        "/home/me/in/a/../../../../x.jpg",
        "/home/me/in//etc/x.jpg",
        "/etc/x.jpg",
        "/home/me/in/./../in2/x.jpg",
        "relative/../../x.jpg",
        "/home/me/in/sub/..",
    ];
    for h in hostile {
        match output_path(out, root, Path::new(h), Repair::Sr, ImageKind::Jpeg) {
            Ok(p) => {
                assert!(p.starts_with(out), "{h} -> {}", p.display());
                assert!(
                    p.strip_prefix(out)
                        .unwrap()
                        .components()
                        .all(|c| matches!(c, std::path::Component::Normal(_))),
                    "{h} -> {}",
                    p.display()
                );
            }
            Err(e) => assert!(e.to_string().contains("no file name"), "{h}: {e}"),
        }
    }
    assert_eq!(
        o(Path::new("/etc/x.jpg")),
        Path::new("/srv/out/x.colour.png")
    );
    assert_eq!(
        o(Path::new("/home/me/in//etc/x.jpg")),
        Path::new("/srv/out/etc/x.colour.png")
    );
    let bad = OsStr::from_bytes(b"/home/me/in/caf\xe9.jpg");
    let p = o(Path::new(bad));
    assert_eq!(p.file_name().unwrap().as_bytes(), b"caf\xe9.colour.png");
}

#[test]
fn unique_destination_numbers_and_recognises_same_content() {
    let d = tempfile::tempdir().unwrap();
    let cand = d.path().join("x.sr.jpg");
    let (a, b, c) = (
        b"content A".as_slice(),
        b"content B".as_slice(),
        b"content C".as_slice(),
    );
    assert_eq!(
        unique_destination(&cand, &sha256_bytes(a)).unwrap(),
        Destination::Free(cand.clone())
    );
    fs::write(&cand, a).unwrap();
    assert_eq!(
        unique_destination(&cand, &sha256_bytes(a)).unwrap(),
        Destination::AlreadyThere(cand.clone())
    );
    let one = d.path().join("x.sr-1.jpg");
    assert_eq!(
        unique_destination(&cand, &sha256_bytes(b)).unwrap(),
        Destination::Free(one.clone())
    );
    fs::write(&one, b).unwrap();
    assert_eq!(
        unique_destination(&cand, &sha256_bytes(b)).unwrap(),
        Destination::AlreadyThere(one.clone())
    );
    let two = d.path().join("x.sr-2.jpg");
    // A directory or a symlink in the way is never chosen nor followed.
    fs::create_dir(&two).unwrap();
    symlink(&cand, d.path().join("x.sr-3.jpg")).unwrap();
    let four = d.path().join("x.sr-4.jpg");
    assert_eq!(
        unique_destination(&cand, &sha256_bytes(c)).unwrap(),
        Destination::Free(four)
    );
    assert_eq!(fs::read(&cand).unwrap(), a);
    assert_eq!(fs::read(&one).unwrap(), b);
}

// ---------------------------------------------------------------- atomic writes

fn temps_in(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().as_bytes().starts_with(b".hili-tmp-"))
        .map(|e| e.into_path())
        .collect()
}

#[test]
fn atomic_file_commits_and_never_clobbers() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("out/2001/summer");
    let mut f = AtomicFile::create_in(&dir).unwrap();
    assert!(
        f.temp_path()
            .file_name()
            .unwrap()
            .as_bytes()
            .starts_with(b".hili-tmp-")
    );
    assert_eq!(f.temp_path().parent().unwrap(), dir);
    f.write_all(b"hello ").unwrap();
    f.write_all(b"world").unwrap();
    assert_eq!(f.len(), 11);
    let dest = dir.join("x.sr.jpg");
    let (path, sha) = f.commit(&dest).unwrap();
    assert_eq!(path, dest);
    assert_eq!(sha, sha256_bytes(b"hello world"));
    assert_eq!(fs::read(&dest).unwrap(), b"hello world");
    assert!(temps_in(d.path()).is_empty());

    // A different file at the destination is kept; the new one is numbered.
    let mut f = AtomicFile::create_in(&dir).unwrap();
    f.write_all(b"other").unwrap();
    let (path, sha) = f.commit(&dest).unwrap();
    assert_eq!(path, dir.join("x.sr-1.jpg"));
    assert_eq!(sha, sha256_file(&path).unwrap());
    assert_eq!(fs::read(&dest).unwrap(), b"hello world");

    // The same content again: the existing file is the answer, no duplicate appears.
    let mut f = AtomicFile::create_in(&dir).unwrap();
    f.write_all(b"other").unwrap();
    let (path, _) = f.commit(&dest).unwrap();
    assert_eq!(path, dir.join("x.sr-1.jpg"));
    assert!(!dir.join("x.sr-2.jpg").exists());
    assert!(temps_in(d.path()).is_empty());
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 2);
}

#[test]
fn atomic_file_dropped_uncommitted_leaves_nothing() {
    let d = tempfile::tempdir().unwrap();
    let mut f = AtomicFile::create_in(d.path()).unwrap();
    f.write_all(&[7u8; 100_000]).unwrap();
    let temp = f.temp_path().to_path_buf();
    assert!(temp.exists());
    drop(f);
    assert!(!temp.exists());
    assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
}

#[test]
fn stale_temps_are_removed_and_nothing_else() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), ".hili-tmp-0123", b"debris");
    write(d.path(), "a/b/.hili-tmp-abcd", b"debris");
    let keep = [
        write(d.path(), "a/photo.sr.jpg", b"result"),
        write(d.path(), "a/hili-tmp-not-hidden", b"keep"),
        write(d.path(), "a/.hili-tmp-dir/inner.jpg", b"keep"),
    ];
    // A temp left by a process that died mid-write (leaked, so Drop does not clean it).
    let mut f = AtomicFile::create_in(&d.path().join("c")).unwrap();
    f.write_all(b"partial").unwrap();
    std::mem::forget(f);
    assert_eq!(media::remove_stale_temps(d.path()).unwrap(), 3);
    assert!(temps_in(d.path()).iter().all(|p| p.is_dir()));
    for k in keep {
        assert!(k.exists(), "{}", k.display());
    }
    assert_eq!(
        media::remove_stale_temps(&d.path().join("missing")).unwrap(),
        0
    );
}

/// A node of a shared queue starting while another writes into the same NAS folder: only
/// temp files untouched for the given age are debris.
#[test]
fn on_a_shared_folder_only_old_temps_are_debris() {
    let d = tempfile::tempdir().unwrap();
    let old = write(d.path(), ".hili-tmp-old", b"debris");
    let fresh = write(d.path(), ".hili-tmp-fresh", b"being written");
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(an_hour_ago)
        .unwrap();
    let ten_minutes = std::time::Duration::from_secs(600);
    assert_eq!(
        media::remove_temps_older_than(d.path(), ten_minutes).unwrap(),
        1
    );
    assert!(!old.exists());
    assert!(fresh.exists(), "a live writer's file is left alone");
}

#[test]
fn copy_atomic_copies_durably_without_clobbering() {
    let d = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let src = write(d.path(), "job1/x.sr.jpg", &data);
    let dest = d.path().join("job2/deeper/y.sr.jpg");
    let (path, sha) = media::copy_atomic(&src, &dest).unwrap();
    assert_eq!(path, dest);
    assert_eq!(sha, sha256_bytes(&data));
    assert_eq!(fs::read(&dest).unwrap(), data);
    fs::write(&dest, b"someone else's").unwrap();
    let (path, _) = media::copy_atomic(&src, &dest).unwrap();
    assert_eq!(path, d.path().join("job2/deeper/y.sr-1.jpg"));
    assert_eq!(fs::read(&dest).unwrap(), b"someone else's");
    assert!(media::copy_atomic(&d.path().join("missing"), &dest).is_err());
}

// ---------------------------------------------------------------- walk

fn found_names(root: &Path, paths: &[PathBuf]) -> (Vec<Vec<u8>>, Vec<WalkError>) {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for item in media::walk(paths) {
        match item {
            Ok(f) => found.push(
                f.path
                    .strip_prefix(root)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
            ),
            Err(e) => errors.push(e),
        }
    }
    found.sort();
    (found, errors)
}

#[test]
fn walk_skips_the_ignore_list_and_keeps_odd_names() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("in");
    let wanted: [&[u8]; 6] = [
        b"a.jpg",
        b"with space.jpg",
        b"new\nline.jpg",
        "emoji 📷.png".as_bytes(),
        b"bad\xff\xfename.jpg",
        b"sub/deep/b.JPG",
    ];
    for w in wanted {
        write(&root, OsStr::from_bytes(w), b"x");
    }
    let ignored = [
        ".DS_Store",
        "._a.jpg",
        "Thumbs.db",
        "desktop.ini",
        "~$report.docx",
        "x.tmp",
        "y.part",
        "z.crdownload",
        "dl.JPG.PART",
        "@eaDir/thumb.jpg",
        "__MACOSX/a.jpg",
        ".Trashes/501/a.jpg",
        ".hidden/a.jpg",
        "sub/.hili-tmp-1234",
        "sub/@eaDir/SYNOPHOTO_THUMB_XL.jpg",
        "out/manifest-sha256.txt",
    ];
    for i in ignored {
        write(&root, i, b"x");
    }
    let (found, errors) = found_names(&root, std::slice::from_ref(&root));
    assert!(errors.is_empty(), "{errors:?}");
    let mut expected: Vec<Vec<u8>> = wanted.iter().map(|w| w.to_vec()).collect();
    expected.sort();
    assert_eq!(found, expected);
    for i in ignored {
        let hit = Path::new(i)
            .components()
            .any(|c| media::is_ignored_name(c.as_os_str()));
        assert!(hit, "{i}");
    }
    assert!(!media::is_ignored_name(OsStr::new("holiday.jpg")));
    assert!(!media::is_ignored_name(OsStr::new("partial.jpg")));
}

#[test]
fn walk_reports_roots_sizes_times_and_each_file_once() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("in");
    let f = write(&root, "sub/p.jpg", &[1u8; 1234]);
    let t = SystemTime::UNIX_EPOCH + Duration::new(1_600_000_000, 123_456_789);
    fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(t)
        .unwrap();
    let items: Vec<_> = media::walk(&[root.clone(), f.clone(), d.path().join("missing")]).collect();
    assert_eq!(items.len(), 2, "{items:?}");
    let found = items[0].as_ref().unwrap();
    assert_eq!((&found.path, &found.root), (&f, &root));
    assert_eq!(found.size, 1234);
    assert_eq!(found.mtime_ns, 1_600_000_000_123_456_789);
    assert!(matches!(items[1], Err(WalkError::NotFound { .. })));

    // A file argument's root is its parent.
    let alone: Vec<_> = media::walk(std::slice::from_ref(&f))
        .map(Result::unwrap)
        .collect();
    assert_eq!(alone[0].root, root.join("sub"));
}

#[test]
fn walk_survives_symlink_loops() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("in");
    write(&root, "a/photo.jpg", b"x");
    symlink(&root, root.join("a/back-to-top")).unwrap();
    symlink("self.jpg", root.join("self.jpg")).unwrap();
    let linked = write(d.path(), "elsewhere/linked.jpg", b"y");
    symlink(linked.parent().unwrap(), root.join("album")).unwrap();
    let (found, errors) = within(10, {
        let root = root.clone();
        move || found_names(&root, std::slice::from_ref(&root))
    });
    assert_eq!(
        found,
        vec![b"a/photo.jpg".to_vec(), b"album/linked.jpg".to_vec()]
    );
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors
            .iter()
            .all(|e| matches!(e, WalkError::SymlinkLoop { .. })),
        "{errors:?}"
    );
}
