//! `/proc/<pid>/mountinfo` (proc(5)), parsed once for every crate that needs
//! mount facts: bind propagation (berth-spec), the filesystem holding a dir
//! (berth-image), the cgroup hierarchies (berthd's stats). No crate on
//! crates.io parses it without pulling a much larger one (procfs).

use std::path::{Path, PathBuf};

/// One mount, the fields Berth uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Field 3: the filesystem's device, "major:minor" (one per cgroup v1
    /// hierarchy).
    pub dev: String,
    /// Field 4, unescaped: the directory of the filesystem mounted here.
    pub root: PathBuf,
    /// Field 5, unescaped.
    pub mount_point: PathBuf,
    /// Optional fields: "shared:N", "master:N", "propagate_from:N", "unbindable".
    pub optional: Vec<String>,
    /// After the " - " separator: the filesystem type ("ext4", "cgroup2", ...).
    pub fstype: String,
    /// The mount source ("/dev/vda", "overlay", ...), unescaped.
    pub source: String,
    /// Per-superblock options ("rw,memory" for a cgroup v1 hierarchy).
    pub super_options: String,
}

/// Every well-formed line of `text`; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            if sep < 6 || f.len() < sep + 3 {
                return None;
            }
            Some(Mount {
                dev: f[2].to_string(),
                root: PathBuf::from(unescape(f[3])),
                mount_point: PathBuf::from(unescape(f[4])),
                optional: f[6..sep].iter().map(|s| s.to_string()).collect(),
                fstype: f[sep + 1].to_string(),
                source: unescape(f[sep + 2]),
                super_options: f.get(sep + 3).copied().unwrap_or("").to_string(),
            })
        })
        .collect()
}

/// This process's mounts.
pub fn read_self() -> std::io::Result<Vec<Mount>> {
    std::fs::read_to_string("/proc/self/mountinfo").map(|t| parse(&t))
}

/// The mount point holding `path` (the longest mount point it lies under;
/// `path` should be canonical).
pub fn mount_point_of(mounts: &[Mount], path: &Path) -> PathBuf {
    mounts
        .iter()
        .map(|m| &m.mount_point)
        .filter(|mp| path.starts_with(mp))
        .max_by_key(|mp| mp.as_os_str().len())
        .cloned()
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_escapes() {
        let info = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 shared:5 - ext3 /dev/root rw,errors=continue\n\
                    25 1 0:22 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                    garbage line\n";
        let m = parse(info);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mount_point, Path::new("/mnt/with space"));
        assert_eq!(m[0].optional, ["master:1", "shared:5"]);
        assert_eq!(
            (m[0].fstype.as_str(), m[0].source.as_str()),
            ("ext3", "/dev/root")
        );
        assert_eq!(m[0].super_options, "rw,errors=continue");
        assert_eq!(m[1].optional, Vec::<String>::new());
        assert_eq!(m[1].super_options, "rw,memory");
    }

    #[test]
    fn unescape_keeps_what_is_not_an_escape() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/a\\04"), "/a\\04");
        assert_eq!(unescape("/a\\\\"), "/a\\\\");
        assert_eq!(unescape("/a\\777"), "/a?");
    }

    #[test]
    fn longest_mount_point_wins() {
        let m = parse(
            "1 0 0:1 / / rw - ext4 /dev/a rw\n2 1 0:2 / /var rw - ext4 /dev/b rw\n3 1 0:3 / /var/lib2 rw - tmpfs t rw\n",
        );
        assert_eq!(
            mount_point_of(&m, Path::new("/var/lib/x")),
            Path::new("/var")
        );
        assert_eq!(
            mount_point_of(&m, Path::new("/var/lib2/x")),
            Path::new("/var/lib2")
        );
        assert_eq!(mount_point_of(&m, Path::new("/etc")), Path::new("/"));
    }
}
