//! The CRI calls the benchmark makes, each written once; a failure keeps its gRPC code.
//! Container calls take a `tag` appended to the call's name in errors (" (warm pod)").

use berth_api::v1::*;
use berth_e2e::client::CriClient;
use tonic::Code;

use crate::requests::{Bench, LABEL};

/// A gRPC failure as an error that keeps its code and message.
pub fn rpc(what: &str, status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{what}: {:?}: {}", status.code(), status.message())
}

/// The tag of the warm pod's container calls.
pub const WARM: &str = " (warm pod)";

pub async fn run_pod(c: &mut CriClient, config: &PodSandboxConfig) -> anyhow::Result<String> {
    Ok(c.runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .map_err(|s| rpc("RunPodSandbox", s))?
        .into_inner()
        .pod_sandbox_id)
}

pub async fn create_ctr(
    c: &mut CriClient,
    pod: &str,
    config: ContainerConfig,
    sandbox: &PodSandboxConfig,
    tag: &str,
) -> anyhow::Result<String> {
    Ok(c.runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: Some(sandbox.clone()),
        })
        .await
        .map_err(|s| rpc(&format!("CreateContainer{tag}"), s))?
        .into_inner()
        .container_id)
}

pub async fn start_ctr(c: &mut CriClient, ctr: &str, tag: &str) -> anyhow::Result<()> {
    c.runtime
        .start_container(StartContainerRequest {
            container_id: ctr.into(),
        })
        .await
        .map_err(|s| rpc(&format!("StartContainer{tag}"), s))?;
    Ok(())
}

/// ExecSync `true`; false when the runtime does not implement ExecSync.
pub async fn exec_true(c: &mut CriClient, ctr: &str) -> anyhow::Result<bool> {
    match c
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: ctr.into(),
            cmd: vec!["true".into()],
            timeout: 10,
        })
        .await
    {
        Ok(r) => {
            let code = r.into_inner().exit_code;
            if code != 0 {
                anyhow::bail!("ExecSync true: exit code {code}");
            }
            Ok(true)
        }
        Err(st) if st.code() == Code::Unimplemented => Ok(false),
        Err(st) => Err(rpc("ExecSync", st)),
    }
}

/// StopContainer with no grace period.
pub async fn stop_ctr(c: &mut CriClient, ctr: &str, tag: &str) -> anyhow::Result<()> {
    c.runtime
        .stop_container(StopContainerRequest {
            container_id: ctr.into(),
            timeout: 0,
        })
        .await
        .map_err(|s| rpc(&format!("StopContainer{tag}"), s))?;
    Ok(())
}

pub async fn remove_ctr(c: &mut CriClient, ctr: &str, tag: &str) -> anyhow::Result<()> {
    c.runtime
        .remove_container(RemoveContainerRequest {
            container_id: ctr.into(),
        })
        .await
        .map_err(|s| rpc(&format!("RemoveContainer{tag}"), s))?;
    Ok(())
}

pub async fn stop_pod(c: &mut CriClient, pod: &str) -> anyhow::Result<()> {
    c.runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.into(),
        })
        .await
        .map_err(|s| rpc("StopPodSandbox", s))?;
    Ok(())
}

pub async fn remove_pod(c: &mut CriClient, pod: &str) -> anyhow::Result<()> {
    c.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.into(),
        })
        .await
        .map_err(|s| rpc("RemovePodSandbox", s))?;
    Ok(())
}

/// RunPodSandbox + CreateContainer + StartContainer; returns (pod, container).
pub async fn start_pod(
    bench: &Bench,
    c: &mut CriClient,
    name: &str,
) -> anyhow::Result<(String, String)> {
    let config = bench.pod_config(name)?;
    let pod = run_pod(c, &config).await?;
    let ctr = create_ctr(c, &pod, bench.ctr_config(), &config, "").await?;
    start_ctr(c, &ctr, "").await?;
    Ok((pod, ctr))
}

/// StopContainer(0) + RemoveContainer + StopPodSandbox + RemovePodSandbox, as the kubelet does.
pub async fn teardown(c: &mut CriClient, pod: &str, ctr: Option<&str>) -> anyhow::Result<()> {
    if let Some(ctr) = ctr {
        stop_ctr(c, ctr, "").await?;
        remove_ctr(c, ctr, "").await?;
    }
    stop_pod(c, pod).await?;
    remove_pod(c, pod).await
}

/// Removes every pod this benchmark labelled (after a failure; StopPodSandbox and
/// RemovePodSandbox take the containers along in both runtimes).
pub async fn remove_labelled(c: &mut CriClient) -> anyhow::Result<usize> {
    let pods = c
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .map_err(|s| rpc("ListPodSandbox", s))?
        .into_inner()
        .items;
    let mut n = 0;
    for p in pods.iter().filter(|p| p.labels.contains_key(LABEL)) {
        teardown(c, &p.id, None).await?;
        n += 1;
    }
    Ok(n)
}

/// Pods and containers the runtime still lists.
pub async fn listed(c: &mut CriClient) -> anyhow::Result<(usize, usize)> {
    Ok((listed_pods(c).await?, listed_containers(c).await?))
}

/// ListPodSandbox: how many pods.
pub async fn listed_pods(c: &mut CriClient) -> anyhow::Result<usize> {
    Ok(c.runtime
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .map_err(|s| rpc("ListPodSandbox", s))?
        .into_inner()
        .items
        .len())
}

/// ListContainers: how many containers.
pub async fn listed_containers(c: &mut CriClient) -> anyhow::Result<usize> {
    Ok(c.runtime
        .list_containers(ListContainersRequest::default())
        .await
        .map_err(|s| rpc("ListContainers", s))?
        .into_inner()
        .containers
        .len())
}

/// ListContainerStats: how many containers have stats.
pub async fn listed_stats(c: &mut CriClient) -> anyhow::Result<usize> {
    Ok(c.runtime
        .list_container_stats(ListContainerStatsRequest::default())
        .await
        .map_err(|s| rpc("ListContainerStats", s))?
        .into_inner()
        .stats
        .len())
}

/// The pod's IP from PodSandboxStatus ("" when it has none).
pub async fn pod_ip(c: &mut CriClient, pod: &str) -> anyhow::Result<String> {
    Ok(c.runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.into(),
            verbose: false,
        })
        .await
        .map_err(|s| rpc("PodSandboxStatus", s))?
        .into_inner()
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .unwrap_or_default())
}

/// The `NetworkReady` condition of Status, if the runtime reports one.
pub async fn network_ready(c: &mut CriClient) -> anyhow::Result<Option<RuntimeCondition>> {
    let status = c
        .runtime
        .status(StatusRequest { verbose: false })
        .await
        .map_err(|s| rpc("Status", s))?
        .into_inner();
    Ok(status
        .status
        .into_iter()
        .flat_map(|s| s.conditions)
        .find(|cond| cond.r#type == "NetworkReady"))
}

pub async fn pull(c: &mut CriClient, image: &str) -> anyhow::Result<()> {
    c.image
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map_err(|s| rpc(&format!("PullImage {image}"), s))?;
    Ok(())
}
