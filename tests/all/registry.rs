//! What an employee is: registered on load, its component pinned by hash,
//! every change audited with a diff, and a refused load changing nothing.

use std::path::Path;

use anyhow::Result;
use clancy::audit::Kind;
use clancy_guests::{HOSTILE, PLAIN_WORLD, USES_FILESYSTEM};

use crate::env::{TestEnv, clancy, stderr, stdout, with_hostile_imports};

use crate::env::GATED_GENERAL_POST as GATED;

/// A working dir with `employee.toml` naming `./guest.wasm`, a copy of `component`.
fn workdir(root: &Path, name: &str, component: &str) -> Result<std::path::PathBuf> {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(component, dir.join("guest.wasm"))?;
    std::fs::write(
        dir.join("employee.toml"),
        format!(
            "name = \"pinned\"\ncomponent = \"guest.wasm\"\n{}",
            with_hostile_imports(GATED)
        ),
    )?;
    Ok(dir)
}

fn run_in(dir: &Path, data: &Path, args: &[&str]) -> Result<std::process::Output> {
    Ok(std::process::Command::new(env!("CARGO_BIN_EXE_clancy"))
        .current_dir(dir)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("CLANCY_DATA_DIR")
        .output()?)
}

fn pending_id(data: &Path) -> Result<String> {
    let list = stdout(&clancy(data, &["approvals", "list", "--json"])?);
    let first: serde_json::Value = serde_json::from_str(
        list.lines()
            .next()
            .ok_or_else(|| anyhow::anyhow!("nothing pending"))?,
    )?;
    Ok(first["id"].as_str().unwrap_or_default().to_string())
}

#[test]
fn an_approval_from_another_directory_runs_the_pinned_component() -> Result<()> {
    let root = tempfile::tempdir()?;
    let data = root.path().join("data");
    clancy(&data, &["operators", "add", "mia", "--role", "manager"])?;
    let a = workdir(root.path(), "a", HOSTILE)?;
    let queued = run_in(
        &a,
        &data,
        &["run", "employee.toml", "--task", "post pinned hello"],
    )?;
    assert!(
        stdout(&queued).contains("queued for approval"),
        "{}",
        stdout(&queued)
    );
    let id = pending_id(&data)?;
    // Someone swaps the file at the manifest's path, and another directory
    // has its own guest.wasm too; neither is what was registered.
    std::fs::copy(PLAIN_WORLD, a.join("guest.wasm"))?;
    let b = workdir(root.path(), "b", PLAIN_WORLD)?;
    let approved = run_in(&b, &data, &["approvals", "approve", &id, "--as", "mia"])?;
    assert_eq!(approved.status.code(), Some(0), "{}", stderr(&approved));
    // The hostile guest (the pinned copy) heard the decision: the plain-world
    // component exports no on-decision and could not have written this note.
    let log = stdout(&clancy(&data, &["audit", "log", "--json"])?);
    assert!(
        log.contains(&format!("heard: {id} executed")),
        "the pinned component did not run on-decision:\n{log}"
    );
    Ok(())
}

#[test]
fn a_missing_or_swapped_pinned_component_refuses_decisions_with_exit_2_and_changes_nothing()
-> Result<()> {
    let root = tempfile::tempdir()?;
    let data = root.path().join("data");
    clancy(&data, &["operators", "add", "mia", "--role", "manager"])?;
    let a = workdir(root.path(), "a", HOSTILE)?;
    run_in(&a, &data, &["run", "employee.toml", "--task", "post never"])?;
    let id = pending_id(&data)?;
    let decide = |why: &str| -> Result<()> {
        for args in [
            vec!["approvals", "approve", id.as_str(), "--as", "mia"],
            vec!["approvals", "deny", id.as_str(), "--as", "mia"],
            vec!["approvals", "answer", id.as_str(), "yes", "--as", "mia"],
        ] {
            let o = clancy(&data, &args)?;
            assert_eq!(o.status.code(), Some(2), "{args:?}");
            let err = stderr(&o);
            assert!(
                err.contains("the pinned component of pinned") && err.contains(why),
                "{err}"
            );
        }
        Ok(())
    };
    // Swapped for other bytes under the same name: refused, nothing runs.
    let pinned = std::fs::read_dir(data.join("components/default"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("nothing pinned"))??
        .path();
    std::fs::copy(PLAIN_WORLD, &pinned)?;
    decide("no longer matches its hash")?;
    // Gone altogether: refused the same way.
    std::fs::remove_dir_all(data.join("components"))?;
    decide("cannot be read")?;
    assert_eq!(pending_id(&data)?, id);
    let chat = stdout(&clancy(&data, &["sandbox", "show", "chat", "--json"])?);
    assert!(!chat.contains("never"));
    Ok(())
}

#[test]
fn a_refused_load_leaves_the_stored_employee_unchanged() -> Result<()> {
    let env = TestEnv::new()?;
    let good = TestEnv::manifest(HOSTILE, &with_hostile_imports(GATED))?;
    env.host.load(good)?;
    let before = env.host.stored_manifest("test-employee")?;
    let changes_before = count(&env, Kind::Change)?;
    // Imports beyond the grants: refused.
    let refused = env
        .host
        .load(TestEnv::manifest(USES_FILESYSTEM, GATED)?)
        .err()
        .ok_or_else(|| anyhow::anyhow!("the filesystem guest loaded"))?;
    assert!(refused.to_string().contains("refused"), "{refused}");
    // Not a component at all: refused.
    let junk = tempfile::NamedTempFile::new()?;
    std::fs::write(junk.path(), b"not wasm")?;
    assert!(
        env.host
            .load(TestEnv::manifest(
                &junk.path().to_string_lossy(),
                &with_hostile_imports(GATED)
            )?)
            .is_err()
    );
    assert_eq!(env.host.stored_manifest("test-employee")?, before);
    assert_eq!(count(&env, Kind::Change)?, changes_before);
    Ok(())
}

fn count(env: &TestEnv, kind: Kind) -> Result<usize> {
    Ok(env.audit()?.iter().filter(|e| e.kind == kind).count())
}

#[test]
fn every_change_of_an_employee_is_audited_with_its_diff() -> Result<()> {
    let env = TestEnv::new()?;
    env.host
        .load(TestEnv::manifest(HOSTILE, &with_hostile_imports(GATED))?)?;
    // Loading it again unchanged records nothing new.
    env.host
        .load(TestEnv::manifest(HOSTILE, &with_hostile_imports(GATED))?)?;
    assert_eq!(count(&env, Kind::Change)?, 1);
    let changed = GATED.replace(
        "approval = \"required\"",
        "approval = \"none\"\ncalls_per_minute = 5",
    ) + r##"
[[grant]]
integration = "slack"
scope = "channel:#random"
actions = ["read"]

[limits]
memory_mb = 32
"##;
    // Another component (the plain-world guest) with other grants and limits.
    env.host.load(TestEnv::manifest(
        PLAIN_WORLD,
        &with_hostile_imports(&changed),
    )?)?;
    let changes: Vec<_> = env
        .audit()?
        .into_iter()
        .filter(|e| e.kind == Kind::Change)
        .collect();
    assert_eq!(changes.len(), 2);
    let diff = &changes[1].record.args;
    for line in [
        "~ component sha256:",
        "~ grant slack channel:#general: approval required when always -> none; now grant slack channel:#general [post] approval none, 5 calls/min",
        "+ grant slack channel:#random [read] approval none",
        "~ limits memory 64 MiB",
    ] {
        assert!(diff.contains(line), "missing {line:?} in:\n{diff}");
    }
    assert!(
        changes[0]
            .record
            .args
            .starts_with("registered: component sha256:")
    );
    // The audit log shows it to a human.
    let rendered = changes[1].render();
    assert!(rendered.contains("changed (") && rendered.contains("+ grant slack channel:#random"));
    Ok(())
}
