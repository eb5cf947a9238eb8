//! The `outbox` binary. See `outbox --help`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
