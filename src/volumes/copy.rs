//! A verified tree copy, for moving a user's files to a new volume (password
//! change). Blocking: run it in `spawn_blocking`. Symlinks are copied as links,
//! never followed; owners, modes and modification times are kept.

use std::collections::BTreeMap;
use std::fs::{self, File, FileTimes};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Copy everything under `src` into the (empty) directory `dst`.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(src)?;
    copy_owner_mode(dst, &meta)?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&from)?;
        let kind = meta.file_type();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
            lchown(&to, &meta)?;
        } else if kind.is_dir() {
            fs::create_dir(&to)?;
            copy_tree(&from, &to)?;
        } else if kind.is_file() {
            fs::copy(&from, &to)?;
            copy_owner_mode(&to, &meta)?;
        }
        // Sockets, fifos and devices are not user files: skipped.
        if !kind.is_symlink() {
            set_mtime(&to, &meta)?;
        }
    }
    set_mtime(dst, &meta)
}

fn copy_owner_mode(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    lchown(path, meta)?;
    fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o7777))
}

fn lchown(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    if !super::bind::is_root() {
        return Ok(());
    }
    std::os::unix::fs::lchown(path, Some(meta.uid()), Some(meta.gid()))
}

fn set_mtime(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    let modified = meta.modified()?;
    File::open(path)?.set_times(FileTimes::new().set_modified(modified))
}

/// What one entry is, for comparing two trees.
#[derive(Debug, PartialEq, Eq)]
enum Fingerprint {
    Dir { mode: u32, uid: u32, gid: u32 },
    File { mode: u32, uid: u32, gid: u32, sha256: [u8; 32] },
    Link { target: PathBuf },
}

fn fingerprints(root: &Path) -> io::Result<BTreeMap<PathBuf, Fingerprint>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = root.join(&rel);
        let meta = fs::symlink_metadata(&path)?;
        let kind = meta.file_type();
        let (mode, uid, gid) = (meta.mode() & 0o7777, meta.uid(), meta.gid());
        let print = if kind.is_symlink() {
            Fingerprint::Link { target: fs::read_link(&path)? }
        } else if kind.is_dir() {
            for entry in fs::read_dir(&path)? {
                stack.push(rel.join(entry?.file_name()));
            }
            Fingerprint::Dir { mode, uid, gid }
        } else if kind.is_file() {
            Fingerprint::File { mode, uid, gid, sha256: sha256_file(&path)? }
        } else {
            continue;
        };
        out.insert(rel, print);
    }
    Ok(out)
}

pub fn sha256_file(path: &Path) -> io::Result<[u8; 32]> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buf[..n]);
    }
}

/// Check file for file that `dst` holds what `src` holds: same entries, same
/// bytes, same owners and modes, same link targets.
pub fn verify_same(src: &Path, dst: &Path) -> io::Result<()> {
    let (a, b) = (fingerprints(src)?, fingerprints(dst)?);
    if a == b {
        return Ok(());
    }
    let first = a
        .iter()
        .find(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .or_else(|| b.keys().find(|k| !a.contains_key(*k)).cloned())
        .unwrap_or_default();
    Err(io::Error::other(format!("copy differs at {}", first.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_and_verifies_a_tree() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("a/b")).unwrap();
        fs::write(src.path().join("a/b/data.bin"), vec![7u8; 300_000]).unwrap();
        fs::write(src.path().join("empty"), b"").unwrap();
        fs::set_permissions(src.path().join("empty"), fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink("a/b/data.bin", src.path().join("link")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", src.path().join("dangling")).unwrap();
        copy_tree(src.path(), dst.path()).unwrap();
        verify_same(src.path(), dst.path()).unwrap();
        assert_eq!(fs::read_link(dst.path().join("dangling")).unwrap(), PathBuf::from("/nonexistent"));

        fs::write(dst.path().join("a/b/data.bin"), vec![8u8; 300_000]).unwrap();
        let err = verify_same(src.path(), dst.path()).unwrap_err().to_string();
        assert!(err.contains("data.bin"), "{err}");
    }
}
