//! Issued-but-unused streaming requests, keyed by token: single use,
//! expiring, and bounded so a flood of Exec calls can't grow it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::RequestError;
use crate::request::{AttachRequest, ExecRequest, PortForwardRequest};
use crate::token::{looks_like_token, new_token};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CachedRequest {
    Exec(ExecRequest),
    Attach(AttachRequest),
    PortForward(PortForwardRequest),
}

struct Entry {
    request: CachedRequest,
    expires: Instant,
}

pub(crate) struct RequestCache {
    entries: Mutex<HashMap<String, Entry>>,
    ttl: Duration,
    max_pending: usize,
}

impl RequestCache {
    pub fn new(ttl: Duration, max_pending: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            ttl,
            max_pending: max_pending.max(1),
        }
    }

    pub fn insert(&self, request: CachedRequest) -> Result<String, RequestError> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.max_pending {
            // Only scanned when full: expired entries make room.
            entries.retain(|_, entry| entry.expires > now);
            if entries.len() >= self.max_pending {
                return Err(RequestError::TooManyPending {
                    limit: self.max_pending,
                });
            }
        }
        let token = loop {
            let token = new_token();
            if !entries.contains_key(&token) {
                break token;
            }
        };
        let expires = now + self.ttl;
        entries.insert(token.clone(), Entry { request, expires });
        Ok(token)
    }

    /// Takes the request out: a token works once, and not after expiry.
    pub fn consume(&self, token: &str) -> Option<CachedRequest> {
        if !looks_like_token(token) {
            return None;
        }
        let entry = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(token)?;
        (entry.expires > Instant::now()).then_some(entry.request)
    }

    pub fn pending(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec() -> CachedRequest {
        CachedRequest::Exec(ExecRequest {
            container_id: "c".into(),
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        })
    }

    #[test]
    fn single_use() {
        let cache = RequestCache::new(Duration::from_secs(60), 10);
        let token = cache.insert(exec()).unwrap();
        assert_eq!(cache.consume(&token), Some(exec()));
        assert_eq!(cache.consume(&token), None);
    }

    #[test]
    fn expires() {
        let cache = RequestCache::new(Duration::from_millis(1), 10);
        let token = cache.insert(exec()).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(cache.consume(&token), None);
    }

    #[test]
    fn bounded_and_expired_entries_make_room() {
        let cache = RequestCache::new(Duration::from_millis(20), 3);
        for _ in 0..3 {
            cache.insert(exec()).unwrap();
        }
        assert_eq!(
            cache.insert(exec()),
            Err(RequestError::TooManyPending { limit: 3 })
        );
        std::thread::sleep(Duration::from_millis(30));
        cache.insert(exec()).unwrap();
        assert_eq!(cache.pending(), 1);
    }
}
