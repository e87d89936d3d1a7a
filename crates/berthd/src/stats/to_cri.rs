//! Readings turned into CRI stats messages, field by field as containerd
//! fills them (working set = usage - inactive file, available only when
//! limited, PSI totals in nanoseconds).

use berth_api::v1::{
    ContainerAttributes, CpuUsage, FilesystemIdentifier, FilesystemUsage, IoUsage, MemoryUsage,
    NetworkInterfaceUsage, NetworkUsage, PodSandboxAttributes, PsiData, PsiStats, SwapUsage,
    UInt64Value,
};
use berth_image::FsUsage;

use super::network;
use super::parse::IfaceCounters;
use crate::container::ContainerRecord;
use crate::sandbox::SandboxRecord;
use berth_cgroup::{CpuSample, MemorySample, Psi, PsiLine, Sample, SwapSample};

fn v(value: u64) -> Option<UInt64Value> {
    Some(UInt64Value { value })
}

pub fn container_attributes(rec: &ContainerRecord) -> ContainerAttributes {
    ContainerAttributes {
        id: rec.id.clone(),
        metadata: Some(rec.metadata()),
        labels: rec.labels.clone().into_iter().collect(),
        annotations: rec.annotations.clone().into_iter().collect(),
    }
}

pub fn pod_attributes(rec: &SandboxRecord) -> PodSandboxAttributes {
    PodSandboxAttributes {
        id: rec.id.clone(),
        metadata: Some(rec.metadata()),
        labels: rec.labels.clone().into_iter().collect(),
        annotations: rec.annotations.clone().into_iter().collect(),
    }
}

fn psi_data(l: &PsiLine) -> PsiData {
    PsiData {
        // The kernel counts microseconds; the CRI wants nanoseconds.
        total: l.total_us.saturating_mul(1000),
        avg10: l.avg10,
        avg60: l.avg60,
        avg300: l.avg300,
    }
}

pub fn psi(p: &Psi) -> PsiStats {
    PsiStats {
        full: p.full.as_ref().map(psi_data),
        some: p.some.as_ref().map(psi_data),
    }
}

pub fn cpu(ts: i64, c: &CpuSample, nano_cores: Option<u64>, p: Option<&Psi>) -> CpuUsage {
    CpuUsage {
        timestamp: ts,
        usage_core_nano_seconds: v(c.usage_ns),
        usage_nano_cores: nano_cores.and_then(v),
        psi: p.map(psi),
    }
}

pub fn memory(ts: i64, m: &MemorySample, p: Option<&Psi>) -> MemoryUsage {
    MemoryUsage {
        timestamp: ts,
        working_set_bytes: v(m.working_set()),
        available_bytes: m.available().and_then(v),
        usage_bytes: v(m.usage),
        rss_bytes: v(m.rss),
        page_faults: m.page_faults.and_then(v),
        major_page_faults: m.major_page_faults.and_then(v),
        psi: p.map(psi),
    }
}

pub fn swap(ts: i64, s: &SwapSample) -> SwapUsage {
    SwapUsage {
        timestamp: ts,
        swap_available_bytes: s.available.and_then(v),
        swap_usage_bytes: v(s.usage),
    }
}

/// IO carries only PSI (cgroup v2), as in containerd.
pub fn io(ts: i64, s: &Sample) -> Option<IoUsage> {
    s.io_psi.as_ref().map(|p| IoUsage {
        timestamp: ts,
        psi: Some(psi(p)),
    })
}

pub fn writable_layer(u: &FsUsage) -> FilesystemUsage {
    FilesystemUsage {
        timestamp: u.timestamp_nanos,
        fs_id: Some(FilesystemIdentifier {
            mountpoint: u.mountpoint.display().to_string(),
        }),
        used_bytes: v(u.used_bytes),
        inodes_used: v(u.inodes_used),
    }
}

fn iface(i: &IfaceCounters) -> NetworkInterfaceUsage {
    NetworkInterfaceUsage {
        name: i.name.clone(),
        rx_bytes: v(i.rx_bytes),
        rx_errors: v(i.rx_errors),
        tx_bytes: v(i.tx_bytes),
        tx_errors: v(i.tx_errors),
    }
}

/// The default interface, and the others "excluding the default" as the
/// proto words it. `None` without any interface but loopback (the kubelet
/// dereferences the default interface of a usage it is given).
pub fn network(ts: i64, ifaces: Vec<IfaceCounters>) -> Option<NetworkUsage> {
    let (default, others) = network::split_default(ifaces)?;
    Some(NetworkUsage {
        timestamp: ts,
        default_interface: Some(iface(&default)),
        interfaces: others.iter().map(iface).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_fields_as_the_kubelet_reads_them() {
        let m = MemorySample {
            usage: 1000,
            limit: Some(4000),
            inactive_file: 300,
            rss: 500,
            cache: 400,
            page_faults: Some(9),
            major_page_faults: Some(1),
        };
        let u = memory(7, &m, None);
        assert_eq!(u.timestamp, 7);
        assert_eq!(u.working_set_bytes.unwrap().value, 700);
        assert_eq!(u.available_bytes.unwrap().value, 3300);
        assert_eq!(u.usage_bytes.unwrap().value, 1000);
        assert_eq!(u.rss_bytes.unwrap().value, 500);
        assert_eq!(u.page_faults.unwrap().value, 9);
        assert_eq!(u.major_page_faults.unwrap().value, 1);
        let unlimited = memory(7, &MemorySample { limit: None, ..m }, None);
        assert!(unlimited.available_bytes.is_none());
    }

    #[test]
    fn psi_totals_become_nanoseconds() {
        let p = Psi {
            some: Some(PsiLine {
                avg10: 1.0,
                avg60: 2.0,
                avg300: 3.0,
                total_us: 5,
            }),
            full: None,
        };
        let c = cpu(1, &CpuSample::default(), Some(42), Some(&p));
        assert_eq!(c.usage_nano_cores.unwrap().value, 42);
        let some = c.psi.unwrap().some.unwrap();
        assert_eq!((some.total, some.avg60), (5000, 2.0));
    }

    #[test]
    fn network_without_interfaces_is_absent() {
        assert!(network(1, vec![]).is_none());
        let n = network(
            1,
            vec![
                IfaceCounters {
                    name: "eth0".into(),
                    rx_bytes: 10,
                    tx_bytes: 20,
                    ..Default::default()
                },
                IfaceCounters {
                    name: "net1".into(),
                    ..Default::default()
                },
            ],
        )
        .unwrap();
        let d = n.default_interface.unwrap();
        assert_eq!((d.name.as_str(), d.rx_bytes.unwrap().value), ("eth0", 10));
        assert_eq!(n.interfaces.len(), 1);
        assert_eq!(n.interfaces[0].name, "net1");
    }
}
