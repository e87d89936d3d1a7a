//! A worker: pod after pod, each through its whole life, retrying through the outages.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use berth_api::v1::*;

use crate::cri::{
    create_ctr, ctr_state, pod_status, remove_ctr, remove_pod, run_pod, start_ctr, stop_ctr,
};
use crate::requests::pod_config;
use crate::shared::{Held, Shared};

/// One pod's life; false when it had to be given up.
pub async fn cycle(sh: &Shared, w: usize, iter: u64) -> bool {
    let name = format!("w{w}-{iter}");
    let shared_pid = iter % 2 == 1;
    let pc = pod_config(sh, &name, shared_pid);
    if let Err(e) = std::fs::create_dir_all(&pc.log_directory) {
        sh.error(format!("worker {w}: creating {}: {e}", pc.log_directory));
    }
    let Some(pod) = run_pod(sh, w, &name, &pc).await else {
        sh.n.abandoned.fetch_add(1, Ordering::Relaxed);
        return false;
    };
    sh.pod_ids.lock().unwrap().insert(pod.clone());
    sh.n.pods_started.fetch_add(1, Ordering::Relaxed);
    let ok = life_of(sh, w, &name, &pod, &pc, shared_pid).await;
    // Teardown, whatever happened above.
    sh.set_busy(&pod, true);
    let removed = remove_pod(sh, w, &pod).await;
    sh.held.lock().unwrap().remove(&pod);
    if removed {
        sh.n.pods_removed.fetch_add(1, Ordering::Relaxed);
    }
    if !(ok && removed) {
        sh.n.abandoned.fetch_add(1, Ordering::Relaxed);
    }
    ok && removed
}

/// From a running pod to a stopped and removed container.
async fn life_of(
    sh: &Shared,
    w: usize,
    name: &str,
    pod: &str,
    pc: &PodSandboxConfig,
    shared_pid: bool,
) -> bool {
    let Some(status) = pod_status(sh, w, pod).await else {
        return false;
    };
    let ip = status.network.unwrap_or_default().ip;
    if !ip.starts_with(&sh.prefix) {
        sh.error(format!(
            "worker {w}: pod {name}: IP {ip:?} not in the test network"
        ));
    }
    sh.pod_ips.lock().unwrap().insert(ip.clone());
    sh.held.lock().unwrap().insert(
        pod.to_string(),
        Held {
            name: name.to_string(),
            ip,
            ctr: None,
            ctr_state: ContainerState::ContainerCreated,
            busy: false,
        },
    );

    // CreateContainer; after an outage or a failure, look for it.
    sh.set_busy(pod, true);
    let Some(ctr) = create_ctr(sh, w, name, pod, pc, shared_pid).await else {
        return false;
    };
    sh.ctr_ids.lock().unwrap().insert(ctr.clone());
    sh.update(pod, |h| h.ctr = Some(ctr.clone()));

    // StartContainer; after an outage, ContainerStatus says whether it ran.
    sh.set_busy(pod, true);
    if !start_ctr(sh, w, name, &ctr).await {
        return false;
    }
    sh.update(pod, |h| h.ctr_state = ContainerState::ContainerRunning);
    sh.n.ctrs_started.fetch_add(1, Ordering::Relaxed);

    // ExecSync: a read, retried.
    let id = ctr.clone();
    let want = format!("soak {name}\n");
    let r = sh
        .retried(w, "ExecSync", |c| {
            let (id, want) = (id.clone(), want.clone());
            async move {
                let mut c = c;
                berth_e2e::pods::exec(&mut c, &id, &["echo", want.trim_end()], 10).await
            }
        })
        .await;
    match r {
        Some(r) if r.exit_code == 0 && r.stdout == want.as_bytes() => {
            sh.n.execs.fetch_add(1, Ordering::Relaxed);
        }
        Some(r) => sh.error(format!("worker {w}: {name}: ExecSync answered {r:?}")),
        None => return false,
    }
    tokio::time::sleep(sh.dwell).await;

    // StopContainer and RemoveContainer: idempotent, retried.
    sh.set_busy(pod, true);
    let stopped = stop_ctr(sh, w, &ctr).await;
    if stopped.is_none() {
        return false;
    }
    sh.update(pod, |h| h.ctr_state = ContainerState::ContainerExited);
    let s = ctr_state(sh, w, &ctr).await;
    match s {
        Some(s) if s.state == ContainerState::ContainerExited as i32 => {}
        Some(s) => sh.error(format!("worker {w}: {name}: after StopContainer: {s:?}")),
        None => return false,
    }
    sh.set_busy(pod, true);
    let removed = remove_ctr(sh, w, &ctr).await;
    if removed.is_none() {
        return false;
    }
    sh.update(pod, |h| h.ctr = None);
    true
}

/// Cycles pods until told to stop.
pub async fn worker(sh: Arc<Shared>, w: usize) {
    let mut iter = 0;
    while !sh.stop.load(Ordering::Relaxed) {
        cycle(&sh, w, iter).await;
        iter += 1;
    }
    sh.step(w, "done".into());
}

/// The warm-up: one pod per worker, all at once, not counted. False: one failed.
pub async fn warm_up(sh: &Arc<Shared>, workers: usize) -> anyhow::Result<bool> {
    let warm: Vec<_> = (0..workers)
        .map(|w| {
            let sh = sh.clone();
            tokio::spawn(async move { cycle(&sh, w, 1_000_000).await })
        })
        .collect();
    for t in warm {
        if !t.await? {
            return Ok(false);
        }
    }
    sh.n.forget_warm_up();
    Ok(true)
}
