//! What ContainerStatus and Status report, against a real berthd and busybox
//! from the registry fixture, checked the way critest (cri-tools v1.32,
//! pkg/validate) checks them: mounts as the request gave them, resources as
//! created and as updated, the process's user (SupplementalGroupsPolicy
//! Merge and Strict), the default runtime handler's features and recursive
//! read-only mounts; plus a host-network pod's /etc/hosts and libcontainer's
//! own explanation in a failed CreateContainer. Needs root.
//!
//! The shared helpers are in `berth_e2e::pods`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use berth_api::v1::*;
use berth_e2e::pods::*;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use tonic::Code;

/// `script`'s stdout (trimmed) and exit code in the container.
async fn run(env: &mut PodEnv, id: &str, script: &str) -> (String, i32) {
    let r = exec(&mut env.c, id, &sh(script), 10).await.unwrap();
    (
        String::from_utf8_lossy(&r.stdout).trim().to_string(),
        r.exit_code,
    )
}

/// A fresh dir under the daemon's temp dir (whose mounts the fixture's
/// guard detaches when the test ends).
fn host_dir(env: &PodEnv, name: &str) -> PathBuf {
    let d = env.d.config.dir.path().join("host").join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Makes `dir` a mount point of its own with `propagation` (MS_SHARED, ...).
fn make_mount_point(dir: &Path, propagation: MsFlags) {
    mount(
        Some(dir),
        dir,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .unwrap();
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        propagation | MsFlags::MS_REC,
        None::<&str>,
    )
    .unwrap();
}

fn tmpfs_on(dir: &Path) {
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
}

fn linux_user(s: &ContainerStatus) -> LinuxContainerUser {
    s.user
        .clone()
        .and_then(|u| u.linux)
        .unwrap_or_else(|| panic!("no user in {s:?}"))
}

/// `id -G` in the container, as a set.
async fn groups_inside(env: &mut PodEnv, id: &str) -> BTreeSet<i64> {
    let (out, code) = run(env, id, "id -G").await;
    assert_eq!(code, 0, "{out}");
    out.split_whitespace().map(|g| g.parse().unwrap()).collect()
}

#[tokio::test]
async fn mounts_are_reported_as_given() {
    let mut env = setup(&[BUSYBOX]).await;
    let (pod, pc) = run_pod(&mut env, "mounts").await;
    // A host-to-container mount needs a shared (or slave) source.
    let shared = host_dir(&env, "shared");
    make_mount_point(&shared, MsFlags::MS_SHARED);
    let plain = host_dir(&env, "plain");
    std::fs::write(plain.join("f"), "hello").unwrap();

    let mut cfg = sleeper("m", BUSYBOX, Default::default(), None);
    cfg.mounts = vec![
        Mount {
            container_path: "/data".into(),
            host_path: shared.display().to_string(),
            readonly: true,
            selinux_relabel: true,
            propagation: MountPropagation::PropagationHostToContainer as i32,
            ..Default::default()
        },
        Mount {
            container_path: "/plain".into(),
            host_path: plain.display().to_string(),
            ..Default::default()
        },
    ];
    let want = cfg.mounts.clone();
    let id = create(&mut env.c, &pod, &pc, cfg).await.unwrap();
    // Reported from CreateContainer on (critest checks before starting).
    assert_eq!(status(&mut env.c, &id).await.unwrap().mounts, want);
    start(&mut env.c, &id).await;
    wait_state(&mut env.c, &id, ContainerState::ContainerRunning).await;
    assert_eq!(status(&mut env.c, &id).await.unwrap().mounts, want);

    // And they are what the container has: /data read-only, receiving
    // what the host mounts below it later; /plain writable.
    let (out, code) = run(&mut env, &id, "touch /data/x 2>&1").await;
    assert_ne!(code, 0);
    assert!(out.contains("Read-only file system"), "{out}");
    assert_eq!(
        run(&mut env, &id, "cat /plain/f && echo hi > /plain/g").await,
        ("hello".into(), 0)
    );
    assert_eq!(std::fs::read_to_string(plain.join("g")).unwrap(), "hi\n");
    let later = shared.join("later");
    std::fs::create_dir(&later).unwrap();
    tmpfs_on(&later);
    std::fs::write(later.join("seen"), "propagated").unwrap();
    assert_eq!(
        run(&mut env, &id, "cat /data/later/seen").await,
        ("propagated".into(), 0)
    );
    umount2(&later, MntFlags::MNT_DETACH).unwrap();

    // A container without mounts reports none.
    let id = create(
        &mut env.c,
        &pod,
        &pc,
        sleeper("none", BUSYBOX, Default::default(), None),
    )
    .await
    .unwrap();
    assert_eq!(status(&mut env.c, &id).await.unwrap().mounts, vec![]);
}

#[tokio::test]
async fn resources_are_reported_and_follow_updates() {
    let mut env = setup(&[BUSYBOX]).await;
    let (pod, pc) = run_pod(&mut env, "res").await;
    let limit = 64i64 << 20;
    let res = LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit_in_bytes: limit,
        oom_score_adj: 500,
        cpuset_cpus: "0".into(),
        ..Default::default()
    };
    let id = running(
        &mut env.c,
        &pod,
        &pc,
        sleeper("r", BUSYBOX, Default::default(), Some(res.clone())),
    )
    .await;
    let got = status(&mut env.c, &id)
        .await
        .unwrap()
        .resources
        .and_then(|r| r.linux)
        .expect("resources");
    // The swap limit follows the memory limit where the host has a swap
    // controller (so the container cannot swap), as containerd does.
    assert!(
        got.memory_swap_limit_in_bytes == 0 || got.memory_swap_limit_in_bytes == limit,
        "{got:?}"
    );
    // oom_score_adj is clamped to berthd's own (the host forbids lower).
    let daemon_adj: i64 =
        std::fs::read_to_string(format!("/proc/{}/oom_score_adj", env.d.pid().unwrap()))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    assert_eq!(
        got,
        LinuxContainerResources {
            memory_swap_limit_in_bytes: got.memory_swap_limit_in_bytes,
            oom_score_adj: 500.max(daemon_adj),
            ..res.clone()
        }
    );
    let swap_follows = got.memory_swap_limit_in_bytes != 0;

    // UpdateContainerResources: what it sets changes, the rest stays.
    let new_limit = 128i64 << 20;
    env.c
        .runtime
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(LinuxContainerResources {
                cpu_quota: 20_000,
                memory_limit_in_bytes: new_limit,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let got = status(&mut env.c, &id)
        .await
        .unwrap()
        .resources
        .and_then(|r| r.linux)
        .expect("resources");
    assert_eq!(
        got,
        LinuxContainerResources {
            cpu_quota: 20_000,
            memory_limit_in_bytes: new_limit,
            memory_swap_limit_in_bytes: if swap_follows { new_limit } else { 0 },
            oom_score_adj: 500.max(daemon_adj),
            ..res.clone()
        }
    );
    // As the cgroup has it.
    assert_eq!(
        run(
            &mut env,
            &id,
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"
        )
        .await,
        (new_limit.to_string(), 0)
    );

    // The status survives a berthd restart (it is in the record).
    env.d.restart().await.unwrap();
    env.c = env.d.client().await.unwrap();
    let again = status(&mut env.c, &id)
        .await
        .unwrap()
        .resources
        .and_then(|r| r.linux);
    assert_eq!(again, Some(got));

    // No resources asked: reported all zero, not absent (as containerd).
    let id = create(
        &mut env.c,
        &pod,
        &pc,
        sleeper("nores", BUSYBOX, Default::default(), None),
    )
    .await
    .unwrap();
    let got = status(&mut env.c, &id).await.unwrap().resources;
    assert_eq!(
        got,
        Some(ContainerResources {
            linux: Some(LinuxContainerResources::default()),
            windows: None,
        })
    );
}

#[tokio::test]
async fn user_is_the_process_identity() {
    let mut env = setup(&[BUSYBOX, USER_IMAGE]).await;
    let (pod, pc) = run_pod(&mut env, "user").await;

    // run_as_user/run_as_group/supplemental_groups, SupplementalGroupsPolicy
    // Merge (the default): uid 1000 is "berth" in busybox's /etc/passwd,
    // a member of staff (50) in its /etc/group.
    let sc = LinuxContainerSecurityContext {
        run_as_user: Some(Int64Value { value: 1000 }),
        run_as_group: Some(Int64Value { value: 3000 }),
        supplemental_groups: vec![5678, 1234],
        ..Default::default()
    };
    let id = running(
        &mut env.c,
        &pod,
        &pc,
        sleeper("merge", BUSYBOX, sc.clone(), None),
    )
    .await;
    let u = linux_user(&status(&mut env.c, &id).await.unwrap());
    assert_eq!(
        (u.uid, u.gid, u.supplemental_groups.clone()),
        (1000, 3000, vec![50, 1234, 3000, 5678])
    );
    assert_eq!(
        run(&mut env, &id, "id -u; id -g").await,
        ("1000\n3000".into(), 0)
    );
    assert_eq!(
        groups_inside(&mut env, &id).await,
        u.supplemental_groups.iter().copied().collect()
    );

    // Strict: the image's /etc/group adds nothing.
    let strict = LinuxContainerSecurityContext {
        supplemental_groups_policy: SupplementalGroupsPolicy::Strict as i32,
        ..sc
    };
    let id = running(
        &mut env.c,
        &pod,
        &pc,
        sleeper("strict", BUSYBOX, strict, None),
    )
    .await;
    let u = linux_user(&status(&mut env.c, &id).await.unwrap());
    assert_eq!(
        (u.uid, u.gid, u.supplemental_groups.clone()),
        (1000, 3000, vec![1234, 3000, 5678])
    );
    assert_eq!(
        groups_inside(&mut env, &id).await,
        u.supplemental_groups.iter().copied().collect()
    );

    // The critest case: run_as_user only, so the primary gid comes from
    // /etc/passwd (1000) and is reported among the groups.
    let sc = LinuxContainerSecurityContext {
        run_as_user: Some(Int64Value { value: 1000 }),
        supplemental_groups: vec![1234],
        ..Default::default()
    };
    let id = running(&mut env.c, &pod, &pc, sleeper("critest", BUSYBOX, sc, None)).await;
    let u = linux_user(&status(&mut env.c, &id).await.unwrap());
    assert_eq!(
        (u.uid, u.gid, u.supplemental_groups.clone()),
        (1000, 1000, vec![50, 1000, 1234])
    );
    assert_eq!(
        run(&mut env, &id, "id -G").await,
        ("1000 50 1234".into(), 0)
    );

    // The image's User "berth": name resolved through its /etc/passwd,
    // groups through its /etc/group.
    let id = running(
        &mut env.c,
        &pod,
        &pc,
        sleeper("image-user", USER_IMAGE, Default::default(), None),
    )
    .await;
    let u = linux_user(&status(&mut env.c, &id).await.unwrap());
    assert_eq!(
        (u.uid, u.gid, u.supplemental_groups.clone()),
        (1000, 1000, vec![50, 1000])
    );
    assert_eq!(
        groups_inside(&mut env, &id).await,
        u.supplemental_groups.iter().copied().collect()
    );

    // Root by default.
    let id = create(
        &mut env.c,
        &pod,
        &pc,
        sleeper("root", BUSYBOX, Default::default(), None),
    )
    .await
    .unwrap();
    let u = linux_user(&status(&mut env.c, &id).await.unwrap());
    assert_eq!((u.uid, u.gid, u.supplemental_groups), (0, 0, vec![0]));
}

#[tokio::test]
async fn status_lists_the_default_handler_and_features() {
    let mut env = setup(&[]).await;
    let r = runtime_status(&mut env.c).await;
    assert_eq!(r.runtime_handlers.len(), 1, "{r:?}");
    let h = &r.runtime_handlers[0];
    assert_eq!(h.name, "");
    let f = h.features.unwrap();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut v = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap());
    let kernel = (v.next().unwrap(), v.next().unwrap());
    assert_eq!(f.recursive_read_only_mounts, kernel >= (5, 12), "{release}");
    // hostUsers: false pods, with idmapped overlay lower dirs and tmpfs (6.3).
    assert_eq!(f.user_namespaces, kernel >= (6, 3), "{release}");
    let features = r.features.unwrap();
    assert!(features.supplemental_groups_policy);
    assert!(!features.user_namespaces_host_network);
    assert!(features.mount_options);
}

/// CRI 1.37's `Mount.mount_options`: noexec, nodev, nosuid (and atime
/// options) are applied to the bind, shown in the container's mountinfo,
/// enforced, and reported back in ContainerStatus; an option that would
/// loosen the bind is refused at CreateContainer.
#[tokio::test]
async fn mount_options_are_applied_and_reported() {
    let mut env = setup(&[BUSYBOX]).await;
    let (pod, pc) = run_pod(&mut env, "mopts").await;
    let host = host_dir(&env, "mopts");
    std::fs::copy("/bin/true", host.join("true")).unwrap();
    let vol = |options: &[&str]| Mount {
        host_path: host.display().to_string(),
        container_path: "/mnt".into(),
        mount_options: options.iter().map(|o| o.to_string()).collect(),
        ..Default::default()
    };
    let mut cfg = sleeper("opts", BUSYBOX, Default::default(), None);
    cfg.mounts = vec![vol(&["noexec", "nodev", "nosuid", "noatime"])];
    let id = running(&mut env.c, &pod, &pc, cfg).await;
    let (info, code) = run(&mut env, &id, "grep ' /mnt ' /proc/self/mountinfo").await;
    assert_eq!(code, 0, "{info}");
    let opts: Vec<&str> = info.split_whitespace().nth(5).unwrap().split(',').collect();
    for o in ["rw", "nosuid", "nodev", "noexec", "noatime"] {
        assert!(opts.contains(&o), "{o} missing from {opts:?}");
    }
    let (out, code) = run(&mut env, &id, "/mnt/true").await;
    assert_ne!(code, 0, "a binary ran from a noexec mount: {out}");
    let reported = status(&mut env.c, &id).await.unwrap().mounts;
    assert_eq!(
        reported[0].mount_options,
        ["noexec", "nodev", "nosuid", "noatime"]
    );

    let mut cfg = sleeper("loose", BUSYBOX, Default::default(), None);
    cfg.mounts = vec![vol(&["exec"])];
    let e = create(&mut env.c, &pod, &pc, cfg).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("mount_options"), "{e:?}");
}

/// The kubelet names a container's image by its ID and the pod spec's name
/// in `user_specified_image`; ContainerStatus and ListContainers show the
/// pod's name (the kubelet copies it into `containerStatuses[].image`, which
/// the node suite's Containers Lifecycle specs compare with the pod's).
/// A client naming the image by its ID alone sees one of its tags.
#[tokio::test]
async fn the_image_is_shown_as_the_pod_named_it() {
    let mut env = setup(&[BUSYBOX]).await;
    let img = image_of(&mut env.c, BUSYBOX).await;
    let (pod, pc) = run_pod(&mut env, "shown").await;
    let by_id = |name: &str, user_specified: &str| {
        let mut cfg = sleeper(name, BUSYBOX, Default::default(), None);
        cfg.image = Some(ImageSpec {
            image: img.id.clone(),
            user_specified_image: user_specified.into(),
            ..Default::default()
        });
        cfg
    };
    let kubelet = running(&mut env.c, &pod, &pc, by_id("kubelet", "busybox")).await;
    let bare = running(&mut env.c, &pod, &pc, by_id("bare", "")).await;

    let s = status(&mut env.c, &kubelet).await.unwrap();
    let shown = s.image.unwrap();
    assert_eq!(shown.image, "busybox");
    assert_eq!(shown.user_specified_image, "busybox");
    assert_eq!(s.image_id, img.id);
    let s = status(&mut env.c, &bare).await.unwrap();
    assert_eq!(s.image.unwrap().image, img.repo_tags[0]);

    let listed = list_containers(&mut env.c).await;
    let listed_image = |id: &str| {
        let c = listed.iter().find(|c| c.id == id).expect("listed");
        c.image.clone().unwrap().image
    };
    assert_eq!(listed_image(&kubelet), "busybox");
    assert_eq!(listed_image(&bare), img.repo_tags[0]);
}

/// critest's "Container Mount Readonly" specs, which run only when the
/// default handler advertises recursive_read_only_mounts.
#[tokio::test]
async fn recursive_read_only_mounts() {
    let mut env = setup(&[BUSYBOX]).await;
    let rro_supported = env
        .c
        .runtime
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner()
        .runtime_handlers[0]
        .features
        .unwrap()
        .recursive_read_only_mounts;
    if !rro_supported {
        eprintln!("skipped: the kernel has no mount_setattr");
        return;
    }
    let (pod, pc) = run_pod(&mut env, "rro").await;
    // A host path with a tmpfs mounted below it.
    let host = host_dir(&env, "rro");
    let sub = host.join("tmpfs");
    std::fs::create_dir(&sub).unwrap();
    tmpfs_on(&sub);
    let vol = |rro: bool, readonly: bool, propagation: MountPropagation| Mount {
        host_path: host.display().to_string(),
        container_path: "/mnt".into(),
        readonly,
        recursive_read_only: rro,
        selinux_relabel: true,
        propagation: propagation as i32,
        ..Default::default()
    };
    let private = MountPropagation::PropagationPrivate;

    // Read-only, not recursively: the tmpfs below stays writable.
    let mut cfg = sleeper("ro", BUSYBOX, Default::default(), None);
    cfg.mounts = vec![vol(false, true, private)];
    let id = running(&mut env.c, &pod, &pc, cfg).await;
    assert_eq!(status(&mut env.c, &id).await.unwrap().mounts.len(), 1);
    assert_eq!(run(&mut env, &id, "touch /mnt/tmpfs/file").await.1, 0);
    let (out, code) = run(&mut env, &id, "touch /mnt/top 2>&1").await;
    assert!(code != 0 && out.contains("Read-only file system"), "{out}");

    // Recursively read-only: the tmpfs too.
    let mut cfg = sleeper("rro", BUSYBOX, Default::default(), None);
    cfg.mounts = vec![vol(true, true, private)];
    let id = running(&mut env.c, &pod, &pc, cfg).await;
    let s = status(&mut env.c, &id).await.unwrap();
    assert!(s.mounts[0].recursive_read_only, "{s:?}");
    assert_eq!(
        run(
            &mut env,
            &id,
            r#"touch /mnt/tmpfs/foo 2>&1 | grep -q "Read-only file system""#
        )
        .await
        .1,
        0
    );

    // Refused: with propagation other than private, or not read-only.
    for (i, m) in [
        vol(true, true, MountPropagation::PropagationHostToContainer),
        vol(true, true, MountPropagation::PropagationBidirectional),
        vol(true, false, private),
    ]
    .into_iter()
    .enumerate()
    {
        let mut cfg = sleeper(&format!("bad{i}"), BUSYBOX, Default::default(), None);
        cfg.mounts = vec![m];
        let e = create(&mut env.c, &pod, &pc, cfg).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    }
    umount2(&sub, MntFlags::MNT_DETACH).unwrap();
}

#[tokio::test]
async fn host_network_pods_see_the_hosts_etc_hosts() {
    let mut env = setup(&[BUSYBOX]).await;
    let mut pc = pod_config(&env, "hostnet");
    pod_namespaces(&mut pc).network = NamespaceMode::Node as i32;
    let pod = run_pod_with(&mut env.c, &pc).await;
    let mut cfg = sleeper("c", BUSYBOX, Default::default(), None);
    cfg.linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .namespace_options
        .as_mut()
        .unwrap()
        .network = NamespaceMode::Node as i32;
    let id = running(&mut env.c, &pod, &pc, cfg).await;
    let r = exec(&mut env.c, &id, &["cat", "/etc/hosts"], 10)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        std::fs::read_to_string("/etc/hosts").unwrap()
    );

    // A pod with its own network keeps the generated localhost file.
    let (pod, pc) = run_pod(&mut env, "ownnet").await;
    let id = running(
        &mut env.c,
        &pod,
        &pc,
        sleeper("c", BUSYBOX, Default::default(), None),
    )
    .await;
    let (hosts, _) = run(&mut env, &id, "cat /etc/hosts").await;
    assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"), "{hosts}");
    assert!(hosts.ends_with("127.0.1.1\thost-ownnet"), "{hosts}");
}

#[tokio::test]
async fn failed_create_carries_libcontainers_reason() {
    let mut env = setup(&[BUSYBOX]).await;
    let (pod, pc) = run_pod(&mut env, "fail").await;
    // A host file bound onto a directory of the image passes berthd's
    // checks; libcontainer fails to mount it and says why only in its log.
    let file = env.d.config.dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let mut cfg = sleeper("badmount", BUSYBOX, Default::default(), None);
    cfg.mounts = vec![Mount {
        container_path: "/bin".into(),
        host_path: file.display().to_string(),
        ..Default::default()
    }];
    let e = create(&mut env.c, &pod, &pc, cfg.clone())
        .await
        .unwrap_err();
    println!("{}", e.message());
    assert!(e.message().contains("libcontainer log:"), "{e:?}");
    // ... and it is in the monitor's log.
    let monitors = env.d.config.state.join("monitors");
    let log: String = std::fs::read_dir(&monitors)
        .unwrap()
        .flatten()
        .filter_map(|d| std::fs::read_to_string(d.path().join("monitor.log")).ok())
        .collect();
    assert!(log.contains("ERROR"), "{log}");

    // Rolled back: nothing listed, the name is free again.
    let listed = env
        .c
        .runtime
        .list_containers(ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(listed.is_empty(), "{listed:?}");
    cfg.mounts.clear();
    cfg.working_dir = "/tmp".into();
    let id = running(&mut env.c, &pod, &pc, cfg).await;
    assert_eq!(run(&mut env, &id, "pwd").await, ("/tmp".into(), 0));
}
