//! Host cgroup setup berthd does once at startup: turning the kernel's
//! `favordynmods` on, so that moving processes into cgroups stays fast.

use std::path::Path;

/// Moving a process into a cgroup (the `cgroup.procs` write of every
/// container create and exec) takes the kernel's global
/// `cgroup_threadgroup_rwsem` for writing, whose first writer after a quiet
/// moment waits a full RCU grace period (`rcu_sync_enter` ->
/// `synchronize_rcu`): 10-20 ms here, more than all else a create does. The
/// kernel's `favordynmods` mode keeps that lock ready for writers (at the
/// price of a memory barrier in fork and exit), and any cgroup hierarchy
/// mounted with it turns it on for the whole lock. So on hosts that already
/// have cgroup v1 hierarchies (legacy, hybrid), berthd mounts an empty named
/// v1 hierarchy (`name=berth`, no controllers, nothing ever moved into it)
/// with `favordynmods` under `<state>/cgroup-favordynmods` and leaves it
/// mounted: the monitors live on after berthd. It is skipped on pure cgroup
/// v2 hosts, where a v1 line in every /proc/PID/cgroup could confuse
/// programs that detect the layout from it; there, boot with
/// `cgroup_favordynmods=1` or mount cgroup2 with `favordynmods`.
/// The config key `cgroup_favordynmods = false` disables it.
pub fn favor_dynmods(state: &Path) {
    let mounts = berth_mountinfo::read_self().unwrap_or_default();
    if mounts
        .iter()
        .any(|m| m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == "favordynmods"))
    {
        return; // already on (ours from an earlier start, or the host's)
    }
    if !mounts.iter().any(|m| m.fstype == "cgroup") {
        tracing::info!(
            "pure cgroup v2 host: boot with cgroup_favordynmods=1 (or mount cgroup2 with favordynmods) for fast container starts"
        );
        return;
    }
    let target = state.join("cgroup-favordynmods");
    let mounted = std::fs::create_dir_all(&target)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            nix::mount::mount(
                Some("berth"),
                &target,
                Some("cgroup"),
                nix::mount::MsFlags::MS_NOSUID
                    | nix::mount::MsFlags::MS_NODEV
                    | nix::mount::MsFlags::MS_NOEXEC,
                Some("none,name=berth,favordynmods"),
            )
            .map_err(|e| e.to_string())
        });
    match mounted {
        Ok(()) => tracing::info!(
            path = %target.display(),
            "cgroup favordynmods on (named v1 hierarchy): fast cgroup moves for container creates and execs"
        ),
        Err(e) => {
            tracing::info!(error = %e, "cannot turn cgroup favordynmods on: container creates pay an RCU grace period")
        }
    }
}
