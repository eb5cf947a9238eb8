//! The JetStream sink: one JetStream publish per record, delivered only once
//! the stream has acknowledged it.
//!
//! Invariants:
//! - every publish carries `Nats-Msg-Id: <delivery id>`, so a record
//!   published again (a retry, a replay after a crash, a redrive) is
//!   recognised by the stream's deduplication for as long as the stream's
//!   `duplicate_window` covers it, and `PubAck.duplicate` says so;
//! - [`deliver`](JetStreamSink::publish) returns Ok only after the PubAck:
//!   the worker commits its offset past a record only once the stream holds
//!   it;
//! - every PubAck with `duplicate = true` is counted in
//!   [`JetStreamSinkStats::duplicates`];
//! - all state is behind `&self` (the client and the context are `Sync`,
//!   the counters are atomics), so any number of publishes may be in flight
//!   at once, each independent of the others.
//!
//! The stream's `duplicate_window` (2 minutes by default) must be longer
//! than the longest delay between two publishes of one record, such as an
//! outage followed by a replay: after it, a replayed record is stored a
//! second time. `docs/scaling.md` says how to size it.
//!
//! Record headers become NATS headers, except those whose name starts with
//! `Nats-`: those steer JetStream itself (`Nats-Expected-Last-Sequence`
//! would make a replay fail, a foreign `Nats-Msg-Id` would defeat the
//! deduplication), so they are left out.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use super::{BoxFuture, DeliveryContext, DeliveryError, DeliveryResult, Sink};
use crate::error::{ConfigError, Error, Result};
use crate::types::{DeliveryId, Record};

/// The settings of one JetStream sink.
///
/// In TOML (the `[sinks.NAME.jetstream]` table of a sink with
/// `kind = "jetstream"`):
///
/// ```toml
/// url = "nats://127.0.0.1:4222"
/// subject = "events.out"
/// timeout_ms = 10000
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JetStreamSinkConfig {
    /// The NATS server(s): one URL, or several separated by commas. Required.
    pub url: String,
    /// The subject every record is published to; a stream must capture it.
    /// Required.
    pub subject: String,
    /// How long one publish waits for its PubAck, in milliseconds. Default
    /// 10,000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    10_000
}

impl JetStreamSinkConfig {
    /// A config with the default timeout.
    pub fn new(url: impl Into<String>, subject: impl Into<String>) -> Self {
        JetStreamSinkConfig {
            url: url.into(),
            subject: subject.into(),
            timeout_ms: default_timeout_ms(),
        }
    }

    /// Checks every value.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key: an empty `url`, a `subject`
    /// that is empty, has a wildcard (`*`, `>`) or whitespace, or a
    /// `timeout_ms` of zero.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::nats::server_addrs("jetstream.url", &self.url)?;
        check_subject("jetstream.subject", &self.subject)?;
        if self.timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "jetstream.timeout_ms",
                "must be above zero",
            ));
        }
        Ok(())
    }
}

/// A subject one can publish to: non-empty tokens separated by `.`, no
/// wildcards, no whitespace.
fn check_subject(key: &str, s: &str) -> Result<(), ConfigError> {
    if s.is_empty() {
        return Err(ConfigError::invalid(key, "is empty"));
    }
    if s.split('.').any(|t| t.is_empty()) {
        return Err(ConfigError::invalid(
            key,
            format!("`{s}` has an empty token"),
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| *c == '*' || *c == '>' || c.is_whitespace())
    {
        return Err(ConfigError::invalid(
            key,
            format!("`{s}` has {c:?}; a publish subject takes no wildcard or whitespace"),
        ));
    }
    Ok(())
}

/// What a JetStream sink counted since it was built.
#[derive(Debug, Default)]
pub struct JetStreamSinkStats {
    /// Publishes the stream acknowledged, duplicates included.
    pub acked: AtomicU64,
    /// PubAcks with `duplicate = true`: the stream already held this
    /// delivery id.
    pub duplicates: AtomicU64,
    /// Publishes that failed (no PubAck, or an error in it).
    pub failed: AtomicU64,
}

/// Publishes each record to a JetStream subject. See the module docs.
pub struct JetStreamSink {
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    subject: async_nats::Subject,
    stats: Arc<JetStreamSinkStats>,
}

impl JetStreamSink {
    /// Builds the sink and starts connecting. An unreachable server is not an
    /// error here: the client keeps reconnecting in the background, and each
    /// publish until then fails as transient, so the records wait in the log
    /// (and other sinks keep delivering).
    ///
    /// # Errors
    /// [`crate::ConfigError::Invalid`] for a bad setting or a URL the client
    /// cannot parse.
    ///
    /// # Cancel safety
    /// Cancel safe: dropped before it returns, nothing is published and the
    /// half-made client is dropped with it.
    pub async fn connect(config: &JetStreamSinkConfig) -> Result<JetStreamSink> {
        config.validate()?;
        let timeout = Duration::from_millis(config.timeout_ms);
        let addrs = crate::nats::server_addrs("jetstream.url", &config.url)?;
        let client = async_nats::ConnectOptions::new()
            .name(concat!("outbox/", env!("CARGO_PKG_VERSION"), " sink"))
            .retry_on_initial_connect()
            // Unlimited: the sink must come back after any outage.
            .max_reconnects(None)
            .connect(addrs)
            .await
            .map_err(|e| Error::config("jetstream.url", format!("`{}`: {e}", config.url)))?;
        let js = async_nats::jetstream::context::ContextBuilder::new()
            .timeout(timeout)
            .build(client.clone());
        Ok(JetStreamSink {
            client,
            js,
            subject: async_nats::Subject::from(config.subject.as_str()),
            stats: Arc::new(JetStreamSinkStats::default()),
        })
    }

    /// The sink's counters, shared: read them while it runs.
    pub fn stats(&self) -> Arc<JetStreamSinkStats> {
        self.stats.clone()
    }

    /// Publishes `record` under the message id `id` and waits for the
    /// PubAck. [`Sink::deliver`] calls it with the record's delivery id.
    ///
    /// # Errors
    /// Permanent when the record cannot be a NATS message (a header that is
    /// not a valid NATS header, a payload over the server's `max_payload`);
    /// transient for everything else (no connection, no PubAck in time, no
    /// stream for the subject, an error answer from the stream).
    ///
    /// # Cancel safety
    /// Dropping the future after the message was sent and before its PubAck
    /// leaves it unknown whether the stream stored it. Publishing again is
    /// safe: the message id (`Nats-Msg-Id`, the delivery id) lets the
    /// stream drop the second copy within its duplicate window.
    pub async fn publish(&self, record: &Record, id: DeliveryId) -> DeliveryResult {
        let headers = nats_headers(record, &id.to_string())?;
        let max = self.client.server_info().max_payload;
        // 0 until the first INFO from a server: then the client checks it.
        if max > 0 && record.payload.len() > max {
            return Err(DeliveryError::permanent(format!(
                "payload is {} bytes; the NATS server's max_payload is {max}",
                record.payload.len()
            )));
        }
        let payload = bytes::Bytes::copy_from_slice(&record.payload);
        let sent = self
            .js
            .publish_with_headers(self.subject.clone(), headers, payload)
            .await;
        let acked = match sent {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match acked {
            Ok(ack) => {
                self.stats.acked.fetch_add(1, Ordering::Relaxed);
                if ack.duplicate {
                    self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(id = %id, stream = %ack.stream, seq = ack.sequence, "jetstream sink: the stream already held this delivery id");
                }
                Ok(())
            }
            Err(e) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                Err(classify(&self.subject, &e))
            }
        }
    }
}

/// The NATS headers of a record: `Nats-Msg-Id`, then the record's own
/// headers but those named `Nats-*`.
///
/// # Errors
/// Permanent when a record header's name or value cannot be a NATS header.
fn nats_headers(record: &Record, msg_id: &str) -> std::result::Result<HeaderMap, DeliveryError> {
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
    for (k, v) in &record.headers {
        if k.len() >= 5 && k[..5].eq_ignore_ascii_case("nats-") {
            continue;
        }
        let name = HeaderName::from_str(k).map_err(|_| {
            DeliveryError::permanent(format!("header name {k:?} is not a valid NATS header"))
        })?;
        let value = HeaderValue::from_str(v).map_err(|_| {
            DeliveryError::permanent(format!("header {k:?} has a line break in its value"))
        })?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// Every failure to get a PubAck is worth a retry, save a payload the
/// server will never take: the stream may come back, be created, or catch
/// up. `WrongLast*` cannot happen (the `Nats-Expected-*` headers are never
/// sent) and is retried like the rest.
fn classify(subject: &async_nats::Subject, e: &PublishError) -> DeliveryError {
    let what = match e.kind() {
        PublishErrorKind::StreamNotFound => {
            format!("no stream captures subject `{subject}` (or JetStream is not ready)")
        }
        PublishErrorKind::TimedOut => "no PubAck in time".to_string(),
        PublishErrorKind::BrokenPipe => "connection lost before the PubAck".to_string(),
        _ => format!("publish to `{subject}` failed: {e}"),
    };
    DeliveryError::transient(format!("jetstream: {what}"))
}

impl Sink for JetStreamSink {
    fn deliver<'a>(
        &'a self,
        record: &'a Record,
        ctx: &'a DeliveryContext<'a>,
    ) -> BoxFuture<'a, DeliveryResult> {
        Box::pin(self.publish(record, ctx.delivery_id))
    }

    fn kind(&self) -> &'static str {
        "jetstream"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_checked_and_names_the_key() {
        assert!(
            JetStreamSinkConfig::new("nats://h:4222", "a.b")
                .validate()
                .is_ok()
        );
        for (cfg, key, why) in [
            (JetStreamSinkConfig::new(" ", "a"), "jetstream.url", "empty"),
            (
                JetStreamSinkConfig::new("u", ""),
                "jetstream.subject",
                "empty",
            ),
            (
                JetStreamSinkConfig::new("u", "a..b"),
                "jetstream.subject",
                "empty token",
            ),
            (
                JetStreamSinkConfig::new("u", "a.*"),
                "jetstream.subject",
                "wildcard",
            ),
            (
                JetStreamSinkConfig::new("u", "a.>"),
                "jetstream.subject",
                "wildcard",
            ),
            (
                JetStreamSinkConfig::new("u", "a b"),
                "jetstream.subject",
                "whitespace",
            ),
            (
                JetStreamSinkConfig {
                    timeout_ms: 0,
                    ..JetStreamSinkConfig::new("u", "a")
                },
                "jetstream.timeout_ms",
                "above zero",
            ),
        ] {
            let e = cfg.validate().unwrap_err();
            assert!(matches!(e, ConfigError::Invalid { .. }), "{e}");
            let e = e.to_string();
            assert!(e.contains(key) && e.contains(why), "{e}");
        }
    }

    #[test]
    fn headers_carry_the_msg_id_and_drop_jetstream_control_headers() {
        let r = Record::new(b"{}".to_vec())
            .with_header("content-type", "application/json")
            .with_header("Nats-Expected-Last-Sequence", "7")
            .with_header("nats-msg-id", "foreign")
            .with_header("x-a", "1")
            .with_header("x-a", "2");
        let h = nats_headers(&r, "msg_ab_1").unwrap();
        let ids: Vec<&str> = h
            .get_all(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.as_str())
            .collect();
        assert_eq!(ids, ["msg_ab_1"]);
        assert!(h.get("Nats-Expected-Last-Sequence").is_none());
        let xa: Vec<&str> = h.get_all("x-a").map(|v| v.as_str()).collect();
        assert_eq!(xa, ["1", "2"]);
        assert_eq!(
            h.get("content-type").map(|v| v.as_str()),
            Some("application/json")
        );
    }

    #[test]
    fn unrepresentable_headers_are_permanent() {
        for r in [
            Record::new(b"x".to_vec()).with_header("a:b", "1"),
            Record::new(b"x".to_vec()).with_header("a b", "1"),
            Record::new(b"x".to_vec()).with_header("a", "1\r\n2"),
        ] {
            let e = nats_headers(&r, "id").unwrap_err();
            assert!(!e.is_transient(), "{e}");
        }
    }
}
