//! Several organisations in one daemon: a caller reaches only their own.
//! An admin of another organisation, calling every route with the ids and
//! names of this one's records, gets 404 for each and finds none of them in
//! any list; nothing of this organisation changes.

use anyhow::{Context, Result};
use clancy::operators::{Operator, Role};
use clancy_guests::HOSTILE;

use crate::env::{
    GATED_GENERAL_POST, TestEnv, clancy, completed, queued_id, stderr, stdout, with_hostile_imports,
};
use crate::signin::Live;

#[test]
fn another_organisation_on_the_same_daemon_gets_404_for_every_record_and_never_its_data()
-> Result<()> {
    let live = Live::start(Live::UNLIMITED)?;
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
    let (status, theirs) = live.get(&bea, "/api/v1/organisation/export")?;
    assert_eq!(status, 200, "{theirs}");
    let text = theirs.to_string();
    for s in secrets {
        assert!(!text.contains(s), "B's export shows {s} of A");
    }

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

/// An admin exports everything the organisation holds, and none of its
/// secrets; the export is on record.
#[test]
fn an_admin_exports_the_whole_organisation_without_a_secret() -> Result<()> {
    let live = Live::start(Live::UNLIMITED)?;
    let a = &live.org;
    a.add_operator(
        &Operator {
            name: "ada".into(),
            role: Role::Admin,
        },
        None,
    )?;
    // Secrets the host holds: a password hash and a second factor, a
    // token's secret, the webhook signing secret.
    let code = a.invite("ada", "the test")?;
    let enrolled = a
        .accounts()
        .enrol(&code, "a long enough passphrase", a.now())?;
    let otpauth = enrolled.otpauth.context("an admin gets a second factor")?;
    let totp_secret = otpauth
        .split("secret=")
        .nth(1)
        .and_then(|s| s.split('&').next())
        .context("no secret in the URI")?
        .to_string();
    let (token, secret) = a.create_token("ada", Role::Admin, 1, "ada")?;
    let signing = clancy::notify::secret_text(&a.outbox().secret()?);
    let employee = a.load(TestEnv::manifest(
        HOSTILE,
        &with_hostile_imports(GATED_GENERAL_POST),
    )?)?;
    let ran = employee.run("post hello")?;
    let request = queued_id(completed(&ran)?, "posted")?;

    let (status, doc) = live.get(&secret, "/api/v1/organisation/export")?;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["organisation"], "default");
    assert_eq!(doc["exported_by"], "ada");
    let text = doc.to_string();
    for held in [
        request.as_str(),
        ran.task_id.as_str(),
        token.id.as_str(),
        "test-employee",
        "channel:#general",
    ] {
        assert!(text.contains(held), "the export lacks {held}");
    }
    for section in [
        "operators",
        "tokens",
        "employees",
        "approvals",
        "audit",
        "sandbox",
    ] {
        assert!(
            doc[section].is_array() || doc[section].is_object(),
            "{section}"
        );
    }
    for kept in [
        secret.as_str(),
        signing.as_str(),
        totp_secret.as_str(),
        "$argon2",
        token.hash.as_str(),
    ] {
        assert!(!text.contains(kept), "the export shows a secret: {kept}");
    }
    let log = a.audit().entries()?;
    assert!(
        log.iter()
            .any(|e| e.record.result.contains("exported by ada")),
        "the export is not on record"
    );
    Ok(())
}

/// `clancy orgs delete` removes one organisation's every record, file,
/// pinned component and compiled code, and nothing of another's.
#[test]
fn deleting_an_organisation_removes_all_of_it_and_nothing_else() -> Result<()> {
    use clancy::store::Store as _;
    let (_dir, data, manifest) = crate::env::employee_dir("poster", GATED_GENERAL_POST)?;
    let ok = |args: &[&str]| -> Result<String> {
        let o = clancy(&data, args)?;
        anyhow::ensure!(o.status.success(), "{args:?}: {}{}", stdout(&o), stderr(&o));
        Ok(stdout(&o))
    };
    for (org, admin) in [("acme", "ada"), ("beta", "bo")] {
        ok(&[
            "--org",
            org,
            "operators",
            "add",
            admin,
            "--role",
            "admin",
            "--as",
            admin,
        ])?;
        ok(&["--org", org, "run", &manifest, "--task", "post hello"])?;
    }
    let listed = ok(&["orgs", "list"])?;
    assert!(
        listed.contains("acme") && listed.contains("beta"),
        "{listed}"
    );

    let wrong = clancy(&data, &["orgs", "delete", "acme", "--confirm", "acm"])?;
    assert_eq!(wrong.status.code(), Some(2));
    assert!(ok(&["orgs", "list"])?.contains("acme"));

    let said = ok(&["orgs", "delete", "acme", "--confirm", "acme"])?;
    assert!(said.starts_with("organisation acme deleted: "), "{said}");
    let again = clancy(&data, &["orgs", "delete", "acme", "--confirm", "acme"])?;
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("no organisation"),
        "{}",
        stderr(&again)
    );

    let listed = ok(&["orgs", "list"])?;
    assert!(
        !listed.contains("acme") && listed.contains("beta"),
        "{listed}"
    );
    assert!(!data.join("components/acme").exists());
    assert!(data.join("components/beta").exists());
    assert!(ok(&["--org", "beta", "audit", "verify"])?.starts_with("audit log intact"));
    assert!(ok(&["--org", "beta", "approvals", "list"])?.contains("poster"));
    // Not one key of acme is left in any area of the store; beta's are there.
    let store = clancy::store::SledStore::open(&data.join("store"))?;
    let mut beta = 0;
    for area in store.areas()? {
        assert!(
            store.scan(&area, b"acme/")?.is_empty(),
            "acme's keys are left in {area}"
        );
        beta += store.scan(&area, b"beta/")?.len();
    }
    assert!(beta > 0);
    drop(store);
    // The component's compiled code stays while beta pins the same
    // component, and goes with the last organisation that does.
    let compiled =
        || -> usize { std::fs::read_dir(data.join("compiled")).map_or(0, |d| d.count()) };
    assert_eq!(compiled(), 1);
    ok(&["orgs", "delete", "beta", "--confirm", "beta"])?;
    assert_eq!(
        compiled(),
        0,
        "a deleted organisation's compiled code is left"
    );
    Ok(())
}

/// `clancy serve` serves every organisation of the data dir, prints each
/// one's first-admin link, and each token reaches its own organisation.
#[test]
fn the_daemon_serves_every_organisation_of_its_data_dir() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let token = |org: &str, admin: &str| -> Result<String> {
        for args in [
            &[
                "--org",
                org,
                "operators",
                "add",
                admin,
                "--role",
                "admin",
                "--as",
                admin,
            ][..],
            &[
                "--org", org, "tokens", "create", "--for", admin, "--role", "admin", "--as", admin,
            ],
        ] {
            let o = clancy(&data, args)?;
            anyhow::ensure!(o.status.success(), "{args:?}: {}", stderr(&o));
            if args.contains(&"tokens") {
                return Ok(stdout(&o)
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim()
                    .to_string());
            }
        }
        anyhow::bail!("no token")
    };
    let (ada, bo) = (token("default", "ada")?, token("acme", "bo")?);
    let served = crate::daemon::Served::start(&data, &[])?;
    let said = served.said.join("\n");
    assert!(said.contains("clancy serving orgs default, acme"), "{said}");
    for org in ["default", "acme"] {
        assert!(
            said.contains(&format!("no admin of org {org} can sign in yet")),
            "{said}"
        );
    }
    for (token, org) in [(&ada, "default"), (&bo, "acme")] {
        let me: serde_json::Value = serde_json::from_str(
            &crate::signin::client()
                .get(format!("{}/api/v1/organisation", served.url))
                .bearer_auth(token)
                .send()?
                .text()?,
        )?;
        assert_eq!(me["name"], org, "{me}");
    }
    Ok(())
}

/// The organisation export is written as it is read, the audit log a page
/// at a time: a log several pages long comes out whole and in order, as one
/// JSON document, from the daemon (streamed) and the library alike, with
/// the export itself on record as its last entry.
#[test]
fn an_organisation_export_streams_a_log_of_several_pages_whole_and_in_order() -> Result<()> {
    use clancy::audit::{Kind, Record};
    let live = Live::start_with(Live::UNLIMITED, |org| {
        for i in 0..2_500 {
            org.audit().append_behind(
                Kind::Change,
                Record {
                    employee: "host".into(),
                    task: format!("t{}", i % 7),
                    args: format!("entry {i}"),
                    ..Record::default()
                },
            )?;
        }
        org.audit().settle()?;
        Ok(())
    })?;
    live.org.add_operator(
        &Operator {
            name: "ada".into(),
            role: Role::Admin,
        },
        None,
    )?;
    let ada = live.org.create_token("ada", Role::Admin, 1, "ada")?.1;
    let before = live.org.audit().len()?;
    let response = crate::signin::client()
        .get(format!("{}/api/v1/organisation/export", live.url))
        .bearer_auth(&ada)
        .send()?;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str()?,
        "application/json"
    );
    let text = response.text()?;
    assert!(text.ends_with("\n}\n"), "{}", &text[text.len() - 40..]);
    let doc: serde_json::Value = serde_json::from_str(&text)?;
    assert_eq!(doc["organisation"], "default");
    assert_eq!(doc["exported_by"], "ada");
    let audit = doc["audit"].as_array().context("no audit")?;
    let seqs: Vec<u64> = audit.iter().filter_map(|e| e["seq"].as_u64()).collect();
    // Every entry, in order, through the export's own (appended first).
    assert_eq!(seqs, (1..=before + 1).collect::<Vec<_>>());
    let last = audit.last().context("empty")?.to_string();
    assert!(last.contains("exported by ada"), "{last}");
    let entries = audit
        .iter()
        .filter(|e| e.to_string().contains("entry "))
        .count();
    assert_eq!(entries, 2_500);
    let checkpoints = doc["checkpoints"].as_array().context("no checkpoints")?;
    assert!(!checkpoints.is_empty());
    assert!(checkpoints.iter().all(|c| c["org"] == "default"));

    // The library's document is the same, one export further on.
    let again = live.org.export_organisation("the test")?;
    let audit_again = again["audit"].as_array().context("no audit")?;
    assert_eq!(audit_again.len(), audit.len() + 1);
    assert_eq!(audit_again[..audit.len()], audit[..]);
    for part in [
        "operators",
        "tokens",
        "employees",
        "approvals",
        "tasks",
        "sandbox",
    ] {
        assert_eq!(again[part], doc[part], "{part}");
    }
    Ok(())
}
