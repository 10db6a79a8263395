//! Maps the driver's and the pool's errors into `StoreError`, the only error type callers see.
//!
//! Owns the rule for which failures are worth retrying (`Unavailable`) and which mean the schema
//! or the stored data is not what this code expects (`Corrupt`). Must not let a
//! `tokio_postgres::Error` or a `deadpool_postgres::PoolError` escape the crate's public API.

use deadpool_postgres::PoolError;
use punctual_core::StoreError;
use tokio_postgres::error::SqlState;

/// A driver error as a `StoreError`.
///
/// No SQLSTATE (I/O, a closed connection, a protocol error): `Unavailable`, the connection may
/// come back. SQLSTATE classes that say "the statement or the stored data does not fit this
/// code" (42 syntax or undefined object, 22 data exception, 23 integrity, XX internal, 0A not
/// supported): `Corrupt`, since retrying cannot help. Everything else (08 connection, 40
/// serialization or deadlock, 53 resources, 57 operator intervention such as a shutdown, 55 lock
/// not available, ...): `Unavailable`.
pub(crate) fn pg(error: tokio_postgres::Error) -> StoreError {
    let Some(code) = error.code() else {
        // The driver's own message names only the step ("error performing TLS handshake");
        // the reason (an unknown issuer, a refused connection) is in its sources.
        let mut message = format!("postgres: {error}");
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !message.ends_with(&cause_text) {
                message.push_str(": ");
                message.push_str(&cause_text);
            }
            source = cause.source();
        }
        return StoreError::Unavailable(message);
    };
    let described = match error.as_db_error() {
        Some(db) => format!("postgres {}: {}", code.code(), db.message()),
        None => format!("postgres {}: {error}", code.code()),
    };
    if *code == SqlState::INSUFFICIENT_PRIVILEGE {
        // A configuration problem, not a schema mismatch: an operator can fix it and retry.
        return StoreError::Unavailable(described);
    }
    match &code.code()[..2] {
        "42" | "22" | "23" | "XX" | "0A" => StoreError::Corrupt(described),
        _ => StoreError::Unavailable(described),
    }
}

/// A pool error as a `StoreError`: waiting for, or opening, a connection failed.
pub(crate) fn pool(error: PoolError) -> StoreError {
    match error {
        PoolError::Backend(error) => pg(error),
        other => StoreError::Unavailable(format!("postgres connection pool: {other}")),
    }
}

/// True when `error` is a unique violation on the jobs' primary key (an insert's duplicate id).
pub(crate) fn is_duplicate_id(error: &tokio_postgres::Error) -> bool {
    error.as_db_error().is_some_and(|db| {
        *db.code() == SqlState::UNIQUE_VIOLATION && db.constraint() == Some("punctual_jobs_pkey")
    })
}

/// A stored value this code cannot read back.
pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}
