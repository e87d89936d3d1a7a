//! Choosing the manifest of an image index for this node's platform.
//!
//! Like containerd's `platforms.Only`: the OS must be linux, the architecture
//! must be the node's, and the variant must be the node's or one it can run
//! (an arm/v7 node runs v6 and v5); an exact variant beats a compatible one,
//! which beats none. Ties go to the earlier entry. Never "the first entry".

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    /// GOARCH spelling: amd64, arm64, arm, 386, ppc64le, s390x, riscv64...
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of the running node.
    pub fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
            "powerpc64" => ("ppc64", None),
            "loongarch64" => ("loong64", None),
            "mips64" if cfg!(target_endian = "little") => ("mips64le", None),
            other => (other, None),
        };
        Platform {
            os: "linux".into(),
            architecture: arch.into(),
            variant: variant.map(String::from),
        }
    }

    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.into(),
            architecture: architecture.into(),
            variant: variant.map(String::from),
        }
    }

    /// How well a manifest for `(os, arch, variant)` fits this platform:
    /// None if it cannot run here, higher is better.
    pub fn score(&self, os: &str, arch: &str, variant: Option<&str>) -> Option<u32> {
        if os != self.os || normalise_arch(arch) != normalise_arch(&self.architecture) {
            return None;
        }
        let want = normalise_variant(&self.architecture, self.variant.as_deref());
        let got = normalise_variant(arch, variant);
        match (want, got) {
            (w, g) if w == g => Some(100),
            (_, None) => Some(10),
            (Some(w), Some(g)) => {
                // arm vN runs vM for M < N.
                let (w, g) = (variant_num(&w)?, variant_num(&g)?);
                (g < w).then_some(50 + g)
            }
            (None, Some(_)) => None,
        }
    }

    /// Index of the best entry among `(os, arch, variant)` triples.
    pub fn select<'a, I>(&self, entries: I) -> Option<usize>
    where
        I: IntoIterator<Item = (&'a str, &'a str, Option<&'a str>)>,
    {
        let mut best: Option<(usize, u32)> = None;
        for (i, (os, arch, variant)) in entries.into_iter().enumerate() {
            if let Some(s) = self.score(os, arch, variant)
                && best.is_none_or(|(_, b)| s > b)
            {
                best = Some((i, s));
            }
        }
        best.map(|(i, _)| i)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

fn normalise_arch(a: &str) -> &str {
    match a {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "i386" | "i686" => "386",
        o => o,
    }
}

/// arm64's default variant is v8 and arm's v7, so "" and "v8" are the same on arm64.
fn normalise_variant(arch: &str, v: Option<&str>) -> Option<String> {
    let v = v.filter(|v| !v.is_empty());
    match (normalise_arch(arch), v) {
        ("arm64", None) | ("arm64", Some("8")) => Some("v8".into()),
        ("arm", None) => Some("v7".into()),
        ("arm", Some(v)) | ("arm64", Some(v)) if !v.starts_with('v') => Some(format!("v{v}")),
        (_, v) => v.map(String::from),
    }
}

fn variant_num(v: &str) -> Option<u32> {
    v.strip_prefix('v')?.split('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(
        p: &Platform,
        e: &[(&'static str, &'static str, Option<&'static str>)],
    ) -> Option<usize> {
        p.select(e.iter().copied())
    }

    #[test]
    fn picks_node_arch_not_first_entry() {
        let amd = Platform::new("linux", "amd64", None);
        let e = [
            ("linux", "arm64", Some("v8")),
            ("linux", "amd64", None),
            ("unknown", "unknown", None),
        ];
        assert_eq!(sel(&amd, &e), Some(1));
        let arm = Platform::new("linux", "arm64", Some("v8"));
        assert_eq!(sel(&arm, &e), Some(0));
    }

    #[test]
    fn rejects_other_os_and_missing_arch() {
        let amd = Platform::new("linux", "amd64", None);
        assert_eq!(
            sel(
                &amd,
                &[("windows", "amd64", None), ("linux", "arm64", None)]
            ),
            None
        );
        assert_eq!(sel(&amd, &[]), None);
    }

    #[test]
    fn variants() {
        let v7 = Platform::new("linux", "arm", Some("v7"));
        let e = [
            ("linux", "arm", Some("v5")),
            ("linux", "arm", Some("v6")),
            ("linux", "arm", Some("v8")),
        ];
        assert_eq!(sel(&v7, &e), Some(1));
        let e2 = [("linux", "arm", Some("v6")), ("linux", "arm", Some("v7"))];
        assert_eq!(sel(&v7, &e2), Some(1));
        // An arm64 node takes arm64 with or without the v8 variant.
        let a64 = Platform::new("linux", "arm64", None);
        assert_eq!(sel(&a64, &[("linux", "arm64", Some("v8"))]), Some(0));
        assert_eq!(sel(&a64, &[("linux", "arm64", None)]), Some(0));
        // amd64 entries with variants (v2, v3 microarch levels) are only
        // taken when the node asks for that variant.
        let amd = Platform::new("linux", "amd64", None);
        assert_eq!(
            sel(
                &amd,
                &[("linux", "amd64", Some("v3")), ("linux", "amd64", None)]
            ),
            Some(1)
        );
    }

    #[test]
    fn host_is_linux() {
        let h = Platform::host();
        assert_eq!(h.os, "linux");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(h.architecture, "amd64");
        }
    }
}
