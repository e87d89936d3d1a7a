//! Pods in a user namespace of their own (`hostUsers: false`): the pod's
//! root is an unprivileged host user; the image's files keep their owners
//! through idmapped layers; a volume the kubelet asks to idmap shows its
//! host owners as the pod's; an exec joins the pod's user namespace; what
//! containerd and CRI-O refuse is refused and leaves nothing. Needs root.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use berth_api::v1::*;
use berth_e2e::pods::*;

/// Far above any ID this host uses; the kubelet hands out ranges of 65536.
const HOST_ID: u32 = 3_014_656;
const LENGTH: u32 = 65536;

fn pod_maps() -> Vec<IdMapping> {
    vec![IdMapping {
        host_id: HOST_ID,
        container_id: 0,
        length: LENGTH,
    }]
}

fn userns(ns: &mut NamespaceOption) {
    ns.userns_options = Some(UserNamespace {
        mode: NamespaceMode::Pod as i32,
        uids: pod_maps(),
        gids: pod_maps(),
    });
}

fn userns_pod(env: &PodEnv, name: &str) -> PodSandboxConfig {
    let mut pc = pod_config(env, name);
    userns(pod_namespaces(&mut pc));
    pc
}

fn userns_ctr(name: &str, script: &str) -> ContainerConfig {
    let mut c = ctr_config(name, BUSYBOX, script);
    let sc = c.linux.as_mut().unwrap().security_context.as_mut().unwrap();
    userns(sc.namespace_options.as_mut().unwrap());
    c
}

/// Runs `script` in a container of the pod (with `mounts` and `caps`
/// added) to its end; returns its exit code and output, from its CRI log.
async fn run_to_end(
    env: &mut PodEnv,
    pod: &str,
    pc: &PodSandboxConfig,
    name: &str,
    script: &str,
    mounts: Vec<Mount>,
    caps: &[&str],
) -> (i32, String) {
    let mut c = userns_ctr(name, script);
    c.mounts = mounts;
    if !caps.is_empty() {
        let sc = c.linux.as_mut().unwrap().security_context.as_mut().unwrap();
        sc.capabilities = Some(Capability {
            add_capabilities: caps.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        });
    }
    let id = create(&mut env.c, pod, pc, c).await.unwrap();
    start(&mut env.c, &id).await;
    let s = wait_state(&mut env.c, &id, ContainerState::ContainerExited).await;
    let log = std::fs::read_to_string(&s.log_path).unwrap_or_default();
    // CRI log lines: "<time> <stream> <tag> <text>".
    let text: Vec<&str> = log
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .collect();
    (s.exit_code, text.join("\n"))
}

/// The host's view of the first process whose command line is `cmdline`.
/// Waits for it: a container is Running once its shell started, and the
/// shell's `exec` into the command may come a moment later.
async fn host_uid_of(cmdline: &str) -> u32 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let p = loop {
        let found = berth_e2e::procs::processes()
            .into_iter()
            .find(|p| p.cmdline.trim_end() == cmdline);
        match found {
            Some(p) => break p,
            None if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            None => panic!("no process {cmdline:?} after 10 s"),
        }
    };
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.pid)).unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap();
    uid.parse().unwrap()
}

#[tokio::test]
async fn a_pods_root_is_an_unprivileged_host_user() {
    let mut env = setup(&[BUSYBOX]).await;
    let pc = userns_pod(&env, "userns");
    let pod = run_pod_with(&mut env.c, &pc).await;

    // Two host dirs: one bound as it is (world-writable, as a hostPath a
    // tenant can write), one the kubelet's way, idmapped with the pod's maps
    // (owned by the host's root, with a file of the host's root in it).
    let base = env.d.config.dir.path().to_path_buf();
    let plain = base.join("plain");
    let mapped = base.join("mapped");
    for d in [&plain, &mapped] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(mapped.join("host-root-file"), "x").unwrap();
    let volumes = vec![
        Mount {
            container_path: "/plain".into(),
            host_path: plain.display().to_string(),
            ..Default::default()
        },
        Mount {
            container_path: "/mapped".into(),
            host_path: mapped.display().to_string(),
            uid_mappings: pod_maps(),
            gid_mappings: pod_maps(),
            ..Default::default()
        },
    ];
    let script = "cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g; \
        stat -c '%u:%g' /bin/busybox /; echo hi > /made-in-rootfs && stat -c %u /made-in-rootfs; \
        touch /plain/by-pod-root && stat -c %u /plain/by-pod-root; \
        stat -c %u /mapped /mapped/host-root-file; touch /mapped/new && stat -c %u /mapped/new";
    let (rc, got) = run_to_end(&mut env, &pod, &pc, "app", script, volumes, &[]).await;
    assert_eq!(rc, 0, "{got}");
    let (h, l) = (HOST_ID.to_string(), LENGTH.to_string());
    assert_eq!(
        got.split_whitespace().collect::<Vec<_>>(),
        [
            // Root inside, with the pod's maps.
            "0", &h, &l, "0", &h, &l, "0", "0",
            // The image's files keep their owners (idmapped layers), and
            // root may write its own root dir (the upper dir is its).
            "0:0", "0:0", "0", // A plain bind: made by the pod's root...
            "0",
            // The idmapped volume: the host root's dir and file read as
            // the pod's root's, and so does what it makes there.
            "0", "0", "0",
        ],
        "{got}"
    );
    // ... and the unprivileged HOST_ID's on the host.
    assert_eq!(
        std::fs::metadata(plain.join("by-pod-root")).unwrap().uid(),
        HOST_ID
    );
    // Through the idmapped volume it is stored as the host's root's, as the
    // volume's other files (what the kubelet's emptyDir and secrets need).
    assert_eq!(std::fs::metadata(mapped.join("new")).unwrap().uid(), 0);

    // A running process of the pod: root inside, HOST_ID on the host.
    let mut sleeper_cfg = userns_ctr("sleeper", "exec sleep 7301");
    sleeper_cfg.mounts = vec![Mount {
        container_path: "/plain".into(),
        host_path: plain.display().to_string(),
        ..Default::default()
    }];
    let sleeper = running(&mut env.c, &pod, &pc, sleeper_cfg).await;
    assert_eq!(host_uid_of("sleep 7301").await, HOST_ID);

    // An exec joins the pod's user namespace too (libcontainer's tenant
    // builder alone would not): root inside with the pod's maps, in the
    // container's PID namespace, and what it makes is HOST_ID's.
    let exec = |cmd: &str| ExecSyncRequest {
        container_id: sleeper.clone(),
        cmd: vec!["sh".into(), "-c".into(), cmd.into()],
        timeout: 20,
    };
    let out = env
        .c
        .runtime
        .exec_sync(exec(
            "cat /proc/self/uid_map; id -u; cat /proc/1/cmdline | tr '\\0' ' '; \
             touch /plain/by-exec && stat -c %u /plain/by-exec",
        ))
        .await
        .unwrap()
        .into_inner();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.exit_code,
        0,
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.split_whitespace().collect::<Vec<_>>(),
        ["0", &h, &l, "0", "sleep", "7301", "0"],
        "{text}"
    );
    assert_eq!(
        std::fs::metadata(plain.join("by-exec")).unwrap().uid(),
        HOST_ID
    );
    // While it runs, the exec'd process is HOST_ID on the host, as the
    // container's own.
    let mut runtime = env.c.runtime.clone();
    let req = exec("exec sleep 7302");
    let long = tokio::spawn(async move { runtime.exec_sync(req).await });
    assert_eq!(host_uid_of("sleep 7302").await, HOST_ID);
    long.abort();

    // Root in the pod holds nothing on the host: even granted CAP_SYS_ADMIN
    // and CAP_DAC_OVERRIDE it cannot mount a filesystem only the host's
    // root may (debugfs), nor read a host root's private file.
    let secret = base.join("secret");
    std::fs::write(&secret, "host only").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A read-only idmapped volume stays read-only: the flag is set before the
    // pod's mount namespace copies the mount, so the kernel locks it.
    let mounts = vec![
        Mount {
            container_path: "/secret".into(),
            host_path: secret.display().to_string(),
            readonly: true,
            ..Default::default()
        },
        Mount {
            container_path: "/ro".into(),
            host_path: mapped.display().to_string(),
            readonly: true,
            uid_mappings: pod_maps(),
            gid_mappings: pod_maps(),
            ..Default::default()
        },
    ];
    let script = "mkdir -p /d; mount -t debugfs none /d && echo MOUNTED; cat /secret && echo READ; \
        mount -o remount,bind,rw /ro && echo REMOUNTED; touch /ro/x && echo WROTE; echo done";
    let (rc, got) = run_to_end(
        &mut env,
        &pod,
        &pc,
        "admin",
        script,
        mounts,
        &["SYS_ADMIN", "DAC_OVERRIDE"],
    )
    .await;
    assert_eq!(rc, 0, "{got}");
    assert!(got.contains("done"), "{got}");
    assert!(
        !got.contains("MOUNTED"),
        "debugfs mounted in a user namespace: {got}"
    );
    assert!(
        !got.contains("READ"),
        "a host root's file read from a user namespace: {got}"
    );
    assert!(got.contains("Permission denied"), "{got}");
    assert!(
        !got.contains("REMOUNTED") && !got.contains("WROTE"),
        "read-only volume made writable: {got}"
    );
    assert!(!mapped.join("x").exists());

    stop_pod(&mut env.c, &pod).await;
    remove_pod(&mut env.c, &pod).await;
    // Nothing of the pod stays mounted: the staged volume and the pins are
    // gone (the daemon's own mounts under its state dir are not the pod's).
    for dir in ["pods", "containers"] {
        let left = berth_e2e::cleanup::mounts_under(&env.d.config.state.join(dir));
        assert!(left.is_empty(), "{left:?}");
    }
}

/// `kubectl exec -it` into a `hostUsers: false` pod: a terminal exec, over
/// SPDY and WebSocket, runs as the pod's root in the pod's user namespace.
#[tokio::test]
async fn a_terminal_exec_joins_the_user_namespace() {
    use berth_stream::client::{ClientConfig, RemoteCommandOptions, Transport, remote_command};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut env = setup(&[BUSYBOX]).await;
    let pc = userns_pod(&env, "tty");
    let pod = run_pod_with(&mut env.c, &pc).await;
    let id = running(&mut env.c, &pod, &pc, userns_ctr("c", "exec sleep 600")).await;
    for transport in [Transport::Spdy, Transport::WebSocket] {
        let url = env
            .c
            .runtime
            .exec(ExecRequest {
                container_id: id.clone(),
                cmd: vec!["sh".into()],
                tty: true,
                stdin: true,
                stdout: true,
                stderr: false,
            })
            .await
            .unwrap()
            .into_inner()
            .url;
        let options = RemoteCommandOptions {
            stdin: true,
            tty: true,
            stderr: false,
            ..RemoteCommandOptions::new(transport)
        };
        let mut cmd = remote_command(&url, &ClientConfig::default(), &options)
            .await
            .unwrap();
        let mut stdin = cmd.stdin.take().unwrap();
        stdin
            .write_all(b"echo \"map=$(cat /proc/self/uid_map) uid=$(id -u)\"; exit 7\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(20),
            cmd.stdout.as_mut().unwrap().read_to_end(&mut out),
        )
        .await
        .expect("the terminal did not end within 20 s")
        .unwrap();
        let out = String::from_utf8_lossy(&out);
        let want = format!("map=         0    {HOST_ID}      {LENGTH} uid=0");
        let got = out.split_whitespace().collect::<Vec<_>>().join(" ");
        let want = want.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(got.contains(&want), "{transport:?}: {out:?}");
        assert_eq!(cmd.status().await.unwrap(), 7, "{transport:?}");
    }
    stop_pod(&mut env.c, &pod).await;
    remove_pod(&mut env.c, &pod).await;
}

/// An idmapped volume keeps the propagation the kubelet asks for: from a
/// shared host dir, HostToContainer shows what the host mounts below it
/// later, and a missing host dir is created as for a plain bind.
#[tokio::test]
async fn idmapped_volumes_keep_propagation_and_missing_dirs_are_made() {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    let mut env = setup(&[BUSYBOX]).await;
    let pc = userns_pod(&env, "prop");
    let pod = run_pod_with(&mut env.c, &pc).await;
    let base = env.d.config.dir.path().to_path_buf();
    let shared = base.join("shared");
    std::fs::create_dir(&shared).unwrap();
    for (src, flags) in [
        (Some(&shared), MsFlags::MS_BIND | MsFlags::MS_REC),
        (None, MsFlags::MS_SHARED | MsFlags::MS_REC),
    ] {
        mount(src, &shared, None::<&str>, flags, None::<&str>).unwrap();
    }
    let missing = base.join("not/yet");
    let mut c = userns_ctr("c", "exec sleep 600");
    c.mounts = vec![
        Mount {
            container_path: "/shared".into(),
            host_path: shared.display().to_string(),
            propagation: MountPropagation::PropagationHostToContainer as i32,
            uid_mappings: pod_maps(),
            gid_mappings: pod_maps(),
            ..Default::default()
        },
        Mount {
            container_path: "/made".into(),
            host_path: missing.display().to_string(),
            uid_mappings: pod_maps(),
            gid_mappings: pod_maps(),
            ..Default::default()
        },
    ];
    let id = running(&mut env.c, &pod, &pc, c).await;
    assert!(missing.is_dir());
    let later = shared.join("later");
    std::fs::create_dir(&later).unwrap();
    mount(
        Some("tmpfs"),
        &later,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
    std::fs::write(later.join("seen"), "propagated\n").unwrap();
    let out = env
        .c
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "cat /shared/later/seen; stat -c %u /made".into(),
            ],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    let text = String::from_utf8_lossy(&out.stdout);
    let _ = umount2(&later, MntFlags::MNT_DETACH);
    stop_pod(&mut env.c, &pod).await;
    remove_pod(&mut env.c, &pod).await;
    let _ = umount2(&shared, MntFlags::MNT_DETACH);
    assert_eq!(
        text.split_whitespace().collect::<Vec<_>>(),
        ["propagated", "0"],
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Image volumes in a `hostUsers: false` pod keep the image's owners: a
/// one-layer image (an idmapped clone of its layer) and a three-layer one
/// (an overlay of idmapped clones, whiteouts applied).
#[tokio::test]
async fn image_volumes_keep_the_images_owners() {
    const LAYERED: &str = "berth-test/layered:latest";
    let mut env = setup(&[BUSYBOX, LAYERED]).await;
    let pc = userns_pod(&env, "imgvol");
    let pod = run_pod_with(&mut env.c, &pc).await;
    // With the mappings the kubelet sends for every volume of such a pod.
    let image_mount = |path: &str, image: &str| Mount {
        uid_mappings: pod_maps(),
        gid_mappings: pod_maps(),
        ..image_mount(path, image, "")
    };
    let script = "stat -c %u:%g /one/bin/busybox /many/bin/busybox /many/data/keep.txt; \
        cat /many/data/replace.txt; ls /many/data; echo x > /many/w || echo read-only";
    let (rc, got) = run_to_end(
        &mut env,
        &pod,
        &pc,
        "vols",
        script,
        vec![image_mount("/one", BUSYBOX), image_mount("/many", LAYERED)],
        &[],
    )
    .await;
    assert_eq!(rc, 0, "{got}");
    let words: Vec<&str> = got.split_whitespace().collect();
    assert_eq!(words[..4], ["0:0", "0:0", "0:0", "new"], "{got}");
    assert!(!got.contains("gone.txt"), "{got}");
    assert!(got.contains("read-only"), "{got}");
    stop_pod(&mut env.c, &pod).await;
    remove_pod(&mut env.c, &pod).await;
    for dir in ["pods", "containers"] {
        let left = berth_e2e::cleanup::mounts_under(&env.d.config.state.join(dir));
        assert!(left.is_empty(), "{left:?}");
    }
}

/// What a crash can leave between staging idmapped layer clones and
/// detaching them (under the layer dir, `m/<i>`, and beside an image
/// volume, `<i>.m/<j>`) is unmounted when the container is removed.
#[tokio::test]
async fn staged_layer_clones_a_crash_left_are_unmounted_at_remove() {
    use nix::mount::{MsFlags, mount};
    let mut env = setup(&[BUSYBOX]).await;
    let pc = userns_pod(&env, "staged");
    let pod = run_pod_with(&mut env.c, &pc).await;
    let id = create(&mut env.c, &pod, &pc, userns_ctr("c", "true"))
        .await
        .unwrap();
    let source = env.d.config.dir.path().join("layer-like");
    std::fs::create_dir(&source).unwrap();
    let staged = [
        env.d.config.root.join("containers").join(&id).join("m/0"),
        env.d
            .config
            .state
            .join("containers")
            .join(&id)
            .join("image-volumes/0.m/1"),
    ];
    for at in &staged {
        std::fs::create_dir_all(at).unwrap();
        mount(
            Some(&source),
            at,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
    }
    let before = berth_e2e::cleanup::mounts_under(env.d.config.dir.path());
    for at in &staged {
        assert!(before.contains(at), "{at:?} not in {before:?}");
    }
    remove_container(&mut env.c, &id).await;
    // Neither at its place nor moved along into the trash.
    let left = berth_e2e::cleanup::mounts_under(env.d.config.dir.path());
    let of_it: Vec<_> = left
        .iter()
        .filter(|m| m.to_string_lossy().contains(&id))
        .collect();
    assert!(of_it.is_empty(), "{of_it:?}");
    stop_pod(&mut env.c, &pod).await;
    remove_pod(&mut env.c, &pod).await;
}

/// What containerd and CRI-O refuse: refused at RunPodSandbox, nothing left.
#[tokio::test]
async fn unsupported_user_namespace_options_are_refused() {
    let mut env = setup(&[BUSYBOX]).await;
    let cases: Vec<(&str, UserNamespace, &str)> = vec![
        (
            "two",
            UserNamespace {
                mode: NamespaceMode::Pod as i32,
                uids: [pod_maps(), pod_maps()].concat(),
                gids: pod_maps(),
            },
            "exactly one mapping",
        ),
        (
            "notroot",
            UserNamespace {
                mode: NamespaceMode::Pod as i32,
                uids: vec![IdMapping {
                    host_id: HOST_ID,
                    container_id: 1,
                    length: LENGTH,
                }],
                gids: pod_maps(),
            },
            "container ID 0",
        ),
        (
            "container",
            UserNamespace {
                mode: NamespaceMode::Container as i32,
                ..Default::default()
            },
            "mode CONTAINER",
        ),
        (
            "target",
            UserNamespace {
                mode: NamespaceMode::Target as i32,
                ..Default::default()
            },
            "mode TARGET",
        ),
    ];
    for (name, u, want) in cases {
        let mut pc = pod_config(&env, name);
        pod_namespaces(&mut pc).userns_options = Some(u);
        let e = run_pod_err(&mut env.c, pc).await;
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{name}: {e:?}");
        assert!(e.message().contains(want), "{name}: {}", e.message());
    }
    let pods = list_pods(&mut env.c).await;
    assert!(pods.is_empty(), "{pods:?}");

    // A pod without a user namespace: its containers cannot ask for one,
    // nor idmap a mount.
    let (pod, pc) = run_pod(&mut env, "hostusers").await;
    let e = create(&mut env.c, &pod, &pc, userns_ctr("c", "true"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("no user namespace"), "{}", e.message());
    let mut c = ctr_config("m", BUSYBOX, "true");
    c.mounts = vec![Mount {
        container_path: "/m".into(),
        host_path: env.d.config.dir.path().display().to_string(),
        uid_mappings: pod_maps(),
        gid_mappings: pod_maps(),
        ..Default::default()
    }];
    let e = create(&mut env.c, &pod, &pc, c).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("hostUsers: false"), "{}", e.message());
}

/// The cost of a user namespace: RunPodSandbox, create + start of one
/// container, and an ExecSync in it, medians of 15, a normal pod beside a `hostUsers: false` one.
/// `cargo test -p berth-e2e --test userns -- --ignored --nocapture cost`
#[tokio::test]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn cost_of_a_user_namespace_pod() {
    use std::time::{Duration, Instant};
    let mut env = setup(&[BUSYBOX]).await;
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e3
    };
    for with_userns in [false, true, false, true] {
        let (mut runp, mut start_ctr, mut exec) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..15 {
            let name = format!("cost-{with_userns}-{i}");
            let pc = if with_userns {
                userns_pod(&env, &name)
            } else {
                pod_config(&env, &name)
            };
            let c = if with_userns {
                userns_ctr("c", "exec sleep 600")
            } else {
                ctr_config("c", BUSYBOX, "exec sleep 600")
            };
            let t = Instant::now();
            let pod = run_pod_with(&mut env.c, &pc).await;
            runp.push(t.elapsed());
            let t = Instant::now();
            let id = create(&mut env.c, &pod, &pc, c).await.unwrap();
            start(&mut env.c, &id).await;
            start_ctr.push(t.elapsed());
            let t = Instant::now();
            let out = env
                .c
                .runtime
                .exec_sync(ExecSyncRequest {
                    container_id: id.clone(),
                    cmd: vec!["true".into()],
                    timeout: 10,
                })
                .await
                .unwrap()
                .into_inner();
            exec.push(t.elapsed());
            assert_eq!(out.exit_code, 0);
            stop_pod(&mut env.c, &pod).await;
            remove_pod(&mut env.c, &pod).await;
        }
        println!(
            "{}: RunPodSandbox median {:.1} ms, create+start median {:.1} ms, ExecSync `true` median {:.1} ms (n=15)",
            if with_userns {
                "hostUsers: false"
            } else {
                "hostUsers: true "
            },
            median(&mut runp),
            median(&mut start_ctr),
            median(&mut exec)
        );
    }
}
