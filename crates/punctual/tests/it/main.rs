//! Engine tests: a real engine on the MemoryStore, on tokio's paused clock, so no test sleeps in
//! real time and every timing assertion is exact in virtual time; and one on a real PostgreSQL
//! store, for what only it offers (a handler completing its job in its own transaction).

mod engine;
mod postgres;
mod schedules;
mod timeouts;
