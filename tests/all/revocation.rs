//! Revocation that bites: every side effect goes through the executor,
//! which checks the grant in force when it runs. Withdrawing a permission
//! voids the pending requests that need it, a resumed approval is checked
//! again, and only registered operators decide.

use anyhow::Result;
use clancy::approvals::{Approval, Status};
use clancy::audit::Kind;
use clancy::operators::{Operator, Role};
use clancy::org::{DecideError, Verdict};
use clancy_guests::{HOSTILE, SALES_COORDINATOR};

use crate::env::{TestEnv, completed, queued_id, with_hostile_imports};

use crate::env::GATED_GENERAL_POST as GATED;

fn queue_post(env: &TestEnv, grants: &str, text: &str) -> Result<String> {
    let result = env.run(
        HOSTILE,
        &with_hostile_imports(grants),
        &format!("post {text}"),
    )?;
    queued_id(completed(&result)?, "posted")
}

fn status(env: &TestEnv, id: &str) -> Result<Approval> {
    env.host
        .approvals()
        .get(id)?
        .ok_or_else(|| anyhow::anyhow!("no request {id}"))
}

fn heard(env: &TestEnv, id: &str) -> Result<Vec<String>> {
    Ok(env
        .audit()?
        .into_iter()
        .filter(|e| e.kind == Kind::Note && e.record.reason.starts_with(&format!("heard: {id}")))
        .map(|e| e.record.reason)
        .collect())
}

#[test]
fn a_revoked_send_with_a_pending_approval_is_voided_never_sent_and_the_employee_is_told()
-> Result<()> {
    let env = TestEnv::new()?;
    let mut manifest = TestEnv::plugin_manifest("sales-coordinator", SALES_COORDINATOR)?;
    env.host.load(manifest.clone())?.run("Book demos")?;
    let pending: Vec<Approval> = env
        .host
        .approvals()
        .list()?
        .into_iter()
        .filter(|a| a.status == Status::Pending)
        .collect();
    assert_eq!(pending.len(), 1, "{pending:?}");
    let id = pending[0].id.clone();
    let sent_before = env.host.sandbox().all_mail()?.len();

    // The operator withdraws "send" (the approval policy is left as it was).
    let gmail = manifest
        .grants
        .iter_mut()
        .find(|g| g.scope == "label:sales")
        .ok_or_else(|| anyhow::anyhow!("no gmail grant"))?;
    gmail.actions = [clancy::integrations::Action::Read].into();
    env.host.load(manifest)?;

    let voided = status(&env, &id)?;
    assert_eq!(voided.status, Status::Void);
    assert!(
        voided
            .outcome
            .as_deref()
            .is_some_and(|o| o.contains("no longer holds \"send\" on gmail label:sales")),
        "{voided:?}"
    );
    match env.host.decide(&id, Verdict::Approve, "alice", None) {
        Err(DecideError::Void { .. }) => {}
        other => anyhow::bail!("approving a void request: {other:?}"),
    }
    assert_eq!(env.host.sandbox().all_mail()?.len(), sent_before);
    let audit = env.audit()?;
    assert!(audit.iter().any(|e| e.kind == Kind::Decision
        && e.record.approval.as_deref() == Some(id.as_str())
        && e.record.result.starts_with("void: ")));
    // The change itself is on record, with what was removed.
    assert!(audit.iter().any(|e| {
        e.kind == Kind::Change
            && e.record
                .args
                .contains("~ grant gmail label:sales: actions removed: send; actions added: read")
    }));
    // The employee heard "denied" through on-decision.
    assert!(audit.iter().any(|e| e.kind == Kind::Reaction
        && e.record.approval.as_deref() == Some(id.as_str())
        && e.record.args.ends_with("denied")));
    Ok(())
}

#[test]
fn a_narrowed_scope_voids_the_requests_on_the_scope_it_no_longer_grants() -> Result<()> {
    let env = TestEnv::new()?;
    let id = queue_post(&env, GATED, "to general")?;
    let moved = GATED.replace("channel:#general", "channel:#random");
    env.host
        .load(TestEnv::manifest(HOSTILE, &with_hostile_imports(&moved))?)?;
    let a = status(&env, &id)?;
    assert_eq!(a.status, Status::Void);
    assert!(
        a.outcome
            .as_deref()
            .is_some_and(|o| o.contains("no longer holds a grant on slack channel:#general")),
        "{a:?}"
    );
    assert!(env.channel("#general")?.iter().all(|m| m != "to general"));
    // The hostile guest's on-decision heard the denial, with the reason.
    let heard = heard(&env, &id)?;
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert!(heard[0].contains("denied (void: "), "{heard:?}");
    Ok(())
}

#[test]
fn a_resumed_approved_action_is_checked_against_the_grant_in_force_and_does_not_run() -> Result<()>
{
    let env = TestEnv::new()?;
    let id = queue_post(&env, GATED, "approved then revoked")?;
    // Approved, then the host stopped before executing it (a crash).
    let a = status(&env, &id)?;
    let approved = Approval {
        status: Status::Approved,
        decided_by: Some("alice".into()),
        ..a
    };
    env.host.org_store().write(
        "approvals",
        vec![(
            format!("a/{id}").into_bytes(),
            Some(serde_json::to_vec(&approved)?),
        )],
    )?;
    // Meanwhile the operator took "post" away (only read is left).
    let read_only = GATED.replace("actions = [\"post\"]", "actions = [\"read\"]");
    env.host.load(TestEnv::manifest(
        HOSTILE,
        &with_hostile_imports(&read_only),
    )?)?;
    // Voiding at load only touches pending requests: this one waits for resume.
    assert_eq!(status(&env, &id)?.status, Status::Approved);
    let resumed = env.host.resume_approved()?;
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].status, Status::Void);
    assert!(
        env.channel("#general")?
            .iter()
            .all(|m| m != "approved then revoked")
    );
    // Nothing reached the provider: no intent was ever written for it.
    assert!(
        !env.audit()?
            .iter()
            .any(|e| e.kind == Kind::Intent && e.record.approval.as_deref() == Some(id.as_str()))
    );
    Ok(())
}

#[test]
fn a_pending_widening_is_void_once_the_grants_it_was_asked_under_change() -> Result<()> {
    let env = TestEnv::new()?;
    let grants = with_hostile_imports(
        r##"
[[grant]]
integration = "slack"
scope = "channel:#general"
actions = ["post"]
"##,
    );
    let result = env.run(HOSTILE, &grants, "elevate slack channel:#random post 60")?;
    let id = queued_id(completed(&result)?, "elevation")?;
    // The slack grant is narrowed to reading only.
    env.host.load(TestEnv::manifest(
        HOSTILE,
        &with_hostile_imports(
            r##"
[[grant]]
integration = "slack"
scope = "channel:#general"
actions = ["read"]
"##,
        ),
    )?)?;
    assert_eq!(status(&env, &id)?.status, Status::Void);
    assert!(env.host.approvals().elevations("test-employee")?.is_empty());
    Ok(())
}

#[test]
fn only_registered_managers_and_admins_decide_requests_without_a_ladder() -> Result<()> {
    let env = TestEnv::new()?;
    env.host.operators().put(&Operator {
        name: "ursula".into(),
        role: Role::User,
    })?;
    let id = queue_post(&env, GATED, "who decides")?;
    for (who, verdict) in [
        ("eve", Verdict::Approve),
        ("eve", Verdict::Deny),
        ("ursula", Verdict::Approve),
        ("", Verdict::Approve),
    ] {
        match env.host.decide(&id, verdict, who, None) {
            Err(DecideError::NotAllowed { waiting_for, .. }) => {
                assert!(waiting_for.contains("manager or admin"), "{waiting_for}")
            }
            other => anyhow::bail!("{who:?} decided: {other:?}"),
        }
    }
    assert_eq!(status(&env, &id)?.status, Status::Pending);
    assert!(env.channel("#general")?.iter().all(|m| m != "who decides"));
    let done = env.host.decide(&id, Verdict::Approve, "alice", None)?;
    assert_eq!(done.status, Status::Executed);
    Ok(())
}

#[test]
fn once_an_admin_exists_only_an_admin_adds_or_promotes_operators() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let add = |args: &[&str]| crate::env::clancy(&data, &[&["operators", "add"], args].concat());
    // The first admin can be set up by anyone.
    assert_eq!(add(&["ada", "--role", "admin"])?.status.code(), Some(0));
    // Now a non-admin (or nobody named) cannot add or promote anyone.
    for args in [
        vec!["mallory", "--role", "admin"],
        vec!["mallory", "--role", "admin", "--as", "mallory"],
        vec!["ada", "--role", "user", "--as", "eve"],
    ] {
        let o = add(&args)?;
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(
            crate::env::stderr(&o).contains("only an admin may"),
            "{}",
            crate::env::stderr(&o)
        );
    }
    assert_eq!(
        add(&["mia", "--role", "manager", "--as", "ada"])?
            .status
            .code(),
        Some(0)
    );
    let list = crate::env::clancy(&data, &["operators", "list"])?;
    assert_eq!(
        crate::env::stdout(&list).trim(),
        "ada (admin)\nmia (manager)"
    );
    // Each change is in the audit log, with who made it.
    let log = crate::env::stdout(&crate::env::clancy(&data, &["audit", "log"])?);
    assert!(log.contains("mia is manager (set by ada)"), "{log}");
    Ok(())
}

#[test]
fn narrowing_a_mail_grants_domains_voids_the_pending_sends_and_is_audited() -> Result<()> {
    let env = TestEnv::new()?;
    let grants =
        |to: &str| crate::env::hostile_mail_grants(&format!("approval = \"required\"\nto = {to}"));
    let wide = grants(r#"["northwind.example", "fernleaf.example"]"#);
    let result = env.run(HOSTILE, &wide, "send-to olivia.grant@fernleaf.example")?;
    let id = queued_id(completed(&result)?, "sent")?;
    let sent_before = env.host.sandbox().all_mail()?.len();
    env.host.load(TestEnv::manifest(
        HOSTILE,
        &grants(r#"["northwind.example"]"#),
    )?)?;
    let a = status(&env, &id)?;
    assert_eq!(a.status, Status::Void);
    assert!(matches!(
        env.host.decide(&id, Verdict::Approve, "alice", None),
        Err(DecideError::Void { .. })
    ));
    assert_eq!(env.host.sandbox().all_mail()?.len(), sent_before);
    let change = env
        .audit()?
        .into_iter()
        .rfind(|e| e.kind == Kind::Change)
        .ok_or_else(|| anyhow::anyhow!("no change recorded"))?;
    let gmail_line = change
        .record
        .args
        .lines()
        .find(|l| l.starts_with("~ grant gmail label:support: now "))
        .ok_or_else(|| anyhow::anyhow!("no gmail change in {}", change.record.args))?;
    assert!(
        gmail_line.ends_with(", to northwind.example"),
        "{gmail_line}"
    );
    // The stored manifest is the new one: its terms are what approvals check.
    let stored = env
        .host
        .stored_manifest("test-employee")?
        .ok_or_else(|| anyhow::anyhow!("not registered"))?;
    assert_eq!(stored.grants[1].to, ["northwind.example"]);
    Ok(())
}

#[test]
fn the_executor_refuses_an_effect_that_does_not_belong_to_the_grant_it_is_checked_against()
-> Result<()> {
    use clancy::integrations::mail::MailOp;
    use clancy::integrations::{Integration, Operation};
    use clancy::mediator::Effect;

    let env = TestEnv::new()?;
    // A chat grant with "read", and a mail read presented under it.
    let grants = with_hostile_imports(
        "[[grant]]\nintegration = \"slack\"\nscope = \"channel:#general\"\nactions = [\"read\", \"post\"]\n",
    );
    let employee = env.host.load(TestEnv::manifest(HOSTILE, &grants)?)?;
    let support_mail = env
        .host
        .sandbox()
        .all_mail()?
        .into_iter()
        .find(|m| m.labels.iter().any(|l| l == "support"))
        .ok_or_else(|| anyhow::anyhow!("no support mail"))?;
    let execution = employee.mediator().execute(
        Integration::Slack,
        "channel:#general",
        Effect::Call(Operation::Mail(MailOp::Read {
            id: support_mail.id.clone(),
        })),
        clancy::audit::Record {
            employee: "test-employee".into(),
            ..Default::default()
        },
        None,
    )?;
    match execution.outcome {
        Err(clancy::runtime::bindings::CallError::Denied(_)) => {}
        other => anyhow::bail!("a mail read passed a chat grant: {other:?}"),
    }
    assert!(!env.audit()?.iter().any(|e| e.kind == Kind::Intent));
    Ok(())
}
