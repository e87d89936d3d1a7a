//! `berthd`: the Berth CRI runtime daemon.

mod admin;
mod blocking;
mod config;
mod container;
mod cri;
mod daemon;
mod deadline;
mod error;
mod failpoint;
mod ids;
mod laps;
mod lifeline;
mod network;
mod nri;
mod prometheus;
mod reload;
mod rpc_layer;
mod sandbox;
mod server;
mod state_mount;
mod stats;
mod store;
mod streaming;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat, Overrides};

#[derive(Parser)]
#[command(
    name = "berthd",
    version,
    about = "Berth: a Kubernetes CRI container runtime",
    args_override_self = true
)]
struct Cli {
    /// TOML config file; a missing default file means all defaults.
    #[arg(long, value_name = "PATH", global = true)]
    config: Option<PathBuf>,
    /// Persistent state directory [default: /var/lib/berth].
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Runtime state directory, lost on reboot [default: /run/berth].
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// CRI unix socket [default: /run/berth/berth.sock].
    #[arg(long, value_name = "PATH")]
    listen: Option<PathBuf>,
    /// Log level or tracing filter [default: info].
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Log format [default: text].
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// containers-registries.conf(5) v2 file [default: /etc/berth/registries.conf].
    #[arg(long, value_name = "PATH")]
    registries_config: Option<PathBuf>,
    /// CNI network config dir [default: /etc/cni/net.d].
    #[arg(long, value_name = "DIR")]
    cni_conf_dir: Option<PathBuf>,
    /// CNI plugin dirs, `:`-separated [default: /opt/cni/bin:/usr/lib/cni].
    #[arg(long, value_name = "DIRS")]
    cni_bin_dir: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print the documented default config file.
    Default,
    /// Print the effective config (file + flags) as TOML and exit.
    Show,
}

fn main() -> std::process::ExitCode {
    // The hidden namespace-pinning helper must run before any
    // thread exists (unshare acts on the calling thread only).
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() == Some(std::ffi::OsStr::new(sandbox::pin::SUBCOMMAND)) {
        return sandbox::pin::child_main(args.collect());
    }
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berthd: {}", chain_once(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// `e` and its causes, each said once: Berth's errors already end with
/// their source's message, which `{:#}` would repeat.
fn chain_once(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let said = cause.to_string();
        if !text.ends_with(&said) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&said);
        }
    }
    text
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let overrides = Overrides {
        root: cli.root,
        state: cli.state,
        listen: cli.listen,
        log_level: cli.log_level,
        log_format: cli.log_format,
        registries_config: cli.registries_config,
        cni_conf_dir: cli.cni_conf_dir,
        cni_bin_dirs: cli.cni_bin_dir.map(|s| {
            s.split(':')
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .collect()
        }),
    };
    let config = Config::load(cli.config.as_deref())?.apply(overrides.clone())?;
    match cli.command {
        Some(Command::Config {
            action: ConfigAction::Default,
        }) => {
            print!("{}", config::DEFAULT_CONFIG_TOML);
            return Ok(());
        }
        Some(Command::Config {
            action: ConfigAction::Show,
        }) => {
            print!("{}", toml::to_string(&config)?);
            return Ok(());
        }
        None => {}
    }
    let reloader = reload::Reloader {
        config_path: cli.config,
        overrides,
        set_log_level: init_logging(&config),
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(daemon_main(config, reloader))
}

/// Installs the log subscriber; answers the way to change its filter later
/// (config reload).
fn init_logging(config: &Config) -> reload::SetLogLevel {
    use tracing_subscriber::EnvFilter;
    // validate() already checked that the filter parses.
    let filter = EnvFilter::new(&config.log_level);
    // Colour codes only for a person at a terminal, not in log files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let parse = |level: &str| EnvFilter::try_new(level).map_err(|e| e.to_string());
    match config.log_format {
        LogFormat::Text => {
            let builder = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(ansi)
                .with_writer(std::io::stderr)
                // Last: its type names the writer and format above.
                .with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            Box::new(move |level| handle.reload(parse(level)?).map_err(|e| e.to_string()))
        }
        LogFormat::Json => {
            let builder = tracing_subscriber::fmt()
                .json()
                .with_env_filter(filter)
                .with_ansi(ansi)
                .with_writer(std::io::stderr)
                // Last: its type names the writer and format above.
                .with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            Box::new(move |level| handle.reload(parse(level)?).map_err(|e| e.to_string()))
        }
    }
}

async fn daemon_main(config: Config, reloader: reload::Reloader) -> anyhow::Result<()> {
    for dir in [&config.root, &config.state] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // Take the socket first: a second daemon must be refused before it touches any state.
    let claim = server::claim(&config.listen)?;
    let store = store::Store::open(&config.root)?;
    let registries = berth_image::RegistriesConfig::load(&config.registries_config)?;
    let images = berth_image::ImageStore::open_with(
        &config.root,
        store.db(),
        registries,
        berth_image::StoreOptions {
            max_parallel_layers: config.image.max_parallel_layers,
            // The disk reserve holds while layers are written, not only
            // when a pull starts.
            unpack_limits: berth_image::UnpackLimits {
                min_free_bytes: config.min_free_disk_mib << 20,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .context("cannot open the image store")?;
    std::fs::create_dir_all(config.root.join("containers"))
        .with_context(|| format!("cannot create {}/containers", config.root.display()))?;
    let socket = claim.listen()?;
    let daemon = Arc::new(daemon::Daemon::new(config, store, images)?);
    if let Some(root) = state_mount::ensure(&daemon.config().state) {
        daemon.containers().set_mounts_root(root);
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        root = %daemon.config().root.display(),
        state = %daemon.config().state.display(),
        "berthd starting"
    );
    let shutdown = shutdown_signal();
    reloader.spawn(daemon.clone());
    // The sealed copy monitors run from (berth_monitor_protocol::sealed),
    // made now in the background rather than by the first pod's
    // CreateContainer (a 50 MB unstripped release binary takes ~0.2 s).
    tokio::task::spawn_blocking(|| {
        let made = container::monitor::binary()
            .and_then(|b| Ok(berth_monitor_protocol::sealed::shared_copy(&b)?));
        if let Err(e) = made {
            tracing::warn!(error = %format!("{e:#}"), "no sealed copy of berth-monitor yet: pods cannot start monitors until it can be made");
        }
    });
    // Before serving: neither must race an RPC in flight.
    daemon.containers().reconcile_orphans().await;
    // Records follow the pod monitors' events from now on; the first
    // snapshot of each reconciles what happened while berthd was down.
    if let Some(updates) = daemon.containers().take_updates() {
        let d = daemon.clone();
        tokio::spawn(async move { d.containers().apply_updates(updates).await });
    }
    daemon.containers().watch_live_pods();
    daemon.collect_network_garbage().await;
    // Before serving: plugins see every pod from the first RPC on.
    nri::start(&daemon)
        .await
        .context("cannot start NRI (setting [nri])")?;
    if let Some(addr) = daemon.config().metrics.address {
        prometheus::serve(addr, daemon.clone()).await?;
    }
    let streaming = streaming::start(&daemon.config().streaming, daemon.clone())
        .await
        .context("cannot start the streaming server (setting [streaming])")?;
    // The socket is bound and recovery is done: connections queue until the
    // server below accepts them, so the service manager may start the kubelet.
    notify_service_manager(sd_notify::NotifyState::Ready);
    server::serve(socket, daemon.clone(), Arc::new(streaming), shutdown).await?;
    tracing::info!(store = %daemon.store().path().display(), "berthd stopped");
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Installed now, not when the future is first polled: the socket may
    // answer before that, and a SIGTERM/SIGINT in between would kill berthd
    // without a graceful stop.
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop berthd with SIGKILL");
            return std::future::pending().await;
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutting down");
        notify_service_manager(sd_notify::NotifyState::Stopping);
    }
}

/// Tells systemd (`Type=notify`) about a state change; a no-op unless
/// `NOTIFY_SOCKET` is set. A failure is logged: the unit's start timeout
/// is what notices a readiness that never arrived.
fn notify_service_manager(state: sd_notify::NotifyState) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    match sd_notify::notify(&[state]) {
        Ok(()) => tracing::debug!("service manager notified"),
        Err(e) => tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn chain_once_says_each_cause_once() {
        let gone = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = anyhow::Error::new(crate::config::ConfigError::Read {
            path: "/etc/berth/x.toml".into(),
            source: gone,
        })
        .context("starting");
        assert_eq!(
            super::chain_once(&e),
            "starting: cannot read config file /etc/berth/x.toml: gone"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(super::chain_once(&plain), "outer: inner");
    }
}
