//! Berth's records as NRI sees them, and NRI resources as the CRI's.

use berth_nri::api;
use berth_spec::oci_spec::runtime::{LinuxResources, Spec};
use protobuf::MessageField;

use crate::container::{ContainerRecord, State};
use crate::sandbox::SandboxRecord;

pub fn pod_of(rec: &SandboxRecord) -> api::PodSandbox {
    let mut pod = api::PodSandbox::new();
    pod.id = rec.id.clone();
    pod.name = rec.name.clone();
    pod.uid = rec.uid.clone();
    pod.namespace = rec.namespace.clone();
    pod.labels = rec.labels.clone().into_iter().collect();
    pod.annotations = rec.annotations.clone().into_iter().collect();
    pod.runtime_handler = rec.runtime_handler.clone();
    pod.ips = rec.ips.clone();
    pod.pid = rec.init.map_or(0, |i| i.pid as u32);
    let mut linux = api::LinuxPodSandbox::new();
    linux.cgroup_parent = rec.cgroup_parent.clone();
    for (typ, path) in [
        ("network", &rec.pins.net),
        ("ipc", &rec.pins.ipc),
        ("uts", &rec.pins.uts),
        ("pid", &rec.pins.pid),
        ("user", &rec.pins.user),
    ] {
        if let Some(p) = path {
            let mut ns = api::LinuxNamespace::new();
            ns.type_ = typ.into();
            ns.path = p.display().to_string();
            linux.namespaces.push(ns);
        }
    }
    if let Ok(config) = rec.config()
        && let Some(l) = config.linux
    {
        if let Some(r) = l.resources.as_ref() {
            linux.pod_resources = MessageField::some(from_cri(r));
        }
        if let Some(r) = l.overhead.as_ref() {
            linux.pod_overhead = MessageField::some(from_cri(r));
        }
    }
    pod.linux = MessageField::some(linux);
    pod
}

fn state_of(s: State) -> api::ContainerState {
    match s {
        State::Created => api::ContainerState::CONTAINER_CREATED,
        State::Running => api::ContainerState::CONTAINER_RUNNING,
        State::Exited => api::ContainerState::CONTAINER_STOPPED,
        State::Unknown => api::ContainerState::CONTAINER_UNKNOWN,
    }
}

/// A stored container (events after creation, synchronization).
pub fn container_of(rec: &ContainerRecord) -> api::Container {
    let mut c = api::Container::new();
    c.id = rec.id.clone();
    c.pod_sandbox_id = rec.pod_id.clone();
    c.name = rec.name.clone();
    c.state = state_of(rec.state).into();
    c.labels = rec.labels.clone().into_iter().collect();
    c.annotations = rec.annotations.clone().into_iter().collect();
    c.created_at = rec.created_at;
    c.started_at = rec.started_at;
    c.finished_at = rec.finished_at;
    c.exit_code = rec.exit_code;
    c.status_message = rec.message.clone();
    for m in &rec.mounts {
        let mut mount = api::Mount::new();
        mount.destination = m.container_path.clone();
        mount.source = m.host_path.clone();
        mount.type_ = "bind".into();
        mount.options = vec!["rbind".into(), if m.readonly { "ro" } else { "rw" }.into()];
        c.mounts.push(mount);
    }
    let mut image = api::Image::new();
    image.name = rec.image.clone();
    image.digest = rec.image_ref.clone();
    image.config_digest = rec.image_id.clone();
    c.image = MessageField::some(image);
    if let Some(r) = &rec.resources {
        let mut linux = api::LinuxContainer::new();
        linux.resources = MessageField::some(from_cri(&r.to_cri()));
        let mut oom = api::OptionalInt::new();
        oom.value = r.oom_score_adj;
        linux.oom_score_adj = MessageField::some(oom);
        c.linux = MessageField::some(linux);
    }
    c
}

/// A container about to be created, from the spec built for it.
pub fn container_from_spec(
    id: &str,
    pod_id: &str,
    config: &berth_api::v1::ContainerConfig,
    spec: &Spec,
) -> api::Container {
    let mut c = api::Container::new();
    c.id = id.to_string();
    c.pod_sandbox_id = pod_id.to_string();
    c.name = config
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    c.state = api::ContainerState::CONTAINER_UNKNOWN.into();
    c.labels = config.labels.clone().into_iter().collect();
    c.annotations = spec
        .annotations()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    if let Some(p) = spec.process() {
        c.args = p.args().clone().unwrap_or_default();
        c.env = p.env().clone().unwrap_or_default();
        for r in p.rlimits().iter().flatten() {
            let mut l = api::POSIXRlimit::new();
            l.type_ = serde_json::to_value(r.typ())
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            l.hard = r.hard();
            l.soft = r.soft();
            c.rlimits.push(l);
        }
        let mut user = api::User::new();
        user.uid = p.user().uid();
        user.gid = p.user().gid();
        user.additional_gids = p.user().additional_gids().clone().unwrap_or_default();
        c.user = MessageField::some(user);
    }
    for m in spec.mounts().iter().flatten() {
        let mut mount = api::Mount::new();
        mount.destination = m.destination().display().to_string();
        mount.type_ = m.typ().clone().unwrap_or_default();
        mount.source = m
            .source()
            .as_ref()
            .map(|s| s.display().to_string())
            .unwrap_or_default();
        mount.options = m.options().clone().unwrap_or_default();
        c.mounts.push(mount);
    }
    if let Some(l) = spec.linux() {
        let mut linux = api::LinuxContainer::new();
        if let Some(r) = l.resources() {
            linux.resources = MessageField::some(from_spec(r));
        }
        linux.cgroups_path = l
            .cgroups_path()
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        for ns in l.namespaces().iter().flatten() {
            let mut n = api::LinuxNamespace::new();
            n.type_ = serde_json::to_value(ns.typ())
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            n.path = ns
                .path()
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            linux.namespaces.push(n);
        }
        if let Some(adj) = spec.process().as_ref().and_then(|p| p.oom_score_adj()) {
            let mut oom = api::OptionalInt::new();
            oom.value = adj.into();
            linux.oom_score_adj = MessageField::some(oom);
        }
        linux.sysctl = l.sysctl().clone().unwrap_or_default().into_iter().collect();
        c.linux = MessageField::some(linux);
    }
    c
}

fn opt_i64(v: Option<i64>) -> MessageField<api::OptionalInt64> {
    v.map(|value| {
        let mut o = api::OptionalInt64::new();
        o.value = value;
        o
    })
    .into()
}

fn opt_u64(v: Option<u64>) -> MessageField<api::OptionalUInt64> {
    v.map(|value| {
        let mut o = api::OptionalUInt64::new();
        o.value = value;
        o
    })
    .into()
}

fn from_spec(r: &LinuxResources) -> api::LinuxResources {
    let mut out = api::LinuxResources::new();
    if let Some(m) = r.memory() {
        let mut mem = api::LinuxMemory::new();
        mem.limit = opt_i64(m.limit());
        mem.reservation = opt_i64(m.reservation());
        mem.swap = opt_i64(m.swap());
        mem.swappiness = opt_u64(m.swappiness());
        out.memory = MessageField::some(mem);
    }
    if let Some(c) = r.cpu() {
        let mut cpu = api::LinuxCPU::new();
        cpu.shares = opt_u64(c.shares());
        cpu.quota = opt_i64(c.quota());
        cpu.period = opt_u64(c.period());
        cpu.cpus = c.cpus().clone().unwrap_or_default();
        cpu.mems = c.mems().clone().unwrap_or_default();
        out.cpu = MessageField::some(cpu);
    }
    for h in r.hugepage_limits().iter().flatten() {
        let mut l = api::HugepageLimit::new();
        l.page_size = h.page_size().clone();
        l.limit = h.limit() as u64;
        out.hugepage_limits.push(l);
    }
    out.unified = r
        .unified()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    if let Some(p) = r.pids() {
        let mut pids = api::LinuxPids::new();
        pids.limit = p.limit();
        out.pids = MessageField::some(pids);
    }
    out
}

/// CRI resources as NRI's (zero: unset, as the CRI means it).
pub fn from_cri(r: &berth_api::v1::LinuxContainerResources) -> api::LinuxResources {
    let nz_i = |v: i64| (v != 0).then_some(v);
    let nz_u = |v: i64| (v > 0).then_some(v as u64);
    let mut out = api::LinuxResources::new();
    let mut mem = api::LinuxMemory::new();
    mem.limit = opt_i64(nz_i(r.memory_limit_in_bytes));
    mem.swap = opt_i64(nz_i(r.memory_swap_limit_in_bytes));
    out.memory = MessageField::some(mem);
    let mut cpu = api::LinuxCPU::new();
    cpu.shares = opt_u64(nz_u(r.cpu_shares));
    cpu.quota = opt_i64(nz_i(r.cpu_quota));
    cpu.period = opt_u64(nz_u(r.cpu_period));
    cpu.cpus = r.cpuset_cpus.clone();
    cpu.mems = r.cpuset_mems.clone();
    out.cpu = MessageField::some(cpu);
    for h in &r.hugepage_limits {
        let mut l = api::HugepageLimit::new();
        l.page_size = h.page_size.clone();
        l.limit = h.limit;
        out.hugepage_limits.push(l);
    }
    out.unified = r.unified.clone().into_iter().collect();
    out
}

/// NRI resources as the CRI's, for an update through the path of
/// UpdateContainerResources (what NRI leaves unset stays 0: unchanged).
pub fn to_cri(r: &api::LinuxResources) -> berth_api::v1::LinuxContainerResources {
    let mut out = berth_api::v1::LinuxContainerResources::default();
    if let Some(m) = r.memory.as_ref() {
        out.memory_limit_in_bytes = m.limit.as_ref().map_or(0, |v| v.value);
        out.memory_swap_limit_in_bytes = m.swap.as_ref().map_or(0, |v| v.value);
    }
    if let Some(c) = r.cpu.as_ref() {
        out.cpu_shares = c.shares.as_ref().map_or(0, |v| v.value as i64);
        out.cpu_quota = c.quota.as_ref().map_or(0, |v| v.value);
        out.cpu_period = c.period.as_ref().map_or(0, |v| v.value as i64);
        out.cpuset_cpus = c.cpus.clone();
        out.cpuset_mems = c.mems.clone();
    }
    out.hugepage_limits = r
        .hugepage_limits
        .iter()
        .map(|h| berth_api::v1::HugepageLimit {
            page_size: h.page_size.clone(),
            limit: h.limit,
        })
        .collect();
    out.unified = r.unified.clone().into_iter().collect();
    out
}
