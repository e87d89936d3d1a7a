//! Connecting to a streaming URL: TCP (TLS for https), then either the
//! HTTP/1.1 SPDY upgrade or the WebSocket handshake.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{CONNECTION, HOST, UPGRADE};
use hyper::upgrade::Upgraded;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{ClientConfig as TlsClientConfig, RootCertStore};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::{ClientConfig, ClientError};
use crate::runtime::AsyncReadWrite;
use crate::spdy_upgrade::PROTOCOL_VERSION_HEADER;

pub(crate) struct Target {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub path_and_query: String,
}

pub(crate) fn parse(url: &str) -> Result<Target, ClientError> {
    let uri: Uri = url.parse().map_err(|_| ClientError::Url(url.into()))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(ClientError::Url(url.into())),
    };
    let host = uri
        .host()
        .ok_or_else(|| ClientError::Url(url.into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let path_and_query = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    Ok(Target {
        tls,
        host,
        port,
        path_and_query,
    })
}

impl Target {
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

async fn connect(
    target: &Target,
    config: &ClientConfig,
) -> Result<Box<dyn AsyncReadWrite>, ClientError> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
    tcp.set_nodelay(true)?;
    if !target.tls {
        return Ok(Box::new(tcp));
    }
    let mut roots = RootCertStore::empty();
    if let Some(ca_file) = &config.tls_ca_file {
        let pem = std::fs::read(ca_file)?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|err| ClientError::Tls(err.to_string()))?;
            roots
                .add(cert)
                .map_err(|err| ClientError::Tls(err.to_string()))?;
        }
    }
    let tls_config = TlsClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(target.host.clone())
        .map_err(|err| ClientError::Tls(err.to_string()))?;
    let stream = TlsConnector::from(Arc::new(tls_config))
        .connect(name, tcp)
        .await?;
    Ok(Box::new(stream))
}

/// POSTs the SPDY upgrade; returns the connection and the negotiated
/// protocol ("" when the server named none).
pub(crate) async fn spdy_upgrade(
    url: &str,
    config: &ClientConfig,
    protocols: &[String],
) -> Result<(Upgraded, String), ClientError> {
    let target = parse(url)?;
    let io = connect(&target, config).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    let mut request = Request::post(target.path_and_query.as_str())
        .header(HOST, target.authority())
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, "SPDY/3.1");
    for protocol in protocols {
        request = request.header(PROTOCOL_VERSION_HEADER, protocol.as_str());
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|err| ClientError::Protocol(err.to_string()))?;
    let response = sender.send_request(request).await?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        return Err(ClientError::Http {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    let protocol = response
        .headers()
        .get(PROTOCOL_VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let upgraded = hyper::upgrade::on(response).await?;
    Ok((upgraded, protocol))
}

/// The WebSocket handshake; returns the socket and the chosen subprotocol.
pub(crate) async fn websocket(
    url: &str,
    config: &ClientConfig,
    protocols: &[String],
    max_message: usize,
) -> Result<(WebSocketStream<Box<dyn AsyncReadWrite>>, String), ClientError> {
    let target = parse(url)?;
    let io = connect(&target, config).await?;
    let scheme = if target.tls { "wss" } else { "ws" };
    let ws_url = format!("{scheme}://{}{}", target.authority(), target.path_and_query);
    let mut request = ws_url.into_client_request()?;
    if !protocols.is_empty() {
        let value = HeaderValue::from_str(&protocols.join(", "))
            .map_err(|err| ClientError::Protocol(err.to_string()))?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", value);
    }
    let config = crate::websocket::socket_config(max_message);
    let (socket, response) =
        match tokio_tungstenite::client_async_with_config(request, io, Some(config)).await {
            Ok(ok) => ok,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                return Err(ClientError::Http { status, body });
            }
            Err(err) => return Err(err.into()),
        };
    let protocol = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Ok((socket, protocol))
}
