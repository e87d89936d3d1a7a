//! cAdvisor-named metrics for `ListMetricDescriptors` and
//! `ListPodSandboxMetrics` (the kubelet's `/metrics/cadvisor` when
//! `PodAndContainerStatsFromCRI` is on): the set critest checks, with
//! cAdvisor's names, help, types and label keys (`metrics/prometheus.go`).
//!
//! Label keys are `id`, `name`, `image` (as CRI-O), then the metric's own
//! (`interface`, `device`, ...). A container's `name` is the kubelet-style
//! `k8s_<container>_<pod>_<namespace>_<pod uid>_<attempt>`, as CRI-O names
//! its containers: with the kubelet's CRI collector these three labels are
//! all `/metrics/cadvisor` has, and this one says which pod a series is
//! of. A pod's own series carry `name="POD"` and an empty image. Values are CRI `UInt64Value`s, so the `*_seconds_total`
//! counters are whole seconds, as in containerd and CRI-O. Timestamps are
//! 0: every value is read live, and the kubelet then stamps it itself.
//!
//! Where Berth differs from cAdvisor:
//! - `container_cpu_usage_seconds_total` has no `cpu` label (as CRI-O).
//! - The `container_spec_*` series come from the container's record (what
//!   Berth asked the kernel for), not from cgroup files: an unset CPU
//!   period or quota has no series, where cAdvisor reads the kernel's
//!   default period.
//! - `container_ulimits_soft` has no series for an unlimited value
//!   (cAdvisor's -1 does not fit a UInt64).
//! - `container_start_time_seconds` is the container's start (its creation
//!   until it starts), not its cgroup's creation.
//! - Only the network series are pod-level; the rest are per container.

use berth_api::v1::{Metric, MetricDescriptor, MetricType, UInt64Value};

use super::parse::IfaceCounters;
use super::procs::ProcStats;
use crate::container::ContainerRecord;
use crate::sandbox::SandboxRecord;
use berth_cgroup::{Psi, Sample};

const BASE_LABELS: [&str; 3] = ["id", "name", "image"];

struct Spec {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    /// Label keys after [`BASE_LABELS`].
    labels: &'static [&'static str],
}

use MetricType::{Counter, Gauge};

/// One constant per metric (`IDENT: name, type, [label keys], help;`) and
/// [`SPECS`], the list of them all.
macro_rules! specs {
    ($($id:ident: $name:literal, $kind:ident, [$($label:literal),*], $help:literal;)*) => {
        $(const $id: Spec = Spec { name: $name, help: $help, kind: $kind, labels: &[$($label),*] };)*
        /// Every metric, fixed for the life of the daemon (the kubelet
        /// reads them once). Those a host cannot give (PSI on cgroup v1,
        /// hugetlb without the controller) are described all the same and
        /// have no series.
        const SPECS: &[&Spec] = &[$(&$id),*];
    };
}

specs! {
    LAST_SEEN: "container_last_seen", Gauge, [],
        "Last time a container was seen by the exporter";
    START_TIME: "container_start_time_seconds", Gauge, [],
        "Start time of the container since unix epoch in seconds.";
    CPU_USAGE: "container_cpu_usage_seconds_total", Counter, [],
        "Cumulative cpu time consumed in seconds.";
    CPU_USER: "container_cpu_user_seconds_total", Counter, [],
        "Cumulative user cpu time consumed in seconds.";
    CPU_SYSTEM: "container_cpu_system_seconds_total", Counter, [],
        "Cumulative system cpu time consumed in seconds.";
    CFS_PERIODS: "container_cpu_cfs_periods_total", Counter, [],
        "Number of elapsed enforcement period intervals.";
    CFS_THROTTLED_PERIODS: "container_cpu_cfs_throttled_periods_total", Counter, [],
        "Number of throttled period intervals.";
    CFS_THROTTLED_SECONDS: "container_cpu_cfs_throttled_seconds_total", Counter, [],
        "Total time duration the container has been throttled.";
    MEMORY_USAGE: "container_memory_usage_bytes", Gauge, [],
        "Current memory usage in bytes, including all memory regardless of when it was accessed";
    MEMORY_MAX_USAGE: "container_memory_max_usage_bytes", Gauge, [],
        "Maximum memory usage recorded in bytes";
    MEMORY_WORKING_SET: "container_memory_working_set_bytes", Gauge, [],
        "Current working set in bytes.";
    MEMORY_RSS: "container_memory_rss", Gauge, [],
        "Size of RSS in bytes.";
    MEMORY_CACHE: "container_memory_cache", Gauge, [],
        "Number of bytes of page cache memory.";
    MEMORY_SWAP: "container_memory_swap", Gauge, [],
        "Container swap usage in bytes.";
    MEMORY_KERNEL: "container_memory_kernel_usage", Gauge, [],
        "Size of kernel memory allocated in bytes.";
    MEMORY_MAPPED_FILE: "container_memory_mapped_file", Gauge, [],
        "Size of memory mapped files in bytes.";
    MEMORY_FAILCNT: "container_memory_failcnt", Counter, [],
        "Number of memory usage hits limits";
    MEMORY_FAILURES: "container_memory_failures_total", Counter, ["failure_type", "scope"],
        "Cumulative count of memory allocation failures.";
    OOM_EVENTS: "container_oom_events_total", Counter, [],
        "Count of out of memory events observed for the container";
    PROCESSES: "container_processes", Gauge, [],
        "Number of processes running inside the container.";
    THREADS: "container_threads", Gauge, [],
        "Number of threads running inside the container";
    THREADS_MAX: "container_threads_max", Gauge, [],
        "Maximum number of threads allowed inside the container, infinity if value is zero";
    FILE_DESCRIPTORS: "container_file_descriptors", Gauge, [],
        "Number of open file descriptors for the container.";
    SOCKETS: "container_sockets", Gauge, [],
        "Number of open sockets for the container.";
    ULIMITS_SOFT: "container_ulimits_soft", Gauge, ["ulimit"],
        "Soft ulimit values for the container root process (an unlimited one has no series)";
    SPEC_CPU_PERIOD: "container_spec_cpu_period", Gauge, [],
        "CPU period of the container.";
    SPEC_CPU_QUOTA: "container_spec_cpu_quota", Gauge, [],
        "CPU quota of the container.";
    SPEC_CPU_SHARES: "container_spec_cpu_shares", Gauge, [],
        "CPU share of the container.";
    SPEC_MEMORY_LIMIT: "container_spec_memory_limit_bytes", Gauge, [],
        "Memory limit for the container.";
    SPEC_MEMORY_SWAP_LIMIT: "container_spec_memory_swap_limit_bytes", Gauge, [],
        "Memory swap limit for the container.";
    SPEC_MEMORY_RESERVATION: "container_spec_memory_reservation_limit_bytes", Gauge, [],
        "Memory reservation limit for the container.";
    HUGETLB_USAGE: "container_hugetlb_usage_bytes", Gauge, ["pagesize"],
        "Current hugepage usage in bytes";
    HUGETLB_MAX_USAGE: "container_hugetlb_max_usage_bytes", Gauge, ["pagesize"],
        "Maximum hugepage usage recorded in bytes";
    PRESSURE_CPU_STALLED: "container_pressure_cpu_stalled_seconds_total", Counter, [],
        "Total time duration no tasks in the container could make progress due to CPU congestion.";
    PRESSURE_CPU_WAITING: "container_pressure_cpu_waiting_seconds_total", Counter, [],
        "Total time duration tasks in the container have waited due to CPU congestion.";
    PRESSURE_MEMORY_STALLED: "container_pressure_memory_stalled_seconds_total", Counter, [],
        "Total time duration no tasks in the container could make progress due to memory congestion.";
    PRESSURE_MEMORY_WAITING: "container_pressure_memory_waiting_seconds_total", Counter, [],
        "Total time duration tasks in the container have waited due to memory congestion.";
    PRESSURE_IO_STALLED: "container_pressure_io_stalled_seconds_total", Counter, [],
        "Total time duration no tasks in the container could make progress due to IO congestion.";
    PRESSURE_IO_WAITING: "container_pressure_io_waiting_seconds_total", Counter, [],
        "Total time duration tasks in the container have waited due to IO congestion.";
    FS_INODES_FREE: "container_fs_inodes_free", Gauge, ["device"],
        "Number of available Inodes";
    FS_INODES_TOTAL: "container_fs_inodes_total", Gauge, ["device"],
        "Number of Inodes";
    FS_LIMIT: "container_fs_limit_bytes", Gauge, ["device"],
        "Number of bytes that can be consumed by the container on this filesystem.";
    FS_USAGE: "container_fs_usage_bytes", Gauge, ["device"],
        "Number of bytes that are consumed by the container on this filesystem.";
    FS_READS_BYTES: "container_fs_reads_bytes_total", Counter, ["device"],
        "Cumulative count of bytes read";
    FS_READS: "container_fs_reads_total", Counter, ["device"],
        "Cumulative count of reads completed";
    FS_WRITES_BYTES: "container_fs_writes_bytes_total", Counter, ["device"],
        "Cumulative count of bytes written";
    FS_WRITES: "container_fs_writes_total", Counter, ["device"],
        "Cumulative count of writes completed";
    BLKIO_DEVICE_USAGE: "container_blkio_device_usage_total", Counter, ["device", "major", "minor", "operation"],
        "Blkio Device bytes usage";
    NET_RX_BYTES: "container_network_receive_bytes_total", Counter, ["interface"],
        "Cumulative count of bytes received";
    NET_RX_PACKETS: "container_network_receive_packets_total", Counter, ["interface"],
        "Cumulative count of packets received";
    NET_RX_DROPPED: "container_network_receive_packets_dropped_total", Counter, ["interface"],
        "Cumulative count of packets dropped while receiving";
    NET_RX_ERRORS: "container_network_receive_errors_total", Counter, ["interface"],
        "Cumulative count of errors encountered while receiving";
    NET_TX_BYTES: "container_network_transmit_bytes_total", Counter, ["interface"],
        "Cumulative count of bytes transmitted";
    NET_TX_PACKETS: "container_network_transmit_packets_total", Counter, ["interface"],
        "Cumulative count of packets transmitted";
    NET_TX_DROPPED: "container_network_transmit_packets_dropped_total", Counter, ["interface"],
        "Cumulative count of packets dropped while transmitting";
    NET_TX_ERRORS: "container_network_transmit_errors_total", Counter, ["interface"],
        "Cumulative count of errors encountered while transmitting";
}

pub fn descriptors() -> Vec<MetricDescriptor> {
    SPECS
        .iter()
        .map(|s| MetricDescriptor {
            name: s.name.into(),
            help: s.help.into(),
            label_keys: BASE_LABELS
                .iter()
                .chain(s.labels)
                .map(|k| k.to_string())
                .collect(),
        })
        .collect()
}

/// Series being built, all with the same base label values.
struct Series<'a> {
    base: &'a [String; 3],
    out: Vec<Metric>,
}

impl Series<'_> {
    /// A series of `spec` with `extra` label values, when there is a value.
    fn add(&mut self, spec: &Spec, extra: &[&str], value: Option<u64>) {
        debug_assert_eq!(extra.len(), spec.labels.len(), "{}", spec.name);
        let Some(value) = value else {
            return;
        };
        let mut label_values = Vec::with_capacity(BASE_LABELS.len() + extra.len());
        label_values.extend_from_slice(self.base);
        label_values.extend(extra.iter().map(|v| v.to_string()));
        self.out.push(Metric {
            name: spec.name.into(),
            timestamp: 0,
            metric_type: spec.kind as i32,
            label_values,
            value: Some(UInt64Value { value }),
        });
    }
}

const NS_PER_S: u64 = 1_000_000_000;
const US_PER_S: u64 = 1_000_000;

/// The filesystem holding a container's writable layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsStats {
    /// `/dev/vda`, or the mount source of a filesystem without a block
    /// device.
    pub device: String,
    /// Bytes of the writable layer.
    pub usage: u64,
    /// The filesystem's size and inodes (statvfs).
    pub capacity: Option<u64>,
    pub inodes: Option<u64>,
    pub inodes_free: Option<u64>,
}

/// What one container's series are made of, besides its record.
pub struct ContainerInputs<'a> {
    /// Its `name` label ([`kubelet_name`]).
    pub name: &'a str,
    /// The reading of its cgroup (`Cgroup::metrics_sample`).
    pub sample: &'a Sample,
    pub procs: Option<&'a ProcStats>,
    pub fs: Option<&'a FsStats>,
    /// The names of `sample.io`'s devices, in its order.
    pub io_devices: &'a [String],
    /// Seconds since the epoch.
    pub now_s: u64,
    /// The host is on cgroup v2, where the kernel's swap limit is swap
    /// alone, not memory+swap as in the OCI spec (and on v1).
    pub v2: bool,
}

/// True when the reading found the container's cgroup with a task in it.
/// An exited container has no series (its cgroup is gone, or empty until
/// the container is removed), so its `container_last_seen` stops, as
/// alerts on it expect; cAdvisor on containerd or CRI-O, whose runtimes
/// remove the cgroup at exit, reports it no longer.
pub fn seen(s: &Sample) -> bool {
    (s.cpu.is_some() || s.memory.is_some() || s.pids.is_some()) && s.pids != Some(0)
}

/// cAdvisor reports CFS throttling only for a container with a CPU quota
/// (a record without resources may have one).
pub fn has_cpu_quota(rec: &ContainerRecord) -> bool {
    rec.resources.as_ref().is_none_or(|r| r.cpu_quota > 0)
}

/// A container's series. None for a container whose cgroup was not found.
pub fn container(rec: &ContainerRecord, i: &ContainerInputs) -> Vec<Metric> {
    let s = i.sample;
    if !seen(s) {
        return Vec::new();
    }
    let base = [
        rec.id.clone(),
        i.name.to_owned(),
        rec.shown_image().to_owned(),
    ];
    let mut m = Series {
        base: &base,
        out: Vec::with_capacity(64),
    };
    m.add(&LAST_SEEN, &[], Some(i.now_s));
    let start_ns = if rec.started_at > 0 {
        rec.started_at
    } else {
        rec.created_at
    };
    m.add(
        &START_TIME,
        &[],
        u64::try_from(start_ns).ok().map(|ns| ns / NS_PER_S),
    );
    spec_series(&mut m, rec, i.v2);
    if let Some(c) = &s.cpu {
        m.add(&CPU_USAGE, &[], Some(c.usage_ns / NS_PER_S));
        m.add(&CPU_USER, &[], c.user_ns.map(|n| n / NS_PER_S));
        m.add(&CPU_SYSTEM, &[], c.system_ns.map(|n| n / NS_PER_S));
    }
    if let Some(c) = s.cfs.filter(|_| has_cpu_quota(rec)) {
        m.add(&CFS_PERIODS, &[], Some(c.periods));
        m.add(&CFS_THROTTLED_PERIODS, &[], Some(c.throttled_periods));
        m.add(&CFS_THROTTLED_SECONDS, &[], Some(c.throttled_ns / NS_PER_S));
    }
    memory_series(&mut m, s);
    m.add(&OOM_EVENTS, &[], s.oom_kills);
    // cAdvisor's threads are the cgroup's tasks (pids.current); its
    // processes are those of cgroup.procs.
    m.add(&THREADS, &[], s.pids);
    m.add(&THREADS_MAX, &[], s.pids_max.map(|max| max.unwrap_or(0)));
    if let Some(p) = i.procs {
        m.add(&PROCESSES, &[], Some(p.processes));
        m.add(&FILE_DESCRIPTORS, &[], Some(p.fds));
        m.add(&SOCKETS, &[], Some(p.sockets));
        m.add(&ULIMITS_SOFT, &["max_open_files"], p.nofile_soft);
    }
    for h in &s.hugetlb {
        m.add(&HUGETLB_USAGE, &[&h.page_size], Some(h.usage));
        m.add(&HUGETLB_MAX_USAGE, &[&h.page_size], h.max_usage);
    }
    for (psi, stalled, waiting) in [
        (&s.cpu_psi, &PRESSURE_CPU_STALLED, &PRESSURE_CPU_WAITING),
        (
            &s.memory_psi,
            &PRESSURE_MEMORY_STALLED,
            &PRESSURE_MEMORY_WAITING,
        ),
        (&s.io_psi, &PRESSURE_IO_STALLED, &PRESSURE_IO_WAITING),
    ] {
        // "full": no task could run; "some": at least one waited.
        let total = |line: fn(&Psi) -> Option<berth_cgroup::PsiLine>| {
            psi.as_ref().and_then(line).map(|l| l.total_us / US_PER_S)
        };
        m.add(stalled, &[], total(|p| p.full));
        m.add(waiting, &[], total(|p| p.some));
    }
    if let Some(f) = i.fs {
        let dev = [f.device.as_str()];
        m.add(&FS_USAGE, &dev, Some(f.usage));
        m.add(&FS_LIMIT, &dev, f.capacity);
        m.add(&FS_INODES_TOTAL, &dev, f.inodes);
        m.add(&FS_INODES_FREE, &dev, f.inodes_free);
    }
    for (d, name) in s.io.iter().zip(i.io_devices) {
        let dev = [name.as_str()];
        m.add(&FS_READS_BYTES, &dev, d.bytes_of("Read"));
        m.add(&FS_WRITES_BYTES, &dev, d.bytes_of("Write"));
        m.add(&FS_READS, &dev, d.ios_of("Read"));
        m.add(&FS_WRITES, &dev, d.ios_of("Write"));
        let (major, minor) = (d.major.to_string(), d.minor.to_string());
        for (op, v) in &d.bytes {
            m.add(&BLKIO_DEVICE_USAGE, &[name, &major, &minor, op], Some(*v));
        }
    }
    m.out
}

/// `k8s_<container>_<pod>_<namespace>_<pod uid>_<attempt>`: the name the
/// kubelet gave Docker containers, which CRI-O names its containers and
/// cAdvisor's `name` label carried.
pub fn kubelet_name(rec: &ContainerRecord, pod: &SandboxRecord) -> String {
    format!(
        "k8s_{}_{}_{}_{}_{}",
        rec.name, pod.name, pod.namespace, pod.uid, rec.attempt
    )
}

/// `container_spec_*`, from the record's resources (none for a record
/// written before Berth kept them). Memory values are 0 when unlimited, as
/// cAdvisor reports them.
fn spec_series(m: &mut Series, rec: &ContainerRecord, v2: bool) {
    let Some(r) = &rec.resources else {
        return;
    };
    let positive = |v: i64| u64::try_from(v).ok().filter(|&v| v > 0);
    m.add(&SPEC_CPU_PERIOD, &[], positive(r.cpu_period));
    m.add(&SPEC_CPU_QUOTA, &[], positive(r.cpu_quota));
    m.add(&SPEC_CPU_SHARES, &[], positive(r.cpu_shares));
    let limit = positive(r.memory_limit_in_bytes);
    m.add(&SPEC_MEMORY_LIMIT, &[], Some(limit.unwrap_or(0)));
    // The record's swap limit is memory+swap (-1: unlimited); v2's
    // memory.swap.max, which cAdvisor reports there, is swap alone.
    let memsw = positive(r.memory_swap_limit_in_bytes);
    let swap = match (v2, memsw, limit) {
        (false, Some(memsw), _) => memsw,
        (true, Some(memsw), Some(limit)) => memsw.saturating_sub(limit),
        _ => 0,
    };
    m.add(&SPEC_MEMORY_SWAP_LIMIT, &[], Some(swap));
    // cAdvisor's reservation is v2's memory.min (v1's soft limit, which
    // the CRI cannot set); the kubelet's MemoryQoS sets it as unified.
    let reservation = r
        .unified
        .get("memory.min")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    m.add(&SPEC_MEMORY_RESERVATION, &[], Some(reservation));
}

fn memory_series(m: &mut Series, s: &Sample) {
    if let Some(mem) = &s.memory {
        m.add(&MEMORY_USAGE, &[], Some(mem.usage));
        m.add(&MEMORY_WORKING_SET, &[], Some(mem.working_set()));
        m.add(&MEMORY_RSS, &[], Some(mem.rss));
        m.add(&MEMORY_CACHE, &[], Some(mem.cache));
        if let Some(d) = &s.memory_detail {
            for (kind, scope, v) in [
                ("pgfault", "container", d.local_page_faults),
                ("pgmajfault", "container", d.local_major_page_faults),
                ("pgfault", "hierarchy", mem.page_faults),
                ("pgmajfault", "hierarchy", mem.major_page_faults),
            ] {
                m.add(&MEMORY_FAILURES, &[kind, scope], v);
            }
        }
    }
    if let Some(d) = &s.memory_detail {
        m.add(&MEMORY_MAX_USAGE, &[], d.max_usage);
        m.add(&MEMORY_FAILCNT, &[], d.failcnt);
        m.add(&MEMORY_KERNEL, &[], d.kernel);
        m.add(&MEMORY_MAPPED_FILE, &[], d.mapped_file);
    }
    m.add(&MEMORY_SWAP, &[], s.swap.map(|w| w.usage));
}

/// The pod's network metrics, one series per interface.
pub fn pod_network(pod_id: &str, ifaces: &[IfaceCounters]) -> Vec<Metric> {
    let base = [pod_id.to_string(), "POD".to_string(), String::new()];
    let mut m = Series {
        base: &base,
        out: Vec::with_capacity(ifaces.len() * 8),
    };
    for i in ifaces {
        let iface = [i.name.as_str()];
        for (spec, value) in [
            (&NET_RX_BYTES, i.rx_bytes),
            (&NET_RX_PACKETS, i.rx_packets),
            (&NET_RX_DROPPED, i.rx_dropped),
            (&NET_RX_ERRORS, i.rx_errors),
            (&NET_TX_BYTES, i.tx_bytes),
            (&NET_TX_PACKETS, i.tx_packets),
            (&NET_TX_DROPPED, i.tx_dropped),
            (&NET_TX_ERRORS, i.tx_errors),
        ] {
            m.add(spec, &iface, Some(value));
        }
    }
    m.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::record::ResourcesRecord;
    use crate::stats::critest_metrics::CRITEST_METRICS;
    use berth_cgroup::{
        CfsSample, CpuSample, HugetlbSample, IoDevice, MemoryDetail, MemorySample, PsiLine,
        SwapSample,
    };

    fn rec() -> ContainerRecord {
        serde_json::from_value(serde_json::json!({
            "id": "c1", "pod_id": "p1", "name": "app", "attempt": 0,
            "image": "busybox:latest", "image_id": "sha256:x", "image_ref": "sha256:x",
            "labels": {}, "annotations": {}, "log_path": "", "stop_signal": 15,
            "state": "RUNNING", "created_at": 1_000_000_000, "started_at": 5_500_000_000_i64,
            "finished_at": 0, "exit_code": 0, "oom_killed": false, "bundle": "/b", "layer_dir": "/l"
        }))
        .unwrap()
    }

    /// critest's container: period 100000, quota 20000, shares 1024, 64 MiB
    /// of memory and as much memory+swap.
    fn limited() -> ContainerRecord {
        ContainerRecord {
            resources: Some(ResourcesRecord {
                cpu_period: 100_000,
                cpu_quota: 20_000,
                cpu_shares: 1024,
                memory_limit_in_bytes: 64 << 20,
                memory_swap_limit_in_bytes: 64 << 20,
                ..Default::default()
            }),
            ..rec()
        }
    }

    fn psi(some_us: u64, full_us: u64) -> Psi {
        Psi {
            some: Some(PsiLine {
                total_us: some_us,
                ..Default::default()
            }),
            full: Some(PsiLine {
                total_us: full_us,
                ..Default::default()
            }),
        }
    }

    /// A reading with every figure any host gives.
    fn full_sample() -> Sample {
        Sample {
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
                page_faults: Some(50),
                major_page_faults: Some(5),
                ..Default::default()
            }),
            swap: Some(SwapSample {
                usage: 5,
                available: None,
            }),
            pids: Some(3),
            oom_kills: Some(1),
            cpu_psi: Some(psi(2_500_000, 1_000_000)),
            memory_psi: Some(psi(0, 0)),
            io_psi: Some(psi(7_000_000, 3_000_000)),
            cfs: Some(CfsSample {
                periods: 40,
                throttled_periods: 10,
                throttled_ns: 2_000_000_000,
            }),
            memory_detail: Some(MemoryDetail {
                failcnt: Some(2),
                max_usage: Some(4000),
                kernel: Some(64),
                mapped_file: Some(32),
                local_page_faults: Some(20),
                local_major_page_faults: Some(1),
            }),
            pids_max: Some(None),
            io: vec![IoDevice {
                major: 254,
                minor: 0,
                bytes: vec![("Read".into(), 4096), ("Write".into(), 8192)],
                ios: vec![("Read".into(), 1), ("Write".into(), 2)],
            }],
            hugetlb: vec![HugetlbSample {
                page_size: "2MB".into(),
                usage: 0,
                max_usage: Some(2 << 20),
            }],
        }
    }

    fn procs() -> ProcStats {
        ProcStats {
            processes: 2,
            fds: 7,
            sockets: 1,
            nofile_soft: Some(1024),
        }
    }

    fn fs_stats() -> FsStats {
        FsStats {
            device: "/dev/vda".into(),
            usage: 4096,
            capacity: Some(1 << 30),
            inodes: Some(1000),
            inodes_free: Some(900),
        }
    }

    fn inputs<'a>(
        sample: &'a Sample,
        procs: &'a ProcStats,
        fs: &'a FsStats,
        devs: &'a [String],
    ) -> ContainerInputs<'a> {
        ContainerInputs {
            name: "k8s_app_web_default_u1_0",
            sample,
            procs: Some(procs),
            fs: Some(fs),
            io_devices: devs,
            now_s: 1_700_000_000,
            v2: false,
        }
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

    fn value(m: &[Metric], name: &str) -> u64 {
        m.iter()
            .find(|x| x.name == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .value
            .unwrap()
            .value
    }

    fn labelled_value(m: &[Metric], name: &str, extra: &[&str]) -> u64 {
        m.iter()
            .find(|x| x.name == name && x.label_values[3..] == *extra)
            .unwrap_or_else(|| panic!("no {name} {extra:?}"))
            .value
            .unwrap()
            .value
    }

    #[test]
    fn descriptors_have_help_labels_and_unique_names() {
        let d = descriptors();
        for x in &d {
            assert!(!x.help.is_empty(), "{}", x.name);
            assert!(
                x.label_keys
                    .starts_with(&["id".into(), "name".into(), "image".into()])
            );
        }
        let mut names: Vec<&str> = d.iter().map(|d| d.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), d.len());
        let keys = |n: &str| d.iter().find(|x| x.name == n).unwrap().label_keys[3..].to_vec();
        assert_eq!(
            keys("container_memory_failures_total"),
            ["failure_type", "scope"]
        );
        assert_eq!(
            keys("container_blkio_device_usage_total"),
            ["device", "major", "minor", "operation"]
        );
        assert_eq!(keys("container_fs_usage_bytes"), ["device"]);
        assert_eq!(keys("container_ulimits_soft"), ["ulimit"]);
        assert_eq!(keys("container_hugetlb_usage_bytes"), ["pagesize"]);
        assert_eq!(keys("container_network_receive_bytes_total"), ["interface"]);
    }

    #[test]
    fn critest_names_are_all_described() {
        let d = descriptors();
        assert_eq!(CRITEST_METRICS.len(), 56);
        // Even the ones critest calls unimplemented: Berth gives them where
        // the host can.
        for (n, _) in CRITEST_METRICS {
            assert!(d.iter().any(|x| x.name == *n), "{n} is not described");
        }
    }

    /// With every figure at hand, every descriptor has a series (none is
    /// described and never given), each with its labels.
    #[test]
    fn every_descriptor_has_series_from_a_full_reading() {
        let (s, p, f) = (full_sample(), procs(), fs_stats());
        let devs = ["/dev/vda".to_string()];
        let mut m = container(&limited(), &inputs(&s, &p, &f, &devs));
        m.extend(pod_network(
            "p1",
            &[IfaceCounters {
                name: "eth0".into(),
                ..Default::default()
            }],
        ));
        check(&m);
        for d in descriptors() {
            assert!(
                m.iter().any(|x| x.name == d.name),
                "{} has no series",
                d.name
            );
        }
    }

    #[test]
    fn container_values() {
        let (s, p, f) = (full_sample(), procs(), fs_stats());
        let devs = ["/dev/vda".to_string()];
        let m = container(&limited(), &inputs(&s, &p, &f, &devs));
        let v = |n| value(&m, n);
        assert_eq!(v("container_last_seen"), 1_700_000_000);
        assert_eq!(v("container_start_time_seconds"), 5, "started, not created");
        assert_eq!(v("container_cpu_usage_seconds_total"), 3);
        assert_eq!(v("container_cpu_cfs_periods_total"), 40);
        assert_eq!(v("container_cpu_cfs_throttled_periods_total"), 10);
        assert_eq!(v("container_cpu_cfs_throttled_seconds_total"), 2);
        assert_eq!(v("container_memory_working_set_bytes"), 900);
        assert_eq!(v("container_memory_max_usage_bytes"), 4000);
        assert_eq!(v("container_memory_failcnt"), 2);
        assert_eq!(v("container_memory_kernel_usage"), 64);
        assert_eq!(v("container_memory_mapped_file"), 32);
        let fail = |t, s| labelled_value(&m, "container_memory_failures_total", &[t, s]);
        assert_eq!(fail("pgfault", "container"), 20);
        assert_eq!(fail("pgmajfault", "container"), 1);
        assert_eq!(fail("pgfault", "hierarchy"), 50);
        assert_eq!(fail("pgmajfault", "hierarchy"), 5);
        assert_eq!(v("container_oom_events_total"), 1);
        assert_eq!(v("container_threads"), 3);
        assert_eq!(v("container_threads_max"), 0, "max: infinity is 0");
        assert_eq!(v("container_processes"), 2);
        assert_eq!(v("container_file_descriptors"), 7);
        assert_eq!(v("container_sockets"), 1);
        assert_eq!(
            labelled_value(&m, "container_ulimits_soft", &["max_open_files"]),
            1024
        );
        assert_eq!(v("container_spec_cpu_period"), 100_000);
        assert_eq!(v("container_spec_cpu_quota"), 20_000);
        assert_eq!(v("container_spec_cpu_shares"), 1024);
        assert_eq!(v("container_spec_memory_limit_bytes"), 64 << 20);
        assert_eq!(v("container_spec_memory_swap_limit_bytes"), 64 << 20);
        assert_eq!(v("container_spec_memory_reservation_limit_bytes"), 0);
        assert_eq!(v("container_pressure_cpu_waiting_seconds_total"), 2);
        assert_eq!(v("container_pressure_cpu_stalled_seconds_total"), 1);
        assert_eq!(v("container_pressure_io_waiting_seconds_total"), 7);
        assert_eq!(
            labelled_value(&m, "container_hugetlb_max_usage_bytes", &["2MB"]),
            2 << 20
        );
        let dev = |n| labelled_value(&m, n, &["/dev/vda"]);
        assert_eq!(dev("container_fs_usage_bytes"), 4096);
        assert_eq!(dev("container_fs_limit_bytes"), 1 << 30);
        assert_eq!(dev("container_fs_inodes_total"), 1000);
        assert_eq!(dev("container_fs_inodes_free"), 900);
        assert_eq!(dev("container_fs_reads_bytes_total"), 4096);
        assert_eq!(dev("container_fs_writes_bytes_total"), 8192);
        assert_eq!(dev("container_fs_reads_total"), 1);
        assert_eq!(dev("container_fs_writes_total"), 2);
        assert_eq!(
            labelled_value(
                &m,
                "container_blkio_device_usage_total",
                &["/dev/vda", "254", "0", "Write"]
            ),
            8192
        );
        let ws = m.iter().find(|x| x.name == "container_memory_rss").unwrap();
        assert_eq!(
            ws.label_values,
            vec!["c1", "k8s_app_web_default_u1_0", "busybox:latest"]
        );
        assert_eq!(ws.metric_type, MetricType::Gauge as i32);
        let cpu = m
            .iter()
            .find(|x| x.name == "container_cpu_usage_seconds_total")
            .unwrap();
        assert_eq!(cpu.metric_type, MetricType::Counter as i32);
    }

    #[test]
    fn a_container_without_a_cgroup_or_a_task_has_no_series() {
        let (p, f) = (procs(), fs_stats());
        let s = Sample::default();
        assert!(container(&limited(), &inputs(&s, &p, &f, &[])).is_empty());
        // Exited, its cgroup not removed yet.
        let mut empty = full_sample();
        empty.pids = Some(0);
        assert!(container(&limited(), &inputs(&empty, &p, &f, &[])).is_empty());
        // No pids controller: the cgroup's other files tell.
        let mut no_pids = full_sample();
        no_pids.pids = None;
        assert!(!container(&limited(), &inputs(&no_pids, &p, &f, &[])).is_empty());
    }

    #[test]
    fn cfs_series_only_with_a_quota() {
        let (s, p, f) = (full_sample(), procs(), fs_stats());
        let devs = ["/dev/vda".to_string()];
        let mut r = limited();
        r.resources.as_mut().unwrap().cpu_quota = -1;
        assert!(!has_cpu_quota(&r));
        let m = container(&r, &inputs(&s, &p, &f, &devs));
        assert!(!m.iter().any(|x| x.name.starts_with("container_cpu_cfs_")));
        assert!(!m.iter().any(|x| x.name == "container_spec_cpu_quota"));
        // A record from before resources were kept may have one.
        assert!(has_cpu_quota(&rec()));
    }

    #[test]
    fn spec_values_from_the_record() {
        let s = full_sample();
        let spec = |r: &ContainerRecord, v2: bool| {
            let i = ContainerInputs {
                name: "k8s_app_web_default_u1_0",
                sample: &s,
                procs: None,
                fs: None,
                io_devices: &[],
                now_s: 1,
                v2,
            };
            let m = container(r, &i);
            let get = |n: &str| {
                m.iter()
                    .find(|x| x.name == n)
                    .map(|x| x.value.unwrap().value)
            };
            (
                get("container_spec_cpu_period"),
                get("container_spec_memory_limit_bytes"),
                get("container_spec_memory_swap_limit_bytes"),
                get("container_spec_memory_reservation_limit_bytes"),
            )
        };
        // Unlimited: 0, as cAdvisor; no period set: no series.
        let mut unlimited = rec();
        unlimited.resources = Some(ResourcesRecord {
            cpu_shares: 2,
            memory_swap_limit_in_bytes: -1,
            ..Default::default()
        });
        assert_eq!(spec(&unlimited, false), (None, Some(0), Some(0), Some(0)));
        // 64 MiB of memory, 96 MiB of memory+swap: v1 reports memsw, v2 the
        // swap alone (memory.swap.max).
        let mut swap = limited();
        let r = swap.resources.as_mut().unwrap();
        r.memory_swap_limit_in_bytes = 96 << 20;
        r.unified.insert("memory.min".into(), "16777216".into());
        assert_eq!(
            spec(&swap, false),
            (
                Some(100_000),
                Some(64 << 20),
                Some(96 << 20),
                Some(16 << 20)
            )
        );
        assert_eq!(spec(&swap, true).2, Some(32 << 20));
        // No resources recorded: no spec series.
        assert_eq!(spec(&rec(), false), (None, None, None, None));
    }

    #[test]
    fn missing_figures_have_no_series() {
        // A v1 host: no PSI, no hugetlb, no I/O yet, no kernel memory figure.
        let mut s = full_sample();
        s.cpu_psi = None;
        s.memory_psi = None;
        s.io_psi = None;
        s.hugetlb.clear();
        s.io.clear();
        s.memory_detail.as_mut().unwrap().kernel = None;
        let mut p = procs();
        p.nofile_soft = None;
        let f = fs_stats();
        let m = container(&limited(), &inputs(&s, &p, &f, &[]));
        check(&m);
        for gone in [
            "container_pressure_cpu_waiting_seconds_total",
            "container_hugetlb_usage_bytes",
            "container_fs_reads_bytes_total",
            "container_blkio_device_usage_total",
            "container_memory_kernel_usage",
            "container_ulimits_soft",
        ] {
            assert!(!m.iter().any(|x| x.name == gone), "{gone}");
        }
        assert!(m.iter().any(|x| x.name == "container_memory_failcnt"));
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
        assert_eq!(rx.metric_type, MetricType::Counter as i32);
    }
}
