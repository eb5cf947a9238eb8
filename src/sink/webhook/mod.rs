//! The webhook sink: one signed HTTP POST per record.
//!
//! Invariants:
//! - the `webhook-id` of a record is its delivery id, so it is the same on
//!   every attempt, after a restart and after a redrive, and contains no `.`;
//! - every attempt is signed afresh with the clock's current Unix seconds,
//!   so a retry hours later still passes a receiver's timestamp tolerance;
//! - the body is the record's payload, byte for byte;
//! - redirects are never followed, and at most `response_body_max` bytes
//!   (plus one network chunk) of a response are read, of which at most
//!   1 KiB is kept;
//! - secrets are read from the environment once, at construction, held in
//!   zeroizing memory, and never printed: `Debug` shows how many keys there
//!   are, not what they are;
//! - a request is signed with every key still active at its timestamp, and
//!   is not sent at all when none is (the `keys` module).
//!
//! How responses become Ok, transient or permanent is in the table of the
//! `classify` module; `docs/webhooks.md` has the whole contract for receivers.

mod classify;
mod config;
mod keys;
mod sign;

use std::ffi::OsString;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{Stream, StreamExt};
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};

use self::classify::{Response, Transport};
use self::keys::KeyRing;
use super::{BoxFuture, DeliveryContext, DeliveryError, DeliveryResult, Sink};
use crate::error::{Error, Result};
use crate::types::Record;

pub use self::classify::parse_retry_after;
pub use self::config::{Scheme, SecretFormat, SecretSpec, WebhookConfig};

/// The `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("outbox/", env!("CARGO_PKG_VERSION"));

/// The `Content-Type` when the record has no `content-type` header.
pub const DEFAULT_CONTENT_TYPE: &str = "application/json";

/// The Standard Webhooks headers, and GitHub's signature header.
const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
const HUB_SIGNATURE_256: HeaderName = HeaderName::from_static("x-hub-signature-256");

/// Headers the sink sets itself, which configuration may not override.
const RESERVED: [&str; 10] = [
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "host",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-hub-signature-256",
];

/// The source of `webhook-timestamp`: Unix seconds. Injectable so tests can
/// fix the time.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock in Unix seconds (0 if it is set before 1970).
pub fn system_clock() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// POSTs each record to one URL, signed. See the module docs.
pub struct WebhookSink {
    client: reqwest::Client,
    url: reqwest::Url,
    scheme: Scheme,
    keys: KeyRing,
    headers: HeaderMap,
    timeout: Duration,
    body_max: usize,
    clock: Clock,
}

impl WebhookSink {
    /// Builds the sink, reading its secrets from the process environment.
    ///
    /// # Errors
    /// As [`WebhookSink::with_env`].
    pub fn new(config: &WebhookConfig) -> Result<WebhookSink> {
        Self::with_env(config, |name| std::env::var_os(name))
    }

    /// Builds the sink, reading each secret variable through `lookup`
    /// (the process environment in [`WebhookSink::new`]).
    ///
    /// # Errors
    /// [`crate::ConfigError::Invalid`] naming the setting when: the URL does
    /// not parse or is not http(s); the secrets are missing, too many, or
    /// more than one under the `github` scheme; a secret variable is unset,
    /// not UTF-8, empty or does not decode (the error names the variable,
    /// never its value); every secret has expired by the system clock;
    /// `timeout_ms` is 0; a static header is invalid or one the sink sets
    /// itself; or the HTTP client cannot be built.
    pub fn with_env(
        config: &WebhookConfig,
        lookup: impl Fn(&str) -> Option<OsString>,
    ) -> Result<WebhookSink> {
        let url = parse_url(&config.url)?;
        let keys = KeyRing::read(config, lookup, system_clock())?;
        if config.timeout_ms == 0 {
            return Err(Error::config("timeout_ms", "must be above zero"));
        }
        let headers = static_headers(config)?;
        let timeout = config.timeout();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| Error::config("webhook", format!("HTTP client: {e}")))?;
        Ok(WebhookSink {
            client,
            url,
            scheme: config.scheme,
            keys,
            headers,
            timeout,
            body_max: config.response_body_max,
            clock: Arc::new(system_clock),
        })
    }

    /// Replaces the clock that stamps `webhook-timestamp` (the system clock
    /// by default).
    pub fn with_clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Sends `record` once, under the webhook id `id`, and classifies the
    /// outcome. [`Sink::deliver`] calls it with the record's delivery id;
    /// call it directly to send with an id of your own.
    ///
    /// # Errors
    /// Permanent when `id` is empty, contains `.` or is not a valid header
    /// value, or the record's `content-type` is not a valid header value;
    /// otherwise as the response classifies (the table in
    /// `docs/webhooks.md`).
    ///
    /// # Cancel safety
    /// Dropping the future abandons the request: the receiver may or may
    /// not have got it, and nothing says which. The engine drops it only
    /// when a shutdown's drain timeout passes or the `Outbox` is dropped;
    /// the record is then delivered again (same `webhook-id`) after the
    /// next open, and receivers deduplicate by that id.
    pub async fn send(&self, id: &str, record: &Record) -> DeliveryResult {
        let headers = self.request_headers(id, record)?;
        let sent = self
            .client
            .post(self.url.clone())
            .headers(headers)
            .timeout(self.timeout)
            .body(record.payload.clone())
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => return Err(transport_error(&e)),
        };
        let status = resp.status().as_u16();
        let text = |name: header::HeaderName| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after =
            text(header::RETRY_AFTER).and_then(|v| parse_retry_after(&v, SystemTime::now()));
        let location = text(header::LOCATION);
        let drained = drain(resp.bytes_stream(), self.body_max).await;
        tracing::debug!(
            webhook_id = id,
            status,
            body_read = drained.read,
            "webhook response"
        );
        classify::response(&Response {
            status,
            retry_after,
            location: location.as_deref(),
            body: &drained.head,
        })
    }

    fn request_headers(
        &self,
        id: &str,
        record: &Record,
    ) -> std::result::Result<HeaderMap, DeliveryError> {
        if id.is_empty() || id.contains('.') {
            return Err(DeliveryError::permanent(format!(
                "webhook id `{id}` is empty or contains `.`"
            )));
        }
        let id_value = HeaderValue::from_str(id).map_err(|_| {
            DeliveryError::permanent(format!("webhook id `{id}` is not a valid header value"))
        })?;
        let content_type = record
            .header("content-type")
            .unwrap_or(DEFAULT_CONTENT_TYPE);
        let content_type = HeaderValue::from_str(content_type).map_err(|_| {
            DeliveryError::permanent(
                "the record's content-type header is not a valid HTTP header value",
            )
        })?;
        let mut h = self.headers.clone();
        h.insert(header::CONTENT_TYPE, content_type);
        h.insert(WEBHOOK_ID, id_value);
        let body = record.payload.as_slice();
        let timestamp = (self.clock)();
        let keys = self.keys.active(timestamp).inspect_err(|e| {
            tracing::error!(webhook_id = id, error = %e, "webhook request not sent");
        })?;
        let signature = match self.scheme {
            Scheme::Standard => {
                h.insert(WEBHOOK_TIMESTAMP, HeaderValue::from(timestamp));
                (
                    WEBHOOK_SIGNATURE,
                    sign::standard_header(&keys, id, timestamp, body),
                )
            }
            Scheme::Github => {
                // `KeyRing::read` allows exactly one key for this scheme, and
                // `active` returns at least one.
                let key = keys.first().ok_or_else(|| {
                    DeliveryError::transient("github scheme without an active secret")
                })?;
                (HUB_SIGNATURE_256, sign::github_signature(key, body))
            }
        };
        // Base64 and hex are always valid header values.
        let value = HeaderValue::from_str(&signature.1)
            .map_err(|_| DeliveryError::permanent("signature is not a valid header value"))?;
        h.insert(signature.0, value);
        Ok(h)
    }
}

impl Sink for WebhookSink {
    fn deliver<'a>(
        &'a self,
        record: &'a Record,
        ctx: &'a DeliveryContext<'a>,
    ) -> BoxFuture<'a, DeliveryResult> {
        Box::pin(async move { self.send(&ctx.delivery_id.to_string(), record).await })
    }

    fn kind(&self) -> &'static str {
        "webhook"
    }
}

impl fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSink")
            .field("url", &config::redact_url(self.url.as_str()))
            .field("scheme", &self.scheme)
            .field("keys", &format_args!("<{} redacted>", self.keys.len()))
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .field("response_body_max", &self.body_max)
            .finish_non_exhaustive()
    }
}

fn parse_url(raw: &str) -> Result<reqwest::Url> {
    let url = reqwest::Url::parse(raw).map_err(|e| {
        Error::config(
            "url",
            format!("`{}` does not parse: {e}", config::redact_url(raw)),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(Error::config(
            "url",
            format!(
                "`{}` must be an http or https URL with a host",
                config::redact_url(raw)
            ),
        ));
    }
    Ok(url)
}

fn static_headers(config: &WebhookConfig) -> Result<HeaderMap> {
    let mut map = HeaderMap::new();
    for (name, value) in &config.headers {
        let param = || format!("headers.{name}");
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Error::config(param(), "is not a valid header name"))?;
        if RESERVED.contains(&n.as_str()) {
            return Err(Error::config(param(), "is set by the webhook sink itself"));
        }
        let mut v = HeaderValue::from_str(value)
            .map_err(|_| Error::config(param(), "the value is not a valid header value"))?;
        v.set_sensitive(true);
        map.append(n, v);
    }
    Ok(map)
}

fn transport_error(e: &reqwest::Error) -> DeliveryError {
    let kind = if e.is_timeout() {
        Transport::Timeout
    } else if e.is_connect() {
        Transport::Connect
    } else if e.is_builder() {
        Transport::Build
    } else {
        Transport::Other
    };
    // reqwest's own message is terse ("error sending request"); the causes
    // say what happened. The URL is left out: it may carry credentials.
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    if let Some(url) = e.url() {
        detail = detail.replace(url.as_str(), "<url>");
    }
    classify::transport(kind, &detail)
}

/// What draining a response body kept.
#[derive(Debug, PartialEq, Eq)]
struct Drained {
    /// The first [`classify::ERROR_BODY_MAX`] bytes.
    head: Vec<u8>,
    /// Bytes read in all.
    read: usize,
}

/// Reads `body` chunk by chunk until it ends, fails, or `cap` bytes have
/// been read, keeping only the first KiB. Memory stays at one chunk plus
/// that KiB whatever the receiver sends; dropping the rest closes the
/// connection rather than reading it.
async fn drain<S, B, E>(body: S, cap: usize) -> Drained
where
    S: Stream<Item = std::result::Result<B, E>>,
    B: AsRef<[u8]>,
{
    let mut body = std::pin::pin!(body);
    let mut head = Vec::new();
    let mut read = 0usize;
    while read < cap {
        let Some(Ok(chunk)) = body.next().await else {
            break;
        };
        let chunk = chunk.as_ref();
        read = read.saturating_add(chunk.len());
        let room = classify::ERROR_BODY_MAX.saturating_sub(head.len());
        head.extend_from_slice(chunk.get(..room).unwrap_or(chunk));
    }
    Drained { head, read }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    fn config_err(c: &WebhookConfig, lookup: impl Fn(&str) -> Option<OsString>) -> Error {
        let e = WebhookSink::with_env(c, lookup).err().unwrap();
        assert!(e.is_config(), "{e}");
        e
    }

    #[test]
    fn bad_secrets_name_the_variable_and_never_echo_the_value() {
        let c = WebhookConfig::new("http://127.0.0.1:9/x", "HOOK_SECRET");
        for (value, why) in [
            ("", "is empty"),
            ("whsec_", "is empty"),
            ("whsec_%%notbase64!!", "is not standard base64"),
        ] {
            let e = config_err(&c, env(&[("HOOK_SECRET", value)])).to_string();
            assert!(e.contains("`HOOK_SECRET`") && e.contains(why), "{e}");
            if !value.is_empty() {
                assert!(!e.contains(value), "{e}");
            }
        }
        let e = config_err(&c, env(&[])).to_string();
        assert!(e.contains("`HOOK_SECRET` is not set"), "{e}");
    }

    #[test]
    fn secret_counts_are_checked() {
        let mut c = WebhookConfig::new("http://127.0.0.1:9/x", "A");
        let lookup = || env(&[("A", SECRET), ("B", SECRET), ("C", SECRET)]);
        c.secret_env = vec![];
        let e = config_err(&c, lookup()).to_string();
        assert!(e.contains("secrets: missing"), "{e}");
        c.secret_env = vec!["A".into(), "B".into(), "C".into()];
        assert!(WebhookSink::with_env(&c, lookup()).is_ok());
        c.scheme = Scheme::Github;
        let e = config_err(&c, lookup()).to_string();
        assert!(e.contains("exactly one"), "{e}");
    }

    #[test]
    fn a_config_whose_every_secret_expired_is_refused_at_start() {
        let past = SystemTime::now() - Duration::from_secs(60);
        let mut c = WebhookConfig::new("http://127.0.0.1:9/x", "A");
        c.secret_env.clear();
        c.secrets = vec![SecretSpec::expiring("A", past)];
        let e = config_err(&c, env(&[("A", SECRET)])).to_string();
        assert!(e.contains("every secret has expired"), "{e}");
        c.secrets.push(SecretSpec::expiring(
            "B",
            SystemTime::now() + Duration::from_secs(3600),
        ));
        let sink = WebhookSink::with_env(&c, env(&[("B", SECRET)])).unwrap();
        assert!(
            format!("{sink:?}").contains("<1 redacted>"),
            "A is not read"
        );
    }

    #[test]
    fn no_request_is_built_once_the_last_key_has_expired() {
        let mut c = WebhookConfig::new("http://127.0.0.1:9/x", "A");
        c.secret_env.clear();
        let expiry = system_clock() + 100;
        c.secrets = vec![
            SecretSpec::new("A"),
            SecretSpec::expiring("B", UNIX_EPOCH + Duration::from_secs(expiry)),
        ];
        let lookup = || env(&[("A", SECRET), ("B", "whsec_bmV3")]);
        let rec = Record::new(b"{}".to_vec());
        let sig_count = |sink: &WebhookSink| {
            let h = sink.request_headers("msg_1", &rec).unwrap();
            h["webhook-signature"].to_str().unwrap().split(' ').count()
        };
        let sink = WebhookSink::with_env(&c, lookup()).unwrap();
        assert_eq!(sig_count(&sink.with_clock(move || expiry - 1)), 2);
        let sink = WebhookSink::with_env(&c, lookup()).unwrap();
        assert_eq!(sig_count(&sink.with_clock(move || expiry)), 1);

        // Only B, which expires while the sink runs.
        c.secrets.remove(0);
        let sink = WebhookSink::with_env(&c, lookup())
            .unwrap()
            .with_clock(move || expiry);
        let e = sink.request_headers("msg_1", &rec).unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(e.to_string().contains("no webhook secret is active"), "{e}");
        c.scheme = Scheme::Github;
        let sink = WebhookSink::with_env(&c, lookup())
            .unwrap()
            .with_clock(move || expiry + 1);
        let e = sink.request_headers("msg_1", &rec).unwrap_err();
        assert!(e.to_string().contains("no webhook secret is active"), "{e}");
    }

    #[test]
    fn urls_timeouts_and_headers_are_checked() {
        let lookup = || env(&[("S", SECRET)]);
        for (url, param) in [
            ("not a url", "url"),
            ("ftp://h/x", "url"),
            ("file:///etc/passwd", "url"),
        ] {
            let c = WebhookConfig::new(url, "S");
            let e = config_err(&c, lookup());
            assert!(
                matches!(&e, Error::Config(crate::ConfigError::Invalid { param: p, .. }) if p == param),
                "{e}"
            );
        }
        let mut c = WebhookConfig::new("https://u:pw@h/x", "S");
        c.timeout_ms = 0;
        let e = config_err(&c, lookup()).to_string();
        assert!(e.contains("timeout_ms"), "{e}");
        for (name, value, why) in [
            ("Webhook-Signature", "v1,x", "set by the webhook sink"),
            ("User-Agent", "me", "set by the webhook sink"),
            ("bad name", "x", "not a valid header name"),
            ("X-Ok", "line\nbreak", "not a valid header value"),
        ] {
            let mut c = WebhookConfig::new("https://h/x", "S");
            c.headers.insert(name.into(), value.into());
            let e = config_err(&c, lookup()).to_string();
            assert!(
                e.contains(&format!("headers.{name}")) && e.contains(why),
                "{e}"
            );
        }
    }

    #[test]
    fn debug_shows_no_key_material() {
        let mut c = WebhookConfig::new("https://user:pw@h/x", "S");
        c.headers
            .insert("Authorization".into(), "Bearer tok".into());
        let sink = WebhookSink::with_env(&c, env(&[("S", "whsec_c2VjcmV0a2V5")])).unwrap();
        let d = format!("{sink:?}");
        assert!(d.contains("<1 redacted>"), "{d}");
        for leak in ["c2VjcmV0a2V5", "secretkey", "Bearer tok", ":pw@"] {
            assert!(!d.contains(leak), "{leak} in {d}");
        }
    }

    #[test]
    fn request_headers_carry_id_timestamp_and_both_signatures() {
        let mut c = WebhookConfig::new("http://127.0.0.1:9/x", "NEW");
        c.secret_env.push("OLD".into());
        c.headers.insert("X-Tenant".into(), "blue".into());
        let sink = WebhookSink::with_env(&c, env(&[("NEW", "whsec_bmV3"), ("OLD", SECRET)]))
            .unwrap()
            .with_clock(|| 1649367553);
        let rec = Record::new(br#"{"email":"test@example.com","username":"test_user"}"#.to_vec());
        let h = sink
            .request_headers("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", &rec)
            .unwrap();
        let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
        assert_eq!(get("webhook-id"), "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk");
        assert_eq!(get("webhook-timestamp"), "1649367553");
        assert_eq!(get("content-type"), "application/json");
        assert_eq!(get("x-tenant"), "blue");
        let sigs: Vec<&str> = get("webhook-signature").split(' ').collect();
        assert_eq!(sigs.len(), 2);
        assert_eq!(sigs[1], "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");

        let rec = rec.with_header("Content-Type", "text/plain; charset=utf-8");
        let h = sink.request_headers("id", &rec).unwrap();
        assert_eq!(h["content-type"], "text/plain; charset=utf-8");
        for bad in ["", "a.b", "bad\nid"] {
            let e = sink.request_headers(bad, &rec).unwrap_err();
            assert!(!e.is_transient(), "{bad:?}");
        }
        let rec = Record::new(b"x".to_vec()).with_header("content-type", "a\nb");
        assert!(!sink.request_headers("id", &rec).unwrap_err().is_transient());
    }

    #[tokio::test]
    async fn drain_stops_at_the_cap_and_keeps_one_kib() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let pulled = AtomicUsize::new(0);
        // 10 MiB in 64 KiB chunks, counting what is pulled.
        let body = futures::stream::iter((0..160).map(|_| {
            pulled.fetch_add(1, Ordering::Relaxed);
            Ok::<_, ()>(vec![7u8; 64 << 10])
        }));
        let d = drain(body, 100 << 10).await;
        assert_eq!(pulled.load(Ordering::Relaxed), 2, "stops once past the cap");
        assert_eq!(d.read, 128 << 10);
        assert_eq!(d.head, vec![7u8; 1024]);

        let d = drain(
            futures::stream::iter([Ok::<_, ()>(b"short".to_vec())]),
            1 << 20,
        )
        .await;
        assert_eq!(
            d,
            Drained {
                head: b"short".to_vec(),
                read: 5
            }
        );
        let d = drain(
            futures::stream::iter([Ok(b"ab".to_vec()), Err(()), Ok(b"cd".to_vec())]),
            10,
        )
        .await;
        assert_eq!(
            d,
            Drained {
                head: b"ab".to_vec(),
                read: 2
            },
            "stops at an error"
        );
        let d = drain(futures::stream::iter([Ok::<_, ()>(b"ab".to_vec())]), 0).await;
        assert_eq!(
            d,
            Drained {
                head: vec![],
                read: 0
            },
            "cap 0 reads nothing"
        );
    }
}
