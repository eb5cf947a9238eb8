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

    use super::*;

    #[test]
    fn exit_codes_follow_the_documented_classes() {
        let locked = Error::Locked {
            path: PathBuf::from("/d"),
        };
        let cases = [
            (Error::config("sinks[0].name", "empty"), 2),
            (Error::UnknownSink("x".into()), 2),
            (
                Error::Locked {
                    path: PathBuf::from("/d"),
                },
                3,
            ),
            (
                Error::Corrupted {
                    tree: "log",
                    key: "1".into(),
                    reason: "bad".into(),
                },
                3,
            ),
            (
                Error::StoreCorrupt {
                    path: PathBuf::from("/d"),
                    reason: "bad".into(),
                },
                3,
            ),
            (
                Error::UnknownFormat {
                    path: PathBuf::from("/d"),
                    found: 9,
                    supported: 1,
                },
                3,
            ),
            (Error::ShuttingDown, 1),
            (Error::Poisoned("disk".into()), 1),
            (Error::Io(std::io::Error::other("x")), 1),
            (Error::Rejected("big".into()), 1),
        ];
        for (e, want) in cases {
            assert_eq!(exit_code(&e), want, "{e}");
        }
        assert_eq!(
            message(&locked),
            "data directory /d is locked by another process (sled holds an exclusive lock on /d/db); stop that process, or query it through its admin endpoint with --admin URL"
        );
        let other = Error::ShuttingDown;
        assert_eq!(message(&other), other.to_string());
    }
}
