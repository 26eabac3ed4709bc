//! The audit log is tamper-evident: every kind of tampering is detected, and
//! an action whose intent cannot be recorded does not happen.

use std::sync::Arc;

use anyhow::Result;
use clancy::audit::{Entry, Kind};
use clancy::org::Org;
use clancy::store::{AreaWrite, Entry as Stored, Guard, SledStore, Store, StoreError, Write};
use clancy_guests::HOSTILE;

use crate::env::{HOSTILE_GRANTS, TestEnv, completed};

fn key(seq: u64) -> Vec<u8> {
    let mut k = b"default/e/".to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// An env whose log holds a few real tasks' entries.
fn env_with_history() -> Result<TestEnv> {
    let env = TestEnv::new()?;
    for text in ["post one", "post two", "send-mail"] {
        env.run(HOSTILE, HOSTILE_GRANTS, text)?;
    }
    assert!(env.host.verify_audit(None)?.is_intact());
    assert!(env.audit()?.len() >= 10);
    Ok(env)
}

fn raw(env: &TestEnv, seq: u64) -> Result<Vec<u8>> {
    env.host
        .store()
        .get("audit", &key(seq))?
        .ok_or_else(|| anyhow::anyhow!("no entry {seq}"))
}

fn put(env: &TestEnv, writes: Vec<Write>) -> Result<()> {
    Ok(env.host.store().write("audit", writes)?)
}

fn problems(env: &TestEnv) -> Result<String> {
    let v = env.host.verify_audit(None)?;
    assert!(!v.is_intact(), "tampering went unnoticed");
    Ok(v.problems.join("\n"))
}

#[test]
fn an_edited_entry_is_detected() -> Result<()> {
    let env = env_with_history()?;
    let mut entry: Entry = serde_json::from_slice(&raw(&env, 5)?)?;
    entry.record.reason = "nothing to see here".into();
    put(&env, vec![(key(5), Some(serde_json::to_vec(&entry)?))])?;
    assert!(problems(&env)?.contains("entry #5 does not match its hash: edited"));
    Ok(())
}

#[test]
fn an_edited_entry_with_a_forged_hash_breaks_the_chain() -> Result<()> {
    let env = env_with_history()?;
    let text = String::from_utf8(raw(&env, 4)?)?;
    // Keep the content and put another hash in: the next entry's prev no longer matches.
    let mut entry: Entry = serde_json::from_str(&text)?;
    entry.hash = "f".repeat(64);
    put(&env, vec![(key(4), Some(serde_json::to_vec(&entry)?))])?;
    let p = problems(&env)?;
    assert!(
        p.contains("entry #4 does not match its hash") && p.contains("entry #5 does not follow"),
        "{p}"
    );
    Ok(())
}

/// Rewrite the log from entry `from` on as an attacker with write access to
/// the store would: change a reason, recompute every hash after it and the
/// head, so the chain is consistent in itself.
fn rewrite_with_recomputed_hashes(env: &TestEnv, from: u64) -> Result<()> {
    let entries = env.audit()?;
    let mut prev = entries[(from - 2) as usize].hash.clone();
    let mut writes = Vec::new();
    for mut entry in entries.into_iter().skip((from - 1) as usize) {
        if entry.seq == from {
            entry.record.reason = "nothing to see here".into();
        }
        entry.prev = prev;
        entry.hash = entry.compute_hash();
        prev = entry.hash.clone();
        writes.push((key(entry.seq), Some(serde_json::to_vec(&entry)?)));
        let head = serde_json::json!({ "seq": entry.seq, "hash": entry.hash });
        writes.push((b"default/head".to_vec(), Some(serde_json::to_vec(&head)?)));
    }
    put(env, writes)
}

#[test]
fn a_log_rewritten_with_every_hash_recomputed_fails_against_its_signed_checkpoints() -> Result<()> {
    let env = env_with_history()?;
    let signed = checkpoints(&env)?;
    // Every task end is covered by a signed checkpoint at or after it.
    let last_end = env
        .audit()?
        .iter()
        .filter(|e| e.kind == Kind::TaskEnd)
        .map(|e| e.seq)
        .max()
        .unwrap_or(u64::MAX);
    assert!(
        signed.last().is_some_and(|c| c.seq >= last_end),
        "the last task end (#{last_end}) is not covered: {signed:?}"
    );
    // A head recorded before the rewritten part (#3) stays in the chain.
    let recorded = env.audit()?[2].hash.clone();
    rewrite_with_recomputed_hashes(&env, 4)?;
    // The chain alone cannot tell, nor can a head recorded before the edit:
    // the rewrite is consistent.
    let chain_only = env.host.audit().verify(Some(&recorded), None)?;
    assert!(chain_only.is_intact(), "{:?}", chain_only.problems);
    assert!(!env.host.verify_audit(Some(&recorded))?.is_intact());
    // The checkpoint signed at the first task end (after #4) names the divergence.
    let first = signed
        .iter()
        .find(|c| c.seq >= 4)
        .map(|c| c.seq)
        .unwrap_or(0);
    let before = signed
        .iter()
        .filter(|c| c.seq < 4)
        .map(|c| c.seq)
        .max()
        .unwrap_or(0);
    let p = problems(&env)?;
    assert!(
        p.contains(&format!(
            "the log differs from the signed checkpoint of #{first}: entries #{}..#{first} were rewritten after they were signed (the first divergence; the checkpoint of #{before} still matches)",
            before + 1
        )),
        "{p}"
    );
    Ok(())
}

fn checkpoints(env: &TestEnv) -> Result<Vec<clancy::keys::Checkpoint>> {
    let file = env.data_dir().join("checkpoints.jsonl");
    Ok(clancy::keys::read_checkpoints(&file)?.0)
}

#[test]
fn checkpoints_re_signed_with_another_key_or_cut_from_the_file_are_caught() -> Result<()> {
    let env = env_with_history()?;
    let file = env.data_dir().join("checkpoints.jsonl");
    rewrite_with_recomputed_hashes(&env, 2)?;
    // The attacker signs the rewritten heads with a key of their own and
    // replaces the checkpoint file.
    let theirs = clancy::keys::Keys::ephemeral();
    let forged: Vec<String> = checkpoints(&env)?
        .into_iter()
        .map(|c| {
            let head = env.audit().map(|a| a[(c.seq - 1) as usize].hash.clone());
            head.map(|h| serde_json::to_string(&theirs.checkpoint(&c.org, c.seq, &h, c.time)))
        })
        .collect::<Result<Result<_, _>>>()??;
    std::fs::write(&file, forged.join("\n") + "\n")?;
    let p = problems(&env)?;
    assert!(
        p.contains("is not signed by key") && p.contains("forged"),
        "{p}"
    );
    // Removing the checkpoint file instead leaves task ends unsigned.
    std::fs::remove_file(&file)?;
    let p = problems(&env)?;
    assert!(
        p.contains("that must have a signed checkpoint")
            && p.contains("the checkpoint file was cut or replaced"),
        "{p}"
    );
    Ok(())
}

#[test]
fn a_deleted_entry_is_detected() -> Result<()> {
    let env = env_with_history()?;
    put(&env, vec![(key(3), None)])?;
    let p = problems(&env)?;
    assert!(p.contains("entries #3..#3 are missing: deleted"), "{p}");
    Ok(())
}

#[test]
fn reordered_entries_are_detected() -> Result<()> {
    let env = env_with_history()?;
    let (a, b) = (raw(&env, 6)?, raw(&env, 7)?);
    put(&env, vec![(key(6), Some(b)), (key(7), Some(a))])?;
    let p = problems(&env)?;
    assert!(p.contains("reordered") || p.contains("moved"), "{p}");
    Ok(())
}

#[test]
fn a_truncated_log_is_detected_by_its_head() -> Result<()> {
    let env = env_with_history()?;
    let last = env.audit()?.len() as u64;
    put(&env, vec![(key(last), None), (key(last - 1), None)])?;
    let p = problems(&env)?;
    assert!(
        p.contains(&format!("entries after #{} were truncated", last - 2)),
        "{p}"
    );
    Ok(())
}

#[test]
fn a_truncation_that_also_rewrites_the_head_is_caught_by_checkpoints_and_an_expected_head()
-> Result<()> {
    let env = env_with_history()?;
    let recorded_head = env.host.verify_audit(None)?.head;
    let entries = env.audit()?;
    let last = entries.len() as u64;
    let new_last = &entries[(last - 3) as usize];
    let head = serde_json::json!({ "seq": new_last.seq, "hash": new_last.hash });
    put(
        &env,
        vec![
            (key(last), None),
            (key(last - 1), None),
            (b"default/head".to_vec(), Some(serde_json::to_vec(&head)?)),
        ],
    )?;
    assert!(
        env.host.audit().verify(None, None)?.is_intact(),
        "without an outside anchor the cut is consistent"
    );
    // The last task end was signed: the checkpoint outlives the cut.
    let p = problems(&env)?;
    assert!(
        p.contains(&format!(
            "the log ends at #{} but a checkpoint signed #{last}",
            last - 2
        )),
        "{p}"
    );
    // So does a head recorded elsewhere.
    let v = env.host.audit().verify(Some(&recorded_head), None)?;
    assert!(
        v.problems
            .iter()
            .any(|p| p.contains("is not in the log: truncated or rewritten")),
        "{:?}",
        v.problems
    );
    // An anchor recorded earlier stays valid while the log only grows.
    let env2 = env_with_history()?;
    let early = env2.host.verify_audit(None)?.head;
    env2.run(HOSTILE, HOSTILE_GRANTS, "post later")?;
    assert!(env2.host.verify_audit(Some(&early))?.is_intact());
    Ok(())
}

#[test]
fn an_action_whose_intent_cannot_be_audited_does_not_happen() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let store: Arc<dyn Store> = Arc::new(AuditKindFails {
        inner: SledStore::open(&data.join("store"))?,
        failing: std::sync::Mutex::new(Some("intent")),
    });
    let host = Org::open_with_store(&data, "default", store)?;
    host.sandbox().seed()?;
    let general = |h: &Org| -> Result<usize> {
        Ok(h.sandbox()
            .all_chat()?
            .into_iter()
            .find(|(n, _)| n == "#general")
            .map_or(0, |(_, m)| m.len()))
    };
    let before = general(&host)?;
    let employee = host.load(TestEnv::manifest(HOSTILE, HOSTILE_GRANTS)?)?;
    let result = employee.run("post this must not appear")?;
    let summary = completed(&result)?;
    assert!(
        summary.contains("the audit log is unavailable, so the action was not taken"),
        "{summary}"
    );
    assert_eq!(
        general(&host)?,
        before,
        "the post happened without an audit intent"
    );
    assert!(
        !host
            .audit()
            .entries()?
            .iter()
            .any(|e| e.kind == Kind::Result)
    );
    Ok(())
}

/// The record of an allowed post by `employee` in task `t`, with a reason.
pub(crate) fn allowed_post(employee: &str) -> clancy::audit::Record {
    clancy::audit::Record {
        employee: employee.into(),
        task: "t".into(),
        interface: "chat".into(),
        scope: "channel:#general".into(),
        action: "post".into(),
        reason: "because".into(),
        decision: Some(clancy::audit::Decision::Allowed),
        ..clancy::audit::Record::default()
    }
}

#[test]
fn the_readable_log_folds_intents_into_results_and_flags_an_interrupted_call() -> Result<()> {
    use clancy::audit::{Record, render_log};
    let env = TestEnv::new()?;
    let log = env.host.audit();
    let call = allowed_post("e");
    let done = log.append(Kind::Intent, call.clone())?;
    log.append(
        Kind::Result,
        Record {
            intent: Some(done.seq),
            result: "done: c-1".into(),
            ..call.clone()
        },
    )?;
    log.append(Kind::Intent, call)?;
    let lines = render_log(&log.entries()?);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].contains("post -> done: c-1 (intent #1)") && lines[0].contains("why: \"because\""),
        "{lines:?}"
    );
    assert!(lines[1].contains("NO RESULT RECORDED"), "{lines:?}");
    Ok(())
}

/// A store whose audit writes of one kind of entry fail while `failing`
/// names it (as a full disk would).
struct AuditKindFails {
    inner: SledStore,
    failing: std::sync::Mutex<Option<&'static str>>,
}

impl AuditKindFails {
    fn fail(&self, kind: Option<&'static str>) {
        *self.failing.lock().unwrap_or_else(|p| p.into_inner()) = kind;
    }

    fn refuses(&self, area: &str, value: &Option<Vec<u8>>) -> bool {
        let failing = *self.failing.lock().unwrap_or_else(|p| p.into_inner());
        area == "audit"
            && failing.is_some_and(|kind| {
                value.as_ref().is_some_and(|v| {
                    String::from_utf8_lossy(v).contains(&format!("\"kind\":\"{kind}\""))
                })
            })
    }
}

impl Store for AuditKindFails {
    fn get(&self, area: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(area, key)
    }

    fn write(&self, area: &str, writes: Vec<Write>) -> Result<(), StoreError> {
        if writes.iter().any(|(_, v)| self.refuses(area, v)) {
            return Err(StoreError::Io("disk full".into()));
        }
        self.inner.write(area, writes)
    }

    fn scan(&self, area: &str, prefix: &[u8]) -> Result<Vec<Stored>, StoreError> {
        self.inner.scan(area, prefix)
    }

    fn areas(&self) -> Result<Vec<String>, StoreError> {
        self.inner.areas()
    }

    fn write_if(
        &self,
        area: &str,
        key: &[u8],
        expected: Option<&[u8]>,
        writes: Vec<Write>,
    ) -> Result<bool, StoreError> {
        if writes.iter().any(|(_, v)| self.refuses(area, v)) {
            return Err(StoreError::Io("disk full".into()));
        }
        self.inner.write_if(area, key, expected, writes)
    }

    fn write_across(
        &self,
        guard: Option<&Guard>,
        writes: Vec<AreaWrite>,
    ) -> Result<bool, StoreError> {
        if writes.iter().any(|(area, _, v)| self.refuses(area, v)) {
            return Err(StoreError::Io("disk full".into()));
        }
        self.inner.write_across(guard, writes)
    }
}

/// A queued request and a decision are written in one transaction with
/// the audit entry that records them: when the entry cannot be written,
/// neither is the request or the decision, and nothing runs.
#[test]
fn a_decision_or_a_queued_request_that_cannot_be_audited_does_not_take_effect() -> Result<()> {
    use clancy::approvals::Status;
    use clancy::org::Verdict;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let store = Arc::new(AuditKindFails {
        inner: SledStore::open(&data.join("store"))?,
        failing: std::sync::Mutex::new(None),
    });
    let host = Org::open_with_store(&data, "default", store.clone())?;
    host.sandbox().seed()?;
    host.operators().put(&clancy::operators::Operator {
        name: "alice".into(),
        role: clancy::operators::Role::Manager,
    })?;
    let posts = |h: &Org, text: &str| -> Result<usize> {
        Ok(h.sandbox()
            .all_chat()?
            .into_iter()
            .flat_map(|(_, m)| m)
            .filter(|m| m.text == text)
            .count())
    };
    let employee = host.load(TestEnv::manifest(
        HOSTILE,
        &crate::env::with_hostile_imports(crate::env::GATED_GENERAL_POST),
    )?)?;
    let id = crate::env::queued_id(completed(&employee.run("post first")?)?, "posted")?;

    // The decision's entry cannot be written: the request stays pending,
    // nothing is posted, and the log has no decision.
    store.fail(Some("decision"));
    for verdict in [Verdict::Approve, Verdict::Deny] {
        assert!(host.decide(&id, verdict, "alice", None).is_err());
        let a = host
            .approvals()
            .get(&id)?
            .ok_or_else(|| anyhow::anyhow!("gone"))?;
        assert_eq!(a.status, Status::Pending);
    }
    assert_eq!(posts(&host, "first")?, 0);

    // The queued entry cannot be written: the employee is told, and no
    // request exists for anyone to approve.
    store.fail(Some("queued"));
    let refused = employee.run("post second")?;
    assert!(
        completed(&refused)?.contains("the action was not queued"),
        "{:?}",
        refused.end
    );
    assert_eq!(host.approvals().list()?.len(), 1);

    // Space is back: the pending request is decided and runs once.
    store.fail(None);
    let done = host.decide(&id, Verdict::Approve, "alice", None)?;
    assert_eq!(done.status, Status::Executed);
    assert_eq!(posts(&host, "first")?, 1);
    let log = host.audit().entries()?;
    assert_eq!(
        log.iter().filter(|e| e.kind == Kind::Decision).count(),
        1,
        "one decision, the one that took effect"
    );
    assert!(
        !log.iter()
            .any(|e| e.kind == Kind::Queued && e.record.args.contains("second"))
    );
    assert!(host.verify_audit(None)?.is_intact());
    Ok(())
}

/// `verify` reads the log a page at a time (bounded memory): a log longer
/// than a page is intact, a head recorded in an early page is still found,
/// and an edit on a later page and a deleted entry between pages are caught.
#[test]
fn verify_reads_a_page_at_a_time_and_still_catches_every_change() -> Result<()> {
    let env = TestEnv::new()?;
    for n in 0..2100 {
        if n % 64 == 0 {
            // Made durable (and signed) now and then, as a busy host does.
            env.host.audit().settle()?;
        }
        env.host.audit().append(
            Kind::Note,
            clancy::audit::Record {
                employee: "host".into(),
                action: "note".into(),
                args: n.to_string(),
                ..Default::default()
            },
        )?;
    }
    let early = env
        .host
        .audit()
        .entry(10)?
        .map(|e| e.hash)
        .unwrap_or_default();
    let v = env.host.verify_audit(Some(&early))?;
    assert!(v.is_intact(), "{:?}", v.problems);
    assert_eq!(v.entries, env.host.audit().len()?);
    assert!(v.entries > 2000 && v.checkpoints > 30, "{v:?}");

    let mut entry: Entry = serde_json::from_slice(&raw(&env, 1500)?)?;
    entry.record.args = "nothing to see here".into();
    put(&env, vec![(key(1500), Some(serde_json::to_vec(&entry)?))])?;
    put(&env, vec![(key(1000), None)])?;
    let p = problems(&env)?;
    assert!(
        p.contains("entry #1500 does not match its hash: edited")
            && p.contains("entries #1000..#1000 are missing: deleted"),
        "{p}"
    );
    Ok(())
}
