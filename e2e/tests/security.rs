//! Security context and resources against a real berthd and busybox from
//! the registry fixture: users, capabilities, read-only rootfs, masked and
//! read-only /proc paths, seccomp (RuntimeDefault, Unconfined, Localhost),
//! cgroup limits seen from inside, and an OOM kill. Needs root.
//!
//! The shared helpers are in `berth_e2e::pods`.

use berth_api::v1::*;
use berth_e2e::pods::*;

async fn running(
    env: &mut PodEnv,
    pod: &str,
    pc: &PodSandboxConfig,
    cfg: ContainerConfig,
) -> String {
    let id = create(&mut env.c, pod, pc, cfg).await.unwrap();
    start(&mut env.c, &id).await;
    wait_state(&mut env.c, &id, ContainerState::ContainerRunning).await;
    id
}

/// Runs `script` in the container; its stdout (trimmed) and exit code.
async fn run(env: &mut PodEnv, id: &str, script: &str) -> (String, i32) {
    let r = exec(&mut env.c, id, &sh(script), 10).await.unwrap();
    (
        String::from_utf8_lossy(&r.stdout).trim().to_string(),
        r.exit_code,
    )
}

fn seccomp(t: security_profile::ProfileType, localhost_ref: &str) -> Option<SecurityProfile> {
    Some(SecurityProfile {
        profile_type: t as i32,
        localhost_ref: localhost_ref.into(),
    })
}

/// containerd's default capability set as a CapEff mask.
const DEFAULT_CAPS: u64 = 0x0000_0000_a804_25fb;
const CAP_NET_ADMIN: u64 = 1 << 12;

fn cap_eff(status: &str) -> u64 {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap_or_else(|| panic!("no CapEff in {status:?}"))
        .trim();
    u64::from_str_radix(hex, 16).unwrap()
}

#[tokio::test]
async fn users_capabilities_readonly_rootfs_and_masked_paths() {
    let mut env = setup(&[BUSYBOX, USER_IMAGE]).await;
    let (pod, pc) = run_pod(&mut env, "sec").await;

    // run_as_user / run_as_group.
    let sc = LinuxContainerSecurityContext {
        run_as_user: Some(Int64Value { value: 1000 }),
        run_as_group: Some(Int64Value { value: 1000 }),
        ..Default::default()
    };
    let id = running(&mut env, &pod, &pc, sleeper("uid", BUSYBOX, sc, None)).await;
    assert_eq!(
        run(&mut env, &id, "id -u; id -g").await,
        ("1000\n1000".into(), 0)
    );
    // A non-root user has no effective capabilities.
    let (st, _) = run(&mut env, &id, "cat /proc/self/status").await;
    assert_eq!(cap_eff(&st), 0, "{st}");

    // The image's User "berth": uid and gid from its /etc/passwd, HOME too.
    let id = running(
        &mut env,
        &pod,
        &pc,
        sleeper("img-user", USER_IMAGE, Default::default(), None),
    )
    .await;
    assert_eq!(
        run(&mut env, &id, "id -u; id -g; echo $HOME").await,
        ("1000\n1000\n/home/berth".into(), 0)
    );

    // run_as_username, resolved through busybox's /etc/passwd.
    let sc = LinuxContainerSecurityContext {
        run_as_username: "berth".into(),
        ..Default::default()
    };
    let id = running(&mut env, &pod, &pc, sleeper("uname", BUSYBOX, sc, None)).await;
    assert_eq!(
        run(&mut env, &id, "id -u; id -g; whoami").await,
        ("1000\n1000\nberth".into(), 0)
    );

    // Capabilities: containerd's default set, drop ALL, add NET_ADMIN.
    let id = running(
        &mut env,
        &pod,
        &pc,
        sleeper("caps", BUSYBOX, Default::default(), None),
    )
    .await;
    let (st, _) = run(&mut env, &id, "cat /proc/self/status").await;
    assert_eq!(cap_eff(&st), DEFAULT_CAPS, "{st}");
    let caps = |add: &[&str], drop: &[&str]| LinuxContainerSecurityContext {
        capabilities: Some(Capability {
            add_capabilities: add.iter().map(|s| s.to_string()).collect(),
            drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = running(
        &mut env,
        &pod,
        &pc,
        sleeper("nocaps", BUSYBOX, caps(&[], &["ALL"]), None),
    )
    .await;
    let (st, _) = run(&mut env, &id, "cat /proc/self/status").await;
    assert_eq!(cap_eff(&st), 0, "{st}");
    // Without CAP_CHOWN even root cannot give a file away.
    let (_, code) = run(&mut env, &id, "touch /tmp/f && chown 1000 /tmp/f").await;
    assert_ne!(code, 0);
    let id = running(
        &mut env,
        &pod,
        &pc,
        sleeper("netadmin", BUSYBOX, caps(&["NET_ADMIN"], &[]), None),
    )
    .await;
    let (st, _) = run(&mut env, &id, "cat /proc/self/status").await;
    assert_eq!(cap_eff(&st), DEFAULT_CAPS | CAP_NET_ADMIN, "{st}");
    // ... and it works: loopback can be brought down in the pod's netns.
    assert_eq!(run(&mut env, &id, "ip link set lo mtu 1280").await.1, 0);

    // Read-only rootfs: / refuses writes (EROFS), the container still runs.
    let sc = LinuxContainerSecurityContext {
        readonly_rootfs: true,
        ..Default::default()
    };
    let id = running(&mut env, &pod, &pc, sleeper("ro", BUSYBOX, sc, None)).await;
    let (out, code) = run(&mut env, &id, "touch /newfile 2>&1; echo $?").await;
    assert!(
        out.ends_with('1') && out.contains("Read-only"),
        "{out} {code}"
    );
    let (out, _) = run(&mut env, &id, "awk '$2==\"/\"{print $4}' /proc/mounts").await;
    assert!(out.split(',').any(|o| o == "ro"), "{out}");

    // Masked and read-only /proc paths (containerd's defaults).
    let id = running(
        &mut env,
        &pod,
        &pc,
        sleeper("masked", BUSYBOX, Default::default(), None),
    )
    .await;
    // (This host's kernel has no /proc/kcore; files that exist are
    // bind-mounted /dev/null, directories an empty read-only tmpfs.)
    let script = "for f in /proc/kcore /proc/keys /proc/timer_list /sys/firmware /proc/acpi; do \
                  [ -e $f ] || continue; \
                  if [ -d $f ]; then echo $f $(ls -A $f | wc -l); else echo $f $(cat $f | wc -c); fi; \
                  done";
    let (out, _) = run(&mut env, &id, script).await;
    assert!(out.contains("/proc/keys "), "{out}");
    for l in out.lines() {
        assert!(l.ends_with(" 0"), "not masked: {l}");
    }
    let (out, _) = run(
        &mut env,
        &id,
        "awk '$2==\"/proc/sys\"{print $4}' /proc/mounts",
    )
    .await;
    assert!(out.split(',').any(|o| o == "ro"), "/proc/sys: {out:?}");
    let (_, code) = run(&mut env, &id, "echo 1 > /proc/sys/vm/drop_caches").await;
    assert_ne!(code, 0);
}

#[tokio::test]
async fn seccomp_runtime_default_unconfined_and_localhost() {
    use security_profile::ProfileType;
    let mut env = setup(&[BUSYBOX]).await;
    let (pod, pc) = run_pod(&mut env, "seccomp").await;
    // unshare(CLONE_NEWUSER) needs no capability, but the default profile
    // allows unshare only with CAP_SYS_ADMIN in the bounding set.
    let probe = "grep '^Seccomp:' /proc/self/status; unshare -U true 2>&1; echo rc=$?";

    let sc = LinuxContainerSecurityContext {
        seccomp: seccomp(ProfileType::RuntimeDefault, ""),
        ..Default::default()
    };
    let id = running(&mut env, &pod, &pc, sleeper("default", BUSYBOX, sc, None)).await;
    let (out, _) = run(&mut env, &id, probe).await;
    assert!(out.contains("Seccomp:\t2"), "no filter: {out}");
    assert!(
        out.contains("Operation not permitted") && !out.ends_with("rc=0"),
        "{out}"
    );
    // The profile lets ordinary work through (fork, exec, files, sockets).
    let (out, code) = run(
        &mut env,
        &id,
        "mkdir /tmp/d && ls /tmp && nc -h 2>&1 | head -1",
    )
    .await;
    assert_eq!(code, 0, "{out}");

    let sc = LinuxContainerSecurityContext {
        seccomp: seccomp(ProfileType::Unconfined, ""),
        ..Default::default()
    };
    let id = running(
        &mut env,
        &pod,
        &pc,
        sleeper("unconfined", BUSYBOX, sc, None),
    )
    .await;
    let (out, _) = run(&mut env, &id, probe).await;
    assert!(out.contains("Seccomp:\t0"), "{out}");
    assert!(out.ends_with("rc=0"), "{out}");
    assert_eq!(run(&mut env, &id, "mkdir /tmp/x").await.1, 0);

    // A Localhost profile that allows everything but mkdir.
    let profile = env.d.config.dir.path().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"],
                          "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}"#,
    )
    .unwrap();
    let sc = LinuxContainerSecurityContext {
        seccomp: seccomp(ProfileType::Localhost, profile.to_str().unwrap()),
        ..Default::default()
    };
    let id = running(&mut env, &pod, &pc, sleeper("local", BUSYBOX, sc, None)).await;
    let (out, _) = run(
        &mut env,
        &id,
        "mkdir /tmp/x 2>&1; echo rc=$?; touch /tmp/f && echo ok",
    )
    .await;
    assert!(
        out.contains("Permission denied") && out.contains("rc=1") && out.ends_with("ok"),
        "{out}"
    );
}

#[tokio::test]
async fn resources_visible_inside_and_oom_kill() {
    let mut env = setup(&[BUSYBOX]).await;
    let (pod, pc) = run_pod(&mut env, "res").await;

    let res = LinuxContainerResources {
        memory_limit_in_bytes: 64 << 20,
        cpu_quota: 50_000,
        cpu_period: 100_000,
        cpu_shares: 256,
        ..Default::default()
    };
    let id = running(
        &mut env,
        &pod,
        &pc,
        sleeper("limits", BUSYBOX, Default::default(), Some(res)),
    )
    .await;
    let (out, code) = run(
        &mut env,
        &id,
        "cd /sys/fs/cgroup && cat memory/memory.limit_in_bytes cpu/cpu.cfs_quota_us \
         cpu/cpu.cfs_period_us cpu/cpu.shares pids/pids.current",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let v: Vec<i64> = out.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(&v[..4], &[64 << 20, 50_000, 100_000, 256], "{out}");
    // The container's own pids cgroup: its sleep and this exec's shell/cat.
    assert!((1..10).contains(&v[4]), "{out}");

    // 32 MiB limit, a 64 MiB buffer: the kernel OOM-kills it.
    let mut cfg = ctr_config(
        "oom",
        BUSYBOX,
        "exec dd if=/dev/zero of=/dev/null bs=64M count=1",
    );
    cfg.linux.as_mut().unwrap().resources = Some(LinuxContainerResources {
        memory_limit_in_bytes: 32 << 20,
        ..Default::default()
    });
    let id = create(&mut env.c, &pod, &pc, cfg).await.unwrap();
    start(&mut env.c, &id).await;
    let s = wait_state(&mut env.c, &id, ContainerState::ContainerExited).await;
    assert_eq!(
        (s.reason.as_str(), s.exit_code),
        ("OOMKilled", 137),
        "{s:?}"
    );

    // A normal failure under a limit is not an OOM kill.
    let mut cfg = ctr_config("fail", BUSYBOX, "exit 3");
    cfg.linux.as_mut().unwrap().resources = Some(LinuxContainerResources {
        memory_limit_in_bytes: 32 << 20,
        ..Default::default()
    });
    let id = create(&mut env.c, &pod, &pc, cfg).await.unwrap();
    start(&mut env.c, &id).await;
    let s = wait_state(&mut env.c, &id, ContainerState::ContainerExited).await;
    assert_eq!((s.reason.as_str(), s.exit_code), ("Error", 3), "{s:?}");
}

/// CVE-2019-5736 class (issue 13 item 2): what a container's clones run
/// until they exec (its init, every exec) is the pod monitor's executable,
/// which berthd starts from a sealed in-memory copy, never from the
/// berth-monitor file: nothing reaching it through /proc/<pid>/exe can
/// write it. (crates/shim/tests/monitor.rs shows a container trying.)
#[tokio::test]
async fn pod_monitors_run_from_a_sealed_copy_of_their_binary() {
    let mut env = setup(&[BUSYBOX]).await;
    let (pod, pc) = run_pod(&mut env, "sealed").await;
    let id = running(
        &mut env,
        &pod,
        &pc,
        sleeper("c", BUSYBOX, Default::default(), None),
    )
    .await;
    assert_eq!(run(&mut env, &id, "echo ok").await, ("ok".into(), 0));
    let pid = berth_e2e::procs::monitor_of(&pod).expect("the pod's monitor");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(
        exe.to_string_lossy().starts_with("/memfd:berth-monitor"),
        "the monitor runs {exe:?}"
    );
    let f = std::fs::File::open(format!("/proc/{pid}/exe")).unwrap();
    let seals = nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_GET_SEALS).unwrap();
    let want = nix::fcntl::SealFlag::F_SEAL_SEAL
        | nix::fcntl::SealFlag::F_SEAL_SHRINK
        | nix::fcntl::SealFlag::F_SEAL_GROW
        | nix::fcntl::SealFlag::F_SEAL_WRITE;
    assert!(
        nix::fcntl::SealFlag::from_bits_truncate(seals).contains(want),
        "seals {seals:#x}"
    );
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "berth-monitor");
}

/// On a cgroup v1 (or hybrid) host a container sees its own cgroups under
/// /sys/fs/cgroup, read-only; and containers joining the pod's PID
/// namespace start whatever pid they get there. (libcontainer's own v1
/// setup looked that pid up in the host's /proc, so a pid the host had no
/// process of failed the create with "failed to mount cgroup v1: procfs
/// failed"; and it bound the hierarchies read-write.)
#[tokio::test]
async fn v1_cgroups_read_only_and_any_pid_in_a_shared_pid_namespace() {
    if berth_cgroup::Layout::detect().is_none_or(|l| l.is_v2()) {
        eprintln!("not a cgroup v1 host: skipped");
        return;
    }
    let mut env = setup(&[BUSYBOX]).await;
    let mut pc = pod_config(&env, "v1pid");
    pod_namespaces(&mut pc).pid = NamespaceMode::Pod as i32;
    let pod = run_pod_with(&mut env.c, &pc).await;
    let log_dir = std::path::PathBuf::from(&pc.log_directory);
    // Containers one after the other, until one got a pid in the pod that
    // no host process has (the pod's pids count up from 1; hosts have gaps
    // among their low pids).
    let mut crossed = None;
    for i in 0..40 {
        let name = format!("c{i}");
        let mut cfg = ctr_config(&name, BUSYBOX, "echo pid=$$; exec sleep 1000");
        cfg.linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap()
            .namespace_options
            .as_mut()
            .unwrap()
            .pid = NamespaceMode::Pod as i32;
        let id = running(&mut env, &pod, &pc, cfg).await;
        let log = log_dir.join(format!("{name}/0.log"));
        let mut pid = None;
        for _ in 0..100 {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            pid = text
                .split("pid=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u32>().ok());
            if pid.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let pid = pid.unwrap_or_else(|| panic!("{name} logged no pid"));
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            crossed = Some((id, pid));
            break;
        }
    }
    let Some((id, pid)) = crossed else {
        panic!("none of 40 containers got a pid the host lacks: no gap to show");
    };
    eprintln!("container {id} runs as pid {pid} in the pod, a pid the host lacks");
    let (out, code) = run(
        &mut env,
        &id,
        "{ cat /sys/fs/cgroup/pids/pids.max; echo 5 > /sys/fs/cgroup/pids/pids.max; \
         touch /sys/fs/cgroup/x; } 2>&1; true",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    // Its own cgroup (no limit set), unchanged.
    assert!(out.starts_with("max"), "{out}");
    assert!(out.contains("pids.max: Read-only file system"), "{out}");
    assert!(
        out.contains("/sys/fs/cgroup/x: Read-only file system"),
        "{out}"
    );
}
