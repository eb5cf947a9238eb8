//! [`WebhookConfig`]: what a webhook sink is built from.
//!
//! The struct deserializes from a TOML (or any serde) table and refuses
//! unknown keys, so a typo in a config file is an error rather than a
//! silently ignored setting. It holds the *names* of the environment
//! variables that carry the secrets, never the secrets themselves.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer};

/// How requests are signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp` and
    /// `webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>`.
    /// The default.
    #[default]
    Standard,
    /// GitHub style: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of body>`.
    /// Takes exactly one secret.
    Github,
}

/// How the secret in the environment variable is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretFormat {
    /// Standard base64 (with padding), with an optional `whsec_` prefix, as
    /// Standard Webhooks providers issue them. Surrounding whitespace is
    /// ignored. The key is the decoded bytes. The default.
    #[default]
    Whsec,
    /// The variable's bytes are the key, exactly as they are (no trimming).
    Raw,
}

/// The settings of one webhook sink.
///
/// Retry, backoff, lag limits and `on_full` are not here: like every sink,
/// a webhook sink takes them from its [`SinkConfig`](crate::SinkConfig).
///
/// In TOML:
///
/// ```toml
/// url = "https://alerts.example.com/hooks/outbox"
/// secret_env = "HOOK_SECRET"  # or, while rotating keys:
/// # secrets = [
/// #   { env = "HOOK_SECRET_NEW" },
/// #   { env = "HOOK_SECRET_OLD", expires_at = "2030-07-01T00:00:00Z" },
/// # ]
/// scheme = "standard"        # or "github"
/// secret_format = "whsec"    # or "raw"
/// timeout_ms = 10000
/// response_body_max = 65536
/// headers = { "X-Tenant" = "blue" }
/// ```
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The receiver's `http` or `https` URL. Required. Every record is
    /// POSTed to it; redirects are not followed.
    pub url: String,
    /// The names of the environment variables holding the signing secrets,
    /// none of which expires; every request carries one signature per
    /// secret. A single string is accepted for one name. Either this or
    /// [`WebhookConfig::secrets`] is required, not both.
    #[serde(default, deserialize_with = "one_or_more")]
    pub secret_env: Vec<String>,
    /// The signing secrets with optional expiry times: each request carries
    /// one signature per secret still active when it is signed. Either this
    /// or [`WebhookConfig::secret_env`] is required, not both.
    #[serde(default)]
    pub secrets: Vec<SecretSpec>,
    /// Default [`Scheme::Standard`].
    #[serde(default)]
    pub scheme: Scheme,
    /// Default [`SecretFormat::Whsec`].
    #[serde(default)]
    pub secret_format: SecretFormat,
    /// Deadline for one attempt in milliseconds, from connecting until the
    /// response body has been drained. Default 10,000 (10 s).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Static headers added to every request. Default none. The headers the
    /// sink sets itself (`content-type`, `user-agent`, the signature
    /// headers, and the framing headers) cannot be set here.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Most bytes of a response body read before the connection is dropped.
    /// Reading small bodies to the end lets the connection be reused; the
    /// cap keeps a hostile receiver from making the sink buffer or wait on
    /// an endless body. Only the first 1 KiB is ever kept, for error
    /// messages. Default 65,536 (64 KiB).
    #[serde(default = "default_response_body_max")]
    pub response_body_max: usize,
}

impl WebhookConfig {
    /// Default of [`WebhookConfig::timeout_ms`].
    pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
    /// Default of [`WebhookConfig::response_body_max`].
    pub const DEFAULT_RESPONSE_BODY_MAX: usize = 64 << 10;
    /// Most secrets, active or not (Svix keeps up to ten old keys too).
    pub const MAX_SECRETS: usize = 10;

    /// A configuration with one secret variable and every other setting at
    /// its default.
    pub fn new(url: impl Into<String>, secret_env: impl Into<String>) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            secret_env: vec![secret_env.into()],
            secrets: Vec::new(),
            scheme: Scheme::default(),
            secret_format: SecretFormat::default(),
            timeout_ms: Self::DEFAULT_TIMEOUT_MS,
            headers: BTreeMap::new(),
            response_body_max: Self::DEFAULT_RESPONSE_BODY_MAX,
        }
    }

    /// [`WebhookConfig::timeout_ms`] as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// One signing secret: where it is, and until when it signs.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    /// The environment variable holding the secret.
    pub env: String,
    /// When the secret stops signing: a request signed at or after this
    /// time (in whole seconds, the expiry rounded down) does not carry its
    /// signature. An RFC 3339 time in the config file, such as
    /// `2030-07-01T00:00:00Z` or `2030-07-01T02:00:00+02:00`. Default none:
    /// it never expires.
    #[serde(default, deserialize_with = "rfc3339")]
    pub expires_at: Option<SystemTime>,
}

impl SecretSpec {
    /// A secret that never expires.
    pub fn new(env: impl Into<String>) -> SecretSpec {
        SecretSpec {
            env: env.into(),
            expires_at: None,
        }
    }

    /// A secret that stops signing at `at`.
    pub fn expiring(env: impl Into<String>, at: SystemTime) -> SecretSpec {
        SecretSpec {
            env: env.into(),
            expires_at: Some(at),
        }
    }
}

fn rfc3339<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
    let s = String::deserialize(d)?;
    let at: jiff::Timestamp = s.trim().parse().map_err(|e| {
        serde::de::Error::custom(format!(
            "`{s}` is not an RFC 3339 time such as 2030-07-01T00:00:00Z: {e}"
        ))
    })?;
    SystemTime::try_from(at).map(Some).map_err(|e| {
        serde::de::Error::custom(format!("`{s}` is out of this system's time range: {e}"))
    })
}

fn default_timeout_ms() -> u64 {
    WebhookConfig::DEFAULT_TIMEOUT_MS
}

fn default_response_body_max() -> usize {
    WebhookConfig::DEFAULT_RESPONSE_BODY_MAX
}

fn one_or_more<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMore {
        One(String),
        More(Vec<String>),
    }
    Ok(match OneOrMore::deserialize(d)? {
        OneOrMore::One(s) => vec![s],
        OneOrMore::More(v) => v,
    })
}

/// The URL with any password replaced, for Debug output and logs: a URL may
/// carry basic-auth credentials.
pub(crate) fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("redacted"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparsable url>".to_string(),
    }
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &redact_url(&self.url))
            .field("secret_env", &self.secret_env)
            .field("secrets", &self.secrets)
            .field("scheme", &self.scheme)
            .field("secret_format", &self.secret_format)
            .field("timeout_ms", &self.timeout_ms)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("response_body_max", &self.response_body_max)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Wrapper {
        hook: WebhookConfig,
    }

    fn parse(s: &str) -> Result<WebhookConfig, serde_json::Error> {
        serde_json::from_str::<Wrapper>(s).map(|w| w.hook)
    }

    #[test]
    fn defaults_apply_and_one_secret_name_may_be_a_string() {
        let c = parse(r#"{"hook":{"url":"http://h/x","secret_env":"S"}}"#).unwrap();
        assert_eq!(c, WebhookConfig::new("http://h/x", "S"));
        assert_eq!(c.timeout(), Duration::from_secs(10));
        assert_eq!(c.response_body_max, 65_536);
        assert_eq!(c.scheme, Scheme::Standard);
        assert_eq!(c.secret_format, SecretFormat::Whsec);
    }

    #[test]
    fn every_field_parses() {
        let c = parse(
            r#"{"hook":{"url":"https://h/x","secret_env":["A","B"],"scheme":"github",
                "secret_format":"raw","timeout_ms":250,"headers":{"X-T":"1"},
                "response_body_max":10}}"#,
        )
        .unwrap();
        assert_eq!(c.secret_env, vec!["A".to_string(), "B".to_string()]);
        assert_eq!(c.scheme, Scheme::Github);
        assert_eq!(c.secret_format, SecretFormat::Raw);
        assert_eq!(c.timeout(), Duration::from_millis(250));
        assert_eq!(c.headers.get("X-T").map(String::as_str), Some("1"));
        assert_eq!(c.response_body_max, 10);
    }

    #[test]
    fn unknown_fields_and_values_are_refused() {
        let e = parse(r#"{"hook":{"url":"u","secret_env":"S","secret":"x"}}"#)
            .err()
            .unwrap();
        assert!(e.to_string().contains("unknown field `secret`"), "{e}");
        let e = parse(r#"{"hook":{"url":"u","secret_env":"S","scheme":"svix"}}"#)
            .err()
            .unwrap();
        assert!(e.to_string().contains("svix"), "{e}");
        let e = parse(r#"{"hook":{"url":"u","secrets":[{"env":"A","expiry":"x"}]}}"#)
            .err()
            .unwrap();
        assert!(e.to_string().contains("unknown field `expiry`"), "{e}");
    }

    #[test]
    fn secrets_take_rfc3339_expiry_times_with_any_offset() {
        let c = parse(
            r#"{"hook":{"url":"u","secrets":[
                {"env":"NEW"},
                {"env":"OLD","expires_at":"2025-07-01T02:00:00+02:00"},
                {"env":"OLDER","expires_at":"2025-07-01T00:00:00.900Z"}]}}"#,
        )
        .unwrap();
        let midnight = SystemTime::UNIX_EPOCH + Duration::from_secs(1_751_328_000);
        assert_eq!(
            c.secrets,
            vec![
                SecretSpec::new("NEW"),
                SecretSpec::expiring("OLD", midnight),
                SecretSpec::expiring("OLDER", midnight + Duration::from_millis(900)),
            ]
        );
        assert!(c.secret_env.is_empty());
        for bad in ["2025-13-01T00:00:00Z", "tomorrow", "2025-07-01", ""] {
            let e = parse(&format!(
                r#"{{"hook":{{"url":"u","secrets":[{{"env":"A","expires_at":"{bad}"}}]}}}}"#
            ))
            .err()
            .unwrap()
            .to_string();
            assert!(
                e.contains("is not an RFC 3339 time") && e.contains(bad),
                "{e}"
            );
        }
    }

    #[test]
    fn debug_hides_url_passwords_and_header_values() {
        let mut c = WebhookConfig::new("https://user:hunter2@h/x", "S");
        c.headers
            .insert("Authorization".into(), "Bearer tok".into());
        let d = format!("{c:?}");
        assert!(!d.contains("hunter2"), "{d}");
        assert!(!d.contains("Bearer tok"), "{d}");
        assert!(d.contains("user:redacted@h"), "{d}");
    }
}
