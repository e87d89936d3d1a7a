//! Pod networking through real CNI plugins (Debian's bridge, host-local,
//! portmap; fake plugins where a plugin must fail or hang): NetworkReady,
//! pod IPs, pod-to-pod traffic, host ports on loopback, DNS and hostname,
//! host-network pods, rollback of failed ADDs, DEL after a daemon restart
//! and after a failed DEL, and nothing left behind. Every test has its own
//! bridge and /24 ([`TestNet`]) and never masquerades: traffic only goes
//! to loopback and pod IPs. Needs root.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use berth_api::v1::*;
use berth_e2e::cleanup::mounts_under;
use berth_e2e::client::CriClient;
use berth_e2e::daemon::{Berthd, BerthdConfig};
use berth_e2e::net::{NetEnv, TestNet, free_port, iptables_save, setup, write_plugin};
use berth_e2e::pods::*;
use serde_json::json;
use tonic::Code;

/// Generous limit for waiting on something that normally takes milliseconds.
const WAIT: Duration = Duration::from_secs(20);

async fn network_condition(c: &mut CriClient) -> RuntimeCondition {
    c.runtime
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.r#type == "NetworkReady")
        .expect("a NetworkReady condition")
}

/// Polls Status until NetworkReady is `want`.
async fn wait_network_ready(c: &mut CriClient, want: bool) -> RuntimeCondition {
    let deadline = Instant::now() + WAIT;
    loop {
        let cond = network_condition(c).await;
        if cond.status == want || Instant::now() > deadline {
            assert_eq!(cond.status, want, "{cond:?}");
            return cond;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn list_pods(c: &mut CriClient) -> Vec<String> {
    c.runtime
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items
        .into_iter()
        .map(|p| p.id)
        .collect()
}

/// ExecSync of `sh -c script`; asserts exit 0, returns stdout.
async fn out(c: &mut CriClient, id: &str, script: &str) -> String {
    let r = exec(c, id, &sh(script), 10).await.unwrap();
    assert_eq!(
        r.exit_code,
        0,
        "{script}: {}{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    String::from_utf8_lossy(&r.stdout).into_owned()
}

/// A container serving `body` (plus a newline) over HTTP on port 8080.
fn httpd(name: &str, body: &str) -> ContainerConfig {
    ctr_config(
        name,
        BUSYBOX,
        &format!(
            "mkdir -p /www && echo '{body}' > /www/index.html && exec httpd -f -p 8080 -h /www"
        ),
    )
}

fn sleeper(name: &str) -> ContainerConfig {
    ctr_config(name, BUSYBOX, "exec sleep 1000")
}

/// A plain HTTP/1.0 GET of `/` from the host; the whole answer.
fn http_get(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    Ok(buf)
}

/// Polls `http://addr/` from the host until it answers 200; the body.
async fn wait_http(addr: &str) -> String {
    let addr: SocketAddr = addr.parse().unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let res = tokio::task::spawn_blocking(move || http_get(addr))
            .await
            .unwrap();
        match res {
            Ok(resp) if resp.starts_with("HTTP/1.") && resp.contains(" 200 ") => {
                return resp
                    .split_once("\r\n\r\n")
                    .map(|(_, b)| b.to_string())
                    .unwrap_or_default();
            }
            other => assert!(
                Instant::now() < deadline,
                "GET http://{addr}/ from the host: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `wget url` in container `ctr` until it succeeds; its output.
/// (No `wget -T`: Debian 12's busybox-static segfaults with it.)
async fn wait_wget(c: &mut CriClient, ctr: &str, url: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let last = match exec(c, ctr, &["wget", "-qO-", url], 10).await {
            Ok(r) if r.exit_code == 0 => return String::from_utf8_lossy(&r.stdout).into_owned(),
            Ok(r) => format!(
                "exit {}: {}",
                r.exit_code,
                String::from_utf8_lossy(&r.stderr)
            ),
            Err(e) => format!("{e:?}"),
        };
        assert!(Instant::now() < deadline, "wget {url}: {last}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops and removes the pods, then asserts nothing of theirs is left.
async fn remove_and_check(env: &mut NetEnv, pods: &[(String, String)]) {
    for (id, _) in pods {
        stop_pod(&mut env.c, id).await;
        remove_pod(&mut env.c, id).await;
    }
    assert_nothing_left(env, pods).await;
}

async fn assert_nothing_left(env: &mut NetEnv, pods: &[(String, String)]) {
    let ids: Vec<String> = pods.iter().map(|p| p.0.clone()).collect();
    let ips: Vec<String> = pods.iter().map(|p| p.1.clone()).collect();
    let leaks = env.leaks(&ids, &ips);
    assert!(leaks.is_empty(), "left behind: {leaks:#?}");
    assert_eq!(list_pods(&mut env.c).await, Vec::<String>::new());
    let pods_dir = env.d.config.state.join("pods");
    let left = mounts_under(&pods_dir);
    assert!(left.is_empty(), "mounts: {left:?}");
    let dirs: Vec<_> = std::fs::read_dir(&pods_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(dirs.is_empty(), "pod dirs: {dirs:?}");
}

fn set_network_mode(ns: &mut Option<NamespaceOption>, mode: NamespaceMode) {
    ns.as_mut().unwrap().network = mode as i32;
}

/// Whether an iptables-save line of a CNI chain names `port`.
fn names_port(line: &str, port: u16) -> bool {
    line.contains("CNI-")
        && line
            .split(|ch: char| !ch.is_ascii_digit())
            .any(|tok| tok == port.to_string())
}

/// `dir/<name>` plus `:/usr/lib/cni`, as `--cni-bin-dir`.
fn bin_dir_args(bin: &Path) -> Vec<String> {
    vec![
        "--cni-bin-dir".into(),
        format!("{}:/usr/lib/cni", bin.display()),
    ]
}

#[tokio::test]
async fn network_ready_follows_the_conf_dir() {
    let config = BerthdConfig::new().unwrap();
    let net = TestNet::new(config.dir.path());
    let d = Berthd::start_with(config).await.unwrap();
    let mut c = d.client().await.unwrap();
    let conf_dir = d.config.cni_conf_dir();

    // Empty conf dir: not ready, with the reason the kubelet knows.
    let cond = network_condition(&mut c).await;
    assert!(!cond.status, "{cond:?}");
    assert_eq!(cond.reason, "NetworkPluginNotReady");
    assert!(!cond.message.is_empty(), "{cond:?}");

    // A config appears while berthd runs: ready, no restart.
    let tmp = conf_dir.join(".10-test.conflist.tmp");
    std::fs::write(&tmp, net.conflist()).unwrap();
    std::fs::rename(&tmp, conf_dir.join("10-test.conflist")).unwrap();
    wait_network_ready(&mut c, true).await;

    // An invalid file first in lexical order: not ready, naming it.
    std::fs::write(conf_dir.join("00-bad.conflist"), "{ this is not json").unwrap();
    let cond = wait_network_ready(&mut c, false).await;
    assert_eq!(cond.reason, "NetworkPluginNotReady");
    assert!(cond.message.contains("00-bad.conflist"), "{cond:?}");

    // Gone again: ready again.
    std::fs::remove_file(conf_dir.join("00-bad.conflist")).unwrap();
    wait_network_ready(&mut c, true).await;

    // A config naming a plugin that is nowhere: not ready, naming it.
    let missing = net.conflist_of(&[net.bridge_plugin(), json!({"type": "no-such-plugin-e2e"})]);
    std::fs::write(conf_dir.join("05-missing.conflist"), missing).unwrap();
    let cond = wait_network_ready(&mut c, false).await;
    assert!(cond.message.contains("no-such-plugin-e2e"), "{cond:?}");
    // A pod then fails, naming it, rather than silently getting no network;
    // and leaves nothing behind.
    let pc = berth_e2e::pods::pod_config_for(&d, "net-broken");
    let e = c
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pc.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("no-such-plugin-e2e"), "{e:?}");
    assert!(list_pods(&mut c).await.is_empty());
    let leaks = net.leaks(&d.config.state, &[], &[]);
    assert!(leaks.is_empty(), "{leaks:#?}");

    // No config at all: a pod gets loopback only (and no IP).
    std::fs::remove_file(conf_dir.join("05-missing.conflist")).unwrap();
    std::fs::remove_file(conf_dir.join("10-test.conflist")).unwrap();
    wait_network_ready(&mut c, false).await;
    let id = run_pod_with(&mut c, &pc).await;
    assert_eq!(pod_ip(&mut c, &id).await, "");
    stop_pod(&mut c, &id).await;
    remove_pod(&mut c, &id).await;
}

#[tokio::test]
async fn two_pods_reach_each_other_by_ip() {
    let mut env = setup(&[BUSYBOX], |_, _| {}).await;
    let pa = env.pod_config("net-a");
    let pb = env.pod_config("net-b");
    let a = run_pod_with(&mut env.c, &pa).await;
    let b = run_pod_with(&mut env.c, &pb).await;
    let ip_a = pod_ip(&mut env.c, &a).await;
    let ip_b = pod_ip(&mut env.c, &b).await;
    for ip in [&ip_a, &ip_b] {
        assert!(
            ip.starts_with(&env.net.prefix),
            "{ip} not in {}",
            env.net.subnet
        );
        assert!(ip.parse::<std::net::Ipv4Addr>().is_ok(), "{ip}");
    }
    assert_ne!(ip_a, ip_b);
    let mut want = vec![ip_a.clone(), ip_b.clone()];
    want.sort();
    assert_eq!(env.net.allocated_ips(), want);
    assert_eq!(env.net.veths().len(), 2, "{:?}", env.net.veths());
    // The bridge's FORWARD rules (for a node whose FORWARD policy is DROP),
    // written once for both pods.
    let chain = format!("BERTH-FWD-{}", env.net.bridge);
    let filter = iptables_save();
    let jumps = filter
        .lines()
        .filter(|l| l.starts_with("-A FORWARD ") && l.ends_with(&format!(" -j {chain}")))
        .count();
    assert_eq!(jumps, 1, "{filter}");
    let rules: Vec<&str> = filter
        .lines()
        .filter(|l| l.starts_with(&format!("-A {chain} ")))
        .collect();
    // The admin's chain for both directions, INVALID back to FORWARD, the two accepts.
    assert_eq!(rules.len(), 5, "{filter}");
    assert!(rules[0].ends_with("-j BERTH-FORWARD-ADMIN"), "{rules:?}");
    assert!(
        rules[3].contains(&format!(" -i {} ", env.net.bridge)),
        "{rules:?}"
    );
    assert!(
        rules[4].contains(&format!(" -o {} ", env.net.bridge)),
        "{rules:?}"
    );

    let srv = running(&mut env.c, &a, &pa, httpd("srv", "hello from a")).await;
    let cli = running(&mut env.c, &b, &pb, sleeper("cli")).await;

    // Each pod's eth0 holds its IP.
    let addr_a = out(&mut env.c, &srv, "ip -4 addr show dev eth0").await;
    assert!(addr_a.contains(&format!("inet {ip_a}/24")), "{addr_a}");
    let fib_b = out(&mut env.c, &cli, "cat /proc/net/fib_trie").await;
    assert!(fib_b.contains(&ip_b), "{fib_b}");

    // B reaches A's server by A's IP.
    let body = wait_wget(&mut env.c, &cli, &format!("http://{ip_a}:8080/")).await;
    assert_eq!(body, "hello from a\n");

    // A stopped then removed; B removed without a stop (the DEL happens there).
    stop_pod(&mut env.c, &a).await;
    assert_eq!(env.net.allocated_ips(), vec![ip_b.clone()]);
    remove_pod(&mut env.c, &a).await;
    remove_pod(&mut env.c, &b).await;
    assert_nothing_left(&mut env, &[(a, ip_a), (b, ip_b)]).await;
}

#[tokio::test]
async fn host_port_reaches_the_pod_on_loopback() {
    let mut env = setup(&[BUSYBOX], |_, _| {}).await;
    let hp = free_port();
    let mut pc = env.pod_config("net-hostport");
    pc.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 8080,
        host_port: hp as i32,
        host_ip: "127.0.0.1".into(),
    }];
    let pod = run_pod_with(&mut env.c, &pc).await;
    let ip = pod_ip(&mut env.c, &pod).await;
    running(&mut env.c, &pod, &pc, httpd("web", "through the host port")).await;

    let body = wait_http(&format!("127.0.0.1:{hp}")).await;
    assert_eq!(body, "through the host port\n");
    let rules = iptables_save();
    assert!(
        rules.lines().any(|l| names_port(l, hp)),
        "no iptables rule for host port {hp}:\n{rules}"
    );

    stop_pod(&mut env.c, &pod).await;
    remove_pod(&mut env.c, &pod).await;
    let rules = iptables_save();
    let left: Vec<&str> = rules.lines().filter(|l| names_port(l, hp)).collect();
    assert!(left.is_empty(), "rules for host port {hp} left: {left:#?}");
    assert_nothing_left(&mut env, &[(pod, ip)]).await;
}

#[tokio::test]
async fn dns_config_and_hostname() {
    let mut env = setup(&[BUSYBOX], |_, _| {}).await;
    let mut pc = env.pod_config("net-dns");
    pc.dns_config = Some(DnsConfig {
        servers: vec!["10.96.0.10".into(), "10.96.0.11".into()],
        searches: vec![
            "default.svc.cluster.local".into(),
            "svc.cluster.local".into(),
        ],
        options: vec!["ndots:5".into(), "timeout:2".into()],
    });
    let pod = run_pod_with(&mut env.c, &pc).await;
    let ip = pod_ip(&mut env.c, &pod).await;
    let ctr = running(&mut env.c, &pod, &pc, sleeper("dns")).await;

    let resolv = out(&mut env.c, &ctr, "cat /etc/resolv.conf").await;
    let lines: Vec<&str> = resolv.lines().collect();
    for want in [
        "search default.svc.cluster.local svc.cluster.local",
        "nameserver 10.96.0.10",
        "nameserver 10.96.0.11",
        "options ndots:5 timeout:2",
    ] {
        assert!(lines.contains(&want), "{want:?} not in:\n{resolv}");
    }
    assert_eq!(
        out(&mut env.c, &ctr, "hostname").await.trim(),
        "host-net-dns"
    );
    assert_eq!(
        out(&mut env.c, &ctr, "cat /etc/hostname").await.trim(),
        "host-net-dns"
    );
    let hosts = out(&mut env.c, &ctr, "cat /etc/hosts").await;
    assert!(hosts.contains("host-net-dns"), "{hosts}");

    remove_and_check(&mut env, &[(pod, ip)]).await;
}

#[tokio::test]
async fn host_network_pod_gets_no_cni_attachment() {
    let mut env = setup(&[BUSYBOX], |_, _| {}).await;
    // The test's bridge, made here (no pod ever ADDs): a host interface
    // for the pod to see. Deleted by the TestNet guard.
    let st = std::process::Command::new("ip")
        .args(["link", "add", "name", &env.net.bridge, "type", "bridge"])
        .status()
        .unwrap();
    assert!(st.success());

    let mut pc = env.pod_config("net-host");
    pod_namespaces(&mut pc).network = NamespaceMode::Node as i32;
    let pod = run_pod_with(&mut env.c, &pc).await;
    let mut cfg = sleeper("hostnet");
    set_network_mode(
        &mut cfg
            .linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap()
            .namespace_options,
        NamespaceMode::Node,
    );
    let ctr = running(&mut env.c, &pod, &pc, cfg).await;

    // No ADD: no pod IP, nothing allocated, nothing cached.
    let s = pod_status(&mut env.c, &pod).await;
    let netst = s.network.unwrap_or_default();
    assert_eq!(netst.ip, "", "{netst:?}");
    assert!(netst.additional_ips.is_empty(), "{netst:?}");
    assert!(
        !env.net.ipam_dir().exists(),
        "host-local ran for a host-network pod"
    );
    let mut leaks = env.leaks(std::slice::from_ref(&pod), &[]);
    // (The pod's IPC namespace is pinned: only a net pin would be wrong.)
    leaks.nsfs_mounts.retain(|m| m.ends_with("ns/net"));
    assert!(leaks.is_empty(), "{leaks:#?}");

    // The container is in the host's network namespace and sees its interfaces.
    let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    let ctr_ns = out(&mut env.c, &ctr, "readlink /proc/self/ns/net").await;
    assert_eq!(ctr_ns.trim(), host_ns.to_str().unwrap());
    let links = out(&mut env.c, &ctr, "ip -o link show").await;
    assert!(links.contains(&env.net.bridge), "{links}");
    let dev = out(&mut env.c, &ctr, "cat /proc/net/dev").await;
    assert!(dev.contains(&env.net.bridge), "{dev}");
    let sys = out(&mut env.c, &ctr, "ls /sys/class/net").await;
    assert!(sys.split_whitespace().any(|n| n == env.net.bridge), "{sys}");

    remove_and_check(&mut env, &[(pod, String::new())]).await;
}

#[tokio::test]
async fn thirty_pods_leave_nothing_behind() {
    const PODS: usize = 30;
    const BATCH: usize = 10;
    let mut env = setup(&[BUSYBOX], |_, _| {}).await;
    let configs: Vec<PodSandboxConfig> = (0..PODS)
        .map(|i| env.pod_config(&format!("net-many-{i}")))
        .collect();
    let prefix = env.net.prefix.clone();
    let mut pods: Vec<(String, String)> = vec![];
    for batch in configs.chunks(BATCH) {
        let mut set = tokio::task::JoinSet::new();
        for pc in batch {
            let mut c = env.c.clone();
            let pc = pc.clone();
            let prefix = prefix.clone();
            set.spawn(async move {
                let id = run_pod_with(&mut c, &pc).await;
                let script = format!("ip -4 addr show dev eth0 | grep -q 'inet {prefix}'");
                let ctr = create(&mut c, &id, &pc, ctr_config("short", BUSYBOX, &script))
                    .await
                    .unwrap();
                start(&mut c, &ctr).await;
                let s = wait_state(&mut c, &ctr, ContainerState::ContainerExited).await;
                assert_eq!(s.exit_code, 0, "{s:?}");
                let ip = pod_ip(&mut c, &id).await;
                (id, ip)
            });
        }
        while let Some(r) = set.join_next().await {
            pods.push(r.unwrap());
        }
    }

    // Every pod got its own address, and the snapshot sees them all.
    let mut ips: Vec<String> = pods.iter().map(|p| p.1.clone()).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), PODS, "{pods:?}");
    assert!(ips.iter().all(|ip| ip.starts_with(&prefix)), "{ips:?}");
    let ids: Vec<String> = pods.iter().map(|p| p.0.clone()).collect();
    let before = env.leaks(&ids, &ips);
    assert_eq!(before.veths.len(), PODS, "{before:#?}");
    assert_eq!(before.ip_files, ips);
    assert_eq!(before.cni_results.len(), PODS, "{before:#?}");
    assert!(before.nsfs_mounts.len() >= PODS, "{before:#?}");

    for batch in pods.chunks(BATCH) {
        let mut set = tokio::task::JoinSet::new();
        for (id, _) in batch {
            let mut c = env.c.clone();
            let id = id.clone();
            set.spawn(async move {
                stop_pod(&mut c, &id).await;
                remove_pod(&mut c, &id).await;
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    }
    assert_nothing_left(&mut env, &pods).await;
}

/// After a failed RunPodSandbox: nothing of the pod anywhere.
async fn assert_rolled_back(env: &mut NetEnv) {
    assert_nothing_left(env, &[]).await;
    // The bridge plugin did allocate (then release) an address.
    assert!(
        env.net.ipam_dir().join("last_reserved_ip.0").exists(),
        "bridge ADD never ran"
    );
}

#[tokio::test]
async fn failing_plugin_fails_the_pod_and_leaves_nothing() {
    let mut env = setup(&[], |config, net| {
        let bin = config.dir.path().join("cni-bin");
        write_plugin(
            &bin,
            "failplug",
            "cat >/dev/null\n\
             if [ \"$CNI_COMMAND\" = ADD ]; then\n  \
               echo '{\"cniVersion\":\"1.0.0\",\"code\":7,\"msg\":\"boom\"}'\n  \
               exit 1\n\
             fi\n\
             exit 0",
        );
        config.args = bin_dir_args(&bin);
        config.cni_conflist =
            Some(net.conflist_of(&[net.bridge_plugin(), json!({"type": "failplug"})]));
    })
    .await;
    let pc = env.pod_config("net-boom");
    for _ in 0..2 {
        // Twice: the first failure released the pod's name too.
        let e = env
            .c
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pc.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_err();
        assert!(
            e.message().contains("failplug") && e.message().contains("boom"),
            "{e:?}"
        );
        assert_ne!(e.code(), Code::Ok);
        assert_rolled_back(&mut env).await;
    }
}

#[tokio::test]
async fn hanging_plugin_times_out_and_leaves_nothing() {
    // A sleep no other process runs, to find leftovers by.
    let nap = format!("1000.{}{}", std::process::id(), free_port());
    let nap2 = nap.clone();
    let mut env = setup(&[], move |config, net| {
        let bin = config.dir.path().join("cni-bin");
        write_plugin(
            &bin,
            "hangplug",
            &format!(
                "cat >/dev/null\n\
                 if [ \"$CNI_COMMAND\" = ADD ]; then\n  sleep {nap2}\nfi\n\
                 exit 0"
            ),
        );
        config.args = bin_dir_args(&bin);
        config.config_toml = Some("[network]\nplugin_timeout_secs = 2\n".into());
        config.cni_conflist =
            Some(net.conflist_of(&[net.bridge_plugin(), json!({"type": "hangplug"})]));
    })
    .await;
    let pc = env.pod_config("net-hang");
    let t = Instant::now();
    let e = run_pod_err(&mut env.c, pc).await;
    let took = t.elapsed();
    println!("RunPodSandbox with a hanging plugin failed after {took:?}: {e:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(e.message().contains("hangplug"), "{e:?}");
    assert_rolled_back(&mut env).await;

    // The plugin and what it started were killed.
    let script = env
        .d
        .config
        .dir
        .path()
        .join("cni-bin/hangplug")
        .display()
        .to_string();
    let deadline = Instant::now() + WAIT;
    loop {
        let mut left = processes_running(&nap);
        left.extend(processes_running(&script));
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "plugin processes left: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// (pid, cmdline) of the live processes whose command line contains `needle`.
fn processes_running(needle: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            (pid != me && cmd.contains(needle)).then_some((pid, cmd))
        })
        .collect()
}

#[tokio::test]
async fn networked_pod_survives_a_daemon_restart() {
    let mut env = setup(&[BUSYBOX], |_, _| {}).await;
    let hp = free_port();
    let mut pc = env.pod_config("net-restart");
    pc.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 8080,
        host_port: hp as i32,
        host_ip: "127.0.0.1".into(),
    }];
    let pod = run_pod_with(&mut env.c, &pc).await;
    let ip = pod_ip(&mut env.c, &pod).await;
    assert!(ip.starts_with(&env.net.prefix), "{ip}");
    running(&mut env.c, &pod, &pc, httpd("web", "still here")).await;
    assert_eq!(wait_http(&format!("{ip}:8080")).await, "still here\n");

    env.d.kill9().await.unwrap();
    env.d.restart().await.unwrap();
    env.c = env.d.client().await.unwrap();

    // Same IP, same attachment (the startup GC kept it), still answering.
    let s = pod_status(&mut env.c, &pod).await;
    assert_eq!(s.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(s.network.unwrap_or_default().ip, ip);
    assert_eq!(env.net.allocated_ips(), vec![ip.clone()]);
    let leaks = env.leaks(std::slice::from_ref(&pod), std::slice::from_ref(&ip));
    assert_eq!(leaks.cni_results.len(), 1, "{leaks:#?}");
    assert_eq!(wait_http(&format!("{ip}:8080")).await, "still here\n");
    assert_eq!(wait_http(&format!("127.0.0.1:{hp}")).await, "still here\n");

    // The DEL of the restarted daemon (from the cached ADD) releases
    // the address at stop, and the port rules with it.
    stop_pod(&mut env.c, &pod).await;
    assert_eq!(env.net.allocated_ips(), Vec::<String>::new());
    assert!(
        !iptables_save().lines().any(|l| names_port(l, hp)),
        "host port {hp} still mapped"
    );
    remove_pod(&mut env.c, &pod).await;
    assert_nothing_left(&mut env, &[(pod, ip)]).await;
}

#[tokio::test]
async fn failed_del_at_stop_is_retried_at_remove() {
    let mut marker = std::path::PathBuf::new();
    let mut env = setup(&[BUSYBOX], |config, net| {
        let bin = config.dir.path().join("cni-bin");
        marker = config.dir.path().join("del-blocked");
        // A chained plugin that passes ADD's result on (portmap without
        // mappings does that) and fails DEL while the marker exists.
        write_plugin(
            &bin,
            "delfail",
            &format!(
                "if [ \"$CNI_COMMAND\" = DEL ] && [ -e {m} ]; then\n  \
                   cat >/dev/null\n  \
                   echo '{{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"del blocked\"}}'\n  \
                   exit 1\n\
                 fi\n\
                 exec /usr/lib/cni/portmap",
                m = marker.display()
            ),
        );
        config.args = bin_dir_args(&bin);
        config.cni_conflist = Some(net.conflist_of(&[
            net.bridge_plugin(),
            TestNet::portmap_plugin(),
            json!({"type": "delfail"}),
        ]));
    })
    .await;
    let pc = env.pod_config("net-delfail");
    let pod = run_pod_with(&mut env.c, &pc).await;
    let ip = pod_ip(&mut env.c, &pod).await;
    assert!(ip.starts_with(&env.net.prefix), "{ip}");
    running(&mut env.c, &pod, &pc, sleeper("c")).await;

    std::fs::write(&marker, "").unwrap();
    let e = env
        .c
        .runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap_err();
    assert!(
        e.message().contains("delfail") && e.message().contains("del blocked"),
        "{e:?}"
    );
    // The address is still held: the DEL never reached the bridge.
    assert_eq!(env.net.allocated_ips(), vec![ip.clone()]);

    // Once DEL works again, RemovePodSandbox finishes the job.
    std::fs::remove_file(&marker).unwrap();
    remove_pod(&mut env.c, &pod).await;
    assert_nothing_left(&mut env, &[(pod, ip)]).await;
}
