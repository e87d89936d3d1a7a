//! Pods and containers against a real berthd: a registry with the test
//! images, a daemon pulling from it ([`setup`]), and thin wrappers around the
//! CRI calls the container tests share.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use berth_api::v1::*;

use crate::cleanup::Guard;
use crate::client::CriClient;
use crate::daemon::{Berthd, BerthdConfig};
use crate::registry::Registry;

pub const BUSYBOX: &str = "berth-test/busybox:latest";

/// busybox with config `User "berth"` (uid 1000, gid 1000, HOME /home/berth;
/// /etc/group makes berth a member of staff, gid 50).
pub const USER_IMAGE: &str = "berth-test/user:latest";

/// A registry, a daemon pulling from it, a client to the daemon, and the
/// guard that cleans the daemon's mounts up when the test ends.
pub struct PodEnv {
    pub _reg: Registry,
    pub d: Berthd,
    pub c: CriClient,
    pub _g: Guard,
}

/// Registry with the test images, a daemon that pulls from it, the images pulled.
pub async fn setup(images: &[&str]) -> PodEnv {
    setup_with_config(BerthdConfig::new().unwrap(), images).await
}

/// As [`setup`], for a daemon of `config` (a config file, env of its own).
pub async fn setup_with_config(mut config: BerthdConfig, images: &[&str]) -> PodEnv {
    let reg = test_registry(&mut config);
    let g = Guard(config.dir.path().to_path_buf());
    let (d, c) = start_and_pull(config, images).await;
    PodEnv {
        _reg: reg,
        d,
        c,
        _g: g,
    }
}

/// A registry with the test images, which `config`'s daemon pulls
/// `docker.io/berth-test/*` from.
pub fn test_registry(config: &mut BerthdConfig) -> Registry {
    let reg = Registry::start().unwrap();
    reg.push_test_images().unwrap();
    let hp = reg.host_port();
    config.registries_conf = Some(format!(
        "[[registry]]\nprefix = \"docker.io/berth-test\"\nlocation = \"{hp}/berth-test\"\ninsecure = true\n"
    ));
    reg
}

/// Starts the daemon, connects, pulls `images`.
pub async fn start_and_pull(config: BerthdConfig, images: &[&str]) -> (Berthd, CriClient) {
    let d = Berthd::start_with(config).await.unwrap();
    let mut c = d.client().await.unwrap();
    for image in images {
        c.pull(image).await.unwrap();
    }
    (d, c)
}

pub fn ns_options() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        ipc: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ..Default::default()
    }
}

pub fn pod_config(env: &PodEnv, name: &str) -> PodSandboxConfig {
    pod_config_for(&env.d, name)
}

/// A pod config with its own namespaces (PID per container), logging under
/// the daemon's temp dir.
pub fn pod_config_for(d: &Berthd, name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: format!("host-{name}"),
        log_directory: d
            .config
            .dir
            .path()
            .join("logs")
            .join(name)
            .display()
            .to_string(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(ns_options()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub async fn run_pod(env: &mut PodEnv, name: &str) -> (String, PodSandboxConfig) {
    let config = pod_config(env, name);
    let id = run_pod_with(&mut env.c, &config).await;
    (id, config)
}

/// RunPodSandbox of `config`; panics on error.
pub async fn run_pod_with(c: &mut CriClient, config: &PodSandboxConfig) -> String {
    c.runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id
}

/// StopPodSandbox; panics on error.
/// RunPodSandbox of `config`, which must fail: its error.
pub async fn run_pod_err(c: &mut CriClient, config: PodSandboxConfig) -> tonic::Status {
    c.runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .expect_err("RunPodSandbox succeeded")
}

/// Every pod sandbox ListPodSandbox answers (no filter).
pub async fn list_pods(c: &mut CriClient) -> Vec<PodSandbox> {
    c.runtime
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items
}

/// The runtime's Status (not verbose).
pub async fn runtime_status(c: &mut CriClient) -> StatusResponse {
    c.runtime
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner()
}

/// Every container ListContainers answers (no filter).
pub async fn list_containers(c: &mut CriClient) -> Vec<Container> {
    c.runtime
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers
}

/// The image ImageStatus answers for `image` (which must be pulled).
pub async fn image_of(c: &mut CriClient, image: &str) -> Image {
    c.image
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .image
        .unwrap_or_else(|| panic!("{image} is not pulled"))
}

pub async fn stop_pod(c: &mut CriClient, id: &str) {
    c.runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .unwrap();
}

/// RemovePodSandbox; panics on error.
pub async fn remove_pod(c: &mut CriClient, id: &str) {
    c.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .unwrap();
}

pub fn ctr_config(name: &str, image: &str, script: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}/0.log"),
        labels: HashMap::from([("ctr".into(), name.into())]),
        annotations: HashMap::from([("note".into(), "hi".into())]),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(ns_options()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub async fn create(
    c: &mut CriClient,
    pod: &str,
    pod_config: &PodSandboxConfig,
    config: ContainerConfig,
) -> Result<String, tonic::Status> {
    c.runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: Some(pod_config.clone()),
        })
        .await
        .map(|r| r.into_inner().container_id)
}

pub async fn start(c: &mut CriClient, id: &str) {
    c.runtime
        .start_container(StartContainerRequest {
            container_id: id.into(),
        })
        .await
        .unwrap();
}

pub async fn status(c: &mut CriClient, id: &str) -> Result<ContainerStatus, tonic::Status> {
    c.runtime
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await
        .map(|r| r.into_inner().status.unwrap())
}

pub async fn wait_state(c: &mut CriClient, id: &str, want: ContainerState) -> ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status(c, id).await.unwrap();
        if s.state == want as i32 || Instant::now() > deadline {
            assert_eq!(s.state, want as i32, "{s:?}");
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn exec(
    c: &mut CriClient,
    id: &str,
    cmd: &[&str],
    timeout: i64,
) -> Result<ExecSyncResponse, tonic::Status> {
    // The kubelet accepts 16 MiB answers; tonic's default is 4 MiB.
    let mut rt = c.runtime.clone().max_decoding_message_size(17 << 20);
    rt.exec_sync(ExecSyncRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout,
    })
    .await
    .map(|r| r.into_inner())
}

pub fn sh(script: &str) -> [&str; 3] {
    ["sh", "-c", script]
}

/// PodSandboxStatus's status; panics on error.
pub async fn pod_status(c: &mut CriClient, id: &str) -> PodSandboxStatus {
    pod_status_response(c, id).await.status.unwrap()
}

/// PodSandboxStatus's whole answer (the containers' statuses, the time);
/// panics on error.
pub async fn pod_status_response(c: &mut CriClient, id: &str) -> PodSandboxStatusResponse {
    c.runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
}

/// The pod's IP ("" when it has none).
pub async fn pod_ip(c: &mut CriClient, id: &str) -> String {
    pod_status(c, id)
        .await
        .network
        .map(|n| n.ip)
        .unwrap_or_default()
}

/// Creates and starts a container and waits until it runs.
pub async fn running(
    c: &mut CriClient,
    pod: &str,
    pod_config: &PodSandboxConfig,
    config: ContainerConfig,
) -> String {
    let id = create(c, pod, pod_config, config).await.unwrap();
    start(c, &id).await;
    wait_state(c, &id, ContainerState::ContainerRunning).await;
    id
}

/// A busybox container sleeping, with `sc` as its security context (the
/// namespace options filled in) and `res` as its resources.
pub fn sleeper(
    name: &str,
    image: &str,
    sc: LinuxContainerSecurityContext,
    res: Option<LinuxContainerResources>,
) -> ContainerConfig {
    let mut cfg = ctr_config(name, image, "exec sleep 1000");
    cfg.linux = Some(LinuxContainerConfig {
        resources: res,
        security_context: Some(LinuxContainerSecurityContext {
            namespace_options: Some(ns_options()),
            ..sc
        }),
    });
    cfg
}

/// The pod's namespace options (present in every config `pod_config` makes).
pub fn pod_namespaces(pc: &mut PodSandboxConfig) -> &mut NamespaceOption {
    pc.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options
        .get_or_insert_with(Default::default)
}

/// The container's security context (made when missing).
pub fn container_security(cfg: &mut ContainerConfig) -> &mut LinuxContainerSecurityContext {
    cfg.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

/// RemoveContainer; panics on error.
pub async fn remove_container(c: &mut CriClient, id: &str) {
    c.runtime
        .remove_container(RemoveContainerRequest {
            container_id: id.into(),
        })
        .await
        .unwrap();
}

/// StopContainer without a grace period; panics on error.
pub async fn stop_container(c: &mut CriClient, id: &str) {
    c.runtime
        .stop_container(StopContainerRequest {
            container_id: id.into(),
            timeout: 0,
        })
        .await
        .unwrap();
}

/// A read-only CRI image volume of `image` (`sub_path` inside it, or all).
pub fn image_mount(path: &str, image: &str, sub_path: &str) -> Mount {
    Mount {
        container_path: path.into(),
        readonly: true,
        image: Some(ImageSpec {
            image: image.into(),
            user_specified_image: image.into(),
            ..Default::default()
        }),
        image_sub_path: sub_path.into(),
        ..Default::default()
    }
}
