//! The mount namespace libcontainer's builds (create, exec) run in.
//!
//! libcontainer 0.7's cgroup v1 manager opens and parses /proc/self/mountinfo
//! once per controller, to the end for each controller the host does not
//! mount; its processes read it more than a dozen times per create, and the
//! container's init copies the whole namespace before pivot_root drops it.
//! Every pod adds ~7 mounts under berthd's state dir, so at 250 pods each
//! create read ~1,800 lines 14 times (docs/scaling.md).
//!
//! berthd makes its state dir a mount point (`--mounts-root`). A build here
//! runs in a copy of the host's namespace where that mount holds only this
//! pod's mounts (its dir with `shm` and `etc`, its namespace pins) and the
//! container's bundle (rootfs, image volumes). Every other mount stays the
//! host's copy in the same peer group, so propagation into containers is as
//! before. The monitor goes back to the host's namespace right after; by then
//! the container's init has a namespace of its own and the copy is freed.
//! Where the copy cannot be made, the build runs in the host's (logged).

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns, unshare};
use rustix::fs::{AtFlags, CWD, Mode, OFlags, StatxFlags};
use rustix::mount::{
    MountPropagationFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags, move_mount, open_tree,
};

/// Where the pod's namespace pins are, inside its dir (berthd's `pin`).
const PINS_DIR: &str = "ns";

pub(super) struct MountView {
    /// The host's mount namespace, to go back to.
    host: OwnedFd,
    /// The mount point every pod's and container's mounts lie below.
    root: PathBuf,
    /// This pod's dir below `root`.
    pod_dir: PathBuf,
}

impl MountView {
    /// The view of the pod at `pod_dir`, both below the mount point `root`.
    pub fn new(root: PathBuf, pod_dir: PathBuf) -> std::io::Result<MountView> {
        if !pod_dir.starts_with(&root) || pod_dir == root {
            return Err(std::io::Error::other(format!(
                "pod dir {} is not below {}",
                pod_dir.display(),
                root.display()
            )));
        }
        let host = fs::File::open("/proc/self/ns/mnt")?.into();
        Ok(MountView {
            host,
            root,
            pod_dir,
        })
    }

    /// Runs `f` with `root` holding only the pod's mounts and `bundle`'s.
    /// The caller is single-threaded (a thread sharing its filesystem
    /// context could not change mount namespace).
    pub fn run<T>(&self, pod: &str, bundle: &Path, f: impl FnOnce() -> T) -> T {
        let cwd = match rustix::fs::open(".", OFlags::PATH | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) => {
                eprintln!(
                    "berth-monitor {pod}: open cwd: {e}: building in the host's mount namespace"
                );
                return f();
            }
        };
        if let Err(e) = unshare(CloneFlags::CLONE_NEWNS) {
            eprintln!(
                "berth-monitor {pod}: unshare a mount namespace: {e}: building in the host's"
            );
            return f();
        }
        let pruned = self.prune(bundle);
        if let Err(e) = &pruned {
            eprintln!(
                "berth-monitor {pod}: cannot hide other pods' mounts below {}: {e}: building in the host's mount namespace",
                self.root.display()
            );
            self.back(pod, &cwd);
            return f();
        }
        let out = f();
        self.back(pod, &cwd);
        out
    }

    /// In the copy just unshared: clones of the pod dir (recursive: `shm`,
    /// `etc`; the unbindable pins dir is skipped), of each pin and of the
    /// bundle, with their propagation; then `root` and all below it made
    /// private (nothing done here reaches another namespace), unmounted, and
    /// mounted again without what was below, the clones put back. berthd
    /// stacks `root` on a private bind of itself, so neither the unmount nor
    /// the mounts here propagate to the host through `root`'s parent.
    fn prune(&self, bundle: &Path) -> std::io::Result<()> {
        let clone = |p: &Path, recursive: bool| {
            let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
            if recursive {
                flags |= OpenTreeFlags::AT_RECURSIVE;
            }
            open_tree(CWD, p, flags)
                .map_err(|e| std::io::Error::other(format!("clone {}: {e}", p.display())))
        };
        let mut kept = vec![(clone(&self.pod_dir, true)?, self.pod_dir.clone())];
        for pin in pins(&self.pod_dir.join(PINS_DIR))? {
            kept.push((clone(&pin, false)?, pin));
        }
        if bundle.starts_with(&self.root) {
            kept.push((clone(bundle, true)?, bundle.to_path_buf()));
        }
        rustix::mount::mount_change(
            &self.root,
            MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
        )?;
        let top = clone(&self.root, false)?;
        rustix::mount::unmount(&self.root, UnmountFlags::DETACH)
            .map_err(|e| std::io::Error::other(format!("unmount {}: {e}", self.root.display())))?;
        for (fd, at) in std::iter::once((top, self.root.clone())).chain(kept) {
            move_mount(
                fd.as_fd(),
                "",
                CWD,
                &at,
                MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
            )
            .map_err(|e| std::io::Error::other(format!("mount at {}: {e}", at.display())))?;
        }
        Ok(())
    }

    /// Back to the host's namespace (which resets the cwd) and cwd.
    fn back(&self, pod: &str, cwd: &OwnedFd) {
        // Cannot fail for a single-threaded root process holding the fd;
        // if it did, later builds would not see new mounts: say so loudly.
        if let Err(e) = setns(self.host.as_fd(), CloneFlags::CLONE_NEWNS) {
            eprintln!(
                "berth-monitor {pod}: ERROR: cannot go back to the host's mount namespace: {e}"
            );
        }
        let _ = rustix::process::fchdir(cwd);
    }
}

/// The namespace pins in `dir`: its entries that are mount points (another
/// mount id than the dir's).
fn pins(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mnt_id = |p: &Path| {
        rustix::fs::statx(CWD, p, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::MNT_ID)
            .map(|s| s.stx_mnt_id)
            .map_err(|e| std::io::Error::other(format!("statx {}: {e}", p.display())))
    };
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        // A pod without pins (every namespace the host's).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let own = mnt_id(dir)?;
    let mut pins = vec![];
    for e in entries {
        let p = e?.path();
        if mnt_id(&p)? != own {
            pins.push(p);
        }
    }
    Ok(pins)
}
