//! The seed runs: `SEEDS` seeds in `SHARDS` tests (so the test harness spreads them over the
//! cores), one seed replayed in full, and the check that a seed replays to the same history.

use std::time::Instant;

use punctual_sim::{Options, Stats, Violation};

use crate::simulate;

/// How many seeds CI runs: each takes about 38 ms of one core in a debug build, so these take
/// about two minutes of CPU, one on two cores.
const SEEDS: u64 = 3_000;
const SHARDS: u64 = 4;

/// `PUNCTUAL_SIM_SEEDS=N` runs seeds `0..N` instead of `0..SEEDS`.
fn seed_count() -> u64 {
    match std::env::var("PUNCTUAL_SIM_SEEDS") {
        Ok(count) => count
            .parse()
            .expect("PUNCTUAL_SIM_SEEDS is a number of seeds"),
        Err(_) => SEEDS,
    }
}

/// `PUNCTUAL_SIM_SEED=N`: the one seed to replay, if asked.
fn replayed_seed() -> Option<u64> {
    let seed = std::env::var("PUNCTUAL_SIM_SEED").ok()?;
    Some(seed.parse().expect("PUNCTUAL_SIM_SEED is a seed number"))
}

/// The report of a failed seed: what broke, and how to see it all again.
pub fn failure(seed: u64, violations: &[Violation]) -> String {
    let mut report = format!("seed {seed} broke {} invariant(s):\n", violations.len());
    for violation in violations.iter().take(20) {
        report.push_str(&format!("  {violation}\n"));
    }
    if violations.len() > 20 {
        report.push_str(&format!("  ... and {} more\n", violations.len() - 20));
    }
    report.push_str(&format!(
        "  replay: PUNCTUAL_SIM_SEED={seed} cargo test -p punctual-sim --test it replay -- --nocapture\n"
    ));
    report
}

fn shard(index: u64) {
    if replayed_seed().is_some() {
        // `replay` runs it; the shards stand aside.
        return;
    }
    let started = Instant::now();
    let mut stats = Stats::default();
    let mut failures = Vec::new();
    let seeds: Vec<u64> = (0..seed_count())
        .filter(|seed| seed % SHARDS == index)
        .collect();
    for &seed in &seeds {
        let run = simulate(seed, Options::default());
        stats += run.stats();
        let violations = run.violations();
        if !violations.is_empty() {
            eprint!("{}", failure(seed, &violations));
            failures.push(seed);
        }
    }
    eprintln!(
        "shard {index}: {} seeds in {:.1?}: {stats:?}",
        seeds.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "seeds {failures:?} broke invariants (reports above)"
    );
}

#[test]
fn seeds_shard_0() {
    shard(0);
}

#[test]
fn seeds_shard_1() {
    shard(1);
}

#[test]
fn seeds_shard_2() {
    shard(2);
}

#[test]
fn seeds_shard_3() {
    shard(3);
}

/// `PUNCTUAL_SIM_SEED=N cargo test -p punctual-sim --test it replay -- --nocapture` prints seed
/// N's plan, its history and its violations, and fails if there are any. Without the variable
/// it does nothing.
#[test]
fn replay() {
    let Some(seed) = replayed_seed() else {
        return;
    };
    let run = simulate(seed, Options::default());
    println!("{}", run.plan);
    println!("tokio ms     clock ms  entry");
    print!("{}", run.history);
    println!(
        "{} records, digest {:016x}, {:?}",
        run.history.records.len(),
        run.history.digest(),
        run.stats()
    );
    let violations = run.violations();
    assert!(violations.is_empty(), "{}", failure(seed, &violations));
    println!("seed {seed}: every invariant held");
}

/// A seed names a run, not only a scenario: run twice (each run's tokio runtime draws its own
/// random seed for `select!`), it records the same history. See docs/simulation.md for what
/// this rests on. `PUNCTUAL_SIM_TWICE=N` runs seeds `0..N` twice instead of `0..16`.
#[test]
fn a_seed_runs_the_same_twice() {
    let seeds: u64 = match std::env::var("PUNCTUAL_SIM_TWICE") {
        Ok(count) => count
            .parse()
            .expect("PUNCTUAL_SIM_TWICE is a number of seeds"),
        Err(_) => 16,
    };
    for seed in 0..seeds {
        let first = simulate(seed, Options::default()).history;
        let second = simulate(seed, Options::default()).history;
        if let Some(index) = first
            .records
            .iter()
            .zip(&second.records)
            .position(|(one, other)| one != other)
        {
            panic!(
                "seed {seed} ran differently the second time, from record {index}:\n  {:?}\n  {:?}",
                first.records[index], second.records[index]
            );
        }
        assert_eq!(first.records.len(), second.records.len(), "seed {seed}");
        assert_eq!(first.digest(), second.digest(), "seed {seed}");
    }
}
