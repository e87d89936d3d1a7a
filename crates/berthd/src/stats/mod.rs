//! Container and pod statistics for the CRI stats RPCs, read straight from
//! the kernel: cgroup files (through `berth-cgroup`), the overlay upper dir,
//! `/proc/<pid>/net/dev`.
//!
//! No monitor call and no process spawn: the kubelet polls
//! ListContainerStats every ~10 s for every container. Everything here is
//! blocking file I/O: call it from a blocking thread. Per-container state
//! kept between calls (the previous CPU sample, the cached upper dir size,
//! the open cgroup directories) lives in one process-wide [`Collector`];
//! its locks are never held across file I/O.

mod cpu_rate;
#[cfg(test)]
mod critest_metrics;
mod devices;
pub mod metrics;
mod network;
mod open_cgroups;
mod parse;
mod procs;
pub mod targets;
mod to_cri;
mod writable_layer;

use std::path::Path;
use std::sync::{Arc, LazyLock};

use berth_api::v1::{
    ContainerMetrics, ContainerStats, LinuxPodSandboxStats, PodSandboxMetrics, PodSandboxStats,
    ProcessUsage, UInt64Value,
};

use crate::container::ContainerRecord;
use crate::sandbox::SandboxRecord;
use berth_cgroup::{Cgroup, Detail, Layout, OpenCgroup, Sample};
use cpu_rate::CpuRates;
use devices::DeviceNames;
use open_cgroups::OpenCgroups;
use writable_layer::LayerCache;

/// Why stats could not be collected at all (a reading that fails only
/// leaves its fields empty).
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("stats collection task failed: {0}")]
    Task(String),
}

impl From<StatsError> for tonic::Status {
    fn from(e: StatsError) -> tonic::Status {
        tonic::Status::internal(e.to_string())
    }
}

/// Runs a collection (blocking file reads) on tokio's blocking pool.
pub async fn off_thread<T: Send + 'static>(
    f: impl FnOnce(&'static Collector) -> T + Send + 'static,
) -> Result<T, StatsError> {
    tokio::task::spawn_blocking(move || f(collector()))
        .await
        .map_err(|e| StatsError::Task(e.to_string()))
}

/// Least work (in containers) worth a blocking thread of its own.
const MIN_CHUNK: usize = 25;

/// Runs `f` over `items` on up to one blocking thread per core, in
/// contiguous chunks of about equal `weight`, and returns the results in
/// `items`' order: a collection is file reads, each core does its share.
pub async fn off_threads<T: Send + 'static, R: Send + 'static>(
    items: Vec<T>,
    weight: impl Fn(&T) -> usize,
    f: fn(&Collector, &T) -> R,
) -> Result<Vec<R>, StatsError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let total: usize = items.iter().map(&weight).sum();
    let per_chunk = total.div_ceil(cores).max(MIN_CHUNK);
    let mut chunks: Vec<Vec<T>> = vec![];
    let mut filled = per_chunk;
    for item in items {
        if filled >= per_chunk {
            chunks.push(Vec::new());
            filled = 0;
        }
        filled += weight(&item);
        if let Some(c) = chunks.last_mut() {
            c.push(item);
        }
    }
    let tasks = chunks
        .into_iter()
        .map(|chunk| off_thread(move |c| chunk.iter().map(|t| f(c, t)).collect::<Vec<R>>()));
    let done = futures::future::try_join_all(tasks).await?;
    Ok(done.into_iter().flatten().collect())
}

/// A container to measure: its record and its cgroup (`linux.cgroupsPath`).
pub struct ContainerTarget {
    pub rec: ContainerRecord,
    pub cgroups_path: Option<String>,
}

/// A pod to measure.
pub struct PodTarget {
    pub rec: SandboxRecord,
    /// The pod's own cgroup, the one its containers' cgroups sit in (see
    /// [`targets::pod_cgroup`]); without one (or while it does not exist) the
    /// pod's figures are its containers' sum.
    pub cgroup: Option<String>,
    pub containers: Vec<ContainerTarget>,
}

/// One container's stats and the raw reading behind them.
struct Reading {
    stats: ContainerStats,
    sample: Sample,
    cgroup: Option<Arc<OpenCgroup>>,
}

pub struct Collector {
    layout: Option<Layout>,
    rates: CpuRates,
    layers: LayerCache,
    cgroups: OpenCgroups,
    devices: DeviceNames,
    /// The page sizes hugetlb usage is read for: none without the hugetlb
    /// controller.
    hugepage_sizes: Vec<String>,
}

static COLLECTOR: LazyLock<Collector> = LazyLock::new(Collector::new);

/// The daemon's collector (its state is keyed by container and pod id).
pub fn collector() -> &'static Collector {
    &COLLECTOR
}

fn container_key(id: &str) -> String {
    format!("c/{id}")
}

fn pod_key(id: &str) -> String {
    format!("p/{id}")
}

impl Collector {
    fn new() -> Collector {
        let layout = Layout::detect();
        match &layout {
            Some(l) => tracing::info!(layout = ?l, "cgroup layout for stats"),
            None => tracing::warn!("no cgroup filesystem found: stats carry no cpu or memory"),
        }
        let hugepage_sizes = match &layout {
            Some(l) if l.has_controller("hugetlb") => {
                berth_cgroup::hugepage_sizes(Path::new(berth_cgroup::HUGEPAGES_DIR))
            }
            _ => Vec::new(),
        };
        Collector {
            layout,
            rates: CpuRates::default(),
            layers: LayerCache::default(),
            cgroups: OpenCgroups::default(),
            devices: DeviceNames::default(),
            hugepage_sizes,
        }
    }

    fn cgroup(&self, cgroups_path: Option<&str>) -> Option<Cgroup> {
        Cgroup::of(self.layout.as_ref()?, cgroups_path?)
    }

    /// A container's cgroup, open (kept between calls: [`OpenCgroups`]; its
    /// paths are only built when it is not kept).
    fn container_cgroup(&self, t: &ContainerTarget) -> Option<Arc<OpenCgroup>> {
        self.cgroups
            .get(&t.rec.id, || self.cgroup(t.cgroups_path.as_deref()))
    }

    fn read_container(&self, t: &ContainerTarget) -> Reading {
        let ts = crate::ids::now_ns();
        let cgroup = self.container_cgroup(t);
        let sample = cgroup.as_deref().map(OpenCgroup::stats).unwrap_or_default();
        let nano_cores = sample.cpu.and_then(|c| {
            self.rates
                .observe(&container_key(&t.rec.id), ts, c.usage_ns)
        });
        let layer = match self.layers.usage(&t.rec.id, &t.rec.layer_dir) {
            Ok(u) => Some(to_cri::writable_layer(&u)),
            Err(e) => {
                tracing::warn!(container = %t.rec.id, pod = %t.rec.pod_id, error = %e, "cannot measure the writable layer");
                None
            }
        };
        let stats = ContainerStats {
            attributes: Some(to_cri::container_attributes(&t.rec)),
            cpu: sample
                .cpu
                .map(|c| to_cri::cpu(ts, &c, nano_cores, sample.cpu_psi.as_ref())),
            memory: sample
                .memory
                .map(|m| to_cri::memory(ts, &m, sample.memory_psi.as_ref())),
            writable_layer: layer,
            swap: sample.swap.map(|s| to_cri::swap(ts, &s)),
            io: to_cri::io(ts, &sample),
        };
        Reading {
            stats,
            sample,
            cgroup,
        }
    }

    /// ContainerStats of one container: what is readable (an exited
    /// container whose cgroup is gone still has attributes and its layer).
    pub fn container(&self, t: &ContainerTarget) -> ContainerStats {
        self.read_container(t).stats
    }

    /// PodSandboxStats: cpu, memory and process count from the pod cgroup,
    /// or summed over the containers; network of the pod's namespace; the
    /// containers' own stats embedded.
    pub fn pod(&self, t: &PodTarget) -> PodSandboxStats {
        let readings: Vec<Reading> = t
            .containers
            .iter()
            .map(|c| self.read_container(c))
            .collect();
        let ts = crate::ids::now_ns();
        let sample = match self.cgroup(t.cgroup.as_deref()).filter(Cgroup::exists) {
            Some(c) => c.stats(),
            None => Sample::sum(readings.iter().map(|r| &r.sample)),
        };
        let nano_cores = sample
            .cpu
            .and_then(|c| self.rates.observe(&pod_key(&t.rec.id), ts, c.usage_ns));
        let network = self
            .pod_interfaces(t, &readings)
            .and_then(|ifaces| to_cri::network(ts, ifaces));
        PodSandboxStats {
            attributes: Some(to_cri::pod_attributes(&t.rec)),
            linux: Some(LinuxPodSandboxStats {
                cpu: sample
                    .cpu
                    .map(|c| to_cri::cpu(ts, &c, nano_cores, sample.cpu_psi.as_ref())),
                memory: sample
                    .memory
                    .map(|m| to_cri::memory(ts, &m, sample.memory_psi.as_ref())),
                network,
                process: sample.pids.map(|n| ProcessUsage {
                    timestamp: ts,
                    process_count: Some(UInt64Value { value: n }),
                }),
                io: to_cri::io(ts, &sample),
                containers: readings.into_iter().map(|r| r.stats).collect(),
            }),
            windows: None,
        }
    }

    /// The interfaces of the pod's own network namespace (none for a
    /// host-network pod), through a live container's process.
    fn pod_interfaces(
        &self,
        t: &PodTarget,
        readings: &[Reading],
    ) -> Option<Vec<parse::IfaceCounters>> {
        let pin = t.rec.pins.net.as_ref()?;
        let pids = readings
            .iter()
            .filter_map(|r| r.cgroup.as_deref().and_then(OpenCgroup::first_pid));
        network::pod_interfaces(pin, pids)
    }

    /// ListPodSandboxMetrics for one pod: the pod's network series and each
    /// container's (cgroup, its processes' fds, its writable layer).
    pub fn pod_metrics(&self, t: &PodTarget) -> PodSandboxMetrics {
        let now_s = u64::try_from(crate::ids::now_ns() / 1_000_000_000).unwrap_or(0);
        let mut first_pids = Vec::with_capacity(t.containers.len());
        let container_metrics = t
            .containers
            .iter()
            .map(|c| {
                let (metrics, first_pid) = self.container_metrics(&t.rec, c, now_s);
                first_pids.extend(first_pid);
                ContainerMetrics {
                    container_id: c.rec.id.clone(),
                    metrics,
                }
            })
            .collect();
        let network = t
            .rec
            .pins
            .net
            .as_ref()
            .and_then(|pin| network::pod_interfaces(pin, first_pids))
            .unwrap_or_default();
        PodSandboxMetrics {
            pod_sandbox_id: t.rec.id.clone(),
            metrics: metrics::pod_network(&t.rec.id, &network),
            container_metrics,
        }
    }

    /// One container's series, and its first process (through which the
    /// pod's network is read). What only a live cgroup has is read only
    /// when the cgroup is there.
    fn container_metrics(
        &self,
        pod: &SandboxRecord,
        c: &ContainerTarget,
        now_s: u64,
    ) -> (Vec<berth_api::v1::Metric>, Option<i32>) {
        // An exited container's cgroup, if still there, is empty: nothing
        // to read (see `metrics::seen`).
        if c.rec.state == crate::container::State::Exited {
            return (Vec::new(), None);
        }
        let Some(cgroup) = self.container_cgroup(c) else {
            return (Vec::new(), None);
        };
        let detail = Detail {
            cfs: metrics::has_cpu_quota(&c.rec),
            hugepage_sizes: &self.hugepage_sizes,
        };
        let sample = cgroup.metrics_sample(&detail);
        if !metrics::seen(&sample) {
            return (Vec::new(), None);
        }
        let pids = cgroup.procs();
        let procs = pids.as_deref().map(procs::scan);
        let fs = self.layer_fs(&c.rec);
        let io_devices: Vec<String> = sample
            .io
            .iter()
            .map(|d| self.devices.block(d.major, d.minor))
            .collect();
        let name = metrics::kubelet_name(&c.rec, pod);
        let inputs = metrics::ContainerInputs {
            name: &name,
            sample: &sample,
            procs: procs.as_ref(),
            fs: fs.as_ref(),
            io_devices: &io_devices,
            now_s,
            v2: self.layout.as_ref().is_some_and(Layout::is_v2),
        };
        let first_pid = pids.and_then(|p| p.first().copied());
        (metrics::container(&c.rec, &inputs), first_pid)
    }

    /// The writable layer's usage (cached as for ListContainerStats) and
    /// the size and inodes of the filesystem holding it.
    fn layer_fs(&self, rec: &ContainerRecord) -> Option<metrics::FsStats> {
        let u = match self.layers.usage(&rec.id, &rec.layer_dir) {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(container = %rec.id, error = %e, "cannot measure the writable layer");
                return None;
            }
        };
        let vfs = nix::sys::statvfs::statvfs(&u.mountpoint).ok();
        Some(metrics::FsStats {
            device: self.devices.filesystem(u.fs_id, &u.mountpoint),
            usage: u.used_bytes,
            capacity: vfs.map(|v| v.blocks() * v.fragment_size()),
            inodes: vfs.map(|v| v.files()),
            inodes_free: vfs.map(|v| v.files_free()),
        })
    }

    /// Drops what is kept for containers and pods that no longer exist.
    pub fn prune(&self, is_container: impl Fn(&str) -> bool, is_pod: impl Fn(&str) -> bool) {
        self.rates.retain(|k| match k.split_once('/') {
            Some(("c", id)) => is_container(id),
            Some(("p", id)) => is_pod(id),
            _ => false,
        });
        self.layers.retain(&is_container);
        self.cgroups.retain(is_container);
    }
}
