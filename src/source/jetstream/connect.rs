//! Connection and consumer setup: connect, check the stream, get or create
//! the durable pull consumer and check that it acks explicitly.
//!
//! Exit codes of the binary for what fails here: a server that cannot be
//! reached is [`Error::Source`] (1); a stream that does not exist, or a
//! consumer whose settings outbox cannot work with, is
//! [`crate::ConfigError::Invalid`] (2), because only the operator can fix it.

use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::context::GetStreamErrorKind;

use super::config::JetStreamSourceConfig;
use super::map::StreamId;
use crate::error::{Error, Result};

/// How long the first connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one JetStream API request may take.
const API_TIMEOUT: Duration = Duration::from_secs(10);

/// A connected source: the client, its JetStream context, the consumer and
/// the `ack_wait` it has.
pub struct Connected {
    /// The NATS connection; it reconnects on its own after a loss.
    pub client: async_nats::Client,
    /// JetStream on that connection.
    pub js: async_nats::jetstream::Context,
    /// The durable pull consumer.
    pub consumer: PullConsumer,
    /// The consumer's `ack_wait`, as the server has it.
    pub ack_wait: Duration,
    /// The stream's name and creation time.
    pub stream: StreamId,
}

/// Connects and sets up the consumer.
///
/// # Errors
/// [`Error::Source`] when the server cannot be reached within 5 s or does not
/// answer a JetStream request; [`crate::ConfigError::Invalid`] naming
/// `source.stream` when the stream does not exist, or `source.consumer` when
/// the consumer exists with an ack policy other than explicit, is not a pull
/// consumer, or has another filter subject than `filter_subject`.
pub async fn connect(cfg: &JetStreamSourceConfig) -> Result<Connected> {
    cfg.validate()?;
    let addrs = crate::nats::server_addrs("source.url", &cfg.url)?;
    let client = async_nats::ConnectOptions::new()
        .name(concat!("outbox/", env!("CARGO_PKG_VERSION"), " source"))
        .connection_timeout(CONNECT_TIMEOUT)
        // Once up, reconnect forever: the source waits out an outage.
        .max_reconnects(None)
        .connect(addrs)
        .await
        .map_err(|e| Error::Source(format!("cannot connect to NATS at {}: {e}", cfg.url)))?;
    let js = async_nats::jetstream::context::ContextBuilder::new()
        .timeout(API_TIMEOUT)
        .build(client.clone());
    let (stream, consumer) = setup_consumer(&js, cfg).await?;
    let ack_wait = consumer.cached_info().config.ack_wait;
    Ok(Connected {
        client,
        js,
        consumer,
        ack_wait,
        stream,
    })
}

/// Gets the stream and gets or creates the consumer on it; returns the
/// stream's identity with the consumer. Called at start and again when the
/// consumer vanishes mid-run.
///
/// # Errors
/// As [`connect`].
pub async fn setup_consumer(
    js: &async_nats::jetstream::Context,
    cfg: &JetStreamSourceConfig,
) -> Result<(StreamId, PullConsumer)> {
    let stream = js.get_stream(&cfg.stream).await.map_err(|e| match e.kind() {
        GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND => {
            Error::config(
                "source.stream",
                format!(
                    "stream `{}` does not exist on {}; create it first (e.g. `nats stream add {}`)",
                    cfg.stream, cfg.url, cfg.stream
                ),
            )
        }
        _ => Error::Source(format!(
            "stream `{}` on {}: {e} (is JetStream enabled on the server?)",
            cfg.stream, cfg.url
        )),
    })?;
    let want = pull::Config {
        durable_name: Some(cfg.consumer.clone()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: cfg.ack_wait(),
        max_ack_pending: cfg.max_ack_pending,
        deliver_policy: DeliverPolicy::All,
        filter_subject: cfg.filter_subject.clone().unwrap_or_default(),
        ..Default::default()
    };
    let consumer: PullConsumer = stream
        .get_or_create_consumer(&cfg.consumer, want)
        .await
        .map_err(|e| {
            use async_nats::jetstream::stream::ConsumerErrorKind;
            match e.kind() {
                ConsumerErrorKind::InvalidConsumerType => Error::config(
                    "source.consumer",
                    format!(
                        "consumer `{}` on stream `{}` is a push consumer; outbox needs a durable pull consumer",
                        cfg.consumer, cfg.stream
                    ),
                ),
                _ => Error::Source(format!(
                    "consumer `{}` on stream `{}`: {e}",
                    cfg.consumer, cfg.stream
                )),
            }
        })?;
    check_consumer(cfg, &consumer.cached_info().config)?;
    let id = StreamId {
        name: cfg.stream.clone(),
        created_ns: stream.cached_info().created.unix_timestamp_nanos(),
    };
    Ok((id, consumer))
}

/// An existing consumer must ack explicitly (outbox acks each message on
/// its own, when its record is done) and filter what `filter_subject` says.
fn check_consumer(
    cfg: &JetStreamSourceConfig,
    have: &async_nats::jetstream::consumer::Config,
) -> Result<()> {
    if have.ack_policy != AckPolicy::Explicit {
        return Err(Error::config(
            "source.consumer",
            format!(
                "consumer `{}` has ack_policy {:?}; outbox needs explicit acks (delete it and let outbox create it, or create it with --ack explicit)",
                cfg.consumer, have.ack_policy
            ),
        ));
    }
    let want = cfg.filter_subject.as_deref().unwrap_or("");
    if have.filter_subject != want {
        return Err(Error::config(
            "source.filter_subject",
            format!(
                "consumer `{}` filters `{}`, the config says `{want}`; a consumer's filter is fixed at creation",
                cfg.consumer, have.filter_subject
            ),
        ));
    }
    Ok(())
}
