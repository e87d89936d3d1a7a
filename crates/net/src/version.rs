//! CNI specification versions (`"0.3.1"`, `"1.0.0"`, ...).

use std::fmt;
use std::str::FromStr;

/// A CNI specification version, `major.minor.patch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CniVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl CniVersion {
    pub const V0_1_0: Self = Self::new(0, 1, 0);
    pub const V0_2_0: Self = Self::new(0, 2, 0);
    pub const V0_3_0: Self = Self::new(0, 3, 0);
    pub const V0_3_1: Self = Self::new(0, 3, 1);
    pub const V0_4_0: Self = Self::new(0, 4, 0);
    pub const V1_0_0: Self = Self::new(1, 0, 0);
    pub const V1_1_0: Self = Self::new(1, 1, 0);

    /// The newest specification this crate speaks.
    pub const LATEST: Self = Self::V1_1_0;

    /// Every version this crate can run a network config at.
    pub const SUPPORTED: [Self; 7] = [
        Self::V0_1_0,
        Self::V0_2_0,
        Self::V0_3_0,
        Self::V0_3_1,
        Self::V0_4_0,
        Self::V1_0_0,
        Self::V1_1_0,
    ];

    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Parses `major.minor.patch` (digits only, as the spec's versions are).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = s.split('.');
        let mut next = || -> Result<u32, String> {
            let p = parts
                .next()
                .ok_or_else(|| format!("invalid CNI version {s:?}: expected major.minor.patch"))?;
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 9 {
                return Err(format!(
                    "invalid CNI version {s:?}: expected major.minor.patch"
                ));
            }
            Ok(p.parse().expect("checked digits"))
        };
        let v = Self::new(next()?, next()?, next()?);
        if parts.next().is_some() {
            return Err(format!(
                "invalid CNI version {s:?}: expected major.minor.patch"
            ));
        }
        Ok(v)
    }

    /// Whether this crate knows how to run a config at this version.
    pub fn is_supported(self) -> bool {
        Self::SUPPORTED.contains(&self)
    }

    /// `CHECK` exists from 0.4.0 on.
    pub fn has_check(self) -> bool {
        self >= Self::V0_4_0
    }

    /// `DEL` gets the cached ADD result as `prevResult` from 0.4.0 on.
    pub fn has_prev_result_on_del(self) -> bool {
        self >= Self::V0_4_0
    }

    /// `STATUS` and `GC` exist from 1.1.0 on.
    pub fn has_status_and_gc(self) -> bool {
        self >= Self::V1_1_0
    }

    /// Results before 0.3.0 have the `ip4`/`ip6` shape instead of `ips`.
    pub fn has_rich_result(self) -> bool {
        self >= Self::V0_3_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for CniVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

impl serde::Serialize for CniVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for CniVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_order() {
        assert_eq!(CniVersion::parse("0.3.1").unwrap(), CniVersion::V0_3_1);
        assert_eq!(CniVersion::parse("1.1.0").unwrap(), CniVersion::V1_1_0);
        assert_eq!(
            CniVersion::parse("10.20.30").unwrap().to_string(),
            "10.20.30"
        );
        assert!(CniVersion::V0_4_0 > CniVersion::V0_3_1);
        assert!(CniVersion::V1_0_0 > CniVersion::V0_4_0);
        assert!(CniVersion::parse("0.10.0").unwrap() > CniVersion::V0_4_0);
        for bad in [
            "",
            "1",
            "1.0",
            "1.0.0.0",
            "1.x.0",
            "v1.0.0",
            "1.0.0-rc1",
            " 1.0.0",
            "1..0",
        ] {
            assert!(CniVersion::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn features_by_version() {
        assert!(!CniVersion::V0_3_1.has_check());
        assert!(CniVersion::V0_4_0.has_check());
        assert!(!CniVersion::V0_3_1.has_prev_result_on_del());
        assert!(CniVersion::V1_0_0.has_prev_result_on_del());
        assert!(!CniVersion::V1_0_0.has_status_and_gc());
        assert!(CniVersion::V1_1_0.has_status_and_gc());
        assert!(!CniVersion::V0_2_0.has_rich_result());
        assert!(CniVersion::V0_3_0.has_rich_result());
        assert!(!CniVersion::new(1, 2, 0).is_supported());
        assert!(CniVersion::V0_4_0.is_supported());
    }
}
