//! Asking a human: an employee unsure of a case asks (`guidance.ask`), the
//! question waits in the approval queue with its options, an operator
//! answers with one of them, and the employee hears `answered(option)`.

use anyhow::Result;
use clancy::approvals::{Approval, Status};
use clancy::audit::Kind;
use clancy::org::{DecideError, Verdict};
use clancy_guests::{CUSTOMER_SERVICE, HOSTILE};

use crate::env::{TestEnv, completed, queued_id, with_hostile_imports};

const CHAT: &str = r##"
[[grant]]
integration = "slack"
scope = "channel:#general"
actions = ["post"]
"##;

fn ask(env: &TestEnv, arg: &str) -> Result<String> {
    let result = env.run(HOSTILE, &with_hostile_imports(CHAT), &format!("ask {arg}"))?;
    Ok(completed(&result)?.to_string())
}

fn question(env: &TestEnv, id: &str) -> Result<Approval> {
    env.host
        .approvals()
        .get(id)?
        .ok_or_else(|| anyhow::anyhow!("no question {id}"))
}

#[test]
fn the_customer_service_employee_asks_and_posts_the_operators_answer() -> Result<()> {
    let env = TestEnv::new()?;
    let employee = env.host.load(TestEnv::plugin_manifest(
        "customer-service",
        CUSTOMER_SERVICE,
    )?)?;
    employee.run("Triage today's support mail")?;
    let asked: Vec<Approval> = env.host.approvals().list()?;
    assert_eq!(asked.len(), 1);
    let id = asked[0].id.clone();
    let preview = asked[0].preview();
    assert!(
        preview.contains("Mail m-1003 from olivia.grant@fernleaf.example")
            && preview.contains("options: \"P1\", \"P2\", \"P3\", \"not a support request\""),
        "{preview}"
    );
    let answered = env
        .host
        .answer(&id, "P2", "alice", Some("billing question"))?;
    assert_eq!(answered.status, Status::Answered);
    assert_eq!(answered.outcome.as_deref(), Some("P2"));
    // The employee heard the answer and posted it beside the ticket.
    let support = env.channel("#support")?;
    assert!(
        support.iter().any(|t| t
            == &format!(
                "[P2] Triage for the ticket that asked {id}: priority P2, decided by a human."
            )),
        "{support:?}"
    );
    let audit = env.audit()?;
    assert!(audit.iter().any(|e| e.kind == Kind::Queued
        && e.record.interface == "guidance"
        && e.record.approval.as_deref() == Some(id.as_str())));
    assert!(audit.iter().any(|e| e.kind == Kind::Decision
        && e.record.result == "answered by alice: \"P2\" (billing question)"));
    assert!(audit.iter().any(|e| e.kind == Kind::Reaction
        && e.record.args == format!("{id}, answered")
        && e.record.result == "returned"));
    // A question is answered once.
    assert!(matches!(
        env.host.answer(&id, "P1", "bob", None),
        Err(DecideError::AlreadyDecided { .. })
    ));
    Ok(())
}

#[test]
fn an_answer_must_be_one_of_the_options_and_a_question_is_not_approved() -> Result<()> {
    let env = TestEnv::new()?;
    let id = queued_id(&ask(&env, "Refund twice?|yes|no")?, "asked")?;
    for bad in ["maybe", "Yes", "yes ", ""] {
        match env.host.answer(&id, bad, "alice", None) {
            Err(DecideError::BadAnswer { options, .. }) => assert_eq!(options, ["yes", "no"]),
            other => anyhow::bail!("{bad:?} was taken: {other:?}"),
        }
    }
    assert!(matches!(
        env.host.decide(&id, Verdict::Approve, "alice", None),
        Err(DecideError::Question(_))
    ));
    // Only registered managers and admins answer.
    assert!(matches!(
        env.host.answer(&id, "yes", "eve", None),
        Err(DecideError::NotAllowed { .. })
    ));
    assert_eq!(question(&env, &id)?.status, Status::Pending);
    // An answer to something that is not a question is refused.
    let post = env.run(
        HOSTILE,
        &with_hostile_imports(&CHAT.replace("[\"post\"]", "[\"post\"]\napproval = \"required\"")),
        "post hi",
    )?;
    let post_id = queued_id(completed(&post)?, "posted")?;
    assert!(matches!(
        env.host.answer(&post_id, "yes", "alice", None),
        Err(DecideError::NotAQuestion(_))
    ));
    // Denying a question tells the employee "denied".
    env.host
        .decide(&id, Verdict::Deny, "alice", Some("ask finance"))?;
    let heard: Vec<String> = env
        .audit()?
        .into_iter()
        .filter(|e| e.kind == Kind::Note && e.record.reason.starts_with("heard: "))
        .map(|e| e.record.reason)
        .collect();
    assert_eq!(heard, [format!("heard: {id} denied (alice: ask finance)")]);
    Ok(())
}

#[test]
fn malformed_questions_are_rejected_and_nothing_is_queued() -> Result<()> {
    let env = TestEnv::new()?;
    let long = "x".repeat(201);
    for (arg, why) in [
        ("Which one?|only", "offer from 2 to 10 options"),
        ("Which one?|a|a", "must differ"),
        ("|a|b", "needs text"),
        ("Which one?|a| ", "each option is one line"),
        (
            &format!("Which one?|a|{long}") as &str,
            "each option is one line",
        ),
        (
            "Which?|1|2|3|4|5|6|7|8|9|10|11",
            "offer from 2 to 10 options",
        ),
    ] {
        let summary = ask(&env, arg)?;
        assert!(
            summary.starts_with("refused: rejected:") && summary.contains(why),
            "{arg:?}: {summary}"
        );
    }
    assert!(env.host.approvals().list()?.is_empty());
    Ok(())
}

#[test]
fn the_cli_answers_a_question_and_refuses_a_bad_answer_with_exit_2() -> Result<()> {
    let scene = crate::crash::Scene::new(HOSTILE)?;
    let manifest = scene.manifest_path();
    let (_, out) = scene.clancy(&["run", &manifest, "--task", "ask Escalate it?|yes|no"])?;
    assert!(out.contains("asked: queued for approval"), "{out}");
    let id = scene.requests()?[0].0.clone();
    let (code, list) = scene.clancy(&["approvals", "list"])?;
    assert_eq!(code, Some(0));
    assert!(
        list.contains("wants to know:\n    | Escalate it?"),
        "{list}"
    );
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_clancy"))
        .arg("--data-dir")
        .arg(scene.data())
        .args(["approvals", "answer", &id, "perhaps", "--as", "mia"])
        .output()?;
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("\"perhaps\" is not one of the options (\"yes\", \"no\")")
    );
    assert_eq!(scene.requests()?[0].1, "pending");
    let (code, out) = scene.clancy(&["approvals", "answer", &id, "no", "--as", "mia"])?;
    assert_eq!(
        (code, out.trim()),
        (Some(0), format!("{id}: answered \"no\"").as_str())
    );
    assert_eq!(scene.requests()?[0].1, "answered");
    Ok(())
}

/// An on-decision export that sleeps forever is stopped at the employee's
/// time limit: the answer stands, the approver's command returns, the
/// stop is audited, and the employee's next task runs.
#[test]
fn an_on_decision_that_sleeps_forever_does_not_hang_the_approver() -> Result<()> {
    let env = TestEnv::new()?;
    let grants = format!("{}\n[limits]\ntime_ms = 1000\n", with_hostile_imports(CHAT));
    let asked = env.run(HOSTILE, &grants, "ask Wake up?|sleep|stay")?;
    let id = queued_id(completed(&asked)?, "asked")?;
    let started = std::time::Instant::now();
    let answered = env.host.answer(&id, "sleep", "alice", None)?;
    let took = started.elapsed();
    assert_eq!(answered.status, Status::Answered);
    assert!(
        took < std::time::Duration::from_secs(10),
        "answering took {took:?}"
    );
    let reactions: Vec<String> = env
        .audit()?
        .into_iter()
        .filter(|e| e.kind == Kind::Reaction)
        .map(|e| e.record.result)
        .collect();
    assert_eq!(
        reactions,
        ["stopped: the task exceeded its time limit of 1000 ms"]
    );
    assert_eq!(question(&env, &id)?.status, Status::Answered);
    let next = env.run(HOSTILE, &grants, "ask Still there?|yes|no")?;
    assert!(completed(&next)?.starts_with("asked: "), "{:?}", next.end);
    Ok(())
}
