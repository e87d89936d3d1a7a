//! Builds the OCI runtime spec of a CRI container.
//!
//! [`build_spec`] turns a CRI `ContainerConfig` (with its pod's
//! `PodSandboxConfig`), the image's config and what berthd prepared for the
//! container (rootfs, pinned pod namespaces, generated files, cgroup path)
//! into an `oci_spec::runtime::Spec` for libcontainer, the way containerd's
//! CRI plugin does (`buildContainerSpec` / `buildLinuxSpec` and their spec
//! options; see each module). Invalid input is a [`SpecError`] naming the
//! CRI field, for an `InvalidArgument` reply.
//!
//! The only side effects are reads (the image's /etc/passwd and /etc/group,
//! device nodes, mountinfo, a Localhost seccomp profile) and creating a
//! missing bind-mount source directory, as containerd does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use berth_api::v1;
use oci_spec::runtime::{Linux, LinuxResources, Process, Root, Spec, User};

pub mod caps;
pub mod devices;
mod error;
mod host;
pub mod in_root;
pub mod mounts;
pub mod namespaces;
pub mod nri;
pub mod process;
pub mod resources;
pub mod sandbox;
pub mod seccomp_default;
pub mod security;
pub mod user;
pub mod userns;

pub use error::{Result, SpecError};
pub use host::HostEnv;
pub use mounts::PodFiles;
pub use namespaces::{PodNamespace, PodNamespaces};
pub use oci_spec;

/// The OCI runtime spec version written into `ociVersion`.
pub const OCI_VERSION: &str = "1.2.0";

/// The parts of the image's config the spec uses (OCI image config
/// `config` object).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `User`: "", "name", "uid", "name:group", "uid:gid".
    pub user: String,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
}

impl From<&oci_spec::image::Config> for ImageConfig {
    fn from(c: &oci_spec::image::Config) -> Self {
        ImageConfig {
            user: c.user().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().unwrap_or_default(),
        }
    }
}

impl From<&oci_spec::image::ImageConfiguration> for ImageConfig {
    fn from(c: &oci_spec::image::ImageConfiguration) -> Self {
        c.config()
            .as_ref()
            .map(ImageConfig::from)
            .unwrap_or_default()
    }
}

impl ImageConfig {
    /// Parses an image config blob (`application/vnd.oci.image.config.v1+json`
    /// or Docker's equivalent). Works whichever oci-spec version produced it.
    pub fn from_json(blob: &[u8]) -> std::result::Result<Self, serde_json::Error> {
        let c: oci_spec::image::ImageConfiguration = serde_json::from_slice(blob)?;
        Ok(ImageConfig::from(&c))
    }
}

/// Everything [`build_spec`] needs.
#[derive(Clone, Debug)]
pub struct SpecInput<'a> {
    pub container_id: &'a str,
    pub sandbox_id: &'a str,
    pub config: &'a v1::ContainerConfig,
    pub sandbox: &'a v1::PodSandboxConfig,
    pub image: &'a ImageConfig,
    /// The image reference, for the `io.kubernetes.cri.image-name` annotation.
    pub image_name: &'a str,
    /// The container's mounted rootfs (absolute).
    pub rootfs: &'a Path,
    pub namespaces: &'a PodNamespaces,
    /// PID namespace of the container `namespace_options.target_id` names
    /// (`/proc/<its pid>/ns/pid`), when the PID mode is TARGET.
    pub target_pid_ns: Option<&'a Path>,
    pub files: &'a PodFiles,
    /// `linux.cgroupsPath`; see [`cgroups_path`].
    pub cgroups_path: Option<&'a str>,
    pub host: &'a HostEnv,
}

/// The cgroup path of a container under its pod's `cgroup_parent`.
///
/// A cgroupfs parent gives `<parent>/<id>`. A systemd slice parent (what a
/// kubelet with `cgroupDriver: systemd` sends, e.g.
/// `kubepods-burstable-pod1.slice`) is expanded to the cgroupfs path systemd
/// gives that slice, `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice`,
/// and the container goes in `<prefix>-<id>.scope` under it, the layout
/// containerd and CRI-O produce through systemd. The monitor manages the
/// cgroups itself (libcontainer's cgroupfs manager), so slice names work on
/// hosts without systemd too.
pub fn cgroups_path(
    cgroup_parent: &str,
    container_id: &str,
    systemd_prefix: &str,
) -> Option<String> {
    if cgroup_parent.is_empty() {
        return None;
    }
    let base = cgroup_parent
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("");
    if let Some(dir) = expand_slice(base) {
        return Some(format!("{dir}/{systemd_prefix}-{container_id}.scope"));
    }
    Some(format!(
        "{}/{container_id}",
        cgroup_parent.trim_end_matches('/')
    ))
}

/// systemd's slice naming: `a-b-c.slice` lives at `/a.slice/a-b.slice/a-b-c.slice`;
/// `-.slice` is the root. None when `name` is not a valid slice name.
pub fn expand_slice(name: &str) -> Option<String> {
    let stem = name.strip_suffix(".slice")?;
    if stem == "-" {
        return Some("/".to_string());
    }
    if stem.is_empty()
        || stem.contains('/')
        || stem.starts_with('-')
        || stem.ends_with('-')
        || stem.contains("--")
    {
        return None;
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for part in stem.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push('/');
        path.push_str(&prefix);
        path.push_str(".slice");
    }
    Some(path)
}

/// Annotation keys containerd sets (`DefaultCRIAnnotations`), kept so tools
/// that read them (NRI plugins, kata, gVisor) work the same under Berth.
pub mod annotations {
    pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
    pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
    pub const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
    pub const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
    pub const SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
    pub const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
    pub const IMAGE_NAME: &str = "io.kubernetes.cri.image-name";
}

/// Builds the container's OCI spec.
pub fn build_spec(input: &SpecInput) -> Result<Spec> {
    let config = input.config;
    let host = input.host;
    let sc = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref());
    let privileged = sc.is_some_and(|s| s.privileged);
    let readonly_rootfs = sc.is_some_and(|s| s.readonly_rootfs);

    if privileged {
        let pod_privileged = input
            .sandbox
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .is_some_and(|s| s.privileged);
        if !pod_privileged {
            return Err(SpecError::invalid(
                "linux.security_context.privileged",
                "no privileged container allowed in a pod that is not privileged",
            ));
        }
    }
    if !input.rootfs.is_absolute() {
        return Err(SpecError::invalid(
            "rootfs",
            format!("{} is not absolute", input.rootfs.display()),
        ));
    }

    // Process.
    let args = process::args(config, input.image)?;
    let resolved = user::resolve(sc, &input.image.user, input.rootfs)?;
    let hostname = if input.sandbox.hostname.is_empty() {
        host.node_hostname.as_str()
    } else {
        input.sandbox.hostname.as_str()
    };
    let env = process::env(config, input.image, hostname, resolved.home.as_deref())?;
    let cwd = process::cwd(config, input.image)?;
    let capabilities = caps::build(
        sc.and_then(|s| s.capabilities.as_ref()),
        privileged,
        host.cap_available,
    )?;
    let cri_resources = config.linux.as_ref().and_then(|l| l.resources.as_ref());

    if let Some((_, maps)) = &input.namespaces.user {
        userns::check_user_is_mapped(maps, resolved.uid, resolved.gid, &resolved.additional_gids)?;
    }
    let mut user = User::default();
    user.set_uid(resolved.uid)
        .set_gid(resolved.gid)
        .set_additional_gids(Some(resolved.additional_gids.clone()));
    let mut proc = Process::default();
    proc.set_terminal(Some(config.tty))
        .set_user(user)
        .set_args(Some(args))
        .set_env(Some(env))
        .set_cwd(PathBuf::from(cwd))
        .set_rlimits(None)
        // `None`, not `Some(false)`, when unset: libcontainer 0.7 loads the
        // seccomp filter late (after dropping capabilities) whenever this is
        // `Some`, and without no_new_privs or CAP_SYS_ADMIN the kernel then
        // refuses the filter ("failed to load seccomp context").
        .set_no_new_privileges(sc.is_some_and(|s| s.no_new_privs).then_some(true))
        .set_apparmor_profile(security::apparmor(sc, privileged, host)?)
        .set_oom_score_adj(resources::oom_score_adj(cri_resources, host)?);
    let bounding = capabilities.bounding().clone().unwrap_or_default();
    proc.set_capabilities(Some(capabilities));

    // Root and mounts.
    let mut root = Root::default();
    root.set_path(input.rootfs.to_path_buf())
        .set_readonly(Some(readonly_rootfs));
    let ipc_host = input.namespaces.ipc == PodNamespace::Host;
    let mut built = mounts::build(
        config,
        input.files,
        ipc_host,
        readonly_rootfs,
        privileged,
        host,
    )?;
    let v1_cgroups = input
        .cgroups_path
        .filter(|_| !host.cgroup_v2)
        .and_then(|path| mounts::cgroup_v1(&host.cgroup_v1_hierarchies, path, privileged));
    let v1_cgroups =
        v1_cgroups.is_some_and(|v1| mounts::replace_cgroup_mount(&mut built.mounts, v1));

    // Linux.
    let devs = devices::build(config, privileged, &host.dev_dir)?;
    let mut res = LinuxResources::default();
    res.set_devices(Some(devs.rules));
    resources::apply(cri_resources, host, &mut res)?;
    let namespaces = namespaces::build(
        sc,
        input.namespaces,
        input.target_pid_ns,
        host.cgroup_v2 && !privileged,
    )?;
    let (masked, mut readonly) =
        security::masked_and_readonly_paths(sc, privileged, input.namespaces.user.is_some())?;
    if v1_cgroups && !privileged {
        // The tmpfs under the v1 cgroup binds (their dirs made by then).
        readonly.push(mounts::CGROUP_ROOT.to_string());
    }
    let seccomp = security::seccomp(sc, privileged, &bounding, host)?;
    let sysctl = sysctls(input.sandbox, input.namespaces)?;

    let mut linux = Linux::default();
    linux
        .set_uid_mappings(None)
        .set_gid_mappings(None)
        .set_sysctl(if sysctl.is_empty() {
            None
        } else {
            Some(sysctl)
        })
        .set_resources(Some(res))
        .set_cgroups_path(input.cgroups_path.map(PathBuf::from))
        .set_namespaces(Some(namespaces))
        .set_devices(Some(devs.devices))
        .set_seccomp(seccomp)
        .set_rootfs_propagation(built.rootfs_propagation)
        .set_masked_paths(Some(masked))
        .set_readonly_paths(Some(readonly))
        .set_mount_label(None)
        .set_intel_rdt(None)
        .set_personality(None);

    let mut spec = Spec::default();
    spec.set_version(OCI_VERSION.to_string())
        .set_root(Some(root))
        .set_mounts(Some(built.mounts))
        .set_process(Some(proc))
        // The container joins the pod's UTS namespace, where berthd set the
        // hostname; repeating it is harmless and keeps the spec explicit. A
        // container in the host's UTS namespace must not set it.
        .set_hostname(match &input.namespaces.uts {
            PodNamespace::Pinned(_) if !input.sandbox.hostname.is_empty() => {
                Some(input.sandbox.hostname.clone())
            }
            _ => None,
        })
        .set_domainname(None)
        .set_hooks(None)
        .set_annotations(Some(spec_annotations(input)))
        .set_linux(Some(linux));
    Ok(spec)
}

fn spec_annotations(input: &SpecInput) -> HashMap<String, String> {
    use annotations::*;
    let mut a: HashMap<String, String> = input
        .config
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let meta = input.sandbox.metadata.clone().unwrap_or_default();
    let name = input
        .config
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    for (k, v) in [
        (CONTAINER_TYPE, "container".to_string()),
        (SANDBOX_ID, input.sandbox_id.to_string()),
        (SANDBOX_NAME, meta.name),
        (SANDBOX_NAMESPACE, meta.namespace),
        (SANDBOX_UID, meta.uid),
        (CONTAINER_NAME, name),
        (IMAGE_NAME, input.image_name.to_string()),
    ] {
        a.insert(k.to_string(), v);
    }
    a
}

/// The pod's sysctls. Each must belong to a namespace the container has
/// (runc's `validateSysctl` rules); one for a namespace the pod shares with
/// the host would change the host, so it is refused.
fn sysctls(sandbox: &v1::PodSandboxConfig, ns: &PodNamespaces) -> Result<HashMap<String, String>> {
    const IPC: [&str; 8] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let Some(linux) = &sandbox.linux else {
        return Ok(HashMap::new());
    };
    let mut out = HashMap::new();
    for (k, v) in &linux.sysctls {
        let field = format!("pod linux.sysctls[{k:?}]");
        // The kubelet may use '/' as the separator ("net/ipv4/ip_forward").
        let dotted = if k.contains('/') && !k.contains('.') {
            k.replace('/', ".")
        } else {
            k.clone()
        };
        let (pod_ns, what) = if IPC.contains(&dotted.as_str()) || dotted.starts_with("fs.mqueue.") {
            (&ns.ipc, "IPC")
        } else if dotted.starts_with("net.") {
            (&ns.network, "network")
        } else if dotted == "kernel.hostname" || dotted == "kernel.domainname" {
            (&ns.uts, "UTS")
        } else {
            return Err(SpecError::invalid(field, "not a namespaced sysctl"));
        };
        if *pod_ns == PodNamespace::Host {
            return Err(SpecError::invalid(
                field,
                format!("the pod uses the host's {what} namespace"),
            ));
        }
        out.insert(dotted, v.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
