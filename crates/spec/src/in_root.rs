//! Reading files of an image's rootfs without ever leaving it.
//!
//! The rootfs is hostile input: `/etc/passwd` may be a symlink to the host's
//! `/etc/shadow`, to `../../../..`, to a FIFO (an open would block forever)
//! or to a device (a read would never end). Paths are resolved as if the
//! rootfs were `/` (what the container itself would see): with `openat2`
//! `RESOLVE_IN_ROOT`, or, on kernels without it (< 5.6) or where a seccomp
//! filter hides it, with a component-by-component walk doing the same thing
//! (containerd's `resolveInRootFS` does this walk over `os.Root`). Only
//! regular files are read, and only up to a size limit.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

/// The kernel's limit on symlinks followed in one resolution.
const MAX_SYMLINKS: usize = 40;

/// Reads `path` (absolute or relative, taken inside `root`) from the rootfs.
/// `Ok(None)` when it does not exist. Errors for anything that is not a
/// regular file or is larger than `max_len`.
pub fn read_file(root: &Path, path: &str, max_len: u64) -> io::Result<Option<Vec<u8>>> {
    match open_beneath(root, path)? {
        Some((_, fd)) => read_regular(fd, path, max_len).map(Some),
        None => Ok(None),
    }
}

/// Opens `path` beneath `root` (for reading, never blocking, no symlink
/// leading out); returns the root's fd and the file's, or `None` when it
/// does not exist.
fn open_beneath(root: &Path, path: &str) -> io::Result<Option<(OwnedFd, OwnedFd)>> {
    let root_fd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let fd = match open_in_root_openat2(&root_fd, path) {
        Err(Errno::ENOSYS) | Err(Errno::EPERM) => open_in_root_manual(&root_fd, path),
        other => other,
    };
    let fd = match fd {
        Ok(fd) => fd,
        Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(Some((root_fd, fd)))
}

fn read_flags() -> OFlag {
    // O_NONBLOCK: opening a FIFO must not wait for a writer.
    OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK
}

fn open_in_root_openat2(root: &OwnedFd, path: &str) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(read_flags())
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    // With RESOLVE_IN_ROOT the kernel answers EAGAIN when a ".." step races
    // with a rename anywhere on the system; openat2(2) says to retry.
    let mut tries = 0;
    loop {
        match nix::fcntl::openat2(root, path, how) {
            Err(Errno::EAGAIN) if tries < 32 => tries += 1,
            other => return other,
        }
    }
}

/// The same resolution as `RESOLVE_IN_ROOT`, done by hand: `..` never goes
/// above the root, absolute symlink targets restart at the root, and the
/// final open refuses to follow a symlink (each component before it was
/// checked to be a real directory).
pub(crate) fn open_in_root_manual(root: &OwnedFd, path: &str) -> nix::Result<OwnedFd> {
    let mut resolved: Vec<String> = Vec::new();
    let mut pending: Vec<String> = components(path).rev().collect();
    let mut followed = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "." => continue,
            ".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        resolved.push(part);
        let rel = resolved.join("/");
        let st = nix::sys::stat::fstatat(
            root.as_fd(),
            rel.as_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
        if is_type(&st, SFlag::S_IFLNK) {
            followed += 1;
            if followed > MAX_SYMLINKS {
                return Err(Errno::ELOOP);
            }
            let target = nix::fcntl::readlinkat(root.as_fd(), rel.as_str())?;
            let target = target.to_string_lossy().into_owned();
            resolved.pop();
            if target.starts_with('/') {
                resolved.clear();
            }
            pending.extend(components(&target).rev());
        } else if !pending.is_empty() && !is_type(&st, SFlag::S_IFDIR) {
            return Err(Errno::ENOTDIR);
        }
    }
    let rel = if resolved.is_empty() {
        ".".to_string()
    } else {
        resolved.join("/")
    };
    nix::fcntl::openat(
        root.as_fd(),
        rel.as_str(),
        read_flags() | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
}

fn components(path: &str) -> impl DoubleEndedIterator<Item = String> + '_ {
    path.split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
}

fn is_type(st: &FileStat, t: SFlag) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == t
}

fn read_regular(fd: OwnedFd, path: &str, max_len: u64) -> io::Result<Vec<u8>> {
    let st = nix::sys::stat::fstat(&fd)?;
    if !is_type(&st, SFlag::S_IFREG) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{path} in the image is not a regular file"),
        ));
    }
    let mut buf = Vec::new();
    File::from(fd).take(max_len + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max_len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{path} in the image is larger than {max_len} bytes"),
        ));
    }
    Ok(buf)
}

/// Creates the directory `path` (and its missing parents, mode 0755, owned
/// by root) inside `root`, every component resolved as in the container
/// (`RESOLVE_IN_ROOT`): what runc does for a working dir the image lacks.
/// A symlink in the image can't make it create anything outside the rootfs.
pub fn mkdir_all(root: &Path, path: &str) -> io::Result<()> {
    let root_fd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let open = |p: &str| -> nix::Result<OwnedFd> {
        let mut tries = 0;
        loop {
            match nix::fcntl::openat2(&root_fd, if p.is_empty() { "." } else { p }, how) {
                Err(Errno::EAGAIN) if tries < 32 => tries += 1,
                other => return other,
            }
        }
    };
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    for i in 0..parts.len() {
        let prefix = parts[..=i].join("/");
        match open(&prefix) {
            Ok(_) => continue,
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
        if parts[i] == ".." {
            continue;
        }
        let parent = open(&parts[..i].join("/"))?;
        match nix::sys::stat::mkdirat(&parent, parts[i], Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
        open(&prefix)?;
    }
    Ok(())
}

/// The host path of `path` inside `root` (a dir or a regular file),
/// resolved as in the container (`RESOLVE_IN_ROOT`): symlinks and `..` in
/// an image never lead out of it. What an image volume's `subPath` binds.
/// `Ok(None)` when it does not exist. Meant for read-only trees (an image
/// volume): on a tree the container can change, the path could be swapped
/// after it is returned.
pub fn resolve(root: &Path, path: &str) -> io::Result<Option<std::path::PathBuf>> {
    let Some((root_fd, fd)) = open_beneath(root, path)? else {
        return Ok(None);
    };
    let st = nix::sys::stat::fstat(&fd)?;
    if !is_type(&st, SFlag::S_IFDIR) && !is_type(&st, SFlag::S_IFREG) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{path} in the image is neither a directory nor a regular file"),
        ));
    }
    use std::os::fd::AsRawFd;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    let real_root = std::fs::read_link(format!("/proc/self/fd/{}", root_fd.as_raw_fd()))?;
    // The fd was opened beneath the root: its path is too (unless the root
    // itself was moved meanwhile, which the caller's own tree rules out).
    if !real.starts_with(&real_root) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{path} resolved to {} outside {}",
                real.display(),
                real_root.display()
            ),
        ));
    }
    Ok(Some(real))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn resolve_stays_in_the_root() {
        let (d, root) = layout();
        std::fs::create_dir_all(root.join("usr/share")).unwrap();
        symlink("../../..", root.join("usr/share/up")).unwrap();
        symlink("/etc", root.join("abs")).unwrap();
        let real_root = std::fs::canonicalize(&root).unwrap();
        assert_eq!(
            resolve(&root, "etc").unwrap().unwrap(),
            real_root.join("etc")
        );
        assert_eq!(
            resolve(&root, "/usr/share/").unwrap().unwrap(),
            real_root.join("usr/share")
        );
        // Above the root is the root; an absolute link restarts at it.
        assert_eq!(resolve(&root, "../../..").unwrap().unwrap(), real_root);
        assert_eq!(
            resolve(&root, "usr/share/up/secret").unwrap().unwrap(),
            real_root.join("secret")
        );
        assert_eq!(
            resolve(&root, "abs").unwrap().unwrap(),
            real_root.join("etc")
        );
        assert!(resolve(&root, "not-there").unwrap().is_none());
        assert!(resolve(&root, "secret/x").unwrap().is_none());
        assert_eq!(
            std::fs::read_to_string(resolve(&root, "usr/share/up/secret").unwrap().unwrap())
                .unwrap(),
            "image file"
        );
        drop(d);
    }

    fn root_fd(p: &Path) -> OwnedFd {
        nix::fcntl::open(
            p,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap()
    }

    #[test]
    fn mkdir_all_stays_in_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir(&root).unwrap();
        // Image symlinks aiming above the root, relative and absolute: they
        // resolve inside it (to dirs that exist there).
        std::fs::create_dir(root.join("outside")).unwrap();
        std::fs::create_dir(root.join("outside2")).unwrap();
        symlink("../../outside", root.join("rel")).unwrap();
        symlink("/outside2", root.join("abs")).unwrap();
        // A dangling one is an error (nothing is created through it).
        symlink("../../nowhere", root.join("dangling")).unwrap();
        assert!(mkdir_all(&root, "/dangling/x").is_err());
        assert!(!d.path().join("nowhere").exists());
        mkdir_all(&root, "/rel/a/b").unwrap();
        mkdir_all(&root, "abs/c").unwrap();
        mkdir_all(&root, "/plain/./d/").unwrap();
        mkdir_all(&root, "/plain/d").unwrap(); // already there
        assert!(root.join("outside/a/b").is_dir());
        assert!(root.join("outside2/c").is_dir());
        assert!(root.join("plain/d").is_dir());
        assert!(!d.path().join("outside").exists());
        assert!(!Path::new("/outside2").exists());
        // A file in the way is an error, not a silent success.
        std::fs::write(root.join("file"), "x").unwrap();
        assert!(mkdir_all(&root, "/file/x").is_err());
    }

    fn read_manual(root: &Path, path: &str) -> nix::Result<Vec<u8>> {
        let fd = open_in_root_manual(&root_fd(root), path)?;
        Ok(read_regular(fd, path, 1 << 20).unwrap())
    }

    /// A host dir with a "secret" and an image rootfs next to it.
    fn layout() -> (tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("secret"), "host secret").unwrap();
        let root = d.path().join("rootfs");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("secret"), "image file").unwrap();
        (d, root)
    }

    #[test]
    fn plain_file() {
        let (_d, root) = layout();
        std::fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        let got = read_file(&root, "/etc/passwd", 1024).unwrap().unwrap();
        assert!(got.starts_with(b"root:"));
        assert_eq!(read_manual(&root, "/etc/passwd").unwrap(), got);
    }

    #[test]
    fn missing_file_is_none() {
        let (_d, root) = layout();
        assert!(read_file(&root, "/etc/passwd", 1024).unwrap().is_none());
        assert!(read_file(&root, "/nodir/passwd", 1024).unwrap().is_none());
        assert_eq!(
            read_manual(&root, "/etc/passwd").unwrap_err(),
            Errno::ENOENT
        );
    }

    #[test]
    fn absolute_symlink_stays_inside() {
        let (d, root) = layout();
        let host_secret = d.path().join("secret");
        // Points at the host path of the secret: inside the root that path
        // does not exist.
        symlink(&host_secret, root.join("etc/passwd")).unwrap();
        assert!(read_file(&root, "/etc/passwd", 1024).unwrap().is_none());
        assert_eq!(
            read_manual(&root, "/etc/passwd").unwrap_err(),
            Errno::ENOENT
        );
        // "/secret" resolves to the image's own /secret.
        std::fs::remove_file(root.join("etc/passwd")).unwrap();
        symlink("/secret", root.join("etc/passwd")).unwrap();
        assert_eq!(
            read_file(&root, "/etc/passwd", 1024).unwrap().unwrap(),
            b"image file"
        );
        assert_eq!(read_manual(&root, "/etc/passwd").unwrap(), b"image file");
    }

    #[test]
    fn dotdot_symlink_is_clamped_at_root() {
        let (_d, root) = layout();
        symlink("../../../../../secret", root.join("etc/passwd")).unwrap();
        assert_eq!(
            read_file(&root, "/etc/passwd", 1024).unwrap().unwrap(),
            b"image file"
        );
        assert_eq!(read_manual(&root, "/etc/passwd").unwrap(), b"image file");
        // A symlinked directory component too.
        std::fs::remove_file(root.join("etc/passwd")).unwrap();
        std::fs::remove_dir(root.join("etc")).unwrap();
        symlink("../..", root.join("etc")).unwrap();
        assert_eq!(
            read_file(&root, "/etc/secret", 1024).unwrap().unwrap(),
            b"image file"
        );
        assert_eq!(read_manual(&root, "/etc/secret").unwrap(), b"image file");
    }

    #[test]
    fn symlink_loop_fails() {
        let (_d, root) = layout();
        symlink("/etc/b", root.join("etc/a")).unwrap();
        symlink("/etc/a", root.join("etc/b")).unwrap();
        assert!(read_file(&root, "/etc/a", 1024).is_err());
        assert_eq!(read_manual(&root, "/etc/a").unwrap_err(), Errno::ELOOP);
    }

    #[test]
    fn fifo_and_directory_are_refused_without_blocking() {
        let (_d, root) = layout();
        nix::unistd::mkfifo(&root.join("etc/passwd"), Mode::from_bits_truncate(0o644)).unwrap();
        let e = read_file(&root, "/etc/passwd", 1024).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = read_file(&root, "/etc", 1024).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn size_limit() {
        let (_d, root) = layout();
        std::fs::write(root.join("etc/group"), vec![b'x'; 2000]).unwrap();
        assert!(read_file(&root, "/etc/group", 1999).is_err());
        assert_eq!(
            read_file(&root, "/etc/group", 2000).unwrap().unwrap().len(),
            2000
        );
    }
}
