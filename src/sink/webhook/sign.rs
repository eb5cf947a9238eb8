//! Request signing: pure functions, no I/O.
//!
//! - Standard Webhooks: the signed content is `{id}.{timestamp}.{body}`,
//!   the signature is `v1,` followed by the standard base64 (with padding)
//!   of its HMAC-SHA256, and with several keys the header carries one
//!   signature per key, separated by single spaces.
//! - GitHub: `sha256=` followed by the lowercase hex HMAC-SHA256 of the
//!   body alone.
//!
//! Keys live in [`SigningKey`], which zeroes its bytes on drop and never
//! prints them.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::config::SecretFormat;

type HmacSha256 = Hmac<Sha256>;

/// One HMAC key. Zeroed on drop; `Debug` prints only its length.
#[derive(Clone)]
pub struct SigningKey(Zeroizing<Vec<u8>>);

impl SigningKey {
    /// Decodes a secret as written in its environment variable.
    ///
    /// # Errors
    /// A reason, for the caller to put next to the variable's name: the
    /// secret is empty, is not valid base64 (for [`SecretFormat::Whsec`]),
    /// or decodes to nothing.
    pub fn decode(secret: &str, format: SecretFormat) -> Result<SigningKey, &'static str> {
        let key = match format {
            SecretFormat::Raw => Zeroizing::new(secret.as_bytes().to_vec()),
            SecretFormat::Whsec => {
                let s = secret.trim();
                let s = s.strip_prefix("whsec_").unwrap_or(s);
                if s.is_empty() {
                    return Err("is empty");
                }
                // Decode straight into zeroizing memory.
                let mut buf = Zeroizing::new(Vec::with_capacity(s.len()));
                STANDARD
                    .decode_vec(s, &mut buf)
                    .map_err(|_| "is not standard base64 (with an optional whsec_ prefix)")?;
                buf
            }
        };
        if key.is_empty() {
            return Err("is empty");
        }
        Ok(SigningKey(key))
    }

    /// A key from raw bytes.
    #[cfg(test)]
    pub fn from_bytes(bytes: Vec<u8>) -> SigningKey {
        SigningKey(Zeroizing::new(bytes))
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length (long ones are hashed), so this
        // cannot fail; the Result exists for fixed-size MACs.
        HmacSha256::new_from_slice(&self.0).expect("HMAC accepts keys of any length")
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(<{} bytes redacted>)", self.0.len())
    }
}

/// One Standard Webhooks signature, `v1,<base64>`, over
/// `{id}.{timestamp}.{body}`.
pub fn standard_signature(key: &SigningKey, id: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = key.mac();
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header value: one signature per key, in key
/// order, separated by a space.
pub fn standard_header(keys: &[&SigningKey], id: &str, timestamp: u64, body: &[u8]) -> String {
    keys.iter()
        .map(|k| standard_signature(k, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `X-Hub-Signature-256` header value: `sha256=<lowercase hex>` over
/// the body.
pub fn github_signature(key: &SigningKey, body: &[u8]) -> String {
    let mut mac = key.mac();
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 2 * digest.len());
    out.push_str("sha256=");
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

const HEX: [u8; 16] = *b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TS: u64 = 1649367553;
    const BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const EXPECTED: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    #[test]
    fn standard_webhooks_published_vector() {
        let key = SigningKey::decode(SECRET, SecretFormat::Whsec).unwrap();
        assert_eq!(standard_signature(&key, ID, TS, BODY), EXPECTED);
        // Without the prefix, and with a stray newline, the key is the same.
        let bare = SECRET.strip_prefix("whsec_").unwrap();
        let key = SigningKey::decode(&format!("{bare}\n"), SecretFormat::Whsec).unwrap();
        assert_eq!(standard_signature(&key, ID, TS, BODY), EXPECTED);
    }

    #[test]
    fn any_change_to_id_timestamp_or_body_changes_the_signature() {
        let key = SigningKey::decode(SECRET, SecretFormat::Whsec).unwrap();
        assert_ne!(standard_signature(&key, "msg_x", TS, BODY), EXPECTED);
        assert_ne!(standard_signature(&key, ID, TS + 1, BODY), EXPECTED);
        assert_ne!(standard_signature(&key, ID, TS, b"{}"), EXPECTED);
    }

    #[test]
    fn rotation_sends_one_signature_per_key_in_order() {
        let new = SigningKey::from_bytes(b"new key".to_vec());
        let old = SigningKey::decode(SECRET, SecretFormat::Whsec).unwrap();
        let h = standard_header(&[&new, &old], ID, TS, BODY);
        let parts: Vec<&str> = h.split(' ').collect();
        assert_eq!(parts.len(), 2, "{h}");
        assert_eq!(parts[0], standard_signature(&new, ID, TS, BODY));
        assert_eq!(parts[1], EXPECTED);
    }

    #[test]
    fn github_signature_matches_rfc_4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let key = SigningKey::decode("Jefe", SecretFormat::Raw).unwrap();
        assert_eq!(
            github_signature(&key, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn bad_secrets_are_refused_with_a_reason() {
        assert_eq!(
            SigningKey::decode("", SecretFormat::Raw).unwrap_err(),
            "is empty"
        );
        assert_eq!(
            SigningKey::decode("whsec_", SecretFormat::Whsec).unwrap_err(),
            "is empty"
        );
        assert_eq!(
            SigningKey::decode("  \n", SecretFormat::Whsec).unwrap_err(),
            "is empty"
        );
        let e = SigningKey::decode("whsec_not*base64", SecretFormat::Whsec).unwrap_err();
        assert!(e.contains("base64"), "{e}");
        // A raw secret is taken byte for byte, whitespace included.
        let raw = SigningKey::decode(" k ", SecretFormat::Raw).unwrap();
        let trimmed = SigningKey::decode("k", SecretFormat::Raw).unwrap();
        assert_ne!(
            github_signature(&raw, b"x"),
            github_signature(&trimmed, b"x")
        );
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let key = SigningKey::from_bytes(b"topsecret".to_vec());
        let d = format!("{key:?}");
        assert_eq!(d, "SigningKey(<9 bytes redacted>)");
    }
}
