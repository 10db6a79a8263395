//! Maps SQLite's errors into `StoreError`, the only error type callers ever see.
//!
//! Owns the internal `Failure` type that lets store code use `?` on both rusqlite calls and the
//! store's own refusals. Must not let a `rusqlite::Error` escape the crate's public API.

use punctual_core::StoreError;
use rusqlite::ErrorCode;

/// Why a store operation stopped: the store refused it (a value the caller can act on), or the
/// SQL layer failed. Writer code needs the difference: both roll back the command's savepoint,
/// but only an SQL failure may have taken the whole transaction with it.
#[derive(Debug)]
pub(crate) enum Failure {
    Refused(StoreError),
    Sql(rusqlite::Error),
}

impl From<rusqlite::Error> for Failure {
    fn from(error: rusqlite::Error) -> Failure {
        Failure::Sql(error)
    }
}

/// A column that does not hold the type its reader expects: the row is not one this code wrote.
impl From<rusqlite::types::FromSqlError> for Failure {
    fn from(error: rusqlite::types::FromSqlError) -> Failure {
        corrupt(format!("a stored value does not decode: {error}"))
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Failure {
        Failure::Refused(error)
    }
}

impl From<Failure> for StoreError {
    fn from(failure: Failure) -> StoreError {
        match failure {
            Failure::Refused(error) => error,
            Failure::Sql(error) => from_sql(error),
        }
    }
}

/// Stored data that does not decode, or a file SQLite calls corrupt, is `Corrupt`: retrying will
/// not help. Everything else (I/O, a full disk, a busy lock) is `Unavailable`: it may pass.
pub(crate) fn from_sql(error: rusqlite::Error) -> StoreError {
    match &error {
        rusqlite::Error::SqliteFailure(failure, _)
            if matches!(
                failure.code,
                ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase
            ) =>
        {
            StoreError::Corrupt(format!("sqlite: {error}"))
        }
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..) => {
            StoreError::Corrupt(format!("a stored value does not decode: {error}"))
        }
        _ => StoreError::Unavailable(format!("sqlite: {error}")),
    }
}

/// A stored value this code cannot read back.
pub(crate) fn corrupt(what: impl std::fmt::Display) -> Failure {
    Failure::Refused(StoreError::Corrupt(what.to_string()))
}

/// True when `error` is a primary-key violation, which an insert reports as `Duplicate`.
pub(crate) fn is_primary_key_violation(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(failure, _)
            if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

/// True when `error` says the disk (or the database's size limit) is full.
pub(crate) fn is_disk_full(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(failure, _) if failure.code == ErrorCode::DiskFull
    )
}
