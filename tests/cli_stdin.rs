//! `outbox run` reading NDJSON from stdin, end to end against the real
//! binary: the log, and so every sink, keeps the order of the lines.

mod common;

use common::cli::{code, run_config, stderr};
use common::config::Config;

/// `n` lines `{"i":K,"pad":"..."}`, K from 0, each ending in a newline.
fn lines(n: u64) -> String {
    (0..n)
        .map(|i| format!("{{\"i\":{i},\"pad\":\"{}\"}}\n", "p".repeat(40)))
        .collect()
}

/// Pipes `input` through `outbox run` into a file sink configured with
/// `extra`; returns the file's contents once the run has drained.
fn through_file_sink(dir: &std::path::Path, input: &str, extra: &str) -> String {
    let out = dir.join("out.ndjson");
    let cfg = Config::new(&dir.join("data"))
        .file("f", &out, extra)
        .write(&dir.join("outbox.toml"));
    let o = run_config(&cfg, input.as_bytes());
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("all sinks drained"), "{}", stderr(&o));
    std::fs::read_to_string(&out).unwrap()
}

/// 60,000 lines are 235 groups of 256, up to 16 waiting for durability at
/// once: the file must hold every line, byte for byte, in input order. Run
/// twice: with room, and with a Block sink whose lag limit (300 records) is
/// hit over and over, so groups wait for room as well.
#[test]
fn stdin_lines_reach_the_sink_in_their_order() {
    let input = lines(60_000);
    for (what, extra) in [
        ("with room", ""),
        (
            "with a full Block sink",
            "max_lag_records = 300\non_full = \"block\"\n",
        ),
    ] {
        let t = tempfile::tempdir().unwrap();
        let got = through_file_sink(t.path(), &input, extra);
        assert_eq!(
            got.lines().count(),
            60_000,
            "{what}: every line delivered once"
        );
        if got != input {
            let first = got
                .lines()
                .zip(input.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            panic!(
                "{what}: the file differs from the input first at line {first}: {:?}",
                got.lines().nth(first)
            );
        }
    }
}
