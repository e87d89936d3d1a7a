//! `berthctl image import`: streams an archive to berthd's `ImportImages`.
//! A directory (an OCI image layout) is tarred on the fly, so berthd always
//! receives one archive and berthctl needs no space of its own.

use std::io::{self, Read, Write};
use std::path::Path;

use anyhow::{Context, bail};
use berth_api::admin::v1::admin_client::AdminClient;
use berth_api::admin::v1::{ImportImagesRequest, ImportOptions};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Bytes per message (the server accepts up to 4 MiB).
const CHUNK: usize = 1 << 20;

pub async fn run(endpoint: &str, path: &Path, name: Option<String>) -> anyhow::Result<()> {
    let source = Source::open(path)?;
    let mut client = AdminClient::new(super::connect::channel(endpoint).await?);
    let (tx, rx) = mpsc::channel::<ImportImagesRequest>(4);
    // Reading (and tarring) is blocking work: its own thread, feeding the stream.
    let reader = tokio::task::spawn_blocking(move || source.send(tx, name.unwrap_or_default()));
    let response = client.import_images(ReceiverStream::new(rx)).await;
    let sent = reader.await.context("the archive reader failed")?;
    // berthd's answer first: when it refuses early, our read stops for that reason.
    let response = response.map_err(|s| {
        anyhow::anyhow!(
            "berthd refused the import: {} ({:?})",
            s.message(),
            s.code()
        )
    })?;
    let sent = sent.with_context(|| format!("reading {}", path.display()))?;
    let images = response.into_inner().images;
    println!("imported {} image(s) ({sent} bytes):", images.len());
    for i in images {
        let tags = if i.repo_tags.is_empty() {
            "<none>".to_string()
        } else {
            i.repo_tags.join(", ")
        };
        println!("{}  {}  {} bytes", i.id, tags, i.size);
    }
    Ok(())
}

enum Source {
    File(std::fs::File),
    Stdin,
    Dir(std::path::PathBuf),
}

impl Source {
    fn open(path: &Path) -> anyhow::Result<Source> {
        if path == Path::new("-") {
            return Ok(Source::Stdin);
        }
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_dir() {
            if !path.join("oci-layout").is_file() || !path.join("index.json").is_file() {
                bail!(
                    "{} is a directory but not an OCI image layout (no oci-layout and index.json)",
                    path.display()
                );
            }
            return Ok(Source::Dir(path.to_path_buf()));
        }
        Ok(Source::File(std::fs::File::open(path).with_context(
            || format!("cannot open {}", path.display()),
        )?))
    }

    /// Sends the archive's bytes, options in the first message; returns the byte count.
    fn send(self, tx: mpsc::Sender<ImportImagesRequest>, name: String) -> io::Result<u64> {
        let mut w = ChunkWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
            options: Some(ImportOptions { name }),
            sent: 0,
        };
        match self {
            Source::File(mut f) => copy(&mut f, &mut w)?,
            Source::Stdin => copy(&mut io::stdin().lock(), &mut w)?,
            Source::Dir(dir) => {
                let mut b = tar::Builder::new(&mut w);
                // The layout's own symlinks stay symlinks (berthd resolves them inside the archive).
                b.follow_symlinks(false);
                b.append_dir_all(".", &dir)?;
                b.finish()?;
            }
        }
        w.flush()?;
        Ok(w.sent)
    }
}

fn copy(r: &mut impl Read, w: &mut ChunkWriter) -> io::Result<()> {
    io::copy(r, w).map(|_| ())
}

/// Cuts what is written into messages of [`CHUNK`] bytes.
struct ChunkWriter {
    tx: mpsc::Sender<ImportImagesRequest>,
    buf: Vec<u8>,
    options: Option<ImportOptions>,
    sent: u64,
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() && self.options.is_none() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.sent += chunk.len() as u64;
        let msg = ImportImagesRequest {
            options: self.options.take(),
            chunk,
        };
        // Closed: berthd answered (refused) already; the caller reports its answer.
        self.tx.blocking_send(msg).map_err(|_| {
            io::Error::new(io::ErrorKind::BrokenPipe, "berthd closed the import stream")
        })
    }
}
