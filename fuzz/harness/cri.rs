//! Fuzz check of the CRI request validation: RunPodSandbox's pod config
//! check (`berth_spec::sandbox::validate`) and CreateContainer's spec
//! building (`berth_spec::build_spec`), on protobuf messages decoded from
//! the input as berthd's gRPC server decodes them.
//!
//! Input: `[u16 LE n][n bytes PodSandboxConfig][ContainerConfig]`. The low
//! bits of the container's `metadata.attempt` pick host facts (cgroup v2,
//! AppArmor, seccomp), so one corpus covers several hosts.
//!
//! Shared by the `cri` fuzz target and the stable corpus replay test
//! (crates/spec/tests/fuzz_corpus.rs). Checks: no panic; what is accepted
//! keeps the promises berthd relies on (no line breaks in the pod's
//! hostname/DNS entries, sysctls only for namespaces the pod owns, cgroup
//! paths without `..`, unified keys that are plain interface files, a
//! privileged container only in a privileged pod, a spec that serializes).
//!
//! The host side is a fixture: mount sources are never created
//! (`create_missing_mount_sources: false`), relative seccomp profiles and
//! privileged devices come from a temp dir.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use berth_api::v1;
use berth_spec::{HostEnv, ImageConfig, PodFiles, PodNamespace, PodNamespaces, SpecInput};
use prost::Message;

struct Fixture {
    rootfs: PathBuf,
    files: PodFiles,
    host: HostEnv,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        // Lives as long as the process: the temp dir is left to the OS.
        let dir = tempfile::Builder::new()
            .prefix("berth-fuzz-cri-")
            .tempdir()
            .expect("fixture dir")
            .keep();
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        std::fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(rootfs.join("etc/group"), "root:x:0:\nwww:x:33:\nlogs:x:4:www\n").unwrap();
        let pod = dir.join("pod");
        std::fs::create_dir_all(pod.join("shm")).unwrap();
        for f in ["hosts", "hostname", "resolv.conf"] {
            std::fs::write(pod.join(f), f).unwrap();
        }
        let seccomp = dir.join("seccomp");
        std::fs::create_dir_all(&seccomp).unwrap();
        std::fs::write(
            seccomp.join("profile.json"),
            r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],"syscalls":[{"names":["read","write","exit"],"action":"SCMP_ACT_ALLOW"}]}"#,
        )
        .unwrap();
        // Privileged containers get every device of dev_dir: a small one.
        let dev = dir.join("dev");
        std::fs::create_dir_all(&dev).unwrap();
        let _ = nix::sys::stat::mknod(
            &dev.join("null"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        );
        let host = HostEnv {
            node_hostname: "node-1".into(),
            min_oom_score_adj: -999,
            seccomp_profile_root: Some(seccomp),
            hugepage_sizes: vec!["2MB".into(), "1GB".into()],
            pids_limit: Some(4096),
            create_missing_mount_sources: false,
            dev_dir: dev,
            ..Default::default()
        };
        Fixture {
            files: PodFiles {
                etc_hosts: Some(pod.join("hosts")),
                etc_hostname: Some(pod.join("hostname")),
                resolv_conf: Some(pod.join("resolv.conf")),
                dev_shm: Some(pod.join("shm")),
            },
            rootfs,
            host,
        }
    })
}

fn one_word(s: &str) -> bool {
    !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn pinned(own: bool, what: &str) -> PodNamespace {
    if own {
        PodNamespace::Pinned(PathBuf::from(format!("/run/berth/ns/{what}/pod")))
    } else {
        PodNamespace::Host
    }
}

pub fn run(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let n = usize::from(u16::from_le_bytes([data[0], data[1]]));
    let rest = &data[2..];
    let (pod_bytes, ctr_bytes) = rest.split_at(n.min(rest.len()));
    let Ok(pod) = v1::PodSandboxConfig::decode(pod_bytes) else {
        return;
    };
    let Ok(ctr) = v1::ContainerConfig::decode(ctr_bytes) else {
        return;
    };

    assert!(
        berth_spec::sandbox::validate(&pod, "kata", &[]).is_err(),
        "an unknown runtime handler was accepted"
    );
    let plan = match berth_spec::sandbox::validate(&pod, "", &[]) {
        Ok(p) => p,
        Err(e) => {
            assert!(!e.is_empty());
            return;
        }
    };
    assert!(one_word(&plan.hostname) && plan.hostname.len() <= 64);
    if let Some(dns) = &pod.dns_config {
        for v in dns.servers.iter().chain(&dns.searches).chain(&dns.options) {
            assert!(one_word(v), "DNS entry {v:?} accepted");
        }
    }
    for (k, v) in &plan.sysctls {
        assert!(!v.contains('\n'), "sysctl value with a newline accepted");
        assert!(
            !k.split(['.', '/']).any(|c| c.is_empty() || c == ".."),
            "sysctl {k:?} accepted"
        );
    }
    let linux = pod.linux.clone().unwrap_or_default();
    let cgroup_parent = linux.cgroup_parent.as_str();
    let cgroups_path = berth_spec::cgroups_path(cgroup_parent, "c0ffee", "cri-containerd");
    if let Some(p) = &cgroups_path {
        assert!(
            !p.split('/').any(|c| c == ".."),
            "cgroup path {p:?} climbs out"
        );
        assert!(!p.contains('\0'));
    }

    let f = fixture();
    let attempt = ctr.metadata.as_ref().map_or(0, |m| m.attempt);
    let host = HostEnv {
        cgroup_v2: attempt & 1 != 0,
        apparmor_enabled: attempt & 2 != 0,
        apparmor_default_profile: (attempt & 2 != 0).then(|| "berth-default".to_string()),
        seccomp_enabled: attempt & 4 == 0,
        hugetlb_controller: attempt & 8 != 0,
        swap_controller: attempt & 16 != 0,
        ..f.host.clone()
    };
    let namespaces = PodNamespaces {
        network: pinned(plan.net, "net"),
        ipc: pinned(plan.ipc, "ipc"),
        uts: pinned(plan.uts, "uts"),
        pid: plan.pid.then(|| PathBuf::from("/proc/1/ns/pid")),
        user: plan.userns.map(|m| (PathBuf::from("/proc/1/ns/user"), m)),
    };
    let image = ImageConfig {
        user: "www".into(),
        env: vec!["PATH=/usr/bin:/bin".into()],
        entrypoint: vec!["/entrypoint.sh".into()],
        cmd: vec!["serve".into()],
        working_dir: "/srv".into(),
    };
    let input = SpecInput {
        container_id: "c0ffee",
        sandbox_id: "5a4d",
        config: &ctr,
        sandbox: &pod,
        image: &image,
        image_name: "docker.io/library/busybox:1.36",
        rootfs: &f.rootfs,
        namespaces: &namespaces,
        target_pid_ns: None,
        files: &f.files,
        cgroups_path: cgroups_path.as_deref(),
        host: &host,
    };
    let spec = match berth_spec::build_spec(&input) {
        Ok(s) => s,
        Err(e) => {
            let _ = (e.field(), e.to_string());
            return;
        }
    };
    check_spec(&spec, &pod, &ctr, &namespaces, &host);
}

fn check_spec(
    spec: &berth_spec::oci_spec::runtime::Spec,
    pod: &v1::PodSandboxConfig,
    ctr: &v1::ContainerConfig,
    ns: &PodNamespaces,
    host: &HostEnv,
) {
    serde_json::to_vec(spec).expect("the spec is written as config.json");
    let privileged = |sc: Option<bool>| sc.unwrap_or(false);
    let ctr_priv = privileged(
        ctr.linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .map(|s| s.privileged),
    );
    let pod_priv = privileged(
        pod.linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .map(|s| s.privileged),
    );
    assert!(
        !ctr_priv || pod_priv,
        "privileged container in an unprivileged pod"
    );

    let process = spec.process().as_ref().expect("process");
    assert!(
        process.args().as_ref().is_some_and(|a| !a.is_empty()),
        "no command to run"
    );
    for m in spec.mounts().as_ref().expect("mounts") {
        assert!(m.destination().is_absolute(), "relative mount destination");
        if m.typ().as_deref() == Some("bind") {
            let src = m.source().as_ref().expect("bind source");
            assert!(src.is_absolute(), "relative bind source");
        }
    }
    let linux = spec.linux().as_ref().expect("linux");
    if let Some(res) = linux.resources()
        && let Some(unified) = res.unified()
    {
        assert!(host.cgroup_v2, "unified resources on a v1 host");
        for k in unified.keys() {
            assert!(
                !k.contains('/')
                    && !k.contains('\0')
                    && k != "."
                    && k != ".."
                    && !k.starts_with("cgroup."),
                "unified key {k:?} reaches the spec"
            );
        }
    }
    if let Some(sysctl) = linux.sysctl() {
        for k in sysctl.keys() {
            let owner = if k.starts_with("net.") {
                &ns.network
            } else if k == "kernel.hostname" || k == "kernel.domainname" {
                &ns.uts
            } else {
                &ns.ipc
            };
            assert!(
                *owner != PodNamespace::Host,
                "sysctl {k:?} would change the host"
            );
        }
    }
    if let Some(p) = linux.cgroups_path() {
        assert!(!p.components().any(|c| c.as_os_str() == ".."));
    }
    if let Some(h) = spec.hostname() {
        assert!(one_word(h));
    }
    // Nothing outside the rootfs is the root.
    let root = spec.root().as_ref().expect("root");
    assert!(root.path().starts_with(Path::new(&fixture().rootfs)));
}
