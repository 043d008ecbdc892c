//! Driver errors to [`StoreError`]: a kind to match on, a short message, and
//! the driver error only as `source`.

use cnc_model::{StoreError, StoreErrorKind};
use tokio_postgres::error::SqlState;

/// Map a tokio-postgres error. `what` names the operation for the message.
pub(crate) fn pg(what: &str, err: tokio_postgres::Error) -> StoreError {
    let (kind, detail) = match err.code() {
        Some(code) => (kind_of(code), format!("SQLSTATE {}", code.code())),
        None if err.is_closed() => (StoreErrorKind::Connection, "connection closed".to_owned()),
        None if is_io(&err) => (StoreErrorKind::Connection, "connection error".to_owned()),
        None => (StoreErrorKind::Backend, "driver error".to_owned()),
    };
    StoreError::new(kind, format!("postgres: {what} failed ({detail})")).with_source(err)
}

/// True when an I/O error (socket, connect timeout) is in the chain.
fn is_io(err: &tokio_postgres::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = cur {
        if e.is::<std::io::Error>() {
            return true;
        }
        cur = e.source();
    }
    // Connect timeouts and closed sockets carry no io::Error source.
    let text = err.to_string();
    text.contains("timeout") || text.contains("connect")
}

/// The kind for a SQLSTATE.
pub(crate) fn kind_of(code: &SqlState) -> StoreErrorKind {
    let c = code.code();
    if *code == SqlState::DISK_FULL {
        StoreErrorKind::Full
    } else if c.starts_with("54") {
        // program_limit_exceeded: a value too large for an index row, ...
        StoreErrorKind::InvalidInput
    } else if *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::LOCK_NOT_AVAILABLE
        || *code == SqlState::QUERY_CANCELED
        || *code == SqlState::TOO_MANY_CONNECTIONS
        || *code == SqlState::INSUFFICIENT_RESOURCES
        || *code == SqlState::OUT_OF_MEMORY
    {
        StoreErrorKind::Busy
    } else if c.starts_with("08")
        || c.starts_with("28")
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
        || *code == SqlState::INVALID_CATALOG_NAME
    {
        StoreErrorKind::Connection
    } else if c.starts_with("22") || c.starts_with("XX") {
        StoreErrorKind::Corrupt
    } else {
        StoreErrorKind::Backend
    }
}

/// True for errors worth retrying the whole transaction for.
pub(crate) fn retryable(err: &tokio_postgres::Error) -> bool {
    err.code().is_some_and(|c| {
        *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    })
}

/// Map a pool error.
pub(crate) fn pool(err: deadpool_postgres::PoolError) -> StoreError {
    use deadpool_postgres::PoolError;
    match err {
        PoolError::Backend(e) => pg("connecting", e),
        PoolError::Timeout(_) => StoreError::new(
            StoreErrorKind::Busy,
            "postgres: timed out waiting for a pooled connection",
        ),
        PoolError::Closed => StoreError::new(StoreErrorKind::Closed, "postgres: store is closed"),
        other => StoreError::new(
            StoreErrorKind::Connection,
            "postgres: could not get a connection",
        )
        .with_source(other),
    }
}

/// A stored row that cannot be decoded.
pub(crate) fn corrupt(what: &str, err: serde_json::Error) -> StoreError {
    StoreError::new(
        StoreErrorKind::Corrupt,
        format!("postgres: stored {what} cannot be decoded"),
    )
    .with_source(err)
}

/// Encoding a value as JSON failed (never for our types; mapped anyway).
pub(crate) fn encode(what: &str, err: serde_json::Error) -> StoreError {
    StoreError::new(
        StoreErrorKind::InvalidInput,
        format!("postgres: {what} cannot be encoded as JSON"),
    )
    .with_source(err)
}
