//! The binary's ack token: what a source gets back once every sink has
//! passed its record. stdin and HTTP ingest dispatch with none; the
//! JetStream source with its message's handle.

use outbox::source::jetstream::JsAck;

/// One released ack.
#[derive(Debug)]
pub enum AckToken {
    /// A JetStream message to ack with `double_ack`.
    JetStream(JsAck),
}

impl From<JsAck> for AckToken {
    fn from(a: JsAck) -> Self {
        AckToken::JetStream(a)
    }
}

/// The engine as the binary runs it.
pub type Engine = outbox::Outbox<AckToken>;
