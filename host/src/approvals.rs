//! Approvals: the durable queue of gated actions and the decisions on them.
//!
//! A gated call is stored with its full canonical action ([`ActionRequest`]:
//! org, employee, task, integration, scope, operation with arguments, reason,
//! policy version) and the hash of that action. The guest gets the approval
//! id at once and is not kept waiting. A human approves or denies; on
//! approval the *host* executes exactly that action (see
//! `Org::decide`), once: every state change is a conditional, durable
//! write, so of two racing deciders exactly one wins, and a request is
//! single use.
//!
//! This module owns the queue's records and state machine. It never calls a
//! provider itself.

use crate::digest::digest;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::manifest::{ApprovalPolicy, EscalationStep, Grant, Integration};
use crate::operators::Approver;
use crate::providers::Operation;
use crate::store::{AreaWrite, Guard, OrgStore, StoreError};

/// What queueing a gated action takes (see [`ApprovalQueue::prepare`]).
pub enum Enqueue {
    /// The same action is already waiting: this is it.
    Existing(Approval),
    /// A new request, stored by `writes` if `guard` holds.
    New {
        /// The request.
        approval: Approval,
        /// Nobody queued the same action in between.
        guard: Guard,
        /// The writes that store it.
        writes: Vec<AreaWrite>,
    },
}

const AREA: &str = "approvals";

/// The canonical description of a gated action. Its hash binds an approval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionRequest {
    /// The organisation.
    pub org: String,
    /// The employee that asked.
    pub employee: String,
    /// The task it was working on.
    pub task: String,
    /// The service (`None` for a question, which reaches none).
    pub integration: Option<Integration>,
    /// The granted scope, e.g. `label:sales` (empty for a question).
    pub scope: String,
    /// What exactly to do, arguments included.
    pub operation: Operation,
    /// The employee's plain-English reason.
    pub reason: String,
    /// The version of the grant's approval policy the request was made under.
    pub policy_version: String,
}

impl ActionRequest {
    /// SHA-256 over the canonical JSON of the request (the idempotency key).
    pub fn hash(&self) -> String {
        hex::encode(digest(self))
    }
}

/// The version of a grant: its scope, its actions, its approval policy and
/// (for mail) the recipient domains it may reach.
/// A request made under one version cannot be approved under another (a
/// narrowed grant voids what it no longer allows; any other change voids
/// the requests made under the old terms).
pub fn policy_version(grant: &Grant) -> String {
    let terms = (
        grant.integration,
        &grant.scope,
        &grant.actions,
        &grant.approval,
        &grant.to,
    );
    hex::encode(&digest(&terms)[..8])
}

/// The policy versions of every grant of an employee, keyed
/// `integration/scope` (what the host registers when it loads an employee).
pub fn grant_versions(grants: &[crate::manifest::Grant]) -> Vec<(String, String)> {
    grants
        .iter()
        .map(|g| (format!("{}/{}", g.integration, g.scope), policy_version(g)))
        .collect()
}

/// The policy version a widening is requested under: all of the employee's
/// grants, so a widening asked for under other grants cannot be approved.
pub fn elevation_policy_version(versions: &[(String, String)]) -> String {
    format!("elevation:{}", hex::encode(&digest(&versions)[..8]))
}

/// Where the host gets the time from (tests inject a manual clock to drive
/// expiry and escalation).
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to.
pub struct ManualClock(std::sync::Mutex<DateTime<Utc>>);

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        ManualClock(std::sync::Mutex::new(start))
    }

    /// Move the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where a request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Waiting for a human.
    Pending,
    /// Approved; the host is executing it (or will, on restart).
    Approved,
    /// Approved and executed.
    Executed,
    /// Approved, but the service refused or failed.
    Failed,
    /// A human said no.
    Denied,
    /// Nobody decided in time; treated as a denial.
    Expired,
    /// An approver edited the action; the edited one (`outcome` names it)
    /// was approved instead. This one never runs.
    Edited,
    /// The grant it needs was withdrawn or changed after it was asked for
    /// (`outcome` says how); it never runs and the employee hears `denied`.
    Void,
    /// A question the employee asked was answered (`outcome` is the option
    /// chosen); the employee hears `answered(option)`.
    Answered,
}

impl Status {
    /// Whether no further decision can be taken.
    pub fn is_final(self) -> bool {
        !matches!(self, Status::Pending | Status::Approved)
    }
}

/// One request in the queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    /// `ap-…`
    pub id: String,
    /// Hash of `request`, fixed when it was queued.
    pub hash: String,
    /// The action.
    pub request: ActionRequest,
    /// Why the policy gated it.
    pub gated_because: String,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When it expires if nobody decides.
    pub expires_at: DateTime<Utc>,
    /// Where it stands.
    pub status: Status,
    /// Who decided.
    pub decided_by: Option<String>,
    /// When.
    pub decided_at: Option<DateTime<Utc>>,
    /// The decider's comment.
    pub comment: Option<String>,
    /// What executing it produced (or why it failed).
    pub outcome: Option<String>,
    /// Who decides, step by step (from the policy); empty: any operator.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalation: Vec<EscalationStep>,
    /// The ladder step the request has reached (0 = the first approver).
    #[serde(default)]
    pub step: usize,
    /// The request this one is an approver's edit of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_from: Option<String>,
}

impl Approval {
    /// The ladder step due at `now`: `Some(i)` while step `i` runs, `None`
    /// once the last step ran out (or for requests without a ladder).
    pub fn step_at(&self, now: DateTime<Utc>) -> Option<usize> {
        let mut deadline = self.created_at;
        for (i, step) in self.escalation.iter().enumerate() {
            deadline += Duration::hours(i64::from(step.hours));
            if now < deadline {
                return Some(i);
            }
        }
        None
    }

    /// When the timer must next look at this request, while it is pending:
    /// its expiry, or the end of the ladder step it is on if sooner.
    pub fn next_deadline(&self) -> DateTime<Utc> {
        if self.escalation.is_empty() {
            return self.expires_at;
        }
        let step_ends = self
            .escalation
            .iter()
            .take(self.step + 1)
            .fold(self.created_at, |at, step| {
                at + Duration::hours(i64::from(step.hours))
            });
        step_ends.min(self.expires_at)
    }

    /// Who may decide now (`None`: any operator).
    pub fn current_approver(&self) -> Option<&Approver> {
        self.escalation.get(self.step).map(|s| &s.approver)
    }

    /// A readable preview of the action for the approver, with the reason
    /// and whether it can be undone.
    pub fn preview(&self) -> String {
        let r = &self.request;
        let mut what = r.operation.preview(&r.scope);
        if let Operation::Guidance(_) = r.operation {
            what.push_str(&format!(
                "\n    (answer with `clancy approvals answer {} <option>`)",
                self.id
            ));
        }
        format!(
            "{id} [{status:?}] {employee} wants to {what}\n  why: \"{reason}\"\n  gated: {because}; {who}expires {expires}",
            id = self.id,
            status = self.status,
            employee = r.employee,
            reason = crate::human::line(&r.reason),
            because = crate::human::line(&self.gated_because),
            who = self
                .current_approver()
                .map(|a| format!("decided by {a}; "))
                .unwrap_or_default(),
            expires = self
                .expires_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )
    }
}

/// An approved, time-boxed widening of an employee's grants.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Elevation {
    /// The request that granted it.
    pub approval: String,
    /// The employee.
    pub employee: String,
    /// The service.
    pub integration: Integration,
    /// The scope widened to (or widened on).
    pub scope: String,
    /// The actions added.
    pub actions: Vec<crate::integrations::Action>,
    /// From when.
    pub starts_at: DateTime<Utc>,
    /// Until when.
    pub expires_at: DateTime<Utc>,
    /// Whether its end has been recorded in the audit log.
    #[serde(default)]
    pub ended: bool,
}

impl Elevation {
    /// What it grants and until when, e.g. `post on slack #random until ...`.
    pub fn summary(&self) -> String {
        format!(
            "{} on {} {} until {}",
            crate::integrations::action_list(&self.actions),
            self.integration,
            self.scope,
            self.expires_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }

    /// Whether it is in force at `now`.
    pub fn active_at(&self, now: DateTime<Utc>) -> bool {
        self.starts_at <= now && now < self.expires_at
    }
}

/// A fresh request id: `ap-` and 20 hex digits (the time, a counter, random).
pub fn new_id() -> String {
    // The time (ms, 48 bits) and a counter, so ids sort in the order they
    // were made (strictly, within a process); random bits keep two
    // processes' ids apart. A listing a page at a time after (time, id)
    // then never skips a request added meanwhile, even with a clock that
    // stands still.
    static LAST: std::sync::Mutex<(u64, u16)> = std::sync::Mutex::new((0, 0));
    let now = u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0) & 0xffff_ffff_ffff;
    let (ms, seq) = {
        let mut last = LAST
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *last = if now > last.0 {
            (now, 0)
        } else {
            match last.1.checked_add(1) {
                Some(seq) => (last.0, seq),
                None => (last.0 + 1, 0),
            }
        };
        *last
    };
    let mut random = [0u8; 2];
    let _ = getrandom::fill(&mut random);
    format!("ap-{ms:012x}{seq:04x}{}", hex::encode(random))
}

/// One organisation's approval queue.
pub struct ApprovalQueue {
    store: OrgStore,
    clock: std::sync::Arc<dyn Clock>,
}

fn key(id: &str) -> Vec<u8> {
    format!("a/{id}").into_bytes()
}

/// The index of open requests (pending or approved, not yet finished):
/// one key per request, written in the same batch as the request itself,
/// so the timer, the decisions and recovery read the open ones only,
/// never the whole history.
fn open_key(id: &str) -> Vec<u8> {
    format!("o/{id}").into_bytes()
}

/// Set once the open index covers every request (it is built from the
/// history once, for data dirs made before it existed).
const OPEN_INDEX_BUILT: &[u8] = b"o-index-built";

/// The index write that goes with storing `a`.
fn open_write(a: &Approval) -> crate::store::Write {
    (
        open_key(&a.id),
        (!a.status.is_final()).then(|| b"open".to_vec()),
    )
}

/// The same, for a cross-area batch.
fn open_area_write(a: &Approval) -> AreaWrite {
    let (k, v) = open_write(a);
    (AREA.to_string(), k, v)
}

/// The indexes of pending requests, written in the same batch as the
/// request (so the timer and the pending list read the requests they
/// need, never every open one):
/// - by [`Approval::next_deadline`], `d/<millis>/<id>`: the timer reads the
///   requests due;
/// - by the time it was made, `c/<nanos>/<id>`: the pending list reads a
///   page, oldest first.
fn pending_keys(a: &Approval) -> Vec<Vec<u8>> {
    if a.status != Status::Pending {
        return Vec::new();
    }
    let deadline = a.next_deadline().timestamp_millis().max(0);
    vec![
        format!("d/{deadline:020}/{}", a.id).into_bytes(),
        created_key(a.created_at, &a.id),
    ]
}

/// A request's key in the index by time made (also the cursor of a page).
fn created_key(at: DateTime<Utc>, id: &str) -> Vec<u8> {
    let nanos = at.timestamp_nanos_opt().unwrap_or(0).max(0);
    format!("c/{nanos:020}/{id}").into_bytes()
}

/// Set once the index of unended widenings covers every one.
const UNENDED_INDEX_BUILT: &[u8] = b"x-index-built";

/// Set once the pending indexes cover every pending request.
const PENDING_INDEX_BUILT: &[u8] = b"p-index-built";

/// The pending index writes that go with replacing `current` (if any)
/// with `next`.
fn pending_index_writes(current: Option<&Approval>, next: &Approval) -> Vec<crate::store::Write> {
    let old = current.map(pending_keys).unwrap_or_default();
    let new = pending_keys(next);
    let mut writes: Vec<crate::store::Write> = old
        .into_iter()
        .filter(|k| !new.contains(k))
        .map(|k| (k, None))
        .collect();
    writes.extend(new.into_iter().map(|k| (k, Some(b"1".to_vec()))));
    writes
}

/// The same, for a cross-area batch.
fn pending_index_area_writes(current: Option<&Approval>, next: &Approval) -> Vec<AreaWrite> {
    pending_index_writes(current, next)
        .into_iter()
        .map(|(k, v)| (AREA.to_string(), k, v))
        .collect()
}

impl ApprovalQueue {
    /// The queue of `store`'s organisation.
    pub fn new(store: OrgStore, clock: std::sync::Arc<dyn Clock>) -> ApprovalQueue {
        ApprovalQueue { store, clock }
    }

    /// Now, by the queue's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// What storing a gated action takes: the request (an existing pending
    /// one if the same action, same hash, is already waiting) and, for a
    /// new one, the conditional writes that store it. The caller writes
    /// them together with the audit entry that records them
    /// ([`crate::audit::AuditLog::append_with`]).
    pub fn prepare(
        &self,
        request: ActionRequest,
        because: String,
        policy: &ApprovalPolicy,
    ) -> Result<Enqueue, StoreError> {
        let hash = request.hash();
        let hash_key = format!("h/{hash}").into_bytes();
        let indexed = self.store.get(AREA, &hash_key)?;
        if let Some(id) = &indexed
            && let Some(existing) = self.get(&String::from_utf8_lossy(id))?
            && existing.status == Status::Pending
        {
            return Ok(Enqueue::Existing(existing));
        }
        let now = self.clock.now();
        let approval = Approval {
            id: new_id(),
            hash,
            request,
            gated_because: because,
            created_at: now,
            expires_at: now + Duration::hours(i64::from(policy.expires_after_hours)),
            status: Status::Pending,
            decided_by: None,
            decided_at: None,
            comment: None,
            outcome: None,
            escalation: policy.escalation.clone(),
            step: 0,
            edited_from: None,
        };
        let mut writes = vec![
            (
                AREA.to_string(),
                key(&approval.id),
                Some(crate::store::encode(&approval)?),
            ),
            (
                AREA.to_string(),
                hash_key.clone(),
                Some(approval.id.clone().into_bytes()),
            ),
            open_area_write(&approval),
        ];
        writes.extend(pending_index_area_writes(None, &approval));
        // Nobody queued the same action in between.
        let guard = Guard {
            area: AREA.to_string(),
            key: hash_key,
            expected: indexed,
        };
        Ok(Enqueue::New {
            approval,
            guard,
            writes,
        })
    }

    /// Store a gated action durably (without an audit entry; the host's
    /// own path is [`ApprovalQueue::prepare`] written with its entry).
    pub fn enqueue(
        &self,
        request: ActionRequest,
        because: String,
        policy: &ApprovalPolicy,
    ) -> Result<Approval, StoreError> {
        match self.prepare(request, because, policy)? {
            Enqueue::Existing(a) => Ok(a),
            Enqueue::New {
                approval,
                guard,
                writes,
            } => {
                if !self.store.write_across(Some(&guard), writes)? {
                    return Err(StoreError::Io(
                        "the approval queue changed while queueing; try again".into(),
                    ));
                }
                Ok(approval)
            }
        }
    }

    /// One request.
    pub fn get(&self, id: &str) -> Result<Option<Approval>, StoreError> {
        if id.is_empty() || id.len() > 64 || id.contains('/') {
            return Ok(None);
        }
        self.store.get_json(AREA, &key(id))
    }

    /// Every request in the order made (ids sort so), a page at a time:
    /// memory does not grow with how many were ever queued.
    pub fn for_each_page<E: From<StoreError>>(
        &self,
        mut each: impl FnMut(&[Approval]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.store.scan_page(AREA, b"a/", after.as_deref(), 256)?;
            let Some((last, _)) = page.last() else {
                return Ok(());
            };
            after = Some(last.clone());
            let approvals = page
                .iter()
                .map(|(_, v)| crate::store::decode(AREA, v))
                .collect::<Result<Vec<Approval>, StoreError>>()?;
            each(&approvals)?;
        }
    }

    /// Every request, oldest first.
    pub fn list(&self) -> Result<Vec<Approval>, StoreError> {
        let mut all: Vec<Approval> = self.store.scan_json(AREA, b"a/")?;
        all.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(all)
    }

    /// The open requests (pending, or approved and not finished), oldest
    /// first: read through the open index, so the cost follows how many
    /// are open, not how many were ever queued.
    pub fn open(&self) -> Result<Vec<Approval>, StoreError> {
        self.build_open_index()?;
        let mut open = Vec::new();
        let mut stale = Vec::new();
        for (k, _) in self.store.scan(AREA, b"o/")? {
            let id = String::from_utf8_lossy(&k[2..]).into_owned();
            match self.get(&id)? {
                Some(a) if !a.status.is_final() => open.push(a),
                // Finished while the index was being built: drop its entry.
                _ => stale.push((k, None)),
            }
        }
        if !stale.is_empty() {
            self.store.write(AREA, stale)?;
        }
        open.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(open)
    }

    /// The pending requests whose [`Approval::next_deadline`] is at or
    /// before `now`, read through the deadline index: the cost follows how
    /// many are due, not how many are open or were ever queued.
    pub fn due(&self, now: DateTime<Utc>) -> Result<Vec<Approval>, StoreError> {
        let now_millis = now.timestamp_millis();
        // Usually none or few are due: the first page is small.
        self.indexed(b"d/", None, 8, usize::MAX, |millis| {
            millis.parse::<i64>().is_ok_and(|m| m <= now_millis)
        })
    }

    /// Up to `limit` pending requests made after `after` (the time made and
    /// the id of the last one of the previous page), oldest first, read
    /// through the index by time made: a page costs its own size.
    pub fn pending_page(
        &self,
        after: Option<(DateTime<Utc>, &str)>,
        limit: usize,
    ) -> Result<Vec<Approval>, StoreError> {
        let after = after.map(|(at, id)| created_key(at, id));
        self.indexed(b"c/", after, limit.saturating_add(1), limit, |_| true)
    }

    /// The pending requests of the index under `prefix` (keys
    /// `<prefix><order>/<id>`), after the key `after`, in key order, while
    /// `wanted` holds for the order part, at most `limit`, reading
    /// `first_page` keys first. Keys whose request is no longer pending (or
    /// now sorts elsewhere) are dropped.
    fn indexed(
        &self,
        prefix: &[u8],
        mut after: Option<Vec<u8>>,
        first_page: usize,
        limit: usize,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<Vec<Approval>, StoreError> {
        self.build_pending_index()?;
        let mut found = Vec::new();
        let mut stale = Vec::new();
        let mut page_size = first_page.clamp(1, 256);
        'pages: while found.len() < limit {
            let page = self
                .store
                .scan_page(AREA, prefix, after.as_deref(), page_size)?;
            page_size = (page_size * 4).min(256);
            let Some((last, _)) = page.last() else {
                break;
            };
            after = Some(last.clone());
            for (k, _) in &page {
                let text = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                let Some((order, id)) = text.split_once('/') else {
                    stale.push((k.clone(), None));
                    continue;
                };
                if !wanted(order) {
                    break 'pages;
                }
                match self.get(id)? {
                    Some(a) if pending_keys(&a).contains(k) => {
                        found.push(a);
                        if found.len() >= limit {
                            break 'pages;
                        }
                    }
                    // No longer pending, or indexed elsewhere now: its own keys say so.
                    _ => stale.push((k.clone(), None)),
                }
            }
        }
        if !stale.is_empty() {
            self.store.write(AREA, stale)?;
        }
        Ok(found)
    }

    /// Index the pending requests of a queue made before those indexes
    /// existed (once; every write since keeps them).
    fn build_pending_index(&self) -> Result<(), StoreError> {
        self.store.index_once(AREA, PENDING_INDEX_BUILT, || {
            Ok(self
                .open()?
                .iter()
                .flat_map(|a| pending_index_writes(None, a))
                .collect())
        })
    }

    /// Index the open requests of a queue made before the index existed
    /// (once; every write since keeps it).
    fn build_open_index(&self) -> Result<(), StoreError> {
        self.store.index_once(AREA, OPEN_INDEX_BUILT, || {
            Ok(self
                .list()?
                .iter()
                .filter(|a| !a.status.is_final())
                .map(open_write)
                .collect())
        })
    }

    /// The guard and writes that move `current` to `next`, to be written
    /// with the audit entry that records the move; `None` when `current` is
    /// no longer stored as it was read (another decider got there first).
    pub fn transition_writes(
        &self,
        current: &Approval,
        next: &Approval,
    ) -> Result<Option<(Guard, Vec<AreaWrite>)>, StoreError> {
        let Some(guard) = self.guard_unchanged(current)? else {
            return Ok(None);
        };
        let mut writes = vec![
            (
                AREA.to_string(),
                key(&next.id),
                Some(crate::store::encode(next)?),
            ),
            open_area_write(next),
        ];
        writes.extend(pending_index_area_writes(Some(current), next));
        Ok(Some((guard, writes)))
    }

    /// The guard and writes that replace `current` with `superseded` and
    /// add `new` (an approver's edit); see [`ApprovalQueue::transition_writes`].
    pub fn supersede_writes(
        &self,
        current: &Approval,
        superseded: &Approval,
        new: &Approval,
    ) -> Result<Option<(Guard, Vec<AreaWrite>)>, StoreError> {
        let Some(guard) = self.guard_unchanged(current)? else {
            return Ok(None);
        };
        let writes = vec![
            (
                AREA.to_string(),
                key(&current.id),
                Some(crate::store::encode(superseded)?),
            ),
            (
                AREA.to_string(),
                key(&new.id),
                Some(crate::store::encode(new)?),
            ),
            (
                AREA.to_string(),
                format!("h/{}", new.hash).into_bytes(),
                Some(new.id.clone().into_bytes()),
            ),
            open_area_write(superseded),
            open_area_write(new),
        ];
        let mut writes = writes;
        writes.extend(pending_index_area_writes(Some(current), superseded));
        writes.extend(pending_index_area_writes(None, new));
        Ok(Some((guard, writes)))
    }

    /// A guard that holds while `current` is stored exactly as it was read.
    fn guard_unchanged(&self, current: &Approval) -> Result<Option<Guard>, StoreError> {
        let Some(stored) = self.store.get(AREA, &key(&current.id))? else {
            return Ok(None);
        };
        let as_read: Approval = crate::store::decode(AREA, &stored)?;
        if &as_read != current {
            return Ok(None);
        }
        Ok(Some(Guard {
            area: AREA.to_string(),
            key: key(&current.id),
            expected: Some(stored),
        }))
    }

    /// Replace `current` with `next` if nobody changed it since it was read.
    /// Returns false when another decider got there first.
    pub fn transition(&self, current: &Approval, next: &Approval) -> Result<bool, StoreError> {
        self.transition_when(current, next, crate::store::Durability::Now)
    }

    /// [`ApprovalQueue::transition`], durable as `when` says.
    pub fn transition_when(
        &self,
        current: &Approval,
        next: &Approval,
        when: crate::store::Durability,
    ) -> Result<bool, StoreError> {
        let Some(guard) = self.guard_unchanged(current)? else {
            return Ok(false);
        };
        let mut writes = vec![
            (key(&next.id), Some(crate::store::encode(next)?)),
            open_write(next),
        ];
        writes.extend(pending_index_writes(Some(current), next));
        self.store
            .write_if_when(AREA, &guard.key, guard.expected.as_deref(), writes, when)
    }

    fn elevation_key(employee: &str, approval: &str) -> Vec<u8> {
        format!("e/{employee}/{approval}").into_bytes()
    }

    /// The index of widenings whose end is not yet recorded, written with
    /// each one: the timer reads those, not every widening ever granted.
    fn unended_key(employee: &str, approval: &str) -> Vec<u8> {
        format!("x/{employee}/{approval}").into_bytes()
    }

    /// Record an approved widening (idempotent: keyed by its request).
    pub fn put_elevation(&self, elevation: &Elevation) -> Result<(), StoreError> {
        self.store.write(
            AREA,
            vec![
                (
                    Self::elevation_key(&elevation.employee, &elevation.approval),
                    Some(crate::store::encode(elevation)?),
                ),
                (
                    Self::unended_key(&elevation.employee, &elevation.approval),
                    (!elevation.ended).then(|| b"1".to_vec()),
                ),
            ],
        )
    }

    /// The widenings whose end is not recorded yet (running, or ran out
    /// since the timer last looked), read through their index.
    pub fn unended_elevations(&self) -> Result<Vec<Elevation>, StoreError> {
        self.unended_under(b"x/")
    }

    /// `employee`'s widenings whose end is not recorded yet, oldest first:
    /// what a task start looks for (read through the index, not every
    /// widening the employee ever had).
    pub fn unended_elevations_of(&self, employee: &str) -> Result<Vec<Elevation>, StoreError> {
        let mut unended = self.unended_under(format!("x/{employee}/").as_bytes())?;
        unended.sort_by(|a, b| {
            a.starts_at
                .cmp(&b.starts_at)
                .then(a.approval.cmp(&b.approval))
        });
        Ok(unended)
    }

    /// The unended widenings indexed under `prefix` (of `x/`).
    fn unended_under(&self, prefix: &[u8]) -> Result<Vec<Elevation>, StoreError> {
        // A data dir from before the index: index it once.
        self.store.index_once(AREA, UNENDED_INDEX_BUILT, || {
            Ok(self
                .all_elevations()?
                .iter()
                .filter(|e| !e.ended)
                .map(|e| {
                    (
                        Self::unended_key(&e.employee, &e.approval),
                        Some(b"1".to_vec()),
                    )
                })
                .collect())
        })?;
        let mut unended = Vec::new();
        let mut stale = Vec::new();
        for (k, _) in self.store.scan(AREA, prefix)? {
            let found = std::str::from_utf8(&k[2..])
                .ok()
                .map(|rest| format!("e/{rest}").into_bytes())
                .map(|key| self.store.get_json::<Elevation>(AREA, &key))
                .transpose()?
                .flatten();
            match found {
                Some(e) if !e.ended => unended.push(e),
                _ => stale.push((k, None)),
            }
        }
        if !stale.is_empty() {
            self.store.write(AREA, stale)?;
        }
        Ok(unended)
    }

    /// Every widening ever granted to `employee`, oldest first.
    pub fn elevations(&self, employee: &str) -> Result<Vec<Elevation>, StoreError> {
        let mut all: Vec<Elevation> = self
            .store
            .scan_json(AREA, format!("e/{employee}/").as_bytes())?;
        all.sort_by(|a, b| {
            a.starts_at
                .cmp(&b.starts_at)
                .then(a.approval.cmp(&b.approval))
        });
        Ok(all)
    }

    /// Every widening of every employee.
    pub fn all_elevations(&self) -> Result<Vec<Elevation>, StoreError> {
        self.store.scan_json(AREA, b"e/")
    }

    fn count_key(employee: &str, integration: Integration, scope: &str) -> Vec<u8> {
        format!("n/{employee}/{integration}/{scope}").into_bytes()
    }

    /// Writes already executed by `employee` through one grant (for `first = N` policies).
    pub fn writes_done(
        &self,
        employee: &str,
        integration: Integration,
        scope: &str,
    ) -> Result<u64, StoreError> {
        Ok(self
            .store
            .get_json(AREA, &Self::count_key(employee, integration, scope))?
            .unwrap_or(0))
    }

    /// Count one more executed write. With `approval`, the write of that
    /// request is counted once however often its execution is resumed.
    pub fn count_write(
        &self,
        employee: &str,
        integration: Integration,
        scope: &str,
        approval: Option<&str>,
    ) -> Result<(), StoreError> {
        let marker = approval.map(|id| format!("c/{id}").into_bytes());
        if let Some(m) = &marker
            && self.store.get(AREA, m)?.is_some()
        {
            return Ok(());
        }
        let n = self.writes_done(employee, integration, scope)? + 1;
        let mut writes = vec![(
            Self::count_key(employee, integration, scope),
            Some(crate::store::encode(&n)?),
        )];
        writes.extend(marker.map(|m| (m, Some(b"1".to_vec()))));
        // Rides on the next group commit: a count lost in a crash makes
        // one more write wait for a human, never one fewer.
        self.store
            .write_when(AREA, writes, crate::store::Durability::Soon)
    }
}
