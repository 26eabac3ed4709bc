//! Crash soak: hundreds of SIGKILLs of the real `clancy` binary, at every
//! step between queueing, approving, executing and recording an action, and
//! at random moments; after each, a restart must leave every approved action
//! executed exactly once and no denied one executed.
//!
//! `cargo bench -p clancy --bench crash_soak` (iterations: `CLANCY_SOAK_ITERATIONS`,
//! default 300). Prints a table; exits non-zero on any violation.

#[path = "../../tests/all/crash.rs"]
#[allow(dead_code)]
mod crash;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clancy_guests::HOSTILE;

fn main() -> ExitCode {
    let iterations: usize = std::env::var("CLANCY_SOAK_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut seed = u64::from(std::process::id()) | 1;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut rows: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let started = Instant::now();
    for i in 0..iterations {
        let (label, result) = if i % 4 == 3 {
            let delay = Duration::from_millis(next() % 120);
            ("random moment".to_string(), random_kill(delay))
        } else {
            let step = crash::STEPS[i % crash::STEPS.len()];
            let deny = step.starts_with("decide") && next() % 3 == 0;
            let label = format!("{step}{}", if deny { " (deny)" } else { "" });
            (label, crash::crash_at(HOSTILE, step, deny))
        };
        let row = rows.entry(label.clone()).or_default();
        row.0 += 1;
        if let Err(e) = result {
            row.1 += 1;
            eprintln!("iteration {i} ({label}): VIOLATION: {e:#}");
        }
    }
    println!("{:<36} {:>10} {:>10}", "killed at", "kills", "violations");
    let mut violations = 0;
    for (label, (kills, bad)) in &rows {
        println!("{label:<36} {kills:>10} {bad:>10}");
        violations += bad;
    }
    println!(
        "{iterations} kills in {:.1}s; {violations} violations",
        started.elapsed().as_secs_f64()
    );
    if violations == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Queue, start approving, kill after `delay` wherever it is, restart, check.
fn random_kill(delay: Duration) -> anyhow::Result<()> {
    let scene = crash::Scene::new(HOSTILE)?;
    scene.queue("random")?;
    let id = scene.requests()?[0].0.clone();
    scene.kill_after(delay, &["approvals", "approve", &id, "--as", "ops"])?;
    crash::check_invariant(&scene)?;
    // Whatever state the kill left, deciding now ends it executed exactly once.
    scene.clancy(&["approvals", "approve", &id, "--as", "ops"])?;
    crash::check_invariant(&scene)?;
    let status = scene.requests()?[0].1.clone();
    anyhow::ensure!(status == "executed", "{id} ended {status}");
    Ok(())
}
