//! Container events pushed to subscribed connections (`subscribe`), so
//! berthd keeps its records current without asking on every list.
//!
//! A push never blocks the loop: it is one non-blocking send per
//! subscriber; a subscriber whose socket buffer is full (berthd not
//! reading) or that went away is closed, and berthd subscribes again,
//! getting a fresh snapshot instead of the events it missed.

use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, send};

use super::Monitor;
use super::connections::Mode;
use super::dispatch::{Handover, Reply};
use berth_monitor_protocol::{ContainerState, EventKind, Response};

impl Monitor {
    /// `subscribe`: the state of every container now (after reaping, so
    /// every exit so far is in it); the connection then carries events.
    pub(super) fn subscribe(&mut self) -> Reply {
        self.reap();
        Reply::Handover(Handover {
            resp: Response::List {
                containers: self.states(),
            },
            fds: Vec::new(),
            mode: Mode::Subscribed,
        })
    }

    /// Every container's state, by id.
    pub(super) fn states(&self) -> Vec<ContainerState> {
        let mut states: Vec<_> = self.ctrs.iter().map(|(id, c)| c.state(id)).collect();
        states.sort_by(|a, b| a.id.cmp(&b.id));
        states
    }

    /// Pushes the current state of container `id` as a `kind` event.
    pub(super) fn notify(&mut self, kind: EventKind, id: &str) {
        if let Some(c) = self.ctrs.get(id) {
            let state = c.state(id);
            self.publish(kind, state);
        }
    }

    /// Sends one event line to every subscriber; closes those it cannot
    /// send the whole line to at once.
    pub(super) fn publish(&mut self, kind: EventKind, container: ContainerState) {
        let subscribers = self.conns.subscribed();
        if subscribers.is_empty() {
            return;
        }
        let Ok(mut line) = serde_json::to_vec(&Response::Event { kind, container }) else {
            return;
        };
        line.push(b'\n');
        for n in subscribers {
            let Some(stream) = self.conns.stream(n) else {
                continue;
            };
            let sent = loop {
                match send(
                    stream.as_raw_fd(),
                    &line,
                    MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                ) {
                    Err(Errno::EINTR) => continue,
                    r => break r,
                }
            };
            if sent != Ok(line.len()) {
                // Full, gone, or a partial line: the subscriber must not
                // read a cut event as a whole one.
                eprintln!(
                    "berth-monitor {}: event subscriber {n} does not keep up: closed",
                    self.pod_id
                );
                self.conns.take(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    use std::path::PathBuf;

    use super::*;
    use berth_monitor_protocol::{ExitRecord, SOCKET_NAME, Status};

    fn state(id: &str) -> ContainerState {
        ContainerState {
            id: id.into(),
            status: Status::Exited,
            pid: 42,
            created_at: 1,
            started_at: 2,
            exit: Some(ExitRecord {
                exit_code: 137,
                signal: 9,
                finished_at: 3,
                oom_killed: true,
            }),
            log_path: PathBuf::from("/l"),
        }
    }

    /// Over the socket: the snapshot, then events; requests sent on the
    /// subscription are not answered.
    #[test]
    fn subscriber_gets_a_snapshot_then_events() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Monitor::new("test", &dir.path().join("state")).unwrap();
        let mut client = UnixStream::connect(dir.path().join("state").join(SOCKET_NAME)).unwrap();
        m.conns.accept(&m.listener);
        client.write_all(b"{\"op\":\"subscribe\"}\n").unwrap();
        m.serve_conn(0);
        let mut r = BufReader::new(client.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert_eq!(
            serde_json::from_str::<Response>(&line).unwrap(),
            Response::List { containers: vec![] }
        );
        assert_eq!(m.conns.subscribed(), vec![0]);
        client.write_all(b"{\"op\":\"hello\"}\n").unwrap();
        m.serve_conn(0);
        m.publish(EventKind::Exited, state("c1"));
        line.clear();
        r.read_line(&mut line).unwrap();
        assert_eq!(
            serde_json::from_str::<Response>(&line).unwrap(),
            Response::Event {
                kind: EventKind::Exited,
                container: state("c1"),
            }
        );
        // The subscriber closes: it is dropped when the loop sees it.
        drop((r, client));
        m.serve_conn(0);
        assert!(m.conns.subscribed().is_empty());
    }

    /// A subscriber that never reads costs the monitor nothing: its
    /// buffer fills, it is closed, and publishing never blocks.
    #[test]
    fn a_subscriber_that_does_not_read_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Monitor::new("test", &dir.path().join("state")).unwrap();
        let mut client = UnixStream::connect(dir.path().join("state").join(SOCKET_NAME)).unwrap();
        m.conns.accept(&m.listener);
        client.write_all(b"{\"op\":\"subscribe\"}\n").unwrap();
        m.serve_conn(0);
        let mut pushed = 0;
        while !m.conns.subscribed().is_empty() {
            m.publish(EventKind::Started, state("c1"));
            pushed += 1;
            assert!(pushed < 1_000_000, "never dropped");
        }
        assert_eq!(m.conns.len(), 0);
        drop(client);
    }
}
