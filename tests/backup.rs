//! Volume backups at the filesystem level: archive → manifest → verify →
//! restore, and SECURITY.md lines 12 (exact ids) and 15 (hostile archives).
//! Runs as root (owners are part of what must survive); no Docker needed.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use nbgate::volumes::backup::{
    self, EntryKind, Manifest, ManifestError, RestoreError, RestoreStats, VerifyError, VolumeEntry,
};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

// ---------------------------------------------------------------------------
// Helpers

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as u8
        })
        .collect()
}

fn write(path: &Path, data: &[u8], mode: u32, owner: (u32, u32)) {
    fs::write(path, data).unwrap();
    chown(path, owner);
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn mkdir(path: &Path, mode: u32, owner: (u32, u32)) {
    fs::create_dir_all(path).unwrap();
    chown(path, owner);
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn symlink(target: impl AsRef<Path>, link: &Path, owner: (u32, u32)) {
    std::os::unix::fs::symlink(target, link).unwrap();
    if is_root() {
        std::os::unix::fs::lchown(link, Some(owner.0), Some(owner.1)).unwrap();
    }
}

fn chown(path: &Path, (uid, gid): (u32, u32)) {
    if is_root() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
}

fn set_mtime(path: &Path, secs: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

/// Everything about a tree that a restore must reproduce.
#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    content: Option<Vec<u8>>,
    link: Option<PathBuf>,
}

fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::from(".")];
    while let Some(rel) = stack.pop() {
        let path = root.join(&rel);
        let meta = fs::symlink_metadata(&path).unwrap();
        let kind = meta.file_type();
        let mut node = Node {
            kind: "dir",
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: meta.mtime(),
            content: None,
            link: None,
        };
        if kind.is_symlink() {
            node.kind = "symlink";
            node.mode = 0; // Linux symlinks are always 0777; nothing to keep.
            node.link = Some(fs::read_link(&path).unwrap());
        } else if kind.is_file() {
            node.kind = "file";
            node.content = Some(fs::read(&path).unwrap());
        } else if kind.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                let name = entry.unwrap().file_name();
                stack.push(if rel == Path::new(".") { PathBuf::from(name) } else { rel.join(name) });
            }
        }
        out.insert(rel, node);
    }
    out
}

fn assert_same_tree(a: &Path, b: &Path) {
    let (sa, sb) = (snapshot(a), snapshot(b));
    for (path, node) in &sa {
        match sb.get(path) {
            Some(other) if other == node => {}
            Some(other) => panic!(
                "{} differs:\n  source   {:?}\n  restored {:?}",
                path.display(),
                summary(node),
                summary(other)
            ),
            None => panic!("{} missing after restore", path.display()),
        }
    }
    if let Some(extra) = sb.keys().find(|k| !sa.contains_key(*k)) {
        panic!("{} appeared after restore", extra.display());
    }
}

fn summary(n: &Node) -> String {
    format!(
        "{} mode {:o} owner {}:{} mtime {} bytes {:?} link {:?}",
        n.kind,
        n.mode,
        n.uid,
        n.gid,
        n.mtime,
        n.content.as_ref().map(Vec::len),
        n.link
    )
}

fn entries_of(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// The tree a real volume might hold, with every awkward case in it.
fn build_tree(root: &Path, outside: &Path) {
    let jovyan = (1000, 100);
    mkdir(root, 0o755, jovyan);
    mkdir(&root.join("notebooks/deep/er/still"), 0o755, jovyan);
    fs::set_permissions(root.join("notebooks"), fs::Permissions::from_mode(0o750)).unwrap();
    write(&root.join("notebooks/analysis.ipynb"), br#"{"cells": [], "nbformat": 4}"#, 0o640, jovyan);
    write(
        &root.join("notebooks/deep/er/still/run.py"),
        b"#!/usr/bin/env python3\nprint('hi')\n",
        0o755,
        jovyan,
    );
    write(&root.join("empty"), b"", 0o600, jovyan);
    write(&root.join("big.bin"), &noise(5 * 1024 * 1024, 42), 0o644, jovyan);
    write(&root.join("root-owned"), b"not jovyan's", 0o600, (0, 0));
    mkdir(&root.join("shared"), 0o2775, (1000, 1234));
    write(&root.join("shared/odd-owner.txt"), b"x", 0o664, (4242, 4343));
    symlink("notebooks/analysis.ipynb", &root.join("rel-link"), jovyan);
    symlink("/nonexistent/nowhere", &root.join("dangling"), jovyan);
    symlink(outside, &root.join("outside-link"), jovyan);
    // Paths and link targets past the 100-byte ustar fields.
    let long_dir = root.join("d".repeat(120));
    mkdir(&long_dir, 0o700, jovyan);
    write(&long_dir.join("f".repeat(150)), b"long path", 0o644, jovyan);
    let long_target = format!("./x/../y//{}/", "z".repeat(140));
    symlink(&long_target, &root.join("long-link"), jovyan);
    symlink("a/./b//c/", &root.join("unnormalised-link"), jovyan);
    // Names that are not UTF-8, or hold a backslash.
    write(&root.join(OsStr::from_bytes(b"caf\xe9.txt")), b"latin-1 name", 0o644, jovyan);
    write(&root.join("back\\slash"), b"backslash", 0o644, jovyan);

    // mtimes last: creating entries moves their parents' mtimes.
    let mut all: Vec<PathBuf> = snapshot(root).into_keys().collect();
    all.sort();
    for (i, rel) in all.iter().enumerate() {
        set_mtime(&root.join(rel), 1_500_000_000 + i as i64 * 1000);
    }
}

/// A temporary area with an empty `dest` and an `outside` that must stay untouched.
struct Scene {
    top: TempDir,
}

impl Scene {
    fn new() -> Self {
        let top = tempfile::tempdir().unwrap();
        fs::create_dir(top.path().join("dest")).unwrap();
        fs::create_dir(top.path().join("outside")).unwrap();
        Self { top }
    }
    fn dest(&self) -> PathBuf {
        self.top.path().join("dest")
    }
    fn outside(&self) -> PathBuf {
        self.top.path().join("outside")
    }
    fn assert_outside_untouched(&self, outside_files: &[&str], case: &str) {
        assert_eq!(
            entries_of(self.top.path()),
            ["dest", "outside"],
            "{case}: something was written beside dest"
        );
        assert_eq!(entries_of(&self.outside()), outside_files, "{case}: something was written outside dest");
    }
}

/// One entry of a hand-made tar, written byte for byte so that names the
/// `tar` crate would refuse to write (`..`, absolute) can be made.
enum Craft<'a> {
    File(&'a [u8], &'a [u8]),
    Dir(&'a [u8]),
    Symlink(&'a [u8], &'a [u8]),
    HardLink(&'a [u8], &'a [u8]),
    Fifo(&'a [u8]),
    CharDevice(&'a [u8]),
}

fn craft(dir: &Path, entries: &[Craft<'_>]) -> PathBuf {
    let path = dir.join("crafted.tar.gz");
    let mut builder =
        tar::Builder::new(GzEncoder::new(fs::File::create(&path).unwrap(), flate2::Compression::fast()));
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        let (name, data, link, kind): (&[u8], &[u8], &[u8], _) = match entry {
            Craft::File(n, d) => (n, d, b"", tar::EntryType::Regular),
            Craft::Dir(n) => (n, b"", b"", tar::EntryType::Directory),
            Craft::Symlink(n, t) => (n, b"", t, tar::EntryType::Symlink),
            Craft::HardLink(n, t) => (n, b"", t, tar::EntryType::Link),
            Craft::Fifo(n) => (n, b"", b"", tar::EntryType::Fifo),
            Craft::CharDevice(n) => (n, b"", b"", tar::EntryType::Char),
        };
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_600_000_000);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap();
    path
}

/// A crafted entry as (name, link target, kind): `l` symlink, `d` dir, `h` hard link, else file.
type Spec = (Vec<u8>, Option<Vec<u8>>, char);

/// A hard-link target, given the outside directory.
type TargetOf = fn(&Path) -> Vec<u8>;

fn restore(archive: &Path, dest: &Path) -> Result<RestoreStats, RestoreError> {
    backup::restore_archive(archive, dest, &mut |_| {})
}

fn small_volume(root: &Path, marker: &str) {
    fs::create_dir_all(root.join("sub")).unwrap();
    fs::write(root.join("a.txt"), format!("a of {marker}")).unwrap();
    fs::write(root.join("sub/b.txt"), format!("b of {marker}, a little longer")).unwrap();
}

fn archive_one(marker: &str, volume: &str, out: &Path) -> VolumeEntry {
    let src = tempfile::tempdir().unwrap();
    small_volume(src.path(), marker);
    backup::write_archive(src.path(), out, volume, &mut |_| {}).unwrap()
}

fn sha256_hex(path: &Path) -> String {
    hex::encode(Sha256::digest(fs::read(path).unwrap()))
}

// ---------------------------------------------------------------------------
// Round trip

#[test]
fn round_trip_keeps_bytes_owners_modes_mtimes_and_links() {
    assert!(is_root(), "these tests check owners and run as root");
    let src_top = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("not-in-the-volume"), b"must not be archived").unwrap();
    let src = src_top.path().join("_data");
    build_tree(&src, outside.path());

    let out = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    let entry = backup::write_archive(&src, out.path(), "nbgate-vol-1", &mut |n| seen.push(n)).unwrap();
    let record = &entry.record;

    assert_eq!(entries_of(out.path()), ["nbgate-vol-1.tar.gz"], "no temporary file left");
    assert_eq!(record.archive, "nbgate-vol-1.tar.gz");
    assert_eq!(record.sha256, sha256_hex(&out.path().join(&record.archive)));
    assert_eq!(record.archive_bytes, fs::metadata(out.path().join(&record.archive)).unwrap().len());
    let expected_bytes = backup::content_bytes(&src).unwrap();
    assert_eq!(record.content_bytes, expected_bytes);
    assert!(expected_bytes > 5 * 1024 * 1024);
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "progress never goes back");
    assert_eq!(seen.last(), Some(&expected_bytes), "progress ends at the total");
    assert!(seen.len() > 3, "progress is reported along the way: {seen:?}");

    // The record describes the tree, symlinks as links.
    let by_path: BTreeMap<_, _> = record.entries.iter().map(|e| (e.path.clone(), e)).collect();
    assert_eq!(by_path[Path::new(".")].kind, EntryKind::Dir);
    let link = by_path[Path::new("outside-link")];
    assert_eq!(link.kind, EntryKind::Symlink);
    assert_eq!(link.link_target.as_deref(), Some(outside.path()));
    assert!(
        !record
            .entries
            .iter()
            .any(|e| e.path.starts_with("outside-link") && e.path != Path::new("outside-link")),
        "a symlinked directory was followed"
    );
    let big = by_path[Path::new("big.bin")];
    assert_eq!((big.size, big.uid, big.gid, big.mode), (5 * 1024 * 1024, 1000, 100, 0o644));
    assert_eq!(big.sha256.as_deref(), Some(sha256_hex(&src.join("big.bin")).as_str()));
    assert_eq!(by_path[Path::new("unnormalised-link")].link_target.as_deref(), Some(Path::new("a/./b//c/")));

    // The manifest survives a save/load, non-UTF-8 names included.
    let manifest = Manifest::new(vec![entry]);
    manifest.save(out.path()).unwrap();
    assert_eq!(entries_of(out.path()), ["manifest.json", "nbgate-vol-1.tar.gz"]);
    let loaded = Manifest::load(out.path()).unwrap();
    assert_eq!(loaded, manifest);
    assert!(chrono::DateTime::parse_from_rfc3339(&loaded.created_at).is_ok(), "{}", loaded.created_at);
    assert_eq!(loaded.nbgate_version, env!("CARGO_PKG_VERSION"));

    let entry = backup::select(&loaded, "nbgate-vol-1").unwrap();
    backup::verify_archive(out.path(), entry).unwrap();

    let scene = Scene::new();
    let archive = backup::archive_path(out.path(), entry).unwrap();
    let mut restored_progress = 0;
    let stats = backup::restore_archive(&archive, &scene.dest(), &mut |n| restored_progress = n).unwrap();
    assert_eq!(stats.bytes, expected_bytes);
    assert_eq!(restored_progress, expected_bytes);
    assert_eq!(stats.skipped, 0);
    let kinds = |k| record_count(&loaded.volumes[0], k);
    assert_eq!(stats.files, kinds(EntryKind::File));
    assert_eq!(stats.symlinks, kinds(EntryKind::Symlink));
    assert_eq!(stats.dirs + 1, kinds(EntryKind::Dir), "the root is dest itself");
    assert_same_tree(&src, &scene.dest());
    scene.assert_outside_untouched(&[], "round trip");
}

fn record_count(entry: &VolumeEntry, kind: EntryKind) -> u64 {
    entry.record.entries.iter().filter(|e| e.kind == kind).count() as u64
}

#[test]
fn hard_links_are_stored_as_files_and_restored_inside() {
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("a"), b"shared bytes").unwrap();
    fs::hard_link(src.path().join("a"), src.path().join("b")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let entry = backup::write_archive(src.path(), out.path(), "v", &mut |_| {}).unwrap();
    assert_eq!(record_count(&entry, EntryKind::File), 2);
    backup::verify_archive(out.path(), &entry).unwrap();

    // A tar from another tool with a real (inside) hard link restores as one.
    let crafted = tempfile::tempdir().unwrap();
    let tar = craft(crafted.path(), &[Craft::File(b"a", b"data"), Craft::HardLink(b"b", b"a")]);
    let scene = Scene::new();
    let stats = restore(&tar, &scene.dest()).unwrap();
    assert_eq!((stats.files, stats.hard_links), (1, 1));
    let (a, b) =
        (fs::metadata(scene.dest().join("a")).unwrap(), fs::metadata(scene.dest().join("b")).unwrap());
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
}

#[test]
fn restore_makes_parents_an_archive_left_out() {
    let crafted = tempfile::tempdir().unwrap();
    let tar = craft(crafted.path(), &[Craft::File(b"./a/b/c.txt", b"deep")]);
    let scene = Scene::new();
    restore(&tar, &scene.dest()).unwrap();
    assert_eq!(fs::read(scene.dest().join("a/b/c.txt")).unwrap(), b"deep");
    scene.assert_outside_untouched(&[], "implicit parents");
}

#[test]
fn restore_refuses_a_destination_that_is_not_empty() {
    let out = tempfile::tempdir().unwrap();
    let entry = archive_one("x", "v", out.path());
    let scene = Scene::new();
    fs::write(scene.dest().join("precious"), b"keep me").unwrap();
    let err = restore(&backup::archive_path(out.path(), &entry).unwrap(), &scene.dest()).unwrap_err();
    assert!(matches!(err, RestoreError::NotEmpty(_)), "{err}");
    assert_eq!(entries_of(&scene.dest()), ["precious"]);
}

#[test]
fn backup_refuses_an_archive_directory_inside_the_volume() {
    let src = tempfile::tempdir().unwrap();
    fs::create_dir(src.path().join("backups")).unwrap();
    let err = backup::write_archive(src.path(), &src.path().join("backups"), "v", &mut |_| {}).unwrap_err();
    assert!(matches!(err, backup::BackupError::ArchiveInsideSource { .. }), "{err}");
}

// ---------------------------------------------------------------------------
// Verify

#[test]
fn verify_names_the_file_whose_content_changed() {
    let out = tempfile::tempdir().unwrap();
    let mut entry = archive_one("x", "nbgate-vol-7", out.path());
    let path = backup::archive_path(out.path(), &entry).unwrap();

    // Rebuild the archive with one byte of one file changed, and (as a careless
    // or hostile rewrite would) give the manifest the new archive checksum.
    let mut rebuilt = tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::default()));
    let mut original = tar::Archive::new(GzDecoder::new(fs::File::open(&path).unwrap()));
    for item in original.entries().unwrap() {
        let mut item = item.unwrap();
        let header = item.header().clone();
        let mut data = Vec::new();
        item.read_to_end(&mut data).unwrap();
        if item.path().unwrap() == Path::new("sub/b.txt") {
            data[3] ^= 0x01;
        }
        rebuilt.append(&header, &data[..]).unwrap();
    }
    fs::write(&path, rebuilt.into_inner().unwrap().finish().unwrap()).unwrap();
    entry.record.sha256 = sha256_hex(&path);
    entry.record.archive_bytes = fs::metadata(&path).unwrap().len();

    let err = backup::verify_archive(out.path(), &entry).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, VerifyError::Mismatch { what: "content sha256", .. }), "{text}");
    assert!(text.contains("nbgate-vol-7") && text.contains("sub/b.txt"), "{text}");
}

#[test]
fn verify_catches_a_flipped_archive_byte() {
    let out = tempfile::tempdir().unwrap();
    let entry = archive_one("x", "nbgate-vol-8", out.path());
    let path = backup::archive_path(out.path(), &entry).unwrap();
    backup::verify_archive(out.path(), &entry).unwrap();
    let mut bytes = fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    fs::write(&path, bytes).unwrap();
    let err = backup::verify_archive(out.path(), &entry).unwrap_err();
    assert!(matches!(err, VerifyError::ArchiveChecksum { .. }), "{err}");
    assert!(err.to_string().contains("nbgate-vol-8"), "{err}");
}

#[test]
fn verify_compares_every_entry_with_the_manifest() {
    let out = tempfile::tempdir().unwrap();
    let entry = archive_one("x", "vol", out.path());
    let find =
        |e: &VolumeEntry, p: &str| e.record.entries.iter().position(|r| r.path == Path::new(p)).unwrap();

    let mut mode = entry.clone();
    let i = find(&mode, "a.txt");
    mode.record.entries[i].mode ^= 0o022;
    let err = backup::verify_archive(out.path(), &mode).unwrap_err();
    assert!(
        matches!(err, VerifyError::Mismatch { what: "mode", .. }) && err.to_string().contains("a.txt"),
        "{err}"
    );

    let mut owner = entry.clone();
    let i = find(&owner, "sub/b.txt");
    owner.record.entries[i].uid += 1;
    let err = backup::verify_archive(out.path(), &owner).unwrap_err();
    assert!(
        matches!(err, VerifyError::Mismatch { what: "owner", .. }) && err.to_string().contains("sub/b.txt"),
        "{err}"
    );

    let mut fewer = entry.clone();
    let i = find(&fewer, "a.txt");
    fewer.record.entries.remove(i);
    let err = backup::verify_archive(out.path(), &fewer).unwrap_err();
    assert!(matches!(err, VerifyError::Unexpected { .. }) && err.to_string().contains("a.txt"), "{err}");

    let mut more = entry.clone();
    let mut ghost = more.record.entries[find(&more, "a.txt")].clone();
    ghost.path = PathBuf::from("ghost.txt");
    more.record.entries.push(ghost);
    let err = backup::verify_archive(out.path(), &more).unwrap_err();
    assert!(matches!(err, VerifyError::Missing { .. }) && err.to_string().contains("ghost.txt"), "{err}");
}

// ---------------------------------------------------------------------------
// SECURITY.md 12: exact ids

#[test]
fn attack_12_exact_ids() {
    for ok in ["v", "v2", "w", "nbgate-0123abcd-JDJiJDEy_x", "a.b_c-d"] {
        backup::validate_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in ["v/../w", "", ".", "..", ".v", "-v", "v/", "/v", "v w", "v\0", "ｖ", "v\n", "v\\w"] {
        assert!(backup::validate_name(bad).is_err(), "{bad:?} accepted");
    }
    assert!(backup::validate_name(&"v".repeat(255)).is_ok());
    assert!(backup::validate_name(&"v".repeat(256)).is_err());
    assert_eq!(backup::archive_file_name("v2").unwrap(), "v2.tar.gz");
    assert!(backup::archive_file_name(&"v".repeat(249)).is_err(), "the archive name must fit too");

    let out = tempfile::tempdir().unwrap();
    let err = backup::write_archive(out.path(), out.path(), "v/../w", &mut |_| {}).unwrap_err();
    assert!(matches!(err, backup::BackupError::Name(_)), "{err}");
    assert!(entries_of(out.path()).is_empty());

    let manifest =
        Manifest::new(vec![archive_one("of v", "v", out.path()), archive_one("of v2", "v2", out.path())]);
    manifest.save(out.path()).unwrap();
    let manifest = Manifest::load(out.path()).unwrap();
    assert_eq!(backup::select(&manifest, "v").unwrap().volume, "v");
    assert_eq!(backup::select(&manifest, "v2").unwrap().volume, "v2");
    for miss in ["v/../w", "v/../v2", "v2/..", "V", "v ", " v", "v/", "", "w", "v2.tar.gz", "v.tar.gz"] {
        assert!(backup::select(&manifest, miss).is_none(), "{miss:?} selected something");
    }

    // v restores v's files, never v2's.
    let scene = Scene::new();
    let v = backup::select(&manifest, "v").unwrap();
    backup::verify_archive(out.path(), v).unwrap();
    restore(&backup::archive_path(out.path(), v).unwrap(), &scene.dest()).unwrap();
    assert_eq!(fs::read_to_string(scene.dest().join("a.txt")).unwrap(), "a of of v");

    // A manifest that names a bad volume, a duplicate, or another volume's
    // archive is refused whole.
    let mut bad_name = manifest.clone();
    bad_name.volumes[1].volume = "v/../w".into();
    assert!(matches!(bad_name.save(out.path()), Err(ManifestError::Name(_))));
    let json = serde_json::to_string(&bad_name).unwrap();
    fs::write(out.path().join("manifest.json"), json).unwrap();
    assert!(matches!(Manifest::load(out.path()), Err(ManifestError::Name(_))));

    let mut swapped = manifest.clone();
    swapped.volumes[0].record.archive = "v2.tar.gz".into();
    fs::write(out.path().join("manifest.json"), serde_json::to_string(&swapped).unwrap()).unwrap();
    assert!(matches!(Manifest::load(out.path()), Err(ManifestError::ArchiveName { .. })));
    let err = backup::verify_archive(out.path(), &swapped.volumes[0]).unwrap_err();
    assert!(matches!(err, VerifyError::Manifest { .. }), "{err}");
    assert!(backup::archive_path(out.path(), &swapped.volumes[0]).is_err());

    let mut twice = manifest.clone();
    twice.volumes.push(twice.volumes[0].clone());
    fs::write(out.path().join("manifest.json"), serde_json::to_string(&twice).unwrap()).unwrap();
    assert!(matches!(Manifest::load(out.path()), Err(ManifestError::Duplicate(_))));
}

// ---------------------------------------------------------------------------
// SECURITY.md 15: hostile archives write nothing outside the volume

#[test]
fn attack_15_archives_parent_dir_paths() {
    for name in [&b"../evil"[..], b"./../evil", b"a/../../evil", b"a/b/../../../evil", b"a/.."] {
        let scene = Scene::new();
        let crafted = tempfile::tempdir().unwrap();
        let tar = craft(crafted.path(), &[Craft::Dir(b"a"), Craft::File(name, b"pwned")]);
        let case = String::from_utf8_lossy(name).into_owned();
        let err = restore(&tar, &scene.dest()).expect_err(&case);
        assert!(
            matches!(
                err,
                RestoreError::BadEntry {
                    source: backup::ItemError::Path(backup::PathProblem::ParentDir),
                    ..
                }
            ),
            "{case}: {err}"
        );
        scene.assert_outside_untouched(&[], &case);
    }
}

#[test]
fn attack_15_archives_absolute_paths() {
    let scene = Scene::new();
    let crafted = tempfile::tempdir().unwrap();
    let target = scene.outside().join("evil");
    let tar = craft(crafted.path(), &[Craft::File(target.as_os_str().as_bytes(), b"pwned")]);
    let err = restore(&tar, &scene.dest()).unwrap_err();
    assert!(
        matches!(
            err,
            RestoreError::BadEntry { source: backup::ItemError::Path(backup::PathProblem::Absolute), .. }
        ),
        "{err}"
    );
    scene.assert_outside_untouched(&[], "absolute");
}

#[test]
fn attack_15_archives_symlink_then_file() {
    let scene_for = |build: &dyn Fn(&Scene) -> Vec<Spec>, case: &str| {
        let scene = Scene::new();
        let crafted = tempfile::tempdir().unwrap();
        let spec = build(&scene);
        let entries: Vec<Craft<'_>> = spec
            .iter()
            .map(|(name, extra, kind)| match kind {
                'l' => Craft::Symlink(name, extra.as_deref().unwrap()),
                'd' => Craft::Dir(name),
                'h' => Craft::HardLink(name, extra.as_deref().unwrap()),
                _ => Craft::File(name, b"pwned"),
            })
            .collect();
        let tar = craft(crafted.path(), &entries);
        let err = restore(&tar, &scene.dest()).expect_err(case);
        (scene, err)
    };
    let outside_abs = |s: &Scene| s.outside().as_os_str().as_bytes().to_vec();

    // l -> /abs/outside, then l/pwned
    let (scene, err) = scene_for(
        &|s| vec![(b"l".to_vec(), Some(outside_abs(s)), 'l'), (b"l/pwned".to_vec(), None, 'f')],
        "abs",
    );
    assert!(matches!(err, RestoreError::ThroughSymlink { .. }), "{err}");
    scene.assert_outside_untouched(&[], "absolute symlink then file");
    assert!(
        fs::symlink_metadata(scene.dest().join("l")).unwrap().is_symlink(),
        "the link itself is kept as a link"
    );

    // l -> ../outside (relative, leaves dest), then l/pwned
    let (scene, err) = scene_for(
        &|_| vec![(b"l".to_vec(), Some(b"../outside".to_vec()), 'l'), (b"l/pwned".to_vec(), None, 'f')],
        "rel",
    );
    assert!(matches!(err, RestoreError::ThroughSymlink { .. }), "{err}");
    scene.assert_outside_untouched(&[], "relative symlink then file");

    // d/l -> ../.. , then a directory and a file beneath it
    let (scene, err) = scene_for(
        &|_| {
            vec![
                (b"d".to_vec(), None, 'd'),
                (b"d/l".to_vec(), Some(b"../..".to_vec()), 'l'),
                (b"d/l/outside/sub".to_vec(), None, 'd'),
                (b"d/l/outside/sub/pwned".to_vec(), None, 'f'),
            ]
        },
        "nested",
    );
    assert!(matches!(err, RestoreError::ThroughSymlink { .. }), "{err}");
    scene.assert_outside_untouched(&[], "nested dotdot symlink");

    // l -> /abs/outside, then a directory entry `l` (mkdir onto the link)
    let (scene, err) = scene_for(
        &|s| {
            vec![
                (b"l".to_vec(), Some(outside_abs(s)), 'l'),
                (b"l/".to_vec(), None, 'd'),
                (b"l/x".to_vec(), None, 'f'),
            ]
        },
        "dir",
    );
    assert!(matches!(err, RestoreError::ThroughSymlink { .. }), "{err}");
    scene.assert_outside_untouched(&[], "symlink then directory");

    // l -> /abs/outside/target, then a file `l`: writing it would follow the link.
    let (scene, err) = scene_for(
        &|s| {
            let mut target = outside_abs(s);
            target.extend_from_slice(b"/target");
            vec![(b"l".to_vec(), Some(target), 'l'), (b"l".to_vec(), None, 'f')]
        },
        "overwrite",
    );
    assert!(matches!(err, RestoreError::Duplicate { .. }), "{err}");
    scene.assert_outside_untouched(&[], "symlink then same-name file");
}

#[test]
fn attack_15_archives_hard_link_outside() {
    let cases: [(&str, TargetOf); 3] = [
        ("absolute", |outside| outside.join("secret").as_os_str().as_bytes().to_vec()),
        ("dotdot", |_| b"../outside/secret".to_vec()),
        ("through symlink", |_| b"l/secret".to_vec()),
    ];
    for (case, target_of) in cases {
        let scene = Scene::new();
        fs::write(scene.outside().join("secret"), b"host secret").unwrap();
        let crafted = tempfile::tempdir().unwrap();
        let target = target_of(&scene.outside());
        let outside = scene.outside();
        let tar = craft(
            crafted.path(),
            &[Craft::Symlink(b"l", outside.as_os_str().as_bytes()), Craft::HardLink(b"h", &target)],
        );
        let err = restore(&tar, &scene.dest()).expect_err(case);
        assert!(
            matches!(err, RestoreError::UnsafeHardLink { .. } | RestoreError::ThroughSymlink { .. }),
            "{case}: {err}"
        );
        assert!(!scene.dest().join("h").exists(), "{case}: link made");
        assert_eq!(fs::metadata(scene.outside().join("secret")).unwrap().nlink(), 1, "{case}: secret linked");
        assert_eq!(fs::read(scene.outside().join("secret")).unwrap(), b"host secret");
        scene.assert_outside_untouched(&["secret"], case);
    }
}

#[test]
fn attack_15_archives_devices_and_fifos_are_skipped() {
    let scene = Scene::new();
    let crafted = tempfile::tempdir().unwrap();
    let tar = craft(
        crafted.path(),
        &[Craft::Fifo(b"fifo"), Craft::CharDevice(b"mem"), Craft::File(b"ok", b"fine")],
    );
    let stats = restore(&tar, &scene.dest()).unwrap();
    assert_eq!((stats.skipped, stats.files), (2, 1));
    assert_eq!(entries_of(&scene.dest()), ["ok"]);
    scene.assert_outside_untouched(&[], "devices");
}

#[test]
fn backup_while_writing_still_verifies_and_restores() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let src = tempfile::tempdir().unwrap();
    for i in 0..8 {
        fs::write(src.path().join(format!("steady-{i}.bin")), noise(512 * 1024, i)).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (root, stop) = (src.path().to_path_buf(), stop.clone());
        std::thread::spawn(move || {
            // Grow, shrink, create and delete while the archive is written.
            for round in 0..100_000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let len = (round * 7919 % 300_000) as usize;
                fs::write(root.join("hot.txt"), noise(len, round)).unwrap();
                let churn = root.join(format!("churn-{}", round % 5));
                if round % 2 == 0 {
                    let _ = fs::write(&churn, b"here for a moment");
                } else {
                    let _ = fs::remove_file(&churn);
                }
            }
        })
    };
    let out = tempfile::tempdir().unwrap();
    let entry = backup::write_archive(src.path(), out.path(), "busy", &mut |_| {});
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let entry = entry.unwrap();

    backup::verify_archive(out.path(), &entry).unwrap();
    let scene = Scene::new();
    restore(&backup::archive_path(out.path(), &entry).unwrap(), &scene.dest()).unwrap();
    for i in 0..8 {
        let name = format!("steady-{i}.bin");
        assert_eq!(fs::read(scene.dest().join(&name)).unwrap(), noise(512 * 1024, i), "{name}");
    }
    // Every restored file is what the manifest says was stored.
    for record in entry.record.entries.iter().filter(|e| e.kind == EntryKind::File) {
        assert_eq!(
            Some(sha256_hex(&scene.dest().join(&record.path))),
            record.sha256,
            "{}",
            record.path.display()
        );
    }
}
