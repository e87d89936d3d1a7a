//! A small blocking client of the monitor protocol (tests, tools; berthd
//! uses its own async one), and starting a monitor.

use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::{Request, Response, SOCKET_NAME, version_from_hello};

pub struct Client {
    reader: BufReader<UnixStream>,
}

impl Client {
    /// Connects to the monitor whose state dir is `state_dir`.
    pub fn connect(state_dir: &Path) -> io::Result<Self> {
        let stream = UnixStream::connect(state_dir.join(SOCKET_NAME))?;
        Ok(Self {
            reader: BufReader::new(stream),
        })
    }

    /// Sends one request and waits for its response.
    pub fn call(&mut self, req: &Request) -> io::Result<Response> {
        let mut line = serde_json::to_vec(req).map_err(io::Error::other)?;
        line.push(b'\n');
        self.reader.get_mut().write_all(&line)?;
        let mut resp = String::new();
        if self.reader.read_line(&mut resp)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "monitor closed the connection",
            ));
        }
        serde_json::from_str(&resp).map_err(io::Error::other)
    }

    /// The monitor's protocol version (0: from before versions).
    pub fn hello(&mut self) -> io::Result<u32> {
        version_from_hello(self.call(&Request::Hello)?)
            .map_err(|other| io::Error::other(format!("unexpected answer to hello: {other:?}")))
    }
}

/// Runs `berth-monitor` (plain `std::process`: the monitor daemonizes
/// itself) and returns the monitor's pid once its socket is
/// ready. The command itself exits at once; the monitor is a daemon.
///
/// It runs from this process's sealed copy of `binary` ([`crate::sealed`]),
/// never from the file itself: the containers it clones can reach its
/// executable.
///
/// `mounts`: the mount point every pod's mounts lie below and this pod's
/// dir beneath it; the monitor then builds containers in a mount namespace
/// holding only this pod's (`--mounts-root`, `--pod-dir`).
pub fn spawn(
    binary: &Path,
    pod_id: &str,
    state_dir: &Path,
    mounts: Option<(&Path, &Path)>,
) -> io::Result<i32> {
    let exe = crate::sealed::shared_copy(binary).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("sealed copy of {}: {e}", binary.display()),
        )
    })?;
    // The fd is close-on-exec: the exec opens it first, and the monitor
    // keeps no fd of it.
    let mut cmd = Command::new(format!("/proc/self/fd/{}", exe.as_raw_fd()));
    cmd.arg0("berth-monitor")
        .arg("--pod-id")
        .arg(pod_id)
        .arg("--state-dir")
        .arg(state_dir);
    if let Some((root, pod_dir)) = mounts {
        cmd.arg("--mounts-root")
            .arg(root)
            .arg("--pod-dir")
            .arg(pod_dir);
    }
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "berth-monitor for pod {pod_id}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| io::Error::other(format!("berth-monitor for pod {pod_id}: pid: {e}")))
}
