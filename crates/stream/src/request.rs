//! The CRI requests a streaming URL is issued for (the fields of CRI's
//! ExecRequest, AttachRequest and PortForwardRequest that matter here;
//! berthd converts), and their validation as the kubelet's server does it.

use crate::error::RequestError;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecRequest {
    pub container_id: String,
    pub cmd: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttachRequest {
    pub container_id: String,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortForwardRequest {
    pub pod_sandbox_id: String,
    /// Only used by WebSocket clients (SPDY clients name the port per
    /// stream); CRI's int32 ports, checked by berthd to be 1..=65535.
    pub ports: Vec<u16>,
}

/// Which streams a remote-command session carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamFlags {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

fn validate_streams(
    container_id: &str,
    flags: StreamFlags,
    verb: &str,
) -> Result<(), RequestError> {
    if container_id.is_empty() {
        return Err(RequestError::InvalidArgument(
            "missing required container_id".into(),
        ));
    }
    if flags.tty && flags.stderr {
        // A terminal multiplexes stdout and stderr into one stream.
        return Err(RequestError::InvalidArgument(
            "tty and stderr cannot both be true".into(),
        ));
    }
    if !flags.stdin && !flags.stdout && !flags.stderr {
        return Err(RequestError::InvalidArgument(format!(
            "one of stdin, stdout, or stderr must be set for {verb}"
        )));
    }
    Ok(())
}

impl ExecRequest {
    pub(crate) fn flags(&self) -> StreamFlags {
        StreamFlags {
            stdin: self.stdin,
            stdout: self.stdout,
            stderr: self.stderr,
            tty: self.tty,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), RequestError> {
        if self.cmd.is_empty() {
            return Err(RequestError::InvalidArgument(
                "cmd must not be empty".into(),
            ));
        }
        validate_streams(&self.container_id, self.flags(), "exec")
    }
}

impl AttachRequest {
    pub(crate) fn flags(&self) -> StreamFlags {
        StreamFlags {
            stdin: self.stdin,
            stdout: self.stdout,
            stderr: self.stderr,
            tty: self.tty,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), RequestError> {
        validate_streams(&self.container_id, self.flags(), "attach")
    }
}

impl PortForwardRequest {
    pub(crate) fn validate(&self) -> Result<(), RequestError> {
        if self.pod_sandbox_id.is_empty() {
            return Err(RequestError::InvalidArgument(
                "missing required pod_sandbox_id".into(),
            ));
        }
        if self.ports.contains(&0) {
            return Err(RequestError::InvalidArgument("port 0 is not valid".into()));
        }
        Ok(())
    }
}
