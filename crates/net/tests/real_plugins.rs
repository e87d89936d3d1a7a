//! The CNI caller with the real plugins (Debian's containernetworking-plugins
//! in /usr/lib/cni), as root, on the shipped hack/cni/10-berth.conflist with
//! a bridge name, subnet, network name and host-local dataDir of the test's
//! own (so it never touches the system's IPAM store or berth0).
//!
//! Traffic only goes to pod IPs of namespaces the test created, and to
//! 127.0.0.1.
//!
//! `cargo test -p berth-net --test real_plugins -- --ignored --nocapture bench`
//! measures ADD and DEL of the default conflist.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use berth_net::{
    AddResult, Attachment, CapabilityArgs, Cni, CniOptions, PodRef, PortMapping, Protocol,
};
use serde_json::{Value, json};

const PLUGIN_DIR: &str = "/usr/lib/cni";

fn usable() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: real CNI plugins need root");
        return false;
    }
    for p in ["bridge", "host-local", "portmap"] {
        assert!(
            Path::new(PLUGIN_DIR).join(p).exists(),
            "{PLUGIN_DIR}/{p} is missing: install Debian's containernetworking-plugins (hack/install-deps.sh)"
        );
    }
    for tool in ["unshare", "ip", "iptables-save"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .unwrap()
                .status
                .success(),
            "{tool} is missing (hack/install-deps.sh installs it)"
        );
    }
    true
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A short unique tag: pid and a per-process counter.
fn tag() -> String {
    format!(
        "{:x}{}",
        std::process::id() & 0xfffff,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A network namespace pinned by a bind mount on a file of the test's
/// temp dir; unmounted and removed on drop.
struct Netns {
    path: PathBuf,
}

impl Netns {
    fn new(path: PathBuf) -> Self {
        std::fs::File::create(&path).unwrap();
        let ns = Self { path };
        run(
            "unshare",
            &[&format!("--net={}", ns.path.display()), "true"],
        );
        ns
    }

    /// Runs `f` on a thread of its own that entered this netns.
    fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = self.path.clone();
        std::thread::spawn(move || {
            let fd = std::fs::File::open(&path).unwrap();
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A test network: the shipped conflist with our own names. On drop (also
/// when the test failed) it DELs what it added and removes its bridge.
struct TestNet {
    name: String,
    bridge: String,
    subnet_prefix: String,
    opts: CniOptions,
    added: std::sync::Mutex<Vec<String>>,
    // Dropped last: netns files and dirs live in it.
    dir: tempfile::TempDir,
}

fn free_subnet_octet(seed: u32) -> u8 {
    let routes = run("ip", &["-4", "route", "show", "table", "all"]);
    let addrs = run("ip", &["-4", "-o", "addr", "show"]);
    for i in 0..256u32 {
        let x = ((seed.wrapping_mul(2654435761) >> 8).wrapping_add(i * 37) % 256) as u8;
        let p = format!("10.250.{x}.");
        if !routes.contains(&p) && !addrs.contains(&p) {
            return x;
        }
    }
    panic!("no free 10.250.x.0/24 subnet");
}

impl TestNet {
    fn new() -> Self {
        let t = tag();
        let dir = tempfile::tempdir().unwrap();
        let name = format!("berth-test-{t}");
        let bridge = format!("bt{t}");
        assert!(bridge.len() <= 15, "{bridge}");
        let seed = std::process::id()
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
        let x = free_subnet_octet(seed);
        let subnet_prefix = format!("10.250.{x}.");

        let shipped =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hack/cni/10-berth.conflist");
        let mut conf: Value = serde_json::from_slice(&std::fs::read(&shipped).unwrap()).unwrap();
        conf["name"] = name.clone().into();
        let bridge_conf = &mut conf["plugins"][0];
        assert_eq!(bridge_conf["type"], "bridge");
        bridge_conf["bridge"] = bridge.clone().into();
        bridge_conf["ipam"]["ranges"] = json!([[{"subnet": format!("10.250.{x}.0/24")}]]);
        bridge_conf["ipam"]["dataDir"] = dir.path().join("ipam").display().to_string().into();
        std::fs::create_dir(dir.path().join("conf")).unwrap();
        std::fs::write(
            dir.path().join("conf/10-berth.conflist"),
            serde_json::to_vec_pretty(&conf).unwrap(),
        )
        .unwrap();
        let opts = CniOptions {
            conf_dir: dir.path().join("conf"),
            bin_dirs: vec![PLUGIN_DIR.into()],
            cache_dir: dir.path().join("cache"),
            plugin_timeout: Duration::from_secs(20),
        };
        Self {
            name,
            bridge,
            subnet_prefix,
            opts,
            added: Default::default(),
            dir,
        }
    }

    fn netns(&self, name: &str) -> Netns {
        Netns::new(self.dir.path().join(format!("netns-{name}")))
    }

    fn cni(&self) -> Cni {
        Cni::new(self.opts.clone())
    }

    async fn add(&self, cni: &Cni, att: &Attachment) -> AddResult {
        self.added.lock().unwrap().push(att.container_id.clone());
        cni.add(att).await.unwrap()
    }

    /// IP files host-local still holds for this network.
    fn allocated_ips(&self) -> Vec<String> {
        match std::fs::read_dir(self.dir.path().join("ipam").join(&self.name)) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<IpAddr>().is_ok())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn bridge_ports(&self) -> Vec<String> {
        match std::fs::read_dir(format!("/sys/class/net/{}/brif", self.bridge)) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let ids = std::mem::take(&mut *self.added.lock().unwrap());
        let opts = self.opts.clone();
        // DEL whatever is left (a failed test), on a runtime of its own.
        let _ = std::thread::spawn(move || {
            block_on(async {
                let cni = Cni::new(opts);
                for id in ids {
                    if let Err(e) = cni.del(&Attachment::new(id, "")).await {
                        eprintln!("cleanup DEL: {e}");
                    }
                }
            })
        })
        .join();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

/// Runs `f` to its end on a runtime of its own, on this thread (so the
/// plugins it spawns inherit this thread's network namespace).
fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn iptables_nat() -> String {
    run("iptables-save", &["-t", "nat"])
}

/// The per-pod chains of `id`: portmap jumps to them from
/// `CNI-HOSTPORT-DNAT` with a rule commented with the container ID.
fn chains_of(nat: &str, id: &str) -> BTreeSet<String> {
    let comment = format!("id: \\\"{id}\\\"");
    nat.lines()
        .filter(|l| l.contains(&comment))
        .filter_map(|l| l.split_once(" -j "))
        .filter_map(|(_, target)| target.split_whitespace().next())
        .filter(|c| c.starts_with("CNI-DN-"))
        .map(str::to_owned)
        .collect()
}

fn dnat_chains(nat: &str) -> BTreeSet<String> {
    nat.lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| c.starts_with("CNI-DN-"))
        .map(str::to_owned)
        .collect()
}

/// A port below the ephemeral range that nothing listens on now (so no
/// other test's `bind(0)` server gets DNATed to our pod).
fn free_host_port() -> u16 {
    let base = 20000 + (std::process::id() % 5000) as u16;
    for i in 0..2000u16 {
        let p = base + (i * 7) % 10000;
        if TcpListener::bind(("127.0.0.1", p)).is_ok() && TcpListener::bind(("0.0.0.0", p)).is_ok()
        {
            return p;
        }
    }
    panic!("no free host port");
}

fn pod(name: &str) -> PodRef {
    PodRef {
        namespace: "berth-test".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
    }
}

/// Reads what a server sends first, with a deadline.
fn greet(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    Ok(buf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pods_reach_each_other_and_a_host_port_then_nothing_is_left() {
    if !usable() {
        return;
    }
    let net = TestNet::new();
    let cni = net.cni();
    let ready = cni.ready();
    assert!(ready.ready, "{ready:?}");
    let ns_a = net.netns("a");
    let ns_b = net.netns("b");
    let id_a = format!("sba{}", tag());
    let id_b = format!("sbb{}", tag());
    let host_port = free_host_port();

    let mut att_a = Attachment::for_pod(&id_a, &ns_a.path, &pod("a"));
    att_a.capabilities = CapabilityArgs {
        port_mappings: vec![PortMapping {
            host_port: i32::from(host_port),
            container_port: 8080,
            protocol: Protocol::Tcp,
            host_ip: String::new(),
        }],
        ..Default::default()
    };
    let att_b = Attachment::for_pod(&id_b, &ns_b.path, &pod("b"));

    let chains_before = dnat_chains(&iptables_nat());
    let start = Instant::now();
    let res_a = net.add(&cni, &att_a).await;
    let add_a = start.elapsed();
    let res_b = net.add(&cni, &att_b).await;
    eprintln!(
        "ADD a (with a port mapping): {add_a:?}; versions: {}",
        res_a.cni_version
    );

    // Each got one IPv4 in the subnet, on eth0 in its netns.
    let ip_a = res_a.pod_ips();
    let ip_b = res_b.pod_ips();
    assert_eq!(ip_a.len(), 1, "{res_a:?}");
    assert_eq!(ip_b.len(), 1, "{res_b:?}");
    assert_ne!(ip_a, ip_b);
    for ip in [ip_a[0], ip_b[0]] {
        assert!(ip.to_string().starts_with(&net.subnet_prefix), "{ip}");
    }
    let (_, eth0) = res_a.result.sandbox_interface("eth0").unwrap();
    assert_eq!(eth0.sandbox.as_deref(), Some(ns_a.path.to_str().unwrap()));
    let vethes: Vec<String> = [&res_a, &res_b]
        .iter()
        .flat_map(|r| r.result.interfaces.iter())
        .filter(|i| i.sandbox.is_none() && i.name != net.bridge)
        .map(|i| i.name.clone())
        .collect();
    assert_eq!(vethes.len(), 2, "{vethes:?}");
    let mut ports = net.bridge_ports();
    ports.sort();
    let mut want = vethes.clone();
    want.sort();
    assert_eq!(ports, want);
    assert_eq!(net.allocated_ips().len(), 2);
    let nat = iptables_nat();
    assert!(
        nat.contains(&format!("id: \\\"{id_a}\\\"")),
        "portmap rules for {id_a}:\n{nat}"
    );
    // portmap's per-pod chain: the one whose rules carry our ID (other
    // tests may add chains of their own meanwhile).
    let our_chains = chains_of(&nat, &id_a);
    assert_eq!(our_chains.len(), 1, "{our_chains:?} in\n{nat}");
    assert!(!chains_before.contains(our_chains.iter().next().unwrap()));

    // CHECK with the real plugins (1.0.0). portmap before plugins 1.2 (Debian
    // 12 ships 1.1.1) also checks an ip6tables chain it never created for an
    // IPv4-only pod with port mappings (fixed upstream by "Only check ipv6
    // when an IPv6 is configured"): accept that one failure.
    cni.check(&att_b).await.unwrap();
    if let Err(e) = cni.check(&att_a).await {
        let msg = e.to_string();
        assert!(
            msg.starts_with("CNI plugin portmap CHECK failed") && msg.contains("ipv6 dnat"),
            "{msg}"
        );
    }

    // A server in pod a, on a thread inside its netns.
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let server = {
        let stop = stop.clone();
        ns_a.spawn(move || {
            let l = TcpListener::bind("0.0.0.0:8080").unwrap();
            l.set_nonblocking(true).unwrap();
            tx.send(()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut served = 0;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.write_all(b"hello from pod a\n");
                        served += 1;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            served
        })
    };
    rx.recv().unwrap();
    let addr_a = SocketAddr::new(ip_a[0], 8080);

    // Pod b -> pod a, by pod IP.
    let from_b = ns_b.spawn(move || greet(addr_a)).join().unwrap();
    assert_eq!(from_b.unwrap(), "hello from pod a\n");
    // Host -> pod a through the hostPort on loopback (portmap DNAT, its
    // route_localnet on the bridge, and SNAT).
    let via_port =
        tokio::task::spawn_blocking(move || greet(SocketAddr::from(([127, 0, 0, 1], host_port))))
            .await
            .unwrap();
    assert_eq!(via_port.unwrap(), "hello from pod a\n");
    stop.store(true, Ordering::Relaxed);
    assert_eq!(server.join().unwrap(), 2);

    // DEL both, by sandbox ID only (what the cache recorded is used).
    let start = Instant::now();
    cni.del(&Attachment::new(&id_a, "")).await.unwrap();
    eprintln!("DEL a (with a port mapping): {:?}", start.elapsed());
    cni.del(&Attachment::new(&id_b, &ns_b.path)).await.unwrap();
    // Again: nothing cached, the plugins accept a DEL of nothing.
    cni.del(&Attachment::new(&id_a, &ns_a.path)).await.unwrap();
    net.added.lock().unwrap().clear();

    for v in &vethes {
        assert!(
            !Path::new("/sys/class/net").join(v).exists(),
            "veth {v} left"
        );
    }
    assert!(net.bridge_ports().is_empty());
    assert!(net.allocated_ips().is_empty(), "{:?}", net.allocated_ips());
    let nat = iptables_nat();
    assert!(!nat.contains(&id_a), "portmap rules of {id_a} left:\n{nat}");
    let left: Vec<&String> = our_chains
        .iter()
        .filter(|c| nat.contains(c.as_str()))
        .collect();
    assert!(left.is_empty(), "chains left: {left:?}");
    assert!(cni.cached_attachments().await.unwrap().is_empty());

    // The test removes its bridge (the bridge plugin never does).
    run("ip", &["link", "del", &net.bridge]);
    assert!(!Path::new("/sys/class/net").join(&net.bridge).exists());
}

#[tokio::test]
async fn a_failing_real_plugin_is_reported_and_undone() {
    if !usable() {
        return;
    }
    let net = TestNet::new();
    let cni = net.cni();
    let id = format!("sbf{}", tag());
    // A netns path that does not exist: bridge fails after host-local
    // allocated an address; the undoing DEL must free it.
    let att = Attachment::new(&id, net.dir.path().join("no-such-netns"));
    net.added.lock().unwrap().push(id.clone());
    let err = cni.add(&att).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "CNI plugin bridge ADD failed (network {}",
            net.name
        )),
        "{msg}"
    );
    assert!(msg.contains("no-such-netns"), "{msg}");
    assert_eq!(err.plugin(), Some("bridge"));
    assert!(net.allocated_ips().is_empty(), "{:?}", net.allocated_ips());
    assert!(cni.cached_attachments().await.unwrap().is_empty());
    net.added.lock().unwrap().clear();
}

/// Runs `args` with its network namespace set to `ns`'s.
fn run_in(ns: &Netns, args: &[&str]) -> String {
    let net = format!("--net={}", ns.path.display());
    let mut all = vec![net.as_str()];
    all.extend_from_slice(args);
    run("nsenter", &all)
}

/// A node as a Docker engine leaves it: FORWARD policy DROP and bridged
/// traffic passed to iptables (br_netfilter). The node is a network
/// namespace of the test's own (its policy and its bridge die with it), so
/// the host's firewall is never touched. Pod-to-pod traffic on the bridge
/// crosses FORWARD there: berthd's bridge rules (`berth_net::forward`,
/// written before the first ADD) must let it through, once per node (a
/// second write changes nothing), and the network must leave no rule of a
/// pod behind after DEL.
#[test]
fn pods_reach_each_other_on_a_node_whose_forward_policy_is_drop() {
    if !usable() {
        return;
    }
    let net = TestNet::new();
    let node = net.netns("node");
    run_in(&node, &["ip", "link", "set", "lo", "up"]);
    run_in(&node, &["iptables", "-P", "FORWARD", "DROP"]);
    // Per network namespace since Linux 5.3; set here as Docker sets it on the host.
    run_in(
        &node,
        &["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"],
    );
    assert!(run_in(&node, &["iptables", "-S", "FORWARD"]).starts_with("-P FORWARD DROP"));

    let ns_a = net.netns("a");
    let ns_b = net.netns("b");
    let (id_a, id_b) = (format!("sda{}", tag()), format!("sdb{}", tag()));
    let att_a = Attachment::for_pod(&id_a, &ns_a.path, &pod("a"));
    let att_b = Attachment::for_pod(&id_b, &ns_b.path, &pod("b"));
    // The plugins run in the namespace of the thread that spawns them: the
    // CNI calls go on a runtime of their own, on a thread inside the node.
    let (opts, a, b) = (net.opts.clone(), att_a.clone(), att_b.clone());
    let bridge = net.bridge.clone();
    let (res_a, res_b) = node
        .spawn(move || {
            block_on(async {
                for _ in 0..2 {
                    let ipv6 = berth_net::forward::ensure(&bridge).await.unwrap();
                    assert!(ipv6.is_none(), "{ipv6:?}");
                }
                let cni = Cni::new(opts);
                (cni.add(&a).await.unwrap(), cni.add(&b).await.unwrap())
            })
        })
        .join()
        .unwrap();
    net.added
        .lock()
        .unwrap()
        .extend([id_a.clone(), id_b.clone()]);
    let (ip_a, ip_b) = (res_a.pod_ips()[0], res_b.pod_ips()[0]);
    let server = ns_a.spawn(|| {
        let l = TcpListener::bind("0.0.0.0:8080").unwrap();
        let (mut s, _) = l.accept().unwrap();
        s.write_all(b"hello across DROP\n").unwrap();
    });
    let addr_a = SocketAddr::new(ip_a, 8080);
    let got = ns_b
        .spawn(move || {
            // The listener may not be bound yet: try for a few seconds.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match greet(addr_a) {
                    Err(e)
                        if e.kind() == std::io::ErrorKind::ConnectionRefused
                            && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    got => return got,
                }
            }
        })
        .join()
        .unwrap();
    assert_eq!(
        got.unwrap_or_else(|e| panic!("pod b -> pod a ({addr_a}) under FORWARD DROP: {e}")),
        "hello across DROP\n"
    );
    server.join().unwrap();
    for save in ["iptables-save", "ip6tables-save"] {
        let filter = run_in(&node, &[save, "-t", "filter"]);
        let lines = |prefix: &str| -> Vec<&str> {
            filter.lines().filter(|l| l.starts_with(prefix)).collect()
        };
        let chain = berth_net::forward::chain(&net.bridge);
        assert_eq!(
            lines("-A FORWARD"),
            [format!(
                "-A FORWARD -m comment --comment \"berth: pods on a CNI bridge\" -j {chain}"
            )],
            "{save}:\n{filter}"
        );
        let rules = lines(&format!("-A {chain} "));
        assert_eq!(rules.len(), 5, "{save}:\n{filter}");
        let br = &net.bridge;
        assert_eq!(
            rules[0],
            format!("-A {chain} -i {br} -j BERTH-FORWARD-ADMIN")
        );
        assert_eq!(
            rules[1],
            format!("-A {chain} -o {br} -j BERTH-FORWARD-ADMIN")
        );
        assert!(rules[2].contains("INVALID -j RETURN"), "{save}:\n{filter}");
        assert!(
            rules[3].starts_with(&format!("-A {chain} -i {br} "))
                && rules[4].starts_with(&format!("-A {chain} -o {br} "))
                && rules[4].contains("--ctstate RELATED,ESTABLISHED,DNAT"),
            "{save}:\n{filter}"
        );
        assert!(filter.contains(":BERTH-FORWARD-ADMIN"), "{save}:\n{filter}");
    }
    // The admin's chain is consulted first: a DROP there stops pod traffic
    // (nothing listens on a's port now: refused without the rule, no answer
    // with it).
    let to_a = format!("{ip_a}/32");
    run_in(
        &node,
        &[
            "iptables",
            "-A",
            "BERTH-FORWARD-ADMIN",
            "-d",
            &to_a,
            "-j",
            "DROP",
        ],
    );
    // How b's connect to a's port fails.
    let probe = || {
        ns_b.spawn(move || TcpStream::connect_timeout(&addr_a, Duration::from_secs(1)))
            .join()
            .unwrap()
            .unwrap_err()
            .kind()
    };
    assert_eq!(
        probe(),
        std::io::ErrorKind::TimedOut,
        "the admin's DROP was not applied"
    );
    run_in(&node, &["iptables", "-F", "BERTH-FORWARD-ADMIN"]);
    assert_eq!(probe(), std::io::ErrorKind::ConnectionRefused);

    let opts = net.opts.clone();
    node.spawn(move || {
        block_on(async {
            let cni = Cni::new(opts);
            cni.del(&Attachment::new(&id_a, "")).await.unwrap();
            cni.del(&Attachment::new(&id_b, "")).await.unwrap();
        })
    })
    .join()
    .unwrap();
    net.added.lock().unwrap().clear();
    let filter = run_in(&node, &["iptables-save", "-t", "filter"]);
    for ip in [ip_a, ip_b] {
        assert!(
            !filter.contains(&format!("{ip}/32")),
            "rules of {ip} left:\n{filter}"
        );
    }
    assert!(net.allocated_ips().is_empty(), "{:?}", net.allocated_ips());
    // The bridge's rules outlive its pods; removing them leaves FORWARD empty.
    let bridge = net.bridge.clone();
    let removed = node
        .spawn(move || berth_net::forward::remove(&bridge).unwrap())
        .join()
        .unwrap();
    assert!(removed);
    for save in ["iptables-save", "ip6tables-save"] {
        let filter = run_in(&node, &[save, "-t", "filter"]);
        assert!(!filter.contains("BERTH-FWD-"), "{save}:\n{filter}");
        assert!(!filter.contains("BERTH-FORWARD-ADMIN"), "{save}:\n{filter}");
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn p90(v: &mut [Duration]) -> Duration {
    v.sort();
    v[(v.len() * 9 / 10).min(v.len() - 1)]
}

/// ADD and DEL of the shipped conflist (bridge + host-local, portmap),
/// median of 20, without and with a port mapping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn bench_add_del_default_conflist() {
    if !usable() {
        return;
    }
    let net = TestNet::new();
    let cni = net.cni();
    // Warm-up: the first ADD also asks each plugin VERSION (cniVersions).
    let warm = net.netns("warm");
    let id = format!("sbw{}", tag());
    let t = Instant::now();
    net.add(&cni, &Attachment::new(&id, &warm.path)).await;
    eprintln!("first ADD (with VERSION probes): {:?}", t.elapsed());
    cni.del(&Attachment::new(&id, "")).await.unwrap();
    net.added.lock().unwrap().clear();

    for with_port in [false, true] {
        let mut adds = Vec::new();
        let mut dels = Vec::new();
        for i in 0..20 {
            let ns = net.netns(&format!("b{i}"));
            let id = format!("sbx{}", tag());
            let mut att = Attachment::for_pod(&id, &ns.path, &pod("bench"));
            if with_port {
                att.capabilities.port_mappings = vec![PortMapping {
                    host_port: i32::from(free_host_port()),
                    container_port: 80,
                    protocol: Protocol::Tcp,
                    host_ip: String::new(),
                }];
            }
            let t = Instant::now();
            net.add(&cni, &att).await;
            adds.push(t.elapsed());
            let t = Instant::now();
            cni.del(&Attachment::new(&id, "")).await.unwrap();
            dels.push(t.elapsed());
            net.added.lock().unwrap().clear();
        }
        println!(
            "default conflist, {}: ADD median {:.1} ms (p90 {:.1}), DEL median {:.1} ms (p90 {:.1}), n=20",
            if with_port {
                "one port mapping"
            } else {
                "no port mapping"
            },
            median(&mut adds).as_secs_f64() * 1e3,
            p90(&mut adds).as_secs_f64() * 1e3,
            median(&mut dels).as_secs_f64() * 1e3,
            p90(&mut dels).as_secs_f64() * 1e3,
        );
    }
    assert!(net.allocated_ips().is_empty());
}

/// Four bridges on one node (several runtimes, or test daemons), each
/// written and removed over and over at the same time. Removing a bridge's
/// chain deletes the admin's chain when nothing jumps to it, which can fall
/// between another writer's making that chain and its restore jumping to it
/// (a CI failure: "Chain 'BERTH-FORWARD-ADMIN' does not exist"; without the
/// retry this test failed at rounds 3 and 16). Every write must succeed.
#[test]
fn bridges_written_and_removed_at_once_never_miss_the_admin_chain() {
    if !usable() {
        return;
    }
    const ROUNDS: usize = 20;
    let net = TestNet::new();
    let node = net.netns("node");
    let writers: Vec<_> = ["bra", "brb", "brc", "brd"]
        .into_iter()
        .map(|name| {
            let bridge = format!("{name}{}", tag());
            node.spawn(move || {
                for round in 0..ROUNDS {
                    if let Err(e) = block_on(berth_net::forward::ensure(&bridge)) {
                        return Err(format!("{bridge}, round {round}: {e}"));
                    }
                    berth_net::forward::remove(&bridge).unwrap();
                }
                Ok(())
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap().unwrap();
    }
    for save in ["iptables-save", "ip6tables-save"] {
        let filter = run_in(&node, &[save, "-t", "filter"]);
        assert!(!filter.contains("BERTH-"), "{save}:\n{filter}");
    }
}
