//! `clancy employees list|disable|enable`: the registered employees, and
//! stopping one at once.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use super::{Global, open, who};
use crate::org::DataDirMode;

#[derive(Subcommand, Debug)]
pub(super) enum EmployeesCommand {
    /// The registered employees and what each may do.
    List {
        /// JSON Lines.
        #[arg(long)]
        json: bool,
    },
    /// Stop an employee: it starts no task (API, schedule, trigger, `run`)
    /// until an admin enables it; tasks already queued for it are not run.
    Disable {
        /// The employee.
        name: String,
        /// The admin doing it [default: $USER].
        #[arg(long = "as", value_name = "ADMIN")]
        by: Option<String>,
    },
    /// Let a disabled employee work again.
    Enable {
        /// The employee.
        name: String,
        /// The admin doing it [default: $USER].
        #[arg(long = "as", value_name = "ADMIN")]
        by: Option<String>,
    },
}

/// Run an `employees` command.
pub(super) fn run(
    global: &Global,
    command: EmployeesCommand,
    out: &mut impl Write,
) -> Result<ExitCode> {
    let host = open(global, DataDirMode::Existing)?;
    match command {
        EmployeesCommand::List { json } => {
            let registered = host.registered()?;
            for m in &registered {
                let disabled = host.disabled(&m.name)?.is_some();
                let lines = crate::org::describe_employee(m);
                if json {
                    writeln!(
                        out,
                        "{}",
                        serde_json::json!({"name": m.name, "disabled": disabled, "describe": lines})
                    )?;
                } else {
                    writeln!(
                        out,
                        "{}{}",
                        m.name,
                        if disabled { " (DISABLED)" } else { "" }
                    )?;
                    for line in lines {
                        writeln!(out, "  {line}")?;
                    }
                }
            }
            if registered.is_empty() && !json {
                writeln!(
                    out,
                    "no employees are registered (load one with `clancy run`)"
                )?;
            }
        }
        EmployeesCommand::Disable { name, by } => set(&host, &name, true, by, out)?,
        EmployeesCommand::Enable { name, by } => set(&host, &name, false, by, out)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn set(
    host: &crate::org::Org,
    name: &str,
    disabled: bool,
    by: Option<String>,
    out: &mut impl Write,
) -> Result<()> {
    let by = who(by)?;
    let admin = host.operators().get(&by)?.ok_or_else(|| {
        anyhow::anyhow!("{by} is not an operator of this organisation (pass --as ADMIN)")
    })?;
    host.set_disabled(name, disabled, &admin)?;
    writeln!(
        out,
        "{name} is {}",
        if disabled { "disabled" } else { "enabled" }
    )?;
    Ok(())
}
