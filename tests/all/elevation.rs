//! Just-in-time elevation: an employee asks, with its reason, for a
//! time-boxed widening of a grant; it goes through the approval queue, is in
//! force only once approved, and ends on its own, audited.

use anyhow::Result;
use chrono::Duration;
use clancy::approvals::Status;
use clancy::audit::Kind;
use clancy::org::Verdict;
use clancy_guests::HOSTILE;

use crate::env::{TestEnv, clocked_env, completed, queued_id, with_hostile_imports};

const READ_ONLY_CHAT: &str = r##"
[[grant]]
integration = "slack"
scope = "channel:#general"
actions = ["read"]
"##;

fn run(env: &TestEnv, task: &str) -> Result<String> {
    let result = env.run(HOSTILE, &with_hostile_imports(READ_ONLY_CHAT), task)?;
    Ok(completed(&result)?.to_string())
}

fn ask(env: &TestEnv, what: &str) -> Result<String> {
    queued_id(&run(env, &format!("elevate {what}"))?, "elevation")
}

#[test]
fn write_where_it_has_read_once_approved_and_only_until_it_expires() -> Result<()> {
    let (env, clock) = clocked_env()?;
    let refused = run(&env, "post-to channel:#general before")?;
    assert!(refused.starts_with("refused: denied:"), "{refused}");

    let id = ask(&env, "slack channel:#general post 60")?;
    let request = env
        .host
        .approvals()
        .get(&id)?
        .ok_or_else(|| anyhow::anyhow!("gone"))?;
    assert!(
        request
            .preview()
            .contains("widen its grants: post on slack channel:#general for 60 minutes")
    );
    assert_eq!(
        request.request.reason,
        "The operator asked me to post there for a while."
    );
    // Asking grants nothing.
    assert!(run(&env, "post-to channel:#general still-waiting")?.starts_with("refused: denied:"));

    let granted = env.host.decide(&id, Verdict::Approve, "mia", None)?;
    assert_eq!(granted.status, Status::Executed);
    assert!(
        granted
            .outcome
            .as_deref()
            .is_some_and(|o| o.starts_with("granted: post on slack channel:#general until"))
    );
    assert_eq!(
        run(&env, "post-to channel:#general during")?
            .split(' ')
            .next(),
        Some("posted:")
    );
    assert!(env.channel("#general")?.contains(&"during".to_string()));

    clock.advance(Duration::minutes(61));
    env.host.tick()?;
    let after = run(&env, "post-to channel:#general after")?;
    assert!(after.starts_with("refused: denied:"), "{after}");
    assert!(!env.channel("#general")?.contains(&"after".to_string()));
    let ended = env.audit()?.into_iter().any(|e| {
        e.kind == Kind::Note
            && e.record.action == "elevation-ended"
            && e.record.approval.as_deref() == Some(id.as_str())
    });
    assert!(ended, "the end of the widening is audited");
    Ok(())
}

#[test]
fn one_more_channel_for_a_while_appears_as_a_handle_and_disappears() -> Result<()> {
    let (env, clock) = clocked_env()?;
    assert!(run(&env, "post-to channel:#sales x")?.starts_with("no handle for channel:#sales"));
    let id = ask(&env, "slack channel:#sales post,read 30")?;
    env.host
        .decide(&id, Verdict::Approve, "mia", Some("for the launch"))?;
    assert!(run(&env, "post-to channel:#sales launch day")?.starts_with("posted:"));
    assert!(env.channel("#sales")?.contains(&"launch day".to_string()));
    clock.advance(Duration::minutes(30));
    assert!(
        run(&env, "post-to channel:#sales too late")?.starts_with("no handle for channel:#sales")
    );
    assert!(!env.channel("#sales")?.contains(&"too late".to_string()));
    Ok(())
}

#[test]
fn a_denied_widening_grants_nothing() -> Result<()> {
    let (env, _clock) = clocked_env()?;
    let id = ask(&env, "slack channel:#sales post 30")?;
    env.host.decide(&id, Verdict::Deny, "mia", None)?;
    assert!(run(&env, "post-to channel:#sales x")?.starts_with("no handle"));
    assert!(env.host.approvals().all_elevations()?.is_empty());
    Ok(())
}

#[test]
fn widenings_beyond_what_may_be_asked_are_refused_audited_and_not_queued() -> Result<()> {
    let (env, _clock) = clocked_env()?;
    for (what, refusal) in [
        (
            "hubspot portal:main update-deals 60",
            "denied: test-employee holds no hubspot grant",
        ),
        (
            "telepathy mind:all read 60",
            "rejected: unknown integration \"telepathy\"",
        ),
        ("slack label:x post 60", "must look like \"channel:NAME\""),
        (
            "slack channel:#sales delete 60",
            "actions must be some of: read, post",
        ),
        (
            "slack channel:#sales post 0",
            "minutes must be from 1 to 1440",
        ),
        (
            "slack channel:#sales post 1441",
            "minutes must be from 1 to 1440",
        ),
        (
            "slack channel:#general read 60",
            "already holds read on channel:#general",
        ),
    ] {
        let summary = run(&env, &format!("elevate {what}"))?;
        assert!(
            summary.starts_with("elevation refused: "),
            "{what}: {summary}"
        );
        assert!(summary.contains(refusal), "{what}: {summary}");
    }
    assert!(env.host.approvals().list()?.is_empty());
    let refusals = env
        .audit()?
        .into_iter()
        .filter(|e| e.kind == Kind::Refusal && e.record.action == "request-elevation")
        .count();
    assert_eq!(refusals, 7);
    Ok(())
}
