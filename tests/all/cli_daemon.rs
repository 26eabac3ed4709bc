//! The CLI while `clancy serve` owns the data dir: every command that reads
//! or changes the org's records goes through the daemon's API with the
//! token in `CLANCY_TOKEN` (never failing on the store's lock), `--as` is
//! refused there (the token says who acts), and what it did is on record
//! under the token's operator once the daemon has stopped.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::daemon::Served;
use crate::env::{clancy, clancy_command, stderr, stdout};

/// `clancy` as the holder of `token`; its exit code, stdout and stderr.
fn as_token(data: &Path, token: &str, args: &[&str]) -> Result<(Option<i32>, String, String)> {
    let o = clancy_command(data, args)
        .env("CLANCY_TOKEN", token)
        .output()?;
    Ok((o.status.code(), stdout(&o), stderr(&o)))
}

/// Like [`as_token`], but the command must succeed; its stdout.
fn must(data: &Path, token: &str, args: &[&str]) -> Result<String> {
    let (code, out, err) = as_token(data, token, args)?;
    anyhow::ensure!(code == Some(0), "{args:?} exited {code:?}: {out}{err}");
    Ok(out)
}

/// The first word of `text` that starts with `prefix`.
fn word(text: &str, prefix: &str) -> Result<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .find(|w| w.starts_with(prefix))
        .map(str::to_string)
        .with_context(|| format!("no {prefix}… in {text:?}"))
}

const POSTER: &str = r##"
[[grant]]
integration = "slack"
scope = "channel:#general"
actions = ["post"]
"##;

#[test]
fn every_cli_command_goes_through_a_running_daemon_as_the_tokens_operator() -> Result<()> {
    let (dir, data, manifest) = crate::env::employee_dir("poster", POSTER)?;
    let offline = |args: &[&str]| -> Result<String> {
        let o = clancy(&data, args)?;
        anyhow::ensure!(o.status.success(), "{args:?}: {}{}", stdout(&o), stderr(&o));
        Ok(stdout(&o))
    };
    offline(&["operators", "add", "ada", "--role", "admin", "--as", "ada"])?;
    let ada = offline(&[
        "tokens", "create", "--for", "ada", "--role", "admin", "--as", "ada",
    ])?
    .lines()
    .last()
    .unwrap_or_default()
    .trim()
    .to_string();
    let served = Served::start(&data, &[])?;

    // Checking an employee needs no records: it works beside the daemon.
    let checked = clancy(&data, &["check", &manifest])?;
    assert!(checked.status.success(), "{}", stderr(&checked));

    // A new employee waits for an admin in the approvals queue, with its diff.
    let added = must(&data, &ada, &["employees", "add", &manifest])?;
    assert!(added.contains("waits for an admin"), "{added}");
    assert!(added.contains("+ grant slack channel:#general"), "{added}");
    let upgrade = word(&added, "up-")?;
    let queue = must(&data, &ada, &["approvals", "list"])?;
    assert!(
        queue.contains(&upgrade) && queue.contains("poster"),
        "{queue}"
    );
    // Submitted again while it waits: the same request, not a second one.
    let again = must(&data, &ada, &["employees", "add", &manifest])?;
    assert_eq!(word(&again, "up-")?, upgrade, "{again}");
    let approved = must(&data, &ada, &["approvals", "approve", &upgrade])?;
    assert!(approved.contains("approved"), "{approved}");
    assert!(must(&data, &ada, &["employees", "list"])?.contains("poster"));
    let twice = as_token(&data, &ada, &["employees", "add", &manifest])?;
    assert_eq!(twice.0, Some(2), "{twice:?}");
    assert!(twice.2.contains("already registered"), "{twice:?}");
    assert!(must(&data, &ada, &["approvals", "list"])?.contains("no pending requests"));
    // The same version again changes nothing.
    let same = must(&data, &ada, &["employees", "upgrade", &manifest])?;
    assert!(same.contains("nothing changes"), "{same}");

    // A task queued and followed to its end, entries as they were written.
    let started = must(
        &data,
        &ada,
        &["tasks", "start", "poster", "--task", "post hello", "--wait"],
    )?;
    assert!(started.contains("completed:"), "{started}");
    assert!(started.contains("#general"), "{started}");
    // "<id> queued for poster"
    let task = started
        .split_whitespace()
        .next()
        .context("no task id")?
        .to_string();
    // `clancy run` through the daemon: submitted (unchanged), queued, followed.
    let ran = must(&data, &ada, &["run", &manifest, "--task", "post again"])?;
    assert!(ran.contains("completed:"), "{ran}");
    assert!(must(&data, &ada, &["tasks", "list"])?.contains(&task));
    assert!(must(&data, &ada, &["tasks", "show", &task])?.contains("completed"));

    // The record, through the daemon.
    let log = must(&data, &ada, &["audit", "log", "--task", &task[..8]])?;
    assert!(log.contains("post") && !log.contains("post again"), "{log}");
    assert!(!must(&data, &ada, &["audit", "explain", &task])?.is_empty());
    let verified = must(&data, &ada, &["audit", "verify"])?;
    assert!(verified.starts_with("audit log intact"), "{verified}");
    let key = must(&data, &ada, &["audit", "key"])?.trim().to_string();
    assert_eq!(key.len(), 64, "{key}");
    let export = dir.path().join("export.jsonl");
    must(
        &data,
        &ada,
        &["audit", "export", "-o", &export.display().to_string()],
    )?;
    let elsewhere = clancy(
        &dir.path().join("nowhere"),
        &[
            "audit",
            "verify",
            "--export",
            &export.display().to_string(),
            "--public-key",
            &key,
        ],
    )?;
    assert!(
        stdout(&elsewhere).starts_with("audit log intact"),
        "{}{}",
        stdout(&elsewhere),
        stderr(&elsewhere)
    );
    let undone = must(&data, &ada, &["undo", "--task", &task])?;
    assert!(undone.contains("undone"), "{undone}");

    // People and tokens.
    let added = must(&data, &ada, &["operators", "add", "bo", "--role", "user"])?;
    assert!(added.contains("enr_"), "{added}");
    must(
        &data,
        &ada,
        &["operators", "assign", "bo", "--employee", "poster"],
    )?;
    assert!(must(&data, &ada, &["operators", "list"])?.contains("bo (user)"));
    let made = must(
        &data,
        &ada,
        &[
            "tokens", "create", "--for", "bo", "--role", "user", "--days", "1",
        ],
    )?;
    let bo = made.lines().last().unwrap_or_default().trim().to_string();
    let bo_token_id = word(&made, "tk-")?;
    // Bo follows a task of the employee he is assigned; Cy, assigned
    // nothing, finds no such task.
    let watched = must(&data, &bo, &["tasks", "watch", &task])?;
    assert!(watched.contains("completed"), "{watched}");
    must(&data, &ada, &["operators", "add", "cy", "--role", "user"])?;
    let cy = must(
        &data,
        &ada,
        &[
            "tokens", "create", "--for", "cy", "--role", "user", "--days", "1",
        ],
    )?
    .lines()
    .last()
    .unwrap_or_default()
    .trim()
    .to_string();
    let hidden = as_token(&data, &cy, &["tasks", "watch", &task])?;
    assert_eq!(hidden.0, Some(2), "{hidden:?}");
    assert!(hidden.2.contains("404"), "{hidden:?}");
    // A user cannot read the audit log through the daemon either.
    let refused = as_token(&data, &bo, &["audit", "log"])?;
    assert_eq!(refused.0, Some(2), "{refused:?}");
    assert!(refused.2.contains("403"), "{refused:?}");
    assert!(must(&data, &ada, &["tokens", "list"])?.contains(&bo_token_id));
    must(&data, &ada, &["tokens", "revoke", &bo_token_id])?;
    let revoked = as_token(&data, &bo, &["tasks", "list"])?;
    assert!(revoked.2.contains("401"), "{revoked:?}");

    // The sandbox workspace: mail from outside, and what is in it.
    must(
        &data,
        &ada,
        &[
            "sandbox",
            "receive",
            "--label",
            "support",
            "--from",
            "pat@customer.example",
            "--subject",
            "Through the daemon",
            "--body",
            "It broke",
        ],
    )?;
    let mail = must(&data, &ada, &["sandbox", "show", "mail"])?;
    assert!(mail.contains("Through the daemon"), "{mail}");
    let seeded = as_token(&data, &ada, &["sandbox", "seed"])?;
    assert_eq!(seeded.0, Some(2), "{seeded:?}");
    assert!(seeded.2.contains("already has data"), "{seeded:?}");

    // The organisation: which one the token is in, and all of it. Naming
    // another with `--org` does nothing rather than act on the token's.
    assert_eq!(must(&data, &ada, &["orgs", "list"])?.trim(), "default");
    let elsewhere = as_token(&data, &ada, &["--org", "acme", "tasks", "list"])?;
    assert_eq!(elsewhere.0, Some(2), "{elsewhere:?}");
    assert!(
        elsewhere.2.contains("another organisation"),
        "{elsewhere:?}"
    );
    must(&data, &ada, &["--org", "default", "tasks", "list"])?;
    let whole = dir.path().join("org.json");
    must(
        &data,
        &ada,
        &["orgs", "export", "-o", &whole.display().to_string()],
    )?;
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&whole)?)?;
    assert_eq!(doc["organisation"], "default");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&whole)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the export is readable by others: {mode:o}");
    }
    assert!(doc.to_string().contains(&task));
    let busy = as_token(
        &data,
        &ada,
        &["orgs", "delete", "default", "--confirm", "default"],
    )?;
    assert_eq!(busy.0, Some(2), "{busy:?}");
    assert!(busy.2.contains("stop it"), "{busy:?}");

    // Notifications.
    assert!(must(&data, &ada, &["notify", "secret"])?.starts_with("whsec_"));
    must(&data, &ada, &["notify", "list"])?;
    must(&data, &ada, &["notify", "deliver"])?;

    // Disabled: no task starts; `--as` is refused, the token says who acts.
    let as_other = as_token(
        &data,
        &ada,
        &["employees", "disable", "poster", "--as", "x"],
    )?;
    assert_eq!(as_other.0, Some(2));
    assert!(
        as_other.2.contains("the token says who you are"),
        "{as_other:?}"
    );
    must(&data, &ada, &["employees", "disable", "poster"])?;
    let stopped = as_token(
        &data,
        &ada,
        &["tasks", "start", "poster", "--task", "post x"],
    )?;
    assert_eq!(stopped.0, Some(2), "{stopped:?}");
    assert!(stopped.2.contains("disabled"), "{stopped:?}");
    must(&data, &ada, &["employees", "enable", "poster"])?;

    // A call the host refuses (a post without a reason).
    as_token(
        &data,
        &ada,
        &[
            "tasks",
            "start",
            "poster",
            "--task",
            "post-without-reason hi",
            "--wait",
        ],
    )?;
    // What it did shows in its metrics: calls, refusals, tasks and their
    // durations, requests and theirs.
    let metrics = reqwest::blocking::get(format!("{}/metrics", served.url))?.text()?;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(-1.0)
    };
    assert!(value("clancy_calls_total") >= 2.0, "{metrics}");
    assert!(value("clancy_refusals_total") >= 1.0, "{metrics}");
    assert!(
        value("clancy_task_duration_seconds_count") >= 2.0,
        "{metrics}"
    );
    assert!(
        value("clancy_api_request_duration_seconds_count") >= 10.0,
        "{metrics}"
    );
    assert!(metrics.contains("clancy_task_duration_seconds_bucket{le=\"+Inf\"}"));
    assert_eq!(value("clancy_organisations"), 1.0, "{metrics}");

    served.terminate(Duration::from_secs(15))?;
    // On record, under the token's operator.
    let log = offline(&["audit", "log"])?;
    for said in [
        "the audit log was exported by ada",
        "approved by ada",
        "poster disabled by ada",
        "the webhook signing secret was shown to ada",
        "ada delivered a mail into the sandbox workspace",
        "the organisation's data was exported by ada",
    ] {
        assert!(log.contains(said), "{said:?} not in\n{log}");
    }
    Ok(())
}

/// A daemon's export that breaks off midway (its export failed, or the
/// connection dropped) makes the CLI fail with one clear sentence and
/// leaves no file behind, not even a partial one: an export file appears
/// whole or not at all. The stand-in daemon answers 200 with a chunked body
/// and hangs up before its last chunk.
#[test]
fn an_export_broken_off_midway_fails_and_leaves_no_file() -> Result<()> {
    use std::io::{Read as _, Write as _};
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}", listener.local_addr()?);
    let server = std::thread::spawn(move || -> Result<()> {
        for _ in 0..2 {
            let (mut conn, _) = listener.accept()?;
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte)? == 1 {
                head.push(byte[0]);
            }
            conn.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
            )?;
            let part = "{\n  \"organisation\": \"default\",\n  \"audit\": [\n    {\"seq\": 1}";
            write!(conn, "{:x}\r\n{part}\r\n", part.len())?;
            conn.flush()?;
            // Gone before the last chunk.
        }
        Ok(())
    });
    for (command, file) in [("orgs", "org.json"), ("audit", "log.jsonl")] {
        let target = dir.path().join(file);
        let target_arg = target.display().to_string();
        let (code, out, err) = as_token(
            &data,
            "any-token",
            &["--server", &url, command, "export", "-o", &target_arg],
        )?;
        assert_eq!(code, Some(2), "{command}: {out}{err}");
        assert!(err.contains("broke off"), "{command}: {err}");
        assert!(!target.exists(), "{command}: a partial export was left");
        let left: Vec<_> = std::fs::read_dir(dir.path())?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(left.is_empty(), "{command}: {left:?}");
    }
    server
        .join()
        .map_err(|_| anyhow::anyhow!("the stand-in panicked"))??;
    Ok(())
}
