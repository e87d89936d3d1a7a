//! Security settings of a pod spec, as the container sees them: readOnlyRootFilesystem,
//! runAsUser/runAsGroup, capabilities, seccomp RuntimeDefault, shareProcessNamespace,
//! `kubectl debug --target` (an ephemeral container in its target's PID namespace),
//! hostNetwork, hostPort.

use std::io::{Read, Write};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use crate::common::*;

/// The value of a `Name:\tvalue` line of /proc/self/status in `logs`.
fn status_field<'a>(logs: &'a str, name: &str) -> Option<&'a str> {
    logs.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")).map(str::trim))
}

#[tokio::test]
async fn security_context_of_containers() {
    let ns = TestNs::new("security").await;
    let mut read_only = busybox(
        "read-only",
        "if touch /rootfs-write 2>/dev/null; then echo root=writable; else echo root=read-only; fi; \
         touch /scratch/f && echo scratch=writable",
    );
    read_only["securityContext"] = json!({ "readOnlyRootFilesystem": true });
    read_only["volumeMounts"] = json!([{ "name": "scratch", "mountPath": "/scratch" }]);

    let mut user = busybox("user", "echo uid=$(id -u) gid=$(id -g) groups=$(id -G)");
    user["securityContext"] = json!({ "runAsUser": 1234, "runAsGroup": 5678 });

    let mut caps = busybox(
        "caps",
        "grep -E '^(CapEff|CapBnd|Seccomp|NoNewPrivs):' /proc/self/status",
    );
    caps["securityContext"] = json!({
        "capabilities": { "drop": ["ALL"], "add": ["NET_BIND_SERVICE"] },
        "allowPrivilegeEscalation": false,
        "seccompProfile": { "type": "RuntimeDefault" },
    });

    let (_, _) = ns
        .run_to_success(
            pod(
                "security",
                "Never",
                vec![read_only, user, caps],
                json!({
                    "securityContext": { "supplementalGroups": [4242] },
                    "volumes": [{ "name": "scratch", "emptyDir": {} }],
                }),
            ),
            Duration::from_secs(60),
        )
        .await;
    let logs = ns.logs("security", Some("read-only")).await;
    assert_eq!(logs, "root=read-only\nscratch=writable\n");
    let logs = ns.logs("security", Some("user")).await;
    assert_eq!(logs.trim(), "uid=1234 gid=5678 groups=5678 4242");
    let logs = ns.logs("security", Some("caps")).await;
    // NET_BIND_SERVICE is bit 10 alone.
    assert_eq!(
        status_field(&logs, "CapEff"),
        Some("0000000000000400"),
        "{logs}"
    );
    assert_eq!(
        status_field(&logs, "CapBnd"),
        Some("0000000000000400"),
        "{logs}"
    );
    assert_eq!(
        status_field(&logs, "Seccomp"),
        Some("2"),
        "no seccomp filter:\n{logs}"
    );
    assert_eq!(status_field(&logs, "NoNewPrivs"), Some("1"), "{logs}");
}

#[tokio::test]
async fn seccomp_runtime_default_blocks_a_syscall() {
    let ns = TestNs::new("seccomp").await;
    // The runtime's default profile refuses unshare(CLONE_NEWUSER) to a process without
    // CAP_SYS_ADMIN; the kernel alone allows it (the same container, Unconfined).
    let script =
        "if unshare -U true 2>/dev/null; then echo userns=allowed; else echo userns=denied; fi";
    let mut confined = busybox("confined", script);
    confined["securityContext"] = json!({ "seccompProfile": { "type": "RuntimeDefault" } });
    let mut unconfined = busybox("unconfined", script);
    unconfined["securityContext"] = json!({ "seccompProfile": { "type": "Unconfined" } });
    ns.run_to_success(
        pod("seccomp", "Never", vec![confined, unconfined], json!({})),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        ns.logs("seccomp", Some("confined")).await,
        "userns=denied\n"
    );
    assert_eq!(
        ns.logs("seccomp", Some("unconfined")).await,
        "userns=allowed\n"
    );
}

#[tokio::test]
async fn share_process_namespace() {
    let ns = TestNs::new("sharepid").await;
    // The second container finds the first one's process (a distinctive sleep).
    let seeker = "for i in $(seq 100); do \
        for p in /proc/[0-9]*; do grep -q 'sleep.4242' $p/cmdline 2>/dev/null && { echo found=yes; \
        echo pid1=$(tr '\\0' ' ' < /proc/1/cmdline); exit 0; }; done; sleep 0.2; done; echo found=no";
    ns.create::<Pod>(pod(
        "sharepid",
        "Never",
        vec![
            busybox("sleeper", "exec sleep 4242"),
            busybox("seeker", seeker),
        ],
        json!({ "shareProcessNamespace": true }),
    ))
    .await;
    ns.wait_pod("sharepid", "seeker done", Duration::from_secs(60), |p| {
        has_container_status(p, "seeker")
            .is_some_and(|c| c.state.as_ref().is_some_and(|s| s.terminated.is_some()))
    })
    .await;
    let logs = ns.logs("sharepid", Some("seeker")).await;
    assert!(
        logs.contains("found=yes"),
        "the other container's process is not visible:\n{logs}"
    );
    // In a shared PID namespace, PID 1 is the sandbox's pause process, not a container's.
    assert!(
        !logs.contains("sleep 4242"),
        "PID 1 is a container's process:\n{logs}"
    );
}

/// `kubectl debug --target=app`: the kubelet creates an ephemeral container with PID mode
/// TARGET; it sees the target's processes (its PID 1 is the target's init) and can signal
/// them.
#[tokio::test]
async fn kubectl_debug_target_joins_the_target_pid_namespace() {
    let ns = TestNs::new("debug").await;
    ns.create::<Pod>(pod(
        "debugme",
        "Never",
        vec![busybox("app", "sleep 4343 & exec sleep 4444")],
        json!({}),
    ))
    .await;
    ns.wait_pod("debugme", "running", Duration::from_secs(60), |p| {
        has_container_status(p, "app")
            .is_some_and(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
    })
    .await;
    // The debug container names PID 1, then ends the target's background sleep.
    let script = "echo pid1=$(tr '\\0' ' ' < /proc/1/cmdline); \
        for p in /proc/[0-9]*; do [ \"$(tr '\\0' ' ' < $p/cmdline 2>/dev/null)\" = 'sleep 4343 ' ] && \
        kill ${p#/proc/} && echo killed=yes; done";
    let out = kubectl_timeout(
        &[
            "debug",
            "-n",
            &ns.name,
            "debugme",
            "--image",
            BUSYBOX,
            "--image-pull-policy",
            "IfNotPresent",
            "--target",
            "app",
            "-c",
            "dbg",
            "--",
            "sh",
            "-c",
            script,
        ],
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert!(out.status.success(), "kubectl debug: {}", text(&out.stderr));
    ns.wait_pod("debugme", "dbg done", Duration::from_secs(60), |p| {
        p.status
            .as_ref()
            .and_then(|s| s.ephemeral_container_statuses.as_ref())
            .and_then(|v| v.iter().find(|c| c.name == "dbg"))
            .is_some_and(|c| c.state.as_ref().is_some_and(|s| s.terminated.is_some()))
    })
    .await;
    let logs = ns.logs("debugme", Some("dbg")).await;
    assert!(
        logs.contains("pid1=sleep 4444"),
        "PID 1 is not the target's:\n{logs}"
    );
    assert!(
        logs.contains("killed=yes"),
        "the target's process was not found:\n{logs}"
    );
    // Killing the background sleep left the target's init running.
    let p = ns
        .wait_pod(
            "debugme",
            "app still running",
            Duration::from_secs(10),
            |p| {
                has_container_status(p, "app")
                    .is_some_and(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
            },
        )
        .await;
    assert_eq!(restart_count(&p, "app"), 0);
}

#[tokio::test]
async fn host_network_and_host_port() {
    let ns = TestNs::new("hostnet").await;
    // hostNetwork: the pod's IP is the node's, and it sees the node's interfaces (the bridge).
    let (pod_obj, logs) = ns
        .run_to_success(
            pod(
                "hostnet",
                "Never",
                vec![busybox("app", "ls /sys/class/net | tr '\\n' ' '")],
                json!({ "hostNetwork": true }),
            ),
            Duration::from_secs(60),
        )
        .await;
    let status = pod_obj.status.unwrap();
    assert_eq!(
        status.pod_ip, status.host_ip,
        "a hostNetwork pod's IP is the node's"
    );
    assert!(
        logs.split_whitespace().any(|i| i == "berth0"),
        "not the host's interfaces: {logs}"
    );

    // hostPort: the node's address and port reach the container (the CNI portmap plugin).
    let host_port = 18080 + (std::process::id() % 1000) as i32;
    let web = json!({
        "name": "web", "image": NGINX, "imagePullPolicy": "IfNotPresent",
        "ports": [{ "containerPort": 80, "hostPort": host_port }],
    });
    ns.create::<Pod>(pod("hostport", "Always", vec![web], json!({})))
        .await;
    let pod_obj = ns
        .wait_pod("hostport", "Ready", Duration::from_secs(60), pod_ready)
        .await;
    let host_ip = pod_obj.status.unwrap().host_ip.unwrap();
    // From the host itself, then from another pod.
    let page = wait_for(
        "the page through the hostPort",
        Duration::from_secs(20),
        || {
            let addr = format!("{host_ip}:{host_port}");
            async move { http_get(&addr).ok() }
        },
    )
    .await;
    assert!(page.contains("Welcome to nginx!"), "{page}");
    let script = format!("timeout 5 wget -qO- http://{host_ip}:{host_port}/");
    let (_, logs) = ns
        .run_to_success(
            pod("client", "Never", vec![busybox("wget", &script)], json!({})),
            Duration::from_secs(60),
        )
        .await;
    assert!(logs.contains("Welcome to nginx!"), "{logs}");
}

/// A plain HTTP/1.0 GET of / (the host side of the hostPort check).
fn http_get(addr: &str) -> std::io::Result<String> {
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body)
}

/// `hostUsers: false`: the kubelet gives the pod a user namespace with a range of its own
/// (65536 IDs at a multiple of 65536); root in the pod is that range's first ID on the node;
/// the image's files and an emptyDir (idmapped, as the kubelet asks) read as root's; an exec
/// probe and `kubectl exec` run in the pod's user namespace.
#[tokio::test]
async fn host_users_false_makes_the_pods_root_unprivileged_on_the_node() {
    let ns = TestNs::new("userns").await;
    let mut c = busybox(
        "app",
        "cat /proc/self/uid_map; id -u; stat -c %u /bin/busybox; \
         echo hi > /data/f && stat -c %u /data/f; echo hi > /rootfs-f && echo rootfs=writable; \
         exec sleep 3607",
    );
    c["volumeMounts"] = json!([{ "name": "data", "mountPath": "/data" }]);
    // An exec probe: the kubelet's ExecSync joins the pod's user namespace too.
    c["readinessProbe"] = json!({
        "exec": { "command": ["cat", "/data/f"] }, "periodSeconds": 1
    });
    let _: Pod = ns
        .create(pod(
            "userns",
            "Never",
            vec![c],
            json!({ "hostUsers": false, "volumes": [{ "name": "data", "emptyDir": {} }] }),
        ))
        .await;
    ns.wait_pod("userns", "Ready", Duration::from_secs(60), pod_ready)
        .await;
    let logs = wait_for(
        "the pod's checks in its log",
        Duration::from_secs(30),
        || async {
            let logs = ns.logs("userns", None).await;
            logs.contains("rootfs=writable").then_some(logs)
        },
    )
    .await;
    let words: Vec<&str> = logs.split_whitespace().collect();
    let [zero, host, len, uid, image_owner, data_owner, _] = words[..] else {
        panic!("unexpected log:\n{logs}");
    };
    let host: u32 = host.parse().unwrap();
    assert_eq!((zero, len), ("0", "65536"), "{logs}");
    assert!(host >= 65536 && host.is_multiple_of(65536), "{logs}");
    assert_eq!((uid, image_owner, data_owner), ("0", "0", "0"), "{logs}");

    // kubectl exec (streaming, through the kubelet): root inside, with the pod's map.
    let out = kubectl(&[
        "exec",
        "-n",
        &ns.name,
        "userns",
        "--",
        "sh",
        "-c",
        "cat /proc/self/uid_map; id -u",
    ]);
    assert!(out.status.success(), "kubectl exec: {}", text(&out.stderr));
    let exec_words: Vec<String> = text(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect();
    let want = [
        "0".to_string(),
        host.to_string(),
        len.to_string(),
        "0".to_string(),
    ];
    assert_eq!(exec_words, want, "{}", text(&out.stdout));

    // On the node, the container's process is the range's first ID, not root.
    let pid = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == b"sleep\x003607\x00")
        })
        .expect("the pod's sleep on the node");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uids = status_field(&status, "Uid").unwrap();
    let host = host.to_string();
    assert_eq!(
        uids.split_whitespace().collect::<Vec<_>>(),
        [host.as_str(); 4],
        "{status}"
    );
}
