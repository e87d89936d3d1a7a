//! cAdvisor-named metrics for `ListMetricDescriptors` and
//! `ListPodSandboxMetrics` (the kubelet's `/metrics/cadvisor` when
//! `PodAndContainerStatsFromCRI` is on).
//!
//! Label keys are `id`, `name`, `image` (plus `interface` for network), as
//! CRI-O; a pod's own series carry `name="POD"` and an empty image. Values
//! are CRI `UInt64Value`s, so the `*_seconds_total` counters are whole
//! seconds, as in containerd and CRI-O. Timestamps are 0: every value is
//! read live, and the kubelet then stamps it itself.

use berth_api::v1::{Metric, MetricDescriptor, MetricType, UInt64Value};

use super::parse::IfaceCounters;
use crate::container::ContainerRecord;
use berth_cgroup::Sample;

const BASE_LABELS: [&str; 3] = ["id", "name", "image"];

struct Spec {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    per_interface: bool,
}

const fn spec(name: &'static str, help: &'static str, kind: MetricType) -> Spec {
    Spec {
        name,
        help,
        kind,
        per_interface: false,
    }
}

const fn net(name: &'static str, help: &'static str) -> Spec {
    Spec {
        name,
        help,
        kind: MetricType::Counter,
        per_interface: true,
    }
}

use MetricType::{Counter, Gauge};

/// Fixed for the life of the daemon (the kubelet reads them once).
const SPECS: &[Spec] = &[
    spec(
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        Counter,
    ),
    spec(
        "container_cpu_user_seconds_total",
        "Cumulative user cpu time consumed in seconds.",
        Counter,
    ),
    spec(
        "container_cpu_system_seconds_total",
        "Cumulative system cpu time consumed in seconds.",
        Counter,
    ),
    spec(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        Gauge,
    ),
    spec(
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        Gauge,
    ),
    spec("container_memory_rss", "Size of RSS in bytes.", Gauge),
    spec(
        "container_memory_cache",
        "Number of bytes of page cache memory.",
        Gauge,
    ),
    spec(
        "container_memory_swap",
        "Container swap usage in bytes.",
        Gauge,
    ),
    spec(
        "container_oom_events_total",
        "Count of out of memory events observed for the container",
        Counter,
    ),
    spec(
        "container_processes",
        "Number of processes running inside the container.",
        Gauge,
    ),
    net(
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received",
    ),
    net(
        "container_network_receive_packets_total",
        "Cumulative count of packets received",
    ),
    net(
        "container_network_receive_packets_dropped_total",
        "Cumulative count of packets dropped while receiving",
    ),
    net(
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving",
    ),
    net(
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted",
    ),
    net(
        "container_network_transmit_packets_total",
        "Cumulative count of packets transmitted",
    ),
    net(
        "container_network_transmit_packets_dropped_total",
        "Cumulative count of packets dropped while transmitting",
    ),
    net(
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting",
    ),
];

pub fn descriptors() -> Vec<MetricDescriptor> {
    SPECS
        .iter()
        .map(|s| {
            let mut label_keys: Vec<String> = BASE_LABELS.iter().map(|k| k.to_string()).collect();
            if s.per_interface {
                label_keys.push("interface".into());
            }
            MetricDescriptor {
                name: s.name.into(),
                help: s.help.into(),
                label_keys,
            }
        })
        .collect()
}

fn metric(name: &'static str, labels: &[String], value: u64) -> Metric {
    let kind = SPECS
        .iter()
        .find(|s| s.name == name)
        .map_or(Gauge, |s| s.kind);
    Metric {
        name: name.into(),
        timestamp: 0,
        metric_type: kind as i32,
        label_values: labels.to_vec(),
        value: Some(UInt64Value { value }),
    }
}

const NS_PER_S: u64 = 1_000_000_000;

/// A container's metrics from one reading of its cgroup (read with `extra`).
pub fn container(rec: &ContainerRecord, s: &Sample) -> Vec<Metric> {
    let labels = [rec.id.clone(), rec.name.clone(), rec.image.clone()];
    let mut out = Vec::new();
    let mut push = |name, v: Option<u64>| {
        if let Some(v) = v {
            out.push(metric(name, &labels, v));
        }
    };
    if let Some(c) = &s.cpu {
        push(
            "container_cpu_usage_seconds_total",
            Some(c.usage_ns / NS_PER_S),
        );
        push(
            "container_cpu_user_seconds_total",
            c.user_ns.map(|n| n / NS_PER_S),
        );
        push(
            "container_cpu_system_seconds_total",
            c.system_ns.map(|n| n / NS_PER_S),
        );
    }
    if let Some(m) = &s.memory {
        push("container_memory_usage_bytes", Some(m.usage));
        push("container_memory_working_set_bytes", Some(m.working_set()));
        push("container_memory_rss", Some(m.rss));
        push("container_memory_cache", Some(m.cache));
    }
    push("container_memory_swap", s.swap.map(|w| w.usage));
    push("container_oom_events_total", s.oom_kills);
    push("container_processes", s.pids);
    out
}

/// The pod's network metrics, one series per interface.
pub fn pod_network(pod_id: &str, ifaces: &[IfaceCounters]) -> Vec<Metric> {
    let mut out = Vec::new();
    for i in ifaces {
        let labels = [
            pod_id.to_string(),
            "POD".to_string(),
            String::new(),
            i.name.clone(),
        ];
        for (name, value) in [
            ("container_network_receive_bytes_total", i.rx_bytes),
            ("container_network_receive_packets_total", i.rx_packets),
            (
                "container_network_receive_packets_dropped_total",
                i.rx_dropped,
            ),
            ("container_network_receive_errors_total", i.rx_errors),
            ("container_network_transmit_bytes_total", i.tx_bytes),
            ("container_network_transmit_packets_total", i.tx_packets),
            (
                "container_network_transmit_packets_dropped_total",
                i.tx_dropped,
            ),
            ("container_network_transmit_errors_total", i.tx_errors),
        ] {
            out.push(metric(name, &labels, value));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_cgroup::{CpuSample, MemorySample, SwapSample};

    fn rec() -> ContainerRecord {
        serde_json::from_value(serde_json::json!({
            "id": "c1", "pod_id": "p1", "name": "app", "attempt": 0,
            "image": "busybox:latest", "image_id": "sha256:x", "image_ref": "sha256:x",
            "labels": {}, "annotations": {}, "log_path": "", "stop_signal": 15,
            "state": "RUNNING", "created_at": 1, "started_at": 1, "finished_at": 0,
            "exit_code": 0, "oom_killed": false, "bundle": "/b", "layer_dir": "/l"
        }))
        .unwrap()
    }

    /// Every series matches a descriptor, with as many label values as keys.
    fn check(metrics: &[Metric]) {
        let descs = descriptors();
        for m in metrics {
            let d = descs
                .iter()
                .find(|d| d.name == m.name)
                .unwrap_or_else(|| panic!("{} has no descriptor", m.name));
            assert_eq!(d.label_keys.len(), m.label_values.len(), "{}", m.name);
        }
    }

    #[test]
    fn container_metrics_match_descriptors() {
        let s = Sample {
            cpu: Some(CpuSample {
                usage_ns: 3_500_000_000,
                user_ns: Some(2_000_000_000),
                system_ns: Some(1_000_000_000),
            }),
            memory: Some(MemorySample {
                usage: 1000,
                inactive_file: 100,
                rss: 600,
                cache: 300,
                ..Default::default()
            }),
            swap: Some(SwapSample {
                usage: 5,
                available: None,
            }),
            pids: Some(2),
            oom_kills: Some(1),
            ..Default::default()
        };
        let m = container(&rec(), &s);
        check(&m);
        let get = |n: &str| m.iter().find(|x| x.name == n).unwrap();
        assert_eq!(
            get("container_cpu_usage_seconds_total")
                .value
                .unwrap()
                .value,
            3
        );
        assert_eq!(
            get("container_cpu_usage_seconds_total").metric_type,
            MetricType::Counter as i32
        );
        assert_eq!(
            get("container_memory_working_set_bytes")
                .value
                .unwrap()
                .value,
            900
        );
        assert_eq!(
            get("container_memory_cache").metric_type,
            MetricType::Gauge as i32
        );
        assert_eq!(get("container_oom_events_total").value.unwrap().value, 1);
        assert_eq!(
            get("container_memory_rss").label_values,
            vec!["c1", "app", "busybox:latest"]
        );
        // Nothing read, nothing reported.
        assert!(container(&rec(), &Sample::default()).is_empty());
    }

    #[test]
    fn network_metrics_per_interface() {
        let ifaces = [IfaceCounters {
            name: "eth0".into(),
            rx_bytes: 10,
            tx_bytes: 20,
            ..Default::default()
        }];
        let m = pod_network("p1", &ifaces);
        check(&m);
        assert_eq!(m.len(), 8);
        let rx = m
            .iter()
            .find(|x| x.name == "container_network_receive_bytes_total")
            .unwrap();
        assert_eq!(rx.label_values, vec!["p1", "POD", "", "eth0"]);
        assert_eq!(rx.value.unwrap().value, 10);
    }

    #[test]
    fn descriptor_names_are_unique() {
        let d = descriptors();
        let mut names: Vec<&str> = d.iter().map(|d| d.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), d.len());
    }
}
