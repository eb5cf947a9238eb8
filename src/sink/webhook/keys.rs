//! A webhook sink's signing keys, and which of them sign a request.
//!
//! Invariants:
//! - a key signs a request only if the request's timestamp (Unix seconds)
//!   is before the key's expiry rounded down to a whole second, so an
//!   expired key never signs, not even within the second it expires in;
//! - when no key is active, [`KeyRing::active`] refuses, and the sink sends
//!   nothing: a request never goes out unsigned;
//! - keys are read from the environment once, by [`KeyRing::read`], into
//!   zeroizing memory, and are never printed; errors and logs name the
//!   variable, never its value;
//! - a key already expired when the ring is read is not read at all (its
//!   variable may be gone); a ring whose every key has expired by then is a
//!   configuration error.

use std::collections::HashSet;
use std::ffi::OsString;
use std::time::{SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use super::config::{Scheme, SecretSpec, WebhookConfig};
use super::sign::SigningKey;
use crate::error::{Error, Result};
use crate::sink::DeliveryError;

/// One key, the variable it came from, and its expiry in Unix seconds.
struct Entry {
    env: String,
    key: SigningKey,
    expires_at: Option<u64>,
}

/// The keys of one sink, in configured order.
pub struct KeyRing {
    entries: Vec<Entry>,
}

impl KeyRing {
    /// Reads the keys `config` names through `lookup`, as of `now` (Unix
    /// seconds).
    ///
    /// # Errors
    /// [`crate::ConfigError::Invalid`] naming `secret_env` or `secrets`:
    /// neither or both are given; more than [`WebhookConfig::MAX_SECRETS`]
    /// keys, or more than one under the `github` scheme; a variable name is
    /// empty or given twice; a variable is unset, not UTF-8, empty or does
    /// not decode (naming the variable, never its value); or every key has
    /// expired.
    pub fn read(
        config: &WebhookConfig,
        lookup: impl Fn(&str) -> Option<OsString>,
        now: u64,
    ) -> Result<KeyRing> {
        let (param, specs) = specs(config)?;
        if specs.len() > WebhookConfig::MAX_SECRETS {
            return Err(Error::config(
                param,
                format!(
                    "at most {} secrets, not {}",
                    WebhookConfig::MAX_SECRETS,
                    specs.len()
                ),
            ));
        }
        if config.scheme == Scheme::Github && specs.len() != 1 {
            return Err(Error::config(
                param,
                "the github scheme carries one signature, so it takes exactly one secret",
            ));
        }
        let mut seen = HashSet::new();
        let mut entries = Vec::with_capacity(specs.len());
        let mut last_expiry = None;
        for spec in &specs {
            let name = spec.env.as_str();
            if name.is_empty() {
                return Err(Error::config(param, "a variable name is empty"));
            }
            if !seen.insert(name) {
                return Err(Error::config(
                    param,
                    format!("environment variable `{name}` is named twice"),
                ));
            }
            let expires_at = spec.expires_at.map(unix_floor);
            if let Some(at) = expires_at.filter(|at| now >= *at) {
                tracing::warn!(
                    secret_env = name,
                    expired_at = %rfc3339(at),
                    "webhook secret has expired and is not used"
                );
                last_expiry = last_expiry.max(Some(at));
                continue;
            }
            let bad =
                |why: &str| Error::config(param, format!("environment variable `{name}` {why}"));
            let value = lookup(name).ok_or_else(|| bad("is not set"))?;
            let value = Zeroizing::new(value.into_string().map_err(|os| {
                drop(Zeroizing::new(os.into_encoded_bytes()));
                bad("is not valid UTF-8")
            })?);
            let key = SigningKey::decode(&value, config.secret_format).map_err(bad)?;
            entries.push(Entry {
                env: name.to_string(),
                key,
                expires_at,
            });
        }
        if entries.is_empty() {
            let last = last_expiry.map(rfc3339).unwrap_or_default();
            return Err(Error::config(
                param,
                format!(
                    "every secret has expired (the last at {last}); add a secret that is still valid"
                ),
            ));
        }
        Ok(KeyRing { entries })
    }

    /// The keys that sign a request stamped `now` (Unix seconds), in
    /// configured order.
    ///
    /// # Errors
    /// A transient [`DeliveryError`] when every key has expired: nothing may
    /// be sent unsigned, and the record stays with the worker's retry
    /// policy (and the DLQ after it, from which it can be redriven once a
    /// new secret is configured).
    pub fn active(&self, now: u64) -> std::result::Result<Vec<&SigningKey>, DeliveryError> {
        let keys: Vec<&SigningKey> = self
            .entries
            .iter()
            .filter(|e| e.expires_at.is_none_or(|at| now < at))
            .map(|e| &e.key)
            .collect();
        if keys.is_empty() {
            let last = self.entries.iter().max_by_key(|e| e.expires_at);
            let (env, at) = last
                .map(|e| {
                    (
                        e.env.as_str(),
                        e.expires_at.map(rfc3339).unwrap_or_default(),
                    )
                })
                .unwrap_or_default();
            return Err(DeliveryError::transient(format!(
                "no webhook secret is active: every one has expired (the last, `{env}`, at {at}); nothing was sent; configure a new secret and restart"
            )));
        }
        Ok(keys)
    }

    /// How many keys were read (expired or not).
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The configured secrets, as specs, and the parameter to name in errors.
fn specs(config: &WebhookConfig) -> Result<(&'static str, Vec<SecretSpec>)> {
    match (config.secret_env.is_empty(), config.secrets.is_empty()) {
        (false, true) => Ok((
            "secret_env",
            config
                .secret_env
                .iter()
                .map(|n| SecretSpec::new(n.clone()))
                .collect(),
        )),
        (true, false) => Ok(("secrets", config.secrets.clone())),
        (false, false) => Err(Error::config(
            "secrets",
            "give either secret_env or secrets, not both",
        )),
        (true, true) => Err(Error::config(
            "secrets",
            "missing: name the secret's environment variable with secret_env = \"NAME\" or secrets = [{ env = \"NAME\" }]",
        )),
    }
}

/// Unix seconds, rounded down; 0 before 1970.
fn unix_floor(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn rfc3339(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map_or_else(|| format!("{unix} (Unix seconds)"), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::config::SecretFormat;
    use super::super::sign::standard_signature;
    use super::*;

    const A: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const B: &str = "whsec_b3V0Ym94LXRlc3Qtcm90YXRpb24ta2V5";
    const C: &str = "whsec_dGhpcmQta2V5LWZvci1vdXRib3g=";

    fn env(name: &str) -> Option<OsString> {
        match name {
            "A" => Some(A.into()),
            "B" => Some(B.into()),
            "C" => Some(C.into()),
            "EMPTY" => Some("".into()),
            _ => None,
        }
    }

    fn at(unix: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(unix)
    }

    fn with(secrets: Vec<SecretSpec>) -> WebhookConfig {
        WebhookConfig {
            secret_env: vec![],
            secrets,
            ..WebhookConfig::new("http://127.0.0.1:9/x", "")
        }
    }

    /// The signatures the active keys make, to compare keys by what they
    /// sign (a key's bytes are never exposed).
    fn sigs(ring: &KeyRing, now: u64) -> Vec<String> {
        ring.active(now)
            .unwrap()
            .into_iter()
            .map(|k| standard_signature(k, "msg_1", now, b"{}"))
            .collect()
    }

    fn sig_of(secret: &str, now: u64) -> String {
        let k = SigningKey::decode(secret, SecretFormat::Whsec).unwrap();
        standard_signature(&k, "msg_1", now, b"{}")
    }

    #[test]
    fn each_key_signs_until_the_second_it_expires_in() {
        let ring = KeyRing::read(
            &with(vec![
                SecretSpec::new("A"),
                SecretSpec::expiring("B", at(1000) + Duration::from_millis(700)),
                SecretSpec::expiring("C", at(2000)),
            ]),
            env,
            500,
        )
        .unwrap();
        assert_eq!(ring.len(), 3);
        assert_eq!(
            sigs(&ring, 999),
            vec![sig_of(A, 999), sig_of(B, 999), sig_of(C, 999)]
        );
        // 1000.7 rounds down: at 1000 B no longer signs.
        assert_eq!(sigs(&ring, 1000), vec![sig_of(A, 1000), sig_of(C, 1000)]);
        assert_eq!(sigs(&ring, 1999), vec![sig_of(A, 1999), sig_of(C, 1999)]);
        assert_eq!(sigs(&ring, 2000), vec![sig_of(A, 2000)]);
        assert_eq!(sigs(&ring, u64::MAX), vec![sig_of(A, u64::MAX)]);
    }

    #[test]
    fn when_the_last_key_expires_nothing_signs_and_the_error_says_why() {
        let ring = KeyRing::read(
            &with(vec![
                SecretSpec::expiring("A", at(1000)),
                SecretSpec::expiring("B", at(1_751_328_000)),
            ]),
            env,
            10,
        )
        .unwrap();
        assert_eq!(sigs(&ring, 1_751_327_999), vec![sig_of(B, 1_751_327_999)]);
        let e = ring.active(1_751_328_000).unwrap_err();
        assert!(e.is_transient());
        let e = e.to_string();
        assert!(
            e.contains("no webhook secret is active")
                && e.contains("`B`")
                && e.contains("2025-07-01T00:00:00Z"),
            "{e}"
        );
    }

    #[test]
    fn expired_keys_are_skipped_at_start_and_all_expired_is_a_config_error() {
        // B expired before the start and its variable is gone: fine.
        let ring = KeyRing::read(
            &with(vec![
                SecretSpec::new("A"),
                SecretSpec::expiring("GONE", at(100)),
            ]),
            env,
            100,
        )
        .unwrap();
        assert_eq!(ring.len(), 1);
        assert_eq!(sigs(&ring, 100), vec![sig_of(A, 100)]);

        let e = KeyRing::read(
            &with(vec![
                SecretSpec::expiring("A", at(100)),
                SecretSpec::expiring("B", at(1_751_328_000)),
            ]),
            env,
            1_751_328_000,
        )
        .err()
        .unwrap();
        assert!(e.is_config(), "{e}");
        let e = e.to_string();
        assert!(
            e.contains("secrets") && e.contains("every secret has expired"),
            "{e}"
        );
        assert!(
            e.contains("2025-07-01T00:00:00Z"),
            "names the last expiry: {e}"
        );
    }

    #[test]
    fn bad_key_lists_are_refused_naming_the_setting() {
        let err = |c: &WebhookConfig| {
            let e = KeyRing::read(c, env, 0).err().unwrap();
            assert!(e.is_config(), "{e}");
            e.to_string()
        };
        let mut both = with(vec![SecretSpec::new("A")]);
        both.secret_env = vec!["B".into()];
        assert!(err(&both).contains("either secret_env or secrets"));
        assert!(err(&with(vec![])).contains("missing"));
        let many = (0..=WebhookConfig::MAX_SECRETS)
            .map(|i| SecretSpec::new(format!("V{i}")))
            .collect();
        assert!(err(&with(many)).contains("at most 10 secrets, not 11"));
        let twice = with(vec![SecretSpec::new("A"), SecretSpec::new("A")]);
        assert!(err(&twice).contains("`A` is named twice"));
        let mut github = with(vec![SecretSpec::new("A"), SecretSpec::new("B")]);
        github.scheme = Scheme::Github;
        assert!(err(&github).contains("exactly one secret"));
        let e = err(&with(vec![SecretSpec::new("A"), SecretSpec::new("UNSET")]));
        assert!(
            e.contains("secrets") && e.contains("`UNSET` is not set"),
            "{e}"
        );
        let e = err(&with(vec![SecretSpec::new("EMPTY")]));
        assert!(e.contains("`EMPTY` is empty"), "{e}");
        let e = err(&with(vec![SecretSpec::new("")]));
        assert!(e.contains("name is empty"), "{e}");
    }

    #[test]
    fn secret_env_names_are_keys_that_never_expire() {
        let mut c = WebhookConfig::new("http://127.0.0.1:9/x", "A");
        c.secret_env.push("B".into());
        let ring = KeyRing::read(&c, env, 0).unwrap();
        assert_eq!(
            sigs(&ring, u64::MAX - 1),
            vec![sig_of(A, u64::MAX - 1), sig_of(B, u64::MAX - 1)]
        );
        c.secret_env.push("UNSET".into());
        let e = KeyRing::read(&c, env, 0).err().unwrap().to_string();
        assert!(
            e.contains("secret_env") && e.contains("`UNSET` is not set"),
            "{e}"
        );
    }
}
