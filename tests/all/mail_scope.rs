//! Mail sends that mean their scope: a mail grant reaches only the
//! recipient domains it names (default: the organisation's own), recipients
//! are parsed as real addresses, sent mail is filed under the granted label,
//! and a label grant shows nothing outside its label, through `list` or `read`.

use anyhow::Result;
use clancy::audit::{Decision, Kind};
use clancy_guests::HOSTILE;

use crate::env::{TestEnv, clancy, completed, hostile_mail_grants as grants, stderr};

fn send_to(env: &TestEnv, grants: &str, to: &str) -> Result<String> {
    let result = env.run(HOSTILE, grants, &format!("send-to {to}"))?;
    Ok(completed(&result)?.to_string())
}

fn sent(env: &TestEnv) -> Result<Vec<clancy::runtime::bindings::mail::Message>> {
    Ok(env
        .host
        .sandbox()
        .all_mail()?
        .into_iter()
        .filter(|m| m.labels.iter().any(|l| l == "SENT"))
        .collect())
}

#[test]
fn a_send_outside_the_allowed_domains_is_denied_and_never_reaches_the_provider() -> Result<()> {
    let env = TestEnv::new()?;
    // No `to`: only the org's own domain (northwind.example, its mailbox's).
    let summary = send_to(&env, &grants(""), "attacker@evil.example")?;
    assert!(
        summary.starts_with("refused: denied: test-employee may send only to northwind.example on gmail label:support, not to attacker@evil.example"),
        "{summary}"
    );
    // A named list replaces the default.
    let summary = send_to(
        &env,
        &grants("to = [\"fernleaf.example\"]"),
        "team@northwind.example",
    )?;
    assert!(summary.starts_with("refused: denied:"), "{summary}");
    assert!(sent(&env)?.is_empty());
    let refusals: Vec<_> = env
        .audit()?
        .into_iter()
        .filter(|e| e.kind == Kind::Refusal && e.record.action == "send")
        .collect();
    assert_eq!(refusals.len(), 2);
    assert!(
        refusals
            .iter()
            .all(|e| e.record.decision == Some(Decision::Denied))
    );
    assert!(
        !env.audit()?
            .iter()
            .any(|e| e.kind == Kind::Intent && e.record.action == "send")
    );
    Ok(())
}

#[test]
fn a_multi_address_string_is_every_address_it_names_never_one_inside_recipient() -> Result<()> {
    let env = TestEnv::new()?;
    for to in [
        "a@evil.example, b@northwind.example",
        "b@northwind.example, a@evil.example",
        "\"b@northwind.example\" <a@evil.example>",
        "insiders: b@northwind.example, a@evil.example;",
    ] {
        let summary = send_to(&env, &grants(""), to)?;
        assert!(
            summary.starts_with("refused: denied:") && summary.contains("a@evil.example"),
            "{to}: {summary}"
        );
    }
    for to in ["nobody", "a@evil.example@northwind.example", "b@northwind"] {
        let summary = send_to(&env, &grants(""), to)?;
        assert!(
            summary.starts_with("refused: rejected:")
                && summary.contains("is not an email address"),
            "{to}: {summary}"
        );
    }
    assert!(sent(&env)?.is_empty());
    Ok(())
}

#[test]
fn an_allowed_send_goes_to_the_parsed_addresses_and_is_filed_under_the_granted_label() -> Result<()>
{
    let env = TestEnv::new()?;
    let summary = send_to(
        &env,
        &grants("to = [\"northwind.example\", \"Fernleaf.Example\"]"),
        "Team <team@northwind.example>, olivia.grant@FERNLEAF.example",
    )?;
    assert!(summary.starts_with("sent: done"), "{summary}");
    let sent = sent(&env)?;
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].to,
        ["team@northwind.example", "olivia.grant@fernleaf.example"]
    );
    assert_eq!(sent[0].labels, ["SENT", "support"]);
    Ok(())
}

#[test]
fn outside_recipients_wait_for_a_human_when_the_policy_gates_them() -> Result<()> {
    let env = TestEnv::new()?;
    let summary = send_to(
        &env,
        &grants("approval = { outside_domain = \"northwind.example\" }"),
        "a@evil.example, b@northwind.example",
    )?;
    assert!(
        summary.starts_with("sent: queued for approval"),
        "{summary}"
    );
    let queued = env.host.approvals().list()?;
    assert_eq!(queued.len(), 1);
    // The request holds both parsed recipients, and says which are outside.
    match &queued[0].request.operation {
        clancy::integrations::Operation::Mail(clancy::integrations::mail::MailOp::Send {
            draft,
        }) => {
            assert_eq!(draft.to, ["a@evil.example", "b@northwind.example"])
        }
        other => anyhow::bail!("queued {other:?}"),
    }
    assert!(
        queued[0]
            .gated_because
            .ends_with("(northwind.example): a@evil.example")
    );
    assert!(sent(&env)?.is_empty());
    Ok(())
}

#[test]
fn a_label_grant_shows_nothing_outside_its_label_through_list_or_read() -> Result<()> {
    let env = TestEnv::new()?;
    let all = env.host.sandbox().all_mail()?;
    let outside: Vec<_> = all
        .iter()
        .filter(|m| !m.labels.iter().any(|l| l == "support"))
        .collect();
    assert!(
        !outside.is_empty(),
        "the seed has mail outside label:support"
    );
    // Every query, including one that matches mail under other labels only.
    for query in ["", "receipt", "invoice", "@"] {
        let listed =
            completed(&env.run(HOSTILE, &grants(""), &format!("list-mail {query}"))?)?.to_string();
        for entry in listed.split_whitespace() {
            assert!(entry.contains("support"), "{query:?} listed {entry}");
        }
        for m in &outside {
            assert!(
                !listed.contains(&m.id),
                "{query:?} listed {} outside the label",
                m.id
            );
        }
    }
    for m in &outside {
        let read =
            completed(&env.run(HOSTILE, &grants(""), &format!("read-other-label {}", m.id))?)?
                .to_string();
        assert!(read.starts_with("refused: rejected: no message"), "{read}");
    }
    Ok(())
}

#[test]
fn a_to_that_is_not_a_domain_is_refused_with_the_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for (to, message) in [
        ("to = [\"bob@northwind.example\"]", "is not a domain"),
        ("to = [\"northwind\"]", "is not a domain"),
        ("to = [\"north wind.example\"]", "is not a domain"),
        ("to = []", "to lists no domain"),
    ] {
        let manifest = dir.path().join("employee.toml");
        std::fs::write(
            &manifest,
            format!(
                "name = \"m\"\ncomponent = {HOSTILE:?}\n[[grant]]\nintegration = \"gmail\"\nscope = \"label:x\"\nactions = [\"send\"]\n{to}\n"
            ),
        )?;
        let o = clancy(
            &dir.path().join("data"),
            &["check", &manifest.to_string_lossy()],
        )?;
        assert_eq!(o.status.code(), Some(2), "{to}");
        let err = stderr(&o);
        assert!(
            err.contains("employee.toml:7: ") && err.contains(message),
            "{to}: {err}"
        );
    }
    Ok(())
}
