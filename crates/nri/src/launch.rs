//! Pre-installed plugins: executables named `NN-name` in the plugin dir,
//! started by berthd with one end of a socket pair as their fd 3
//! (`NRI_PLUGIN_SOCKET=3`), as containerd's NRI starts them. They register
//! over it like any plugin; their configuration is `NN-name.conf` or
//! `name.conf` in the plugin config dir.

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use crate::Settings;
use crate::plugin::{check_index, check_name};

/// Starts every pre-installed plugin; returns the runtime's end of each
/// one's connection and its configuration. A plugin that cannot be started
/// is logged and skipped.
pub(crate) fn start_preinstalled(settings: &Settings) -> Vec<(tokio::net::UnixStream, String)> {
    let Ok(dir) = std::fs::read_dir(&settings.plugin_path) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .flatten()
        .filter(|e| {
            e.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    let mut started = Vec::new();
    for name in names {
        let Some((idx, base)) = name.split_once('-') else {
            tracing::warn!(plugin = %name, "NRI plugin file not named NN-name; skipped");
            continue;
        };
        if let Err(e) = check_index(idx).and_then(|()| check_name(base)) {
            tracing::warn!(plugin = %name, "NRI plugin skipped: {e}");
            continue;
        }
        match start(&settings.plugin_path.join(&name), idx, base) {
            Ok(stream) => {
                started.push((stream, config_of(&settings.plugin_config_path, idx, base)))
            }
            Err(e) => tracing::warn!(plugin = %name, error = %e, "NRI plugin could not be started"),
        }
    }
    started
}

fn config_of(dir: &Path, idx: &str, base: &str) -> String {
    [format!("{idx}-{base}.conf"), format!("{base}.conf")]
        .iter()
        .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .unwrap_or_default()
}

fn start(path: &Path, idx: &str, base: &str) -> std::io::Result<tokio::net::UnixStream> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    let fd = theirs.as_raw_fd();
    let mut cmd = std::process::Command::new(path);
    cmd.env("NRI_PLUGIN_NAME", base)
        .env("NRI_PLUGIN_IDX", idx)
        .env("NRI_PLUGIN_SOCKET", "3")
        .stdin(std::process::Stdio::null());
    // SAFETY: between fork and exec only async-signal-safe calls (dup2).
    unsafe {
        cmd.pre_exec(move || {
            // dup2 clears close-on-exec on the new descriptor.
            if libc_dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(theirs);
    tracing::info!(plugin = %format!("{idx}-{base}"), pid = child.id(), "started pre-installed NRI plugin");
    // Reap it whenever it exits.
    std::thread::spawn(move || {
        let mut child = child;
        let _ = child.wait();
    });
    ours.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(ours)
}

fn libc_dup2(from: i32, to: i32) -> i32 {
    // SAFETY: plain syscalls on descriptors this process owns.
    unsafe {
        if from == to {
            // dup2 onto itself keeps close-on-exec: clear it by hand.
            nix::libc::fcntl(from, nix::libc::F_SETFD, 0)
        } else {
            nix::libc::dup2(from, to)
        }
    }
}
