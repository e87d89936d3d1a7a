//! NRI plugins' adjustments applied to a container's OCI spec before it is
//! created, as containerd's NRI applies them to its spec generator. A name
//! prefixed with `-` removes the entry (NRI's removal mark). The merged
//! adjustment holds only what `berth_nri::adjust` accepted.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use berth_nri::api;
use oci_spec::runtime::{
    Hook, Hooks, Linux, LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType, LinuxHugepageLimit,
    LinuxPids, LinuxResources, LinuxSeccomp, Mount, PosixRlimitBuilder, Process, Spec,
};

use crate::error::{Result, SpecError};

const F: &str = "nri adjustment";

/// Applies `adj` to `spec`.
pub fn apply(spec: &mut Spec, adj: &api::ContainerAdjustment) -> Result<()> {
    if !adj.annotations.is_empty() {
        let mut annotations = spec.annotations().clone().unwrap_or_default();
        merge_marked(&mut annotations, &adj.annotations);
        spec.set_annotations(Some(annotations));
    }
    let mut process = spec.process().clone().unwrap_or_default();
    apply_process(&mut process, adj)?;
    spec.set_process(Some(process));
    if !adj.mounts.is_empty() {
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        for m in &adj.mounts {
            apply_mount(&mut mounts, m)?;
        }
        spec.set_mounts(Some(mounts));
    }
    if let Some(h) = adj.hooks.as_ref() {
        let mut hooks = spec.hooks().clone().unwrap_or_default();
        apply_hooks(&mut hooks, h)?;
        spec.set_hooks(Some(hooks));
    }
    if let Some(l) = adj.linux.as_ref() {
        let mut linux = spec.linux().clone().unwrap_or_default();
        apply_linux(&mut linux, l)?;
        if let Some(adj) = l.oom_score_adj.as_ref() {
            let mut process = spec.process().clone().unwrap_or_default();
            process.set_oom_score_adj(Some(adj.value as i32));
            spec.set_process(Some(process));
        }
        spec.set_linux(Some(linux));
    }
    Ok(())
}

/// `adj`'s entries set in `map`; a key marked `-key` removes `key`.
fn merge_marked(map: &mut HashMap<String, String>, adj: &HashMap<String, String>) {
    for (k, v) in adj {
        match k.strip_prefix('-') {
            Some(key) => {
                map.remove(key);
            }
            None => {
                map.insert(k.clone(), v.clone());
            }
        }
    }
}

fn apply_process(process: &mut Process, adj: &api::ContainerAdjustment) -> Result<()> {
    if !adj.env.is_empty() {
        let mut env = process.env().clone().unwrap_or_default();
        for kv in &adj.env {
            let (name, remove) = match kv.key.strip_prefix('-') {
                Some(n) => (n, true),
                None => (kv.key.as_str(), false),
            };
            if name.is_empty() || name.contains('=') {
                return Err(SpecError::invalid(
                    format!("{F}.env"),
                    format!("{:?} is not a variable name", kv.key),
                ));
            }
            env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != name);
            if !remove {
                env.push(format!("{name}={}", kv.value));
            }
        }
        process.set_env(Some(env));
    }
    if !adj.args.is_empty() {
        process.set_args(Some(adj.args.clone()));
    }
    if !adj.rlimits.is_empty() {
        let mut rlimits = process.rlimits().clone().unwrap_or_default();
        for r in &adj.rlimits {
            let typ = serde_json::from_value(serde_json::Value::String(r.type_.clone())).map_err(
                |_| {
                    SpecError::invalid(
                        format!("{F}.rlimits"),
                        format!("unknown rlimit {:?}", r.type_),
                    )
                },
            )?;
            let limit = PosixRlimitBuilder::default()
                .typ(typ)
                .hard(r.hard)
                .soft(r.soft)
                .build()
                .map_err(|e| SpecError::invalid(format!("{F}.rlimits"), e.to_string()))?;
            rlimits.retain(|l| l.typ() != typ);
            rlimits.push(limit);
        }
        process.set_rlimits(Some(rlimits));
    }
    Ok(())
}

/// An absolute path without `..`: where a mount or device goes in the
/// container (libcontainer resolves it beneath the rootfs).
fn container_path(p: &str, field: &str) -> Result<PathBuf> {
    let path = Path::new(p);
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(SpecError::invalid(
            format!("{F}.{field}"),
            format!("{p:?} is not an absolute path without \"..\""),
        ));
    }
    Ok(path.to_path_buf())
}

fn apply_mount(mounts: &mut Vec<Mount>, m: &api::Mount) -> Result<()> {
    let (dest, remove) = match m.destination.strip_prefix('-') {
        Some(d) => (d, true),
        None => (m.destination.as_str(), false),
    };
    let dest = container_path(dest, "mounts")?;
    mounts.retain(|x| x.destination() != &dest);
    if !remove {
        let mut mount = Mount::default();
        mount
            .set_destination(dest)
            .set_typ(Some(m.type_.clone()).filter(|t| !t.is_empty()))
            .set_source(Some(PathBuf::from(&m.source)).filter(|s| !s.as_os_str().is_empty()))
            .set_options(Some(m.options.clone()).filter(|o| !o.is_empty()));
        mounts.push(mount);
    }
    Ok(())
}

fn apply_hooks(hooks: &mut Hooks, h: &api::Hooks) -> Result<()> {
    let convert = |list: &[api::Hook]| -> Result<Vec<Hook>> {
        list.iter()
            .map(|h| {
                if !Path::new(&h.path).is_absolute() {
                    return Err(SpecError::invalid(
                        format!("{F}.hooks"),
                        format!("hook path {:?} is not absolute", h.path),
                    ));
                }
                let mut hook = Hook::default();
                hook.set_path(PathBuf::from(&h.path))
                    .set_args(Some(h.args.clone()).filter(|a| !a.is_empty()))
                    .set_env(Some(h.env.clone()).filter(|e| !e.is_empty()))
                    .set_timeout(h.timeout.as_ref().map(|t| t.value));
                Ok(hook)
            })
            .collect()
    };
    let add = |to: &Option<Vec<Hook>>, from: &[api::Hook]| -> Result<Option<Vec<Hook>>> {
        if from.is_empty() {
            return Ok(to.clone());
        }
        let mut all = to.clone().unwrap_or_default();
        all.extend(convert(from)?);
        Ok(Some(all))
    };
    #[allow(deprecated)]
    {
        let prestart = add(hooks.prestart(), &h.prestart)?;
        hooks.set_prestart(prestart);
    }
    let v = add(hooks.create_runtime(), &h.create_runtime)?;
    hooks.set_create_runtime(v);
    let v = add(hooks.create_container(), &h.create_container)?;
    hooks.set_create_container(v);
    let v = add(hooks.start_container(), &h.start_container)?;
    hooks.set_start_container(v);
    let v = add(hooks.poststart(), &h.poststart)?;
    hooks.set_poststart(v);
    let v = add(hooks.poststop(), &h.poststop)?;
    hooks.set_poststop(v);
    Ok(())
}

fn apply_linux(linux: &mut Linux, l: &api::LinuxContainerAdjustment) -> Result<()> {
    let mut resources = linux.resources().clone().unwrap_or_default();
    if !l.devices.is_empty() {
        let mut devices = linux.devices().clone().unwrap_or_default();
        let mut rules = resources.devices().clone().unwrap_or_default();
        for d in &l.devices {
            let (path, remove) = match d.path.strip_prefix('-') {
                Some(p) => (p, true),
                None => (d.path.as_str(), false),
            };
            let path = container_path(path, "devices")?;
            devices.retain(|x| x.path() != &path);
            if remove {
                continue;
            }
            let typ = match d.type_.as_str() {
                "c" | "u" => LinuxDeviceType::C,
                "b" => LinuxDeviceType::B,
                "p" => LinuxDeviceType::P,
                t => {
                    return Err(SpecError::invalid(
                        format!("{F}.devices"),
                        format!("device type {t:?} is not c, b or p"),
                    ));
                }
            };
            let mut dev = LinuxDevice::default();
            dev.set_path(path)
                .set_typ(typ)
                .set_major(d.major)
                .set_minor(d.minor)
                .set_file_mode(d.file_mode.as_ref().map(|m| m.value))
                .set_uid(d.uid.as_ref().map(|u| u.value))
                .set_gid(d.gid.as_ref().map(|g| g.value));
            devices.push(dev);
            if typ != LinuxDeviceType::P {
                // Access to the node it adds (NRI's AdjustDevices does the same).
                let mut rule = LinuxDeviceCgroup::default();
                rule.set_allow(true)
                    .set_typ(Some(typ))
                    .set_major(Some(d.major))
                    .set_minor(Some(d.minor))
                    .set_access(Some("rwm".to_string()));
                rules.push(rule);
            }
        }
        linux.set_devices(Some(devices));
        resources.set_devices(Some(rules));
    }
    if !l.cgroups_path.is_empty() {
        linux.set_cgroups_path(Some(PathBuf::from(&l.cgroups_path)));
    }
    if let Some(policy) = l.seccomp_policy.as_ref() {
        // The plugin's policy replaces the container's filter whole, as
        // containerd's NRI does.
        linux.set_seccomp(Some(seccomp_of(policy)?));
    }
    if !l.sysctl.is_empty() {
        let mut sysctl: HashMap<String, String> = linux.sysctl().clone().unwrap_or_default();
        merge_marked(&mut sysctl, &l.sysctl);
        linux.set_sysctl(Some(sysctl));
    }
    if let Some(r) = l.resources.as_ref() {
        apply_resources(&mut resources, r)?;
    }
    linux.set_resources(Some(resources));
    Ok(())
}

/// An NRI seccomp policy as the OCI filter: its fields are the OCI JSON's
/// (`SCMP_ACT_*`, `SCMP_ARCH_*`, `SCMP_CMP_*` strings), so it is decoded
/// as an OCI seccomp profile is, and refused the same way when malformed.
fn seccomp_of(p: &api::LinuxSeccomp) -> Result<LinuxSeccomp> {
    let syscalls: Vec<serde_json::Value> = p
        .syscalls
        .iter()
        .map(|s| {
            serde_json::json!({
                "names": s.names,
                "action": s.action,
                "errnoRet": s.errno_ret.as_ref().map(|e| e.value),
                "args": s.args.iter().map(|a| serde_json::json!({
                    "index": a.index,
                    "value": a.value,
                    "valueTwo": a.value_two,
                    "op": a.op,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let json = serde_json::json!({
        "defaultAction": p.default_action,
        "defaultErrnoRet": p.default_errno.as_ref().map(|e| e.value),
        "architectures": p.architectures,
        "flags": p.flags,
        "syscalls": syscalls,
    });
    serde_json::from_value(json)
        .map_err(|e| SpecError::invalid(format!("{F}.linux.seccomp_policy"), e.to_string()))
}

/// NRI's resources onto the spec's (also used for unsolicited updates).
pub fn apply_resources(res: &mut LinuxResources, r: &api::LinuxResources) -> Result<()> {
    // An optional NRI value, when set, through the spec's setter.
    macro_rules! set {
        ($from:ident . $f:ident => $to:ident . $setter:ident) => {
            if let Some(v) = $from.$f.as_ref() {
                $to.$setter(Some(v.value));
            }
        };
    }
    if let Some(m) = r.memory.as_ref() {
        let mut mem = res.memory().unwrap_or_default();
        set!(m.limit => mem.set_limit);
        set!(m.reservation => mem.set_reservation);
        set!(m.swap => mem.set_swap);
        set!(m.kernel => mem.set_kernel);
        set!(m.kernel_tcp => mem.set_kernel_tcp);
        set!(m.swappiness => mem.set_swappiness);
        set!(m.disable_oom_killer => mem.set_disable_oom_killer);
        set!(m.use_hierarchy => mem.set_use_hierarchy);
        res.set_memory(Some(mem));
    }
    if let Some(c) = r.cpu.as_ref() {
        let mut cpu = res.cpu().clone().unwrap_or_default();
        set!(c.shares => cpu.set_shares);
        set!(c.quota => cpu.set_quota);
        set!(c.period => cpu.set_period);
        set!(c.realtime_runtime => cpu.set_realtime_runtime);
        set!(c.realtime_period => cpu.set_realtime_period);
        if !c.cpus.is_empty() {
            crate::resources::check_cpuset(&c.cpus, &format!("{F}.cpu.cpus"))?;
            cpu.set_cpus(Some(c.cpus.clone()));
        }
        if !c.mems.is_empty() {
            crate::resources::check_cpuset(&c.mems, &format!("{F}.cpu.mems"))?;
            cpu.set_mems(Some(c.mems.clone()));
        }
        res.set_cpu(Some(cpu));
    }
    if !r.hugepage_limits.is_empty() {
        let mut limits = res.hugepage_limits().clone().unwrap_or_default();
        for h in &r.hugepage_limits {
            limits.retain(|l| l.page_size() != &h.page_size);
            let mut l = LinuxHugepageLimit::default();
            l.set_page_size(h.page_size.clone())
                .set_limit(h.limit as i64);
            limits.push(l);
        }
        res.set_hugepage_limits(Some(limits));
    }
    if !r.unified.is_empty() {
        let mut unified = res.unified().clone().unwrap_or_default();
        unified.extend(r.unified.iter().map(|(k, v)| (k.clone(), v.clone())));
        res.set_unified(Some(unified));
    }
    if let Some(p) = r.pids.as_ref() {
        let mut pids = LinuxPids::default();
        pids.set_limit(p.limit);
        res.set_pids(Some(pids));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        let mut s = Spec::default();
        let mut p = Process::default();
        p.set_env(Some(vec![
            "PATH=/bin".into(),
            "KEEP=1".into(),
            "DROP=1".into(),
        ]));
        s.set_process(Some(p));
        s
    }

    #[test]
    fn env_is_set_replaced_and_removed() {
        let mut s = spec();
        let mut adj = api::ContainerAdjustment::new();
        for (k, v) in [("NEW", "x"), ("PATH", "/usr/bin"), ("-DROP", "")] {
            let mut kv = api::KeyValue::new();
            kv.key = k.into();
            kv.value = v.into();
            adj.env.push(kv);
        }
        apply(&mut s, &adj).unwrap();
        let env = s.process().as_ref().unwrap().env().clone().unwrap();
        assert_eq!(env, ["KEEP=1", "NEW=x", "PATH=/usr/bin"]);
    }

    #[test]
    fn cpuset_and_memory_reach_the_resources() {
        let mut s = spec();
        let mut adj = api::ContainerAdjustment::new();
        let res = adj
            .linux
            .mut_or_insert_default()
            .resources
            .mut_or_insert_default();
        res.cpu.mut_or_insert_default().cpus = "0".into();
        res.memory
            .mut_or_insert_default()
            .limit
            .mut_or_insert_default()
            .value = 1 << 26;
        apply(&mut s, &adj).unwrap();
        let r = s.linux().as_ref().unwrap().resources().clone().unwrap();
        assert_eq!(r.cpu().as_ref().unwrap().cpus().as_deref(), Some("0"));
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(1 << 26));
    }

    #[test]
    fn a_seccomp_policy_replaces_the_filter() {
        let mut s = spec();
        let mut adj = api::ContainerAdjustment::new();
        let p = adj
            .linux
            .mut_or_insert_default()
            .seccomp_policy
            .mut_or_insert_default();
        p.default_action = "SCMP_ACT_ALLOW".into();
        p.architectures = vec!["SCMP_ARCH_X86_64".into()];
        let mut sc = api::LinuxSyscall::new();
        sc.names = vec!["sethostname".into()];
        sc.action = "SCMP_ACT_ERRNO".into();
        p.syscalls.push(sc);
        apply(&mut s, &adj).unwrap();
        let f = s.linux().as_ref().unwrap().seccomp().clone().unwrap();
        assert_eq!(
            f.default_action(),
            oci_spec::runtime::LinuxSeccompAction::ScmpActAllow
        );
        assert_eq!(f.syscalls().as_ref().unwrap()[0].names(), &["sethostname"]);
        // A made-up action is refused, not ignored.
        let mut adj = api::ContainerAdjustment::new();
        adj.linux
            .mut_or_insert_default()
            .seccomp_policy
            .mut_or_insert_default()
            .default_action = "SCMP_ACT_MAYBE".into();
        assert!(apply(&mut spec(), &adj).is_err());
    }

    #[test]
    fn a_mount_outside_the_container_paths_is_refused() {
        let mut s = spec();
        let mut adj = api::ContainerAdjustment::new();
        let mut m = api::Mount::new();
        m.destination = "/../etc".into();
        m.source = "/tmp".into();
        adj.mounts.push(m);
        assert!(apply(&mut s, &adj).is_err());
        let mut adj = api::ContainerAdjustment::new();
        let mut m = api::Mount::new();
        m.destination = "/data".into();
        m.type_ = "tmpfs".into();
        m.source = "tmpfs".into();
        adj.mounts.push(m);
        apply(&mut s, &adj).unwrap();
        assert_eq!(
            s.mounts().as_ref().unwrap().last().unwrap().destination(),
            Path::new("/data")
        );
    }
}
