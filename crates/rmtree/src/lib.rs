//! Removing a directory tree that a container wrote (its writable layer,
//! its dirs in a pod's state), whatever the container made of it.
//!
//! `std::fs::remove_dir_all` holds directory fds per level: a tree 200,000
//! levels deep (a loop of `mkdir d; cd d` inside a container) fails it with
//! EMFILE under a 4096-fd limit (measured here), and berthd's startup sweep
//! would then fail on the same tree at every start; recursive removers (the
//! `remove_dir_all` crate, naive walks) also risk the stack. Here nothing
//! recurses and the fd count is fixed: a fresh work dir is made at the top of the
//! tree; a directory being emptied moves each of its subdirectories into the
//! work dir under a number (`renameat2` with `RENAME_NOREPLACE`), and the
//! numbered dirs are emptied in turn. Every directory is listed once, at
//! most four fds are open, memory does not grow with the tree. Symlinks are
//! never followed (everything is `*at` relative to dir fds opened with
//! `O_NOFOLLOW`).

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Removes `path` and everything below it. A missing `path` is success; a
/// symlink or file at `path` is removed itself (never followed).
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !md.is_dir() {
        return ignore_missing(std::fs::remove_file(path));
    }
    let top: OwnedFd = std::fs::File::options()
        .read(true)
        .custom_flags_nofollow_dir()
        .open(path)?
        .into();
    let (work_name, work) = make_work_dir(top.as_fd())?;
    let mut queue = Queue::default();
    empty_dir(top.as_fd(), Some(&work_name), work.as_fd(), &mut queue)?;
    while let Some(name) = queue.next_pending() {
        let dir = openat(work.as_fd(), name.as_c_str(), DIR_FLAGS, Mode::empty())?;
        empty_dir(dir.as_fd(), None, work.as_fd(), &mut queue)?;
        drop(dir);
        unlinkat(work.as_fd(), name.as_c_str(), UnlinkatFlags::RemoveDir)?;
    }
    drop(work);
    unlinkat(top.as_fd(), work_name.as_c_str(), UnlinkatFlags::RemoveDir)?;
    drop(top);
    ignore_missing(std::fs::remove_dir(path))
}

/// A new, empty dir of ours at the top of the tree (the container may have
/// made any name there already; a leftover of an interrupted removal is
/// emptied as any other subdir).
fn make_work_dir(top: BorrowedFd<'_>) -> io::Result<(CString, OwnedFd)> {
    for k in 0..1000u32 {
        let name = CString::new(format!(".berth-rmtree.{}.{k}", std::process::id()))
            .expect("no NUL in a formatted name");
        match nix::sys::stat::mkdirat(top, name.as_c_str(), Mode::from_bits_truncate(0o700)) {
            Ok(()) => {
                let fd = openat(top, name.as_c_str(), DIR_FLAGS, Mode::empty())?;
                return Ok((name, fd));
            }
            Err(Errno::EEXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::other(
        "cannot make a work dir: every name is taken",
    ))
}

/// The numbered names of directories moved into the work dir, waiting to
/// be emptied: a range, not a list.
#[derive(Default)]
struct Queue {
    next: u64,
    end: u64,
}

impl Queue {
    fn name(n: u64) -> CString {
        CString::new(n.to_string()).expect("no NUL in a formatted number")
    }

    fn next_pending(&mut self) -> Option<CString> {
        (self.next < self.end).then(|| {
            self.next += 1;
            Queue::name(self.next - 1)
        })
    }
}

/// Unlinks every non-directory in `dir` and moves every subdirectory (but
/// `skip`) into `work` under the next number.
fn empty_dir(
    dir: BorrowedFd<'_>,
    skip: Option<&CStr>,
    work: BorrowedFd<'_>,
    queue: &mut Queue,
) -> io::Result<()> {
    // A second fd for the listing: Dir owns (and closes) it.
    let list_fd = openat(dir, c".", DIR_FLAGS, Mode::empty())?;
    let mut listing = Dir::from_fd(list_fd)?;
    for entry in listing.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if name == c"." || name == c".." || Some(name) == skip {
            continue;
        }
        let is_dir = match entry.file_type() {
            Some(t) => t == Type::Directory,
            // Filesystems without d_type: ask.
            None => match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR,
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(e.into()),
            },
        };
        if is_dir {
            move_to_work(dir, name, work, queue)?;
        } else {
            match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(with_name(e, name)),
            }
        }
    }
    Ok(())
}

/// Moves `dir/name` into `work` under the next number; an empty dir is
/// just removed (the common leaf case costs no rename).
fn move_to_work(
    dir: BorrowedFd<'_>,
    name: &CStr,
    work: BorrowedFd<'_>,
    queue: &mut Queue,
) -> io::Result<()> {
    match unlinkat(dir, name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::ENOTEMPTY | Errno::EEXIST) => {}
        Err(e) => return Err(with_name(e, name)),
    }
    let target = Queue::name(queue.end);
    // SAFETY: valid fds and NUL-terminated names; no memory is shared.
    let r = unsafe {
        libc::renameat2(
            dir.as_raw_fd(),
            name.as_ptr(),
            work.as_raw_fd(),
            target.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    match Errno::result(r) {
        Ok(_) => {
            queue.end += 1;
            Ok(())
        }
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(with_name(e, name)),
    }
}

fn with_name(e: Errno, name: &CStr) -> io::Error {
    let name = OsStr::from_bytes(name.to_bytes());
    io::Error::new(
        io::Error::from(e).kind(),
        format!("{}: {e}", Path::new(name).display()),
    )
}

fn ignore_missing(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

trait NoFollowDir {
    fn custom_flags_nofollow_dir(&mut self) -> &mut Self;
}

impl NoFollowDir for std::fs::OpenOptions {
    fn custom_flags_nofollow_dir(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
    }
}

#[cfg(test)]
mod tests;
