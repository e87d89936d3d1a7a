//! A pod's user namespace (`hostUsers: false`): the CRI's `userns_options`
//! checked and reduced to the one UID and one GID range Berth maps.
//!
//! As containerd and CRI-O: only mode POD (a user namespace shared by the
//! pod's containers) and NODE (the host's) exist; one range per kind, which
//! maps the pod's root (container ID 0) to an unprivileged host ID. The
//! pod's network, IPC and UTS namespaces (and its PID namespace) are made
//! inside it, so they belong to it: its root may mount sysfs and proc and
//! set its own namespaced sysctls, and holds nothing on the host.

use berth_api::v1;

/// One contiguous ID range: container IDs `0..length` are host IDs
/// `host_id..host_id + length`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdRange {
    pub host_id: u32,
    pub length: u32,
}

impl IdRange {
    /// The `uid_map`/`gid_map` line: "0 <host> <length>".
    pub fn map_line(&self) -> String {
        format!("0 {} {}", self.host_id, self.length)
    }

    /// The host ID of container ID `id`, if the range maps it.
    pub fn host_of(&self, id: u32) -> Option<u32> {
        (id < self.length).then(|| self.host_id + id)
    }
}

/// The pod's user namespace maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UsernsMaps {
    pub uid: IdRange,
    pub gid: IdRange,
}

/// What the pod's `namespace_options.userns_options` ask: `None` for the
/// host's user namespace (no options, or mode NODE). The error is the
/// message of an InvalidArgument reply.
pub fn from_options(opts: Option<&v1::NamespaceOption>) -> Result<Option<UsernsMaps>, String> {
    const F: &str = "linux.security_context.namespace_options.userns_options";
    let Some(u) = opts.and_then(|o| o.userns_options.as_ref()) else {
        return Ok(None);
    };
    match v1::NamespaceMode::try_from(u.mode) {
        Ok(v1::NamespaceMode::Node) => {
            if !u.uids.is_empty() || !u.gids.is_empty() {
                return Err(format!(
                    "{F}: mode NODE (the host's user namespace) takes no uids or gids"
                ));
            }
            Ok(None)
        }
        Ok(v1::NamespaceMode::Pod) => {
            let uid = one_range(&u.uids, &format!("{F}.uids"))?;
            let gid = one_range(&u.gids, &format!("{F}.gids"))?;
            let o = opts.cloned().unwrap_or_default();
            let node = v1::NamespaceMode::Node as i32;
            for (shared, what) in [
                (o.network == node, "the host network (hostNetwork)"),
                (o.ipc == node, "the host IPC namespace (hostIPC)"),
                (o.pid == node, "the host PID namespace (hostPID)"),
            ] {
                if shared {
                    return Err(format!(
                        "{F}: a pod in its own user namespace cannot use {what}"
                    ));
                }
            }
            Ok(Some(UsernsMaps { uid, gid }))
        }
        Ok(m) => Err(format!(
            "{F}: mode {} is not supported for user namespaces: only POD and NODE",
            m.as_str_name()
        )),
        Err(_) => Err(format!("{F}: unknown mode {}", u.mode)),
    }
}

/// The container's user and groups must exist in the pod's user namespace
/// (libcontainer's switch to an unmapped ID fails with a bare EINVAL).
pub fn check_user_is_mapped(
    maps: &UsernsMaps,
    uid: u32,
    gid: u32,
    additional_gids: &[u32],
) -> crate::Result<()> {
    let field = "linux.security_context.run_as_user";
    if maps.uid.host_of(uid).is_none() {
        return Err(crate::SpecError::invalid(
            field,
            format!(
                "uid {uid} is outside the pod's user namespace (it maps uids 0..{})",
                maps.uid.length
            ),
        ));
    }
    if let Some(g) = std::iter::once(&gid)
        .chain(additional_gids)
        .find(|&&g| maps.gid.host_of(g).is_none())
    {
        return Err(crate::SpecError::invalid(
            field,
            format!(
                "gid {g} is outside the pod's user namespace (it maps gids 0..{})",
                maps.gid.length
            ),
        ));
    }
    Ok(())
}

fn one_range(maps: &[v1::IdMapping], field: &str) -> Result<IdRange, String> {
    let [m] = maps else {
        return Err(format!(
            "{field}: exactly one mapping is supported, got {}",
            maps.len()
        ));
    };
    if m.container_id != 0 {
        return Err(format!(
            "{field}: the mapping must start at container ID 0 (the pod's root), not {}",
            m.container_id
        ));
    }
    if m.length == 0 {
        return Err(format!("{field}: the mapping's length is 0"));
    }
    if m.host_id == 0 {
        return Err(format!(
            "{field}: host ID 0 would make the pod's root the host's root"
        ));
    }
    if m.host_id.checked_add(m.length - 1).is_none() {
        return Err(format!(
            "{field}: host IDs {} + {} run past the largest ID",
            m.host_id, m.length
        ));
    }
    Ok(IdRange {
        host_id: m.host_id,
        length: m.length,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(mode: v1::NamespaceMode, uids: &[(u32, u32, u32)]) -> v1::NamespaceOption {
        let maps: Vec<v1::IdMapping> = uids
            .iter()
            .map(|&(container_id, host_id, length)| v1::IdMapping {
                container_id,
                host_id,
                length,
            })
            .collect();
        v1::NamespaceOption {
            userns_options: Some(v1::UserNamespace {
                mode: mode as i32,
                uids: maps.clone(),
                gids: maps,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pod_mode_with_one_range_from_root() {
        let got = from_options(Some(&opts(v1::NamespaceMode::Pod, &[(0, 1000, 100000)])));
        let r = IdRange {
            host_id: 1000,
            length: 100000,
        };
        assert_eq!(got, Ok(Some(UsernsMaps { uid: r, gid: r })));
        assert_eq!(r.map_line(), "0 1000 100000");
        assert_eq!(r.host_of(0), Some(1000));
        assert_eq!(r.host_of(99999), Some(100999));
        assert_eq!(r.host_of(100000), None);
    }

    #[test]
    fn node_mode_and_no_options_are_the_hosts() {
        assert_eq!(from_options(None), Ok(None));
        assert_eq!(
            from_options(Some(&opts(v1::NamespaceMode::Node, &[]))),
            Ok(None)
        );
        assert!(from_options(Some(&opts(v1::NamespaceMode::Node, &[(0, 1000, 10)]))).is_err());
    }

    #[test]
    fn what_containerd_and_cri_o_refuse_is_refused() {
        for (mode, maps, want) in [
            (
                v1::NamespaceMode::Pod,
                &[(0, 1000, 100000), (0, 2000, 100000)][..],
                "exactly one mapping",
            ),
            (
                v1::NamespaceMode::Pod,
                &[(1, 1000, 100000)],
                "container ID 0",
            ),
            (v1::NamespaceMode::Pod, &[], "exactly one mapping"),
            (v1::NamespaceMode::Pod, &[(0, 0, 65536)], "host's root"),
            (v1::NamespaceMode::Pod, &[(0, 1000, 0)], "length is 0"),
            (v1::NamespaceMode::Pod, &[(0, u32::MAX, 2)], "largest ID"),
            (v1::NamespaceMode::Container, &[], "mode CONTAINER"),
            (v1::NamespaceMode::Target, &[], "mode TARGET"),
        ] {
            let e = from_options(Some(&opts(mode, maps))).unwrap_err();
            assert!(e.contains(want), "{mode:?} {maps:?}: {e}");
        }
    }

    #[test]
    fn host_namespaces_cannot_be_combined() {
        let mut o = opts(v1::NamespaceMode::Pod, &[(0, 65536, 65536)]);
        o.network = v1::NamespaceMode::Node as i32;
        let e = from_options(Some(&o)).unwrap_err();
        assert!(e.contains("hostNetwork"), "{e}");
        let mut o = opts(v1::NamespaceMode::Pod, &[(0, 65536, 65536)]);
        o.pid = v1::NamespaceMode::Node as i32;
        assert!(from_options(Some(&o)).unwrap_err().contains("hostPID"));
        // CONTAINER PID (the kubelet's default) is fine.
        let mut o = opts(v1::NamespaceMode::Pod, &[(0, 65536, 65536)]);
        o.pid = v1::NamespaceMode::Container as i32;
        assert!(from_options(Some(&o)).unwrap().is_some());
    }
}
