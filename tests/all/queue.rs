//! The daemon's task queue: requested tasks are stored before they run,
//! run by workers, survive a restart, and are never run twice.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clancy::daemon::RateLimits;
use clancy::operators::Role;
use clancy::org::{TaskError, TaskState};
use clancy_guests::HOSTILE;
use serde_json::Value;

use crate::env::{TestEnv, with_hostile_imports};
use crate::signin::{Live, client};

const CHAT: &str =
    "[[grant]]\nintegration = \"slack\"\nscope = \"channel:#general\"\nactions = [\"post\"]\n";

fn register(org: &clancy::org::Org) -> Result<()> {
    org.load(TestEnv::manifest(HOSTILE, &with_hostile_imports(CHAT))?)?;
    Ok(())
}

/// Poll a task until it ended.
fn ended(live: &Live, token: &str, id: &str) -> Result<Value> {
    let started = Instant::now();
    loop {
        let (_, seen) = live.get(token, &format!("/api/v1/tasks/{id}"))?;
        if seen["ended_at"].is_string() {
            return Ok(seen);
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "{seen}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn queued_tasks_survive_a_restart_and_one_cut_short_is_interrupted_not_rerun() -> Result<()> {
    let mut ids = (String::new(), String::new());
    // What a killed daemon leaves: one task taken and running, one waiting.
    let live = Live::start_with(RateLimits::default(), |org| {
        register(org)?;
        let running = org.request_task("test-employee", "print first", "alice")?;
        let waiting = org.request_task("test-employee", "print second", "alice")?;
        let taken = org.take_task()?.context("nothing to take")?;
        assert_eq!(taken.id, running.id, "the oldest is taken first");
        ids = (running.id, waiting.id);
        Ok(())
    })?;
    let (_, token) = live.org.create_token("alice", Role::Manager, 1, "alice")?;
    let cut = ended(&live, &token, &ids.0)?;
    assert_eq!(cut["state"], "interrupted", "{cut}");
    let ran = ended(&live, &token, &ids.1)?;
    assert_eq!(ran["state"], "completed", "{ran}");
    // The interrupted one never started again; the audit trail closes it.
    let entries = live.org.audit().entries()?;
    let starts = |id: &str| {
        entries
            .iter()
            .filter(|e| e.kind == clancy::audit::Kind::TaskStart && e.record.task == id)
            .count()
    };
    assert_eq!(starts(&ids.0), 0, "an interrupted task was run again");
    assert_eq!(starts(&ids.1), 1);
    assert!(
        entries
            .iter()
            .any(|e| e.record.task == ids.1 && e.record.action == "tasks-requested"),
        "the request is audited under the task's id"
    );
    Ok(())
}

#[test]
fn a_task_is_requested_listed_and_cancelled_through_the_api_and_bad_requests_change_nothing()
-> Result<()> {
    let live = Live::start_with(RateLimits::default(), register)?;
    let (_, token) = live.org.create_token("bob", Role::Manager, 1, "bob")?;
    let post = |body: &str| {
        client()
            .post(format!("{}/api/v1/tasks", live.url))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let queued = post(r#"{"employee": "test-employee", "task": "print hello"}"#)?;
    assert_eq!(queued.status(), 202);
    let location = queued
        .headers()
        .get("location")
        .context("no Location")?
        .to_str()?
        .to_string();
    let queued: Value = serde_json::from_str(&queued.text()?)?;
    let id = queued["id"].as_str().context("no id")?;
    assert_eq!(location, format!("/api/v1/tasks/{id}"));
    let done = ended(&live, &token, id)?;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["requested_by"], "bob");
    for (body, code) in [
        (r#"{"employee": "nobody", "task": "x"}"#, 404),
        (r#"{"employee": "test-employee", "task": "   "}"#, 422),
        (r#"{"employee": "test-employee"}"#, 422),
        (
            r#"{"employee": "test-employee", "task": "x", "run_as": "admin"}"#,
            422,
        ),
    ] {
        assert_eq!(post(body)?.status().as_u16(), code, "{body}");
    }
    assert_eq!(
        live.org.tasks()?.len(),
        1,
        "a refused request queued a task"
    );

    // A finished task cannot be cancelled; the list pages through them all.
    let cancel = client()
        .post(format!("{}/api/v1/tasks/{id}/cancel", live.url))
        .bearer_auth(&token)
        .send()?;
    assert_eq!(cancel.status(), 409);
    let listed: Value = serde_json::from_str(
        &client()
            .get(format!("{}/api/v1/tasks?limit=1", live.url))
            .bearer_auth(&token)
            .send()?
            .text()?,
    )?;
    assert_eq!(listed["items"][0]["id"], id);
    assert!(listed["next_cursor"].is_null());
    Ok(())
}

#[test]
fn a_full_queue_refuses_new_tasks_and_a_cancelled_one_never_runs() -> Result<()> {
    let env = TestEnv::new()?;
    register(&env.host)?;
    let first = env
        .host
        .request_task("test-employee", "print one", "alice")?;
    let cancelled = env.host.cancel_task(&first.id, "alice")?;
    assert_eq!(cancelled.state, TaskState::Cancelled);
    assert!(
        env.host.take_task()?.is_none(),
        "a cancelled task was taken"
    );
    assert!(matches!(
        env.host.cancel_task(&first.id, "alice"),
        Err(TaskError::NotQueued { .. })
    ));
    for n in 0..clancy::org::MAX_QUEUED {
        env.host
            .request_task("test-employee", &format!("print {n}"), "alice")?;
    }
    assert!(matches!(
        env.host
            .request_task("test-employee", "print one more", "alice"),
        Err(TaskError::Full)
    ));
    assert_eq!(env.host.queued_tasks()?, clancy::org::MAX_QUEUED);
    // Taken in the order they were asked for, each once.
    let a = env.host.take_task()?.context("empty")?;
    let b = env.host.take_task()?.context("empty")?;
    assert_eq!((a.task.as_str(), b.task.as_str()), ("print 0", "print 1"));
    env.host
        .request_task("test-employee", "print room again", "alice")?;
    Ok(())
}

#[test]
fn concurrent_requests_each_get_their_own_place_in_the_queue() -> Result<()> {
    let env = TestEnv::new()?;
    register(&env.host)?;
    let host = &env.host;
    let records: Vec<clancy::org::TaskRecord> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..4)
            .map(|t| {
                scope.spawn(move || -> Result<Vec<_>> {
                    (0..10)
                        .map(|n| {
                            Ok(host.request_task(
                                "test-employee",
                                &format!("print {t}-{n}"),
                                "alice",
                            )?)
                        })
                        .collect()
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow::anyhow!("a thread panicked"))?)
            .collect::<Result<Vec<_>>>()
            .map(|v| v.into_iter().flatten().collect())
    })?;
    let mut seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs, (1..=40).collect::<Vec<u64>>());
    let mut taken = Vec::new();
    while let Some(t) = host.take_task()? {
        taken.push(t.seq);
    }
    assert_eq!(
        taken,
        (1..=40).collect::<Vec<u64>>(),
        "taken in order, each once"
    );
    let verified = host.verify_audit(None)?;
    assert!(verified.entries >= 40, "{} entries", verified.entries);
    Ok(())
}

#[test]
fn a_manager_reads_verifies_explains_and_undoes_a_task_through_the_api() -> Result<()> {
    let mut task = String::new();
    let live = Live::start_with(RateLimits::default(), |org| {
        let employee = org.load(TestEnv::manifest(HOSTILE, &with_hostile_imports(CHAT))?)?;
        task = employee.run("post hello from the queue")?.task_id;
        Ok(())
    })?;
    let (_, token) = live.org.create_token("alice", Role::Manager, 1, "alice")?;
    let get = |path: &str| -> Result<Value> {
        let (status, body) = live.get(&token, path)?;
        anyhow::ensure!(status == 200, "{path}: {status} {body}");
        Ok(body)
    };
    let page = get(&format!("/api/v1/audit?task={task}&limit=2"))?;
    let items = page["items"].as_array().context("no items")?;
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|e| e["task"] == task.as_str()), "{page}");
    let next = page["next_cursor"].as_u64().context("no next page")?;
    let rest = get(&format!("/api/v1/audit?task={task}&after={next}"))?;
    let posted = rest["items"]
        .as_array()
        .context("no items")?
        .iter()
        .find(|e| e["action"] == "post" && e["outcome"] == "done")
        .context("no post in the task's entries")?
        .clone();
    let explained = get(&format!("/api/v1/tasks/{task}/explain"))?;
    assert!(
        explained["text"]
            .as_str()
            .is_some_and(|t| t.contains("hello from the queue")),
        "{explained}"
    );

    let undo = |body: &str| live.post(&token, "/api/v1/undo", body);
    let (status, undone) = undo(&format!(r#"{{"task": "{task}"}}"#))?;
    assert_eq!(status, 200, "{undone}");
    assert_eq!(undone["all_undone"], true, "{undone}");
    let channel = live.org.sandbox().all_chat()?;
    assert!(
        !channel
            .iter()
            .flat_map(|(_, m)| m.iter())
            .any(|m| m.text.contains("hello from the queue")),
        "the post is still there"
    );
    let seq = posted["seq"].as_u64().context("no seq")?;
    let (_, again) = undo(&format!(r#"{{"action": {seq}}}"#))?;
    assert_eq!(
        again["reports"][0]["outcome"]["outcome"], "already-undone",
        "{again}"
    );
    for (body, code) in [
        (r#"{"action": 1, "task": "x"}"#.to_string(), 422),
        ("{}".to_string(), 422),
        (r#"{"action": 999999}"#.to_string(), 404),
        (r#"{"task": "no-such-task"}"#.to_string(), 404),
    ] {
        assert_eq!(undo(&body)?.0, code, "{body}");
    }
    let employees = get("/api/v1/employees")?;
    let me = &employees["items"][0];
    assert_eq!(me["name"], "test-employee", "{employees}");
    assert!(
        me["describe"].as_array().is_some_and(|lines| lines
            .iter()
            .any(|l| l.as_str().is_some_and(|l| l.contains("channel:#general")))),
        "{employees}"
    );
    let verified = get("/api/v1/audit/verify")?;
    assert_eq!(verified["intact"], true, "{verified}");
    let log = get(&format!("/api/v1/audit?task={task}"))?;
    assert!(
        log["items"]
            .as_array()
            .context("no items")?
            .iter()
            .any(|e| e["undoes"].as_u64() == Some(seq)),
        "the undo is recorded under the task"
    );
    Ok(())
}

#[test]
fn requests_are_decided_in_a_batch_or_edited_then_approved_through_the_api() -> Result<()> {
    let gated = with_hostile_imports(crate::env::GATED_GENERAL_POST);
    let live = Live::start_with(RateLimits::default(), |org| {
        let employee = org.load(TestEnv::manifest(HOSTILE, &gated)?)?;
        for n in 0..3 {
            employee.run(&format!("post gated {n}"))?;
        }
        Ok(())
    })?;
    let (_, token) = live.org.create_token("alice", Role::Manager, 1, "alice")?;
    let pending = live.org.approvals().list()?;
    assert_eq!(pending.len(), 3);
    let ids: Vec<String> = (0..3)
        .map(|n| {
            pending
                .iter()
                .find(|a| a.preview().contains(&format!("gated {n}")))
                .map(|a| a.id.clone())
                .context("no such request")
        })
        .collect::<Result<_>>()?;
    let post = |path: &str, body: Value| live.post(&token, path, &body.to_string());
    let (status, batch) = post(
        "/api/v1/approvals/batch",
        serde_json::json!({"ids": [ids[0], "apr-nope", ids[1], ids[0]], "verdict": "approve", "comment": "fine"}),
    )?;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["refused"], 1, "{batch}");
    let items = batch["items"].as_array().context("no items")?;
    assert_eq!(items.len(), 3, "a repeated id is decided once: {batch}");
    assert_eq!(items[0]["decided"]["status"], "executed");
    assert_eq!(items[1]["refused"]["status"], 404);
    assert_eq!(items[2]["decided"]["status"], "executed");

    let approve = format!("/api/v1/approvals/{}/approve", ids[2]);
    let deny = format!("/api/v1/approvals/{}/deny", ids[2]);
    let (status, _) = post(&deny, serde_json::json!({"edits": {"text": "x"}}))?;
    assert_eq!(status, 422, "edits never go with deny");
    let (status, _) = post(&approve, serde_json::json!({"edits": {"colour": "red"}}))?;
    assert_eq!(status, 422, "a field the action does not have");
    let (status, edited) = post(
        &approve,
        serde_json::json!({"edits": {"text": "edited by a human"}}),
    )?;
    assert_eq!(status, 200, "{edited}");
    let posts: Vec<String> = live
        .org
        .sandbox()
        .all_chat()?
        .into_iter()
        .flat_map(|(_, m)| m.into_iter().map(|m| m.text))
        .collect();
    assert!(posts.iter().any(|p| p == "edited by a human"), "{posts:?}");
    assert!(
        !posts.iter().any(|p| p.contains("gated 2")),
        "the original ran: {posts:?}"
    );
    let (status, _) = post(
        "/api/v1/approvals/batch",
        serde_json::json!({"ids": [], "verdict": "approve"}),
    )?;
    assert_eq!(status, 422);
    Ok(())
}

#[test]
fn a_user_starts_and_sees_only_the_work_of_employees_assigned_to_them() -> Result<()> {
    let live = Live::start_with(RateLimits::default(), |org| {
        register(org)?;
        org.add_operator(
            &clancy::operators::Operator {
                name: "ada".into(),
                role: Role::Admin,
            },
            None,
        )?;
        org.add_operator(
            &clancy::operators::Operator {
                name: "uma".into(),
                role: Role::User,
            },
            Some("ada"),
        )?;
        Ok(())
    })?;
    let (_, uma) = live.org.create_token("uma", Role::User, 1, "ada")?;
    let (_, ada) = live.org.create_token("ada", Role::Admin, 1, "ada")?;
    let start = |token: &str| {
        live.post(
            token,
            "/api/v1/tasks",
            r#"{"employee": "test-employee", "task": "print hello"}"#,
        )
    };
    let list = |token: &str| -> Result<usize> {
        let (_, page) = live.get(token, "/api/v1/tasks")?;
        Ok(page["items"].as_array().context("no items")?.len())
    };
    // Unassigned: she can neither start nor see the employee's work.
    assert_eq!(start(&uma)?.0, 403);
    let (status, by_ada) = start(&ada)?;
    assert_eq!(status, 202);
    let adas = by_ada["id"].as_str().context("no id")?.to_string();
    assert_eq!(list(&uma)?, 0);
    let (hidden, _) = live.get(&uma, &format!("/api/v1/tasks/{adas}"))?;
    assert_eq!(hidden, 404, "an unassigned employee's task is not there");
    // Assigned by an admin (a user may not assign).
    let assign = |token: &str, body: &str| -> Result<u16> {
        Ok(live.post(token, "/api/v1/operators/uma/employees", body)?.0)
    };
    assert_eq!(assign(&uma, r#"{"employees": ["test-employee"]}"#)?, 403);
    assert_eq!(assign(&ada, r#"{"employees": ["no-such-employee"]}"#)?, 403);
    assert_eq!(assign(&ada, r#"{"employees": ["test-employee"]}"#)?, 200);
    let (status, mine) = start(&uma)?;
    assert_eq!(status, 202, "{mine}");
    let done = ended(&live, &uma, mine["id"].as_str().context("no id")?)?;
    assert_eq!(done["state"], "completed");
    assert_eq!(
        list(&uma)?,
        2,
        "she sees the employee's work, hers and ada's"
    );
    assert!(
        live.org.audit().entries()?.iter().any(
            |e| e.record.action == "operators-assign" && e.record.result.contains("set by ada")
        ),
        "the assignment is audited"
    );
    Ok(())
}

#[test]
fn new_mail_or_messages_in_a_granted_scope_queue_one_task_and_nothing_else_does() -> Result<()> {
    use clancy::providers::ChatProvider as _;
    let grants = with_hostile_imports(
        "[[grant]]\nintegration = \"slack\"\nscope = \"channel:#general\"\nactions = [\"read\", \"post\"]\n",
    );
    let triggers = "[[trigger]]\non = \"mail\"\nscope = \"label:support\"\ntask = \"print triage the new mail\"\n\
                    [[trigger]]\non = \"chat\"\nscope = \"channel:#general\"\ntask = \"print answer the channel\"\n";
    // Bad triggers are refused with their line.
    for (bad, why) in [
        (
            "[[trigger]]\non = \"sms\"\nscope = \"label:support\"\ntask = \"x\"\n",
            "\"mail\" or \"chat\"",
        ),
        (
            "[[trigger]]\non = \"mail\"\nscope = \"label:billing\"\ntask = \"x\"\n",
            "\"read\" for",
        ),
        (
            "[[trigger]]\non = \"chat\"\nscope = \"label:support\"\ntask = \"x\"\n",
            "slack grant",
        ),
        (
            "[[trigger]]\non = \"mail\"\nscope = \"label:support\"\ntask = \" \"\n",
            "needs text",
        ),
    ] {
        let err = TestEnv::manifest(HOSTILE, &format!("{grants}{bad}"))
            .err()
            .context("a bad trigger was taken")?;
        assert!(format!("{err:#}").contains(why), "{bad}: {err:#}");
    }
    let env = TestEnv::new()?;
    let employee = env
        .host
        .load(TestEnv::manifest(HOSTILE, &format!("{grants}{triggers}"))?)?;
    let host = &env.host;
    assert!(host.run_triggers()?.queued.is_empty(), "history set it off");
    assert!(host.run_triggers()?.queued.is_empty());

    host.sandbox()
        .receive_mail("pat@customer.example", "support", "Help", "It broke")?;
    host.sandbox()
        .receive_mail("pat@customer.example", "billing", "Invoice", "Where?")?;
    let round = host.run_triggers()?;
    assert_eq!(round.queued.len(), 1, "{round:?}");
    assert_eq!(round.queued[0].task, "print triage the new mail");
    assert_eq!(
        round.queued[0].requested_by,
        "trigger: 1 new in label:support"
    );
    assert!(
        host.run_triggers()?.queued.is_empty(),
        "the same mail twice"
    );

    host.sandbox()
        .post("#general", "dana", "anyone around?", None)?;
    let round = host.run_triggers()?;
    assert_eq!(round.queued.len(), 1, "{round:?}");
    assert_eq!(round.queued[0].task, "print answer the channel");
    // The employee's own post and sent mail never set it off.
    employee.run("post replying in the channel")?;
    assert!(host.run_triggers()?.queued.is_empty(), "it set itself off");
    let log = host.audit().entries()?;
    assert!(
        log.iter()
            .any(|e| e.record.action == "tasks-requested"
                && e.record.result.contains("trigger: 1 new")),
        "the queued task is audited with its trigger"
    );
    Ok(())
}

#[test]
fn a_submitted_employee_that_widens_waits_for_an_admin_and_narrowing_is_in_force_at_once()
-> Result<()> {
    use base64::Engine as _;
    let live = Live::start_with(RateLimits::default(), |org| {
        org.add_operator(
            &clancy::operators::Operator {
                name: "ada".into(),
                role: Role::Admin,
            },
            None,
        )?;
        Ok(())
    })?;
    let (_, ada) = live.org.create_token("ada", Role::Admin, 1, "ada")?;
    let (_, alice) = live.org.create_token("alice", Role::Manager, 1, "ada")?;
    let component = base64::engine::general_purpose::STANDARD.encode(std::fs::read(HOSTILE)?);
    let manifest = |actions: &str| {
        format!(
            "name = \"uploaded\"\ncomponent = \"../../etc/passwd\"\n{}",
            with_hostile_imports(&format!(
                "[[grant]]\nintegration = \"slack\"\nscope = \"channel:#general\"\nactions = [{actions}]\n"
            ))
        )
    };
    let submit = |token: &str, manifest: &str, component: &str| {
        live.post(
            token,
            "/api/v1/employees",
            &serde_json::json!({"manifest": manifest, "component": component}).to_string(),
        )
    };
    let employees = || -> Result<Value> { Ok(live.get(&ada, "/api/v1/employees")?.1) };
    let describe = |v: &Value| v["items"][0]["describe"].to_string();
    // The in-force grant on #general, as the employee list describes it.
    let general = || -> Result<String> {
        Ok(employees()?["items"][0]["describe"]
            .as_array()
            .context("no description")?
            .iter()
            .filter_map(Value::as_str)
            .find(|l| l.contains("channel:#general"))
            .context("no #general grant")?
            .to_string())
    };

    // New: waits for an admin, whoever submits it.
    let (status, new) = submit(&alice, &manifest(r#""read", "post""#), &component)?;
    assert_eq!(status, 202, "{new}");
    assert!(new["diff"].as_array().is_some_and(|d| d.iter().any(|l| {
        l.as_str()
            .is_some_and(|l| l.starts_with("+ ") && l.contains("channel:#general"))
    })));
    assert!(employees()?["items"].as_array().is_some_and(Vec::is_empty));
    let id = new["upgrade"]["id"]
        .as_str()
        .context("no upgrade id")?
        .to_string();
    // It waits in the same queue as the employees' requests, with its diff.
    let (status, queue) = live.get(&alice, "/api/v1/approvals")?;
    assert_eq!(status, 200, "{queue}");
    let waiting = queue["items"]
        .as_array()
        .and_then(|items| items.iter().find(|a| a["id"] == id.as_str()))
        .with_context(|| format!("{id} is not in the queue: {queue}"))?;
    assert_eq!(waiting["kind"], "upgrade", "{waiting}");
    assert!(
        waiting["preview"]
            .as_str()
            .is_some_and(|p| p.contains("+ grant slack channel:#general")),
        "{waiting}"
    );
    let (status, one) = live.get(&alice, &format!("/api/v1/approvals/{id}"))?;
    assert_eq!(
        (status, one["kind"].as_str()),
        (200, Some("upgrade")),
        "{one}"
    );
    let (status, edited) = live.post(
        &ada,
        &format!("/api/v1/approvals/{id}/approve"),
        r#"{"edits": {"name": "x"}}"#,
    )?;
    assert_eq!(status, 422, "an upgrade is never edited: {edited}");
    let approve =
        |token: &str, id: &str| live.post(token, &format!("/api/v1/approvals/{id}/approve"), "");
    assert_eq!(
        approve(&alice, &id)?.0,
        403,
        "a manager approves no widening"
    );
    let (status, approved) = approve(&ada, &id)?;
    assert_eq!(status, 200, "{approved}");
    assert_eq!(approved["status"], "approved");
    assert_eq!(approve(&ada, &id)?.0, 409, "decided once");
    let (_, queue) = live.get(&alice, "/api/v1/approvals")?;
    assert!(
        !queue.to_string().contains(&id),
        "decided, it left the queue: {queue}"
    );
    let first = describe(&employees()?);
    assert!(general()?.contains("read"), "{}", general()?);

    // Narrowing is in force at once.
    let (status, narrowed) = submit(&alice, &manifest(r#""post""#), &component)?;
    assert_eq!(status, 200, "{narrowed}");
    assert_eq!(narrowed["status"], "in-force");
    let narrow = describe(&employees()?);
    assert!(!general()?.contains("read"), "{}", general()?);
    assert_ne!(narrow, first);

    // Widening again waits; the narrow version stays in force; denied, it never comes.
    let (status, wider) = submit(&alice, &manifest(r#""read", "post""#), &component)?;
    assert_eq!(status, 202, "{wider}");
    assert_eq!(describe(&employees()?), narrow);
    let wider_id = wider["upgrade"]["id"]
        .as_str()
        .context("no id")?
        .to_string();
    let (status, _) = live.post(
        &ada,
        &format!("/api/v1/employees/upgrades/{wider_id}/deny"),
        "",
    )?;
    assert_eq!(status, 200);
    assert_eq!(describe(&employees()?), narrow);

    // The same again changes nothing, and is in force at once.
    let (status, same) = submit(&alice, &manifest(r#""post""#), &component)?;
    assert_eq!(status, 200, "{same}");
    assert!(same["diff"].as_array().is_some_and(Vec::is_empty), "{same}");

    // Compared with a version no longer in force: stale, never applied.
    let (_, wide) = submit(&alice, &manifest(r#""read", "post""#), &component)?;
    let wide_id = wide["upgrade"]["id"].as_str().context("no id")?.to_string();
    let (status, limits) = submit(
        &ada,
        &format!("{}\n[limits]\ntime_ms = 1000\n", manifest(r#""post""#)),
        &component,
    )?;
    assert_eq!(status, 202, "a limits change waits too: {limits}");
    let limits_id = limits["upgrade"]["id"]
        .as_str()
        .context("no id")?
        .to_string();
    assert_eq!(approve(&ada, &limits_id)?.0, 200);
    let (status, refused) = approve(&ada, &wide_id)?;
    assert_eq!(status, 409, "{refused}");
    let (_, listed) = live.get(&ada, "/api/v1/employees/upgrades")?;
    let stale = listed["items"]
        .as_array()
        .context("no items")?
        .iter()
        .find(|u| u["id"] == wide_id.as_str())
        .context("the stale upgrade is gone")?
        .clone();
    assert_eq!(stale["status"], "stale", "{stale}");
    assert!(
        !general()?.contains("read"),
        "a stale upgrade came into force"
    );

    // Bad submissions change nothing.
    let before = employees()?;
    for (manifest, component, why) in [
        (
            manifest(r#""post""#),
            "not base64!".to_string(),
            "not base64",
        ),
        (
            manifest(r#""post""#),
            base64::engine::general_purpose::STANDARD.encode(b"hello"),
            "not WebAssembly",
        ),
        (
            manifest(r#""post""#),
            base64::engine::general_purpose::STANDARD
                .encode(std::fs::read(clancy_guests::WRONG_WORLD)?),
            "",
        ),
        (
            "name = \"uploaded\"\ngrant = 3\n".to_string(),
            component.clone(),
            "manifest:",
        ),
        (
            "name = \"uploaded\"\ncomponent = \"x.wasm\"\n".to_string(),
            component.clone(),
            "",
        ),
    ] {
        let (status, body) = submit(&alice, &manifest, &component)?;
        assert_eq!(status, 422, "{body}");
        assert!(
            body["detail"].as_str().is_some_and(|d| d.contains(why)),
            "{body}"
        );
    }
    assert_eq!(employees()?, before);
    let log = live.org.audit().entries()?;
    assert!(log.iter().any(|e| e.record.action == "employees-submitted"));
    assert!(log.iter().any(
        |e| e.record.action == "employees-upgrade" && e.record.result.contains("denied by ada")
    ));
    Ok(())
}

#[test]
fn a_disabled_employee_starts_nothing_until_an_admin_enables_it() -> Result<()> {
    let mut waiting = String::new();
    let live = Live::start_with(RateLimits::default(), |org| {
        register(org)?;
        let ada = clancy::operators::Operator {
            name: "ada".into(),
            role: Role::Admin,
        };
        org.add_operator(&ada, None)?;
        waiting = org
            .request_task("test-employee", "print queued before", "ada")?
            .id;
        org.set_disabled("test-employee", true, &ada)?;
        Ok(())
    })?;
    let (_, ada) = live.org.create_token("ada", Role::Admin, 1, "ada")?;
    let (_, alice) = live.org.create_token("alice", Role::Manager, 1, "ada")?;
    let task = r#"{"employee": "test-employee", "task": "print hello"}"#;
    let not_run = ended(&live, &ada, &waiting)?;
    assert_eq!(not_run["state"], "cancelled", "{not_run}");
    assert_eq!(live.post(&alice, "/api/v1/tasks", task)?.0, 409);
    let (_, listed) = live.get(&ada, "/api/v1/employees")?;
    assert_eq!(listed["items"][0]["disabled"], true, "{listed}");
    let refused = live
        .org
        .load(TestEnv::manifest(HOSTILE, &with_hostile_imports(CHAT))?)
        .err()
        .context("a disabled employee was loaded")?;
    assert!(refused.to_string().contains("disabled by ada"), "{refused}");
    assert_eq!(
        live.post(&alice, "/api/v1/employees/test-employee/enable", "")?
            .0,
        403,
        "a manager enables nothing"
    );
    assert_eq!(
        live.post(&ada, "/api/v1/employees/nobody/enable", "")?.0,
        404
    );
    assert_eq!(
        live.post(&ada, "/api/v1/employees/test-employee/enable", "")?
            .0,
        204
    );
    let (status, queued) = live.post(&alice, "/api/v1/tasks", task)?;
    assert_eq!(status, 202, "{queued}");
    let done = ended(&live, &alice, queued["id"].as_str().context("no id")?)?;
    assert_eq!(done["state"], "completed");
    let log = live.org.audit().entries()?;
    for action in ["employees-disable", "employees-enable"] {
        assert!(log.iter().any(|e| e.record.action == action), "{action}");
    }

    // The same from the command line, on a data dir of its own.
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let manifest = dir.path().join("employee.toml");
    std::fs::write(
        &manifest,
        format!(
            "name = \"ticker\"\ncomponent = {HOSTILE:?}\n{}",
            with_hostile_imports(CHAT)
        ),
    )?;
    let manifest = manifest.display().to_string();
    let clancy = |args: &[&str]| crate::env::clancy(&data, args);
    assert!(
        clancy(&["operators", "add", "ada", "--role", "admin"])?
            .status
            .success()
    );
    assert!(
        clancy(&["run", &manifest, "--task", "print hi"])?
            .status
            .success()
    );
    let off = clancy(&["employees", "disable", "ticker", "--as", "ada"])?;
    assert!(off.status.success(), "{}", crate::env::stderr(&off));
    assert!(crate::env::stdout(&clancy(&["employees", "list"])?).contains("ticker (DISABLED)"));
    let run = clancy(&["run", &manifest, "--task", "print hi"])?;
    assert!(!run.status.success());
    assert!(
        crate::env::stderr(&run).contains("disabled by ada"),
        "{}",
        crate::env::stderr(&run)
    );
    let by_nobody = clancy(&["employees", "enable", "ticker", "--as", "mallory"])?;
    assert_eq!(
        by_nobody.status.code(),
        Some(2),
        "{}",
        crate::env::stderr(&by_nobody)
    );
    Ok(())
}

/// Workers taking tasks at once take every queued task, each exactly once:
/// a taker that read the queue before another took a task finds it taken
/// (its record says so) rather than taking it again.
#[test]
fn concurrent_takers_take_every_task_exactly_once() -> Result<()> {
    let env = TestEnv::new()?;
    register(&env.host)?;
    let mut requested = Vec::new();
    for n in 0..300 {
        let id = env
            .host
            .request_task("test-employee", &format!("print {n}"), "alice")?
            .id;
        requested.push(id);
    }
    let host = &env.host;
    let taken = std::thread::scope(|s| -> Result<Vec<String>> {
        let takers: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(move || -> Result<Vec<String>> {
                    let mut mine = Vec::new();
                    while let Some(task) = host.take_task()? {
                        mine.push(task.id);
                    }
                    Ok(mine)
                })
            })
            .collect();
        let mut all = Vec::new();
        for taker in takers {
            all.extend(
                taker
                    .join()
                    .map_err(|_| anyhow::anyhow!("a taker panicked"))??,
            );
        }
        Ok(all)
    })?;
    let mut unique = taken.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), taken.len(), "a task was taken twice");
    requested.sort();
    assert_eq!(unique, requested, "a task was never taken");
    assert_eq!(host.queued_tasks()?, 0);
    Ok(())
}
