//! The `clancy` command line: argument definitions (clap derive) and the
//! commands, each a thin call into the library.
//!
//! Exit codes: 0 success; 1 the task failed or a check found problems (the
//! command itself worked); 2 bad input or an unusable data dir.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::approvals::{Approval, Status};
use crate::audit::{Entry, render_log};
use crate::manifest::Manifest;
use crate::operators::{Operator, Role};
use crate::org::{DataDirMode, Org, Verdict};
use crate::providers::money;
use crate::runtime::TaskEnd;

/// Clancy runs digital employees as sandboxed WebAssembly components.
#[derive(Parser, Debug)]
#[command(name = "clancy", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct Global {
    /// Where Clancy keeps its store and files [default: the user's data dir]/clancy.
    #[arg(long, global = true, env = "CLANCY_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The organisation whose data to use.
    #[arg(long, global = true, default_value = "default", value_name = "ORG")]
    org: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one task with an employee against the sandbox workspace.
    Run {
        /// The employee's manifest (employee.toml).
        manifest: PathBuf,
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
        /// Use this component instead of the one the manifest names.
        #[arg(long, value_name = "WASM")]
        component: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Validate a manifest and its component's imports against its grants.
    Check {
        /// The employee's manifest (employee.toml).
        manifest: PathBuf,
        /// Check this component instead of the one the manifest names.
        #[arg(long, value_name = "WASM")]
        component: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Read and verify the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Review and decide actions waiting for a human.
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// The people who decide requests, and their roles.
    #[command(subcommand)]
    Operators(OperatorsCommand),
    /// Webhook notifications: the signing secret and the outbox.
    #[command(subcommand)]
    Notify(NotifyCommand),
    /// Undo an action (by its number in the audit log) or every write of a task.
    Undo {
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
    },
    /// Manage the local sandbox workspace.
    #[command(subcommand)]
    Sandbox(SandboxCommand),
}

#[derive(Subcommand, Debug)]
enum OperatorsCommand {
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

#[derive(Subcommand, Debug)]
enum NotifyCommand {
    /// Print the org's webhook signing secret (receivers verify X-Clancy-Signature with it).
    Secret,
    /// Show the outbox: what was sent, what waits for a retry, what was given up.
    List {
        /// JSON Lines.
        #[arg(long)]
        json: bool,
    },
    /// Deliver the notifications that are due now.
    Deliver,
}

#[derive(Subcommand, Debug)]
enum ApprovalsCommand {
    /// Show pending requests with the employee's reason and a preview of the action.
    List {
        /// Only this employee's requests.
        #[arg(long)]
        employee: Option<String>,
        /// Include decided requests.
        #[arg(long)]
        all: bool,
        /// JSON Lines, one request per line.
        #[arg(long)]
        json: bool,
    },
    /// Approve requests; the host executes each approved action once.
    Approve(Decide),
    /// Deny requests; they never run.
    Deny(Decide),
    /// Answer a question an employee asked, with one of the options it offered.
    Answer {
        /// The question's id (ap-...).
        id: String,
        /// The option chosen, exactly as offered (see `clancy approvals list`).
        option: String,
        /// Who is answering [default: $USER].
        #[arg(long = "as", value_name = "NAME")]
        by: Option<String>,
        /// A comment kept with the answer.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Keep running: escalate, expire, resume approved actions and deliver
    /// notifications on a timer until interrupted.
    Watch {
        /// Seconds between rounds.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
        every: u64,
    },
}

#[derive(Args, Debug)]
struct Decide {
    /// Request ids (ap-...).
    ids: Vec<String>,
    /// Every pending request matching a filter: comma-separated key=value with
    /// keys employee, integration, action, task (e.g. "employee=sales-coordinator,action=send").
    #[arg(long, value_name = "FILTER")]
    all_matching: Option<String>,
    /// Who is deciding [default: $USER].
    #[arg(long = "as", value_name = "NAME")]
    by: Option<String>,
    /// A comment kept with the decision.
    #[arg(long)]
    comment: Option<String>,
    /// Approve an edited action instead: FIELD=VALUE (repeatable), e.g.
    /// --set body="..." for a mail. The edit gets its own hash and is audited.
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    edits: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
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

#[derive(Subcommand, Debug)]
enum SandboxCommand {
    /// Fill the sandbox workspace with its seed data.
    Seed {
        /// Replace existing sandbox data with the seed data.
        #[arg(long)]
        reset: bool,
    },
    /// Show what is in the sandbox workspace.
    Show {
        /// Which part to show.
        #[arg(value_enum, default_value = "all")]
        what: Part,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
enum Part {
    All,
    Mail,
    Chat,
    Crm,
    Calendar,
    Ledger,
}

/// Parse arguments, run the command, map the result to an exit code.
pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CLANCY_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn data_dir(global: &Global) -> Result<PathBuf> {
    match &global.data_dir {
        Some(d) => Ok(d.clone()),
        None => Ok(dirs::data_dir()
            .context("no user data dir on this system; pass --data-dir")?
            .join("clancy")),
    }
}

fn open(global: &Global, mode: DataDirMode) -> Result<Org> {
    Ok(Org::open(&data_dir(global)?, &global.org, mode)?)
}

fn load_manifest(path: &Path, component: &Option<PathBuf>) -> Result<Manifest> {
    let mut manifest = Manifest::load(path)?;
    if let Some(c) = component {
        manifest.component = c.clone();
    }
    Ok(manifest)
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let global = &cli.global;
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Run {
            manifest,
            task,
            task_file,
            component,
            json,
        } => {
            let task = match (task, task_file) {
                (Some(task), _) => task,
                (None, Some(file)) => read_task_file(&file)?,
                (None, None) => anyhow::bail!("pass --task or --task-file"),
            };
            let manifest = load_manifest(&manifest, &component)?;
            let host = open(global, DataDirMode::Create)?;
            let employee = host.load(manifest)?;
            let result = employee.run(&task)?;
            if let Err(e) = host.deliver_notifications() {
                tracing::warn!("notifications not delivered now (they stay queued): {e}");
            }
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
                    writeln!(out, "  guest | {line}")?;
                }
                match &result.end {
                    TaskEnd::Completed { summary } => writeln!(out, "completed: {summary}")?,
                    TaskEnd::Failed { error } => writeln!(out, "FAILED: {error}")?,
                    TaskEnd::Trapped { reason } => writeln!(out, "STOPPED: {reason}")?,
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
        Command::Check {
            manifest,
            component,
            json,
        } => {
            let manifest = load_manifest(&manifest, &component)?;
            let host = open(global, DataDirMode::Create)?;
            let report = host.check(manifest)?;
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
        Command::Audit(AuditCommand::Log {
            employee,
            task,
            json,
        }) => {
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
        Command::Audit(AuditCommand::Verify { expect_head, json }) => {
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
        Command::Audit(AuditCommand::Explain { task }) => {
            let host = open(global, DataDirMode::Existing)?;
            write!(out, "{}", host.explain(&task)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Undo {
            action,
            task,
            by,
            json,
        } => {
            let by = who(by)?;
            let host = open(global, DataDirMode::Existing)?;
            let reports = match (action, task) {
                (Some(action), _) => {
                    let n: u64 = action.trim_start_matches('#').parse().with_context(|| {
                        format!("{action:?} is not an action number (see `clancy audit log`)")
                    })?;
                    vec![host.undo_action(n, &by)?]
                }
                (None, Some(task)) => host.undo_task(&task, &by)?,
                (None, None) => anyhow::bail!("name an action number or pass --task"),
            };
            undo_report(&reports, json, &mut out)
        }
        Command::Approvals(command) => {
            let host = open(global, DataDirMode::Existing)?;
            housekeeping(&host)?;
            let code = approvals(&host, command, &mut out)?;
            housekeeping(&host)?;
            Ok(code)
        }
        Command::Operators(OperatorsCommand::Add { name, role, by }) => {
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
        Command::Operators(OperatorsCommand::List { json }) => {
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
        Command::Notify(NotifyCommand::Secret) => {
            let host = open(global, DataDirMode::Create)?;
            writeln!(out, "{}", String::from_utf8_lossy(&host.outbox().secret()?))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Notify(NotifyCommand::List { json }) => {
            let host = open(global, DataDirMode::Existing)?;
            let list = host.outbox().list()?;
            for n in &list {
                if json {
                    writeln!(out, "{}", serde_json::to_string(n)?)?;
                } else {
                    writeln!(
                        out,
                        "{} {} about {} -> {}: {:?} after {} attempt(s){}",
                        n.id,
                        n.event.name(),
                        n.approval,
                        crate::notify::origin(&n.url),
                        n.state,
                        n.attempts,
                        n.last_error
                            .as_ref()
                            .map(|e| format!(" ({e})"))
                            .unwrap_or_default()
                    )?;
                }
            }
            if list.is_empty() && !json {
                writeln!(out, "no notifications")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Notify(NotifyCommand::Deliver) => {
            let host = open(global, DataDirMode::Existing)?;
            let d = host.deliver_notifications()?;
            writeln!(
                out,
                "delivered {}, retrying later {}, gave up {}",
                d.delivered.len(),
                d.retrying.len(),
                d.gave_up.len()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sandbox(SandboxCommand::Seed { reset }) => {
            let host = open(global, DataDirMode::Create)?;
            if host.sandbox().is_seeded()? && !reset {
                anyhow::bail!(
                    "the sandbox workspace already has data; pass --reset to replace it with the seed data"
                );
            }
            host.sandbox().seed()?;
            writeln!(
                out,
                "sandbox workspace seeded in {}",
                host.data_dir().display()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sandbox(SandboxCommand::Show { what, json }) => {
            let host = open(global, DataDirMode::Existing)?;
            show_sandbox(&host, what, json, &mut out)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What every approvals command does first and last: move requests along
/// their ladders, expire overdue ones, finish approved actions interrupted
/// by a crash, and deliver due notifications.
fn housekeeping(host: &Org) -> Result<()> {
    host.tick()?;
    host.resume_approved()?;
    host.deliver_notifications()?;
    Ok(())
}

/// Who is acting: `--as NAME`, else `$USER`.
fn who(by: Option<String>) -> Result<String> {
    match by
        .or_else(|| std::env::var("USER").ok())
        .filter(|b| !b.trim().is_empty())
    {
        Some(by) => Ok(by),
        None => anyhow::bail!("say who you are with --as NAME"),
    }
}

fn undo_report(
    reports: &[crate::org::UndoReport],
    json: bool,
    out: &mut impl std::io::Write,
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
        writeln!(out, "#{} {}: {outcome}", r.action, r.what)?;
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

/// A parsed `--all-matching` filter.
struct Filter(Vec<(String, String)>);

impl Filter {
    fn parse(text: &str) -> Result<Filter> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (k, v) = term
                .split_once('=')
                .with_context(|| format!("invalid filter term {term:?} (expected key=value)"))?;
            let k = k.trim();
            if !["employee", "integration", "action", "task"].contains(&k) {
                anyhow::bail!(
                    "invalid filter key {k:?} (expected one of: employee, integration, action, task)"
                );
            }
            terms.push((k.to_string(), v.trim().to_string()));
        }
        if terms.is_empty() {
            anyhow::bail!(
                "the filter is empty (expected key=value, e.g. employee=sales-coordinator)"
            );
        }
        Ok(Filter(terms))
    }

    fn matches(&self, a: &Approval) -> bool {
        let r = &a.request;
        self.0.iter().all(|(k, v)| match k.as_str() {
            "employee" => &r.employee == v,
            "integration" => r.integration.is_some_and(|i| i.name() == v),
            "action" => r.operation.action().name() == v || r.operation.method() == v,
            "task" => r.task.starts_with(v.as_str()),
            _ => false,
        })
    }
}

fn approvals(
    host: &Org,
    command: ApprovalsCommand,
    out: &mut impl std::io::Write,
) -> Result<ExitCode> {
    let (verdict, decide) = match command {
        ApprovalsCommand::List {
            employee,
            all,
            json,
        } => {
            let list: Vec<Approval> = host
                .approvals()
                .list()?
                .into_iter()
                .filter(|a| all || a.status == Status::Pending)
                .filter(|a| employee.as_ref().is_none_or(|e| &a.request.employee == e))
                .collect();
            for a in &list {
                if json {
                    writeln!(out, "{}", serde_json::to_string(a)?)?;
                } else {
                    writeln!(out, "{}", a.preview())?;
                    if let Some(by) = &a.decided_by {
                        writeln!(
                            out,
                            "  decided by {by}{}",
                            a.comment
                                .as_ref()
                                .map(|c| format!(": {c}"))
                                .unwrap_or_default()
                        )?;
                    }
                    if let Some(o) = &a.outcome {
                        writeln!(out, "  outcome: {o}")?;
                    }
                }
            }
            if list.is_empty() && !json {
                writeln!(out, "no {}requests", if all { "" } else { "pending " })?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        ApprovalsCommand::Watch { every } => loop {
            let changed = host.tick()?;
            for a in &changed {
                writeln!(out, "{}: {:?} (step {})", a.id, a.status, a.step)?;
            }
            host.resume_approved()?;
            host.deliver_notifications()?;
            out.flush()?;
            std::thread::sleep(std::time::Duration::from_secs(every));
        },
        ApprovalsCommand::Approve(d) => (Verdict::Approve, d),
        ApprovalsCommand::Deny(d) => (Verdict::Deny, d),
        ApprovalsCommand::Answer {
            id,
            option,
            by,
            comment,
        } => {
            let by = who(by)?;
            match host.approvals().get(&id)? {
                None => anyhow::bail!("no approval request {id:?} in this organisation"),
                Some(a) => host.verify_pinned(&a.request.employee)?,
            }
            return match host.answer(&id, &option, &by, comment.as_deref()) {
                Ok(_) => {
                    writeln!(out, "{id}: answered {option:?}")?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(
                    e @ (crate::org::DecideError::BadAnswer { .. }
                    | crate::org::DecideError::NotAQuestion(_)
                    | crate::org::DecideError::Org(_)),
                ) => Err(e.into()),
                Err(e) => {
                    writeln!(out, "{id}: REFUSED: {e}")?;
                    Ok(ExitCode::from(1))
                }
            };
        }
    };
    let by = who(decide.by)?;
    if !decide.edits.is_empty() {
        if verdict != Verdict::Approve || decide.ids.len() != 1 || decide.all_matching.is_some() {
            anyhow::bail!(
                "--set edits one request: `clancy approvals approve <id> --set FIELD=VALUE`"
            );
        }
        let mut edits = Vec::new();
        for e in &decide.edits {
            let (f, v) = e
                .split_once('=')
                .with_context(|| format!("invalid edit {e:?} (expected FIELD=VALUE)"))?;
            edits.push((f.trim().to_string(), v.to_string()));
        }
        let id = &decide.ids[0];
        match host.approvals().get(id)? {
            None => anyhow::bail!("no approval request {id:?} in this organisation"),
            Some(a) => host.verify_pinned(&a.request.employee)?,
        }
        return match host.edit_and_approve(id, &edits, &by, decide.comment.as_deref()) {
            Ok(a) => {
                writeln!(
                    out,
                    "{id}: edited and approved as {}; {}",
                    a.id,
                    a.outcome.unwrap_or_default()
                )?;
                Ok(ExitCode::SUCCESS)
            }
            Err(
                e @ (crate::org::DecideError::BadEdit { .. } | crate::org::DecideError::Org(_)),
            ) => Err(e.into()),
            Err(e) => {
                writeln!(out, "{id}: REFUSED: {e}")?;
                Ok(ExitCode::from(1))
            }
        };
    }
    let mut ids = decide.ids.clone();
    if let Some(filter) = &decide.all_matching {
        let filter = Filter::parse(filter)?;
        ids.extend(
            host.approvals()
                .list()?
                .into_iter()
                .filter(|a| a.status == Status::Pending && filter.matches(a))
                .map(|a| a.id),
        );
    }
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(id.clone()));
    if ids.is_empty() {
        anyhow::bail!(
            "no pending request matches (name request ids or --all-matching FILTER; see `clancy approvals list`)"
        );
    }
    // Unknown ids, or an employee whose pinned component is gone, are bad
    // input or bad state: refuse before deciding anything.
    for id in &ids {
        match host.approvals().get(id)? {
            None => anyhow::bail!("no approval request {id:?} in this organisation"),
            Some(a) => host.verify_pinned(&a.request.employee)?,
        }
    }
    let mut refused = 0;
    for id in &ids {
        match host.decide(id, verdict, &by, decide.comment.as_deref()) {
            Ok(a) => match a.status {
                Status::Executed | Status::Failed => {
                    writeln!(out, "{id}: approved; {}", a.outcome.unwrap_or_default())?
                }
                Status::Denied => writeln!(out, "{id}: denied")?,
                other => writeln!(out, "{id}: {other:?}")?,
            },
            // The host cannot work on the employee's behalf (its pinned
            // component is missing, the data dir is unusable): bad state, not
            // a refusal of this one request.
            Err(e @ crate::org::DecideError::Org(_)) => return Err(e.into()),
            Err(e) => {
                refused += 1;
                writeln!(out, "{id}: REFUSED: {e}")?;
            }
        }
    }
    Ok(if refused == 0 {
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

fn show_sandbox(host: &Org, what: Part, json: bool, out: &mut impl std::io::Write) -> Result<()> {
    let s = host.sandbox();
    let want = |p: Part| what == Part::All || what == p;
    if json {
        let mut doc = serde_json::Map::new();
        if want(Part::Mail) {
            doc.insert("mail".into(), serde_json::to_value(s.all_mail()?)?);
        }
        if want(Part::Chat) {
            doc.insert("chat".into(), serde_json::to_value(s.all_chat()?)?);
        }
        if want(Part::Crm) {
            doc.insert("contacts".into(), serde_json::to_value(s.all_contacts()?)?);
            doc.insert("deals".into(), serde_json::to_value(s.all_deals()?)?);
        }
        if want(Part::Calendar) {
            doc.insert("events".into(), serde_json::to_value(s.all_events()?)?);
        }
        if want(Part::Ledger) {
            doc.insert("invoices".into(), serde_json::to_value(s.all_invoices()?)?);
            doc.insert(
                "expense_reports".into(),
                serde_json::to_value(s.all_expense_reports()?)?,
            );
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(());
    }
    if want(Part::Mail) {
        writeln!(out, "== mail")?;
        for m in s.all_mail()? {
            writeln!(
                out,
                "  {} [{}] {} <- {}: {}",
                m.id,
                m.labels.join(","),
                m.received_at,
                m.from,
                m.subject
            )?;
        }
    }
    if want(Part::Chat) {
        writeln!(out, "== chat")?;
        for (channel, messages) in s.all_chat()? {
            writeln!(out, "  {channel}")?;
            for m in messages {
                writeln!(
                    out,
                    "    {} {}: {}",
                    m.posted_at,
                    m.author,
                    m.text.replace('\n', "\n      ")
                )?;
            }
        }
    }
    if want(Part::Crm) {
        writeln!(out, "== crm")?;
        for c in s.all_contacts()? {
            writeln!(out, "  {} {} <{}> {}", c.id, c.name, c.email, c.company)?;
        }
        for d in s.all_deals()? {
            writeln!(
                out,
                "  {} {} [{}] {}",
                d.id,
                d.name,
                d.stage,
                money(d.amount_cents)
            )?;
        }
    }
    if want(Part::Calendar) {
        writeln!(out, "== calendar")?;
        for e in s.all_events()? {
            writeln!(
                out,
                "  {} {} - {} {} ({})",
                e.id,
                e.start,
                e.end,
                e.title,
                e.attendees.join(", ")
            )?;
        }
    }
    if want(Part::Ledger) {
        writeln!(out, "== ledger")?;
        for i in s.all_invoices()? {
            writeln!(
                out,
                "  {} {} {} {} [{}] due {}",
                i.id,
                i.customer,
                money(i.amount_cents),
                i.currency,
                i.status,
                i.due_on
            )?;
        }
        for r in s.all_expense_reports()? {
            let total: i64 = r.report.lines.iter().map(|l| l.amount_cents).sum();
            writeln!(
                out,
                "  expense report {} {:?} [{}] {} {}, {} lines",
                r.id,
                r.report.title,
                r.status,
                money(total),
                r.report.currency,
                r.report.lines.len()
            )?;
        }
    }
    Ok(())
}
