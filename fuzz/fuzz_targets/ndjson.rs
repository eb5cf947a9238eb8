//! The NDJSON ingest path (`POST /v1/records` bodies and stdin lines), the
//! binary's pure parser `src/cli/ndjson.rs`, against a plain model: split on
//! `\n`, strip one `\r`, skip blank lines, every other line must be one JSON
//! value within the size limit (JSON grammar as serde_json reads it; numbers
//! are not range-checked, as RFC 8259 does not limit them). The parser must agree with the model on the
//! records (bytes and order) or on the 1-based number of the first bad line,
//! and never panic.
#![no_main]

#[allow(dead_code)]
#[path = "../../src/cli/ndjson.rs"]
mod ndjson;

use libfuzzer_sys::fuzz_target;

fn model(body: &[u8], max: usize) -> Result<Vec<Vec<u8>>, u64> {
    let mut lines: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
    if body.ends_with(b"\n") || body.is_empty() {
        lines.pop();
    }
    let mut out = Vec::new();
    for (i, line) in lines.into_iter().enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if line.len() > max || serde_json::from_slice::<serde::de::IgnoredAny>(line).is_err() {
            return Err(i as u64 + 1);
        }
        out.push(line.to_vec());
    }
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&m, body)) = data.split_first() else {
        return;
    };
    let max = 1 + usize::from(m % 64);
    let got = ndjson::parse_body(body, max);
    match (&got, model(body, max)) {
        (Ok(records), Ok(want)) => assert_eq!(records, &want),
        (Err(e), Err(line)) => {
            assert_eq!(e.line(), line, "{e}");
            assert!(e.to_string().starts_with(&format!("line {line}: ")), "{e}");
        }
        (got, want) => panic!("parser says {got:?}, model says {want:?}"),
    }
});
