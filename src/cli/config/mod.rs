//! `outbox run --config FILE`: the TOML file, the flags merged over it, and
//! the checked plan the daemon runs.
//!
//! Invariants:
//! - every table is `deny_unknown_fields`, so a misspelt key is an error
//!   that names it, never a silently ignored setting;
//! - [`resolve`] is pure (the environment comes in as a lookup function) and
//!   rejects every bad value before anything is opened, naming the key;
//! - secrets read from the environment live in [`Secret`], whose `Debug`
//!   and `Display` never show the value.
//!
//! The parts: [`schema`] is the file as written (the serde types),
//! [`plan`] the checked result and the flags that override the file,
//! [`resolve`](mod@resolve) merges and checks, [`secret`] reads tokens from
//! the environment, [`listen`] parses listen addresses and refuses an
//! exposed listener without a token.

mod listen;
mod plan;
mod resolve;
pub mod schema;
mod secret;
#[cfg(test)]
mod tests;

pub use plan::{Overrides, RunPlan, SinkPlan};
pub use resolve::{parse_source_flag, resolve};
pub use schema::{FileConfig, read_file};
pub use secret::Secret;
