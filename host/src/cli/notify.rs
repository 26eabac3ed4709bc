//! `clancy notify secret|list|deliver`: the webhook signing secret and the outbox.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use super::{Global, open};
use crate::org::DataDirMode;

#[derive(Subcommand, Debug)]
pub(super) enum NotifyCommand {
    /// Print the org's webhook signing secret, `whsec_…` (receivers verify
    /// `webhook-signature` with it, per Standard Webhooks).
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

/// Run a `notify` command.
pub(super) fn run(
    global: &Global,
    command: NotifyCommand,
    out: &mut impl Write,
) -> Result<ExitCode> {
    if let Some(remote) = super::remote(global)? {
        return through_daemon(&remote, command, out);
    }
    match command {
        NotifyCommand::Secret => {
            let host = open(global, DataDirMode::Create)?;
            let secret = host.outbox().secret()?;
            // Who saw the signing secret is on record (never the secret itself).
            host.audit_operator_action(
                "notify-secret",
                "",
                "the webhook signing secret was shown",
            )?;
            writeln!(out, "{}", crate::notify::secret_text(&secret))?;
            Ok(ExitCode::SUCCESS)
        }
        NotifyCommand::List { json } => {
            let host = open(global, DataDirMode::Existing)?;
            let mut listed = 0;
            host.outbox().for_each_page(|page| {
                listed += page.len();
                for n in page {
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
                                .map(|e| format!(" ({})", crate::human::line(e)))
                                .unwrap_or_default()
                        )?;
                    }
                }
                Ok::<(), anyhow::Error>(())
            })?;
            if listed == 0 && !json {
                writeln!(out, "no notifications")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        NotifyCommand::Deliver => {
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
    }
}

/// A `notify` command through the daemon.
fn through_daemon(
    remote: &super::Remote,
    command: NotifyCommand,
    out: &mut impl Write,
) -> Result<ExitCode> {
    let line = |v: &serde_json::Value| crate::human::line(v.as_str().unwrap_or_default());
    match command {
        NotifyCommand::Secret => {
            let answer = remote.get("/api/v1/notifications/secret", &[])?;
            writeln!(out, "{}", line(&answer["secret"]))?;
        }
        NotifyCommand::List { json } => {
            let items = remote.all_pages("/api/v1/notifications", &[], "cursor")?;
            for n in &items {
                if json {
                    writeln!(out, "{n}")?;
                } else {
                    writeln!(
                        out,
                        "{} {} about {} -> {}: {} after {} attempt(s){}",
                        line(&n["id"]),
                        line(&n["event"]),
                        line(&n["approval"]),
                        line(&n["target"]),
                        line(&n["state"]),
                        n["attempts"],
                        n["last_error"]
                            .as_str()
                            .map(|e| format!(" ({})", crate::human::line(e)))
                            .unwrap_or_default()
                    )?;
                }
            }
            if items.is_empty() && !json {
                writeln!(out, "no notifications")?;
            }
        }
        NotifyCommand::Deliver => {
            let d = remote.post("/api/v1/notifications/deliver", &serde_json::json!({}))?;
            writeln!(
                out,
                "delivered {}, retrying later {}, gave up {}",
                d["delivered"], d["retrying"], d["gave_up"]
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
