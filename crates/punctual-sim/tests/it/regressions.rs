//! Seeds that found bugs, kept so the bugs stay fixed. Each ran with a broken invariant before
//! its fix; each must now run clean. A seed names a scenario only under the plan generator it
//! was found with, so each also pins its plan's fingerprint: if the generator changes, this test
//! says so, and new seeds must be found for the bugs (docs/simulation.md says how).

use punctual_sim::{Options, Plan};

use crate::seeds::failure;
use crate::simulate;

struct Regression {
    seed: u64,
    fingerprint: u64,
    /// What the seed did before the fix.
    found: &'static str,
}

const REGRESSIONS: &[Regression] = &[
    // A job task checked its lease before starting the handler (`get`, or `extend_lease` when
    // little was left), and the answer came back after the lease it confirmed had run out. It
    // started the handler anyway. Fixed in crates/punctual/src/execute.rs: a handler starts only
    // with a heartbeat of its confirmed lease left, else the lease is renewed and judged again.
    Regression {
        seed: 65,
        fingerprint: 0x3dca_d2ad_ef4f_43e9,
        found: "NoDoubleRun: the handler under token 1 started after the job had been rescued, \
                run again and had succeeded under token 2",
    },
    Regression {
        seed: 283,
        fingerprint: 0x0862_a54b_6397_9df4,
        found: "NoDoubleRun: the handler under token 1 started while the one under token 2, on \
                another node, ran under a live lease",
    },
    Regression {
        seed: 77,
        fingerprint: 0x781b_4315_f930_caf9,
        found: "StartWithinLease: a handler started after its lease had expired",
    },
    // A job task slept on tokio's timer until `run_at` and started the handler when it fired,
    // without reading the clock: a clock stepped back meanwhile made it start early by the
    // step. Fixed in crates/punctual/src/execute.rs: it sleeps until the clock reads `run_at`,
    // and waits again if the clock steps back during the check before the start.
    Regression {
        seed: 30,
        fingerprint: 0x2c5a_a298_ec7f_f14b,
        found: "NoEarlyStart: started 417 ms before its run_at, after a 417 ms step back",
    },
    Regression {
        seed: 66,
        fingerprint: 0xe7f5_8030_51ef_1390,
        found: "NoEarlyStart: started 250 ms before its run_at, after the clock stepped back",
    },
];

#[test]
fn the_seeds_that_found_bugs_run_clean() {
    for regression in REGRESSIONS {
        let seed = regression.seed;
        assert_eq!(
            Plan::generate(seed).fingerprint(),
            regression.fingerprint,
            "seed {seed} no longer draws the plan that found \"{}\": the plan generator changed; \
             find a seed that shows the bug again (docs/simulation.md) and pin it here",
            regression.found
        );
        let violations = simulate(seed, Options::default()).violations();
        assert!(
            violations.is_empty(),
            "regression seed {seed} (it found \"{}\"):\n{}",
            regression.found,
            failure(seed, &violations)
        );
    }
}
