//! Whole-spec tests: every part together, as berthd will call it.

use std::path::Path;

use berth_api::v1;
use oci_spec::runtime::{Capability, LinuxNamespaceType, LinuxSeccompAction, Spec};

use super::*;

struct Fixture {
    _dir: tempfile::TempDir,
    rootfs: PathBuf,
    files: PodFiles,
    ns: PodNamespaces,
    host: HostEnv,
    image: ImageConfig,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\nwww:x:33:\nlogs:x:4:www\n",
    )
    .unwrap();
    let pod = dir.path().join("pod");
    std::fs::create_dir_all(pod.join("shm")).unwrap();
    for f in ["hosts", "hostname", "resolv.conf"] {
        std::fs::write(pod.join(f), f).unwrap();
    }
    let files = PodFiles {
        etc_hosts: Some(pod.join("hosts")),
        etc_hostname: Some(pod.join("hostname")),
        resolv_conf: Some(pod.join("resolv.conf")),
        dev_shm: Some(pod.join("shm")),
    };
    let ns = PodNamespaces {
        network: PodNamespace::Pinned("/run/berth/ns/net/pod1".into()),
        ipc: PodNamespace::Pinned("/run/berth/ns/ipc/pod1".into()),
        uts: PodNamespace::Pinned("/run/berth/ns/uts/pod1".into()),
        pid: None,
        user: None,
    };
    let host = HostEnv {
        node_hostname: "node-1".into(),
        min_oom_score_adj: -999,
        cgroup_v2: true,
        swap_controller: true,
        ..Default::default()
    };
    let image = ImageConfig {
        user: "www".into(),
        env: vec!["PATH=/usr/bin:/bin".into(), "LANG=C.UTF-8".into()],
        entrypoint: vec!["/docker-entrypoint.sh".into()],
        cmd: vec!["nginx".into(), "-g".into(), "daemon off;".into()],
        working_dir: "/srv".into(),
    };
    Fixture {
        rootfs,
        files,
        ns,
        host,
        image,
        _dir: dir,
    }
}

fn sandbox() -> v1::PodSandboxConfig {
    v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: "web-0".into(),
            uid: "uid-1".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "web-0".into(),
        linux: Some(v1::LinuxPodSandboxConfig {
            sysctls: [(
                "net.ipv4.ip_unprivileged_port_start".to_string(),
                "0".to_string(),
            )]
            .into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container() -> v1::ContainerConfig {
    v1::ContainerConfig {
        metadata: Some(v1::ContainerMetadata {
            name: "nginx".into(),
            attempt: 0,
        }),
        envs: vec![v1::KeyValue {
            key: "LANG".into(),
            value: b"en_US.UTF-8".to_vec(),
        }],
        annotations: [("team".to_string(), "web".to_string())].into(),
        linux: Some(v1::LinuxContainerConfig {
            resources: Some(v1::LinuxContainerResources {
                cpu_shares: 256,
                memory_limit_in_bytes: 128 << 20,
                oom_score_adj: -997,
                ..Default::default()
            }),
            security_context: Some(v1::LinuxContainerSecurityContext {
                namespace_options: Some(v1::NamespaceOption {
                    pid: v1::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                seccomp: Some(v1::SecurityProfile {
                    profile_type: v1::security_profile::ProfileType::RuntimeDefault as i32,
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

fn build(f: &Fixture, c: &v1::ContainerConfig, s: &v1::PodSandboxConfig) -> Result<Spec> {
    build_spec(&SpecInput {
        container_id: "ctr1",
        sandbox_id: "pod1",
        config: c,
        sandbox: s,
        image: &f.image,
        image_name: "docker.io/library/nginx:1.27",
        rootfs: &f.rootfs,
        namespaces: &f.ns,
        target_pid_ns: None,
        files: &f.files,
        cgroups_path: Some("/kubepods/pod-uid-1/ctr1"),
        host: &f.host,
    })
}

#[test]
fn full_spec() {
    let f = fixture();
    let spec = build(&f, &container(), &sandbox()).unwrap();
    assert_eq!(spec.version(), OCI_VERSION);
    let p = spec.process().as_ref().unwrap();
    assert_eq!(
        p.args().as_ref().unwrap(),
        &["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"]
    );
    assert_eq!(
        p.env().as_ref().unwrap(),
        &[
            "PATH=/usr/bin:/bin",
            "HOSTNAME=web-0",
            "LANG=en_US.UTF-8",
            "HOME=/var/www"
        ]
    );
    assert_eq!(p.cwd(), Path::new("/srv"));
    assert_eq!((p.user().uid(), p.user().gid()), (33, 33));
    assert_eq!(p.user().additional_gids().as_ref().unwrap(), &[4]);
    assert_eq!(p.oom_score_adj(), Some(-997));
    assert_eq!(p.no_new_privileges(), None);
    assert_eq!(p.terminal(), Some(false));
    assert!(p.rlimits().is_none());
    assert!(p.apparmor_profile().is_none());
    assert!(
        p.capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .as_ref()
            .unwrap()
            .contains(&Capability::NetBindService)
    );

    let root = spec.root().as_ref().unwrap();
    assert_eq!(root.path(), &f.rootfs);
    assert_eq!(root.readonly(), Some(false));
    assert_eq!(spec.hostname().as_deref(), Some("web-0"));

    let mounts: Vec<_> = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.destination().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        mounts,
        [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup",
            "/etc/hostname",
            "/etc/hosts",
            "/etc/resolv.conf",
            "/dev/shm"
        ]
    );

    let linux = spec.linux().as_ref().unwrap();
    assert_eq!(
        linux.cgroups_path().as_deref(),
        Some(Path::new("/kubepods/pod-uid-1/ctr1"))
    );
    let ns: Vec<_> = linux
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect();
    assert_eq!(
        ns,
        [
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Cgroup
        ]
    );
    let res = linux.resources().as_ref().unwrap();
    assert_eq!(res.cpu().as_ref().unwrap().shares(), Some(256));
    assert_eq!(res.memory().as_ref().unwrap().limit(), Some(128 << 20));
    assert_eq!(res.devices().as_ref().unwrap().len(), 1);
    assert_eq!(
        linux.seccomp().as_ref().unwrap().default_action(),
        LinuxSeccompAction::ScmpActErrno
    );
    assert_eq!(linux.masked_paths().as_ref().unwrap().len(), 11);
    assert_eq!(linux.readonly_paths().as_ref().unwrap().len(), 5);
    assert_eq!(
        linux.sysctl().as_ref().unwrap()["net.ipv4.ip_unprivileged_port_start"],
        "0"
    );

    let a = spec.annotations().as_ref().unwrap();
    assert_eq!(a["team"], "web");
    assert_eq!(a[annotations::SANDBOX_ID], "pod1");
    assert_eq!(a[annotations::SANDBOX_NAME], "web-0");
    assert_eq!(a[annotations::SANDBOX_NAMESPACE], "default");
    assert_eq!(a[annotations::SANDBOX_UID], "uid-1");
    assert_eq!(a[annotations::CONTAINER_NAME], "nginx");
    assert_eq!(a[annotations::CONTAINER_TYPE], "container");
    assert_eq!(a[annotations::IMAGE_NAME], "docker.io/library/nginx:1.27");
}

#[test]
fn json_round_trip() {
    let f = fixture();
    let spec = build(&f, &container(), &sandbox()).unwrap();
    let json = serde_json::to_string_pretty(&spec).unwrap();
    // Field names as the OCI runtime spec (and libcontainer) read them.
    for key in [
        "\"ociVersion\"",
        "\"cgroupsPath\"",
        "\"oomScoreAdj\"",
        "\"defaultAction\": \"SCMP_ACT_ERRNO\"",
        "\"type\": \"network\"",
        "\"CAP_CHOWN\"",
        "\"maskedPaths\"",
        "\"additionalGids\"",
    ] {
        assert!(json.contains(key), "{key} missing");
    }
    let back: Spec = serde_json::from_str(&json).unwrap();
    assert_eq!(back, spec);
    // And through a file, the way a bundle's config.json is read.
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("config.json");
    spec.save(&path).unwrap();
    assert_eq!(Spec::load(&path).unwrap(), spec);
}

#[test]
fn privileged_container() {
    let f = fixture();
    let mut c = container();
    let sc = c.linux.as_mut().unwrap().security_context.as_mut().unwrap();
    sc.privileged = true;
    sc.capabilities = Some(v1::Capability {
        drop_capabilities: vec!["ALL".into()],
        ..Default::default()
    });
    // Not allowed in a non-privileged pod (containerd's rule).
    let e = build(&f, &c, &sandbox()).unwrap_err();
    assert_eq!(e.field(), "linux.security_context.privileged");

    let mut s = sandbox();
    s.linux.as_mut().unwrap().security_context = Some(v1::LinuxSandboxSecurityContext {
        privileged: true,
        ..Default::default()
    });
    let spec = build(&f, &c, &s).unwrap();
    let p = spec.process().as_ref().unwrap();
    let caps = p.capabilities().as_ref().unwrap();
    assert_eq!(caps.bounding().as_ref().unwrap().len(), 41);
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux.seccomp().is_none());
    assert!(linux.masked_paths().as_ref().unwrap().is_empty());
    assert!(linux.readonly_paths().as_ref().unwrap().is_empty());
    let rules = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .as_ref()
        .unwrap();
    assert_eq!(rules.len(), 1);
    assert!(rules[0].allow());
    assert!(
        linux
            .devices()
            .as_ref()
            .unwrap()
            .iter()
            .any(|d| d.path() == Path::new("/dev/null"))
    );
    let sys = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new("/sys"))
        .unwrap();
    assert!(sys.options().as_ref().unwrap().contains(&"rw".to_string()));
    // No cgroup namespace for privileged containers.
    assert!(
        !linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::Cgroup)
    );
}

#[test]
fn readonly_rootfs_and_cri_user() {
    let f = fixture();
    let mut c = container();
    let sc = c.linux.as_mut().unwrap().security_context.as_mut().unwrap();
    sc.readonly_rootfs = true;
    sc.run_as_user = Some(v1::Int64Value { value: 0 });
    sc.no_new_privs = true;
    c.tty = true;
    let spec = build(&f, &c, &sandbox()).unwrap();
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
    let p = spec.process().as_ref().unwrap();
    assert_eq!((p.user().uid(), p.user().gid()), (0, 0));
    assert_eq!(p.no_new_privileges(), Some(true));
    assert_eq!(p.terminal(), Some(true));
    let hosts = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new("/etc/hosts"))
        .unwrap();
    assert!(
        hosts
            .options()
            .as_ref()
            .unwrap()
            .contains(&"ro".to_string())
    );
}

#[test]
fn host_network_pod() {
    let mut f = fixture();
    f.ns.network = PodNamespace::Host;
    f.ns.uts = PodNamespace::Host;
    let mut s = sandbox();
    s.hostname.clear();
    // net.* sysctls are refused for a host-network pod.
    let e = build(&f, &container(), &s).unwrap_err();
    assert!(
        e.field().contains("net.ipv4.ip_unprivileged_port_start"),
        "{e}"
    );
    s.linux.as_mut().unwrap().sysctls.clear();
    let spec = build(&f, &container(), &s).unwrap();
    assert!(spec.hostname().is_none());
    let env = spec.process().as_ref().unwrap().env().clone().unwrap();
    assert!(env.contains(&"HOSTNAME=node-1".to_string()));
    let ns = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
    assert!(!ns.iter().any(|n| n.typ() == LinuxNamespaceType::Network));
    assert!(!ns.iter().any(|n| n.typ() == LinuxNamespaceType::Uts));
}

#[test]
fn sysctl_rules() {
    let ns = fixture().ns;
    let with = |k: &str| {
        let mut s = sandbox();
        s.linux.as_mut().unwrap().sysctls = [(k.to_string(), "1".to_string())].into();
        sysctls(&s, &ns)
    };
    assert!(with("kernel.shm_rmid_forced").is_ok());
    assert!(with("fs.mqueue.msg_max").is_ok());
    assert_eq!(
        with("net/ipv4/ip_forward").unwrap()["net.ipv4.ip_forward"],
        "1"
    );
    assert!(with("vm.swappiness").is_err(), "not namespaced");
    let mut host_ipc = ns.clone();
    host_ipc.ipc = PodNamespace::Host;
    let mut s = sandbox();
    s.linux.as_mut().unwrap().sysctls = [("kernel.sem".to_string(), "1".to_string())].into();
    assert!(sysctls(&s, &host_ipc).is_err());
}

#[test]
fn oom_score_adj_is_clamped_to_the_daemon() {
    let mut f = fixture();
    f.host.min_oom_score_adj = -500;
    let spec = build(&f, &container(), &sandbox()).unwrap();
    assert_eq!(spec.process().as_ref().unwrap().oom_score_adj(), Some(-500));
    let mut c = container();
    c.linux.as_mut().unwrap().resources = None;
    let spec = build(&f, &c, &sandbox()).unwrap();
    assert_eq!(spec.process().as_ref().unwrap().oom_score_adj(), None);
}

#[test]
fn errors_surface_with_their_field() {
    let f = fixture();
    let mut c = container();
    c.working_dir = "relative".into();
    assert_eq!(
        build(&f, &c, &sandbox()).unwrap_err().field(),
        "working_dir"
    );

    let mut f2 = fixture();
    f2.image.entrypoint.clear();
    f2.image.cmd.clear();
    assert_eq!(
        build(&f2, &container(), &sandbox()).unwrap_err().field(),
        "command"
    );

    let mut f3 = fixture();
    f3.image.user = "ghost".into();
    let e = build(&f3, &container(), &sandbox()).unwrap_err();
    assert_eq!(e.field(), "image config User");
    assert!(e.to_string().contains("ghost"));
}

#[test]
fn image_config_from_oci_json() {
    let blob = br#"{
        "architecture": "amd64", "os": "linux",
        "config": {"User": "1000:1000", "Env": ["A=1"], "Entrypoint": null,
                   "Cmd": ["/bin/sh"], "WorkingDir": "/w"},
        "rootfs": {"type": "layers", "diff_ids": []}
    }"#;
    let c = ImageConfig::from_json(blob).unwrap();
    assert_eq!(
        c,
        ImageConfig {
            user: "1000:1000".into(),
            env: vec!["A=1".into()],
            entrypoint: vec![],
            cmd: vec!["/bin/sh".into()],
            working_dir: "/w".into(),
        }
    );
}

#[test]
fn cgroups_path_forms() {
    assert_eq!(
        cgroups_path("/kubepods/burstable/pod1", "c1", "berth").as_deref(),
        Some("/kubepods/burstable/pod1/c1")
    );
    assert_eq!(
        cgroups_path(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice",
            "c1",
            "berth"
        )
        .as_deref(),
        Some(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/berth-c1.scope"
        )
    );
    assert_eq!(
        cgroups_path("kubepods-besteffort-pod2.slice", "c1", "berth").as_deref(),
        Some(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod2.slice/berth-c1.scope"
        )
    );
    assert_eq!(cgroups_path("", "c1", "berth"), None);
}

#[test]
fn slices_expand_as_systemd_names_them() {
    assert_eq!(expand_slice("-.slice").as_deref(), Some("/"));
    assert_eq!(
        expand_slice("system.slice").as_deref(),
        Some("/system.slice")
    );
    assert_eq!(
        expand_slice("a-b-c.slice").as_deref(),
        Some("/a.slice/a-b.slice/a-b-c.slice")
    );
    for bad in [
        "a--b.slice",
        "-a.slice",
        "a-.slice",
        ".slice",
        "a/b.slice",
        "a.scope",
    ] {
        assert_eq!(expand_slice(bad), None, "{bad}");
    }
}
