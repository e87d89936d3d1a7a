//! The CRI calls of the run, as `anyhow` results (the e2e helpers panic).

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use berth_api::v1::*;
use berth_e2e::client::CriClient;
use berth_e2e::daemon::Berthd;

use crate::specs;

/// One pod of the run and its container.
#[derive(Clone)]
pub struct Tenant {
    pub name: String,
    pub pod: String,
    pub ctr: String,
    pub pc: PodSandboxConfig,
}

fn st(what: &str) -> impl FnOnce(tonic::Status) -> anyhow::Error + '_ {
    move |s| anyhow!("{what}: {:?}: {}", s.code(), s.message())
}

/// RunPodSandbox, then CreateContainer + StartContainer of its one container.
pub async fn tenant(
    c: &mut CriClient,
    d: &Berthd,
    name: &str,
    cgroup_parent: &str,
    script: &str,
) -> anyhow::Result<Tenant> {
    let pc = specs::pod(d, name, cgroup_parent);
    std::fs::create_dir_all(&pc.log_directory)
        .with_context(|| format!("creating {}", pc.log_directory))?;
    let pod = c
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pc.clone()),
            runtime_handler: String::new(),
        })
        .await
        .map_err(st(&format!("RunPodSandbox {name}")))?
        .into_inner()
        .pod_sandbox_id;
    let mut t = Tenant {
        name: name.to_string(),
        pod,
        ctr: String::new(),
        pc,
    };
    t.ctr = container(c, &t, script, 0).await?;
    Ok(t)
}

/// CreateContainer + StartContainer in `t`'s pod; the container's id.
pub async fn container(
    c: &mut CriClient,
    t: &Tenant,
    script: &str,
    attempt: u32,
) -> anyhow::Result<String> {
    let id = c
        .runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: t.pod.clone(),
            config: Some(specs::ctr(&t.name, script, attempt)),
            sandbox_config: Some(t.pc.clone()),
        })
        .await
        .map_err(st(&format!("CreateContainer {}", t.name)))?
        .into_inner()
        .container_id;
    c.runtime
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .map_err(st(&format!("StartContainer {}", t.name)))?;
    Ok(id)
}

/// StopPodSandbox + RemovePodSandbox; how long both took.
pub async fn remove_pod(c: &mut CriClient, pod: &str) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    c.runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.into(),
        })
        .await
        .map_err(st("StopPodSandbox"))?;
    c.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.into(),
        })
        .await
        .map_err(st("RemovePodSandbox"))?;
    Ok(t0.elapsed())
}

/// ContainerStatus.
pub async fn status(c: &mut CriClient, id: &str) -> anyhow::Result<ContainerStatus> {
    c.runtime
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await
        .map_err(st("ContainerStatus"))?
        .into_inner()
        .status
        .context("ContainerStatus without a status")
}

/// ExecSync of `cmd` with the CRI `timeout` (s), and a client-side limit of
/// twice that plus 30 s (past it: a hang); the answer and how long it took.
pub async fn exec(
    c: &mut CriClient,
    id: &str,
    cmd: &[&str],
    timeout: i64,
) -> (anyhow::Result<ExecSyncResponse>, Duration) {
    let t0 = Instant::now();
    let limit = Duration::from_secs(timeout as u64 * 2 + 30);
    let r = match tokio::time::timeout(limit, berth_e2e::pods::exec(c, id, cmd, timeout)).await {
        Ok(r) => r.map_err(st("ExecSync")),
        Err(_) => Err(anyhow!("ExecSync: no answer within {limit:?} (hang)")),
    };
    (r, t0.elapsed())
}
