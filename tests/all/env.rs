//! `TestEnv`: a temporary data dir with a host, plus helpers.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use std::sync::Arc;

use anyhow::Result;
use chrono::Utc;
use clancy::approvals::ManualClock;
use clancy::audit::{Entry, Kind};
use clancy::manifest::Manifest;
use clancy::operators::{Operator, Role};
use clancy::org::{DataDirMode, Org};
use clancy::runtime::{TaskEnd, TaskResult};

/// The real `clancy` binary on `data`, with none of the caller's Clancy
/// settings (data dir, daemon, token) leaking in.
pub fn clancy_command(data: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_clancy"));
    command
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("CLANCY_DATA_DIR")
        .env_remove("CLANCY_SERVER")
        .env_remove("CLANCY_TOKEN")
        .env_remove("CLANCY_TEST_PAUSE_AT");
    command
}

/// Run the real `clancy` binary on `data`.
pub fn clancy(data: &Path, args: &[&str]) -> Result<Output> {
    Ok(clancy_command(data, args).output()?)
}

/// A command's standard output.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// A command's standard error.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The managers every `TestEnv` org has.
pub const APPROVERS: [&str; 3] = ["alice", "bob", "mia"];

/// A temporary data dir with a seeded sandbox and a host for one org.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub host: Org,
}

impl TestEnv {
    /// A fresh org with a seeded sandbox and its approvers: `alice`,
    /// `bob` and `mia`, managers (only registered managers and admins
    /// decide requests without an escalation ladder).
    pub fn new() -> Result<TestEnv> {
        let dir = tempfile::tempdir()?;
        let host = Org::open(&dir.path().join("data"), "default", DataDirMode::Create)?;
        TestEnv::prepare(&host)?;
        Ok(TestEnv { dir, host })
    }

    /// Seed `host`'s sandbox and register its approvers.
    pub fn prepare(host: &Org) -> Result<()> {
        host.sandbox().seed()?;
        for name in APPROVERS {
            host.operators().put(&Operator {
                name: name.to_string(),
                role: Role::Manager,
            })?;
        }
        Ok(())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A manifest named `test-employee` for `component` with the grants in `body`.
    pub fn manifest(component: &str, body: &str) -> Result<Manifest> {
        let text = format!("name = \"test-employee\"\ncomponent = {component:?}\n{body}");
        Ok(Manifest::parse(&text, "test.toml", Path::new("/"))?)
    }

    /// Load `component` with the grants in `body` and run one task.
    pub fn run(&self, component: &str, body: &str, task: &str) -> Result<TaskResult> {
        let employee = self.host.load(TestEnv::manifest(component, body)?)?;
        Ok(employee.run(task)?)
    }

    /// A plugin's own manifest, pointed at the component built for the tests.
    pub fn plugin_manifest(plugin: &str, component: &str) -> Result<Manifest> {
        let mut m = Manifest::load(
            &workspace_root()
                .join("plugins")
                .join(plugin)
                .join("employee.toml"),
        )?;
        m.component = PathBuf::from(component);
        Ok(m)
    }

    /// All audit entries.
    pub fn audit(&self) -> Result<Vec<Entry>> {
        Ok(self.host.audit().entries()?)
    }

    /// Audit entries of one task and kind.
    pub fn audit_of(&self, task: &str, kind: Kind) -> Result<Vec<Entry>> {
        Ok(self
            .audit()?
            .into_iter()
            .filter(|e| e.record.task == task && e.kind == kind)
            .collect())
    }

    /// Messages in a sandbox channel.
    pub fn channel(&self, name: &str) -> Result<Vec<String>> {
        let all = self.host.sandbox().all_chat()?;
        Ok(all
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, m)| m.into_iter().map(|m| m.text).collect())
            .unwrap_or_default())
    }
}

/// A test env whose host runs on a manual clock (for expiry, escalation,
/// backoff and widenings).
pub fn clocked_env() -> Result<(TestEnv, Arc<ManualClock>)> {
    let mut env = TestEnv::new()?;
    let clock = Arc::new(ManualClock::new(Utc::now()));
    env.host.use_clock(clock.clone());
    Ok((env, clock))
}

/// The approval id in a summary `"<what>: queued for approval (<id>)"`.
pub fn queued_id(summary: &str, what: &str) -> Result<String> {
    summary
        .strip_prefix(&format!("{what}: queued for approval ("))
        .and_then(|s| s.strip_suffix(')'))
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("not queued: {summary}"))
}

/// `chat_grant` plus the other grants the hostile guest imports (it reads
/// mail and writes files), so it loads.
pub fn with_hostile_imports(chat_grant: &str) -> String {
    format!("{chat_grant}{}", clancy_guests::HOSTILE_IMPORT_GRANTS)
}

/// The summary of a completed task, or an error saying how it ended.
pub fn completed(result: &TaskResult) -> Result<&str> {
    match &result.end {
        TaskEnd::Completed { summary } => Ok(summary),
        other => anyhow::bail!("task did not complete: {other:?}"),
    }
}

/// The reason of a trapped task, or an error.
pub fn trapped(result: &TaskResult) -> Result<&str> {
    match &result.end {
        TaskEnd::Trapped { reason } => Ok(reason),
        other => anyhow::bail!("task did not trap: {other:?}"),
    }
}

/// The hostile guest's grants with mail on label:support (read and send,
/// plus the `extra` lines for that grant).
pub fn hostile_mail_grants(extra: &str) -> String {
    format!(
        r##"
[[grant]]
integration = "slack"
scope = "channel:#general"
actions = ["post"]

[[grant]]
integration = "gmail"
scope = "label:support"
actions = ["read", "send"]
{extra}

[[grant]]
integration = "files"
scope = "folder:out"
actions = ["write"]
"##
    )
}

/// A grant to post to #general, every post waiting for a human.
pub const GATED_GENERAL_POST: &str = r##"
[[grant]]
integration = "slack"
scope = "channel:#general"
actions = ["post"]
approval = "required"
"##;

/// Grants for the hostile guest: post to #general, read the support label, one folder.
pub const HOSTILE_GRANTS: &str = r##"
[[grant]]
integration = "slack"
scope = "channel:#general"
actions = ["post"]

[[grant]]
integration = "gmail"
scope = "label:support"
actions = ["read"]

[[grant]]
integration = "files"
scope = "folder:out"
actions = ["read", "write", "list"]

[limits]
time_ms = 1000
memory_mb = 32
"##;

/// A temporary dir holding `employee.toml` for the hostile guest named
/// `name` with `grants` (plus the others it imports), and the path of a
/// data dir beside it (not made yet): the dir, the data dir, the manifest.
pub fn employee_dir(name: &str, grants: &str) -> Result<(tempfile::TempDir, PathBuf, String)> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let manifest = dir.path().join("employee.toml");
    std::fs::write(
        &manifest,
        format!(
            "name = {name:?}\ncomponent = {:?}\n{}",
            clancy_guests::HOSTILE,
            with_hostile_imports(grants)
        ),
    )?;
    let manifest = manifest.display().to_string();
    Ok((dir, data, manifest))
}

/// Every byte of every file under `dir`.
pub fn walk(dir: &Path) -> Result<Vec<u8>> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            all.extend(walk(&path)?);
        } else {
            all.extend(std::fs::read(&path)?);
        }
    }
    Ok(all)
}
