//! SIGKILL at every step of the approval path; after a restart, approved
//! actions ran exactly once and denied ones never (see `crash`).

use anyhow::{Context, Result};
use clancy_guests::HOSTILE;

use crate::crash::{STEPS, crash_at};

#[test]
fn an_approved_action_runs_exactly_once_whatever_step_the_host_is_killed_at() -> Result<()> {
    for step in STEPS {
        crash_at(HOSTILE, step, false).with_context(|| format!("killed at {step}"))?;
    }
    Ok(())
}

#[test]
fn a_denied_action_never_runs_whatever_step_the_host_is_killed_at() -> Result<()> {
    for step in ["decide:before-transition", "decide:after-transition"] {
        crash_at(HOSTILE, step, true).with_context(|| format!("killed at {step}"))?;
    }
    Ok(())
}

#[test]
fn a_task_killed_mid_run_is_recorded_as_interrupted_at_the_next_start() -> Result<()> {
    let scene = crate::crash::Scene::new(clancy_guests::HOSTILE)?;
    let manifest = scene.manifest_path();
    // Killed after the intent of its file write, before the result.
    assert!(scene.kill_at(
        "execute:after-intent",
        &["run", &manifest, "--task", "write-file a.txt half done"],
    )?);
    let (code, _) = scene.clancy(&["run", &manifest, "--task", "print next"])?;
    assert_eq!(code, Some(0));
    let (_, log) = scene.clancy(&["audit", "log", "--json"])?;
    let entries: Vec<serde_json::Value> = log
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let started: Vec<&str> = entries
        .iter()
        .filter(|e| e["kind"] == "task-start")
        .filter_map(|e| e["task"].as_str())
        .collect();
    assert_eq!(started.len(), 2);
    let ends = |task: &str| -> Vec<String> {
        entries
            .iter()
            .filter(|e| e["kind"] == "task-end" && e["task"] == task)
            .filter_map(|e| e["result"].as_str().map(str::to_string))
            .collect()
    };
    // The killed task is closed once, as interrupted; the next one as usual.
    let first = ends(started[0]);
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].starts_with("interrupted:"), "{first:?}");
    assert!(ends(started[1])[0].starts_with("completed:"));
    // A later start does not close it again.
    scene.clancy(&["approvals", "list"])?;
    let (_, log) = scene.clancy(&["audit", "log", "--json"])?;
    assert_eq!(log.matches("interrupted:").count(), 1);
    let (_, verify) = scene.clancy(&["audit", "verify"])?;
    assert!(verify.starts_with("audit log intact"), "{verify}");
    Ok(())
}
