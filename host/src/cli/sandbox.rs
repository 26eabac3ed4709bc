//! `clancy sandbox seed|show`: the embedded sandbox workspace.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Subcommand, ValueEnum};

use super::{Global, open};
use crate::human::{self, line as h};
use crate::org::DataDirMode;
use crate::providers::money;
use crate::providers::sandbox::Snapshot;

#[derive(Subcommand, Debug)]
pub(super) enum SandboxCommand {
    /// Fill the sandbox workspace with its seed data.
    Seed {
        /// Replace existing sandbox data with the seed data.
        #[arg(long)]
        reset: bool,
    },
    /// Deliver a mail from outside into the sandbox mailbox, under a label
    /// (and INBOX), as if someone had written in (sets off mail triggers).
    Receive {
        /// The label it is filed under.
        #[arg(long, default_value = "INBOX")]
        label: String,
        /// Who it is from.
        #[arg(long)]
        from: String,
        /// Its subject.
        #[arg(long)]
        subject: String,
        /// Its body.
        #[arg(long)]
        body: String,
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
pub(super) enum Part {
    All,
    Mail,
    Chat,
    Crm,
    Calendar,
    Ledger,
}

/// Run a `sandbox` command.
pub(super) fn run(
    global: &Global,
    command: SandboxCommand,
    out: &mut impl Write,
) -> Result<ExitCode> {
    if let Some(remote) = super::remote(global)? {
        return through_daemon(&remote, command, out);
    }
    match command {
        SandboxCommand::Seed { reset } => {
            let host = open(global, DataDirMode::Create)?;
            if host.sandbox().is_seeded()? && !reset {
                anyhow::bail!(
                    "the sandbox workspace already has data; pass --reset to replace it with the seed data"
                );
            }
            // Audited first: a reset that cannot be recorded does not happen.
            host.audit_operator_action(
                "sandbox-seed",
                if reset { "reset" } else { "first seed" },
                "the sandbox workspace was filled with its seed data",
            )?;
            host.sandbox().seed()?;
            writeln!(
                out,
                "sandbox workspace seeded in {}",
                host.data_dir().display()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        SandboxCommand::Receive {
            label,
            from,
            subject,
            body,
        } => {
            check_received(&from, &label)?;
            let host = open(global, DataDirMode::Existing)?;
            let id = host
                .sandbox()
                .receive_mail(&from, &label, &subject, &body)?;
            writeln!(out, "{id} received under {label}")?;
            Ok(ExitCode::SUCCESS)
        }
        SandboxCommand::Show { what, json } => {
            let host = open(global, DataDirMode::Existing)?;
            show_sandbox(&host.sandbox().snapshot()?, what, json, out)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check_received(from: &str, label: &str) -> Result<()> {
    if !from.contains('@') || label.trim().is_empty() || label.chars().any(char::is_control) {
        anyhow::bail!("--from takes an email address and --label a label name");
    }
    Ok(())
}

/// A `sandbox` command through the daemon.
fn through_daemon(
    remote: &super::Remote,
    command: SandboxCommand,
    out: &mut impl Write,
) -> Result<ExitCode> {
    match command {
        SandboxCommand::Seed { reset } => {
            remote.post(
                "/api/v1/sandbox/seed",
                &serde_json::json!({ "reset": reset }),
            )?;
            writeln!(out, "sandbox workspace seeded")?;
        }
        SandboxCommand::Receive {
            label,
            from,
            subject,
            body,
        } => {
            check_received(&from, &label)?;
            let answer = remote.post(
                "/api/v1/sandbox/mail",
                &serde_json::json!({"label": label, "from": from, "subject": subject, "body": body}),
            )?;
            writeln!(
                out,
                "{} received under {}",
                h(answer["id"].as_str().unwrap_or_default()),
                h(&label)
            )?;
        }
        SandboxCommand::Show { what, json } => {
            let snapshot: Snapshot = serde_json::from_value(remote.get("/api/v1/sandbox", &[])?)
                .map_err(|e| {
                    anyhow::anyhow!("the daemon sent a workspace this CLI cannot read: {e}")
                })?;
            show_sandbox(&snapshot, what, json, out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show_sandbox(s: &Snapshot, what: Part, json: bool, out: &mut impl Write) -> Result<()> {
    let want = |p: Part| what == Part::All || what == p;
    if json {
        let mut doc = serde_json::Map::new();
        if want(Part::Mail) {
            doc.insert("mail".into(), serde_json::to_value(&s.mail)?);
        }
        if want(Part::Chat) {
            doc.insert("chat".into(), serde_json::to_value(&s.chat)?);
        }
        if want(Part::Crm) {
            doc.insert("contacts".into(), serde_json::to_value(&s.contacts)?);
            doc.insert("deals".into(), serde_json::to_value(&s.deals)?);
        }
        if want(Part::Calendar) {
            doc.insert("events".into(), serde_json::to_value(&s.events)?);
        }
        if want(Part::Ledger) {
            doc.insert("invoices".into(), serde_json::to_value(&s.invoices)?);
            doc.insert(
                "expense_reports".into(),
                serde_json::to_value(&s.expense_reports)?,
            );
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(());
    }
    if want(Part::Mail) {
        writeln!(out, "== mail")?;
        for m in &s.mail {
            writeln!(
                out,
                "  {} [{}] {} <- {}: {}",
                h(&m.id),
                h(&m.labels.join(",")),
                h(&m.received_at),
                h(&m.from),
                h(&m.subject)
            )?;
        }
    }
    if want(Part::Chat) {
        writeln!(out, "== chat")?;
        for (channel, messages) in &s.chat {
            writeln!(out, "  {}", h(channel))?;
            for m in messages {
                writeln!(
                    out,
                    "    {} {}:\n{}",
                    h(&m.posted_at),
                    h(&m.author),
                    human::block(&m.text, "      | ")
                )?;
            }
        }
    }
    if want(Part::Crm) {
        writeln!(out, "== crm")?;
        for c in &s.contacts {
            writeln!(
                out,
                "  {} {} <{}> {}",
                h(&c.id),
                h(&c.name),
                h(&c.email),
                h(&c.company)
            )?;
        }
        for d in &s.deals {
            writeln!(
                out,
                "  {} {} [{}] {}",
                h(&d.id),
                h(&d.name),
                h(&d.stage),
                money(d.amount_cents)
            )?;
        }
    }
    if want(Part::Calendar) {
        writeln!(out, "== calendar")?;
        for e in &s.events {
            writeln!(
                out,
                "  {} {} - {} {} ({})",
                h(&e.id),
                h(&e.start),
                h(&e.end),
                h(&e.title),
                h(&e.attendees.join(", "))
            )?;
        }
    }
    if want(Part::Ledger) {
        writeln!(out, "== ledger")?;
        for i in &s.invoices {
            writeln!(
                out,
                "  {} {} {} {} [{}] due {}",
                h(&i.id),
                h(&i.customer),
                money(i.amount_cents),
                h(&i.currency),
                h(&i.status),
                h(&i.due_on)
            )?;
        }
        for r in &s.expense_reports {
            let total = r
                .report
                .lines
                .iter()
                .fold(0i64, |sum, l| sum.saturating_add(l.amount_cents));
            writeln!(
                out,
                "  expense report {} \"{}\" [{}] {} {}, {} lines",
                h(&r.id),
                h(&r.report.title),
                h(&r.status),
                money(total),
                h(&r.report.currency),
                r.report.lines.len()
            )?;
        }
    }
    Ok(())
}
