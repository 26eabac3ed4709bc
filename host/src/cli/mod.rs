//! The `clancy` command line: argument definitions (clap derive) and a thin
//! dispatch to one module per command group, each a call into the library
//! plus the printing of its result.
//!
//! Exit codes: 0 success; 1 the task failed or a check found problems (the
//! command itself worked); 2 bad input or an unusable data dir.

mod approvals;
mod audit;
mod connections;
mod employees;
mod notify;
mod operators;
mod orgs;
mod remote;
mod sandbox;
mod serve;
mod task;
mod tasks;
mod tokens;
mod undo;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::org::{DataDirMode, Org};

use remote::{DAEMON_FILE, Remote, remote};

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
pub(super) struct Global {
    /// Where Clancy keeps its store and files [default: the user's data dir]/clancy.
    #[arg(long, global = true, env = "CLANCY_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The organisation whose data to use [default: default]; through a
    /// daemon, the token's (naming another is refused).
    #[arg(long, global = true, value_name = "ORG")]
    org: Option<String>,
    /// The append-only file signed audit checkpoints go to (keep it where
    /// whoever can write the store cannot) [default: DIR/checkpoints.jsonl].
    #[arg(
        long,
        global = true,
        env = "CLANCY_CHECKPOINT_FILE",
        value_name = "FILE"
    )]
    checkpoint_file: Option<PathBuf>,
    /// A running daemon to talk to (its token in CLANCY_TOKEN) [default:
    /// the one serving the data dir, if any].
    #[arg(long, global = true, env = "CLANCY_SERVER", value_name = "URL")]
    server: Option<String>,
    /// How the host's log (on stderr, filtered by CLANCY_LOG) is written.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
}

impl Global {
    /// The organisation named with `--org`, or `default`.
    pub(super) fn org(&self) -> &str {
        self.org.as_deref().unwrap_or("default")
    }
}

/// The host log's format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one task with an employee against the sandbox workspace.
    Run(task::RunArgs),
    /// Validate a manifest and its component's imports against its grants.
    Check(task::CheckArgs),
    /// Read and verify the audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Review and decide actions waiting for a human.
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCommand),
    /// The registered employees; disable or enable one.
    #[command(subcommand)]
    Employees(employees::EmployeesCommand),
    /// The people who decide requests, their roles and enrolment codes.
    #[command(subcommand, visible_alias = "users")]
    Operators(operators::OperatorsCommand),
    /// The organisations of the data dir: list, export one, delete one.
    #[command(subcommand)]
    Orgs(orgs::OrgsCommand),
    /// Webhook notifications: the signing secret and the outbox.
    #[command(subcommand)]
    Notify(notify::NotifyCommand),
    /// Undo an action (by its number in the audit log) or every write of a task.
    Undo(undo::UndoArgs),
    /// Connect a service through OAuth (authorization code with PKCE and a
    /// loopback redirect), asking only the scopes employees' grants need.
    Connect(connections::ConnectArgs),
    /// OAuth connections: list, revoke.
    #[command(subcommand)]
    Connections(connections::ConnectionsCommand),
    /// The vault's master key: rotate.
    #[command(subcommand)]
    Keys(connections::KeysCommand),
    /// API tokens for the daemon: create, list, revoke.
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// Run the daemon: own the data dir, keep time (escalations, expiries,
    /// widening ends, notification delivery) and serve health checks and
    /// metrics over HTTP.
    Serve(serve::ServeArgs),
    /// Tasks queued for the daemon's workers: start, list, show, cancel, watch.
    #[command(subcommand)]
    Tasks(tasks::TasksCommand),
    /// Manage the local sandbox workspace.
    #[command(subcommand)]
    Sandbox(sandbox::SandboxCommand),
}

/// Parse arguments, run the command, map the result to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("CLANCY_LOG").unwrap_or_else(|_| "warn".into())
    };
    match cli.global.log_format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .init(),
    }
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

pub(super) fn open(global: &Global, mode: DataDirMode) -> Result<Org> {
    let mut org = Org::open(&data_dir(global)?, global.org(), mode)?;
    if let Some(file) = &global.checkpoint_file {
        org.use_checkpoint_file(file.clone());
    }
    Ok(org)
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let global = &cli.global;
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Run(args) => task::run(global, args, &mut out),
        Command::Check(args) => task::check(args, &mut out),
        Command::Audit(command) => audit::run(global, command, &mut out),
        Command::Approvals(command) => approvals::run(global, command, &mut out),
        Command::Operators(command) => operators::run(global, command, &mut out),
        Command::Employees(command) => employees::run(global, command, &mut out),
        Command::Notify(command) => notify::run(global, command, &mut out),
        Command::Orgs(command) => orgs::run(global, command, &mut out),
        Command::Undo(args) => undo::run(global, args, &mut out),
        Command::Sandbox(command) => sandbox::run(global, command, &mut out),
        Command::Serve(args) => serve::run(global, args, &mut out),
        Command::Tokens(command) => tokens::run(global, command, &mut out),
        Command::Tasks(command) => tasks::run(global, command, &mut out),
        Command::Connect(args) => connections::connect(global, args, &mut out),
        Command::Connections(command) => connections::run(global, command, &mut out),
        Command::Keys(command) => connections::keys(global, command, &mut out),
    }
}

/// What every approvals command does first and last: close tasks a killed
/// process left open, move requests along their ladders, expire overdue
/// ones and finish approved actions interrupted by a crash. (Notifications are only queued here: `notify
/// deliver` and `approvals watch` send them, so no receiver can hold up a
/// command.)
pub(super) fn housekeeping(host: &Org) -> Result<()> {
    host.record_interrupted_tasks()?;
    host.tick()?;
    host.resume_approved()?;
    Ok(())
}

/// Write an export to `path` (or to `out` if none) as `write` makes it. A
/// file appears whole or not at all: it is written beside `path` under a
/// temporary name and renamed once complete, and removed if `write` fails.
/// It is readable by this user only (mode 0600).
pub(super) fn write_export(
    path: Option<&std::path::Path>,
    out: &mut dyn std::io::Write,
    write: impl FnOnce(&mut dyn std::io::Write) -> Result<()>,
) -> Result<()> {
    let Some(path) = path else {
        return write(out);
    };
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let partial = path.with_file_name(format!(
        ".{}.partial-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let made = (|| -> Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        // The organisation's records: readable by this user only.
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let file = options
            .open(&partial)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        let mut file = std::io::BufWriter::new(file);
        write(&mut file)?;
        file.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        std::fs::rename(&partial, path)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
    })();
    if made.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    made
}

/// Who is acting: `--as NAME`, else `$USER`.
pub(super) fn who(by: Option<String>) -> Result<String> {
    match by
        .or_else(|| std::env::var("USER").ok())
        .filter(|b| !b.trim().is_empty())
    {
        Some(by) => Ok(by),
        None => anyhow::bail!("say who you are with --as NAME"),
    }
}
