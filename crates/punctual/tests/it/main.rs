//! Engine tests: a real engine on the MemoryStore, on tokio's paused clock, so no test sleeps in
//! real time and every timing assertion is exact in virtual time.

mod engine;
