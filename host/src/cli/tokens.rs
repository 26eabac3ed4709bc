//! `clancy tokens create|list|revoke`: API tokens for the daemon.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use super::{Global, open, who};
use crate::operators::Role;
use crate::org::DataDirMode;

#[derive(Subcommand, Debug)]
pub(super) enum TokensCommand {
    /// Make a token that acts as an operator (printed once; only its hash is kept).
    Create {
        /// The operator it acts as.
        #[arg(long = "for", value_name = "OPERATOR")]
        operator: String,
        /// Its role: admin, manager or user (never above yours or theirs).
        #[arg(long)]
        role: String,
        /// Days until it expires (1-365).
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Who makes it [default: $USER].
        #[arg(long = "as", value_name = "OPERATOR")]
        by: Option<String>,
    },
    /// List tokens (ids, operators, roles, expiry; never secrets).
    List {
        /// JSON Lines.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token at once.
    Revoke {
        /// The token's id (`tk-…`).
        id: String,
        /// Who revokes it (an admin, or its operator) [default: $USER].
        #[arg(long = "as", value_name = "OPERATOR")]
        by: Option<String>,
    },
}

/// Run a `tokens` command.
pub(super) fn run(
    global: &Global,
    command: TokensCommand,
    out: &mut impl Write,
) -> Result<ExitCode> {
    if let Some(remote) = super::remote(global)? {
        return through_daemon(&remote, command, out);
    }
    match command {
        TokensCommand::Create {
            operator,
            role,
            days,
            by,
        } => {
            let role: Role = role.parse()?;
            let host = open(global, DataDirMode::Existing)?;
            let (token, secret) = host.create_token(&operator, role, days, &who(by)?)?;
            writeln!(
                out,
                "{} acts as {} ({}) until {}; the secret is shown this once:",
                token.id,
                token.operator,
                token.role,
                token
                    .expires_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )?;
            writeln!(out, "{secret}")?;
            Ok(ExitCode::SUCCESS)
        }
        TokensCommand::List { json } => {
            let host = open(global, DataDirMode::Existing)?;
            let tokens = host.operators().tokens()?;
            for t in &tokens {
                if json {
                    let mut shown = serde_json::to_value(t)?;
                    if let Some(o) = shown.as_object_mut() {
                        o.remove("hash");
                    }
                    writeln!(out, "{shown}")?;
                } else {
                    writeln!(
                        out,
                        "{} {} ({}) expires {}{}",
                        t.id,
                        t.operator,
                        t.role,
                        t.expires_at
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        if t.revoked { " REVOKED" } else { "" }
                    )?;
                }
            }
            if tokens.is_empty() && !json {
                writeln!(out, "no tokens")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        TokensCommand::Revoke { id, by } => {
            let host = open(global, DataDirMode::Existing)?;
            let token = host.revoke_token(&id, &who(by)?)?;
            writeln!(out, "{} revoked", token.id)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A `tokens` command through the daemon (as the token's own operator).
fn through_daemon(
    remote: &super::Remote,
    command: TokensCommand,
    out: &mut impl Write,
) -> Result<ExitCode> {
    use super::remote::no_as;
    use serde_json::json;
    let line = |v: &serde_json::Value| crate::human::line(v.as_str().unwrap_or_default());
    match command {
        TokensCommand::Create {
            operator,
            role,
            days,
            by,
        } => {
            no_as(&by)?;
            let role: Role = role.parse()?;
            let t = remote.post(
                "/api/v1/tokens",
                &json!({"operator": operator, "role": role, "days": days}),
            )?;
            writeln!(
                out,
                "{} acts as {} ({}) until {}; the secret is shown this once:",
                line(&t["id"]),
                line(&t["operator"]),
                line(&t["role"]),
                line(&t["expires_at"])
            )?;
            writeln!(out, "{}", line(&t["secret"]))?;
        }
        TokensCommand::List { json } => {
            let list = remote.get("/api/v1/tokens", &[])?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            for t in &items {
                if json {
                    writeln!(out, "{t}")?;
                } else {
                    writeln!(
                        out,
                        "{} {} ({}) expires {}{}",
                        line(&t["id"]),
                        line(&t["operator"]),
                        line(&t["role"]),
                        line(&t["expires_at"]),
                        if t["revoked"].as_bool() == Some(true) {
                            " REVOKED"
                        } else {
                            ""
                        }
                    )?;
                }
            }
            if items.is_empty() && !json {
                writeln!(out, "no tokens")?;
            }
        }
        TokensCommand::Revoke { id, by } => {
            no_as(&by)?;
            let id = super::approvals::path_segment(&id)?;
            remote.post(&format!("/api/v1/tokens/{id}/revoke"), &json!({}))?;
            writeln!(out, "{id} revoked")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
