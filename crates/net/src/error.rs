//! The one error type of this crate.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::attachment::AttachmentKey;
use crate::exec::Command;
use crate::version::CniVersion;

/// Everything that can go wrong loading CNI config or running plugins.
///
/// Plugin failures always name the plugin (`type`), the command and the
/// network, so that they can be returned to the kubelet as they are.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("no CNI network config in {dir} (looked for *.conflist, *.conf, *.json)")]
    NoConfig { dir: PathBuf },

    #[error("cannot read CNI config dir {dir}: {source}")]
    ConfDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("invalid CNI network config {path}: {reason}")]
    InvalidConfig { path: PathBuf, reason: String },

    #[error("CNI plugin {plugin:?} not found in {searched}", searched = join_dirs(dirs))]
    PluginNotFound { plugin: String, dirs: Vec<PathBuf> },

    /// The plugin exited non-zero (or reported an error result).
    #[error(
        "CNI plugin {plugin} {command} failed (network {network}{code}): {message}",
        code = code.map(|c| format!(", code {c}")).unwrap_or_default()
    )]
    Plugin {
        plugin: String,
        command: Command,
        network: String,
        /// The CNI error code, when the plugin printed an error result.
        code: Option<u32>,
        /// `msg` and `details` of the error result, else the end of stderr.
        message: String,
    },

    #[error(
        "CNI plugin {plugin} {command} timed out after {secs:.1}s (network {network}); killed it",
        secs = timeout.as_secs_f64()
    )]
    Timeout {
        plugin: String,
        command: Command,
        network: String,
        timeout: Duration,
    },

    #[error("cannot run CNI plugin {plugin} {command} ({path}): {source}")]
    Exec {
        plugin: String,
        command: Command,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "CNI plugin {plugin} {command} returned an invalid result (network {network}): {reason}"
    )]
    InvalidResult {
        plugin: String,
        command: Command,
        network: String,
        reason: String,
    },

    #[error("invalid CNI attachment: {0}")]
    InvalidArgument(String),

    #[error("CNI network {network} has cniVersion {version}: CHECK needs 0.4.0 or later")]
    CheckUnsupported {
        network: String,
        version: CniVersion,
    },

    #[error("CNI attachment {0} is already added (DEL it first)")]
    AlreadyAttached(AttachmentKey),

    #[error("no cached CNI ADD result for {0}")]
    NotCached(AttachmentKey),

    #[error("CNI result cache {path}: {source}")]
    Cache {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("corrupt CNI result cache file {path}: {reason}")]
    CacheCorrupt { path: PathBuf, reason: String },

    /// ADD failed, and the DEL run to undo it failed too; the attachment stays
    /// in the cache so that a later DEL can retry.
    #[error("{add}; the DEL to undo it failed too: {del}")]
    AddRollback {
        add: Box<CniError>,
        del: Box<CniError>,
    },

    /// Several independent failures (GC reports all of them).
    #[error("{}", join_errors(.0))]
    Multiple(Vec<CniError>),
}

impl CniError {
    /// The plugin (`type`) this error is about, if any.
    pub fn plugin(&self) -> Option<&str> {
        match self {
            Self::PluginNotFound { plugin, .. }
            | Self::Plugin { plugin, .. }
            | Self::Timeout { plugin, .. }
            | Self::Exec { plugin, .. }
            | Self::InvalidResult { plugin, .. } => Some(plugin),
            Self::AddRollback { add, .. } => add.plugin(),
            _ => None,
        }
    }

    /// The CNI error code a plugin reported (e.g. 11 = try again later).
    pub fn code(&self) -> Option<u32> {
        match self {
            Self::Plugin { code, .. } => *code,
            Self::AddRollback { add, .. } => add.code(),
            _ => None,
        }
    }

    /// Whether the error comes from config loading (the network is not
    /// ready) rather than from one attachment.
    pub fn is_config_error(&self) -> bool {
        matches!(
            self,
            Self::NoConfig { .. } | Self::ConfDir { .. } | Self::InvalidConfig { .. }
        )
    }
}

fn join_dirs(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "no plugin dirs (none configured)".to_owned();
    }
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

fn join_errors(errs: &[CniError]) -> String {
    errs.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}
