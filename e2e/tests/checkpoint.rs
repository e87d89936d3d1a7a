//! CheckpointContainer (kubelet forensic checkpointing) with CRIU: a
//! counting container is dumped while it runs on, into an archive in
//! CRI-O's layout; bad requests are refused with the CRI's codes and leave
//! nothing. Needs root and CRIU 4 (`hack/install-criu.sh`, which
//! hack/install-deps.sh runs): without it the test fails, saying so.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_api::v1::*;
use berth_e2e::daemon::BerthdConfig;
use berth_e2e::pods::*;

/// The CRIU `hack/install-criu.sh` installs; panics, telling how to install
/// it, when it is not there.
fn criu() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/install-criu.sh");
    let out = Command::new(&script)
        .arg("--print-path")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} --print-path failed",
        script.display()
    );
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let criu = dir.join("criu");
    let ok = Command::new(&criu)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "no working criu at {}: the checkpoint tests need CRIU 4 (Debian 12's 3.17 fails on \
         recent kernels); install it with `hack/install-criu.sh` (as root; hack/install-deps.sh \
         runs it), then run the tests again",
        criu.display()
    );
    criu
}

/// A registry and a daemon whose `[checkpoint] criu_path` is `criu`.
async fn setup_with_criu(criu: &Path) -> PodEnv {
    let mut config = BerthdConfig::new().unwrap();
    config.config_toml = Some(format!(
        "[checkpoint]\ncriu_path = {:?}\n",
        criu.display().to_string()
    ));
    setup_with_config(config, &[BUSYBOX]).await
}

/// The last number the counter logged (CRI log lines "<time> <stream> <tag> <text>").
fn last_count(log_path: &str) -> u64 {
    std::fs::read_to_string(log_path)
        .unwrap_or_default()
        .lines()
        .rev()
        .find_map(|l| l.splitn(4, ' ').nth(3)?.trim().parse().ok())
        .unwrap_or(0)
}

async fn wait_count(log_path: &str, above: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = last_count(log_path);
        if n > above {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "the counter did not pass {above} (at {n})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn checkpoint(
    c: &mut berth_e2e::client::CriClient,
    id: &str,
    location: &str,
    timeout: i64,
) -> Result<(), tonic::Status> {
    c.runtime
        .checkpoint_container(CheckpointContainerRequest {
            container_id: id.into(),
            location: location.into(),
            timeout,
        })
        .await
        .map(|_| ())
}

fn tar_list(args: &[&str]) -> Vec<String> {
    let out = Command::new("tar").args(args).output().unwrap();
    assert!(out.status.success(), "tar {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_start_matches("./").to_string())
        .collect()
}

#[tokio::test]
async fn a_running_counter_is_checkpointed_and_counts_on() {
    let criu = criu();
    let mut env = setup_with_criu(&criu).await;
    let (pod, pc) = run_pod(&mut env, "ckpt").await;
    let script = "i=0; while :; do i=$((i+1)); echo $i; echo $i > /count; sleep 0.1; done";
    let mut cfg = ctr_config("counter", BUSYBOX, script);
    // A file of the image deleted: deleted.files lists it.
    cfg.command = vec!["sh".into(), "-c".into(), format!("rm /etc/group; {script}")];
    let id = running(&mut env.c, &pod, &pc, cfg).await;
    let log_path = status(&mut env.c, &id).await.unwrap().log_path;
    wait_count(&log_path, 5).await;

    let dir = env.d.config.dir.path().join("checkpoints");
    std::fs::create_dir(&dir).unwrap();
    let archive = dir.join("counter.tar");
    let t = Instant::now();
    checkpoint(&mut env.c, &id, archive.to_str().unwrap(), 60)
        .await
        .unwrap_or_else(|e| panic!("checkpoint: {e:?}\n{}", env.d.log_text()));
    let took = t.elapsed();
    let at = last_count(&log_path);
    eprintln!(
        "checkpoint of the counter took {} ms ({} bytes), counter at {at}",
        took.as_millis(),
        std::fs::metadata(&archive).unwrap().len()
    );

    // The archive: CRI-O's layout, readable by its owner only.
    let meta = std::fs::metadata(&archive).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let names = tar_list(&["-tf", archive.to_str().unwrap()]);
    eprintln!("tar tf:\n{}", names.join("\n"));
    for want in [
        "checkpoint/inventory.img",
        "checkpoint/pstree.img",
        "checkpoint/descriptors.json",
        "config.dump",
        "spec.dump",
        "rootfs-diff.tar",
        "deleted.files",
        "dump.log",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    assert!(
        names.iter().any(|n| n.starts_with("checkpoint/pages-")),
        "no memory pages in {names:?}"
    );
    let x = dir.join("x");
    std::fs::create_dir(&x).unwrap();
    let st = Command::new("tar")
        .args(["-xf", archive.to_str().unwrap(), "-C", x.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(x.join("config.dump")).unwrap()).unwrap();
    assert_eq!(config["id"], id.as_str());
    assert_eq!(config["name"], "counter");
    assert_eq!(config["runtime"], "berth");
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(x.join("spec.dump")).unwrap()).unwrap();
    assert_eq!(spec["process"]["args"][0], "sh");
    let deleted: Vec<String> =
        serde_json::from_slice(&std::fs::read(x.join("deleted.files")).unwrap()).unwrap();
    assert_eq!(deleted, ["etc/group"]);
    let diff = tar_list(&["-tf", x.join("rootfs-diff.tar").to_str().unwrap()]);
    assert!(diff.iter().any(|n| n == "count"), "{diff:?}");
    assert!(
        !diff
            .iter()
            .any(|n| n.starts_with("dev/") || n.starts_with("proc")),
        "mount points in the diff: {diff:?}"
    );
    // The init's stdio as runc records it: fd 0 /dev/null, 1 and 2 the monitor's pipes.
    let fds: Vec<String> =
        serde_json::from_slice(&std::fs::read(x.join("checkpoint/descriptors.json")).unwrap())
            .unwrap();
    assert_eq!(fds.len(), 3);
    assert!(fds[1].starts_with("pipe:["), "{fds:?}");
    let log = std::fs::read_to_string(x.join("dump.log")).unwrap();
    assert!(log.contains("Dumping finished successfully"), "{log}");

    // The container runs on and counts on, from where it was.
    let s = status(&mut env.c, &id).await.unwrap();
    assert_eq!(s.state, ContainerState::ContainerRunning as i32, "{s:?}");
    let after = wait_count(&log_path, at + 10).await;
    assert!(after > at + 10);
    let n = exec(&mut env.c, &id, &sh("cat /count"), 10).await.unwrap();
    assert_eq!(n.exit_code, 0);

    // No scratch dir is left behind.
    let work = env.d.config.root.join("checkpoint-work");
    let left: Vec<_> = std::fs::read_dir(&work)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");

    // A symlink at the location is replaced, never followed.
    let outside = dir.join("outside");
    std::fs::write(&outside, "keep").unwrap();
    let link = dir.join("link.tar");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    checkpoint(&mut env.c, &id, link.to_str().unwrap(), 0)
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep");
    assert!(std::fs::symlink_metadata(&link).unwrap().is_file());

    stop_container(&mut env.c, &id).await;
    remove_container(&mut env.c, &id).await;
    stop_pod(&mut env.c, &pod).await;
    remove_pod(&mut env.c, &pod).await;
}

#[tokio::test]
async fn bad_checkpoint_requests_are_refused_and_leave_nothing() {
    let criu = criu();
    let mut env = setup_with_criu(&criu).await;
    let (pod, pc) = run_pod(&mut env, "ckpt-bad").await;
    let dir = env.d.config.dir.path().join("checkpoints");
    std::fs::create_dir(&dir).unwrap();
    let good = dir.join("c.tar").display().to_string();

    let e = checkpoint(&mut env.c, "no-such-container", &good, 0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");

    let id = running(
        &mut env.c,
        &pod,
        &pc,
        ctr_config("sleeper", BUSYBOX, "exec sleep 1000"),
    )
    .await;
    for bad in [
        String::new(),
        "relative/c.tar".to_string(),
        format!("{}/missing/c.tar", dir.display()),
        format!("{}/../c.tar", dir.display()),
    ] {
        let e = checkpoint(&mut env.c, &id, &bad, 0).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}: {e:?}");
    }

    let done = create(&mut env.c, &pod, &pc, ctr_config("done", BUSYBOX, "true"))
        .await
        .unwrap();
    start(&mut env.c, &done).await;
    wait_state(&mut env.c, &done, ContainerState::ContainerExited).await;
    let e = checkpoint(&mut env.c, &done, &good, 0).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("not running"), "{e:?}");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");

    stop_pod(&mut env.c, &pod).await;
    remove_pod(&mut env.c, &pod).await;
}

/// The numbers of a counter's CRI log, in order.
fn counts(log_path: &str) -> Vec<u64> {
    std::fs::read_to_string(log_path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3)?.trim().parse().ok())
        .collect()
}

#[tokio::test]
async fn a_checkpointed_counter_is_restored_into_a_new_pod_and_counts_on() {
    let criu = criu();
    let mut env = setup_with_criu(&criu).await;
    let (pod_a, pc_a) = run_pod(&mut env, "ckpt-a").await;
    let script = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.2; done";
    let id_a = running(
        &mut env.c,
        &pod_a,
        &pc_a,
        ctr_config("counter", BUSYBOX, script),
    )
    .await;
    let log_a = status(&mut env.c, &id_a).await.unwrap().log_path;
    wait_count(&log_a, 5).await;
    let dir = env.d.config.dir.path().join("checkpoints");
    std::fs::create_dir(&dir).unwrap();
    let archive = dir.join("counter.tar");
    // The dump is taken between these two values.
    let before = last_count(&log_a);
    checkpoint(&mut env.c, &id_a, archive.to_str().unwrap(), 60)
        .await
        .unwrap_or_else(|e| panic!("checkpoint: {e:?}\n{}", env.d.log_text()));
    let after = last_count(&log_a);
    // Pod A counts on a while, then goes: the restore continues from the
    // dump, not from where pod A got to.
    let gone_at = wait_count(&log_a, after + 10).await;
    stop_container(&mut env.c, &id_a).await;
    remove_container(&mut env.c, &id_a).await;
    stop_pod(&mut env.c, &pod_a).await;
    remove_pod(&mut env.c, &pod_a).await;

    let (pod_b, pc_b) = run_pod(&mut env, "ckpt-b").await;
    let id_b = create(
        &mut env.c,
        &pod_b,
        &pc_b,
        ctr_config("counter", archive.to_str().unwrap(), "exit 99"),
    )
    .await
    .unwrap_or_else(|e| panic!("create from the archive: {e:?}\n{}", env.d.log_text()));
    let s = status(&mut env.c, &id_b).await.unwrap();
    assert_eq!(s.state, ContainerState::ContainerCreated as i32, "{s:?}");
    let log_b = s.log_path;
    let t = Instant::now();
    env.c
        .runtime
        .start_container(StartContainerRequest {
            container_id: id_b.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("restore: {e:?}\n{}", env.d.log_text()));
    let restore_ms = t.elapsed().as_millis();
    let s = status(&mut env.c, &id_b).await.unwrap();
    assert_eq!(s.state, ContainerState::ContainerRunning as i32, "{s:?}");
    let first = wait_count(&log_b, 0).await;
    let later = wait_count(&log_b, first + 5).await;
    let seen = counts(&log_b);
    eprintln!(
        "restore: pod A's counter logged {before} before the checkpoint, {after} when it \
         returned, {gone_at} when pod A went; in pod B it went on at {} (first line), then \
         {later}; StartContainer (restore) took {restore_ms} ms",
        seen[0]
    );
    // It continues from the checkpoint, never from 1, and counts by one.
    assert!(
        seen[0] > before && seen[0] <= after + 1,
        "{seen:?} (logged {before} before the dump, {after} after it)"
    );
    assert!(seen.windows(2).all(|w| w[1] == w[0] + 1), "{seen:?}");
    // The restored tree is in the new container's cgroups (where an exec
    // is put).
    let r = exec(
        &mut env.c,
        &id_b,
        &sh("cat /proc/1/cgroup; echo ---; cat /proc/self/cgroup"),
        10,
    )
    .await
    .unwrap();
    let out = String::from_utf8_lossy(&r.stdout).to_string();
    let (init, own) = out.split_once("---\n").unwrap();
    let memory = |s: &str| {
        s.lines()
            .find(|l| l.contains(":memory:") || l.starts_with("0::"))
            .map(str::to_string)
    };
    assert!(memory(init).is_some(), "{out}");
    assert_eq!(memory(init), memory(own), "{out}");
    // An exec runs in it; stop and remove work as for any container.
    let r = exec(&mut env.c, &id_b, &sh("echo hi"), 10).await.unwrap();
    assert_eq!(r.exit_code, 0, "{r:?}");

    // A restore CRIU fails (the process tree's image gone) fails the start
    // with CRIU's log, leaves the container EXITED, and it is removed as any.
    let x = dir.join("broken");
    std::fs::create_dir(&x).unwrap();
    let st = Command::new("tar")
        .args(["-xf", archive.to_str().unwrap(), "-C", x.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::remove_file(x.join("checkpoint/pstree.img")).unwrap();
    let broken = dir.join("broken.tar");
    let st = Command::new("tar")
        .args([
            "-cf",
            broken.to_str().unwrap(),
            "-C",
            x.to_str().unwrap(),
            ".",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let mut cfg = ctr_config("broken", broken.to_str().unwrap(), "true");
    cfg.log_path = "broken/0.log".into();
    let id_x = create(&mut env.c, &pod_b, &pc_b, cfg).await.unwrap();
    let e = env
        .c
        .runtime
        .start_container(StartContainerRequest {
            container_id: id_x.clone(),
        })
        .await
        .unwrap_err();
    eprintln!("failed restore: {e:?}");
    assert!(e.message().contains("criu restore failed"), "{e:?}");
    assert!(e.message().contains("pstree"), "{e:?}");
    let s = status(&mut env.c, &id_x).await.unwrap();
    assert_eq!(s.state, ContainerState::ContainerExited as i32, "{s:?}");
    remove_container(&mut env.c, &id_x).await;
    // The restored counter was not disturbed.
    let r = exec(&mut env.c, &id_b, &sh("echo hi"), 10).await.unwrap();
    assert_eq!(r.exit_code, 0, "{r:?}");
    stop_container(&mut env.c, &id_b).await;
    let s = status(&mut env.c, &id_b).await.unwrap();
    assert_eq!(s.state, ContainerState::ContainerExited as i32, "{s:?}");
    remove_container(&mut env.c, &id_b).await;
    stop_pod(&mut env.c, &pod_b).await;
    remove_pod(&mut env.c, &pod_b).await;
}

#[tokio::test]
async fn bad_checkpoint_archives_are_refused_and_leave_nothing() {
    let criu = criu();
    let mut env = setup_with_criu(&criu).await;
    let (pod, pc) = run_pod(&mut env, "restore-bad").await;
    let dir = env.d.config.dir.path().join("archives");
    std::fs::create_dir(&dir).unwrap();
    let layers = env.d.config.root.join("containers");
    let layers_before = std::fs::read_dir(&layers).map_or(0, |d| d.count());

    // Not there, not a file, not a tar, missing files, a hostile tar.
    let missing = dir.join("missing.tar");
    let garbage = dir.join("garbage.tar");
    std::fs::write(&garbage, vec![0x5a; 4096]).unwrap();
    let partial = dir.join("partial.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&partial).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        b.append_data(&mut h, "spec.dump", &b"{}"[..]).unwrap();
        b.finish().unwrap();
    }
    let evil = dir.join("evil.tar");
    let outside = dir.join("outside");
    std::fs::create_dir(&outside).unwrap();
    {
        let mut b = tar::Builder::new(std::fs::File::create(&evil).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, "checkpoint", &outside).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        b.append_data(&mut h, "checkpoint/pwned", &b"x\n"[..])
            .unwrap();
        b.finish().unwrap();
    }
    for (archive, code) in [
        (&missing, tonic::Code::InvalidArgument),
        (&dir, tonic::Code::InvalidArgument),
        (&garbage, tonic::Code::InvalidArgument),
        (&partial, tonic::Code::InvalidArgument),
        (&evil, tonic::Code::InvalidArgument),
    ] {
        let e = create(
            &mut env.c,
            &pod,
            &pc,
            ctr_config("restored", archive.to_str().unwrap(), "true"),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), code, "{}: {e:?}", archive.display());
        assert!(
            e.message().contains(archive.to_str().unwrap()),
            "{}: {e:?}",
            archive.display()
        );
    }
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);

    // An archive whose image is not in the store.
    let noimage = dir.join("noimage.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&noimage).unwrap());
        let config = br#"{"rootfsImageName":"example.invalid/none:1","rootfsImageRef":"sha256:0000000000000000000000000000000000000000000000000000000000000000"}"#;
        for (name, data) in [("config.dump", &config[..]), ("spec.dump", &b"{}"[..])] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, data).unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o755);
        b.append_data(&mut h, "checkpoint/", &b""[..]).unwrap();
        b.finish().unwrap();
    }
    let e = create(
        &mut env.c,
        &pod,
        &pc,
        ctr_config("restored", noimage.to_str().unwrap(), "true"),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("example.invalid/none:1"), "{e:?}");

    // Nothing was left: no container, no layer dir.
    assert!(list_containers(&mut env.c).await.is_empty());
    assert_eq!(
        std::fs::read_dir(&layers).map_or(0, |d| d.count()),
        layers_before
    );
    stop_pod(&mut env.c, &pod).await;
    remove_pod(&mut env.c, &pod).await;
}

/// CheckpointPod of `ids` into `dir`, with a client deadline as the
/// kubelet sets one.
async fn checkpoint_pod(
    c: &mut berth_e2e::client::CriClient,
    pod: &str,
    ids: &[String],
    dir: &Path,
    options: std::collections::HashMap<String, String>,
) -> Result<(), tonic::Status> {
    checkpoint_pod_within(c, pod, ids, dir, options, Duration::from_secs(120)).await
}

async fn checkpoint_pod_within(
    c: &mut berth_e2e::client::CriClient,
    pod: &str,
    ids: &[String],
    dir: &Path,
    options: std::collections::HashMap<String, String>,
    deadline: Duration,
) -> Result<(), tonic::Status> {
    let mut req = tonic::Request::new(CheckpointPodRequest {
        pod_sandbox_id: pod.into(),
        output_path: dir.display().to_string(),
        container_ids: ids.to_vec(),
        options,
    });
    req.set_timeout(deadline);
    c.runtime.checkpoint_pod(req).await.map(|_| ())
}

fn restore_request(
    dir: &Path,
    pod: &PodSandboxConfig,
    configs: Vec<ContainerConfig>,
) -> RestorePodRequest {
    RestorePodRequest {
        checkpoint_path: dir.display().to_string(),
        config: Some(pod.clone()),
        runtime_handler: String::new(),
        options: Default::default(),
        container_configs: configs,
    }
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// CheckpointPod cuts two counters of one pod at one moment (both paused
/// before either is captured) and lets both count on; RestorePod makes a
/// new pod whose two containers are CREATED from the checkpoint and, once
/// started, count on from where the cut was. Bad requests are refused and
/// leave nothing: no file in the output dir, no pod.
#[tokio::test]
async fn a_pod_of_two_counters_is_checkpointed_and_restored_as_a_pod() {
    let criu = criu();
    let mut env = setup_with_criu(&criu).await;
    let (pod_a, pc_a) = run_pod(&mut env, "podckpt-a").await;
    let script = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.2; done";
    let names = ["one", "two"];
    let mut ids = Vec::new();
    let mut logs = Vec::new();
    for name in names {
        let id = running(&mut env.c, &pod_a, &pc_a, ctr_config(name, BUSYBOX, script)).await;
        logs.push(status(&mut env.c, &id).await.unwrap().log_path);
        ids.push(id);
    }
    for log in &logs {
        wait_count(log, 3).await;
    }
    let base = env.d.config.dir.path().join("pod-checkpoints");
    std::fs::create_dir(&base).unwrap();

    // Refused, leaving the (empty) output dir empty.
    let empty = base.join("refused");
    std::fs::create_dir(&empty).unwrap();
    let (other_pod, other_pc) = run_pod(&mut env, "podckpt-other").await;
    let other = running(
        &mut env.c,
        &other_pod,
        &other_pc,
        ctr_config("other", BUSYBOX, "exec sleep 1000"),
    )
    .await;
    let none = std::collections::HashMap::new();
    for (ids, options, code) in [
        (vec![], none.clone(), tonic::Code::InvalidArgument),
        (
            vec![ids[0].clone(), ids[0].clone()],
            none.clone(),
            tonic::Code::InvalidArgument,
        ),
        (
            vec![ids[0].clone(), "nosuchcontainer".into()],
            none.clone(),
            tonic::Code::NotFound,
        ),
        (
            vec![ids[0].clone(), other.clone()],
            none.clone(),
            tonic::Code::InvalidArgument,
        ),
        (
            ids.clone(),
            std::collections::HashMap::from([("tcp".to_string(), "yes".to_string())]),
            tonic::Code::InvalidArgument,
        ),
    ] {
        let e = checkpoint_pod(&mut env.c, &pod_a, &ids, &empty, options)
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{ids:?}: {e:?}");
        assert!(
            dir_entries(&empty).is_empty(),
            "{ids:?}: {:?}",
            dir_entries(&empty)
        );
    }
    std::fs::write(empty.join("x"), "").unwrap();
    let e = checkpoint_pod(&mut env.c, &pod_a, &ids, &empty, none.clone())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("not empty"), "{e:?}");
    stop_pod(&mut env.c, &other_pod).await;
    remove_pod(&mut env.c, &other_pod).await;
    // A deadline too short for CRIU: refused, nothing written, and the pod
    // is not left paused.
    let short = base.join("short");
    std::fs::create_dir(&short).unwrap();
    let e = checkpoint_pod_within(
        &mut env.c,
        &pod_a,
        &ids,
        &short,
        none.clone(),
        Duration::from_millis(60),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            e.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{e:?}"
    );
    assert!(dir_entries(&short).is_empty(), "{:?}", dir_entries(&short));
    for log in &logs {
        let now = last_count(log);
        wait_count(log, now + 2).await;
    }

    // The cut.
    let dir = base.join("pod-a");
    std::fs::create_dir(&dir).unwrap();
    let before: Vec<u64> = logs.iter().map(|l| last_count(l)).collect();
    let t = Instant::now();
    checkpoint_pod(&mut env.c, &pod_a, &ids, &dir, none.clone())
        .await
        .unwrap_or_else(|e| panic!("CheckpointPod: {e:?}\n{}", env.d.log_text()));
    let took = t.elapsed();
    let after: Vec<u64> = logs.iter().map(|l| last_count(l)).collect();
    assert_eq!(dir_entries(&dir), ["containers", "pod.json"]);
    assert_eq!(dir_entries(&dir.join("containers")), ["0.tar", "1.tar"]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("pod.json")).unwrap()).unwrap();
    assert_eq!(manifest["podSandboxId"], pod_a.as_str());
    for (n, name) in names.iter().enumerate() {
        assert_eq!(manifest["containers"][n]["name"], *name, "{manifest}");
        assert_eq!(
            manifest["containers"][n]["id"],
            ids[n].as_str(),
            "{manifest}"
        );
        let files = tar_list(&[
            "-tf",
            dir.join(format!("containers/{n}.tar")).to_str().unwrap(),
        ]);
        assert!(
            files.iter().any(|f| f == "checkpoint/pstree.img"),
            "{files:?}"
        );
    }
    assert!(
        env.d.log_text().contains("pod frozen for its checkpoint"),
        "the containers were not paused first"
    );
    // Both run on: none is left paused.
    for (log, a) in logs.iter().zip(&after) {
        wait_count(log, a + 3).await;
    }
    for id in &ids {
        let s = status(&mut env.c, id).await.unwrap();
        assert_eq!(s.state, ContainerState::ContainerRunning as i32, "{s:?}");
    }
    stop_pod(&mut env.c, &pod_a).await;
    remove_pod(&mut env.c, &pod_a).await;

    // Restore: names must be exactly the checkpoint's; a refusal leaves no pod.
    let pc_b = pod_config(&env, "podckpt-b");
    let pods_before = list_pods(&mut env.c).await.len();
    for configs in [
        vec![ctr_config("one", BUSYBOX, "true")],
        vec![
            ctr_config("one", BUSYBOX, "true"),
            ctr_config("three", BUSYBOX, "true"),
        ],
    ] {
        let e = env
            .c
            .runtime
            .restore_pod(restore_request(&dir, &pc_b, configs))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert_eq!(list_pods(&mut env.c).await.len(), pods_before);
    }
    let restored = env
        .c
        .runtime
        // Another order than the checkpoint's: matched by name.
        .restore_pod(restore_request(
            &dir,
            &pc_b,
            vec![
                ctr_config("two", BUSYBOX, "exit 99"),
                ctr_config("one", BUSYBOX, "exit 99"),
            ],
        ))
        .await
        .unwrap_or_else(|e| panic!("RestorePod: {e:?}\n{}", env.d.log_text()))
        .into_inner();
    let names_back: Vec<&str> = restored
        .restored_containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names_back, ["two", "one"]);
    let pod_b = restored.pod_sandbox_id;
    let mut firsts = Vec::new();
    for c in &restored.restored_containers {
        let s = status(&mut env.c, &c.container_id).await.unwrap();
        assert_eq!(s.state, ContainerState::ContainerCreated as i32, "{s:?}");
        env.c
            .runtime
            .start_container(StartContainerRequest {
                container_id: c.container_id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("start (restore) {}: {e:?}\n{}", c.name, env.d.log_text()));
        let n = names.iter().position(|x| *x == c.name).unwrap();
        let log = status(&mut env.c, &c.container_id).await.unwrap().log_path;
        let first = wait_count(&log, 0).await;
        wait_count(&log, first + 3).await;
        let seen = counts(&log);
        // From the cut, never from 1.
        assert!(
            seen[0] > before[n] && seen[0] <= after[n] + 1,
            "{}: {seen:?} (logged {} before the cut, {} after it)",
            c.name,
            before[n],
            after[n]
        );
        firsts.push((c.name.clone(), seen[0]));
    }
    eprintln!(
        "pod checkpoint of 2 counters took {took:?}; before {before:?}, after {after:?}; \
         restored counters went on at {firsts:?}"
    );
    stop_pod(&mut env.c, &pod_b).await;
    remove_pod(&mut env.c, &pod_b).await;
}

/// Whether `pid` runs (neither gone nor a zombie).
fn alive(pid: i32) -> bool {
    berth_e2e::procs::processes()
        .iter()
        .any(|p| p.pid == pid && p.state != 'Z' && p.state != 'X')
}

/// The processes below `pid` (its children, theirs, ...): pid, state,
/// command line.
fn descendants(pid: i32) -> Vec<(i32, char, String)> {
    let procs = berth_e2e::procs::processes();
    let mut found = vec![];
    let mut parents = vec![pid];
    while let Some(parent) = parents.pop() {
        for p in procs.iter().filter(|p| p.ppid == parent) {
            found.push((p.pid, p.state, p.cmdline.clone()));
            parents.push(p.pid);
        }
    }
    found
}

/// Whether the network namespace of process `pid` holds CRIU's network
/// lock (iptables chain CRIU, IPv4 or IPv6).
fn network_locked(pid: i32) -> bool {
    ["iptables", "ip6tables"].iter().any(|tool| {
        Command::new("nsenter")
            .arg(format!("--net=/proc/{pid}/ns/net"))
            .args([tool, "-w", "-t", "filter", "-S", "CRIU"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Whether the dump of container `id` in `work` (the checkpoint work dir,
/// `<id>.<nonce>` per dump) is writing memory pages: its CRIU then has the
/// tree seized and its parasite in it.
fn dumping_pages(work: &Path, id: &str) -> bool {
    let dumps = std::fs::read_dir(work).into_iter().flatten().flatten();
    dumps
        .filter(|e| e.file_name().to_string_lossy().starts_with(id))
        .any(|e| {
            std::fs::read_dir(e.path().join("checkpoint"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|f| {
                    f.file_name().to_string_lossy().starts_with("pages-")
                        && f.metadata().is_ok_and(|m| m.len() > 0)
                })
        })
}

/// The CRIU log of the one dump in `work`.
fn dump_log(work: &Path) -> String {
    std::fs::read_dir(work)
        .into_iter()
        .flatten()
        .flatten()
        .find_map(|e| std::fs::read_to_string(e.path().join("dump.log")).ok())
        .unwrap_or_default()
}

/// A running container holding 400 MB (dd's buffer, kept while dd waits
/// on a pipe nobody reads), so that its dump takes a while, and counting.
struct BigCounter {
    pod: String,
    pod_config: PodSandboxConfig,
    id: String,
    log_path: String,
    monitor: i32,
}

impl BigCounter {
    async fn start(env: &mut PodEnv, pod_name: &str) -> BigCounter {
        let (pod, pc) = run_pod(env, pod_name).await;
        let script = "dd if=/dev/zero bs=400M count=1 2>/dev/null | sleep 100000 & \
                      i=0; while :; do i=$((i+1)); echo $i; sleep 0.1; done";
        let id = running(&mut env.c, &pod, &pc, ctr_config("big", BUSYBOX, script)).await;
        let log_path = status(&mut env.c, &id).await.unwrap().log_path;
        wait_count(&log_path, 3).await;
        let monitor = berth_e2e::procs::monitor_of(&pod).expect("the pod's monitor");
        let c = BigCounter {
            pod,
            pod_config: pc,
            id,
            log_path,
            monitor,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while c.dd().is_none() {
            assert!(
                Instant::now() < deadline,
                "dd never held its 400 MB: {:?}",
                descendants(c.monitor)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        c
    }

    /// dd, with its buffer (busybox runs it in a fork of sh, without
    /// exec: known by its size, not its name).
    fn dd(&self) -> Option<i32> {
        descendants(self.monitor)
            .into_iter()
            .map(|(pid, _, _)| pid)
            .find(|pid| berth_e2e::procs::rss_kb(*pid as u32).is_some_and(|kb| kb > 350_000))
    }

    async fn remove(&self, env: &mut PodEnv) {
        stop_container(&mut env.c, &self.id).await;
        remove_container(&mut env.c, &self.id).await;
        stop_pod(&mut env.c, &self.pod).await;
        remove_pod(&mut env.c, &self.pod).await;
    }
}

/// Waits until berthd's criu writes memory pages for the checkpoint
/// `request` (in flight), SIGKILLs berthd, and checks that criu died with
/// it at once (it ran on before, holding the container and every fd berthd
/// had inherited, such as hack/test.sh's cache lock) without finishing
/// its dump. Returns the pod's network lock state then.
async fn kill_berthd_mid_dump(
    env: &mut PodEnv,
    request: tokio::task::JoinHandle<Result<(), tonic::Status>>,
    big: &BigCounter,
    dd: i32,
) -> bool {
    let berthd = env.d.pid().unwrap() as i32;
    let work = env.d.config.root.join("checkpoint-work");
    let t = Instant::now();
    let criu_pid = loop {
        let found = berth_e2e::procs::processes()
            .into_iter()
            .find(|p| p.ppid == berthd && p.comm == "criu");
        if let Some(p) = found
            && dumping_pages(&work, &big.id)
        {
            break p.pid;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20) && !request.is_finished(),
            "no criu dump in progress to kill:\n{}",
            env.d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    eprintln!(
        "criu {criu_pid} writes pages {} ms after the request: killing berthd",
        t.elapsed().as_millis()
    );
    env.d.kill9().await.unwrap();
    let killed = Instant::now();
    assert!(
        request.await.unwrap().is_err(),
        "the checkpoint request succeeded"
    );
    while alive(criu_pid) && killed.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let gone_after = killed.elapsed();
    let log = dump_log(&work);
    let mut tail: Vec<&str> = log.lines().rev().take(8).collect();
    tail.reverse();
    assert!(
        !alive(criu_pid),
        "criu {criu_pid} still runs 1 s after berthd was killed; its log ends:\n{}",
        tail.join("\n")
    );
    assert!(
        !log.contains("Dumping finished successfully"),
        "criu finished its dump after berthd was killed, instead of dying with it"
    );
    // CRIU locks the pod's network while it dumps (its iptables chain
    // CRIU drops every packet); killed, it leaves the lock.
    let locked = network_locked(dd);
    eprintln!(
        "criu gone {} ms after berthd's kill, the pod's network {}; its log ends:\n{}",
        gone_after.as_millis(),
        if locked { "locked" } else { "not locked" },
        tail.join("\n")
    );
    locked
}

/// After berthd's restart: the pod's network unlocked, the container
/// Running and counting, no work dir or marker left, and a new dump works.
async fn after_restart(env: &mut PodEnv, big: &BigCounter, dd: i32) {
    env.d.restart().await.unwrap();
    env.c = env.d.client().await.unwrap();
    assert!(
        !network_locked(dd),
        "the pod's network is still locked after berthd's restart"
    );
    let s = status(&mut env.c, &big.id).await.unwrap();
    assert_eq!(s.state, ContainerState::ContainerRunning as i32, "{s:?}");
    let at = last_count(&big.log_path);
    wait_count(&big.log_path, at + 3).await;
    let work = env.d.config.root.join("checkpoint-work");
    let left: Vec<_> = std::fs::read_dir(&work)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    let again = env.d.config.dir.path().join("again.tar");
    checkpoint(&mut env.c, &big.id, again.to_str().unwrap(), 60)
        .await
        .unwrap_or_else(|e| panic!("checkpoint after the restart: {e:?}\n{}", env.d.log_text()));
    let at = last_count(&big.log_path);
    wait_count(&big.log_path, at + 2).await;
}

/// berthd SIGKILLed while CRIU dumps a container (CheckpointContainer):
/// criu dies with it, the container runs on without berthd (criu's seize
/// is undone as it dies: no process left stopped), and berthd's restart
/// undoes the network lock the dump left.
#[tokio::test]
async fn a_dump_dies_with_a_killed_berthd_and_the_container_runs_on() {
    let criu = criu();
    let mut env = setup_with_criu(&criu).await;
    let big = BigCounter::start(&mut env, "ckpt-kill").await;
    let dd = big.dd().unwrap();
    let location = env.d.config.dir.path().join("killed.tar");
    let mut c = env.d.client().await.unwrap();
    let ctr = big.id.clone();
    let request =
        tokio::spawn(async move { checkpoint(&mut c, &ctr, location.to_str().unwrap(), 60).await });
    kill_berthd_mid_dump(&mut env, request, &big, dd).await;

    // The container runs on without berthd: counting, nothing left stopped
    // (t: traced, T: stopped) by the dump.
    let at = last_count(&big.log_path);
    wait_count(&big.log_path, at + 3).await;
    let procs = descendants(big.monitor);
    assert!(
        procs
            .iter()
            .all(|(_, state, _)| !matches!(state, 't' | 'T')),
        "a container process was left stopped: {procs:?}"
    );
    assert_eq!(big.dd(), Some(dd), "dd is gone: {procs:?}");

    after_restart(&mut env, &big, dd).await;
    big.remove(&mut env).await;
}

/// berthd SIGKILLed during CheckpointPod of two containers, while CRIU
/// dumps the second: criu dies with it and the second runs on (CRIU had
/// thawed it to seize it with ptrace), but the first stays frozen while
/// berthd is down (its criu froze it again on leaving, for berthd to thaw
/// the pod at the end); berthd's restart thaws it (the marker the
/// checkpoint wrote before freezing) and unlocks the pod's network.
#[tokio::test]
async fn a_pod_frozen_for_its_checkpoint_is_thawed_when_a_killed_berthd_restarts() {
    let criu = criu();
    let mut env = setup_with_criu(&criu).await;
    let big = BigCounter::start(&mut env, "podckpt-kill").await;
    let dd = big.dd().unwrap();
    let script = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.1; done";
    let small = running(
        &mut env.c,
        &big.pod,
        &big.pod_config,
        ctr_config("small", BUSYBOX, script),
    )
    .await;
    let small_log = status(&mut env.c, &small).await.unwrap().log_path;
    wait_count(&small_log, 3).await;
    let out = env.d.config.dir.path().join("pod-checkpoint");
    std::fs::create_dir(&out).unwrap();
    let mut c = env.d.client().await.unwrap();
    // Dumped in this order: the small one first.
    let (pod, ids) = (big.pod.clone(), vec![small.clone(), big.id.clone()]);
    let request =
        tokio::spawn(
            async move { checkpoint_pod(&mut c, &pod, &ids, &out, Default::default()).await },
        );
    kill_berthd_mid_dump(&mut env, request, &big, dd).await;

    // While berthd is down: the small one stands still, the big one counts.
    let (small_at, big_at) = (last_count(&small_log), last_count(&big.log_path));
    wait_count(&big.log_path, big_at + 5).await;
    assert_eq!(
        last_count(&small_log),
        small_at,
        "the first container was not left frozen by its dump"
    );

    after_restart(&mut env, &big, dd).await;
    let at = last_count(&small_log);
    wait_count(&small_log, at + 3).await;
    assert!(
        env.d
            .log_text()
            .contains("thawed a container an interrupted pod checkpoint left frozen"),
        "{}",
        env.d.log_text()
    );
    stop_container(&mut env.c, &small).await;
    remove_container(&mut env.c, &small).await;
    big.remove(&mut env).await;
}
