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
        h.cgroup_v2 = nix::sys::statfs::statfs("/sys/fs/cgroup")
            .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
            .unwrap_or(false);
        h.hugetlb_controller = if h.cgroup_v2 {
            read_trim("/sys/fs/cgroup/cgroup.controllers")
                .is_some_and(|c| c.split_whitespace().any(|c| c == "hugetlb"))
        } else {
            Path::new("/sys/fs/cgroup/hugetlb").is_dir()
        };
        h.hugepage_sizes = hugepage_sizes(Path::new("/sys/kernel/mm/hugepages"));
        h.swap_controller = if h.cgroup_v2 {
            own_cgroup_v2()
                .map(|cg| {
                    Path::new("/sys/fs/cgroup")
                        .join(cg.trim_start_matches('/'))
                        .join("memory.swap.max")
                        .exists()
                })
                .unwrap_or(false)
        } else {
            Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
        };
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

/// The `0::/path` line of /proc/self/cgroup.
fn own_cgroup_v2() -> Option<String> {
    let s = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
}

/// `hugepages-2048kB` → "2MB", `hugepages-1048576kB` → "1GB": the CRI (and
/// cgroup file) notation, base 1024.
pub(crate) fn hugepage_sizes(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(kb) = name
            .to_str()
            .and_then(|n| n.strip_prefix("hugepages-"))
            .and_then(|n| n.strip_suffix("kB"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push(page_size_name(kb * 1024));
    }
    out.sort();
    out
}

/// Bytes to the largest exact unit, like runc's `HugePageSizes`.
pub(crate) fn page_size_name(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = bytes;
    let mut i = 0;
    while v >= 1024 && v & 1023 == 0 && i < UNITS.len() - 1 {
        v /= 1024;
        i += 1;
    }
    format!("{v}{}", UNITS[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_names() {
        assert_eq!(page_size_name(2 * 1024 * 1024), "2MB");
        assert_eq!(page_size_name(1024 * 1024 * 1024), "1GB");
        assert_eq!(page_size_name(64 * 1024), "64KB");
    }

    #[test]
    fn hugepage_dir_listing() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("hugepages-2048kB")).unwrap();
        std::fs::create_dir(d.path().join("hugepages-1048576kB")).unwrap();
        std::fs::create_dir(d.path().join("other")).unwrap();
        assert_eq!(hugepage_sizes(d.path()), vec!["1GB", "2MB"]);
        assert!(hugepage_sizes(&d.path().join("missing")).is_empty());
    }

    #[test]
    fn detect_does_not_panic() {
        let h = HostEnv::detect();
        assert!(!h.node_hostname.is_empty());
        assert!(h.cap_last_cap >= 30);
    }
}
