//! The real `clancy` binary: the operator's path end to end, and bad input.
//! Every bad input gets one clear error line, a non-zero exit, and loses nothing.

use std::path::Path;
use std::process::Command;

use anyhow::Result;
use clancy_guests::{CUSTOMER_SERVICE, HOSTILE, WRONG_WORLD};

use crate::env::{clancy, stderr, stdout, workspace_root};

fn customer_service_manifest() -> String {
    workspace_root()
        .join("plugins/customer-service/employee.toml")
        .display()
        .to_string()
}

/// Run the customer-service employee on a support-mail task; returns its stdout.
fn run_customer_service(data: &Path) -> Result<String> {
    let run = clancy(
        data,
        &[
            "run",
            &customer_service_manifest(),
            "--component",
            CUSTOMER_SERVICE,
            "--task",
            "Triage support mail",
        ],
    )?;
    assert!(run.status.success(), "{}{}", stdout(&run), stderr(&run));
    Ok(stdout(&run))
}

/// Run the customer-service demo into `data`; returns the number of audit lines.
fn demo(data: &Path) -> Result<usize> {
    run_customer_service(data)?;
    let log = clancy(data, &["audit", "log", "--json"])?;
    Ok(stdout(&log).lines().count())
}

#[test]
fn an_operator_runs_an_employee_reads_its_reasons_and_verifies_the_log() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let out = run_customer_service(&data)?;
    assert!(
        out.contains("completed: filed 3 tickets in channel:#support"),
        "{out}"
    );

    let log = clancy(&data, &["audit", "log", "--employee", "customer-service"])?;
    let text = stdout(&log);
    assert!(log.status.success());
    assert!(
        text.contains("chat channel:#support post(")
            && text.contains("why: \"Filing a P1 ticket for mail m-1002"),
        "{text}"
    );
    assert!(
        text.contains("started: Triage support mail") && text.contains("ended: completed"),
        "{text}"
    );
    // One line per action: each post's intent is folded into its result.
    assert_eq!(
        text.matches("chat channel:#support post(").count(),
        3,
        "{text}"
    );

    let json = clancy(&data, &["audit", "log", "--json"])?;
    for line in stdout(&json).lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        assert!(v["hash"].as_str().is_some_and(|h| h.len() == 64));
    }

    let verify = clancy(&data, &["audit", "verify"])?;
    assert!(verify.status.success());
    assert!(
        stdout(&verify).starts_with("audit log intact: "),
        "{}",
        stdout(&verify)
    );

    let show = clancy(&data, &["sandbox", "show", "chat"])?;
    assert!(stdout(&show).contains("[P1] Cannot log in after password reset"));
    Ok(())
}

#[test]
fn check_reports_grants_and_refuses_an_over_reaching_component() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let ok = clancy(
        &data,
        &[
            "check",
            &customer_service_manifest(),
            "--component",
            CUSTOMER_SERVICE,
        ],
    )?;
    assert!(ok.status.success(), "{}{}", stdout(&ok), stderr(&ok));
    assert!(stdout(&ok).contains("ok: imports are within the grants"));

    let bad = clancy(
        &data,
        &[
            "check",
            &customer_service_manifest(),
            "--component",
            HOSTILE,
        ],
    )?;
    assert_eq!(bad.status.code(), Some(1));
    let text = stdout(&bad);
    assert!(
        text.contains("REFUSED: imports clancy:employee/files@0.1.0"),
        "{text}"
    );
    Ok(())
}

#[test]
fn verify_exits_non_zero_and_says_where_after_tampering() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    demo(&data)?;
    {
        let store = clancy::store::SledStore::open(&data.join("store"))?;
        use clancy::store::Store;
        // Entry #3 is the employee's first note (#1 registers it, #2 starts the task).
        let mut key = b"default/e/".to_vec();
        key.extend_from_slice(&3u64.to_be_bytes());
        let entry = String::from_utf8(
            store
                .get("audit", &key)?
                .ok_or_else(|| anyhow::anyhow!("no entry 3"))?,
        )?;
        assert!(entry.contains("I will read"), "{entry}");
        let edited = entry.replace("I will read", "I will NOT read");
        store.write("audit", vec![(key, Some(edited.into_bytes()))])?;
    }
    // sled releases its file lock when its last background reference goes,
    // a moment after the handle above is dropped: wait for it, briefly.
    let mut verify = clancy(&data, &["audit", "verify"])?;
    for _ in 0..50 {
        if !stderr(&verify).contains("in use by another clancy process") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        verify = clancy(&data, &["audit", "verify"])?;
    }
    assert_eq!(verify.status.code(), Some(1), "{}", stderr(&verify));
    let text = stdout(&verify);
    assert!(
        text.starts_with("AUDIT LOG TAMPERED")
            && text.contains("entry #3 does not match its hash: edited"),
        "{text}"
    );
    Ok(())
}

/// The operator keeps the public key and an export elsewhere; the export is
/// verified with no data dir at all. Edited with every hash recomputed, or
/// checked against another key, it fails and says where.
#[test]
fn an_exported_log_verifies_offline_against_the_public_key_and_a_rewrite_does_not() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    demo(&data)?;
    let key = clancy(&data, &["audit", "key"])?;
    let public = stdout(&key).trim().to_string();
    assert!(key.status.success() && public.len() == 64, "{public}");
    // The key file is private to its owner.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(data.join("keys/host.key"))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let export = dir.path().join("audit.jsonl");
    let exported = clancy(
        &data,
        &["audit", "export", "--output", &export.display().to_string()],
    )?;
    assert!(exported.status.success(), "{}", stderr(&exported));
    let text = std::fs::read_to_string(&export)?;
    assert!(
        text.lines().any(|l| l.starts_with("{\"checkpoint\":")),
        "{text}"
    );

    // Offline: a data dir that does not exist is never opened.
    let nowhere = dir.path().join("no-data-dir");
    let export_arg = export.display().to_string();
    let offline = |path: &str, key: &str| {
        clancy(
            &nowhere,
            &["audit", "verify", "--export", path, "--public-key", key],
        )
    };
    let ok = offline(&export_arg, &public)?;
    assert!(ok.status.success(), "{}{}", stdout(&ok), stderr(&ok));
    assert!(
        stdout(&ok).starts_with("audit log intact"),
        "{}",
        stdout(&ok)
    );
    assert!(!nowhere.exists());

    // Rewrite entry #3's reason and recompute every hash after it.
    let mut lines: Vec<serde_json::Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let mut prev = String::new();
    for line in lines.iter_mut().filter(|l| l.get("seq").is_some()) {
        let mut entry: clancy::audit::Entry = serde_json::from_value(line.clone())?;
        if entry.seq == 3 {
            entry.record.reason = "I will NOT read".into();
        }
        if entry.seq > 1 {
            entry.prev = prev.clone();
        }
        entry.hash = entry.compute_hash();
        prev = entry.hash.clone();
        *line = serde_json::to_value(&entry)?;
    }
    let rewritten = dir.path().join("rewritten.jsonl");
    let body: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    std::fs::write(&rewritten, body.join("\n"))?;
    let caught = offline(&rewritten.display().to_string(), &public)?;
    assert_eq!(caught.status.code(), Some(1), "{}", stderr(&caught));
    assert!(
        stdout(&caught).contains("the log differs from the signed checkpoint of #")
            && stdout(&caught).contains("entries #1.."),
        "{}",
        stdout(&caught)
    );
    // Checked against a key that did not sign it, the genuine export fails.
    let other = clancy::keys::Keys::ephemeral().public_key();
    let wrong = offline(&export_arg, &other)?;
    assert_eq!(wrong.status.code(), Some(1), "{}", stderr(&wrong));
    assert!(stdout(&wrong).contains("forged"), "{}", stdout(&wrong));
    // And a malformed key is one clear error.
    refused(
        &nowhere,
        &[
            "audit",
            "verify",
            "--export",
            &export_arg,
            "--public-key",
            "zz",
        ],
        "--public-key",
    )?;
    Ok(())
}

/// The host key is what makes seals and checkpoints mean anything: a data
/// dir whose key went missing, or whose key others may read, is refused
/// with one clear sentence, never silently given a new key.
#[test]
fn a_missing_or_exposed_host_key_is_refused_with_one_clear_sentence() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    demo(&data)?;
    let key = data.join("keys/host.key");
    let aside = dir.path().join("host.key.aside");
    std::fs::rename(&key, &aside)?;
    refused(&data, &["audit", "verify"], "has records but no host key")?;
    assert!(!key.exists(), "a new key was made over the old records");
    std::fs::rename(&aside, &key)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644))?;
        refused(&data, &["audit", "verify"], "may be read by other users")?;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    }
    let ok = clancy(&data, &["audit", "verify"])?;
    assert!(ok.status.success(), "{}{}", stdout(&ok), stderr(&ok));
    Ok(())
}

fn write(dir: &Path, name: &str, contents: &[u8]) -> Result<String> {
    let path = dir.join(name);
    std::fs::write(&path, contents)?;
    Ok(path.display().to_string())
}

/// Runs `args`, expects exit 2 with one `error:` line containing `needle`.
fn refused(data: &Path, args: &[&str], needle: &str) -> Result<()> {
    let o = clancy(data, args)?;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {}{err}", stdout(&o));
    assert!(
        err.starts_with("error: ") && err.contains(needle),
        "{args:?}: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one error line: {err}");
    Ok(())
}

#[test]
fn bad_input_gets_one_clear_error_and_loses_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let entries = demo(&data)?;
    let files = dir.path();
    let cs = customer_service_manifest();

    let manifest = write(files, "bad.toml", b"name = \"x\"\ncomponent = \"x.wasm\"\n[[grant]]\nintegration = \"slack\"\nscope = \"channel:#a\"\nactions = [\"delete\"]\n")?;
    refused(
        &data,
        &["run", &manifest, "--task", "t"],
        "bad.toml:6: unknown action \"delete\" for slack (expected one of: read, post)",
    )?;
    refused(&data, &["check", &manifest], "bad.toml:6: unknown action")?;

    let not_wasm = write(files, "notes.wasm", b"this is not wasm")?;
    refused(
        &data,
        &["run", &cs, "--component", &not_wasm, "--task", "t"],
        "is not WebAssembly",
    )?;

    let bytes = std::fs::read(CUSTOMER_SERVICE)?;
    let corrupt = write(files, "corrupt.wasm", &bytes[..bytes.len() / 2])?;
    refused(
        &data,
        &["run", &cs, "--component", &corrupt, "--task", "t"],
        "is not a valid WebAssembly component",
    )?;

    refused(
        &data,
        &["run", &cs, "--component", WRONG_WORLD, "--task", "t"],
        "is not a Clancy employee",
    )?;
    refused(
        &data,
        &[
            "run",
            &cs,
            "--component",
            "/no/such/file.wasm",
            "--task",
            "t",
        ],
        "cannot read component",
    )?;

    let long = "x".repeat(100 * 1024);
    refused(
        &data,
        &["run", &cs, "--component", CUSTOMER_SERVICE, "--task", &long],
        "the limit is 65536 bytes",
    )?;
    let megabytes = write(files, "task.txt", &vec![b'x'; 3 * 1024 * 1024])?;
    refused(
        &data,
        &[
            "run",
            &cs,
            "--component",
            CUSTOMER_SERVICE,
            "--task-file",
            &megabytes,
        ],
        "larger than the limit of 65536 bytes",
    )?;
    let latin1 = write(files, "latin1.txt", b"caf\xe9")?;
    refused(
        &data,
        &[
            "run",
            &cs,
            "--component",
            CUSTOMER_SERVICE,
            "--task-file",
            &latin1,
        ],
        "is not UTF-8 text",
    )?;
    refused(
        &data,
        &["run", &cs, "--component", CUSTOMER_SERVICE, "--task", "  "],
        "the task is empty",
    )?;
    refused(
        &data,
        &[
            "--org",
            "Evil/Org",
            "run",
            &cs,
            "--component",
            CUSTOMER_SERVICE,
            "--task",
            "t",
        ],
        "invalid org name",
    )?;

    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let o = Command::new(env!("CARGO_BIN_EXE_clancy"))
            .arg("--data-dir")
            .arg(&data)
            .args(["run", &cs, "--task"])
            .arg(std::ffi::OsStr::from_bytes(b"caf\xe9"))
            .output()?;
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("invalid UTF-8"), "{}", stderr(&o));
    }

    let missing = dir.path().join("nowhere");
    refused(&missing, &["audit", "log"], "no Clancy data dir at")?;
    refused(&missing, &["audit", "verify"], "no Clancy data dir at")?;
    assert!(!missing.exists(), "reading must not create a data dir");

    refused(&data, &["sandbox", "seed"], "pass --reset")?;

    // Nothing was lost or half-written along the way.
    assert_eq!(
        stdout(&clancy(&data, &["audit", "log", "--json"])?)
            .lines()
            .count(),
        entries
    );
    assert!(clancy(&data, &["audit", "verify"])?.status.success());
    Ok(())
}

#[test]
fn a_second_process_on_a_data_dir_in_use_gets_one_clear_sentence() -> Result<()> {
    let scene = crate::crash::Scene::new(clancy_guests::HOSTILE)?;
    let manifest = scene.manifest_path();
    // A `run` paused right after it stored a queued request holds the data dir.
    let second = scene
        .while_paused_at(
            "enqueue:after-store",
            &["run", &manifest, "--task", "post held"],
            || clancy(scene.data(), &["audit", "log"]),
        )?
        .ok_or_else(|| anyhow::anyhow!("the first process never paused"))?;
    assert_eq!(second.status.code(), Some(2));
    let err = stderr(&second);
    assert!(
        err.trim_end().ends_with(
            "it is in use by another clancy process (wait for it to finish, or stop `clancy serve` or `clancy approvals watch`)"
        ) && !err.contains("Os {"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    Ok(())
}

#[test]
fn operator_actions_on_the_org_are_in_the_audit_log_and_never_the_secret() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    assert_eq!(clancy(&data, &["sandbox", "seed"])?.status.code(), Some(0));
    assert_eq!(
        clancy(&data, &["sandbox", "seed", "--reset"])?
            .status
            .code(),
        Some(0)
    );
    let secret = stdout(&clancy(&data, &["notify", "secret"])?);
    let secret = secret.trim();
    assert!(secret.len() >= 32);
    let log = stdout(&clancy(&data, &["audit", "log"])?);
    assert!(log.contains("host: sandbox-seed first seed"), "{log}");
    assert!(log.contains("host: sandbox-seed reset"), "{log}");
    assert!(
        log.contains("host: notify-secret -> the webhook signing secret was shown"),
        "{log}"
    );
    let json = stdout(&clancy(&data, &["audit", "log", "--json"])?);
    assert!(!json.contains(secret), "the secret is in the audit log");
    assert!(stdout(&clancy(&data, &["audit", "verify"])?).starts_with("audit log intact"));
    Ok(())
}
