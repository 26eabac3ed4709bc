//! Human in the loop: gated actions are queued durably with their full
//! action, run only on approval, by the host, exactly once; denials,
//! expiry, forgery, replay and races never execute anything.

use std::sync::Arc;

use anyhow::Result;
use clancy::approvals::{Approval, Status};
use clancy::audit::{Decision, Kind};
use clancy::manifest::ApprovalPolicy;
use clancy::org::{DecideError, Verdict};
use clancy_guests::{ACCOUNTING_ASSISTANT, HOSTILE};

use crate::env::{TestEnv, completed, queued_id};

const GATED_POST: &str = r##"
[[grant]]
integration = "slack"
scope = "channel:#general"
actions = ["post"]
approval = "required"

[[grant]]
integration = "gmail"
scope = "label:support"
actions = ["read", "send"]
approval = { outside_domain = "northwind.example" }

[[grant]]
integration = "files"
scope = "folder:out"
actions = ["write"]
"##;

/// Run the hostile guest's `post` with the gated grant; returns the approval id.
fn queue_a_post(env: &TestEnv, text: &str) -> Result<String> {
    let result = env.run(HOSTILE, GATED_POST, &format!("post {text}"))?;
    queued_id(completed(&result)?, "posted")
}

fn posts(env: &TestEnv, text: &str) -> Result<usize> {
    Ok(env
        .channel("#general")?
        .iter()
        .filter(|m| *m == text)
        .count())
}

fn get(env: &TestEnv, id: &str) -> Result<Approval> {
    env.host
        .approvals()
        .get(id)?
        .ok_or_else(|| anyhow::anyhow!("no approval {id}"))
}

#[test]
fn a_gated_write_is_queued_with_its_full_action_and_does_not_run() -> Result<()> {
    let env = TestEnv::new()?;
    let id = queue_a_post(&env, "hello team")?;
    assert_eq!(posts(&env, "hello team")?, 0);
    let a = get(&env, &id)?;
    assert_eq!(a.status, Status::Pending);
    assert_eq!(a.request.employee, "test-employee");
    assert_eq!(a.request.scope, "channel:#general");
    assert_eq!(a.request.reason, "posting what the task asked");
    assert_eq!(a.hash, a.request.hash());
    assert!(
        a.preview()
            .contains("post to channel:#general:\n    | hello team"),
        "{}",
        a.preview()
    );
    let queued: Vec<_> = env
        .audit()?
        .into_iter()
        .filter(|e| e.kind == Kind::Queued)
        .collect();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].record.decision, Some(Decision::Gated));
    assert_eq!(queued[0].record.approval.as_deref(), Some(id.as_str()));
    Ok(())
}

#[test]
fn approval_runs_exactly_the_queued_action_once_and_cannot_be_replayed() -> Result<()> {
    let env = TestEnv::new()?;
    let id = queue_a_post(&env, "approved message")?;
    let done = env
        .host
        .decide(&id, Verdict::Approve, "alice", Some("fine"))?;
    assert_eq!(done.status, Status::Executed);
    assert_eq!(done.decided_by.as_deref(), Some("alice"));
    assert_eq!(posts(&env, "approved message")?, 1);
    for verdict in [Verdict::Approve, Verdict::Deny] {
        assert!(matches!(
            env.host.decide(&id, verdict, "mallory", None),
            Err(DecideError::AlreadyDecided { .. })
        ));
    }
    assert_eq!(posts(&env, "approved message")?, 1);
    // The log tells the whole story: queued, decided by alice, executed under the approval.
    let audit = env.audit()?;
    assert!(
        audit
            .iter()
            .any(|e| e.kind == Kind::Decision && e.record.result == "approved by alice: fine")
    );
    assert!(
        audit
            .iter()
            .any(|e| e.kind == Kind::Result && e.record.approval.as_deref() == Some(id.as_str()))
    );
    assert!(env.host.verify_audit(None)?.is_intact());
    Ok(())
}

#[test]
fn a_denied_request_never_runs() -> Result<()> {
    let env = TestEnv::new()?;
    let id = queue_a_post(&env, "denied message")?;
    let denied = env
        .host
        .decide(&id, Verdict::Deny, "bob", Some("not now"))?;
    assert_eq!(denied.status, Status::Denied);
    assert!(matches!(
        env.host.decide(&id, Verdict::Approve, "alice", None),
        Err(DecideError::AlreadyDecided { .. })
    ));
    assert_eq!(posts(&env, "denied message")?, 0);
    assert!(env.host.resume_approved()?.is_empty());
    assert_eq!(posts(&env, "denied message")?, 0);
    Ok(())
}

/// Rewrite a stored approval as the host itself would (a clock moving on,
/// a state the host reached before it was killed).
fn rewrite(env: &TestEnv, a: &Approval) -> Result<()> {
    let key = format!("a/{}", a.id).into_bytes();
    // As the host stores it: the record and, in the same batch, its entry
    // in the index of open requests (there while it is not finished).
    let open = format!("o/{}", a.id).into_bytes();
    let index = (!a.status.is_final()).then(|| b"open".to_vec());
    env.host.org_store().write(
        "approvals",
        vec![(key, Some(serde_json::to_vec(a)?)), (open, index)],
    )?;
    Ok(())
}

/// Rewrite a stored approval as an attacker with write access to the store
/// would: the bytes in place, without the host key.
fn tamper(env: &TestEnv, a: &Approval) -> Result<()> {
    let key = format!("default/a/{}", a.id).into_bytes();
    let mut bytes = serde_json::to_vec(a)?;
    // Keep the length of a sealed record, with a seal of the attacker's own.
    bytes.extend_from_slice(&[0u8; 32]);
    env.host
        .store()
        .write("approvals", vec![(key, Some(bytes))])?;
    Ok(())
}

#[test]
fn an_expired_request_is_denied_and_never_runs() -> Result<()> {
    let env = TestEnv::new()?;
    let id = queue_a_post(&env, "too late")?;
    let mut a = get(&env, &id)?;
    a.expires_at = chrono::Utc::now() - chrono::Duration::minutes(1);
    rewrite(&env, &a)?;
    assert!(matches!(
        env.host.decide(&id, Verdict::Approve, "alice", None),
        Err(DecideError::Expired(_))
    ));
    assert_eq!(get(&env, &id)?.status, Status::Expired);
    assert_eq!(posts(&env, "too late")?, 0);
    assert!(
        env.audit()?
            .iter()
            .any(|e| e.kind == Kind::Decision && e.record.result.contains("expired"))
    );
    Ok(())
}

/// An attacker who can write the store swaps the queued text and
/// recomputes the request's hash, so the record is consistent in itself:
/// it is refused all the same (its seal is the host key's, which the
/// attacker does not have), whoever approves, and nothing is posted.
#[test]
fn a_queued_action_rewritten_in_the_store_with_its_hash_recomputed_is_refused() -> Result<()> {
    let env = TestEnv::new()?;
    let id = queue_a_post(&env, "original text")?;
    let mut a = get(&env, &id)?;
    a.request.operation =
        clancy::integrations::Operation::Chat(clancy::integrations::chat::ChatOp::Post {
            text: "swapped text".into(),
        });
    a.hash = a.request.hash();
    tamper(&env, &a)?;
    let refused = env.host.decide(&id, Verdict::Approve, "alice", None);
    assert!(
        matches!(
            &refused,
            Err(DecideError::Store(
                clancy::store::StoreError::Tampered { .. }
            ))
        ),
        "{refused:?}"
    );
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("changed outside clancy"), "{message}");
    // Nor does a restart run it, or an escalation tick act on it.
    assert!(env.host.resume_approved().is_err());
    assert_eq!(
        posts(&env, "swapped text")? + posts(&env, "original text")?,
        0
    );
    // The refusal is on the record, which is intact.
    assert!(env.audit()?.iter().any(|e| e.kind == Kind::Note
        && e.record.args == format!("{id} by alice")
        && e.record.result.contains("changed outside clancy")));
    assert!(env.host.verify_audit(None)?.is_intact());
    Ok(())
}

/// The host's own hash check still refuses a request whose action does not
/// match its hash (a bug, or a record sealed by someone holding the key).
#[test]
fn approving_a_changed_action_is_refused() -> Result<()> {
    let env = TestEnv::new()?;
    let id = queue_a_post(&env, "original text")?;
    let mut a = get(&env, &id)?;
    a.request.operation =
        clancy::integrations::Operation::Chat(clancy::integrations::chat::ChatOp::Post {
            text: "swapped text".into(),
        });
    rewrite(&env, &a)?;
    assert!(matches!(
        env.host.decide(&id, Verdict::Approve, "alice", None),
        Err(DecideError::Tampered(_))
    ));
    assert_eq!(
        posts(&env, "swapped text")? + posts(&env, "original text")?,
        0
    );
    Ok(())
}

#[test]
fn a_policy_change_voids_approvals_requested_under_the_old_one() -> Result<()> {
    let env = TestEnv::new()?;
    let id = queue_a_post(&env, "old policy")?;
    // The operator tightens the grant (a shorter expiry is a new policy version).
    let tightened = GATED_POST.replacen(
        "approval = \"required\"",
        "approval = { required = true, expires_after_hours = 1 }",
        1,
    );
    env.host.load(TestEnv::manifest(HOSTILE, &tightened)?)?;
    // Re-registering voided it at once: it never runs, whoever approves.
    assert_eq!(get(&env, &id)?.status, Status::Void);
    assert!(matches!(
        env.host.decide(&id, Verdict::Approve, "alice", None),
        Err(DecideError::Void { .. })
    ));
    assert_eq!(posts(&env, "old policy")?, 0);
    Ok(())
}

#[test]
fn of_two_concurrent_deciders_exactly_one_wins() -> Result<()> {
    let env = Arc::new(TestEnv::new()?);
    for round in 0..5 {
        let text = format!("race {round}");
        let id = queue_a_post(&env, &text)?;
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let (env, id) = (env.clone(), id.clone());
                let verdict = if i % 2 == 0 {
                    Verdict::Approve
                } else {
                    Verdict::Deny
                };
                std::thread::spawn(move || {
                    env.host
                        .decide(&id, verdict, crate::env::APPROVERS[i % 3], None)
                        .is_ok()
                })
            })
            .collect();
        let wins = handles
            .into_iter()
            .map(|h| h.join().unwrap_or(false))
            .filter(|w| *w)
            .count();
        assert_eq!(wins, 1, "round {round}");
        let status = get(&env, &id)?.status;
        let expected = if status == Status::Executed { 1 } else { 0 };
        assert_eq!(posts(&env, &text)?, expected, "round {round}: {status:?}");
    }
    Ok(())
}

#[test]
fn an_approved_action_interrupted_mid_execution_runs_once_on_resume() -> Result<()> {
    let env = TestEnv::new()?;
    // Crash after the approval was recorded, before execution: resume executes it.
    let id = queue_a_post(&env, "resumed")?;
    let mut a = get(&env, &id)?;
    a.status = Status::Approved;
    rewrite(&env, &a)?;
    assert_eq!(env.host.resume_approved()?.len(), 1);
    assert_eq!(posts(&env, "resumed")?, 1);
    assert!(env.host.resume_approved()?.is_empty());

    // Crash after the provider ran, before the outcome was recorded: resume
    // replays through the provider's idempotency key and nothing happens twice.
    let id = queue_a_post(&env, "once only")?;
    let pending = get(&env, &id)?;
    env.host.decide(&id, Verdict::Approve, "alice", None)?;
    assert_eq!(posts(&env, "once only")?, 1);
    rewrite(
        &env,
        &Approval {
            status: Status::Approved,
            decided_by: Some("alice".into()),
            ..pending
        },
    )?;
    let resumed = env.host.resume_approved()?;
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].status, Status::Executed);
    assert_eq!(posts(&env, "once only")?, 1);
    // Its write is counted once too (what `first = N` policies look at).
    let counted = env.host.approvals().writes_done(
        "test-employee",
        clancy::manifest::Integration::Slack,
        "channel:#general",
    )?;
    assert_eq!(counted, 2, "\"resumed\" and \"once only\", each once");
    Ok(())
}

#[test]
fn mail_outside_the_org_domain_is_gated_and_inside_it_is_not() -> Result<()> {
    let env = TestEnv::new()?;
    let before = env.host.sandbox().all_mail()?.len();
    let result = env.run(HOSTILE, GATED_POST, "send-mail")?;
    assert!(
        completed(&result)?.starts_with("sent: queued for approval"),
        "{:?}",
        result.end
    );
    assert_eq!(env.host.sandbox().all_mail()?.len(), before);
    let queued = env.host.approvals().list()?;
    assert!(
        queued[0]
            .gated_because
            .contains("outside the granted domains (northwind.example): attacker@evil.example"),
        "{}",
        queued[0].gated_because
    );
    Ok(())
}

#[test]
fn an_amount_threshold_gates_only_large_expense_reports() -> Result<()> {
    for (threshold_cents, gated) in [(10_000, true), (50_000, false)] {
        let env = TestEnv::new()?;
        let mut manifest = TestEnv::plugin_manifest("accounting-assistant", ACCOUNTING_ASSISTANT)?;
        manifest.grants[0].approval = ApprovalPolicy {
            over_amount_cents: Some(threshold_cents),
            ..ApprovalPolicy::none()
        };
        let result = env.host.load(manifest)?.run("Prepare expenses")?;
        let summary = completed(&result)?;
        assert_eq!(summary.contains("queued for approval"), gated, "{summary}");
        assert_eq!(
            env.host.sandbox().all_expense_reports()?.len(),
            usize::from(!gated)
        );
        if gated {
            let a = &env.host.approvals().list()?[0];
            assert!(
                a.gated_because
                    .contains("255.38 is over the approval threshold of 100.00"),
                "{}",
                a.gated_because
            );
            env.host.decide(&a.id, Verdict::Approve, "alice", None)?;
            assert_eq!(env.host.sandbox().all_expense_reports()?.len(), 1);
        }
    }
    Ok(())
}

#[test]
fn the_first_writes_of_a_new_employee_are_gated_then_run_directly() -> Result<()> {
    let env = TestEnv::new()?;
    let grants = GATED_POST.replacen("approval = \"required\"", "approval = { first = 2 }", 1);
    let run = |text: &str| -> Result<String> {
        Ok(completed(&env.run(HOSTILE, &grants, &format!("post {text}"))?)?.to_string())
    };
    for i in 0..2 {
        let id = queued_id(&run(&format!("trial {i}"))?, "posted")?;
        env.host.decide(&id, Verdict::Approve, "mia", None)?;
    }
    assert!(run("trusted now")?.starts_with("posted: done"));
    assert_eq!(posts(&env, "trusted now")?, 1);
    Ok(())
}
