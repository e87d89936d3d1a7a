//! Pseudo-terminals: the console socket libcontainer sends a new
//! terminal's master to (runc's `--console-socket` protocol), and sizing a
//! terminal.
//!
//! libcontainer connects to the socket in the monitor's own process, before
//! it clones; the container's process opens the terminal and sends the
//! master with SCM_RIGHTS. `build()` returns after that, so the connection
//! is queued by then and the master on it (or EOF: the process failed).

use std::fs;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use serde::Deserialize;

use super::Monitor;
use berth_monitor_protocol::TerminalSize;

/// Name of the console socket inside the monitor's state dir.
pub const CONSOLE_SOCKET: &str = "console.sock";

/// How long to wait for the master on a queued connection: it was sent
/// before `build()` returned, so this only bounds a broken peer.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// Prefix of the links the tenant builder leaves in a container's state dir
/// for each exec with a terminal (libcontainer never removes them).
const TENANT_LINK_PREFIX: &str = "tenant-tty-";

/// The listening console socket, opened on the first terminal.
pub(super) struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ConsoleSocket {
    pub fn open(state_dir: &Path) -> io::Result<ConsoleSocket> {
        let path = state_dir.join(CONSOLE_SOCKET);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(&path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(ConsoleSocket { listener, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Drops connections a failed build left queued, so the next master
    /// received is the next build's.
    pub fn discard_pending(&self) {
        while self.listener.accept().is_ok() {}
    }

    /// The master of the terminal the build that just returned opened.
    pub fn receive_master(&self) -> io::Result<OwnedFd> {
        let (conn, _) = self.listener.accept().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("no console connection from libcontainer: {e}"),
            )
        })?;
        conn.set_nonblocking(false)?;
        conn.set_read_timeout(Some(RECV_TIMEOUT))?;
        recv_fd(&conn)
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Reads the one fd a console socket peer sends (with the name of the
/// terminal as payload, which is not needed).
fn recv_fd(conn: &UnixStream) -> io::Result<OwnedFd> {
    let mut buf = [0u8; 256];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg = loop {
        match recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => break r.map_err(io::Error::from)?,
        }
    };
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: the kernel just installed these fds in this process.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    if fds.len() != 1 {
        return Err(io::Error::other(format!(
            "console socket: expected the terminal master, got {} fds",
            fds.len()
        )));
    }
    Ok(fds.remove(0))
}

impl Monitor {
    /// The console socket's path for a build about to run: opened on
    /// first use, emptied of what an earlier failed build left queued.
    pub(super) fn console_for_build(&mut self) -> io::Result<PathBuf> {
        let console = match &mut self.console {
            Some(c) => c,
            slot @ None => slot.insert(ConsoleSocket::open(&self.state_dir)?),
        };
        console.discard_pending();
        Ok(console.path().to_path_buf())
    }

    /// The master of the terminal the build that just returned opened.
    pub(super) fn received_master(&self) -> io::Result<OwnedFd> {
        match &self.console {
            Some(c) => c.receive_master(),
            None => Err(io::Error::other("no console socket")),
        }
    }
}

/// Sets the size of the terminal `fd` (a master or slave) is on.
pub fn set_terminal_size(fd: BorrowedFd<'_>, size: TerminalSize) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.height,
        ws_col: size.width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the bundle's config.json asks for a terminal
/// (`process.terminal`). An unreadable config says no: libcontainer then
/// reports what is wrong with it.
pub(super) fn wants_terminal(bundle: &Path) -> bool {
    #[derive(Deserialize)]
    struct Config {
        process: Option<Process>,
    }
    #[derive(Deserialize)]
    struct Process {
        terminal: Option<bool>,
    }
    fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Config>(&b).ok())
        .and_then(|c| c.process?.terminal)
        .unwrap_or(false)
}

/// Removes the console socket links the tenant builder left in
/// `container_dir` (one per exec with a terminal).
pub(super) fn remove_tenant_links(container_dir: &Path) {
    let Ok(dir) = fs::read_dir(container_dir) else {
        return;
    };
    for e in dir.flatten() {
        if e.file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(TENANT_LINK_PREFIX))
        {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// A descriptor has something to read now (or is at EOF/error): reading it
/// will not block, even if it is a blocking terminal master.
pub(super) fn readable_now(fd: BorrowedFd<'_>) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut p = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut p, PollTimeout::ZERO), Ok(n) if n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{ControlMessage, sendmsg};
    use std::io::IoSlice;

    #[test]
    fn terminal_flag_of_a_bundle() {
        let d = tempfile::tempdir().unwrap();
        assert!(!wants_terminal(d.path()), "no config.json");
        for (json, want) in [
            (r#"{"process":{"terminal":true,"args":["sh"]},"x":1}"#, true),
            (r#"{"process":{"terminal":false}}"#, false),
            (r#"{"process":{}}"#, false),
            (r#"{"root":{}}"#, false),
            ("not json", false),
        ] {
            fs::write(d.path().join("config.json"), json).unwrap();
            assert_eq!(wants_terminal(d.path()), want, "{json}");
        }
    }

    #[test]
    fn master_received_over_the_console_socket() {
        let d = tempfile::tempdir().unwrap();
        let cs = ConsoleSocket::open(d.path()).unwrap();
        // A stale connection (a failed build) is discarded first.
        drop(UnixStream::connect(cs.path()).unwrap());
        cs.discard_pending();
        let peer = UnixStream::connect(cs.path()).unwrap();
        let pty = nix::pty::openpty(None, None).unwrap();
        let fds = [pty.master.as_raw_fd()];
        sendmsg::<()>(
            peer.as_raw_fd(),
            &[IoSlice::new(b"/dev/ptmx")],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        let master = cs.receive_master().unwrap();
        // It is the same terminal: a size set through it shows on the slave.
        set_terminal_size(
            master.as_fd(),
            TerminalSize {
                width: 91,
                height: 27,
            },
        )
        .unwrap();
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes one winsize to a valid pointer.
        assert_eq!(
            unsafe { libc::ioctl(pty.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) },
            0
        );
        assert_eq!((ws.ws_col, ws.ws_row), (91, 27));
        // A peer that closes without sending: an error, not a hang.
        drop(UnixStream::connect(cs.path()).unwrap());
        assert!(cs.receive_master().is_err());
        // Nothing queued: an error at once.
        assert!(cs.receive_master().is_err());
        let path = cs.path().to_path_buf();
        drop(cs);
        assert!(!path.exists());
    }

    #[test]
    fn tenant_links_removed_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("state.json"), b"{}").unwrap();
        std::os::unix::fs::symlink("/nonexistent", d.path().join("tenant-tty-1f.sock")).unwrap();
        remove_tenant_links(d.path());
        let left: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["state.json"]);
    }
}
