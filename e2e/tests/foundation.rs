//! The daemon itself: CRI basics over the real socket, socket ownership,
//! configuration errors and shutdown.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use berth_api::v1::*;
use berth_e2e::daemon::{Berthd, BerthdConfig};
use tonic::Code;

#[tokio::test]
async fn version_names_berth_and_cri_v1() {
    let d = Berthd::start().await.unwrap();
    let v = d
        .client()
        .await
        .unwrap()
        .runtime
        .version(VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "berth");
    assert_eq!(v.runtime_api_version, "v1");
    assert_eq!(v.runtime_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(v.version, "0.1.0");
}

#[tokio::test]
async fn status_reports_conditions_and_verbose_config() {
    let d = Berthd::start().await.unwrap();
    let mut c = d.client().await.unwrap();
    let s = c
        .runtime
        .status(StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let conds = s.status.unwrap().conditions;
    let runtime = conds.iter().find(|c| c.r#type == "RuntimeReady").unwrap();
    assert!(runtime.status, "{runtime:?}");
    let network = conds.iter().find(|c| c.r#type == "NetworkReady").unwrap();
    if !network.status {
        assert!(!network.reason.is_empty() && !network.message.is_empty());
    }
    let config: serde_json::Value = serde_json::from_str(&s.info["config"]).unwrap();
    assert_eq!(config["root"], d.config.root.to_str().unwrap());
    assert_eq!(config["listen"], d.config.socket.to_str().unwrap());
    // Not verbose: no info.
    let s = c
        .runtime
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(s.info.is_empty());
}

#[tokio::test]
async fn runtime_config_reports_the_cgroup_driver_in_use() {
    let d = Berthd::start().await.unwrap();
    let r = d
        .client()
        .await
        .unwrap()
        .runtime
        .runtime_config(RuntimeConfigRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.linux.unwrap().cgroup_driver,
        CgroupDriver::Cgroupfs as i32
    );
}

fn pod_cidr_request(cidr: &str) -> UpdateRuntimeConfigRequest {
    UpdateRuntimeConfigRequest {
        runtime_config: Some(RuntimeConfig {
            network_config: Some(NetworkConfig {
                pod_cidr: cidr.to_string(),
            }),
        }),
    }
}

async fn verbose_pod_cidr(d: &Berthd) -> String {
    let s = d
        .client()
        .await
        .unwrap()
        .runtime
        .status(StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    serde_json::from_str(&s.info["podCIDR"]).unwrap()
}

#[tokio::test]
async fn pod_cidr_is_kept_across_restarts_and_validated() {
    let mut d = Berthd::start().await.unwrap();
    let mut c = d.client().await.unwrap();
    c.runtime
        .update_runtime_config(pod_cidr_request("10.88.0.0/16"))
        .await
        .unwrap();
    // An empty CIDR (the kubelet before it knows one) keeps the old one.
    c.runtime
        .update_runtime_config(pod_cidr_request(""))
        .await
        .unwrap();
    let err = c
        .runtime
        .update_runtime_config(pod_cidr_request("10.88.0.0/99"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("10.88.0.0/99"), "{err:?}");
    assert_eq!(verbose_pod_cidr(&d).await, "10.88.0.0/16");
    d.restart().await.unwrap();
    assert_eq!(verbose_pod_cidr(&d).await, "10.88.0.0/16");
}

#[tokio::test]
async fn empty_pod_checkpoint_and_restore_requests_say_what_is_missing() {
    let d = Berthd::start().await.unwrap();
    let mut c = d.client().await.unwrap();
    let err = c
        .runtime
        .checkpoint_pod(CheckpointPodRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("pod_sandbox_id"), "{err:?}");
    let err = c
        .runtime
        .restore_pod(RestorePodRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("config"), "{err:?}");
}

#[tokio::test]
async fn socket_is_0660_and_removed_on_sigterm() {
    let mut d = Berthd::start().await.unwrap();
    let mode = std::fs::metadata(&d.config.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);
    let status = d.stop().await.unwrap();
    assert!(status.success(), "{status}: {}", d.log_text());
    assert!(!d.config.socket.exists());
    assert!(d.log_text().contains("shutting down"));
}

#[tokio::test]
async fn sigint_is_graceful_too() {
    let mut d = Berthd::start().await.unwrap();
    let status = d
        .signal_and_wait(nix::sys::signal::Signal::SIGINT)
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(!d.config.socket.exists());
}

#[tokio::test]
async fn second_daemon_on_the_same_socket_is_refused() {
    let d = Berthd::start().await.unwrap();
    // Same socket, different root: the socket claim alone must refuse it.
    let mut cmd = d.config.command().unwrap();
    let other_root = d.config.dir.path().join("other-root");
    cmd.arg("--root").arg(&other_root);
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("already serving"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The first daemon is unharmed.
    d.client()
        .await
        .unwrap()
        .runtime
        .version(VersionRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn second_daemon_on_the_same_root_is_refused_and_leaves_no_socket() {
    let d = Berthd::start().await.unwrap();
    let other_socket = d.config.dir.path().join("other.sock");
    let mut cmd = d.config.command().unwrap();
    cmd.arg("--listen").arg(&other_socket);
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("already open in another process"),
        "{stderr}"
    );
    assert!(!other_socket.exists());
}

#[tokio::test]
async fn stale_socket_of_a_killed_daemon_is_replaced() {
    let mut d = Berthd::start().await.unwrap();
    d.kill9().await.unwrap();
    assert!(d.config.socket.exists(), "SIGKILL leaves the socket behind");
    d.restart().await.unwrap();
    d.client()
        .await
        .unwrap()
        .runtime
        .version(VersionRequest::default())
        .await
        .unwrap();
}

fn run_with_config(toml: &str) -> (bool, String) {
    let mut config = BerthdConfig::new().unwrap();
    config.config_toml = Some(toml.to_string());
    let out = config
        .command()
        .unwrap()
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn malformed_config_is_a_clear_startup_error() {
    for (toml, names) in [
        ("root = [", "line 1"),
        ("rot = \"/x\"\n", "rot"),
        ("log_format = \"xml\"\n", "xml"),
        (
            "[image]\nmax_parallel_layers = 1000\n",
            "image.max_parallel_layers",
        ),
        ("state = \"relative/dir\"\n", "state"),
    ] {
        let (ok, stderr) = run_with_config(toml);
        assert!(!ok, "{toml:?} was accepted");
        assert!(stderr.contains(names), "{toml:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn config_default_prints_a_config_that_runs() {
    let config = BerthdConfig::new().unwrap();
    let bin = berth_e2e::daemon::berthd_bin().unwrap();
    let out = std::process::Command::new(&bin)
        .args(["config", "default"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("max_parallel_layers"));
    // The printed file is accepted as a config, and `config show` reflects flags.
    let path = config.dir.path().join("default.toml");
    std::fs::write(&path, &text).unwrap();
    let out = std::process::Command::new(&bin)
        .arg("--config")
        .arg(&path)
        .args(["--log-format", "json", "config", "show"])
        .output()
        .unwrap();
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(shown.contains("log_format = \"json\""), "{shown}");
}
