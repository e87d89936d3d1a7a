//! Content digests (`sha256:<hex>`) and readers/writers that hash what flows through them.
//!
//! Only sha256 is supported: it is what every registry and image builder uses, and
//! accepting an algorithm we cannot verify would silently skip verification.

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

const SHA256_PREFIX: &str = "sha256:";

/// A parsed, validated `sha256:<64 lowercase hex>` digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    // Always the full canonical form, so Display and hex() need no allocation.
    full: String,
}

/// What is wrong with a digest string, or a digest that did not match.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("invalid digest {input:?}: {reason}")]
    Invalid { input: String, reason: &'static str },
    #[error("unsupported digest algorithm {algorithm:?} in {input:?} (only sha256 is supported)")]
    UnsupportedAlgorithm { input: String, algorithm: String },
    #[error("digest mismatch: expected {expected}, got {actual}")]
    Mismatch { expected: Digest, actual: Digest },
}

impl Digest {
    /// The digest of raw sha256 output bytes.
    pub fn from_sha256_bytes(bytes: [u8; 32]) -> Digest {
        let mut full = String::with_capacity(SHA256_PREFIX.len() + 64);
        full.push_str(SHA256_PREFIX);
        full.push_str(&hex::encode(bytes));
        Digest { full }
    }

    /// The sha256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Digest {
        Digest::from_sha256_bytes(Sha256::digest(data).into())
    }

    /// The algorithm name (always `sha256`).
    pub fn algorithm(&self) -> &str {
        "sha256"
    }

    /// The 64 lowercase hex characters after `sha256:`.
    pub fn hex(&self) -> &str {
        &self.full[SHA256_PREFIX.len()..]
    }

    /// The canonical `sha256:<hex>` form.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// Check that `actual` equals `self`.
    pub fn verify(&self, actual: &Digest) -> Result<(), DigestError> {
        if self == actual {
            Ok(())
        } else {
            Err(DigestError::Mismatch {
                expected: self.clone(),
                actual: actual.clone(),
            })
        }
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Digest, DigestError> {
        let invalid = |reason| DigestError::Invalid {
            input: s.to_string(),
            reason,
        };
        let Some((algorithm, encoded)) = s.split_once(':') else {
            return Err(invalid("missing `algorithm:` prefix"));
        };
        if algorithm != "sha256" {
            // The OCI grammar allows other algorithms (sha512, blake3, ...); say so clearly.
            if algorithm.is_empty()
                || !algorithm
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
            {
                return Err(invalid("malformed algorithm"));
            }
            return Err(DigestError::UnsupportedAlgorithm {
                input: s.to_string(),
                algorithm: algorithm.to_string(),
            });
        }
        if encoded.len() != 64 {
            return Err(invalid("sha256 digest must have 64 hex characters"));
        }
        // OCI requires lowercase hex for sha256; uppercase would break content addressing.
        if !encoded
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(invalid("sha256 digest must be lowercase hex"));
        }
        Ok(Digest {
            full: s.to_string(),
        })
    }
}

impl TryFrom<&str> for Digest {
    type Error = DigestError;
    fn try_from(s: &str) -> Result<Digest, DigestError> {
        s.parse()
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestError;
    fn try_from(s: String) -> Result<Digest, DigestError> {
        s.parse()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.full)
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.full
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.full)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Incremental sha256 hasher producing a [`Digest`].
#[derive(Clone, Default)]
pub struct Hasher {
    inner: Sha256,
    bytes: u64,
}

impl Hasher {
    pub fn new() -> Hasher {
        Hasher::default()
    }

    pub fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
        self.bytes += data.len() as u64;
    }

    /// Bytes hashed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The digest of what was hashed so far (does not consume the hasher).
    pub fn digest(&self) -> Digest {
        Digest::from_sha256_bytes(self.inner.clone().finalize().into())
    }

    pub fn finish(self) -> Digest {
        Digest::from_sha256_bytes(self.inner.finalize().into())
    }
}

/// Wraps a reader and hashes every byte read through it.
///
/// When `R: BufRead`, it is itself `BufRead` and hashes bytes as they are
/// `consume`d, so a buffered decoder on top costs no extra copy.
pub struct DigestReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R> DigestReader<R> {
    pub fn new(inner: R) -> DigestReader<R> {
        DigestReader {
            inner,
            hasher: Hasher::new(),
        }
    }

    /// Bytes read (hashed) so far.
    pub fn bytes_read(&self) -> u64 {
        self.hasher.bytes()
    }

    /// Digest of the bytes read so far, without consuming the reader.
    pub fn digest(&self) -> Digest {
        self.hasher.digest()
    }

    /// Digest of everything read. Read to EOF first if the digest must cover the whole stream.
    pub fn finish(self) -> Digest {
        self.hasher.finish()
    }

    /// Finish and compare with `expected`.
    pub fn verify(self, expected: &Digest) -> Result<(), DigestError> {
        expected.verify(&self.finish())
    }

    /// The inner reader, the digest and the byte count.
    pub fn into_parts(self) -> (R, Digest, u64) {
        let bytes = self.hasher.bytes();
        (self.inner, self.hasher.finish(), bytes)
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Reading through this bypasses the hash.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for DigestReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for DigestReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        // fill_buf is idempotent until consume, so this sees the same bytes the caller saw.
        if let Ok(buf) = self.inner.fill_buf() {
            let amt = amt.min(buf.len());
            self.hasher.update(&buf[..amt]);
        }
        self.inner.consume(amt);
    }
}

/// Wraps a writer and hashes every byte written through it.
pub struct DigestWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W> DigestWriter<W> {
    pub fn new(inner: W) -> DigestWriter<W> {
        DigestWriter {
            inner,
            hasher: Hasher::new(),
        }
    }

    pub fn bytes_written(&self) -> u64 {
        self.hasher.bytes()
    }

    pub fn finish(self) -> (W, Digest) {
        (self.inner, self.hasher.finish())
    }

    pub fn verify(self, expected: &Digest) -> Result<W, DigestError> {
        let (w, actual) = self.finish();
        expected.verify(&actual).map(|()| w)
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }
}

impl<W: Write> Write for DigestWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parse_and_display() {
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d.hex(), &EMPTY[7..]);
        assert_eq!(d.algorithm(), "sha256");
        assert_eq!(Digest::sha256_of(b""), d);
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            "sha256:abc",
            &EMPTY.to_uppercase(),
            &format!("{EMPTY}0"),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85g",
        ] {
            assert!(
                matches!(bad.parse::<Digest>(), Err(DigestError::Invalid { .. })),
                "{bad}"
            );
        }
        let e = "sha512:abcd".parse::<Digest>().unwrap_err();
        assert!(
            matches!(e, DigestError::UnsupportedAlgorithm { ref algorithm, .. } if algorithm == "sha512")
        );
        assert!(e.to_string().contains("only sha256"));
    }

    #[test]
    fn serde_as_string() {
        let d: Digest = EMPTY.parse().unwrap();
        let j = serde_json::to_string(&d).unwrap();
        assert_eq!(j, format!("\"{EMPTY}\""));
        let back: Digest = serde_json::from_str(&j).unwrap();
        assert_eq!(back, d);
        assert!(serde_json::from_str::<Digest>("\"sha256:00\"").is_err());
    }

    #[test]
    fn reader_hashes_read_and_bufread() {
        let data = vec![7u8; 100_000];
        let expected = Digest::sha256_of(&data);

        let mut r = DigestReader::new(&data[..]);
        io::copy(&mut r, &mut io::sink()).unwrap();
        assert_eq!(r.bytes_read(), 100_000);
        r.verify(&expected).unwrap();

        // BufRead path: hash on consume.
        let mut r = DigestReader::new(io::BufReader::with_capacity(4096, &data[..]));
        loop {
            let n = r.fill_buf().unwrap().len();
            if n == 0 {
                break;
            }
            r.consume(n.min(1000));
        }
        assert_eq!(r.digest(), expected);

        let r = DigestReader::new(&b"x"[..]);
        assert!(matches!(
            r.verify(&expected),
            Err(DigestError::Mismatch { .. })
        ));
    }

    #[test]
    fn writer_hashes() {
        let mut w = DigestWriter::new(Vec::new());
        w.write_all(b"hello").unwrap();
        let out = w.verify(&Digest::sha256_of(b"hello")).unwrap();
        assert_eq!(out, b"hello");
    }
}
