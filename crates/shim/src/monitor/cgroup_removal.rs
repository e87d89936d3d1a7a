//! Removing a container's cgroups (in every hierarchy), killing what is
//! left in them.

use std::fs;
use std::io;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::cgroup_roots::cgroup_roots;

/// Kills what is left in a container's cgroup (`linux.cgroupsPath`) and
/// removes it from every hierarchy: for berthd, when the container's
/// monitor is gone and a create cut short by a crash left it behind.
pub fn remove_container_cgroups(cgroups_path: &str) -> io::Result<()> {
    let rel = rel(Path::new(cgroups_path));
    if rel.as_os_str().is_empty() || rel.components().any(|c| c.as_os_str() == "..") {
        return Ok(());
    }
    for root in cgroup_roots() {
        remove_cgroup(&root.join(rel))?;
    }
    Ok(())
}

/// A cgroup path relative to a hierarchy's root.
pub(super) fn rel(p: &Path) -> &Path {
    p.strip_prefix("/").unwrap_or(p)
}

/// Removes a container's (empty, once its processes are reaped) cgroup
/// dir; anything still in it is SIGKILLed first. A process exiting right
/// now can keep it busy for a moment: retried for up to ~0.3 s, like
/// libcgroups.
pub(super) fn remove_cgroup(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    let mut delays = [1u64, 2, 5, 10, 20, 50, 100, 100].into_iter();
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => match delays.next() {
                Some(ms) => std::thread::sleep(Duration::from_millis(ms)),
                None => return Err(e),
            },
        }
    }
}
