//! `--stream-container`: the runtime's own cost of streaming, with no client
//! start-up in any figure. One process holds one gRPC connection and speaks
//! SPDY itself (`berth_stream::client`, the protocol client-go speaks), so
//! what is timed is the runtime: the Exec/PortForward call, the upgrade, the
//! streams, the process start and its exit. crictl's figures
//! (`hack/bench-stream.sh`) include crictl's start (~15 ms) in each sample;
//! these do not. Plain CRI and the standard streaming protocol: it runs
//! unchanged against containerd.
//!
//! Prints one line of key=value pairs (ms; MB = 10^6 bytes):
//! `rtt_med rtt_p90` (exec `true`), `tty_med tty_p90` (exec -it `sh`: time
//! to the prompt's first byte), `cat_mb_s` (exec `dd if=/dev/zero
//! bs=1M` of BYTES read to EOF) and, with `--stream-pod`, `pf_mb_s` (BYTES read to
//! EOF from the pod's port through one port-forward stream).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use berth_api::v1::{ExecRequest, PortForwardRequest};
use berth_e2e::client::CriClient;
use berth_stream::client::{
    ClientConfig, RemoteCommandOptions, SpdyPortForward, Transport, remote_command,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::stats::{ms, stats};

/// Every wait of one sample has this deadline: a hung session fails the run.
const DEADLINE: Duration = Duration::from_secs(60);

pub struct StreamBench<'a> {
    pub container: &'a str,
    pub pod: Option<&'a str>,
    pub port: u16,
    pub bytes: u64,
    pub iterations: usize,
    pub transport: Transport,
}

/// `--stream-sessions N`: opens N idle `exec -i sh` sessions (stdin open,
/// nothing written) over this one gRPC connection, as a kubelet holds its
/// sessions; prints `ready N`, holds them until stdin closes, then ends
/// each (EOF on its stdin: the shell exits) and prints `closed N`. Each
/// crictl process holds two gRPC connections of its own for as long as its
/// session lasts (about 56 KiB of h2 buffers in berthd): these sessions
/// measure the sessions alone.
pub async fn hold_sessions(
    c: &mut CriClient,
    b: &StreamBench<'_>,
    sessions: usize,
) -> anyhow::Result<()> {
    let mut open = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let url = exec_url(c, exec_request_stdin(b.container, &["sh"])).await?;
        let options = RemoteCommandOptions {
            stdin: true,
            ..RemoteCommandOptions::new(b.transport)
        };
        let cmd = deadline("open session", async {
            Ok(remote_command(&url, &ClientConfig::default(), &options).await?)
        })
        .await
        .with_context(|| format!("session {i}"))?;
        open.push(cmd);
    }
    println!("ready {sessions}");
    // Until stdin closes (the caller measures meanwhile).
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink)
    })
    .await??;
    let mut ended = 0;
    for mut cmd in open {
        if let Some(mut w) = cmd.stdin.take() {
            let _ = w.shutdown().await;
        }
        for s in [cmd.stdout.take(), cmd.stderr.take()].into_iter().flatten() {
            tokio::spawn(drain(s));
        }
        if deadline("close session", async { Ok(cmd.status().await?) })
            .await
            .is_ok()
        {
            ended += 1;
        }
    }
    println!("closed {ended}");
    if ended != sessions {
        bail!(
            "{} of {sessions} sessions did not end on EOF",
            sessions - ended
        );
    }
    Ok(())
}

pub async fn run(c: &mut CriClient, b: &StreamBench<'_>) -> anyhow::Result<()> {
    for _ in 0..3 {
        exec_true(c, b).await.context("warm-up exec")?;
    }
    let mut rtt = Vec::with_capacity(b.iterations);
    for _ in 0..b.iterations {
        rtt.push(exec_true(c, b).await?);
    }
    let mut tty = Vec::with_capacity(b.iterations);
    for _ in 0..b.iterations {
        tty.push(tty_first_byte(c, b).await?);
    }
    let cat = exec_cat(c, b).await?;
    let (rtt_med, rtt_p90) = stats(&rtt);
    let (tty_med, tty_p90) = stats(&tty);
    let mut line = format!(
        "rtt_med={rtt_med:.2} rtt_p90={rtt_p90:.2} tty_med={tty_med:.2} tty_p90={tty_p90:.2} cat_mb_s={cat:.1}"
    );
    if let Some(pod) = b.pod {
        let pf = port_forward(c, pod, b).await?;
        line.push_str(&format!(" pf_mb_s={pf:.1}"));
    }
    println!("{line} n={}", b.iterations);
    Ok(())
}

fn exec_request(id: &str, cmd: &[&str], tty: bool) -> ExecRequest {
    ExecRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin: tty,
        stdout: true,
        stderr: !tty,
    }
}

fn exec_request_stdin(id: &str, cmd: &[&str]) -> ExecRequest {
    ExecRequest {
        stdin: true,
        ..exec_request(id, cmd, false)
    }
}

fn options(b: &StreamBench<'_>, tty: bool) -> RemoteCommandOptions {
    RemoteCommandOptions {
        stdin: tty,
        tty,
        stderr: !tty,
        ..RemoteCommandOptions::new(b.transport)
    }
}

async fn exec_url(c: &mut CriClient, req: ExecRequest) -> anyhow::Result<String> {
    Ok(c.runtime.exec(req).await?.into_inner().url)
}

async fn deadline<T>(
    what: &str,
    f: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(DEADLINE, f)
        .await
        .with_context(|| format!("{what}: no answer in {DEADLINE:?}"))?
}

/// Exec `true`, from the Exec call to the exit status: ms.
async fn exec_true(c: &mut CriClient, b: &StreamBench<'_>) -> anyhow::Result<f64> {
    let t = Instant::now();
    let url = exec_url(c, exec_request(b.container, &["true"], false)).await?;
    let code = deadline("exec true", async {
        let mut cmd = remote_command(&url, &ClientConfig::default(), &options(b, false)).await?;
        for s in [cmd.stdout.take(), cmd.stderr.take()].into_iter().flatten() {
            drain(s).await;
        }
        Ok(cmd.status().await?)
    })
    .await?;
    let took = ms(t.elapsed());
    if code != 0 {
        bail!("exec true exited {code}");
    }
    Ok(took)
}

/// Exec -it `sh`: from the Exec call to the first byte of output (the
/// prompt), then `exit`; ms to the first byte.
async fn tty_first_byte(c: &mut CriClient, b: &StreamBench<'_>) -> anyhow::Result<f64> {
    let t = Instant::now();
    let url = exec_url(c, exec_request(b.container, &["sh"], true)).await?;
    deadline("exec -it sh", async {
        let mut cmd = remote_command(&url, &ClientConfig::default(), &options(b, true)).await?;
        let mut out = cmd.stdout.take().context("no stdout stream")?;
        let mut byte = [0u8; 1];
        if out.read(&mut byte).await? == 0 {
            bail!("exec -it sh: output ended before the prompt");
        }
        let took = ms(t.elapsed());
        let mut stdin = cmd.stdin.take().context("no stdin stream")?;
        stdin.write_all(b"exit\n").await?;
        stdin.flush().await?;
        drain(out).await;
        let code = cmd.status().await?;
        if code != 0 {
            bail!("exec -it sh exited {code}");
        }
        Ok(took)
    })
    .await
}

/// Exec `dd if=/dev/zero bs=1M count=BYTES/1M` (1 MiB writes, as the TCP
/// source of hack/bench-stream.sh), stdout read to EOF: MB/s.
async fn exec_cat(c: &mut CriClient, b: &StreamBench<'_>) -> anyhow::Result<f64> {
    const MIB: u64 = 1 << 20;
    if !b.bytes.is_multiple_of(MIB) {
        bail!("--stream-bytes {} is not a multiple of 1 MiB", b.bytes);
    }
    let count = format!("count={}", b.bytes / MIB);
    let t = Instant::now();
    let cmd = ["dd", "if=/dev/zero", "bs=1M", &count];
    let url = exec_url(c, exec_request(b.container, &cmd, false)).await?;
    let got = deadline("exec dd", async {
        let mut cmd = remote_command(&url, &ClientConfig::default(), &options(b, false)).await?;
        let mut out = cmd.stdout.take().context("no stdout stream")?;
        let got = read_count(&mut out).await?;
        let code = cmd.status().await?;
        if code != 0 {
            bail!("exec dd exited {code}");
        }
        Ok(got)
    })
    .await?;
    rate(got, b.bytes, t.elapsed())
}

/// BYTES read to EOF from the pod's port through one port-forward stream:
/// MB/s, from the PortForward call to EOF.
async fn port_forward(c: &mut CriClient, pod: &str, b: &StreamBench<'_>) -> anyhow::Result<f64> {
    let t = Instant::now();
    let url = c
        .runtime
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod.into(),
            port: vec![b.port.into()],
        })
        .await?
        .into_inner()
        .url;
    let got = deadline("port-forward", async {
        let pf = match b.transport {
            Transport::Spdy => SpdyPortForward::connect(&url, &ClientConfig::default()).await?,
            Transport::WebSocket => {
                SpdyPortForward::connect_over_websocket(&url, &ClientConfig::default()).await?
            }
        };
        let mut stream = pf.open(b.port)?;
        let got = read_count(&mut stream.data).await?;
        let message = stream.finish().await?;
        pf.close();
        if !message.is_empty() {
            bail!("port-forward: {message}");
        }
        Ok(got)
    })
    .await?;
    rate(got, b.bytes, t.elapsed())
}

/// Reads to the end: EOF, or the reset a Go server (containerd's) sends
/// every stream as it closes the session; the caller checks the count.
async fn read_count(r: &mut (impl tokio::io::AsyncRead + Unpin)) -> anyhow::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    loop {
        match r.read(&mut buf).await {
            Ok(0) => return Ok(got),
            Ok(n) => got += n as u64,
            Err(_) if got > 0 => return Ok(got),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads and drops what is left (see read_count for how it may end).
async fn drain(mut r: impl tokio::io::AsyncRead + Unpin) {
    let _ = read_count(&mut r).await;
}

fn rate(got: u64, want: u64, took: Duration) -> anyhow::Result<f64> {
    if got != want {
        bail!("read {got} bytes, expected {want}");
    }
    Ok(want as f64 / took.as_secs_f64() / 1e6)
}
