//! Removing a container's cgroup from every hierarchy.

use std::io;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cgroup::Cgroup;
use crate::error::Error;
use crate::layout::Layout;

impl Cgroup {
    /// Kills what is left in the cgroup and removes its directory from
    /// every hierarchy (the leaf only: parents such as the pod's are not
    /// touched). Nothing to do for a cgroup that is not there, nor for the
    /// root itself.
    pub fn remove(&self) -> Result<(), Error> {
        if self.rel.as_os_str().is_empty() {
            return Ok(());
        }
        for dir in self.dirs() {
            remove_dir(dir).map_err(|source| Error::Remove {
                dir: dir.to_path_buf(),
                source,
            })?;
        }
        Ok(())
    }
}

/// [`Cgroup::remove`] of `cgroups_path` on this host's layout: for berthd,
/// when a container's monitor is gone and a create cut short by a crash
/// left its cgroup behind. A path that leaves the hierarchy is ignored.
pub fn remove(cgroups_path: &str) -> Result<(), Error> {
    match Layout::detect().and_then(|l| Cgroup::of(&l, cgroups_path)) {
        Some(c) => c.remove(),
        None => Ok(()),
    }
}

/// Removes a (once its processes are reaped, empty) cgroup dir; anything
/// still in it is SIGKILLed first. A process exiting right now can keep it
/// busy for a moment: retried for up to ~0.3 s, like libcgroups.
fn remove_dir(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    let mut delays = [1u64, 2, 5, 10, 20, 50, 100, 100].into_iter();
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => match delays.next() {
                Some(ms) => std::thread::sleep(Duration::from_millis(ms)),
                None => return Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::cgroup::tests::fake_v1;
    use crate::{Cgroup, Error};

    #[test]
    fn removes_the_leaf_in_every_hierarchy() {
        let d = tempfile::tempdir().unwrap();
        let l = fake_v1(d.path(), &["cpu", "memory", "pids"]);
        for c in ["cpu", "memory"] {
            std::fs::create_dir_all(d.path().join(c).join("pod/c1")).unwrap();
        }
        Cgroup::of(&l, "/pod/c1").unwrap().remove().unwrap();
        for c in ["cpu", "memory"] {
            assert!(!d.path().join(c).join("pod/c1").exists());
            assert!(d.path().join(c).join("pod").exists(), "parent kept");
        }
        // Gone already: nothing to do. The root is never removed.
        Cgroup::of(&l, "/pod/c1").unwrap().remove().unwrap();
        Cgroup::of(&l, "/").unwrap().remove().unwrap();
        assert!(d.path().join("cpu").exists());
    }

    #[test]
    fn a_dir_that_cannot_go_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let l = fake_v1(d.path(), &["memory"]);
        // Unlike a cgroup, a plain dir with a file in it cannot be rmdir'd.
        let dir = d.path().join("memory/pod/c1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cgroup.procs"), "").unwrap();
        let e = Cgroup::of(&l, "pod/c1").unwrap().remove().unwrap_err();
        assert!(matches!(e, Error::Remove { .. }), "{e}");
        assert!(e.to_string().starts_with("remove cgroup "));
    }
}
