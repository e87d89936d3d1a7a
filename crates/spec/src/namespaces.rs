//! Linux namespaces of a container.
//!
//! containerd's `WithPodNamespaces` joins the pod sandbox's network, IPC and
//! UTS namespaces through `/proc/<sandbox pid>/ns/*`; Berth has no pause
//! process, so it joins the nsfs files the pod pinned instead (CRI-O's
//! pinns model). When the pod uses the host's namespace there is nothing to
//! join or create: the container stays in the host's.

use std::path::{Path, PathBuf};

use berth_api::v1;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

use crate::error::{Result, SpecError};

/// One namespace of the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodNamespace {
    /// The pod uses the host's (NamespaceMode NODE).
    Host,
    /// The pod's namespace, pinned at this nsfs path.
    Pinned(PathBuf),
}

/// The pod's namespaces, as RunPodSandbox made them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodNamespaces {
    pub network: PodNamespace,
    pub ipc: PodNamespace,
    pub uts: PodNamespace,
    /// The PID namespace shared by the pod (`/proc/<pod init>/ns/pid`), when
    /// the pod's PID mode is POD; `None` otherwise.
    pub pid: Option<PathBuf>,
    /// The pod's user namespace (`hostUsers: false`): its pin and maps. The
    /// pod's other namespaces belong to it, so every container joins it.
    pub user: Option<(PathBuf, crate::userns::UsernsMaps)>,
}

const NS: &str = "linux.security_context.namespace_options";

fn ns(typ: LinuxNamespaceType, path: Option<&Path>) -> LinuxNamespace {
    let mut n = LinuxNamespace::default();
    n.set_typ(typ).set_path(path.map(Path::to_path_buf));
    n
}

fn join(typ: LinuxNamespaceType, pod: &PodNamespace, out: &mut Vec<LinuxNamespace>) {
    if let PodNamespace::Pinned(p) = pod {
        out.push(ns(typ, Some(p)));
    }
}

/// The namespace list. `target_pid_ns` is the PID namespace path of the
/// container named by `namespace_options.target_id`, resolved by the
/// caller. `cgroup_ns`: give the container its own cgroup namespace
/// (containerd does on cgroup v2 for non-privileged containers).
pub fn build(
    sc: Option<&v1::LinuxContainerSecurityContext>,
    pod: &PodNamespaces,
    target_pid_ns: Option<&Path>,
    cgroup_ns: bool,
) -> Result<Vec<LinuxNamespace>> {
    let opts = sc.and_then(|s| s.namespace_options.as_ref());
    check_userns(opts, pod)?;
    let pid_mode = opts.map_or(v1::NamespaceMode::Pod as i32, |o| o.pid);
    let pid_mode = v1::NamespaceMode::try_from(pid_mode)
        .map_err(|_| SpecError::invalid(format!("{NS}.pid"), format!("unknown mode {pid_mode}")))?;

    let mut out = Vec::new();
    match pid_mode {
        v1::NamespaceMode::Container => out.push(ns(LinuxNamespaceType::Pid, None)),
        v1::NamespaceMode::Pod => match &pod.pid {
            Some(p) => out.push(ns(LinuxNamespaceType::Pid, Some(p))),
            None => {
                return Err(SpecError::invalid(
                    format!("{NS}.pid"),
                    "POD, but the pod has no shared PID namespace",
                ));
            }
        },
        v1::NamespaceMode::Node => {}
        v1::NamespaceMode::Target => {
            let target = opts.map(|o| o.target_id.as_str()).unwrap_or("");
            if target.is_empty() {
                return Err(SpecError::invalid(
                    format!("{NS}.target_id"),
                    "required when pid is TARGET",
                ));
            }
            match target_pid_ns {
                Some(p) => out.push(ns(LinuxNamespaceType::Pid, Some(p))),
                None => {
                    return Err(SpecError::invalid(
                        format!("{NS}.target_id"),
                        format!("no PID namespace known for target container {target:?}"),
                    ));
                }
            }
        }
    }
    join(LinuxNamespaceType::Network, &pod.network, &mut out);
    join(LinuxNamespaceType::Ipc, &pod.ipc, &mut out);
    join(LinuxNamespaceType::Uts, &pod.uts, &mut out);
    if let Some((pin, _)) = &pod.user {
        // Joined first by libcontainer, whatever the order here.
        out.push(ns(LinuxNamespaceType::User, Some(pin)));
    }
    out.push(ns(LinuxNamespaceType::Mount, None));
    if cgroup_ns {
        out.push(ns(LinuxNamespaceType::Cgroup, None));
    }
    Ok(out)
}

/// A container lives in its pod's user namespace: it may say so (mode POD,
/// as the kubelet does), or say nothing; it cannot ask for another.
fn check_userns(opts: Option<&v1::NamespaceOption>, pod: &PodNamespaces) -> Result<()> {
    let Some(u) = opts.and_then(|o| o.userns_options.as_ref()) else {
        return Ok(());
    };
    let field = format!("{NS}.userns_options");
    match (v1::NamespaceMode::try_from(u.mode), &pod.user) {
        (Ok(v1::NamespaceMode::Pod), Some(_)) | (Ok(v1::NamespaceMode::Node), None) => Ok(()),
        (Ok(v1::NamespaceMode::Pod), None) => Err(SpecError::invalid(
            field,
            "mode POD, but the pod has no user namespace (it was run with hostUsers: true)",
        )),
        (Ok(v1::NamespaceMode::Node), Some(_)) => Err(SpecError::invalid(
            field,
            "mode NODE, but the pod runs in a user namespace of its own: its containers share it",
        )),
        (Ok(m), _) => Err(SpecError::unsupported(
            field,
            format!(
                "mode {} is not supported for user namespaces: only POD and NODE",
                m.as_str_name()
            ),
        )),
        (Err(_), _) => Err(SpecError::invalid(
            field,
            format!("unknown mode {}", u.mode),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> PodNamespaces {
        PodNamespaces {
            network: PodNamespace::Pinned("/run/berth/ns/net/p1".into()),
            ipc: PodNamespace::Pinned("/run/berth/ns/ipc/p1".into()),
            uts: PodNamespace::Pinned("/run/berth/ns/uts/p1".into()),
            pid: Some("/proc/4242/ns/pid".into()),
            user: None,
        }
    }

    fn sc(pid: v1::NamespaceMode, target: &str) -> v1::LinuxContainerSecurityContext {
        v1::LinuxContainerSecurityContext {
            namespace_options: Some(v1::NamespaceOption {
                pid: pid as i32,
                target_id: target.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn summary(list: &[LinuxNamespace]) -> Vec<(String, Option<String>)> {
        list.iter()
            .map(|n| {
                (
                    n.typ().to_string(),
                    n.path().as_ref().map(|p| p.to_string_lossy().into_owned()),
                )
            })
            .collect()
    }

    fn e(t: &str, p: Option<&str>) -> (String, Option<String>) {
        (t.to_string(), p.map(str::to_string))
    }

    #[test]
    fn pid_container_and_pinned_pod_namespaces() {
        let got = build(
            Some(&sc(v1::NamespaceMode::Container, "")),
            &pod(),
            None,
            false,
        )
        .unwrap();
        assert_eq!(
            summary(&got),
            vec![
                e("pid", None),
                e("net", Some("/run/berth/ns/net/p1")),
                e("ipc", Some("/run/berth/ns/ipc/p1")),
                e("uts", Some("/run/berth/ns/uts/p1")),
                e("mnt", None),
            ]
        );
    }

    #[test]
    fn pid_pod_node_target() {
        let got = build(Some(&sc(v1::NamespaceMode::Pod, "")), &pod(), None, false).unwrap();
        assert_eq!(summary(&got)[0], e("pid", Some("/proc/4242/ns/pid")));
        // No namespace options at all: the CRI default is POD.
        let got = build(None, &pod(), None, false).unwrap();
        assert_eq!(summary(&got)[0], e("pid", Some("/proc/4242/ns/pid")));

        let got = build(Some(&sc(v1::NamespaceMode::Node, "")), &pod(), None, false).unwrap();
        assert!(!got.iter().any(|n| n.typ() == LinuxNamespaceType::Pid));

        let t = Path::new("/proc/77/ns/pid");
        let got = build(
            Some(&sc(v1::NamespaceMode::Target, "ctr-a")),
            &pod(),
            Some(t),
            false,
        )
        .unwrap();
        assert_eq!(summary(&got)[0], e("pid", Some("/proc/77/ns/pid")));
    }

    #[test]
    fn pid_errors_name_the_field() {
        let mut p = pod();
        p.pid = None;
        let err = build(Some(&sc(v1::NamespaceMode::Pod, "")), &p, None, false).unwrap_err();
        assert_eq!(err.field(), "linux.security_context.namespace_options.pid");
        let err = build(
            Some(&sc(v1::NamespaceMode::Target, "")),
            &pod(),
            None,
            false,
        )
        .unwrap_err();
        assert_eq!(
            err.field(),
            "linux.security_context.namespace_options.target_id"
        );
        let err = build(
            Some(&sc(v1::NamespaceMode::Target, "gone")),
            &pod(),
            None,
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("gone"), "{err}");
        let mut bad = sc(v1::NamespaceMode::Pod, "");
        bad.namespace_options.as_mut().unwrap().pid = 17;
        assert!(build(Some(&bad), &pod(), None, false).is_err());
    }

    #[test]
    fn host_namespaces_are_left_out() {
        let p = PodNamespaces {
            network: PodNamespace::Host,
            ipc: PodNamespace::Host,
            uts: PodNamespace::Host,
            pid: None,
            user: None,
        };
        let got = build(Some(&sc(v1::NamespaceMode::Node, "")), &p, None, true).unwrap();
        assert_eq!(summary(&got), vec![e("mnt", None), e("cgroup", None)]);
    }

    #[test]
    fn a_pods_user_namespace_is_joined_and_only_its_own() {
        let userns = |mode: v1::NamespaceMode| {
            let mut s = sc(v1::NamespaceMode::Container, "");
            s.namespace_options.as_mut().unwrap().userns_options = Some(v1::UserNamespace {
                mode: mode as i32,
                ..Default::default()
            });
            s
        };
        let range = crate::userns::IdRange {
            host_id: 65536,
            length: 65536,
        };
        let mut in_userns = pod();
        in_userns.user = Some((
            "/run/berth/ns/user/p1".into(),
            crate::userns::UsernsMaps {
                uid: range,
                gid: range,
            },
        ));
        // The pod's user namespace is joined, whether the container names it or not.
        for s in [
            userns(v1::NamespaceMode::Pod),
            sc(v1::NamespaceMode::Container, ""),
        ] {
            let got = build(Some(&s), &in_userns, None, false).unwrap();
            assert!(
                summary(&got).contains(&e("user", Some("/run/berth/ns/user/p1"))),
                "{got:?}"
            );
        }
        // Mode POD in a pod without one, NODE in a pod with one, CONTAINER: refused.
        let field = "linux.security_context.namespace_options.userns_options";
        let err = build(Some(&userns(v1::NamespaceMode::Pod)), &pod(), None, false).unwrap_err();
        assert_eq!(err.field(), field);
        let err = build(
            Some(&userns(v1::NamespaceMode::Node)),
            &in_userns,
            None,
            false,
        )
        .unwrap_err();
        assert_eq!(err.field(), field);
        let err = build(
            Some(&userns(v1::NamespaceMode::Container)),
            &in_userns,
            None,
            false,
        )
        .unwrap_err();
        assert!(matches!(err, SpecError::Unsupported { .. }));
        // NODE in a pod without one: the host's, nothing joined.
        let got = build(Some(&userns(v1::NamespaceMode::Node)), &pod(), None, false).unwrap();
        assert!(!summary(&got).iter().any(|(t, _)| t == "user"), "{got:?}");
    }
}
