//! Mapping of SQLite errors onto [`StoreErrorKind`].

use cnc_model::{StoreError, StoreErrorKind};
use rusqlite::ErrorCode;

/// A store error for a SQLite failure; the driver error is kept as `source`.
pub(crate) fn map_err(e: rusqlite::Error) -> StoreError {
    let (kind, message) = match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => (
                StoreErrorKind::Busy,
                "the SQLite database is locked by another connection",
            ),
            ErrorCode::DiskFull => (
                StoreErrorKind::Full,
                "the disk or the SQLite database is full",
            ),
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => (
                StoreErrorKind::Corrupt,
                "the SQLite database file is damaged or not a database",
            ),
            ErrorCode::CannotOpen => (
                StoreErrorKind::Connection,
                "cannot open the SQLite database",
            ),
            ErrorCode::ReadOnly => (StoreErrorKind::Backend, "the SQLite database is read-only"),
            _ => (StoreErrorKind::Backend, "SQLite error"),
        },
        rusqlite::Error::FromSqlConversionFailure(..) | rusqlite::Error::InvalidColumnType(..) => (
            StoreErrorKind::Corrupt,
            "unexpected data in the SQLite database",
        ),
        _ => (StoreErrorKind::Backend, "SQLite error"),
    };
    StoreError::new(kind, format!("{message}: {e}")).with_source(e)
}

/// A store error for stored JSON that does not parse.
pub(crate) fn corrupt(what: &str, e: serde_json::Error) -> StoreError {
    StoreError::new(
        StoreErrorKind::Corrupt,
        format!("stored {what} does not parse: {e}"),
    )
    .with_source(e)
}

/// The error every call gets after `close()`.
pub(crate) fn closed() -> StoreError {
    StoreError::new(StoreErrorKind::Closed, "the SQLite store is closed")
}
