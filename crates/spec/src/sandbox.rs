//! RunPodSandbox's checks of the pod config: pure (no daemon state), so
//! that berthd and the `cri` fuzz target run the same code.

use std::collections::BTreeMap;

use berth_api::v1::{NamespaceMode, PodSandboxConfig};

/// What a valid pod config asks of the pod's namespaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPlan {
    /// Own network namespace (not the host's).
    pub net: bool,
    /// Own IPC namespace.
    pub ipc: bool,
    /// Own UTS namespace.
    pub uts: bool,
    /// A PID namespace shared by the pod's containers.
    pub pid: bool,
    pub hostname: String,
    pub sysctls: BTreeMap<String, String>,
    /// The pod's own user namespace (`hostUsers: false`), made first: the
    /// other namespaces are made inside it.
    pub userns: Option<crate::userns::UsernsMaps>,
}

/// Checks a RunPodSandbox request for the runtime handler `handler`, which
/// must be the default one ("") or one of `configured` (berthd's
/// `runtime_handlers`); the error is the message of an `InvalidArgument`
/// reply.
pub fn validate(
    config: &PodSandboxConfig,
    handler: &str,
    configured: &[String],
) -> Result<PodPlan, String> {
    let invalid = |m: String| Err(m);
    let Some(md) = &config.metadata else {
        return invalid("config.metadata is required".into());
    };
    for (field, v) in [
        ("name", &md.name),
        ("namespace", &md.namespace),
        ("uid", &md.uid),
    ] {
        if v.is_empty() {
            return invalid(format!("config.metadata.{field} is required"));
        }
    }
    if !handler.is_empty() && !configured.iter().any(|h| h == handler) {
        return invalid(format!(
            "runtime handler {handler:?} is not configured: berthd runs the default handler (\"\") \
             and those named by runtime_handlers in its config ({configured:?})"
        ));
    }
    let linux = config.linux.clone().unwrap_or_default();
    let ns = linux
        .security_context
        .and_then(|s| s.namespace_options)
        .unwrap_or_default();
    let userns = crate::userns::from_options(Some(&ns))?;
    let node = NamespaceMode::Node as i32;
    let host_net = ns.network == node;
    let host_ipc = ns.ipc == node;
    // The hostname and DNS entries are written as lines into the pod's
    // hosts and resolv.conf: whitespace or a control character would add
    // lines of the tenant's choosing (another nameserver, a hosts entry).
    let one_word = |v: &str| !v.chars().any(|c| c.is_whitespace() || c.is_control());
    if config.hostname.len() > 64 || !one_word(&config.hostname) {
        return invalid(format!(
            "hostname {:?} is not a valid host name",
            config.hostname
        ));
    }
    if let Some(dns) = &config.dns_config {
        for (field, values) in [
            ("servers", &dns.servers),
            ("searches", &dns.searches),
            ("options", &dns.options),
        ] {
            if let Some(bad) = values.iter().find(|v| !one_word(v)) {
                return invalid(format!(
                    "dns_config.{field}: {bad:?} must be one word without whitespace or control characters"
                ));
            }
        }
    }
    let parent = linux.cgroup_parent.trim_end_matches('/');
    if parent.contains('\0') || parent.split('/').any(|c| c == "..") {
        return invalid(format!(
            "cgroup_parent {:?} is not a cgroup path",
            linux.cgroup_parent
        ));
    }
    let last = parent.rsplit('/').next().unwrap_or("");
    if last.ends_with(".slice") && crate::expand_slice(last).is_none() {
        return invalid(format!(
            "cgroup_parent {:?} is not a valid systemd slice name (like kubepods-burstable-pod<uid>.slice)",
            linux.cgroup_parent
        ));
    }
    for (k, v) in &linux.sysctls {
        let name = k.replace('/', ".");
        if k.is_empty()
            || k.split(['.', '/']).any(|c| c.is_empty() || c == "..")
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c))
            || v.contains('\n')
        {
            return invalid(format!("sysctl {k:?}={v:?} is malformed"));
        }
        let ipc = name.starts_with("kernel.shm")
            || name.starts_with("kernel.msg")
            || name == "kernel.sem"
            || name.starts_with("fs.mqueue.");
        let net = name.starts_with("net.");
        let uts = name == "kernel.hostname" || name == "kernel.domainname";
        if !(ipc || net || uts) {
            return invalid(format!(
                "sysctl {k:?} is not namespaced: only net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*, kernel.hostname and kernel.domainname can be set for a pod"
            ));
        }
        if (net || uts) && host_net {
            return invalid(format!(
                "sysctl {k:?} would change the host: the pod uses the host network"
            ));
        }
        if ipc && host_ipc {
            return invalid(format!(
                "sysctl {k:?} would change the host: the pod uses the host IPC namespace"
            ));
        }
    }
    Ok(PodPlan {
        net: !host_net,
        ipc: !host_ipc,
        // A PID namespace shared by the pod's containers needs an init to hold it.
        pid: ns.pid == NamespaceMode::Pod as i32,
        // As containerd: a host-network pod keeps the host's UTS namespace (node name).
        uts: !host_net,
        hostname: config.hostname.clone(),
        sysctls: linux.sysctls.into_iter().collect(),
        userns,
    })
}
