//! How the binary reports a library [`Error`]: its documented exit code and
//! the advice that only makes sense on the command line.
//!
//! Exit codes: 2 for usage and configuration errors, 3 for a data directory
//! that is locked, corrupt or of an unknown format, 1 for everything else.
//! They are mapped from the library's classifiers, never from its wording.

use outbox::Error;

/// The exit code for `e`.
pub fn exit_code(e: &Error) -> u8 {
    if e.is_config() {
        2
    } else if e.is_locked() || e.is_corruption() {
        3
    } else {
        1
    }
}

/// The message for `e`, with what the operator can do about it from the
/// command line.
pub fn message(e: &Error) -> String {
    if e.is_locked() {
        format!("{e}; stop that process, or query it through its admin endpoint with --admin URL")
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use outbox::{ConfigError, DispatchErrorKind, StoreError};

    use super::*;

    #[test]
    fn exit_codes_follow_the_documented_classes() {
        let locked = || -> Error {
            StoreError::Locked {
                path: PathBuf::from("/d"),
            }
            .into()
        };
        let cases: [(Error, u8); 11] = [
            (Error::config("sinks[0].name", "empty"), 2),
            (ConfigError::UnknownSink("x".into()).into(), 2),
            (locked(), 3),
            (
                StoreError::Corrupted {
                    tree: "log",
                    key: "1".into(),
                    reason: "bad".into(),
                }
                .into(),
                3,
            ),
            (
                StoreError::StoreCorrupt {
                    path: PathBuf::from("/d"),
                    reason: "bad".into(),
                    source: None,
                }
                .into(),
                3,
            ),
            (
                StoreError::UnknownFormat {
                    path: PathBuf::from("/d"),
                    found: 9,
                    supported: 1,
                }
                .into(),
                3,
            ),
            (DispatchErrorKind::ShuttingDown.into(), 1),
            (StoreError::Poisoned("disk".into()).into(), 1),
            (StoreError::Io(std::io::Error::other("x")).into(), 1),
            (Error::Io(std::io::Error::other("x")), 1),
            (DispatchErrorKind::Rejected("big".into()).into(), 1),
        ];
        for (e, want) in cases {
            assert_eq!(exit_code(&e), want, "{e}");
        }
        assert_eq!(
            message(&locked()),
            "data directory /d is locked by another process (sled holds an exclusive lock on /d/db); stop that process, or query it through its admin endpoint with --admin URL"
        );
        let other = Error::from(DispatchErrorKind::ShuttingDown);
        assert_eq!(message(&other), other.to_string());
    }
}
