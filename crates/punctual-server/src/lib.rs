//! punctual as a service: the crate that opens stores for a long-running process and, as it
//! grows, serves the HTTP API.
//!
//! For now it holds `store_url`, which turns a store's URL (`sqlite:PATH`, `postgres://...`)
//! into an opened store and the clock an engine on it must use. The binary and the benchmark
//! harness open their stores through it, so there is one spelling of a store everywhere.

pub mod store_url;
