//! Config reload without a restart: on SIGHUP, and when the TOML config or
//! registries.conf changes on disk (checked every [`POLL`] by size, mtime
//! and inode, as the CNI config dir is), berthd re-reads both.
//!
//! Reloadable: registries.conf (mirrors, insecure and blocked registries;
//! the next pull uses it), the `registries_config` path itself, and
//! `log_level`. Any other setting that changed is named in a warning: it
//! takes effect at the next restart (the socket, the dirs, the streaming
//! server and the cgroup driver are held by running pods and connections).
//! A file that does not parse keeps the last good config, and the log says
//! why; command-line flags still win over the file, as at startup.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use crate::config::{Config, DEFAULT_CONFIG_PATH, Overrides};
use crate::daemon::Daemon;

/// How often the files are checked for a change.
const POLL: Duration = Duration::from_secs(2);

/// Sets the log filter of the running subscriber.
pub type SetLogLevel = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What the daemon was started with, to reload from.
pub struct Reloader {
    /// `--config`, if given (else the default path, which may be absent).
    pub config_path: Option<PathBuf>,
    pub overrides: Overrides,
    pub set_log_level: SetLogLevel,
}

/// (device, inode, size, mtime) of a file; None when it does not exist.
type Fingerprint = Option<(u64, u64, u64, i64, i64)>;

fn fingerprint(path: &Path) -> Fingerprint {
    let md = std::fs::metadata(path).ok()?;
    Some((md.dev(), md.ino(), md.size(), md.mtime(), md.mtime_nsec()))
}

/// The outcome of one reload, for the log and the tests.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Applied; `restart_needed` names changed settings that wait for a restart.
    Applied { restart_needed: Vec<String> },
    /// The last good config is kept.
    Refused(String),
}

impl Reloader {
    fn config_file(&self) -> PathBuf {
        self.config_path
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
    }

    /// Watches SIGHUP and the files for the daemon's lifetime.
    pub fn spawn(self, daemon: Arc<Daemon>) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot install a SIGHUP handler: config reload only follows file changes");
                return self.spawn_polling_only(daemon);
            }
        };
        tokio::spawn(async move {
            let mut current = daemon.config().clone();
            let mut seen = self.fingerprints(&current);
            let mut tick = tokio::time::interval(POLL);
            loop {
                let why = tokio::select! {
                    _ = hup.recv() => "SIGHUP",
                    _ = tick.tick() => {
                        if self.fingerprints(&current) == seen { continue; }
                        "file changed"
                    }
                };
                self.reload_logged(&daemon, &mut current, why);
                seen = self.fingerprints(&current);
            }
        });
    }

    fn spawn_polling_only(self, daemon: Arc<Daemon>) {
        tokio::spawn(async move {
            let mut current = daemon.config().clone();
            let mut seen = self.fingerprints(&current);
            let mut tick = tokio::time::interval(POLL);
            loop {
                tick.tick().await;
                if self.fingerprints(&current) != seen {
                    self.reload_logged(&daemon, &mut current, "file changed");
                    seen = self.fingerprints(&current);
                }
            }
        });
    }

    fn fingerprints(&self, current: &Config) -> (Fingerprint, Fingerprint) {
        (
            fingerprint(&self.config_file()),
            fingerprint(&current.registries_config),
        )
    }

    fn reload_logged(&self, daemon: &Daemon, current: &mut Config, why: &str) {
        match self.reload(daemon, current) {
            Outcome::Applied { restart_needed } if restart_needed.is_empty() => {
                tracing::info!(trigger = why, registries = %current.registries_config.display(), "config reloaded");
            }
            Outcome::Applied { restart_needed } => {
                tracing::warn!(
                    trigger = why,
                    settings = %restart_needed.join(", "),
                    "config reloaded; these changed settings take effect at the next restart"
                );
            }
            Outcome::Refused(reason) => {
                tracing::error!(trigger = why, reason = %reason, "config not reloaded; keeping the last good config");
            }
        }
    }

    /// Reads both files and applies what can be applied live.
    pub fn reload(&self, daemon: &Daemon, current: &mut Config) -> Outcome {
        let mut next = match Config::load(self.config_path.as_deref())
            .and_then(|c| c.apply(self.overrides.clone()))
        {
            Ok(c) => c,
            Err(e) => return Outcome::Refused(e.to_string()),
        };
        let registries = match berth_image::RegistriesConfig::load(&next.registries_config) {
            Ok(r) => r,
            Err(e) => return Outcome::Refused(e.to_string()),
        };
        if next.log_level != current.log_level
            && let Err(e) = (self.set_log_level)(&next.log_level)
        {
            return Outcome::Refused(format!("log_level {:?}: {e}", next.log_level));
        }
        daemon.images().set_registries(registries);
        current.log_level = next.log_level.clone();
        current.registries_config = next.registries_config.clone();
        // What is left different waits for a restart; keep the running
        // values so the next reload compares against what is in force.
        next.log_level = current.log_level.clone();
        next.registries_config = current.registries_config.clone();
        Outcome::Applied {
            restart_needed: changed_settings(current, &next),
        }
    }
}

/// The dotted names of the settings that differ between two configs.
fn changed_settings(a: &Config, b: &Config) -> Vec<String> {
    fn walk(prefix: &str, a: &toml::Value, b: &toml::Value, out: &mut Vec<String>) {
        match (a, b) {
            (toml::Value::Table(x), toml::Value::Table(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let name = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    match (x.get(k), y.get(k)) {
                        (Some(v), Some(w)) => walk(&name, v, w, out),
                        _ => out.push(name),
                    }
                }
            }
            _ if a != b => out.push(prefix.to_string()),
            _ => {}
        }
    }
    let (Ok(a), Ok(b)) = (toml::Value::try_from(a), toml::Value::try_from(b)) else {
        return vec!["(the config cannot be compared)".into()];
    };
    let mut out = Vec::new();
    walk("", &a, &b, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_settings_are_named_by_their_dotted_key() {
        let a = Config::default();
        let mut b = a.clone();
        assert!(changed_settings(&a, &b).is_empty());
        b.min_free_disk_mib += 1;
        b.streaming.port = 10010;
        b.network.conf_dir = "/elsewhere".into();
        assert_eq!(
            changed_settings(&a, &b),
            ["min_free_disk_mib", "network.conf_dir", "streaming.port"]
        );
    }

    #[test]
    fn fingerprint_sees_a_rewrite_of_the_same_size() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("registries.conf");
        assert_eq!(fingerprint(&f), None);
        std::fs::write(&f, "a").unwrap();
        let first = fingerprint(&f);
        assert!(first.is_some());
        // A new file renamed over it (what editors and config managers do).
        let tmp = dir.path().join("tmp");
        std::fs::write(&tmp, "b").unwrap();
        std::fs::rename(&tmp, &f).unwrap();
        assert_ne!(fingerprint(&f), first);
    }
}
