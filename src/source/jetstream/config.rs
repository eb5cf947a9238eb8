//! [`JetStreamSourceConfig`]: the `[source]` table of `kind = "jetstream"`.

use std::time::Duration;

use serde::Deserialize;

use super::map::Validate;
use crate::error::ConfigError;

/// When a message is acked to JetStream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// Once every sink's durable offset has passed the record. The default:
    /// the end-to-end guarantee.
    #[default]
    Delivered,
    /// Once the record is durable in outbox's log (then outbox, not
    /// JetStream, holds it until the sinks have it).
    Accepted,
}

/// The settings of the JetStream source.
///
/// In TOML (with `kind = "jetstream"` in the same `[source]` table):
///
/// ```toml
/// url = "nats://127.0.0.1:4222"
/// stream = "ORDERS"
/// consumer = "outbox"
/// ack = "delivered"            # or "accepted"
/// filter_subject = "orders.>"  # optional
/// validate = "json"            # or "none"
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JetStreamSourceConfig {
    /// The NATS server(s): one URL, or several separated by commas. Required.
    pub url: String,
    /// The stream to read. Required; it must exist.
    pub stream: String,
    /// The durable pull consumer. Required; created (explicit ack) when
    /// missing, and then shared by every daemon configured with it.
    pub consumer: String,
    /// Default [`AckMode::Delivered`].
    #[serde(default)]
    pub ack: AckMode,
    /// Only messages on these subjects, when the consumer is created. An
    /// existing consumer must have the same filter.
    #[serde(default)]
    pub filter_subject: Option<String>,
    /// Default [`Validate::Json`].
    #[serde(default)]
    pub validate: Validate,
    /// The consumer's `ack_wait` in milliseconds, when it is created.
    /// Default 30,000. An existing consumer keeps its own.
    #[serde(default = "default_ack_wait_ms")]
    pub ack_wait_ms: u64,
    /// The consumer's `max_ack_pending`, when it is created: how many
    /// messages the whole fleet may hold unacked. Default 10,000. See
    /// `docs/scaling.md` for sizing it against the sinks' lag limits.
    #[serde(default = "default_max_ack_pending")]
    pub max_ack_pending: i64,
}

fn default_ack_wait_ms() -> u64 {
    30_000
}

fn default_max_ack_pending() -> i64 {
    10_000
}

impl JetStreamSourceConfig {
    /// A config with every default.
    pub fn new(
        url: impl Into<String>,
        stream: impl Into<String>,
        consumer: impl Into<String>,
    ) -> Self {
        JetStreamSourceConfig {
            url: url.into(),
            stream: stream.into(),
            consumer: consumer.into(),
            ack: AckMode::default(),
            filter_subject: None,
            validate: Validate::default(),
            ack_wait_ms: default_ack_wait_ms(),
            max_ack_pending: default_max_ack_pending(),
        }
    }

    /// `ack_wait_ms` as a duration.
    pub fn ack_wait(&self) -> Duration {
        Duration::from_millis(self.ack_wait_ms)
    }

    /// Checks every value.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key: a `url` that is empty or not a
    /// list of NATS URLs; a `stream` or
    /// `consumer` name that is empty or has `.`, `*`, `>` or whitespace
    /// (JetStream refuses those); an empty `filter_subject`; `ack_wait_ms`
    /// under 1000; `max_ack_pending` under 1.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::nats::server_addrs("source.url", &self.url)?;
        check_name("source.stream", &self.stream)?;
        check_name("source.consumer", &self.consumer)?;
        if let Some(f) = &self.filter_subject
            && f.trim().is_empty()
        {
            return Err(ConfigError::invalid("source.filter_subject", "is empty"));
        }
        if self.ack_wait_ms < 1000 {
            return Err(ConfigError::invalid(
                "source.ack_wait_ms",
                format!("{} is under 1000 ms", self.ack_wait_ms),
            ));
        }
        if self.max_ack_pending < 1 {
            return Err(ConfigError::invalid(
                "source.max_ack_pending",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

fn check_name(key: &str, s: &str) -> Result<(), ConfigError> {
    if s.is_empty() {
        return Err(ConfigError::invalid(key, "is empty"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| matches!(c, '.' | '*' | '>' | '/' | '\\') || c.is_whitespace())
    {
        return Err(ConfigError::invalid(
            key,
            format!("`{s}` has {c:?}, which JetStream does not allow in a name"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_checks() {
        let c = JetStreamSourceConfig::new("nats://h", "S", "c");
        assert_eq!(c.ack, AckMode::Delivered);
        assert_eq!(c.validate, Validate::Json);
        assert_eq!(c.ack_wait(), Duration::from_secs(30));
        assert_eq!(c.max_ack_pending, 10_000);
        assert!(c.validate().is_ok());
        let bad = |f: &dyn Fn(&mut JetStreamSourceConfig), key: &str| {
            let mut c = JetStreamSourceConfig::new("nats://h", "S", "c");
            f(&mut c);
            let e = c.validate().unwrap_err();
            assert!(matches!(e, ConfigError::Invalid { .. }), "{e}");
            assert!(e.to_string().contains(key), "{e}");
        };
        bad(&|c| c.url = "".into(), "source.url");
        bad(&|c| c.stream = "".into(), "source.stream");
        bad(&|c| c.stream = "a.b".into(), "source.stream");
        bad(&|c| c.consumer = "a b".into(), "source.consumer");
        bad(&|c| c.consumer = "x>".into(), "source.consumer");
        bad(
            &|c| c.filter_subject = Some(" ".into()),
            "source.filter_subject",
        );
        bad(&|c| c.ack_wait_ms = 10, "source.ack_wait_ms");
        bad(&|c| c.max_ack_pending = 0, "source.max_ack_pending");
    }
}
