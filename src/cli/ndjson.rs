//! NDJSON parsing, shared by the stdin source and HTTP ingest. Pure: no I/O.
//!
//! A record is one line's bytes exactly, without its line ending (`\n` or
//! `\r\n`). Lines are numbered from 1, blank ones included, and blank lines
//! are skipped. Every other line must be one valid JSON value.

/// Why a line is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// Not valid JSON.
    Invalid {
        /// 1-based line number.
        line: u64,
        /// serde_json's message.
        reason: String,
    },
    /// Larger than the per-record limit.
    TooLarge {
        /// 1-based line number.
        line: u64,
        /// The line's size in bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineError::Invalid { line, reason } => {
                write!(f, "line {line}: not valid JSON ({reason})")
            }
            LineError::TooLarge { line, size, limit } => write!(
                f,
                "line {line}: record is {size} bytes; the per-record limit (max_record_bytes) is {limit}"
            ),
        }
    }
}

impl LineError {
    /// The 1-based line number.
    pub fn line(&self) -> u64 {
        match self {
            LineError::Invalid { line, .. } | LineError::TooLarge { line, .. } => *line,
        }
    }
}

/// Strips one trailing `\n` and then one `\r`.
pub fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Checks one line (without its line ending). `Ok(None)` for a blank line,
/// `Ok(Some(payload))` for a record.
///
/// # Errors
/// [`LineError`] naming `line_no` when the line is too large or not JSON.
pub fn check_line(
    line: &[u8],
    line_no: u64,
    max_record: usize,
) -> Result<Option<&[u8]>, LineError> {
    if line.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(None);
    }
    if line.len() > max_record {
        return Err(LineError::TooLarge {
            line: line_no,
            size: line.len(),
            limit: max_record,
        });
    }
    match serde_json::from_slice::<serde::de::IgnoredAny>(line) {
        Ok(_) => Ok(Some(line)),
        Err(e) => Err(LineError::Invalid {
            line: line_no,
            reason: e.to_string(),
        }),
    }
}

/// Parses a whole request body: every record, or the first bad line.
///
/// # Errors
/// The first [`LineError`]; nothing of the body is to be appended then.
pub fn parse_body(body: &[u8], max_record: usize) -> Result<Vec<Vec<u8>>, LineError> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut line_no = 0u64;
    while !rest.is_empty() {
        line_no += 1;
        let (line, next) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => rest.split_at(i + 1),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        if let Some(payload) = check_line(trim_eol(line), line_no, max_record)? {
            out.push(payload.to_vec());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_the_lines_exactly() {
        let body = b"{\"a\":1}\r\n\n  \n[1, 2]\n\"s\"";
        let r = parse_body(body, 100).unwrap();
        assert_eq!(
            r,
            vec![b"{\"a\":1}".to_vec(), b"[1, 2]".to_vec(), b"\"s\"".to_vec()]
        );
        assert!(parse_body(b"", 100).unwrap().is_empty());
        assert!(parse_body(b"\n\n", 100).unwrap().is_empty());
    }

    #[test]
    fn the_first_bad_line_is_named_one_based() {
        let e = parse_body(b"{\"a\":1}\n\n{nope}\n{bad too\n", 100).unwrap_err();
        assert_eq!(e.line(), 3);
        assert!(e.to_string().starts_with("line 3: not valid JSON"), "{e}");
        let e = parse_body(b"{\"a\":1} trailing\n", 100).unwrap_err();
        assert_eq!(e.line(), 1);
    }

    #[test]
    fn the_per_record_limit_counts_the_line_without_its_ending() {
        assert_eq!(parse_body(b"\"12345\"\r\n", 7).unwrap().len(), 1);
        let e = parse_body(b"1\n\"123456\"\n", 7).unwrap_err();
        assert_eq!(
            e,
            LineError::TooLarge {
                line: 2,
                size: 8,
                limit: 7
            }
        );
    }
}
