//! The CRI requests of one run: every pod and container the benchmark makes.

use std::path::PathBuf;

use anyhow::Context;
use berth_api::v1::*;
use berth_e2e::pods::ns_options;

/// Label on every pod this benchmark makes, so a failed run can find and remove them.
pub const LABEL: &str = "berth-bench-pods";

/// What one run needs to build requests.
#[derive(Clone)]
pub struct Bench {
    pub image: String,
    pub log_dir: PathBuf,
    /// Distinguishes this run's pod names from an earlier run's on the same daemon.
    pub run_tag: String,
}

impl Bench {
    pub fn pod_config(&self, name: &str) -> anyhow::Result<PodSandboxConfig> {
        // The kubelet creates the pod log dir, not the runtime (containerd does not).
        let log_dir = self.log_dir.join(name);
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        Ok(PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("{}-{name}", self.run_tag),
                namespace: "bench".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: log_dir.display().to_string(),
            labels: [(LABEL.to_string(), self.run_tag.clone())].into(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    // Pod network and IPC, a PID namespace per container: the same on
                    // both runtimes.
                    namespace_options: Some(ns_options()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    pub fn ctr_config(&self) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "sleep".into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: vec!["sleep".into(), "3600".into()],
            log_path: "sleep/0.log".into(),
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(ns_options()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}
