//! Live resource updates (UpdateContainerResources), through libcgroups.

use libcgroups::common::{CgroupManager, ControllerOpt};
use oci_spec::runtime::LinuxResources;

use crate::cgroup::{Cgroup, Dirs};
use crate::error::Error;

impl Cgroup {
    /// Applies `res` to the live cgroup with libcgroups' cgroupfs managers,
    /// the code libcontainer set them with at create. A hybrid host is
    /// driven as v1, like libcontainer does; on v1 libcgroups finds the
    /// hierarchies itself (from this process's mountinfo), as at create.
    /// `unified` keys are applied on v2 only.
    pub fn update(&self, res: &LinuxResources) -> Result<(), Error> {
        // libcgroups joins the key to the cgroup dir as it is.
        for k in res.unified().iter().flat_map(|u| u.keys()) {
            crate::check_unified_key(k)?;
        }
        let opt = ControllerOpt {
            resources: res,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        };
        let failed = |e: &dyn std::fmt::Display| Error::Update(e.to_string());
        match &self.dirs {
            Dirs::V2 { root, .. } => {
                libcgroups::v2::manager::Manager::new(root.clone(), self.rel.clone())
                    .map_err(|e| failed(&e))?
                    .apply(&opt)
                    .map_err(|e| failed(&e))
            }
            Dirs::V1(_) => libcgroups::v1::manager::Manager::new(&self.rel)
                .map_err(|e| failed(&e))?
                .apply(&opt)
                .map_err(|e| failed(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use oci_spec::runtime::{LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxResources};

    use crate::{Cgroup, Error, Layout};

    /// A fake v2 cgroup `c1` with the files an update writes.
    fn fake_v2(root: &Path) -> Cgroup {
        let mi = format!("1 0 0:1 / {} rw - cgroup2 cgroup2 rw\n", root.display());
        let l = Layout::from_mountinfo_under(&mi, root).unwrap();
        std::fs::write(root.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let dir = root.join("c1");
        std::fs::create_dir_all(&dir).unwrap();
        for f in [
            "cpu.weight",
            "cpu.max",
            "memory.max",
            "memory.swap.max",
            "cpuset.cpus",
            "cpuset.mems",
            "memory.high",
        ] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        Cgroup::of(&l, "/c1").unwrap()
    }

    fn read(root: &Path, f: &str) -> String {
        std::fs::read_to_string(root.join("c1").join(f)).unwrap()
    }

    #[test]
    fn v2_cpu_and_memory() {
        let d = tempfile::tempdir().unwrap();
        let c = fake_v2(d.path());
        let mut cpu = LinuxCpu::default();
        cpu.set_shares(Some(1024))
            .set_quota(Some(20_000))
            .set_period(Some(100_000))
            .set_cpus(Some("0".into()));
        let mut mem = LinuxMemory::default();
        mem.set_limit(Some(64 << 20)).set_swap(Some(96 << 20));
        let mut res = LinuxResources::default();
        res.set_cpu(Some(cpu)).set_memory(Some(mem));
        c.update(&res).unwrap();
        // runc's (1.3+) shares-to-weight conversion, the one libcontainer
        // used at create: the default 1024 shares is the default weight 100.
        assert_eq!(read(d.path(), "cpu.weight"), "100");
        assert_eq!(read(d.path(), "cpu.max"), "20000 100000");
        assert_eq!(read(d.path(), "cpuset.cpus"), "0");
        assert_eq!(read(d.path(), "memory.max"), (64u64 << 20).to_string());
        // v1's memory+swap becomes v2's swap alone.
        assert_eq!(read(d.path(), "memory.swap.max"), (32u64 << 20).to_string());
    }

    #[test]
    fn v2_unlimited_and_unified() {
        let d = tempfile::tempdir().unwrap();
        let c = fake_v2(d.path());
        let mut cpu = LinuxCpu::default();
        cpu.set_quota(Some(-1)).set_period(Some(100_000));
        let mut res = LinuxResources::default();
        res.set_cpu(Some(cpu)).set_unified(Some(HashMap::from([(
            "memory.high".to_string(),
            "1000000".to_string(),
        )])));
        c.update(&res).unwrap();
        assert_eq!(read(d.path(), "cpu.max"), "max 100000");
        assert_eq!(read(d.path(), "memory.high"), "1000000");
    }

    #[test]
    fn unified_keys_are_file_names() {
        let d = tempfile::tempdir().unwrap();
        let c = fake_v2(d.path());
        let mut res = LinuxResources::default();
        res.set_unified(Some(HashMap::from([(
            "../memory.max".to_string(),
            "1".to_string(),
        )])));
        assert!(matches!(c.update(&res), Err(Error::BadUnifiedKey(_))));
        assert_eq!(read(d.path(), "memory.max"), "");
    }

    #[test]
    fn v2_missing_controller_file_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let c = fake_v2(d.path());
        let mut h = LinuxHugepageLimit::default();
        h.set_page_size("2MB".into()).set_limit(1 << 21);
        let mut res = LinuxResources::default();
        res.set_hugepage_limits(Some(vec![h]));
        assert!(matches!(c.update(&res), Err(Error::Update(_))));
    }
}
