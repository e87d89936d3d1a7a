//! The writer task: the only place frames are encoded (so header blocks go
//! through our zlib stream in wire order) and written. Control frames go
//! first, then DATA round-robin over streams, within their windows.

use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::error::Error;
use crate::frame::{ControlFrame, FLAG_FIN, encode_control, encode_data_head};
use crate::header_block::HeaderCompressor;
use crate::state::{Shared, State, wake};

/// Bytes of DATA one batch (one write to the socket) carries at most.
const BATCH_DATA: usize = 256 * 1024;

struct Batch {
    control: Vec<ControlFrame>,
    data: Vec<(u32, u8, Vec<u8>)>,
}

pub(crate) async fn run<W: AsyncWrite + Unpin>(shared: Arc<Shared>, mut io: W) {
    let mut closed_rx = shared.closed_tx.subscribe();
    let mut deflate = if shared.config.compress_headers {
        HeaderCompressor::new()
    } else {
        HeaderCompressor::stored()
    };
    let mut out = Vec::new();
    loop {
        let (batch, closing) = {
            let mut state = shared.lock();
            if state.closed.is_some() {
                return;
            }
            let closing = state
                .closing
                .as_ref()
                .map(|(reason, deadline)| (reason.clone(), Instant::from_std(*deadline)));
            (collect(&shared, &mut state), closing)
        };
        if batch.control.is_empty() && batch.data.is_empty() {
            if let Some((reason, deadline)) = closing {
                let _ = tokio::time::timeout_at(deadline, io.shutdown()).await;
                shared.hard_close(&mut shared.lock(), reason);
                return;
            }
            // Idle: hold no batch buffer.
            out = Vec::new();
            tokio::select! {
                _ = shared.writer_wake.notified() => continue,
                _ = closed_rx.wait_for(|closed| *closed) => return,
            }
        }
        if let Err(err) = encode(&batch, &mut deflate, &mut out) {
            shared.hard_close(&mut shared.lock(), err);
            return;
        }
        let deadline = closing.as_ref().map(|(_, deadline)| *deadline);
        let written = tokio::select! {
            written = write_all(&mut io, &out) => written,
            _ = closed_rx.wait_for(|closed| *closed) => return,
            _ = sleep_until(deadline) => {
                let reason = closing.map(|(reason, _)| reason).unwrap_or(Error::Closed);
                shared.hard_close(&mut shared.lock(), reason);
                return;
            }
        };
        out.clear();
        if let Err(err) = written {
            shared.hard_close(&mut shared.lock(), err.into());
            return;
        }
        shared.touch();
    }
}

async fn write_all<W: AsyncWrite + Unpin>(io: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Takes what may be sent now out of the shared state.
fn collect(shared: &Shared, state: &mut State) -> Batch {
    let control: Vec<ControlFrame> = state.control.drain(..).collect();
    if !control.is_empty() {
        // The reader may be waiting for room in the control queue.
        shared.reader_wake.notify_one();
    }
    let mut data = Vec::new();
    let mut budget = BATCH_DATA;
    let mut finished = Vec::new();
    for _ in 0..state.send_ready.len() {
        if budget == 0 {
            break;
        }
        let Some(id) = state.send_ready.pop_front() else {
            break;
        };
        let State {
            streams,
            session_send,
            send_ready,
            enforce_send,
            ..
        } = &mut *state;
        let Some(slot) = streams.get_mut(&id) else {
            continue;
        };
        slot.in_send_ready = false;
        if !slot.has_output() {
            continue;
        }
        let mut n = slot
            .send_buf
            .len()
            .min(shared.config.max_data_frame)
            .min(budget);
        if *enforce_send {
            n = n
                .min(slot.send_window.available())
                .min(session_send.available());
        }
        let fin_now = slot.fin_queued && n == slot.send_buf.len();
        if n == 0 && !fin_now {
            // Window shut: a WINDOW_UPDATE puts it back in line.
            continue;
        }
        let chunk = if n == slot.send_buf.len() {
            std::mem::take(&mut slot.send_buf)
        } else {
            slot.send_buf.drain(..n).collect()
        };
        slot.send_window.consume(n);
        session_send.consume(n);
        budget -= n;
        let flags = if fin_now {
            slot.fin_sent = true;
            finished.push(id);
            FLAG_FIN
        } else {
            0
        };
        data.push((id, flags, chunk));
        wake(&mut slot.write_waker);
        if slot.has_output() {
            slot.in_send_ready = true;
            send_ready.push_back(id);
        }
    }
    for id in finished {
        shared.maybe_remove(state, id);
    }
    Batch { control, data }
}

fn encode(batch: &Batch, deflate: &mut HeaderCompressor, out: &mut Vec<u8>) -> Result<(), Error> {
    for frame in &batch.control {
        encode_control(frame, deflate, out)?;
    }
    for (id, flags, chunk) in &batch.data {
        encode_data_head(*id, *flags, chunk.len(), out);
        out.extend_from_slice(chunk);
    }
    Ok(())
}
