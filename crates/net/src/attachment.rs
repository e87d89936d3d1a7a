//! Per-attachment parameters: container ID, netns, interface name, CNI_ARGS
//! and the capability arguments that become `runtimeConfig`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::validate_name;
use crate::error::CniError;

/// The interface the kubelet expects in a pod.
pub const DEFAULT_IFNAME: &str = "eth0";

/// What identifies one attachment in the result cache.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentKey {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
}

impl fmt::Display for AttachmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "network {} container {} ifname {}",
            self.network, self.container_id, self.ifname
        )
    }
}

/// The pod a sandbox belongs to (for the K8S_* CNI_ARGS).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// The CNI_ARGS that Kubernetes runtimes pass:
/// `IgnoreUnknown=1;K8S_POD_NAMESPACE=..;K8S_POD_NAME=..;K8S_POD_INFRA_CONTAINER_ID=..;K8S_POD_UID=..`.
pub fn k8s_cni_args(pod: &PodRef, sandbox_id: &str) -> Vec<(String, String)> {
    vec![
        ("IgnoreUnknown".into(), "1".into()),
        ("K8S_POD_NAMESPACE".into(), pod.namespace.clone()),
        ("K8S_POD_NAME".into(), pod.name.clone()),
        ("K8S_POD_INFRA_CONTAINER_ID".into(), sandbox_id.to_owned()),
        ("K8S_POD_UID".into(), pod.uid.clone()),
    ]
}

/// Port protocol, as the portmap plugin spells it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

/// One `portMappings` entry (CONVENTIONS.md). Ports are `i32` as in CRI;
/// entries with `host_port <= 0` are not passed (no host port wanted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: i32,
    pub container_port: i32,
    pub protocol: Protocol,
    /// Empty: every host address.
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// The `bandwidth` capability: rates in bits/s, bursts in bits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ingress_rate: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ingress_burst: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub egress_rate: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub egress_burst: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// One range of the `ipRanges` capability (host-local's `ranges` entry).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpRange {
    pub subnet: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// The `dns` capability.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsCapability {
    #[serde(default)]
    pub servers: Vec<String>,
    #[serde(default)]
    pub searches: Vec<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

/// Capability arguments the runtime offers. Each goes into a plugin's
/// `runtimeConfig` only if that plugin declares the capability.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CapabilityArgs {
    /// `portMappings` (omitted when empty).
    pub port_mappings: Vec<PortMapping>,
    /// `bandwidth`.
    pub bandwidth: Option<Bandwidth>,
    /// `ipRanges` (omitted when empty).
    pub ip_ranges: Vec<Vec<IpRange>>,
    /// `dns`.
    pub dns: Option<DnsCapability>,
    /// Any other capability by name (`mac`, `ips`, `cgroupPath`, ...).
    pub extra: BTreeMap<String, Value>,
}

impl CapabilityArgs {
    /// The capabilities as the JSON object `runtimeConfig` is cut from.
    pub fn to_map(&self) -> Map<String, Value> {
        let mut m = Map::new();
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        let pm: Vec<&PortMapping> = self
            .port_mappings
            .iter()
            .filter(|p| p.host_port > 0)
            .collect();
        if !pm.is_empty() {
            m.insert(
                "portMappings".into(),
                serde_json::to_value(pm).expect("plain data"),
            );
        }
        if let Some(b) = &self.bandwidth {
            m.insert(
                "bandwidth".into(),
                serde_json::to_value(b).expect("plain data"),
            );
        }
        if !self.ip_ranges.is_empty() {
            m.insert(
                "ipRanges".into(),
                serde_json::to_value(&self.ip_ranges).expect("plain data"),
            );
        }
        if let Some(d) = &self.dns {
            m.insert("dns".into(), serde_json::to_value(d).expect("plain data"));
        }
        m
    }

    fn validate(&self) -> Result<(), CniError> {
        for p in &self.port_mappings {
            if p.host_port <= 0 {
                continue;
            }
            for (what, port) in [("host", p.host_port), ("container", p.container_port)] {
                if !(1..=65535).contains(&port) {
                    return Err(CniError::InvalidArgument(format!(
                        "port mapping {}->{}: {what} port {port} out of 1..65535",
                        p.host_port, p.container_port
                    )));
                }
            }
            if !p.host_ip.is_empty() && p.host_ip.parse::<std::net::IpAddr>().is_err() {
                return Err(CniError::InvalidArgument(format!(
                    "port mapping {}->{}: hostIP {:?} is not an IP address",
                    p.host_port, p.container_port, p.host_ip
                )));
            }
        }
        Ok(())
    }
}

/// One attachment of a container (pod sandbox) to the network.
#[derive(Clone, Debug, PartialEq)]
pub struct Attachment {
    /// `CNI_CONTAINERID`: the sandbox ID.
    pub container_id: String,
    /// `CNI_NETNS`: the pinned netns file (may be empty for DEL).
    pub netns: PathBuf,
    /// `CNI_IFNAME`, `eth0` by default.
    pub ifname: String,
    /// `CNI_ARGS` key/value pairs.
    pub args: Vec<(String, String)>,
    pub capabilities: CapabilityArgs,
}

impl Attachment {
    /// An attachment on `eth0` with no CNI_ARGS and no capability args.
    pub fn new(container_id: impl Into<String>, netns: impl Into<PathBuf>) -> Self {
        Self {
            container_id: container_id.into(),
            netns: netns.into(),
            ifname: DEFAULT_IFNAME.to_owned(),
            args: Vec::new(),
            capabilities: CapabilityArgs::default(),
        }
    }

    /// A pod sandbox's attachment: `eth0`, the K8S_* CNI_ARGS.
    pub fn for_pod(sandbox_id: &str, netns: impl Into<PathBuf>, pod: &PodRef) -> Self {
        let mut a = Self::new(sandbox_id, netns);
        a.args = k8s_cni_args(pod, sandbox_id);
        a
    }

    /// `CNI_ARGS` as passed to plugins: `K=V;K=V`.
    pub fn cni_args_string(&self) -> String {
        join_args(&self.args)
    }

    /// Checks the container ID, interface name, CNI_ARGS and capability args.
    pub fn validate(&self) -> Result<(), CniError> {
        validate_name(&self.container_id)
            .map_err(|e| CniError::InvalidArgument(format!("container ID: {e}")))?;
        validate_ifname(&self.ifname)?;
        // CNI_ARGS is `K=V;K=V` with no escaping: plugins split on ';' then
        // '=' (libcni's LoadArgs refuses a pair that is not exactly K=V), so
        // a pod name or namespace carrying either would fail every plugin
        // with an obscure "invalid pair", or with ';' add a key of its own
        // choosing. Refused here, before anything runs, naming the field.
        for (k, v) in &self.args {
            let bad = |s: &str| s.contains(['=', ';']) || s.chars().any(char::is_control);
            if k.is_empty() || bad(k) || bad(v) {
                return Err(CniError::InvalidArgument(format!(
                    "CNI_ARGS entry {k:?}={v:?}: keys must be non-empty, and neither keys nor values may contain '=', ';' or control characters (CNI_ARGS has no escaping)"
                )));
            }
        }
        self.capabilities.validate()
    }
}

pub(crate) fn join_args(args: &[(String, String)]) -> String {
    args.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// Linux interface names: 1..=15 bytes, not `.`/`..`, no `/`, `:` or
/// whitespace (the rules libcni applies too).
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let bad = |why: &str| {
        Err(CniError::InvalidArgument(format!(
            "interface name {name:?}: {why}"
        )))
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 15 {
        return bad("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("not a name");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return bad("contains '/', ':' or whitespace");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn k8s_args_string() {
        let pod = PodRef {
            namespace: "default".into(),
            name: "web-0".into(),
            uid: "1234-abcd".into(),
        };
        let a = Attachment::for_pod("sb1", "/run/netns/x", &pod);
        assert_eq!(
            a.cni_args_string(),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=sb1;K8S_POD_UID=1234-abcd"
        );
        assert_eq!(a.ifname, "eth0");
        a.validate().unwrap();
    }

    #[test]
    fn validation() {
        let mut a = Attachment::new("abc", "/x");
        a.validate().unwrap();
        a.container_id = "_abc".into();
        assert!(a.validate().is_err());
        a.container_id = "abc".into();
        for bad in ["", "a/b", "a:b", "a b", ".", "0123456789abcdef"] {
            a.ifname = bad.into();
            assert!(a.validate().is_err(), "{bad:?}");
        }
        a.ifname = "eth0".into();
        a.args = vec![("A".into(), "x;y".into())];
        assert!(a.validate().is_err());
        a.args.clear();
        // A pod whose name or namespace holds '=' or ';' (the CRI allows any
        // string) must not reach plugins: injected pair, or "invalid pair".
        for (name, namespace) in [
            ("web=0", "default"),
            ("web", "ns;K8S_POD_NAME=other"),
            ("web", "a\nb"),
            ("web", "a\0b"),
        ] {
            let pod = PodRef {
                namespace: namespace.into(),
                name: name.into(),
                uid: "u".into(),
            };
            let err = Attachment::for_pod("sb1", "/x", &pod)
                .validate()
                .unwrap_err();
            assert!(matches!(err, CniError::InvalidArgument(_)), "{err}");
            assert!(err.to_string().contains("no escaping"), "{err}");
        }
        a.capabilities.port_mappings = vec![PortMapping {
            host_port: 80,
            container_port: 70000,
            protocol: Protocol::Tcp,
            host_ip: String::new(),
        }];
        assert!(a.validate().unwrap_err().to_string().contains("70000"));
    }

    #[test]
    fn capability_map() {
        let caps = CapabilityArgs {
            port_mappings: vec![
                PortMapping {
                    host_port: 8080,
                    container_port: 80,
                    protocol: Protocol::Tcp,
                    host_ip: String::new(),
                },
                PortMapping {
                    host_port: 0,
                    container_port: 81,
                    protocol: Protocol::Udp,
                    host_ip: String::new(),
                },
                PortMapping {
                    host_port: 5353,
                    container_port: 53,
                    protocol: Protocol::Udp,
                    host_ip: "127.0.0.1".into(),
                },
            ],
            bandwidth: Some(Bandwidth {
                ingress_rate: 1000,
                ingress_burst: 10,
                ..Default::default()
            }),
            ip_ranges: vec![vec![IpRange {
                subnet: "10.86.1.0/24".into(),
                ..Default::default()
            }]],
            dns: Some(DnsCapability {
                servers: vec!["10.96.0.10".into()],
                searches: vec!["svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            }),
            extra: [("mac".to_string(), json!("c2:11:22:33:44:55"))].into(),
        };
        assert_eq!(
            Value::Object(caps.to_map()),
            json!({
                "portMappings": [
                    {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                    {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"}
                ],
                "bandwidth": {"ingressRate": 1000, "ingressBurst": 10},
                "ipRanges": [[{"subnet": "10.86.1.0/24"}]],
                "dns": {"servers": ["10.96.0.10"], "searches": ["svc.cluster.local"], "options": ["ndots:5"]},
                "mac": "c2:11:22:33:44:55"
            })
        );
        assert!(CapabilityArgs::default().to_map().is_empty());
    }
}
