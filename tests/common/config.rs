//! A TOML config for `outbox run`, built in the order TOML wants: the
//! top-level keys first, then the tables.

use std::path::{Path, PathBuf};

/// The environment variable that holds the webhook secret of the sinks
/// [`Config::webhook`] writes.
pub const HOOK_SECRET_ENV: &str = "OUTBOX_TEST_HOOK";
/// Its value (`secret_format = "raw"`).
pub const HOOK_SECRET: &str = "hook-secret";

/// A config under construction.
#[derive(Clone, Debug)]
pub struct Config {
    top: String,
    tables: String,
}

impl Config {
    /// `data_dir = DATA`.
    pub fn new(data: &Path) -> Config {
        Config {
            top: format!("data_dir = \"{}\"\n", data.display()),
            tables: String::new(),
        }
    }

    /// A top-level `key = value`; `value` is TOML (quote strings).
    pub fn set(mut self, key: &str, value: impl std::fmt::Display) -> Config {
        self.top.push_str(&format!("{key} = {value}\n"));
        self
    }

    /// TOML tables written as they are, after those already added.
    pub fn raw(mut self, toml: &str) -> Config {
        self.tables.push_str(toml);
        if !toml.is_empty() && !toml.ends_with('\n') {
            self.tables.push('\n');
        }
        self
    }

    /// A webhook sink `name` to `url`, its keys `extra` (TOML lines), signed
    /// with the raw secret in [`HOOK_SECRET_ENV`].
    pub fn webhook(self, name: &str, url: &str, extra: &str) -> Config {
        self.sink(name, "webhook", extra).raw(&format!(
            "[sinks.webhook]\nurl = \"{url}\"\nsecret_env = \"{HOOK_SECRET_ENV}\"\nsecret_format = \"raw\"\n"
        ))
    }

    /// A file sink `name` writing to `path`, its keys `extra`.
    pub fn file(self, name: &str, path: &Path, extra: &str) -> Config {
        self.sink(
            name,
            "file",
            &format!("path = \"{}\"\n{extra}", path.display()),
        )
    }

    /// A `[[sinks]]` table of `kind`, its keys `extra` (TOML lines).
    pub fn sink(self, name: &str, kind: &str, extra: &str) -> Config {
        self.raw(&format!(
            "[[sinks]]\nname = \"{name}\"\nkind = \"{kind}\"\n{extra}"
        ))
    }

    /// The config's text.
    pub fn text(&self) -> String {
        format!("{}{}", self.top, self.tables)
    }

    /// Writes the config to `path` and returns it.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.text()).unwrap();
        path.to_path_buf()
    }
}

/// `DIR/outbox.toml` for `DIR/data` with one sink, `web`: a webhook to
/// `hook` that dead-letters a record at its first failure, from the earliest seq.
pub fn parking_webhook(dir: &Path, hook: std::net::SocketAddr) -> PathBuf {
    Config::new(&dir.join("data"))
        .set("drain_timeout_secs", 5)
        .webhook(
            "web",
            &format!("http://{hook}/hook"),
            "retry_max = 0\nstart = \"earliest\"\n",
        )
        .write(&dir.join("outbox.toml"))
}
