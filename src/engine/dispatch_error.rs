//! [`DispatchError`]: a failed dispatch, with its records and tokens handed
//! back when none of them was appended, as tokio's `SendError<T>` does.
//!
//! Invariant: `items` is `Some` only when nothing of the call was written:
//! the records can be dispatched again (or parked) without a duplicate.
//! When the store failed after the appender took the request, the records
//! may be durable ("maybe appended"), so they are not handed back and their
//! tokens are dropped, never released.

use std::fmt;

use crate::error::Error;
use crate::types::Record;

/// The records and tokens of one dispatch call, in the order given.
pub type Items<T> = Vec<(Record, Vec<T>)>;

/// Why a `dispatch*` or `try_dispatch*` call failed, and what it was given
/// when nothing was appended.
///
/// `Debug` does not require `T: Debug`: it prints the error and how many
/// items came back, so `.unwrap()` works for any token type. It converts
/// into [`Error`] with `?`, dropping the items.
pub struct DispatchError<T> {
    error: Error,
    items: Option<Items<T>>,
}

impl<T> DispatchError<T> {
    /// A failure that hands `items` back: nothing of them was appended.
    pub(crate) fn returned(error: Error, items: Items<T>) -> Self {
        DispatchError {
            error,
            items: Some(items),
        }
    }

    /// A failure after which the records may be appended: nothing comes
    /// back.
    pub(crate) fn kept(error: Error) -> Self {
        DispatchError { error, items: None }
    }

    /// The error.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The error, dropping any items.
    pub fn into_error(self) -> Error {
        self.error
    }

    /// The records and tokens given to the call, byte-identical and in
    /// order, when none of them was appended; `None` when the store failed
    /// after the request was taken and they may be durable (then the tokens
    /// are dropped, never released).
    pub fn into_items(self) -> Option<Items<T>> {
        self.items
    }

    /// The error and the items together.
    pub fn into_parts(self) -> (Error, Option<Items<T>>) {
        (self.error, self.items)
    }

    /// Whether items came back, without taking them.
    pub fn has_items(&self) -> bool {
        self.items.is_some()
    }

    /// [`Error::is_transient`] of the error.
    pub fn is_transient(&self) -> bool {
        self.error.is_transient()
    }

    /// [`Error::is_corruption`] of the error.
    pub fn is_corruption(&self) -> bool {
        self.error.is_corruption()
    }
}

impl<T> fmt::Display for DispatchError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl<T> fmt::Debug for DispatchError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("DispatchError");
        d.field("error", &self.error);
        match &self.items {
            Some(items) => d.field("items_returned", &items.len()),
            None => d.field("items_returned", &format_args!("none")),
        };
        d.finish()
    }
}

impl<T> std::error::Error for DispatchError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<T> From<DispatchError<T>> for Error {
    fn from(e: DispatchError<T>) -> Self {
        e.error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token type without `Debug`: `unwrap_err` and `{:?}` still work.
    struct Opaque;

    #[test]
    fn debug_and_display_need_no_debug_tokens() {
        let e = DispatchError::returned(
            Error::ShuttingDown,
            vec![(Record::new(b"a".to_vec()), vec![Opaque, Opaque])],
        );
        assert_eq!(e.to_string(), "outbox is shutting down");
        assert_eq!(
            format!("{e:?}"),
            "DispatchError { error: ShuttingDown, items_returned: 1 }"
        );
        let kept = DispatchError::<Opaque>::kept(Error::Poisoned("disk".into()));
        assert_eq!(
            format!("{kept:?}"),
            "DispatchError { error: Poisoned(\"disk\"), items_returned: none }"
        );
        let src = std::error::Error::source(&kept).map(|s| s.to_string());
        assert_eq!(src.as_deref(), Some(kept.error().to_string().as_str()));
        assert!(kept.into_items().is_none());
        let items = e.into_items().unwrap();
        assert_eq!(items[0].0.payload, b"a");
        assert_eq!(items[0].1.len(), 2);
    }

    #[test]
    fn question_mark_converts_into_error() {
        fn f() -> crate::Result<()> {
            Err(DispatchError::<Opaque>::kept(Error::ShuttingDown))?;
            Ok(())
        }
        assert!(matches!(f(), Err(Error::ShuttingDown)));
    }
}
