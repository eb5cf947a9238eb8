//! Secrets read from the environment: [`Secret`] never shows its value, and
//! a token variable that is named but unset or empty is an error naming the
//! key and the variable (never the value).

use outbox::{Error, Result};

/// A value read from the environment that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: String) -> Secret {
        Secret(s)
    }

    /// The secret bytes, for comparison only.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The token in the environment variable `var`, when one is configured
/// (under `key`).
pub(super) fn token(
    key: &str,
    var: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret>> {
    let Some(var) = var else {
        return Ok(None);
    };
    if var.is_empty() {
        return Err(Error::config(
            key,
            "is empty; give the name of an environment variable",
        ));
    }
    match env(var) {
        Some(v) if !v.is_empty() => Ok(Some(Secret::new(v))),
        // The variable's name is safe to print, its value is not.
        Some(_) => Err(Error::config(
            key,
            format!("environment variable {var} is empty"),
        )),
        None => Err(Error::config(
            key,
            format!("environment variable {var} is not set"),
        )),
    }
}
