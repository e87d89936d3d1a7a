//! The monitor runs from a sealed in-memory copy of its binary, never from
//! the host's file (the CVE-2019-5736 class).
//!
//! A container's init and every exec are clones of the monitor until they
//! exec the user's program, so meanwhile their `/proc/<pid>/exe` is the
//! monitor's executable, and an exec of `/proc/self/exe` in the container
//! runs it. Were that the host's `berth-monitor`, a process in the container
//! could keep an fd to it and write it once nothing runs it: the next
//! monitor would run the container's code as root on the host. So monitors
//! run from a memfd copy sealed against every change (`F_SEAL_SEAL`, `SHRINK`,
//! `GROW`, `WRITE`, and `EXEC` where the kernel has it: no chmod of its exec
//! bits either): what a container reaches is that copy, which no one can
//! change.
//!
//! Cost: [`spawn`](crate::spawn) makes one copy per process (berthd) and
//! starts every monitor from it, so the monitors share its pages (the
//! binary's size once per berthd, not per pod); a monitor started another
//! way copies itself once at startup ([`reexec_if_unsealed`]), never per
//! container or exec.

use std::ffi::{CStr, CString, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// argv\[0\] under which the sealed copy runs as PID 1 of a pod
/// (`berth_shim::pod_init`): berthd's pinning helper execs the copy it is
/// handed under this name.
pub const POD_INIT_ARGV0: &CStr = c"berth-pod-init";

/// The seals every copy carries (`F_SEAL_EXEC` is added when the kernel has it).
pub const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// A sealed memfd copy of the file at `path`, named `name` (what
/// `/proc/<pid>/exe` of its processes shows: `/memfd:<name> (deleted)`).
pub fn sealed_copy(path: &Path, name: &CStr) -> io::Result<OwnedFd> {
    let mut src = File::open(path)?;
    let memfd = memfd_exec(name)?;
    let mut dst = File::from(memfd);
    io::copy(&mut src, &mut dst)?;
    let fd = OwnedFd::from(dst);
    // F_SEAL_EXEC (Linux 6.3) keeps a holder of the fd (container root has
    // CAP_FOWNER) from chmod-ing the copy unexecutable, which would stop
    // every later monitor of this berthd; older kernels refuse the bit.
    if add_seals(&fd, SEALS | libc::F_SEAL_EXEC).is_err() {
        add_seals(&fd, SEALS)?;
    }
    Ok(fd)
}

/// memfd_create with sealing allowed and, where the kernel knows
/// `MFD_EXEC` (6.3+, whose `vm.memfd_noexec` may default memfds to
/// non-executable), executable.
fn memfd_exec(name: &CStr) -> io::Result<OwnedFd> {
    let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    for flags in [base | libc::MFD_EXEC, base] {
        // SAFETY: a NUL-terminated name and plain flags.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
        if fd >= 0 {
            // SAFETY: memfd_create returned a new fd that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINVAL) {
            return Err(io::Error::new(
                err.kind(),
                format!(
                    "memfd_create for a sealed copy of the monitor: {err} (vm.memfd_noexec = 2 forbids executable memfds)"
                ),
            ));
        }
    }
    Err(io::Error::other(
        "memfd_create with sealing is not supported by this kernel",
    ))
}

fn add_seals(fd: &OwnedFd, seals: libc::c_int) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The seals of the file behind `fd` (an error for anything but a memfd).
pub fn seals_of(fd: &impl AsRawFd) -> io::Result<libc::c_int> {
    // SAFETY: fcntl on an open fd.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    if seals < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(seals)
}

/// Whether the executable of process `pid` ("self" for this one) is a
/// copy carrying every seal of [`SEALS`].
pub fn exe_is_sealed(pid: &str) -> bool {
    File::open(format!("/proc/{pid}/exe"))
        .and_then(|f| seals_of(&f))
        .is_ok_and(|s| s & SEALS == SEALS)
}

/// Re-executes this process from a sealed copy of its own executable,
/// same argv and environment, unless it already runs from one. Returns
/// only on failure. Call first thing in `main`, while single-threaded.
pub fn reexec_if_unsealed(name: &CStr) -> io::Result<()> {
    if exe_is_sealed("self") {
        return Ok(());
    }
    let fd = sealed_copy(Path::new("/proc/self/exe"), name)?;
    let args = cstrings(std::env::args_os())?;
    let env = cstrings(std::env::vars_os().map(|(k, v)| {
        let mut kv = k;
        kv.push("=");
        kv.push(v);
        kv
    }))?;
    let argv = null_terminated(&args);
    let envp = null_terminated(&env);
    // SAFETY: NUL-terminated arrays of pointers into `args`/`env`, which
    // outlive the call; on success nothing returns.
    unsafe {
        libc::execveat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
    }
    Err(io::Error::last_os_error())
}

fn cstrings(items: impl Iterator<Item = OsString>) -> io::Result<Vec<CString>> {
    items
        .map(|s| CString::new(s.as_bytes()).map_err(io::Error::other))
        .collect()
}

fn null_terminated(items: &[CString]) -> Vec<*mut libc::c_char> {
    items
        .iter()
        .map(|s| s.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect()
}

/// The file a copy was made from: a new copy is made when it changes (the
/// binary was upgraded in place), so new monitors run the installed build.
#[derive(PartialEq)]
struct Identity {
    path: PathBuf,
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
}

impl Identity {
    fn of(path: &Path) -> io::Result<Self> {
        let m = std::fs::metadata(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
        })
    }
}

static SHARED: Mutex<Option<(Identity, Arc<OwnedFd>)>> = Mutex::new(None);

/// This process's sealed copy of `binary`, made on first use and again
/// when the file changes. The caller holds the fd while it execs
/// `/proc/self/fd/<fd>`.
pub fn shared_copy(binary: &Path) -> io::Result<Arc<OwnedFd>> {
    let id = Identity::of(binary)?;
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((have, fd)) = shared.as_ref()
        && *have == id
    {
        return Ok(fd.clone());
    }
    let fd = Arc::new(sealed_copy(binary, c"berth-monitor")?);
    *shared = Some((id, fd.clone()));
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, Write};

    fn copy_of(bytes: &[u8]) -> (tempfile::NamedTempFile, OwnedFd) {
        let mut src = tempfile::NamedTempFile::new().unwrap();
        src.write_all(bytes).unwrap();
        let fd = sealed_copy(src.path(), c"berth-test").unwrap();
        (src, fd)
    }

    #[test]
    fn copy_is_sealed_against_every_change() {
        let (_src, fd) = copy_of(b"#!/bin/true\nbinary");
        assert_eq!(seals_of(&fd).unwrap() & SEALS, SEALS);
        let mut f = File::from(fd);
        f.rewind().unwrap();
        assert_eq!(
            std::io::read_to_string(&mut f).unwrap(),
            "#!/bin/true\nbinary"
        );
        f.rewind().unwrap();
        let eperm = |r: io::Result<()>| r.unwrap_err().raw_os_error();
        assert_eq!(eperm(f.write_all(b"evil")), Some(libc::EPERM));
        assert_eq!(eperm(f.set_len(1)), Some(libc::EPERM));
        assert_eq!(eperm(f.set_len(1 << 20)), Some(libc::EPERM));
        // No seal can be removed or added (F_SEAL_SEAL).
        let fd = OwnedFd::from(f);
        assert_eq!(
            add_seals(&fd, libc::F_SEAL_FUTURE_WRITE)
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EPERM)
        );
        // Reopening it writable through /proc (as a container would through
        // /proc/<pid>/exe) gets a file that can't be written either.
        let mut again = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .unwrap();
        assert_eq!(eperm(again.write_all(b"evil")), Some(libc::EPERM));
    }

    #[test]
    fn copy_is_not_the_source_file() {
        let (src, fd) = copy_of(b"original");
        std::fs::write(src.path(), b"changed!").unwrap();
        let mut f = File::from(fd);
        f.rewind().unwrap();
        assert_eq!(std::io::read_to_string(&f).unwrap(), "original");
    }

    #[test]
    fn regular_files_and_this_test_binary_are_not_sealed() {
        let f = tempfile::tempfile().unwrap();
        assert!(seals_of(&f).is_err());
        assert!(!exe_is_sealed("self"));
    }

    #[test]
    fn shared_copy_is_made_once_and_again_when_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::write(&bin, b"one").unwrap();
        let a = shared_copy(&bin).unwrap();
        let b = shared_copy(&bin).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        std::fs::write(&bin, b"two, longer").unwrap();
        let c = shared_copy(&bin).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        let f = File::open(format!("/proc/self/fd/{}", c.as_raw_fd())).unwrap();
        assert_eq!(std::io::read_to_string(f).unwrap(), "two, longer");
    }
}
