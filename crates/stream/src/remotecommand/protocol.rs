//! The remote-command protocol versions and what differs between them: which
//! streams a SPDY client opens, how the outcome is written to the error
//! stream (plain text before v4, a JSON `metav1.Status` from v4 on), and the
//! terminal resize messages.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

use crate::runtime::{RuntimeError, TerminalSize};

/// SPDY `X-Stream-Protocol-Version` values, our preference first.
/// v5 over SPDY behaves as v4 (its close signal is WebSocket-only; SPDY
/// half-closes stdin with FIN): client-go offers v5 first over SPDY too.
pub(crate) const SPDY_PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V1,
    V2,
    V3,
    V4,
    V5,
}

impl Version {
    /// The version a SPDY protocol name stands for; no negotiation at all
    /// (Kubernetes 1.0 clients) means v1.
    pub fn from_spdy(protocol: &str) -> Option<Self> {
        Some(match protocol {
            "v5.channel.k8s.io" => Version::V5,
            "v4.channel.k8s.io" => Version::V4,
            "v3.channel.k8s.io" => Version::V3,
            "v2.channel.k8s.io" => Version::V2,
            "channel.k8s.io" | "" => Version::V1,
            _ => return None,
        })
    }

    /// v3 added the resize stream.
    pub fn supports_resize(self) -> bool {
        self >= Version::V3
    }

    /// v4 writes a JSON Status (with the exit code) on the error stream.
    pub fn json_status(self) -> bool {
        self >= Version::V4
    }
}

/// How a session ended, as the error stream reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    ExitCode(i32),
    /// The runtime failed; the message says what was being done.
    Failed(String),
}

impl Outcome {
    pub fn of_exec(result: Result<i32, RuntimeError>) -> Self {
        match result {
            Ok(0) => Outcome::Success,
            Ok(code) => Outcome::ExitCode(code),
            Err(err) => Outcome::Failed(format!("error executing command in container: {err}")),
        }
    }

    pub fn of_attach(result: Result<(), RuntimeError>) -> Self {
        match result {
            Ok(()) => Outcome::Success,
            Err(err) => Outcome::Failed(format!("error attaching to container: {err}")),
        }
    }

    /// What goes on the error stream; nothing for a v1-v3 success.
    pub fn encode(&self, version: Version) -> Option<Vec<u8>> {
        if version.json_status() {
            return Some(serde_json::to_vec(&self.status()).expect("Status serializes"));
        }
        match self {
            Outcome::Success => None,
            _ => Some(self.status().message.unwrap_or_default().into_bytes()),
        }
    }

    fn status(&self) -> Status {
        match self {
            Outcome::Success => Status {
                status: "Success".into(),
                ..Status::default()
            },
            Outcome::ExitCode(code) => Status {
                status: "Failure".into(),
                message: Some(format!(
                    "command terminated with non-zero exit code: exit status {code}"
                )),
                reason: Some("NonZeroExitCode".into()),
                details: Some(StatusDetails {
                    causes: vec![StatusCause {
                        reason: Some("ExitCode".into()),
                        message: Some(code.to_string()),
                    }],
                }),
                code: None,
                ..Status::default()
            },
            Outcome::Failed(message) => Status {
                status: "Failure".into(),
                message: Some(format!("Internal error occurred: {message}")),
                reason: Some("InternalError".into()),
                details: Some(StatusDetails {
                    causes: vec![StatusCause {
                        reason: None,
                        message: Some(message.clone()),
                    }],
                }),
                code: Some(500),
                ..Status::default()
            },
        }
    }
}

/// The fields of metav1.Status the remote-command clients read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusDetails {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
}

/// metav1.StatusCause: its `Type` field is `reason` in JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCause {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The longest resize message kept while waiting for its end; a client
/// sending more garbage than this loses its resize stream.
const MAX_RESIZE_PENDING: usize = 4096;

/// Decodes the JSON sizes a client writes on its resize stream (one after
/// another, newline-separated as Go's json.Encoder writes them) until the
/// stream ends, the receiver is gone or the JSON is bad.
pub(crate) async fn decode_resizes(
    mut stream: impl AsyncRead + Unpin,
    sizes: mpsc::Sender<TerminalSize>,
) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        let mut docs = serde_json::Deserializer::from_slice(&pending).into_iter::<TerminalSize>();
        let mut consumed = 0;
        loop {
            match docs.next() {
                Some(Ok(size)) => {
                    consumed = docs.byte_offset();
                    if sizes.send(size).await.is_err() {
                        return;
                    }
                }
                Some(Err(err)) if err.is_eof() => break,
                Some(Err(_)) => return,
                None => {
                    consumed = docs.byte_offset();
                    break;
                }
            }
        }
        pending.drain(..consumed);
        if pending.len() > MAX_RESIZE_PENDING {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_exit_code_status() {
        let json = String::from_utf8(Outcome::ExitCode(3).encode(Version::V4).unwrap()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["status"], "Failure");
        assert_eq!(value["reason"], "NonZeroExitCode");
        assert_eq!(value["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(value["details"]["causes"][0]["message"], "3");
        let ok = Outcome::Success.encode(Version::V4).unwrap();
        assert_eq!(ok, br#"{"metadata":{},"status":"Success"}"#);
    }

    #[test]
    fn pre_v4_status_is_text_and_only_on_failure() {
        assert_eq!(Outcome::Success.encode(Version::V3), None);
        let text = Outcome::Failed("boom".into()).encode(Version::V2).unwrap();
        assert_eq!(text, b"Internal error occurred: boom");
    }

    #[tokio::test]
    async fn resizes_split_across_reads() {
        let (tx, mut rx) = mpsc::channel(8);
        let (mut client, server) = tokio::io::duplex(64);
        let task = tokio::spawn(decode_resizes(server, tx));
        use tokio::io::AsyncWriteExt;
        client.write_all(b"{\"Width\":80,\"Hei").await.unwrap();
        client.flush().await.unwrap();
        tokio::task::yield_now().await;
        client
            .write_all(b"ght\":24}\n{\"Width\":100,\"Height\":50}\n")
            .await
            .unwrap();
        drop(client);
        assert_eq!(
            rx.recv().await,
            Some(TerminalSize {
                width: 80,
                height: 24
            })
        );
        assert_eq!(
            rx.recv().await,
            Some(TerminalSize {
                width: 100,
                height: 50
            })
        );
        assert_eq!(rx.recv().await, None);
        task.await.unwrap();
    }
}
