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
