//! Streaming URL tokens: 256 bits from the OS RNG, base64url without
//! padding (43 characters), so they can't be guessed or enumerated.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRngCore;
use rand::rngs::OsRng;

const TOKEN_BYTES: usize = 32;

pub(crate) fn new_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    // The OS RNG failing means no secure token can be made at all.
    OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the OS random number generator failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A cheap shape check before any lookup.
pub(crate) fn looks_like_token(token: &str) -> bool {
    token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_well_formed() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert!(looks_like_token(&a), "{a}");
        assert!(!looks_like_token("abc"));
        assert!(!looks_like_token(&format!("{}/", &a[..42])));
    }
}
