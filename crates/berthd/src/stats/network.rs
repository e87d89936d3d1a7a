//! A pod's network counters: `/proc/<pid>/net/dev` of a process inside the
//! pod's network namespace. Berth pins that namespace without a process of
//! its own, so a live container's process stands in; its namespace is checked
//! against the pin (same nsfs inode) so a recycled pid is never measured.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::parse::{self, IfaceCounters};

/// The interface the kubelet reports as the pod's (as containerd and CRI-O).
pub const DEFAULT_INTERFACE: &str = "eth0";

/// The interfaces of the namespace pinned at `pin`, read through the first
/// of `pids` that lives in it; loopback left out. `None` when no candidate
/// process is in the namespace.
pub fn pod_interfaces(
    pin: &Path,
    pids: impl IntoIterator<Item = i32>,
) -> Option<Vec<IfaceCounters>> {
    let ns = std::fs::metadata(pin).ok()?;
    for pid in pids {
        let Ok(m) = std::fs::metadata(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        if (m.dev(), m.ino()) != (ns.dev(), ns.ino()) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/dev")) else {
            continue;
        };
        return Some(
            parse::net_dev(&text)
                .into_iter()
                .filter(|i| i.name != "lo")
                .collect(),
        );
    }
    None
}

/// Splits interfaces into the default one (eth0, else the first) and the
/// others, as the CRI's `NetworkUsage` wants them.
pub fn split_default(
    mut ifaces: Vec<IfaceCounters>,
) -> Option<(IfaceCounters, Vec<IfaceCounters>)> {
    if ifaces.is_empty() {
        return None;
    }
    let i = ifaces
        .iter()
        .position(|i| i.name == DEFAULT_INTERFACE)
        .unwrap_or(0);
    let default = ifaces.remove(i);
    Some((default, ifaces))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str) -> IfaceCounters {
        IfaceCounters {
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn eth0_is_the_default_else_the_first() {
        let (d, rest) = split_default(vec![iface("net1"), iface("eth0")]).unwrap();
        assert_eq!(d.name, "eth0");
        assert_eq!(rest, vec![iface("net1")]);
        let (d, rest) = split_default(vec![iface("net1"), iface("net2")]).unwrap();
        assert_eq!(d.name, "net1");
        assert_eq!(rest.len(), 1);
        assert!(split_default(vec![]).is_none());
    }

    #[test]
    fn own_namespace_through_own_pid() {
        // This test process is in the namespace /proc/self/ns/net names.
        let me = std::process::id() as i32;
        let got = pod_interfaces(Path::new("/proc/self/ns/net"), [me]).unwrap();
        assert!(got.iter().all(|i| i.name != "lo"));
        // A pid outside it (or gone) is never read.
        assert!(pod_interfaces(Path::new("/proc/self/ns/net"), [i32::MAX]).is_none());
    }
}
