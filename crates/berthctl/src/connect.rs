//! A gRPC channel to berthd's unix socket.

use std::path::PathBuf;

use anyhow::{Context, bail};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

/// `unix:///path` or a plain absolute path.
pub fn socket_path(endpoint: &str) -> anyhow::Result<PathBuf> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    if !path.starts_with('/') {
        bail!(
            "endpoint {endpoint:?}: only unix sockets are supported (unix:///run/berth/berth.sock)"
        );
    }
    Ok(PathBuf::from(path))
}

pub async fn channel(endpoint: &str) -> anyhow::Result<Channel> {
    let socket = socket_path(endpoint)?;
    let shown = socket.display().to_string();
    // The URI is required by tonic but unused: the connector dials the socket.
    Endpoint::try_from("http://berth.invalid")?
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .with_context(|| format!("cannot connect to berthd at {shown} (is it running? --endpoint)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            socket_path("unix:///run/berth/berth.sock").unwrap(),
            PathBuf::from("/run/berth/berth.sock")
        );
        assert_eq!(
            socket_path("/tmp/b.sock").unwrap(),
            PathBuf::from("/tmp/b.sock")
        );
        assert!(socket_path("tcp://127.0.0.1:1").is_err());
        assert!(socket_path("unix://relative.sock").is_err());
    }
}
