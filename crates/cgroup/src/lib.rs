//! Berth's one cgroup module: the host's layout (cgroup v1, the v1/v2
//! hybrid, or v2), where a cgroup's files are, what it uses (stats), live
//! resource updates, OOM-kill detection, removal, and the host-wide
//! `favordynmods` setting. Used by the spec builder (host facts), berthd
//! (stats, favordynmods), the monitor (updates, OOM kills, removal) and the
//! e2e leak checks.
//!
//! Built on youki's `libcgroups` (0.7, the version libcontainer creates our
//! containers' cgroups with; `cgroups-rs` was the other candidate, but it
//! speaks oci-spec 0.8 and pulls a third `nix` and, in 0.5, zbus), with only
//! its cgroupfs managers (no systemd/dbus, no eBPF):
//! - live updates ([`Cgroup::update`]) are libcgroups' `apply` of the OCI
//!   `LinuxResources`, the same code that set them at create (v1 memory and
//!   memsw ordering, v2 shares-to-weight and swap conversion, hugetlb,
//!   unified keys).
//!
//! Kept our own, and why:
//! - layout detection ([`Layout`]) from mountinfo text (through
//!   `berth-mountinfo`), so it is testable on any host and yields every
//!   hierarchy's mount point; libcgroups decides with `statfs` on the real
//!   `/sys/fs/cgroup` and finds v1 mounts by directory name.
//! - stats ([`Cgroup::stats`]): libcgroups' `stats()` is all-or-nothing
//!   (one missing file fails the whole reading, as for an exited container),
//!   reads some 40 files per cgroup where the CRI stats need 6 to 9 and its
//!   metrics ~15 (the kubelet polls every container every ~10 s), and its
//!   PSI has no `total`, which the CRI reports.
//! - removal ([`Cgroup::remove`]): the monitor's delete path computes the
//!   hierarchies once ([`Layout::detect`]) instead of reading mountinfo per
//!   controller as libcgroups' v1 manager does, and covers every hierarchy
//!   with a controller.
//! - OOM kills ([`Cgroup::oom_killed`]): libcgroups does not expose the
//!   `oom_kill` counter.
//!
//! Everything here is blocking file I/O.

mod cgroup;
mod error;
mod favordynmods;
mod freezer;
mod hugepages;
mod layout;
mod oom;
mod open;
mod parse;
mod remove;
mod stats;
mod stats_v1;
mod stats_v2;
mod unified_key;
mod update;

pub use cgroup::Cgroup;
pub use error::Error;
pub use favordynmods::{
    Favordynmods, HIERARCHY_NAME as FAVORDYNMODS_HIERARCHY, KEEPALIVE as FAVORDYNMODS_KEEPALIVE,
    LEGACY_MOUNT_DIR as FAVORDYNMODS_LEGACY_DIR, enable_favordynmods,
};
pub use freezer::thaw_dir;
pub use hugepages::{HUGEPAGES_DIR, hugepage_sizes, page_size_name};
pub use layout::{Hierarchy, Layout};
pub use open::OpenCgroup;
pub use parse::{Psi, PsiLine};
pub use remove::remove;
pub use stats::{
    CfsSample, CpuSample, Detail, HugetlbSample, IoDevice, MemoryDetail, MemorySample, Sample,
    SwapSample,
};
pub use unified_key::check_unified_key;

/// Where cgroup filesystems are mounted on every host Berth runs on (and
/// the only root libcgroups' v2 manager and libcontainer accept).
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
