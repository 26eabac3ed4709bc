//! `clancy undo`: undo one action or every write of a task.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use anyhow::Result;
use clap::Args;

use super::{Global, open, who};
use crate::org::DataDirMode;

/// `clancy undo`
#[derive(Args, Debug)]
pub(super) struct UndoArgs {
    /// The action's number in `clancy audit log` (e.g. 42 or #42).
    #[arg(required_unless_present = "task", conflicts_with = "task")]
    action: Option<String>,
    /// Undo every write of this task (full id or its first characters), newest first.
    #[arg(long)]
    task: Option<String>,
    /// Who asks for the undo [default: $USER].
    #[arg(long = "as", value_name = "NAME")]
    by: Option<String>,
    /// Print the reports as JSON Lines.
    #[arg(long)]
    json: bool,
}

/// Undo what the arguments name.
pub(super) fn run(global: &Global, args: UndoArgs, out: &mut impl Write) -> Result<ExitCode> {
    let UndoArgs {
        action,
        task,
        by,
        json,
    } = args;
    if let Some(remote) = super::remote(global)? {
        super::remote::no_as(&by)?;
        let body = match (action, task) {
            (Some(action), _) => serde_json::json!({ "action": action_number(&action)? }),
            (None, Some(task)) => serde_json::json!({ "task": task }),
            (None, None) => anyhow::bail!("name an action number or pass --task"),
        };
        let answer = remote.post("/api/v1/undo", &body)?;
        let reports: Vec<crate::org::UndoReport> =
            serde_json::from_value(answer["reports"].clone()).map_err(|e| {
                anyhow::anyhow!("the daemon sent reports this CLI cannot read: {e}")
            })?;
        return undo_report(&reports, json, out);
    }
    let by = who(by)?;
    let host = open(global, DataDirMode::Existing)?;
    let reports = match (action, task) {
        (Some(action), _) => {
            vec![host.undo_action(action_number(&action)?, &by)?]
        }
        (None, Some(task)) => host.undo_task(&task, &by)?,
        (None, None) => anyhow::bail!("name an action number or pass --task"),
    };
    undo_report(&reports, json, out)
}

/// `42` or `#42`.
fn action_number(action: &str) -> Result<u64> {
    action
        .trim_start_matches('#')
        .parse()
        .with_context(|| format!("{action:?} is not an action number (see `clancy audit log`)"))
}

fn undo_report(
    reports: &[crate::org::UndoReport],
    json: bool,
    out: &mut impl Write,
) -> Result<ExitCode> {
    use crate::org::UndoOutcome;
    for r in reports {
        if json {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
            continue;
        }
        let outcome = match &r.outcome {
            UndoOutcome::Undone(seq) => format!("undone (#{seq})"),
            UndoOutcome::AlreadyUndone(seq) => format!("already undone (#{seq})"),
            UndoOutcome::Irreversible => "COULD NOT UNDO: irreversible".to_string(),
            UndoOutcome::NothingToUndo(why) => format!("nothing to undo: {why}"),
            UndoOutcome::NotUndone(why) => format!("COULD NOT UNDO: {why}"),
        };
        writeln!(
            out,
            "#{} {}: {}",
            r.action,
            crate::human::line(&r.what),
            crate::human::line(&outcome)
        )?;
    }
    if reports.is_empty() && !json {
        writeln!(out, "the task made no changes, so there is nothing to undo")?;
    }
    let failed = reports.iter().filter(|r| !r.is_undone()).count();
    if failed > 0 && !json {
        writeln!(out, "{failed} action(s) could not be undone")?;
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
