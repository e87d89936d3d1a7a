//! The CRI calls of a worker, through outages: reads and idempotent calls are retried
//! ([`Shared::retried`]); a call that makes or starts something is, after an outage or a
//! failure, looked up the kubelet's way and adopted if it happened ([`until_done`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use berth_api::v1::*;
use berth_e2e::client::CriClient;

use crate::requests::{GRACE_S, ctr_config};
use crate::shared::{MAX_FAILURES, Shared, Try};

/// What the lookup after an interrupted or failed call found.
pub enum Found<T> {
    /// It happened after all.
    Done(T),
    /// It did not: call again.
    Again,
    /// Give the pod up.
    GiveUp,
}

/// Calls `call` until it is done or `lookup` finds it done; up to [`MAX_FAILURES`] failures
/// outside outages, each followed by `pause`. None: given up.
pub async fn until_done<T, F, Fut, L, LFut>(
    sh: &Shared,
    w: usize,
    what: &str,
    pause: Duration,
    call: F,
    lookup: L,
) -> Option<T>
where
    F: Fn(CriClient) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
    L: Fn() -> LFut,
    LFut: Future<Output = Found<T>>,
{
    let mut failures = 0;
    loop {
        match sh.rpc(w, what, &call).await {
            Try::Done(v) => return Some(v),
            Try::Outage => {}
            Try::Failed => {
                failures += 1;
                if failures >= MAX_FAILURES {
                    return None;
                }
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
        }
        match lookup().await {
            Found::Done(v) => return Some(v),
            Found::Again => {}
            Found::GiveUp => return None,
        }
    }
}

/// RunPodSandbox until the pod exists; None: given up.
pub async fn run_pod(sh: &Shared, w: usize, name: &str, pc: &PodSandboxConfig) -> Option<String> {
    let call = |mut c: CriClient| {
        let pc = pc.clone();
        async move {
            c.runtime
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(pc),
                    runtime_handler: String::new(),
                })
                .await
                .map(|r| r.into_inner().pod_sandbox_id)
        }
    };
    // Did it happen before the daemon died (or before it failed)?
    let lookup = move || async move {
        match find_pod(sh, w, name).await {
            None => Found::GiveUp,
            Some(Some(p)) if p.state == PodSandboxState::SandboxReady as i32 => {
                sh.n.adopted.fetch_add(1, Ordering::Relaxed);
                Found::Done(p.id)
            }
            // Half made and not ready: the kubelet removes it and runs a new one.
            Some(Some(p)) => {
                remove_pod(sh, w, &p.id).await;
                Found::Again
            }
            Some(None) => Found::Again,
        }
    };
    until_done(
        sh,
        w,
        "RunPodSandbox",
        Duration::from_millis(500),
        call,
        lookup,
    )
    .await
}

/// StopPodSandbox + RemovePodSandbox (both idempotent), through outages.
pub async fn remove_pod(sh: &Shared, w: usize, pod: &str) -> bool {
    let p = pod.to_string();
    let stopped = sh
        .retried(w, "StopPodSandbox", |mut c| {
            let p = p.clone();
            async move {
                c.runtime
                    .stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: p })
                    .await
                    .map(|_| ())
            }
        })
        .await
        .is_some();
    let removed = sh
        .retried(w, "RemovePodSandbox", |mut c| {
            let p = p.clone();
            async move {
                c.runtime
                    .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: p })
                    .await
                    .map(|_| ())
            }
        })
        .await
        .is_some();
    stopped && removed
}

/// The pod named `name`, if the daemon lists it.
pub async fn find_pod(sh: &Shared, w: usize, name: &str) -> Option<Option<PodSandbox>> {
    let name = name.to_string();
    sh.retried(w, "ListPodSandbox (find)", |mut c| {
        let name = name.clone();
        async move {
            c.runtime
                .list_pod_sandbox(ListPodSandboxRequest {
                    filter: Some(PodSandboxFilter {
                        label_selector: HashMap::from([("soak-pod".into(), name)]),
                        ..Default::default()
                    }),
                })
                .await
                .map(|r| r.into_inner().items.into_iter().next())
        }
    })
    .await
}

/// The container labelled `name` in `pod`, if the daemon lists it.
pub async fn find_ctr(sh: &Shared, w: usize, pod: &str, name: &str) -> Option<Option<Container>> {
    let (pod, name) = (pod.to_string(), name.to_string());
    sh.retried(w, "ListContainers (find)", |mut c| {
        let (pod, name) = (pod.clone(), name.clone());
        async move {
            c.runtime
                .list_containers(ListContainersRequest {
                    filter: Some(ContainerFilter {
                        pod_sandbox_id: pod,
                        label_selector: HashMap::from([("soak-ctr".into(), name)]),
                        ..Default::default()
                    }),
                })
                .await
                .map(|r| r.into_inner().containers.into_iter().next())
        }
    })
    .await
}

pub async fn ctr_state(sh: &Shared, w: usize, ctr: &str) -> Option<ContainerStatus> {
    let ctr = ctr.to_string();
    sh.retried(w, "ContainerStatus", |mut c| {
        let ctr = ctr.clone();
        async move {
            c.runtime
                .container_status(ContainerStatusRequest {
                    container_id: ctr,
                    verbose: false,
                })
                .await
                .map(|r| r.into_inner().status.unwrap_or_default())
        }
    })
    .await
}

/// PodSandboxStatus (a read), retried.
pub async fn pod_status(sh: &Shared, w: usize, pod: &str) -> Option<PodSandboxStatus> {
    let p = pod.to_string();
    sh.retried(w, "PodSandboxStatus", |mut c| {
        let p = p.clone();
        async move {
            c.runtime
                .pod_sandbox_status(PodSandboxStatusRequest {
                    pod_sandbox_id: p,
                    verbose: false,
                })
                .await
                .map(|r| r.into_inner().status.unwrap_or_default())
        }
    })
    .await
}

/// CreateContainer of pod `name`'s container; after an outage or a failure, it is looked
/// for by its label. None: given up.
pub async fn create_ctr(
    sh: &Shared,
    w: usize,
    name: &str,
    pod: &str,
    pc: &PodSandboxConfig,
    shared_pid: bool,
) -> Option<String> {
    let call = |mut c: CriClient| {
        let (p, pc, cc) = (pod.to_string(), pc.clone(), ctr_config(name, shared_pid));
        async move {
            c.runtime
                .create_container(CreateContainerRequest {
                    pod_sandbox_id: p,
                    config: Some(cc),
                    sandbox_config: Some(pc),
                })
                .await
                .map(|r| r.into_inner().container_id)
        }
    };
    let lookup = move || async move {
        match find_ctr(sh, w, pod, name).await {
            None => Found::GiveUp,
            Some(Some(c)) => {
                sh.n.adopted.fetch_add(1, Ordering::Relaxed);
                Found::Done(c.id)
            }
            Some(None) => Found::Again,
        }
    };
    let pause = Duration::from_millis(500);
    until_done(sh, w, "CreateContainer", pause, call, lookup).await
}

/// StartContainer; after an outage, ContainerStatus says whether it ran. False: given up.
pub async fn start_ctr(sh: &Shared, w: usize, name: &str, ctr: &str) -> bool {
    let call = |mut c: CriClient| {
        let id = ctr.to_string();
        async move {
            c.runtime
                .start_container(StartContainerRequest { container_id: id })
                .await
                .map(|_| ())
        }
    };
    let lookup = move || async move {
        let Some(s) = ctr_state(sh, w, ctr).await else {
            return Found::GiveUp;
        };
        if s.state == ContainerState::ContainerRunning as i32 {
            sh.n.adopted.fetch_add(1, Ordering::Relaxed);
            return Found::Done(());
        }
        if s.state != ContainerState::ContainerCreated as i32 {
            sh.lost(format!(
                "worker {w}: {name}: container {ctr} after an interrupted start: {s:?}"
            ));
            return Found::GiveUp;
        }
        Found::Again
    };
    // No pause after a failure: ContainerStatus says at once whether it ran.
    until_done(sh, w, "StartContainer", Duration::ZERO, call, lookup)
        .await
        .is_some()
}

/// StopContainer with the soak's grace period (idempotent), retried.
pub async fn stop_ctr(sh: &Shared, w: usize, ctr: &str) -> Option<()> {
    let id = ctr.to_string();
    sh.retried(w, "StopContainer", |mut c| {
        let id = id.clone();
        async move {
            c.runtime
                .stop_container(StopContainerRequest {
                    container_id: id,
                    timeout: GRACE_S,
                })
                .await
                .map(|_| ())
        }
    })
    .await
}

/// RemoveContainer (idempotent), retried.
pub async fn remove_ctr(sh: &Shared, w: usize, ctr: &str) -> Option<()> {
    sh.retried(w, "RemoveContainer", |mut c| {
        let id = ctr.to_string();
        async move {
            c.runtime
                .remove_container(RemoveContainerRequest { container_id: id })
                .await
                .map(|_| ())
        }
    })
    .await
}
