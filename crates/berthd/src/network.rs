//! Pod networking through CNI ([`berth_net`]): one attachment (`eth0`) per
//! pod that has its own network namespace, made at RunPodSandbox and undone
//! at StopPodSandbox (again at RemovePodSandbox if that failed), with the
//! plugins' results cached under `<state>/cni` so a DEL after a restart
//! gets what the ADD returned.
//!
//! With no usable network config, `NetworkReady` is false and a pod gets a
//! network namespace with loopback only (the kubelet starts no such pod
//! until the network is ready; crictl users get a working, isolated pod).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use berth_api::v1::{PodSandboxConfig, Protocol as CriProtocol};
use berth_net::{
    Attachment, Bandwidth, CapabilityArgs, Cni, CniError, CniOptions, DnsCapability, GcAttachment,
    IpRange, PodRef, PortMapping, Protocol,
};

use crate::config::NetworkConfig;
use crate::error::RuntimeError;

/// Pod annotations the kubelet's bandwidth support sets (Kubernetes quantities, bits/s).
const INGRESS_BANDWIDTH: &str = "kubernetes.io/ingress-bandwidth";
const EGRESS_BANDWIDTH: &str = "kubernetes.io/egress-bandwidth";

/// How often an attach checks again that the bridge's FORWARD rules are in
/// place (in the background: someone may have flushed FORWARD).
const FORWARD_RECHECK: Duration = Duration::from_secs(60);

pub struct PodNetwork {
    cni: Arc<Cni>,
    /// `[network] bridge_forward_rules`.
    forward_rules: bool,
    /// The bridge whose FORWARD rules were written ([`berth_net::forward`]),
    /// and when they were last checked.
    forwarded: tokio::sync::Mutex<Option<(String, std::time::Instant)>>,
}

impl PodNetwork {
    pub fn new(config: &NetworkConfig, state: &Path) -> PodNetwork {
        let opts = CniOptions {
            conf_dir: config.conf_dir.clone(),
            bin_dirs: config.bin_dirs.clone(),
            cache_dir: state.join("cni"),
            plugin_timeout: Duration::from_secs(config.plugin_timeout_secs),
        };
        PodNetwork {
            cni: Arc::new(Cni::new(opts)),
            forward_rules: config.bridge_forward_rules,
            forwarded: tokio::sync::Mutex::new(None),
        }
    }

    /// `NetworkReady`: `Err((reason, message))` while there is no usable config.
    pub fn readiness(&self) -> Result<(), (String, String)> {
        let r = self.cni.ready();
        if r.ready {
            Ok(())
        } else {
            Err((r.reason, r.message))
        }
    }

    /// ADD of the pod's `eth0` in `netns`; returns its IPs (IPv4 first),
    /// or `None` when no network is configured (loopback-only pod).
    /// Runs in its own task: a RunPodSandbox the kubelet gives up on must
    /// not cut a plugin chain in half.
    pub async fn attach(
        &self,
        pod_id: &str,
        netns: &Path,
        config: &PodSandboxConfig,
        pod_cidr: &str,
    ) -> Result<Option<Vec<IpAddr>>, RuntimeError> {
        // No config at all: loopback only (NetworkReady says so). A config
        // that is there but unusable (invalid, a plugin missing) is an
        // error naming it: a pod must not silently lose its network.
        let network = match self.cni.network() {
            Err(CniError::NoConfig { .. }) => {
                tracing::warn!(
                    pod = pod_id,
                    "no CNI network config: the pod gets loopback only"
                );
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
            Ok(n) => n,
        };
        if let Err((_, message)) = self.readiness() {
            return Err(RuntimeError::FailedPrecondition(format!(
                "the pod network is not usable: {message}"
            )));
        }
        if self.forward_rules
            && let Some(bridge) = berth_net::forward::bridge_of(&network)
        {
            self.ensure_forward_rules(bridge).await?;
        }
        let att = attachment(pod_id, netns, config, pod_cidr);
        let cni = self.cni.clone();
        let started = std::time::Instant::now();
        let result = tokio::spawn(async move { cni.add(&att).await })
            .await
            .map_err(|e| CniError::InvalidArgument(format!("CNI ADD task failed: {e}")))
            .and_then(|r| r);
        crate::prometheus::global().cni("add", result.is_ok(), started.elapsed());
        let result = result?;
        let ips = result.pod_ips();
        tracing::info!(pod = pod_id, ips = ?ips, "pod network attached");
        Ok(Some(ips))
    }

    /// The bridge's FORWARD rules, written before its first pod is attached
    /// (a pod must not start cut off on a FORWARD DROP node), then checked
    /// again in the background at most every [`FORWARD_RECHECK`].
    async fn ensure_forward_rules(&self, bridge: String) -> Result<(), RuntimeError> {
        let mut done = self.forwarded.lock().await;
        if let Some((b, at)) = done.as_mut()
            && *b == bridge
        {
            if at.elapsed() >= FORWARD_RECHECK {
                *at = std::time::Instant::now();
                tokio::spawn(async move {
                    if let Err(e) = write_forward_rules(&bridge).await {
                        tracing::warn!(error = %e, "checking the pod bridge's FORWARD rules again");
                    }
                });
            }
            return Ok(());
        }
        write_forward_rules(&bridge).await?;
        *done = Some((bridge, std::time::Instant::now()));
        Ok(())
    }

    /// DEL of the pod's attachment, with what its ADD used (idempotent).
    pub async fn detach(
        &self,
        pod_id: &str,
        netns: Option<&Path>,
        config: &PodSandboxConfig,
    ) -> Result<(), CniError> {
        let att = attachment(pod_id, netns.unwrap_or(Path::new("")), config, "");
        let cni = self.cni.clone();
        let started = std::time::Instant::now();
        let result = tokio::spawn(async move { cni.del(&att).await })
            .await
            .map_err(|e| CniError::InvalidArgument(format!("CNI DEL task failed: {e}")))
            .and_then(|r| r);
        crate::prometheus::global().cni("del", result.is_ok(), started.elapsed());
        result?;
        tracing::info!(pod = pod_id, "pod network detached");
        Ok(())
    }

    /// At startup: DELs every cached attachment of a pod berthd does not
    /// hold as attached (an ADD cut short by a crash, a pod removed while a
    /// DEL kept failing), so no IP stays allocated for nothing.
    pub async fn collect_garbage(&self, attached_pods: &[String]) {
        let valid: Vec<GcAttachment> = attached_pods
            .iter()
            .map(|id| GcAttachment {
                container_id: id.clone(),
                ifname: berth_net::DEFAULT_IFNAME.to_string(),
            })
            .collect();
        match self.cni.gc(&valid).await {
            Ok(report) => {
                for key in &report.deleted {
                    tracing::info!(attachment = %key, "stale pod network attachment removed");
                }
                for e in &report.errors {
                    tracing::warn!(error = %e, "pod network garbage collection");
                }
            }
            Err(e) => tracing::warn!(error = %e, "pod network garbage collection failed"),
        }
    }
}

/// The CNI attachment of a pod: eth0, K8S_* args, and the capability args
/// the kubelet's config asks for (ports, bandwidth, pod CIDR, DNS).
fn attachment(pod_id: &str, netns: &Path, config: &PodSandboxConfig, pod_cidr: &str) -> Attachment {
    let md = config.metadata.clone().unwrap_or_default();
    let mut att = Attachment::for_pod(
        pod_id,
        netns,
        &PodRef {
            namespace: md.namespace,
            name: md.name,
            uid: md.uid,
        },
    );
    att.capabilities = CapabilityArgs {
        port_mappings: config
            .port_mappings
            .iter()
            .filter(|p| p.host_port > 0)
            .map(|p| PortMapping {
                host_port: p.host_port,
                container_port: p.container_port,
                protocol: match CriProtocol::try_from(p.protocol) {
                    Ok(CriProtocol::Udp) => Protocol::Udp,
                    Ok(CriProtocol::Sctp) => Protocol::Sctp,
                    _ => Protocol::Tcp,
                },
                host_ip: p.host_ip.clone(),
            })
            .collect(),
        bandwidth: bandwidth(config),
        ip_ranges: pod_cidr
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|c| {
                vec![IpRange {
                    subnet: c.to_string(),
                    ..Default::default()
                }]
            })
            .collect(),
        dns: config.dns_config.as_ref().map(|d| DnsCapability {
            servers: d.servers.clone(),
            searches: d.searches.clone(),
            options: d.options.clone(),
        }),
        ..Default::default()
    };
    att
}

/// The bandwidth plugin's limits from the pod's annotations, in bits/s;
/// bursts unlimited as containerd and CRI-O pass them.
fn bandwidth(config: &PodSandboxConfig) -> Option<Bandwidth> {
    let rate = |key: &str| {
        config.annotations.get(key).and_then(|q| {
            let r = parse_quantity(q);
            if r.is_none() {
                tracing::warn!(annotation = key, value = %q, "not a bandwidth quantity: ignored");
            }
            r
        })
    };
    let (ingress, egress) = (rate(INGRESS_BANDWIDTH), rate(EGRESS_BANDWIDTH));
    if ingress.is_none() && egress.is_none() {
        return None;
    }
    let burst = |r: Option<u64>| r.map_or(0, |_| u64::from(u32::MAX));
    Some(Bandwidth {
        ingress_rate: ingress.unwrap_or(0),
        ingress_burst: burst(ingress),
        egress_rate: egress.unwrap_or(0),
        egress_burst: burst(egress),
    })
}

/// A Kubernetes quantity as an integer ("10M" → 10_000_000, "1Gi" → 2^30, "500k").
fn parse_quantity(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    if split == 0 {
        return None;
    }
    let (num, suffix) = q.split_at(split);
    let mult: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        _ => return None,
    };
    let v: f64 = num.parse().ok()?;
    let bits = v * mult;
    (bits.is_finite() && bits >= 1.0 && bits < u64::MAX as f64).then_some(bits as u64)
}

/// [`berth_net::forward::ensure`] for `bridge`; a node without iptables
/// gets a warning (its FORWARD policy cannot be DROP through iptables).
async fn write_forward_rules(bridge: &str) -> Result<(), RuntimeError> {
    use berth_net::forward::{self, ForwardError};
    match forward::ensure(bridge).await {
        Ok(ipv6) => {
            if let Some(e) = ipv6 {
                tracing::warn!(bridge, error = %e, "IPv6 FORWARD rules for the pod bridge not written");
            }
            tracing::debug!(
                bridge,
                chain = %forward::chain(bridge),
                "pod bridge FORWARD rules in place"
            );
            Ok(())
        }
        Err(e @ ForwardError::NoIptables(_)) => {
            tracing::warn!(bridge, error = %e, "pod bridge FORWARD rules not written");
            Ok(())
        }
        Err(e) => Err(RuntimeError::FailedPrecondition(format!(
            "the pod bridge {bridge}'s FORWARD rules: {e} (set [network] bridge_forward_rules = false to leave iptables alone)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::v1::{DnsConfig, PodSandboxMetadata, PortMapping as CriPort};

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("10M"), Some(10_000_000));
        assert_eq!(parse_quantity("1Gi"), Some(1 << 30));
        assert_eq!(parse_quantity("1.5k"), Some(1500));
        assert_eq!(parse_quantity("100"), Some(100));
        for bad in ["", "M", "10X", "-1M", "0"] {
            assert_eq!(parse_quantity(bad), None, "{bad}");
        }
    }

    #[test]
    fn attachment_carries_the_pod_config() {
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "web".into(),
                namespace: "ns".into(),
                uid: "u1".into(),
                attempt: 0,
            }),
            port_mappings: vec![
                CriPort {
                    protocol: CriProtocol::Udp as i32,
                    container_port: 53,
                    host_port: 5353,
                    host_ip: "127.0.0.1".into(),
                },
                // No host port: nothing to map.
                CriPort {
                    protocol: CriProtocol::Tcp as i32,
                    container_port: 80,
                    host_port: 0,
                    host_ip: String::new(),
                },
            ],
            dns_config: Some(DnsConfig {
                servers: vec!["10.96.0.10".into()],
                searches: vec!["svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            }),
            annotations: [(INGRESS_BANDWIDTH.to_string(), "10M".to_string())].into(),
            ..Default::default()
        };
        let att = attachment(
            "pod1",
            Path::new("/run/x/net"),
            &config,
            "10.1.0.0/24, fd00::/64",
        );
        assert_eq!(att.ifname, "eth0");
        assert!(att.args.contains(&("K8S_POD_NAME".into(), "web".into())));
        assert!(
            att.args
                .contains(&("K8S_POD_INFRA_CONTAINER_ID".into(), "pod1".into()))
        );
        let caps = &att.capabilities;
        assert_eq!(caps.port_mappings.len(), 1);
        assert_eq!(caps.port_mappings[0].protocol, Protocol::Udp);
        assert_eq!(caps.port_mappings[0].host_ip, "127.0.0.1");
        assert_eq!(caps.ip_ranges.len(), 2);
        assert_eq!(caps.ip_ranges[1][0].subnet, "fd00::/64");
        let bw = caps.bandwidth.clone().unwrap();
        assert_eq!((bw.ingress_rate, bw.egress_rate), (10_000_000, 0));
        assert_eq!(caps.dns.as_ref().unwrap().searches, ["svc.cluster.local"]);
        att.validate().unwrap();
    }
}
