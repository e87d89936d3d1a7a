//! A request line to the operation that answers it.

use std::os::fd::OwnedFd;
use std::time::Instant;

use super::Monitor;
use super::connections::Mode;
use super::create::CreateStdin;
use super::error::{Op, OpError};
use super::exec_stream::StreamStdio;
use crate::exec::ExecSpec;
use berth_monitor_protocol::{EventKind, PROTOCOL_VERSION, Request, Response};

/// How a request is answered.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Reply {
    Now(Response),
    /// Later, on the same connection: an exec once it exited, a stop once
    /// the container did.
    Deferred,
    /// Now, with fds; the connection then belongs to a streaming session.
    Handover(Handover),
}

/// An answer that hands stdio fds to the client (one `sendmsg`, see
/// `berth_monitor_protocol::fds`); the monitor closes its copies once sent.
#[derive(Debug)]
pub(super) struct Handover {
    pub resp: Response,
    pub fds: Vec<OwnedFd>,
    /// What the connection is for from then on.
    pub mode: Mode,
}

impl PartialEq for Handover {
    fn eq(&self, o: &Handover) -> bool {
        self.resp == o.resp && self.mode == o.mode && self.fds.len() == o.fds.len()
    }
}

impl Eq for Handover {}

/// Parses one request line (without its newline).
fn parse(line: &[u8]) -> Result<Request, OpError> {
    serde_json::from_slice(line).map_err(|e| OpError::BadRequest(e.to_string()))
}

impl Monitor {
    /// Answers one request line received on connection `conn`; logs how
    /// long it took when timing is on.
    pub(super) fn dispatch(&mut self, conn: u64, line: &[u8]) -> Reply {
        let t0 = self.timing.then(Instant::now);
        let req = parse(line);
        let op = match (&req, t0) {
            (Ok(r), Some(_)) => op_name(r),
            _ => String::new(),
        };
        let reply = req
            .and_then(|req| self.answer(conn, req))
            .unwrap_or_else(|e| Reply::Now(Response::from(&e)));
        if let Some(t0) = t0 {
            eprintln!(
                "berth-monitor {}: timing {op} {} us",
                self.pod_id,
                t0.elapsed().as_micros()
            );
        }
        reply
    }

    fn answer(&mut self, conn: u64, req: Request) -> Result<Reply, OpError> {
        let now = |r: Response| Ok(Reply::Now(r));
        match req {
            Request::Hello => now(Response::Hello {
                version: PROTOCOL_VERSION,
            }),
            Request::Create {
                id,
                bundle,
                log_path,
                stdin,
                stdin_once,
                restore,
            } => {
                let stdio = CreateStdin { stdin, stdin_once };
                let pid = self.create(&id, &bundle, &log_path, stdio, restore)?;
                self.notify(EventKind::Created, &id);
                now(Response::Created { pid })
            }
            Request::Start { id } => {
                self.start(&id)?;
                self.notify(EventKind::Started, &id);
                now(Response::Ok)
            }
            Request::StartAndReport { id } => {
                self.start(&id)?;
                self.notify(EventKind::Started, &id);
                now(Response::State(self.get(&id)?.state(&id)))
            }
            Request::Stop {
                id,
                signal,
                timeout_ms,
                kill_wait_ms,
            } => Ok(
                match self.start_stop(conn, &id, signal, timeout_ms, kill_wait_ms)? {
                    Some(resp) => Reply::Now(resp),
                    None => Reply::Deferred,
                },
            ),
            Request::Kill { id, signal, all } => {
                self.kill(&id, signal, all)?;
                now(Response::Ok)
            }
            Request::State { id } => {
                self.reap();
                now(Response::State(self.get(&id)?.state(&id)))
            }
            Request::List => {
                self.reap();
                now(Response::List {
                    containers: self.states(),
                })
            }
            Request::Delete { id, force } => {
                let last = self.get(&id).map(|c| c.state(&id));
                self.delete(&id, force)?;
                if let Ok(last) = last {
                    self.publish(EventKind::Deleted, last);
                }
                now(Response::Ok)
            }
            Request::ReopenLog { id } => {
                self.get_mut(&id)?
                    .log
                    .reopen()
                    .map_err(|e| Op::ReopenLog.failed(&id, e))?;
                now(Response::Ok)
            }
            Request::Exec {
                id,
                args,
                env,
                cwd,
                timeout_ms,
                max_output,
            } => {
                let spec = ExecSpec {
                    args: &args,
                    env: &env,
                    cwd: cwd.as_deref(),
                };
                self.start_exec(conn, &id, &spec, timeout_ms, max_output)?;
                Ok(Reply::Deferred)
            }
            Request::Update { id, resources } => {
                self.update(&id, resources)?;
                now(Response::Ok)
            }
            Request::Shutdown => {
                self.shutdown = true;
                now(Response::Ok)
            }
            Request::ExecStream {
                id,
                args,
                env,
                cwd,
                tty,
                stdin,
                size,
            } => {
                let spec = ExecSpec {
                    args: &args,
                    env: &env,
                    cwd: cwd.as_deref(),
                };
                let io = StreamStdio { tty, stdin, size };
                self.start_exec_stream(conn, &id, &spec, io)
            }
            Request::Attach { id, stdin } => self.attach(conn, &id, stdin),
            Request::CloseStdin { id } => {
                self.get_mut(&id)?.close_stdin();
                now(Response::Ok)
            }
            Request::Subscribe => Ok(self.subscribe()),
        }
    }
}

/// `op id` of a request, for the timing log.
fn op_name(req: &Request) -> String {
    let (op, id) = match req {
        Request::Hello => ("hello", ""),
        Request::Create { id, .. } => ("create", id.as_str()),
        Request::Start { id } => ("start", id.as_str()),
        Request::StartAndReport { id } => ("start", id.as_str()),
        Request::Stop { id, .. } => ("stop", id.as_str()),
        Request::Kill { id, .. } => ("kill", id.as_str()),
        Request::State { id } => ("state", id.as_str()),
        Request::List => ("list", ""),
        Request::Delete { id, .. } => ("delete", id.as_str()),
        Request::ReopenLog { id } => ("reopen_log", id.as_str()),
        Request::Exec { id, .. } => ("exec", id.as_str()),
        Request::ExecStream { id, .. } => ("exec_stream", id.as_str()),
        Request::Attach { id, .. } => ("attach", id.as_str()),
        Request::CloseStdin { id } => ("close_stdin", id.as_str()),
        Request::Update { id, .. } => ("update", id.as_str()),
        Request::Shutdown => ("shutdown", ""),
        Request::Subscribe => ("subscribe", ""),
    };
    format!("{op} {id}")
}

#[cfg(test)]
mod tests {
    //! Requests that fail before any libcontainer call, on a real (empty)
    //! monitor in a temp dir.

    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;

    use super::*;
    use berth_monitor_protocol::{ErrorCode, SOCKET_NAME};

    fn monitor() -> (tempfile::TempDir, Monitor) {
        let dir = tempfile::tempdir().unwrap();
        let m = Monitor::new("test", &dir.path().join("state")).unwrap();
        (dir, m)
    }

    fn error_of(reply: Reply) -> (ErrorCode, String) {
        match reply {
            Reply::Now(Response::Error(e)) => (e.code, e.message),
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn unparsable_lines_are_bad_requests() {
        let (_d, mut m) = monitor();
        for line in [
            &b"not json"[..],
            br#"{"op":"frobnicate","id":"c1"}"#,
            br#"{"op":"start"}"#,
            br#"{"id":"c1"}"#,
        ] {
            let (code, msg) = error_of(m.dispatch(0, line));
            assert_eq!(code, ErrorCode::BadRequest, "{msg}");
            // What older berthds recognise.
            assert!(msg.starts_with("bad request"), "{msg}");
        }
    }

    #[test]
    fn unknown_containers_are_not_found() {
        let (_d, mut m) = monitor();
        for line in [
            r#"{"op":"start","id":"nope"}"#,
            r#"{"op":"start_and_report","id":"nope"}"#,
            r#"{"op":"state","id":"nope"}"#,
            r#"{"op":"kill","id":"nope","signal":9}"#,
            r#"{"op":"delete","id":"nope","force":true}"#,
            r#"{"op":"reopen_log","id":"nope"}"#,
            r#"{"op":"update","id":"nope","resources":{}}"#,
            r#"{"op":"exec","id":"nope","args":["true"]}"#,
            r#"{"op":"exec_stream","id":"nope","args":["sh"],"tty":true,"stdin":true}"#,
            r#"{"op":"attach","id":"nope","stdin":true}"#,
            r#"{"op":"stop","id":"nope","signal":15,"timeout_ms":0,"kill_wait_ms":0}"#,
        ] {
            let (code, msg) = error_of(m.dispatch(0, line.as_bytes()));
            assert_eq!(code, ErrorCode::NotFound, "{line}: {msg}");
            assert_eq!(msg, "container nope not found");
        }
        // Nothing was left waiting.
        assert_eq!(m.stops.next_deadline(), None);
        assert_eq!(m.execs.next_deadline(), None);
    }

    #[test]
    fn hello_list_and_shutdown() {
        let (_d, mut m) = monitor();
        assert_eq!(
            m.dispatch(0, br#"{"op":"hello"}"#),
            Reply::Now(Response::Hello {
                version: PROTOCOL_VERSION
            })
        );
        assert_eq!(
            m.dispatch(0, br#"{"op":"list"}"#),
            Reply::Now(Response::List { containers: vec![] })
        );
        assert_eq!(
            m.dispatch(0, br#"{"op":"shutdown"}"#),
            Reply::Now(Response::Ok)
        );
        let (code, msg) = error_of(m.dispatch(
            0,
            br#"{"op":"create","id":"c1","bundle":"/nonexistent","log_path":"/nonexistent/log"}"#,
        ));
        assert_eq!(code, ErrorCode::FailedPrecondition, "{msg}");
        assert_eq!(msg, "create container c1: monitor is shutting down");
    }

    /// Fails before libcontainer runs (it must not in this multithreaded
    /// test process): the log's parent is a file.
    #[test]
    fn create_with_an_unopenable_log_is_internal() {
        let (d, mut m) = monitor();
        std::fs::write(d.path().join("file"), b"").unwrap();
        let req = Request::Create {
            id: "c1".into(),
            bundle: d.path().join("bundle"),
            log_path: d.path().join("file/log"),
            stdin: false,
            stdin_once: false,
            restore: None,
        };
        let (code, msg) = error_of(m.dispatch(0, &serde_json::to_vec(&req).unwrap()));
        assert_eq!(code, ErrorCode::Internal, "{msg}");
        assert!(msg.starts_with("create container c1: open log: "), "{msg}");
        assert!(m.ctrs.is_empty());
    }

    /// Over the socket: answers in order, an overlong line cut off.
    #[test]
    fn connection_answers_in_order_and_cuts_overlong_lines() {
        let (d, mut m) = monitor();
        let mut client = UnixStream::connect(d.path().join("state").join(SOCKET_NAME)).unwrap();
        m.conns.accept(&m.listener);
        assert_eq!(m.conns.len(), 1);
        client
            .write_all(b"{\"op\":\"hello\"}\n{\"op\":\"state\",\"id\":\"x\"}\n{\"op\":")
            .unwrap();
        m.serve_conn(0);
        let mut r = BufReader::new(client.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert_eq!(
            serde_json::from_str::<Response>(&line).unwrap(),
            Response::Hello {
                version: PROTOCOL_VERSION
            }
        );
        line.clear();
        r.read_line(&mut line).unwrap();
        let Response::Error(e) = serde_json::from_str::<Response>(&line).unwrap() else {
            panic!("{line}");
        };
        assert_eq!(e.code, ErrorCode::NotFound);
        // The partial line waits; then more than MAX_REQUEST without a
        // newline closes the connection after an error.
        assert_eq!(m.conns.len(), 1);
        let junk = vec![b'x'; super::super::connections::MAX_REQUEST];
        client.write_all(&junk).unwrap();
        while m.conns.len() == 1 {
            m.serve_conn(0);
        }
        line.clear();
        r.read_line(&mut line).unwrap();
        let Response::Error(e) = serde_json::from_str::<Response>(&line).unwrap() else {
            panic!("{line}");
        };
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(
            e.message.starts_with("request longer than"),
            "{}",
            e.message
        );
    }
}
