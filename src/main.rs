//! The `outbox` binary. See `outbox --help`.
//!
//! Lints as in the library: `unsafe` only where allowed by name with a
//! SAFETY comment (the allocator settings in `cli::malloc`); non-test code
//! does not `unwrap`.

#![deny(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod cli;

fn main() -> std::process::ExitCode {
    cli::malloc::tune_glibc_malloc();
    cli::main()
}
