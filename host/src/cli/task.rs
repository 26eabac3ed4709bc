//! `clancy run` and `clancy check`: run one task with an employee, or
//! validate an employee without running it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use super::{Global, open};
use crate::human;
use crate::manifest::Manifest;
use crate::org::DataDirMode;
use crate::runtime::TaskEnd;

/// `clancy run`
#[derive(Args, Debug)]
pub(super) struct RunArgs {
    /// The employee's manifest (employee.toml).
    manifest: PathBuf,
    #[command(flatten)]
    text: TaskText,
    /// Use this component instead of the one the manifest names.
    #[arg(long, value_name = "WASM")]
    component: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// What a task asks: `--task TEXT` or `--task-file FILE`.
#[derive(Args, Debug)]
pub(super) struct TaskText {
    /// What the employee should do, in plain language.
    #[arg(
        long,
        required_unless_present = "task_file",
        conflicts_with = "task_file"
    )]
    task: Option<String>,
    /// Read the task from a file (`-` for standard input) instead.
    #[arg(long, value_name = "FILE")]
    task_file: Option<PathBuf>,
}

impl TaskText {
    /// The task's text, read from its file if it names one.
    pub(super) fn read(self) -> Result<String> {
        match (self.task, self.task_file) {
            (Some(task), _) => Ok(task),
            (None, Some(file)) => read_task_file(&file),
            (None, None) => anyhow::bail!("pass --task or --task-file"),
        }
    }
}

/// `clancy check`
#[derive(Args, Debug)]
pub(super) struct CheckArgs {
    /// The employee's manifest (employee.toml).
    manifest: PathBuf,
    /// Check this component instead of the one the manifest names.
    #[arg(long, value_name = "WASM")]
    component: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn load_manifest(path: &Path, component: &Option<PathBuf>) -> Result<Manifest> {
    let mut manifest = Manifest::load(path)?;
    if let Some(c) = component {
        manifest.component = c.clone();
    }
    Ok(manifest)
}

/// Run one task.
pub(super) fn run(global: &Global, args: RunArgs, out: &mut impl Write) -> Result<ExitCode> {
    let RunArgs {
        manifest,
        text,
        component,
        json,
    } = args;
    let task = text.read()?;
    if let Some(remote) = super::remote(global)? {
        return run_through_daemon(&remote, &manifest, component, &task, json, out);
    }
    let manifest = load_manifest(&manifest, &component)?;
    let host = open(global, DataDirMode::Create)?;
    // A task left open by a killed process is closed in the record first.
    host.record_interrupted_tasks()?;
    let employee = host.load(manifest)?;
    let result = employee.run(&task)?;
    // What is shown has been recorded: the task's entries are durable and
    // its checkpoint signed before the result is printed.
    host.audit().settle()?;
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&result)?)?;
    } else {
        writeln!(
            out,
            "task {} ({})",
            result.task_id,
            employee.manifest().name
        )?;
        for line in result.guest_output.lines() {
            writeln!(out, "  guest | {}", human::line(line))?;
        }
        match &result.end {
            TaskEnd::Completed { summary } => writeln!(out, "completed: {}", human::line(summary))?,
            TaskEnd::Failed { error } => writeln!(out, "FAILED: {}", human::line(error))?,
            TaskEnd::Trapped { reason } => writeln!(out, "STOPPED: {}", human::line(reason))?,
        }
        writeln!(
            out,
            "see what it did and why: clancy audit log --task {}",
            &result.task_id[..8]
        )?;
    }
    Ok(match result.end {
        TaskEnd::Completed { .. } => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    })
}

/// `clancy run` while a daemon owns the data dir: submit the employee (a
/// version that only narrows, or changes nothing, is in force at once; one
/// that may widen waits for an admin and the task does not start), queue
/// the task and follow it to its end.
fn run_through_daemon(
    remote: &super::Remote,
    manifest: &Path,
    component: Option<PathBuf>,
    task: &str,
    json: bool,
    out: &mut impl Write,
) -> Result<ExitCode> {
    use base64::Engine as _;
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("cannot read the manifest {}", manifest.display()))?;
    let loaded = load_manifest(manifest, &component)?;
    let bytes = super::employees::read_component(&loaded.component)?;
    let submitted = remote.post(
        "/api/v1/employees",
        &serde_json::json!({
            "manifest": text,
            "component": base64::engine::general_purpose::STANDARD.encode(&bytes),
        }),
    )?;
    if submitted["status"].as_str() != Some("in-force") {
        anyhow::bail!(
            "{} waits for an admin ({}): this version may widen what it can do, so the task was not started; see `clancy approvals list`",
            loaded.name,
            human::line(submitted["upgrade"]["id"].as_str().unwrap_or_default())
        );
    }
    let queued = remote.post(
        "/api/v1/tasks",
        &serde_json::json!({"employee": loaded.name, "task": task}),
    )?;
    let id = queued["id"].as_str().unwrap_or_default().to_string();
    let mut progress = Vec::new();
    let end = super::tasks::follow(remote, super::approvals::path_segment(&id)?, &mut progress)?;
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&end)?)?;
    } else {
        writeln!(out, "task {} ({})", human::line(&id), loaded.name)?;
        out.write_all(&progress)?;
        writeln!(
            out,
            "see what it did and why: clancy audit log --task {}",
            &id[..id.len().min(8)]
        )?;
    }
    Ok(super::tasks::exit_for(&end))
}

/// Check an employee's manifest and imports.
pub(super) fn check(args: CheckArgs, out: &mut impl Write) -> Result<ExitCode> {
    let CheckArgs {
        manifest,
        component,
        json,
    } = args;
    let manifest = load_manifest(&manifest, &component)?;
    // Checking needs no records: it never waits for (or on) a daemon.
    let report = crate::org::check_employee(manifest)?;
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        let m = &report.manifest;
        writeln!(out, "employee {} ({})", m.name, m.component.display())?;
        for g in &m.grants {
            let actions: Vec<&str> = g.actions.iter().map(|a| a.name()).collect();
            writeln!(
                out,
                "  grant {} {} [{}] approval {}",
                g.integration,
                g.scope,
                actions.join(", "),
                g.approval
            )?;
        }
        writeln!(out, "  imports: {}", report.imports.join(", "))?;
        for p in &report.problems {
            writeln!(out, "  REFUSED: {p}")?;
        }
        if report.problems.is_empty() {
            writeln!(out, "ok: imports are within the grants")?;
        }
    }
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Read a task from a file or stdin, refusing oversized or non-UTF-8 input
/// before anything is opened.
fn read_task_file(path: &Path) -> Result<String> {
    use std::io::Read as _;
    let limit = crate::runtime::MAX_INSTRUCTION_BYTES as u64;
    let mut bytes = Vec::new();
    let reader: Box<dyn std::io::Read> = if path == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(path)
                .with_context(|| format!("cannot read task file {}", path.display()))?,
        )
    };
    reader
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read task file {}", path.display()))?;
    if bytes.len() as u64 > limit {
        anyhow::bail!(
            "invalid task: {} is larger than the limit of {limit} bytes",
            path.display()
        );
    }
    String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("invalid task: {} is not UTF-8 text", path.display()))
}
