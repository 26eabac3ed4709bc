//! The three example employees do real work on the sandbox workspace.

use anyhow::Result;
use clancy::audit::{Decision, Kind};
use clancy::runtime::imports::check_imports;
use clancy_guests::{ACCOUNTING_ASSISTANT, CUSTOMER_SERVICE, SALES_COORDINATOR};

use crate::env::{TestEnv, completed};

#[test]
fn customer_service_files_one_ticket_per_support_mail_with_the_crm_customer() -> Result<()> {
    let env = TestEnv::new()?;
    let before = env.channel("#support")?.len();
    let employee = env.host.load(TestEnv::plugin_manifest(
        "customer-service",
        CUSTOMER_SERVICE,
    )?)?;
    let result = employee.run("Triage today's support mail")?;
    assert!(
        completed(&result)?.starts_with("filed 3 tickets in channel:#support"),
        "{:?}",
        result.end
    );

    let support = env.channel("#support")?;
    assert_eq!(support.len(), before + 3);
    let tickets = &support[before..];
    let p1 = tickets
        .iter()
        .find(|t| t.contains("Cannot log in"))
        .ok_or_else(|| anyhow::anyhow!("no login ticket"))?;
    assert!(
        p1.starts_with("[P1]") && p1.contains("Kenji Sato at Harbor Logistics"),
        "{p1}"
    );
    assert!(
        tickets
            .iter()
            .any(|t| t.starts_with("[P2] Invoice INV-2041"))
    );
    // The annual-plan question fits no rule: filed for the team to see,
    // marked for triage, and an operator is asked instead of a guess.
    let questions = env.host.approvals().list()?;
    assert_eq!(questions.len(), 1);
    assert!(
        tickets.iter().any(|t| t.starts_with(&format!(
            "[needs triage: asked {}] Question about the annual plan",
            questions[0].id
        ))),
        "{tickets:?}"
    );
    // The HR mail sits outside the granted label: never read, never filed.
    assert!(!tickets.iter().any(|t| t.contains("salary")));

    // Every call is audited: intent then result, each post with its reason.
    let intents = env.audit_of(&result.task_id, Kind::Intent)?;
    let results = env.audit_of(&result.task_id, Kind::Result)?;
    assert_eq!(intents.len(), results.len());
    let posts: Vec<_> = intents
        .iter()
        .filter(|e| e.record.action == "post")
        .collect();
    assert_eq!(posts.len(), 3);
    assert!(
        posts
            .iter()
            .all(|e| e.record.reason.starts_with("Filing a ")
                && e.record.scope == "channel:#support")
    );
    assert!(results.iter().all(|e| e.record.intent.is_some()));
    assert!(
        env.audit_of(&result.task_id, Kind::Note)?[0]
            .record
            .reason
            .contains("Triage today's support mail")
    );
    assert!(env.host.verify_audit(None)?.is_intact());
    Ok(())
}

#[test]
fn accounting_assistant_turns_receipt_mails_into_an_expense_report_and_a_summary_file() -> Result<()>
{
    let env = TestEnv::new()?;
    let employee = env.host.load(TestEnv::plugin_manifest(
        "accounting-assistant",
        ACCOUNTING_ASSISTANT,
    )?)?;
    let result = employee.run("Prepare this month's expenses")?;
    let summary = completed(&result)?;
    assert!(
        summary.starts_with("expense report with 3 lines, GBP 255.38"),
        "{summary}"
    );

    let reports = env.host.sandbox().all_expense_reports()?;
    assert_eq!(reports.len(), 1);
    let lines = &reports[0].report.lines;
    let mut refs: Vec<&str> = lines.iter().map(|l| l.receipt_ref.as_str()).collect();
    refs.sort();
    assert_eq!(refs, ["mail:m-1004", "mail:m-1005", "mail:m-1006"]);
    let train = lines
        .iter()
        .find(|l| l.receipt_ref == "mail:m-1004")
        .ok_or_else(|| anyhow::anyhow!("no train line"))?;
    assert_eq!(
        (train.amount_cents, train.category.as_str()),
        (8640, "travel")
    );

    let folder = env.data_dir().join("files/default/expense-reports");
    let files: Vec<_> = std::fs::read_dir(&folder)?.collect::<Result<_, _>>()?;
    assert_eq!(files.len(), 1);
    let text = std::fs::read_to_string(files[0].path())?;
    assert!(
        text.contains("Total: GBP 255.38") && text.contains("INV-2040 Harbor Logistics"),
        "{text}"
    );

    let accounting = env.channel("#accounting")?;
    assert!(
        accounting
            .last()
            .is_some_and(|m| m.starts_with("Expense report filed: 3 receipts, GBP 255.38"))
    );
    // Its writes carry inverses for rollback (the expense report can be voided).
    let results = env.audit_of(&result.task_id, Kind::Result)?;
    let report_entry = results
        .iter()
        .find(|e| e.record.action == "create-expense-report")
        .ok_or_else(|| anyhow::anyhow!("no expense report entry"))?;
    assert!(
        matches!(
            report_entry.record.inverse,
            Some(clancy::integrations::Inverse::Ledger(
                clancy::integrations::ledger::LedgerInverse::VoidExpenseReport { .. }
            ))
        ),
        "{:?}",
        report_entry.record.inverse
    );
    Ok(())
}

#[test]
fn sales_coordinator_books_a_demo_and_its_follow_up_mail_waits_for_approval() -> Result<()> {
    let env = TestEnv::new()?;
    let mail_before = env.host.sandbox().all_mail()?.len();
    let employee = env.host.load(TestEnv::plugin_manifest(
        "sales-coordinator",
        SALES_COORDINATOR,
    )?)?;
    let result = employee.run("Book demos for qualified deals")?;
    let summary = completed(&result)?;
    assert!(summary.contains("Acorn Bank - 40 seats: demo"), "{summary}");
    assert!(
        summary.contains("follow-up to dan.whitfield@acornbank.example: queued for approval (ap-"),
        "{summary}"
    );

    let deal = env
        .host
        .sandbox()
        .all_deals()?
        .into_iter()
        .find(|d| d.id == "dl-401");
    assert_eq!(deal.map(|d| d.stage), Some("demo-scheduled".to_string()));
    let demo = env
        .host
        .sandbox()
        .all_events()?
        .into_iter()
        .find(|e| e.title == "Demo: Acorn Bank - 40 seats");
    let demo = demo.ok_or_else(|| anyhow::anyhow!("no demo event"))?;
    assert_eq!(demo.attendees, ["dan.whitfield@acornbank.example"]);
    // The gated mail has not run; it waits with its full draft for a human.
    assert_eq!(env.host.sandbox().all_mail()?.len(), mail_before);
    let queued = env.audit_of(&result.task_id, Kind::Queued)?;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].record.decision, Some(Decision::Gated));
    assert_eq!(queued[0].record.action, "send");
    let pending = env.host.approvals().list()?;
    assert_eq!(pending.len(), 1);
    assert!(
        pending[0]
            .preview()
            .contains("(irreversible: a sent mail cannot be recalled)")
    );
    env.host
        .decide(&pending[0].id, clancy::org::Verdict::Approve, "alice", None)?;
    let sent: Vec<_> = env
        .host
        .sandbox()
        .all_mail()?
        .into_iter()
        // Filed under the granted label as well as SENT.
        .filter(|m| m.labels == ["SENT", "sales"])
        .collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, ["dan.whitfield@acornbank.example"]);
    Ok(())
}

#[test]
fn each_plugin_imports_exactly_what_its_manifest_grants() -> Result<()> {
    let env = TestEnv::new()?;
    let runtime = env.host.runtime()?;
    for (plugin, component, absent) in [
        (
            "customer-service",
            CUSTOMER_SERVICE,
            &["ledger", "calendar", "files"][..],
        ),
        (
            "accounting-assistant",
            ACCOUNTING_ASSISTANT,
            &["crm", "calendar"][..],
        ),
        (
            "sales-coordinator",
            SALES_COORDINATOR,
            &["ledger", "chat", "files"][..],
        ),
    ] {
        let manifest = TestEnv::plugin_manifest(plugin, component)?;
        let (_, imports) = runtime.compile(&manifest)?;
        assert_eq!(
            check_imports(&manifest, &imports),
            Vec::<String>::new(),
            "{plugin}"
        );
        for iface in absent {
            let name = format!("clancy:employee/{iface}@");
            assert!(
                !imports.iter().any(|i| i.starts_with(&name)),
                "{plugin} imports {iface}"
            );
        }
    }
    Ok(())
}
