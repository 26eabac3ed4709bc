//! `clancy audit log|verify|explain`: read, verify and explain the audit log.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use super::{Global, Remote, open, who};
use crate::audit::{Anchors, Entry, Verification, render_log};
use crate::keys::{Checkpoint, parse_public_key};
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
    /// Recompute the hash chain and check it against every signed
    /// checkpoint; exit 1 if anything was edited, deleted, reordered,
    /// truncated or rewritten.
    Verify {
        /// A head hash recorded earlier; verify that it is still in the chain.
        #[arg(long, value_name = "HASH")]
        expect_head: Option<String>,
        /// The key checkpoints must be signed with, as `clancy audit key`
        /// printed it (hex, or a file holding it) [default: this data dir's key].
        #[arg(long, value_name = "KEY")]
        public_key: Option<String>,
        /// Check against the checkpoints in FILE (a copy kept elsewhere)
        /// instead of the checkpoint file the host writes.
        #[arg(long, value_name = "FILE")]
        checkpoints: Option<PathBuf>,
        /// Verify an exported log (`clancy audit export`) without any data
        /// dir; needs --public-key.
        #[arg(long, value_name = "FILE", requires = "public_key")]
        export: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the public half of the key audit checkpoints are signed with
    /// (keep it somewhere the data dir's owner cannot change).
    Key,
    /// Write the log and its signed checkpoints as JSON Lines, to verify
    /// elsewhere with `clancy audit verify --export FILE --public-key KEY`.
    Export {
        /// Write here instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// Run an `audit` command.
pub(super) fn run(
    global: &Global,
    command: AuditCommand,
    out: &mut impl Write,
) -> Result<ExitCode> {
    // An export is verified without any data dir or daemon.
    let offline = matches!(
        command,
        AuditCommand::Verify {
            export: Some(_),
            ..
        }
    );
    if !offline && let Some(remote) = super::remote(global)? {
        return through_daemon(&remote, command, out);
    }
    match command {
        AuditCommand::Log {
            employee,
            task,
            json,
        } => {
            let host = open(global, DataDirMode::Existing)?;
            let wanted = |e: &Entry| {
                employee.as_ref().is_none_or(|n| &e.record.employee == n)
                    && task
                        .as_ref()
                        .is_none_or(|t| e.record.task.starts_with(t.as_str()))
            };
            // One task's entries through the task index; else the log, a
            // page at a time.
            match &task {
                Some(t) if !t.is_empty() => {
                    let entries: Vec<Entry> = host
                        .audit()
                        .entries_of_tasks(t)?
                        .into_iter()
                        .filter(|e| wanted(e))
                        .collect();
                    print_entries(&entries, json, out)
                }
                _ => print_log(host.audit(), wanted, json, out),
            }
        }
        AuditCommand::Verify {
            expect_head,
            public_key,
            checkpoints,
            export,
            json,
        } => {
            let public = public_key.as_deref().map(read_public_key).transpose()?;
            let mut v = match (export, public) {
                (Some(export), Some(public)) => verify_export(
                    &export,
                    public,
                    checkpoints.as_deref(),
                    expect_head.as_deref(),
                )?,
                (_, public) => {
                    let host = open(global, DataDirMode::Existing)?;
                    let own = host.public_key();
                    let anchors = host.audit_anchors(checkpoints.as_deref(), public)?;
                    let mut v = host
                        .audit()
                        .verify(expect_head.as_deref(), Some(&anchors))?;
                    expect_key(&mut v, public, &own, "this data dir's");
                    v
                }
            };
            v.problems.dedup();
            report(&v, json, out)
        }
        AuditCommand::Key => {
            let host = open(global, DataDirMode::Existing)?;
            writeln!(out, "{}", host.public_key())?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Export { output } => {
            let host = open(global, DataDirMode::Existing)?;
            let by = who(None).unwrap_or_else(|_| "the CLI".into());
            // Written as it is read: a page of the log at a time.
            super::write_export(
                output.as_deref(),
                out,
                |w| Ok(host.audit_export_to(&by, w)?),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Explain { task } => {
            let host = open(global, DataDirMode::Existing)?;
            write!(out, "{}", host.explain(&task)?)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A problem first in `v` when the host key (`own`, hex) is not the one
/// `--public-key` expects.
fn expect_key(
    v: &mut Verification,
    expected: Option<ed25519_dalek::VerifyingKey>,
    own: &str,
    whose: &str,
) {
    if let Some(expected) = expected {
        let expected = hex::encode(expected.as_bytes());
        if expected != own {
            v.problems.insert(
                0,
                format!(
                    "{whose} host key {own} is not the expected key {expected}: the key was replaced"
                ),
            );
        }
    }
}

/// Entries as `audit log` prints them (JSON Lines with `--json`).
fn print_entries(entries: &[Entry], json: bool, out: &mut impl Write) -> Result<ExitCode> {
    if json {
        for e in entries {
            writeln!(out, "{}", serde_json::to_string(e)?)?;
        }
    } else {
        for line in render_log(entries) {
            writeln!(out, "{line}")?;
        }
    }
    if entries.is_empty() && !json {
        writeln!(out, "no audit entries match")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The whole log as `audit log` prints it (the entries `wanted` says),
/// read a page at a time: first to find the intents whose result is on
/// record further on, then to print.
fn print_log(
    log: &crate::audit::AuditLog,
    wanted: impl Fn(&Entry) -> bool,
    json: bool,
    out: &mut impl Write,
) -> Result<ExitCode> {
    // Intents not yet followed by their result: few at any point. The
    // second pass prints the entries the first one read, no later ones.
    let mut open = std::collections::HashSet::new();
    let mut through = u64::MAX;
    if !json {
        through = 0;
        log.for_each_page(|page| {
            through = page.last().map_or(through, |e| e.seq);
            for e in page.iter().filter(|e| wanted(e)) {
                if e.kind == crate::audit::Kind::Intent {
                    open.insert(e.seq);
                }
                if let Some(intent) = e.record.intent {
                    open.remove(&intent);
                }
            }
            Ok::<(), anyhow::Error>(())
        })?;
    }
    let mut printed = false;
    log.for_each_page(|page| {
        for e in page.iter().filter(|e| e.seq <= through && wanted(e)) {
            let line = if json {
                Some(serde_json::to_string(e)?)
            } else {
                crate::audit::render_line(e, |intent| !open.contains(&intent))
            };
            if let Some(line) = line {
                writeln!(out, "{line}")?;
            }
            printed = true;
        }
        Ok::<(), anyhow::Error>(())
    })?;
    if !printed && !json {
        writeln!(out, "no audit entries match")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Write an export to `output`, or to standard output.
/// An `audit` command through the daemon.
fn through_daemon(
    remote: &Remote,
    command: AuditCommand,
    out: &mut impl Write,
) -> Result<ExitCode> {
    match command {
        AuditCommand::Log {
            employee,
            task,
            json,
        } => {
            let mut query = Vec::new();
            if let Some(e) = employee {
                query.push(("employee", e));
            }
            if let Some(t) = task {
                query.push(("task", t));
            }
            query.push(("limit", "1000".to_string()));
            let entries: Vec<Entry> = remote
                .all_pages("/api/v1/audit", &query, "after")?
                .into_iter()
                .map(serde_json::from_value)
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    anyhow::anyhow!("the daemon sent an entry this CLI cannot read: {e}")
                })?;
            print_entries(&entries, json, out)
        }
        AuditCommand::Verify {
            expect_head,
            public_key,
            checkpoints,
            export: _,
            json,
        } => {
            if checkpoints.is_some() {
                anyhow::bail!(
                    "--checkpoints is a file on this machine: verify an export against it (`clancy audit export -o FILE`, then `clancy audit verify --export FILE --public-key KEY --checkpoints COPY`)"
                );
            }
            let public = public_key.as_deref().map(read_public_key).transpose()?;
            let query: Vec<(&str, String)> = expect_head
                .map(|h| ("expect_head", h))
                .into_iter()
                .collect();
            let answer = remote.get("/api/v1/audit/verify", &query)?;
            let own = answer["public_key"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let mut v: Verification = serde_json::from_value(answer).map_err(|e| {
                anyhow::anyhow!("the daemon sent a result this CLI cannot read: {e}")
            })?;
            expect_key(&mut v, public, &own, "the daemon's");
            v.problems.dedup();
            report(&v, json, out)
        }
        AuditCommand::Key => {
            let answer = remote.get("/api/v1/audit/verify", &[])?;
            writeln!(out, "{}", answer["public_key"].as_str().unwrap_or_default())?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Export { output } => {
            super::write_export(output.as_deref(), out, |w| {
                remote.download("/api/v1/audit/export", w)
            })?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Explain { task } => {
            let task = super::approvals::path_segment(&task)?;
            let answer = remote.get(&format!("/api/v1/tasks/{task}/explain"), &[])?;
            write!(out, "{}", answer["text"].as_str().unwrap_or_default())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A line of an export that is not an entry.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum ExportLine {
    /// A signed checkpoint, `{"checkpoint": {...}}`.
    Checkpoint {
        /// The checkpoint.
        checkpoint: Checkpoint,
    },
}

/// A public key given as hex or as a file holding the hex.
fn read_public_key(given: &str) -> Result<ed25519_dalek::VerifyingKey> {
    let text = if Path::new(given).is_file() {
        std::fs::read_to_string(given)
            .map_err(|e| anyhow::anyhow!("cannot read the public key file {given}: {e}"))?
    } else {
        given.to_string()
    };
    parse_public_key(&text).map_err(|e| anyhow::anyhow!("--public-key: {e}"))
}

/// Verify an export: entries in file order, checked against its own
/// checkpoints and those in `more` (if given), signed by `public`.
fn verify_export(
    path: &Path,
    public: ed25519_dalek::VerifyingKey,
    more: Option<&Path>,
    expect_head: Option<&str>,
) -> Result<Verification> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the export {}: {e}", path.display()))?;
    let mut items = Vec::new();
    let mut anchors = Anchors {
        public,
        checkpoints: Vec::new(),
        problems: Vec::new(),
    };
    let mut org = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Ok(ExportLine::Checkpoint { checkpoint }) = serde_json::from_str(line) {
            anchors.checkpoints.push(checkpoint);
            continue;
        }
        let entry = serde_json::from_str::<Entry>(line).map_err(|e| e.to_string());
        if let (None, Ok(e)) = (&org, &entry) {
            org = Some(e.org.clone());
        }
        items.push((None, entry));
    }
    if let Some(file) = more {
        let (checkpoints, problems) = crate::keys::read_checkpoints(file)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
        anchors.checkpoints.extend(checkpoints);
        anchors.problems.extend(problems);
    }
    // The org is the one the entries name (a moved entry shows as moved).
    let org = org
        .or_else(|| anchors.checkpoints.first().map(|c| c.org.clone()))
        .unwrap_or_default();
    Ok(crate::audit::verify_chain(
        &org,
        items,
        None,
        expect_head,
        Some(&anchors),
    ))
}

fn report(v: &Verification, json: bool, out: &mut impl Write) -> Result<ExitCode> {
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(v)?)?;
    } else if v.is_intact() {
        writeln!(
            out,
            "audit log intact: {} entries, head {}; {} signed checkpoint(s) match{}",
            v.entries,
            v.head,
            v.checkpoints,
            if v.unsigned_tail > 0 {
                format!(
                    "; the last {} entr{} not signed yet (the next task end signs them)",
                    v.unsigned_tail,
                    if v.unsigned_tail == 1 {
                        "y is"
                    } else {
                        "ies are"
                    }
                )
            } else {
                String::new()
            }
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
