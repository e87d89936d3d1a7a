//! SPDY/3 name/value header blocks (spec §2.6.10): the pairs, their
//! uncompressed layout, and the zlib streams that carry them. Each direction
//! of a connection is one zlib stream primed with the SPDY/3 dictionary;
//! every block ends with a SYNC_FLUSH so the peer can decode it alone.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::error::Error;

/// Header names and values. Names are kept lowercase (SPDY requires it);
/// look-ups ignore ASCII case, so `get("streamType")` finds the
/// `streamtype` that Go's `http.Header` puts on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(String, Vec<String>)>,
}

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to the single `value`, replacing any earlier values.
    pub fn insert(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        let value = value.into();
        match self.position(name) {
            Some(i) => self.entries[i].1 = vec![value],
            None => self.entries.push((name.to_ascii_lowercase(), vec![value])),
        }
        self
    }

    /// Adds one more value for `name` (sent NUL-separated in one pair).
    pub fn append(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        let value = value.into();
        match self.position(name) {
            Some(i) => self.entries[i].1.push(value),
            None => self.entries.push((name.to_ascii_lowercase(), vec![value])),
        }
        self
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_all(name).first().map(String::as_str)
    }

    /// Every value of `name`, in order.
    pub fn get_all(&self, name: &str) -> &[String] {
        self.position(name)
            .map(|i| self.entries[i].1.as_slice())
            .unwrap_or(&[])
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(name))
    }
}

impl<N: AsRef<str>, V: Into<String>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut headers = Headers::new();
        for (name, value) in iter {
            headers.append(name.as_ref(), value);
        }
        headers
    }
}

/// The uncompressed block: u32 pair count, then per pair u32 length + name,
/// u32 length + values joined by NUL.
pub fn encode_raw(headers: &Headers) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&(headers.entries.len() as u32).to_be_bytes());
    for (name, values) in &headers.entries {
        out.extend_from_slice(&(name.len() as u32).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        let joined_len = values.iter().map(String::len).sum::<usize>() + values.len() - 1;
        out.extend_from_slice(&(joined_len as u32).to_be_bytes());
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                out.push(0);
            }
            out.extend_from_slice(value.as_bytes());
        }
    }
    out
}

/// Parses an uncompressed block. The reason string says what is wrong; the
/// caller decides the scope (the zlib stream itself is still in sync).
pub fn decode_raw(block: &[u8]) -> Result<Headers, String> {
    let mut rest = block;
    let count = take_u32(&mut rest)? as usize;
    // Each pair takes at least 8 bytes: a count beyond that is a lie, and
    // must not size an allocation.
    if count > rest.len() / 8 {
        return Err(format!(
            "{count} header pairs can't fit in {} bytes",
            block.len()
        ));
    }
    let mut headers = Headers {
        entries: Vec::with_capacity(count),
    };
    for _ in 0..count {
        let name = take_string(&mut rest)?;
        if name.is_empty() {
            return Err("empty header name".into());
        }
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!("header name {name:?} is not lowercase"));
        }
        if headers.position(&name).is_some() {
            return Err(format!("header {name:?} appears twice"));
        }
        let joined = take_string(&mut rest)?;
        let values = joined.split('\0').map(str::to_owned).collect();
        headers.entries.push((name, values));
    }
    if !rest.is_empty() {
        return Err(format!("{} stray bytes after the header pairs", rest.len()));
    }
    Ok(headers)
}

fn take_u32(rest: &mut &[u8]) -> Result<u32, String> {
    let Some((head, tail)) = rest.split_first_chunk::<4>() else {
        return Err("header block is truncated".into());
    };
    *rest = tail;
    Ok(u32::from_be_bytes(*head))
}

fn take_string(rest: &mut &[u8]) -> Result<String, String> {
    let len = take_u32(rest)? as usize;
    if len > rest.len() {
        return Err("header block is truncated".into());
    }
    let (bytes, tail) = rest.split_at(len);
    *rest = tail;
    String::from_utf8(bytes.to_vec()).map_err(|_| "header text is not UTF-8".into())
}

/// Our direction's zlib stream.
pub struct HeaderCompressor {
    encoding: Encoding,
}

enum Encoding {
    /// Real deflate: zlib-rs keeps about 370 KiB of state per stream.
    Deflate { zlib: Box<Compress>, primed: bool },
    /// Stored (uncompressed) deflate blocks: no state at all, and any
    /// inflater reads them. Header blocks here are a few dozen bytes, so
    /// this is the default (see `Config::compress_headers`).
    Stored { started: bool },
}

impl Default for HeaderCompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderCompressor {
    /// Deflate-compressing, as spdystream does.
    pub fn new() -> Self {
        Self {
            encoding: Encoding::Deflate {
                zlib: Box::new(Compress::new(Compression::default(), true)),
                primed: false,
            },
        }
    }

    /// Stored blocks: a valid zlib stream that costs no memory.
    pub fn stored() -> Self {
        Self {
            encoding: Encoding::Stored { started: false },
        }
    }

    /// Appends `headers`, compressed and sync-flushed, to `out`.
    pub fn compress(&mut self, headers: &Headers, out: &mut Vec<u8>) -> Result<(), Error> {
        let raw = encode_raw(headers);
        match &mut self.encoding {
            Encoding::Deflate { zlib, primed } => deflate(zlib, primed, &raw, out),
            Encoding::Stored { started } => {
                store(started, &raw, out);
                Ok(())
            }
        }
    }
}

fn deflate(
    zlib: &mut Compress,
    primed: &mut bool,
    raw: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    if !*primed {
        // Before the first byte, so the zlib header names the dictionary.
        zlib.set_dictionary(&DICTIONARY)
            .map_err(|e| Error::Compression(e.to_string()))?;
        *primed = true;
    }
    let start = zlib.total_in();
    out.reserve(raw.len() / 2 + 64);
    loop {
        let consumed = (zlib.total_in() - start) as usize;
        if out.len() == out.capacity() {
            out.reserve(256);
        }
        zlib.compress_vec(&raw[consumed..], out, FlushCompress::Sync)
            .map_err(|e| Error::Compression(e.to_string()))?;
        let consumed = (zlib.total_in() - start) as usize;
        // Room left over means the flush is complete.
        if consumed == raw.len() && out.len() < out.capacity() {
            return Ok(());
        }
    }
}

/// RFC 1950/1951 by hand: the zlib header once (FDICT set, naming the
/// dictionary by its Adler-32), then non-final stored blocks, then the
/// empty stored block a SYNC_FLUSH ends with. Go's inflater needs that
/// last one: it hands out a stored block's bytes only when the next block
/// (or the stream) ends, so without it spdystream waits for the next frame
/// and then fails on "compressed payload size was incorrect".
fn store(started: &mut bool, raw: &[u8], out: &mut Vec<u8>) {
    if !*started {
        // CMF 0x78: deflate, 32 KiB window. FLG 0x20: FDICT, and
        // (0x78 << 8 | 0x20) is a multiple of 31 as FCHECK requires.
        out.extend_from_slice(&[0x78, 0x20]);
        out.extend_from_slice(&DICTIONARY_ADLER32.to_be_bytes());
        *started = true;
    }
    for piece in raw.chunks(usize::from(u16::MAX)) {
        let len = piece.len() as u16;
        // BFINAL 0, BTYPE 00 (stored), padding to the byte boundary.
        out.push(0);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(piece);
    }
    out.extend_from_slice(&SYNC_MARKER);
}

/// An empty non-final stored block: how every SYNC_FLUSH ends.
const SYNC_MARKER: [u8; 5] = [0, 0, 0, 0xff, 0xff];

/// The peer's zlib stream, with a bound on what one block may inflate to.
pub struct HeaderDecompressor {
    /// `None` once released: the session takes no more header blocks.
    zlib: Option<Decompress>,
    max_block: usize,
}

impl HeaderDecompressor {
    pub fn new(max_block: usize) -> Self {
        Self {
            zlib: Some(Decompress::new(true)),
            max_block,
        }
    }

    /// Frees the zlib state (about 40 KiB with its window). The zlib stream
    /// spans the whole connection, so a header block that comes later can't
    /// be read any more: [`Self::decompress`] fails, and the connection
    /// with it.
    pub fn release(&mut self) {
        self.zlib = None;
    }

    /// Inflates one frame's compressed block. Going past `max_block` (a zlib
    /// bomb, or just too much) is an error, found before allocating more.
    pub fn decompress(&mut self, compressed: &[u8]) -> Result<Vec<u8>, Error> {
        let Some(zlib) = self.zlib.as_mut() else {
            return Err(Error::Protocol(
                "a header block after the session stopped taking new streams".into(),
            ));
        };
        let start = zlib.total_in();
        // One byte over the limit tells "exactly the limit" from "more".
        let cap = self.max_block + 1;
        let mut out = Vec::with_capacity((compressed.len() * 4).clamp(256, cap));
        loop {
            let consumed = (zlib.total_in() - start) as usize;
            if out.len() == out.capacity() {
                if out.len() >= cap {
                    return Err(Error::HeaderBlockTooLarge {
                        limit: self.max_block,
                    });
                }
                out.reserve_exact((out.len()).clamp(256, cap - out.len()));
            }
            match zlib.decompress_vec(&compressed[consumed..], &mut out, FlushDecompress::Sync) {
                Ok(Status::StreamEnd) => {
                    return Err(Error::Compression(
                        "peer ended its header zlib stream".into(),
                    ));
                }
                Ok(_) => {}
                Err(err) if err.needs_dictionary().is_some() => {
                    zlib.set_dictionary(&DICTIONARY)
                        .map_err(|e| Error::Compression(format!("dictionary: {e}")))?;
                }
                Err(err) => return Err(Error::Compression(err.to_string())),
            }
            let consumed = (zlib.total_in() - start) as usize;
            if consumed == compressed.len() && out.len() < out.capacity() {
                if out.len() > self.max_block {
                    return Err(Error::HeaderBlockTooLarge {
                        limit: self.max_block,
                    });
                }
                return Ok(out);
            }
        }
    }
}

/// The dictionary's id in zlib headers (its Adler-32).
pub const DICTIONARY_ADLER32: u32 = 0xe3c6_a7c2;

/// The SPDY/3 zlib dictionary (spec §2.6.10.1): the words below, each
/// preceded by its length as a big-endian u32, then the tail as is.
pub const DICTIONARY: [u8; DICTIONARY_LEN] = build_dictionary();

const DICTIONARY_WORDS: [&str; 65] = [
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414",
    "415416417502504505",
    "203 Non-Authoritative Information",
    "204 No Content",
    "301 Moved Permanently",
    "400 Bad Request",
    "401 Unauthorized",
    "403 Forbidden",
    "404 Not Found",
    "500 Internal Server Error",
    "501 Not Implemented",
    "503 Service Unavailable",
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec",
    " 00:00:00",
    " Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,",
    "application/xhtml+xml,text/plain,text/javascript,public",
    "privatemax-age=gzip,deflate,sdch",
    "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

const DICTIONARY_LEN: usize = {
    let mut len = DICTIONARY_TAIL.len();
    let mut i = 0;
    while i < DICTIONARY_WORDS.len() {
        len += 4 + DICTIONARY_WORDS[i].len();
        i += 1;
    }
    len
};

const fn build_dictionary() -> [u8; DICTIONARY_LEN] {
    let mut dict = [0u8; DICTIONARY_LEN];
    let mut at = 0;
    let mut w = 0;
    while w < DICTIONARY_WORDS.len() {
        let word = DICTIONARY_WORDS[w].as_bytes();
        let len = (word.len() as u32).to_be_bytes();
        let mut i = 0;
        while i < 4 {
            dict[at] = len[i];
            at += 1;
            i += 1;
        }
        let mut i = 0;
        while i < word.len() {
            dict[at] = word[i];
            at += 1;
            i += 1;
        }
        w += 1;
    }
    let tail = DICTIONARY_TAIL.as_bytes();
    let mut i = 0;
    while i < tail.len() {
        dict[at] = tail[i];
        at += 1;
        i += 1;
    }
    dict
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adler-32 as RFC 1950 §9 defines it, to check the dictionary id.
    fn adler32(data: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &byte in data {
            a = (a + byte as u32) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert_eq!(&DICTIONARY[..11], b"\0\0\0\x07options");
        assert!(DICTIONARY.ends_with(b"enq=0."));
        // The dictionary id every SPDY/3 zlib header carries.
        assert_eq!(adler32(&DICTIONARY), DICTIONARY_ADLER32);
    }

    #[test]
    fn raw_block_layout_is_byte_exact() {
        let mut headers = Headers::new();
        headers.insert("StreamType", "error");
        headers.append("x", "a").append("x", "b");
        let raw = encode_raw(&headers);
        let expected: &[u8] = b"\0\0\0\x02\
            \0\0\0\x0astreamtype\0\0\0\x05error\
            \0\0\0\x01x\0\0\0\x03a\0b";
        assert_eq!(raw, expected);
        assert_eq!(decode_raw(&raw).unwrap(), headers);
        assert_eq!(headers.get("streamType"), Some("error"));
        assert_eq!(headers.get_all("X"), ["a", "b"]);
    }

    #[test]
    fn raw_block_rejects_bad_input() {
        let bad: [&[u8]; 6] = [
            b"\0\0",
            b"\0\0\0\x01\0\0\0\x05ab",
            b"\xff\xff\xff\xff\0\0\0\0\0\0\0\0",
            b"\0\0\0\x01\0\0\0\x01A\0\0\0\0",
            b"\0\0\0\x01\0\0\0\0\0\0\0\0",
            b"\0\0\0\x02\0\0\0\x01a\0\0\0\0\0\0\0\x01a\0\0\0\0",
        ];
        for block in bad {
            assert!(decode_raw(block).is_err(), "{block:?} accepted");
        }
        assert!(decode_raw(b"\0\0\0\0extra").is_err());
    }

    #[test]
    fn compression_round_trips_across_blocks() {
        let mut tx = HeaderCompressor::new();
        let mut rx = HeaderDecompressor::new(64 * 1024);
        for i in 0..20 {
            let headers: Headers = [("streamtype", "stdout"), ("requestid", &i.to_string())]
                .into_iter()
                .collect();
            let mut block = Vec::new();
            tx.compress(&headers, &mut block).unwrap();
            // Sync flush: every block ends with the empty stored block.
            assert!(block.ends_with(&SYNC_MARKER[1..]));
            let raw = rx.decompress(&block).unwrap();
            assert_eq!(decode_raw(&raw).unwrap(), headers);
        }
    }

    #[test]
    fn stored_blocks_round_trip_and_are_byte_exact() {
        let mut tx = HeaderCompressor::stored();
        let mut rx = HeaderDecompressor::new(256 * 1024);
        let headers: Headers = [("port", "8080")].into_iter().collect();
        let mut block = Vec::new();
        tx.compress(&headers, &mut block).unwrap();
        let raw = encode_raw(&headers);
        let mut expected = vec![0x78, 0x20, 0xe3, 0xc6, 0xa7, 0xc2, 0, raw.len() as u8, 0];
        expected.extend_from_slice(&[!(raw.len() as u8), 0xff]);
        expected.extend_from_slice(&raw);
        expected.extend_from_slice(&[0, 0, 0, 0xff, 0xff]);
        assert_eq!(block, expected);
        assert_eq!(
            decode_raw(&rx.decompress(&block).unwrap()).unwrap(),
            headers
        );
        // Later blocks: no zlib header; one over 64 KiB spans stored blocks.
        let big: Headers = [("x", "y".repeat(100_000))].into_iter().collect();
        let mut block = Vec::new();
        tx.compress(&big, &mut block).unwrap();
        assert_eq!(block[0], 0);
        assert_eq!(decode_raw(&rx.decompress(&block).unwrap()).unwrap(), big);
    }

    #[test]
    fn first_block_names_the_dictionary() {
        let mut block = Vec::new();
        HeaderCompressor::new()
            .compress(&Headers::new(), &mut block)
            .unwrap();
        // CMF 0x78, FLG with FDICT set, then the dictionary's adler32.
        assert_eq!(block[0], 0x78);
        assert_ne!(block[1] & 0x20, 0);
        assert_eq!((u16::from(block[0]) << 8 | u16::from(block[1])) % 31, 0);
        assert_eq!(&block[2..6], &[0xe3, 0xc6, 0xa7, 0xc2]);
    }

    /// Made with CPython's zlib (C zlib 1.2.13), not ours:
    /// `c = zlib.compressobj(9, zlib.DEFLATED, 15, 8, 0, zdict=DICT);
    ///  c.compress(raw) + c.flush(zlib.Z_SYNC_FLUSH)`, raw being the
    /// block {"streamtype": "error", "port": "8080"}.
    #[test]
    fn decodes_a_block_compressed_by_c_zlib() {
        let mut rx = HeaderDecompressor::new(1024);
        let raw = rx.decompress(C_ZLIB_VECTOR).unwrap();
        let headers = decode_raw(&raw).unwrap();
        assert_eq!(headers.get("streamtype"), Some("error"));
        assert_eq!(headers.get("port"), Some("8080"));
        assert_eq!(headers.len(), 2);
    }

    const C_ZLIB_VECTOR: &[u8] = &[
        0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0xe5, 0x0e, 0x70, 0x3a, 0x2b, 0x29, 0x4a, 0x4d,
        0xcc, 0x85, 0x16, 0x25, 0xac, 0xa9, 0xa0, 0x80, 0x86, 0x14, 0xcb, 0x45, 0xe0, 0x1c, 0x60,
        0x61, 0x60, 0x61, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff,
    ];

    #[test]
    fn zlib_bomb_is_refused() {
        // 1 MiB of one header value compresses to about a kilobyte.
        let headers: Headers = [("x", "a".repeat(1 << 20))].into_iter().collect();
        let mut block = Vec::new();
        HeaderCompressor::new()
            .compress(&headers, &mut block)
            .unwrap();
        assert!(block.len() < 8 * 1024);
        let mut rx = HeaderDecompressor::new(64 * 1024);
        assert_eq!(
            rx.decompress(&block),
            Err(Error::HeaderBlockTooLarge { limit: 64 * 1024 })
        );
    }

    #[test]
    fn garbage_is_a_compression_error() {
        let mut rx = HeaderDecompressor::new(1024);
        assert!(matches!(
            rx.decompress(b"not zlib at all"),
            Err(Error::Compression(_))
        ));
    }
}
