//! ADD results of every result shape (SPEC section 5) in one struct.
//!
//! - 0.1.0 / 0.2.0: `ip4` / `ip6` objects, `dns`.
//! - 0.3.0 / 0.3.1 / 0.4.0: `interfaces`, `ips` (with a `version` field and
//!   an `interface` index), `routes`, `dns`.
//! - 1.0.0 / 1.1.0: the same without `ips[].version`; interfaces may carry
//!   `socketPath` / `pciID`, routes `mtu`, `advmss`, `priority`, `table`, `scope`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::Deserialize;
use serde_json::Value;

use crate::version::CniVersion;

/// An address with its prefix length, `10.86.0.5/16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpCidr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl FromStr for IpCidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not in CIDR notation (address/prefix)"))?;
        let addr: IpAddr = a.parse().map_err(|_| format!("{s:?}: bad IP address"))?;
        let prefix_len: u8 = p.parse().map_err(|_| format!("{s:?}: bad prefix length"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(format!("{s:?}: prefix length over {max}"));
        }
        Ok(Self { addr, prefix_len })
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// An interface created by the attachment (host side or in the sandbox).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the container; `None` on the host.
    pub sandbox: Option<String>,
    pub socket_path: Option<String>,
    pub pci_id: Option<String>,
}

/// One assigned IP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpConfig {
    pub address: IpCidr,
    pub gateway: Option<IpAddr>,
    /// Index into [`CniResult::interfaces`].
    pub interface: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: IpCidr,
    pub gw: Option<IpAddr>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    pub priority: Option<u32>,
    pub table: Option<u32>,
    pub scope: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dns {
    pub nameservers: Vec<String>,
    pub domain: Option<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// A parsed ADD result, whatever its `cniVersion`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniResult {
    /// The result's own `cniVersion` (the request's when it has none).
    pub cni_version: CniVersion,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

// Wire shapes. Unknown fields are ignored: the raw JSON is kept separately
// (cache, prevResult) so nothing is lost.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireInterface {
    name: String,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    sandbox: Option<String>,
    #[serde(default)]
    socket_path: Option<String>,
    #[serde(default, rename = "pciID")]
    pci_id: Option<String>,
}

#[derive(Deserialize)]
struct WireIp {
    address: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    interface: Option<i64>,
    /// 0.3.x / 0.4.0 only: "4" or "6".
    #[serde(default)]
    version: Option<String>,
}

#[derive(Deserialize)]
struct WireRoute {
    dst: String,
    #[serde(default)]
    gw: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    advmss: Option<u32>,
    #[serde(default)]
    priority: Option<u32>,
    #[serde(default)]
    table: Option<u32>,
    #[serde(default)]
    scope: Option<u32>,
}

#[derive(Deserialize, Default)]
struct WireDns {
    #[serde(default)]
    nameservers: Option<Vec<String>>,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    search: Option<Vec<String>>,
    #[serde(default)]
    options: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRich {
    #[serde(default)]
    interfaces: Option<Vec<WireInterface>>,
    #[serde(default)]
    ips: Option<Vec<WireIp>>,
    #[serde(default)]
    routes: Option<Vec<WireRoute>>,
    #[serde(default)]
    dns: Option<WireDns>,
}

#[derive(Deserialize)]
struct WireLegacyIp {
    ip: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    routes: Option<Vec<WireRoute>>,
}

#[derive(Deserialize)]
struct WireLegacy {
    #[serde(default)]
    ip4: Option<WireLegacyIp>,
    #[serde(default)]
    ip6: Option<WireLegacyIp>,
    #[serde(default)]
    dns: Option<WireDns>,
}

fn opt_ip(s: Option<String>, what: &str) -> Result<Option<IpAddr>, String> {
    match s.as_deref() {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| format!("{what} {s:?} is not an IP address")),
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

fn route(r: WireRoute) -> Result<Route, String> {
    Ok(Route {
        dst: r.dst.parse().map_err(|e| format!("route dst: {e}"))?,
        gw: opt_ip(r.gw, "route gw")?,
        mtu: r.mtu,
        advmss: r.advmss,
        priority: r.priority,
        table: r.table,
        scope: r.scope,
    })
}

fn dns(d: Option<WireDns>) -> Dns {
    let d = d.unwrap_or_default();
    Dns {
        nameservers: d.nameservers.unwrap_or_default(),
        domain: non_empty(d.domain),
        search: d.search.unwrap_or_default(),
        options: d.options.unwrap_or_default(),
    }
}

impl CniResult {
    /// Parses a result. Its shape is chosen by its own `cniVersion`, else by
    /// `request_version` (the version the plugin was called with).
    pub fn from_value(v: &Value, request_version: CniVersion) -> Result<Self, String> {
        let Value::Object(obj) = v else {
            return Err("result is not a JSON object".to_owned());
        };
        let version = match obj.get("cniVersion") {
            Some(Value::String(s)) if !s.is_empty() => {
                CniVersion::parse(s).map_err(|e| format!("result cniVersion: {e}"))?
            }
            None | Some(Value::String(_)) | Some(Value::Null) => request_version,
            Some(_) => return Err("result cniVersion is not a string".to_owned()),
        };
        if !version.has_rich_result() {
            return Self::from_legacy(v, version);
        }
        let w: WireRich = serde_json::from_value(v.clone()).map_err(|e| format!("result: {e}"))?;
        let interfaces: Vec<Interface> = w
            .interfaces
            .unwrap_or_default()
            .into_iter()
            .map(|i| Interface {
                name: i.name,
                mac: non_empty(i.mac),
                mtu: i.mtu.filter(|m| *m != 0),
                sandbox: non_empty(i.sandbox),
                socket_path: non_empty(i.socket_path),
                pci_id: non_empty(i.pci_id),
            })
            .collect();
        let mut ips = Vec::new();
        for ip in w.ips.unwrap_or_default() {
            let address: IpCidr = ip.address.parse().map_err(|e| format!("ips: {e}"))?;
            if let Some(ver) = ip.version.as_deref() {
                let fam_ok = match ver {
                    "4" => address.addr.is_ipv4(),
                    "6" => address.addr.is_ipv6(),
                    _ => false,
                };
                if !fam_ok {
                    return Err(format!("ips: version {ver:?} does not match {address}"));
                }
            }
            // A negative index (some 0.3 plugins wrote -1) means "none".
            let interface = match ip.interface {
                Some(i) if i >= 0 => Some(i as usize),
                _ => None,
            };
            ips.push(IpConfig {
                address,
                gateway: opt_ip(ip.gateway, "ips gateway")?,
                interface,
            });
        }
        let routes = w
            .routes
            .unwrap_or_default()
            .into_iter()
            .map(route)
            .collect::<Result<_, _>>()?;
        Ok(Self {
            cni_version: version,
            interfaces,
            ips,
            routes,
            dns: dns(w.dns),
        })
    }

    fn from_legacy(v: &Value, version: CniVersion) -> Result<Self, String> {
        let w: WireLegacy =
            serde_json::from_value(v.clone()).map_err(|e| format!("result: {e}"))?;
        let mut ips = Vec::new();
        let mut routes = Vec::new();
        for (fam, ip) in [("ip4", w.ip4), ("ip6", w.ip6)] {
            let Some(ip) = ip else { continue };
            let address: IpCidr = ip.ip.parse().map_err(|e| format!("{fam}: {e}"))?;
            if (fam == "ip4") != address.addr.is_ipv4() {
                return Err(format!("{fam}: {address} is of the other family"));
            }
            ips.push(IpConfig {
                address,
                gateway: opt_ip(ip.gateway, "gateway")?,
                interface: None,
            });
            for r in ip.routes.unwrap_or_default() {
                routes.push(route(r)?);
            }
        }
        Ok(Self {
            cni_version: version,
            interfaces: Vec::new(),
            ips,
            routes,
            dns: dns(w.dns),
        })
    }

    /// Parses plugin output bytes.
    pub fn parse(bytes: &[u8], request_version: CniVersion) -> Result<Self, String> {
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| format!("result is not JSON: {e}"))?;
        Self::from_value(&v, request_version)
    }

    /// The interface named `ifname` inside the sandbox, with its index.
    pub fn sandbox_interface(&self, ifname: &str) -> Option<(usize, &Interface)> {
        self.interfaces
            .iter()
            .enumerate()
            .find(|(_, i)| i.name == ifname && i.sandbox.is_some())
    }

    /// The pod's IPs on the sandbox interface `ifname`, IPv4 first (CRI's
    /// primary pod IP is the first one). IPs without an interface index
    /// (pre-0.3 results, plugins that omit it) count when no IP names the
    /// sandbox interface.
    pub fn pod_ips(&self, ifname: &str) -> Vec<IpAddr> {
        let idx = self.sandbox_interface(ifname).map(|(i, _)| i);
        let mut on_if: Vec<IpAddr> = self
            .ips
            .iter()
            .filter(|ip| idx.is_some() && ip.interface == idx)
            .map(|ip| ip.address.addr)
            .collect();
        if on_if.is_empty() {
            on_if = self
                .ips
                .iter()
                .filter(|ip| ip.interface.is_none())
                .map(|ip| ip.address.addr)
                .collect();
        }
        let mut out: Vec<IpAddr> = Vec::with_capacity(on_if.len());
        for ip in on_if
            .iter()
            .filter(|i| i.is_ipv4())
            .chain(on_if.iter().filter(|i| i.is_ipv6()))
        {
            if !out.contains(ip) {
                out.push(*ip);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cidr() {
        let c: IpCidr = "10.86.0.5/16".parse().unwrap();
        assert_eq!(c.to_string(), "10.86.0.5/16");
        let c6: IpCidr = "fd00::5/64".parse().unwrap();
        assert!(c6.addr.is_ipv6());
        for bad in [
            "10.0.0.1",
            "10.0.0.1/33",
            "x/8",
            "fd00::1/129",
            "10.0.0.1/-1",
        ] {
            assert!(bad.parse::<IpCidr>().is_err(), "{bad}");
        }
    }

    fn rich(version: &str, with_ip_version: bool) -> Value {
        let mut v4 = json!({"address": "10.86.0.5/16", "gateway": "10.86.0.1", "interface": 2});
        let mut v6 = json!({"address": "fd86::5/64", "gateway": "fd86::1", "interface": 2});
        let host = json!({"address": "10.86.0.1/16", "interface": 0});
        if with_ip_version {
            v4["version"] = "4".into();
            v6["version"] = "6".into();
        }
        json!({
            "cniVersion": version,
            "interfaces": [
                {"name": "berth0", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "veth1234", "mac": "aa:bb:cc:dd:ee:02"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/run/netns/x", "mtu": 1500}
            ],
            "ips": [v6, host, v4],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.86.0.1"}, {"dst": "::/0", "mtu": 1400, "table": 5, "scope": 0}],
            "dns": {"nameservers": ["10.86.0.1"], "search": ["svc.local"], "options": ["ndots:5"]},
            "extra": "ignored"
        })
    }

    #[test]
    fn parses_every_rich_version() {
        for (ver, with_version) in [
            ("0.3.0", true),
            ("0.3.1", true),
            ("0.4.0", true),
            ("1.0.0", false),
            ("1.1.0", false),
        ] {
            let r = CniResult::from_value(&rich(ver, with_version), CniVersion::V1_0_0)
                .unwrap_or_else(|e| panic!("{ver}: {e}"));
            assert_eq!(r.cni_version.to_string(), ver);
            assert_eq!(r.interfaces.len(), 3);
            assert_eq!(r.interfaces[2].sandbox.as_deref(), Some("/run/netns/x"));
            assert_eq!(r.interfaces[0].sandbox, None);
            assert_eq!(r.ips.len(), 3);
            assert_eq!(r.routes.len(), 2);
            assert_eq!(r.routes[1].mtu, Some(1400));
            assert_eq!(r.dns.nameservers, vec!["10.86.0.1"]);
            assert_eq!(r.dns.options, vec!["ndots:5"]);
            let ips = r.pod_ips("eth0");
            assert_eq!(
                ips,
                vec![
                    "10.86.0.5".parse::<IpAddr>().unwrap(),
                    "fd86::5".parse().unwrap()
                ],
                "{ver}: v4 first, host-side IP excluded"
            );
            assert_eq!(r.sandbox_interface("eth0").unwrap().0, 2);
            assert!(r.pod_ips("eth1").is_empty(), "{ver}");
        }
    }

    #[test]
    fn legacy_and_bare_results() {
        let r = CniResult::from_value(
            &json!({"cniVersion": "0.2.0",
                "ip4": {"ip": "10.1.0.7/24", "gateway": "10.1.0.1", "routes": [{"dst": "0.0.0.0/0"}]},
                "ip6": {"ip": "fd01::7/64"},
                "dns": {"nameservers": ["10.1.0.1"]}}),
            CniVersion::V0_2_0,
        )
        .unwrap();
        assert_eq!(r.pod_ips("eth0").len(), 2);
        assert_eq!(r.routes.len(), 1);
        // No cniVersion: the request's version decides the shape.
        let r = CniResult::from_value(&json!({"ip4": {"ip": "10.1.0.8/24"}}), CniVersion::V0_1_0)
            .unwrap();
        assert_eq!(
            r.pod_ips("eth0"),
            vec!["10.1.0.8".parse::<IpAddr>().unwrap()]
        );
        // IPAM-style rich result without interfaces.
        let r = CniResult::from_value(
            &json!({"cniVersion": "1.0.0", "ips": [{"address": "10.2.0.9/24"}]}),
            CniVersion::V1_0_0,
        )
        .unwrap();
        assert_eq!(
            r.pod_ips("eth0"),
            vec!["10.2.0.9".parse::<IpAddr>().unwrap()]
        );
        // Empty result (e.g. a plugin that only configures the host).
        let r = CniResult::from_value(&json!({"cniVersion": "1.0.0"}), CniVersion::V1_0_0).unwrap();
        assert!(r.ips.is_empty() && r.dns.is_empty());
    }

    #[test]
    fn rejects_bad_results() {
        for (v, want) in [
            (json!("x"), "not a JSON object"),
            (
                json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1"}]}),
                "CIDR",
            ),
            (
                json!({"cniVersion": "0.4.0", "ips": [{"address": "10.0.0.1/8", "version": "6"}]}),
                "does not match",
            ),
            (
                json!({"cniVersion": "1.0.0", "routes": [{"dst": "nope"}]}),
                "route dst",
            ),
            (
                json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/8", "gateway": "g"}]}),
                "gateway",
            ),
            (json!({"cniVersion": "x"}), "cniVersion"),
            (
                json!({"cniVersion": "0.2.0", "ip4": {"ip": "fd00::1/64"}}),
                "other family",
            ),
        ] {
            let err = CniResult::from_value(&v, CniVersion::V1_0_0).unwrap_err();
            assert!(err.contains(want), "{v}: {err}");
        }
    }
}
