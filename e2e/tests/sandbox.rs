//! Pod sandboxes against a real berthd: pinned namespaces (no pause
//! container), hostname, sysctls, host network, list filters, stop/remove
//! idempotency, name reservation, restarts. Needs root.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_api::v1::*;
use berth_e2e::client::CriClient;
use berth_e2e::daemon::Berthd;
use tonic::Code;

/// Detaches any mount left under the test's state dir, so a failed test
/// leaks no nsfs mount on the host.
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let mut points = mounts_under(&self.0);
        points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        for p in points {
            let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let prefix = dir.to_str().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(prefix))
        .map(PathBuf::from)
        .collect()
}

async fn start() -> (Berthd, CriClient, MountGuard) {
    let d = Berthd::start().await.unwrap();
    let c = d.client().await.unwrap();
    let g = MountGuard(d.config.state.clone());
    (d, c, g)
}

fn pod_config(name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: format!("host-{name}"),
        log_directory: format!("/var/log/pods/default_{name}"),
        labels: HashMap::from([("app".into(), name.into()), ("tier".into(), "e2e".into())]),
        annotations: HashMap::from([("note".into(), "hi".into())]),
        linux: Some(LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

fn with_modes(
    mut c: PodSandboxConfig,
    network: NamespaceMode,
    ipc: NamespaceMode,
) -> PodSandboxConfig {
    c.linux.get_or_insert_default().security_context = Some(LinuxSandboxSecurityContext {
        namespace_options: Some(NamespaceOption {
            network: network as i32,
            ipc: ipc as i32,
            pid: NamespaceMode::Container as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

async fn run(c: &mut CriClient, config: PodSandboxConfig) -> Result<String, tonic::Status> {
    run_with_handler(c, config, "").await
}

async fn run_with_handler(
    c: &mut CriClient,
    config: PodSandboxConfig,
    handler: &str,
) -> Result<String, tonic::Status> {
    c.runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: handler.into(),
        })
        .await
        .map(|r| r.into_inner().pod_sandbox_id)
}

async fn status(
    c: &mut CriClient,
    id: &str,
) -> Result<(PodSandboxStatus, serde_json::Value), tonic::Status> {
    let r = c
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        })
        .await?
        .into_inner();
    let info = serde_json::from_str(&r.info["info"]).unwrap();
    Ok((r.status.unwrap(), info))
}

async fn list(c: &mut CriClient, filter: Option<PodSandboxFilter>) -> Vec<String> {
    let mut ids: Vec<String> = c
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest { filter })
        .await
        .unwrap()
        .into_inner()
        .items
        .into_iter()
        .map(|p| p.id)
        .collect();
    ids.sort();
    ids
}

async fn stop(c: &mut CriClient, id: &str) -> Result<(), tonic::Status> {
    c.runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .map(|_| ())
}

async fn remove(c: &mut CriClient, id: &str) -> Result<(), tonic::Status> {
    c.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .map(|_| ())
}

/// Runs `nsenter <ns_flag>=<pin> <cmd...>` and returns its stdout.
fn nsenter(ns_flag: &str, pin: &str, cmd: &[&str]) -> String {
    let out = Command::new("nsenter")
        .arg(format!("{ns_flag}={pin}"))
        .args(cmd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nsenter {ns_flag} {cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn pin(info: &serde_json::Value, ns: &str) -> Option<String> {
    info["pins"][ns].as_str().map(String::from)
}

#[tokio::test]
async fn run_pins_namespaces_with_hostname_sysctls_and_loopback() {
    let (d, mut c, _g) = start().await;
    let mut config = pod_config("web");
    let linux = config.linux.as_mut().unwrap();
    linux
        .sysctls
        .insert("net.ipv4.ip_unprivileged_port_start".into(), "80".into());
    linux.sysctls.insert("kernel.shmmni".into(), "1234".into());
    let id = run(&mut c, config).await.unwrap();
    assert_eq!(id.len(), 64, "{id}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));

    let (s, info) = status(&mut c, &id).await.unwrap();
    assert_eq!(s.id, id);
    assert_eq!(s.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(s.metadata.as_ref().unwrap().name, "web");
    assert!(s.created_at > 0);
    assert_eq!(s.labels["app"], "web");
    assert_eq!(s.annotations["note"], "hi");
    assert_eq!(s.network.as_ref().unwrap().ip, "");
    let opts = s.linux.unwrap().namespaces.unwrap().options.unwrap();
    assert_eq!(opts.network, NamespaceMode::Pod as i32);
    assert_eq!(opts.ipc, NamespaceMode::Pod as i32);
    assert_eq!(info["log_directory"], "/var/log/pods/default_web");

    let pod_dir = d.config.state.join("pods").join(&id);
    let net = pin(&info, "net").unwrap();
    let ipc = pin(&info, "ipc").unwrap();
    let uts = pin(&info, "uts").unwrap();
    for p in [&net, &ipc, &uts] {
        assert!(p.starts_with(pod_dir.to_str().unwrap()), "{p}");
    }
    // The pod network has loopback only, and it is up.
    let links = nsenter("--net", &net, &["ip", "-o", "link"]);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains(": lo:") && links.contains("UP"), "{links}");
    // A different namespace from the host's.
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    let pod_net = nsenter("--net", &net, &["readlink", "/proc/self/ns/net"]);
    assert_ne!(pod_net.trim(), host_net.to_str().unwrap());
    assert_eq!(nsenter("--uts", &uts, &["hostname"]).trim(), "host-web");
    assert_eq!(
        nsenter(
            "--net",
            &net,
            &["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"]
        )
        .trim(),
        "80"
    );
    assert_eq!(
        nsenter("--ipc", &ipc, &["cat", "/proc/sys/kernel/shmmni"]).trim(),
        "1234"
    );
    // The host is untouched.
    assert_ne!(
        std::fs::read_to_string("/proc/sys/kernel/shmmni")
            .unwrap()
            .trim(),
        "1234"
    );

    assert!(!mounts_under(&pod_dir).is_empty());
    stop(&mut c, &id).await.unwrap();
    remove(&mut c, &id).await.unwrap();
    assert!(
        mounts_under(&pod_dir).is_empty(),
        "{:?}",
        mounts_under(&pod_dir)
    );
    assert!(!pod_dir.exists());
    assert_eq!(
        status(&mut c, &id).await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn host_network_pod_pins_no_network_or_uts() {
    let (_d, mut c, _g) = start().await;
    let config = with_modes(
        pod_config("hostnet"),
        NamespaceMode::Node,
        NamespaceMode::Pod,
    );
    let id = run(&mut c, config).await.unwrap();
    let (s, info) = status(&mut c, &id).await.unwrap();
    let opts = s.linux.unwrap().namespaces.unwrap().options.unwrap();
    assert_eq!(opts.network, NamespaceMode::Node as i32);
    assert_eq!(opts.pid, NamespaceMode::Container as i32);
    assert_eq!(pin(&info, "net"), None);
    assert_eq!(pin(&info, "uts"), None);
    assert!(pin(&info, "ipc").is_some());

    // Host network and host IPC: nothing to pin at all.
    let config = with_modes(
        pod_config("allhost"),
        NamespaceMode::Node,
        NamespaceMode::Node,
    );
    let id2 = run(&mut c, config).await.unwrap();
    let (_, info) = status(&mut c, &id2).await.unwrap();
    assert!(
        info["pins"]
            .as_object()
            .unwrap()
            .values()
            .all(|v| v.is_null()),
        "{info}"
    );

    // A net sysctl for a host-network pod would change the host: refused.
    let mut config = with_modes(pod_config("bad"), NamespaceMode::Node, NamespaceMode::Pod);
    config
        .linux
        .as_mut()
        .unwrap()
        .sysctls
        .insert("net.ipv4.ip_forward".into(), "1".into());
    let err = run(&mut c, config).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    for id in [id, id2] {
        remove(&mut c, &id).await.unwrap();
    }
}

#[tokio::test]
async fn list_filters_by_id_prefix_state_and_labels() {
    let (_d, mut c, _g) = start().await;
    let a = run(&mut c, pod_config("a")).await.unwrap();
    let b = run(&mut c, pod_config("b")).await.unwrap();
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(list(&mut c, None).await, both);
    let by_id = |id: &str| PodSandboxFilter {
        id: id.into(),
        ..Default::default()
    };
    assert_eq!(list(&mut c, Some(by_id(&a))).await, vec![a.clone()]);
    // A unique prefix resolves, as in containerd.
    let prefix = (8..64)
        .map(|n| &a[..n])
        .find(|p| !b.starts_with(p))
        .unwrap();
    assert_eq!(list(&mut c, Some(by_id(prefix))).await, vec![a.clone()]);
    assert!(list(&mut c, Some(by_id("0000nothere"))).await.is_empty() || a.starts_with("0000"));

    stop(&mut c, &b).await.unwrap();
    let by_state = |s: PodSandboxState| PodSandboxFilter {
        state: Some(PodSandboxStateValue { state: s as i32 }),
        ..Default::default()
    };
    assert_eq!(
        list(&mut c, Some(by_state(PodSandboxState::SandboxReady))).await,
        vec![a.clone()]
    );
    assert_eq!(
        list(&mut c, Some(by_state(PodSandboxState::SandboxNotready))).await,
        vec![b.clone()]
    );

    let by_labels = |l: &[(&str, &str)]| PodSandboxFilter {
        label_selector: l
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    assert_eq!(
        list(&mut c, Some(by_labels(&[("tier", "e2e")]))).await,
        both
    );
    assert_eq!(
        list(&mut c, Some(by_labels(&[("tier", "e2e"), ("app", "b")]))).await,
        vec![b.clone()]
    );
    assert!(
        list(&mut c, Some(by_labels(&[("app", "b"), ("tier", "x")])))
            .await
            .is_empty()
    );
    for id in [a, b] {
        remove(&mut c, &id).await.unwrap();
    }
    assert!(list(&mut c, None).await.is_empty());
}

#[tokio::test]
async fn stop_and_remove_are_idempotent_unknown_ids_too() {
    let (_d, mut c, _g) = start().await;
    let unknown = "f".repeat(64);
    stop(&mut c, &unknown).await.unwrap();
    remove(&mut c, &unknown).await.unwrap();
    let err = status(&mut c, &unknown).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains(&unknown), "{}", err.message());

    let id = run(&mut c, pod_config("idem")).await.unwrap();
    stop(&mut c, &id).await.unwrap();
    stop(&mut c, &id).await.unwrap();
    let (s, _) = status(&mut c, &id).await.unwrap();
    assert_eq!(s.state, PodSandboxState::SandboxNotready as i32);
    remove(&mut c, &id).await.unwrap();
    remove(&mut c, &id).await.unwrap();
    stop(&mut c, &id).await.unwrap();

    // A READY pod can be removed directly (it is stopped first).
    let id = run(&mut c, pod_config("direct")).await.unwrap();
    remove(&mut c, &id).await.unwrap();
    assert!(list(&mut c, None).await.is_empty());
}

#[tokio::test]
async fn duplicate_metadata_is_already_exists_until_removed() {
    let (_d, mut c, _g) = start().await;
    let id = run(&mut c, pod_config("dup")).await.unwrap();
    let err = run(&mut c, pod_config("dup")).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(
        err.message().contains(&id) && err.message().contains("dup"),
        "{}",
        err.message()
    );
    // Another attempt is another pod (the kubelet's recreate path).
    let mut next = pod_config("dup");
    next.metadata.as_mut().unwrap().attempt = 1;
    let id1 = run(&mut c, next).await.unwrap();
    // A stopped pod still holds its name; a removed one frees it.
    stop(&mut c, &id).await.unwrap();
    assert_eq!(
        run(&mut c, pod_config("dup")).await.unwrap_err().code(),
        Code::AlreadyExists
    );
    remove(&mut c, &id).await.unwrap();
    let id2 = run(&mut c, pod_config("dup")).await.unwrap();
    assert_ne!(id2, id);
    for id in [id1, id2] {
        remove(&mut c, &id).await.unwrap();
    }

    // Two racing runs of one pod: exactly one wins.
    let (mut c1, mut c2) = (c.clone(), c.clone());
    let (r1, r2) = tokio::join!(
        run(&mut c1, pod_config("race")),
        run(&mut c2, pod_config("race"))
    );
    let (won, lost) = match (r1, r2) {
        (Ok(id), Err(e)) | (Err(e), Ok(id)) => (id, e),
        other => panic!("{other:?}"),
    };
    assert_eq!(lost.code(), Code::AlreadyExists);
    assert_eq!(list(&mut c, None).await, vec![won.clone()]);
    remove(&mut c, &won).await.unwrap();
}

#[tokio::test]
async fn unknown_runtime_handler_is_refused() {
    let (_d, mut c, _g) = start().await;
    let err = run_with_handler(&mut c, pod_config("rh"), "kata")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("kata"), "{}", err.message());
    assert!(list(&mut c, None).await.is_empty());
}

/// A RuntimeClass handler named in `runtime_handlers` runs the pod as the
/// default handler does, is reported back, and is listed in Status; one not
/// named is refused (the operator's fix is in the message).
#[tokio::test]
async fn configured_runtime_handlers_run_pods() {
    let mut config = berth_e2e::daemon::BerthdConfig::new().unwrap();
    config.config_toml = Some("runtime_handlers = [\"test-handler\"]\n".into());
    let d = Berthd::start_with(config).await.unwrap();
    let mut c = d.client().await.unwrap();
    let _g = MountGuard(d.config.state.clone());
    let id = run_with_handler(&mut c, pod_config("th"), "test-handler")
        .await
        .unwrap();
    let (st, _) = status(&mut c, &id).await.unwrap();
    assert_eq!(st.runtime_handler, "test-handler");
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32);
    let handlers: Vec<String> = berth_e2e::pods::runtime_status(&mut c)
        .await
        .runtime_handlers
        .into_iter()
        .map(|h| h.name)
        .collect();
    assert_eq!(handlers, ["", "test-handler"]);
    let err = run_with_handler(&mut c, pod_config("other"), "kata")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("runtime_handlers"),
        "{}",
        err.message()
    );
    assert_eq!(list(&mut c, None).await, vec![id.clone()]);
    stop(&mut c, &id).await.unwrap();
    remove(&mut c, &id).await.unwrap();
}

#[tokio::test]
async fn invalid_requests_change_nothing() {
    let (d, mut c, _g) = start().await;
    for field in ["name", "namespace", "uid"] {
        let mut config = pod_config("inv");
        let md = config.metadata.as_mut().unwrap();
        match field {
            "name" => md.name.clear(),
            "namespace" => md.namespace.clear(),
            _ => md.uid.clear(),
        }
        let err = run(&mut c, config).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains(field), "{}", err.message());
    }
    let mut config = pod_config("inv");
    config.metadata = None;
    assert_eq!(
        run(&mut c, config).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let mut config = pod_config("inv");
    config
        .linux
        .as_mut()
        .unwrap()
        .sysctls
        .insert("vm.swappiness".into(), "1".into());
    let err = run(&mut c, config).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("vm.swappiness"), "{}", err.message());
    // A sysctl the kernel refuses fails in the helper: rolled back, name freed.
    let mut config = pod_config("inv");
    config
        .linux
        .as_mut()
        .unwrap()
        .sysctls
        .insert("net.ipv4.no_such_knob".into(), "1".into());
    let err = run(&mut c, config).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("no_such_knob"), "{}", err.message());

    assert!(list(&mut c, None).await.is_empty());
    let pods = d.config.state.join("pods");
    assert!(mounts_under(&pods).is_empty(), "{:?}", mounts_under(&pods));
    let left: Vec<_> = std::fs::read_dir(&pods)
        .map(|r| r.collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    // The failed runs left the name free.
    let id = run(&mut c, pod_config("inv")).await.unwrap();
    remove(&mut c, &id).await.unwrap();
}

#[tokio::test]
async fn sandboxes_survive_restart_and_lost_pins_are_notready() {
    let (mut d, mut c, _g) = start().await;
    let keep = run(&mut c, pod_config("keep")).await.unwrap();
    let lost = run(&mut c, pod_config("lost")).await.unwrap();
    let stopped = run(&mut c, pod_config("stopped")).await.unwrap();
    stop(&mut c, &stopped).await.unwrap();
    let (_, lost_info) = status(&mut c, &lost).await.unwrap();
    drop(c);
    d.kill9().await.unwrap();
    // What a reboot does to the state dir: the pins of one pod are gone.
    let lost_dir = d.config.state.join("pods").join(&lost);
    for p in mounts_under(&lost_dir).iter().rev() {
        nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH).unwrap();
    }
    std::fs::remove_dir_all(&lost_dir).unwrap();
    assert!(pin(&lost_info, "net").is_some());

    d.restart().await.unwrap();
    let mut c = d.client().await.unwrap();
    let state = |s: &PodSandboxStatus| PodSandboxState::try_from(s.state).unwrap();
    let (s, info) = status(&mut c, &keep).await.unwrap();
    assert_eq!(state(&s), PodSandboxState::SandboxReady);
    assert_eq!(s.labels["app"], "keep");
    assert_eq!(
        nsenter("--uts", &pin(&info, "uts").unwrap(), &["hostname"]).trim(),
        "host-keep"
    );
    assert_eq!(
        state(&status(&mut c, &lost).await.unwrap().0),
        PodSandboxState::SandboxNotready
    );
    assert_eq!(
        state(&status(&mut c, &stopped).await.unwrap().0),
        PodSandboxState::SandboxNotready
    );
    // Names stay reserved across the restart.
    assert_eq!(
        run(&mut c, pod_config("keep")).await.unwrap_err().code(),
        Code::AlreadyExists
    );

    for id in [&keep, &lost, &stopped] {
        remove(&mut c, id).await.unwrap();
    }
    assert!(list(&mut c, None).await.is_empty());
    assert!(mounts_under(&d.config.state.join("pods")).is_empty());
}

/// UpdatePodSandboxResources (in-place pod resize): the pod's stored config
/// takes the new pod-level resources and overhead, a field left out keeps
/// its value, an unknown pod is NotFound and an empty id InvalidArgument.
#[tokio::test]
async fn update_pod_sandbox_resources_updates_the_stored_config() {
    use prost::Message;
    let (_d, mut c, _g) = start().await;
    let id = run(&mut c, pod_config("resize")).await.unwrap();
    let stored = |info: &serde_json::Value| {
        let pb = hex::decode(info["config_pb"].as_str().unwrap()).unwrap();
        PodSandboxConfig::decode(pb.as_slice())
            .unwrap()
            .linux
            .unwrap()
    };
    let resources = LinuxContainerResources {
        cpu_shares: 512,
        cpu_quota: 50_000,
        cpu_period: 100_000,
        memory_limit_in_bytes: 256 << 20,
        ..Default::default()
    };
    let update = |overhead, resources| UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: id.clone(),
        overhead,
        resources,
    };
    c.runtime
        .update_pod_sandbox_resources(update(None, Some(resources.clone())))
        .await
        .unwrap();
    let linux = stored(&status(&mut c, &id).await.unwrap().1);
    assert_eq!(linux.resources.as_ref(), Some(&resources));
    assert_eq!(linux.overhead, None);

    let overhead = LinuxContainerResources {
        memory_limit_in_bytes: 32 << 20,
        ..Default::default()
    };
    c.runtime
        .update_pod_sandbox_resources(update(Some(overhead.clone()), None))
        .await
        .unwrap();
    let linux = stored(&status(&mut c, &id).await.unwrap().1);
    assert_eq!(
        (linux.resources.as_ref(), linux.overhead.as_ref()),
        (Some(&resources), Some(&overhead))
    );

    let mut unknown = update(None, None);
    unknown.pod_sandbox_id = "f".repeat(64);
    let err = c
        .runtime
        .update_pod_sandbox_resources(unknown)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let mut empty = update(None, None);
    empty.pod_sandbox_id.clear();
    let err = c
        .runtime
        .update_pod_sandbox_resources(empty)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
}
