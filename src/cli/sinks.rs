//! Parsing `--sink NAME=KIND[:ARG]` and building the sinks.

use std::path::PathBuf;

use std::sync::Arc;

use outbox::sink::{
    FileSink, JetStreamSink, JetStreamSinkConfig, JetStreamSinkStats, Sink, StdoutSink,
    WebhookConfig, WebhookSink,
};
use outbox::{Error, Result};

/// A sink as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkSpec {
    /// `NAME=stdout`
    Stdout,
    /// `NAME=file:PATH`
    File(PathBuf),
    /// `NAME=webhook:URL`, with its secrets from `--webhook-secret-env`, or a
    /// `[[sinks]]` table with `kind = "webhook"` and its `[sinks.webhook]`.
    Webhook(Box<WebhookConfig>),
    /// A `[[sinks]]` table with `kind = "jetstream"` and its
    /// `[sinks.jetstream]`.
    JetStream(Box<JetStreamSinkConfig>),
}

/// Parses `NAME=stdout`, `NAME=file:PATH` or `NAME=webhook:URL`. A webhook
/// parsed here has no secret yet: [`apply_secret_envs`] adds them.
///
/// # Errors
/// [`outbox::ConfigError::Invalid`] naming `--sink` and the bad value.
pub fn parse(spec: &str) -> Result<(String, SinkSpec)> {
    let bad = |why: &str| {
        Error::config(
            "--sink",
            format!("`{spec}`: {why}; expected NAME=stdout, NAME=file:PATH or NAME=webhook:URL"),
        )
    };
    let (name, kind) = spec.split_once('=').ok_or_else(|| bad("missing `=`"))?;
    outbox::SinkName::new(name).map_err(|e| bad(&e.to_string()))?;
    let kind = match kind.split_once(':') {
        None if kind == "stdout" => SinkSpec::Stdout,
        Some(("file", path)) if !path.is_empty() => SinkSpec::File(PathBuf::from(path)),
        Some(("file", _)) => return Err(bad("file needs a path")),
        Some(("webhook", url)) if !url.is_empty() => SinkSpec::Webhook(Box::new(WebhookConfig {
            secret_env: Vec::new(),
            ..WebhookConfig::new(url, "")
        })),
        Some(("webhook", _)) => return Err(bad("webhook needs a URL")),
        _ => return Err(bad("unknown sink kind")),
    };
    Ok((name.to_string(), kind))
}

/// Gives each `--sink NAME=webhook:URL` its secret variables from the
/// `--webhook-secret-env NAME=ENVVAR` flags, in order (twice for the same
/// sink while rotating: new first).
///
/// # Errors
/// [`outbox::ConfigError::Invalid`] naming `--webhook-secret-env` when a flag
/// is malformed or names no webhook sink given with `--sink`, or when such a
/// sink is left without a secret.
pub fn apply_secret_envs(specs: &mut [(String, SinkSpec)], flags: &[String]) -> Result<()> {
    let bad = |why: String| Error::config("--webhook-secret-env", why);
    for flag in flags {
        let (name, var) = flag
            .split_once('=')
            .filter(|(n, v)| !n.is_empty() && !v.is_empty())
            .ok_or_else(|| bad(format!("`{flag}`: expected NAME=ENVVAR")))?;
        match specs.iter_mut().find(|(n, _)| n == name) {
            Some((_, SinkSpec::Webhook(cfg))) => cfg.secret_env.push(var.to_string()),
            _ => {
                return Err(bad(format!(
                    "`{flag}`: no --sink {name}=webhook:URL was given"
                )));
            }
        }
    }
    for (name, spec) in specs.iter() {
        if let SinkSpec::Webhook(cfg) = spec
            && cfg.secret_env.is_empty()
        {
            return Err(bad(format!(
                "webhook sink `{name}` needs --webhook-secret-env {name}=ENVVAR"
            )));
        }
    }
    Ok(())
}

/// A built sink, with the counters of a JetStream sink.
pub struct Built {
    /// The sink.
    pub sink: Box<dyn Sink>,
    /// A JetStream sink's counters, for the metrics and the exit summary.
    pub jetstream: Option<Arc<JetStreamSinkStats>>,
}

/// Opens the sink.
///
/// # Errors
/// The I/O error of opening a file; a bad webhook or JetStream setting.
pub async fn build(spec: &SinkSpec) -> Result<Built> {
    let plain = |sink: Box<dyn Sink>| Built {
        sink,
        jetstream: None,
    };
    Ok(match spec {
        SinkSpec::Stdout => plain(Box::new(StdoutSink::new())),
        SinkSpec::File(p) => plain(Box::new(FileSink::open(p).await.map_err(|e| {
            Error::Io(std::io::Error::new(
                e.kind(),
                format!("file sink {}: {e}", p.display()),
            ))
        })?)),
        SinkSpec::Webhook(cfg) => plain(Box::new(WebhookSink::new(cfg)?)),
        SinkSpec::JetStream(cfg) => {
            let sink = JetStreamSink::connect(cfg).await?;
            Built {
                jetstream: Some(sink.stats()),
                sink: Box::new(sink),
            }
        }
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
        for bad in [
            "nope",
            "a=ftp:x",
            "a=file:",
            "a=webhook:",
            "bad name=stdout",
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(crate::cli::exit::exit_code(&e), 2, "{bad}");
            assert!(e.to_string().contains("--sink"), "{e}");
        }
    }

    #[test]
    fn webhook_specs_take_their_secrets_from_the_flags() {
        let url = "https://h.example/hook";
        let mut specs = vec![parse(&format!("hook=webhook:{url}")).unwrap()];
        let flags = ["hook=NEW".to_string(), "hook=OLD".to_string()];
        apply_secret_envs(&mut specs, &flags).unwrap();
        let mut want = WebhookConfig::new(url, "NEW");
        want.secret_env.push("OLD".into());
        assert_eq!(specs[0], ("hook".into(), SinkSpec::Webhook(Box::new(want))));

        let specs = vec![
            parse(&format!("hook=webhook:{url}")).unwrap(),
            parse("out=stdout").unwrap(),
        ];
        for (flags, why) in [
            (vec![], "needs --webhook-secret-env hook=ENVVAR"),
            (vec!["hook"], "expected NAME=ENVVAR"),
            (vec!["hook="], "expected NAME=ENVVAR"),
            (vec!["out=S"], "no --sink out=webhook:URL"),
            (vec!["nope=S"], "no --sink nope=webhook:URL"),
        ] {
            let flags: Vec<String> = flags.into_iter().map(String::from).collect();
            let e = apply_secret_envs(&mut specs.clone(), &flags).unwrap_err();
            assert_eq!(crate::cli::exit::exit_code(&e), 2);
            let e = e.to_string();
            assert!(e.contains("--webhook-secret-env") && e.contains(why), "{e}");
        }
    }
}
