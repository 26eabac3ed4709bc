//! The daemon, as an operator runs it: `clancy serve` owns the data dir,
//! keeps time with nobody typing a command, answers health checks and
//! metrics, refuses requests for other hosts, and stops cleanly on SIGTERM,
//! leaving the data dir to the next process.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clancy_guests::HOSTILE;

use crate::env::{clancy, stderr, stdout};
use crate::notify::{Receiver, grants};

/// A running `clancy serve` and its base URL.
pub(crate) struct Served {
    child: Child,
    pub(crate) url: String,
    stdout: BufReader<std::process::ChildStdout>,
    /// The first admin's enrolment link, when the daemon printed one.
    pub(crate) enrol_link: Option<String>,
    /// What it printed before it served, up to its `clancy serving` line.
    pub(crate) said: Vec<String>,
}

impl Served {
    pub(crate) fn start(data: &Path, extra: &[&str]) -> Result<Served> {
        Served::start_with(data, extra, None, None)
    }

    /// Start it, paused at `pause` (see `clancy::pause_point`) if given,
    /// its stderr into `stderr` if given.
    fn start_with(
        data: &Path,
        extra: &[&str],
        pause: Option<&str>,
        stderr: Option<&Path>,
    ) -> Result<Served> {
        // Loopback on a free port, unless `extra` says where.
        let listen: &[&str] = if extra.contains(&"--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let mut command = crate::env::clancy_command(data, &["serve", "--tick-secs", "1"]);
        command.args(listen);
        command
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(match stderr {
                Some(path) => Stdio::from(std::fs::File::create(path)?),
                None => Stdio::null(),
            });
        if let Some(point) = pause {
            command.env("CLANCY_TEST_PAUSE_AT", point);
        }
        let mut child = command.spawn()?;
        let mut stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        let mut enrol_link = None;
        let mut said = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            anyhow::ensure!(stdout.read_line(&mut line)? > 0, "the daemon did not start");
            said.push(line.trim_end().to_string());
            if line.starts_with("clancy serving") {
                break;
            }
            enrol_link = line
                .split_whitespace()
                .find(|w| w.contains("/enrol#"))
                .map(str::to_string);
        }
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .with_context(|| format!("no address in {line:?}"))?
            .to_string();
        Ok(Served {
            child,
            url,
            stdout,
            enrol_link,
            said,
        })
    }

    fn get(&self, path: &str) -> Result<(u16, String)> {
        let resp = reqwest::blocking::get(format!("{}{path}", self.url))?;
        Ok((resp.status().as_u16(), resp.text()?))
    }

    /// SIGTERM, then wait (at most `limit`) for the exit status and the
    /// rest of what it printed.
    pub(crate) fn terminate(
        mut self,
        limit: Duration,
    ) -> Result<(std::process::ExitStatus, String)> {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(killed.success(), "kill -TERM failed");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                let mut rest = String::new();
                std::io::Read::read_to_string(&mut self.stdout, &mut rest)?;
                return Ok((status, rest));
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                anyhow::bail!("the daemon did not stop within {limit:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn the_daemon_keeps_time_with_no_command_typed_and_stops_cleanly_on_sigterm() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    // A request waits for approval; its receiver fails the first delivery.
    let receiver = Receiver::start(vec![500])?;
    let manifest = dir.path().join("employee.toml");
    std::fs::write(
        &manifest,
        format!(
            "name = \"poster\"\ncomponent = {HOSTILE:?}\n{}",
            grants(&receiver.url())
        ),
    )?;
    let run = clancy(
        &data,
        &[
            "run",
            &manifest.display().to_string(),
            "--task",
            "post hello",
        ],
    )?;
    assert!(
        stdout(&run).contains("ap-"),
        "{}{}",
        stdout(&run),
        stderr(&run)
    );

    let served = Served::start(&data, &[])?;
    assert_eq!(served.get("/healthz")?, (200, "ok\n".to_string()));
    assert_eq!(served.get("/readyz")?.0, 200);
    // Nobody types a command: the daemon delivers, fails, backs off 2 s and
    // delivers again.
    let started = Instant::now();
    while receiver.received().len() < 2 {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(20),
            "the daemon delivered {} time(s) in 20 s",
            receiver.received().len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = receiver.received();
    assert_eq!(got[0].body, got[1].body, "the retry sends the same payload");
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    // The round that made the second delivery finishes a moment after the
    // receiver answered it: wait for its count.
    let (code, text) = loop {
        let (code, text) = served.get("/metrics")?;
        if metric(&text, "clancy_notifications_delivered_total") == Some(1.0)
            || started.elapsed() > Duration::from_secs(20)
        {
            break (code, text);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(code, 200);
    assert_eq!(
        metric(&text, "clancy_approvals_pending"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "clancy_notifications_delivered_total"),
        Some(1.0),
        "{text}"
    );
    assert!(
        metric(&text, "clancy_timer_rounds_total").is_some_and(|n| n >= 2.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "clancy_timer_failed_rounds_total"),
        Some(0.0),
        "{text}"
    );

    // A page elsewhere whose name resolves to 127.0.0.1 gets nothing.
    let misdirected = reqwest::blocking::Client::new()
        .get(format!("{}/metrics", served.url))
        .header("Host", "evil.example")
        .send()?;
    assert_eq!(misdirected.status().as_u16(), 421);

    // While it serves, the data dir is its own: commands go through it
    // (with a token: `cli_daemon` runs them), and say so without one.
    for args in [&["approvals", "list"][..], &["audit", "verify"]] {
        let busy = clancy(&data, args)?;
        assert_eq!(busy.status.code(), Some(2));
        assert!(
            stderr(&busy).contains("set CLANCY_TOKEN"),
            "{}",
            stderr(&busy)
        );
    }

    let (status, said) = served.terminate(Duration::from_secs(15))?;
    assert!(status.success(), "{status:?}");
    assert_eq!(said, "clancy stopped\n");
    // Stopped, it leaves the data dir to the next process, record intact.
    let list = clancy(&data, &["approvals", "list"])?;
    assert!(list.status.success(), "{}", stderr(&list));
    assert!(stdout(&list).contains("poster"), "{}", stdout(&list));
    let verify = clancy(&data, &["audit", "verify"])?;
    assert!(verify.status.success(), "{}", stdout(&verify));
    Ok(())
}

#[test]
fn the_daemon_refuses_a_clear_text_public_address_and_a_second_daemon() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let open = clancy(&data, &["serve", "--listen", "0.0.0.0:0"])?;
    assert_eq!(open.status.code(), Some(2));
    assert!(
        stderr(&open).contains("is not a loopback address")
            && stderr(&open).contains("--insecure-http"),
        "{}",
        stderr(&open)
    );
    let first = Served::start(&data, &[])?;
    let second = clancy(&data, &["serve", "--listen", "127.0.0.1:0"])?;
    assert_eq!(second.status.code(), Some(2));
    assert!(
        stderr(&second).contains("in use by another clancy process"),
        "{}",
        stderr(&second)
    );
    assert_eq!(first.get("/healthz")?.0, 200, "the first one serves on");
    let bad_tick = clancy(&data, &["serve", "--tick-secs", "0"])?;
    assert_eq!(bad_tick.status.code(), Some(2));
    Ok(())
}

#[test]
fn the_host_log_can_be_json_lines() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let manifest = dir.path().join("employee.toml");
    std::fs::write(
        &manifest,
        format!(
            "name = \"printer\"\ncomponent = {HOSTILE:?}\n{}",
            grants(&Receiver::start(vec![])?.url())
        ),
    )?;
    let out = crate::env::clancy_command(
        &data,
        &[
            "--log-format",
            "json",
            "run",
            &manifest.display().to_string(),
            "--task",
            "print hi",
        ],
    )
    .env("CLANCY_LOG", "info")
    .output()?;
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert!(
        lines.iter().any(|l| l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("hello from the guest: hi"))),
        "{lines:?}"
    );
    Ok(())
}

/// Run a CLI command that must succeed; its stdout.
fn ok(data: &Path, args: &[&str]) -> Result<String> {
    let o = clancy(data, args)?;
    anyhow::ensure!(o.status.success(), "{args:?}: {}{}", stdout(&o), stderr(&o));
    Ok(stdout(&o))
}

/// A data dir and the `poster` employee's manifest (a gated post to
/// #general) in `dir`.
fn poster() -> Result<(tempfile::TempDir, std::path::PathBuf)> {
    let (dir, data, _) = crate::env::employee_dir("poster", crate::env::GATED_GENERAL_POST)?;
    Ok((dir, data))
}

/// Run `poster` with `task` through the CLI; the id of the request it queued.
fn queue(dir: &tempfile::TempDir, data: &Path, task: &str) -> Result<String> {
    let manifest = dir.path().join("employee.toml").display().to_string();
    let run = ok(data, &["run", &manifest, "--task", task])?;
    Ok(run
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .find(|w| w.starts_with("ap-"))
        .with_context(|| format!("no request id in {run:?}"))?
        .to_string())
}

/// Register `name` as a manager (the org's first operator may add
/// themselves) and make them a manager's token; its secret.
fn manager_token(data: &Path, name: &str) -> Result<String> {
    ok(
        data,
        &["operators", "add", name, "--role", "manager", "--as", name],
    )?;
    token(
        data,
        &[
            "tokens", "create", "--for", name, "--role", "manager", "--as", name,
        ],
    )
}

/// The secret `tokens create` printed (its last line).
fn token(data: &Path, args: &[&str]) -> Result<String> {
    let out = ok(data, args)?;
    Ok(out.lines().last().unwrap_or_default().trim().to_string())
}

#[test]
fn operators_decide_through_the_api_with_a_token_and_nothing_else_gets_in() -> Result<()> {
    let (dir, data) = poster()?;
    let id = queue(&dir, &data, "post via the api")?;
    ok(
        &data,
        &[
            "operators",
            "add",
            "alice",
            "--role",
            "admin",
            "--as",
            "alice",
        ],
    )?;
    ok(
        &data,
        &[
            "operators",
            "add",
            "bob",
            "--role",
            "manager",
            "--as",
            "alice",
        ],
    )?;
    ok(
        &data,
        &["operators", "add", "uma", "--role", "user", "--as", "alice"],
    )?;
    let bob = token(
        &data,
        &[
            "tokens", "create", "--for", "bob", "--role", "manager", "--as", "alice",
        ],
    )?;
    let uma = token(
        &data,
        &[
            "tokens", "create", "--for", "uma", "--role", "user", "--as", "alice",
        ],
    )?;
    let revoked = token(
        &data,
        &[
            "tokens", "create", "--for", "bob", "--role", "manager", "--as", "bob",
        ],
    )?;
    let revoked_id = revoked
        .trim_start_matches("clancy_")
        .rsplit_once('_')
        .map(|(i, _)| i.to_string())
        .context("id")?;
    ok(&data, &["tokens", "revoke", &revoked_id, "--as", "bob"])?;
    // A user cannot mint a manager's token, nor one for someone else.
    let refused = clancy(
        &data,
        &[
            "tokens", "create", "--for", "uma", "--role", "manager", "--as", "uma",
        ],
    )?;
    assert_eq!(refused.status.code(), Some(2), "{}", stdout(&refused));
    let refused = clancy(
        &data,
        &[
            "tokens", "create", "--for", "bob", "--role", "user", "--as", "uma",
        ],
    )?;
    assert_eq!(refused.status.code(), Some(2), "{}", stdout(&refused));

    let served = Served::start(&data, &[])?;
    // A connection per request: the oversized body below makes the daemon
    // answer before it read the body and close the connection, which a
    // pooled client could otherwise try to reuse.
    let client = reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let list = format!("{}/api/v1/approvals", served.url);
    let approve = format!("{}/api/v1/approvals/{id}/approve", served.url);
    let problem = |r: reqwest::blocking::Response| -> Result<(u16, serde_json::Value)> {
        let status = r.status().as_u16();
        let kind = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        anyhow::ensure!(kind == "application/problem+json", "{status}: {kind}");
        Ok((status, serde_json::from_str(&r.text()?)?))
    };
    let json_body = |v: serde_json::Value| v.to_string();
    // Nobody, a forged token, a revoked one: 401, nothing listed.
    let (code, body) = problem(client.get(&list).send()?)?;
    assert_eq!(code, 401, "{body}");
    // Bob's secret with its last digit changed.
    let last = if bob.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}", &bob[..bob.len() - 1]);
    assert_ne!(forged, bob);
    for secret in [forged.as_str(), revoked.as_str(), "Basic x", "clancy_"] {
        let (code, body) = problem(client.get(&list).bearer_auth(secret).send()?)?;
        assert_eq!(code, 401, "{secret}: {body}");
    }
    // A user's token may not read the queue.
    let (code, _) = problem(client.get(&list).bearer_auth(&uma).send()?)?;
    assert_eq!(code, 403);
    // A manager's may.
    let listed: serde_json::Value =
        serde_json::from_str(&client.get(&list).bearer_auth(&bob).send()?.text()?)?;
    assert_eq!(listed["items"][0]["id"], id.as_str(), "{listed}");
    assert!(
        listed["items"][0]["preview"]
            .as_str()
            .is_some_and(|p| p.contains("via the api"))
    );

    // Bad bodies change nothing.
    let (code, _) = problem(
        client
            .post(&approve)
            .bearer_auth(&bob)
            .header("content-type", "application/json")
            .body(json_body(
                serde_json::json!({"comment": "ok", "as": "alice"}),
            ))
            .send()?,
    )?;
    assert_eq!(code, 422, "unknown fields are refused");
    let (code, _) = problem(
        client
            .post(&approve)
            .bearer_auth(&bob)
            .header("content-type", "text/plain")
            .body("comment=ok")
            .send()?,
    )?;
    assert_eq!(code, 415);
    let huge = client
        .post(&approve)
        .bearer_auth(&bob)
        .header("content-type", "application/json")
        .body(format!("{{\"comment\": \"{}\"}}", "x".repeat(65 * 1024)))
        .send()?;
    assert_eq!(huge.status().as_u16(), 413, "the body limit holds");
    let (code, _) = problem(
        client
            .post(format!("{}/api/v1/approvals/ap-nope/approve", served.url))
            .bearer_auth(&bob)
            .send()?,
    )?;
    assert_eq!(code, 404);
    // The user may not decide a request that waits for a manager.
    let (code, _) = problem(client.post(&approve).bearer_auth(&uma).send()?)?;
    assert_eq!(code, 403);

    // Bob approves; the host runs exactly that action, once.
    let decided: serde_json::Value = serde_json::from_str(
        &client
            .post(&approve)
            .bearer_auth(&bob)
            .header("content-type", "application/json")
            .body(json_body(serde_json::json!({"comment": "looks right"})))
            .send()?
            .text()?,
    )?;
    assert_eq!(decided["status"], "executed", "{decided}");
    assert_eq!(decided["decided_by"], "bob");
    let (code, _) = problem(client.post(&approve).bearer_auth(&bob).send()?)?;
    assert_eq!(code, 409, "decided once");

    // A manager starts a task for the registered employee; it runs its
    // pinned component under its grants (the post waits for approval).
    let tasks = format!("{}/api/v1/tasks", served.url);
    let start = |token: &str, body: serde_json::Value| {
        client
            .post(&tasks)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let queued = start(
        &bob,
        serde_json::json!({"employee": "poster", "task": "post from the api"}),
    )?;
    assert_eq!(queued.status(), 202);
    let queued: serde_json::Value = serde_json::from_str(&queued.text()?)?;
    let id = queued["id"].as_str().context("no task id")?.to_string();
    let started = Instant::now();
    let ran = loop {
        let seen: serde_json::Value = serde_json::from_str(
            &client
                .get(format!("{tasks}/{id}"))
                .bearer_auth(&bob)
                .send()?
                .text()?,
        )?;
        if seen["ended_at"].is_string() {
            break seen;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "{seen}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(ran["state"], "completed", "{ran}");
    assert!(
        ran["outcome"]
            .as_str()
            .is_some_and(|s| s.contains("queued for approval")),
        "{ran}"
    );
    for (token, body, code) in [
        (
            &uma,
            serde_json::json!({"employee": "poster", "task": "post x"}),
            403,
        ),
        (
            &bob,
            serde_json::json!({"employee": "nobody", "task": "post x"}),
            404,
        ),
        (
            &bob,
            serde_json::json!({"employee": "poster", "task": " "}),
            422,
        ),
        (
            &bob,
            serde_json::json!({"employee": "poster", "task": "x", "grants": []}),
            422,
        ),
    ] {
        let (got, body) = problem(start(token, body)?)?;
        assert_eq!(got, code, "{body}");
    }

    served.terminate(Duration::from_secs(15))?;
    let log = ok(&data, &["audit", "log", "--json"])?;
    assert!(log.contains("approved by bob: looks right"), "{log}");
    assert!(log.contains("queued, requested by bob"), "{log}");
    assert!(log.contains("tokens-create") && log.contains("tokens-revoke"));
    assert!(
        log.contains("refused: the token was revoked"),
        "the revoked token's use is on record"
    );
    for secret in [&bob, &uma, &revoked] {
        assert!(
            !log.contains(secret.as_str()),
            "a token secret reached the audit log"
        );
    }
    let listed = ok(&data, &["tokens", "list", "--json"])?;
    assert!(!listed.contains("hash") && !listed.contains(&bob));
    assert!(ok(&data, &["audit", "verify"])?.starts_with("audit log intact"));
    Ok(())
}

/// `clancy` with a token in the environment.
fn clancy_with_token(
    data: &Path,
    token: Option<&str>,
    args: &[&str],
) -> Result<std::process::Output> {
    let mut command = crate::env::clancy_command(data, args);
    if let Some(t) = token {
        command.env("CLANCY_TOKEN", t);
    }
    Ok(command.output()?)
}

/// While the daemon serves the data dir, `clancy approvals list|approve|deny`
/// go through its API with the operator's token instead of failing on the
/// lock; without a token, or with `--as`, they say why in one line.
#[test]
fn the_cli_decides_through_a_running_daemon_with_a_token() -> Result<()> {
    let (dir, data) = poster()?;
    let ids = [
        queue(&dir, &data, "post first")?,
        queue(&dir, &data, "post second")?,
    ];
    let question = queue(&dir, &data, "ask Refund twice?|yes|no")?;
    let mia = manager_token(&data, "mia")?;
    let served = Served::start(&data, &[])?;

    let without = clancy_with_token(&data, None, &["approvals", "list"])?;
    assert_eq!(without.status.code(), Some(2));
    assert!(
        stderr(&without).contains("set CLANCY_TOKEN"),
        "{}",
        stderr(&without)
    );
    let list = clancy_with_token(&data, Some(&mia), &["approvals", "list"])?;
    assert!(list.status.success(), "{}", stderr(&list));
    assert!(
        stdout(&list).contains(&ids[0]) && stdout(&list).contains(&ids[1]),
        "{}",
        stdout(&list)
    );
    let as_someone = clancy_with_token(
        &data,
        Some(&mia),
        &["approvals", "approve", &ids[0], "--as", "alice"],
    )?;
    assert_eq!(as_someone.status.code(), Some(2));
    assert!(stderr(&as_someone).contains("the token says who you are"));

    let approved = clancy_with_token(
        &data,
        Some(&mia),
        &["approvals", "approve", &ids[0], "--comment", "fine"],
    )?;
    assert!(
        approved.status.success(),
        "{}{}",
        stdout(&approved),
        stderr(&approved)
    );
    assert!(
        stdout(&approved).starts_with(&format!("{}: approved; ", ids[0])),
        "{}",
        stdout(&approved)
    );
    let denied = clancy_with_token(&data, Some(&mia), &["approvals", "deny", &ids[1]])?;
    assert_eq!(stdout(&denied).trim(), format!("{}: denied", ids[1]));
    let again = clancy_with_token(&data, Some(&mia), &["approvals", "deny", &ids[0]])?;
    assert_eq!(again.status.code(), Some(1));
    assert!(stdout(&again).contains("REFUSED"), "{}", stdout(&again));
    // A question is answered through the daemon with one of its options.
    let wrong = clancy_with_token(
        &data,
        Some(&mia),
        &["approvals", "answer", &question, "maybe"],
    )?;
    assert_eq!(wrong.status.code(), Some(2));
    assert!(
        stderr(&wrong).contains("is not one of the options"),
        "{}",
        stderr(&wrong)
    );
    let answered = clancy_with_token(&data, Some(&mia), &["approvals", "answer", &question, "no"])?;
    assert_eq!(
        stdout(&answered).trim(),
        format!("{question}: answered \"no\""),
        "{}",
        stderr(&answered)
    );
    let one: serde_json::Value = serde_json::from_str(
        &reqwest::blocking::Client::new()
            .get(format!("{}/api/v1/approvals/{question}", served.url))
            .bearer_auth(&mia)
            .send()?
            .text()?,
    )?;
    assert_eq!(
        (one["status"].as_str(), one["outcome"].as_str()),
        (Some("answered"), Some("no")),
        "{one}"
    );

    served.terminate(Duration::from_secs(15))?;
    // The daemon is gone: the CLI works on the data dir again, and the
    // record says who decided.
    assert!(!data.join("daemon.json").exists());
    let log = ok(&data, &["audit", "log"])?;
    assert!(
        log.contains("approved by mia: fine") && log.contains("denied by mia"),
        "{log}"
    );
    // Someone who can write the data dir points the CLI elsewhere to catch
    // its token: the CLI refuses to follow.
    std::fs::write(
        data.join("daemon.json"),
        r#"{"url": "http://10.0.0.1:7878"}"#,
    )?;
    let lured = clancy_with_token(&data, Some(&mia), &["approvals", "list"])?;
    assert_eq!(lured.status.code(), Some(2));
    assert!(
        stderr(&lured).contains("not a daemon on this machine"),
        "{}",
        stderr(&lured)
    );
    Ok(())
}

#[test]
fn scheduled_tasks_run_on_their_timer_and_bad_schedules_are_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let manifest = dir.path().join("employee.toml");
    let chat =
        "[[grant]]\nintegration = \"slack\"\nscope = \"channel:#general\"\nactions = [\"post\"]\n";
    let text = |schedule: &str| {
        format!(
            "name = \"ticker\"\ncomponent = {HOSTILE:?}\n{}\n[[schedule]]\n{schedule}\n",
            crate::env::with_hostile_imports(chat)
        )
    };
    for (bad, why) in [
        ("every = \"soon\"\ntask = \"post x\"", "is not a period"),
        ("every = \"0s\"\ntask = \"post x\"", "is not a period"),
        ("every = \"90d\"\ntask = \"post x\"", "is not a period"),
        ("every = \"1m\"\ntask = \"  \"", "needs text"),
        (
            "every = \"1m\"\ntask = \"post x\"\ncron = \"* * * * *\"",
            "exactly one of",
        ),
        ("task = \"post x\"", "exactly one of"),
        (
            "cron = \"61 * * * *\"\ntask = \"post x\"",
            "is not a cron expression",
        ),
        ("cron = \"* * *\"\ntask = \"post x\"", "has 3 fields"),
        ("cron = \"0 0 30 2 *\"\ntask = \"post x\"", "never runs"),
        ("cron = \"every monday\"\ntask = \"post x\"", "has 2 fields"),
    ] {
        std::fs::write(&manifest, text(bad))?;
        let o = clancy(&data, &["check", &manifest.display().to_string()])?;
        assert_eq!(o.status.code(), Some(2), "{bad}");
        assert!(
            stderr(&o).contains("employee.toml:") && stderr(&o).contains(why),
            "{bad}: {}",
            stderr(&o)
        );
    }
    std::fs::write(
        &manifest,
        text(
            "every = \"1s\"\ntask = \"post on the hour\"\n\n[[schedule]]\ncron = \"* * * * * *\"\ntask = \"post by cron\"",
        ),
    )?;
    // Loading registers the employee with its schedule (audited with the diff).
    ok(
        &data,
        &[
            "run",
            &manifest.display().to_string(),
            "--task",
            "print registered",
        ],
    )?;
    let log = ok(&data, &["audit", "log"])?;
    assert!(log.contains("schedule every 1s: post on the hour"), "{log}");
    assert!(
        log.contains("schedule cron \"* * * * * *\" (UTC): post by cron"),
        "{log}"
    );

    let served = Served::start(&data, &[])?;
    let started = Instant::now();
    loop {
        let (_, text) = served.get("/metrics")?;
        if metric(&text, "clancy_tasks_total{outcome=\"completed\"}").is_some_and(|n| n >= 8.0) {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(20),
            "no scheduled runs: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    served.terminate(Duration::from_secs(15))?;
    let entries: Vec<serde_json::Value> = ok(&data, &["audit", "log", "--json"])?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let runs: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| e["kind"] == "task-start" && e["args"] == "post on the hour")
        .collect();
    assert!(runs.len() >= 2, "{} scheduled runs", runs.len());
    assert!(
        entries
            .iter()
            .any(|e| e["kind"] == "task-start" && e["args"] == "post by cron"),
        "the cron schedule never ran"
    );
    for run in runs {
        let task = run["task"].as_str().unwrap_or_default();
        assert!(
            entries.iter().any(|e| e["kind"] == "task-end"
                && e["task"] == task
                && e["result"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("completed: posted"))),
            "scheduled task {task} did not complete"
        );
    }
    assert!(ok(&data, &["audit", "verify"])?.starts_with("audit log intact"));
    Ok(())
}

/// Killed with SIGKILL while an approved action runs through its API (after
/// the service took the post, before the result was recorded), the daemon
/// restarts, finishes the action without repeating it, and the record
/// verifies.
#[test]
fn a_daemon_killed_mid_approval_resumes_it_once_on_restart() -> Result<()> {
    let (dir, data) = poster()?;
    let id = queue(&dir, &data, "post exactly once")?;
    let mia = manager_token(&data, "mia")?;
    let log = dir.path().join("serve.err");
    let mut served = Served::start_with(&data, &[], Some("execute:after-provider"), Some(&log))?;
    let approve = format!("{}/api/v1/approvals/{id}/approve", served.url);
    let secret = mia.clone();
    // The approval hangs at the pause point; its answer never comes.
    let _pending = std::thread::spawn(move || {
        reqwest::blocking::Client::new()
            .post(approve)
            .bearer_auth(secret)
            .timeout(Duration::from_secs(60))
            .send()
            .map(|r| r.status())
    });
    let started = Instant::now();
    while !std::fs::read_to_string(&log)?.contains("paused at execute:after-provider") {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(20),
            "never reached the pause point"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    served.child.kill()?;
    served.child.wait()?;
    drop(served);

    // Restarted, it finishes what was approved before it serves.
    let again = Served::start(&data, &[])?;
    again.terminate(Duration::from_secs(15))?;
    let listed = ok(&data, &["approvals", "list", "--all", "--json"])?;
    let request: serde_json::Value = listed
        .lines()
        .map(serde_json::from_str::<serde_json::Value>)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .find(|a| a["id"] == id.as_str())
        .context("the request is gone")?;
    assert_eq!(request["status"], "executed", "{request}");
    let chat = ok(&data, &["sandbox", "show", "chat", "--json"])?;
    assert_eq!(chat.matches("exactly once").count(), 1, "{chat}");
    assert!(ok(&data, &["audit", "verify"])?.starts_with("audit log intact"));
    Ok(())
}

#[test]
fn a_daemon_killed_again_and_again_under_load_loses_no_approved_action_and_runs_none_twice()
-> Result<()> {
    let (dir, data) = poster()?;
    let texts: Vec<String> = (0..12).map(|i| format!("load-{i:02}")).collect();
    let ids: Vec<String> = texts
        .iter()
        .map(|t| queue(&dir, &data, &format!("post {t}")))
        .collect::<Result<_>>()?;
    let mia = manager_token(&data, "mia")?;
    let mut answered_ok = std::collections::HashSet::new();
    for round in 0..3u64 {
        let mut served = Served::start(&data, &[])?;
        // Three approvers at once, each through its share of the queue,
        // and a fourth asking for tasks, while the daemon is killed.
        let mut workers = Vec::new();
        for share in 0..3 {
            let mine: Vec<String> = ids.iter().skip(share).step_by(3).cloned().collect();
            let (url, token) = (served.url.clone(), mia.clone());
            workers.push(std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(20))
                    .build()
                    .expect("client");
                mine.into_iter()
                    .filter_map(|id| {
                        let r = client
                            .post(format!("{url}/api/v1/approvals/{id}/approve"))
                            .bearer_auth(&token)
                            .send()
                            .ok()?;
                        (r.status() == 200).then_some(id)
                    })
                    .collect::<Vec<String>>()
            }));
        }
        let (url, token) = (served.url.clone(), mia.clone());
        let load = std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            for _ in 0..20 {
                let _ = client
                    .get(format!("{url}/api/v1/approvals"))
                    .bearer_auth(&token)
                    .send();
            }
        });
        std::thread::sleep(Duration::from_millis(150 * (round + 1)));
        served.child.kill()?;
        served.child.wait()?;
        drop(served);
        for w in workers {
            answered_ok.extend(
                w.join()
                    .map_err(|_| anyhow::anyhow!("an approver panicked"))?,
            );
        }
        let _ = load.join();
        // After every restart the record verifies.
        let again = Served::start(&data, &[])?;
        again.terminate(Duration::from_secs(15))?;
        let verify = ok(&data, &["audit", "verify"])?;
        assert!(
            verify.starts_with("audit log intact"),
            "round {round}: {verify}"
        );
    }
    // Whatever is still pending is approved now; then every action ran once.
    let served = Served::start(&data, &[])?;
    let client = reqwest::blocking::Client::new();
    for id in &ids {
        client
            .post(format!("{}/api/v1/approvals/{id}/approve", served.url))
            .bearer_auth(&mia)
            .send()?;
    }
    served.terminate(Duration::from_secs(15))?;
    let listed: Vec<serde_json::Value> = ok(&data, &["approvals", "list", "--all", "--json"])?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    for id in &ids {
        let request = listed
            .iter()
            .find(|a| a["id"] == id.as_str())
            .context("a request is gone")?;
        assert_eq!(request["status"], "executed", "{request}");
    }
    assert!(
        !answered_ok.is_empty(),
        "no approval was answered before a kill"
    );
    let chat = ok(&data, &["sandbox", "show", "chat", "--json"])?;
    for text in &texts {
        assert_eq!(chat.matches(text.as_str()).count(), 1, "{text}: {chat}");
    }
    assert!(ok(&data, &["audit", "verify"])?.starts_with("audit log intact"));
    Ok(())
}

/// A client that sends a request's headers a byte at a time (slowloris)
/// holds its connection no longer than `--header-timeout`; many of them
/// hold up nobody else.
#[test]
fn a_client_that_never_finishes_its_headers_is_cut_off_and_others_are_served() -> Result<()> {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let served = Served::start(&data, &["--header-timeout", "1s"])?;
    let addr = served
        .url
        .strip_prefix("http://")
        .context("no address")?
        .to_string();
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = std::net::TcpStream::connect(&addr)?;
        s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Slow: a").as_bytes())?;
        slow.push(s);
    }
    // Meanwhile, others are answered.
    let (status, body) = served.get("/healthz")?;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let started = Instant::now();
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        // Trickle one more byte: it does not reset the deadline.
        let _ = s.write_all(b"b");
        let mut buf = [0u8; 256];
        let read = s.read(&mut buf);
        // Closed (EOF or reset), or told 408 and closed: never left open.
        match read {
            Ok(0) | Err(_) => {}
            Ok(n) => {
                let said = String::from_utf8_lossy(&buf[..n]).to_string();
                assert!(said.starts_with("HTTP/1.1 408"), "{said}");
            }
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "slow connections were held {:?}",
        started.elapsed()
    );
    let bad = clancy(&data, &["serve", "--header-timeout", "0s"])?;
    assert_eq!(bad.status.code(), Some(2));
    Ok(())
}
