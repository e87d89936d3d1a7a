//! The CRI requests of the soak's pods: every other pod shares one PID namespace.

use std::collections::HashMap;

use berth_api::v1::*;

use crate::shared::Shared;

pub const IMAGE: &str = "berth-test/busybox:latest";
/// Leaves at once on SIGTERM and leaves no process behind.
const SCRIPT: &str = "trap 'kill $p; exit 0' TERM; sleep 100000 & p=$!; wait $p";
/// StopContainer's grace period.
pub const GRACE_S: i64 = 30;

fn ns_options(shared_pid: bool) -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        ipc: NamespaceMode::Pod as i32,
        pid: if shared_pid {
            NamespaceMode::Pod as i32
        } else {
            NamespaceMode::Container as i32
        },
        ..Default::default()
    }
}

pub fn pod_config(sh: &Shared, name: &str, shared_pid: bool) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("{}-{name}", sh.run_tag),
            namespace: "soak".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: sh.log_dir.join(name).display().to_string(),
        labels: HashMap::from([
            ("berth-soak".into(), sh.run_tag.clone()),
            ("soak-pod".into(), name.into()),
        ]),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(ns_options(shared_pid)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn ctr_config(name: &str, shared_pid: bool) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "main".into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: IMAGE.into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), SCRIPT.into()],
        log_path: "main/0.log".into(),
        labels: HashMap::from([("soak-ctr".into(), name.into())]),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(ns_options(shared_pid)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
