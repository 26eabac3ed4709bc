//! `clancy operators add|list`: the people who decide, and their roles.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use super::{Global, open, who};
use crate::operators::{Operator, Role};
use crate::org::DataDirMode;

#[derive(Subcommand, Debug)]
pub(super) enum OperatorsCommand {
    /// Add an operator or change their role.
    Add {
        /// The name they decide as (`--as NAME`).
        name: String,
        /// admin, manager or user.
        #[arg(long)]
        role: String,
        /// The admin adding them (needed once the org has an admin) [default: $USER].
        #[arg(long = "as", value_name = "ADMIN")]
        by: Option<String>,
    },
    /// List operators.
    List {
        /// JSON Lines.
        #[arg(long)]
        json: bool,
    },
}

/// Run an `operators` command.
pub(super) fn run(
    global: &Global,
    command: OperatorsCommand,
    out: &mut impl Write,
) -> Result<ExitCode> {
    match command {
        OperatorsCommand::Add { name, role, by } => {
            let role: Role = role.parse()?;
            let host = open(global, DataDirMode::Create)?;
            host.add_operator(
                &Operator {
                    name: name.clone(),
                    role,
                },
                who(by).ok().as_deref(),
            )?;
            writeln!(out, "operator {name} is {role}")?;
            Ok(ExitCode::SUCCESS)
        }
        OperatorsCommand::List { json } => {
            let host = open(global, DataDirMode::Existing)?;
            let list = host.operators().list()?;
            for o in &list {
                if json {
                    writeln!(out, "{}", serde_json::to_string(o)?)?;
                } else {
                    writeln!(out, "{} ({})", o.name, o.role)?;
                }
            }
            if list.is_empty() && !json {
                writeln!(
                    out,
                    "no operators (add one with `clancy operators add NAME --role admin`)"
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
