//! `Status`: the runtime and network conditions the kubelet gates pods on.

use std::collections::HashMap;

use berth_api::v1::{
    RuntimeCondition, RuntimeFeatures, RuntimeHandler, RuntimeHandlerFeatures, RuntimeStatus,
    StatusRequest, StatusResponse,
};
use tonic::Status;

use crate::daemon::Daemon;

pub const RUNTIME_READY: &str = "RuntimeReady";
pub const NETWORK_READY: &str = "NetworkReady";

pub fn status(daemon: &Daemon, req: StatusRequest) -> Result<StatusResponse, Status> {
    let runtime = condition(RUNTIME_READY, daemon.runtime_readiness());
    let network = condition(NETWORK_READY, daemon.network_readiness());
    let mut info = HashMap::new();
    if req.verbose {
        // crictl info prints each value as JSON, so every value must be valid JSON.
        let config = serde_json::to_string(daemon.config())
            .map_err(|e| Status::internal(format!("cannot encode config: {e}")))?;
        info.insert("config".to_string(), config);
        let pod_cidr = daemon.pod_cidr();
        info.insert(
            "podCIDR".to_string(),
            serde_json::Value::String(pod_cidr).to_string(),
        );
    }
    Ok(StatusResponse {
        status: Some(RuntimeStatus {
            conditions: vec![runtime, network],
        }),
        info,
        runtime_handlers: runtime_handlers(&daemon.config().runtime_handlers),
        features: Some(RuntimeFeatures {
            // berth_spec resolves SupplementalGroupsPolicy Merge and Strict,
            // and ContainerStatus reports the resulting user.
            supplemental_groups_policy: true,
            user_namespaces_host_network: false,
            // Mount.mount_options (noexec, nodev, nosuid, atime) are applied
            // to the bind (berth_spec::mounts).
            mount_options: true,
        }),
    })
}

/// The default handler ("") and the configured ones (`runtime_handlers`),
/// which run pods as it does and so have its features: the kubelet reads
/// them to decide whether it may ask for recursive read-only mounts and
/// user namespaces.
fn runtime_handlers(configured: &[String]) -> Vec<RuntimeHandler> {
    let features = RuntimeHandlerFeatures {
        recursive_read_only_mounts: rro_supported(),
        // Pods with their own user namespace (`hostUsers: false`) map
        // the image layers (overlay lower dirs: 5.19) and volumes (the
        // kubelet's secrets are tmpfs: idmapped since 6.3).
        user_namespaces: idmap_supported(),
    };
    std::iter::once("")
        .chain(configured.iter().map(String::as_str))
        .map(|name| RuntimeHandler {
            name: name.to_owned(),
            features: Some(features),
        })
        .collect()
}

/// Whether idmapped mounts work on everything a `hostUsers: false` pod
/// maps: overlay lower dirs (Linux 5.19) and tmpfs (6.3).
fn idmap_supported() -> bool {
    let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut v = rel
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    (v.next().unwrap_or(0), v.next().unwrap_or(0)) >= (6, 3) && rro_supported()
}

/// Whether the kernel has `mount_setattr(2)` (Linux 5.12), which
/// libcontainer needs for `rro` bind mounts. Probed once with arguments it
/// must refuse: ENOSYS (or EPERM from a seccomp filter that does not know
/// the call) means the monitors could not use it either.
fn rro_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        // SAFETY: a null attr with size 0 is rejected before anything is
        // read or changed; the fd -1 and empty path name no mount.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                -1i32,
                c"".as_ptr(),
                libc::AT_EMPTY_PATH as u32,
                std::ptr::null_mut::<libc::c_void>(),
                0usize,
            )
        };
        let errno = std::io::Error::last_os_error().raw_os_error();
        let supported = mount_setattr_probe_says_supported(r, errno);
        tracing::debug!(
            supported,
            ?errno,
            "mount_setattr probe (recursive read-only mounts)"
        );
        supported
    })
}

fn mount_setattr_probe_says_supported(ret: i64, errno: Option<i32>) -> bool {
    ret == 0 || !matches!(errno, Some(libc::ENOSYS) | Some(libc::EPERM))
}

fn condition(kind: &str, readiness: Result<(), (String, String)>) -> RuntimeCondition {
    match readiness {
        Ok(()) => RuntimeCondition {
            r#type: kind.to_string(),
            status: true,
            reason: String::new(),
            message: String::new(),
        },
        Err((reason, message)) => RuntimeCondition {
            r#type: kind.to_string(),
            status: false,
            reason,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_features() {
        let h = runtime_handlers(&["runc".to_owned()]);
        let names: Vec<&str> = h.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["", "runc"]);
        assert_eq!(h[1].features, h[0].features);
        assert_eq!(runtime_handlers(&[]).len(), 1);
        let f = h[0].features.unwrap();
        assert_eq!(f.user_namespaces, kernel_version() >= (6, 3));
        // Every kernel Berth's CI runs on is newer than 5.12.
        let (major, minor) = kernel_version();
        assert_eq!(f.recursive_read_only_mounts, (major, minor) >= (5, 12));
    }

    #[test]
    fn probe_results() {
        assert!(mount_setattr_probe_says_supported(-1, Some(libc::EBADF)));
        assert!(mount_setattr_probe_says_supported(-1, Some(libc::EINVAL)));
        assert!(!mount_setattr_probe_says_supported(-1, Some(libc::ENOSYS)));
        assert!(!mount_setattr_probe_says_supported(-1, Some(libc::EPERM)));
    }

    fn kernel_version() -> (u32, u32) {
        let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut parts = rel.split(|c: char| !c.is_ascii_digit());
        let major = parts.next().unwrap().parse().unwrap();
        let minor = parts.next().unwrap().parse().unwrap();
        (major, minor)
    }
}
