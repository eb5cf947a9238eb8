//! Sources of records that live in the library: a broker a daemon reads
//! from, with acks that follow the outbox watermark. (The binary's stdin
//! and HTTP ingest sources are in `cli/`.)

#[cfg(feature = "jetstream")]
pub mod jetstream;
