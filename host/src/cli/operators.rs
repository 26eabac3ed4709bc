//! `clancy operators add|enrol|list` (also `clancy users …`): the people
//! who decide, their roles, and the one-time codes that let them sign in
//! to the daemon.

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
    /// Make a new one-time enrolment code for an operator (it replaces
    /// their password and second factor, e.g. a lost phone).
    Enrol {
        /// The operator.
        name: String,
        /// The admin doing it [default: $USER].
        #[arg(long = "as", value_name = "ADMIN")]
        by: Option<String>,
    },
    /// Assign a user the employees they start tasks for and see the work
    /// of (managers and admins see every employee). Replaces their list.
    Assign {
        /// The operator.
        name: String,
        /// A registered employee (repeatable; none clears the list).
        #[arg(long = "employee", value_name = "EMPLOYEE")]
        employees: Vec<String>,
        /// The admin doing it [default: $USER].
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
    if let Some(remote) = super::remote(global)? {
        return through_daemon(&remote, command, out);
    }
    match command {
        OperatorsCommand::Add { name, role, by } => {
            let role: Role = role.parse()?;
            let host = open(global, DataDirMode::Create)?;
            let by = who(by).ok();
            host.add_operator(
                &Operator {
                    name: name.clone(),
                    role,
                },
                by.as_deref(),
            )?;
            writeln!(out, "operator {name} is {role}")?;
            if !host.accounts().enrolled(&name)? {
                let code = host.invite(&name, by.as_deref().unwrap_or("the CLI"))?;
                print_code(out, &name, &code)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        OperatorsCommand::Enrol { name, by } => {
            let host = open(global, DataDirMode::Existing)?;
            let by = who(by)?;
            let admin = host.operators().get(&by)?;
            let has_admin = host
                .operators()
                .list()?
                .iter()
                .any(|o| o.role == Role::Admin);
            if has_admin && admin.is_none_or(|a| a.role != Role::Admin) {
                anyhow::bail!(
                    "{by} is not an admin of this organisation: only an admin makes enrolment codes (pass --as ADMIN)"
                );
            }
            let code = host.invite(&name, &by)?;
            print_code(out, &name, &code)?;
            Ok(ExitCode::SUCCESS)
        }
        OperatorsCommand::Assign {
            name,
            employees,
            by,
        } => {
            let host = open(global, DataDirMode::Existing)?;
            host.assign(&name, &employees, &who(by)?)?;
            writeln!(out, "{name} is assigned [{}]", employees.join(", "))?;
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

/// An `operators` command through the daemon (admins).
fn through_daemon(
    remote: &super::Remote,
    command: OperatorsCommand,
    out: &mut impl Write,
) -> Result<ExitCode> {
    use super::approvals::path_segment;
    use super::remote::no_as;
    use serde_json::json;
    match command {
        OperatorsCommand::Add { name, role, by } => {
            no_as(&by)?;
            let role: Role = role.parse()?;
            let answer = remote.post("/api/v1/operators", &json!({"name": name, "role": role}))?;
            writeln!(out, "operator {name} is {role}")?;
            if let Some(code) = answer["enrolment_code"].as_str() {
                print_code(out, &name, code)?;
            }
        }
        OperatorsCommand::Enrol { name, by } => {
            no_as(&by)?;
            let answer = remote.post(
                &format!("/api/v1/operators/{}/enrolment", path_segment(&name)?),
                &json!({}),
            )?;
            print_code(
                out,
                &name,
                answer["enrolment_code"].as_str().unwrap_or_default(),
            )?;
        }
        OperatorsCommand::Assign {
            name,
            employees,
            by,
        } => {
            no_as(&by)?;
            remote.post(
                &format!("/api/v1/operators/{}/employees", path_segment(&name)?),
                &json!({ "employees": employees }),
            )?;
            writeln!(out, "{name} is assigned [{}]", employees.join(", "))?;
        }
        OperatorsCommand::List { json } => {
            let list = remote.get("/api/v1/operators", &[])?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            for o in &items {
                if json {
                    writeln!(out, "{}", json!({"name": o["name"], "role": o["role"]}))?;
                } else {
                    writeln!(
                        out,
                        "{} ({})",
                        crate::human::line(o["name"].as_str().unwrap_or_default()),
                        crate::human::line(o["role"].as_str().unwrap_or_default())
                    )?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Show an enrolment code and how to spend it.
fn print_code(out: &mut impl Write, name: &str, code: &str) -> Result<()> {
    writeln!(
        out,
        "enrolment code for {name} (single use, valid {} hours; shown this once):\n{code}\nspend it at the daemon's /enrol#CODE page, or POST /api/v1/enrol {{\"code\", \"password\"}}",
        crate::accounts::ENROLMENT_HOURS
    )?;
    Ok(())
}
