//! `clancy audit log|verify|explain`: read, verify and explain the audit log.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use super::{Global, open};
use crate::audit::{Entry, render_log};
use crate::org::DataDirMode;

#[derive(Subcommand, Debug)]
pub(super) enum AuditCommand {
    /// Show the log, one entry per line with the employee's reason.
    Log {
        /// Only this employee's entries.
        #[arg(long)]
        employee: Option<String>,
        /// Only this task's entries (a full id or its first characters).
        #[arg(long)]
        task: Option<String>,
        /// JSON Lines, one entry per line.
        #[arg(long)]
        json: bool,
    },
    /// A plain-English account of one task: what it was asked, read, did or
    /// asked to do, what humans decided and what was rolled back.
    Explain {
        /// The task id (or its first characters).
        task: String,
    },
    /// Recompute the hash chain; exit 1 if anything was edited, deleted, reordered or truncated.
    Verify {
        /// A head hash recorded earlier; verify that it is still in the chain.
        #[arg(long, value_name = "HASH")]
        expect_head: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Run an `audit` command.
pub(super) fn run(
    global: &Global,
    command: AuditCommand,
    out: &mut impl Write,
) -> Result<ExitCode> {
    match command {
        AuditCommand::Log {
            employee,
            task,
            json,
        } => {
            let host = open(global, DataDirMode::Existing)?;
            let entries: Vec<Entry> = host
                .audit()
                .entries()?
                .into_iter()
                .filter(|e| employee.as_ref().is_none_or(|n| &e.record.employee == n))
                .filter(|e| {
                    task.as_ref()
                        .is_none_or(|t| e.record.task.starts_with(t.as_str()))
                })
                .collect();
            if json {
                for e in &entries {
                    writeln!(out, "{}", serde_json::to_string(e)?)?;
                }
            } else {
                for line in render_log(&entries) {
                    writeln!(out, "{line}")?;
                }
            }
            if entries.is_empty() && !json {
                writeln!(out, "no audit entries match")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify { expect_head, json } => {
            let host = open(global, DataDirMode::Existing)?;
            let v = host.audit().verify(expect_head.as_deref())?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            } else if v.is_intact() {
                writeln!(
                    out,
                    "audit log intact: {} entries, head {}",
                    v.entries, v.head
                )?;
            } else {
                writeln!(
                    out,
                    "AUDIT LOG TAMPERED: {} problem(s) in {} entries",
                    v.problems.len(),
                    v.entries
                )?;
                for p in &v.problems {
                    writeln!(out, "  {p}")?;
                }
            }
            Ok(if v.is_intact() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        AuditCommand::Explain { task } => {
            let host = open(global, DataDirMode::Existing)?;
            write!(out, "{}", host.explain(&task)?)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
