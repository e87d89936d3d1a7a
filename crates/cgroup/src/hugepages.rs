//! The huge page sizes of the host, in the notation of the CRI and of the
//! hugetlb controller's files.

use std::path::Path;

/// Where the kernel lists its huge page sizes.
pub const HUGEPAGES_DIR: &str = "/sys/kernel/mm/hugepages";

/// `hugepages-2048kB` → "2MB", `hugepages-1048576kB` → "1GB": the CRI (and
/// cgroup file) notation, base 1024.
pub fn hugepage_sizes(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(kb) = name
            .to_str()
            .and_then(|n| n.strip_prefix("hugepages-"))
            .and_then(|n| n.strip_suffix("kB"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push(page_size_name(kb * 1024));
    }
    out.sort();
    out
}

/// Bytes to the largest exact unit, like runc's `HugePageSizes`.
pub fn page_size_name(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = bytes;
    let mut i = 0;
    while v >= 1024 && v & 1023 == 0 && i < UNITS.len() - 1 {
        v /= 1024;
        i += 1;
    }
    format!("{v}{}", UNITS[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_names() {
        assert_eq!(page_size_name(2 * 1024 * 1024), "2MB");
        assert_eq!(page_size_name(1024 * 1024 * 1024), "1GB");
        assert_eq!(page_size_name(64 * 1024), "64KB");
    }

    #[test]
    fn hugepage_dir_listing() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("hugepages-2048kB")).unwrap();
        std::fs::create_dir(d.path().join("hugepages-1048576kB")).unwrap();
        std::fs::create_dir(d.path().join("other")).unwrap();
        assert_eq!(hugepage_sizes(d.path()), vec!["1GB", "2MB"]);
        assert!(hugepage_sizes(&d.path().join("missing")).is_empty());
    }
}
