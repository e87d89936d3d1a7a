//! The host-wide `favordynmods` setting, for fast cgroup moves.
//!
//! Moving a process into a cgroup (the `cgroup.procs` write of every
//! container create and exec) takes the kernel's global
//! `cgroup_threadgroup_rwsem` for writing, whose first writer after a quiet
//! moment waits a full RCU grace period (`rcu_sync_enter` ->
//! `synchronize_rcu`): 10-20 ms here, more than all else a create does. The
//! kernel's `favordynmods` mode keeps that lock ready for writers (at the
//! price of a memory barrier in fork and exit; from Linux 6.18 a
//! `cgroup.procs` write then locks only the moved process's thread group,
//! a mode that, once on, stays on until reboot), and any cgroup hierarchy
//! created with it turns it on for the whole lock, for as long as that
//! hierarchy exists. So on hosts that already have
//! cgroup v1 hierarchies (legacy, hybrid), berthd creates an empty named v1
//! hierarchy (`name=berth`, no controllers, nothing ever moved into it) with
//! `favordynmods`; it outlives berthd, as the monitors do. It is skipped on
//! pure cgroup v2 hosts, where a v1 line in every /proc/PID/cgroup could
//! confuse programs that detect the layout from it; there, boot with
//! `cgroup_favordynmods=1` or mount cgroup2 with `favordynmods`.
//!
//! The hierarchy is mounted nowhere. berthd mounts it detached (`fsopen`,
//! `fsmount`: never in any mount table), creates one empty child cgroup in
//! it ([`KEEPALIVE`]), and closes the mount: a v1 hierarchy that still has a
//! cgroup lives on without a mount (the kernel kills a hierarchy at its last
//! unmount only when it has no child), and `favordynmods` with it. The next
//! start finds it again by its name (mounting `name=berth` reuses a live
//! hierarchy; the child is kept), so this is idempotent.
//!
//! Why not leave it mounted, as berthd did up to this change (at
//! `<state>/cgroup-favordynmods`, [`LEGACY_MOUNT_DIR`]): other runtimes on
//! the node read the host's cgroup v1 mounts from mountinfo and mount each
//! into their containers. runc, for a container with its own cgroup
//! namespace (Docker `--cgroupns=private`, kind and Podman nodes), mounts
//! every v1 hierarchy it finds as `mount("cgroup", ..., "cgroup", flags,
//! data = basename(host mount point))` (special-casing `systemd`), so our
//! mount point made it pass `cgroup-favordynmods` as mount options: the
//! kernel refused it ("cgroup: Unknown subsys name 'cgroup-favordynmods'")
//! and every such container failed to start. A mount point named so that
//! its basename is valid mount data (`name=berth`) would have let runc
//! start, but would still have put the hierarchy into every such container
//! (`/sys/fs/cgroup/name=berth`, writable in privileged ones) and stayed at
//! the mercy of how each runtime derives mount options; unmounted, it is in
//! no mount table at all. What stays visible is the `N:name=berth:/` line of
//! /proc/PID/cgroup, as before: runc lists hierarchies from mountinfo, and
//! one without a mount is skipped.
//!
//! A start also unmounts the hierarchy an older berthd left at
//! `<state>/cgroup-favordynmods` (after adding the child cgroup, so the
//! hierarchy and its `favordynmods` survive). To remove the hierarchy (as
//! `hack/install.sh --uninstall --purge` does): mount it (`mount -t cgroup
//! -o none,name=berth berth DIR`), `rmdir DIR/keepalive`, unmount; the
//! kernel frees it once it has neither cgroups nor mounts.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use berth_mountinfo::Mount;
use nix::libc;

use crate::error::Error;

/// The named hierarchy's name: `name=berth` in its mount options and in
/// every /proc/PID/cgroup.
pub const HIERARCHY_NAME: &str = "berth";

/// The empty child cgroup that keeps the hierarchy alive with no mount.
pub const KEEPALIVE: &str = "keepalive";

/// Where berthd up to this change left the hierarchy mounted, under its
/// state dir; unmounted at start.
pub const LEGACY_MOUNT_DIR: &str = "cgroup-favordynmods";

/// What [`enable_favordynmods`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Favordynmods {
    /// It was on already: a v1 hierarchy of the host's has it, or Berth's
    /// named hierarchy from an earlier start exists (its child cgroup is
    /// made sure of).
    AlreadyOn,
    /// A pure v2 host: left to the host's boot or cgroup2 mount options.
    PureV2,
    /// This start created Berth's named hierarchy (mounted nowhere).
    Enabled,
}

/// Turns `favordynmods` on for the host (see the module doc), logging the
/// outcome as berthd always did. `state_dir` is berthd's state directory
/// (where an older berthd left the hierarchy mounted).
pub fn enable_favordynmods(state_dir: &Path) -> Result<Favordynmods, Error> {
    let mounts = berth_mountinfo::read_self().unwrap_or_default();
    let legacy = legacy_mount(&mounts, state_dir);
    let outcome = match needed(&mounts) {
        Some(done) => Ok(done),
        None => {
            let existed =
                std::fs::read_to_string("/proc/self/cgroup").is_ok_and(|t| hierarchy_listed(&t));
            keep_alive(legacy.as_deref()).map(|()| match existed {
                true => Favordynmods::AlreadyOn,
                false => Favordynmods::Enabled,
            })
        }
    };
    match &outcome {
        Ok(Favordynmods::AlreadyOn) => tracing::debug!("cgroup favordynmods already on"),
        Ok(Favordynmods::PureV2) => tracing::info!(
            "pure cgroup v2 host: boot with cgroup_favordynmods=1 (or mount cgroup2 with favordynmods) for fast container starts"
        ),
        Ok(Favordynmods::Enabled) => tracing::info!(
            hierarchy = %format!("name={HIERARCHY_NAME}"),
            "cgroup favordynmods on (a named v1 hierarchy, mounted nowhere): fast cgroup moves for container creates and execs"
        ),
        Err(e) => tracing::info!(
            error = %e,
            "cannot turn cgroup favordynmods on: container creates pay an RCU grace period"
        ),
    }
    // After the child cgroup is in: the hierarchy outlives this unmount.
    if let Some(dir) = legacy {
        unmount_legacy(&dir);
    }
    outcome
}

/// `Some` when there is nothing to create. Berth's own named hierarchy (an
/// older berthd's mount) does not count as the host's.
fn needed(mounts: &[Mount]) -> Option<Favordynmods> {
    let v1 = || {
        mounts
            .iter()
            .filter(|m| m.fstype == "cgroup" && !is_ours(m))
    };
    if v1().any(|m| m.super_options.split(',').any(|o| o == "favordynmods")) {
        return Some(Favordynmods::AlreadyOn);
    }
    if v1().next().is_none() {
        return Some(Favordynmods::PureV2);
    }
    None
}

/// A mount of the `name=berth` hierarchy.
fn is_ours(m: &Mount) -> bool {
    let name = format!("name={HIERARCHY_NAME}");
    m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == name)
}

/// The hierarchy an older berthd left mounted at
/// `<state_dir>/cgroup-favordynmods`, if it is there.
fn legacy_mount(mounts: &[Mount], state_dir: &Path) -> Option<PathBuf> {
    let dir = state_dir.join(LEGACY_MOUNT_DIR);
    mounts
        .iter()
        .any(|m| m.mount_point == dir && is_ours(m))
        .then_some(dir)
}

/// Whether /proc/PID/cgroup text lists the `name=berth` hierarchy
/// (`ID:name=berth:/path`): it exists, mounted or not.
fn hierarchy_listed(proc_cgroup: &str) -> bool {
    let name = format!("name={HIERARCHY_NAME}");
    proc_cgroup.lines().any(|l| {
        l.split(':')
            .nth(1)
            .is_some_and(|c| c.split(',').any(|c| c == name))
    })
}

/// Makes sure the hierarchy exists with its child cgroup: through the
/// older berthd's mount when there is one, else through a detached mount
/// that is closed again.
fn keep_alive(legacy: Option<&Path>) -> Result<(), Error> {
    if let Some(dir) = legacy {
        return match std::fs::create_dir(dir.join(KEEPALIVE)) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(Error::Mount {
                dir: dir.join(KEEPALIVE),
                source: e,
            }),
            _ => Ok(()),
        };
    }
    let failed = |what: &str, source: std::io::Error| Error::Mount {
        dir: PathBuf::from(format!(
            "(detached cgroup v1 name={HIERARCHY_NAME}: {what})"
        )),
        source,
    };
    let name = CString::new(HIERARCHY_NAME).expect("no NUL in the name");
    let fs = fsopen().map_err(|e| failed("fsopen", e))?;
    // `mount -t cgroup -o none,name=berth,favordynmods berth DIR`, detached.
    fsconfig(&fs, libc::FSCONFIG_SET_STRING, c"source", Some(&name))
        .and_then(|()| fsconfig(&fs, libc::FSCONFIG_SET_FLAG, c"none", None))
        .and_then(|()| fsconfig(&fs, libc::FSCONFIG_SET_STRING, c"name", Some(&name)))
        .and_then(|()| fsconfig(&fs, libc::FSCONFIG_SET_FLAG, c"favordynmods", None))
        .map_err(|e| failed("fsconfig", e))?;
    fsconfig(&fs, libc::FSCONFIG_CMD_CREATE, c"", None).map_err(|e| failed("create", e))?;
    let mnt = fsmount(&fs).map_err(|e| failed("fsmount", e))?;
    let child = CString::new(KEEPALIVE).expect("no NUL in the name");
    // SAFETY: a valid dir fd and a NUL-terminated relative name.
    let rc = unsafe { libc::mkdirat(mnt.as_raw_fd(), child.as_ptr(), 0o755) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(failed("mkdir keepalive", e));
        }
    }
    // Dropping `mnt` and `fs` releases the detached mount: the hierarchy
    // stays, held by its child cgroup.
    Ok(())
}

fn fsopen() -> std::io::Result<OwnedFd> {
    // SAFETY: a NUL-terminated name; the returned fd is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_fsopen, c"cgroup".as_ptr(), libc::FSOPEN_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fsopen returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn fsconfig(
    fs: &OwnedFd,
    cmd: libc::c_uint,
    key: &CStr,
    value: Option<&CStr>,
) -> std::io::Result<()> {
    let key = if key.is_empty() {
        std::ptr::null()
    } else {
        key.as_ptr()
    };
    let value = value.map_or(std::ptr::null(), |v| v.as_ptr());
    // SAFETY: a valid fs_context fd and NUL-terminated strings (or NULL
    // where the command takes none); the kernel only reads them.
    let rc = unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), cmd, key, value, 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn fsmount(fs: &OwnedFd) -> std::io::Result<OwnedFd> {
    let attrs = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOEXEC;
    // SAFETY: a valid fs_context fd; the returned fd is owned below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            libc::FSMOUNT_CLOEXEC,
            attrs as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fsmount returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Detaches an older berthd's mount of the hierarchy and removes its dir.
fn unmount_legacy(dir: &Path) {
    match nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) => {
            tracing::info!(dir = %dir.display(), "unmounted the favordynmods hierarchy an older berthd left mounted (it broke runc containers with a cgroup namespace)");
            let _ = std::fs::remove_dir(dir);
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot unmount the favordynmods hierarchy an older berthd left mounted")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::tests::{HYBRID, LEGACY, UNIFIED};

    #[test]
    fn what_is_needed_per_layout() {
        let m = berth_mountinfo::parse;
        assert_eq!(needed(&m(UNIFIED)), Some(Favordynmods::PureV2));
        assert_eq!(needed(&m(LEGACY)), None);
        // HYBRID carries the mount an older berthd left: Berth's own, not
        // the host's, so the hierarchy is still to be made sure of.
        assert_eq!(needed(&m(HYBRID)), None);
        let host_has_it = LEGACY.replace("rw,memory", "rw,memory,favordynmods");
        assert_eq!(needed(&m(&host_has_it)), Some(Favordynmods::AlreadyOn));
        // Only Berth's mount among v1 ones: still not a pure v2 host's
        // answer, nor "on already".
        let only_ours = format!(
            "{UNIFIED}42 23 0:39 / /run/berth/cgroup-favordynmods rw - cgroup berth rw,name=berth,favordynmods\n"
        );
        assert_eq!(needed(&m(&only_ours)), Some(Favordynmods::PureV2));
    }

    #[test]
    fn an_older_berthds_mount_is_found_under_its_state_dir_only() {
        let m = berth_mountinfo::parse(HYBRID);
        assert_eq!(
            legacy_mount(&m, Path::new("/var/lib/berth")),
            Some(PathBuf::from("/var/lib/berth/cgroup-favordynmods"))
        );
        assert_eq!(legacy_mount(&m, Path::new("/run/berth")), None);
        // The same path, but not the name=berth hierarchy: not ours.
        let other = "42 23 0:39 / /run/berth/cgroup-favordynmods rw - cgroup x rw,name=other\n";
        assert_eq!(
            legacy_mount(&berth_mountinfo::parse(other), Path::new("/run/berth")),
            None
        );
    }

    #[test]
    fn the_hierarchy_is_found_in_proc_cgroup() {
        assert!(hierarchy_listed(
            "12:name=berth:/\n9:name=systemd:/init.scope\n0::/\n"
        ));
        assert!(!hierarchy_listed("9:name=systemd:/\n4:memory:/x\n0::/\n"));
        assert!(!hierarchy_listed("12:name=berthx:/\n0::/name=berth\n"));
    }
}
