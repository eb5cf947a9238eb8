//! A small client for a running daemon's admin endpoint (`--admin URL`).
//!
//! The bearer token, when needed, comes from an environment variable named
//! by `--admin-token-env`; it is sent, never printed.

use std::time::Duration;

use outbox::{Error, Result};
use serde_json::Value;

/// Where the admin endpoint is and how to authenticate.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AdminArgs {
    /// Ask a running daemon's admin endpoint instead of opening the data
    /// directory (which the daemon locks), e.g. http://127.0.0.1:9090.
    #[arg(long, value_name = "URL")]
    pub admin: Option<String>,
    /// Environment variable holding the admin bearer token.
    #[arg(long, value_name = "VAR", requires = "admin")]
    pub admin_token_env: Option<String>,
}

/// Sends `method` to `path` (with the query already in it) and returns the
/// JSON body of a 2xx answer.
///
/// # Errors
/// [`outbox::ConfigError::Invalid`] (exit 2) for a bad URL, an unset token
/// variable, or a request the endpoint refuses as bad (400, 404: a bad
/// filter, an unknown sink or entry); [`outbox::Error::Io`] (exit 1) when the
/// endpoint cannot be reached or answers with another error, with its
/// message.
pub fn call(
    args: &AdminArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value> {
    let Some(base) = &args.admin else {
        return Err(Error::config("--admin", "missing"));
    };
    let base = base.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(Error::config(
            "--admin",
            format!("`{base}` is not an http:// or https:// URL"),
        ));
    }
    let token = match &args.admin_token_env {
        Some(var) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Some(v),
            _ => {
                return Err(Error::config(
                    "--admin-token-env",
                    format!("environment variable {var} is not set"),
                ));
            }
        },
        None => None,
    };
    let url = format!("{base}{path}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Io)?;
    rt.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| io(format!("http client: {e}")))?;
        let mut req = client.request(method, &url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| io(format!("cannot reach the admin endpoint at {base}: {e}")))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| io(format!("admin endpoint {base}: {e}")))?;
        if !status.is_success() {
            let msg = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
                .unwrap_or(text);
            let msg = format!("admin endpoint {base} answered {status}: {msg}");
            // The daemon refused what was asked (a bad filter, an unknown
            // sink or seq): a usage error, exit 2, as it is offline.
            if matches!(status.as_u16(), 400 | 404) {
                return Err(Error::config("request", msg));
            }
            return Err(io(msg));
        }
        serde_json::from_str(&text)
            .map_err(|e| io(format!("admin endpoint {base} sent invalid JSON: {e}")))
    })
}

fn io(msg: String) -> Error {
    Error::Io(std::io::Error::other(msg))
}
