//! Which cgroup v2 `unified` keys a pod spec may set.
//!
//! A key is joined to the container's cgroup dir and written as a file, by
//! libcontainer at create and by libcgroups on update. From a pod spec it is
//! hostile input: `../../proc/sys/kernel/core_pattern` would write a host
//! file, `cgroup.procs` / `cgroup.kill` / `cgroup.subtree_control` would
//! move, kill or reshape processes of the cgroup rather than set a limit.

use crate::Error;

/// The `cgroup.*` files that are limits, not control of the cgroup itself.
const CGROUP_LIMIT_FILES: &[&str] = &["cgroup.max.depth", "cgroup.max.descendants"];

/// Checks that `key` names a controller's interface file
/// (`<controller>.<name>`, lowercase letters, digits, `_` and `.`), not a
/// path and not a core `cgroup.*` control file.
pub fn check_unified_key(key: &str) -> Result<(), Error> {
    let bad = || Error::BadUnifiedKey(key.to_string());
    let Some((controller, rest)) = key.split_once('.') else {
        return Err(bad());
    };
    let word = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    if !word(controller) || !rest.split('.').all(word) {
        return Err(bad());
    }
    if controller == "cgroup" && !CGROUP_LIMIT_FILES.contains(&key) {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_pass_paths_and_control_files_do_not() {
        for ok in [
            "memory.high",
            "memory.oom.group",
            "memory.swap.max",
            "cpu.max",
            "io.weight",
            "pids.max",
            "hugetlb.2mb.max",
            "cgroup.max.depth",
        ] {
            check_unified_key(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "../../proc/sys/kernel/core_pattern",
            "memory/../../x",
            "cgroup.procs",
            "cgroup.kill",
            "cgroup.subtree_control",
            "cgroup.threads",
            "cgroup.type",
            "memory.",
            ".high",
            "memory..high",
            "memory",
            "Memory.high",
            "memory.high\n",
            "",
        ] {
            assert!(check_unified_key(bad).is_err(), "{bad:?} accepted");
        }
    }
}
