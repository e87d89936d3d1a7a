//! `--serve-net DIR`: the CNI network of the benchmark's CNI runs (crate docs), made,
//! announced, held until stdin closes, checked and removed.

use std::path::Path;

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// What pods left on the benchmark's network: ports on the bridge, addresses host-local
/// holds, iptables rules (any table) naming the subnet.
fn net_leftovers(net: &berth_e2e::net::TestNet) -> Value {
    json!({"veths": net.veths(), "ips": net.allocated_ips(), "iptables": rules_naming(&net.prefix)})
}

/// iptables rules (any table) that name `prefix` (the subnet's first octets).
fn rules_naming(prefix: &str) -> Vec<String> {
    berth_e2e::net::iptables_save()
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(prefix))
        .map(str::to_string)
        .collect()
}

/// Makes the network, writes its two conflists, prints it, waits for stdin to close, then
/// prints what pods left, removes the network and prints what is left after that.
pub fn serve_net(dir: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let pid = std::process::id();
    // A free 10.87.x.0/24, locked for as long as `net` lives; its Drop deletes the bridge and
    // every CNI iptables rule naming the subnet, however this ends (stdin EOF or a panic).
    let mut net = berth_e2e::net::TestNet::new(dir);
    net.name = format!("berth-bench-{pid}");
    net.bridge = format!("bbench{pid}");
    let link_exists = |name: &str| Path::new("/sys/class/net").join(name).exists();
    if link_exists(&net.bridge) {
        // A leftover of a dead benchmark that had the same pid.
        Command::new("ip")
            .args(["link", "del", net.bridge.as_str()])
            .stderr(Stdio::null())
            .status()?;
    }
    let bridge = net.bridge_plugin();
    if bridge["ipMasq"] != json!(false) {
        bail!("the benchmark network must never masquerade: {bridge}");
    }
    let portmap = berth_e2e::net::TestNet::portmap_plugin();
    std::fs::write(
        dir.join("bridge-portmap.conflist"),
        net.conflist_of(&[bridge.clone(), portmap.clone()]),
    )?;
    std::fs::write(
        dir.join("loopback-bridge-portmap.conflist"),
        net.conflist_of(&[json!({"type": "loopback"}), bridge, portmap]),
    )?;
    println!(
        "{}",
        json!({"name": net.name, "bridge": net.bridge, "subnet": net.subnet,
               "prefix": net.prefix, "ipam_dir": net.ipam_dir()})
    );
    std::io::stdout().flush()?;
    crate::serve::until_stdin_closes();

    let before = net_leftovers(&net);
    println!("{}", json!({"left_by_pods": before}));
    let (bridge, subnet, prefix) = (net.bridge.clone(), net.subnet.clone(), net.prefix.clone());
    drop(net);
    let routed = Command::new("ip")
        .args(["-4", "route", "show", "root", subnet.as_str()])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(true);
    let rules = rules_naming(&prefix);
    println!(
        "{}",
        json!({"after_removal": {"bridge": link_exists(&bridge), "route": routed, "iptables": rules}})
    );
    std::io::stdout().flush()?;
    Ok(())
}
