//! The pods of the run and their containers' scripts.

use berth_api::v1::*;
use berth_e2e::daemon::Berthd;
use berth_e2e::pods::{ctr_config, pod_config_for};

pub const IMAGE: &str = "berth-test/busybox:latest";

/// A well-behaved tenant.
pub const SLEEPER: &str = "exec sleep 1000000";
/// The fork bomb under a pids limit: the inner shell forks until a fork fails
/// (busybox sh then exits), the outer one (the container's pid 1) starts it again,
/// so the pod keeps pressing against its limit for the whole run.
pub const BOMB: &str = "while :; do sh -c 'while :; do sleep 1000 & done'; sleep 1; done";
/// The bomb when no pids limit could be set: bounded at 2000 processes.
pub const BOMB_BOUNDED: &str =
    "i=0; while [ $i -lt 2000 ]; do sleep 1000 & i=$((i+1)); done; exec sleep 1000000";
/// 201-byte lines on stdout at full speed.
pub const FLOOD: &str = "exec yes $(head -c 200 /dev/zero | tr '\\0' x)";
/// Ignores SIGTERM: only SIGKILL ends it.
pub const IGNORER: &str = "trap '' TERM; while :; do sleep 1; done";

/// Fills the writable layer with `mib` MiB, then sleeps.
pub fn filler(mib: u64) -> String {
    format!("dd if=/dev/zero of=/fill bs=1M count={mib} 2>&1; echo dd-exit=$?; exec sleep 1000000")
}

/// Pod `name` (its own namespaces, PID per container), logging under the daemon's dir;
/// `cgroup_parent` as given ("" for berthd's default).
pub fn pod(d: &Berthd, name: &str, cgroup_parent: &str) -> PodSandboxConfig {
    let mut pc = pod_config_for(d, name);
    pc.metadata
        .as_mut()
        .expect("pod_config_for sets metadata")
        .uid = format!("hostile-{}-{name}", std::process::id());
    pc.linux.get_or_insert_with(Default::default).cgroup_parent = cgroup_parent.to_string();
    pc
}

/// Container `name` of a pod running `script` under busybox sh (log `name/<attempt>.log`).
pub fn ctr(name: &str, script: &str, attempt: u32) -> ContainerConfig {
    let mut c = ctr_config(name, IMAGE, script);
    c.metadata
        .as_mut()
        .expect("ctr_config sets metadata")
        .attempt = attempt;
    c.log_path = format!("{name}/{attempt}.log");
    c
}
