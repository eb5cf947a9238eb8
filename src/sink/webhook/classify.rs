//! Response classification and `Retry-After` parsing: pure functions, no
//! I/O, so each row of the table below is a unit test.
//!
//! | response | outcome |
//! |---|---|
//! | 2xx | success |
//! | 408, 429, 5xx | transient, with `Retry-After` as the retry delay |
//! | timeouts, connection, DNS and other transport errors | transient |
//! | other 4xx, including 410 | permanent: status and up to 1 KiB of body |
//! | 3xx | permanent: redirects are not followed |
//! | anything else (1xx, 600 and above) | transient |
//!
//! A request the client could not even build (it never left the process)
//! is permanent, since trying again builds the same request.

use std::time::{Duration, SystemTime};

use crate::sink::{DeliveryError, DeliveryResult};

/// Most response-body bytes quoted in an error, and so in the DLQ.
pub const ERROR_BODY_MAX: usize = 1024;

/// Most bytes of a `Location` header quoted in an error.
const LOCATION_MAX: usize = 256;

/// What the sink saw of a response, enough to classify it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response<'a> {
    /// The status code.
    pub status: u16,
    /// The parsed `Retry-After`, if the response carried a valid one.
    pub retry_after: Option<Duration>,
    /// The `Location` header, if any and if it is visible ASCII.
    pub location: Option<&'a str>,
    /// The start of the body: at most [`ERROR_BODY_MAX`] bytes are quoted.
    pub body: &'a [u8],
}

/// How a request failed before a response arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// The per-request timeout passed.
    Timeout,
    /// Connecting failed: DNS, refused, unreachable, TLS handshake.
    Connect,
    /// The request could not be built (it was never sent).
    Build,
    /// Anything else on the wire: a reset, a malformed response.
    Other,
}

/// Classifies a response.
pub fn response(r: &Response<'_>) -> DeliveryResult {
    let status = r.status;
    let text = || describe(status, r.body);
    match status {
        200..=299 => Ok(()),
        300..=399 => {
            let to = r
                .location
                .map(|l| format!(" to {}", sanitize(truncate(l.as_bytes(), LOCATION_MAX))))
                .unwrap_or_default();
            Err(DeliveryError::permanent(format!(
                "{}; redirect{to} not followed",
                text()
            )))
        }
        408 | 429 | 500..=599 => Err(DeliveryError::Transient {
            error: text(),
            retry_after: r.retry_after,
        }),
        400..=499 => Err(DeliveryError::permanent(text())),
        _ => Err(DeliveryError::Transient {
            error: format!("{}; unexpected status", text()),
            retry_after: r.retry_after,
        }),
    }
}

/// Classifies a failure before any response. `detail` should carry no URL
/// (it may hold credentials).
pub fn transport(kind: Transport, detail: &str) -> DeliveryError {
    match kind {
        Transport::Timeout => DeliveryError::transient(format!("timed out: {detail}")),
        Transport::Connect => DeliveryError::transient(format!("connect failed: {detail}")),
        Transport::Other => DeliveryError::transient(format!("request failed: {detail}")),
        Transport::Build => DeliveryError::permanent(format!("request not built: {detail}")),
    }
}

/// `HTTP 503` plus, when the body is not empty, `: ` and its first KiB.
fn describe(status: u16, body: &[u8]) -> String {
    let body = truncate(body, ERROR_BODY_MAX);
    if body.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {}", sanitize(body))
    }
}

fn truncate(b: &[u8], max: usize) -> &[u8] {
    b.get(..max).unwrap_or(b)
}

/// Bytes from the network as one safe line: invalid UTF-8 becomes U+FFFD and
/// control characters are escaped, so a receiver cannot forge log lines.
fn sanitize(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses a `Retry-After` value: delta-seconds (`120`) or an HTTP date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`), relative to `now`. A date in the
/// past is zero. Delta-seconds too large for a `u64` saturate; the worker
/// caps the delay at `SinkConfig::retry_after_max` anyway. Anything else is
/// `None`, and the worker falls back to its backoff.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16) -> Response<'static> {
        Response {
            status,
            retry_after: None,
            location: None,
            body: b"",
        }
    }

    #[test]
    fn the_classification_table() {
        for s in [200, 201, 202, 204, 299] {
            assert_eq!(response(&resp(s)), Ok(()), "{s}");
        }
        for s in [408, 429, 500, 502, 503, 504, 599] {
            let e = response(&resp(s)).unwrap_err();
            assert!(e.is_transient(), "{s}");
            assert_eq!(e.to_string(), format!("transient: HTTP {s}"));
        }
        for s in [400, 401, 403, 404, 409, 410, 413, 422, 499] {
            let e = response(&resp(s)).unwrap_err();
            assert_eq!(e, DeliveryError::permanent(format!("HTTP {s}")), "{s}");
        }
        for s in [300, 301, 302, 303, 307, 308] {
            let e = response(&resp(s)).unwrap_err();
            assert!(!e.is_transient(), "{s}");
            assert_eq!(
                e.to_string(),
                format!("permanent: HTTP {s}; redirect not followed")
            );
        }
        for s in [101, 600, 999] {
            assert!(response(&resp(s)).unwrap_err().is_transient(), "{s}");
        }
    }

    #[test]
    fn retry_after_rides_on_transient_statuses_only() {
        let wait = Some(Duration::from_secs(7));
        let r = Response {
            retry_after: wait,
            ..resp(429)
        };
        assert_eq!(response(&r).unwrap_err().retry_after(), wait);
        let r = Response {
            retry_after: wait,
            ..resp(400)
        };
        assert_eq!(response(&r).unwrap_err().retry_after(), None);
    }

    #[test]
    fn errors_quote_one_kib_of_body_safely() {
        let mut body = vec![b'a'; 1000];
        body.extend_from_slice(&[b'b'; 2000]);
        let r = Response {
            body: &body,
            ..resp(400)
        };
        let DeliveryError::Permanent(msg) = response(&r).unwrap_err() else {
            panic!("400 must be permanent");
        };
        let quoted = msg.strip_prefix("HTTP 400: ").unwrap();
        assert_eq!(quoted.len(), ERROR_BODY_MAX);
        assert_eq!(quoted.matches('a').count(), 1000);
        assert_eq!(quoted.matches('b').count(), 24);

        let r = Response {
            body: b"line1\nforged\x1b[31m \xff",
            ..resp(422)
        };
        assert_eq!(
            response(&r).unwrap_err().to_string(),
            "permanent: HTTP 422: line1\\nforged\\u{1b}[31m \u{fffd}"
        );
    }

    #[test]
    fn redirects_name_their_target() {
        let r = Response {
            location: Some("https://elsewhere/x"),
            ..resp(301)
        };
        assert_eq!(
            response(&r).unwrap_err(),
            DeliveryError::permanent("HTTP 301; redirect to https://elsewhere/x not followed")
        );
    }

    #[test]
    fn transport_errors_are_transient_unless_never_sent() {
        for k in [Transport::Timeout, Transport::Connect, Transport::Other] {
            assert!(transport(k, "x").is_transient(), "{k:?}");
        }
        assert!(!transport(Transport::Build, "x").is_transient());
        assert_eq!(
            transport(Transport::Connect, "dns error").to_string(),
            "transient: connect failed: dns error"
        );
    }

    #[test]
    fn retry_after_delta_seconds() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        for bad in ["", " ", "-1", "1.5", "2s", "soon", "+3"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_http_date() {
        // Wed, 21 Oct 2015 07:28:00 GMT is 1445412480.
        let date = "Wed, 21 Oct 2015 07:28:00 GMT";
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480 - 90);
        assert_eq!(parse_retry_after(date, now), Some(Duration::from_secs(90)));
        let later = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480 + 5);
        assert_eq!(parse_retry_after(date, later), Some(Duration::ZERO));
        // The obsolete forms HTTP still allows.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480 - 1);
        for d in [
            "Wednesday, 21-Oct-15 07:28:00 GMT",
            "Wed Oct 21 07:28:00 2015",
        ] {
            assert_eq!(
                parse_retry_after(d, now),
                Some(Duration::from_secs(1)),
                "{d}"
            );
        }
        assert_eq!(
            parse_retry_after("Wed, 32 Oct 2015 07:28:00 GMT", now),
            None
        );
    }
}
