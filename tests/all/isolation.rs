//! One organisation's employees, data and audit log are invisible to another.

use std::sync::Arc;

use anyhow::Result;
use clancy::org::Org;
use clancy::store::{SledStore, Store};
use clancy_guests::CUSTOMER_SERVICE;

use crate::env::TestEnv;

/// Two orgs, acme and globex, sharing one data dir and store, both seeded.
fn two_orgs() -> Result<(tempfile::TempDir, Org, Org)> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&data.join("store"))?);
    let acme = Org::open_with_store(&data, "acme", store.clone())?;
    let globex = Org::open_with_store(&data, "globex", store)?;
    acme.sandbox().seed()?;
    globex.sandbox().seed()?;
    Ok((dir, acme, globex))
}

#[test]
fn one_orgs_work_and_audit_log_are_invisible_to_another() -> Result<()> {
    let (_dir, acme, globex) = two_orgs()?;
    let globex_support_before = globex.sandbox().all_chat()?;

    let employee = acme.load(TestEnv::plugin_manifest(
        "customer-service",
        CUSTOMER_SERVICE,
    )?)?;
    employee.run("Triage support mail")?;

    assert!(!acme.audit().entries()?.is_empty());
    assert!(
        globex.audit().entries()?.is_empty(),
        "globex sees acme's audit entries"
    );
    assert_eq!(
        globex.sandbox().all_chat()?,
        globex_support_before,
        "acme's tickets landed in globex"
    );
    assert!(acme.verify_audit(None)?.is_intact() && globex.verify_audit(None)?.is_intact());
    Ok(())
}

/// Everything one org's sandbox workspace holds, for comparison.
fn workspace(host: &Org) -> Result<String> {
    let s = host.sandbox();
    Ok(format!(
        "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        s.all_mail()?,
        s.all_chat()?,
        s.all_contacts()?,
        s.all_deals()?,
        s.all_events()?,
        s.all_invoices()?,
        s.all_expense_reports()?
    ))
}

#[test]
fn approvals_operators_outbox_secrets_files_limits_and_every_sandbox_service_stay_in_their_org()
-> Result<()> {
    use clancy::operators::{Operator, Role};
    use clancy::org::{DecideError, Verdict};
    use clancy_guests::{ACCOUNTING_ASSISTANT, HOSTILE, SALES_COORDINATOR};

    let (dir, acme, globex) = two_orgs()?;
    let data = dir.path().join("data");
    let globex_before = workspace(&globex)?;
    acme.operators().put(&Operator {
        name: "ada".into(),
        role: Role::Admin,
    })?;

    // Acme's employees touch every service: mail, calendar and CRM (sales),
    // ledger, files and chat (accounting), and a gated post with a webhook.
    acme.load(TestEnv::plugin_manifest(
        "sales-coordinator",
        SALES_COORDINATOR,
    )?)?
    .run("Book demos")?;
    acme.load(TestEnv::plugin_manifest(
        "accounting-assistant",
        ACCOUNTING_ASSISTANT,
    )?)?
    .run("Prepare expenses")?;
    let gated = format!(
        "{}\n[[notify]]\nurl = \"http://127.0.0.1:9/hook\"\nallow_private_address = true\n",
        crate::env::with_hostile_imports(
            "[[grant]]\nintegration = \"slack\"\nscope = \"channel:#general\"\nactions = [\"post\"]\napproval = \"required\"\ncalls_per_minute = 1\n"
        )
    );
    let queued = acme
        .load(TestEnv::manifest(HOSTILE, &gated)?)?
        .run("post acme only")?;
    let acme_id = crate::env::queued_id(crate::env::completed(&queued)?, "posted")?;
    let acme_pending = acme.approvals().list()?;
    assert!(acme_pending.len() >= 2, "{acme_pending:?}");
    assert!(!acme.outbox().list()?.is_empty());

    // Globex sees none of it.
    assert_eq!(workspace(&globex)?, globex_before);
    assert!(globex.approvals().list()?.is_empty());
    assert!(globex.approvals().get(&acme_id)?.is_none());
    assert!(matches!(
        globex.decide(&acme_id, Verdict::Approve, "ada", None),
        Err(DecideError::Unknown(_))
    ));
    assert!(globex.operators().list()?.is_empty());
    assert!(globex.outbox().list()?.is_empty());
    assert_ne!(acme.outbox().secret()?, globex.outbox().secret()?);
    assert!(globex.registered()?.is_empty());
    assert!(globex.stored_manifest("sales-coordinator")?.is_none());
    assert!(globex.audit().entries()?.is_empty());
    // Acme's files and pinned components live under acme's own folders.
    assert!(
        data.join("files/acme/expense-reports")
            .read_dir()?
            .next()
            .is_some()
    );
    assert!(!data.join("files/globex/expense-reports").exists());
    assert!(data.join("components/acme").read_dir()?.next().is_some());
    assert!(!data.join("components/globex").exists());

    // Acme spent its employee's rate limit; globex's namesake has its own.
    let second = acme
        .load(TestEnv::manifest(HOSTILE, &gated)?)?
        .run("post acme again")?;
    assert!(crate::env::completed(&second)?.starts_with("refused: rate limited"));
    globex.sandbox().seed()?;
    let globex_run = globex
        .load(TestEnv::manifest(HOSTILE, &gated)?)?
        .run("post globex only")?;
    assert!(
        crate::env::completed(&globex_run)?.starts_with("posted: queued for approval"),
        "{:?}",
        globex_run.end
    );
    // And an acme admin is nobody in globex: it cannot decide there.
    let globex_id = crate::env::queued_id(crate::env::completed(&globex_run)?, "posted")?;
    assert!(matches!(
        globex.decide(&globex_id, Verdict::Approve, "ada", None),
        Err(DecideError::NotAllowed { .. })
    ));
    Ok(())
}
