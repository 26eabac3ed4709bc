//! A guest that tries to fill the disk through its granted folder: the
//! folder quota stops it first; and where the disk fills anyway, the store
//! survives (the writes fail, nothing half-done is left, and the store opens
//! and serves again once space is back). Run on a small tmpfs the test
//! mounts, so the real disk is never filled; skipped, saying so, where the
//! test may not mount one.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;
use clancy::operators::{Operator, Role};
use clancy::org::{DataDirMode, Org};
use clancy_guests::HOSTILE;

use crate::env::{TestEnv, completed};

/// A tmpfs of `mb` MiB mounted for the test's life.
struct Tmpfs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Tmpfs {
    fn mount(mb: u32) -> Result<Option<Tmpfs>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path)?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(&path)
            .output();
        match mounted {
            Ok(o) if o.status.success() => Ok(Some(Tmpfs { _dir: dir, path })),
            Ok(o) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs here ({})",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                Ok(None)
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount ({e})");
                Ok(None)
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn open(data: &Path) -> Result<Org> {
    let host = Org::open(data, "default", DataDirMode::Create)?;
    host.operators().put(&Operator {
        name: "alice".into(),
        role: Role::Manager,
    })?;
    Ok(host)
}

fn manifest(max_mb: u32) -> String {
    format!(
        r##"
[[grant]]
integration = "files"
scope = "folder:out"
actions = ["write", "list"]
max_mb = {max_mb}

[[grant]]
integration = "slack"
scope = "channel:#general"
actions = ["post"]

[[grant]]
integration = "gmail"
scope = "label:support"
actions = ["read"]

[limits]
calls_per_minute = 5000
max_calls = 5000
time_ms = 60000
"##
    )
}

#[test]
fn a_guest_filling_its_folder_is_stopped_by_the_folder_quota() -> Result<()> {
    let env = TestEnv::new()?;
    let result = env.run(HOSTILE, &manifest(2), "fill-folder 100")?;
    let summary = completed(&result)?;
    // 2 MiB hold ten 200 KiB files; the eleventh is refused.
    assert!(
        summary.starts_with("wrote 10 files, then: ") && summary.contains("quota is 2 MiB"),
        "{summary}"
    );
    let folder = env.data_dir().join("files/default/out");
    let used: u64 = std::fs::read_dir(&folder)?
        .map(|e| e.and_then(|e| e.metadata()).map(|m| m.len()))
        .sum::<std::io::Result<u64>>()?;
    assert!(used <= 2 * 1024 * 1024, "{used} bytes");
    // The refusal is audited, and the host serves the next task.
    assert!(
        env.audit()?
            .iter()
            .any(|e| e.record.result.contains("quota is 2 MiB"))
    );
    let next = env.run(HOSTILE, &manifest(2), "post still here")?;
    assert!(completed(&next)?.starts_with("posted"), "{:?}", next.end);
    // A quota that is not a whole number of MiB in range is refused.
    for bad in ["0", "-1", "1.5", "\"big\"", "99999"] {
        let text = manifest(1).replace("max_mb = 1", &format!("max_mb = {bad}"));
        let err = TestEnv::manifest(HOSTILE, &text)
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("max_mb must be")), "{bad}");
    }
    Ok(())
}

#[test]
fn the_store_survives_a_full_disk_and_serves_again_once_space_is_back() -> Result<()> {
    let Some(tmpfs) = Tmpfs::mount(12)? else {
        return Ok(());
    };
    let data = tmpfs.path.join("data");
    let posted_while_full = {
        let host = open(&data)?;
        host.sandbox().seed()?;
        // A quota larger than the disk: the disk fills first.
        let employee = host.load(TestEnv::manifest(HOSTILE, &manifest(1024))?)?;
        let result = employee.run("fill-folder 1000")?;
        let summary = match &result.end {
            clancy::runtime::TaskEnd::Completed { summary } => summary.clone(),
            other => format!("{other:?}"),
        };
        assert!(
            summary.contains("then:") && !summary.contains("wrote 1000 files"),
            "the disk never filled: {summary}"
        );
        // Whichever needed space first stopped it, the folder's write or
        // the store's (then the write was not made: its intent could not
        // be put on disk).
        assert!(
            summary.contains("no storage space")
                || summary.contains("the audit log is unavailable, so the action was not taken"),
            "{summary}"
        );
        // While the disk is full, what needs the store fails closed: the
        // task cannot start, or its post is refused (by the rate limits
        // that cannot be recorded, or the intent that cannot be written).
        // Except where the store still had room in the page it writes to
        // (its log grows a page at a time): then the post is made with its
        // intent on disk, and must be on record after the restart below.
        match employee.run("post while full") {
            Err(e) => {
                assert!(e.to_string().contains("audit log unavailable"), "{e}");
                false
            }
            Ok(r) => {
                let said = completed(&r)?;
                assert!(
                    said.starts_with("posted")
                        || said.contains("so the action was not taken")
                        || said.contains("so the call was not made"),
                    "{said}"
                );
                said.starts_with("posted")
            }
        }
    };
    // Space is back: the operator clears the folder.
    for entry in std::fs::read_dir(data.join("files/default/out"))? {
        std::fs::remove_file(entry?.path())?;
    }
    let host = open(&data)?;
    let v = host.verify_audit(None)?;
    assert!(v.is_intact(), "{:?}", v.problems);
    let employee = host.load(TestEnv::manifest(HOSTILE, &manifest(1024))?)?;
    let next = employee.run("post back in business")?;
    assert!(completed(&next)?.starts_with("posted"), "{:?}", next.end);
    let general: Vec<String> = host
        .sandbox()
        .all_chat()?
        .into_iter()
        .filter(|(n, _)| n == "#general")
        .flat_map(|(_, m)| m.into_iter().map(|m| m.text))
        .collect();
    assert!(general.iter().any(|t| t == "back in business"));
    // A post refused while full was never made; one made then (its effect
    // rides on the next commit, which the full disk may have failed) is on
    // record with its intent if it is there.
    if general.iter().any(|t| t == "while full") {
        assert!(posted_while_full, "a refused post was made: {general:?}");
        assert!(
            host.audit()
                .entries()?
                .iter()
                .any(|e| e.kind == clancy::audit::Kind::Intent
                    && e.record.args.contains("while full")),
            "a post made while the disk was full is not on record"
        );
    }
    assert!(host.verify_audit(None)?.is_intact());
    Ok(())
}
