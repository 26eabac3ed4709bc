//! Several organisations in one daemon: a caller reaches only their own.
//! An admin of another organisation, calling every route with the ids and
//! names of this one's records, gets 404 for each and finds none of them in
//! any list; nothing of this organisation changes.

use anyhow::{Context, Result};
use clancy::daemon::RateLimits;
use clancy::operators::{Operator, Role};
use clancy_guests::HOSTILE;

use crate::env::{GATED_GENERAL_POST, TestEnv, completed, queued_id, with_hostile_imports};
use crate::signin::Live;

#[test]
fn another_organisation_on_the_same_daemon_gets_404_for_every_record_and_never_its_data()
-> Result<()> {
    let live = Live::start_with(
        RateLimits {
            per_ip: 10_000,
            per_operator: 10_000,
            sign_ins_per_minute: 100,
        },
        |_| Ok(()),
    )?;
    let (a, b) = (&live.org, &live.other);
    // Organisation A: an admin, a user, an employee with a pending request,
    // a finished task, a pending upgrade, a token.
    a.add_operator(
        &Operator {
            name: "ada".into(),
            role: Role::Admin,
        },
        None,
    )?;
    a.add_operator(
        &Operator {
            name: "uma".into(),
            role: Role::User,
        },
        Some("ada"),
    )?;
    let (a_token, a_secret) = a.create_token("ada", Role::Admin, 1, "ada")?;
    let employee = a.load(TestEnv::manifest(
        HOSTILE,
        &with_hostile_imports(GATED_GENERAL_POST),
    )?)?;
    let ran = employee.run("post hello")?;
    let request = queued_id(completed(&ran)?, "posted")?;
    let task = ran.task_id.clone();
    let queued = a.request_task("test-employee", "post later", "ada")?.id;
    let wider = format!(
        "name = \"test-employee\"\ncomponent = \"x.wasm\"\n{}[[grant]]\nintegration = \"gmail\"\nscope = \"label:other\"\nactions = [\"read\"]\n",
        with_hostile_imports(GATED_GENERAL_POST)
    );
    let upgrade = match a.submit_employee(&wider, &std::fs::read(HOSTILE)?, "ada")? {
        clancy::org::Submitted::Waiting(u) => u.id,
        other => anyhow::bail!("expected a waiting upgrade, got {other:?}"),
    };
    // Organisation B's admin, on the same daemon.
    b.add_operator(
        &Operator {
            name: "bea".into(),
            role: Role::Admin,
        },
        None,
    )?;
    let bea = b.create_token("bea", Role::Admin, 1, "bea")?.1;

    let not_found = |method: &str, path: &str, body: &str| -> Result<()> {
        let (status, answer) = match method {
            "GET" => live.get(&bea, path)?,
            _ => live.post(&bea, path, body)?,
        };
        anyhow::ensure!(
            status == 404,
            "{method} {path} as another org's admin: {status} {answer}"
        );
        Ok(())
    };
    for (method, path, body) in [
        ("GET", format!("/api/v1/approvals/{request}"), ""),
        ("POST", format!("/api/v1/approvals/{request}/approve"), "{}"),
        ("POST", format!("/api/v1/approvals/{request}/deny"), "{}"),
        (
            "POST",
            format!("/api/v1/approvals/{request}/answer"),
            r#"{"option": "yes"}"#,
        ),
        ("GET", format!("/api/v1/tasks/{queued}"), ""),
        ("POST", format!("/api/v1/tasks/{queued}/cancel"), "{}"),
        ("GET", format!("/api/v1/tasks/{queued}/events"), ""),
        ("POST", format!("/api/v1/tasks/{task}/cancel"), "{}"),
        ("GET", format!("/api/v1/tasks/{task}/explain"), ""),
        ("GET", format!("/api/v1/tasks/{task}/events"), ""),
        (
            "POST",
            "/api/v1/undo".into(),
            &format!(r#"{{"task": "{task}"}}"#),
        ),
        ("POST", "/api/v1/undo".into(), r#"{"action": 3}"#),
        (
            "POST",
            "/api/v1/tasks".into(),
            r#"{"employee": "test-employee", "task": "post x"}"#,
        ),
        (
            "POST",
            "/api/v1/employees/test-employee/disable".into(),
            "{}",
        ),
        (
            "POST",
            "/api/v1/employees/test-employee/enable".into(),
            "{}",
        ),
        (
            "POST",
            format!("/api/v1/employees/upgrades/{upgrade}/approve"),
            "{}",
        ),
        (
            "POST",
            format!("/api/v1/employees/upgrades/{upgrade}/deny"),
            "{}",
        ),
        ("POST", "/api/v1/operators/uma/enrolment".into(), "{}"),
        (
            "POST",
            "/api/v1/operators/uma/employees".into(),
            r#"{"employees": []}"#,
        ),
        (
            "POST",
            format!("/api/v1/tokens/{}/revoke", a_token.id),
            "{}",
        ),
    ] {
        not_found(method, &path, body)?;
    }
    // A batch decides each request as if alone: A's is not found.
    let (status, batch) = live.post(
        &bea,
        "/api/v1/approvals/batch",
        &format!(r#"{{"ids": ["{request}"], "verdict": "approve"}}"#),
    )?;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["items"][0]["refused"]["status"], 404, "{batch}");

    // No list shows anything of A.
    let secrets = [
        request.as_str(),
        task.as_str(),
        queued.as_str(),
        upgrade.as_str(),
        a_token.id.as_str(),
        "test-employee",
        "\"ada\"",
        "\"uma\"",
    ];
    for path in [
        "/api/v1/approvals",
        "/api/v1/tasks",
        "/api/v1/audit",
        "/api/v1/employees",
        "/api/v1/employees/upgrades",
        "/api/v1/operators",
        "/api/v1/tokens",
        "/api/v1/notifications",
    ] {
        let (status, list) = live.get(&bea, path)?;
        assert_eq!(status, 200, "{path}: {list}");
        let text = list.to_string();
        for s in secrets {
            assert!(!text.contains(s), "{path} shows {s} of another org: {text}");
        }
    }
    let (_, audit) = live.get(&bea, &format!("/api/v1/audit?task={task}"))?;
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(0), "{audit}");
    let export = crate::signin::client()
        .get(format!("{}/api/v1/audit/export", live.url))
        .bearer_auth(&bea)
        .send()?
        .text()?;
    assert!(!export.contains(&task) && !export.contains("\"org\":\"default\""));
    let (_, me) = live.get(&bea, "/api/v1/organisation")?;
    assert_eq!(me["name"], "other", "{me}");

    // Nothing of A changed; A's own admin still sees it all.
    assert_eq!(
        a.approvals().get(&request)?.context("the request")?.status,
        clancy::approvals::Status::Pending
    );
    assert!(a.disabled("test-employee")?.is_none());
    for path in [
        format!("/api/v1/approvals/{request}"),
        format!("/api/v1/tasks/{queued}"),
        format!("/api/v1/tasks/{task}/explain"),
    ] {
        let (status, mine) = live.get(&a_secret, &path)?;
        assert_eq!(status, 200, "{path}: {mine}");
    }
    let (_, listed) = live.get(&a_secret, "/api/v1/employees")?;
    assert!(listed.to_string().contains("test-employee"), "{listed}");
    let (_, me) = live.get(&a_secret, "/api/v1/organisation")?;
    assert_eq!(me["name"], "default", "{me}");
    let (_, ups) = live.get(&a_secret, "/api/v1/employees/upgrades")?;
    assert!(ups.to_string().contains(&upgrade), "{ups}");
    Ok(())
}
