//! `clancy approvals …`, `clancy operators …` and `clancy notify …` driven
//! through the real binary: list with reasons and previews, single and batch
//! decisions, edit-then-approve, and bad input refused with nothing changed.

use anyhow::Result;
use clancy_guests::HOSTILE;

use crate::crash::Scene;

#[test]
fn the_queue_is_listed_with_reasons_and_decided_one_by_one_or_in_batches() -> Result<()> {
    let scene = Scene::new(HOSTILE)?;
    for text in ["first", "second", "third"] {
        scene.queue(text)?;
    }
    let (code, list) = scene.clancy(&["approvals", "list"])?;
    assert_eq!(code, Some(0));
    assert_eq!(
        list.matches("[Pending] crash-test wants to post to channel:#general")
            .count(),
        3,
        "{list}"
    );
    assert!(
        list.contains("why: \"")
            && list.contains("\"post\" on slack channel:#general always needs approval"),
        "{list}"
    );
    let ids: Vec<String> = scene.requests()?.into_iter().map(|r| r.0).collect();

    let (code, out) = scene.clancy(&[
        "approvals",
        "deny",
        &ids[0],
        "--as",
        "mia",
        "--comment",
        "not this one",
    ])?;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("{}: denied", ids[0])));
    // A decided request cannot be decided again.
    let (code, out) = scene.clancy(&["approvals", "approve", &ids[0], "--as", "mia"])?;
    assert_eq!(code, Some(1));
    assert!(
        out.contains("REFUSED") && out.contains("already decided (denied)"),
        "{out}"
    );

    // Edit-then-approve from the command line.
    let (code, out) = scene.clancy(&[
        "approvals",
        "approve",
        &ids[1],
        "--set",
        "text=second, edited",
        "--as",
        "mia",
    ])?;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("edited and approved as ap-"), "{out}");
    assert_eq!(scene.posted("second, edited")?, 1);
    assert_eq!(scene.posted("second")?, 0);

    // The rest in one batch.
    let (code, out) = scene.clancy(&[
        "approvals",
        "approve",
        "--all-matching",
        "employee=crash-test,action=post",
        "--as",
        "mia",
    ])?;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.lines().count(), 1, "only the one still pending: {out}");
    assert!(out.contains(&ids[2]) && out.contains("approved; done:"));
    let (_, pending) = scene.clancy(&["approvals", "list"])?;
    assert_eq!(pending.trim(), "no pending requests");
    let (_, all) = scene.clancy(&["approvals", "list", "--all"])?;
    assert!(all.contains("decided by mia: not this one"), "{all}");
    Ok(())
}

#[test]
fn bad_ids_filters_edits_and_roles_are_refused_and_change_nothing() -> Result<()> {
    let scene = Scene::new(HOSTILE)?;
    scene.queue("untouched")?;
    let id = scene.requests()?[0].0.clone();
    for (args, message) in [
        (
            vec!["approvals", "approve", "ap-000000000000", "--as", "mia"],
            "no approval request \"ap-000000000000\"",
        ),
        (
            vec![
                "approvals",
                "approve",
                &id,
                "ap-000000000000",
                "--as",
                "mia",
            ],
            "no approval request",
        ),
        (
            vec![
                "approvals",
                "deny",
                "--all-matching",
                "colour=blue",
                "--as",
                "mia",
            ],
            "invalid filter key \"colour\"",
        ),
        (
            vec![
                "approvals",
                "deny",
                "--all-matching",
                "employee",
                "--as",
                "mia",
            ],
            "expected key=value",
        ),
        (
            vec![
                "approvals",
                "deny",
                "--all-matching",
                "employee=nobody",
                "--as",
                "mia",
            ],
            "no employee \"nobody\" is registered",
        ),
        // Empty or unknown values never match "everything".
        (
            vec![
                "approvals",
                "approve",
                "--all-matching",
                "task=",
                "--as",
                "mia",
            ],
            "the filter term \"task=\" has no value",
        ),
        (
            vec![
                "approvals",
                "approve",
                "--all-matching",
                "employee=crash-test,task= ",
                "--as",
                "mia",
            ],
            "has no value",
        ),
        (
            vec![
                "approvals",
                "approve",
                "--all-matching",
                "integration=outlook",
                "--as",
                "mia",
            ],
            "unknown integration \"outlook\"",
        ),
        (
            vec![
                "approvals",
                "approve",
                "--all-matching",
                "action=delete",
                "--as",
                "mia",
            ],
            "unknown action \"delete\"",
        ),
        (
            vec![
                "approvals",
                "approve",
                &id,
                "--set",
                "colour=blue",
                "--as",
                "mia",
            ],
            "no editable field \"colour\"",
        ),
        (
            vec!["approvals", "approve", &id, "--set", "text", "--as", "mia"],
            "expected FIELD=VALUE",
        ),
        (
            vec!["operators", "add", "kim", "--role", "boss"],
            "unknown role \"boss\"",
        ),
        (
            vec!["operators", "add", "kim/../x", "--role", "admin"],
            "invalid operator name",
        ),
    ] {
        let (code, _) = scene.clancy(&args)?;
        assert_eq!(code, Some(2), "{args:?}");
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_clancy"))
            .arg("--data-dir")
            .arg(scene.data())
            .args(&args)
            .output()?;
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(message), "{args:?}: {err}");
    }
    let requests = scene.requests()?;
    assert_eq!((requests.len(), requests[0].1.as_str()), (1, "pending"));
    assert_eq!(scene.posted("untouched")?, 0);
    let (code, out) = scene.clancy(&["operators", "list"])?;
    // The refused additions added nobody: only the scene's two approvers.
    assert_eq!(
        (code, out.trim()),
        (Some(0), "mia (manager)\nops (manager)")
    );
    Ok(())
}
