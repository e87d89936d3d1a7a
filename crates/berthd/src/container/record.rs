//! The durable record of one container (a JSON value in the `containers` table).

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_api::v1::{self, ContainerMetadata, ContainerState};
use berth_spec::oci_spec::runtime::{LinuxResources, Spec};
use serde::{Deserialize, Serialize};

/// What berthd last knew of the container's process. The monitor is the
/// source of truth while the container lives; an exit, once seen, is cached
/// here so status survives the monitor (and the pod) going away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    Created,
    Running,
    Exited,
    /// Reads only, never stored: the pod's monitor does not answer, so
    /// whether a live container still runs cannot be told.
    Unknown,
}

impl State {
    pub fn to_cri(self) -> ContainerState {
        match self {
            State::Created => ContainerState::ContainerCreated,
            State::Running => ContainerState::ContainerRunning,
            State::Exited => ContainerState::ContainerExited,
            State::Unknown => ContainerState::ContainerUnknown,
        }
    }

    /// Where in a container's life the state is: it only moves forward
    /// (an exit seen first, by an event, is not undone by a start's answer
    /// read later).
    pub fn rank(self) -> u8 {
        match self {
            State::Created => 0,
            State::Running => 1,
            State::Exited => 2,
            State::Unknown => 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub pod_id: String,
    pub name: String,
    pub attempt: u32,
    /// The image as the CRI config named it (the kubelet names it by its ID).
    pub image: String,
    /// The config's `user_specified_image`: the image as the pod's spec named it (the kubelet
    /// sends it; other clients leave it empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_specified_image: String,
    /// One of the image's tags, kept only when the config named the image by its ID and gave
    /// no `user_specified_image` (what is shown then, as containerd shows it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image_tag: String,
    /// `sha256:` of the image config.
    pub image_id: String,
    /// A repo digest when the image has one, else the image id (as containerd).
    pub image_ref: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// As reported to the CRI: pod `log_directory` + container `log_path`, or "".
    pub log_path: String,
    /// Signal number StopContainer sends first.
    pub stop_signal: i32,
    pub state: State,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub oom_killed: bool,
    /// Why the state is what it is, when not obvious (a lost container).
    #[serde(default)]
    pub message: String,
    /// `<state>/containers/<id>`: bundle (config.json) and `rootfs` mount point.
    pub bundle: PathBuf,
    /// `<root>/containers/<id>`: overlay upper and work dirs.
    pub layer_dir: PathBuf,
    /// The CRI mounts as CreateContainer gave them (ContainerStatus
    /// reports them verbatim, as containerd does).
    #[serde(default)]
    pub mounts: Vec<MountRecord>,
    /// The container's current resources: as CreateContainer set them in
    /// the spec, updated by UpdateContainerResources. `None`: a record
    /// written before Berth kept them.
    #[serde(default)]
    pub resources: Option<ResourcesRecord>,
    /// The identity the container's process runs with. `None`: a record
    /// written before Berth kept it.
    #[serde(default)]
    pub user: Option<UserRecord>,
    /// Created with a terminal (`tty`): attach gets its master.
    #[serde(default)]
    pub tty: bool,
    /// Created with a stdin pipe the monitor keeps for attach.
    #[serde(default)]
    pub stdin: bool,
    /// The monitor closes that stdin once the first attach with stdin
    /// ends; attach then ends at the client's stdin EOF.
    #[serde(default)]
    pub stdin_once: bool,
}

impl ContainerRecord {
    /// The image name the kubelet shows as the container's (`status.containerStatuses[].image`),
    /// in ContainerStatus, ListContainers and the metrics' labels: the pod's own words, as
    /// CRI-O answers; containerd answers the image's first tag.
    pub fn shown_image(&self) -> &str {
        [&self.user_specified_image, &self.image_tag]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or(&self.image)
    }

    pub fn metadata(&self) -> ContainerMetadata {
        ContainerMetadata {
            name: self.name.clone(),
            attempt: self.attempt,
        }
    }

    pub fn rootfs(&self) -> PathBuf {
        self.bundle.join("rootfs")
    }

    /// Name reservation key: one container per (pod, name, attempt), as containerd.
    pub fn reservation_key(&self) -> String {
        reservation_key(&self.pod_id, &self.name, self.attempt)
    }

    /// CRI reason for an exited container.
    pub fn reason(&self) -> &'static str {
        match self.state {
            State::Exited if self.oom_killed => "OOMKilled",
            State::Exited if self.exit_code == 0 => "Completed",
            State::Exited => "Error",
            _ => "",
        }
    }
}

/// One CRI mount of the container, as the request gave it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    pub container_path: String,
    pub host_path: String,
    #[serde(default)]
    pub readonly: bool,
    #[serde(default)]
    pub recursive_read_only: bool,
    #[serde(default)]
    pub selinux_relabel: bool,
    /// The CRI `MountPropagation` value (0 private, 1 host-to-container,
    /// 2 bidirectional).
    #[serde(default)]
    pub propagation: i32,
    /// An image volume: the image mounted (as the CRI named it, and the id
    /// it resolved to) and the path inside it. `host_path` stays as given
    /// (empty).
    #[serde(default)]
    pub image: Option<ImageMountRecord>,
    /// The CRI's `mount_options` (CRI 1.37), as applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mount_options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMountRecord {
    pub image: String,
    #[serde(default)]
    pub user_specified_image: String,
    /// The image's id, as PullImage answered it.
    pub image_ref: String,
    #[serde(default)]
    pub sub_path: String,
}

impl From<&v1::Mount> for MountRecord {
    fn from(m: &v1::Mount) -> Self {
        MountRecord {
            container_path: m.container_path.clone(),
            host_path: m.host_path.clone(),
            readonly: m.readonly,
            recursive_read_only: m.recursive_read_only,
            selinux_relabel: m.selinux_relabel,
            propagation: m.propagation,
            image: None,
            mount_options: m.mount_options.clone(),
        }
    }
}

impl MountRecord {
    pub fn to_cri(&self) -> v1::Mount {
        v1::Mount {
            container_path: self.container_path.clone(),
            host_path: self.host_path.clone(),
            readonly: self.readonly,
            recursive_read_only: self.recursive_read_only,
            selinux_relabel: self.selinux_relabel,
            propagation: self.propagation,
            image: self.image.as_ref().map(|i| v1::ImageSpec {
                image: i.image.clone(),
                user_specified_image: i.user_specified_image.clone(),
                image_ref: i.image_ref.clone(),
                ..Default::default()
            }),
            image_sub_path: self
                .image
                .as_ref()
                .map(|i| i.sub_path.clone())
                .unwrap_or_default(),
            mount_options: self.mount_options.clone(),
            ..Default::default()
        }
    }
}

/// The CRI `LinuxContainerResources` of a container, read back from its
/// OCI spec as containerd's `copyResourcesToStatus` does: what the kernel
/// was asked for (after Berth's conversions and clamping), not the raw
/// request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourcesRecord {
    pub cpu_period: i64,
    pub cpu_quota: i64,
    pub cpu_shares: i64,
    pub memory_limit_in_bytes: i64,
    pub memory_swap_limit_in_bytes: i64,
    pub oom_score_adj: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    /// Page size ("2MB") → limit in bytes.
    pub hugepage_limits: BTreeMap<String, u64>,
    pub unified: BTreeMap<String, String>,
}

impl ResourcesRecord {
    /// From the container's spec (`linux.resources` and `process.oomScoreAdj`).
    pub fn from_spec(spec: &Spec) -> ResourcesRecord {
        let mut r = ResourcesRecord::default();
        if let Some(res) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
            r.update(res);
        }
        if let Some(adj) = spec.process().as_ref().and_then(|p| p.oom_score_adj()) {
            r.oom_score_adj = adj.into();
        }
        r
    }

    /// Applies what an UpdateContainerResources wrote to the cgroup: every
    /// value `res` sets replaces the current one, the rest stay (the
    /// monitor writes only what is set, as containerd's update does).
    pub fn update(&mut self, res: &LinuxResources) {
        if let Some(cpu) = res.cpu() {
            if let Some(v) = cpu.period() {
                self.cpu_period = i64::try_from(v).unwrap_or(i64::MAX);
            }
            if let Some(v) = cpu.quota() {
                self.cpu_quota = v;
            }
            if let Some(v) = cpu.shares() {
                self.cpu_shares = i64::try_from(v).unwrap_or(i64::MAX);
            }
            if let Some(v) = cpu.cpus() {
                self.cpuset_cpus = v.clone();
            }
            if let Some(v) = cpu.mems() {
                self.cpuset_mems = v.clone();
            }
        }
        if let Some(mem) = res.memory() {
            if let Some(v) = mem.limit() {
                self.memory_limit_in_bytes = v;
            }
            if let Some(v) = mem.swap() {
                self.memory_swap_limit_in_bytes = v;
            }
        }
        for h in res.hugepage_limits().iter().flatten() {
            self.hugepage_limits
                .insert(h.page_size().clone(), u64::try_from(h.limit()).unwrap_or(0));
        }
        for (k, v) in res.unified().iter().flatten() {
            self.unified.insert(k.clone(), v.clone());
        }
    }

    pub fn to_cri(&self) -> v1::LinuxContainerResources {
        v1::LinuxContainerResources {
            cpu_period: self.cpu_period,
            cpu_quota: self.cpu_quota,
            cpu_shares: self.cpu_shares,
            memory_limit_in_bytes: self.memory_limit_in_bytes,
            memory_swap_limit_in_bytes: self.memory_swap_limit_in_bytes,
            oom_score_adj: self.oom_score_adj,
            cpuset_cpus: self.cpuset_cpus.clone(),
            cpuset_mems: self.cpuset_mems.clone(),
            hugepage_limits: self
                .hugepage_limits
                .iter()
                .map(|(page_size, &limit)| v1::HugepageLimit {
                    page_size: page_size.clone(),
                    limit,
                })
                .collect(),
            unified: self.unified.clone().into_iter().collect(),
        }
    }
}

/// The container process's identity (CRI `LinuxContainerUser`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub uid: u32,
    pub gid: u32,
    /// Sorted, deduplicated; includes the primary gid (as containerd
    /// reports it, and as `id -G` in the container shows).
    #[serde(default)]
    pub supplemental_groups: Vec<u32>,
}

impl UserRecord {
    /// From the spec's `process.user` (what berth_spec resolved from the
    /// CRI security context and the image's /etc/passwd and /etc/group).
    pub fn from_spec(spec: &Spec) -> Option<UserRecord> {
        let user = spec.process().as_ref()?.user();
        let mut groups: Vec<u32> = user.additional_gids().clone().unwrap_or_default();
        groups.push(user.gid());
        groups.sort_unstable();
        groups.dedup();
        Some(UserRecord {
            uid: user.uid(),
            gid: user.gid(),
            supplemental_groups: groups,
        })
    }

    pub fn to_cri(&self) -> v1::ContainerUser {
        v1::ContainerUser {
            linux: Some(v1::LinuxContainerUser {
                uid: self.uid.into(),
                gid: self.gid.into(),
                supplemental_groups: self.supplemental_groups.iter().map(|&g| g.into()).collect(),
            }),
        }
    }
}

pub fn reservation_key(pod_id: &str, name: &str, attempt: u32) -> String {
    format!("{pod_id}/{name}_{attempt}")
}

/// Makes the daemon's non-durable store commits durable soon, off the request
/// path. Start and stop only cache in the record what the monitor knows (and
/// tells again after a restart): those commits skip the fsync
/// (`redb::Durability::None`) and mark the flusher, which commits an empty
/// durable transaction a moment later; that persists them and everything
/// committed before. (Any other durable commit, e.g. the next CreateContainer,
/// does the same.)
pub struct Flusher {
    dirty: std::sync::Mutex<bool>,
    wake: std::sync::Condvar,
}

/// How long the flusher gathers commits before one fsync covers them.
const FLUSH_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

impl Flusher {
    pub fn start(db: &std::sync::Arc<redb::Database>) -> std::sync::Arc<Flusher> {
        let f = std::sync::Arc::new(Flusher {
            dirty: std::sync::Mutex::new(false),
            wake: std::sync::Condvar::new(),
        });
        let (me, db) = (f.clone(), std::sync::Arc::downgrade(db));
        let spawned = std::thread::Builder::new()
            .name("store-flush".into())
            .spawn(move || {
                loop {
                    {
                        let mut dirty = me.dirty.lock().unwrap_or_else(|e| e.into_inner());
                        while !*dirty {
                            dirty = me.wake.wait(dirty).unwrap_or_else(|e| e.into_inner());
                        }
                    }
                    std::thread::sleep(FLUSH_DELAY);
                    *me.dirty.lock().unwrap_or_else(|e| e.into_inner()) = false;
                    // The store was closed (daemon shutdown): nothing to do.
                    let Some(db) = db.upgrade() else { return };
                    let res = db.begin_write().map(|txn| txn.commit());
                    if let Err(e) | Ok(Err(e)) = res
                        .map_err(|e| e.to_string())
                        .map(|r| r.map_err(|e| e.to_string()))
                    {
                        crate::store::exit_if_poisoned(&e);
                        tracing::warn!(error = %e, "cannot flush the container store");
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the store flusher: state caches become durable with the next durable commit");
        }
        f
    }

    /// A non-durable commit happened.
    pub fn mark(&self) {
        *self.dirty.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_spec::oci_spec::runtime::{
        LinuxBuilder, LinuxCpuBuilder, LinuxHugepageLimitBuilder, LinuxMemoryBuilder,
        LinuxPidsBuilder, LinuxResourcesBuilder, ProcessBuilder, SpecBuilder, UserBuilder,
    };

    fn spec(res: LinuxResources, oom: Option<i32>, gid: u32, gids: Vec<u32>) -> Spec {
        let user = UserBuilder::default()
            .uid(1000u32)
            .gid(gid)
            .additional_gids(gids)
            .build()
            .unwrap();
        let mut process = ProcessBuilder::default().user(user).build().unwrap();
        process.set_oom_score_adj(oom);
        SpecBuilder::default()
            .process(process)
            .linux(LinuxBuilder::default().resources(res).build().unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn resources_from_spec_then_updated() {
        let res = LinuxResourcesBuilder::default()
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(512u64)
                    .quota(50_000i64)
                    .period(100_000u64)
                    .cpus("0")
                    .build()
                    .unwrap(),
            )
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64i64 << 20)
                    .swap(64i64 << 20)
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(100i64).build().unwrap())
            .hugepage_limits(vec![
                LinuxHugepageLimitBuilder::default()
                    .page_size("2MB")
                    .limit(4i64 << 20)
                    .build()
                    .unwrap(),
            ])
            .build()
            .unwrap();
        let mut r = ResourcesRecord::from_spec(&spec(res, Some(500), 1000, vec![]));
        assert_eq!(
            r.to_cri(),
            v1::LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 50_000,
                cpu_shares: 512,
                memory_limit_in_bytes: 64 << 20,
                memory_swap_limit_in_bytes: 64 << 20,
                oom_score_adj: 500,
                cpuset_cpus: "0".into(),
                hugepage_limits: vec![v1::HugepageLimit {
                    page_size: "2MB".into(),
                    limit: 4 << 20,
                }],
                ..Default::default()
            }
        );
        // An update replaces what it sets and keeps the rest.
        let update = LinuxResourcesBuilder::default()
            .cpu(LinuxCpuBuilder::default().quota(20_000i64).build().unwrap())
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(128i64 << 20)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        r.update(&update);
        let cri = r.to_cri();
        assert_eq!(cri.cpu_quota, 20_000);
        assert_eq!(cri.cpu_period, 100_000);
        assert_eq!(cri.cpu_shares, 512);
        assert_eq!(cri.memory_limit_in_bytes, 128 << 20);
        assert_eq!(cri.memory_swap_limit_in_bytes, 64 << 20);
        assert_eq!(cri.oom_score_adj, 500);
    }

    #[test]
    fn user_includes_the_primary_gid_sorted() {
        let s = spec(LinuxResources::default(), None, 1000, vec![50000, 1234]);
        let u = UserRecord::from_spec(&s).unwrap();
        assert_eq!(u.supplemental_groups, vec![1000, 1234, 50000]);
        let cri = u.to_cri().linux.unwrap();
        assert_eq!((cri.uid, cri.gid), (1000, 1000));
        assert_eq!(cri.supplemental_groups, vec![1000, 1234, 50000]);
        // Already there: not twice.
        let s = spec(LinuxResources::default(), None, 50, vec![50, 1000]);
        assert_eq!(
            UserRecord::from_spec(&s).unwrap().supplemental_groups,
            vec![50, 1000]
        );
        // No resources in the spec: all zero.
        assert_eq!(ResourcesRecord::from_spec(&s), ResourcesRecord::default());
    }

    #[test]
    fn mounts_round_trip_as_given() {
        let m = v1::Mount {
            container_path: "/data".into(),
            host_path: "/srv/data".into(),
            readonly: true,
            recursive_read_only: true,
            selinux_relabel: true,
            propagation: v1::MountPropagation::PropagationHostToContainer as i32,
            ..Default::default()
        };
        assert_eq!(MountRecord::from(&m).to_cri(), m);
    }

    #[test]
    fn old_records_load_without_the_new_fields() {
        let rec: ContainerRecord = serde_json::from_value(serde_json::json!({
            "id": "c1", "pod_id": "p1", "name": "app", "attempt": 0,
            "image": "busybox:latest", "image_id": "sha256:x", "image_ref": "sha256:x",
            "labels": {}, "annotations": {}, "log_path": "", "stop_signal": 15,
            "state": "RUNNING", "created_at": 1, "started_at": 1, "finished_at": 0,
            "exit_code": 0, "oom_killed": false, "bundle": "/b", "layer_dir": "/l"
        }))
        .unwrap();
        assert!(rec.mounts.is_empty());
        assert_eq!(rec.resources, None);
        assert_eq!(rec.user, None);
    }
}
