//! The audit log is tamper-evident: every kind of tampering is detected, and
//! an action whose intent cannot be recorded does not happen.

use std::sync::Arc;

use anyhow::Result;
use clancy::audit::{Entry, Kind};
use clancy::org::Org;
use clancy::store::{Entry as Stored, SledStore, Store, StoreError, Write};
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
    assert!(env.host.audit().verify(None)?.is_intact());
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
    let v = env.host.audit().verify(None)?;
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
fn an_edited_entry_with_a_recomputed_hash_still_breaks_the_chain() -> Result<()> {
    let env = env_with_history()?;
    let text = String::from_utf8(raw(&env, 4)?)?;
    // Change a byte-for-byte field and keep the stored hash: the next entry's prev no longer matches.
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
fn a_truncation_that_also_rewrites_the_head_is_caught_by_an_expected_head() -> Result<()> {
    let env = env_with_history()?;
    let recorded_head = env.host.audit().verify(None)?.head;
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
        env.host.audit().verify(None)?.is_intact(),
        "without an outside anchor the cut is consistent"
    );
    let v = env.host.audit().verify(Some(&recorded_head))?;
    assert!(
        v.problems
            .iter()
            .any(|p| p.contains("is not in the log: truncated or rewritten")),
        "{:?}",
        v.problems
    );
    // An anchor recorded earlier stays valid while the log only grows.
    let env2 = env_with_history()?;
    let early = env2.host.audit().verify(None)?.head;
    env2.run(HOSTILE, HOSTILE_GRANTS, "post later")?;
    assert!(env2.host.audit().verify(Some(&early))?.is_intact());
    Ok(())
}

/// A store whose audit writes of call intents fail.
struct IntentsFail(SledStore);

impl Store for IntentsFail {
    fn get(&self, area: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.get(area, key)
    }

    fn write(&self, area: &str, writes: Vec<Write>) -> Result<(), StoreError> {
        let intent = writes.iter().any(|(_, v)| {
            v.as_ref()
                .is_some_and(|v| String::from_utf8_lossy(v).contains("\"kind\":\"intent\""))
        });
        if area == "audit" && intent {
            return Err(StoreError::Io("disk full".into()));
        }
        self.0.write(area, writes)
    }

    fn scan(&self, area: &str, prefix: &[u8]) -> Result<Vec<Stored>, StoreError> {
        self.0.scan(area, prefix)
    }

    fn write_if(
        &self,
        area: &str,
        key: &[u8],
        expected: Option<&[u8]>,
        writes: Vec<Write>,
    ) -> Result<bool, StoreError> {
        self.0.write_if(area, key, expected, writes)
    }
}

#[test]
fn an_action_whose_intent_cannot_be_audited_does_not_happen() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let store: Arc<dyn Store> = Arc::new(IntentsFail(SledStore::open(&data.join("store"))?));
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

#[test]
fn the_readable_log_folds_intents_into_results_and_flags_an_interrupted_call() -> Result<()> {
    use clancy::audit::{Decision, Record, render_log};
    let env = TestEnv::new()?;
    let log = env.host.audit();
    let call = Record {
        employee: "e".into(),
        task: "t".into(),
        interface: "chat".into(),
        scope: "channel:#general".into(),
        action: "post".into(),
        reason: "because".into(),
        decision: Some(Decision::Allowed),
        ..Record::default()
    };
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
