//! Flow-control windows (spec §2.6.8, and §3.1's session window on stream
//! id 0): what the peer lets us send, and what we have consumed of what we
//! let it send.

use crate::frame::MAX_WINDOW;

/// When windows towards the peer are enforced. moby/spdystream (so kubelet,
/// kubectl and crictl) never sends WINDOW_UPDATE: enforcing the 64 KiB
/// default window against it would stall every stream after 64 KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PeerFlowControl {
    /// Enforce once the peer shows it speaks flow control: it sent SETTINGS
    /// with INITIAL_WINDOW_SIZE, or any WINDOW_UPDATE. Berth's own
    /// connections send SETTINGS first thing, so they enforce each other.
    #[default]
    Auto,
    /// Enforce from the start, as the spec says.
    Always,
    /// Never wait for the peer's window.
    Never,
}

/// How much we may still send. Signed: a SETTINGS that shrinks the initial
/// window can take it below zero (spec §2.6.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendWindow(i64);

impl SendWindow {
    pub fn new(size: u32) -> Self {
        Self(i64::from(size))
    }

    /// Bytes that may go now.
    pub fn available(&self) -> usize {
        self.0.max(0) as usize
    }

    pub fn consume(&mut self, sent: usize) {
        self.0 -= sent as i64;
    }

    /// A WINDOW_UPDATE; `Err` if the window would pass 2^31-1.
    pub fn grow(&mut self, delta: u32) -> Result<(), WindowOverflow> {
        let grown = self.0 + i64::from(delta);
        if grown > i64::from(MAX_WINDOW) {
            return Err(WindowOverflow);
        }
        self.0 = grown;
        Ok(())
    }

    /// A new INITIAL_WINDOW_SIZE moves every stream window by the difference.
    pub fn adjust(&mut self, difference: i64) {
        self.0 += difference;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowOverflow;

/// Our receive window: counts what the reader consumed and says when to
/// announce it, in WINDOW_UPDATEs of at least half the window (not one per
/// read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvWindow {
    size: u32,
    unannounced: u32,
}

impl RecvWindow {
    pub fn new(size: u32) -> Self {
        Self {
            size,
            unannounced: 0,
        }
    }

    /// Records `n` consumed bytes; returns the delta to announce, if any.
    pub fn consumed(&mut self, n: usize) -> Option<u32> {
        self.unannounced = self.unannounced.saturating_add(n as u32);
        if self.unannounced >= self.size / 2 && self.unannounced > 0 {
            Some(std::mem::take(&mut self.unannounced))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_window_consumes_grows_and_caps() {
        let mut window = SendWindow::new(100);
        window.consume(60);
        assert_eq!(window.available(), 40);
        window.consume(40);
        assert_eq!(window.available(), 0);
        window.grow(10).unwrap();
        assert_eq!(window.available(), 10);
        assert_eq!(window.grow(MAX_WINDOW), Err(WindowOverflow));
        assert_eq!(window.available(), 10);
    }

    #[test]
    fn send_window_can_go_negative_on_settings() {
        let mut window = SendWindow::new(100);
        window.consume(80);
        window.adjust(-50);
        assert_eq!(window.available(), 0);
        window.grow(40).unwrap();
        assert_eq!(window.available(), 10);
    }

    #[test]
    fn recv_window_announces_at_half() {
        let mut window = RecvWindow::new(100);
        assert_eq!(window.consumed(30), None);
        assert_eq!(window.consumed(19), None);
        assert_eq!(window.consumed(1), Some(50));
        assert_eq!(window.consumed(70), Some(70));
        assert_eq!(window.consumed(0), None);
    }
}
