//! The `outbox` binary. See `outbox --help`.
//!
//! Lints as in the library: `unsafe` only where allowed by name with a
//! SAFETY comment (the allocator in `cli::malloc`); non-test code
//! does not `unwrap`.

#![deny(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod cli;

#[global_allocator]
static ALLOC: cli::malloc::Alloc = cli::malloc::Alloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
