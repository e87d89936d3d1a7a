//! Daemon configuration: built-in defaults, overridden by the TOML file, overridden by flags.
//!
//! Every key is documented in [`DEFAULT_CONFIG_TOML`], which `berthd config default` prints
//! and which a test parses, so the documentation cannot drift from the code.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where `berthd` looks for its config file when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/berth/config.toml";

/// The commented example config: every key with its default value.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../../../hack/config.example.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid setting `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

/// The effective daemon configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Persistent state: metadata store, images, layers.
    pub root: PathBuf,
    /// Runtime state, lost on reboot: pinned namespaces, monitor sockets.
    pub state: PathBuf,
    /// The CRI gRPC unix socket.
    pub listen: PathBuf,
    /// A tracing filter: a level (`info`) or directives (`berthd=debug,info`).
    pub log_level: String,
    pub log_format: LogFormat,
    pub cgroup_driver: CgroupDriver,
    /// Keep a named cgroup v1 hierarchy with `favordynmods` (hybrid and v1 hosts; mounted nowhere).
    pub cgroup_favordynmods: bool,
    /// containers-registries.conf(5) v2 file with mirrors, insecure and blocked registries.
    pub registries_config: PathBuf,
    /// Space (MiB) kept free on the root dir's filesystem: PullImage,
    /// RunPodSandbox and CreateContainer are refused below it.
    pub min_free_disk_mib: u64,
    /// Seconds a pod monitor may go without answering before its live
    /// containers are reported UNKNOWN (longer than its slowest request).
    pub monitor_unresponsive_secs: u64,
    /// RuntimeClass handlers accepted beside the default one (""): each runs
    /// pods exactly as the default does.
    pub runtime_handlers: Vec<String>,
    pub image: ImageConfig,
    pub network: NetworkConfig,
    pub streaming: StreamingConfig,
    pub metrics: MetricsConfig,
    pub nri: NriConfig,
    pub checkpoint: CheckpointConfig,
}

/// The Node Resource Interface: plugins that see and adjust every pod and
/// container. Off by default, as in containerd.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NriConfig {
    pub enable: bool,
    /// The socket plugins connect to.
    pub socket_path: PathBuf,
    /// Pre-installed plugins (`NN-name` executables) berthd starts.
    pub plugin_path: PathBuf,
    /// Their configuration (`NN-name.conf` or `name.conf`).
    pub plugin_config_path: PathBuf,
    /// A connecting plugin must register within this (milliseconds).
    pub plugin_registration_timeout_ms: u64,
    /// A plugin that does not answer an event within this (milliseconds) is
    /// disconnected and the operation goes on without it.
    pub plugin_request_timeout_ms: u64,
}

impl Default for NriConfig {
    fn default() -> Self {
        // containerd's defaults.
        NriConfig {
            enable: false,
            socket_path: PathBuf::from("/var/run/nri/nri.sock"),
            plugin_path: PathBuf::from("/opt/nri/plugins"),
            plugin_config_path: PathBuf::from("/etc/nri/conf.d"),
            plugin_registration_timeout_ms: 5000,
            plugin_request_timeout_ms: 2000,
        }
    }
}

/// CheckpointContainer (kubelet forensic checkpoints), done with CRIU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// The criu binary: a bare name is looked up on berthd's PATH.
    pub criu_path: PathBuf,
    /// The limit of one checkpoint when the request gives none (seconds).
    pub default_timeout_secs: u64,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            criu_path: PathBuf::from("criu"),
            default_timeout_secs: 300,
        }
    }
}

/// berthd's own Prometheus endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `host:port` serving `GET /metrics`; unset: no endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::SocketAddr>,
}

/// The streaming server behind CRI Exec, Attach and PortForward URLs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamingConfig {
    /// Address the server listens on; loopback by default, as containerd's.
    pub address: IpAddr,
    /// TCP port; 0 picks an ephemeral one.
    pub port: u16,
    /// A session with no traffic either way for this long is closed.
    pub idle_timeout_secs: u64,
    /// Serve HTTPS with this PEM certificate chain (with `tls_key_file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    /// The PEM private key of `tls_cert_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            // The kubelet's default streaming idle timeout.
            idle_timeout_secs: 4 * 3600,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

impl StreamingConfig {
    /// The streaming server's settings: these keys, its defaults for the rest.
    pub fn to_server_config(&self) -> berth_stream::StreamingConfig {
        berth_stream::StreamingConfig {
            address: self.address,
            port: self.port,
            stream_idle_timeout: std::time::Duration::from_secs(self.idle_timeout_secs),
            tls: match (&self.tls_cert_file, &self.tls_key_file) {
                (Some(cert), Some(key)) => Some(berth_stream::TlsFiles {
                    cert_file: cert.clone(),
                    key_file: key.clone(),
                }),
                // validate() refuses one without the other.
                _ => None,
            },
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// CNI network config dir: the first config file in lexical order.
    pub conf_dir: PathBuf,
    /// CNI plugin dirs, searched in order.
    pub bin_dirs: Vec<PathBuf>,
    /// Limit for one plugin execution, in seconds.
    pub plugin_timeout_secs: u64,
    /// Accept forwarded traffic from and to the pods' bridge (the config's
    /// `bridge` plugin) once per node, in the filter chain `BERTH-FWD-<bridge>`:
    /// pods then work on a node whose FORWARD policy is DROP (a Docker
    /// engine's) without CNI's `firewall` plugin; the admin's own rules for
    /// pods go in `BERTH-FORWARD-ADMIN`. `false` leaves the node's
    /// iptables alone.
    pub bridge_forward_rules: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
            plugin_timeout_secs: 20,
            bridge_forward_rules: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageConfig {
    /// Layers of one image downloaded and unpacked at the same time.
    pub max_parallel_layers: usize,
}

impl Default for ImageConfig {
    fn default() -> Self {
        ImageConfig {
            max_parallel_layers: 4,
        }
    }
}

/// A DNS-1123 label, what the API server allows as a RuntimeClass's `handler`.
fn is_dns_label(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=63).contains(&s.len())
        && s.chars().all(|c| alnum(c) || c == '-')
        && s.starts_with(alnum)
        && s.ends_with(alnum)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: PathBuf::from("/var/lib/berth"),
            state: PathBuf::from("/run/berth"),
            listen: PathBuf::from("/run/berth/berth.sock"),
            log_level: "info".to_string(),
            log_format: LogFormat::Text,
            cgroup_driver: CgroupDriver::Cgroupfs,
            cgroup_favordynmods: true,
            registries_config: PathBuf::from("/etc/berth/registries.conf"),
            min_free_disk_mib: 128,
            monitor_unresponsive_secs: 90,
            runtime_handlers: Vec::new(),
            image: ImageConfig::default(),
            network: NetworkConfig::default(),
            streaming: StreamingConfig::default(),
            metrics: MetricsConfig::default(),
            nri: NriConfig::default(),
            checkpoint: CheckpointConfig::default(),
        }
    }
}

/// Command-line values that override the file; `None` keeps the file's (or default) value.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub root: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub listen: Option<PathBuf>,
    pub log_level: Option<String>,
    pub log_format: Option<LogFormat>,
    pub registries_config: Option<PathBuf>,
    pub cni_conf_dir: Option<PathBuf>,
    pub cni_bin_dirs: Option<Vec<PathBuf>>,
}

impl Config {
    /// Parses a TOML document; unknown keys and bad values are errors naming the key.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Loads the config file. A missing file at the default path means "all defaults";
    /// a missing file the operator named explicitly is an error.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Config::from_toml(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    pub fn apply(mut self, o: Overrides) -> Result<Config, ConfigError> {
        if let Some(v) = o.root {
            self.root = v;
        }
        if let Some(v) = o.state {
            self.state = v;
        }
        if let Some(v) = o.listen {
            self.listen = v;
        }
        if let Some(v) = o.log_level {
            self.log_level = v;
        }
        if let Some(v) = o.log_format {
            self.log_format = v;
        }
        if let Some(v) = o.registries_config {
            self.registries_config = v;
        }
        if let Some(v) = o.cni_conf_dir {
            self.network.conf_dir = v;
        }
        if let Some(v) = o.cni_bin_dirs {
            self.network.bin_dirs = v;
        }
        self.validate()?;
        Ok(self)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (key, path) in [
            ("root", &self.root),
            ("state", &self.state),
            ("listen", &self.listen),
            ("registries_config", &self.registries_config),
            ("network.conf_dir", &self.network.conf_dir),
            ("nri.socket_path", &self.nri.socket_path),
            ("nri.plugin_path", &self.nri.plugin_path),
            ("nri.plugin_config_path", &self.nri.plugin_config_path),
        ]
        .into_iter()
        .chain(
            self.network
                .bin_dirs
                .iter()
                .map(|d| ("network.bin_dirs", d)),
        )
        .chain(
            [
                ("streaming.tls_cert_file", &self.streaming.tls_cert_file),
                ("streaming.tls_key_file", &self.streaming.tls_key_file),
            ]
            .into_iter()
            .filter_map(|(k, p)| Some((k, p.as_ref()?))),
        ) {
            if !path.is_absolute() {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!("{} is not an absolute path", path.display()),
                });
            }
        }
        for (key, ms) in [
            (
                "nri.plugin_registration_timeout_ms",
                self.nri.plugin_registration_timeout_ms,
            ),
            (
                "nri.plugin_request_timeout_ms",
                self.nri.plugin_request_timeout_ms,
            ),
        ] {
            if ms == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be more than 0".to_string(),
                });
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return Err(ConfigError::Invalid {
                key: "log_level",
                message: format!(
                    "{:?} is not a level (error, warn, info, debug, trace) or a tracing filter",
                    self.log_level
                ),
            });
        }
        if !(1..=64).contains(&self.image.max_parallel_layers) {
            return Err(ConfigError::Invalid {
                key: "image.max_parallel_layers",
                message: format!("{} is not between 1 and 64", self.image.max_parallel_layers),
            });
        }
        if self.min_free_disk_mib > 1 << 20 {
            return Err(ConfigError::Invalid {
                key: "min_free_disk_mib",
                message: format!("{} MiB is more than 1 TiB", self.min_free_disk_mib),
            });
        }
        if !(1..=3600).contains(&self.monitor_unresponsive_secs) {
            return Err(ConfigError::Invalid {
                key: "monitor_unresponsive_secs",
                message: format!(
                    "{} is not between 1 and 3600",
                    self.monitor_unresponsive_secs
                ),
            });
        }
        for (i, name) in self.runtime_handlers.iter().enumerate() {
            let invalid = |message: String| ConfigError::Invalid {
                key: "runtime_handlers",
                message,
            };
            if !is_dns_label(name) {
                return Err(invalid(format!(
                    "{name:?} is not a RuntimeClass handler name (a DNS label: 1-63 of a-z, 0-9 and '-', \
                     starting and ending with a letter or digit)"
                )));
            }
            if self.runtime_handlers[..i].contains(name) {
                return Err(invalid(format!("{name:?} is listed twice")));
            }
        }
        if !(1..=24 * 3600).contains(&self.checkpoint.default_timeout_secs) {
            return Err(ConfigError::Invalid {
                key: "checkpoint.default_timeout_secs",
                message: format!(
                    "{} is not between 1 and 86400 (a day)",
                    self.checkpoint.default_timeout_secs
                ),
            });
        }
        let criu = &self.checkpoint.criu_path;
        if criu.as_os_str().is_empty() || (!criu.is_absolute() && criu.components().count() != 1) {
            return Err(ConfigError::Invalid {
                key: "checkpoint.criu_path",
                message: format!(
                    "{:?} is neither an absolute path nor a bare name to look up on PATH",
                    criu.display()
                ),
            });
        }
        if !(1..=600).contains(&self.network.plugin_timeout_secs) {
            return Err(ConfigError::Invalid {
                key: "network.plugin_timeout_secs",
                message: format!(
                    "{} is not between 1 and 600",
                    self.network.plugin_timeout_secs
                ),
            });
        }
        if !(1..=7 * 24 * 3600).contains(&self.streaming.idle_timeout_secs) {
            return Err(ConfigError::Invalid {
                key: "streaming.idle_timeout_secs",
                message: format!(
                    "{} is not between 1 and 604800 (a week)",
                    self.streaming.idle_timeout_secs
                ),
            });
        }
        match (&self.streaming.tls_cert_file, &self.streaming.tls_key_file) {
            (Some(_), None) => {
                return Err(ConfigError::Invalid {
                    key: "streaming.tls_key_file",
                    message: "is required with streaming.tls_cert_file".to_string(),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "streaming.tls_cert_file",
                    message: "is required with streaming.tls_key_file".to_string(),
                });
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("/test.toml"))
    }

    #[test]
    fn documented_example_is_exactly_the_defaults() {
        assert_eq!(parse(DEFAULT_CONFIG_TOML).unwrap(), Config::default());
    }

    #[test]
    fn every_default_key_is_documented() {
        let defaults = toml::to_string(&Config::default()).unwrap();
        let documented: toml::Table = toml::from_str(DEFAULT_CONFIG_TOML).unwrap();
        let defaults: toml::Table = toml::from_str(&defaults).unwrap();
        assert_eq!(
            documented.keys().collect::<Vec<_>>(),
            defaults.keys().collect::<Vec<_>>()
        );
    }

    #[test]
    fn empty_file_means_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("roots = \"/x\"\n").unwrap_err().to_string();
        assert!(err.contains("roots"), "{err}");
        let err = parse("[image]\nparallel = 3\n").unwrap_err().to_string();
        assert!(err.contains("parallel"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let err = parse("log_format = \"xml\"\n").unwrap_err().to_string();
        assert!(err.contains("log_format") && err.contains("xml"), "{err}");
        let err = parse("cgroup_driver = 3\n").unwrap_err().to_string();
        assert!(err.contains("cgroup_driver"), "{err}");
        let err = parse("root = \"relative\"\n").unwrap_err().to_string();
        assert!(err.contains("`root`"), "{err}");
        let err = parse("[image]\nmax_parallel_layers = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("image.max_parallel_layers"), "{err}");
        let err = parse("log_level = \"berthd=loud\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("log_level"), "{err}");
    }

    #[test]
    fn runtime_handlers_are_dns_labels_listed_once() {
        let c = parse("runtime_handlers = [\"runc\", \"test-handler\"]\n").unwrap();
        assert_eq!(c.runtime_handlers, ["runc", "test-handler"]);
        for bad in [
            "\"\"",
            "\"Runc\"",
            "\"-x\"",
            "\"x-\"",
            "\"a_b\"",
            "\"runc\", \"runc\"",
        ] {
            let err = parse(&format!("runtime_handlers = [{bad}]\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("runtime_handlers"), "{bad}: {err}");
        }
        assert!(parse(&format!("runtime_handlers = [\"{}\"]\n", "a".repeat(64))).is_err());
    }

    #[test]
    fn streaming_section_maps_to_the_server_config() {
        let c = parse(
            "[streaming]\naddress = \"::1\"\nport = 10010\nidle_timeout_secs = 60\n\
             tls_cert_file = \"/etc/berth/stream.crt\"\ntls_key_file = \"/etc/berth/stream.key\"\n",
        )
        .unwrap();
        let s = c.streaming.to_server_config();
        assert_eq!(s.address, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(s.port, 10010);
        assert_eq!(s.stream_idle_timeout, std::time::Duration::from_secs(60));
        assert_eq!(
            s.tls,
            Some(berth_stream::TlsFiles {
                cert_file: "/etc/berth/stream.crt".into(),
                key_file: "/etc/berth/stream.key".into(),
            })
        );
        let d = Config::default().streaming.to_server_config();
        assert_eq!(
            (d.address, d.port, d.tls),
            (IpAddr::V4(Ipv4Addr::LOCALHOST), 0, None)
        );
    }

    #[test]
    fn streaming_settings_are_checked() {
        let err = parse("[streaming]\naddress = \"localhost\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("address"), "{err}");
        let err = parse("[streaming]\nport = 70000\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("port"), "{err}");
        let err = parse("[streaming]\ntls_cert_file = \"/c.pem\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("streaming.tls_key_file"), "{err}");
        let err = parse("[streaming]\ntls_cert_file = \"c.pem\"\ntls_key_file = \"/k\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("streaming.tls_cert_file"), "{err}");
        let err = parse("[streaming]\nidle_timeout_secs = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("streaming.idle_timeout_secs"), "{err}");
    }

    #[test]
    fn flags_override_file() {
        let c = parse("root = \"/a\"\nstate = \"/b\"\n")
            .unwrap()
            .apply(Overrides {
                root: Some("/c".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(c.root, PathBuf::from("/c"));
        assert_eq!(c.state, PathBuf::from("/b"));
    }

    #[test]
    fn missing_default_file_is_defaults_but_missing_explicit_file_is_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        assert!(matches!(
            Config::load(Some(&missing)),
            Err(ConfigError::Read { .. })
        ));
    }
}
