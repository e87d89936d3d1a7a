//! CRI `runtime.v1` API (Kubernetes 1.37, k8s.io/cri-api v0.37.2), and
//! Berth's own admin API `berth.admin.v1` (image import; berthctl's).
//!
//! Generated at build time from `proto/api.proto` and `proto/admin.proto`;
//! see `proto/README.md`.

#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod runtime {
    pub mod v1 {
        tonic::include_proto!("runtime.v1");
    }
}

pub use runtime::v1;

/// The CRI's stop signals by their signal names (`SIGTERM`, `SIGRTMIN+3` as
/// `SIGRTMINPLUS3`). cri-api 0.37 prefixed the enum's value names
/// (`SIGNAL_SIGTERM`; the numbers are unchanged), so the generated
/// `as_str_name`/`from_str_name` no longer speak signal names.
pub mod signal {
    use crate::v1::Signal;

    const PREFIX: &str = "SIGNAL_";

    /// `SIGTERM` for [`Signal::Sigterm`]; `RUNTIME_DEFAULT` for the default.
    pub fn name(s: Signal) -> &'static str {
        let n = s.as_str_name();
        n.strip_prefix(PREFIX).unwrap_or(n)
    }

    /// The CRI value of a signal name (`SIGTERM`), if the CRI has one.
    pub fn from_name(name: &str) -> Option<Signal> {
        Signal::from_str_name(&format!("{PREFIX}{name}"))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn names_round_trip_without_the_prefix() {
            assert_eq!(name(Signal::Sigterm), "SIGTERM");
            assert_eq!(name(Signal::Sigrtminplus3), "SIGRTMINPLUS3");
            assert_eq!(name(Signal::RuntimeDefault), "RUNTIME_DEFAULT");
            assert_eq!(from_name("SIGQUIT"), Some(Signal::Sigquit));
            assert_eq!(from_name("SIGNAL_SIGQUIT"), None);
            assert_eq!(from_name("SIGNOPE"), None);
            // The wire numbers did not move.
            assert_eq!(Signal::Sigterm as i32, 23);
            assert_eq!(Signal::Sigrtmax as i32, 65);
        }
    }
}

#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod admin {
    pub mod v1 {
        tonic::include_proto!("berth.admin.v1");
    }
}
