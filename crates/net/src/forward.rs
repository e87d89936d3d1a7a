//! Node-wide FORWARD rules for the pods on a CNI bridge.
//!
//! On a node whose filter `FORWARD` policy is `DROP` with bridged traffic
//! passed to iptables (`br_netfilter`), as a Docker engine leaves it, frames
//! between two ports of the pods' bridge and pods' traffic to anywhere cross
//! `FORWARD` and are dropped. CNI's `firewall` plugin lets them through with
//! rules per pod IP, at the cost of one more plugin run and its iptables
//! runs on every ADD and every DEL (about half the CPU of a pod's network
//! set-up here while a kubelet starts 30 pods). Rules per bridge interface
//! do the same once per node.
//!
//! The rules live in the filter table's chain `BERTH-FWD-<bridge>`
//! ([`chain`]; one per bridge, so two runtimes on two bridges never rewrite
//! each other's), jumped to from the end of `FORWARD`: what the admin,
//! Docker (`DOCKER-USER`) and kube-proxy put there apply first (kube-proxy's
//! REJECT of a Service without endpoints, its INVALID drop), and the chain
//! only accepts what the policy would drop. (CNI's `firewall` plugin
//! inserts its jump first instead, which lets pods' traffic bypass
//! kube-proxy's REJECTs.) A node firewall that ends `FORWARD` with its own
//! REJECT rule (rather than a DROP policy) must let the bridge through, or
//! the admin moves the jump up: berthd checks that the jump is there, not
//! where, and leaves it where it is.
//!
//! - the bridge's traffic first goes through [`ADMIN_CHAIN`], which berthd
//!   creates empty and never changes: the admin's own rules for pods (a
//!   DROP there stops a packet; RETURN or no match goes on), as the
//!   `firewall` plugin's `CNI-ADMIN`;
//! - packets conntrack calls INVALID go back to `FORWARD`'s policy;
//! - accept what enters from the bridge: pods' own traffic, pod to pod,
//!   pods' replies;
//! - accept what leaves to the bridge as part of a connection already seen
//!   (replies to pods) or destination-NATed to a pod: a `hostPort`
//!   (portmap's DNAT) or a Service (kube-proxy's). Anything else new from
//!   beyond the node towards a pod is left to the rest of `FORWARD`.
//!
//! The chain is replaced whole and atomically with `iptables-restore
//! --noflush`; the jump is added once. The rules stay while pods may use the
//! bridge, also across berthd restarts; [`remove`] is for whoever removes
//! the bridge (an uninstall, a test harness). Both families are written (a bridge
//! may carry both); a node without `ip6tables` gets IPv4 rules only. No
//! maintained crate drives `iptables-restore` (the `iptables` crate runs one
//! `iptables` per rule and cannot replace a chain atomically), so the
//! commands are run here.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::config::NetworkConfigList;

/// Prefix of the filter chains holding the rules, one per bridge.
pub const CHAIN_PREFIX: &str = "BERTH-FWD-";

/// The admin's chain for rules on pods' forwarded traffic, consulted
/// first; created empty, never flushed by berthd.
pub const ADMIN_CHAIN: &str = "BERTH-FORWARD-ADMIN";

/// The comment on `FORWARD`'s jumps to the chains.
const JUMP_COMMENT: &str = "berth: pods on a CNI bridge";

/// The bridge plugin's default bridge name.
const DEFAULT_BRIDGE: &str = "cni0";

/// Bound on one iptables command (they wait for the xtables lock).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("bridge name {0:?} cannot be used in a rule: {1}")]
    BadBridge(String, String),
    /// The iptables tools are not installed: nothing can be written.
    #[error("{0} not found: the node's FORWARD rules for pods cannot be set")]
    NoIptables(&'static str),
    #[error("{command} failed: {message}")]
    Command { command: String, message: String },
}

/// The bridge a network puts its pods on: its `bridge` plugin's `bridge`
/// (that plugin's default when unset). `None` for networks of other kinds.
pub fn bridge_of(net: &NetworkConfigList) -> Option<String> {
    let plugin = net.plugins.iter().find(|p| p.plugin_type == "bridge")?;
    Some(
        plugin
            .raw
            .get("bridge")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_BRIDGE)
            .to_string(),
    )
}

/// The chain holding `bridge`'s rules (at most 25 bytes: iptables takes 28).
pub fn chain(bridge: &str) -> String {
    format!("{CHAIN_PREFIX}{bridge}")
}

/// `iptables-restore --noflush` input replacing `bridge`'s chain with its
/// rules (the same text serves both families).
pub fn restore_input(bridge: &str) -> String {
    let chain = chain(bridge);
    format!(
        "*filter\n\
         :{chain} - [0:0]\n\
         -A {chain} -i {bridge} -j {ADMIN_CHAIN}\n\
         -A {chain} -o {bridge} -j {ADMIN_CHAIN}\n\
         -A {chain} -m conntrack --ctstate INVALID -j RETURN\n\
         -A {chain} -i {bridge} -m comment --comment \"berth: from pods\" -j ACCEPT\n\
         -A {chain} -o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -m comment --comment \"berth: replies and DNAT to pods\" -j ACCEPT\n\
         COMMIT\n"
    )
}

fn check_bridge(bridge: &str) -> Result<(), ForwardError> {
    crate::attachment::validate_ifname(bridge)
        .map_err(|e| ForwardError::BadBridge(bridge.to_string(), e.to_string()))?;
    if bridge.contains('+') {
        return Err(ForwardError::BadBridge(
            bridge.to_string(),
            "'+' is iptables' wildcard".to_string(),
        ));
    }
    Ok(())
}

/// `FORWARD`'s jump to `chain`, for `iptables` with `op` (`-C`, `-A`, `-D`).
fn jump_args<'a>(op: &'a str, chain: &'a str) -> [&'a str; 11] {
    [
        "-w",
        "-t",
        "filter",
        op,
        "FORWARD",
        "-m",
        "comment",
        "--comment",
        JUMP_COMMENT,
        "-j",
        chain,
    ]
}

/// Writes the rules for `bridge` in the network namespace of the calling
/// thread. IPv4 must succeed; IPv6 is skipped where `ip6tables` is missing
/// and its other failures are returned as the second value (a warning: the
/// IPv4 rules are in place).
pub async fn ensure(bridge: &str) -> Result<Option<ForwardError>, ForwardError> {
    check_bridge(bridge)?;
    ensure_family(bridge, "iptables-restore", "iptables").await?;
    match ensure_family(bridge, "ip6tables-restore", "ip6tables").await {
        Ok(()) | Err(ForwardError::NoIptables(_)) => Ok(None),
        Err(e) => Ok(Some(e)),
    }
}

async fn ensure_family(
    bridge: &str,
    restore: &'static str,
    iptables: &'static str,
) -> Result<(), ForwardError> {
    // The admin's chain must exist before a rule jumps to it; it is never
    // declared in the restore input, which would empty it. Until this
    // bridge's chain jumps to it, whoever removes another bridge's chain
    // (another runtime, a test harness) may delete it as unused: then it is
    // made again and the restore retried.
    let mut attempts = 0;
    loop {
        ensure_admin_chain(iptables).await?;
        match run(restore, &["-w", "--noflush"], Some(&restore_input(bridge))).await {
            Ok(()) => break,
            Err(ForwardError::Command { message, .. })
                if attempts < ADMIN_CHAIN_RETRIES && message.contains(ADMIN_CHAIN) =>
            {
                attempts += 1;
                tracing::debug!(bridge, attempts, %message, "the admin chain went away meanwhile: again");
            }
            Err(e) => return Err(e),
        }
    }
    let chain = chain(bridge);
    if run(iptables, &jump_args("-C", &chain), None).await.is_ok() {
        return Ok(());
    }
    run(iptables, &jump_args("-A", &chain), None).await
}

/// How often [`ensure`] makes the admin's chain again after it was removed
/// between its making and the restore that jumps to it.
const ADMIN_CHAIN_RETRIES: u32 = 5;

/// Makes the admin's chain unless it exists.
async fn ensure_admin_chain(iptables: &'static str) -> Result<(), ForwardError> {
    let admin = ["-w", "-t", "filter", "-S", ADMIN_CHAIN];
    if run(iptables, &admin, None).await.is_ok() {
        return Ok(());
    }
    let created = run(iptables, &["-w", "-t", "filter", "-N", ADMIN_CHAIN], None).await;
    // Another writer may have made it meanwhile.
    if created.is_err() {
        run(iptables, &admin, None).await?;
    }
    Ok(())
}

/// Removes `bridge`'s chain and `FORWARD`'s jumps to it, in both families,
/// in the network namespace of the calling thread; blocking (for cleanup
/// code). Whether anything was there; a family whose tool is missing or
/// holds no such chain is skipped.
pub fn remove(bridge: &str) -> Result<bool, ForwardError> {
    check_bridge(bridge)?;
    let chain = chain(bridge);
    let mut removed = false;
    for iptables in ["iptables", "ip6tables"] {
        let run = |args: &[&str]| {
            std::process::Command::new(iptables)
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .output()
        };
        match run(&["-w", "-t", "filter", "-S", &chain]) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(ForwardError::Command {
                    command: format!("{iptables} -S {chain}"),
                    message: e.to_string(),
                });
            }
            Ok(out) if !out.status.success() => continue,
            Ok(_) => {}
        }
        // A jump added twice (by hand) goes too.
        while run(&jump_args("-D", &chain)).is_ok_and(|o| o.status.success()) {}
        for op in ["-F", "-X"] {
            let out =
                run(&["-w", "-t", "filter", op, &chain]).map_err(|e| ForwardError::Command {
                    command: format!("{iptables} {op} {chain}"),
                    message: e.to_string(),
                })?;
            if !out.status.success() {
                return Err(ForwardError::Command {
                    command: format!("{iptables} {op} {chain}"),
                    message: format!(
                        "{}: {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                });
            }
        }
        // The admin's chain goes with the last bridge chain, and only when
        // empty: -X refuses a chain still jumped to, and an admin's rules
        // are kept.
        let admin = run(&["-w", "-t", "filter", "-S", ADMIN_CHAIN]);
        if admin.is_ok_and(|o| {
            o.status.success()
                && o.stdout
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .count()
                    == 1
        }) {
            let _ = run(&["-w", "-t", "filter", "-X", ADMIN_CHAIN]);
        }
        removed = true;
    }
    Ok(removed)
}

async fn run(
    program: &'static str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<(), ForwardError> {
    let command = format!("{program} {}", args.join(" "));
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ForwardError::NoIptables(program),
            _ => ForwardError::Command {
                command: command.clone(),
                message: e.to_string(),
            },
        })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .await
            .map_err(|e| ForwardError::Command {
                command: command.clone(),
                message: format!("writing its input: {e}"),
            })?;
    }
    let out = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| ForwardError::Command {
            command: command.clone(),
            message: format!("no answer within {}s", COMMAND_TIMEOUT.as_secs()),
        })?
        .map_err(|e| ForwardError::Command {
            command: command.clone(),
            message: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ForwardError::Command {
            command,
            message: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(plugins: serde_json::Value) -> NetworkConfigList {
        let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "n", "plugins": plugins});
        NetworkConfigList::from_value(conf, true).unwrap()
    }

    #[test]
    fn the_bridge_comes_from_the_bridge_plugin() {
        let named =
            list(serde_json::json!([{"type": "bridge", "bridge": "berth0"}, {"type": "portmap"}]));
        assert_eq!(bridge_of(&named).as_deref(), Some("berth0"));
        let unnamed = list(serde_json::json!([{"type": "bridge"}]));
        assert_eq!(bridge_of(&unnamed).as_deref(), Some("cni0"));
        let other = list(serde_json::json!([{"type": "ptp"}]));
        assert_eq!(bridge_of(&other), None);
    }

    #[test]
    fn the_longest_bridge_name_makes_a_chain_name_iptables_takes() {
        // XT_EXTENSION_MAXNAMELEN is 29 with the NUL.
        assert!(chain("0123456789abcde").len() <= 28);
    }

    #[test]
    fn the_chain_is_replaced_whole_with_rules_for_the_bridge() {
        let input = restore_input("berth0");
        let lines: Vec<&str> = input.lines().collect();
        assert_eq!(lines[0], "*filter");
        // Declaring the chain in a --noflush restore empties it first.
        assert_eq!(lines[1], ":BERTH-FWD-berth0 - [0:0]");
        // The admin's chain first, for both directions; never declared here.
        assert_eq!(
            lines[2],
            "-A BERTH-FWD-berth0 -i berth0 -j BERTH-FORWARD-ADMIN"
        );
        assert_eq!(
            lines[3],
            "-A BERTH-FWD-berth0 -o berth0 -j BERTH-FORWARD-ADMIN"
        );
        assert!(!input.contains(":BERTH-FORWARD-ADMIN"), "{input}");
        assert_eq!(
            lines[4],
            "-A BERTH-FWD-berth0 -m conntrack --ctstate INVALID -j RETURN"
        );
        assert!(
            lines[5].starts_with("-A BERTH-FWD-berth0 -i berth0 "),
            "{input}"
        );
        assert!(
            lines[6].starts_with(
                "-A BERTH-FWD-berth0 -o berth0 -m conntrack --ctstate RELATED,ESTABLISHED,DNAT "
            ),
            "{input}"
        );
        assert_eq!(lines.last(), Some(&"COMMIT"));
    }

    #[tokio::test]
    async fn names_that_are_not_interfaces_are_refused() {
        for bad in ["", "a b", "x/y", "br+", "0123456789abcdef"] {
            assert!(
                matches!(ensure(bad).await, Err(ForwardError::BadBridge(..))),
                "{bad:?}"
            );
            assert!(
                matches!(remove(bad), Err(ForwardError::BadBridge(..))),
                "{bad:?}"
            );
        }
    }
}
