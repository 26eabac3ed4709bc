//! Hostile guests try what an employee must never do. Each test asserts the
//! attempt failed *and* nothing happened: no side effect in the sandbox
//! workspace, the refusal is audited, and the host serves the next task.

use anyhow::Result;
use clancy::audit::{Decision, Kind};
use clancy::org::OrgError;
use clancy::runtime::{LoadError, TaskEnd};
use clancy_guests::{HOSTILE, USES_FILESYSTEM, USES_HTTP, USES_SOCKETS};

use crate::env::{HOSTILE_GRANTS, TestEnv, completed, trapped};

/// The host still runs a normal task after a hostile one.
fn host_still_serves(env: &TestEnv) -> Result<()> {
    let before = env.channel("#general")?.len();
    let result = env.run(HOSTILE, HOSTILE_GRANTS, "post still alive")?;
    assert!(
        completed(&result)?.starts_with("posted: done"),
        "{:?}",
        result.end
    );
    assert_eq!(env.channel("#general")?.len(), before + 1);
    Ok(())
}

fn task_end_recorded(env: &TestEnv, task: &str, needle: &str) -> Result<()> {
    let ends = env.audit_of(task, Kind::TaskEnd)?;
    assert_eq!(ends.len(), 1, "one task-end entry");
    assert!(
        ends[0].record.result.contains(needle),
        "{:?} lacks {needle:?}",
        ends[0].record.result
    );
    Ok(())
}

#[test]
fn an_infinite_loop_is_stopped_at_its_deadline_and_the_host_serves_the_next_task() -> Result<()> {
    let env = TestEnv::new()?;
    let started = std::time::Instant::now();
    let result = env.run(HOSTILE, HOSTILE_GRANTS, "infinite-loop")?;
    assert!(trapped(&result)?.contains("time limit of 1000 ms"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "the deadline did not stop the loop"
    );
    task_end_recorded(&env, &result.task_id, "trapped")?;
    host_still_serves(&env)
}

/// A guest blocked inside a WASI call runs no instructions, so epochs never
/// reach it: each of these must still end at the task's wall-time limit.
#[test]
fn a_guest_blocked_in_a_wasi_call_is_stopped_at_its_time_limit() -> Result<()> {
    let env = TestEnv::new()?;
    for command in ["sleep 20000", "sleep-forever", "block-poll"] {
        let started = std::time::Instant::now();
        let result = env.run(HOSTILE, HOSTILE_GRANTS, command)?;
        let took = started.elapsed();
        assert!(
            trapped(&result)?.contains("time limit of 1000 ms"),
            "{command}: {:?}",
            result.end
        );
        // The limit is 1 s; the sleep is 20 s or forever (10 s leaves room
        // for a loaded machine).
        assert!(
            took < std::time::Duration::from_secs(10),
            "{command} held the host for {took:?}"
        );
        task_end_recorded(&env, &result.task_id, "time limit of 1000 ms")?;
        // The next task runs at once, on the same host.
        let started = std::time::Instant::now();
        host_still_serves(&env)?;
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
    // A short sleep within the limit is allowed and completes.
    let result = env.run(HOSTILE, HOSTILE_GRANTS, "sleep 10")?;
    assert_eq!(completed(&result)?, "slept 10 ms");
    Ok(())
}

#[test]
fn a_memory_bomb_hits_the_memory_limit() -> Result<()> {
    let env = TestEnv::new()?;
    let result = env.run(HOSTILE, HOSTILE_GRANTS, "memory-bomb")?;
    assert!(
        trapped(&result)?.contains("memory limit of 32 MiB"),
        "{:?}",
        result.end
    );
    task_end_recorded(&env, &result.task_id, "memory limit")?;
    host_still_serves(&env)
}

#[test]
fn deep_recursion_traps_instead_of_crashing_the_host() -> Result<()> {
    let env = TestEnv::new()?;
    let result = env.run(HOSTILE, HOSTILE_GRANTS, "deep-recursion")?;
    trapped(&result)?;
    task_end_recorded(&env, &result.task_id, "trapped")?;
    host_still_serves(&env)
}

#[test]
fn a_guest_panic_fails_the_task_and_its_output_is_captured() -> Result<()> {
    let env = TestEnv::new()?;
    let result = env.run(HOSTILE, HOSTILE_GRANTS, "panic")?;
    assert!(trapped(&result)?.contains("panicked"));
    assert!(result.guest_output.contains("the employee gave up"));
    host_still_serves(&env)
}

#[test]
fn a_huge_argument_is_rejected_before_it_reaches_the_provider() -> Result<()> {
    let env = TestEnv::new()?;
    let before = env.channel("#general")?;
    let result = env.run(HOSTILE, HOSTILE_GRANTS, "huge-argument 8")?;
    assert!(completed(&result)?.contains("rejected: arguments of 8388608 bytes exceed the limit"));
    assert_eq!(env.channel("#general")?, before, "nothing was posted");
    let refusals = env.audit_of(&result.task_id, Kind::Refusal)?;
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0].record.decision, Some(Decision::Rejected));
    assert!(
        env.audit_of(&result.task_id, Kind::Intent)?.is_empty(),
        "no intent: the provider was never called"
    );
    // The audit entry holds a summary, not the 8 MiB text.
    assert!(refusals[0].record.args.len() < 200);
    host_still_serves(&env)
}

#[test]
fn a_huge_note_is_cut_to_size_in_the_audit_log() -> Result<()> {
    let env = TestEnv::new()?;
    let result = env.run(HOSTILE, HOSTILE_GRANTS, "huge-note")?;
    completed(&result)?;
    let notes = env.audit_of(&result.task_id, Kind::Note)?;
    assert_eq!(notes.len(), 1);
    assert!(notes[0].record.reason.len() <= 4 * 1024 + 3);
    Ok(())
}

#[test]
fn an_ungranted_import_is_refused_before_instantiation_naming_the_import() -> Result<()> {
    let env = TestEnv::new()?;
    // The hostile guest imports mail, chat and files; grant only chat.
    let grants =
        "[[grant]]\nintegration = \"slack\"\nscope = \"channel:#general\"\nactions = [\"post\"]\n";
    let err = match env.host.load(TestEnv::manifest(HOSTILE, grants)?) {
        Ok(_) => anyhow::bail!("the employee was loaded"),
        Err(e) => e,
    };
    let OrgError::Load(LoadError::Imports { problems, .. }) = &err else {
        anyhow::bail!("wrong error: {err}")
    };
    let text = problems.join("\n");
    assert!(
        text.contains("clancy:employee/mail@0.1.0") && text.contains("no mail integration"),
        "{text}"
    );
    assert!(text.contains("clancy:employee/files@0.1.0"), "{text}");
    assert!(
        !text.contains("clancy:employee/chat"),
        "chat is granted: {text}"
    );
    // The refusal is audited, and no task ever started.
    let audit = env.audit()?;
    assert!(
        audit
            .iter()
            .any(|e| e.kind == Kind::Refusal && e.record.action == "load")
    );
    assert!(!audit.iter().any(|e| e.kind == Kind::TaskStart));
    Ok(())
}

#[test]
fn wasi_filesystem_socket_and_http_imports_are_refused() -> Result<()> {
    let env = TestEnv::new()?;
    for (component, needle) in [
        (USES_FILESYSTEM, "wasi:filesystem/"),
        (USES_SOCKETS, "wasi:sockets/"),
        (USES_HTTP, "wasi:http/"),
    ] {
        let err = match env.host.load(TestEnv::manifest(component, "")?) {
            Ok(_) => anyhow::bail!("{component} was loaded"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(needle), "{err}");
        assert!(err.contains("employees get no"), "{err}");
    }
    Ok(())
}

#[test]
fn escaping_the_granted_folder_fails_and_touches_nothing_outside() -> Result<()> {
    let env = TestEnv::new()?;
    let data = env.data_dir();
    std::fs::create_dir_all(data.join("files/default/out"))?;
    std::fs::create_dir_all(data.join("files/default/other"))?;
    std::fs::write(
        data.join("files/default/other/secret.txt"),
        "other folder's secret",
    )?;
    std::fs::write(env.dir.path().join("outside.txt"), "outside the data dir")?;
    #[cfg(unix)]
    std::os::unix::fs::symlink(
        env.dir.path().join("outside.txt"),
        data.join("files/default/out/link"),
    )?;
    let absolute = env.dir.path().join("outside.txt");
    let task = format!(
        "escape ../other/secret.txt,../../../outside.txt,{},link/x,sub/../../other/secret.txt",
        absolute.display()
    );
    let result = env.run(HOSTILE, HOSTILE_GRANTS, &task)?;
    let summary = completed(&result)?;
    assert!(!summary.contains("OK("), "an escape succeeded: {summary}");
    assert!(
        !summary.contains("other folder's secret") && !summary.contains("outside the data dir"),
        "{summary}"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("files/default/other/secret.txt"))?,
        "other folder's secret"
    );
    assert_eq!(
        std::fs::read_to_string(env.dir.path().join("outside.txt"))?,
        "outside the data dir"
    );
    // Each refused write is on record with the provider's reason.
    let results = env.audit_of(&result.task_id, Kind::Result)?;
    assert!(
        results
            .iter()
            .filter(|e| e.record.action == "write")
            .all(|e| e.record.result.starts_with("rejected"))
    );
    // A write inside the folder works.
    let ok = env.run(HOSTILE, HOSTILE_GRANTS, "write-file notes/today.txt hello")?;
    completed(&ok)?;
    assert_eq!(
        std::fs::read_to_string(data.join("files/default/out/notes/today.txt"))?,
        "hello"
    );
    Ok(())
}

#[test]
fn a_denied_action_is_audited_and_never_reaches_the_provider() -> Result<()> {
    let env = TestEnv::new()?;
    let sent_before = env.host.sandbox().all_mail()?.len();
    let result = env.run(HOSTILE, HOSTILE_GRANTS, "send-mail")?;
    let summary = completed(&result)?;
    assert!(
        summary.contains("denied: test-employee is not granted \"send\" on gmail label:support"),
        "{summary}"
    );
    assert_eq!(
        env.host.sandbox().all_mail()?.len(),
        sent_before,
        "no mail was sent"
    );
    let refusals = env.audit_of(&result.task_id, Kind::Refusal)?;
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0].record.decision, Some(Decision::Denied));
    assert_eq!(refusals[0].record.reason, "exfiltrating");
    assert!(env.audit_of(&result.task_id, Kind::Intent)?.is_empty());
    Ok(())
}

#[test]
fn mail_outside_the_granted_label_cannot_be_read() -> Result<()> {
    let env = TestEnv::new()?;
    let result = env.run(HOSTILE, HOSTILE_GRANTS, "read-other-label m-1008")?;
    let summary = completed(&result)?;
    assert!(
        summary.starts_with("refused: rejected: no message"),
        "{summary}"
    );
    assert!(!summary.contains("salary"));
    Ok(())
}

#[test]
fn handles_exist_only_for_granted_scopes() -> Result<()> {
    let env = TestEnv::new()?;
    let result = env.run(HOSTILE, HOSTILE_GRANTS, "count-handles")?;
    assert_eq!(completed(&result)?, "mailboxes 1 channels 1 folders 1");
    Ok(())
}

#[test]
fn flooding_past_the_rate_limit_is_refused_and_audited() -> Result<()> {
    let env = TestEnv::new()?;
    let grants = HOSTILE_GRANTS.replace("[limits]", "[limits]\ncalls_per_minute = 5");
    let before = env.channel("#general")?.len();
    let result = env.run(HOSTILE, &grants, "flood")?;
    let summary = completed(&result)?;
    assert!(
        summary.starts_with("rate limited after 5 posts"),
        "{summary}"
    );
    assert_eq!(env.channel("#general")?.len(), before + 5);
    let refusals = env.audit_of(&result.task_id, Kind::Refusal)?;
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0].record.decision, Some(Decision::RateLimited));
    Ok(())
}

#[test]
fn a_per_grant_rate_limit_applies_on_top_of_the_employees() -> Result<()> {
    let env = TestEnv::new()?;
    let grants = HOSTILE_GRANTS.replace(
        "actions = [\"post\"]",
        "actions = [\"post\"]\ncalls_per_minute = 2",
    );
    let result = env.run(HOSTILE, &grants, "flood")?;
    assert!(completed(&result)?.starts_with("rate limited after 2 posts"));
    Ok(())
}

#[test]
fn a_forged_handle_traps_the_task_and_reads_nothing() -> Result<()> {
    let env = TestEnv::new()?;
    let result = env.run(HOSTILE, HOSTILE_GRANTS, "forge-handle")?;
    assert!(
        trapped(&result)?.contains("unknown handle index"),
        "{:?}",
        result.end
    );
    assert!(env.audit_of(&result.task_id, Kind::Intent)?.is_empty());
    host_still_serves(&env)
}

#[test]
fn a_chatty_guest_is_stopped_at_the_host_call_cap() -> Result<()> {
    let env = TestEnv::new()?;
    let grants = HOSTILE_GRANTS.replace("[limits]", "[limits]\nmax_calls = 50");
    let result = env.run(HOSTILE, &grants, "call-forever")?;
    assert!(
        trapped(&result)?.contains("cap of 50 host calls"),
        "{:?}",
        result.end
    );
    assert_eq!(env.audit_of(&result.task_id, Kind::Note)?.len(), 50);
    Ok(())
}

#[test]
fn a_write_without_a_reason_is_rejected() -> Result<()> {
    let env = TestEnv::new()?;
    let before = env.channel("#general")?;
    let result = env.run(HOSTILE, HOSTILE_GRANTS, "post-without-reason hi")?;
    assert!(completed(&result)?.contains("a write needs a plain-English reason"));
    assert_eq!(env.channel("#general")?, before);
    Ok(())
}

#[test]
fn guest_output_is_captured_not_inherited() -> Result<()> {
    let env = TestEnv::new()?;
    let result = env.run(HOSTILE, HOSTILE_GRANTS, "print hi there")?;
    completed(&result)?;
    assert_eq!(result.guest_output, "hello from the guest: hi there\n");
    Ok(())
}

#[test]
fn an_employee_error_is_a_failed_task_with_an_audit_record() -> Result<()> {
    let env = TestEnv::new()?;
    let result = env.run(HOSTILE, HOSTILE_GRANTS, "no-such-command")?;
    assert_eq!(
        result.end,
        TaskEnd::Failed {
            error: "unknown command \"no-such-command\"".into()
        }
    );
    task_end_recorded(&env, &result.task_id, "failed: unknown command")
}

#[test]
fn a_component_path_that_is_a_device_a_fifo_or_a_huge_file_is_refused_without_reading_it()
-> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let fifo = dir.path().join("component.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status()?;
    anyhow::ensure!(made.success(), "mkfifo failed");
    let huge = dir.path().join("huge.wasm");
    std::fs::File::create(&huge)?.set_len(clancy::runtime::MAX_COMPONENT_BYTES + 1)?;
    for (path, why) in [
        (
            std::path::PathBuf::from("/dev/zero"),
            "it is not a regular file",
        ),
        (fifo, "it is not a regular file"),
        (huge, "a component may be at most"),
    ] {
        let manifest = dir.path().join("employee.toml");
        std::fs::write(
            &manifest,
            format!(
                "name = \"x\"\ncomponent = {:?}\n[[grant]]\nintegration = \"slack\"\nscope = \"channel:#general\"\nactions = [\"post\"]\n",
                path.display().to_string()
            ),
        )?;
        for command in ["check", "run"] {
            let mut args = vec![command, manifest.to_str().unwrap_or_default()];
            if command == "run" {
                args.extend(["--task", "hello"]);
            }
            // Refused from its metadata, never read (reading a FIFO would block).
            let o = crate::env::clancy(&data, &args)?;
            assert_eq!(o.status.code(), Some(2), "{path:?} {command}");
            let err = crate::env::stderr(&o);
            assert!(err.contains(why), "{path:?}: {err}");
        }
    }
    Ok(())
}

#[test]
fn a_guest_printing_past_the_output_cap_is_stopped_with_a_message_that_says_why() -> Result<()> {
    let env = TestEnv::new()?;
    let result = env.run(HOSTILE, HOSTILE_GRANTS, "shout")?;
    let reason = trapped(&result)?;
    assert!(reason.contains("more than 64 KiB"), "{reason}");
    // What it printed up to the cap is kept, and the host serves the next task.
    assert!(result.guest_output.len() <= 64 * 1024);
    assert!(result.guest_output.starts_with("xxxx"));
    let next = env.run(HOSTILE, HOSTILE_GRANTS, "print hello")?;
    assert_eq!(completed(&next)?, "printed");
    Ok(())
}
