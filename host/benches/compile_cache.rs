//! Compiled-component reuse: how long loading an employee's component
//! takes when it is compiled from scratch, when the next process finds the
//! sealed artifact on disk, and when the same process loads it again.
//!
//! `cargo bench -p clancy --bench compile_cache` (rounds: `CLANCY_BENCH_ROUNDS`,
//! default 7). Prints a table with the median of each and its ratio to
//! compiling; exits non-zero if a target is missed.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clancy::keys::Keys;
use clancy::runtime::Runtime;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("compile_cache: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<bool> {
    let rounds: usize = std::env::var("CLANCY_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7)
        .max(1);
    let component = Path::new(clancy_guests::CUSTOMER_SERVICE);
    let bytes = std::fs::read(component)?;
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("compiled");
    let keys = Arc::new(Keys::ephemeral());
    let fresh = || Runtime::new().map_err(|e| anyhow::anyhow!("{e}"));
    let load = |runtime: &Runtime| -> anyhow::Result<Duration> {
        let started = Instant::now();
        runtime.compile_bytes(component, &bytes)?;
        Ok(started.elapsed())
    };

    // Baseline: every process compiles (no artifact kept).
    let mut compiled = Vec::new();
    for _ in 0..rounds {
        compiled.push(load(&fresh()?)?);
    }
    // The next process: a fresh runtime finding the sealed artifact.
    load(&fresh()?.with_artifacts_in(cache.clone(), keys.clone()))?;
    let mut next_process = Vec::new();
    for _ in 0..rounds {
        let runtime = fresh()?.with_artifacts_in(cache.clone(), keys.clone());
        next_process.push(load(&runtime)?);
        anyhow::ensure!(
            runtime.artifact_stats().compiled == 0,
            "the next process compiled again"
        );
    }
    // The same process, loading it again.
    let runtime = fresh()?.with_artifacts_in(cache, keys);
    load(&runtime)?;
    let mut same_process = Vec::new();
    for _ in 0..rounds {
        same_process.push(load(&runtime)?);
    }

    let base = median(compiled);
    let rows = [
        (
            "second process start (sealed artifact on disk)",
            median(next_process),
            0.1,
        ),
        ("second load in the same process", median(same_process), 0.1),
    ];
    println!(
        "component: {} ({} KiB); {rounds} rounds; cores: {}",
        component
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?"),
        bytes.len() / 1024,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| metric | this build (p50) | baseline: compiling from scratch (p50) | ratio | target | met |"
    );
    println!("|---|---|---|---|---|---|");
    let mut all_met = true;
    for (metric, figure, target) in rows {
        let ratio = figure.as_secs_f64() / base.as_secs_f64();
        let met = ratio <= target;
        all_met &= met;
        println!(
            "| {metric} | {figure:.2?} | {base:.2?} | {ratio:.3} | ≤ {target} | {} |",
            if met { "yes" } else { "no" }
        );
    }
    Ok(all_met)
}
