//! SPDY/3.1 frames (spec §2.2, §2.6): the 8-byte frame head, control frame
//! payloads, and their exact byte layout. Pure: no I/O, and header blocks go
//! through the caller's zlib streams.

use std::fmt;

use crate::error::{Error, FrameError};
use crate::header_block::{HeaderCompressor, HeaderDecompressor, Headers, decode_raw};

pub const VERSION: u16 = 3;
/// Every frame starts with 8 bytes: type or stream id, flags, 24-bit length.
pub const FRAME_HEAD_LEN: usize = 8;
/// The largest payload the 24-bit length field can carry.
pub const MAX_PAYLOAD_LEN: usize = 0x00ff_ffff;
pub const MAX_STREAM_ID: u32 = 0x7fff_ffff;
/// Largest window and window delta (spec §2.6.8).
pub const MAX_WINDOW: u32 = 0x7fff_ffff;
/// The window each stream and the session start with (spec §2.6.8, §3.1).
pub const DEFAULT_WINDOW: u32 = 64 * 1024;

/// FLAG_FIN, on SYN_STREAM, SYN_REPLY, HEADERS and DATA.
pub const FLAG_FIN: u8 = 0x01;
/// FLAG_UNIDIRECTIONAL, on SYN_STREAM: the receiver will not send.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// FLAG_SETTINGS_CLEAR_SETTINGS, on SETTINGS.
pub const FLAG_CLEAR_SETTINGS: u8 = 0x01;

/// SETTINGS id of the initial per-stream window.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u32 = 4;

/// Control frame type codes.
pub mod kind {
    pub const SYN_STREAM: u16 = 1;
    pub const SYN_REPLY: u16 = 2;
    pub const RST_STREAM: u16 = 3;
    pub const SETTINGS: u16 = 4;
    pub const PING: u16 = 6;
    pub const GOAWAY: u16 = 7;
    pub const HEADERS: u16 = 8;
    pub const WINDOW_UPDATE: u16 = 9;
}

/// RST_STREAM status code (spec §2.6.3); unknown codes are kept as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RstStatus(pub u32);

impl RstStatus {
    pub const PROTOCOL_ERROR: Self = Self(1);
    pub const INVALID_STREAM: Self = Self(2);
    pub const REFUSED_STREAM: Self = Self(3);
    pub const UNSUPPORTED_VERSION: Self = Self(4);
    pub const CANCEL: Self = Self(5);
    pub const INTERNAL_ERROR: Self = Self(6);
    pub const FLOW_CONTROL_ERROR: Self = Self(7);
    pub const STREAM_IN_USE: Self = Self(8);
    pub const STREAM_ALREADY_CLOSED: Self = Self(9);
    pub const FRAME_TOO_LARGE: Self = Self(11);
}

impl fmt::Display for RstStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            1 => "PROTOCOL_ERROR",
            2 => "INVALID_STREAM",
            3 => "REFUSED_STREAM",
            4 => "UNSUPPORTED_VERSION",
            5 => "CANCEL",
            6 => "INTERNAL_ERROR",
            7 => "FLOW_CONTROL_ERROR",
            8 => "STREAM_IN_USE",
            9 => "STREAM_ALREADY_CLOSED",
            11 => "FRAME_TOO_LARGE",
            other => return write!(f, "status {other}"),
        };
        f.write_str(name)
    }
}

/// GOAWAY status code (spec §2.6.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GoAwayStatus(pub u32);

impl GoAwayStatus {
    pub const OK: Self = Self(0);
    pub const PROTOCOL_ERROR: Self = Self(1);
    pub const INTERNAL_ERROR: Self = Self(2);
}

impl fmt::Display for GoAwayStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("OK"),
            1 => f.write_str("PROTOCOL_ERROR"),
            2 => f.write_str("INTERNAL_ERROR"),
            other => write!(f, "status {other}"),
        }
    }
}

/// The first 8 bytes of any frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameHead {
    Control {
        version: u16,
        kind: u16,
        flags: u8,
        len: usize,
    },
    Data {
        stream_id: u32,
        flags: u8,
        len: usize,
    },
}

impl FrameHead {
    pub fn parse(bytes: [u8; FRAME_HEAD_LEN]) -> Self {
        let first = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let flags = bytes[4];
        let len = u32::from_be_bytes([0, bytes[5], bytes[6], bytes[7]]) as usize;
        if first & 0x8000_0000 != 0 {
            FrameHead::Control {
                version: ((first >> 16) & 0x7fff) as u16,
                kind: (first & 0xffff) as u16,
                flags,
                len,
            }
        } else {
            FrameHead::Data {
                stream_id: first,
                flags,
                len,
            }
        }
    }

    pub fn len(&self) -> usize {
        match *self {
            FrameHead::Control { len, .. } | FrameHead::Data { len, .. } => len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynStream {
    pub stream_id: u32,
    pub associated_to: u32,
    /// 0 (highest) to 7.
    pub priority: u8,
    pub slot: u8,
    /// FLAG_FIN and FLAG_UNIDIRECTIONAL.
    pub flags: u8,
    pub headers: Headers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// FLAG_SETTINGS_PERSIST_VALUE (1) / FLAG_SETTINGS_PERSISTED (2).
    pub flags: u8,
    /// 24-bit id.
    pub id: u32,
    pub value: u32,
}

/// A decoded control frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlFrame {
    SynStream(SynStream),
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: RstStatus,
    },
    Settings {
        clear: bool,
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: GoAwayStatus,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
}

/// Decodes a control frame's payload; `Ok(None)` for a type SPDY/3.1 does
/// not define (to be ignored, spec §2.2.1). Header blocks are always
/// inflated, even when the frame turns out bad, to keep the zlib stream in
/// step with the peer's.
pub fn decode_control(
    version: u16,
    kind: u16,
    flags: u8,
    payload: &[u8],
    inflate: &mut HeaderDecompressor,
) -> Result<Option<ControlFrame>, FrameError> {
    if version != VERSION {
        return Err(FrameError::protocol(format!(
            "SPDY version {version}, only {VERSION} is spoken"
        )));
    }
    let fixed = |len: usize| {
        if payload.len() == len {
            Ok(())
        } else {
            Err(FrameError::protocol(format!(
                "control frame type {kind} of {} bytes, {len} expected",
                payload.len()
            )))
        }
    };
    let at_least = |len: usize| {
        if payload.len() >= len {
            Ok(())
        } else {
            Err(FrameError::protocol(format!(
                "control frame type {kind} of {} bytes, at least {len} expected",
                payload.len()
            )))
        }
    };
    let frame = match kind {
        kind::SYN_STREAM => {
            at_least(10)?;
            let stream_id = stream_id_at(payload, 0);
            let associated_to = stream_id_at(payload, 4);
            let headers = inflate_headers(stream_id, &payload[10..], inflate)?;
            ControlFrame::SynStream(SynStream {
                stream_id: nonzero(stream_id, "SYN_STREAM")?,
                associated_to,
                priority: payload[8] >> 5,
                slot: payload[9],
                flags,
                headers,
            })
        }
        kind::SYN_REPLY | kind::HEADERS => {
            at_least(4)?;
            let stream_id = stream_id_at(payload, 0);
            let headers = inflate_headers(stream_id, &payload[4..], inflate)?;
            let stream_id = nonzero(stream_id, "SYN_REPLY/HEADERS")?;
            let fin = flags & FLAG_FIN != 0;
            if kind == kind::SYN_REPLY {
                ControlFrame::SynReply {
                    stream_id,
                    fin,
                    headers,
                }
            } else {
                ControlFrame::Headers {
                    stream_id,
                    fin,
                    headers,
                }
            }
        }
        kind::RST_STREAM => {
            fixed(8)?;
            let status = u32_at(payload, 4);
            if status == 0 {
                return Err(FrameError::protocol("RST_STREAM with status 0"));
            }
            ControlFrame::RstStream {
                stream_id: nonzero(stream_id_at(payload, 0), "RST_STREAM")?,
                status: RstStatus(status),
            }
        }
        kind::SETTINGS => {
            at_least(4)?;
            let count = u32_at(payload, 0) as usize;
            if count.checked_mul(8) != Some(payload.len() - 4) {
                return Err(FrameError::protocol(format!(
                    "SETTINGS says {count} entries in {} bytes",
                    payload.len()
                )));
            }
            let entries = payload[4..]
                .chunks_exact(8)
                .map(|entry| Setting {
                    flags: entry[0],
                    id: u32_at(entry, 0) & 0x00ff_ffff,
                    value: u32_at(entry, 4),
                })
                .collect();
            ControlFrame::Settings {
                clear: flags & FLAG_CLEAR_SETTINGS != 0,
                entries,
            }
        }
        kind::PING => {
            fixed(4)?;
            ControlFrame::Ping {
                id: u32_at(payload, 0),
            }
        }
        kind::GOAWAY => {
            fixed(8)?;
            ControlFrame::GoAway {
                last_good_stream_id: stream_id_at(payload, 0),
                status: GoAwayStatus(u32_at(payload, 4)),
            }
        }
        kind::WINDOW_UPDATE => {
            fixed(8)?;
            let stream_id = stream_id_at(payload, 0);
            let delta = u32_at(payload, 4) & MAX_WINDOW;
            if delta == 0 {
                return Err(if stream_id == 0 {
                    FrameError::protocol("session WINDOW_UPDATE with delta 0")
                } else {
                    FrameError::stream(
                        stream_id,
                        RstStatus::PROTOCOL_ERROR,
                        "WINDOW_UPDATE with delta 0",
                    )
                });
            }
            ControlFrame::WindowUpdate { stream_id, delta }
        }
        _ => return Ok(None),
    };
    Ok(Some(frame))
}

fn inflate_headers(
    stream_id: u32,
    compressed: &[u8],
    inflate: &mut HeaderDecompressor,
) -> Result<Headers, FrameError> {
    let raw = inflate.decompress(compressed)?;
    decode_raw(&raw).map_err(|reason| {
        if stream_id == 0 {
            FrameError::protocol(reason)
        } else {
            FrameError::stream(stream_id, RstStatus::PROTOCOL_ERROR, reason)
        }
    })
}

fn nonzero(stream_id: u32, what: &str) -> Result<u32, FrameError> {
    if stream_id == 0 {
        Err(FrameError::protocol(format!("{what} for stream 0")))
    } else {
        Ok(stream_id)
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// The top bit of a stream id field is reserved and ignored.
fn stream_id_at(bytes: &[u8], at: usize) -> u32 {
    u32_at(bytes, at) & MAX_STREAM_ID
}

/// Appends the frame to `out`, compressing header blocks with `deflate`.
pub fn encode_control(
    frame: &ControlFrame,
    deflate: &mut HeaderCompressor,
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    let start = out.len();
    let mut flags = 0;
    let kind = match frame {
        ControlFrame::SynStream(syn) => {
            flags = syn.flags;
            put_control_head(out, kind::SYN_STREAM);
            out.extend_from_slice(&syn.stream_id.to_be_bytes());
            out.extend_from_slice(&syn.associated_to.to_be_bytes());
            out.push((syn.priority & 0x07) << 5);
            out.push(syn.slot);
            deflate.compress(&syn.headers, out)?;
            kind::SYN_STREAM
        }
        ControlFrame::SynReply {
            stream_id,
            fin,
            headers,
        }
        | ControlFrame::Headers {
            stream_id,
            fin,
            headers,
        } => {
            let kind = if matches!(frame, ControlFrame::SynReply { .. }) {
                kind::SYN_REPLY
            } else {
                kind::HEADERS
            };
            flags = if *fin { FLAG_FIN } else { 0 };
            put_control_head(out, kind);
            out.extend_from_slice(&stream_id.to_be_bytes());
            deflate.compress(headers, out)?;
            kind
        }
        ControlFrame::RstStream { stream_id, status } => {
            put_control_head(out, kind::RST_STREAM);
            out.extend_from_slice(&stream_id.to_be_bytes());
            out.extend_from_slice(&status.0.to_be_bytes());
            kind::RST_STREAM
        }
        ControlFrame::Settings { clear, entries } => {
            flags = if *clear { FLAG_CLEAR_SETTINGS } else { 0 };
            put_control_head(out, kind::SETTINGS);
            out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
            for entry in entries {
                let flag_id = (u32::from(entry.flags) << 24) | (entry.id & 0x00ff_ffff);
                out.extend_from_slice(&flag_id.to_be_bytes());
                out.extend_from_slice(&entry.value.to_be_bytes());
            }
            kind::SETTINGS
        }
        ControlFrame::Ping { id } => {
            put_control_head(out, kind::PING);
            out.extend_from_slice(&id.to_be_bytes());
            kind::PING
        }
        ControlFrame::GoAway {
            last_good_stream_id,
            status,
        } => {
            put_control_head(out, kind::GOAWAY);
            out.extend_from_slice(&last_good_stream_id.to_be_bytes());
            out.extend_from_slice(&status.0.to_be_bytes());
            kind::GOAWAY
        }
        ControlFrame::WindowUpdate { stream_id, delta } => {
            put_control_head(out, kind::WINDOW_UPDATE);
            out.extend_from_slice(&stream_id.to_be_bytes());
            out.extend_from_slice(&delta.to_be_bytes());
            kind::WINDOW_UPDATE
        }
    };
    let len = out.len() - start - FRAME_HEAD_LEN;
    if len > MAX_PAYLOAD_LEN {
        out.truncate(start);
        return Err(Error::FrameTooLarge {
            len,
            limit: MAX_PAYLOAD_LEN,
        });
    }
    debug_assert_eq!(u16::from_be_bytes([out[start + 2], out[start + 3]]), kind);
    let flags_len = (u32::from(flags) << 24) | len as u32;
    out[start + 4..start + 8].copy_from_slice(&flags_len.to_be_bytes());
    Ok(())
}

/// Control bit, version, type; flags and length are filled in afterwards.
fn put_control_head(out: &mut Vec<u8>, kind: u16) {
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
}

/// Appends a DATA frame head; the `len` payload bytes follow it.
pub fn encode_data_head(stream_id: u32, flags: u8, len: usize, out: &mut Vec<u8>) {
    debug_assert!(stream_id != 0 && stream_id <= MAX_STREAM_ID);
    debug_assert!(len <= MAX_PAYLOAD_LEN);
    out.extend_from_slice(&stream_id.to_be_bytes());
    out.extend_from_slice(&((u32::from(flags) << 24) | len as u32).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 64 * 1024;

    fn encode(frame: &ControlFrame) -> Vec<u8> {
        let mut out = Vec::new();
        encode_control(frame, &mut HeaderCompressor::new(), &mut out).unwrap();
        out
    }

    fn decode(bytes: &[u8]) -> Result<Option<ControlFrame>, FrameError> {
        decode_with(bytes, &mut HeaderDecompressor::new(LIMIT))
    }

    fn decode_with(
        bytes: &[u8],
        inflate: &mut HeaderDecompressor,
    ) -> Result<Option<ControlFrame>, FrameError> {
        let head = FrameHead::parse(bytes[..8].try_into().unwrap());
        let FrameHead::Control {
            version,
            kind,
            flags,
            len,
        } = head
        else {
            panic!("not a control frame");
        };
        assert_eq!(len, bytes.len() - 8, "length field");
        decode_control(version, kind, flags, &bytes[8..], inflate)
    }

    fn round_trip(frame: ControlFrame) {
        let bytes = encode(&frame);
        assert_eq!(decode(&bytes).unwrap(), Some(frame));
    }

    #[test]
    fn rst_stream_bytes() {
        let frame = ControlFrame::RstStream {
            stream_id: 5,
            status: RstStatus::CANCEL,
        };
        assert_eq!(
            encode(&frame),
            [0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 5, 0, 0, 0, 5]
        );
        round_trip(frame);
    }

    #[test]
    fn settings_bytes() {
        let frame = ControlFrame::Settings {
            clear: false,
            entries: vec![Setting {
                flags: 0,
                id: SETTINGS_INITIAL_WINDOW_SIZE,
                value: 0x0004_0000,
            }],
        };
        assert_eq!(
            encode(&frame),
            [
                0x80, 3, 0, 4, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 7, 0, 4, 0, 0
            ]
        );
        round_trip(frame);
        round_trip(ControlFrame::Settings {
            clear: true,
            entries: vec![
                Setting {
                    flags: 1,
                    id: SETTINGS_MAX_CONCURRENT_STREAMS,
                    value: 100,
                },
                Setting {
                    flags: 2,
                    id: 0x00ab_cdef,
                    value: u32::MAX,
                },
            ],
        });
    }

    #[test]
    fn ping_bytes() {
        let frame = ControlFrame::Ping { id: 0x0102_0304 };
        assert_eq!(encode(&frame), [0x80, 3, 0, 6, 0, 0, 0, 4, 1, 2, 3, 4]);
        round_trip(frame);
    }

    #[test]
    fn goaway_bytes() {
        let frame = ControlFrame::GoAway {
            last_good_stream_id: 7,
            status: GoAwayStatus::PROTOCOL_ERROR,
        };
        assert_eq!(
            encode(&frame),
            [0x80, 3, 0, 7, 0, 0, 0, 8, 0, 0, 0, 7, 0, 0, 0, 1]
        );
        round_trip(frame);
    }

    #[test]
    fn window_update_bytes() {
        let frame = ControlFrame::WindowUpdate {
            stream_id: 0,
            delta: 0x7fff_0000,
        };
        assert_eq!(
            encode(&frame),
            [0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 0, 0x7f, 0xff, 0, 0]
        );
        round_trip(frame);
    }

    #[test]
    fn data_head_bytes() {
        let mut out = Vec::new();
        encode_data_head(3, FLAG_FIN, 0x01_0203, &mut out);
        assert_eq!(out, [0, 0, 0, 3, 1, 1, 2, 3]);
        assert_eq!(
            FrameHead::parse(out.try_into().unwrap()),
            FrameHead::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                len: 0x01_0203
            }
        );
    }

    #[test]
    fn syn_stream_layout_and_round_trip() {
        let headers: Headers = [("streamtype", "stdin")].into_iter().collect();
        let frame = ControlFrame::SynStream(SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 3,
            slot: 0,
            flags: FLAG_FIN | FLAG_UNIDIRECTIONAL,
            headers: headers.clone(),
        });
        let bytes = encode(&frame);
        assert_eq!(&bytes[..4], [0x80, 3, 0, 1]);
        assert_eq!(bytes[4], FLAG_FIN | FLAG_UNIDIRECTIONAL);
        assert_eq!(&bytes[8..18], [0, 0, 0, 1, 0, 0, 0, 0, 3 << 5, 0]);
        // The block is our zlib stream's first: it opens with the zlib header.
        let mut compressed = Vec::new();
        HeaderCompressor::new()
            .compress(&headers, &mut compressed)
            .unwrap();
        assert_eq!(&bytes[18..], compressed);
        round_trip(frame);
    }

    #[test]
    fn syn_reply_and_headers_round_trip() {
        let headers: Headers = [("a", "1"), ("a", "2"), ("b", "")].into_iter().collect();
        round_trip(ControlFrame::SynReply {
            stream_id: 2,
            fin: true,
            headers: headers.clone(),
        });
        let bytes = encode(&ControlFrame::Headers {
            stream_id: 9,
            fin: false,
            headers,
        });
        assert_eq!(&bytes[..5], [0x80, 3, 0, 8, 0]);
        assert_eq!(&bytes[8..12], [0, 0, 0, 9]);
    }

    #[test]
    fn one_zlib_stream_spans_frames() {
        let mut deflate = HeaderCompressor::new();
        let mut inflate = HeaderDecompressor::new(LIMIT);
        for id in (1..40).step_by(2) {
            let frame = ControlFrame::SynStream(SynStream {
                stream_id: id,
                associated_to: 0,
                priority: 0,
                slot: 0,
                flags: 0,
                headers: [("streamtype", "stdout")].into_iter().collect(),
            });
            let mut bytes = Vec::new();
            encode_control(&frame, &mut deflate, &mut bytes).unwrap();
            assert_eq!(decode_with(&bytes, &mut inflate).unwrap(), Some(frame));
        }
    }

    #[test]
    fn unknown_types_are_ignored() {
        // NOOP (5) and CREDENTIAL (10) are not SPDY/3.1 frames we act on.
        assert_eq!(decode(&[0x80, 3, 0, 5, 0, 0, 0, 0]), Ok(None));
        assert_eq!(decode(&[0x80, 3, 0, 10, 0, 0, 0, 3, 1, 2, 3]), Ok(None));
    }

    #[test]
    fn bad_control_frames_are_errors() {
        let session_errors: [&[u8]; 9] = [
            // Version 2.
            &[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1],
            // PING with 3 bytes.
            &[0x80, 3, 0, 6, 0, 0, 0, 3, 0, 0, 1],
            // RST_STREAM with status 0, and for stream 0.
            &[0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0],
            &[0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1],
            // GOAWAY of SPDY/2's 4 bytes.
            &[0x80, 3, 0, 7, 0, 0, 0, 4, 0, 0, 0, 1],
            // SETTINGS claiming 2 entries, holding 1; and a huge count.
            &[
                0x80, 3, 0, 4, 0, 0, 0, 12, 0, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0, 1,
            ],
            &[0x80, 3, 0, 4, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff],
            // Session WINDOW_UPDATE of 0.
            &[0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0],
            // SYN_STREAM too short for its fixed fields.
            &[0x80, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 1, 0, 0],
        ];
        for bytes in session_errors {
            assert!(
                matches!(decode(bytes), Err(FrameError::Session(_))),
                "{bytes:?} decoded"
            );
        }
        assert!(matches!(
            decode(&[0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 3, 0, 0, 0, 0]),
            Err(FrameError::Stream { id: 3, .. })
        ));
    }

    #[test]
    fn syn_stream_for_stream_zero_is_a_session_error() {
        let mut bytes = encode(&ControlFrame::SynStream(SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 0,
            slot: 0,
            flags: 0,
            headers: Headers::new(),
        }));
        bytes[11] = 0;
        assert!(matches!(decode(&bytes), Err(FrameError::Session(_))));
    }

    #[test]
    fn bad_header_content_resets_only_that_stream() {
        // A block valid for zlib, but with an uppercase name.
        let mut raw_bad = Vec::new();
        raw_bad.extend_from_slice(b"\0\0\0\x01\0\0\0\x01X\0\0\0\x01y");
        let mut z = flate2::Compress::new(flate2::Compression::default(), true);
        z.set_dictionary(&crate::header_block::DICTIONARY).unwrap();
        let mut block = Vec::with_capacity(256);
        z.compress_vec(&raw_bad, &mut block, flate2::FlushCompress::Sync)
            .unwrap();
        let mut bytes = vec![0x80, 3, 0, 2, 0, 0, 0, 0, 0, 0, 0, 7];
        bytes.extend_from_slice(&block);
        let len = (bytes.len() - 8) as u8;
        bytes[7] = len;
        assert!(matches!(
            decode(&bytes),
            Err(FrameError::Stream {
                id: 7,
                status: RstStatus::PROTOCOL_ERROR,
                ..
            })
        ));
    }

    #[test]
    fn reserved_bits_are_ignored() {
        let frame = decode(&[0x80, 3, 0, 3, 0, 0, 0, 8, 0x80, 0, 0, 5, 0, 0, 0, 5]).unwrap();
        assert_eq!(
            frame,
            Some(ControlFrame::RstStream {
                stream_id: 5,
                status: RstStatus::CANCEL
            })
        );
    }
}
