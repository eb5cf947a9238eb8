//! The configuration file: `src/cli/config/` (`parse_file`, then
//! `resolve` with no flags), fed arbitrary text. Neither may panic; a
//! refusal is a configuration error (exit code 2); whatever is accepted
//! passes the engine's own validation, has unique valid sink names, and
//! exposes no listener beyond loopback without a token.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// What `src/cli/mod.rs` defines for the config module.
#[allow(dead_code)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[allow(dead_code)]
#[path = "../../src/cli/sinks.rs"]
pub mod sinks;

#[allow(dead_code, unused_imports)]
#[path = "../../src/cli/config/mod.rs"]
mod config;

/// The paths the config code names (`crate::cli::LogFormat`,
/// `crate::cli::sinks`), as the binary has them.
mod cli {
    pub use super::LogFormat;
    pub use super::sinks;
}

fn env(name: &str) -> Option<String> {
    match name {
        "TOKEN" | "OUTBOX_INGEST_TOKEN" | "OUTBOX_ADMIN_TOKEN" => Some("t0ken".into()),
        "SECRET" | "HOOK_SECRET" => Some("c2VjcmV0LXNlY3JldC1zZWNyZXQ=".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = match config::schema::parse_file(text) {
        Ok(f) => f,
        Err(e) => {
            assert!(!e.is_empty(), "an empty parse error");
            return;
        }
    };
    let plan = match config::resolve(file, config::Overrides::default(), &env) {
        Ok(p) => p,
        Err(e) => {
            assert!(e.is_config(), "{e}");
            return;
        }
    };
    plan.engine
        .validate()
        .expect("accepted engine settings validate");
    assert!(!plan.sinks.is_empty());
    let mut names = std::collections::HashSet::new();
    for s in &plan.sinks {
        outbox::SinkName::new(s.name.clone()).expect("accepted sink name is valid");
        assert!(names.insert(s.name.clone()), "duplicate sink {}", s.name);
        s.cfg
            .validate(&s.name)
            .expect("accepted sink settings validate");
    }
    let listeners = plan
        .ingest
        .iter()
        .map(|i| &i.listen)
        .chain(plan.admin.iter());
    for l in listeners {
        assert!(
            l.addr.ip().is_loopback() || l.token.is_some(),
            "{} exposed without a token",
            l.addr
        );
    }
});
