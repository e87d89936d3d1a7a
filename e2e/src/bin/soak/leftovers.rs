//! What the run may have left when it ends: pods and containers still listed, network state,
//! mounts, state and root dirs, cgroup dirs, monitor and pod-init processes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_api::v1::*;
use berth_e2e::cleanup::{mounts_below, mounts_under};
use berth_e2e::daemon::Berthd;
use berth_e2e::net::{Leaks, TestNet};
use berth_e2e::procs;

use crate::cgroups::new_berth_cgroups;
use crate::shared::Shared;

/// The paths in `dir` (none if it cannot be read).
pub fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect()
}

/// Live `berth-monitor`s naming `state`, and `berth-pod-init`s chrooted
/// below it. A "monitor" whose parent is one is a container's init that
/// libcontainer cloned and that never started (it runs the monitor's image
/// until the start): listed third.
fn pod_processes(state: &Path) -> (Vec<String>, Vec<String>, Vec<String>) {
    let found = procs::pod_processes(state);
    let pids: BTreeSet<i32> = found.monitors.iter().map(|m| m.0).collect();
    let (unstarted, monitors): (Vec<_>, Vec<_>) = found
        .monitors
        .into_iter()
        .partition(|m| pids.contains(&m.1));
    let fmt = |v: Vec<(i32, i32, String)>| {
        v.into_iter()
            .map(|(pid, ppid, cmd)| format!("{pid} (parent {ppid}) {cmd}"))
            .collect()
    };
    (fmt(monitors), found.inits, fmt(unstarted))
}

/// Everything the run may have left, by kind.
#[derive(Default)]
pub struct Leftovers {
    pub pods_listed: Vec<String>,
    pub ctrs_listed: Vec<String>,
    pub net: Leaks,
    pub mounts: Vec<PathBuf>,
    pub pod_dirs: Vec<PathBuf>,
    pub monitor_dirs: Vec<PathBuf>,
    pub bundles: Vec<PathBuf>,
    pub uppers: Vec<PathBuf>,
    pub cgroups: Vec<PathBuf>,
    pub monitors: Vec<String>,
    pub inits: Vec<String>,
    pub unstarted: Vec<String>,
}

impl Leftovers {
    /// How many of each kind are left, in the summary's order.
    pub fn counts(&self) -> [(&'static str, usize); 16] {
        let n = &self.net;
        [
            ("pods still listed", self.pods_listed.len()),
            ("containers still listed", self.ctrs_listed.len()),
            ("mounts", self.mounts.len()),
            ("veths", n.veths.len()),
            ("IP files", n.ip_files.len()),
            ("netns pins (nsfs mounts)", n.nsfs_mounts.len()),
            ("iptables rules", n.iptables.len()),
            ("cached CNI results", n.cni_results.len()),
            ("pod dirs", self.pod_dirs.len()),
            ("monitor dirs", self.monitor_dirs.len()),
            ("bundles", self.bundles.len()),
            ("upper dirs", self.uppers.len()),
            ("cgroup dirs", self.cgroups.len()),
            ("monitor processes", self.monitors.len()),
            ("pod-init processes", self.inits.len()),
            ("unstarted container inits", self.unstarted.len()),
        ]
    }

    pub fn total(&self) -> usize {
        self.counts().iter().map(|(_, n)| n).sum()
    }
}

/// Looks for every kind of leftover once; `cgroups_before`: [`crate::cgroups::berth_cgroups`]
/// before berthd started.
pub async fn leftovers(
    sh: &Shared,
    d: &Berthd,
    net: &TestNet,
    cgroups_before: &BTreeSet<(PathBuf, String)>,
) -> Leftovers {
    let mut l = Leftovers::default();
    if let Ok(mut c) = d.client().await {
        if let Ok(r) = c
            .runtime
            .list_pod_sandbox(ListPodSandboxRequest::default())
            .await
        {
            l.pods_listed = r
                .into_inner()
                .items
                .into_iter()
                .map(|p| format!("{} {:?}", p.id, p.metadata.map(|m| m.name)))
                .collect();
        }
        if let Ok(r) = c
            .runtime
            .list_containers(ListContainersRequest::default())
            .await
        {
            l.ctrs_listed = r
                .into_inner()
                .containers
                .into_iter()
                .map(|c| format!("{} pod {}", c.id, c.pod_sandbox_id))
                .collect();
        }
    }
    let ids: Vec<String> = sh.pod_ids.lock().unwrap().iter().cloned().collect();
    let ips: Vec<String> = sh.pod_ips.lock().unwrap().iter().cloned().collect();
    let (state, root) = (&d.config.state, &d.config.root);
    l.net = net.leaks(state, &ids, &ips);
    // The state dir is a mount point of its own (two binds), not a leftover.
    l.mounts = mounts_below(state);
    l.mounts.extend(mounts_under(root));
    l.pod_dirs = entries(&state.join("pods"));
    l.monitor_dirs = entries(&state.join("monitors"));
    l.bundles = entries(&state.join("containers"));
    l.bundles.extend(entries(&state.join("containers-trash")));
    l.uppers = entries(&root.join("containers"));
    l.uppers.extend(entries(&root.join("containers-trash")));
    // Cgroups under berth/ that were not there before and are ours: a
    // container this run knew, one whose dirs are left (a create cut short
    // by a kill), or one its daemon logged. Other daemons on this host use
    // berth/ too.
    let mut ctrs = sh.ctr_ids.lock().unwrap().clone();
    ctrs.extend(
        l.bundles
            .iter()
            .chain(&l.uppers)
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string)),
    );
    let log = d.log_text();
    l.cgroups = new_berth_cgroups(cgroups_before, |n| ctrs.contains(n) || log.contains(n));
    (l.monitors, l.inits, l.unstarted) = pod_processes(state);
    l
}

/// How long what goes after an RPC's answer (monitors, the trash) may take.
const SETTLE: Duration = Duration::from_secs(30);

/// [`leftovers`] until there are none, for at most [`SETTLE`].
pub async fn settled(
    sh: &Shared,
    d: &Berthd,
    net: &TestNet,
    cgroups_before: &BTreeSet<(PathBuf, String)>,
) -> Leftovers {
    let deadline = Instant::now() + SETTLE;
    loop {
        let l = leftovers(sh, d, net, cgroups_before).await;
        if l.total() == 0 || Instant::now() > deadline {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
