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
use std::sync::atomic::{AtomicUsize, Ordering};
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
use nix::unistd::Pid;
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

/// Least work (in containers) worth a thread of its own.
const MIN_CHUNK: usize = 25;

/// The cores to spread a collection over, asked once: std reads the
/// cgroup's CPU quota files each time (~a tenth of a handler's own time).
static CORES: LazyLock<usize> =
    LazyLock::new(|| std::thread::available_parallelism().map_or(1, |n| n.get()));

/// Runs `f` over `items` on up to one thread per core and returns the
/// results in `items`' order: a collection is file reads, each core does
/// its share. A blocking thread starts helper threads on the other cores
/// ([`spawn_helper`]); the threads take the items one at a time, heaviest
/// (`weight`) first, so that one that starts late or is preempted leaves
/// its share to the others.
pub async fn off_threads<T: Send + Sync + 'static, R: Send + 'static>(
    items: Vec<T>,
    weight: impl Fn(&T) -> usize,
    f: fn(&Collector, &T) -> R,
) -> Result<Vec<R>, StatsError> {
    let total: usize = items.iter().map(&weight).sum();
    let threads = (total / MIN_CHUNK).clamp(1, *CORES);
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(weight(&items[i])));
    let n = items.len();
    let work = Arc::new(SharedWork {
        items,
        order,
        next: AtomicUsize::new(0),
    });
    let shared = work.clone();
    let done = off_thread(move |c| {
        let cores = other_cores();
        let helpers: Vec<_> = (1..threads)
            .filter_map(|k| {
                let core = cores.get((k - 1) % cores.len().max(1)).copied();
                let w = shared.clone();
                spawn_helper(core, move |placed| w.run(c, f, placed)).ok()
            })
            .collect();
        let mut done = shared.run(c, f, &mut || ());
        for h in helpers {
            match h.join() {
                Ok(d) => done.extend(d),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        done
    })
    .await?;
    // The items (records, hundreds of allocations) are freed on a blocking
    // thread, after the answer rather than before it.
    tokio::task::spawn_blocking(move || drop(work));
    let mut slots: Vec<Option<R>> = std::iter::repeat_with(|| None).take(n).collect();
    for (i, r) in done {
        slots[i] = Some(r);
    }
    Ok(slots.into_iter().flatten().collect())
}

/// The cores the calling thread may run on, but the one it is on.
fn other_cores() -> Vec<usize> {
    use nix::sched::{CpuSet, sched_getaffinity, sched_getcpu};
    let (Ok(mask), Ok(here)) = (sched_getaffinity(Pid::from_raw(0)), sched_getcpu()) else {
        return Vec::new();
    };
    (0..CpuSet::count())
        .filter(|&c| c != here && mask.is_set(c).unwrap_or(false))
        .collect()
}

/// A thread running `run`, started on `core`, then free to move: here (2
/// vCPUs) the kernel queued a new thread, and a woken pool thread alike,
/// behind their busy creator for ~1.5 ms (median) while the other core
/// idled, against ~0.1 ms when placed. `run` calls what it is given
/// between items: the first call after the placement lets the thread go.
fn spawn_helper<R: Send + 'static>(
    core: Option<usize>,
    run: impl FnOnce(&mut dyn FnMut()) -> R + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<R>> {
    use std::os::unix::thread::JoinHandleExt;
    use std::sync::atomic::AtomicBool;
    let mask = nix::sched::sched_getaffinity(Pid::from_raw(0)).ok();
    let placed = Arc::new(AtomicBool::new(false));
    let seen = placed.clone();
    let h = std::thread::Builder::new()
        .name("berth-stats".into())
        .spawn(move || {
            let mut free = mask.is_none();
            run(&mut || {
                if !free && seen.load(Ordering::Acquire) {
                    free = true;
                    if let Some(m) = &mask {
                        let _ = nix::sched::sched_setaffinity(Pid::from_raw(0), m);
                    }
                }
            })
        })?;
    if let Some(core) = core {
        // SAFETY: `set` is a plain bit set and the thread is not joined
        // yet; a failure only leaves it where the kernel put it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(core, &mut set);
            libc::pthread_setaffinity_np(
                h.as_pthread_t(),
                std::mem::size_of::<libc::cpu_set_t>(),
                &set,
            );
        }
    }
    placed.store(true, Ordering::Release);
    Ok(h)
}

/// Items that threads take one at a time, in `order`.
struct SharedWork<T> {
    items: Vec<T>,
    order: Vec<usize>,
    next: AtomicUsize,
}

impl<T> SharedWork<T> {
    /// `f` over the items this thread takes, with their indices; `between`
    /// before each take.
    fn run<R>(
        &self,
        c: &Collector,
        f: fn(&Collector, &T) -> R,
        between: &mut dyn FnMut(),
    ) -> Vec<(usize, R)> {
        let mut done = Vec::new();
        loop {
            between();
            let k = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(&i) = self.order.get(k) else {
                return done;
            };
            done.push((i, f(c, &self.items[i])));
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn square(_: &Collector, n: &usize) -> usize {
        n * n
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn off_threads_answers_in_the_items_order() {
        // Enough weight for every core, unequal weights (taken heaviest
        // first), and too little for more than one thread.
        let items: Vec<usize> = (0..40).collect();
        let got = off_threads(items.clone(), |n| n % 7 * MIN_CHUNK, square)
            .await
            .unwrap();
        assert_eq!(got, items.iter().map(|n| n * n).collect::<Vec<_>>());
        let got = off_threads(vec![3, 1, 2], |_| 1, square).await.unwrap();
        assert_eq!(got, [9, 1, 4]);
        assert!(
            off_threads(Vec::new(), |_| 1, square)
                .await
                .unwrap()
                .is_empty()
        );
    }

    fn fails_on_7(_: &Collector, n: &usize) -> usize {
        assert_ne!(*n, 7, "a collection that panics");
        *n
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_item_fails_the_call() {
        let items: Vec<usize> = (0..40).collect();
        assert!(off_threads(items, |_| MIN_CHUNK, fails_on_7).await.is_err());
    }
}
