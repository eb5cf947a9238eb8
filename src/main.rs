//! The `outbox` binary. See `outbox --help`.

mod cli;

fn main() -> std::process::ExitCode {
    outbox::tune_glibc_malloc();
    cli::main()
}
