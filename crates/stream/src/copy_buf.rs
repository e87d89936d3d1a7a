//! The buffer of a copy loop (exec and attach output and input, port-forward
//! in both directions): small while a stream trickles, large while it flows.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes a trickling stream is read with: what an idle or interactive
/// session holds, as most do. A few hundred idle sessions then cost a few
/// KiB each in buffers.
const SMALL: usize = 1024;

/// Bytes a flowing stream is read with. Large reads matter for pipes:
/// a writer holds the pipe's mutex while it copies up to the pipe's size,
/// and 32 KiB reads of a 1 MiB pipe spent a quarter of berthd's CPU
/// spinning on it (`perf`, exec of `dd bs=1M`). One read becomes one SPDY
/// DATA frame or WebSocket message.
const LARGE: usize = 256 * 1024;

/// Small until a read fills it, then large until a read returns less than
/// the small size, then small again.
pub struct CopyBuf(Vec<u8>);

impl Default for CopyBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl CopyBuf {
    pub fn new() -> Self {
        Self(vec![0; SMALL])
    }

    /// One read; an empty slice at EOF.
    pub async fn read_from(&mut self, from: &mut (impl AsyncRead + Unpin)) -> io::Result<&[u8]> {
        let n = from.read(&mut self.0).await?;
        let len = self.0.len();
        if n == len && len < LARGE {
            // The stream flows: read it in large pieces from now on. The
            // bytes read stay at the front.
            self.0.resize(LARGE, 0);
        } else if n < SMALL && len > SMALL {
            // It trickles again: give the large buffer back (after this
            // chunk is used; its bytes fit the small one).
            let mut small = vec![0; SMALL];
            small[..n].copy_from_slice(&self.0[..n]);
            self.0 = small;
        }
        Ok(&self.0[..n])
    }

    /// The buffer's current size (tests).
    pub fn capacity(&self) -> usize {
        self.0.len()
    }
}

/// Which side of a [`copy`] failed: callers treat a reader's failure and
/// a writer's going away differently.
#[derive(Debug)]
pub enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

impl From<CopyError> for io::Error {
    fn from(e: CopyError) -> io::Error {
        match e {
            CopyError::Read(e) | CopyError::Write(e) => e,
        }
    }
}

/// Copies `from` to `to` through a [`CopyBuf`] until `from`'s EOF; the
/// bytes copied. Every streaming copy loop (exec and attach stdio,
/// port-forward both ways) is this one.
pub async fn copy(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
) -> Result<u64, CopyError> {
    let mut buf = CopyBuf::new();
    let mut copied = 0;
    loop {
        let chunk = buf.read_from(from).await.map_err(CopyError::Read)?;
        if chunk.is_empty() {
            return Ok(copied);
        }
        to.write_all(chunk).await.map_err(CopyError::Write)?;
        copied += chunk.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn grows_while_it_flows_and_shrinks_when_it_trickles() {
        let data = vec![7u8; 3 * LARGE];
        let mut from: &[u8] = &data;
        let mut buf = CopyBuf::new();
        assert_eq!(buf.read_from(&mut from).await.unwrap().len(), SMALL);
        assert_eq!(buf.capacity(), LARGE, "a full small read grows it");
        assert_eq!(buf.read_from(&mut from).await.unwrap().len(), LARGE);
        let mut few: &[u8] = b"abc";
        assert_eq!(buf.read_from(&mut few).await.unwrap(), b"abc");
        assert_eq!(buf.capacity(), SMALL, "a short read shrinks it");
        assert!(buf.read_from(&mut few).await.unwrap().is_empty(), "EOF");
    }
}
