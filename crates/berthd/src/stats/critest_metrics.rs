// The metric names critest (cri-tools v1.37.0; pkg/validate/pod.go at
// ba03eabc) checks: `expectedMetricDescriptorNames`, each with what
// `unimplementedMetricDescriptors` and `optionalValuesForMetricDescriptors`
// say of it. Data, `include!`d by the unit tests of metrics.rs and by
// e2e/tests/stats.rs.

/// What critest asks of a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Critest {
    /// Described, and a series with its labels for the test's pod.
    Required,
    /// Described; a series may be missing (needs per-cgroup block I/O).
    Optional,
    /// May be neither described nor given.
    Unimplemented,
}

pub const CRITEST_METRICS: &[(&str, Critest)] = &[
    ("container_blkio_device_usage_total", Critest::Optional),
    ("container_cpu_cfs_periods_total", Critest::Required),
    (
        "container_cpu_cfs_throttled_periods_total",
        Critest::Required,
    ),
    (
        "container_cpu_cfs_throttled_seconds_total",
        Critest::Required,
    ),
    ("container_cpu_system_seconds_total", Critest::Required),
    ("container_cpu_usage_seconds_total", Critest::Required),
    ("container_cpu_user_seconds_total", Critest::Required),
    ("container_file_descriptors", Critest::Required),
    ("container_fs_inodes_free", Critest::Required),
    ("container_fs_inodes_total", Critest::Required),
    ("container_fs_limit_bytes", Critest::Required),
    ("container_fs_reads_bytes_total", Critest::Optional),
    ("container_fs_reads_total", Critest::Optional),
    ("container_fs_usage_bytes", Critest::Required),
    ("container_fs_writes_bytes_total", Critest::Optional),
    ("container_fs_writes_total", Critest::Optional),
    ("container_hugetlb_max_usage_bytes", Critest::Unimplemented),
    ("container_hugetlb_usage_bytes", Critest::Unimplemented),
    ("container_last_seen", Critest::Required),
    ("container_memory_cache", Critest::Required),
    ("container_memory_failcnt", Critest::Required),
    ("container_memory_failures_total", Critest::Required),
    ("container_memory_kernel_usage", Critest::Required),
    ("container_memory_mapped_file", Critest::Required),
    ("container_memory_max_usage_bytes", Critest::Required),
    ("container_memory_rss", Critest::Required),
    ("container_memory_swap", Critest::Required),
    ("container_memory_usage_bytes", Critest::Required),
    ("container_memory_working_set_bytes", Critest::Required),
    ("container_network_receive_bytes_total", Critest::Required),
    ("container_network_receive_errors_total", Critest::Required),
    (
        "container_network_receive_packets_dropped_total",
        Critest::Required,
    ),
    ("container_network_receive_packets_total", Critest::Required),
    ("container_network_transmit_bytes_total", Critest::Required),
    ("container_network_transmit_errors_total", Critest::Required),
    (
        "container_network_transmit_packets_dropped_total",
        Critest::Required,
    ),
    (
        "container_network_transmit_packets_total",
        Critest::Required,
    ),
    ("container_oom_events_total", Critest::Required),
    (
        "container_pressure_cpu_stalled_seconds_total",
        Critest::Unimplemented,
    ),
    (
        "container_pressure_cpu_waiting_seconds_total",
        Critest::Unimplemented,
    ),
    (
        "container_pressure_io_stalled_seconds_total",
        Critest::Unimplemented,
    ),
    (
        "container_pressure_io_waiting_seconds_total",
        Critest::Unimplemented,
    ),
    (
        "container_pressure_memory_stalled_seconds_total",
        Critest::Unimplemented,
    ),
    (
        "container_pressure_memory_waiting_seconds_total",
        Critest::Unimplemented,
    ),
    ("container_processes", Critest::Required),
    ("container_sockets", Critest::Required),
    ("container_spec_cpu_period", Critest::Required),
    ("container_spec_cpu_quota", Critest::Unimplemented),
    ("container_spec_cpu_shares", Critest::Required),
    ("container_spec_memory_limit_bytes", Critest::Required),
    (
        "container_spec_memory_reservation_limit_bytes",
        Critest::Unimplemented,
    ),
    ("container_spec_memory_swap_limit_bytes", Critest::Required),
    ("container_start_time_seconds", Critest::Required),
    ("container_threads", Critest::Required),
    ("container_threads_max", Critest::Required),
    ("container_ulimits_soft", Critest::Unimplemented),
];
