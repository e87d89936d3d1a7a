//! The writing half of the unpacker: every filesystem change goes through a dirfd.
//!
//! Invariants that keep writes inside `dest`:
//! - entry paths are cleaned lexically first (`..` above the root is rejected, a leading
//!   `/` is dropped), so a path is a plain list of names below `dest`;
//! - a parent directory is opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//!   from the dirfd of `dest`: a symlink anywhere in the parent path fails with ELOOP and
//!   the entry is rejected — we never follow one, not even to a place inside `dest`;
//! - the final component is only ever touched with `*at` calls that do not follow it
//!   (`O_CREAT|O_EXCL|O_NOFOLLOW`, `mkdirat`, `symlinkat`, `mknodat`, `linkat` without
//!   `AT_SYMLINK_FOLLOW`, `fchownat`/`utimensat` with `AT_SYMLINK_NOFOLLOW`), or through
//!   an fd we just opened with `O_NOFOLLOW`;
//! - only this thread writes below `dest` (the caller gives us a fresh private dir), so
//!   there is no concurrent attacker to race between "created" and "chmod'ed".

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, fstatat, futimens, makedev,
    mkdirat, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, linkat, symlinkat, unlinkat};
use tracing::{debug, warn};

use super::{MAX_PATH_LEN, UnpackError, lossy, stream_error};

/// Size of the buffer file data is copied through (one allocation per layer).
const COPY_BUF_SIZE: usize = 256 << 10;
/// Memory for pending directory times: ~2.5M directories of 40-byte paths. Real
/// layers use a few MB; a hostile one must not make us hold gigabytes.
const MAX_DIR_TIMES_BYTES: usize = 256 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    File,
    Dir,
    Symlink,
    HardLink,
    Char,
    Block,
    Fifo,
    /// Parsed but nothing to create (PAX global header).
    Skip,
}

pub(super) struct EntryMeta {
    pub(super) kind: Kind,
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) atime: TimeSpec,
    pub(super) mtime: TimeSpec,
    pub(super) dev_major: u32,
    pub(super) dev_minor: u32,
}

pub(super) type Xattrs = Vec<(std::ffi::CString, Vec<u8>)>;

/// Directory handles: the layer root and a one-slot cache of the last parent directory
/// (tar streams list a directory's files together, so most lookups hit).
struct Dirs {
    root: OwnedFd,
    cache: Option<(Vec<u8>, OwnedFd)>,
    /// Set when something was removed: a cached path may now name a dead directory.
    dirty: Cell<bool>,
}

pub(super) struct Extractor {
    dirs: Dirs,
    /// Directory mtimes are set at the end: creating children changes them.
    /// Keyed by path so a directory listed again costs nothing more.
    dir_times: HashMap<Box<[u8]>, (TimeSpec, TimeSpec)>,
    /// Bytes of paths held in `dir_times` (bounded: hostile layers list many dirs).
    dir_times_bytes: usize,
    pub(super) buf: Vec<u8>,
    norm: Vec<u8>,
    link_norm: Vec<u8>,
    pub(super) entries: u64,
    pub(super) declared_bytes: u64,
    pub(super) file_bytes: u64,
    /// See [`super::UnpackLimits::min_free_bytes`].
    pub(super) min_free_bytes: u64,
    /// File data written since the last free-space check.
    since_free_check: u64,
    warned_xattr: bool,
}

fn dir_how() -> OpenHow {
    OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        )
}

/// openat2 for a directory below `base`; retries the EAGAIN openat2 may return when
/// the filesystem changed during a scoped lookup.
fn open_dir_beneath(base: BorrowedFd<'_>, path: &[u8]) -> nix::Result<OwnedFd> {
    let mut tries = 0;
    loop {
        match openat2(base, path, dir_how()) {
            Err(Errno::EAGAIN) if tries < 16 => tries += 1,
            r => return r,
        }
    }
}

fn io_err(path: &[u8], op: &'static str, e: Errno) -> UnpackError {
    UnpackError::Io {
        path: lossy(path),
        op,
        source: io::Error::from(e),
    }
}

fn unsafe_entry(path: &[u8], reason: impl Into<String>) -> UnpackError {
    UnpackError::UnsafeEntry {
        path: lossy(path),
        reason: reason.into(),
    }
}

/// Error for a failed parent-directory lookup.
fn parent_err(raw: &[u8], e: Errno) -> UnpackError {
    match e {
        Errno::ELOOP => unsafe_entry(
            raw,
            "a parent directory in its path is a symlink (symlinks are never followed while extracting)",
        ),
        Errno::ENOTDIR => unsafe_entry(raw, "a parent path component is not a directory"),
        Errno::EXDEV => unsafe_entry(raw, "path escapes the layer directory"),
        e => io_err(raw, "open parent directory", e),
    }
}

impl Dirs {
    /// Makes directory `parent` (cleaned, relative) ready for `get`, creating missing
    /// directories.
    fn prepare(&mut self, parent: &[u8], raw: &[u8]) -> Result<(), UnpackError> {
        if self.dirty.replace(false) {
            self.cache = None;
        }
        if parent.is_empty() {
            return Ok(());
        }
        let hit = matches!(&self.cache, Some((p, _)) if p.as_slice() == parent);
        if !hit {
            let fd = match open_dir_beneath(self.root.as_fd(), parent) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => self.create_parents(parent, raw)?,
                Err(e) => return Err(parent_err(raw, e)),
            };
            match &mut self.cache {
                Some((p, f)) => {
                    p.clear();
                    p.extend_from_slice(parent);
                    *f = fd;
                }
                None => self.cache = Some((parent.to_vec(), fd)),
            }
        }
        Ok(())
    }

    /// The fd of `parent` after a successful `prepare(parent)`.
    fn get(&self, parent: &[u8]) -> BorrowedFd<'_> {
        if parent.is_empty() {
            return self.root.as_fd();
        }
        self.cache.as_ref().expect("prepared").1.as_fd()
    }

    /// Walks `parent` one component at a time, creating what is missing (mode 0755,
    /// like docker and containerd), never following a symlink.
    fn create_parents(&self, parent: &[u8], raw: &[u8]) -> Result<OwnedFd, UnpackError> {
        let mut cur: Option<OwnedFd> = None;
        for comp in parent.split(|&b| b == b'/') {
            let base = cur.as_ref().map_or(self.root.as_fd(), |f| f.as_fd());
            let next = match open_dir_beneath(base, comp) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    match mkdirat(base, comp, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(io_err(raw, "create parent directory", e)),
                    }
                    let fd = open_dir_beneath(base, comp).map_err(|e| parent_err(raw, e))?;
                    // The umask may have narrowed 0755; containers need to traverse it.
                    fchmod(&fd, Mode::from_bits_truncate(0o755))
                        .map_err(|e| io_err(raw, "chmod parent directory", e))?;
                    fd
                }
                Err(e) => return Err(parent_err(raw, e)),
            };
            cur = Some(next);
        }
        Ok(cur.expect("parent is not empty"))
    }
}

/// Cleans an entry path lexically into `out` ("a/b/c", no leading or trailing slash,
/// empty for the root). Leading `/` is dropped (paths are relative to the layer root,
/// like containerd); `..` that would climb above the root is rejected.
pub(super) fn normalize(raw: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
    out.clear();
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if out.is_empty() {
                    return Err("path climbs above the layer root with `..`");
                }
                let cut = out.iter().rposition(|&b| b == b'/').unwrap_or(0);
                out.truncate(cut);
            }
            c => {
                if c.contains(&0) {
                    return Err("path contains a NUL byte");
                }
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    if out.len() > MAX_PATH_LEN {
        return Err("path is longer than PATH_MAX");
    }
    Ok(())
}

/// (parent, name) of a cleaned non-empty path.
fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// Whether an image may set this xattr. `trusted.*` (including `trusted.overlay.*`,
/// which would forge overlayfs metadata: opaque dirs, redirects, metacopy) and
/// `user.overlay.*` (the same for `userxattr` mounts) are refused; so are other
/// `security.*` labels, which belong to the host's LSM policy.
pub(crate) fn xattr_allowed(name: &[u8]) -> bool {
    match name.strip_prefix(b"user.") {
        Some(rest) => !rest.starts_with(b"overlay."),
        None => name == b"security.capability",
    }
}

impl Extractor {
    pub(super) fn open(dest: &Path) -> Result<Extractor, UnpackError> {
        let bad = || UnpackError::BadDestination {
            path: dest.display().to_string(),
        };
        // `dest` itself is trusted (the caller made it); everything below it is not.
        let root: OwnedFd = File::open(dest)
            .map_err(|e| UnpackError::Io {
                path: dest.display().to_string(),
                op: "open layer directory",
                source: e,
            })?
            .into();
        let st = nix::sys::stat::fstat(&root).map_err(|_| bad())?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
            return Err(bad());
        }
        // Hardlink targets must be entries of this layer: nothing else may be there.
        if !read_dir_names(root.as_fd()).map_err(|_| bad())?.is_empty() {
            return Err(bad());
        }
        Ok(Extractor {
            dirs: Dirs {
                root,
                cache: None,
                dirty: Cell::new(false),
            },
            dir_times: HashMap::new(),
            dir_times_bytes: 0,
            buf: vec![0; COPY_BUF_SIZE],
            norm: Vec::with_capacity(256),
            link_norm: Vec::with_capacity(256),
            entries: 0,
            declared_bytes: 0,
            file_bytes: 0,
            min_free_bytes: 0,
            // The first data written checks at once.
            since_free_check: super::FREE_SPACE_CHECK_BYTES,
            warned_xattr: false,
        })
    }

    /// Extracts one entry; reads its data to the end in every successful case.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn extract<R: Read>(
        &mut self,
        entry: &mut R,
        raw: &[u8],
        link: &[u8],
        meta: &EntryMeta,
        xattrs: &Xattrs,
        size: u64,
    ) -> Result<(), UnpackError> {
        let mut norm = std::mem::take(&mut self.norm);
        normalize(raw, &mut norm).map_err(|r| unsafe_entry(raw, r))?;
        let r = self.extract_normalized(entry, raw, &norm, link, meta, xattrs, size);
        self.norm = norm;
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn extract_normalized<R: Read>(
        &mut self,
        entry: &mut R,
        raw: &[u8],
        norm: &[u8],
        link: &[u8],
        meta: &EntryMeta,
        xattrs: &Xattrs,
        size: u64,
    ) -> Result<(), UnpackError> {
        if meta.kind == Kind::Skip {
            return self.drain(entry, raw);
        }
        if norm.is_empty() {
            // The layer root itself ("./"): only a directory may describe it.
            if meta.kind != Kind::Dir {
                return Err(unsafe_entry(raw, "entry would replace the layer root"));
            }
            let root = self.dirs.root.try_clone().map_err(|e| UnpackError::Io {
                path: lossy(raw),
                op: "dup layer directory",
                source: e,
            })?;
            self.set_fd_meta(root.as_fd(), raw, meta, xattrs)?;
            self.record_dir_times(b"", raw, meta)?;
            return self.drain(entry, raw);
        }
        let (parent, name) = split(norm);

        // aufs metadata (`.wh..wh.plnk/...`, `.wh..wh.aufs`): meaningless for overlayfs.
        if parent
            .split(|&b| b == b'/')
            .any(|c| c.starts_with(b".wh..wh."))
        {
            debug!(path = %lossy(raw), "skipping aufs metadata entry");
            return self.drain(entry, raw);
        }
        if let Some(hidden) = name.strip_prefix(b".wh.") {
            if hidden == b".wh..opq" {
                self.make_opaque(parent, raw)?;
            } else if hidden.starts_with(b".wh.") {
                debug!(path = %lossy(raw), "skipping aufs metadata entry");
            } else {
                self.make_whiteout(parent, hidden, raw)?;
            }
            return self.drain(entry, raw);
        }

        match meta.kind {
            Kind::File => self.make_file(entry, raw, parent, name, meta, xattrs, size),
            Kind::Dir => {
                self.make_dir(raw, norm, parent, name, meta, xattrs)?;
                self.drain(entry, raw)
            }
            Kind::Symlink => {
                self.make_symlink(raw, parent, name, link, meta)?;
                self.drain(entry, raw)
            }
            Kind::HardLink => {
                self.make_hardlink(raw, norm, parent, name, link)?;
                self.drain(entry, raw)
            }
            Kind::Char | Kind::Block | Kind::Fifo => {
                self.make_node(raw, parent, name, meta)?;
                self.drain(entry, raw)
            }
            Kind::Skip => unreachable!("handled above"),
        }
    }

    /// Reads and discards what is left of an entry's data.
    fn drain<R: Read>(&mut self, entry: &mut R, raw: &[u8]) -> Result<(), UnpackError> {
        super::drain_read(entry, &mut self.buf)
            .map(drop)
            .map_err(|e| stream_error(e, raw, "entry"))
    }

    #[allow(clippy::too_many_arguments)]
    fn make_file<R: Read>(
        &mut self,
        entry: &mut R,
        raw: &[u8],
        parent: &[u8],
        name: &[u8],
        meta: &EntryMeta,
        xattrs: &Xattrs,
        size: u64,
    ) -> Result<(), UnpackError> {
        self.dirs.prepare(parent, raw)?;
        let pfd = self.dirs.get(parent);
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = replacing(pfd, name, &self.dirs.dirty, || {
            openat(pfd, name, flags, Mode::from_bits_truncate(0o600))
        })
        .map_err(|e| io_err(raw, "create file", e))?;
        let mut file = File::from(fd);
        // `read` counts what the entry held (holes of a GNU sparse entry
        // come out of the tar reader as zeros); `stored` what reached the
        // disk. Runs of zero blocks become holes: a layer of a few KB that
        // declares GiBs of sparse zeros costs no disk.
        let mut read: u64 = 0;
        let mut stored: u64 = 0;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(stream_error(e, raw, "entry")),
            };
            let wrote = write_sparse(&mut file, &self.buf[..n]).map_err(|e| UnpackError::Io {
                path: lossy(raw),
                op: "write file",
                source: e,
            })?;
            read += n as u64;
            stored += wrote;
            self.since_free_check += wrote;
            if self.since_free_check >= super::FREE_SPACE_CHECK_BYTES {
                self.since_free_check = 0;
                self.check_free_space(file.as_fd(), raw)?;
            }
        }
        let written = read;
        if written != size {
            return Err(UnpackError::Corrupt {
                context: format!("entry {:?}", lossy(raw)),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("data ends after {written} of {size} bytes"),
                ),
            });
        }
        // A trailing hole: the size comes from the length, not from data.
        file.set_len(size).map_err(|e| UnpackError::Io {
            path: lossy(raw),
            op: "set file size",
            source: e,
        })?;
        self.file_bytes += stored;
        // Metadata after the data: writing clears setuid bits and security.capability.
        self.set_fd_meta(file.as_fd(), raw, meta, xattrs)?;
        futimens(&file, &meta.atime, &meta.mtime).map_err(|e| io_err(raw, "set file times", e))
    }

    /// Fails with [`UnpackError::DiskFull`] when the layer's filesystem has
    /// less than `min_free_bytes` left.
    fn check_free_space(&self, fd: BorrowedFd<'_>, raw: &[u8]) -> Result<(), UnpackError> {
        if self.min_free_bytes == 0 {
            return Ok(());
        }
        let st = nix::sys::statvfs::fstatvfs(fd).map_err(|e| io_err(raw, "statvfs", e))?;
        let free = st.blocks_available().saturating_mul(st.fragment_size());
        if free < self.min_free_bytes {
            return Err(UnpackError::DiskFull {
                path: lossy(raw),
                free,
                reserve: self.min_free_bytes,
            });
        }
        Ok(())
    }

    /// Owner, then mode (chown clears setuid/setgid), then xattrs (chown clears
    /// security.capability).
    fn set_fd_meta(
        &mut self,
        fd: BorrowedFd<'_>,
        raw: &[u8],
        meta: &EntryMeta,
        xattrs: &Xattrs,
    ) -> Result<(), UnpackError> {
        fchown(
            fd,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
        )
        .map_err(|e| io_err(raw, "chown", e))?;
        fchmod(fd, Mode::from_bits_truncate(meta.mode)).map_err(|e| io_err(raw, "chmod", e))?;
        for (name, value) in xattrs {
            self.set_xattr(fd, raw, name, value)?;
        }
        Ok(())
    }

    fn set_xattr(
        &mut self,
        fd: BorrowedFd<'_>,
        raw: &[u8],
        name: &CStr,
        value: &[u8],
    ) -> Result<(), UnpackError> {
        if !xattr_allowed(name.to_bytes()) {
            debug!(path = %lossy(raw), xattr = ?name, "skipping xattr an image may not set");
            return Ok(());
        }
        match fsetxattr(fd, name, value) {
            Ok(()) => Ok(()),
            // Like docker: a filesystem without (user) xattrs is not fatal.
            Err(e @ (Errno::EOPNOTSUPP | Errno::EPERM)) => {
                if !self.warned_xattr {
                    self.warned_xattr = true;
                    warn!(path = %lossy(raw), xattr = ?name, error = %e, "cannot set xattr; skipping (reported once per layer)");
                }
                Ok(())
            }
            Err(e) => Err(io_err(raw, "set xattr", e)),
        }
    }

    fn make_dir(
        &mut self,
        raw: &[u8],
        norm: &[u8],
        parent: &[u8],
        name: &[u8],
        meta: &EntryMeta,
        xattrs: &Xattrs,
    ) -> Result<(), UnpackError> {
        self.dirs.prepare(parent, raw)?;
        let pfd = self.dirs.get(parent);
        let mode = Mode::from_bits_truncate(0o700);
        match mkdirat(pfd, name, mode) {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                let st = fstatat(pfd, name, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(|e| io_err(raw, "stat existing entry", e))?;
                // A directory over a directory merges; anything else is replaced.
                if !is_dir(st.st_mode) {
                    remove_any(pfd, name, &self.dirs.dirty)
                        .map_err(|e| io_err(raw, "remove existing entry", e))?;
                    mkdirat(pfd, name, mode).map_err(|e| io_err(raw, "create directory", e))?;
                }
            }
            Err(e) => return Err(io_err(raw, "create directory", e)),
        }
        let dfd = openat(
            pfd,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(raw, "open directory", e))?;
        self.set_fd_meta(dfd.as_fd(), raw, meta, xattrs)?;
        self.record_dir_times(norm, raw, meta)?;
        // Its children usually come next.
        if self.dirs.dirty.replace(false) {
            self.dirs.cache = None;
        }
        match &mut self.dirs.cache {
            Some((p, f)) => {
                p.clear();
                p.extend_from_slice(norm);
                *f = dfd;
            }
            None => self.dirs.cache = Some((norm.to_vec(), dfd)),
        }
        Ok(())
    }

    fn make_symlink(
        &mut self,
        raw: &[u8],
        parent: &[u8],
        name: &[u8],
        target: &[u8],
        meta: &EntryMeta,
    ) -> Result<(), UnpackError> {
        // The target is only data (resolved inside the container at run time); we never
        // follow it. It just has to be something symlink(2) can store.
        if target.contains(&0) {
            return Err(unsafe_entry(raw, "symlink target contains a NUL byte"));
        }
        self.dirs.prepare(parent, raw)?;
        let pfd = self.dirs.get(parent);
        replacing(pfd, name, &self.dirs.dirty, || symlinkat(target, pfd, name))
            .map_err(|e| io_err(raw, "create symlink", e))?;
        self.set_at_meta(pfd, raw, name, meta, false)
    }

    /// chown (+ chmod for non-symlinks) and times on `pfd/name` without following it.
    fn set_at_meta(
        &self,
        pfd: BorrowedFd<'_>,
        raw: &[u8],
        name: &[u8],
        meta: &EntryMeta,
        chmod: bool,
    ) -> Result<(), UnpackError> {
        fchownat(
            pfd,
            name,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io_err(raw, "chown", e))?;
        if chmod {
            // Not a symlink: we created it this instant and nobody else writes here.
            fchmodat(
                pfd,
                name,
                Mode::from_bits_truncate(meta.mode),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| io_err(raw, "chmod", e))?;
        }
        utimensat(
            pfd,
            name,
            &meta.atime,
            &meta.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| io_err(raw, "set times", e))
    }

    fn make_hardlink(
        &mut self,
        raw: &[u8],
        norm: &[u8],
        parent: &[u8],
        name: &[u8],
        target: &[u8],
    ) -> Result<(), UnpackError> {
        let mut tnorm = std::mem::take(&mut self.link_norm);
        let r = (|| {
            normalize(target, &mut tnorm)
                .map_err(|r| unsafe_entry(raw, format!("hardlink target: {r}")))?;
            if tnorm.is_empty() {
                return Err(unsafe_entry(raw, "hardlink to the layer root"));
            }
            if tnorm.as_slice() == norm {
                return Ok(()); // a link to itself: nothing to do
            }
            let (tparent, tname) = split(&tnorm);
            // The target must be an earlier entry of this layer, reached without symlinks.
            let tdir = if tparent.is_empty() {
                self.dirs.root.try_clone().map_err(|e| UnpackError::Io {
                    path: lossy(raw),
                    op: "dup layer directory",
                    source: e,
                })?
            } else {
                open_dir_beneath(self.dirs.root.as_fd(), tparent).map_err(|e| match e {
                    Errno::ELOOP => {
                        unsafe_entry(raw, "hardlink target path goes through a symlink")
                    }
                    Errno::ENOENT | Errno::ENOTDIR => {
                        unsafe_entry(raw, "hardlink target is not an earlier entry of this layer")
                    }
                    e => io_err(raw, "open hardlink target directory", e),
                })?
            };
            let tst = match fstatat(&tdir, tname, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::ENOENT) => {
                    return Err(unsafe_entry(
                        raw,
                        "hardlink target is not an earlier entry of this layer",
                    ));
                }
                Err(e) => return Err(io_err(raw, "stat hardlink target", e)),
            };
            if is_dir(tst.st_mode) {
                return Err(unsafe_entry(raw, "hardlink target is a directory"));
            }
            self.dirs.prepare(parent, raw)?;
            let pfd = self.dirs.get(parent);
            let link = || linkat(&tdir, tname, pfd, name, AtFlags::empty());
            match link() {
                Ok(()) => Ok(()),
                Err(Errno::EEXIST) => match fstatat(pfd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) if st.st_dev == tst.st_dev && st.st_ino == tst.st_ino => Ok(()),
                    _ => {
                        remove_any(pfd, name, &self.dirs.dirty)
                            .map_err(|e| io_err(raw, "remove existing entry", e))?;
                        link().map_err(|e| io_err(raw, "create hardlink", e))
                    }
                },
                Err(e) => Err(io_err(raw, "create hardlink", e)),
            }
        })();
        self.link_norm = tnorm;
        r
    }

    fn make_node(
        &mut self,
        raw: &[u8],
        parent: &[u8],
        name: &[u8],
        meta: &EntryMeta,
    ) -> Result<(), UnpackError> {
        let (kind, dev) = match meta.kind {
            Kind::Char => (
                SFlag::S_IFCHR,
                makedev(meta.dev_major.into(), meta.dev_minor.into()),
            ),
            Kind::Block => (
                SFlag::S_IFBLK,
                makedev(meta.dev_major.into(), meta.dev_minor.into()),
            ),
            _ => (SFlag::S_IFIFO, 0),
        };
        self.dirs.prepare(parent, raw)?;
        let pfd = self.dirs.get(parent);
        replacing(pfd, name, &self.dirs.dirty, || {
            mknodat(pfd, name, kind, Mode::empty(), dev)
        })
        .map_err(|e| io_err(raw, "mknod", e))?;
        self.set_at_meta(pfd, raw, name, meta, true)
    }

    /// `.wh.NAME` → overlayfs whiteout: char device 0/0 named NAME.
    fn make_whiteout(
        &mut self,
        parent: &[u8],
        hidden: &[u8],
        raw: &[u8],
    ) -> Result<(), UnpackError> {
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(unsafe_entry(raw, "whiteout of an invalid name"));
        }
        self.dirs.prepare(parent, raw)?;
        let pfd = self.dirs.get(parent);
        match mknodat(pfd, hidden, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)) {
            Ok(()) => Ok(()),
            // Something of that name is in this layer already: per the OCI spec a whiteout
            // hides only lower layers, so the entry of this layer stays.
            Err(Errno::EEXIST) => Ok(()),
            Err(e) => Err(io_err(raw, "create whiteout device", e)),
        }
    }

    /// `DIR/.wh..wh..opq` → `trusted.overlay.opaque=y` on DIR.
    fn make_opaque(&mut self, parent: &[u8], raw: &[u8]) -> Result<(), UnpackError> {
        self.dirs.prepare(parent, raw)?;
        let pfd = self.dirs.get(parent);
        fsetxattr(pfd, c"trusted.overlay.opaque", b"y")
            .map_err(|e| io_err(raw, "set trusted.overlay.opaque", e))
    }

    fn record_dir_times(
        &mut self,
        norm: &[u8],
        raw: &[u8],
        meta: &EntryMeta,
    ) -> Result<(), UnpackError> {
        let times = (meta.atime, meta.mtime);
        if let Some(t) = self.dir_times.get_mut(norm) {
            *t = times;
            return Ok(());
        }
        self.dir_times_bytes += norm.len() + 64;
        if self.dir_times_bytes > MAX_DIR_TIMES_BYTES {
            return Err(UnpackError::LimitExceeded {
                path: lossy(raw),
                what: "memory for directory metadata",
                limit: MAX_DIR_TIMES_BYTES as u64,
            });
        }
        self.dir_times.insert(norm.into(), times);
        Ok(())
    }

    /// Sets the recorded directory times, now that no more children will be created.
    pub(super) fn apply_dir_times(&mut self) -> Result<(), UnpackError> {
        for (path, (atime, mtime)) in std::mem::take(&mut self.dir_times) {
            let fd = if path.is_empty() {
                None
            } else {
                match open_dir_beneath(self.dirs.root.as_fd(), &path) {
                    Ok(fd) => Some(fd),
                    // Replaced by a later entry: its times are no longer ours to set.
                    Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => continue,
                    Err(e) => return Err(io_err(&path, "open directory", e)),
                }
            };
            let fd = fd.as_ref().map_or(self.dirs.root.as_fd(), |f| f.as_fd());
            futimens(fd, &atime, &mtime).map_err(|e| io_err(&path, "set directory times", e))?;
        }
        Ok(())
    }
}

/// Block size holes are made of: a zero block is skipped, not written.
const HOLE_BLOCK: usize = 4096;

/// Writes `data` at the file's position, seeking over whole zero blocks
/// instead of writing them; runs of data blocks go out in one write.
/// Returns the bytes written to disk.
fn write_sparse(file: &mut File, data: &[u8]) -> io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut stored = 0;
    let mut run_start = 0; // start of the data run not yet written
    let mut hole: i64 = 0; // zero bytes skipped before that run
    let mut at = 0;
    while at < data.len() {
        let end = (at + HOLE_BLOCK).min(data.len());
        if end - at == HOLE_BLOCK && is_zero(&data[at..end]) {
            if run_start < at {
                file.write_all(&data[run_start..at])?;
                stored += (at - run_start) as u64;
            }
            hole += HOLE_BLOCK as i64;
            run_start = end;
        } else if hole > 0 {
            file.seek(SeekFrom::Current(hole))?;
            hole = 0;
        }
        at = end;
    }
    if run_start < data.len() {
        file.write_all(&data[run_start..])?;
        stored += (data.len() - run_start) as u64;
    }
    if hole > 0 {
        file.seek(SeekFrom::Current(hole))?;
    }
    Ok(stored)
}

/// Whether `block` is all zeros: data blocks fail on their first bytes;
/// zero blocks are scanned 16 bytes at a time.
fn is_zero(block: &[u8]) -> bool {
    let mut words = block.chunks_exact(16);
    words.all(|w| u128::from_ne_bytes(w.try_into().unwrap_or([1; 16])) == 0)
        && words.remainder().iter().all(|&b| b == 0)
}

fn is_dir(mode: u32) -> bool {
    mode & libc::S_IFMT == libc::S_IFDIR
}

/// Runs `create`; if the name exists, removes whatever is there (a directory with its
/// whole tree) and tries once more. Later entries replace earlier ones, as in docker.
fn replacing<T>(
    pfd: BorrowedFd<'_>,
    name: &[u8],
    dirty: &Cell<bool>,
    mut create: impl FnMut() -> nix::Result<T>,
) -> nix::Result<T> {
    match create() {
        Err(Errno::EEXIST) => {
            remove_any(pfd, name, dirty)?;
            create()
        }
        r => r,
    }
}

/// Removes `pfd/name` whatever it is, without following symlinks.
fn remove_any(pfd: BorrowedFd<'_>, name: &[u8], dirty: &Cell<bool>) -> nix::Result<()> {
    match unlinkat(pfd, name, UnlinkatFlags::NoRemoveDir) {
        Err(Errno::EISDIR) => {
            dirty.set(true);
            remove_tree(pfd, name)
        }
        r => r,
    }
}

/// Recursive removal of directory `pfd/name`. Depth is bounded by MAX_PATH_LEN.
fn remove_tree(pfd: BorrowedFd<'_>, name: &[u8]) -> nix::Result<()> {
    let dfd = openat(
        pfd,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    for child in read_dir_names(dfd.as_fd())? {
        match unlinkat(&dfd, child.as_slice(), UnlinkatFlags::NoRemoveDir) {
            Err(Errno::EISDIR) => remove_tree(dfd.as_fd(), &child)?,
            r => r?,
        }
    }
    drop(dfd);
    unlinkat(pfd, name, UnlinkatFlags::RemoveDir)
}

/// Names in a directory (without `.` and `..`).
fn read_dir_names(fd: BorrowedFd<'_>) -> nix::Result<Vec<Vec<u8>>> {
    // fdopendir takes ownership of its fd: give it a duplicate.
    let dup = fd.try_clone_to_owned().map_err(|_| Errno::last())?;
    let raw = dup.into_raw_fd();
    // SAFETY: `raw` is a valid directory fd we own; on success DIR owns it.
    let dir = unsafe { libc::fdopendir(raw) };
    if dir.is_null() {
        let e = Errno::last();
        // SAFETY: fdopendir failed, so we still own `raw`.
        drop(unsafe { OwnedFd::from_raw_fd(raw) });
        return Err(e);
    }
    struct Guard(*mut libc::DIR);
    impl Drop for Guard {
        fn drop(&mut self) {
            // SAFETY: a DIR from fdopendir, closed exactly once.
            unsafe { libc::closedir(self.0) };
        }
    }
    let dir = Guard(dir);
    // SAFETY: a fresh DIR; rewinding is needed as the dup shares the file offset.
    unsafe { libc::rewinddir(dir.0) };
    let mut names = Vec::new();
    loop {
        Errno::clear();
        // SAFETY: valid DIR; the returned pointer is valid until the next readdir.
        let ent = unsafe { libc::readdir64(dir.0) };
        if ent.is_null() {
            let e = Errno::last_raw();
            if e != 0 {
                return Err(Errno::from_raw(e));
            }
            break;
        }
        // SAFETY: d_name is a NUL-terminated string inside *ent.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) }.to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    Ok(names)
}

fn fsetxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> nix::Result<()> {
    // SAFETY: valid fd, NUL-terminated name, value pointer/length from a slice.
    let r = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(r).map(drop)
}
