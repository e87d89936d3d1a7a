//! What the run may have left once every pod is removed: pods and containers still
//! listed, mounts, state and root dirs, container cgroups, monitor and pod-init
//! processes (as the soak looks for them, e2e/src/bin/soak/leftovers.rs).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_api::v1::*;
use berth_e2e::cleanup::{mounts_below, mounts_under};
use berth_e2e::daemon::Berthd;
use berth_e2e::procs;

/// Leftovers by kind, each a list of what was found.
pub type Leaks = Vec<(&'static str, Vec<String>)>;

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().display().to_string())
        .collect()
}

/// The dirs under berthd's default cgroup parent (`berth/`) in every hierarchy (other
/// daemons on this host use it too).
pub fn berth_cgroups() -> BTreeSet<PathBuf> {
    let roots = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .chain([PathBuf::from("/sys/fs/cgroup")]);
    roots
        .flat_map(|r| {
            std::fs::read_dir(r.join("berth"))
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect()
}

/// The dirs under `berth/` that are new since `before` and that this daemon's log
/// names, and anything under `pod_cgroup` (the bomb's parent) in every hierarchy.
fn cgroups(before: &BTreeSet<PathBuf>, log: &str, pod_cgroup: &str) -> Vec<String> {
    let mut found: Vec<String> = berth_cgroups()
        .difference(before)
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| log.contains(n))
        })
        .map(|p| p.display().to_string())
        .collect();
    for r in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let pod = r.path().join(&pod_cgroup[1..]);
        for e in std::fs::read_dir(&pod).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                found.push(e.path().display().to_string());
            }
        }
    }
    found
}

/// Looks for every kind of leftover once; `before`: [`berth_cgroups`] before berthd started.
pub async fn leaks(d: &Berthd, before: &BTreeSet<PathBuf>, pod_cgroup: &str) -> Leaks {
    let (mut pods, mut listed) = (vec![], vec![]);
    if let Ok(mut c) = d.client().await {
        if let Ok(r) = c
            .runtime
            .list_pod_sandbox(ListPodSandboxRequest::default())
            .await
        {
            pods = r.into_inner().items.into_iter().map(|p| p.id).collect();
        }
        if let Ok(r) = c
            .runtime
            .list_containers(ListContainersRequest::default())
            .await
        {
            listed = r
                .into_inner()
                .containers
                .into_iter()
                .map(|c| c.id)
                .collect();
        }
    }
    let (state, root) = (&d.config.state, &d.config.root);
    // The state dir is a mount point of its own (two binds), not a leftover.
    let mut mounts = mounts_below(state);
    mounts.extend(mounts_under(root));
    let mut bundles = entries(&state.join("containers"));
    bundles.extend(entries(&state.join("containers-trash")));
    let mut uppers = entries(&root.join("containers"));
    uppers.extend(entries(&root.join("containers-trash")));
    let found = procs::pod_processes(state);
    let monitors = found
        .monitors
        .into_iter()
        .map(|(pid, _, cmd)| format!("{pid} {cmd}"))
        .collect();
    let inits = found.inits;
    vec![
        ("pods still listed", pods),
        ("containers still listed", listed),
        (
            "mounts",
            mounts.iter().map(|m| m.display().to_string()).collect(),
        ),
        ("pod dirs", entries(&state.join("pods"))),
        ("monitor dirs", entries(&state.join("monitors"))),
        ("bundles", bundles),
        ("upper dirs", uppers),
        (
            "container cgroups",
            cgroups(before, &d.log_text(), pod_cgroup),
        ),
        ("monitor processes", monitors),
        ("pod-init processes", inits),
    ]
}

pub fn total(l: &Leaks) -> usize {
    l.iter().map(|(_, v)| v.len()).sum()
}

/// [`leaks`] until there are none, for at most 30 s (monitors and the trash finish
/// after the RPCs' answers).
pub async fn settled(d: &Berthd, before: &BTreeSet<PathBuf>, pod_cgroup: &str) -> Leaks {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let l = leaks(d, before, pod_cgroup).await;
        if total(&l) == 0 || Instant::now() > deadline {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
