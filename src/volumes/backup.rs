//! Per-user volume backups at the filesystem level: one gzip-compressed tar per
//! volume plus a `manifest.json` of checksums, and a restore that treats every
//! archive as hostile (SECURITY.md 12 and 15).
//!
//! Blocking and Docker-free: callers run it in `spawn_blocking` and resolve a
//! volume to its `_data` directory themselves.
//!
//! - [`write_archive`] stores a tree as it is: symlinks as links (never
//!   followed), numeric owners, modes, whole-second mtimes; hard links become
//!   separate files; sockets, fifos and devices are skipped.
//! - [`verify_archive`] recomputes the archive's sha256, then reads every entry
//!   back and compares it with the manifest.
//! - [`restore_archive`] extracts into an empty directory through directory file
//!   descriptors opened with `O_NOFOLLOW` one component at a time, so no entry
//!   can reach outside the destination, whatever links the archive plants.
//! - Archive file names are derived from validated volume names, never read
//!   from input, and [`select`] matches volume names exactly.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File, FileTimes, OpenOptions, Permissions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest's file name inside a backup directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// What [`archive_file_name`] appends to a volume name.
pub const ARCHIVE_SUFFIX: &str = ".tar.gz";

/// Longest volume or archive file name: a file name must fit in NAME_MAX.
pub const MAX_NAME_BYTES: usize = 255;

/// Progress is reported at most once per this many bytes (and at each file's
/// end), so a caller's progress bar costs nothing measurable.
const PROGRESS_STEP: u64 = 1 << 20;

// ---------------------------------------------------------------------------
// Names

/// Why a volume or archive file name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("empty name")]
    Empty,
    #[error("name {name:?} is {len} bytes; at most {MAX_NAME_BYTES} are allowed")]
    TooLong { name: String, len: usize },
    #[error("name {name:?} contains {found:?}; only A-Z a-z 0-9 _ . - are allowed")]
    BadChar { name: String, found: char },
    #[error("name {name:?} starts with {found:?}")]
    BadStart { name: String, found: char },
}

/// Check a Docker volume name or an archive file name: `[A-Za-z0-9_.-]`, no
/// leading `.` or `-` (so never `.`, `..`, a hidden file or an option), at most
/// 255 bytes. No `/` can pass, so a name is always one path component.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    let first = name.chars().next().ok_or(NameError::Empty)?;
    if name.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong { name: name.chars().take(64).collect(), len: name.len() });
    }
    if let Some(found) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return Err(NameError::BadChar { name: name.to_string(), found });
    }
    if first == '.' || first == '-' {
        return Err(NameError::BadStart { name: name.to_string(), found: first });
    }
    Ok(())
}

/// The archive file name for a volume: `<volume>.tar.gz`. The only way an
/// archive name comes to be, so a manifest cannot point restore at another file.
pub fn archive_file_name(volume: &str) -> Result<String, NameError> {
    validate_name(volume)?;
    let name = format!("{volume}{ARCHIVE_SUFFIX}");
    validate_name(&name)?;
    Ok(name)
}

/// Where `entry`'s archive is in the backup directory `dir`, after checking that
/// the manifest's archive name is the one derived from the volume name.
pub fn archive_path(dir: &Path, entry: &VolumeEntry) -> Result<PathBuf, ManifestError> {
    let expected = archive_file_name(&entry.volume)?;
    if entry.record.archive != expected {
        return Err(ManifestError::ArchiveName {
            volume: entry.volume.clone(),
            found: entry.record.archive.clone(),
            expected,
        });
    }
    Ok(dir.join(expected))
}

/// The entry for exactly `volume`. No prefix, case or path matching: `v` never
/// selects `v2`, and `v/../w` selects nothing (SECURITY.md 12).
pub fn select<'a>(manifest: &'a Manifest, volume: &str) -> Option<&'a VolumeEntry> {
    manifest.volumes.iter().find(|e| e.volume == volume)
}

// ---------------------------------------------------------------------------
// Records and the manifest

/// What an archive entry is. Hard links are stored as separate files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

/// One entry of a volume archive as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRecord {
    /// Relative to the volume root; `.` is the root itself. Serialized as a
    /// string, or as `{"hex": …}` for a name that is not UTF-8.
    #[serde(with = "raw_path")]
    pub path: PathBuf,
    pub kind: EntryKind,
    /// Content bytes (0 for directories and symlinks).
    pub size: u64,
    /// Permission bits including setuid/setgid/sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch (tar keeps whole seconds; earlier than 1970 is stored as 0).
    pub mtime: i64,
    /// Hex sha256 of the content, for files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The link's target exactly as stored, for symlinks.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "raw_path_opt")]
    pub link_target: Option<PathBuf>,
}

/// One volume's archive: what [`write_archive`] made and [`verify_archive`] checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// File name inside the backup directory; always [`archive_file_name`] of the volume.
    pub archive: String,
    /// Hex sha256 of the archive file.
    pub sha256: String,
    /// Size of the archive file.
    pub archive_bytes: u64,
    /// Sum of the stored files' sizes.
    pub content_bytes: u64,
    /// In archive order: every directory before what it holds.
    pub entries: Vec<EntryRecord>,
}

/// A volume in a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeEntry {
    /// The Docker volume name.
    pub volume: String,
    pub record: VolumeRecord,
}

/// `manifest.json`: what a backup directory holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// RFC 3339, UTC.
    pub created_at: String,
    pub nbgate_version: String,
    pub volumes: Vec<VolumeEntry>,
}

/// Reading, checking or writing `manifest.json` failed.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a valid manifest: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("invalid volume name: {0}")]
    Name(#[from] NameError),
    #[error("volume {0:?} appears twice in the manifest")]
    Duplicate(String),
    #[error("volume {volume}: the manifest names archive {found:?}, but its archive is {expected:?}")]
    ArchiveName { volume: String, found: String, expected: String },
}

impl Manifest {
    /// A manifest stamped now with this build's version.
    pub fn new(volumes: Vec<VolumeEntry>) -> Self {
        Self {
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            nbgate_version: env!("CARGO_PKG_VERSION").to_string(),
            volumes,
        }
    }

    /// Read `dir/manifest.json` and refuse it unless every volume name is valid,
    /// unique and names its own archive: everything later trusts those three.
    #[tracing::instrument(fields(dir = %dir.display()))]
    pub fn load(dir: &Path) -> Result<Self, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let text = fs::read(&path).map_err(|source| ManifestError::Io { path: path.clone(), source })?;
        let manifest: Self =
            serde_json::from_slice(&text).map_err(|source| ManifestError::Json { path, source })?;
        manifest.check()?;
        Ok(manifest)
    }

    /// Write `dir/manifest.json` durably: a temporary file, fsync, rename, fsync
    /// of the directory. A crash leaves the old manifest or the new one.
    #[tracing::instrument(skip(self), fields(dir = %dir.display()))]
    pub fn save(&self, dir: &Path) -> Result<(), ManifestError> {
        self.check()?;
        let path = dir.join(MANIFEST_FILE);
        let io_err = |source| ManifestError::Io { path: path.clone(), source };
        let mut text = serde_json::to_vec_pretty(self)
            .map_err(|source| ManifestError::Json { path: path.clone(), source })?;
        text.push(b'\n');
        let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
        let written = (|| {
            let mut file = create_truncate(&tmp)?;
            file.write_all(&text)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            sync_dir(dir)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written.map_err(io_err)
    }

    fn check(&self) -> Result<(), ManifestError> {
        let mut seen = HashSet::new();
        for entry in &self.volumes {
            archive_path(Path::new(""), entry)?;
            if !seen.insert(entry.volume.as_str()) {
                return Err(ManifestError::Duplicate(entry.volume.clone()));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Writing

/// Making an archive failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("invalid volume name: {0}")]
    Name(#[from] NameError),
    #[error("{0}: not a directory")]
    NotADirectory(PathBuf),
    #[error("the archive directory {dir} is inside the tree being backed up ({src})")]
    ArchiveInsideSource { dir: PathBuf, src: PathBuf },
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Sum of the sizes of the regular files under `src` (symlinks not followed):
/// the total for a progress bar over [`write_archive`].
pub fn content_bytes(src: &Path) -> Result<u64, BackupError> {
    let mut total = 0;
    walk(src, &mut |_, meta| {
        if meta.is_file() {
            total += meta.len();
        }
        Ok(())
    })?;
    Ok(total)
}

/// Archive the tree under `src` as `dir/<volume>.tar.gz` and describe it.
///
/// Written to `<archive>.tmp`, fsynced and renamed, so a crash never leaves a
/// half archive under the real name. A file that changes while it is read is
/// stored as read (cut or zero-padded to its size when opened); the record's
/// checksums are of the stored bytes, so verify still holds. `progress` gets
/// the content bytes done so far.
#[tracing::instrument(skip(progress), fields(src = %src.display(), dir = %dir.display()))]
pub fn write_archive(
    src: &Path,
    dir: &Path,
    volume: &str,
    progress: &mut dyn FnMut(u64),
) -> Result<VolumeEntry, BackupError> {
    let name = archive_file_name(volume)?;
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BackupError::Read { path, source }
    };
    if !fs::symlink_metadata(src).map_err(read_err(src))?.is_dir() {
        return Err(BackupError::NotADirectory(src.to_path_buf()));
    }
    let (real_src, real_dir) =
        (src.canonicalize().map_err(read_err(src))?, dir.canonicalize().map_err(read_err(dir))?);
    if real_dir.starts_with(&real_src) {
        return Err(BackupError::ArchiveInsideSource { dir: dir.to_path_buf(), src: src.to_path_buf() });
    }

    let path = dir.join(&name);
    let tmp = dir.join(format!("{name}.tmp"));
    let write_err = |source| BackupError::Write { path: tmp.clone(), source };
    let file = create_truncate(&tmp).map_err(write_err)?;
    let result = (|| {
        let hashed =
            HashingWriter { inner: BufWriter::with_capacity(1 << 20, file), hasher: Sha256::new(), bytes: 0 };
        let mut builder = tar::Builder::new(GzEncoder::new(hashed, Compression::fast()));
        let mut entries = Vec::new();
        let mut done = 0u64;
        let mut reported = 0u64;
        walk(src, &mut |rel, meta| {
            let full = src.join(rel);
            let record = append_entry(&mut builder, &full, rel, meta, &mut |n| {
                done += n;
                if done - reported >= PROGRESS_STEP || n == 0 {
                    reported = done;
                    progress(done);
                }
            });
            match record {
                Ok(Some(record)) => entries.push(record),
                Ok(None) => {}
                Err(Failure::Read(source)) => return Err(BackupError::Read { path: full, source }),
                Err(Failure::Write(source)) => return Err(write_err(source)),
            }
            Ok(())
        })?;
        let hashed = builder.into_inner().and_then(GzEncoder::finish).map_err(write_err)?;
        let HashingWriter { inner, hasher, bytes } = hashed;
        let file = inner.into_inner().map_err(|e| write_err(e.into_error()))?;
        file.sync_all().map_err(write_err)?;
        fs::rename(&tmp, &path).map_err(write_err)?;
        sync_dir(dir).map_err(|source| BackupError::Write { path: path.clone(), source })?;
        progress(done);
        let content_bytes = entries.iter().map(|e: &EntryRecord| e.size).sum();
        Ok(VolumeRecord {
            archive: name.clone(),
            sha256: hex::encode(hasher.finalize()),
            archive_bytes: bytes,
            content_bytes,
            entries,
        })
    })();
    match result {
        Ok(record) => {
            tracing::info!(volume, archive = %path.display(), bytes = record.archive_bytes, entries = record.entries.len(), "volume archived");
            Ok(VolumeEntry { volume: volume.to_string(), record })
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// A pre-order walk (each directory before its contents, names sorted, so the
/// same tree gives the same archive) that never follows a symlink. Entries that
/// vanish mid-walk are skipped: backups run while users write.
fn walk(
    src: &Path,
    visit: &mut dyn FnMut(&Path, &fs::Metadata) -> Result<(), BackupError>,
) -> Result<(), BackupError> {
    let mut stack = vec![PathBuf::from(".")];
    while let Some(rel) = stack.pop() {
        let full = src.join(&rel);
        let meta = match fs::symlink_metadata(&full) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound && rel != Path::new(".") => continue,
            Err(source) => return Err(BackupError::Read { path: full, source }),
        };
        visit(&rel, &meta)?;
        if meta.is_dir() {
            let mut names = Vec::new();
            match fs::read_dir(&full) {
                Ok(dir) => {
                    for entry in dir {
                        names.push(
                            entry
                                .map_err(|source| BackupError::Read { path: full.clone(), source })?
                                .file_name(),
                        );
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(BackupError::Read { path: full, source }),
            }
            names.sort();
            let base = if rel == Path::new(".") { PathBuf::new() } else { rel };
            stack.extend(names.into_iter().rev().map(|n| base.join(n)));
        }
    }
    Ok(())
}

/// Which side of the pipe an I/O error came from.
enum Failure {
    Read(io::Error),
    Write(io::Error),
}

type ArchiveWriter = tar::Builder<GzEncoder<HashingWriter<BufWriter<File>>>>;

/// Append one entry; `None` for what is skipped (sockets, fifos, devices, files
/// that vanished). `progress` gets byte increments, then 0 at a file's end.
fn append_entry(
    builder: &mut ArchiveWriter,
    full: &Path,
    rel: &Path,
    meta: &fs::Metadata,
    progress: &mut dyn FnMut(u64),
) -> Result<Option<EntryRecord>, Failure> {
    let kind = meta.file_type();
    let mut header = tar::Header::new_gnu();
    let mut record = EntryRecord {
        path: rel.to_path_buf(),
        kind: EntryKind::Dir,
        size: 0,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime: meta.mtime().max(0),
        sha256: None,
        link_target: None,
    };
    if kind.is_symlink() {
        let target = match fs::read_link(full) {
            Ok(target) => target,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Failure::Read(e)),
        };
        record.kind = EntryKind::Symlink;
        set_header(&mut header, tar::EntryType::Symlink, &record);
        append_symlink(builder, &mut header, rel, target.as_os_str().as_bytes()).map_err(Failure::Write)?;
        record.link_target = Some(target);
    } else if kind.is_dir() {
        set_header(&mut header, tar::EntryType::Directory, &record);
        builder.append_data(&mut header, rel, io::empty()).map_err(Failure::Write)?;
    } else if kind.is_file() {
        // O_NOFOLLOW: if the file was swapped for a symlink since the walk saw
        // it, skip it rather than archive whatever the link points at.
        let file = match OpenOptions::new().read(true).custom_flags(OFlag::O_NOFOLLOW.bits()).open(full) {
            Ok(file) => file,
            Err(e)
                if e.raw_os_error() == Some(Errno::ELOOP as i32) || e.kind() == io::ErrorKind::NotFound =>
            {
                tracing::warn!(path = %full.display(), "changed while being backed up; skipped");
                return Ok(None);
            }
            Err(e) => return Err(Failure::Read(e)),
        };
        let meta = file.metadata().map_err(Failure::Read)?;
        record.kind = EntryKind::File;
        record.size = meta.len();
        record.mode = meta.mode() & 0o7777;
        (record.uid, record.gid, record.mtime) = (meta.uid(), meta.gid(), meta.mtime().max(0));
        set_header(&mut header, tar::EntryType::Regular, &record);
        let mut reader = SnapshotReader {
            inner: BufReader::with_capacity(256 * 1024, file),
            remaining: meta.len(),
            hasher: Sha256::new(),
            ended_early: false,
            error: None,
            progress,
        };
        let written = builder.append_data(&mut header, rel, &mut reader);
        // A read error surfaces through tar as a write error; report it as what it was.
        if let Some(e) = reader.error.take() {
            return Err(Failure::Read(e));
        }
        written.map_err(Failure::Write)?;
        if reader.ended_early {
            tracing::warn!(path = %full.display(), "shrank while being backed up; stored zero-padded");
        }
        (reader.progress)(0);
        record.sha256 = Some(hex::encode(reader.hasher.finalize()));
    } else {
        tracing::warn!(path = %full.display(), "not a file, directory or symlink; skipped");
        return Ok(None);
    }
    Ok(Some(record))
}

fn set_header(header: &mut tar::Header, kind: tar::EntryType, record: &EntryRecord) {
    header.set_entry_type(kind);
    header.set_size(record.size);
    header.set_mode(record.mode);
    header.set_uid(u64::from(record.uid));
    header.set_gid(u64::from(record.gid));
    header.set_mtime(record.mtime as u64);
}

/// Store a symlink's target byte for byte. `Builder::append_link` goes through
/// `Path::components`, which would turn `a/./b/` into `a/b`: a different link,
/// and a manifest that no longer matches its archive.
fn append_symlink(
    builder: &mut ArchiveWriter,
    header: &mut tar::Header,
    rel: &Path,
    target: &[u8],
) -> io::Result<()> {
    let slot = &mut header.as_old_mut().linkname;
    if target.len() <= slot.len() {
        slot[..target.len()].copy_from_slice(target);
    } else {
        // The GNU long-link record: a `K` entry whose data is the target and a NUL.
        let mut long = tar::Header::new_gnu();
        long.set_entry_type(tar::EntryType::GNULongLink);
        long.set_size(target.len() as u64 + 1);
        let name = b"././@LongLink";
        long.as_old_mut().name[..name.len()].copy_from_slice(name);
        long.set_mode(0o644);
        long.set_cksum();
        builder.append(&long, target.chain(&[0u8][..]))?;
        let len = slot.len();
        slot.copy_from_slice(&target[..len]);
    }
    builder.append_data(header, rel, io::empty())
}

/// Reads exactly `remaining` bytes of a file that may be changing: stops at the
/// size seen when it was opened, pads with zeros if it shrank, and hashes what
/// it hands to the archive.
struct SnapshotReader<'a, R> {
    inner: R,
    remaining: u64,
    hasher: Sha256,
    ended_early: bool,
    error: Option<io::Error>,
    progress: &'a mut dyn FnMut(u64),
}

impl<R: Read> Read for SnapshotReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let mut n = 0;
        if !self.ended_early {
            n = match self.inner.read(&mut buf[..want]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
                Err(e) => {
                    let shown = io::Error::new(e.kind(), e.to_string());
                    self.error = Some(e);
                    return Err(shown);
                }
            };
        }
        if n == 0 {
            self.ended_early = true;
            buf[..want].fill(0);
            n = want;
        }
        self.hasher.update(&buf[..n]);
        self.remaining -= n as u64;
        (self.progress)(n as u64);
        Ok(n)
    }
}

/// Hashes and counts what goes to the archive file, so its checksum costs no
/// second read.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

// ---------------------------------------------------------------------------
// Reading entries (shared by verify and restore)

/// An archive entry, its path checked and split into components.
struct Item {
    /// Normal components only: no `..`, no `.`, no empty ones. Empty for the root.
    parts: Vec<Vec<u8>>,
    kind: ItemKind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    size: u64,
    link: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ItemKind {
    File,
    Dir,
    Symlink,
    HardLink,
    /// Fifos and devices: never user files, never restored.
    Special,
    /// A pax global header: metadata for the whole archive, not a file.
    GlobalMeta,
    Unsupported(u8),
}

/// Why an entry's path cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathProblem {
    Absolute,
    ParentDir,
}

impl std::fmt::Display for PathProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Absolute => "is absolute",
            Self::ParentDir => "contains `..`",
        })
    }
}

/// Split an archive path into normal components, refusing absolute paths and
/// `..` anywhere (even `a/../b`, which would stay inside: no archive of ours
/// has one, so any is a sign of tampering).
fn split_path(bytes: &[u8]) -> Result<Vec<Vec<u8>>, PathProblem> {
    if bytes.first() == Some(&b'/') {
        return Err(PathProblem::Absolute);
    }
    let mut parts = Vec::new();
    for part in bytes.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(PathProblem::ParentDir),
            _ => parts.push(part.to_vec()),
        }
    }
    Ok(parts)
}

fn join_parts(parts: &[Vec<u8>]) -> PathBuf {
    if parts.is_empty() {
        return PathBuf::from(".");
    }
    PathBuf::from(OsStr::from_bytes(&parts.join(&b'/')))
}

fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).escape_debug().to_string()
}

/// Read an entry's header. Err carries the path as shown in messages.
fn read_item<R: Read>(entry: &tar::Entry<'_, R>) -> Result<Item, (String, ItemError)> {
    let raw_path = entry.path_bytes();
    let name = shown(&raw_path);
    let parts = split_path(&raw_path).map_err(|p| (name.clone(), ItemError::Path(p)))?;
    let header = entry.header();
    let kind = match header.entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous => ItemKind::File,
        tar::EntryType::Directory => ItemKind::Dir,
        tar::EntryType::Symlink => ItemKind::Symlink,
        tar::EntryType::Link => ItemKind::HardLink,
        tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => ItemKind::Special,
        tar::EntryType::XGlobalHeader => ItemKind::GlobalMeta,
        other => ItemKind::Unsupported(other.as_byte()),
    };
    let bad = |e: io::Error| (name.clone(), ItemError::Header(e));
    let uid = u32::try_from(header.uid().map_err(bad)?).map_err(|_| (name.clone(), ItemError::Id))?;
    let gid = u32::try_from(header.gid().map_err(bad)?).map_err(|_| (name.clone(), ItemError::Id))?;
    Ok(Item {
        parts,
        kind,
        mode: header.mode().map_err(bad)? & 0o7777,
        uid,
        gid,
        mtime: i64::try_from(header.mtime().map_err(bad)?).unwrap_or(i64::MAX),
        size: entry.size(),
        link: entry.link_name_bytes().map(|l| l.into_owned()),
    })
}

/// A header that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ItemError {
    #[error("path {0}")]
    Path(PathProblem),
    #[error("bad header: {0}")]
    Header(io::Error),
    #[error("owner id out of range")]
    Id,
}

// ---------------------------------------------------------------------------
// Verifying

/// An archive does not match its manifest entry. Every variant names the volume.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("volume {volume}: {source}")]
    Manifest { volume: String, source: ManifestError },
    #[error("volume {volume}: reading {path}: {source}")]
    Io { volume: String, path: PathBuf, source: io::Error },
    #[error("volume {volume}: archive {path} has sha256 {actual}, the manifest says {expected}")]
    ArchiveChecksum { volume: String, path: PathBuf, expected: String, actual: String },
    #[error("volume {volume}: archive {path} is {actual} bytes, the manifest says {expected}")]
    ArchiveSize { volume: String, path: PathBuf, expected: u64, actual: u64 },
    #[error("volume {volume}: {file}: {source}")]
    BadEntry { volume: String, file: String, source: ItemError },
    #[error("volume {volume}: {file}: {what} is {actual} in the archive, {expected} in the manifest")]
    Mismatch { volume: String, file: String, what: &'static str, expected: String, actual: String },
    #[error("volume {volume}: {file}: in the archive but not in the manifest")]
    Unexpected { volume: String, file: String },
    #[error("volume {volume}: {file}: in the manifest but not in the archive")]
    Missing { volume: String, file: String },
    #[error("volume {volume}: {file}: appears twice in the archive")]
    Duplicate { volume: String, file: String },
}

/// Check `entry`'s archive in the backup directory `dir`: its sha256 and size,
/// then every entry's kind, size, mode, owner, mtime, link target and content
/// checksum against the manifest, and nothing more or less.
#[tracing::instrument(skip(entry), fields(dir = %dir.display(), volume = %entry.volume))]
pub fn verify_archive(dir: &Path, entry: &VolumeEntry) -> Result<(), VerifyError> {
    let volume = entry.volume.clone();
    let path = archive_path(dir, entry)
        .map_err(|source| VerifyError::Manifest { volume: volume.clone(), source })?;
    let io_err = |source| VerifyError::Io { volume: volume.clone(), path: path.clone(), source };

    let (sha, bytes) = sha256_file(&path).map_err(io_err)?;
    if sha != entry.record.sha256 {
        return Err(VerifyError::ArchiveChecksum {
            volume,
            path,
            expected: entry.record.sha256.clone(),
            actual: sha,
        });
    }
    if bytes != entry.record.archive_bytes {
        return Err(VerifyError::ArchiveSize {
            volume,
            path,
            expected: entry.record.archive_bytes,
            actual: bytes,
        });
    }

    let mut expected: BTreeMap<&[u8], &EntryRecord> =
        entry.record.entries.iter().map(|e| (e.path.as_os_str().as_bytes(), e)).collect();
    let mut archive = tar::Archive::new(GzDecoder::new(BufReader::new(File::open(&path).map_err(io_err)?)));
    for tar_entry in archive.entries().map_err(io_err)? {
        let mut tar_entry = tar_entry.map_err(io_err)?;
        let item = read_item(&tar_entry).map_err(|(file, source)| VerifyError::BadEntry {
            volume: volume.clone(),
            file,
            source,
        })?;
        let key = join_parts(&item.parts);
        let file = shown(key.as_os_str().as_bytes());
        let sha256 = if item.kind == ItemKind::File {
            Some(sha256_reader(&mut tar_entry).map_err(io_err)?.0)
        } else {
            None
        };
        let Some(record) = expected.remove(key.as_os_str().as_bytes()) else {
            let seen = entry.record.entries.iter().any(|e| e.path == key);
            return Err(if seen {
                VerifyError::Duplicate { volume, file }
            } else {
                VerifyError::Unexpected { volume, file }
            });
        };
        let mismatch = |what, expected: String, actual: String| VerifyError::Mismatch {
            volume: volume.clone(),
            file: file.clone(),
            what,
            expected,
            actual,
        };
        let kind = match item.kind {
            ItemKind::File => "file",
            ItemKind::Dir => "dir",
            ItemKind::Symlink => "symlink",
            ItemKind::HardLink => "hard link",
            ItemKind::Special => "device or fifo",
            ItemKind::GlobalMeta => "pax global header",
            ItemKind::Unsupported(_) => "unsupported entry",
        };
        let record_kind = match record.kind {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink => "symlink",
        };
        if kind != record_kind {
            return Err(mismatch("kind", record_kind.into(), kind.into()));
        }
        if item.size != record.size {
            return Err(mismatch("size", record.size.to_string(), item.size.to_string()));
        }
        if sha256 != record.sha256 {
            return Err(mismatch("content sha256", opt(&record.sha256), opt(&sha256)));
        }
        if item.mode != record.mode {
            return Err(mismatch("mode", format!("{:o}", record.mode), format!("{:o}", item.mode)));
        }
        if (item.uid, item.gid) != (record.uid, record.gid) {
            return Err(mismatch(
                "owner",
                format!("{}:{}", record.uid, record.gid),
                format!("{}:{}", item.uid, item.gid),
            ));
        }
        if item.mtime != record.mtime {
            return Err(mismatch("mtime", record.mtime.to_string(), item.mtime.to_string()));
        }
        let target = if item.kind == ItemKind::Symlink { item.link.as_deref() } else { None };
        let recorded = record.link_target.as_deref().map(|t| t.as_os_str().as_bytes());
        if target != recorded {
            return Err(mismatch(
                "link target",
                recorded.map(shown).unwrap_or_default(),
                target.map(shown).unwrap_or_default(),
            ));
        }
    }
    // Read to the end so gzip checks its own CRC over everything.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(io_err)?;
    if let Some(path) = expected.keys().next() {
        return Err(VerifyError::Missing { volume, file: shown(path) });
    }
    tracing::info!(volume = %entry.volume, entries = entry.record.entries.len(), "archive verified");
    Ok(())
}

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_else(|| "none".into())
}

/// Hex sha256 and length of a file.
pub fn sha256_file(path: &Path) -> io::Result<(String, u64)> {
    sha256_reader(&mut File::open(path)?)
}

fn sha256_reader(reader: &mut dyn Read) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok((hex::encode(hasher.finalize()), total)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

// ---------------------------------------------------------------------------
// Restoring

/// A restore stopped. What it wrote so far is inside the destination only;
/// the caller should discard the destination.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{0}: not a directory")]
    NotADirectory(PathBuf),
    #[error("{0}: not empty; restore only into an empty directory")]
    NotEmpty(PathBuf),
    #[error("reading archive {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{file}: {source}")]
    BadEntry { file: String, source: ItemError },
    #[error("{file}: refused: it would be written through the symlink {link}")]
    ThroughSymlink { file: String, link: String },
    #[error("{file}: refused: {parent} is not a directory")]
    ParentNotDir { file: String, parent: String },
    #[error("{file}: refused: hard link to {target}, which {problem}")]
    UnsafeHardLink { file: String, target: String, problem: PathProblem },
    #[error("{file}: refused: the path already exists in the archive")]
    Duplicate { file: String },
    #[error("{file}: refused: unsupported entry type {kind:?}")]
    Unsupported { file: String, kind: char },
    #[error("{file}: {source}")]
    Write { file: String, source: io::Error },
}

/// What a restore wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hard_links: u64,
    /// Content bytes written.
    pub bytes: u64,
    /// Fifos and devices left out.
    pub skipped: u64,
}

/// Extract `archive` into the empty directory `dest`, keeping numeric owners
/// (when run as root), modes, mtimes and symlinks as links.
///
/// Every write is made relative to a directory descriptor reached from `dest`
/// one component at a time with `O_NOFOLLOW`, and every leaf is created with
/// `O_EXCL`/`mkdirat`/`symlinkat`, which never follow a link. So an absolute
/// path, a `..`, a symlink planted earlier in the archive (`l -> /etc`, then
/// `l/passwd`) or a hard link to anything outside is refused, and nothing is
/// ever written outside `dest`. Checksums are [`verify_archive`]'s job: run it
/// first. `progress` gets the content bytes written so far.
#[tracing::instrument(skip(progress), fields(archive = %archive.display(), dest = %dest.display()))]
pub fn restore_archive(
    archive: &Path,
    dest: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<RestoreStats, RestoreError> {
    let meta = fs::metadata(dest)
        .map_err(|source| RestoreError::Write { file: dest.display().to_string(), source })?;
    if !meta.is_dir() {
        return Err(RestoreError::NotADirectory(dest.to_path_buf()));
    }
    let read_err = |source| RestoreError::Read { path: archive.to_path_buf(), source };
    let dest_err = |source| RestoreError::Write { file: dest.display().to_string(), source };
    if fs::read_dir(dest).map_err(dest_err)?.next().is_some() {
        return Err(RestoreError::NotEmpty(dest.to_path_buf()));
    }
    let root: OwnedFd = File::open(dest).map_err(dest_err)?.into();
    let mut restorer = Restorer {
        root,
        is_root: nix::unistd::geteuid().is_root(),
        dirs: Vec::new(),
        stats: RestoreStats::default(),
    };

    let mut tar = tar::Archive::new(GzDecoder::new(BufReader::new(File::open(archive).map_err(read_err)?)));
    let mut reported = 0u64;
    for entry in tar.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let item = read_item(&entry).map_err(|(file, source)| RestoreError::BadEntry { file, source })?;
        restorer.restore(&item, &mut entry).map_err(|e| match e {
            Refusal::Read(source) => read_err(source),
            Refusal::Other(e) => e,
        })?;
        if restorer.stats.bytes - reported >= PROGRESS_STEP {
            reported = restorer.stats.bytes;
            progress(reported);
        }
    }
    restorer.finish_dirs()?;
    // Durable before the caller drops anything it replaces.
    nix::unistd::syncfs(restorer.root.as_fd()).map_err(|e| dest_err(e.into()))?;
    progress(restorer.stats.bytes);
    tracing::info!(stats = ?restorer.stats, "archive restored");
    Ok(restorer.stats)
}

/// An archive read error (not the entry's fault) or a refusal.
enum Refusal {
    Read(io::Error),
    Other(RestoreError),
}

impl From<RestoreError> for Refusal {
    fn from(e: RestoreError) -> Self {
        Self::Other(e)
    }
}

/// Directory metadata applied at the end: a mode without write permission or
/// an mtime would not survive the directory's contents being created.
struct PendingDir {
    parts: Vec<Vec<u8>>,
    mode: u32,
    mtime: i64,
}

struct Restorer {
    /// `dest`, the only descriptor every path is resolved from.
    root: OwnedFd,
    is_root: bool,
    dirs: Vec<PendingDir>,
    stats: RestoreStats,
}

impl Restorer {
    fn restore(&mut self, item: &Item, data: &mut dyn Read) -> Result<(), Refusal> {
        let file = shown(join_parts(&item.parts).as_os_str().as_bytes());
        let write_err = |source: Errno| RestoreError::Write { file: file.clone(), source: source.into() };
        match item.kind {
            ItemKind::Special => {
                tracing::warn!(file, "device or fifo in archive; skipped");
                self.stats.skipped += 1;
                return Ok(());
            }
            ItemKind::GlobalMeta => return Ok(()),
            ItemKind::Unsupported(kind) => {
                return Err(RestoreError::Unsupported { file, kind: char::from(kind) }.into())
            }
            _ => {}
        }
        let Some((leaf, parents)) = item.parts.split_last() else {
            // The root entry describes `dest` itself.
            if item.kind != ItemKind::Dir {
                return Err(RestoreError::ParentNotDir { file, parent: ".".into() }.into());
            }
            self.chown(&self.root, item).map_err(write_err)?;
            self.dirs.push(PendingDir { parts: Vec::new(), mode: item.mode, mtime: item.mtime });
            return Ok(());
        };
        let parent = self.open_dir(parents, Some((item.uid, item.gid)), &file)?;
        let leaf = OsStr::from_bytes(leaf);
        let exists = |e: Errno| match e {
            Errno::EEXIST => RestoreError::Duplicate { file: file.clone() },
            e => write_err(e),
        };
        match item.kind {
            ItemKind::File => {
                let fd = nix::fcntl::openat(
                    &parent,
                    leaf,
                    OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(exists)?;
                let mut out = File::from(fd);
                let mut counting = CountingReader { inner: data, bytes: 0, failed: false };
                let copied = io::copy(&mut counting, &mut out);
                self.stats.bytes += counting.bytes;
                match copied {
                    Ok(_) => {}
                    // Which side failed: a short archive is a read error, a full disk a write error.
                    Err(e) if counting.bytes < item.size && counting.failed => return Err(Refusal::Read(e)),
                    Err(source) => return Err(RestoreError::Write { file: file.clone(), source }.into()),
                }
                self.chown(&out, item).map_err(write_err)?;
                // After chown, which clears setuid/setgid.
                out.set_permissions(Permissions::from_mode(item.mode))
                    .and_then(|()| out.set_times(file_times(item.mtime)))
                    .map_err(|source| RestoreError::Write { file: file.clone(), source })?;
                self.stats.files += 1;
            }
            ItemKind::Dir => {
                match nix::sys::stat::mkdirat(&parent, leaf, Mode::from_bits_truncate(0o700)) {
                    // An earlier entry's missing parent, made on the way: fine.
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(write_err(e).into()),
                }
                let mut parts = parents.to_vec();
                parts.push(leaf.as_bytes().to_vec());
                let dir = self.open_dir(&parts, None, &file)?;
                self.chown(&dir, item).map_err(write_err)?;
                self.dirs.push(PendingDir { parts, mode: item.mode, mtime: item.mtime });
                self.stats.dirs += 1;
            }
            ItemKind::Symlink => {
                let target = item.link.as_deref().unwrap_or_default();
                if target.is_empty() {
                    return Err(write_err(Errno::EINVAL).into());
                }
                // The target is stored as is and never resolved by us: every
                // later path walk refuses to pass through it.
                nix::unistd::symlinkat(OsStr::from_bytes(target), &parent, leaf).map_err(exists)?;
                if self.is_root {
                    nix::unistd::fchownat(
                        &parent,
                        leaf,
                        Some(Uid::from_raw(item.uid)),
                        Some(Gid::from_raw(item.gid)),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                    .map_err(write_err)?;
                }
                let mtime = TimeSpec::new(item.mtime, 0);
                nix::sys::stat::utimensat(&parent, leaf, &mtime, &mtime, UtimensatFlags::NoFollowSymlink)
                    .map_err(write_err)?;
                self.stats.symlinks += 1;
            }
            ItemKind::HardLink => {
                let raw = item.link.as_deref().unwrap_or_default();
                let target = shown(raw);
                let unsafe_link = |problem| RestoreError::UnsafeHardLink {
                    file: file.clone(),
                    target: target.clone(),
                    problem,
                };
                let parts = split_path(raw).map_err(unsafe_link)?;
                let Some((source_leaf, source_parents)) = parts.split_last() else {
                    return Err(write_err(Errno::EINVAL).into());
                };
                let source_parent = self.open_dir(source_parents, None, &file)?;
                // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
                nix::unistd::linkat(
                    &source_parent,
                    OsStr::from_bytes(source_leaf),
                    &parent,
                    leaf,
                    AtFlags::empty(),
                )
                .map_err(exists)?;
                self.stats.hard_links += 1;
            }
            ItemKind::Special | ItemKind::GlobalMeta | ItemKind::Unsupported(_) => {
                unreachable!("handled above")
            }
        }
        Ok(())
    }

    /// The directory `parts` below `dest`, reached one component at a time with
    /// `O_NOFOLLOW`, so a symlink anywhere on the way is refused rather than
    /// followed. Missing directories are made (owned by `owner`) when asked:
    /// archives from other tools may leave parents out.
    fn open_dir(
        &self,
        parts: &[Vec<u8>],
        owner: Option<(u32, u32)>,
        file: &str,
    ) -> Result<OwnedFd, RestoreError> {
        let write_err = |source: Errno| RestoreError::Write { file: file.to_string(), source: source.into() };
        let mut dir =
            self.root.try_clone().map_err(|source| RestoreError::Write { file: file.to_string(), source })?;
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        for (i, part) in parts.iter().enumerate() {
            let name = OsStr::from_bytes(part);
            let next = match nix::fcntl::openat(&dir, name, flags, Mode::empty()) {
                Err(Errno::ENOENT) if owner.is_some() => {
                    match nix::sys::stat::mkdirat(&dir, name, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(write_err(e)),
                    }
                    let made = nix::fcntl::openat(&dir, name, flags, Mode::empty());
                    if let (Ok(made), Some((uid, gid)), true) = (&made, owner, self.is_root) {
                        nix::unistd::fchown(made, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                            .map_err(write_err)?;
                    }
                    made
                }
                other => other,
            };
            dir = match next {
                Ok(next) => next,
                Err(Errno::ELOOP | Errno::ENOTDIR) => {
                    let here = shown(join_parts(&parts[..=i]).as_os_str().as_bytes());
                    let is_link = nix::sys::stat::fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
                        .is_ok_and(|st| {
                            SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK
                        });
                    return Err(if is_link {
                        RestoreError::ThroughSymlink { file: file.to_string(), link: here }
                    } else {
                        RestoreError::ParentNotDir { file: file.to_string(), parent: here }
                    });
                }
                Err(e) => return Err(write_err(e)),
            };
        }
        Ok(dir)
    }

    fn chown(&self, fd: impl AsFd, item: &Item) -> Result<(), Errno> {
        if !self.is_root {
            return Ok(());
        }
        nix::unistd::fchown(fd, Some(Uid::from_raw(item.uid)), Some(Gid::from_raw(item.gid)))
    }

    /// Modes and mtimes of directories, deepest first, once nothing else will
    /// be created in them.
    fn finish_dirs(&mut self) -> Result<(), RestoreError> {
        self.dirs.sort_by_key(|d| std::cmp::Reverse(d.parts.len()));
        for pending in &self.dirs {
            let file = shown(join_parts(&pending.parts).as_os_str().as_bytes());
            let dir = File::from(self.open_dir(&pending.parts, None, &file)?);
            dir.set_permissions(Permissions::from_mode(pending.mode))
                .and_then(|()| dir.set_times(file_times(pending.mtime)))
                .map_err(|source| RestoreError::Write { file, source })?;
        }
        Ok(())
    }
}

fn file_times(mtime: i64) -> FileTimes {
    let at = match u64::try_from(mtime) {
        Ok(secs) => SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => SystemTime::UNIX_EPOCH,
    };
    FileTimes::new().set_modified(at).set_accessed(at)
}

/// Counts what comes out of the archive, and remembers whether reading failed.
struct CountingReader<'a> {
    inner: &'a mut dyn Read,
    bytes: u64,
    failed: bool,
}

impl Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf).inspect_err(|_| self.failed = true)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

// ---------------------------------------------------------------------------
// Small helpers

/// Create or truncate `path` for writing, never through a symlink planted there.
fn create_truncate(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(path)
}

/// fsync a directory, so a rename in it survives a crash.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Paths as JSON strings, or `{"hex": …}` for names that are not UTF-8: a user
/// may name a file anything, and a backup must still hold it.
mod raw_path {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::path::{Path, PathBuf};

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    pub(super) enum Repr {
        Text(String),
        Bytes { hex: String },
    }

    pub(super) fn to_repr(path: &Path) -> Repr {
        match path.to_str() {
            Some(s) => Repr::Text(s.to_string()),
            None => Repr::Bytes { hex: hex::encode(path.as_os_str().as_bytes()) },
        }
    }

    pub(super) fn from_repr<E: serde::de::Error>(repr: Repr) -> Result<PathBuf, E> {
        Ok(match repr {
            Repr::Text(s) => PathBuf::from(s),
            Repr::Bytes { hex } => PathBuf::from(OsStr::from_bytes(&hex::decode(hex).map_err(E::custom)?)),
        })
    }

    pub fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
        to_repr(path).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        from_repr(Repr::deserialize(d)?)
    }
}

mod raw_path_opt {
    use std::path::PathBuf;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::raw_path::{from_repr, to_repr, Repr};

    pub fn serialize<S: Serializer>(path: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        path.as_deref().map(to_repr).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        Option::<Repr>::deserialize(d)?.map(from_repr).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_paths_safely() {
        assert_eq!(split_path(b"./a//b/"), Ok(vec![b"a".to_vec(), b"b".to_vec()]));
        assert_eq!(split_path(b"."), Ok(vec![]));
        assert_eq!(split_path(b"/etc/passwd"), Err(PathProblem::Absolute));
        assert_eq!(split_path(b"../x"), Err(PathProblem::ParentDir));
        assert_eq!(split_path(b"a/../../x"), Err(PathProblem::ParentDir));
        assert_eq!(split_path(b"a/..b"), Ok(vec![b"a".to_vec(), b"..b".to_vec()]));
    }

    #[test]
    fn raw_paths_round_trip_through_json() {
        let odd = PathBuf::from(OsStr::from_bytes(b"caf\xe9.txt"));
        let record = EntryRecord {
            path: odd.clone(),
            kind: EntryKind::Symlink,
            size: 0,
            mode: 0o777,
            uid: 0,
            gid: 0,
            mtime: 0,
            sha256: None,
            link_target: Some(odd),
        };
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains(r#"{"hex":"636166e92e747874"}"#), "{json}");
        assert_eq!(serde_json::from_str::<EntryRecord>(&json).unwrap(), record);
    }
}
