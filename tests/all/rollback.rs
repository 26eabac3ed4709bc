//! Rollback: every reversible write undone on the sandbox workspace through
//! the mediator (audited, grant-checked), irreversible ones reported, and no
//! undo that would clobber a later change.

use anyhow::Result;
use clancy::audit::Kind;
use clancy::org::{UndoOutcome, UndoReport, Verdict};
use clancy_guests::{ACCOUNTING_ASSISTANT, CUSTOMER_SERVICE, SALES_COORDINATOR};

use crate::env::{TestEnv, clancy, completed, stderr, stdout, workspace_root};

fn run_plugin(env: &TestEnv, plugin: &str, component: &str, task: &str) -> Result<String> {
    let employee = env
        .host
        .load(TestEnv::plugin_manifest(plugin, component)?)?;
    let result = employee.run(task)?;
    completed(&result)?;
    Ok(result.task_id)
}

fn deal_stage(env: &TestEnv, id: &str) -> Result<Option<String>> {
    Ok(env
        .host
        .sandbox()
        .all_deals()?
        .into_iter()
        .find(|d| d.id == id)
        .map(|d| d.stage))
}

fn demo(env: &TestEnv) -> Result<Option<clancy::runtime::bindings::calendar::Event>> {
    Ok(env
        .host
        .sandbox()
        .all_events()?
        .into_iter()
        .find(|e| e.title == "Demo: Acorn Bank - 40 seats"))
}

fn outcome_of<'a>(reports: &'a [UndoReport], action: &str) -> Result<&'a UndoOutcome> {
    reports
        .iter()
        .find(|r| r.what.contains(action))
        .map(|r| &r.outcome)
        .ok_or_else(|| anyhow::anyhow!("no report for {action}: {reports:?}"))
}

#[test]
fn a_tasks_event_invitation_and_deal_change_are_undone_newest_first() -> Result<()> {
    let env = TestEnv::new()?;
    let task = run_plugin(&env, "sales-coordinator", SALES_COORDINATOR, "Book demos")?;
    assert_eq!(
        deal_stage(&env, "dl-401")?.as_deref(),
        Some("demo-scheduled")
    );
    assert!(demo(&env)?.is_some());

    let reports = env.host.undo_task(&task, "ops-lead")?;
    let actions: Vec<&str> = reports
        .iter()
        .map(|r| r.what.split(['(', ' ']).nth(2).unwrap_or(""))
        .collect();
    assert_eq!(
        actions,
        ["update-deal-stage", "send-invite", "create-event"],
        "newest first"
    );
    assert!(reports.iter().all(UndoReport::is_undone), "{reports:?}");
    assert_eq!(deal_stage(&env, "dl-401")?.as_deref(), Some("qualified"));
    assert!(demo(&env)?.is_none(), "the demo event is cancelled");

    // Each undo is audited as a call of the employee, naming what it undoes and who asked.
    let undos: Vec<_> = env
        .audit_of(&task, Kind::Result)?
        .into_iter()
        .filter(|e| e.record.undoes.is_some())
        .collect();
    assert_eq!(undos.len(), 3);
    assert!(undos.iter().all(|e| e.record.result.starts_with("undone: ")
        && e.record.reason.starts_with("ops-lead asked to undo #")
        && e.record.employee == "sales-coordinator"));
    assert_eq!(
        env.audit_of(&task, Kind::Intent)?.len(),
        3 + 6,
        "3 reads, 3 writes, 3 undos"
    );

    // Undoing again changes nothing and says it was done already.
    let again = env.host.undo_task(&task, "ops-lead")?;
    assert!(
        again
            .iter()
            .all(|r| matches!(r.outcome, UndoOutcome::AlreadyUndone(_)))
    );
    assert!(env.host.verify_audit(None)?.is_intact());
    Ok(())
}

#[test]
fn a_posted_ticket_is_deleted_on_undo() -> Result<()> {
    let env = TestEnv::new()?;
    let before = env.channel("#support")?;
    let task = run_plugin(
        &env,
        "customer-service",
        CUSTOMER_SERVICE,
        "Triage support mail",
    )?;
    assert!(env.channel("#support")?.len() > before.len());
    let reports = env.host.undo_task(&task, "ops-lead")?;
    assert!(!reports.is_empty() && reports.iter().all(UndoReport::is_undone));
    assert_eq!(env.channel("#support")?, before);
    Ok(())
}

#[test]
fn an_expense_report_is_voided_and_the_irreversible_file_write_is_reported() -> Result<()> {
    let env = TestEnv::new()?;
    let task = run_plugin(
        &env,
        "accounting-assistant",
        ACCOUNTING_ASSISTANT,
        "Prepare this month's expenses",
    )?;
    let reports = env.host.undo_task(&task, "ops-lead")?;
    assert!(matches!(
        outcome_of(&reports, "create-expense-report")?,
        UndoOutcome::Undone(_)
    ));
    assert_eq!(outcome_of(&reports, "files")?, &UndoOutcome::Irreversible);
    let report = &env.host.sandbox().all_expense_reports()?[0];
    assert_eq!(report.status, "void");
    // The file the employee wrote is still there: nothing pretends otherwise.
    let folder = env.data_dir().join("files/default/expense-reports");
    assert_eq!(std::fs::read_dir(folder)?.count(), 1);
    Ok(())
}

#[test]
fn a_sent_mail_is_reported_as_irreversible() -> Result<()> {
    let env = TestEnv::new()?;
    let task = run_plugin(&env, "sales-coordinator", SALES_COORDINATOR, "Book demos")?;
    let pending = env.host.approvals().list()?;
    env.host
        .decide(&pending[0].id, Verdict::Approve, "alice", None)?;
    let reports = env.host.undo_task(&task, "ops-lead")?;
    assert_eq!(outcome_of(&reports, "send")?, &UndoOutcome::Irreversible);
    assert_eq!(
        env.host
            .sandbox()
            .all_mail()?
            .iter()
            .filter(|m| m.labels == ["SENT", "sales"])
            .count(),
        1
    );
    Ok(())
}

#[test]
fn undo_is_refused_after_a_conflicting_change_and_says_so() -> Result<()> {
    use clancy::providers::{CalendarProvider, CrmProvider};
    let env = TestEnv::new()?;
    let task = run_plugin(&env, "sales-coordinator", SALES_COORDINATOR, "Book demos")?;
    // A human moves the deal on and adds a colleague to the demo.
    let sandbox = env.host.sandbox();
    sandbox.update_deal_stage("main", "dl-401", "proposal", None)?;
    let event = demo(&env)?.ok_or_else(|| anyhow::anyhow!("no demo"))?;
    sandbox.send_invite("sales", &event.id, &["sam@northwind.example".into()], None)?;

    let reports = env.host.undo_task(&task, "ops-lead")?;
    assert!(
        reports.iter().all(|r| matches!(&r.outcome,
            UndoOutcome::NotUndone(why) if why.contains("changed after this action"))),
        "{reports:?}"
    );
    assert_eq!(deal_stage(&env, "dl-401")?.as_deref(), Some("proposal"));
    let event = demo(&env)?.ok_or_else(|| anyhow::anyhow!("the demo was cancelled"))?;
    assert_eq!(
        event.attendees,
        ["dan.whitfield@acornbank.example", "sam@northwind.example"]
    );
    let refused = env
        .audit_of(&task, Kind::Result)?
        .into_iter()
        .filter(|e| e.record.result.starts_with("not undone:"))
        .count();
    assert_eq!(refused, 3);
    Ok(())
}

#[test]
fn undo_needs_the_grant_the_write_needed() -> Result<()> {
    let env = TestEnv::new()?;
    let task = run_plugin(&env, "sales-coordinator", SALES_COORDINATOR, "Book demos")?;
    // The employee is reloaded without the right to update deals.
    let mut manifest = TestEnv::plugin_manifest("sales-coordinator", SALES_COORDINATOR)?;
    for g in &mut manifest.grants {
        g.actions.remove(&clancy::integrations::Action::UpdateDeals);
    }
    env.host.load(manifest)?;
    let reports = env.host.undo_task(&task, "ops-lead")?;
    assert!(matches!(
        outcome_of(&reports, "update-deal-stage")?,
        UndoOutcome::NotUndone(why) if why.starts_with("denied:")
    ));
    assert_eq!(
        deal_stage(&env, "dl-401")?.as_deref(),
        Some("demo-scheduled")
    );
    assert!(
        env.audit_of(&task, Kind::Refusal)?
            .iter()
            .any(|e| e.record.undoes.is_some())
    );
    Ok(())
}

#[test]
fn the_cli_undoes_explains_and_rejects_bad_action_ids() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let manifest = workspace_root().join("plugins/sales-coordinator/employee.toml");
    let run = clancy(
        &data,
        &[
            "run",
            &manifest.display().to_string(),
            "--component",
            SALES_COORDINATOR,
            "--task",
            "Book demos",
        ],
    )?;
    assert!(run.status.success(), "{}", stderr(&run));
    let task = stdout(&run)
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no task id"))?;

    let undo = clancy(&data, &["undo", "--task", &task[..8], "--as", "ops-lead"])?;
    let text = stdout(&undo);
    assert!(undo.status.success(), "{text}{}", stderr(&undo));
    assert_eq!(text.matches(": undone (#").count(), 3, "{text}");

    let explain = clancy(&data, &["audit", "explain", &task[..8]])?;
    let text = stdout(&explain);
    assert!(explain.status.success());
    for part in [
        "It was asked: \"Book demos\"",
        "It read:",
        "It did:",
        "It asked a human to approve:",
        "Rolled back:",
        "because: \"A demo is booked for",
        "It ended: completed",
    ] {
        assert!(text.contains(part), "missing {part:?} in\n{text}");
    }

    for (args, message) in [
        (vec!["undo", "99999", "--as", "ops"], "no action #99999"),
        (
            vec!["undo", "twelve", "--as", "ops"],
            "is not an action number",
        ),
        (
            vec!["undo", "--task", "zzzz", "--as", "ops"],
            "no task \"zzzz\"",
        ),
        (vec!["audit", "explain", "zzzz"], "no task \"zzzz\""),
    ] {
        let o = clancy(&data, &args)?;
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains(message), "{args:?}: {}", stderr(&o));
    }
    // Undoing a read is not an undo: nothing changes, exit 1.
    let read = clancy(&data, &["undo", "4", "--as", "ops"])?;
    assert_eq!(read.status.code(), Some(1));
    assert!(stdout(&read).contains("nothing to undo"));
    Ok(())
}
