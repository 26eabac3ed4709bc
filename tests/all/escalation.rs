//! Who decides: escalation ladders driven by an injected clock (and by the
//! stored timestamps alone, so they survive restarts), operator roles, and
//! edit-then-approve.

use std::sync::Arc;

use anyhow::Result;
use chrono::{Duration, Utc};
use clancy::approvals::{ManualClock, Status};
use clancy::audit::Kind;
use clancy::operators::{Operator, Role};
use clancy::org::{DataDirMode, DecideError, Org, Verdict};
use clancy_guests::HOSTILE;

use crate::env::{TestEnv, completed, queued_id, with_hostile_imports};

const LADDER: &str = r##"
[[grant]]
integration = "slack"
scope = "channel:#general"
actions = ["post"]
approval = { required = true, escalation = [ { approver = "role:manager", hours = 4 }, { approver = "ada", hours = 24 } ] }
"##;

fn operators(host: &Org) -> Result<()> {
    for (name, role) in [
        ("mia", Role::Manager),
        ("ada", Role::User),
        ("root", Role::Admin),
        ("uma", Role::User),
    ] {
        host.operators().put(&Operator {
            name: name.into(),
            role,
        })?;
    }
    Ok(())
}

fn queue(host: &Org, text: &str) -> Result<String> {
    let manifest = TestEnv::manifest(HOSTILE, &with_hostile_imports(LADDER))?;
    let result = host.load(manifest)?.run(&format!("post {text}"))?;
    queued_id(completed(&result)?, "posted")
}

fn clocked_env() -> Result<(TestEnv, Arc<ManualClock>)> {
    let (env, clock) = crate::env::clocked_env()?;
    operators(&env.host)?;
    Ok((env, clock))
}

fn not_allowed(r: Result<clancy::approvals::Approval, DecideError>) -> bool {
    matches!(r, Err(DecideError::NotAllowed { .. }))
}

#[test]
fn a_request_escalates_up_its_ladder_on_the_clock_and_only_the_current_approver_decides()
-> Result<()> {
    let (env, clock) = clocked_env()?;
    let id = queue(&env.host, "ladder one")?;
    let h = &env.host;
    // Step 1: managers (and admins) decide; a user or a stranger may not.
    assert!(not_allowed(h.decide(&id, Verdict::Approve, "uma", None)));
    assert!(not_allowed(h.decide(&id, Verdict::Approve, "eve", None)));
    clock.advance(Duration::hours(3));
    assert!(h.tick()?.is_empty(), "still within the manager's 4 hours");

    clock.advance(Duration::hours(2));
    let changed = h.tick()?;
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].step, 1);
    assert!(h.tick()?.is_empty(), "escalating is done once");
    let escalated = env
        .audit()?
        .into_iter()
        .filter(|e| e.kind == Kind::Decision)
        .any(|e| e.record.result == "escalated to ada: role:manager did not decide within 4 h");
    assert!(escalated);
    // Step 2: the manager may no longer decide; ada (named) may.
    assert!(not_allowed(h.decide(&id, Verdict::Approve, "mia", None)));
    assert_eq!(
        env.channel("#general")?
            .iter()
            .filter(|m| *m == "ladder one")
            .count(),
        0
    );
    let done = h.decide(&id, Verdict::Approve, "ada", Some("fine"))?;
    assert_eq!(done.status, Status::Executed);
    assert_eq!(
        env.channel("#general")?
            .iter()
            .filter(|m| *m == "ladder one")
            .count(),
        1
    );
    Ok(())
}

#[test]
fn after_the_last_step_a_request_is_auto_denied_and_never_runs() -> Result<()> {
    let (env, clock) = clocked_env()?;
    let id = queue(&env.host, "ladder two")?;
    clock.advance(Duration::hours(4 + 24));
    let changed = env.host.tick()?;
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].status, Status::Expired);
    assert!(matches!(
        env.host.decide(&id, Verdict::Approve, "root", None),
        Err(DecideError::Expired(_))
    ));
    assert!(env.channel("#general")?.iter().all(|m| m != "ladder two"));
    Ok(())
}

#[test]
fn an_admin_can_decide_at_any_step() -> Result<()> {
    let (env, _clock) = clocked_env()?;
    let id = queue(&env.host, "ladder three")?;
    let done = env
        .host
        .decide(&id, Verdict::Deny, "root", Some("not now"))?;
    assert_eq!(done.status, Status::Denied);
    Ok(())
}

#[test]
fn escalation_survives_a_restart_because_it_runs_from_stored_time() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let start = Utc::now();
    let id = {
        let mut host = Org::open(&data, "default", DataDirMode::Create)?;
        host.use_clock(Arc::new(ManualClock::new(start)));
        host.sandbox().seed()?;
        operators(&host)?;
        queue(&host, "across restarts")?
    };
    // A new host process, five hours later, that never saw the request queued.
    let mut host = Org::open(&data, "default", DataDirMode::Existing)?;
    host.use_clock(Arc::new(ManualClock::new(start + Duration::hours(5))));
    let changed = host.tick()?;
    assert_eq!(changed.len(), 1);
    assert_eq!((changed[0].id.as_str(), changed[0].step), (id.as_str(), 1));
    assert!(not_allowed(host.decide(&id, Verdict::Approve, "mia", None)));
    Ok(())
}

#[test]
fn edit_then_approve_runs_the_edited_action_once_under_a_new_hash() -> Result<()> {
    let env = TestEnv::new()?;
    operators(&env.host)?;
    let id = queue(&env.host, "draft wording")?;
    let original = env
        .host
        .approvals()
        .get(&id)?
        .ok_or_else(|| anyhow::anyhow!("gone"))?;

    // Bad edits change nothing.
    for edits in [
        vec![("subject", "x")],
        vec![("text", "draft wording")],
        vec![],
    ] {
        let edits: Vec<(String, String)> = edits
            .into_iter()
            .map(|(f, v)| (f.into(), v.into()))
            .collect();
        assert!(matches!(
            env.host.edit_and_approve(&id, &edits, "mia", None),
            Err(DecideError::BadEdit { .. })
        ));
    }
    assert_eq!(
        env.host.approvals().get(&id)?.map(|a| a.status),
        Some(Status::Pending)
    );

    let edits = [("text".to_string(), "final wording".to_string())];
    let edited = env
        .host
        .edit_and_approve(&id, &edits, "mia", Some("tone"))?;
    assert_eq!(edited.status, Status::Executed);
    assert_eq!(edited.edited_from.as_deref(), Some(id.as_str()));
    assert_ne!(edited.hash, original.hash);
    assert_eq!(edited.hash, edited.request.hash());
    let general = env.channel("#general")?;
    assert_eq!(general.iter().filter(|m| *m == "final wording").count(), 1);
    assert!(general.iter().all(|m| m != "draft wording"));

    let superseded = env
        .host
        .approvals()
        .get(&id)?
        .ok_or_else(|| anyhow::anyhow!("gone"))?;
    assert_eq!(superseded.status, Status::Edited);
    // The original is used up: no approving it afterwards.
    assert!(matches!(
        env.host.decide(&id, Verdict::Approve, "root", None),
        Err(DecideError::AlreadyDecided { .. })
    ));
    let decision = env
        .audit()?
        .into_iter()
        .find(|e| e.kind == Kind::Decision && e.record.approval.as_deref() == Some(id.as_str()))
        .ok_or_else(|| anyhow::anyhow!("no decision entry"))?;
    assert!(
        decision
            .record
            .result
            .starts_with("edited by mia (changed text) and approved as ap-")
            && decision.record.result.contains(&original.hash[..12])
            && decision.record.result.contains(&edited.hash[..12]),
        "{}",
        decision.record.result
    );
    Ok(())
}

/// The notes the employee wrote from `on-decision`, in order.
fn heard(env: &TestEnv) -> Result<Vec<String>> {
    Ok(env
        .audit()?
        .into_iter()
        .filter(|e| e.kind == Kind::Note && e.record.reason.starts_with("heard: "))
        .map(|e| e.record.reason)
        .collect())
}

#[test]
fn the_employee_hears_every_decision_in_a_fresh_instance_under_its_task() -> Result<()> {
    let (env, clock) = clocked_env()?;
    let approved = queue(&env.host, "hear approve")?;
    let denied = queue(&env.host, "hear deny")?;
    let edited = queue(&env.host, "hear edit")?;
    let expired = queue(&env.host, "hear expiry")?;
    let done = env.host.decide(&approved, Verdict::Approve, "mia", None)?;
    env.host
        .decide(&denied, Verdict::Deny, "mia", Some("wrong channel"))?;
    env.host.edit_and_approve(
        &edited,
        &[("text".to_string(), "heard, edited".to_string())],
        "mia",
        None,
    )?;
    clock.advance(Duration::hours(29));
    env.host.tick()?;

    let notes = heard(&env)?;
    assert_eq!(
        notes,
        [
            format!(
                "heard: {approved} executed ({})",
                done.outcome.unwrap_or_default()
            ),
            format!("heard: {denied} denied (mia: wrong channel)"),
            notes[2].clone(),
            format!("heard: {expired} expired"),
        ]
    );
    // An edited request is reported under the id the employee was given.
    assert!(notes[2].starts_with(&format!("heard: {edited} executed (done: ")));
    // Each callback is audited under the task that queued the action.
    let approval = env
        .host
        .approvals()
        .get(&approved)?
        .ok_or_else(|| anyhow::anyhow!("gone"))?;
    let reaction = env
        .audit()?
        .into_iter()
        .find(|e| {
            e.kind == Kind::Reaction && e.record.approval.as_deref() == Some(approved.as_str())
        })
        .ok_or_else(|| anyhow::anyhow!("no reaction entry"))?;
    assert_eq!(reaction.record.task, approval.request.task);
    assert_eq!(reaction.record.result, "returned");
    let explained = env.host.explain(&approval.request.task)?;
    assert!(
        explained.contains("the employee heard of it: on-decision("),
        "{explained}"
    );
    Ok(())
}

#[test]
fn a_component_of_the_plain_employee_world_is_decided_on_but_never_called_back() -> Result<()> {
    let env = TestEnv::new()?;
    let grants = r##"
[[grant]]
integration = "slack"
scope = "channel:#general"
actions = ["post"]
approval = "required"
"##;
    let result = env.run(clancy_guests::PLAIN_WORLD, grants, "plain hello")?;
    let id = queued_id(completed(&result)?, "posted")?;
    let done = env.host.decide(&id, Verdict::Approve, "mia", None)?;
    assert_eq!(done.status, Status::Executed);
    assert_eq!(
        env.channel("#general")?
            .iter()
            .filter(|m| *m == "plain hello")
            .count(),
        1
    );
    assert!(
        env.audit()?.iter().all(|e| e.kind != Kind::Reaction),
        "no on-decision export, so no callback"
    );
    Ok(())
}
