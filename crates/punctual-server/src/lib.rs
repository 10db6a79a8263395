//! punctual as a service: `punctual serve`'s node (the engine, the HTTP API, the webhook
//! executor), the wire format, authentication, metrics, and the opening of a store named by
//! URL (`store_url`), which the binary and the benchmark harness share.
//!
//! The only crate that knows HTTP. It talks to storage through the `Store` trait and runs jobs
//! through the engine (`punctual::Scheduler`); it holds no SQL.

pub mod api;
mod app;
pub mod auth;
pub mod body;
pub mod config;
pub mod dto;
pub mod error;
mod metered;
pub mod metrics;
pub mod node;
pub mod store_url;
pub mod webhook;

pub use error::{ApiError, Problem};
pub use node::{Node, NodeConfig, NodeError};
