//! punctual-server's integration tests: a real node on a real socket, real HTTP requests.

mod auth;
mod harness;
mod idempotency;
mod in_process;
mod malformed;
mod outage;
mod python_worker;
mod schedules;
mod schemathesis;
mod ssrf;
mod webhooks;
mod workers;
