//! SPDY/3.1 (the draft at chromium.org/spdy/spdy-protocol/spdy-protocol-draft3-1)
//! framing and connections, as the Kubernetes streaming clients speak it:
//! kubelet, kubectl and crictl use k8s.io/apimachinery's httpstream/spdy,
//! which sits on github.com/moby/spdystream. berthd's streaming server does
//! the HTTP/1.1 `Upgrade: SPDY/3.1` handshake and hands the upgraded I/O to
//! [`Connection::server`].
//!
//! Why our own crate: no maintained Rust SPDY implementation exists. The
//! ones on crates.io are new and single-purpose (`spdy-mux` is a client
//! multiplexer over WebSocket transports; `spdystream-rs` 0.1.2 is young and
//! unvetted), and none offers a server side with bounded buffering. SPDY is
//! small enough to own: this crate is the framing, the zlib header blocks
//! and flow control, nothing more.
//!
//! What spdystream does on the wire, and so what this crate copes with:
//! - it never sends WINDOW_UPDATE and ignores the ones it gets, and writes
//!   each `Write` as one DATA frame (up to 16 MiB). So windows towards a peer
//!   are only enforced once it shows it speaks flow control (a SETTINGS
//!   INITIAL_WINDOW_SIZE or a WINDOW_UPDATE, see [`PeerFlowControl`]), and
//!   what we receive is bounded by reading the socket no faster than streams
//!   are read: a peer that ignores our windows meets TCP backpressure.
//! - it drops DATA for a stream it accepted but has not replied to, so a
//!   stream is only writable after [`IncomingStream::reply`].
//! - it echoes PINGs of the other side's parity and ignores SETTINGS.
//! - its inflater (Go's compress/flate) hands out a header block only once
//!   the SYNC_FLUSH's empty stored block arrives; we end every block so.
//!
//! Memory: zlib-rs's deflate state is about 370 KiB, its inflate state
//! about 46 KiB. We must inflate the peer's blocks, but our own (a few
//! bytes each, mostly SYN_REPLYs) go by default as zlib *stored* blocks:
//! the same zlib stream with the SPDY dictionary declared, readable by any
//! inflater, and no deflate state ([`Config::compress_headers`] turns real
//! compression on). flate2's zlib-rs backend supports preset dictionaries
//! both ways (`Compress::set_dictionary`, `Decompress::set_dictionary`).

mod connection;
mod error;
mod flow;
pub mod frame;
pub mod header_block;
mod reader;
mod state;
mod stream;
mod writer;

pub use connection::{Config, Connection};
pub use error::{Error, FrameError};
pub use flow::PeerFlowControl;
pub use frame::{GoAwayStatus, RstStatus};
pub use header_block::Headers;
pub use stream::{IncomingStream, Stream, StreamReader, StreamWriter};
