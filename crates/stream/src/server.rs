//! The server: listener, accept loop, TLS, the URLs it issues, and the
//! state every connection shares.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::config::StreamingConfig;
use crate::error::{RequestError, StartError};
use crate::request::{AttachRequest, ExecRequest, PortForwardRequest};
use crate::request_cache::{CachedRequest, RequestCache};
use crate::runtime::StreamRuntime;
use crate::{http, tls};

/// A client has this long to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// And this long to finish a TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// What every connection and session of a server shares.
pub(crate) struct Shared {
    pub runtime: Arc<dyn StreamRuntime>,
    pub config: StreamingConfig,
    pub cache: RequestCache,
    sessions: AtomicUsize,
    shutdown: watch::Receiver<bool>,
}

impl Shared {
    /// Resolves when the server shuts down.
    pub async fn shutting_down(&self) {
        let mut shutdown = self.shutdown.clone();
        let _ = shutdown.wait_for(|down| *down).await;
    }
}

/// Counts a live upgraded session while it exists.
pub(crate) struct SessionGuard(Arc<Shared>);

impl SessionGuard {
    pub fn new(shared: Arc<Shared>) -> Self {
        shared.sessions.fetch_add(1, Ordering::Relaxed);
        Self(shared)
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

/// berthd's streaming server. Dropping it shuts it down.
pub struct StreamingServer {
    shared: Arc<Shared>,
    base_url: String,
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
}

impl StreamingServer {
    /// Binds and starts serving; the returned server issues URLs under
    /// [`base_url`](Self::base_url). Must be called inside a Tokio runtime.
    pub async fn start(
        config: StreamingConfig,
        runtime: Arc<dyn StreamRuntime>,
    ) -> Result<Self, StartError> {
        let acceptor = config.tls.as_ref().map(tls::acceptor).transpose()?;
        let addr = SocketAddr::new(config.address, config.port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        // SocketAddr's Display brackets IPv6 addresses, as URLs want.
        let base_url = format!("{scheme}://{local_addr}");
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            runtime,
            cache: RequestCache::new(config.request_ttl, config.max_pending_requests),
            config,
            sessions: AtomicUsize::new(0),
            shutdown: shutdown_rx,
        });
        tokio::spawn(accept_loop(listener, acceptor, shared.clone()));
        tracing::info!("streaming server listening on {base_url}");
        Ok(Self {
            shared,
            base_url,
            local_addr,
            shutdown,
        })
    }

    /// `http://127.0.0.1:PORT` (or https, with TLS).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL for CRI's ExecResponse.
    pub fn get_exec(&self, req: ExecRequest) -> Result<String, RequestError> {
        req.validate()?;
        self.issue("exec", CachedRequest::Exec(req))
    }

    /// The URL for CRI's AttachResponse.
    pub fn get_attach(&self, req: AttachRequest) -> Result<String, RequestError> {
        req.validate()?;
        self.issue("attach", CachedRequest::Attach(req))
    }

    /// The URL for CRI's PortForwardResponse.
    pub fn get_port_forward(&self, req: PortForwardRequest) -> Result<String, RequestError> {
        req.validate()?;
        self.issue("portforward", CachedRequest::PortForward(req))
    }

    fn issue(&self, kind: &str, request: CachedRequest) -> Result<String, RequestError> {
        let token = self.shared.cache.insert(request)?;
        Ok(format!("{}/{kind}/{token}", self.base_url))
    }

    /// Upgraded sessions (exec, attach, port-forward connections) open now.
    pub fn active_sessions(&self) -> usize {
        self.shared.sessions.load(Ordering::Relaxed)
    }

    /// URLs issued and not yet used or expired (expired ones are only
    /// swept when the cache is full).
    pub fn pending_requests(&self) -> usize {
        self.shared.cache.pending()
    }

    /// Stops accepting and ends every session (their runtime futures are
    /// dropped).
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }
}

impl Drop for StreamingServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn accept_loop(listener: TcpListener, acceptor: Option<TlsAcceptor>, shared: Arc<Shared>) {
    // Connections not yet upgraded die with the loop; upgraded sessions
    // watch the shutdown signal themselves.
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shared.shutting_down() => break,
        };
        while connections.try_join_next().is_some() {}
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("streaming server accept: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        connections.spawn(serve_connection(
            socket,
            acceptor.clone(),
            shared.clone(),
            peer,
        ));
    }
}

async fn serve_connection(
    socket: TcpStream,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    peer: SocketAddr,
) {
    match acceptor {
        None => serve_http(socket, shared).await,
        Some(acceptor) => {
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
                Ok(Ok(tls)) => serve_http(tls, shared).await,
                Ok(Err(err)) => tracing::debug!("streaming TLS handshake with {peer}: {err}"),
                Err(_) => tracing::debug!("streaming TLS handshake with {peer} timed out"),
            }
        }
    }
}

async fn serve_http<IO>(io: IO, shared: Arc<Shared>)
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let service = service_fn(move |req| http::handle(shared.clone(), req));
    let result = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
        .await;
    if let Err(err) = result {
        tracing::debug!("streaming connection: {err}");
    }
}
