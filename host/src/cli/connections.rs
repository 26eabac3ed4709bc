//! `clancy connect`, `clancy connections list|revoke` and `clancy keys
//! rotate`: OAuth connections to the services employees reach, and the
//! vault's master key.
//!
//! `connect` runs the authorization code flow with a loopback redirect:
//! it prints the provider's URL, listens on the configured redirect URI
//! (which must be on 127.0.0.1) for the one request that carries the code
//! and the state, and finishes the connection. Through a daemon, `connect`
//! asks it to start (the provider sends the operator back to the daemon's
//! `/oauth/callback`) and `connections` goes through its API; `keys rotate`
//! needs the daemon stopped.

use std::io::{BufRead as _, Read as _, Write};
use std::net::TcpListener;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Subcommand;

use super::{Global, data_dir, open, who};
use crate::human;
use crate::org::{DataDirMode, Org};
use crate::vault::Secret;

/// `clancy connect`
#[derive(clap::Args, Debug)]
pub(super) struct ConnectArgs {
    /// The provider, as named in `<data-dir>/oauth.toml`.
    provider: String,
    /// The admin connecting it [default: $USER].
    #[arg(long = "as", value_name = "ADMIN")]
    by: Option<String>,
    /// How long to wait for the provider to send the operator back.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Subcommand, Debug)]
pub(super) enum ConnectionsCommand {
    /// The organisation's connections (never their tokens).
    List {
        /// JSON Lines.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a connection: at the provider (RFC 7009) where it can be,
    /// and its tokens deleted here; calls using it get `expired`.
    Revoke {
        /// The connection (`cn-…`).
        id: String,
        /// The admin revoking it [default: $USER].
        #[arg(long = "as", value_name = "ADMIN")]
        by: Option<String>,
    },
    /// Send every employee's calls to the connection's integration through
    /// it (instead of the sandbox workspace), from their next task on.
    Use {
        /// The connection (`cn-…`).
        id: String,
        /// The admin choosing it [default: $USER].
        #[arg(long = "as", value_name = "ADMIN")]
        by: Option<String>,
    },
    /// Send every employee's calls to an integration to the sandbox
    /// workspace again, from their next task on.
    Sandbox {
        /// `gmail`, `slack`, `hubspot`, `google-calendar` or `quickbooks`.
        integration: String,
        /// The admin choosing it [default: $USER].
        #[arg(long = "as", value_name = "ADMIN")]
        by: Option<String>,
    },
}

/// The integration named `name`, one reached through a connection.
fn connected_integration(name: &str) -> Result<crate::integrations::Integration> {
    crate::integrations::Integration::parse_connected(name).map_err(anyhow::Error::msg)
}

#[derive(Subcommand, Debug)]
pub(super) enum KeysCommand {
    /// Add a new vault key version, re-seal every token of every
    /// organisation under it, then drop the old versions.
    Rotate,
}

fn no_daemon(global: &Global) -> Result<()> {
    if let Some(remote) = super::remote(global)? {
        anyhow::bail!(
            "a daemon serves this data dir at {}: stop it to manage connections and keys from the CLI",
            remote.url
        );
    }
    Ok(())
}

/// The view of a connection people and `--json` see: never a token.
fn view(c: &crate::org::Connection, in_use: bool) -> serde_json::Value {
    serde_json::json!({
        "in_use": in_use,
        "id": c.id, "provider": c.provider, "integration": c.integration,
        "scopes": c.scopes, "status": c.status, "created_by": c.created_by,
        "created_at": c.created_at, "expires_at": c.expires_at,
        "access_expires_at": c.access_expires_at, "refreshes": c.refreshes,
        "note": c.note,
    })
}

/// Run `clancy connect`.
pub(super) fn connect(
    global: &Global,
    args: ConnectArgs,
    out: &mut impl Write,
) -> Result<ExitCode> {
    if let Some(remote) = super::remote(global)? {
        // The daemon receives the provider's redirect at its /oauth/callback.
        super::remote::no_as(&args.by)?;
        let started = remote.post(
            "/api/v1/connections",
            &serde_json::json!({ "provider": args.provider }),
        )?;
        writeln!(
            out,
            "open this address to approve the connection to {}; the daemon finishes it when the provider sends you back (`clancy connections list`):\n{}",
            human::line(&args.provider),
            human::line(started["authorize_url"].as_str().unwrap_or_default())
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let host = open(global, DataDirMode::Existing)?;
    let by = who(args.by)?;
    let config = host.oauth_provider(&args.provider)?;
    let redirect = reqwest::Url::parse(&config.redirect_uri)?;
    let loopback = matches!(redirect.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback());
    if redirect.scheme() != "http" || !loopback || redirect.port().is_none() {
        anyhow::bail!(
            "provider {}: its redirect_uri {} is not http://127.0.0.1:PORT/…, where this command listens",
            config.name,
            config.redirect_uri
        );
    }
    let addr = format!("127.0.0.1:{}", redirect.port().unwrap_or(0));
    let listener = TcpListener::bind(&addr)
        .with_context(|| format!("cannot listen on {addr} for the provider's redirect"))?;
    let (url, _state) = host.begin_connection(&config.name, &by)?;
    writeln!(
        out,
        "open this address to approve the connection to {} (waiting {}):\n{url}",
        config.name,
        humantime::format_duration(args.timeout)
    )?;
    out.flush()?;
    let deadline = Instant::now() + args.timeout;
    listener.set_nonblocking(true)?;
    loop {
        if Instant::now() >= deadline {
            anyhow::bail!(
                "nobody came back from the provider within {}",
                humantime::format_duration(args.timeout)
            );
        }
        let (stream, _) = match listener.accept() {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(code) = callback(&host, stream, redirect.path(), out)? {
            return Ok(code);
        }
    }
}

/// Serve one request on the redirect listener: `None` when it was not the
/// callback (answered 404; keep waiting), else how the command ends.
fn callback(
    host: &Org,
    mut stream: std::net::TcpStream,
    path: &str,
    out: &mut impl Write,
) -> Result<Option<ExitCode>> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut reader = std::io::BufReader::new((&stream).take(16 * 1024));
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        head.push(line);
    }
    let target = head
        .first()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("/")
        .to_string();
    let url = reqwest::Url::parse(&format!("http://127.0.0.1{target}"))
        .unwrap_or_else(|_| reqwest::Url::parse("http://127.0.0.1/").expect("a valid URL"));
    let mut answer = |status: &str, text: &str| -> Result<()> {
        write!(
            stream,
            "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncache-control: no-store\r\nreferrer-policy: no-referrer\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        )?;
        Ok(())
    };
    if url.path() != path {
        answer("404 Not Found", "not the callback\n")?;
        return Ok(None);
    }
    let query: std::collections::HashMap<String, String> = url
        .query_pairs()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Some(error) = query.get("error") {
        answer("400 Bad Request", "the provider refused the connection\n")?;
        anyhow::bail!(
            "the provider refused the connection: {}",
            human::line(error)
        );
    }
    let (Some(state), Some(code)) = (query.get("state"), query.get("code")) else {
        answer("400 Bad Request", "no code or state\n")?;
        return Ok(None);
    };
    match host.finish_connection(&Secret::new(state.as_str()), &Secret::new(code.as_str())) {
        Ok(c) => {
            answer("200 OK", "Connected. You can close this page.\n")?;
            writeln!(
                out,
                "connected {} ({} {}): {}",
                c.id,
                c.provider,
                c.integration,
                c.scopes.join(" ")
            )?;
            Ok(Some(ExitCode::SUCCESS))
        }
        Err(e) => {
            answer("400 Bad Request", "the connection was refused\n")?;
            Err(e.into())
        }
    }
}

/// Run a `connections` command.
pub(super) fn run(
    global: &Global,
    command: ConnectionsCommand,
    out: &mut impl Write,
) -> Result<ExitCode> {
    if let Some(remote) = super::remote(global)? {
        return through_daemon(&remote, command, out);
    }
    let host = open(global, DataDirMode::Existing)?;
    match command {
        ConnectionsCommand::List { json } => {
            let all = host.connections()?;
            let bindings = host.bindings()?;
            for c in &all {
                let in_use = bindings.get(&c.integration) == Some(&c.id);
                if json {
                    writeln!(out, "{}", view(c, in_use))?;
                } else {
                    writeln!(
                        out,
                        "{} {} ({}{}) {:?} scopes [{}] expires {}{}",
                        c.id,
                        c.provider,
                        c.integration,
                        if in_use { ", in use" } else { "" },
                        c.status,
                        c.scopes.join(" "),
                        c.expires_at
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        c.note
                            .as_ref()
                            .map(|n| format!(": {}", human::line(n)))
                            .unwrap_or_default()
                    )?;
                }
            }
            if all.is_empty() && !json {
                writeln!(
                    out,
                    "no connections (make one with `clancy connect PROVIDER`)"
                )?;
            }
        }
        ConnectionsCommand::Revoke { id, by } => {
            host.revoke_connection(&id, &who(by)?)?;
            let note = host
                .connection(&id)?
                .and_then(|c| c.note)
                .unwrap_or_default();
            writeln!(out, "{id} {}", human::line(&note))?;
        }
        ConnectionsCommand::Use { id, by } => {
            let c = host.use_connection(&id, &who(by)?)?;
            writeln!(
                out,
                "{} calls now go to {} through {} (from each employee's next task)",
                c.integration, c.provider, c.id
            )?;
        }
        ConnectionsCommand::Sandbox { integration, by } => {
            let integration = connected_integration(&integration)?;
            host.use_sandbox(integration, &who(by)?)?;
            writeln!(
                out,
                "{integration} calls now go to the sandbox workspace (from each employee's next task)"
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A `connections` command through the daemon.
fn through_daemon(
    remote: &super::Remote,
    command: ConnectionsCommand,
    out: &mut impl Write,
) -> Result<ExitCode> {
    match command {
        ConnectionsCommand::List { json } => {
            let items = remote.get("/api/v1/connections", &[])?["items"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for c in &items {
                if json {
                    writeln!(out, "{c}")?;
                } else {
                    let f = |k: &str| human::line(c[k].as_str().unwrap_or_default());
                    writeln!(
                        out,
                        "{} {} ({}{}) {} scopes [{}] expires {}",
                        f("id"),
                        f("provider"),
                        f("integration"),
                        if c["in_use"] == true { ", in use" } else { "" },
                        f("status"),
                        c["scopes"]
                            .as_array()
                            .map(|s| s
                                .iter()
                                .filter_map(|v| v.as_str().map(human::line))
                                .collect::<Vec<_>>()
                                .join(" "))
                            .unwrap_or_default(),
                        f("expires_at")
                    )?;
                }
            }
            if items.is_empty() && !json {
                writeln!(
                    out,
                    "no connections (make one with `clancy connect PROVIDER`)"
                )?;
            }
        }
        ConnectionsCommand::Revoke { id, by } => {
            super::remote::no_as(&by)?;
            let id = super::approvals::path_segment(&id)?;
            let c = remote.post(
                &format!("/api/v1/connections/{id}/revoke"),
                &serde_json::json!({}),
            )?;
            writeln!(
                out,
                "{id} {}",
                human::line(c["note"].as_str().unwrap_or_default())
            )?;
        }
        ConnectionsCommand::Use { id, by } => {
            super::remote::no_as(&by)?;
            let id = super::approvals::path_segment(&id)?;
            let c = remote.post(
                &format!("/api/v1/connections/{id}/use"),
                &serde_json::json!({}),
            )?;
            let f = |k: &str| human::line(c[k].as_str().unwrap_or_default());
            writeln!(
                out,
                "{} calls now go to {} through {} (from each employee's next task)",
                f("integration"),
                f("provider"),
                f("id")
            )?;
        }
        ConnectionsCommand::Sandbox { integration, by } => {
            super::remote::no_as(&by)?;
            let integration = connected_integration(&integration)?;
            remote.post(
                "/api/v1/connections/sandbox",
                &serde_json::json!({ "integration": integration.name() }),
            )?;
            writeln!(
                out,
                "{integration} calls now go to the sandbox workspace (from each employee's next task)"
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Run a `keys` command.
pub(super) fn keys(
    global: &Global,
    command: KeysCommand,
    out: &mut impl Write,
) -> Result<ExitCode> {
    no_daemon(global)?;
    match command {
        KeysCommand::Rotate => {
            let data = data_dir(global)?;
            let orgs = Org::open_all(&data, &[], DataDirMode::Existing)?;
            let mut keys = crate::vault::MasterKeys::load(&data)?;
            let version = keys.add_version()?;
            let mut count = 0;
            for org in &orgs {
                count += org.reseal_connections(&keys)?;
            }
            keys.retire()?;
            writeln!(
                out,
                "vault key version {version} in force: {count} secret(s) re-sealed, older versions dropped"
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
