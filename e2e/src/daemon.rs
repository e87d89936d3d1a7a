//! A real `berthd` process on temporary root, state and socket paths.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::client::CriClient;

/// The berthd binary under test: `$BERTHD_BIN`, else the workspace's debug
/// build. A binary older than the daemon's sources is refused, so a test never
/// silently runs yesterday's daemon (`cargo test --workspace` rebuilds it).
pub fn berthd_bin() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("BERTHD_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let root = crate::workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("debug/berthd");
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .with_context(|| {
            format!(
                "{} is missing: run `cargo build -p berthd` (or `cargo test --workspace`) first",
                bin.display()
            )
        })?;
    // cargo's dep-info file lists every source file the binary was built from.
    let dep_info = bin.with_extension("d");
    let deps = std::fs::read_to_string(&dep_info)
        .with_context(|| format!("reading {}", dep_info.display()))?;
    let newest = newest_source(&deps);
    if newest > built {
        bail!(
            "{} is older than its sources: run `cargo build -p berthd` (or `cargo test --workspace`)",
            bin.display()
        );
    }
    Ok(bin)
}

/// The newest mtime among the files of a make-style dep-info file
/// (`target: dep dep ...`, spaces in paths escaped as `\ `).
fn newest_source(dep_info: &str) -> SystemTime {
    let deps = dep_info.split_once(": ").map_or("", |(_, d)| d);
    deps.replace("\\ ", "\0")
        .split_whitespace()
        .map(|p| p.replace('\0', " "))
        .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Paths and settings of one daemon; reused across restarts.
pub struct BerthdConfig {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    /// Extra command-line arguments.
    pub args: Vec<String>,
    /// Written to `dir/config.toml` and passed as `--config` when set.
    pub config_toml: Option<String>,
    /// Written to `dir/registries.conf` and passed as `--registries-config` when set.
    pub registries_conf: Option<String>,
    /// The CNI network config (a .conflist), written into `cni_conf_dir`.
    /// None: the dir stays empty (NetworkReady false, loopback-only pods).
    pub cni_conflist: Option<String>,
    /// Extra environment (e.g. `BERTH_FAILPOINTS`), for the next start.
    pub env: Vec<(String, String)>,
    /// The berthd binary (e.g. an installed one); None: [`berthd_bin`].
    pub bin: Option<PathBuf>,
}

impl BerthdConfig {
    pub fn new() -> anyhow::Result<BerthdConfig> {
        // Under /tmp, not the cwd: unix socket paths are limited to 108 bytes.
        let dir = tempfile::Builder::new().prefix("berth-e2e-").tempdir()?;
        // Searchable by others, as a node's /var/lib and /run are: the
        // containers of a hostUsers: false pod reach their bundle and the
        // pod's files as an unprivileged host user.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )?;
        let base = dir.path().to_path_buf();
        Ok(BerthdConfig {
            root: base.join("root"),
            state: base.join("state"),
            socket: base.join("state/berth.sock"),
            log: base.join("berthd.log"),
            dir,
            args: vec![],
            config_toml: None,
            registries_conf: None,
            cni_conflist: None,
            env: vec![],
            bin: None,
        })
    }

    /// The daemon's CNI config dir (`dir/net.d`).
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.path().join("net.d")
    }

    /// The full command line for this daemon, without starting it.
    pub fn command(&self) -> anyhow::Result<Command> {
        let mut cmd = Command::new(match &self.bin {
            Some(bin) => bin.clone(),
            None => berthd_bin()?,
        });
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--state")
            .arg(&self.state)
            .arg("--listen")
            .arg(&self.socket)
            .arg("--log-level")
            .arg("debug");
        let config = self.dir.path().join("config.toml");
        match &self.config_toml {
            Some(text) => {
                std::fs::write(&config, text)?;
                cmd.arg("--config").arg(&config);
            }
            // Never read the host's /etc/berth/config.toml in a test.
            None => {
                std::fs::write(&config, "")?;
                cmd.arg("--config").arg(&config);
            }
        }
        let registries = self.dir.path().join("registries.conf");
        std::fs::write(&registries, self.registries_conf.as_deref().unwrap_or(""))?;
        cmd.arg("--registries-config").arg(&registries);
        // Never the host's /etc/cni/net.d either.
        let net_d = self.cni_conf_dir();
        std::fs::create_dir_all(&net_d)?;
        if let Some(text) = &self.cni_conflist {
            std::fs::write(net_d.join("10-test.conflist"), text)?;
        }
        cmd.arg("--cni-conf-dir").arg(&net_d);
        cmd.args(&self.args);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        Ok(cmd)
    }
}

/// A running berthd; killed (SIGKILL) on drop if still running.
pub struct Berthd {
    pub config: BerthdConfig,
    child: Option<Child>,
}

impl Berthd {
    /// Starts a daemon with default settings on fresh temporary dirs.
    pub async fn start() -> anyhow::Result<Berthd> {
        Berthd::start_with(BerthdConfig::new()?).await
    }

    pub async fn start_with(config: BerthdConfig) -> anyhow::Result<Berthd> {
        let mut d = Berthd {
            config,
            child: None,
        };
        d.spawn().await?;
        Ok(d)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.config.log)?;
        let child = self
            .config
            .command()?
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot spawn berthd")?;
        self.child = Some(child);
        self.wait_ready().await
    }

    /// Waits until the socket answers `Version`, or the daemon exits.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "berthd exited during startup ({status}):\n{}",
                    self.log_text()
                );
            }
            if self.config.socket.exists()
                && let Ok(mut c) = CriClient::connect(&self.config.socket).await
                && c.runtime
                    .version(berth_api::v1::VersionRequest::default())
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("berthd did not answer within 20 s:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn client(&self) -> anyhow::Result<CriClient> {
        CriClient::connect(&self.config.socket).await
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.config.log).unwrap_or_default()
    }

    /// Sends `signal` and waits for the process to exit. Async so that this
    /// test's own client connections keep being served while the daemon drains
    /// them (a blocking wait here would deadlock a graceful shutdown).
    pub async fn signal_and_wait(&mut self, signal: Signal) -> anyhow::Result<ExitStatus> {
        let pid = self.child.as_ref().context("berthd is not running")?.id();
        kill(Pid::from_raw(pid as i32), signal)?;
        self.wait_exit().await
    }

    /// SIGTERM: the graceful stop path.
    pub async fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        self.signal_and_wait(Signal::SIGTERM).await
    }

    /// SIGKILL: the crash path.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        self.signal_and_wait(Signal::SIGKILL).await.map(|_| ())
    }

    /// The daemon's exit status if it has exited on its own (not waiting).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }

    /// Waits for the daemon to exit (on its own: a failpoint; or signalled),
    /// up to 30 s; then kills it and fails.
    pub async fn wait_exit(&mut self) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("berthd is not running")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("berthd did not exit within 30 s:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Starts the daemon again on the same dirs, after a stop or a kill.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            self.stop().await?;
        }
        self.spawn().await
    }
}

impl Drop for Berthd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Monitors and containers outlive berthd by design; a test's must not.
        crate::cleanup::reap_leftovers(self.config.dir.path());
    }
}
