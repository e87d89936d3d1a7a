//! Mounts: the OCI defaults, the CRI mounts and the pod's generated files.
//!
//! Follows containerd's `WithMounts` (internal/cri/opts/spec_linux_opts.go)
//! and `linuxContainerMounts` (internal/cri/server/container_create.go).

use std::io;
use std::path::{Path, PathBuf};

use berth_api::v1;
use oci_spec::runtime::Mount;

use crate::HostEnv;
use crate::error::{Result, SpecError};

/// Host files the pod provides to each of its containers. A path that is
/// `None`, or whose file does not exist, is not mounted (containerd skips
/// them the same way).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodFiles {
    pub etc_hosts: Option<PathBuf>,
    pub etc_hostname: Option<PathBuf>,
    pub resolv_conf: Option<PathBuf>,
    /// The pod's own /dev/shm (a tmpfs berthd mounted). Ignored when the pod
    /// uses the host IPC namespace: then the host's /dev/shm is mounted.
    pub dev_shm: Option<PathBuf>,
}

/// A bind mount to add, normalized from a CRI mount or a pod file.
#[derive(Clone, Debug)]
struct Bind {
    field: String,
    dst: String,
    src: PathBuf,
    readonly: bool,
    recursive_read_only: bool,
    propagation: i32,
    /// The CRI's `mount_options`, checked ([`BIND_OPTIONS`]).
    extra_options: Vec<String>,
}

/// The `Mount.mount_options` Berth applies to a bind (CRI 1.37): the ones
/// that only take rights away or choose atime updates. Any other option
/// (`exec`, `suid`, `dev`, `rw`, propagation, a filesystem's own) is refused:
/// the CRI says a runtime must apply what it is given, so it must not
/// silently drop what it cannot, and none may loosen the defaults.
const BIND_OPTIONS: &[&str] = &[
    "noexec",
    "nosuid",
    "nodev",
    "ro",
    "noatime",
    "nodiratime",
    "relatime",
    "strictatime",
];

fn mount(dst: &str, typ: &str, src: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dst))
        .set_typ(Some(typ.to_string()))
        .set_source(Some(PathBuf::from(src)))
        .set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

/// containerd's `defaultMounts` less `/run` (`oci.WithoutRunMount`), plus the
/// cgroup mount `WithMounts` adds. A privileged container gets sysfs and the
/// cgroup fs read-write (`WithWriteableSysfs`, `WithWriteableCgroupfs`).
pub fn default_mounts(privileged: bool) -> Vec<Mount> {
    let mode = if privileged { "rw" } else { "ro" };
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", mode],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", mode],
        ),
    ]
}

/// Controllers libcontainer's v1 cgroup manager puts a container in (its
/// `CONTROLLERS`): only their hierarchies have the container's cgroup dir.
const MANAGED_V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "hugetlb",
    "memory",
    "pids",
    "perf_event",
    "blkio",
    "net_prio",
    "net_cls",
    "freezer",
];

/// The container's cgroups on a v1 (or hybrid) host, as runc shows them:
/// a tmpfs at `/sys/fs/cgroup` and, per controller hierarchy, the
/// container's own cgroup dir bound at `/sys/fs/cgroup/<hierarchy>` (and at
/// each controller's name of a combined one, where runc makes symlinks),
/// read-only unless `privileged` (the tmpfs is made read-only through
/// `readonlyPaths`, see [`CGROUP_ROOT`]). `None`: no hierarchy known,
/// libcontainer sets the `cgroup` mount up itself.
///
/// Why not leave it to libcontainer: its v1 setup reads the cgroups of the
/// init's pid *in the container's PID namespace* from the host's /proc
/// (`Process::new(getpid())` when the parent is outside), so a container
/// joining a pod's PID namespace fails to start whenever the host has no
/// process of that number ("failed to mount cgroup v1: procfs failed");
/// and it binds the hierarchies read-write even for a read-only mount, so
/// an unprivileged container could raise its own limits.
pub fn cgroup_v1(
    hierarchies: &[berth_cgroup::Hierarchy],
    cgroups_path: &str,
    privileged: bool,
) -> Option<Vec<Mount>> {
    let relative = cgroups_path.trim_start_matches('/');
    let managed: Vec<&berth_cgroup::Hierarchy> = hierarchies
        .iter()
        .filter(|h| h.mount_point.starts_with(CGROUP_ROOT))
        .filter(|h| {
            h.controllers
                .iter()
                .any(|c| MANAGED_V1_CONTROLLERS.contains(&c.as_str()))
        })
        .collect();
    if managed.is_empty() || relative.is_empty() || relative.split('/').any(|c| c == "..") {
        return None;
    }
    let mut mounts = vec![mount(
        CGROUP_ROOT,
        "tmpfs",
        "tmpfs",
        &["nosuid", "noexec", "nodev", "mode=755", "size=64k"],
    )];
    let names: Vec<String> = managed
        .iter()
        .filter_map(|h| h.mount_point.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    let mode = if privileged { "rw" } else { "ro" };
    for (h, name) in managed.iter().zip(&names) {
        let source = h.mount_point.join(relative);
        let mut dests = vec![name.clone()];
        // A combined hierarchy ("cpu,cpuacct") under each controller's name.
        for c in &h.controllers {
            if c != name && !names.contains(c) && !dests.contains(c) {
                dests.push(c.clone());
            }
        }
        for dest in dests {
            let mut m = Mount::default();
            m.set_destination(PathBuf::from(CGROUP_ROOT).join(dest))
                .set_typ(Some("bind".into()))
                .set_source(Some(source.clone()))
                .set_options(Some(
                    ["rbind", "nosuid", "noexec", "nodev", mode]
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                ));
            mounts.push(m);
        }
    }
    Some(mounts)
}

/// Where containers see their cgroups.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Puts `v1` in place of the default `cgroup` mount; false when there is
/// none (a CRI mount took `/sys/fs/cgroup`).
pub fn replace_cgroup_mount(mounts: &mut Vec<Mount>, v1: Vec<Mount>) -> bool {
    let Some(i) = mounts.iter().position(|m| {
        m.destination() == Path::new(CGROUP_ROOT) && m.typ().as_deref() == Some("cgroup")
    }) else {
        return false;
    };
    mounts.splice(i..=i, v1);
    true
}

/// `filepath.Clean` for absolute container paths.
pub(crate) fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// containerd's `orderedMounts.parts`: the number of separators in the
/// cleaned path, so `/a` sorts before `/a/b` and a parent never shadows a
/// child mounted before it.
fn depth(path: &str) -> usize {
    clean(path).matches('/').count()
}

/// The mounts of a container and the rootfs propagation they need.
#[derive(Debug)]
pub struct Built {
    pub mounts: Vec<Mount>,
    pub rootfs_propagation: Option<String>,
}

/// Builds the container's mount list.
pub fn build(
    config: &v1::ContainerConfig,
    files: &PodFiles,
    ipc_host: bool,
    readonly_rootfs: bool,
    privileged: bool,
    host: &HostEnv,
) -> Result<Built> {
    let mut binds = Vec::new();
    for (i, m) in config.mounts.iter().enumerate() {
        binds.push(validate_cri_mount(i, m)?);
    }
    let in_cri = |dst: &str| binds.iter().any(|b: &Bind| clean(&b.dst) == dst);

    // The pod's files, unless a CRI mount already covers the path.
    let mut extra = Vec::new();
    let etc = [
        ("/etc/hostname", &files.etc_hostname),
        ("/etc/hosts", &files.etc_hosts),
        ("/etc/resolv.conf", &files.resolv_conf),
    ];
    for (dst, src) in etc {
        if let Some(src) = src
            && !in_cri(dst)
            && src.exists()
        {
            extra.push(pod_bind(dst, src, readonly_rootfs));
        }
    }
    if !in_cri("/dev/shm") {
        let shm = if ipc_host {
            Some(PathBuf::from("/dev/shm"))
        } else {
            files.dev_shm.clone()
        };
        if let Some(src) = shm
            && src.exists()
        {
            extra.push(pod_bind("/dev/shm", &src, false));
        }
    }
    binds.extend(extra);
    binds.sort_by_key(|b| depth(&b.dst));

    let supplied: Vec<String> = binds.iter().map(|b| clean(&b.dst)).collect();
    let dev_supplied = supplied.iter().any(|d| d == "/dev");
    let mut mounts: Vec<Mount> = default_mounts(privileged)
        .into_iter()
        .filter(|m| {
            let dst = clean(&m.destination().to_string_lossy());
            let under_dev = dev_supplied && dst.starts_with("/dev/");
            !supplied.contains(&dst) && !under_dev
        })
        .collect();

    // rootfsPropagation in the OCI names libcontainer accepts ("shared",
    // "slave"; it applies them recursively, as runc does "rshared"/"rslave").
    let mut propagation = None::<&str>;
    let mut mountinfo = None;
    for b in binds {
        let src = prepare_source(&b, host)?;
        let mut options = vec!["rbind".to_string()];
        let prop = v1::MountPropagation::try_from(b.propagation)
            .unwrap_or(v1::MountPropagation::PropagationPrivate);
        match prop {
            v1::MountPropagation::PropagationPrivate => options.push("rprivate".into()),
            v1::MountPropagation::PropagationBidirectional => {
                let info = load_mountinfo(&mut mountinfo, host)?;
                ensure_propagation(info, &src, true, &b.field)?;
                options.push("rshared".into());
                propagation = Some("shared");
            }
            v1::MountPropagation::PropagationHostToContainer => {
                let info = load_mountinfo(&mut mountinfo, host)?;
                ensure_propagation(info, &src, false, &b.field)?;
                options.push("rslave".into());
                if propagation != Some("shared") {
                    propagation = Some("slave");
                }
            }
        }
        // containerd does not make mounts read-only because the rootfs is.
        options.push(
            match (b.readonly, b.recursive_read_only) {
                (true, true) => "rro",
                (true, false) => "ro",
                // `ro` among the mount options makes it read-only as well.
                _ if b.extra_options.iter().any(|o| o == "ro") => "ro",
                _ => "rw",
            }
            .into(),
        );
        options.extend(b.extra_options.iter().filter(|o| *o != "ro").cloned());
        let mut m = Mount::default();
        m.set_destination(PathBuf::from(&b.dst))
            .set_typ(Some("bind".into()))
            .set_source(Some(src))
            .set_options(Some(options));
        mounts.push(m);
    }
    Ok(Built {
        mounts,
        rootfs_propagation: propagation.map(str::to_string),
    })
}

fn pod_bind(dst: &str, src: &Path, readonly: bool) -> Bind {
    Bind {
        field: format!("pod file {dst}"),
        dst: dst.to_string(),
        src: src.to_path_buf(),
        readonly,
        recursive_read_only: false,
        propagation: v1::MountPropagation::PropagationPrivate as i32,
        extra_options: vec![],
    }
}

fn validate_cri_mount(i: usize, m: &v1::Mount) -> Result<Bind> {
    let field = format!("mounts[{i}]");
    if m.container_path.is_empty() {
        return Err(SpecError::invalid(
            format!("{field}.container_path"),
            "empty",
        ));
    }
    if !m.container_path.starts_with('/') {
        return Err(SpecError::invalid(
            format!("{field}.container_path"),
            format!("{:?} is not an absolute path", m.container_path),
        ));
    }
    if m.image.as_ref().is_some_and(|i| !i.image.is_empty()) {
        return Err(SpecError::unsupported(
            format!("{field}.image"),
            "image volume mounts are not supported",
        ));
    }
    if m.host_path.is_empty() {
        return Err(SpecError::invalid(format!("{field}.host_path"), "empty"));
    }
    if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
        return Err(SpecError::unsupported(
            format!("{field}.uidMappings"),
            "idmapped mounts are staged by berthd as plain binds before the spec is built (a pod with hostUsers: false); none may reach the spec",
        ));
    }
    // containerd's checks for the CRI's recursive_read_only rules.
    if m.recursive_read_only {
        if !m.readonly {
            return Err(SpecError::invalid(
                format!("{field}.recursive_read_only"),
                format!(
                    "recursive read-only mount conflicts with RW mount (host_path={:?})",
                    m.host_path
                ),
            ));
        }
        if m.propagation != v1::MountPropagation::PropagationPrivate as i32 {
            return Err(SpecError::invalid(
                format!("{field}.recursive_read_only"),
                format!(
                    "recursive read-only mount needs private propagation (host_path={:?})",
                    m.host_path
                ),
            ));
        }
    }
    let mut extra_options = Vec::with_capacity(m.mount_options.len());
    for o in &m.mount_options {
        if !BIND_OPTIONS.contains(&o.as_str()) {
            return Err(SpecError::invalid(
                format!("{field}.mount_options"),
                format!(
                    "{o:?} is not a bind mount option Berth applies (it applies {})",
                    BIND_OPTIONS.join(", ")
                ),
            ));
        }
        if !extra_options.contains(o) {
            extra_options.push(o.clone());
        }
    }
    // selinux_relabel: Berth runs without SELinux labels, so there is
    // nothing to relabel; containerd ignores ENOTSUP the same way.
    Ok(Bind {
        field: format!("{field}.host_path"),
        dst: m.container_path.clone(),
        src: PathBuf::from(&m.host_path),
        readonly: m.readonly,
        recursive_read_only: m.recursive_read_only,
        propagation: m.propagation,
        extra_options,
    })
}

/// A missing source is created as a directory (containerd and CRI-O do this;
/// the kubelet relies on it for hostPath volumes without a type); symlinks
/// are followed, as the CRI asks.
fn prepare_source(b: &Bind, host: &HostEnv) -> Result<PathBuf> {
    match std::fs::metadata(&b.src) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound && host.create_missing_mount_sources => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .create(&b.src)
                .map_err(|e| SpecError::io(b.field.clone(), &b.src, e))?;
        }
        Err(e) => return Err(SpecError::io(b.field.clone(), &b.src, e)),
    }
    std::fs::canonicalize(&b.src).map_err(|e| SpecError::io(b.field.clone(), &b.src, e))
}

use berth_mountinfo::Mount as MountInfo;

fn load_mountinfo<'a>(
    cache: &'a mut Option<Vec<MountInfo>>,
    host: &HostEnv,
) -> Result<&'a [MountInfo]> {
    if cache.is_none() {
        let s = std::fs::read_to_string(&host.mountinfo_path)
            .map_err(|e| SpecError::io("mounts", &host.mountinfo_path, e))?;
        *cache = Some(berth_mountinfo::parse(&s));
    }
    Ok(cache.as_deref().unwrap_or_default())
}

/// containerd's `ensureShared` / `ensureSharedOrSlave`: the mount holding
/// `src` must propagate, or the requested propagation cannot work. The last
/// matching entry wins, since later mounts stack on top of earlier ones.
fn ensure_propagation(
    info: &[MountInfo],
    src: &Path,
    need_shared: bool,
    field: &str,
) -> Result<()> {
    let m = info
        .iter()
        .filter(|m| src.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.components().count())
        .ok_or_else(|| {
            SpecError::invalid(field, format!("no mount found for {}", src.display()))
        })?;
    let ok = m
        .optional
        .iter()
        .any(|o| o.starts_with("shared:") || (!need_shared && o.starts_with("master:")));
    if ok {
        return Ok(());
    }
    let want = if need_shared {
        "a shared mount (PROPAGATION_BIDIRECTIONAL)"
    } else {
        "a shared or slave mount (PROPAGATION_HOST_TO_CONTAINER)"
    };
    Err(SpecError::invalid(
        field,
        format!(
            "path {} is mounted on {} but it is not {want}",
            src.display(),
            m.mount_point.display()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dsts(m: &[Mount]) -> Vec<String> {
        m.iter()
            .map(|m| m.destination().to_string_lossy().into_owned())
            .collect()
    }

    fn opts(m: &[Mount], dst: &str) -> Vec<String> {
        m.iter()
            .find(|m| m.destination() == Path::new(dst))
            .unwrap_or_else(|| panic!("no mount {dst}"))
            .options()
            .clone()
            .unwrap()
    }

    fn cri_mount(dst: &str, src: &Path) -> v1::Mount {
        v1::Mount {
            container_path: dst.into(),
            host_path: src.to_string_lossy().into_owned(),
            ..Default::default()
        }
    }

    /// `build` for a container of a plain pod (no pod files, private IPC, not
    /// privileged), on the default host.
    fn build_plain(c: &v1::ContainerConfig) -> Result<Built> {
        build(
            c,
            &PodFiles::default(),
            false,
            false,
            false,
            &HostEnv::default(),
        )
    }

    fn cfg(mounts: Vec<v1::Mount>) -> v1::ContainerConfig {
        v1::ContainerConfig {
            mounts,
            ..Default::default()
        }
    }

    const DEFAULTS: [&str; 7] = [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
    ];

    #[test]
    fn clean_and_depth() {
        assert_eq!(clean("/a//b/./c/../d/"), "/a/b/d");
        assert_eq!(clean("/"), "/");
        assert_eq!(clean("/.."), "/");
        assert_eq!(depth("/"), 1);
        assert_eq!(depth("/a"), 1);
        assert_eq!(depth("/a/b/"), 2);
    }

    #[test]
    fn defaults_only() {
        let b = build_plain(&cfg(vec![])).unwrap();
        assert_eq!(dsts(&b.mounts), DEFAULTS);
        assert_eq!(opts(&b.mounts, "/sys"), ["nosuid", "noexec", "nodev", "ro"]);
        assert_eq!(
            opts(&b.mounts, "/sys/fs/cgroup"),
            ["nosuid", "noexec", "nodev", "relatime", "ro"]
        );
        assert!(b.rootfs_propagation.is_none());
    }

    fn hierarchy(mount_point: &str, controllers: &[&str]) -> berth_cgroup::Hierarchy {
        berth_cgroup::Hierarchy {
            mount_point: mount_point.into(),
            controllers: controllers.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn cgroup_v1_binds_the_containers_own_cgroups() {
        let hierarchies = [
            hierarchy("/sys/fs/cgroup/cpu,cpuacct", &["cpu", "cpuacct"]),
            hierarchy("/sys/fs/cgroup/memory", &["memory"]),
            // No controller libcontainer manages: no container dir in it.
            hierarchy("/sys/fs/cgroup/rdma", &["rdma"]),
            // Not under /sys/fs/cgroup.
            hierarchy("/run/other", &["pids"]),
        ];
        let m = cgroup_v1(&hierarchies, "/berth/c1", false).unwrap();
        assert_eq!(
            dsts(&m),
            [
                "/sys/fs/cgroup",
                "/sys/fs/cgroup/cpu,cpuacct",
                "/sys/fs/cgroup/cpu",
                "/sys/fs/cgroup/cpuacct",
                "/sys/fs/cgroup/memory",
            ]
        );
        assert_eq!(m[0].typ().as_deref(), Some("tmpfs"));
        let sources: Vec<_> = m[1..].iter().map(|m| m.source().clone().unwrap()).collect();
        assert_eq!(
            sources,
            [
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/berth/c1"),
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/berth/c1"),
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/berth/c1"),
                PathBuf::from("/sys/fs/cgroup/memory/berth/c1"),
            ]
        );
        assert_eq!(
            opts(&m, "/sys/fs/cgroup/memory"),
            ["rbind", "nosuid", "noexec", "nodev", "ro"]
        );
        let privileged = cgroup_v1(&hierarchies, "/berth/c1", true).unwrap();
        assert_eq!(
            opts(&privileged, "/sys/fs/cgroup/memory").last().unwrap(),
            "rw"
        );
        // Nothing to bind, or a path that climbs: libcontainer's mount stays.
        assert!(cgroup_v1(&hierarchies[2..], "/berth/c1", false).is_none());
        assert!(cgroup_v1(&hierarchies, "/berth/../c1", false).is_none());
        assert!(cgroup_v1(&hierarchies, "/", false).is_none());

        let mut mounts = default_mounts(false);
        assert!(replace_cgroup_mount(&mut mounts, m.clone()));
        assert_eq!(dsts(&mounts)[..6], DEFAULTS[..6]);
        assert_eq!(dsts(&mounts)[6..], dsts(&m));
        assert!(!replace_cgroup_mount(&mut mounts, m));
    }

    #[test]
    fn privileged_sysfs_and_cgroup_rw() {
        let b = build(
            &cfg(vec![]),
            &PodFiles::default(),
            false,
            false,
            true,
            &HostEnv::default(),
        )
        .unwrap();
        assert_eq!(opts(&b.mounts, "/sys").last().unwrap(), "rw");
        assert_eq!(opts(&b.mounts, "/sys/fs/cgroup").last().unwrap(), "rw");
    }

    #[test]
    fn cri_mounts_sorted_parents_first_and_options() {
        let d = tempfile::tempdir().unwrap();
        let p = |n: &str| {
            let p = d.path().join(n);
            std::fs::create_dir_all(&p).unwrap();
            p
        };
        let mut ro = cri_mount("/data/a/b", &p("ab"));
        ro.readonly = true;
        let mut rro = cri_mount("/data/rro", &p("rro"));
        rro.readonly = true;
        rro.recursive_read_only = true;
        let mounts = vec![
            ro,
            cri_mount("/data", &p("data")),
            rro,
            cri_mount("/x/", &p("x")),
        ];
        let b = build_plain(&cfg(mounts)).unwrap();
        let got = dsts(&b.mounts);
        assert_eq!(&got[..7], DEFAULTS);
        // Stable sort by depth: /data and /x/ (1), /data/rro (2), /data/a/b (3).
        assert_eq!(&got[7..], ["/data", "/x/", "/data/rro", "/data/a/b"]);
        assert_eq!(opts(&b.mounts, "/data/a/b"), ["rbind", "rprivate", "ro"]);
        assert_eq!(opts(&b.mounts, "/data"), ["rbind", "rprivate", "rw"]);
        assert_eq!(opts(&b.mounts, "/data/rro"), ["rbind", "rprivate", "rro"]);
        let m = b
            .mounts
            .iter()
            .find(|m| m.destination() == Path::new("/data"))
            .unwrap();
        assert_eq!(m.typ().as_deref(), Some("bind"));
        assert_eq!(
            m.source().as_deref(),
            Some(
                std::fs::canonicalize(d.path().join("data"))
                    .unwrap()
                    .as_path()
            )
        );
    }

    #[test]
    fn cri_mount_overrides_default_and_dev_hides_dev_children() {
        let d = tempfile::tempdir().unwrap();
        let b = build(
            &cfg(vec![
                cri_mount("/sys/", d.path()),
                cri_mount("/dev", d.path()),
            ]),
            &PodFiles::default(),
            false,
            false,
            false,
            &HostEnv::default(),
        )
        .unwrap();
        assert_eq!(
            dsts(&b.mounts),
            ["/proc", "/sys/fs/cgroup", "/sys/", "/dev"]
        );
    }

    #[test]
    fn pod_files_mounted_unless_overridden_or_missing() {
        let d = tempfile::tempdir().unwrap();
        let f = |n: &str| {
            let p = d.path().join(n);
            std::fs::write(&p, n).unwrap();
            p
        };
        let shm = d.path().join("shm");
        std::fs::create_dir(&shm).unwrap();
        let files = PodFiles {
            etc_hosts: Some(f("hosts")),
            etc_hostname: Some(f("hostname")),
            resolv_conf: Some(d.path().join("missing-resolv.conf")),
            dev_shm: Some(shm.clone()),
        };
        let user_hosts = f("my-hosts");
        let b = build(
            &cfg(vec![cri_mount("/etc/hosts", &user_hosts)]),
            &files,
            false,
            true,
            false,
            &HostEnv::default(),
        )
        .unwrap();
        let got = dsts(&b.mounts);
        // The pod's /dev/shm replaces the default tmpfs.
        assert_eq!(
            got,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup",
                "/etc/hosts",
                "/etc/hostname",
                "/dev/shm"
            ]
        );
        let src = |dst: &str| {
            b.mounts
                .iter()
                .find(|m| m.destination() == Path::new(dst))
                .unwrap()
                .source()
                .clone()
                .unwrap()
        };
        assert_eq!(
            src("/etc/hosts"),
            std::fs::canonicalize(&user_hosts).unwrap()
        );
        assert_eq!(src("/dev/shm"), std::fs::canonicalize(&shm).unwrap());
        // The pod's etc files follow readonly_rootfs; /dev/shm stays rw.
        assert_eq!(
            opts(&b.mounts, "/etc/hostname"),
            ["rbind", "rprivate", "ro"]
        );
        assert_eq!(opts(&b.mounts, "/etc/hosts"), ["rbind", "rprivate", "rw"]);
        assert_eq!(opts(&b.mounts, "/dev/shm"), ["rbind", "rprivate", "rw"]);
    }

    #[test]
    fn host_ipc_gets_host_dev_shm() {
        let files = PodFiles {
            dev_shm: Some(PathBuf::from("/nonexistent/pod/shm")),
            ..Default::default()
        };
        let b = build(
            &cfg(vec![]),
            &files,
            true,
            false,
            false,
            &HostEnv::default(),
        )
        .unwrap();
        let m = b
            .mounts
            .iter()
            .find(|m| m.destination() == Path::new("/dev/shm"))
            .unwrap();
        if Path::new("/dev/shm").exists() {
            assert_eq!(m.typ().as_deref(), Some("bind"));
            assert_eq!(m.source().as_deref(), Some(Path::new("/dev/shm")));
        }
    }

    #[test]
    fn mount_options_restrict_the_bind_and_nothing_else_is_taken() {
        let d = tempfile::tempdir().unwrap();
        let mut m = cri_mount("/m", d.path());
        m.mount_options = ["noexec", "nodev", "nosuid", "noatime", "noexec"]
            .map(String::from)
            .to_vec();
        let b = build_plain(&cfg(vec![m.clone()])).unwrap();
        assert_eq!(
            opts(&b.mounts, "/m"),
            [
                "rbind", "rprivate", "rw", "noexec", "nodev", "nosuid", "noatime"
            ]
        );
        // `ro` among them makes the bind read-only.
        m.mount_options = vec!["ro".into()];
        let b = build_plain(&cfg(vec![m.clone()])).unwrap();
        assert_eq!(opts(&b.mounts, "/m"), ["rbind", "rprivate", "ro"]);
        // Anything that would loosen the defaults or is not a bind option.
        for bad in [
            "exec",
            "suid",
            "dev",
            "rw",
            "rshared",
            "size=1m",
            "",
            "nodev,exec",
        ] {
            m.mount_options = vec!["nodev".into(), bad.into()];
            let e = build_plain(&cfg(vec![m.clone()])).unwrap_err();
            assert_eq!(e.field(), "mounts[0].mount_options", "{bad}");
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn missing_host_path_is_created_or_rejected() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("a/b/c");
        let c = cfg(vec![cri_mount("/m", &missing)]);
        build_plain(&c).unwrap();
        assert!(missing.is_dir());
        let strict = HostEnv {
            create_missing_mount_sources: false,
            ..Default::default()
        };
        let c = cfg(vec![cri_mount("/m", &d.path().join("nope"))]);
        let e = build(&c, &PodFiles::default(), false, false, false, &strict).unwrap_err();
        assert_eq!(e.field(), "mounts[0].host_path");
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn symlinked_host_path_is_resolved() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, d.path().join("link")).unwrap();
        let c = cfg(vec![cri_mount("/m", &d.path().join("link"))]);
        let b = build_plain(&c).unwrap();
        assert_eq!(
            b.mounts.last().unwrap().source().as_deref(),
            Some(std::fs::canonicalize(&real).unwrap().as_path())
        );
    }

    #[test]
    fn invalid_mounts_name_the_field() {
        let d = tempfile::tempdir().unwrap();
        let check = |m: v1::Mount, field: &str| {
            let e = build(
                &cfg(vec![cri_mount("/ok", d.path()), m]),
                &PodFiles::default(),
                false,
                false,
                false,
                &HostEnv::default(),
            )
            .unwrap_err();
            assert_eq!(e.field(), field, "{e}");
        };
        check(cri_mount("", d.path()), "mounts[1].container_path");
        check(cri_mount("rel", d.path()), "mounts[1].container_path");
        check(cri_mount("/a", Path::new("")), "mounts[1].host_path");
        let mut m = cri_mount("/a", d.path());
        m.recursive_read_only = true;
        check(m.clone(), "mounts[1].recursive_read_only");
        m.readonly = true;
        m.propagation = v1::MountPropagation::PropagationHostToContainer as i32;
        check(m, "mounts[1].recursive_read_only");
        let mut m = cri_mount("/a", Path::new(""));
        m.image = Some(v1::ImageSpec {
            image: "busybox".into(),
            ..Default::default()
        });
        check(m, "mounts[1].image");
        let mut m = cri_mount("/a", d.path());
        m.uid_mappings = vec![v1::IdMapping {
            host_id: 1000,
            container_id: 0,
            length: 1,
        }];
        check(m, "mounts[1].uidMappings");
    }

    fn host_with_mountinfo(d: &Path, info: &str) -> HostEnv {
        let p = d.join("mountinfo");
        std::fs::write(&p, info).unwrap();
        HostEnv {
            mountinfo_path: p,
            ..Default::default()
        }
    }

    #[test]
    fn propagation_modes_and_rootfs_propagation() {
        let d = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(d.path()).unwrap();
        let shared = base.join("shared");
        let slave = base.join("slave");
        let private = base.join("private");
        for p in [&shared, &slave, &private] {
            std::fs::create_dir(p).unwrap();
        }
        let info = format!(
            "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
             30 22 0:5 / {} rw shared:7 - tmpfs tmpfs rw\n\
             31 22 0:6 / {} rw master:3 - tmpfs tmpfs rw\n\
             32 22 0:7 / {} rw - tmpfs tmpfs rw\n",
            shared.display(),
            slave.display(),
            private.display()
        );
        let host = host_with_mountinfo(d.path(), &info);
        let with = |src: &Path, p: v1::MountPropagation| {
            let mut m = cri_mount("/m", src);
            m.propagation = p as i32;
            build(
                &cfg(vec![m]),
                &PodFiles::default(),
                false,
                false,
                false,
                &host,
            )
        };
        use v1::MountPropagation::*;
        let b = with(&shared, PropagationBidirectional).unwrap();
        assert_eq!(opts(&b.mounts, "/m"), ["rbind", "rshared", "rw"]);
        assert_eq!(b.rootfs_propagation.as_deref(), Some("shared"));
        let b = with(&slave, PropagationHostToContainer).unwrap();
        assert_eq!(opts(&b.mounts, "/m"), ["rbind", "rslave", "rw"]);
        assert_eq!(b.rootfs_propagation.as_deref(), Some("slave"));
        let b = with(&shared, PropagationHostToContainer).unwrap();
        assert_eq!(b.rootfs_propagation.as_deref(), Some("slave"));
        let e = with(&slave, PropagationBidirectional).err().unwrap();
        assert_eq!(e.field(), "mounts[0].host_path");
        assert!(e.to_string().contains("not a shared mount"), "{e}");
        let e = with(&private, PropagationHostToContainer).err().unwrap();
        assert!(e.to_string().contains("shared or slave"), "{e}");
        let b = with(&private, PropagationPrivate).unwrap();
        assert!(b.rootfs_propagation.is_none());

        // rshared wins over rslave whatever the order.
        let mut a = cri_mount("/a", &slave);
        a.propagation = PropagationHostToContainer as i32;
        let mut s = cri_mount("/s", &shared);
        s.propagation = PropagationBidirectional as i32;
        let b = build(
            &cfg(vec![s, a]),
            &PodFiles::default(),
            false,
            false,
            false,
            &host,
        )
        .unwrap();
        assert_eq!(b.rootfs_propagation.as_deref(), Some("shared"));
    }
}
