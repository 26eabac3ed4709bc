//! Deciding reads the open requests, not the whole approval history: the
//! timer, every decision and recovery go through the index of open
//! requests, so their cost does not grow with how many were ever queued.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use clancy::approvals::{ActionRequest, Clock, Status};
use clancy::integrations::Integration;
use clancy::integrations::chat::ChatOp;
use clancy::manifest::ApprovalPolicy;
use clancy::org::{Org, Verdict};
use clancy::providers::Operation;
use clancy::store::{AreaWrite, Entry, Guard, SledStore, Store, StoreError, Write};

use crate::env::TestEnv;

/// The sled store, counting the records its scans return and the records
/// read one by one, by area.
struct Counting {
    inner: SledStore,
    scanned: Mutex<BTreeMap<String, usize>>,
    got: Mutex<BTreeMap<String, usize>>,
}

impl Counting {
    fn open(data: &std::path::Path) -> Result<Arc<Counting>> {
        std::fs::create_dir_all(data)?;
        Ok(Arc::new(Counting {
            inner: SledStore::open(&data.join("store"))?,
            scanned: Mutex::new(BTreeMap::new()),
            got: Mutex::new(BTreeMap::new()),
        }))
    }

    /// Records of `area` scans returned since the last call.
    fn take(&self, area: &str) -> usize {
        self.scanned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(area)
            .unwrap_or(0)
    }
}

impl Counting {
    /// Remove every key of `area` under `prefixes` (an index and its
    /// marker), as a store written before the index has none; how many.
    fn unindex(&self, area: &str, prefixes: &[&str]) -> Result<usize> {
        let mut gone = Vec::new();
        for prefix in prefixes {
            for (key, _) in self.inner.scan(area, prefix.as_bytes())? {
                gone.push((key, None));
            }
        }
        let n = gone.len();
        self.inner.write(area, gone)?;
        Ok(n)
    }

    /// Records of `area` read by scans or one by one since the last call.
    fn reads(&self, area: &str) -> usize {
        self.take(area) + self.take_got(area)
    }

    /// Records of `area` read one by one since the last call.
    fn take_got(&self, area: &str) -> usize {
        self.got
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(area)
            .unwrap_or(0)
    }
}

impl Store for Counting {
    fn get(&self, area: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        *self
            .got
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(area.to_string())
            .or_default() += 1;
        self.inner.get(area, key)
    }

    fn scan_page(
        &self,
        area: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let found = self.inner.scan_page(area, prefix, after, limit)?;
        *self
            .scanned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(area.to_string())
            .or_default() += found.len();
        Ok(found)
    }

    fn write(&self, area: &str, writes: Vec<Write>) -> Result<(), StoreError> {
        self.inner.write(area, writes)
    }

    fn scan(&self, area: &str, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        let found = self.inner.scan(area, prefix)?;
        *self
            .scanned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(area.to_string())
            .or_default() += found.len();
        Ok(found)
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
        self.inner.write_if(area, key, expected, writes)
    }

    fn write_across(
        &self,
        guard: Option<&Guard>,
        writes: Vec<AreaWrite>,
    ) -> Result<bool, StoreError> {
        self.inner.write_across(guard, writes)
    }
}

/// An org on a counting store, prepared, with the hostile guest loaded.
fn counted_host_with_hostile() -> Result<(
    tempfile::TempDir,
    Arc<Counting>,
    Org,
    clancy::runtime::LoadedEmployee,
)> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let store = Counting::open(&data)?;
    let host = Org::open_with_store(&data, "default", store.clone())?;
    TestEnv::prepare(&host)?;
    let employee = host.load(TestEnv::manifest(
        clancy_guests::HOSTILE,
        crate::env::HOSTILE_GRANTS,
    )?)?;
    Ok((dir, store, host, employee))
}

fn request(n: usize) -> ActionRequest {
    ActionRequest {
        org: "default".into(),
        employee: "test-employee".into(),
        task: format!("task-{n}"),
        integration: Some(Integration::Slack),
        scope: "channel:#general".into(),
        operation: Operation::Chat(ChatOp::Post {
            text: format!("post {n}"),
        }),
        reason: "the task asked".into(),
        policy_version: "v1".into(),
    }
}

/// Queue request `n` for approval (the policy that always asks).
fn queue(host: &Org, n: usize) -> Result<clancy::approvals::Approval> {
    Ok(host.approvals().enqueue(
        request(n),
        "approval required".into(),
        &ApprovalPolicy::required(),
    )?)
}

#[test]
fn deciding_and_the_timer_read_the_open_requests_not_the_history() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let store = Counting::open(&data)?;
    let host = Org::open_with_store(&data, "default", store.clone())?;
    TestEnv::prepare(&host)?;

    // A history of 300 requests, every one denied.
    for n in 0..300 {
        let a = queue(&host, n)?;
        host.decide(&a.id, Verdict::Deny, "alice", None)?;
    }
    // Three open ones.
    let open: Vec<String> = (300..303)
        .map(|n| queue(&host, n).map(|a| a.id))
        .collect::<Result<_, _>>()?;
    assert_eq!(host.approvals().open()?.len(), 3);
    assert_eq!(host.approvals().list()?.len(), 303);

    // Deciding one, and a timer round, read the open requests only.
    store.take("approvals");
    let denied = host.decide(&open[0], Verdict::Deny, "bob", None)?;
    assert_eq!(denied.status, Status::Denied);
    host.tick()?;
    host.resume_approved()?;
    let scanned = store.take("approvals");
    assert!(
        scanned <= 12,
        "{scanned} approval records read to decide one of 3 open among 303"
    );
    // The index follows every change: the decided one left it.
    let still: Vec<String> = host.approvals().open()?.into_iter().map(|a| a.id).collect();
    assert_eq!(still, open[1..].to_vec());
    Ok(())
}

/// An org on a counting store whose clock the test moves, prepared.
fn counted_host_on_a_clock() -> Result<(
    tempfile::TempDir,
    Arc<Counting>,
    Org,
    Arc<clancy::approvals::ManualClock>,
)> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let store = Counting::open(&data)?;
    let mut host = Org::open_with_store(&data, "default", store.clone())?;
    let clock = Arc::new(clancy::approvals::ManualClock::new(chrono::Utc::now()));
    host.use_clock(clock.clone());
    TestEnv::prepare(&host)?;
    Ok((dir, store, host, clock))
}

#[test]
fn the_timer_reads_the_requests_that_are_due_not_every_open_one() -> Result<()> {
    let (_dir, store, host, clock) = counted_host_on_a_clock()?;
    let policy = ApprovalPolicy::required();
    // 200 waiting, none due for days.
    for n in 0..200 {
        queue(&host, n)?;
    }
    host.tick()?;
    store.reads("approvals");
    // A timer round and a decision read a few records, not the 200.
    assert!(host.tick()?.is_empty());
    let one = host.approvals().open()?.remove(0).id;
    store.reads("approvals");
    host.decide(&one, Verdict::Deny, "alice", None)?;
    let read = store.reads("approvals");
    assert!(
        read <= 20,
        "{read} approval records read to decide one of 200 waiting"
    );

    // Once their time is up, every one of them is due and denied.
    clock.advance(chrono::Duration::hours(
        i64::from(policy.expires_after_hours) + 1,
    ));
    let expired = host.tick()?;
    assert_eq!(expired.len(), 199);
    assert!(expired.iter().all(|a| a.status == Status::Expired));
    assert!(host.approvals().open()?.is_empty());
    Ok(())
}

#[test]
fn a_queue_made_before_the_pending_indexes_is_indexed_once_and_expires_on_time() -> Result<()> {
    let (_dir, store, host, clock) = counted_host_on_a_clock()?;
    let policy = ApprovalPolicy::required();
    let ids: Vec<String> = (0..5)
        .map(|n| queue(&host, n).map(|a| a.id))
        .collect::<Result<_, _>>()?;
    // As an older host left it: no pending indexes, no mark that they were built.
    let old: Vec<Write> = store
        .inner
        .scan("approvals", b"")?
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| {
            let k = String::from_utf8_lossy(k);
            k.contains("/d/") || k.contains("/c/") || k.ends_with("p-index-built")
        })
        .map(|k| (k, None))
        .collect();
    assert!(old.len() >= 10, "{} index keys found", old.len());
    store.inner.write("approvals", old)?;
    clock.advance(chrono::Duration::hours(
        i64::from(policy.expires_after_hours) + 1,
    ));
    let expired: Vec<String> = host.tick()?.into_iter().map(|a| a.id).collect();
    assert_eq!(expired.len(), 5);
    for id in &ids {
        assert!(expired.contains(id), "{id} was not expired");
    }
    Ok(())
}

/// 200 widenings of the test employee (Slack `channel:#random`, post)
/// whose end is on record, and one running for an hour more after `now`.
fn ended_and_running_widenings(host: &Org, now: chrono::DateTime<chrono::Utc>) -> Result<()> {
    let widening = |n: usize, ended: bool, hours: i64| clancy::approvals::Elevation {
        approval: format!("ap-{n:020}"),
        employee: "test-employee".into(),
        integration: Integration::Slack,
        scope: "channel:#random".into(),
        actions: vec![clancy::integrations::Action::Post],
        starts_at: now - chrono::Duration::hours(48),
        expires_at: now + chrono::Duration::hours(hours),
        ended,
    };
    for n in 0..200 {
        host.approvals().put_elevation(&widening(n, true, -24))?;
    }
    host.approvals().put_elevation(&widening(200, false, 1))?;
    Ok(())
}

#[test]
fn the_timer_reads_the_widenings_still_running_not_every_one_ever_granted() -> Result<()> {
    let (_dir, store, host, clock) = counted_host_on_a_clock()?;
    // 200 widenings whose end is on record, one running for an hour more.
    ended_and_running_widenings(&host, clock.now())?;
    host.tick()?;
    store.reads("approvals");
    host.tick()?;
    let read = store.reads("approvals");
    assert!(
        read <= 12,
        "{read} approval records read by a timer round with 1 widening running among 201"
    );
    // Its end is recorded once, when it runs out, and it leaves the index.
    clock.advance(chrono::Duration::hours(2));
    host.tick()?;
    host.tick()?;
    let ended: Vec<_> = host
        .audit()
        .entries()?
        .into_iter()
        .filter(|e| e.record.action == "elevation-ended")
        .collect();
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert!(host.approvals().unended_elevations()?.is_empty());
    assert_eq!(host.approvals().all_elevations()?.len(), 201);
    Ok(())
}

#[test]
fn a_task_start_reads_the_widenings_still_running_not_every_one_ever_granted() -> Result<()> {
    let (_dir, store, host, employee) = counted_host_with_hostile()?;
    // 200 widenings of this employee whose end is on record, one running.
    ended_and_running_widenings(&host, chrono::Utc::now())?;
    employee.run("post note 0")?;
    store.reads("approvals");
    employee.run("post note 1")?;
    let read = store.reads("approvals");
    assert!(
        read <= 12,
        "{read} approval records read by a task with 1 widening running among 201"
    );
    // The running one is in force for the employee.
    let mediator = employee.mediator();
    let widened: Vec<_> = mediator
        .grants_for(clancy::manifest::Interface::Chat)
        .into_iter()
        .filter_map(|i| mediator.grant(i))
        .filter(|g| g.scope == "channel:#random")
        .collect();
    assert_eq!(widened.len(), 1, "{widened:?}");
    assert!(widened[0].allows(clancy::integrations::Action::Post));
    Ok(())
}

#[test]
fn a_page_of_the_pending_list_reads_that_page_not_every_waiting_request() -> Result<()> {
    let (_dir, store, host, clock) = counted_host_on_a_clock()?;
    let mut queued = Vec::new();
    for n in 0..300 {
        queued.push(queue(&host, n)?.id);
        clock.advance(chrono::Duration::seconds(1));
    }
    // Some of them decided: they leave the list.
    for id in queued.iter().step_by(7) {
        host.decide(id, Verdict::Deny, "alice", None)?;
    }
    let waiting: Vec<String> = queued
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 7 != 0)
        .map(|(_, id)| id.clone())
        .collect();
    assert!(!waiting.is_empty());
    store.reads("approvals");
    let first = host.approvals().pending_page(None, 10)?;
    let read = store.reads("approvals");
    assert!(read <= 40, "{read} approval records read for a page of 10");
    assert_eq!(
        first.iter().map(|a| a.id.clone()).collect::<Vec<_>>(),
        waiting[..10].to_vec()
    );
    // Paging to the end lists each waiting request once, oldest first.
    let mut seen: Vec<String> = Vec::new();
    let mut after: Option<(chrono::DateTime<chrono::Utc>, String)> = None;
    loop {
        let page = host
            .approvals()
            .pending_page(after.as_ref().map(|(t, id)| (*t, id.as_str())), 25)?;
        let Some(last) = page.last() else {
            break;
        };
        after = Some((last.created_at, last.id.clone()));
        seen.extend(page.into_iter().map(|a| a.id));
    }
    assert_eq!(seen, waiting);
    Ok(())
}

#[test]
fn a_paged_listing_returns_every_pending_request_once_while_requests_are_added() -> Result<()> {
    use clancy::operators::Role;
    let live = crate::signin::Live::start(crate::signin::Live::UNLIMITED)?;
    let (_, token) = live.org.create_token("alice", Role::Manager, 1, "alice")?;
    let queue = |from: usize, to: usize| -> Result<Vec<String>> {
        (from..to).map(|n| Ok(queue(&live.org, n)?.id)).collect()
    };
    // The daemon's clock stands still: every request has the same time.
    let mut queued = queue(0, 5)?;
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut round = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/approvals?limit=2&cursor={c}"),
            None => "/api/v1/approvals?limit=2".to_string(),
        };
        let (status, page) = live.get(&token, &path)?;
        assert_eq!(status, 200, "{page}");
        for item in page["items"].as_array().into_iter().flatten() {
            seen.push(item["id"].as_str().unwrap_or_default().to_string());
        }
        // Requests keep arriving while the operator pages.
        round += 1;
        if round <= 3 {
            queued.extend(queue(100 * round, 100 * round + 2)?);
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        seen.len(),
        "a request was listed twice: {seen:?}"
    );
    queued.sort();
    assert_eq!(unique, queued, "a request was skipped");
    Ok(())
}

#[test]
fn a_tasks_entries_explain_and_undo_read_the_task_not_the_log() -> Result<()> {
    let (_dir, store, host, employee) = counted_host_with_hostile()?;
    let mut tasks = Vec::new();
    for n in 0..30 {
        tasks.push(employee.run(&format!("post note {n}"))?.task_id);
    }
    let log = host.audit().len()?;
    let mine: Vec<_> = host
        .audit()
        .entries()?
        .into_iter()
        .filter(|e| e.record.task == tasks[7])
        .collect();
    assert!(
        log > 100 && mine.len() >= 4,
        "{log} entries, {} of the task",
        mine.len()
    );

    store.take("audit");
    let (id, found) = host.task_entries(&tasks[7][..12])?;
    assert_eq!(id, tasks[7]);
    assert_eq!(found, mine);
    let explained = host.explain(&tasks[7])?;
    assert!(explained.contains("note 7"), "{explained}");
    let undone = host.undo_task(&tasks[7], "alice")?;
    assert_eq!(undone.len(), 1, "{undone:?}");
    let read = store.take("audit");
    assert!(
        read <= 4 * (mine.len() + 4),
        "{read} audit records read for a task of {} among {log}",
        mine.len()
    );

    // A log written before the index existed: the index is built once,
    // and finds the same entries.
    let mut forget: Vec<clancy::store::Write> = host
        .org_store()
        .scan("audit", b"t")?
        .into_iter()
        .map(|(k, _)| (k, None))
        .collect();
    assert!(forget.len() > log as usize / 2);
    forget.push((b"t-index-built".to_vec(), None));
    host.org_store().write("audit", forget)?;
    let (_, again) = host.task_entries(&tasks[3])?;
    assert!(again.iter().all(|e| e.record.task == tasks[3]) && again.len() >= 4);
    let (_, again) = host.task_entries(&tasks[7])?;
    assert_eq!(
        again.len(),
        mine.len() + 2,
        "the undo's intent and result are the task's"
    );
    Ok(())
}

#[test]
fn the_audit_api_pages_through_a_log_longer_than_a_store_page() -> Result<()> {
    use clancy::audit::{Kind, Record};
    use clancy::operators::Role;
    let live = crate::signin::Live::start(crate::signin::Live::UNLIMITED)?;
    let (_, token) = live.org.create_token("alice", Role::Manager, 1, "alice")?;
    let note = |employee: &str, n: usize| Record {
        employee: employee.into(),
        action: "note".into(),
        args: n.to_string(),
        ..Default::default()
    };
    for n in 0..1500 {
        live.org.audit().append(Kind::Note, note("host", n))?;
    }
    // Three entries of one employee, far past the first page of the log.
    for n in 0..3 {
        live.org.audit().append(Kind::Note, note("ghost", n))?;
    }
    let total = live.org.audit().len()?;
    let mut seen = 0u64;
    let mut last = 0u64;
    let mut cursor: Option<u64> = None;
    loop {
        let path = match cursor {
            Some(c) => format!("/api/v1/audit?limit=1000&after={c}"),
            None => "/api/v1/audit?limit=1000".to_string(),
        };
        let (status, page) = live.get(&token, &path)?;
        assert_eq!(status, 200, "{page}");
        for e in page["items"].as_array().into_iter().flatten() {
            let seq = e["seq"].as_u64().unwrap_or_default();
            assert!(seq > last, "entry #{seq} came after #{last}");
            last = seq;
            seen += 1;
        }
        match page["next_cursor"].as_u64() {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, total);
    // A filter whose matches lie past many pages of the log finds them all.
    let (status, page) = live.get(&token, "/api/v1/audit?employee=ghost&limit=2")?;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    let next = page["next_cursor"].as_u64().unwrap_or_default();
    let (_, rest) = live.get(
        &token,
        &format!("/api/v1/audit?employee=ghost&after={next}"),
    )?;
    assert_eq!(rest["items"].as_array().map(Vec::len), Some(1));
    assert!(rest["next_cursor"].is_null(), "{rest}");
    Ok(())
}

#[test]
fn tasks_left_open_by_a_crash_are_found_through_an_index_not_the_log() -> Result<()> {
    use clancy::audit::{Kind, Record};
    let (_dir, store, host, employee) = counted_host_with_hostile()?;
    for n in 0..30 {
        employee.run(&format!("post note {n}"))?;
    }
    // Two tasks whose process was killed before they ended.
    let start = |task: &str| {
        host.audit().append(
            Kind::TaskStart,
            Record {
                employee: "test-employee".into(),
                task: task.into(),
                args: "killed midway".into(),
                ..Record::default()
            },
        )
    };
    start("killed-1")?;
    employee.run("post between")?;
    start("killed-2")?;
    let log = host.audit().len()?;

    store.take("audit");
    let closed = host.record_interrupted_tasks()?;
    assert_eq!(closed, vec!["killed-1".to_string(), "killed-2".to_string()]);
    let read = store.take("audit");
    assert!(
        read <= 8,
        "{read} audit records read among {log} to find 2 open tasks"
    );
    assert!(host.record_interrupted_tasks()?.is_empty(), "closed once");

    // A log written before the index existed: it is built once from the
    // log, and finds the task still open there.
    start("killed-3")?;
    let mut forget: Vec<clancy::store::Write> = host
        .org_store()
        .scan("audit", b"r/")?
        .into_iter()
        .map(|(k, _)| (k, None))
        .collect();
    assert_eq!(forget.len(), 1, "only the open task is indexed");
    forget.push((b"r-index-built".to_vec(), None));
    host.org_store().write("audit", forget)?;
    assert_eq!(
        host.record_interrupted_tasks()?,
        vec!["killed-3".to_string()]
    );
    let ends = host
        .audit()
        .entries()?
        .into_iter()
        .filter(|e| e.kind == Kind::TaskEnd && e.record.task.starts_with("killed-"))
        .count();
    assert_eq!(ends, 3);
    Ok(())
}

#[test]
fn the_daemons_audit_export_streams_a_long_log_that_verifies_elsewhere() -> Result<()> {
    use clancy::audit::{Kind, Record};
    use clancy::operators::Role;
    let live = crate::signin::Live::start(crate::signin::Live::UNLIMITED)?;
    let (_, token) = live.org.create_token("alice", Role::Manager, 1, "alice")?;
    // A log of several store pages and several 64 KiB response chunks.
    for n in 0..2500 {
        live.org.audit().append(
            Kind::Note,
            Record {
                employee: "host".into(),
                action: "note".into(),
                args: format!("note {n}, long enough that the export spans many chunks"),
                ..Default::default()
            },
        )?;
    }
    let export = crate::signin::client()
        .get(format!("{}/api/v1/audit/export", live.url))
        .bearer_auth(&token)
        .send()?
        .text()?;
    let entries: Vec<serde_json::Value> = export
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let seqs: Vec<u64> = entries.iter().filter_map(|e| e["seq"].as_u64()).collect();
    let total = live.org.audit().len()?;
    assert_eq!(
        seqs,
        (1..=total).collect::<Vec<_>>(),
        "every entry once, in order"
    );
    let last = entries.iter().rev().find(|e| e["seq"].is_u64());
    assert!(
        last.is_some_and(|e| e["result"]
            .as_str()
            .is_some_and(|r| r.contains("exported by alice"))),
        "the export is on record in itself: {last:?}"
    );
    assert!(entries.last().is_some_and(|e| e["checkpoint"].is_object()));
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("export.jsonl");
    std::fs::write(&file, &export)?;
    let verified = crate::env::clancy(
        &dir.path().join("nowhere"),
        &[
            "audit",
            "verify",
            "--export",
            &file.display().to_string(),
            "--public-key",
            &live.org.public_key(),
        ],
    )?;
    let said = String::from_utf8_lossy(&verified.stdout);
    assert!(said.starts_with("audit log intact"), "{said}");
    Ok(())
}

#[test]
fn the_whole_audit_log_is_printed_a_page_at_a_time_with_results_folded_across_pages() -> Result<()>
{
    use clancy::audit::{Kind, Record};
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let (answered, dangling) = {
        let host = Org::open(&data, "default", clancy::org::DataDirMode::Create)?;
        let log = host.audit();
        let call = crate::audit_log::allowed_post;
        // An intent on the first page, its result 1,500 entries (pages) on.
        let answered = log.append(Kind::Intent, call("e"))?.seq;
        for n in 0..1500 {
            log.append(
                Kind::Note,
                Record {
                    args: format!("note {n}"),
                    ..call("e")
                },
            )?;
        }
        log.append(
            Kind::Result,
            Record {
                intent: Some(answered),
                result: "done: c-1".into(),
                ..call("e")
            },
        )?;
        let dangling = log.append(Kind::Intent, call("e"))?.seq;
        log.append(Kind::Note, call("someone-else"))?;
        log.settle()?;
        (answered, dangling)
    };
    let shown = crate::env::clancy(&data, &["audit", "log", "--employee", "e"])?;
    let text = crate::env::stdout(&shown);
    // Each entry's line starts with its number (a call's reason follows on
    // a line of its own): 1,500 notes, the result (its intent folded in)
    // and the dangling intent.
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(
        lines.len(),
        1502,
        "{}",
        &text[text.len().saturating_sub(1000)..]
    );
    let flagged: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("NO RESULT RECORDED"))
        .collect();
    assert_eq!(flagged.len(), 1, "{flagged:?}");
    assert!(flagged[0].contains(&format!("#{dangling}")), "{flagged:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("post -> done: c-1 (intent #{answered})"))),
        "the result is not shown with its intent"
    );
    assert!(!text.contains("someone-else"));
    // JSON Lines: every entry of the employee, the answered intent too.
    let json = crate::env::clancy(&data, &["audit", "log", "--employee", "e", "--json"])?;
    assert_eq!(crate::env::stdout(&json).lines().count(), 1503);
    Ok(())
}

/// Listing tasks reads a page through the index of tasks in the order they
/// were requested, not every task ever requested; a restart finds the
/// tasks it interrupted through the index of running tasks; tasks requested
/// before those indexes existed are indexed once and list the same.
#[test]
fn a_page_of_tasks_and_a_restart_read_those_tasks_not_every_task_ever_requested() -> Result<()> {
    let (_dir, store, host, _employee) = counted_host_with_hostile()?;
    let mut requested = Vec::new();
    for n in 0..300 {
        let id = host
            .request_task("test-employee", &format!("print {n}"), "alice")?
            .id;
        requested.push(id);
    }
    let mut taken = Vec::new();
    for _ in 0..3 {
        taken.push(host.take_task()?.context("nothing to take")?.id);
    }
    assert_eq!(taken, requested[..3].to_vec(), "the oldest are taken first");

    store.reads("tasks");
    let first = host.tasks_page(None, 10, usize::MAX, |_| true)?.tasks;
    let read = store.reads("tasks");
    assert!(read <= 25, "{read} task records read for a page of 10");
    assert_eq!(
        first.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
        requested[..10].to_vec()
    );
    // Paging to the end lists each task once, in the order requested; a
    // filter skips tasks without ending the page early.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = host
            .tasks_page(after, 25, usize::MAX, |t| t.task != "print 40")?
            .tasks;
        let Some(last) = page.last() else {
            break;
        };
        after = Some(last.seq);
        seen.extend(page.into_iter().map(|t| t.id));
    }
    let mut expected = requested.clone();
    expected.remove(40);
    assert_eq!(seen, expected);

    // A filter that passes over most tasks (a user's few employees) reads
    // at most its budget for a page and says where it stopped; paging on
    // from there finds each wanted task once.
    let wanted = |t: &clancy::org::TaskRecord| t.task.ends_with('7');
    let (mut found, mut after, mut pages) = (Vec::new(), None, 0);
    loop {
        store.reads("tasks");
        let page = host.tasks_page(after, 10, 40, wanted)?;
        let read = store.reads("tasks");
        assert!(read <= 85, "{read} task records read on a budget of 40");
        pages += 1;
        let next = if page.tasks.len() == 10 {
            page.tasks.last().map(|t| t.id.clone())
        } else {
            page.stopped_at.map(|(_, id)| id)
        };
        found.extend(page.tasks.into_iter().map(|t| t.id));
        match next {
            Some(id) => after = Some(host.task(&id)?.context("gone")?.seq),
            None => break,
        }
    }
    let expected: Vec<String> = requested
        .iter()
        .enumerate()
        .filter(|(n, _)| n % 10 == 7)
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(found, expected);
    assert!(pages >= 300 / 40, "{pages} pages on a budget of 40");

    // A restart: the running ones, read through their index.
    store.reads("tasks");
    assert_eq!(host.interrupt_running_tasks()?, 3);
    let read = store.reads("tasks");
    assert!(read <= 12, "{read} task records read to find 3 running");
    for id in &taken {
        let task = host.task(id)?.context("gone")?;
        assert_eq!(task.state, clancy::org::TaskState::Interrupted);
    }
    assert_eq!(host.interrupt_running_tasks()?, 0, "interrupted twice");

    // A store written before the indexes: they are built once, the same.
    let unindexed = store.unindex(
        "tasks",
        &["default/s/", "default/r/", "default/s-index-built"],
    )?;
    assert!(unindexed > 300);
    let running = host.request_task("test-employee", "print again", "alice")?;
    requested.push(running.id.clone());
    let listed: Vec<String> = host.tasks()?.into_iter().map(|t| t.id).collect();
    assert_eq!(listed, requested);
    store.reads("tasks");
    let again = host.tasks_page(None, 10, usize::MAX, |_| true)?.tasks;
    assert_eq!(again.len(), 10);
    let read = store.reads("tasks");
    assert!(read <= 25, "{read} records read: the index was built again");
    Ok(())
}

/// A delivery round reads the notifications that are due through an index
/// by when they are next due, never every notification ever queued (the
/// outbox keeps delivered ones); an outbox written before the index is
/// indexed once and delivers the same.
#[test]
fn a_delivery_round_reads_the_notifications_due_not_every_one_ever_queued() -> Result<()> {
    use clancy::notify::Event;
    let (dir, store, host, _clock) = counted_host_on_a_clock()?;
    let receiver = crate::notify::Receiver::start(Vec::new())?;
    let target = loopback_target(&receiver);
    let push = |host: &Org, n: usize| -> Result<()> {
        for i in 0..n {
            host.outbox().push_notice(
                &target,
                Event::Checkpoint,
                serde_json::json!({ "n": i }),
                host.now(),
            )?;
        }
        Ok(())
    };
    push(&host, 200)?;
    let first = host.outbox().deliver_due(host.now())?;
    assert_eq!(first.delivered.len(), 200);
    assert_eq!(receiver.received().len(), 200);

    // Nothing due: the round reads (almost) nothing, with 200 delivered kept.
    store.reads("outbox");
    let idle = host.outbox().deliver_due(host.now())?;
    assert!(idle.delivered.is_empty() && idle.retrying.is_empty());
    let read = store.reads("outbox");
    assert!(read <= 3, "{read} outbox records read with nothing due");
    push(&host, 2)?;
    store.reads("outbox");
    assert_eq!(host.outbox().deliver_due(host.now())?.delivered.len(), 2);
    let read = store.reads("outbox");
    assert!(read <= 8, "{read} outbox records read to deliver 2");

    // An outbox written before the indexes, opened by the next process:
    // indexed once, and each pending notification delivered once.
    push(&host, 1)?;
    drop(host);
    let unindexed = store.unindex(
        "outbox",
        &["default/d/", "default/c/", "default/d-index-built"],
    )?;
    assert!(unindexed > 200);
    let host = Org::open_with_store(&dir.path().join("data"), "default", store.clone())?;
    assert_eq!(host.outbox().list()?.len(), 203);
    assert_eq!(host.outbox().deliver_due(host.now())?.delivered.len(), 1);
    assert_eq!(receiver.received().len(), 203);
    store.reads("outbox");
    host.outbox().deliver_due(host.now())?;
    let read = store.reads("outbox");
    assert!(read <= 3, "{read} records read: the index was built again");
    Ok(())
}

/// The outbox is listed a page at a time through an index of notifications
/// in the order queued: a page reads that page, and paging returns every
/// notification exactly once while notifications are added and retried.
#[test]
fn the_outbox_is_listed_a_page_at_a_time_each_notification_once() -> Result<()> {
    use clancy::notify::Event;
    let (_dir, store, host, clock) = counted_host_on_a_clock()?;
    // A receiver that fails every first try: notifications are retried
    // (their next time moves) while the operator pages.
    let receiver = crate::notify::Receiver::start(vec![500; 40])?;
    let target = loopback_target(&receiver);
    let push = |n: usize| -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for i in 0..n {
            let pushed = host.outbox().push_notice(
                &target,
                Event::Checkpoint,
                serde_json::json!({ "n": i }),
                host.now(),
            )?;
            ids.push(pushed.id);
            clock.advance(chrono::Duration::milliseconds(1));
        }
        Ok(ids)
    };
    let mut queued = push(120)?;
    store.reads("outbox");
    let (first, next) = host.outbox().page(None, 10)?;
    let read = store.reads("outbox");
    assert!(read <= 25, "{read} outbox records read for a page of 10");
    assert_eq!(
        first.iter().map(|n| n.id.clone()).collect::<Vec<_>>(),
        queued[..10].to_vec()
    );
    let mut seen: Vec<String> = first.into_iter().map(|n| n.id).collect();
    let mut after = next;
    let mut round = 0;
    while let Some(cursor) = after {
        let (page, next) = host.outbox().page(Some(&cursor), 25)?;
        seen.extend(page.into_iter().map(|n| n.id));
        after = next;
        round += 1;
        if round == 1 {
            // Some are tried (and fail, to be retried later) meanwhile,
            // and more are queued.
            host.outbox().deliver_due(host.now())?;
        }
        if round <= 3 {
            queued.extend(push(5)?);
        }
    }
    assert_eq!(
        seen, queued,
        "a notification was listed twice, skipped or out of order"
    );
    Ok(())
}

/// The approvals queue and a new submission read the versions of employees
/// still waiting for an admin through an index, not every version ever
/// submitted; versions submitted before the index are indexed once.
#[test]
fn the_queue_reads_the_versions_waiting_not_every_one_ever_submitted() -> Result<()> {
    use clancy::operators::{Operator, Role};
    let (_dir, store, host, _employee) = counted_host_with_hostile()?;
    let admin = Operator {
        name: "ada".into(),
        role: Role::Admin,
    };
    let component = std::fs::read(clancy_guests::HOSTILE)?;
    // Wider than the version in force: gmail may also be read under "sales".
    let wider = format!(
        "name = \"test-employee\"\ncomponent = \"ignored.wasm\"\n{}\n[[grant]]\nintegration = \"gmail\"\nscope = \"label:sales\"\nactions = [\"read\"]\n",
        crate::env::HOSTILE_GRANTS
    );
    let submit = || -> Result<String> {
        match host.submit_employee(&wider, &component, "alice")? {
            clancy::org::Submitted::Waiting(u) => Ok(u.id),
            other => anyhow::bail!("not waiting: {other:?}"),
        }
    };
    for _ in 0..40 {
        let id = submit()?;
        host.decide_upgrade(&id, false, &admin)?;
    }
    let waiting = submit()?;
    store.reads("upgrades");
    let pending = host.pending_upgrades()?;
    assert_eq!(
        pending.iter().map(|u| u.id.clone()).collect::<Vec<_>>(),
        vec![waiting.clone()]
    );
    let read = store.reads("upgrades");
    assert!(read <= 4, "{read} versions read to find the one waiting");
    // The same version again is the same request, found the same way.
    assert_eq!(submit()?, waiting);
    assert_eq!(host.upgrades()?.len(), 41);

    // Versions submitted before the index: indexed once.
    let unindexed = store.unindex("upgrades", &["default/w/", "default/w-index-built"])?;
    assert_eq!(unindexed, 2);
    assert_eq!(host.pending_upgrades()?.len(), 1);
    store.reads("upgrades");
    assert_eq!(host.pending_upgrades()?.len(), 1);
    let read = store.reads("upgrades");
    assert!(read <= 4, "{read} versions read: the index was built again");
    Ok(())
}

/// A webhook target for `receiver`, on this machine.
fn loopback_target(receiver: &crate::notify::Receiver) -> clancy::notify::Target {
    clancy::notify::Target {
        url: receiver.url(),
        format: clancy::notify::Format::Json,
        events: Default::default(),
        include_content: false,
        allow_private_address: true,
    }
}
