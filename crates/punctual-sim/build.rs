//! Declares `cfg(tokio_unstable)`, which the seed runner reads: built with
//! `RUSTFLAGS="--cfg tokio_unstable"`, it seeds tokio's own random choices from the run's seed.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(tokio_unstable)");
}
