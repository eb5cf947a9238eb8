//! Bearer-token checks for the ingest and admin endpoints.
//!
//! The comparison is constant-time and length-hiding: both the expected
//! token and the presented one are run through HMAC-SHA256 under a key drawn
//! at startup, and the tags are compared with `verify_slice` (constant-time).
//! The token itself is never logged or echoed.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::config::Secret;

type HmacSha256 = Hmac<Sha256>;

/// Checks `Authorization: Bearer <token>` headers.
pub struct BearerAuth {
    key: [u8; 32],
    tag: Vec<u8>,
}

impl BearerAuth {
    /// Remembers only a keyed hash of `token`.
    pub fn new(token: &Secret) -> BearerAuth {
        let key: [u8; 32] = rand::random();
        let tag = mac(&key, token.expose()).finalize().into_bytes().to_vec();
        BearerAuth { key, tag }
    }

    /// Whether the presented token is the expected one.
    pub fn check_token(&self, presented: &[u8]) -> bool {
        mac(&self.key, presented).verify_slice(&self.tag).is_ok()
    }

    /// Whether the request carries the expected bearer token.
    pub fn check(&self, headers: &HeaderMap) -> bool {
        let Some(v) = headers.get(AUTHORIZATION) else {
            return false;
        };
        let v = v.as_bytes();
        let Some(scheme) = v.get(..7) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"bearer ") {
            return false;
        }
        self.check_token(v.get(7..).unwrap_or_default())
    }
}

fn mac(key: &[u8; 32], data: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    m.update(data);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn only_the_exact_token_passes() {
        let a = BearerAuth::new(&Secret::new("t0ken".into()));
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            a.check(&h)
        };
        assert!(with("Bearer t0ken"));
        assert!(with("bearer t0ken"));
        assert!(!with("Bearer t0ke"));
        assert!(!with("Bearer t0ken "));
        assert!(!with("Basic t0ken"));
        assert!(!with("Bearer"));
        assert!(!a.check(&HeaderMap::new()));
    }
}
