//! [`DispatchError`]: a failed dispatch's [`DispatchErrorKind`], with its
//! records and tokens handed back when none of them was appended, as
//! tokio's `SendError<T>` does.
//!
//! Invariant: `items` is `Some` only when nothing of the call was written:
//! the records can be dispatched again (or set aside) without a duplicate.
//! When the store failed after the appender took the request, the records
//! may be durable ("maybe appended"), so they are not handed back and their
//! tokens are dropped, never released.

use std::fmt;

use crate::error::{DispatchErrorKind, Error};
use crate::types::Record;

/// The records and tokens of one dispatch call, in the order given.
pub type Items<T> = Vec<(Record, Vec<T>)>;

/// Why a `dispatch*` or `try_dispatch*` call failed
/// ([`DispatchError::kind`]), and what it was given when nothing was
/// appended ([`DispatchError::into_items`]).
///
/// `Debug` does not require `T: Debug`: it prints the kind and how many
/// items came back, so `.unwrap()` works for any token type. It converts
/// into [`Error`] with `?`, dropping the items.
pub struct DispatchError<T> {
    kind: DispatchErrorKind,
    items: Option<Items<T>>,
}

impl<T> DispatchError<T> {
    /// A failure that hands `items` back: nothing of them was appended.
    pub(crate) fn returned(kind: impl Into<DispatchErrorKind>, items: Items<T>) -> Self {
        DispatchError {
            kind: kind.into(),
            items: Some(items),
        }
    }

    /// A failure after which the records may be appended: nothing comes
    /// back.
    pub(crate) fn kept(kind: impl Into<DispatchErrorKind>) -> Self {
        DispatchError {
            kind: kind.into(),
            items: None,
        }
    }

    /// Why the call failed.
    pub fn kind(&self) -> &DispatchErrorKind {
        &self.kind
    }

    /// Why the call failed, dropping any items.
    pub fn into_kind(self) -> DispatchErrorKind {
        self.kind
    }

    /// The records and tokens given to the call, byte-identical and in
    /// order, when none of them was appended; `None` when the store failed
    /// after the request was taken and they may be durable (then the tokens
    /// are dropped, never released).
    pub fn into_items(self) -> Option<Items<T>> {
        self.items
    }

    /// The kind and the items together.
    pub fn into_parts(self) -> (DispatchErrorKind, Option<Items<T>>) {
        (self.kind, self.items)
    }

    /// Whether items came back, without taking them.
    pub fn has_items(&self) -> bool {
        self.items.is_some()
    }

    /// [`DispatchErrorKind::is_transient`] of the kind.
    pub fn is_transient(&self) -> bool {
        self.kind.is_transient()
    }

    /// [`DispatchErrorKind::is_corruption`] of the kind.
    pub fn is_corruption(&self) -> bool {
        self.kind.is_corruption()
    }
}

impl<T> fmt::Display for DispatchError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.kind, f)
    }
}

impl<T> fmt::Debug for DispatchError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("DispatchError");
        d.field("kind", &self.kind);
        match &self.items {
            Some(items) => d.field("items_returned", &items.len()),
            None => d.field("items_returned", &format_args!("none")),
        };
        d.finish()
    }
}

impl<T> std::error::Error for DispatchError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.kind)
    }
}

impl<T> From<DispatchError<T>> for Error {
    fn from(e: DispatchError<T>) -> Self {
        e.kind.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StoreError;

    /// A token type without `Debug`: `unwrap_err` and `{:?}` still work.
    struct Opaque;

    #[test]
    fn debug_and_display_need_no_debug_tokens() {
        let e = DispatchError::returned(
            DispatchErrorKind::ShuttingDown,
            vec![(Record::new(b"a".to_vec()), vec![Opaque, Opaque])],
        );
        assert_eq!(e.to_string(), "outbox is shutting down");
        assert_eq!(
            format!("{e:?}"),
            "DispatchError { kind: ShuttingDown, items_returned: 1 }"
        );
        let kept = DispatchError::<Opaque>::kept(StoreError::Poisoned("disk".into()));
        assert_eq!(
            format!("{kept:?}"),
            "DispatchError { kind: Store(Poisoned(\"disk\")), items_returned: none }"
        );
        let src = std::error::Error::source(&kept).map(|s| s.to_string());
        assert_eq!(src.as_deref(), Some(kept.kind().to_string().as_str()));
        assert!(kept.into_items().is_none());
        let items = e.into_items().unwrap();
        assert_eq!(items[0].0.payload, b"a");
        assert_eq!(items[0].1.len(), 2);
    }

    #[test]
    fn question_mark_converts_into_error() {
        fn f(kind: DispatchErrorKind) -> crate::Result<()> {
            Err(DispatchError::<Opaque>::kept(kind))?;
            Ok(())
        }
        assert!(matches!(
            f(DispatchErrorKind::ShuttingDown),
            Err(Error::Dispatch(DispatchErrorKind::ShuttingDown))
        ));
        // A store failure is an `Error::Store`, however it arrived.
        assert!(matches!(
            f(StoreError::Poisoned("disk".into()).into()),
            Err(Error::Store(StoreError::Poisoned(_)))
        ));
    }
}
