//! Crash scenes: the real `clancy` binary killed with SIGKILL at every step
//! between queueing, approving, executing and recording an action, and the
//! invariant checked after a restart: every approved action ran exactly once
//! and no denied or expired one ever ran. Used by `crash_recovery` (a fast
//! pass over every step) and by the soak, `cargo bench -p clancy --bench
//! crash_soak` (hundreds of kills, at every step and at random moments).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

/// The points a child is killed at, in the order the action passes them.
pub const STEPS: &[&str] = &[
    "enqueue:after-store",
    "decide:before-transition",
    "decide:after-transition",
    "execute:after-intent",
    "execute:after-provider",
    "execute:after-result",
];

const MANIFEST: &str = r##"name = "crash-test"
component = "COMPONENT"

[[grant]]
integration = "slack"
scope = "channel:#general"
actions = ["post"]
approval = "required"
"##;

/// A data dir with the crash-test employee's manifest.
pub struct Scene {
    _dir: tempfile::TempDir,
    data: PathBuf,
    manifest: PathBuf,
}

impl Scene {
    /// A fresh data dir; `component` is the hostile test guest.
    pub fn new(component: &str) -> Result<Scene> {
        let dir = tempfile::tempdir()?;
        let manifest = dir.path().join("employee.toml");
        let text = MANIFEST.replace("COMPONENT", component) + clancy_guests::HOSTILE_IMPORT_GRANTS;
        std::fs::write(&manifest, text)?;
        let data = dir.path().join("data");
        let scene = Scene {
            _dir: dir,
            data,
            manifest,
        };
        // The org's approvers: only registered managers and admins decide.
        for name in ["mia", "ops"] {
            let (code, out) = scene.clancy(&["operators", "add", name, "--role", "manager"])?;
            anyhow::ensure!(code == Some(0), "could not add operator {name}: {out}");
        }
        Ok(scene)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_clancy"));
        c.arg("--data-dir")
            .arg(&self.data)
            .args(args)
            .env_remove("CLANCY_DATA_DIR")
            .env_remove("CLANCY_TEST_PAUSE_AT");
        c
    }

    /// The employee's manifest.
    pub fn manifest_path(&self) -> String {
        self.manifest.display().to_string()
    }

    /// The data dir.
    pub fn data(&self) -> &std::path::Path {
        &self.data
    }

    /// Run `clancy args…` to completion; its stdout.
    pub fn clancy(&self, args: &[&str]) -> Result<(Option<i32>, String)> {
        let o = self.command(args).output()?;
        Ok((
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).to_string(),
        ))
    }

    /// Start `clancy args…` that will stop at `step`; wait until it is there
    /// (or has exited without reaching it: `Ok(false)`), then SIGKILL it.
    pub fn kill_at(&self, step: &str, args: &[&str]) -> Result<bool> {
        Ok(self.while_paused_at(step, args, || Ok(()))?.is_some())
    }

    /// Start `clancy args…` paused at `step`, run `meanwhile` while it
    /// holds the data dir there, then SIGKILL it. `None` if it never got
    /// to `step`.
    pub fn while_paused_at<T>(
        &self,
        step: &str,
        args: &[&str],
        meanwhile: impl FnOnce() -> Result<T>,
    ) -> Result<Option<T>> {
        let mut child = self
            .command(args)
            .env("CLANCY_TEST_PAUSE_AT", step)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().context("no stderr")?;
        let mut reached = false;
        for line in BufReader::new(stderr).lines() {
            if line?.contains(&format!("paused at {step}")) {
                reached = true;
                break;
            }
        }
        let result = if reached { Some(meanwhile()) } else { None };
        sigkill(&mut child)?;
        result.transpose()
    }

    /// Start `clancy args…` and SIGKILL it after `delay` (the soak's random kills).
    #[allow(
        dead_code,
        reason = "used by the crash_soak bench, which shares this file"
    )]
    pub fn kill_after(&self, delay: std::time::Duration, args: &[&str]) -> Result<()> {
        let mut child = self
            .command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        std::thread::sleep(delay);
        sigkill(&mut child)
    }

    /// Queue one post (the employee asks; the policy gates it). Returns its text.
    pub fn queue(&self, text: &str) -> Result<()> {
        let manifest = self.manifest.display().to_string();
        let (code, out) = self.clancy(&["run", &manifest, "--task", &format!("post {text}")])?;
        if code != Some(0) || !out.contains("queued for approval") {
            bail!("not queued ({code:?}): {out}");
        }
        Ok(())
    }

    /// The run command that queues `text`, for killing.
    pub fn queue_args(&self, text: &str) -> Vec<String> {
        vec![
            "run".into(),
            self.manifest.display().to_string(),
            "--task".into(),
            format!("post {text}"),
        ]
    }

    /// Every request: (id, status, posted text).
    pub fn requests(&self) -> Result<Vec<(String, String, String)>> {
        let (_, out) = self.clancy(&["approvals", "list", "--all", "--json"])?;
        let mut all = Vec::new();
        for line in out.lines() {
            let v: serde_json::Value = serde_json::from_str(line)?;
            all.push((
                v["id"].as_str().unwrap_or("").to_string(),
                v["status"].as_str().unwrap_or("").to_string(),
                v["request"]["operation"]["text"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            ));
        }
        Ok(all)
    }

    /// How often `text` was posted to #general.
    pub fn posted(&self, text: &str) -> Result<usize> {
        let (_, out) = self.clancy(&["sandbox", "show", "chat", "--json"])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        Ok(v.to_string()
            .matches(&format!("\"text\":\"{text}\""))
            .count())
    }
}

fn sigkill(child: &mut Child) -> Result<()> {
    // `Child::kill` sends SIGKILL on Unix: no destructor, flush or handler runs.
    let _ = child.kill();
    child.wait()?;
    Ok(())
}

/// The invariant after any crash and a restart: every executed request's
/// text was posted exactly once; denied, expired and pending ones never.
pub fn check_invariant(scene: &Scene) -> Result<()> {
    for (id, status, text) in scene.requests()? {
        let n = scene.posted(&text)?;
        let expected = usize::from(status == "executed");
        if status == "approved" {
            bail!("{id} is still approved after a restart: it was not resumed");
        }
        if n != expected {
            bail!("{id} ({status}) was posted {n} times");
        }
    }
    Ok(())
}

/// Kill a child at `step` on the way from queueing to recording; restart;
/// check the action ran exactly once (approved) or never (denied).
pub fn crash_at(component: &str, step: &str, deny: bool) -> Result<()> {
    let scene = Scene::new(component)?;
    let text = format!("crash-{}-{}", step.replace(':', "-"), u8::from(deny));
    let reached = if step.starts_with("enqueue") {
        let args = scene.queue_args(&text);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        scene.kill_at(step, &args)?
    } else {
        scene.queue(&text)?;
        let id = scene.requests()?[0].0.clone();
        let verdict = if deny { "deny" } else { "approve" };
        scene.kill_at(step, &["approvals", verdict, &id, "--as", "ops"])?
    };
    if !reached {
        bail!("the child never reached {step}");
    }
    // Restart: any approvals command resumes what was approved.
    let requests = scene.requests()?;
    if requests.len() != 1 {
        bail!("expected one request after the crash, found {requests:?}");
    }
    let (id, status, _) = &requests[0];
    check_invariant(&scene)?;
    if status == "pending" {
        // Killed before the decision was stored: deciding again works, once.
        let verdict = if deny { "deny" } else { "approve" };
        scene.clancy(&["approvals", verdict, id, "--as", "ops"])?;
    }
    // A second decision is refused whatever happened.
    let (code, _) = scene.clancy(&["approvals", "approve", id, "--as", "ops"])?;
    if code != Some(1) {
        bail!("a second decision on {id} was not refused (exit {code:?})");
    }
    check_invariant(&scene)?;
    let (_, status, _) = &scene.requests()?[0];
    let want = if deny { "denied" } else { "executed" };
    if status != want {
        bail!("{id} ended {status}, expected {want}");
    }
    Ok(())
}
