//! Parsing `--sink NAME=KIND[:ARG]` and building the sinks.

use std::path::PathBuf;

use outbox::sink::{FileSink, Sink, StdoutSink};
use outbox::{Error, Result};

/// A sink as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkSpec {
    /// `NAME=stdout`
    Stdout,
    /// `NAME=file:PATH`
    File(PathBuf),
}

/// Parses `NAME=stdout` or `NAME=file:PATH`.
///
/// # Errors
/// [`Error::Config`] naming `--sink` and the bad value.
pub fn parse(spec: &str) -> Result<(String, SinkSpec)> {
    let bad = |why: &str| Error::Config {
        param: "--sink".into(),
        reason: format!("`{spec}`: {why}; expected NAME=stdout or NAME=file:PATH"),
    };
    let (name, kind) = spec.split_once('=').ok_or_else(|| bad("missing `=`"))?;
    outbox::SinkName::new(name).map_err(|e| bad(&e.to_string()))?;
    let kind = match kind.split_once(':') {
        None if kind == "stdout" => SinkSpec::Stdout,
        Some(("file", path)) if !path.is_empty() => SinkSpec::File(PathBuf::from(path)),
        Some(("file", _)) => return Err(bad("file needs a path")),
        _ => return Err(bad("unknown sink kind")),
    };
    Ok((name.to_string(), kind))
}

/// Opens the sink.
///
/// # Errors
/// The I/O error of opening a file.
pub async fn build(spec: &SinkSpec) -> Result<Box<dyn Sink>> {
    Ok(match spec {
        SinkSpec::Stdout => Box::new(StdoutSink::new()),
        SinkSpec::File(p) => Box::new(FileSink::open(p).await.map_err(|e| {
            Error::Io(std::io::Error::new(
                e.kind(),
                format!("file sink {}: {e}", p.display()),
            ))
        })?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        assert_eq!(
            parse("out=stdout").unwrap(),
            ("out".into(), SinkSpec::Stdout)
        );
        assert_eq!(
            parse("f=file:/tmp/x").unwrap(),
            ("f".into(), SinkSpec::File("/tmp/x".into()))
        );
        for bad in ["nope", "a=ftp:x", "a=file:", "bad name=stdout"] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
            assert!(e.to_string().contains("--sink"), "{e}");
        }
    }
}
