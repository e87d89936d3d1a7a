use std::path::PathBuf;

/// What a cgroup operation that changes the host can fail with (readings
/// never fail: what cannot be read is left out).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `linux.cgroupsPath` is empty or tries to leave the hierarchy.
    #[error("cgroup path {0:?} is not below the cgroup root")]
    BadPath(String),
    #[error("no cgroup filesystem is mounted")]
    NoCgroupFs,
    /// A unified (v2) key that is not a controller's interface file.
    #[error(
        "unified cgroup key {0:?} is not a controller's interface file (<controller>.<name>, not a path, not a cgroup.* control file)"
    )]
    BadUnifiedKey(String),
    /// libcgroups could not apply the resources.
    #[error("{0}")]
    Update(String),
    #[error("remove cgroup {}: {source}", dir.display())]
    Remove {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// Freezing or thawing a cgroup's tasks failed.
    #[error("freezer {}: {message}", dir.display())]
    Freeze { dir: PathBuf, message: String },
    #[error("mount {}: {source}", dir.display())]
    Mount {
        dir: PathBuf,
        source: std::io::Error,
    },
}
