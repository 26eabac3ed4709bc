//! Limits and budgets that hold: rate limits persist across tasks,
//! processes, undo and widened scopes; daily budgets per grant cap writes
//! and money, for guest calls and approved actions alike.

use anyhow::Result;
use clancy::approvals::Status;
use clancy::audit::{Decision, Kind};
use clancy::org::{UndoOutcome, Verdict};
use clancy_guests::{ACCOUNTING_ASSISTANT, HOSTILE};

use crate::env::{TestEnv, clancy, completed, queued_id, stderr, stdout, with_hostile_imports};

fn flood(env: &TestEnv, grants: &str) -> Result<String> {
    let result = env.run(HOSTILE, &with_hostile_imports(grants), "flood")?;
    Ok(completed(&result)?.to_string())
}

const POST: &str = r##"
[[grant]]
integration = "slack"
scope = "channel:#general"
actions = ["post"]
"##;

#[test]
fn a_rate_limit_holds_across_two_processes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let manifest = dir.path().join("employee.toml");
    std::fs::write(
        &manifest,
        format!(
            "name = \"flooder\"\ncomponent = {HOSTILE:?}\n{POST}{}\n[limits]\ncalls_per_minute = 30\n",
            clancy_guests::HOSTILE_IMPORT_GRANTS
        ),
    )?;
    let manifest = manifest.to_string_lossy().to_string();
    let first = clancy(&data, &["run", &manifest, "--task", "flood"])?;
    let text = stdout(&first);
    assert!(text.contains("rate limited after 30 posts"), "{text}");
    // A new process starts where the last one left off, not with a full bucket.
    let second = clancy(&data, &["run", &manifest, "--task", "flood"])?;
    let text = stdout(&second);
    assert!(text.contains("rate limited after 0 posts"), "{text}");
    let shown = clancy(&data, &["sandbox", "show", "chat", "--json"])?;
    assert_eq!(stdout(&shown).matches("spam ").count(), 30);
    Ok(())
}

#[test]
fn an_undo_counts_against_the_same_rate_limit() -> Result<()> {
    let env = TestEnv::new()?;
    let grants = format!("{POST}\n[limits]\ncalls_per_minute = 3\n");
    let result = env.run(HOSTILE, &with_hostile_imports(&grants), "flood")?;
    assert!(completed(&result)?.contains("rate limited after 3 posts"));
    let reports = env.host.undo_task(&result.task_id, "alice")?;
    assert_eq!(reports.len(), 3);
    for r in &reports {
        match &r.outcome {
            UndoOutcome::NotUndone(why) => assert!(why.starts_with("rate limited"), "{why}"),
            other => anyhow::bail!("an undo got past the rate limit: {other:?}"),
        }
    }
    assert_eq!(
        env.channel("#general")?
            .iter()
            .filter(|m| m.starts_with("spam"))
            .count(),
        3
    );
    Ok(())
}

#[test]
fn a_daily_write_budget_refuses_the_next_write_with_a_clear_message_and_audits_it() -> Result<()> {
    let env = TestEnv::new()?;
    let grants = POST.replace(
        "actions = [\"post\"]",
        "actions = [\"post\"]\nmax_writes_per_day = 2",
    );
    let summary = flood(&env, &grants)?;
    assert!(
        summary.starts_with("refused after 2: rejected: the daily budget of 2 writes on slack channel:#general is spent"),
        "{summary}"
    );
    // A new task (a new mediator) does not get a fresh budget.
    let summary = flood(&env, &grants)?;
    assert!(
        summary.starts_with("refused after 0: rejected: the daily budget"),
        "{summary}"
    );
    let refusals: Vec<_> = env
        .audit()?
        .into_iter()
        .filter(|e| e.kind == Kind::Refusal && e.record.result.contains("daily budget"))
        .collect();
    assert_eq!(refusals.len(), 2);
    assert!(
        refusals
            .iter()
            .all(|e| e.record.decision == Some(Decision::Rejected))
    );
    assert_eq!(env.channel("#general")?.len(), 2 + seeded_general(&env)?);
    Ok(())
}

fn seeded_general(env: &TestEnv) -> Result<usize> {
    Ok(env
        .channel("#general")?
        .iter()
        .filter(|m| !m.starts_with("spam") && !m.starts_with("budget"))
        .count())
}

#[test]
fn approved_actions_spend_the_same_budget() -> Result<()> {
    let env = TestEnv::new()?;
    let grants = with_hostile_imports(&POST.replace(
        "actions = [\"post\"]",
        "actions = [\"post\"]\napproval = \"required\"\nmax_writes_per_day = 1",
    ));
    let mut ids = Vec::new();
    for text in ["budget one", "budget two"] {
        let result = env.run(HOSTILE, &grants, &format!("post {text}"))?;
        ids.push(queued_id(completed(&result)?, "posted")?);
    }
    let first = env.host.decide(&ids[0], Verdict::Approve, "alice", None)?;
    assert_eq!(first.status, Status::Executed);
    let second = env.host.decide(&ids[1], Verdict::Approve, "alice", None)?;
    assert_eq!(second.status, Status::Failed);
    assert!(
        second
            .outcome
            .as_deref()
            .is_some_and(|o| o.contains("daily budget of 1 writes")),
        "{second:?}"
    );
    assert!(env.channel("#general")?.contains(&"budget one".to_string()));
    assert!(!env.channel("#general")?.contains(&"budget two".to_string()));
    // With the budget spent, a new write is refused at once, not queued
    // for a human to approve in vain.
    let third = env.run(HOSTILE, &grants, "post budget three")?;
    let summary = completed(&third)?;
    assert!(
        summary.starts_with("refused: rejected: the daily budget of 1 writes"),
        "{summary}"
    );
    assert_eq!(env.host.approvals().list()?.len(), 2);
    Ok(())
}

#[test]
fn a_ledger_amount_budget_refuses_a_report_that_would_exceed_it() -> Result<()> {
    let env = TestEnv::new()?;
    let mut manifest = TestEnv::plugin_manifest("accounting-assistant", ACCOUNTING_ASSISTANT)?;
    let books = manifest
        .grants
        .iter_mut()
        .find(|g| g.scope == "company:northwind")
        .ok_or_else(|| anyhow::anyhow!("no ledger grant"))?;
    books.budget.max_amount_per_day_cents = Some(10_000);
    let result = env.host.load(manifest)?.run("Prepare expenses")?;
    let refused = env
        .audit_of(&result.task_id, Kind::Refusal)?
        .into_iter()
        .find(|e| e.record.action == "create-expense-report")
        .ok_or_else(|| anyhow::anyhow!("the report was not refused"))?;
    assert!(
        refused
            .record
            .result
            .contains("this would move 255.38 on quickbooks company:northwind today, over the daily budget of 100.00"),
        "{}",
        refused.record.result
    );
    assert!(env.host.sandbox().all_expense_reports()?.is_empty());
    Ok(())
}

#[test]
fn zero_negative_or_misplaced_budgets_are_refused_with_the_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for (grant, message) in [
        (
            "max_writes_per_day = 0",
            "max_writes_per_day must be a whole number from 1",
        ),
        (
            "max_writes_per_day = -3",
            "max_writes_per_day must be a whole number from 1",
        ),
        (
            "max_writes_per_day = \"ten\"",
            "max_writes_per_day must be a whole number",
        ),
        ("max_amount_per_day = 0", "only applies to quickbooks"),
    ] {
        let manifest = dir.path().join("employee.toml");
        std::fs::write(
            &manifest,
            format!(
                "name = \"b\"\ncomponent = {HOSTILE:?}\n[[grant]]\nintegration = \"slack\"\nscope = \"channel:#general\"\nactions = [\"post\"]\n{grant}\n"
            ),
        )?;
        let o = clancy(
            &dir.path().join("data"),
            &["check", &manifest.to_string_lossy()],
        )?;
        assert_eq!(o.status.code(), Some(2), "{grant}");
        let err = stderr(&o);
        assert!(
            err.contains("employee.toml:7: ") && err.contains(message),
            "{grant}: {err}"
        );
    }
    for amount in ["0", "-5", "0.001"] {
        let manifest = dir.path().join("employee.toml");
        std::fs::write(
            &manifest,
            format!(
                "name = \"b\"\ncomponent = {HOSTILE:?}\n[[grant]]\nintegration = \"quickbooks\"\nscope = \"company:acme\"\nactions = [\"create-expense-reports\"]\nmax_amount_per_day = {amount}\n"
            ),
        )?;
        let o = clancy(
            &dir.path().join("data"),
            &["check", &manifest.to_string_lossy()],
        )?;
        assert_eq!(o.status.code(), Some(2), "{amount}");
        assert!(stderr(&o).contains("max_amount_per_day must be an amount above zero"));
    }
    Ok(())
}

#[test]
fn a_widened_scope_is_held_to_its_integrations_per_grant_rate_limit() -> Result<()> {
    let env = TestEnv::new()?;
    let grants = with_hostile_imports(&POST.replace(
        "actions = [\"post\"]",
        "actions = [\"post\"]\ncalls_per_minute = 2",
    ));
    let asked = env.run(HOSTILE, &grants, "elevate slack channel:#sales post 60")?;
    let id = queued_id(completed(&asked)?, "elevation")?;
    env.host.decide(&id, Verdict::Approve, "alice", None)?;
    let mut outcomes = Vec::new();
    for i in 0..3 {
        let result = env.run(
            HOSTILE,
            &grants,
            &format!("post-to channel:#sales widened {i}"),
        )?;
        outcomes.push(completed(&result)?.to_string());
    }
    assert!(outcomes[0].starts_with("posted: done"), "{outcomes:?}");
    assert!(outcomes[1].starts_with("posted: done"), "{outcomes:?}");
    assert!(
        outcomes[2].starts_with("refused: rate limited"),
        "{outcomes:?}"
    );
    assert_eq!(
        env.channel("#sales")?
            .iter()
            .filter(|m| m.starts_with("widened"))
            .count(),
        2
    );
    Ok(())
}

const BOOKS: &str = r##"
[[grant]]
integration = "quickbooks"
scope = "company:northwind"
actions = ["create-expense-reports"]
approval = { over_amount = 250.0 }
max_amount_per_day = 5000.0
"##;

#[test]
fn amounts_that_overflow_or_cancel_out_never_slip_past_a_gate_or_a_budget() -> Result<()> {
    use clancy_guests::SPENDER;
    let env = TestEnv::new()?;
    let run = |amounts: &str| -> Result<String> {
        Ok(completed(&env.run(SPENDER, BOOKS, amounts)?)?.to_string())
    };
    // Sums that overflow i64 (and would wrap to a small or negative total).
    for amounts in [
        "9223372036854775807,1",
        "-9223372036854775808",
        "9223372036854775000,9223372036854775000,-9223372036854775000",
    ] {
        let summary = run(amounts)?;
        assert!(
            summary.starts_with("refused: rejected: the expense lines' amounts overflow"),
            "{amounts}: {summary}"
        );
    }
    // A negative line does not bring a report that moves 1700.00 (net
    // 100.00) under the 250.00 threshold.
    let summary = run("90000,-80000")?;
    assert!(
        summary.starts_with("filed: queued for approval"),
        "{summary}"
    );
    // Nor under the daily budget: net 1.00, but 5001.00 moved is over 5000.00.
    let summary = run("100,250000,-250000")?;
    assert!(
        summary.starts_with("refused: rejected: this would move 5001.00"),
        "{summary}"
    );
    assert!(env.host.sandbox().all_expense_reports()?.is_empty());
    let refusals = env
        .audit()?
        .into_iter()
        .filter(|e| e.kind == Kind::Refusal && e.record.action == "create-expense-report")
        .count();
    assert_eq!(refusals, 4);
    Ok(())
}

/// The engine's pool reserves address space for what the host's memory
/// limit allows, not wasmtime's default 4 GiB per memory (about 260 GiB for
/// the pool): a `clancy run` holding a task open stays far below that.
#[test]
fn the_memory_pool_reserves_what_the_memory_limit_allows_not_4_gib_a_memory() -> Result<()> {
    let (_dir, data, manifest) = crate::env::employee_dir(
        "sleeper",
        "[[grant]]\nintegration = \"slack\"\nscope = \"channel:#general\"\nactions = [\"post\"]\n",
    )?;
    let mut child = crate::env::clancy_command(&data, &["run", &manifest, "--task", "sleep 3000"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let status = format!("/proc/{}/status", child.id());
    let mut largest_kib: u64 = 0;
    let started = std::time::Instant::now();
    while child.try_wait()?.is_none() && started.elapsed() < std::time::Duration::from_secs(30) {
        if let Ok(text) = std::fs::read_to_string(&status)
            && let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmSize:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            largest_kib = largest_kib.max(kib);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    child.wait()?;
    let gib = largest_kib / 1024 / 1024;
    // The pool: 64 memories of 512 MiB and a 32 MiB guard each, about 34 GiB.
    assert!(largest_kib > 0, "never saw the process");
    assert!(gib < 64, "the process reserved {gib} GiB of address space");
    Ok(())
}
