//! Pod networking tests' support: a CNI network of the test's own
//! ([`TestNet`]: a bridge and a /24 no other test uses, host-local's store
//! inside the test's temp dir, portmap), the bridge and its iptables rules
//! removed when the test ends however it ends, and a snapshot of what pods
//! may leak on the host ([`Leaks`]).
//!
//! The network never masquerades (`ipMasq: false`): a test only talks to
//! loopback and pod IPs.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use berth_api::v1::*;
use nix::fcntl::{Flock, FlockArg};
use serde_json::{Value, json};

use crate::cleanup::Guard;
use crate::client::CriClient;
use crate::daemon::{Berthd, BerthdConfig};
use crate::registry::Registry;

static COUNTER: AtomicU32 = AtomicU32::new(0);
/// Third octets of 10.87.x.0/24 taken by this process.
static TAKEN: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// One test's CNI network. Dropping it deletes the bridge, berthd's
/// FORWARD rules for it, and every iptables rule of the `nat` and `filter`
/// tables that names its subnet (and the per-pod portmap chains holding
/// them).
pub struct TestNet {
    /// The CNI network name (unique: `berth-e2e-<pid>-<n>`).
    pub name: String,
    /// The bridge (`bt<pid>x<n>`, at most 15 bytes).
    pub bridge: String,
    /// `10.87.<x>.0/24`.
    pub subnet: String,
    /// `10.87.<x>.`: every pod IP starts with it.
    pub prefix: String,
    /// host-local's store (`dataDir`); its files are under `<data_dir>/<name>`.
    pub data_dir: PathBuf,
    octet: u8,
    // Held for the life of the test: no other test process takes the subnet.
    _lock: Flock<File>,
}

impl TestNet {
    /// A fresh network whose host-local store lives under `dir` (the
    /// test's temp dir).
    pub fn new(dir: &Path) -> TestNet {
        let pid = std::process::id();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let bridge = format!("bt{pid}x{n}");
        assert!(bridge.len() <= 15, "{bridge}");
        // Leftover of a dead process that had the same pid.
        delete_link(&bridge);
        let (octet, lock) = take_subnet(pid, n);
        TestNet {
            name: format!("berth-e2e-{pid}-{n}"),
            bridge,
            subnet: format!("10.87.{octet}.0/24"),
            prefix: format!("10.87.{octet}."),
            data_dir: dir.join("cni-ipam"),
            octet,
            _lock: lock,
        }
    }

    /// The bridge plugin with host-local IPAM (as JSON).
    pub fn bridge_plugin(&self) -> Value {
        json!({
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": self.subnet }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
                "dataDir": self.data_dir,
            }
        })
    }

    /// The portmap plugin (host ports, SNAT for 127.0.0.1).
    pub fn portmap_plugin() -> Value {
        json!({
            "type": "portmap",
            "capabilities": { "portMappings": true },
            "snat": true
        })
    }

    /// A conflist of these plugins (cniVersion 1.0.0).
    pub fn conflist_of(&self, plugins: &[Value]) -> String {
        serde_json::to_string_pretty(&json!({
            "cniVersion": "1.0.0",
            "name": self.name,
            "plugins": plugins,
        }))
        .expect("JSON")
    }

    /// bridge (host-local) + portmap.
    pub fn conflist(&self) -> String {
        self.conflist_of(&[self.bridge_plugin(), Self::portmap_plugin()])
    }

    /// host-local's dir of this network.
    pub fn ipam_dir(&self) -> PathBuf {
        self.data_dir.join(&self.name)
    }

    /// Addresses host-local holds (its files but `lock` and `last_reserved_ip.*`).
    pub fn allocated_ips(&self) -> Vec<String> {
        let mut ips: Vec<String> = std::fs::read_dir(self.ipam_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
            .collect();
        ips.sort();
        ips
    }

    /// The ports attached to the bridge (the host ends of the pods' veths).
    pub fn veths(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(format!("/sys/class/net/{}/brif", self.bridge))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        v.sort();
        v
    }

    /// What pods of this network may leave behind, for the daemon with
    /// state dir `state`, looking for `pod_ids` and `pod_ips` in iptables
    /// besides the subnet.
    pub fn leaks(&self, state: &Path, pod_ids: &[String], pod_ips: &[String]) -> Leaks {
        let mut needles: Vec<String> = vec![self.prefix.clone()];
        needles.extend(pod_ids.iter().filter(|s| !s.is_empty()).cloned());
        needles.extend(
            pod_ips
                .iter()
                .filter(|s| !s.is_empty())
                .map(|ip| format!("{ip}/"))
                .chain(
                    pod_ips
                        .iter()
                        .filter(|s| !s.is_empty())
                        .map(|ip| format!("{ip}:")),
                ),
        );
        let iptables = iptables_save()
            .lines()
            .filter(|l| l.starts_with("-A CNI-") || l.contains("-j CNI-"))
            .filter(|l| needles.iter().any(|n| l.contains(n.as_str())))
            .map(str::to_string)
            .collect();
        let mut results: Vec<String> = std::fs::read_dir(state.join("cni/results"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        results.sort();
        Leaks {
            veths: self.veths(),
            ip_files: self.allocated_ips(),
            nsfs_mounts: nsfs_mounts_under(state),
            iptables,
            cni_results: results,
        }
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let cleaned = remove_iptables_rules(&self.prefix);
        if !cleaned.is_empty() {
            eprintln!(
                "{}: removed {} leftover iptables rule(s)/chain(s) of {}",
                self.bridge,
                cleaned.len(),
                self.subnet
            );
        }
        remove_forward_rules(&self.bridge);
        delete_link(&self.bridge);
        TAKEN
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|o| *o != self.octet);
    }
}

/// What the pods of a network left on the host (all empty: nothing).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Leaks {
    /// Ports still on the test's bridge.
    pub veths: Vec<String>,
    /// Addresses host-local still holds.
    pub ip_files: Vec<String>,
    /// Pinned network (or other) namespaces under the state dir.
    pub nsfs_mounts: Vec<PathBuf>,
    /// iptables-save lines of CNI chains naming the subnet, a pod IP or a pod ID.
    pub iptables: Vec<String>,
    /// Cached CNI results under `<state>/cni/results`.
    pub cni_results: Vec<String>,
}

impl Leaks {
    pub fn is_empty(&self) -> bool {
        *self == Leaks::default()
    }
}

/// Picks x for 10.87.x.0/24: starting from the pid and counter, the first
/// one no test process holds (a lock file per subnet, flock'ed: released
/// when the process dies) and no host interface routes.
fn take_subnet(pid: u32, n: u32) -> (u8, Flock<File>) {
    let dir = std::env::temp_dir().join("berth-e2e-subnets");
    std::fs::create_dir_all(&dir).expect("lock dir");
    let start = (pid.wrapping_mul(31).wrapping_add(n.wrapping_mul(7))) % 256;
    for i in 0..256 {
        let octet = ((start + i) % 256) as u8;
        {
            let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
            if taken.contains(&octet) {
                continue;
            }
            let path = dir.join(format!("10.87.{octet}.lock"));
            let Ok(file) = File::create(&path) else {
                continue;
            };
            let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
                continue;
            };
            if routed(&format!("10.87.{octet}.0/24")) {
                continue;
            }
            taken.push(octet);
            return (octet, lock);
        }
    }
    panic!("no free 10.87.x.0/24 for a test network");
}

/// Whether the host has a route into `subnet` (some interface uses it).
fn routed(subnet: &str) -> bool {
    Command::new("ip")
        .args(["-4", "route", "show", "root", subnet])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false)
}

/// berthd's FORWARD rules for `bridge` (written before its first pod).
pub fn remove_forward_rules(bridge: &str) {
    if let Err(e) = berth_net::forward::remove(bridge) {
        eprintln!("{bridge}: removing berthd's FORWARD rules: {e}");
    }
}

fn delete_link(name: &str) {
    if Path::new("/sys/class/net").join(name).exists() {
        let _ = Command::new("ip")
            .args(["link", "del", name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Every table's rules, as `iptables-save` prints them.
pub fn iptables_save() -> String {
    Command::new("iptables-save")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// nsfs mounts at or below `dir`.
pub fn nsfs_mounts_under(dir: &Path) -> Vec<PathBuf> {
    let prefix = dir.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split(" - ").nth(1).and_then(|t| t.split(' ').next()) == Some("nsfs"))
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&*prefix))
        .map(PathBuf::from)
        .collect()
}

/// Deletes, in the `nat` and `filter` tables, the CNI chains with a rule
/// naming `prefix` (plus the rules jumping to them) and any other CNI rule
/// naming it. Returns what it removed.
fn remove_iptables_rules(prefix: &str) -> Vec<String> {
    let mut removed = vec![];
    for table in ["nat", "filter"] {
        let out = Command::new("iptables-save")
            .args(["-t", table])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let rule_chain = |l: &str| l.strip_prefix("-A ")?.split(' ').next().map(str::to_string);
        // Per-pod chains (CNI-DN-…) holding a rule with the subnet go whole.
        let mut chains: Vec<String> = out
            .lines()
            .filter(|l| l.contains(prefix))
            .filter_map(rule_chain)
            .filter(|c| c.starts_with("CNI-") && !c.starts_with("CNI-HOSTPORT-"))
            .collect();
        chains.sort();
        chains.dedup();
        let mut script = format!("*{table}\n");
        for l in out.lines() {
            let Some(chain) = rule_chain(l) else { continue };
            if chains.contains(&chain) {
                // Flushed below.
                continue;
            }
            let jumps = chains
                .iter()
                .any(|c| l.ends_with(&format!("-j {c}")) || l.contains(&format!("-j {c} ")));
            if jumps || (chain.starts_with("CNI-") && l.contains(prefix)) {
                script.push_str(&format!("-D {}\n", &l[3..]));
                removed.push(l.to_string());
            }
        }
        for c in &chains {
            script.push_str(&format!("-F {c}\n-X {c}\n"));
            removed.push(format!("chain {c}"));
        }
        script.push_str("COMMIT\n");
        if removed.is_empty() {
            continue;
        }
        let child = Command::new("iptables-restore")
            .args(["-w", "--noflush"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn();
        if let Ok(mut child) = child {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(script.as_bytes());
            }
            let _ = child.wait();
        }
    }
    removed
}

/// A free TCP port on 127.0.0.1 (free when asked: bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A fake CNI plugin: `dir/<name>`, a shell script running `script` with
/// `$CNI_COMMAND` set (stdin is the network config). It answers VERSION
/// itself (1.0.0 and older) unless `script` does.
pub fn write_plugin(dir: &Path, name: &str, script: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).expect("plugin dir");
    let path = dir.join(name);
    let text = format!(
        "#!/bin/sh\n\
         if [ \"$CNI_COMMAND\" = VERSION ]; then\n  \
           echo '{{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\"]}}'\n  \
           exit 0\n\
         fi\n\
         {script}\n"
    );
    // Written elsewhere and renamed: never exec'd while open for writing.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("plugin script");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::rename(&tmp, &path).expect("rename");
    path
}

/// A daemon with a test network, its client, and the registry it pulls from.
/// Fields drop in order: the daemon and its pods first, the network last.
pub struct NetEnv {
    pub reg: Option<Registry>,
    pub d: Berthd,
    pub c: CriClient,
    pub _g: Guard,
    pub net: TestNet,
}

/// Starts a daemon whose conf dir holds `net.conflist()` unless
/// `customize` changes the config; with `images`, a registry with the test
/// images too, and those images pulled.
pub async fn setup(images: &[&str], customize: impl FnOnce(&mut BerthdConfig, &TestNet)) -> NetEnv {
    let mut config = BerthdConfig::new().unwrap();
    let net = TestNet::new(config.dir.path());
    config.cni_conflist = Some(net.conflist());
    let reg = (!images.is_empty()).then(|| crate::pods::test_registry(&mut config));
    customize(&mut config, &net);
    let g = Guard(config.dir.path().to_path_buf());
    let (d, c) = crate::pods::start_and_pull(config, images).await;
    NetEnv {
        reg,
        d,
        c,
        _g: g,
        net,
    }
}

impl NetEnv {
    /// A pod config on the pod network (as [`crate::pods::pod_config`]).
    pub fn pod_config(&self, name: &str) -> PodSandboxConfig {
        let mut pc = crate::pods::pod_config_for(&self.d, name);
        pc.labels = HashMap::from([("test".into(), "network".into())]);
        pc
    }

    /// What the pods left behind (see [`TestNet::leaks`]).
    pub fn leaks(&self, pod_ids: &[String], pod_ips: &[String]) -> Leaks {
        self.net.leaks(&self.d.config.state, pod_ids, pod_ips)
    }
}
