//! Merging the adjustments several plugins return for one container. Each
//! adjusted field gets an owner, the first plugin (in index order) that set
//! or removed it; a second plugin touching an owned field is a conflict and
//! fails the container's creation, as NRI requires. A name prefixed with `-`
//! removes the entry (NRI's removal mark).

use std::collections::HashMap;

use protobuf::MessageField;

use crate::api::{self, ContainerAdjustment, LinuxResources};

/// The adjustments of all plugins so far and who owns what.
#[derive(Default)]
pub struct Merged {
    pub adjustment: ContainerAdjustment,
    owners: HashMap<String, String>,
}

impl Merged {
    /// Takes `plugin`'s adjustment in, or says which field two plugins both
    /// adjusted, or which one Berth cannot apply.
    pub fn apply(&mut self, plugin: &str, adj: &ContainerAdjustment) -> Result<(), String> {
        unsupported(adj)?;
        for (k, v) in &adj.annotations {
            self.claim(plugin, "annotation", removal_key(k))?;
            self.adjustment.annotations.insert(k.clone(), v.clone());
        }
        for m in &adj.mounts {
            self.claim(plugin, "mount", removal_key(&m.destination))?;
            self.adjustment.mounts.push(m.clone());
        }
        for e in &adj.env {
            self.claim(plugin, "env", removal_key(&e.key))?;
            self.adjustment.env.push(e.clone());
        }
        if let Some(h) = adj.hooks.as_ref() {
            // Hooks add up: every plugin's run.
            let mine = self.adjustment.hooks.mut_or_insert_default();
            mine.prestart.extend(h.prestart.iter().cloned());
            mine.create_runtime.extend(h.create_runtime.iter().cloned());
            mine.create_container
                .extend(h.create_container.iter().cloned());
            mine.start_container
                .extend(h.start_container.iter().cloned());
            mine.poststart.extend(h.poststart.iter().cloned());
            mine.poststop.extend(h.poststop.iter().cloned());
        }
        for r in &adj.rlimits {
            self.claim(plugin, "rlimit", &r.type_)?;
            self.adjustment.rlimits.push(r.clone());
        }
        if !adj.args.is_empty() {
            self.claim(plugin, "args", "")?;
            self.adjustment.args = adj.args.clone();
        }
        if let Some(l) = adj.linux.as_ref() {
            let mut linux = self.adjustment.linux.take().unwrap_or_default();
            let done = self.apply_linux(plugin, l, &mut linux);
            self.adjustment.linux = MessageField::some(linux);
            done?;
        }
        Ok(())
    }

    fn apply_linux(
        &mut self,
        plugin: &str,
        l: &api::LinuxContainerAdjustment,
        into: &mut api::LinuxContainerAdjustment,
    ) -> Result<(), String> {
        for d in &l.devices {
            self.claim(plugin, "device", removal_key(&d.path))?;
            into.devices.push(d.clone());
        }
        if !l.cgroups_path.is_empty() {
            self.claim(plugin, "cgroups path", "")?;
            into.cgroups_path = l.cgroups_path.clone();
        }
        if l.oom_score_adj.is_some() {
            self.claim(plugin, "oom score adj", "")?;
            into.oom_score_adj = l.oom_score_adj.clone();
        }
        if l.seccomp_policy.is_some() {
            self.claim(plugin, "seccomp policy", "")?;
            into.seccomp_policy = l.seccomp_policy.clone();
        }
        for (k, v) in &l.sysctl {
            self.claim(plugin, "sysctl", removal_key(k))?;
            into.sysctl.insert(k.clone(), v.clone());
        }
        if let Some(r) = l.resources.as_ref() {
            let res = into.resources.mut_or_insert_default();
            self.apply_resources(plugin, r, res)?;
        }
        Ok(())
    }

    fn apply_resources(
        &mut self,
        plugin: &str,
        r: &LinuxResources,
        into: &mut LinuxResources,
    ) -> Result<(), String> {
        // An optional scalar: set by `from`, it is claimed and copied into `to`.
        macro_rules! field {
            ($from:ident, $to:ident, $f:ident, $what:literal) => {
                if $from.$f.is_some() {
                    self.claim(plugin, $what, "")?;
                    $to.$f = $from.$f.clone();
                }
            };
        }
        if let Some(m) = r.memory.as_ref() {
            let mine = into.memory.mut_or_insert_default();
            field!(m, mine, limit, "memory limit");
            field!(m, mine, reservation, "memory reservation");
            field!(m, mine, swap, "memory swap");
            field!(m, mine, kernel, "kernel memory");
            field!(m, mine, kernel_tcp, "kernel TCP memory");
            field!(m, mine, swappiness, "memory swappiness");
            field!(m, mine, disable_oom_killer, "OOM killer");
            field!(m, mine, use_hierarchy, "memory hierarchy");
        }
        if let Some(c) = r.cpu.as_ref() {
            let mine = into.cpu.mut_or_insert_default();
            field!(c, mine, shares, "CPU shares");
            field!(c, mine, quota, "CPU quota");
            field!(c, mine, period, "CPU period");
            field!(c, mine, realtime_runtime, "CPU realtime runtime");
            field!(c, mine, realtime_period, "CPU realtime period");
            if !c.cpus.is_empty() {
                self.claim(plugin, "cpuset CPUs", "")?;
                mine.cpus = c.cpus.clone();
            }
            if !c.mems.is_empty() {
                self.claim(plugin, "cpuset memory nodes", "")?;
                mine.mems = c.mems.clone();
            }
        }
        for h in &r.hugepage_limits {
            self.claim(plugin, "hugepage limit", &h.page_size)?;
            into.hugepage_limits.push(h.clone());
        }
        for (k, v) in &r.unified {
            self.claim(plugin, "unified cgroup key", k)?;
            into.unified.insert(k.clone(), v.clone());
        }
        if let Some(p) = r.pids.as_ref() {
            self.claim(plugin, "pids limit", "")?;
            into.pids = MessageField::some(p.clone());
        }
        Ok(())
    }

    fn claim(&mut self, plugin: &str, what: &str, key: &str) -> Result<(), String> {
        let field = if key.is_empty() {
            what.to_string()
        } else {
            format!("{what} {key:?}")
        };
        match self.owners.get(&field) {
            Some(owner) if owner != plugin => Err(format!(
                "NRI plugins {owner} and {plugin} both adjust the {field}"
            )),
            Some(_) => Ok(()),
            None => {
                self.owners.insert(field, plugin.to_string());
                Ok(())
            }
        }
    }
}

/// The entry a name refers to, with or without NRI's removal mark.
fn removal_key(name: &str) -> &str {
    name.strip_prefix('-').unwrap_or(name)
}

/// Adjustments Berth does not apply: refused, never silently dropped.
fn unsupported(adj: &ContainerAdjustment) -> Result<(), String> {
    let mut what = Vec::new();
    if !adj.CDI_devices.is_empty() {
        what.push("CDI devices");
    }
    if let Some(l) = adj.linux.as_ref() {
        if l.io_priority.is_some() {
            what.push("I/O priority");
        }
        if l.seccomp_policy
            .as_ref()
            .is_some_and(|p| !p.listener_path.is_empty())
        {
            what.push("seccomp listeners");
        }
        if !l.namespaces.is_empty() {
            what.push("namespaces");
        }
        if !l.net_devices.is_empty() {
            what.push("network devices");
        }
        if l.scheduler.is_some() {
            what.push("scheduler");
        }
        if l.rdt.is_some() {
            what.push("RDT");
        }
        if l.memory_policy.is_some() {
            what.push("memory policy");
        }
        if let Some(r) = l.resources.as_ref()
            && (r.blockio_class.is_some() || r.rdt_class.is_some())
        {
            what.push("block I/O or RDT class");
        }
    }
    if what.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "Berth does not apply NRI adjustments of {}",
            what.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str, v: &str) -> ContainerAdjustment {
        let mut a = ContainerAdjustment::new();
        let mut kv = api::KeyValue::new();
        kv.key = k.into();
        kv.value = v.into();
        a.env.push(kv);
        a
    }

    fn cpus(c: &str) -> ContainerAdjustment {
        let mut a = ContainerAdjustment::new();
        a.linux
            .mut_or_insert_default()
            .resources
            .mut_or_insert_default()
            .cpu
            .mut_or_insert_default()
            .cpus = c.into();
        a
    }

    #[test]
    fn two_plugins_adjusting_different_fields_merge() {
        let mut m = Merged::default();
        m.apply("10-a", &env("A", "1")).unwrap();
        m.apply("20-b", &env("B", "2")).unwrap();
        m.apply("20-b", &cpus("0-1")).unwrap();
        let keys: Vec<_> = m.adjustment.env.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["A", "B"]);
        let cpu = m.adjustment.linux.resources.cpu.cpus.clone();
        assert_eq!(cpu, "0-1");
    }

    #[test]
    fn two_plugins_adjusting_one_field_conflict() {
        let mut m = Merged::default();
        m.apply("10-a", &env("A", "1")).unwrap();
        let err = m.apply("20-b", &env("-A", "")).unwrap_err();
        assert!(
            err.contains("10-a and 20-b both adjust the env \"A\""),
            "{err}"
        );
        m.apply("10-a", &cpus("0")).unwrap();
        assert!(
            m.apply("20-b", &cpus("1"))
                .unwrap_err()
                .contains("cpuset CPUs")
        );
    }

    #[test]
    fn adjustments_berth_cannot_apply_are_refused() {
        let mut a = ContainerAdjustment::new();
        a.linux.mut_or_insert_default().scheduler = MessageField::some(Default::default());
        let err = Merged::default().apply("10-a", &a).unwrap_err();
        assert!(err.contains("scheduler"), "{err}");
    }
}
