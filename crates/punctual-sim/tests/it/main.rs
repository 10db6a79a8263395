//! The simulation's runner: many seeds, one seed replayed, the regression seeds, and the
//! checker's own tests (forged histories, and whole runs on a deliberately broken store).
//!
//! `PUNCTUAL_SIM_SEED=N` runs seed N alone and prints its plan's outline and history;
//! `PUNCTUAL_SIM_SEEDS=N` changes how many seeds the main test runs (docs/simulation.md).

mod checker;
mod regressions;
mod seeds;

use std::sync::Once;

use punctual_sim::{Options, Run, plan::PANIC_MESSAGE};

/// Runs `seed` on its own paused, single-threaded runtime.
pub fn simulate(seed: u64, options: Options) -> Run {
    quiet_simulated_panics();
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_time().start_paused(true);
    // With `--cfg tokio_unstable`, tokio's own random choices (which branch of a `select!` is
    // polled first) come from the seed too; see docs/simulation.md.
    #[cfg(tokio_unstable)]
    builder.rng_seed(tokio::runtime::RngSeed::from_bytes(&seed.to_le_bytes()));
    let runtime = builder.build().expect("a current-thread runtime builds");
    let run = runtime.block_on(punctual_sim::run(seed, options));
    // The crashed nodes' tasks are parked for good; dropping the runtime drops them.
    drop(runtime);
    run
}

/// Keeps the handlers' simulated panics (thousands per seed run) out of the output; any other
/// panic is reported as usual.
fn quiet_simulated_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied());
            if message != Some(PANIC_MESSAGE) {
                previous(info);
            }
        }));
    });
}
