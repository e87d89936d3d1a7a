//! A SPDY/3.1 echo server on raw TCP (no HTTP upgrade): for each stream it
//! checks the headers the Go interop client sends, replies, and echoes the
//! bytes back inverted until the client's FIN. `tests/go_interop.rs` runs it
//! against moby/spdystream; by hand:
//! `cargo run -p berth-spdy --example echo_server -- 127.0.0.1:7000 [deflate]`
//! ("deflate": compress our header blocks instead of sending them stored).

use berth_spdy::{Config, Connection, Headers, IncomingStream, RstStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::main]
#[allow(dead_code)] // The interop test uses `serve` only.
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or("127.0.0.1:0".into());
    let config = Config {
        compress_headers: args.next().as_deref() == Some("deflate"),
        ..Config::default()
    };
    let listener = TcpListener::bind(addr).await?;
    println!("listening on {}", listener.local_addr()?);
    serve(listener, config).await
}

pub async fn serve(listener: TcpListener, config: Config) -> std::io::Result<()> {
    loop {
        let (socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        let config = config.clone();
        tokio::spawn(async move {
            let connection = Connection::server(socket, config);
            while let Some(incoming) = connection.accept().await {
                tokio::spawn(echo(incoming));
            }
            eprintln!("connection ended: {}", connection.closed().await);
        });
    }
}

async fn echo(incoming: IncomingStream) {
    // What spdystream puts on the wire for http.Header{"Multi": {"a", "b"}}.
    let headers = incoming.headers();
    if headers.get("name").is_none() || headers.get_all("multi") != ["a", "b"] {
        eprintln!("stream {}: unexpected headers {headers:?}", incoming.id());
        incoming.reset(RstStatus::PROTOCOL_ERROR);
        return;
    }
    let Ok(stream) = incoming.reply(Headers::new()) else {
        return;
    };
    let (mut reader, mut writer) = stream.into_split();
    let mut buf = vec![0; 32 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                buf[..n].iter_mut().for_each(|b| *b = !*b);
                if writer.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            Err(err) => {
                eprintln!("stream {}: {err}", reader.id());
                return;
            }
        }
    }
    let _ = writer.shutdown().await;
}
