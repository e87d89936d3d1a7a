//! Whether the kernel OOM-killed a process of a cgroup.

use crate::cgroup::{Cgroup, Dirs};
use crate::parse;
use crate::stats::read_opt;

impl Cgroup {
    /// The `oom_kill` counter of v1 `memory.oom_control` or v2
    /// `memory.events` is above zero. Read it before the cgroup is removed:
    /// a gone cgroup reads as no kill.
    pub fn oom_killed(&self) -> bool {
        let file = match &self.dirs {
            Dirs::V1(_) => self.dir("memory").map(|d| d.join("memory.oom_control")),
            Dirs::V2 { dir, .. } => Some(dir.join("memory.events")),
        };
        file.and_then(|f| read_opt(&f))
            .and_then(|t| parse::flat_keyed(&t).get("oom_kill").copied())
            .is_some_and(|n| n > 0)
    }
}

#[cfg(test)]
mod tests {
    use crate::cgroup::tests::fake_v1;
    use crate::{Cgroup, Layout};

    #[test]
    fn v1_oom_control() {
        let d = tempfile::tempdir().unwrap();
        let l = fake_v1(d.path(), &["memory"]);
        let c = Cgroup::of(&l, "/berth/c1").unwrap();
        assert!(!c.oom_killed(), "gone: no kill");
        let dir = d.path().join("memory/berth/c1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
        )
        .unwrap();
        assert!(!c.oom_killed());
        std::fs::write(
            dir.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert!(c.oom_killed());
    }

    #[test]
    fn v2_memory_events() {
        let d = tempfile::tempdir().unwrap();
        let mi = format!("1 0 0:1 / {} rw - cgroup2 cgroup2 rw\n", d.path().display());
        let l = Layout::from_mountinfo_under(&mi, d.path()).unwrap();
        let c = Cgroup::of(&l, "c1").unwrap();
        std::fs::create_dir_all(d.path().join("c1")).unwrap();
        let events = d.path().join("c1/memory.events");
        std::fs::write(&events, "low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n").unwrap();
        assert!(!c.oom_killed(), "an OOM without a kill");
        std::fs::write(&events, "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
        assert!(c.oom_killed());
    }
}
