//! What the spec depends on about the host, gathered once by berthd.

use std::path::{Path, PathBuf};

/// Facts about the host (and the daemon's configuration) that change the
/// spec. `HostEnv::detect()` reads them from the running system; tests build
/// one by hand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostEnv {
    /// The node's hostname: the `HOSTNAME` env of containers whose pod config
    /// has no hostname (containerd uses `os.Hostname()` there).
    pub node_hostname: String,
    /// AppArmor is enabled in the kernel. When false, AppArmor profiles in
    /// the CRI config are ignored.
    pub apparmor_enabled: bool,
    /// The profile to apply for AppArmor `RuntimeDefault` (containerd loads
    /// its own `cri-containerd.apparmor.d`). `None`: run unconfined.
    pub apparmor_default_profile: Option<String>,
    /// The kernel and the runtime can load seccomp filters.
    pub seccomp_enabled: bool,
    /// Base directory for relative `Localhost` seccomp profile paths. The
    /// kubelet sends absolute paths; without a root, relative ones are errors.
    pub seccomp_profile_root: Option<PathBuf>,
    /// The daemon's own `oom_score_adj`. Without CAP_SYS_RESOURCE a lower
    /// value fails with EPERM, so container values are clamped up to it
    /// (containerd's `restrictOOMScoreAdj`).
    pub min_oom_score_adj: i32,
    /// The host's cgroup is v2 unified (not v1, not hybrid).
    pub cgroup_v2: bool,
    /// On a v1 or hybrid host: the controller hierarchies (none on v2).
    /// Containers see theirs under `/sys/fs/cgroup` through bind mounts
    /// built here (see `mounts::cgroup_v1`); with none known the spec keeps
    /// a `cgroup` mount for libcontainer to set up.
    pub cgroup_v1_hierarchies: Vec<berth_cgroup::Hierarchy>,
    /// The hugetlb controller is available.
    pub hugetlb_controller: bool,
    /// Huge page sizes the host has, in CRI notation ("2MB", "1GB").
    pub hugepage_sizes: Vec<String>,
    /// The memory controller accounts swap (`memory.memsw.*` / `memory.swap.max`).
    pub swap_controller: bool,
    /// `/proc/sys/kernel/cap_last_cap`: the highest capability the kernel knows.
    pub cap_last_cap: u32,
    /// Capabilities berthd can give containers: bit n for capability n, the
    /// kernel's (`cap_last_cap`) that are in berthd's own bounding set.
    pub cap_available: u64,
    /// A pids limit for every container (CRI has no field for it; CRI-O has
    /// the same daemon setting). `None`: no limit.
    pub pids_limit: Option<i64>,
    /// Where to read mount propagation from, to validate
    /// `PROPAGATION_BIDIRECTIONAL`/`HOST_TO_CONTAINER` mounts.
    pub mountinfo_path: PathBuf,
    /// Create a missing bind-mount source as a directory (containerd's and
    /// CRI-O's behaviour, which the kubelet relies on for hostPath volumes
    /// without a type); when false a missing source is an error.
    pub create_missing_mount_sources: bool,
    /// Where `privileged` containers get their devices from.
    pub dev_dir: PathBuf,
}

impl Default for HostEnv {
    /// A conservative host: cgroup v1, no AppArmor, seccomp available,
    /// `oom_score_adj` floor 0, no huge pages.
    fn default() -> Self {
        HostEnv {
            node_hostname: "localhost".into(),
            apparmor_enabled: false,
            apparmor_default_profile: None,
            seccomp_enabled: true,
            seccomp_profile_root: None,
            min_oom_score_adj: 0,
            cgroup_v2: false,
            cgroup_v1_hierarchies: Vec::new(),
            hugetlb_controller: false,
            hugepage_sizes: Vec::new(),
            swap_controller: false,
            cap_last_cap: crate::caps::LAST_KNOWN_CAP,
            cap_available: crate::caps::up_to(crate::caps::LAST_KNOWN_CAP),
            pids_limit: None,
            mountinfo_path: PathBuf::from("/proc/self/mountinfo"),
            create_missing_mount_sources: true,
            dev_dir: PathBuf::from("/dev"),
        }
    }
}

impl HostEnv {
    /// Reads the host's facts. Anything unreadable falls back to the
    /// conservative default of that field.
    pub fn detect() -> HostEnv {
        let mut h = HostEnv::default();
        if let Ok(name) = nix::unistd::gethostname() {
            h.node_hostname = name.to_string_lossy().into_owned();
        }
        // runc's apparmor.IsEnabled: the module parameter says "Y".
        h.apparmor_enabled = read_trim("/sys/module/apparmor/parameters/enabled")
            .is_some_and(|v| v.starts_with('Y'))
            && Path::new("/sys/kernel/security/apparmor").exists();
        h.seccomp_enabled = std::fs::read_to_string("/proc/self/status")
            .map(|s| s.contains("\nSeccomp:"))
            .unwrap_or(false);
        if let Some(v) = read_trim("/proc/self/oom_score_adj").and_then(|v| v.parse().ok()) {
            h.min_oom_score_adj = v;
        }
        if let Some(layout) = berth_cgroup::Layout::detect() {
            h.cgroup_v2 = layout.is_v2();
            h.cgroup_v1_hierarchies = layout.hierarchies().to_vec();
            h.hugetlb_controller = layout.has_controller("hugetlb");
            h.swap_controller = layout.swap_accounting();
        }
        h.hugepage_sizes = berth_cgroup::hugepage_sizes(Path::new(berth_cgroup::HUGEPAGES_DIR));
        if let Some(v) = read_trim("/proc/sys/kernel/cap_last_cap").and_then(|v| v.parse().ok()) {
            h.cap_last_cap = v;
        }
        h.cap_available = crate::caps::up_to(h.cap_last_cap);
        if let Some(bnd) = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("CapBnd:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            })
        {
            h.cap_available &= bnd;
        }
        h
    }
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_does_not_panic() {
        let h = HostEnv::detect();
        assert!(!h.node_hostname.is_empty());
        assert!(h.cap_last_cap >= 30);
    }
}
