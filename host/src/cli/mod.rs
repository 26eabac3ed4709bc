//! The `clancy` command line: argument definitions (clap derive) and a thin
//! dispatch to one module per command group, each a call into the library
//! plus the printing of its result.
//!
//! Exit codes: 0 success; 1 the task failed or a check found problems (the
//! command itself worked); 2 bad input or an unusable data dir.

mod approvals;
mod audit;
mod employees;
mod notify;
mod operators;
mod sandbox;
mod serve;
mod task;
mod tokens;
mod undo;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::org::{DataDirMode, Org};

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
    /// The organisation whose data to use.
    #[arg(long, global = true, default_value = "default", value_name = "ORG")]
    org: String,
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
    /// Webhook notifications: the signing secret and the outbox.
    #[command(subcommand)]
    Notify(notify::NotifyCommand),
    /// Undo an action (by its number in the audit log) or every write of a task.
    Undo(undo::UndoArgs),
    /// API tokens for the daemon: create, list, revoke.
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// Run the daemon: own the data dir, keep time (escalations, expiries,
    /// widening ends, notification delivery) and serve health checks and
    /// metrics over HTTP.
    Serve(serve::ServeArgs),
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
    let mut org = Org::open(&data_dir(global)?, &global.org, mode)?;
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
        Command::Check(args) => task::check(global, args, &mut out),
        Command::Audit(command) => audit::run(global, command, &mut out),
        Command::Approvals(command) => approvals::run(global, command, &mut out),
        Command::Operators(command) => operators::run(global, command, &mut out),
        Command::Employees(command) => employees::run(global, command, &mut out),
        Command::Notify(command) => notify::run(global, command, &mut out),
        Command::Undo(args) => undo::run(global, args, &mut out),
        Command::Sandbox(command) => sandbox::run(global, command, &mut out),
        Command::Serve(args) => serve::run(global, args, &mut out),
        Command::Tokens(command) => tokens::run(global, command, &mut out),
    }
}

/// Where a daemon says it serves a data dir, while it runs.
pub(super) const DAEMON_FILE: &str = "daemon.json";

/// A daemon the CLI talks to instead of opening the data dir.
pub(super) struct Remote {
    pub url: String,
    pub token: String,
    pub client: reqwest::blocking::Client,
}

/// The daemon to go through: `--server`, or the one serving the data dir
/// (it answers its health check). `None`: work on the data dir directly.
/// `CLANCY_CA_CERT` names a PEM certificate to trust besides the system's
/// (a daemon's own, self-signed one).
pub(super) fn remote(global: &Global) -> Result<Option<Remote>> {
    let mut builder = reqwest::blocking::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(3))
        .timeout(std::time::Duration::from_secs(120))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = std::env::var_os("CLANCY_CA_CERT").filter(|v| !v.is_empty()) {
        let pem = std::fs::read(&ca)
            .with_context(|| format!("CLANCY_CA_CERT: cannot read {}", ca.to_string_lossy()))?;
        let cert = reqwest::Certificate::from_pem(&pem).with_context(|| {
            format!(
                "CLANCY_CA_CERT: {} is not a PEM certificate",
                ca.to_string_lossy()
            )
        })?;
        builder = builder.add_root_certificate(cert);
    }
    let client = builder.build()?;
    let url = match &global.server {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let file = data_dir(global)?.join(DAEMON_FILE);
            let Ok(text) = std::fs::read_to_string(&file) else {
                return Ok(None);
            };
            let served: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is damaged", file.display()))?;
            let Some(url) = served["url"].as_str().map(str::to_string) else {
                return Ok(None);
            };
            // The token goes where this file points: only ever to this
            // machine (a daemon elsewhere is named with --server).
            let local = reqwest::Url::parse(&url).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && matches!(
                        u.host(),
                        Some(url::Host::Ipv4(ip)) if ip.is_loopback()
                    )
            });
            if !local {
                anyhow::bail!(
                    "{} names {url:?}, which is not a daemon on this machine; pass --server URL to talk to a daemon elsewhere",
                    file.display()
                );
            }
            // A file left by a daemon that died answers nothing: work locally.
            let alive = client
                .get(format!("{url}/healthz"))
                .timeout(std::time::Duration::from_secs(2))
                .send()
                .is_ok_and(|r| r.status().is_success());
            if !alive {
                return Ok(None);
            }
            url
        }
    };
    let token = std::env::var("CLANCY_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .with_context(|| {
            format!(
                "a daemon serves this data dir at {url}: set CLANCY_TOKEN to an API token (`clancy tokens create`, made while the daemon is stopped)"
            )
        })?;
    Ok(Some(Remote {
        url,
        token: token.trim().to_string(),
        client,
    }))
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
