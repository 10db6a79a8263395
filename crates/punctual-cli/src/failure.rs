//! `Failure`: why a job or queue command failed, in the terms `main` turns into an exit code:
//! the problem document a server answered, the one it would have answered for the same error
//! (store mode, and the command line's own checks), or a usage error of the kind clap reports.
//!
//! Every problem is made by `punctual_server::ApiError` (its constructors, or its conversion
//! from `StoreError`), so a code means the same here as on the wire in both modes. Must not pick
//! exit codes: that is `main`'s table.

use std::fmt;

use punctual_core::StoreError;
use punctual_server::{ApiError, Problem};

/// A failure a script can branch on, carried out of a command inside its `anyhow::Error`.
#[derive(Debug)]
pub enum Failure {
    /// A problem with a stable `code` (`not_found`, `validation_failed`, `unavailable`, ...).
    Problem(Problem),
    /// The command line asks for something the chosen mode cannot do (a webhook job without a
    /// server): a usage error, like clap's own.
    Usage(String),
}

impl Failure {
    pub fn from_api(error: ApiError) -> Failure {
        Failure::Problem(error.problem())
    }

    /// A store's error, coded as the server would answer it.
    pub fn store(error: StoreError) -> anyhow::Error {
        Failure::from_api(ApiError::from(error)).into()
    }

    /// Input refused before anything was sent or stored (`validation_failed`).
    pub fn invalid(detail: impl fmt::Display) -> anyhow::Error {
        Failure::from_api(ApiError::validation(detail.to_string())).into()
    }

    /// An input check's error (with its context, like `invalid --kind: ...`) as
    /// `validation_failed`.
    pub fn invalid_input(error: anyhow::Error) -> anyhow::Error {
        Failure::invalid(format!("{error:#}"))
    }

    pub fn not_found(detail: impl fmt::Display) -> anyhow::Error {
        Failure::from_api(ApiError::not_found(detail.to_string())).into()
    }

    /// The store or the server cannot be reached (`unavailable`).
    pub fn unavailable(detail: impl fmt::Display) -> anyhow::Error {
        Failure::from_api(ApiError::unavailable(detail.to_string())).into()
    }

    pub fn usage(message: impl Into<String>) -> anyhow::Error {
        Failure::Usage(message.into()).into()
    }

    /// The failure in `error`'s chain, if any: a command may have added context around it.
    pub fn find(error: &anyhow::Error) -> Option<&Failure> {
        error
            .chain()
            .find_map(|cause| cause.downcast_ref::<Failure>())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The code is printed by `main`, ahead of any context a command added.
            Failure::Problem(problem) => formatter.write_str(&problem.detail),
            Failure::Usage(message) => formatter.write_str(message),
        }
    }
}

impl std::error::Error for Failure {}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;
    use punctual_core::JobId;

    #[test]
    fn a_store_error_gets_the_servers_code_and_is_found_under_context() {
        let id = JobId::from_bytes([7; 16]);
        let error = Err::<(), _>(Failure::store(StoreError::NotFound(id)))
            .context("cancelling")
            .expect_err("an error");
        match Failure::find(&error) {
            Some(Failure::Problem(problem)) => {
                assert_eq!(problem.code, "not_found");
                assert_eq!(problem.status, 404);
            }
            other => panic!("expected a problem, found {other:?}"),
        }
        assert_eq!(
            format!("{error:#}"),
            format!("cancelling: job {id} not found")
        );
    }
}
