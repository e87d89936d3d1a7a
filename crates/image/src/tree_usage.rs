//! Bytes and inodes of a tree, counted as `fs_usage_of` counts (allocated
//! blocks, every inode, hard links once), walked with bounded memory.
//!
//! Trees measured here are hostile: image layers (any shape a tar can
//! make: millions of entries in one dir, paths deeper than `PATH_MAX` once
//! joined to the store's root) and containers' writable layers (changing
//! while walked). So the walk goes through dir fds, never paths: every dir
//! is opened `O_NOFOLLOW` relative to its parent's fd (a dir swapped for a
//! symlink mid-walk makes the open fail and is skipped, never followed
//! onto the host), only the open dirs of the current branch are held (one
//! fd and one readdir buffer per level, up to `max_depth`), and nothing is
//! kept per entry but hard-linked inodes, up to a cap.

use std::collections::HashSet;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};

/// How far and how long a walk goes.
#[derive(Debug, Clone)]
pub struct WalkLimits {
    /// Open dirs at once, the root's included: dirs at that depth are
    /// counted, what they hold is not.
    pub max_depth: usize,
    /// Entries visited; the rest are not counted.
    pub max_entries: u64,
}

/// Hard-linked inodes remembered to count each once; past this, further
/// links count again (a small overcount rather than unbounded memory).
pub const MAX_SEEN_LINKS: usize = 100_000;

/// What a walk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeUsage {
    pub bytes: u64,
    pub inodes: u64,
    /// `st_dev` of the root.
    pub dev: u64,
    /// A limit cut the walk short: the figures are a lower bound.
    pub truncated: bool,
}

/// Walks `dir`. `None` when it does not exist; entries that vanish during
/// the walk are skipped.
pub fn walk(dir: &Path, limits: &WalkLimits) -> std::io::Result<Option<TreeUsage>> {
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let root = match Dir::open(dir, dir_flags, Mode::empty()) {
        Ok(d) => d,
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let st = fstat(&root)?;
    let mut w = TreeUsage {
        bytes: st.st_blocks as u64 * 512,
        inodes: 1,
        dev: st.st_dev,
        truncated: false,
    };
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut visited: u64 = 0;
    let mut count = |st: &FileStat, w: &mut TreeUsage| {
        let is_dir = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
        if st.st_nlink > 1 && !is_dir {
            let key = (st.st_dev, st.st_ino);
            if seen.contains(&key) {
                return;
            }
            if seen.len() < MAX_SEEN_LINKS {
                seen.insert(key);
            }
        }
        w.bytes += st.st_blocks as u64 * 512;
        w.inodes += 1;
    };
    let mut stack = vec![root.into_iter()];
    while let Some(top) = stack.last_mut() {
        let Some(entry) = top.next() else {
            stack.pop();
            continue;
        };
        let entry = match entry {
            Ok(e) => e,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        visited += 1;
        if visited > limits.max_entries {
            w.truncated = true;
            break;
        }
        // SAFETY: the iterator owns this fd and outlives the borrow.
        let parent = unsafe { BorrowedFd::borrow_raw(top.as_raw_fd()) };
        let st = match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        count(&st, &mut w);
        let is_dir = entry.file_type() == Some(Type::Directory)
            || SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
        if !is_dir {
            continue;
        }
        if stack.len() >= limits.max_depth {
            w.truncated = true;
            continue;
        }
        match Dir::openat(parent, name, dir_flags, Mode::empty()) {
            Ok(d) => stack.push(d.into_iter()),
            // Gone, or swapped for a symlink or a file since the stat.
            Err(Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some(w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;

    /// `levels` nested dirs of 255-byte names under `root`, made through
    /// dir fds (the full path outgrows PATH_MAX), a file in the deepest.
    fn deep(root: &Path, levels: usize) {
        let mut fd: OwnedFd = nix::fcntl::open(root, OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        let name = "d".repeat(255);
        for _ in 0..levels {
            nix::sys::stat::mkdirat(&fd, name.as_str(), Mode::from_bits_truncate(0o755)).unwrap();
            fd = nix::fcntl::openat(&fd, name.as_str(), OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        }
        let f = nix::fcntl::openat(
            &fd,
            "f",
            OFlag::O_CREAT | OFlag::O_WRONLY,
            Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        nix::unistd::write(&f, &[1u8; 8192]).unwrap();
    }

    fn no_limits() -> WalkLimits {
        WalkLimits {
            max_depth: 1000,
            max_entries: u64::MAX,
        }
    }

    /// A layer may hold paths longer than PATH_MAX once under the store's
    /// root: measured all the same (a walk by paths failed with
    /// ENAMETOOLONG, and with it the pull).
    #[test]
    fn paths_past_path_max_are_measured() {
        let d = tempfile::tempdir().unwrap();
        deep(d.path(), 20);
        let w = walk(d.path(), &no_limits()).unwrap().unwrap();
        assert_eq!(w.inodes, 1 + 20 + 1);
        assert!(w.bytes >= 8192 && !w.truncated, "{w:?}");
        assert_eq!(
            crate::store::disk_usage(d.path()).unwrap(),
            (w.bytes, w.inodes)
        );
    }

    #[test]
    fn limits_cut_the_walk_and_say_so() {
        let d = tempfile::tempdir().unwrap();
        deep(d.path(), 5);
        let shallow = WalkLimits {
            max_depth: 2,
            max_entries: u64::MAX,
        };
        let w = walk(d.path(), &shallow).unwrap().unwrap();
        assert!(w.truncated);
        // The root and two levels: the second is counted, not entered.
        assert_eq!(w.inodes, 1 + 2, "{w:?}");
        for i in 0..10 {
            std::fs::write(d.path().join(format!("f{i}")), b"x").unwrap();
        }
        let few = WalkLimits {
            max_depth: 1000,
            max_entries: 4,
        };
        let w = walk(d.path(), &few).unwrap().unwrap();
        assert!(w.truncated && w.inodes == 1 + 4, "{w:?}");
    }

    #[test]
    fn hard_links_count_once_and_a_missing_dir_is_none() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), vec![1u8; 8192]).unwrap();
        std::fs::hard_link(d.path().join("a"), d.path().join("b")).unwrap();
        let w = walk(d.path(), &no_limits()).unwrap().unwrap();
        assert_eq!(w.inodes, 2);
        assert!(
            walk(&d.path().join("nope"), &no_limits())
                .unwrap()
                .is_none()
        );
        assert_eq!(
            crate::store::disk_usage(&d.path().join("nope"))
                .unwrap_err()
                .kind(),
            std::io::ErrorKind::NotFound
        );
    }
}
