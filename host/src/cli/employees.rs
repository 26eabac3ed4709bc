//! `clancy employees add|upgrade|upgrades|list|disable|enable`: register
//! employees and new versions of them (what widens waits for an admin in
//! the approvals queue, with its diff), and stop one at once.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::{Value, json};

use super::remote::no_as;
use super::{Global, Remote, open, who};
use crate::human;
use crate::org::{DataDirMode, Org, Submitted};

#[derive(Subcommand, Debug)]
pub(super) enum EmployeesCommand {
    /// Register a new employee: its component is compiled, checked and
    /// pinned by SHA-256; it waits for an admin's approval (everything it
    /// may do is new) in `clancy approvals list`.
    Add(Submit),
    /// Submit a new version of a registered employee: what only narrows is
    /// in force at once; what may widen waits for an admin with its diff,
    /// and the version in force keeps running until then.
    Upgrade(Submit),
    /// Submitted versions that wait or waited for an admin, with their diffs.
    Upgrades {
        /// Include decided ones.
        #[arg(long)]
        all: bool,
        /// JSON Lines.
        #[arg(long)]
        json: bool,
    },
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

/// A version to submit.
#[derive(clap::Args, Debug)]
pub(super) struct Submit {
    /// The employee's manifest (employee.toml).
    manifest: PathBuf,
    /// Use this component instead of the one the manifest names.
    #[arg(long, value_name = "WASM")]
    component: Option<PathBuf>,
    /// Who submits it [default: $USER].
    #[arg(long = "as", value_name = "NAME")]
    by: Option<String>,
}

/// The manifest's text, its name and its component's bytes.
fn read_submission(s: &Submit) -> Result<(String, String, Vec<u8>)> {
    let text = std::fs::read_to_string(&s.manifest)
        .with_context(|| format!("cannot read the manifest {}", s.manifest.display()))?;
    let manifest = crate::manifest::Manifest::load(&s.manifest)?;
    let component = s.component.clone().unwrap_or(manifest.component);
    let bytes = read_component(&component)?;
    Ok((text, manifest.name, bytes))
}

pub(super) fn read_component(path: &Path) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read the component {}", path.display()))?;
    if meta.len() > crate::runtime::MAX_COMPONENT_BYTES {
        anyhow::bail!(
            "the component {} is {} bytes; the limit is {}",
            path.display(),
            meta.len(),
            crate::runtime::MAX_COMPONENT_BYTES
        );
    }
    std::fs::read(path).with_context(|| format!("cannot read the component {}", path.display()))
}

/// A waiting version as `employees upgrades` shows it: a head line and its diff.
fn upgrade_lines(u: &Value) -> Vec<String> {
    let mut lines = vec![format!(
        "[{}] {}: new version of {} submitted by {} ({}); an admin approves or denies it:",
        human::line(u["id"].as_str().unwrap_or_default()),
        human::line(u["status"].as_str().unwrap_or_default()).to_uppercase(),
        human::line(u["employee"].as_str().unwrap_or_default()),
        human::line(u["requested_by"].as_str().unwrap_or_default()),
        human::line(u["requested_at"].as_str().unwrap_or_default()),
    )];
    for d in u["diff"].as_array().into_iter().flatten() {
        lines.push(format!("  {}", human::line(d.as_str().unwrap_or_default())));
    }
    lines
}

/// What submitting did, for people.
fn print_submitted(out: &mut impl Write, name: &str, answer: &Value) -> Result<ExitCode> {
    let diff: Vec<&str> = answer["diff"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    match answer["status"].as_str() {
        Some("in-force") if diff.is_empty() => {
            writeln!(out, "{name}: nothing changes; the version in force stays")?;
        }
        Some("in-force") => {
            writeln!(out, "{name}: in force now (it only narrows):")?;
            for d in diff {
                writeln!(out, "  {}", human::line(d))?;
            }
        }
        _ => {
            let id = answer["upgrade"]["id"].as_str().unwrap_or_default();
            writeln!(
                out,
                "{name}: waits for an admin ({}); the version in force keeps running. It may widen:",
                human::line(id)
            )?;
            for d in diff {
                writeln!(out, "  {}", human::line(d))?;
            }
            writeln!(
                out,
                "an admin approves it with `clancy approvals approve {}`",
                human::line(id)
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The JSON the API answers for a submission, made locally.
fn submitted_json(s: Submitted) -> Value {
    match s {
        Submitted::InForce(diff) => json!({"status": "in-force", "diff": diff}),
        Submitted::Waiting(u) => json!({
            "status": "pending",
            "diff": u.diff,
            "upgrade": upgrade_json(&u),
        }),
    }
}

pub(super) fn upgrade_json(u: &crate::org::Upgrade) -> Value {
    json!({
        "id": u.id,
        "employee": u.employee,
        "diff": u.diff,
        "requested_by": u.requested_by,
        "requested_at": u.requested_at,
        "status": u.status,
        "decided_by": u.decided_by,
    })
}

/// `add` refuses a name in use; `upgrade` one that is not.
fn check_exists(add: bool, name: &str, exists: bool) -> Result<()> {
    match (add, exists) {
        (true, true) => anyhow::bail!(
            "{name} is already registered: submit a new version with `clancy employees upgrade`"
        ),
        (false, false) => anyhow::bail!(
            "no employee {name} is registered: register it with `clancy employees add`"
        ),
        _ => Ok(()),
    }
}

/// Run an `employees` command.
pub(super) fn run(
    global: &Global,
    command: EmployeesCommand,
    out: &mut impl Write,
) -> Result<ExitCode> {
    if let Some(remote) = super::remote(global)? {
        return through_daemon(&remote, command, out);
    }
    let host = open(global, DataDirMode::Existing)?;
    match command {
        EmployeesCommand::Add(s) => submit_local(&host, true, s, out),
        EmployeesCommand::Upgrade(s) => submit_local(&host, false, s, out),
        EmployeesCommand::Upgrades { all, json } => {
            let list: Vec<Value> = if all {
                host.upgrades()?
            } else {
                host.pending_upgrades()?
            }
            .iter()
            .filter(|u| all || u.status == crate::org::UpgradeStatus::Pending)
            .map(upgrade_json)
            .collect();
            print_upgrades(out, &list, all, json)
        }
        EmployeesCommand::List { json } => {
            let mut list = Vec::new();
            for m in host.registered()? {
                list.push(json!({
                    "name": m.name,
                    "component_sha256": m.component_sha256,
                    "disabled": host.disabled(&m.name)?.is_some(),
                    "describe": crate::org::describe_employee(&m),
                }));
            }
            print_list(out, &list, json)
        }
        EmployeesCommand::Disable { name, by } => set(&host, &name, true, by, out),
        EmployeesCommand::Enable { name, by } => set(&host, &name, false, by, out),
    }
}

fn submit_local(host: &Org, add: bool, s: Submit, out: &mut impl Write) -> Result<ExitCode> {
    let by = who(s.by.clone())?;
    let (text, name, bytes) = read_submission(&s)?;
    check_exists(add, &name, host.stored_manifest(&name)?.is_some())?;
    let submitted = host.submit_employee(&text, &bytes, &by)?;
    print_submitted(out, &name, &submitted_json(submitted))
}

fn print_upgrades(out: &mut impl Write, list: &[Value], all: bool, json: bool) -> Result<ExitCode> {
    for u in list {
        if json {
            writeln!(out, "{u}")?;
        } else {
            writeln!(out, "{}", upgrade_lines(u).join("\n"))?;
        }
    }
    if list.is_empty() && !json {
        writeln!(
            out,
            "no {}submitted versions",
            if all { "" } else { "waiting " }
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_list(out: &mut impl Write, list: &[Value], json: bool) -> Result<ExitCode> {
    for m in list {
        if json {
            writeln!(out, "{m}")?;
            continue;
        }
        writeln!(
            out,
            "{}{}",
            human::line(m["name"].as_str().unwrap_or_default()),
            if m["disabled"].as_bool() == Some(true) {
                " (DISABLED)"
            } else {
                ""
            }
        )?;
        for line in m["describe"].as_array().into_iter().flatten() {
            writeln!(out, "  {}", human::line(line.as_str().unwrap_or_default()))?;
        }
    }
    if list.is_empty() && !json {
        writeln!(
            out,
            "no employees are registered (register one with `clancy employees add`)"
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// An `employees` command through the daemon.
fn through_daemon(
    remote: &Remote,
    command: EmployeesCommand,
    out: &mut impl Write,
) -> Result<ExitCode> {
    match command {
        EmployeesCommand::Add(s) => submit_remote(remote, true, s, out),
        EmployeesCommand::Upgrade(s) => submit_remote(remote, false, s, out),
        EmployeesCommand::Upgrades { all, json } => {
            let list: Vec<Value> = remote.get("/api/v1/employees/upgrades", &[])?["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|u| all || u["status"].as_str() == Some("pending"))
                .cloned()
                .collect();
            print_upgrades(out, &list, all, json)
        }
        EmployeesCommand::List { json } => {
            let list = remote.get("/api/v1/employees", &[])?["items"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            print_list(out, &list, json)
        }
        EmployeesCommand::Disable { name, by } => set_remote(remote, &name, by, true, out),
        EmployeesCommand::Enable { name, by } => set_remote(remote, &name, by, false, out),
    }
}

fn submit_remote(remote: &Remote, add: bool, s: Submit, out: &mut impl Write) -> Result<ExitCode> {
    use base64::Engine as _;
    no_as(&s.by)?;
    let (text, name, bytes) = read_submission(&s)?;
    let registered = remote.get("/api/v1/employees", &[])?;
    let exists = registered["items"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|m| m["name"].as_str() == Some(name.as_str()));
    check_exists(add, &name, exists)?;
    let answer = remote.post(
        "/api/v1/employees",
        &json!({
            "manifest": text,
            "component": base64::engine::general_purpose::STANDARD.encode(&bytes),
        }),
    )?;
    print_submitted(out, &name, &answer)
}

fn set_remote(
    remote: &Remote,
    name: &str,
    by: Option<String>,
    disabled: bool,
    out: &mut impl Write,
) -> Result<ExitCode> {
    no_as(&by)?;
    let name = super::approvals::path_segment(name)?;
    let verb = if disabled { "disable" } else { "enable" };
    remote.post(&format!("/api/v1/employees/{name}/{verb}"), &json!({}))?;
    writeln!(out, "{name} is {verb}d")?;
    Ok(ExitCode::SUCCESS)
}

fn set(
    host: &Org,
    name: &str,
    disabled: bool,
    by: Option<String>,
    out: &mut impl Write,
) -> Result<ExitCode> {
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
    Ok(ExitCode::SUCCESS)
}
