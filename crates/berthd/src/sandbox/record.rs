//! The durable record of one pod sandbox (a JSON value in the `sandboxes` table).

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_api::v1::{NamespaceMode, NamespaceOption, PodSandboxMetadata, PodSandboxState};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SandboxState {
    Ready,
    NotReady,
}

impl SandboxState {
    pub fn to_cri(self) -> PodSandboxState {
        match self {
            SandboxState::Ready => PodSandboxState::SandboxReady,
            SandboxState::NotReady => PodSandboxState::SandboxNotready,
        }
    }
}

/// The CRI namespace modes, kept by name ("POD", "NODE", ...) so the JSON reads well.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceModes {
    pub network: String,
    pub pid: String,
    pub ipc: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target_id: String,
}

impl NamespaceModes {
    pub fn from_cri(o: Option<&NamespaceOption>) -> NamespaceModes {
        let name = |v: i32| {
            NamespaceMode::try_from(v)
                .unwrap_or(NamespaceMode::Pod)
                .as_str_name()
                .to_string()
        };
        let o = o.cloned().unwrap_or_default();
        NamespaceModes {
            network: name(o.network),
            pid: name(o.pid),
            ipc: name(o.ipc),
            target_id: o.target_id,
        }
    }

    pub fn to_cri(&self) -> NamespaceOption {
        let value = |s: &str| NamespaceMode::from_str_name(s).unwrap_or(NamespaceMode::Pod) as i32;
        NamespaceOption {
            network: value(&self.network),
            pid: value(&self.pid),
            ipc: value(&self.ipc),
            target_id: self.target_id.clone(),
            userns_options: None,
        }
    }
}

/// Where the pod's pinned namespaces are; `None` means the host's namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pins {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    /// The pod's shared PID namespace (PID mode POD), held by [`PodInit`].
    #[serde(default)]
    pub pid: Option<PathBuf>,
    /// The pod's user namespace (`hostUsers: false`), which owns the others.
    #[serde(default)]
    pub user: Option<PathBuf>,
}

impl Pins {
    pub fn iter(&self) -> impl Iterator<Item = &PathBuf> {
        [&self.net, &self.ipc, &self.uts, &self.pid, &self.user]
            .into_iter()
            .flatten()
    }
}

/// Berth's init of a pod whose containers share one PID namespace: PID 1
/// there, it reaps orphans and keeps the namespace usable (a PID namespace
/// whose init died accepts no new process). Identified by pid and start time
/// so a recycled pid is never mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodInit {
    pub pid: i32,
    /// Field 22 of `/proc/<pid>/stat` (clock ticks since boot).
    pub start_time: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    pub state: SandboxState,
    pub hostname: String,
    pub log_directory: String,
    pub runtime_handler: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub namespace_modes: NamespaceModes,
    pub pins: Pins,
    pub sysctls: BTreeMap<String, String>,
    pub cgroup_parent: String,
    pub privileged: bool,
    /// The pod's PID-namespace init, when its PID mode is POD.
    #[serde(default)]
    pub init: Option<PodInit>,
    /// The pod's /dev/shm tmpfs (`<dir>/shm`); None when the pod uses the host IPC namespace.
    #[serde(default)]
    pub shm: Option<PathBuf>,
    /// The pod's IPs on eth0 from its CNI ADD, IPv4 first (empty: no pod network).
    #[serde(default)]
    pub ips: Vec<String>,
    /// A CNI attachment exists that StopPodSandbox/RemovePodSandbox must DEL.
    #[serde(default)]
    pub network_attached: bool,
    /// The pod's state dir, `<state>/pods/<id>`.
    pub dir: PathBuf,
    /// The whole `PodSandboxConfig`, protobuf-encoded and hex: container
    /// creation needs parts of it (DNS, security context) this record does not spell out.
    pub config_pb: String,
}

impl SandboxRecord {
    /// The `PodSandboxConfig` RunPodSandbox was given.
    pub fn config(&self) -> anyhow::Result<berth_api::v1::PodSandboxConfig> {
        use anyhow::Context;
        use prost::Message;
        let bytes = hex::decode(&self.config_pb).context("sandbox record: config_pb is not hex")?;
        berth_api::v1::PodSandboxConfig::decode(bytes.as_slice())
            .context("sandbox record: config_pb does not decode")
    }

    /// containerd's "name reservation" key: one live sandbox per metadata.
    pub fn reservation_key(&self) -> String {
        reservation_key(&self.name, &self.namespace, &self.uid, self.attempt)
    }

    pub fn metadata(&self) -> PodSandboxMetadata {
        PodSandboxMetadata {
            name: self.name.clone(),
            uid: self.uid.clone(),
            namespace: self.namespace.clone(),
            attempt: self.attempt,
        }
    }
}

/// `name_namespace_uid_attempt` as containerd spells it, but with `%` and
/// `_` escaped in each part: joined plainly, pods ("a_b", "c") and ("a",
/// "b_c") got the same key and the second was refused as a duplicate (CRI
/// metadata is any string; only the kubelet keeps `_` out of names).
pub fn reservation_key(name: &str, namespace: &str, uid: &str, attempt: u32) -> String {
    let esc = |s: &str| s.replace('%', "%25").replace('_', "%5F");
    format!("{}_{}_{}_{attempt}", esc(name), esc(namespace), esc(uid))
}

#[cfg(test)]
mod tests {
    use super::reservation_key;

    #[test]
    fn reservation_keys_of_different_pods_differ() {
        let pairs = [
            (("a_b", "c", "u", 0), ("a", "b_c", "u", 0)),
            (("a", "b", "c_d", 1), ("a", "b_c", "d", 1)),
            (("a", "b", "u_1", 2), ("a", "b", "u", 12)),
            (("a%5F", "b", "u", 0), ("a_", "b", "u", 0)),
        ];
        for ((n1, ns1, u1, a1), (n2, ns2, u2, a2)) in pairs {
            assert_ne!(
                reservation_key(n1, ns1, u1, a1),
                reservation_key(n2, ns2, u2, a2),
                "{n1}/{ns1}/{u1}/{a1} vs {n2}/{ns2}/{u2}/{a2}"
            );
        }
        // What the kubelet sends reads as containerd's key.
        assert_eq!(
            reservation_key("web-0", "default", "1234", 2),
            "web-0_default_1234_2"
        );
    }
}
