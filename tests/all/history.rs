//! Deciding reads the open requests, not the whole approval history: the
//! timer, every decision and recovery go through the index of open
//! requests, so their cost does not grow with how many were ever queued.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use clancy::approvals::{ActionRequest, Status};
use clancy::integrations::Integration;
use clancy::integrations::chat::ChatOp;
use clancy::manifest::ApprovalPolicy;
use clancy::org::{Org, Verdict};
use clancy::providers::Operation;
use clancy::store::{AreaWrite, Entry, Guard, SledStore, Store, StoreError, Write};

use crate::env::TestEnv;

/// The sled store, counting the approval records its scans return.
struct Counting {
    inner: SledStore,
    scanned: AtomicU64,
}

impl Store for Counting {
    fn get(&self, area: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(area, key)
    }

    fn write(&self, area: &str, writes: Vec<Write>) -> Result<(), StoreError> {
        self.inner.write(area, writes)
    }

    fn scan(&self, area: &str, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        let found = self.inner.scan(area, prefix)?;
        if area == "approvals" {
            self.scanned
                .fetch_add(found.len() as u64, Ordering::Relaxed);
        }
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

#[test]
fn deciding_and_the_timer_read_the_open_requests_not_the_history() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let store = Arc::new(Counting {
        inner: SledStore::open(&data.join("store"))?,
        scanned: AtomicU64::new(0),
    });
    let host = Org::open_with_store(&data, "default", store.clone())?;
    TestEnv::prepare(&host)?;
    let policy = ApprovalPolicy::required();

    // A history of 300 requests, every one denied.
    for n in 0..300 {
        let a = host
            .approvals()
            .enqueue(request(n), "approval required".into(), &policy)?;
        host.decide(&a.id, Verdict::Deny, "alice", None)?;
    }
    // Three open ones.
    let open: Vec<String> = (300..303)
        .map(|n| {
            host.approvals()
                .enqueue(request(n), "approval required".into(), &policy)
                .map(|a| a.id)
        })
        .collect::<Result<_, _>>()?;
    assert_eq!(host.approvals().open()?.len(), 3);
    assert_eq!(host.approvals().list()?.len(), 303);

    // Deciding one, and a timer round, read the open requests only.
    store.scanned.store(0, Ordering::Relaxed);
    let denied = host.decide(&open[0], Verdict::Deny, "bob", None)?;
    assert_eq!(denied.status, Status::Denied);
    host.tick()?;
    host.resume_approved()?;
    let scanned = store.scanned.load(Ordering::Relaxed);
    assert!(
        scanned <= 12,
        "{scanned} approval records read to decide one of 3 open among 303"
    );
    // The index follows every change: the decided one left it.
    let still: Vec<String> = host.approvals().open()?.into_iter().map(|a| a.id).collect();
    assert_eq!(still, open[1..].to_vec());
    Ok(())
}

#[test]
fn a_paged_listing_returns_every_pending_request_once_while_requests_are_added() -> Result<()> {
    use clancy::operators::Role;
    let live = crate::signin::Live::start(crate::signin::Live::UNLIMITED)?;
    let (_, token) = live.org.create_token("alice", Role::Manager, 1, "alice")?;
    let policy = ApprovalPolicy::required();
    let queue = |from: usize, to: usize| -> Result<Vec<String>> {
        (from..to)
            .map(|n| {
                Ok(live
                    .org
                    .approvals()
                    .enqueue(request(n), "approval required".into(), &policy)?
                    .id)
            })
            .collect()
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
