//! Hot-binding: a volume's directory is bind-mounted onto a slot's mount point,
//! and mount propagation carries it into the running container, whose
//! `/home/jovyan/work` is an `rslave` bind of that mount point (DESIGN.md
//! "Verified" 2). Needs root in the Docker engine's mount namespace.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// One line of /proc/self/mountinfo that matters here.
#[derive(Debug, PartialEq, Eq)]
pub struct MountInfo {
    pub mount_point: PathBuf,
    pub shared: bool,
}

/// Mounts of this process's namespace.
pub fn mounts() -> io::Result<Vec<MountInfo>> {
    Ok(parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo")?))
}

fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let mount_point = unescape(fields.get(4)?);
            let sep = fields.iter().position(|f| *f == "-")?;
            let shared = fields.get(6..sep)?.iter().any(|f| f.starts_with("shared:"));
            Some(MountInfo { mount_point: PathBuf::from(mount_point), shared })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The last (topmost) mount at exactly `path`, if `path` is a mount point.
pub fn mount_at(path: &Path) -> io::Result<Option<MountInfo>> {
    Ok(mounts()?.into_iter().rfind(|m| m.mount_point == path))
}

/// Make `dir` a shared mount point (idempotent): bind it onto itself if it is
/// not a mount point yet, then mark it recursively shared. Docker refuses an
/// `rslave` bind from a source that is neither shared nor slave.
pub fn ensure_shared(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    match mount_at(&dir)? {
        Some(m) if m.shared => return Ok(()),
        Some(_) => {}
        None => {
            mount(Some(&dir), &dir, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(io::Error::from)?
        }
    }
    mount(None::<&str>, &dir, None::<&str>, MsFlags::MS_SHARED | MsFlags::MS_REC, None::<&str>)
        .map_err(io::Error::from)
}

/// Bind `source` (a volume's `_data` directory) onto `target` (a slot's mount point).
pub fn bind(source: &Path, target: &Path) -> io::Result<()> {
    mount(Some(source), target, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(io::Error::from)
}

/// Undo [`bind`]; a target with nothing bound is fine. Lazy, so a process
/// still holding a file there cannot keep the slot from being recycled.
pub fn unbind(target: &Path) -> io::Result<()> {
    if mount_at(target)?.is_none() {
        return Ok(());
    }
    umount2(target, MntFlags::MNT_DETACH).map_err(io::Error::from)
}

/// Whether this process can mount at all (root, i.e. CAP_SYS_ADMIN in practice).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_lines() {
        let text = "36 35 98:0 / /srv/state\\040dir/slots rw,noatime shared:7 - ext4 /dev/vda rw\n\
                    37 35 98:0 / /var/lib/docker rw master:1 - ext4 /dev/vda rw\n\
                    38 35 98:0 / /plain rw - tmpfs tmpfs rw\n";
        assert_eq!(
            parse_mountinfo(text),
            vec![
                MountInfo { mount_point: "/srv/state dir/slots".into(), shared: true },
                MountInfo { mount_point: "/var/lib/docker".into(), shared: false },
                MountInfo { mount_point: "/plain".into(), shared: false },
            ]
        );
    }
}
