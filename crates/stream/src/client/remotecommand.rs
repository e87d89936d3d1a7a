//! Remote command (exec/attach) clients: open the streams the request asked
//! for, hand them to the caller, and read the outcome off the error stream.

use std::io;

use berth_spdy::{Connection, Headers, Stream};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{ClientConfig, ClientError, RemoteCommandOptions, Transport, dial};
use crate::remotecommand::protocol::{SPDY_PROTOCOLS, Version};
use crate::remotecommand::websocket::framing;
use crate::remotecommand::{Status, websocket::PROTOCOLS as WS_PROTOCOLS};
use crate::runtime::{Disconnected, TerminalSize};
use crate::websocket::{self as ws, Setup};

type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Largest WebSocket message the client accepts.
const CLIENT_MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// A running remote command. Take the streams out, use them, then await
/// [`status`](Self::status).
pub struct RemoteCommand {
    /// Shut it down to send EOF (SPDY FIN; v5 WebSocket close signal).
    pub stdin: Option<Writer>,
    pub stdout: Option<Reader>,
    pub stderr: Option<Reader>,
    pub resize: Option<ResizeSender>,
    /// The negotiated subprotocol.
    pub protocol: String,
    error: Reader,
    version: Version,
    _session: Box<dyn Send>,
}

/// Writes terminal sizes as client-go does (one JSON object a line).
pub struct ResizeSender(Writer);

impl ResizeSender {
    pub async fn send(&mut self, size: TerminalSize) -> io::Result<()> {
        let mut line = serde_json::to_vec(&size).expect("TerminalSize serializes");
        line.push(b'\n');
        self.0.write_all(&line).await?;
        self.0.flush().await
    }
}

impl RemoteCommand {
    /// The command's exit code (0 on success), or what failed remotely.
    pub async fn status(mut self) -> Result<i32, ClientError> {
        let mut report = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match self.error.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => report.extend_from_slice(&buf[..n]),
                // A Go server (kubelet's, containerd's) resets every stream
                // as it closes the session right after writing the status:
                // the status is whole by then.
                Err(_) if !report.is_empty() => break,
                Err(e) => return Err(e.into()),
            }
        }
        parse_status(&report, self.version)
    }
}

fn parse_status(report: &[u8], version: Version) -> Result<i32, ClientError> {
    if !version.json_status() {
        return match report.is_empty() {
            true => Ok(0),
            false => Err(ClientError::Remote(
                String::from_utf8_lossy(report).into_owned(),
            )),
        };
    }
    if report.is_empty() {
        return Err(ClientError::Protocol(
            "the error stream ended without a status".into(),
        ));
    }
    let status: Status = serde_json::from_slice(report)
        .map_err(|err| ClientError::Protocol(format!("bad status {err}")))?;
    if status.status == "Success" {
        return Ok(0);
    }
    if status.reason.as_deref() == Some("NonZeroExitCode")
        && let Some(code) = status
            .details
            .iter()
            .flat_map(|d| &d.causes)
            .find(|c| c.reason.as_deref() == Some("ExitCode"))
            .and_then(|c| c.message.as_deref()?.parse().ok())
    {
        return Ok(code);
    }
    Err(ClientError::Remote(status.message.unwrap_or_default()))
}

/// Connects to an exec or attach URL.
pub async fn remote_command(
    url: &str,
    config: &ClientConfig,
    options: &RemoteCommandOptions,
) -> Result<RemoteCommand, ClientError> {
    match options.transport {
        Transport::Spdy => spdy(url, config, options).await,
        Transport::WebSocket => websocket(url, config, options).await,
    }
}

fn offered(options: &RemoteCommandOptions, default: &[&str]) -> Vec<String> {
    options
        .protocols
        .clone()
        .unwrap_or_else(|| default.iter().map(|p| p.to_string()).collect())
}

async fn spdy(
    url: &str,
    config: &ClientConfig,
    options: &RemoteCommandOptions,
) -> Result<RemoteCommand, ClientError> {
    let protocols = offered(options, SPDY_PROTOCOLS);
    let (upgraded, protocol) = dial::spdy_upgrade(url, config, &protocols).await?;
    let version = Version::from_spdy(&protocol).ok_or_else(|| {
        ClientError::Protocol(format!("server chose unknown protocol {protocol:?}"))
    })?;
    let conn = Connection::client(TokioIo::new(upgraded), berth_spdy::Config::default());
    let open = |stream_type: &str| -> Result<Stream, ClientError> {
        let mut headers = Headers::new();
        headers.insert("streamType", stream_type);
        Ok(conn.open_stream(headers)?)
    };
    // client-go's order: error first, then stdin, stdout, stderr, resize.
    let mut keep: Vec<Box<dyn Send>> = Vec::new();
    let (error, error_writer) = open("error")?.into_split();
    keep.push(Box::new(error_writer));
    let mut stdin = None;
    if options.stdin {
        let (reader, writer) = open("stdin")?.into_split();
        keep.push(Box::new(reader));
        stdin = Some(Box::new(writer) as Writer);
    }
    let mut output = |wanted: bool, name: &str| -> Result<Option<Reader>, ClientError> {
        if !wanted {
            return Ok(None);
        }
        let (reader, writer) = open(name)?.into_split();
        keep.push(Box::new(writer));
        Ok(Some(Box::new(reader) as Reader))
    };
    let stdout = output(options.stdout, "stdout")?;
    let stderr = output(options.stderr && !options.tty, "stderr")?;
    let mut resize = None;
    if options.tty && version.supports_resize() {
        let (reader, writer) = open("resize")?.into_split();
        keep.push(Box::new(reader));
        resize = Some(ResizeSender(Box::new(writer)));
    }
    keep.push(Box::new(conn));
    Ok(RemoteCommand {
        stdin,
        stdout,
        stderr,
        resize,
        protocol,
        error: Box::new(error),
        version,
        _session: Box::new(keep),
    })
}

async fn websocket(
    url: &str,
    config: &ClientConfig,
    options: &RemoteCommandOptions,
) -> Result<RemoteCommand, ClientError> {
    let default: Vec<&str> = WS_PROTOCOLS
        .iter()
        .copied()
        .filter(|p| p.starts_with("v"))
        .collect();
    let protocols = offered(options, &default);
    let (socket, protocol) = dial::websocket(url, config, &protocols, CLIENT_MAX_MESSAGE).await?;
    let (framing, version) = framing(&protocol);
    let (trigger, _disconnected): (_, Disconnected) = Disconnected::new();
    let setup = Setup {
        framing,
        // From the server: stdout, stderr, error.
        readable: vec![false, true, true, true, false],
        max_message: CLIENT_MAX_MESSAGE,
        idle_timeout: std::time::Duration::from_secs(24 * 3600),
    };
    let mut channels = ws::start(socket, setup, trigger);
    let stdout = channels.readers[1].take().filter(|_| options.stdout);
    let stderr = channels.readers[2]
        .take()
        .filter(|_| options.stderr && !options.tty);
    let error = channels.readers[3]
        .take()
        .expect("the error channel is read");
    let stdin = options
        .stdin
        .then(|| Box::new(channels.client_writer(0)) as Writer);
    let resize = options
        .tty
        .then(|| ResizeSender(Box::new(channels.client_writer(4))));
    Ok(RemoteCommand {
        stdin,
        stdout: stdout.map(|r| Box::new(r) as Reader),
        stderr: stderr.map(|r| Box::new(r) as Reader),
        resize,
        protocol,
        error: Box::new(error),
        version,
        _session: Box::new(channels),
    })
}
