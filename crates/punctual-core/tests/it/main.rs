//! punctual-core's integration tests: one binary, through the crate's public API only.

mod cron_oracle;
