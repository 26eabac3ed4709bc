//! OAuth connections against a real OAuth 2.0 authorization server
//! (oidc-provider, installed by the test setup with `npm ci --prefix
//! tests/oauth`, started here on 127.0.0.1): `clancy connect` with PKCE
//! and a loopback redirect, state and redirect mismatches, code replay,
//! refresh with rotation, revocation (RFC 7009), expiry, key rotation, and
//! token strings absent from everything the host shows or writes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clancy::org::{ConnectionStatus, DataDirMode, Org};
use clancy::vault::{MasterKeys, RecordId, Secret};

use crate::env::{clancy, clancy_command, stderr, stdout, workspace_root};

const CLIENT_SECRET: &str = "the-client-secret";

/// A free port on 127.0.0.1 (bound and let go).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The authorization server, running until dropped.
struct StandIn {
    child: Child,
    base: String,
}

impl StandIn {
    fn start(redirect: &str, access_ttl: u32) -> Result<StandIn> {
        let dir = workspace_root().join("tests/oauth");
        anyhow::ensure!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "oidc-provider is not installed: run `npm ci --prefix tests/oauth` (the README's test command does)"
        );
        let port = free_port()?;
        let mut child = Command::new("node")
            .arg(dir.join("server.mjs"))
            .env("PORT", port.to_string())
            .env("REDIRECT", redirect)
            .env("SCOPES", "channels:history channels:read chat:write")
            .env("ACCESS_TTL", access_ttl.to_string())
            .env("CLIENT_SECRET", CLIENT_SECRET)
            .stdout(Stdio::piped())
            .stderr(match std::env::var_os("CLANCY_TEST_OAUTH_LOG") {
                Some(path) => Stdio::from(std::fs::File::create(path)?),
                None => Stdio::null(),
            })
            .spawn()
            .context("cannot start node")?;
        let mut out = BufReader::new(child.stdout.take().context("no stdout")?);
        let mut line = String::new();
        loop {
            line.clear();
            anyhow::ensure!(
                out.read_line(&mut line)? > 0,
                "the OAuth server did not start"
            );
            if line.starts_with("listening") {
                break;
            }
        }
        // It says more on stdout later (notices): read it all, or a closed
        // pipe would kill it.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        Ok(StandIn {
            child,
            base: format!("http://127.0.0.1:{port}"),
        })
    }

    /// `POST path` with client authentication: status and JSON answer.
    fn post(&self, path: &str, form: &[(&str, &str)]) -> Result<(u16, serde_json::Value)> {
        let r = reqwest::blocking::Client::new()
            .post(format!("{}{path}", self.base))
            .basic_auth("clancy", Some(CLIENT_SECRET))
            .form(form)
            .send()?;
        let status = r.status().as_u16();
        let text = r.text()?;
        Ok((status, serde_json::from_str(&text).unwrap_or_default()))
    }

    /// Whether the server still takes `token` as active (RFC 7662).
    fn active(&self, token: &str) -> Result<bool> {
        let (status, answer) = self.post("/token/introspection", &[("token", token)])?;
        anyhow::ensure!(status == 200, "introspection: {status} {answer}");
        Ok(answer["active"] == true)
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Be the operator's browser: follow the authorization server's redirects
/// (keeping its cookies) until it sends the browser to `callback`; that
/// URL, not fetched.
fn approve(url: &str, callback: &str) -> Result<String> {
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut jar: Vec<(String, String)> = Vec::new();
    let mut url = url.to_string();
    for _ in 0..10 {
        let cookie = jar
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let r = client.get(&url).header("cookie", cookie).send()?;
        for c in r.headers().get_all("set-cookie") {
            let pair = c.to_str()?.split(';').next().unwrap_or_default();
            if let Some((k, v)) = pair.split_once('=') {
                jar.retain(|(name, _)| name != k);
                jar.push((k.to_string(), v.to_string()));
            }
        }
        let status = r.status().as_u16();
        let Some(location) = r.headers().get("location") else {
            anyhow::bail!("the authorization server answered {status}: {}", r.text()?);
        };
        url = reqwest::Url::parse(&url)?
            .join(location.to_str()?)?
            .to_string();
        if url.starts_with(callback) {
            return Ok(url);
        }
    }
    anyhow::bail!("the authorization server never sent the browser back")
}

/// A data dir with the admin `ada` and the employee `poster` registered,
/// granted `actions` in #general.
fn registered(actions: &[&str]) -> Result<(tempfile::TempDir, std::path::PathBuf)> {
    let grants = format!(
        "[[grant]]\nintegration = \"slack\"\nscope = \"channel:#general\"\nactions = {actions:?}\n"
    );
    let (dir, data, manifest) = crate::env::employee_dir("poster", &grants)?;
    for args in [
        &["operators", "add", "ada", "--role", "admin", "--as", "ada"][..],
        &["run", &manifest, "--task", "post hello"],
    ] {
        let o = clancy(&data, args)?;
        anyhow::ensure!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
    Ok((dir, data))
}

/// A data dir with an admin and an employee granted to read and post in
/// #general, and `oauth.toml` naming the stand-in as provider `slack`.
fn prepared(server: &StandIn, redirect: &str) -> Result<(tempfile::TempDir, std::path::PathBuf)> {
    let (dir, data) = registered(&["read", "post"])?;
    // The client secret in a file only its owner reads.
    let secret_file = data.join("slack.secret");
    {
        use std::io::Write as _;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options
            .open(&secret_file)?
            .write_all(CLIENT_SECRET.as_bytes())?;
    }
    std::fs::write(
        data.join("oauth.toml"),
        format!(
            r#"[provider.slack]
integration = "slack"
client_id = "clancy"
client_secret_file = "{secret}"
authorize_url = "{base}/auth"
token_url = "{base}/token"
revoke_url = "{base}/token/revocation"
redirect_uri = "{redirect}"
max_lifetime = "1h"
"#,
            base = server.base,
            secret = secret_file.display()
        ),
    )?;
    Ok((dir, data))
}

/// `clancy connect slack` running, and the authorization URL it printed.
fn connecting(data: &Path, log: &Path) -> Result<(Child, String)> {
    let mut child = clancy_command(
        data,
        &["connect", "slack", "--as", "ada", "--timeout", "60s"],
    )
    .env("CLANCY_LOG", "trace")
    .stdout(Stdio::piped())
    .stderr(Stdio::from(std::fs::File::create(log)?))
    .spawn()?;
    let mut out = BufReader::new(child.stdout.take().context("no stdout")?);
    let mut line = String::new();
    let started = Instant::now();
    loop {
        line.clear();
        anyhow::ensure!(out.read_line(&mut line)? > 0, "connect printed no URL");
        if line.starts_with("http") {
            break;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(30));
    }
    // Keep reading its stdout so it never blocks on a full pipe.
    let url = line.trim().to_string();
    let rest = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    std::mem::forget(rest);
    Ok((child, url))
}

fn wait(child: &mut Child) -> Result<std::process::ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "connect hangs");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The organisation, opened in this process once the CLI processes that
/// had the store are gone (a CI run once saw the store still locked just
/// after one exited: the open is retried for up to 10 s, then fails).
fn org(data: &Path) -> Result<Org> {
    let started = Instant::now();
    loop {
        match Org::open(data, "default", DataDirMode::Existing) {
            Err(e)
                if e.to_string().contains("in use by another clancy process")
                    && started.elapsed() < Duration::from_secs(10) =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            opened => return Ok(opened?),
        }
    }
}

/// A connection's sealed token, opened as the host would.
fn token(data: &Path, id: &str, field: &str) -> Result<String> {
    let org = org(data)?;
    let c = org.connection(id)?.context("no connection")?;
    let sealed = match field {
        "access_token" => c.access,
        _ => c.refresh,
    }
    .context("no token")?;
    let keys = MasterKeys::load(data)?;
    Ok(keys
        .open(
            RecordId {
                org: "default",
                record: id,
                field,
            },
            &sealed,
        )?
        .expose()
        .to_string())
}

#[test]
fn connect_with_pkce_refuses_a_forged_state_a_replayed_code_and_another_redirect() -> Result<()> {
    let redirect = format!("http://127.0.0.1:{}/oauth/callback", free_port()?);
    let server = StandIn::start(&redirect, 3600)?;
    let (dir, data) = prepared(&server, &redirect)?;
    let log = dir.path().join("connect.log");

    // The URL asks for exactly the scopes the grants need, with S256 PKCE.
    let (mut child, url) = connecting(&data, &log)?;
    let asked = reqwest::Url::parse(&url)?;
    let q: std::collections::HashMap<String, String> = asked.query_pairs().into_owned().collect();
    assert_eq!(
        q["scope"], "channels:history channels:read chat:write",
        "{url}"
    );
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["redirect_uri"], redirect);
    // Another redirect URI: the authorization server refuses it.
    let mut elsewhere = asked.clone();
    let other = format!("http://127.0.0.1:{}/oauth/callback", free_port()?);
    elsewhere
        .query_pairs_mut()
        .clear()
        .extend_pairs(q.iter().map(|(k, v)| {
            (
                k.as_str(),
                if k == "redirect_uri" {
                    other.as_str()
                } else {
                    v.as_str()
                },
            )
        }));
    assert!(
        approve(elsewhere.as_str(), &redirect).is_err(),
        "a foreign redirect was accepted"
    );

    let back = approve(&url, &redirect)?;
    let code = reqwest::Url::parse(&back)?
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.to_string())
        .context("no code")?;
    // The server verifies PKCE: the code alone, without the verifier only
    // the host holds, is refused.
    let (status, refused) = server.post(
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect),
            ("code_verifier", &"x".repeat(43)),
        ],
    )?;
    assert_eq!(
        (status, refused["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // Another path on the listener is not the callback; the callback is.
    let stray = reqwest::blocking::get(redirect.replace("/oauth/callback", "/elsewhere"))?;
    assert_eq!(stray.status().as_u16(), 404);
    let answered = reqwest::blocking::get(&back)?;
    assert_eq!(answered.status().as_u16(), 200);
    assert!(wait(&mut child)?.success());

    let listed = clancy(&data, &["connections", "list", "--json"])?;
    let listed: serde_json::Value = serde_json::from_str(stdout(&listed).trim())?;
    assert_eq!(listed["status"], "active", "{listed}");
    assert_eq!(
        listed["scopes"],
        serde_json::json!(["channels:history", "channels:read", "chat:write"])
    );
    let id = listed["id"].as_str().context("no id")?.to_string();
    let access = token(&data, &id, "access_token")?;
    let refresh = token(&data, &id, "refresh_token")?;
    assert!(server.active(&access)?);

    // The same callback again (a replayed code): its state is spent.
    let state = reqwest::Url::parse(&back)?
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.to_string())
        .context("no state")?;
    let replay = org(&data)?.finish_connection(&Secret::new(state), &Secret::new(code.clone()));
    assert!(
        matches!(replay, Err(clancy::org::ConnectionError::BadState)),
        "{replay:?}"
    );

    // A forged state: refused, nothing exchanged, on record.
    let (mut child, url) = connecting(&data, &log)?;
    let back = approve(&url, &redirect)?;
    let mut forged = reqwest::Url::parse(&back)?;
    let pairs: Vec<(String, String)> = forged.query_pairs().into_owned().collect();
    forged
        .query_pairs_mut()
        .clear()
        .extend_pairs(pairs.iter().map(|(k, v)| {
            (
                k.as_str(),
                if k == "state" {
                    "forged-state"
                } else {
                    v.as_str()
                },
            )
        }));
    assert_eq!(
        reqwest::blocking::get(forged.as_str())?.status().as_u16(),
        400
    );
    let status = wait(&mut child)?;
    assert_eq!(status.code(), Some(2));
    assert_eq!(
        org(&data)?.connections()?.len(),
        1,
        "a forged state made a connection"
    );
    let audit = stdout(&clancy(&data, &["audit", "log"])?);
    assert!(audit.contains("connection-refused"), "{audit}");
    assert!(audit.contains("connection-created"), "{audit}");

    // No token, code or secret in anything the host showed or wrote.
    let mut seen = std::fs::read_to_string(&log)?;
    for args in [
        &["audit", "export"][..],
        &["orgs", "export"],
        &["connections", "list", "--json"],
        &["connections", "list"],
    ] {
        let o = clancy(&data, args)?;
        seen.push_str(&stdout(&o));
        seen.push_str(&stderr(&o));
    }
    for secret in [
        access.as_str(),
        refresh.as_str(),
        code.as_str(),
        CLIENT_SECRET,
    ] {
        assert!(!seen.contains(secret), "a secret was shown: {secret}");
    }
    let store = crate::env::walk(&data.join("store"))?;
    for secret in [access.as_bytes(), refresh.as_bytes()] {
        assert!(
            !store.windows(secret.len()).any(|w| w == secret),
            "a token is in the store in clear"
        );
    }
    Ok(())
}

/// Connect once (the whole flow) and return the data dir and the connection id.
fn connected(
    server: &StandIn,
    redirect: &str,
) -> Result<(tempfile::TempDir, std::path::PathBuf, String)> {
    let (dir, data) = prepared(server, redirect)?;
    let (mut child, url) = connecting(&data, &dir.path().join("connect.log"))?;
    let back = approve(&url, redirect)?;
    reqwest::blocking::get(&back)?;
    anyhow::ensure!(wait(&mut child)?.success(), "connect failed");
    let id = org(&data)?
        .connections()?
        .first()
        .map(|c| c.id.clone())
        .context("no connection")?;
    Ok((dir, data, id))
}

#[test]
fn tokens_refresh_with_rotation_expire_and_are_revoked_at_the_provider() -> Result<()> {
    let redirect = format!("http://127.0.0.1:{}/oauth/callback", free_port()?);
    // Access tokens live 2 s: every use refreshes first.
    let server = StandIn::start(&redirect, 2)?;
    let (_dir, data, id) = connected(&server, &redirect)?;
    let first_refresh = token(&data, &id, "refresh_token")?;
    let host = org(&data)?;
    let a = host.connection_token(&id)?;
    let b = host.connection_token(&id)?;
    assert_ne!(a.expose(), b.expose(), "each use refreshed");
    let c = host.connection(&id)?.context("gone")?;
    assert_eq!(c.refreshes, 2);
    // Rotation: the second refresh worked only with the rotated refresh
    // token the first one stored.
    assert!(server.active(b.expose())?);
    drop(host);
    assert_ne!(token(&data, &id, "refresh_token")?, first_refresh);

    // An authorization started before the key rotates finishes after it.
    let (url, state) = org(&data)?.begin_connection("slack", "ada")?;
    // The vault key rotates: everything re-sealed under version 2, and it
    // still opens.
    let rotated = clancy(&data, &["keys", "rotate"])?;
    assert!(
        stdout(&rotated).contains("version 2 in force"),
        "{}",
        stderr(&rotated)
    );
    assert_eq!(MasterKeys::load(&data)?.versions(), vec![2]);
    let host = org(&data)?;
    let sealed = host.connection(&id)?.context("gone")?;
    assert_eq!(sealed.refresh.as_ref().map(|s| s.kid), Some(2));
    let d = host.connection_token(&id)?;
    assert!(server.active(d.expose())?);
    let back = approve(&url, &redirect)?;
    let code = reqwest::Url::parse(&back)?
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.to_string())
        .context("no code")?;
    let second = host.finish_connection(&state, &Secret::new(code))?;
    assert_eq!(second.refresh.as_ref().map(|s| s.kid), Some(2));

    // Revoked: at the provider (RFC 7009) and here; calls get `expired`.
    drop(host);
    let revoked = clancy(&data, &["connections", "revoke", &id, "--as", "ada"])?;
    assert!(
        stdout(&revoked).contains("the provider confirmed"),
        "{}{}",
        stdout(&revoked),
        stderr(&revoked)
    );
    assert!(
        !server.active(d.expose())?,
        "the provider still takes the token"
    );
    let host = org(&data)?;
    let c = host.connection(&id)?.context("gone")?;
    assert_eq!(c.status, ConnectionStatus::Revoked);
    assert!(c.access.is_none() && c.refresh.is_none());
    assert!(matches!(
        host.connection_token(&id),
        Err(clancy::org::ConnectionError::Expired(_))
    ));
    // The first refresh token was rotated out long ago: the provider refuses it.
    let (status, _) = server.post(
        "/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &first_refresh),
        ],
    )?;
    assert_eq!(status, 400, "a rotated-out refresh token still works");
    Ok(())
}

#[test]
fn a_refused_refresh_or_an_old_connection_needs_an_admin_again() -> Result<()> {
    let redirect = format!("http://127.0.0.1:{}/oauth/callback", free_port()?);
    let server = StandIn::start(&redirect, 2)?;
    let (_dir, data, id) = connected(&server, &redirect)?;
    // The provider forgets the refresh token (revoked elsewhere): the next
    // use is refused, the connection needs re-authorisation, on record.
    let refresh = token(&data, &id, "refresh_token")?;
    let (status, _) = server.post("/token/revocation", &[("token", &refresh)])?;
    assert_eq!(status, 200);
    let host = org(&data)?;
    assert!(matches!(
        host.connection_token(&id),
        Err(clancy::org::ConnectionError::Expired(_))
    ));
    let c = host.connection(&id)?.context("gone")?;
    assert_eq!(c.status, ConnectionStatus::NeedsReauthorisation);
    assert!(
        host.audit()
            .entries()?
            .iter()
            .any(|e| e.record.action == "connection-expired")
    );

    // Another connection, past its maximum lifetime (1 h): expired.
    drop(host);
    let (_dir2, data2, id2) = connected(&server, &redirect)?;
    let mut host = org(&data2)?;
    let clock = Arc::new(clancy::approvals::ManualClock::new(chrono::Utc::now()));
    host.use_clock(clock.clone());
    clock.advance(chrono::Duration::hours(2));
    assert!(matches!(
        host.connection_token(&id2),
        Err(clancy::org::ConnectionError::Expired(_))
    ));
    assert_eq!(
        host.connection(&id2)?.map(|c| c.status),
        Some(ConnectionStatus::NeedsReauthorisation)
    );
    Ok(())
}

#[test]
fn the_daemon_connects_at_its_callback_and_lists_and_revokes_through_its_api() -> Result<()> {
    let port = free_port()?;
    let redirect = format!("http://127.0.0.1:{port}/oauth/callback");
    let server = StandIn::start(&redirect, 3600)?;
    let (_dir, data) = prepared(&server, &redirect)?;
    let made = clancy(
        &data,
        &[
            "tokens", "create", "--for", "ada", "--role", "admin", "--as", "ada",
        ],
    )?;
    let ada = stdout(&made)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    let served = crate::daemon::Served::start(&data, &["--listen", &format!("127.0.0.1:{port}")])?;
    let with_token = |args: &[&str]| -> Result<std::process::Output> {
        Ok(clancy_command(&data, args)
            .env("CLANCY_TOKEN", &ada)
            .output()?)
    };

    let started = with_token(&["connect", "slack"])?;
    assert!(started.status.success(), "{}", stderr(&started));
    let url = stdout(&started)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    let back = approve(&url, &redirect)?;
    let done = reqwest::blocking::get(&back)?;
    assert_eq!(done.status().as_u16(), 200);
    assert!(done.text()?.contains("Connected slack"));
    // The same callback again, and a forged one: refused.
    assert_eq!(reqwest::blocking::get(&back)?.status().as_u16(), 400);
    let forged = format!("{}/oauth/callback?state=forged&code=x", served.url);
    assert_eq!(reqwest::blocking::get(&forged)?.status().as_u16(), 400);

    let listed = with_token(&["connections", "list", "--json"])?;
    let c: serde_json::Value = serde_json::from_str(stdout(&listed).trim())?;
    assert_eq!(c["status"], "active", "{c}");
    assert!(
        c.get("access").is_none() && c.get("refresh").is_none(),
        "{c}"
    );
    let id = c["id"].as_str().context("no id")?.to_string();
    assert_eq!(c["in_use"], false);
    // The admin makes Slack calls go through it, then back to the sandbox.
    let used = with_token(&["connections", "use", &id])?;
    assert!(
        stdout(&used).contains(&format!("slack calls now go to slack through {id}")),
        "{}{}",
        stdout(&used),
        stderr(&used)
    );
    let listed = with_token(&["connections", "list", "--json"])?;
    let c: serde_json::Value = serde_json::from_str(stdout(&listed).trim())?;
    assert_eq!(c["in_use"], true, "{c}");
    let back_to_sandbox = with_token(&["connections", "sandbox", "slack"])?;
    assert!(stdout(&back_to_sandbox).contains("slack calls now go to the sandbox workspace"));
    let listed = with_token(&["connections", "list", "--json"])?;
    let c: serde_json::Value = serde_json::from_str(stdout(&listed).trim())?;
    assert_eq!(c["in_use"], false, "{c}");
    let files = with_token(&["connections", "sandbox", "files"])?;
    assert!(!files.status.success());
    assert!(stderr(&files).contains("not an integration reached through a connection"));
    let revoked = with_token(&["connections", "revoke", &id])?;
    assert!(
        stdout(&revoked).contains("the provider confirmed"),
        "{}{}",
        stdout(&revoked),
        stderr(&revoked)
    );
    served.terminate(Duration::from_secs(15))?;
    let c = org(&data)?.connection(&id)?.context("gone")?;
    assert_eq!(c.status, ConnectionStatus::Revoked);
    let log = stdout(&clancy(&data, &["audit", "log"])?);
    for said in [
        "connection-created",
        "connection-refused",
        "connection-used",
        "connection-unused",
        "connection-revoked",
    ] {
        assert!(log.contains(said), "{said} not in {log}");
    }
    Ok(())
}

/// A token endpoint that misbehaves, by path: `/error/token` refuses with
/// an OAuth error, `/garbage/token` answers what is not JSON,
/// `/huge/token` answers more than the host reads, `/redirect/token`
/// sends elsewhere, `/slow/token` answers too late. Its base URL.
fn misbehaving() -> Result<String> {
    use axum::routing::post;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let app = axum::Router::new()
                .route(
                    "/error/token",
                    post(|| async {
                        (
                            axum::http::StatusCode::BAD_REQUEST,
                            [("content-type", "application/json")],
                            r#"{"error":"invalid_grant","error_description":"the code\nwas used"}"#,
                        )
                    }),
                )
                .route(
                    "/garbage/token",
                    post(|| async { "<html>not a token</html>" }),
                )
                .route(
                    "/huge/token",
                    post(|| async {
                        (
                            [("content-type", "application/json")],
                            format!(
                                r#"{{"access_token":"{}","token_type":"bearer"}}"#,
                                "a".repeat(600_000)
                            ),
                        )
                    }),
                )
                .route(
                    "/redirect/token",
                    post(|| async {
                        (
                            axum::http::StatusCode::FOUND,
                            [("location", "http://10.0.0.1/token")],
                            "",
                        )
                    }),
                )
                .route(
                    "/slow/token",
                    post(|| async {
                        tokio::time::sleep(Duration::from_secs(10)).await;
                        "late"
                    }),
                );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let _ = ready_tx.send(listener.local_addr().expect("addr"));
            let _ = axum::serve(listener, app).await;
        });
    });
    let addr = ready_rx.recv_timeout(Duration::from_secs(10))?;
    Ok(format!("http://{addr}"))
}

#[test]
fn a_provider_that_refuses_answers_nonsense_or_too_much_too_late_or_elsewhere_changes_nothing()
-> Result<()> {
    let base = misbehaving()?;
    let redirect = format!("http://127.0.0.1:{}/oauth/callback", free_port()?);
    let (_dir, data) = registered(&["post"])?;
    let mut config = String::new();
    for mode in ["error", "garbage", "huge", "redirect", "slow"] {
        config.push_str(&format!(
            "[provider.{mode}]\nintegration = \"slack\"\nclient_id = \"clancy\"\nauthorize_url = \"{base}/auth\"\ntoken_url = \"{base}/{mode}/token\"\nredirect_uri = \"{redirect}\"\ntimeout = \"1s\"\n\n"
        ));
    }
    std::fs::write(data.join("oauth.toml"), config)?;
    let host = org(&data)?;
    let code = "the-authorization-code-1234";
    for (mode, expected) in [
        ("error", "the provider refused: invalid_grant"),
        ("garbage", "the provider failed"),
        ("huge", "larger than"),
        ("redirect", "redirect, which is not followed"),
        ("slow", "the provider failed"),
    ] {
        let started = Instant::now();
        let (_url, state) = host.begin_connection(mode, "ada")?;
        let failed = host.finish_connection(&state, &Secret::new(code));
        let said = match failed {
            Err(e) => e.to_string(),
            Ok(c) => anyhow::bail!("{mode}: connected {}", c.id),
        };
        assert!(said.contains(expected), "{mode}: {said}");
        assert!(
            !said.contains(code) && !said.contains('\n'),
            "{mode}: {said}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{mode} took {:?}",
            started.elapsed()
        );
        // Nothing stored; the state is spent.
        assert!(host.connections()?.is_empty(), "{mode} left a connection");
        assert!(matches!(
            host.finish_connection(&state, &Secret::new(code)),
            Err(clancy::org::ConnectionError::BadState)
        ));
    }
    let refused = host
        .audit()
        .entries()?
        .iter()
        .filter(|e| e.record.action == "connection-refused")
        .count();
    assert!(refused >= 5, "{refused} refusals on record");
    // Another organisation's connections are not this one's.
    drop(host);
    let other = Org::open(&data, "other", DataDirMode::Create)?;
    assert!(matches!(
        other.connection_token("cn-000000000000"),
        Err(clancy::org::ConnectionError::Unknown(_))
    ));
    Ok(())
}
