//! The audit log: append-only, hash-chained, per organisation.
//!
//! Every task start and end, every note, every call an employee made or tried
//! (allowed, denied, rate-limited, rejected, gated) and every result is an
//! [`Entry`]. Each entry carries the hash of the one before it; the log's head
//! (last sequence number and hash) is stored beside the entries in the same
//! atomic write. [`AuditLog::verify`] recomputes the chain and reports edited,
//! deleted, reordered or truncated entries.
//!
//! This module must never store a secret: callers pass argument *summaries*,
//! never tokens or file contents. An append that fails is an error the caller
//! must treat as "the action does not happen".

use std::fmt::Write as _;
use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::keys::Checkpoint;
use crate::store::{AreaWrite, Durability, Guard, OrgStore, StoreError};

const AREA: &str = "audit";
const HEAD_KEY: &[u8] = b"head";
const ENTRY_PREFIX: &[u8] = b"e/";
/// The index of each task's entries: `t/<task>/<seq, 16 hex>`, written in
/// the same transaction as the entry, so a task's entries are found
/// without reading the log. The value is `1` (the entry the key names) or,
/// for a task with several entries in one write, their numbers (16 hex
/// digits each, comma-separated): one key a task a write.
const TASK_PREFIX: &str = "t/";
/// The tasks started and not ended: `r/<task>` holds the sequence number
/// of its start, written with the start and removed with the end.
const RUNNING_PREFIX: &str = "r/";
/// Set once the running-task index covers every entry.
const RUNNING_INDEX_BUILT: &[u8] = b"r-index-built";
/// Entries read at a time by `verify`.
const VERIFY_PAGE: usize = 1000;
/// Set once the task index covers every entry (built from the log once,
/// for logs written before it existed).
const TASK_INDEX_BUILT: &[u8] = b"t-index-built";

fn running_key(task: &str) -> Vec<u8> {
    format!("{RUNNING_PREFIX}{task}").into_bytes()
}

fn task_key(task: &str, seq: u64) -> Vec<u8> {
    format!("{TASK_PREFIX}{task}/{seq:016x}").into_bytes()
}

/// The entries an index key of a task points to.
fn indexed_seqs(key: &[u8], value: &[u8]) -> Vec<u64> {
    if value == b"1" {
        let key = String::from_utf8_lossy(key);
        return key
            .rsplit_once('/')
            .and_then(|(_, seq)| u64::from_str_radix(seq, 16).ok())
            .into_iter()
            .collect();
    }
    String::from_utf8_lossy(value)
        .split(',')
        .filter_map(|seq| u64::from_str_radix(seq, 16).ok())
        .collect()
}

/// The index keys of one write of the chain, fewer: a task's entries in it
/// share one key, and a task that starts and ends in it leaves no mark in
/// the index of running tasks (its start set it in this write). sled costs
/// several microseconds a key, so this is most of what a task's write costs
/// beyond its entries.
fn compact_index(writes: Vec<AreaWrite>) -> Vec<AreaWrite> {
    let mut out = Vec::with_capacity(writes.len());
    // Each task's entries, in the order tasks first appear (and where).
    let mut tasks: Vec<(String, Vec<u64>)> = Vec::new();
    let mut task_at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    // Per running key: whether this write set it first, and its last value.
    let mut running: Vec<(Vec<u8>, bool, Option<Vec<u8>>)> = Vec::new();
    let mut running_at: std::collections::HashMap<Vec<u8>, usize> =
        std::collections::HashMap::new();
    for (area, key, value) in writes {
        if area != AREA {
            out.push((area, key, value));
            continue;
        }
        if key.starts_with(TASK_PREFIX.as_bytes()) && value.as_deref() == Some(b"1") {
            let text = String::from_utf8_lossy(&key[TASK_PREFIX.len()..]).into_owned();
            if let Some((task, seq)) = text.rsplit_once('/')
                && let Ok(seq) = u64::from_str_radix(seq, 16)
            {
                match task_at.get(task) {
                    Some(&i) => tasks[i].1.push(seq),
                    None => {
                        task_at.insert(task.to_string(), tasks.len());
                        tasks.push((task.to_string(), vec![seq]));
                    }
                }
                continue;
            }
        }
        if key.starts_with(RUNNING_PREFIX.as_bytes()) {
            match running_at.get(&key) {
                Some(&i) => running[i].2 = value,
                None => {
                    running_at.insert(key.clone(), running.len());
                    running.push((key, value.is_some(), value));
                }
            }
            continue;
        }
        out.push((area, key, value));
    }
    for (task, seqs) in tasks {
        let value = match seqs.as_slice() {
            [_] => b"1".to_vec(),
            _ => seqs
                .iter()
                .map(|seq| format!("{seq:016x}"))
                .collect::<Vec<_>>()
                .join(",")
                .into_bytes(),
        };
        out.push((AREA.to_string(), task_key(&task, seqs[0]), Some(value)));
    }
    for (key, set_here, last) in running {
        // Set and removed in this write: it was never there before it.
        if !(set_here && last.is_none()) {
            out.push((AREA.to_string(), key, last));
        }
    }
    out
}
/// The `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What kind of event an entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A task was started.
    TaskStart,
    /// A task ended (`result` says how).
    TaskEnd,
    /// The employee explained itself.
    Note,
    /// A call was allowed and is about to reach the provider (the intent).
    Intent,
    /// The provider answered a call whose intent was recorded.
    Result,
    /// A call was refused before it reached any provider.
    Refusal,
    /// A gated call was stored for a human to decide (`approval` names it).
    Queued,
    /// A human (or expiry) decided on a queued call.
    Decision,
    /// The employee's `on-decision` was called about a decision (`approval`
    /// names it; `result` says how the callback ended).
    Reaction,
    /// What an employee is changed: it was registered, or its component,
    /// grants, policies, limits or notification targets changed (`args`
    /// holds the readable diff, one change per line).
    Change,
}

/// The decision the mediator took on a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    /// The grant allows it.
    Allowed,
    /// The grant does not allow it, or it is gated with no approval path.
    Denied,
    /// Over a rate or call limit.
    RateLimited,
    /// Gated: waits for a human.
    Gated,
    /// The request was malformed.
    Rejected,
}

/// What the caller fills in; the log adds sequence, time, org and hashes.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// The employee (or `host` for the host's own entries).
    pub employee: String,
    /// The task id.
    pub task: String,
    /// The interface (`mail`, `chat`, ...) or empty for task entries.
    pub interface: String,
    /// The granted scope, e.g. `label:INBOX`.
    pub scope: String,
    /// The action (`read`, `post`, ...) or the method called.
    pub action: String,
    /// A readable summary of the arguments. Never secrets or file contents.
    pub args: String,
    /// The employee's plain-English reason.
    pub reason: String,
    /// The mediator's decision, if this entry is about a call.
    pub decision: Option<Decision>,
    /// What happened.
    pub result: String,
    /// The sequence number of the intent this entry completes.
    pub intent: Option<u64>,
    /// The inverse operation, for rollback, if there is one.
    pub inverse: Option<crate::providers::Inverse>,
    /// The approval request this entry belongs to. (Absent from entries
    /// without one, so entries written before the field existed hash alike.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    /// The action (its result entry's sequence number) this entry undoes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undoes: Option<u64>,
    /// What a result entry's call came to, typed: code reads this, never
    /// the text in `result`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}

/// What an executed call came to (on result entries).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// A read returned.
    Read,
    /// A write happened (its inverse, if it has one, is in `inverse`).
    Done,
    /// An earlier write was undone (`undoes` names it).
    Undone,
    /// A widening of the employee's grants was recorded.
    Granted,
    /// The service refused or failed a read; nothing changed.
    ReadFailed,
    /// The service refused or failed a write or an undo; nothing changed.
    WriteFailed,
}

/// Writing one JSON value of any of a few types through one function.
mod erased {
    use crate::store::StoreError;

    pub(super) trait Json {
        fn write(&self, out: &mut Vec<u8>) -> Result<(), StoreError>;
    }

    impl<T: serde::Serialize> Json for T {
        fn write(&self, out: &mut Vec<u8>) -> Result<(), StoreError> {
            serde_json::to_writer(out, self).map_err(|e| StoreError::Encode(e.to_string()))
        }
    }
}

/// One entry of the chain.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// 1, 2, 3, ... without gaps.
    pub seq: u64,
    /// Hash of the previous entry ([`GENESIS`] for the first).
    pub prev: String,
    /// When it was appended.
    pub time: DateTime<Utc>,
    /// The organisation.
    pub org: String,
    /// The entry kind.
    pub kind: Kind,
    /// The recorded facts.
    #[serde(flatten)]
    pub record: Record,
    /// SHA-256 over everything above, hex.
    pub hash: String,
}

impl Entry {
    /// The entry's hash: SHA-256 over its canonical JSON without `hash`.
    /// Anyone can compute it (that is why checkpoints are signed).
    pub fn compute_hash(&self) -> String {
        #[derive(Serialize)]
        struct Hashed<'a> {
            seq: u64,
            prev: &'a str,
            time: &'a DateTime<Utc>,
            org: &'a str,
            kind: Kind,
            record: &'a Record,
        }
        hex::encode(crate::digest::digest(&Hashed {
            seq: self.seq,
            prev: &self.prev,
            time: &self.time,
            org: &self.org,
            kind: self.kind,
            record: &self.record,
        }))
    }

    /// A new entry after `prev`, hashed, and its stored form, with the
    /// record serialised once: the hash is over the canonical JSON of
    /// `{seq, prev, time, org, kind, record}` and the stored form is those
    /// fields with the record's flattened in, then `hash` — byte for byte
    /// what serde writes for an [`Entry`] (the tests compare them).
    pub fn sealed(
        seq: u64,
        prev: String,
        time: DateTime<Utc>,
        org: String,
        kind: Kind,
        record: Record,
    ) -> Result<(Entry, Vec<u8>), StoreError> {
        use sha2::Digest as _;
        let json = |out: &mut Vec<u8>, value: &dyn erased::Json| value.write(out);
        let mut head = Vec::with_capacity(192);
        head.extend_from_slice(b"{\"seq\":");
        json(&mut head, &seq)?;
        head.extend_from_slice(b",\"prev\":");
        json(&mut head, &prev)?;
        head.extend_from_slice(b",\"time\":");
        json(&mut head, &time)?;
        head.extend_from_slice(b",\"org\":");
        json(&mut head, &org)?;
        head.extend_from_slice(b",\"kind\":");
        json(&mut head, &kind)?;
        let fields = crate::store::encode(&record)?;
        let mut hasher = sha2::Sha256::new();
        hasher.update(&head);
        hasher.update(b",\"record\":");
        hasher.update(&fields);
        hasher.update(b"}");
        let hash = hex::encode(hasher.finalize());
        let mut stored = head;
        // `{...}` of the record, its braces dropped.
        if let Some(inner) = fields.get(1..fields.len().saturating_sub(1))
            && !inner.is_empty()
        {
            stored.push(b',');
            stored.extend_from_slice(inner);
        }
        stored.extend_from_slice(b",\"hash\":");
        json(&mut stored, &hash)?;
        stored.push(b'}');
        let entry = Entry {
            seq,
            prev,
            time,
            org,
            kind,
            record,
            hash,
        };
        Ok((entry, stored))
    }

    /// The record as humans may see it: every recorded text through
    /// [`crate::human::line`] (a change's diff line by line), so a reason,
    /// note, task or result cannot forge a line or hide text.
    pub fn for_humans(&self) -> Record {
        use crate::human::line as shown;
        let raw = &self.record;
        let args = if self.kind == Kind::Change {
            // The host's own diff: one change per line, each line escaped.
            raw.args
                .split('\n')
                .map(shown)
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            shown(&raw.args)
        };
        Record {
            employee: shown(&raw.employee),
            task: shown(&raw.task),
            interface: shown(&raw.interface),
            scope: shown(&raw.scope),
            action: shown(&raw.action),
            args,
            reason: shown(&raw.reason),
            result: shown(&raw.result),
            approval: raw.approval.as_deref().map(shown),
            ..raw.clone()
        }
    }

    /// One readable line: what was done, by whom, and why (see
    /// [`Entry::for_humans`]).
    pub fn render(&self) -> String {
        let r = &self.for_humans();
        let mut line = format!(
            "#{:<4} {} {}",
            self.seq,
            self.time.to_rfc3339_opts(SecondsFormat::Secs, true),
            r.employee,
        );
        if !r.task.is_empty() {
            let _ = write!(line, " task {}", short(&r.task));
        }
        let what = match self.kind {
            Kind::TaskStart => format!("started: {}", r.args),
            Kind::TaskEnd => format!("ended: {}", r.result),
            Kind::Note if r.reason.is_empty() => {
                let what = [r.action.as_str(), r.args.as_str()]
                    .into_iter()
                    .filter(|part| !part.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                format!("host: {what} -> {}", r.result)
            }
            Kind::Note => format!("note: {}", r.reason),
            Kind::Reaction => format!("on-decision({}) -> {}", r.args, r.result),
            Kind::Change => format!(
                "{}:\n        {}",
                r.result,
                r.args.replace('\n', "\n        ")
            ),
            Kind::Decision => format!(
                "decision on {}: {}",
                r.approval.as_deref().unwrap_or("?"),
                r.result
            ),
            Kind::Intent | Kind::Refusal | Kind::Result | Kind::Queued => {
                let mut s = [r.interface.as_str(), r.scope.as_str(), r.action.as_str()]
                    .into_iter()
                    .filter(|part| !part.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                if !r.args.is_empty() {
                    let _ = write!(s, "({})", r.args);
                }
                match self.kind {
                    Kind::Intent => s.push_str(" -> allowed"),
                    Kind::Queued => {
                        let _ = write!(s, " -> QUEUED for approval: {}", r.result);
                    }
                    Kind::Refusal => {
                        let d = match r.decision {
                            Some(Decision::Denied) => "DENIED",
                            Some(Decision::RateLimited) => "RATE-LIMITED",
                            Some(Decision::Rejected) => "REJECTED",
                            _ => "REFUSED",
                        };
                        let _ = write!(s, " -> {d}: {}", r.result);
                    }
                    _ => {
                        let _ = write!(s, " -> {}", r.result);
                        if let Some(i) = r.intent {
                            let _ = write!(s, " (intent #{i})");
                        }
                        if let Some(a) = &r.approval {
                            let _ = write!(s, " [approved as {a}]");
                        }
                    }
                }
                s
            }
        };
        line.push_str(": ");
        line.push_str(&what);
        if !r.reason.is_empty() && self.kind != Kind::Note && self.kind != Kind::Decision {
            let _ = write!(line, "\n      why: \"{}\"", r.reason);
        }
        line
    }
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// Render entries for reading, one line per action with its reason: an
/// intent whose result is on record is folded into that result line; an
/// intent without one (the host stopped in between) is shown and flagged.
pub fn render_log(entries: &[Entry]) -> Vec<String> {
    let completed: std::collections::HashSet<u64> =
        entries.iter().filter_map(|e| e.record.intent).collect();
    entries
        .iter()
        .filter_map(|e| render_line(e, |intent| completed.contains(&intent)))
        .collect()
}

/// One line of [`render_log`]: `None` for an intent whose result is on
/// record (`completed` says which are), which that result's line shows.
pub fn render_line(entry: &Entry, completed: impl Fn(u64) -> bool) -> Option<String> {
    if entry.kind != Kind::Intent {
        return Some(entry.render());
    }
    if completed(entry.seq) {
        return None;
    }
    Some(entry.render().replacen(
        " -> allowed",
        " -> allowed, NO RESULT RECORDED (the host stopped during the call)",
        1,
    ))
}

/// The stored head of a log: its last entry's number and hash.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Head {
    /// The last entry's number.
    pub seq: u64,
    /// The last entry's hash.
    pub hash: String,
}

/// An append failed: the caller must not go on with the action.
#[derive(Debug, thiserror::Error)]
#[error("audit log unavailable: {0}")]
pub struct AuditError(#[from] pub StoreError);

/// What `verify` found.
#[derive(Debug, Serialize, Deserialize)]
pub struct Verification {
    /// Entries checked.
    pub entries: u64,
    /// Hash of the last entry (the head), to keep elsewhere and compare later.
    pub head: String,
    /// Signed checkpoints that matched the log.
    pub checkpoints: u64,
    /// Entries after the last signed checkpoint (protected by the chain
    /// only, until the next checkpoint).
    pub unsigned_tail: u64,
    /// Every problem found, in log order. Empty means intact.
    pub problems: Vec<String>,
}

impl Verification {
    /// Whether the chain is intact.
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// A checkpoint is due over every this many entries (and every task end);
/// one over the newest due entry covers the others durable with it.
pub const CHECKPOINT_EVERY: u64 = 64;

/// Whether an entry of `kind` must be on disk before its append returns:
/// it records something about to change the world (a write's intent), a
/// request a human will be told of, a decision or a change to an employee.
/// The others ride on the next group commit.
pub fn durable_at_once(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Intent | Kind::Queued | Kind::Decision | Kind::Change
    )
}

/// Whether `entry` must be covered by a signed checkpoint (over it or a
/// later entry) once it is durable.
fn checkpoint_due(entry: &Entry) -> bool {
    entry.kind == Kind::TaskEnd || entry.seq.is_multiple_of(CHECKPOINT_EVERY)
}

/// Called with every checkpoint signed and the entry it covers (the org
/// queues `checkpoint` notifications with it).
pub type PublishCheckpoint = Box<dyn Fn(&Checkpoint, &Entry) + Send + Sync>;

/// Where and how the log signs its checkpoints.
pub struct Checkpointing {
    /// The host key.
    pub keys: std::sync::Arc<crate::keys::Keys>,
    /// The append-only checkpoint file.
    pub file: std::path::PathBuf,
    /// Told of each checkpoint.
    pub publish: Option<PublishCheckpoint>,
}

/// What the checkpoints of a log are checked against.
pub struct Anchors {
    /// The key every checkpoint must be signed with.
    pub public: ed25519_dalek::VerifyingKey,
    /// The checkpoints seen (any org; others are ignored).
    pub checkpoints: Vec<Checkpoint>,
    /// Problems found reading them (unparsable lines).
    pub problems: Vec<String>,
}

/// One organisation's audit log.
///
/// What must be on disk before anything acts on it (a write's intent, a
/// queued request, a decision, a change to an employee) is durable before
/// [`AuditLog::append`] returns; the rest (task starts and ends, notes,
/// reads, results, refusals) rides on the store's next group commit. The
/// log is written in order, so an entry that is durable has every entry
/// before it durable too. Checkpoints are signed only over durable entries.
pub struct AuditLog {
    store: OrgStore,
    /// The chain's head and the entries not yet written to the store.
    chain: std::sync::Arc<Chain>,
    /// Appends waiting to be applied in the next batch.
    batches: Mutex<Batches>,

    /// Entries appended by this process, by what they record.
    counts: Counts,
}

/// Writes of entries appended but not yet given to the store, at most this
/// many (then they are written at once).
const MAX_BUFFERED_WRITES: usize = 4096;

/// The chain as this process appends to it. Entries that need not be
/// durable at once are kept here (already numbered and hashed) and written
/// to the store in one batch: before the store's next group commit, before
/// anything durable is appended, and before the log is read.
struct Chain {
    store: OrgStore,
    /// Signs checkpoints once the entries they cover are durable.
    signer: Option<std::sync::Arc<Signer>>,
    /// Whether entries may wait here (the store commits in the background).
    buffering: bool,
    /// Held across every write of the chain to the store, so they reach it
    /// in order; appends go on into `state` meanwhile. Taken before `state`.
    writer: Mutex<()>,
    state: Mutex<ChainState>,
    /// Told when a writer has put the entries it hashed back into `state`.
    sealed: std::sync::Condvar,
    /// The newest sequence number appended by this process.
    last_seq: std::sync::atomic::AtomicU64,
}

/// An entry numbered but not yet hashed.
struct Unsealed {
    seq: u64,
    time: DateTime<Utc>,
    kind: Kind,
    record: Record,
}

#[derive(Default)]
struct ChainState {
    /// The head as appended (`None`: read it from the store).
    head: Option<Head>,
    /// The head record as this process last read or wrote it in the store
    /// (`None`: absent). Every write is conditional on it: a log that
    /// anything else appended to meanwhile is never forked.
    stored: Option<Vec<u8>>,
    /// Writes of the entries appended but not yet written.
    pending: Vec<AreaWrite>,
    /// Those of them due a checkpoint.
    pending_due: Vec<Entry>,
    /// Entries appended with [`AuditLog::append_behind`]: numbered, not
    /// hashed yet. They come after `pending`, in this order.
    unsealed: Vec<Unsealed>,
    /// An empty vector with room, put in `unsealed`'s place when a writer
    /// takes its entries (so appends do not grow a vector anew each time).
    spare: Vec<Unsealed>,
    /// A writer (holding `writer`) is hashing entries it took from
    /// `unsealed`, outside this lock; the head moves on once it puts them
    /// into `pending`. Whoever needs the head hashed waits for it.
    sealing: bool,
    /// The newest sequence number given out: the head's, or that of the
    /// last entry in `unsealed` (or being hashed).
    numbered: u64,
    /// Why buffered entries were dropped since the last [`AuditLog::settle`]
    /// (told to it, whoever's write failed: often the committer's).
    failed: Option<String>,
}

impl Chain {
    fn lock(&self) -> std::sync::MutexGuard<'_, ChainState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn head(&self, st: &mut ChainState) -> Result<Head, StoreError> {
        if let Some(head) = &st.head {
            return Ok(head.clone());
        }
        let stored = self.store.get(AREA, HEAD_KEY)?;
        let head = match &stored {
            Some(bytes) => crate::store::decode(AREA, bytes)?,
            None => Head {
                seq: 0,
                hash: GENESIS.to_string(),
            },
        };
        st.stored = stored;
        st.numbered = head.seq;
        st.head = Some(head.clone());
        Ok(head)
    }

    /// A write of the chain was applied (not yet flushed): where the store
    /// commits in the background, sign a checkpoint over its newest entry
    /// due one now, off the flush's path, to be written to the checkpoint
    /// file once the flush has made the entries durable (and synced there at
    /// the next commit); elsewhere, have those due signed once durable.
    fn written(&self, next: Prepared) -> Vec<Entry> {
        let (Some(signer), Some(entry), true) = (&self.signer, next.due.last(), self.buffering)
        else {
            self.sign_when_durable(&next.due);
            return next.entries;
        };
        let (cp, entry) = (signer.sign(entry), entry.clone());
        let mark = self.store.commit_mark();
        signer.copies().waiting.push_back((mark, cp, entry));
        let signer = std::sync::Arc::downgrade(signer);
        self.store.after_durable(Box::new(move || {
            if let Some(signer) = signer.upgrade() {
                signer.copy_durable(mark);
            }
        }));
        next.entries
    }

    /// Wait until no writer is hashing entries outside the lock.
    fn unsealing_done<'a>(
        &self,
        mut st: std::sync::MutexGuard<'a, ChainState>,
    ) -> std::sync::MutexGuard<'a, ChainState> {
        while st.sealing {
            st = self
                .sealed
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        st
    }

    /// Hash the entries appended behind, in order, into the buffered writes
    /// (under the lock: for the few appended since a writer last did).
    fn seal_locked(&self, st: &mut ChainState) -> Result<(), StoreError> {
        if st.unsealed.is_empty() {
            return Ok(());
        }
        let mut head = self.head(st)?;
        let mut batch = std::mem::take(&mut st.unsealed);
        let taken = batch.len();
        if let Err(e) = self.seal(&mut head, &mut batch, &mut st.pending, &mut st.pending_due) {
            // Those taken, and all after them, are lost: said so at settle.
            return Err(self.lost(st, e, taken));
        }
        st.unsealed = batch;
        st.head = Some(head);
        Ok(())
    }

    /// Hash the entries of `batch` (emptied) in order after `head`, which
    /// moves on to the last; their writes go to `writes`, those due a
    /// checkpoint to `due`.
    fn seal(
        &self,
        head: &mut Head,
        batch: &mut Vec<Unsealed>,
        writes: &mut Vec<AreaWrite>,
        due: &mut Vec<Entry>,
    ) -> Result<(), StoreError> {
        for u in batch.drain(..) {
            let (entry, entry_writes) = self.next_entry(head, u.kind, u.record, u.time)?;
            debug_assert_eq!(entry.seq, u.seq);
            *head = Head {
                seq: entry.seq,
                hash: entry.hash.clone(),
            };
            writes.extend(entry_writes);
            if checkpoint_due(&entry) {
                due.push(entry);
            }
        }
        Ok(())
    }

    /// Hash the entries appended behind outside the lock, so appends go on
    /// meanwhile. Called with the writer lock held (no other writer moves
    /// the head or drops entries while this one hashes).
    fn seal_behind(&self) -> Result<(), StoreError> {
        let (mut batch, mut head) = {
            let st = self.lock();
            let mut st = self.unsealing_done(st);
            if st.unsealed.is_empty() {
                return Ok(());
            }
            let head = self.head(&mut st)?;
            st.sealing = true;
            let spare = std::mem::take(&mut st.spare);
            (std::mem::replace(&mut st.unsealed, spare), head)
        };
        let taken = batch.len();
        let mut writes = Vec::with_capacity(taken * 2);
        let mut due = Vec::new();
        let hashed = self.seal(&mut head, &mut batch, &mut writes, &mut due);
        let mut st = self.lock();
        st.sealing = false;
        if batch.capacity() > st.spare.capacity() {
            st.spare = batch;
        }
        self.sealed.notify_all();
        match hashed {
            Ok(()) => {
                st.pending.extend(writes);
                st.pending_due.extend(due);
                st.head = Some(head);
                Ok(())
            }
            Err(e) => Err(self.lost(&mut st, e, taken)),
        }
    }

    /// Number an entry now; it is hashed and written behind (by the next
    /// write of the chain: the committer's, a read's, a durable append's).
    fn push(&self, kind: Kind, record: Record) -> Result<u64, StoreError> {
        let mut st = self.lock();
        if st.head.is_none() {
            st = self.unsealing_done(st);
            self.head(&mut st)?;
        }
        st.numbered += 1;
        let seq = st.numbered;
        st.unsealed.push(Unsealed {
            seq,
            time: Utc::now(),
            kind,
            record,
        });
        self.last_seq
            .fetch_max(seq, std::sync::atomic::Ordering::AcqRel);
        let full = st.unsealed.len() * 2 + st.pending.len() >= MAX_BUFFERED_WRITES;
        drop(st);
        if full {
            self.write_pending()?;
        }
        Ok(seq)
    }

    /// The condition of a write of the chain: the head is as last seen.
    fn head_unchanged(st: &ChainState) -> Guard {
        Guard {
            area: AREA.to_string(),
            key: HEAD_KEY.to_vec(),
            expected: st.stored.clone(),
        }
    }

    /// The head moved in the store under this process: something else
    /// appends to this log. Forget what was buffered and start again from
    /// the store's head.
    fn forked(&self, st: &mut ChainState, buffered: usize) -> StoreError {
        let dropped = buffered + st.pending.len() + st.unsealed.len();
        st.head = None;
        st.pending.clear();
        st.pending_due.clear();
        st.unsealed.clear();
        let e = StoreError::Io(format!(
            "the audit log of {} was appended to by another writer while this one held entries: they were not written (one audit log per organisation and data dir)",
            self.store.org()
        ));
        tracing::error!("{e}");
        if dropped > 0 {
            st.failed = Some(e.to_string());
        }
        e
    }

    /// Give the buffered entries to the store (not waiting for a flush).
    fn write_pending(&self) -> Result<(), StoreError> {
        self.apply(Vec::new(), None).map(drop)
    }

    /// A write of the chain failed: the entries it held, and those appended
    /// onto them since, are lost; the chain goes on from the store's head.
    fn lost(&self, st: &mut ChainState, e: StoreError, buffered: usize) -> StoreError {
        st.head = None;
        let later = st.pending.len() + st.unsealed.len();
        st.pending.clear();
        st.pending_due.clear();
        st.unsealed.clear();
        tracing::error!(org = %self.store.org(), later_writes = later, "could not write audit entries to the store: {e}");
        // Entries whose appends were answered before they were written.
        if buffered + later > 0 {
            st.failed = Some(format!(
                "audit entries could not be written and were lost: {e}"
            ));
        }
        e
    }

    /// Have the checkpoints due over `entries` (just written, in log
    /// order) signed once they are durable.
    fn sign_when_durable(&self, entries: &[Entry]) {
        let Some(signer) = &self.signer else {
            return;
        };
        let mut newest = None;
        {
            let mut unsigned = signer.unsigned.lock().unwrap_or_else(|p| p.into_inner());
            for entry in entries.iter().filter(|e| checkpoint_due(e)) {
                unsigned.push_back(entry.clone());
                newest = Some(entry.seq);
            }
        }
        // One checkpoint over the newest covers the others written with it.
        if let Some(seq) = newest {
            let signer = std::sync::Arc::downgrade(signer);
            self.store.after_durable(Box::new(move || {
                if let Some(signer) = signer.upgrade() {
                    signer.sign_through(seq);
                }
            }));
        }
    }

    /// Number and hash the next entry after `head`; its writes.
    fn next_entry(
        &self,
        head: &Head,
        kind: Kind,
        record: Record,
        time: DateTime<Utc>,
    ) -> Result<(Entry, Vec<AreaWrite>), StoreError> {
        let (entry, stored) = Entry::sealed(
            head.seq + 1,
            head.hash.clone(),
            time,
            self.store.org().to_string(),
            kind,
            record,
        )?;
        let mut writes = vec![(
            AREA.to_string(),
            AuditLog::entry_key(entry.seq),
            Some(stored),
        )];
        if !entry.record.task.is_empty() {
            writes.push((
                AREA.to_string(),
                task_key(&entry.record.task, entry.seq),
                Some(b"1".to_vec()),
            ));
        }
        match entry.kind {
            Kind::TaskStart => writes.push((
                AREA.to_string(),
                running_key(&entry.record.task),
                Some(entry.seq.to_string().into_bytes()),
            )),
            Kind::TaskEnd => writes.push((AREA.to_string(), running_key(&entry.record.task), None)),
            _ => {}
        }
        if entry.seq == 1 {
            // A new log is indexed from its first entry on.
            for built in [TASK_INDEX_BUILT, RUNNING_INDEX_BUILT] {
                writes.push((AREA.to_string(), built.to_vec(), Some(b"1".to_vec())));
            }
        }
        Ok((entry, writes))
    }

    /// Append an entry to the buffer.
    fn buffer(&self, kind: Kind, record: Record) -> Result<Entry, StoreError> {
        let st = self.lock();
        let mut st = self.unsealing_done(st);
        self.seal_locked(&mut st)?;
        let head = self.head(&mut st)?;
        let (entry, writes) = self.next_entry(&head, kind, record, Utc::now())?;
        st.numbered = entry.seq;
        st.pending.extend(writes);
        if checkpoint_due(&entry) {
            st.pending_due.push(entry.clone());
        }
        st.head = Some(Head {
            seq: entry.seq,
            hash: entry.hash.clone(),
        });
        self.last_seq
            .fetch_max(entry.seq, std::sync::atomic::Ordering::AcqRel);
        let full = st.pending.len() >= MAX_BUFFERED_WRITES;
        drop(st);
        if full {
            self.write_pending()?;
        }
        Ok(entry)
    }

    /// Write entries (each with its `writes`) to the store in one write,
    /// after any buffered ones, in order, not waiting for them to be
    /// durable. `None` when `guard` did not hold (nothing of theirs was
    /// written).
    ///
    /// Chain writes are made one at a time (the writer lock). Without a
    /// guard of the caller's, the chain is not held while the store
    /// writes: appends go on, after these entries. With one, it is held
    /// (whether these entries exist is only known once the guard is
    /// checked).
    fn apply(
        &self,
        items: Vec<(Kind, Record, Vec<AreaWrite>)>,
        guard: Option<&Guard>,
    ) -> Result<Option<Vec<Entry>>, StoreError> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        // Most entries appended behind are hashed here, with appends going on.
        self.seal_behind()?;
        let mut st = self.lock();
        if items.is_empty() && st.pending.is_empty() && st.unsealed.is_empty() {
            return Ok(Some(Vec::new()));
        }
        if let Some(guard) = guard {
            // A guard that fails must not take the buffered entries with it.
            if !st.pending.is_empty() || !st.unsealed.is_empty() {
                self.write_held(&mut st, Vec::new(), None)?;
            }
            return self.write_held(&mut st, items, Some(guard));
        }
        let mut next = self.prepare(&mut st, items)?;
        // Appends go on after these entries while the store writes.
        st.numbered = next.head.seq;
        st.head = Some(next.head.clone());
        let head_guard = Self::head_unchanged(&st);
        drop(st);
        let applied = self.store.write_across_when(
            Some(&head_guard),
            std::mem::take(&mut next.writes),
            Durability::Soon,
        );
        let (buffered, head_bytes) = (next.buffered, next.head_bytes.clone());
        // Signed outside the chain's state lock (appends go on), under the
        // writer lock, so checkpoints are in log order.
        let entries = matches!(applied, Ok(true)).then(|| self.written(next));
        let mut st = self.lock();
        match applied {
            Ok(true) => {
                st.stored = Some(head_bytes);
                Ok(entries)
            }
            Ok(false) => Err(self.forked(&mut st, buffered)),
            Err(e) => Err(self.lost(&mut st, e, buffered)),
        }
    }

    /// Write the buffered entries and `items`, holding the chain until the
    /// store has answered (`guard`, or else the head, decides the write).
    fn write_held(
        &self,
        st: &mut ChainState,
        items: Vec<(Kind, Record, Vec<AreaWrite>)>,
        guard: Option<&Guard>,
    ) -> Result<Option<Vec<Entry>>, StoreError> {
        // The caller's guard decides its write, so the head is checked here.
        if guard.is_some() {
            self.head(st)?;
            if self.store.get(AREA, HEAD_KEY)? != st.stored {
                return Err(self.forked(st, 0));
            }
        }
        let head_guard = Self::head_unchanged(st);
        let mut next = self.prepare(st, items)?;
        match self.store.write_across_when(
            Some(guard.unwrap_or(&head_guard)),
            std::mem::take(&mut next.writes),
            Durability::Soon,
        ) {
            Ok(true) => {
                st.numbered = next.head.seq;
                st.head = Some(next.head.clone());
                st.stored = Some(next.head_bytes.clone());
                Ok(Some(self.written(next)))
            }
            Ok(false) if guard.is_none() => Err(self.forked(st, next.buffered)),
            Ok(false) => Ok(None),
            Err(e) => Err(self.lost(st, e, next.buffered)),
        }
    }

    /// Number and hash `items` after the buffered entries, and take those:
    /// one write of them all and the new head.
    fn prepare(
        &self,
        st: &mut ChainState,
        items: Vec<(Kind, Record, Vec<AreaWrite>)>,
    ) -> Result<Prepared, StoreError> {
        // Those appended behind since this writer hashed the rest.
        self.seal_locked(st)?;
        let mut head = self.head(st)?;
        let mut writes = std::mem::take(&mut st.pending);
        let buffered = writes.len();
        let mut due = std::mem::take(&mut st.pending_due);
        let mut entries = Vec::with_capacity(items.len());
        for (kind, record, item_writes) in items {
            let (entry, entry_writes) = self.next_entry(&head, kind, record, Utc::now())?;
            head = Head {
                seq: entry.seq,
                hash: entry.hash.clone(),
            };
            writes.extend(item_writes);
            writes.extend(entry_writes);
            if checkpoint_due(&entry) {
                due.push(entry.clone());
            }
            entries.push(entry);
        }
        let mut writes = compact_index(writes);
        let head_bytes = crate::store::encode(&head)?;
        writes.push((
            AREA.to_string(),
            HEAD_KEY.to_vec(),
            Some(head_bytes.clone()),
        ));
        self.last_seq
            .fetch_max(head.seq, std::sync::atomic::Ordering::AcqRel);
        Ok(Prepared {
            writes,
            buffered,
            due,
            entries,
            head,
            head_bytes,
        })
    }
}

/// What [`Chain::prepare`] made ready to write.
struct Prepared {
    writes: Vec<AreaWrite>,
    /// How many of them were buffered (their appends already answered).
    buffered: usize,
    due: Vec<Entry>,
    entries: Vec<Entry>,
    head: Head,
    head_bytes: Vec<u8>,
}

impl crate::store::CommitHook for Chain {
    fn before_commit(&self) {
        // A failure is logged; the next append or read tries again.
        let _ = self.write_pending();
        // Checkpoint lines written since the last commit go to disk.
        if let Some(signer) = &self.signer
            && let Err(e) = signer.sync_file()
        {
            tracing::error!("cannot sync the checkpoint file: {e}");
        }
    }
}

/// One append waiting for its batch: its kind, record, other writes,
/// whether it must be durable before it is answered, and its thread (woken
/// alone when it is answered or is to lead).
struct Waiting {
    id: u64,
    item: (Kind, Record, Vec<AreaWrite>),
    when: Durability,
    thread: std::thread::Thread,
}

/// The appends of the next batch, and how the applied ones came out.
#[derive(Default)]
struct Batches {
    next_id: u64,
    waiting: Vec<Waiting>,
    /// An appender is gathering and applying a batch.
    leading: bool,
    /// The leader while it gathers (woken when enough appends joined).
    gathering: Option<std::thread::Thread>,
    /// How many appends the last batch took (the next leader waits a
    /// moment for as many).
    last_size: usize,
    done: std::collections::HashMap<u64, Result<Entry, String>>,
}

/// The longest a batch's leader waits for as many appends as the last
/// batch had (they are usually on their way: woken by that batch's end).
const GATHER: std::time::Duration = std::time::Duration::from_micros(100);

/// Entries due a checkpoint, signed in order once they are durable.
struct Signer {
    checkpointing: Checkpointing,
    /// Due entries not yet signed, oldest first (where the store does not
    /// commit in the background; elsewhere a checkpoint is signed with the
    /// write of the entries it covers).
    unsigned: Mutex<std::collections::VecDeque<Entry>>,
    /// Checkpoints signed with the writes of their entries, to be copied to
    /// the checkpoint file once those are durable.
    copies: Mutex<Copies>,
}

#[derive(Default)]
struct Copies {
    /// Each with the store's commit mark after the write that holds it.
    waiting: std::collections::VecDeque<(u64, Checkpoint, Entry)>,
    /// Copied since the file was last synced.
    unsynced: bool,
}

impl Signer {
    fn copies(&self) -> std::sync::MutexGuard<'_, Copies> {
        self.copies.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A checkpoint over `entry` (written to the store with it).
    fn sign(&self, entry: &Entry) -> Checkpoint {
        self.checkpointing
            .keys
            .checkpoint(&entry.org, entry.seq, &entry.hash, Utc::now())
    }

    /// Copy the checkpoints signed over writes made before commit mark
    /// `mark` (durable now) to the checkpoint file, in order, and publish
    /// them. The file is synced at the next commit, not here: a process
    /// killed meanwhile loses nothing (the line is in the page cache); a
    /// power cut can lose the line, which `audit verify` then reports.
    fn copy_durable(&self, mark: u64) {
        let mut published = Vec::new();
        {
            let mut c = self.copies();
            while let Some((m, cp, entry)) = c.waiting.pop_front() {
                if m > mark {
                    c.waiting.push_front((m, cp, entry));
                    break;
                }
                if let Err(e) = crate::keys::write_checkpoint(&self.checkpointing.file, &cp) {
                    // Tried again with the next copy; `audit verify` names
                    // the entries it leaves uncovered meanwhile.
                    tracing::error!(
                        seq = cp.seq,
                        "could not write the audit checkpoint to {}: {e}",
                        self.checkpointing.file.display()
                    );
                    c.waiting.push_front((m, cp, entry));
                    break;
                }
                c.unsynced = true;
                published.push((cp, entry));
            }
        }
        if let Some(publish) = &self.checkpointing.publish {
            for (cp, entry) in &published {
                publish(cp, entry);
            }
        }
    }

    /// Put the copies made so far on disk.
    fn sync_file(&self) -> std::io::Result<()> {
        let mut c = self.copies();
        if c.unsynced {
            std::fs::OpenOptions::new()
                .append(true)
                .open(&self.checkpointing.file)?
                .sync_data()?;
            c.unsynced = false;
        }
        Ok(())
    }

    /// Sign a checkpoint over the due entries up to `seq` (all durable).
    /// One checkpoint over the newest of them covers the others: its head
    /// hash anchors every entry before it. So task ends made durable
    /// together cost one signature and one `fsync`, not one each.
    fn sign_through(&self, seq: u64) {
        let mut unsigned = self.unsigned.lock().unwrap_or_else(|p| p.into_inner());
        let mut newest = None;
        while unsigned.front().is_some_and(|e| e.seq <= seq) {
            newest = unsigned.pop_front();
        }
        let Some(entry) = newest else {
            return;
        };
        let c = &self.checkpointing;
        let checkpoint = self.sign(&entry);
        match crate::keys::append_checkpoint(&c.file, &checkpoint) {
            Ok(()) => {
                if let Some(publish) = &c.publish {
                    publish(&checkpoint, &entry);
                }
            }
            // The entry stands; `audit verify` will name the missing checkpoint.
            Err(e) => tracing::error!(
                seq = entry.seq,
                "could not write the audit checkpoint to {}: {e}",
                c.file.display()
            ),
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        // Durable, with the checkpoint file synced.
        let closed = self.settle().and_then(|()| match &self.chain.signer {
            Some(signer) => signer
                .sync_file()
                .map_err(|e| StoreError::Io(format!("cannot sync the checkpoint file: {e}"))),
            None => Ok(()),
        });
        if let Err(e) = closed {
            tracing::error!(org = %self.store.org(), "could not make the last audit entries durable: {e}");
        }
    }
}

/// How many calls reached a provider, were refused, or waited for a human,
/// since the process started (for `/metrics`).
#[derive(Default)]
struct Counts {
    calls: std::sync::atomic::AtomicU64,
    refusals: std::sync::atomic::AtomicU64,
    queued: std::sync::atomic::AtomicU64,
}

/// What [`AuditLog::counts`] reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallCounts {
    /// Calls that reached a provider (a `result` entry each).
    pub calls: u64,
    /// Calls refused before any provider (a `refusal` entry each).
    pub refusals: u64,
    /// Calls stored for a human to decide.
    pub queued: u64,
}

impl AuditLog {
    /// The log of `store`'s organisation, without checkpoints.
    pub fn new(store: OrgStore) -> AuditLog {
        AuditLog::with_signer(store, None)
    }

    fn with_signer(store: OrgStore, signer: Option<std::sync::Arc<Signer>>) -> AuditLog {
        let chain = std::sync::Arc::new(Chain {
            buffering: store.commits_in_background(),
            store: store.clone(),
            signer,
            writer: Mutex::new(()),
            state: Mutex::new(ChainState::default()),
            sealed: std::sync::Condvar::new(),
            last_seq: std::sync::atomic::AtomicU64::new(0),
        });
        if chain.buffering {
            let hook: std::sync::Arc<dyn crate::store::CommitHook> = chain.clone();
            store.before_commit(std::sync::Arc::downgrade(&hook));
        }
        AuditLog {
            store,
            chain,
            batches: Mutex::new(Batches::default()),
            counts: Counts::default(),
        }
    }

    /// The log of `store`'s organisation, signing checkpoints that cover
    /// every task end and every [`CHECKPOINT_EVERY`]th entry once durable.
    pub fn with_checkpoints(store: OrgStore, checkpointing: Checkpointing) -> AuditLog {
        let signer = std::sync::Arc::new(Signer {
            checkpointing,
            unsigned: Mutex::new(std::collections::VecDeque::new()),
            copies: Mutex::new(Copies::default()),
        });
        AuditLog::with_signer(store, Some(signer))
    }

    /// The checkpoint file, if this log signs checkpoints.
    pub fn checkpoint_file(&self) -> Option<&std::path::Path> {
        self.chain
            .signer
            .as_ref()
            .map(|s| s.checkpointing.file.as_path())
    }

    /// Make every entry appended so far durable and sign the checkpoints
    /// due over them (what a caller does before it acknowledges a task, or
    /// reads the checkpoint file). An error if any entry appended since the
    /// last settle was lost (a failed store write, or another writer of the
    /// same log), whichever write found out.
    pub fn settle(&self) -> Result<(), StoreError> {
        let appended = self
            .chain
            .last_seq
            .load(std::sync::atomic::Ordering::Acquire);
        let written = self.chain.write_pending();
        let mark = self.store.commit_mark();
        // Entries dropped since the last settle (by this write or another,
        // such as the committer's) are reported once, here.
        let failed = self.chain.lock().failed.take();
        written?;
        if let Some(why) = failed {
            return Err(StoreError::Io(why));
        }
        self.store.sync_through(mark)?;
        if let Some(signer) = &self.chain.signer {
            // Checkpoints signed with the writes of their entries are copied
            // to the file; those due over entries written by a store that
            // does not commit in the background are signed now.
            signer.copy_durable(mark);
            signer.sign_through(appended);
        }
        Ok(())
    }

    /// The organisation this log belongs to.
    pub fn org(&self) -> &str {
        self.store.org()
    }

    fn entry_key(seq: u64) -> Vec<u8> {
        let mut k = ENTRY_PREFIX.to_vec();
        k.extend_from_slice(&seq.to_be_bytes());
        k
    }

    /// Append a record; returns the entry as stored. It is durable on
    /// return if its kind must be ([`durable_at_once`]), else with the next
    /// group commit.
    pub fn append(&self, kind: Kind, record: Record) -> Result<Entry, AuditError> {
        let when = if durable_at_once(kind) {
            Durability::Now
        } else {
            Durability::Soon
        };
        self.append_when(kind, record, when)
    }

    /// Append a record that need not be durable at once (a read's intent
    /// or result, a refusal, a task's start or end); returns its number.
    /// It is numbered now and hashed and written behind, with the next
    /// group commit (or the next read or durable append, whichever comes
    /// first), so the caller does not wait for its JSON or its hash. A
    /// failure to write it is reported by the next [`AuditLog::settle`].
    pub fn append_behind(&self, kind: Kind, record: Record) -> Result<u64, AuditError> {
        if !self.chain.buffering {
            return Ok(self.append_when(kind, record, Durability::Soon)?.seq);
        }
        let seq = self.chain.push(kind, record)?;
        self.count(kind);
        Ok(seq)
    }

    fn count(&self, kind: Kind) {
        let counter = match kind {
            Kind::Result => Some(&self.counts.calls),
            Kind::Refusal => Some(&self.counts.refusals),
            Kind::Queued => Some(&self.counts.queued),
            _ => None,
        };
        if let Some(c) = counter {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Append a record, durable as `when` says (a read's intent need not
    /// be on disk before the read: nothing outside changes).
    pub fn append_when(
        &self,
        kind: Kind,
        record: Record,
        when: Durability,
    ) -> Result<Entry, AuditError> {
        self.append_with_when(kind, record, None, Vec::new(), when)?
            .ok_or_else(|| AuditError(StoreError::Io("the audit append was not applied".into())))
    }

    /// Append a record together with `writes` to other areas, in one store
    /// transaction, only if `guard` holds: the state change and the entry
    /// that records it are written both or neither. `None` when the guard
    /// did not hold (nothing was written).
    /// Both are durable on return.
    pub fn append_with(
        &self,
        kind: Kind,
        record: Record,
        guard: Option<&Guard>,
        writes: Vec<AreaWrite>,
    ) -> Result<Option<Entry>, AuditError> {
        self.append_with_when(kind, record, guard, writes, Durability::Now)
    }

    /// [`AuditLog::append_with`], durable as `when` says (a decision that
    /// is followed at once by a durable write, the intent of the action it
    /// approves, can ride on that write's flush: the log is written in order).
    pub fn append_with_when(
        &self,
        kind: Kind,
        record: Record,
        guard: Option<&Guard>,
        writes: Vec<AreaWrite>,
        when: Durability,
    ) -> Result<Option<Entry>, AuditError> {
        let entry = match guard {
            // A guarded append is applied alone: its guard decides it.
            Some(guard) => match self
                .chain
                .apply(vec![(kind, record, writes)], Some(guard))?
            {
                Some(mut entries) => entries.pop(),
                None => None,
            },
            None if when == Durability::Soon && writes.is_empty() && self.chain.buffering => {
                Some(self.chain.buffer(kind, record)?)
            }
            // Made durable by the batch, if it must be.
            None => Some(self.apply_batched(kind, record, writes, when)?),
        };
        let Some(entry) = entry else {
            return Ok(None);
        };
        if when == Durability::Now && guard.is_some() {
            // Waits for the next flush, shared with every other appender
            // (and writer) waiting now.
            self.store.sync()?;
        }
        self.count(entry.kind);
        Ok(Some(entry))
    }

    /// Apply one entry in a batch with the others arriving now, and answer
    /// once it is durable if `when` says so. The first appender to find no
    /// batch being gathered leads one: it waits a moment for as many
    /// appends as the last batch had, applies them all in one store write,
    /// hands the lead on, waits for one flush covering them, and answers
    /// them. Each appender sleeps about once, and the next batch is
    /// applied while this one's flush is under way.
    fn apply_batched(
        &self,
        kind: Kind,
        record: Record,
        writes: Vec<AreaWrite>,
        when: Durability,
    ) -> Result<Entry, AuditError> {
        let lock = || self.batches.lock().unwrap_or_else(|p| p.into_inner());
        let mut q = lock();
        let id = q.next_id;
        q.next_id += 1;
        q.waiting.push(Waiting {
            id,
            item: (kind, record, writes),
            when,
            thread: std::thread::current(),
        });
        if q.waiting.len() >= q.last_size
            && let Some(leader) = &q.gathering
        {
            leader.unpark();
        }
        loop {
            if let Some(done) = q.done.remove(&id) {
                return done.map_err(|e| AuditError(StoreError::Io(e)));
            }
            // Waiting for a batch being gathered, applied or made durable:
            // whoever leads wakes this thread when it is answered, or when
            // it is the first left waiting and may lead.
            if q.leading || !q.waiting.iter().any(|w| w.id == id) {
                drop(q);
                std::thread::park();
                q = lock();
                continue;
            }
            q.leading = true;
            q.gathering = Some(std::thread::current());
            let deadline = std::time::Instant::now() + GATHER;
            while q.waiting.len() < q.last_size {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                drop(q);
                std::thread::park_timeout(left);
                q = lock();
            }
            q.gathering = None;
            let batch = std::mem::take(&mut q.waiting);
            q.last_size = batch.len();
            drop(q);
            let durable = batch.iter().any(|w| w.when == Durability::Now);
            let mut ids = Vec::with_capacity(batch.len());
            let mut threads = Vec::with_capacity(batch.len());
            let mut items = Vec::with_capacity(batch.len());
            for w in batch {
                ids.push(w.id);
                threads.push(w.thread);
                items.push(w.item);
            }
            let applied = self.chain.apply(items, None);
            // The next batch may be gathered and applied while this one waits
            // for its flush (a flush covers what was applied before it began).
            q = lock();
            q.leading = false;
            if let Some(next) = q.waiting.first() {
                next.thread.unpark();
            }
            drop(q);
            let answers: Vec<Result<Entry, String>> = match applied {
                Ok(Some(entries)) => {
                    let synced = if durable {
                        self.store.sync().map_err(|e| e.to_string())
                    } else {
                        Ok(())
                    };
                    entries
                        .into_iter()
                        .map(|entry| synced.clone().map(|()| entry))
                        .collect()
                }
                Ok(None) => ids
                    .iter()
                    .map(|_| Err("the audit append was not applied".to_string()))
                    .collect(),
                Err(e) => ids.iter().map(|_| Err(e.to_string())).collect(),
            };
            q = lock();
            for (id, answer) in ids.into_iter().zip(answers) {
                q.done.insert(id, answer);
            }
            drop(q);
            for thread in threads {
                if thread.id() != std::thread::current().id() {
                    thread.unpark();
                }
            }
            q = lock();
        }
    }

    /// Calls, refusals and queued calls this process recorded.
    pub fn counts(&self) -> CallCounts {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        CallCounts {
            calls: load(&self.counts.calls),
            refusals: load(&self.counts.refusals),
            queued: load(&self.counts.queued),
        }
    }

    /// How many entries the log has (its head's number).
    pub fn len(&self) -> Result<u64, StoreError> {
        self.chain.write_pending()?;
        Ok(self
            .store
            .get_json::<Head>(AREA, HEAD_KEY)?
            .map_or(0, |h| h.seq))
    }

    /// Whether the log has no entries.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }

    /// The entry numbered `seq`, if the log has it.
    pub fn entry(&self, seq: u64) -> Result<Option<Entry>, StoreError> {
        self.chain.write_pending()?;
        self.store.get_json(AREA, &Self::entry_key(seq))
    }

    /// All entries in order.
    pub fn entries(&self) -> Result<Vec<Entry>, StoreError> {
        self.chain.write_pending()?;
        self.store.scan_json(AREA, ENTRY_PREFIX)
    }

    /// At most `limit` entries after entry `after`, in order (a page).
    pub fn entries_after(&self, after: u64, limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.chain.write_pending()?;
        let from = Self::entry_key(after);
        self.store
            .scan_page(AREA, ENTRY_PREFIX, Some(&from), limit)?
            .into_iter()
            .map(|(_, v)| crate::store::decode(AREA, &v))
            .collect()
    }

    /// Every entry up to the last one now (not those appended meanwhile),
    /// oldest first, given to `each` a page at a time: the log in bounded
    /// memory. Stops at the first error `each` returns.
    pub fn for_each_page<E: From<StoreError>>(
        &self,
        mut each: impl FnMut(&[Entry]) -> Result<(), E>,
    ) -> Result<(), E> {
        let last = self.len()?;
        let mut after = 0;
        while after < last {
            let mut page = self.entries_after(after, VERIFY_PAGE)?;
            let Some(end) = page.last().map(|e| e.seq) else {
                break;
            };
            page.retain(|e| e.seq <= last);
            each(&page)?;
            after = end;
        }
        Ok(())
    }

    /// The ids of the tasks whose id starts with `prefix` (through the task
    /// index: the log is not read).
    pub fn tasks_starting_with(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.build_task_index()?;
        let mut ids = std::collections::BTreeSet::new();
        for (key, _) in self
            .store
            .scan(AREA, format!("{TASK_PREFIX}{prefix}").as_bytes())?
        {
            let key = String::from_utf8_lossy(&key[TASK_PREFIX.len()..]).into_owned();
            if let Some((task, _)) = key.rsplit_once('/')
                && task.starts_with(prefix)
            {
                ids.insert(task.to_string());
            }
        }
        Ok(ids.into_iter().collect())
    }

    /// The entries of task `task`, in order (through the task index: only
    /// the task's own entries are read).
    pub fn task_entries(&self, task: &str) -> Result<Vec<Entry>, StoreError> {
        self.build_task_index()?;
        let mut out = Vec::new();
        for (key, value) in self
            .store
            .scan(AREA, format!("{TASK_PREFIX}{task}/").as_bytes())?
        {
            for seq in indexed_seqs(&key, &value) {
                // An index key is only a pointer: the entry itself must say so.
                if let Some(e) = self.entry(seq)?
                    && e.record.task == task
                {
                    out.push(e);
                }
            }
        }
        Ok(out)
    }

    /// The entries of every task whose id starts with `prefix`, in log
    /// order (through the task index).
    pub fn entries_of_tasks(&self, prefix: &str) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        for task in self.tasks_starting_with(prefix)? {
            out.extend(self.task_entries(&task)?);
        }
        out.sort_by_key(|e| e.seq);
        Ok(out)
    }

    /// The start entries of the tasks that started and never ended, in
    /// log order (through the index of running tasks: the log is read
    /// once, the first time, for a log written before the index existed).
    pub fn unended_tasks(&self) -> Result<Vec<Entry>, StoreError> {
        self.build_running_index()?;
        let mut starts = Vec::new();
        for (key, value) in self.store.scan(AREA, RUNNING_PREFIX.as_bytes())? {
            let task = String::from_utf8_lossy(&key[RUNNING_PREFIX.len()..]).into_owned();
            let seq = std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
            // An index key is only a pointer: the entry itself must say so.
            if let Some(e) = seq.map(|seq| self.entry(seq)).transpose()?.flatten()
                && e.kind == Kind::TaskStart
                && e.record.task == task
            {
                starts.push(e);
            }
        }
        starts.sort_by_key(|e| e.seq);
        Ok(starts)
    }

    /// Index the running tasks of a log written before that index existed
    /// (once, a page of the log at a time).
    fn build_running_index(&self) -> Result<(), StoreError> {
        self.chain.write_pending()?;
        self.store.index_once(AREA, RUNNING_INDEX_BUILT, || {
            let mut running = std::collections::BTreeMap::new();
            self.for_each_page(|page| {
                for e in page {
                    match e.kind {
                        Kind::TaskStart => {
                            running.insert(e.record.task.clone(), e.seq);
                        }
                        Kind::TaskEnd => {
                            running.remove(&e.record.task);
                        }
                        _ => {}
                    }
                }
                Ok::<(), StoreError>(())
            })?;
            Ok(running
                .into_iter()
                .map(|(task, seq)| (running_key(&task), Some(seq.to_string().into_bytes())))
                .collect())
        })
    }

    /// Index the entries of a log written before the task index existed
    /// (once; every append since writes its own key).
    fn build_task_index(&self) -> Result<(), StoreError> {
        self.chain.write_pending()?;
        if self.store.get(AREA, TASK_INDEX_BUILT)?.is_some() {
            return Ok(());
        }
        let mut writes: Vec<crate::store::Write> = Vec::new();
        for (key, value) in self.store.scan(AREA, ENTRY_PREFIX)? {
            let Ok(entry) = serde_json::from_slice::<Entry>(&value) else {
                continue;
            };
            if key == Self::entry_key(entry.seq) && !entry.record.task.is_empty() {
                writes.push((task_key(&entry.record.task, entry.seq), Some(b"1".to_vec())));
            }
            if writes.len() >= 1000 {
                self.store.write(AREA, std::mem::take(&mut writes))?;
            }
        }
        writes.push((TASK_INDEX_BUILT.to_vec(), Some(b"1".to_vec())));
        self.store.write(AREA, writes)
    }

    /// Recompute the chain and check it against the stored head, a head
    /// hash recorded earlier outside this store (`expected_head`: catches
    /// truncation together with a rewritten head) and the signed
    /// checkpoints in `anchors` (catches a log rewritten with every hash
    /// recomputed).
    pub fn verify(
        &self,
        expected_head: Option<&str>,
        anchors: Option<&Anchors>,
    ) -> Result<Verification, StoreError> {
        self.chain.write_pending()?;
        // Read a page at a time: memory stays bounded however long the log.
        let failed = std::cell::RefCell::new(None);
        let mut after: Option<Vec<u8>> = None;
        let mut page = std::collections::VecDeque::new();
        let mut done = false;
        let entries = std::iter::from_fn(|| {
            if page.is_empty() && !done {
                match self
                    .store
                    .scan_page(AREA, ENTRY_PREFIX, after.as_deref(), VERIFY_PAGE)
                {
                    Ok(next) => {
                        done = next.len() < VERIFY_PAGE;
                        if let Some((k, _)) = next.last() {
                            after = Some(k.clone());
                        }
                        page.extend(next);
                    }
                    Err(e) => {
                        done = true;
                        *failed.borrow_mut() = Some(e);
                    }
                }
            }
            page.pop_front()
        });
        let items = entries.map(|(key, value)| {
            let key_seq = key
                .get(ENTRY_PREFIX.len()..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes);
            (
                Some(key_seq),
                serde_json::from_slice::<Entry>(&value).map_err(|e| e.to_string()),
            )
        });
        let head = Some(self.store.get_json::<Head>(AREA, HEAD_KEY)?);
        let verification = verify_chain(self.store.org(), items, head, expected_head, anchors);
        match failed.into_inner() {
            Some(e) => Err(e),
            None => Ok(verification),
        }
    }
}

/// Verify a chain of entries of `org`, read from the store or an export.
///
/// `items` are the entries in stored order, each with the sequence number
/// its storage key says (`Some(None)`: a key that names none; `None`: not
/// from a store). `head` is the stored head record (`None`: not from a
/// store, `Some(None)`: missing).
pub fn verify_chain(
    org: &str,
    items: impl IntoIterator<Item = (Option<Option<u64>>, Result<Entry, String>)>,
    head: Option<Option<Head>>,
    expected_head: Option<&str>,
    anchors: Option<&Anchors>,
) -> Verification {
    let mut problems = Vec::new();
    let mut prev_hash = GENESIS.to_string();
    let mut expected_seq = 1u64;
    let mut count = 0u64;
    // Only the hashes a checkpoint names are kept (memory stays bounded by
    // the checkpoints, not the log).
    let wanted: std::collections::BTreeSet<u64> = anchors
        .map(|a| {
            a.checkpoints
                .iter()
                .filter(|c| c.org == org)
                .map(|c| c.seq)
                .collect()
        })
        .unwrap_or_default();
    let mut hashes = std::collections::BTreeMap::new();
    let mut saw_expected = false;
    let mut due = Vec::new();
    for (key_seq, entry) in items {
        count += 1;
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                problems.push(format!(
                    "entry at position {count} is unreadable ({e}): edited"
                ));
                expected_seq += 1;
                prev_hash = String::new();
                continue;
            }
        };
        if let Some(key_seq) = key_seq
            && key_seq != Some(entry.seq)
        {
            problems.push(format!(
                "entry #{} is stored at the place of another entry: moved or reordered",
                entry.seq
            ));
        }
        if entry.seq != expected_seq {
            if entry.seq > expected_seq {
                problems.push(format!(
                    "entries #{expected_seq}..#{} are missing: deleted",
                    entry.seq - 1
                ));
            } else {
                problems.push(format!(
                    "entry #{} appears after #{}: reordered",
                    entry.seq,
                    expected_seq.saturating_sub(1)
                ));
            }
        }
        if entry.compute_hash() != entry.hash {
            problems.push(format!(
                "entry #{} does not match its hash: edited",
                entry.seq
            ));
        }
        if !prev_hash.is_empty() && entry.prev != prev_hash {
            problems.push(format!(
                "entry #{} does not follow the entry before it: chain broken",
                entry.seq
            ));
        }
        if entry.org != org {
            problems.push(format!(
                "entry #{} belongs to org {:?}: moved between orgs",
                entry.seq, entry.org
            ));
        }
        if checkpoint_due(&entry) {
            due.push(entry.seq);
        }
        expected_seq = entry.seq.saturating_add(1);
        if wanted.contains(&entry.seq) {
            hashes.insert(entry.seq, entry.hash.clone());
        }
        saw_expected |= expected_head == Some(entry.hash.as_str());
        prev_hash = entry.hash;
    }
    let last_seq = expected_seq - 1;
    let head_hash = if count == 0 {
        GENESIS.to_string()
    } else {
        prev_hash.clone()
    };
    match head {
        Some(Some(head)) => {
            if head.seq > last_seq {
                problems.push(format!(
                    "the log ends at #{last_seq} but its head says #{}: entries after #{last_seq} were truncated",
                    head.seq
                ));
            } else if head.seq < last_seq || head.hash != head_hash {
                problems.push(format!(
                    "the head (#{}) does not match the last entry (#{last_seq}): edited",
                    head.seq
                ));
            }
        }
        Some(None) if count > 0 => {
            problems.push("the head record is missing: edited".to_string());
        }
        Some(None) | None => {}
    }
    if let Some(expected) = expected_head {
        // Entries appended since the head was recorded are fine; a head
        // that is no longer in the chain means it was cut or rewritten.
        if expected != head_hash && !saw_expected {
            problems.push(format!(
                "the expected head {} is not in the log: truncated or rewritten",
                short(expected)
            ));
        }
    }
    let (checkpoints, unsigned_tail) = match anchors {
        Some(anchors) => check_anchors(org, anchors, &hashes, &due, last_seq, &mut problems),
        None => (0, count),
    };
    Verification {
        entries: count,
        head: head_hash,
        checkpoints,
        unsigned_tail,
        problems,
    }
}

/// Check the log's hashes against every signed checkpoint of `org`.
/// Returns how many matched and how many entries follow the last one.
fn check_anchors(
    org: &str,
    anchors: &Anchors,
    hashes: &std::collections::BTreeMap<u64, String>,
    due: &[u64],
    last_seq: u64,
    problems: &mut Vec<String>,
) -> (u64, u64) {
    problems.extend(anchors.problems.iter().cloned());
    let mut signed = std::collections::BTreeMap::new();
    for cp in anchors.checkpoints.iter().filter(|c| c.org == org) {
        if cp.signed_by(&anchors.public) {
            signed.insert(cp.seq, cp.head.as_str());
        } else {
            problems.push(format!(
                "the checkpoint of #{} ({}) is not signed by key {}: forged",
                cp.seq,
                cp.time.to_rfc3339_opts(SecondsFormat::Secs, true),
                short(&hex::encode(anchors.public.as_bytes()))
            ));
        }
    }
    let mut matched = 0u64;
    let mut last_good = 0u64;
    let mut diverged = false;
    for (&seq, &head) in &signed {
        match hashes.get(&seq) {
            Some(hash) if hash == head => {
                matched += 1;
                if !diverged {
                    last_good = seq;
                }
            }
            Some(_) if !diverged => {
                diverged = true;
                problems.push(format!(
                    "the log differs from the signed checkpoint of #{seq}: entries #{}..#{seq} were rewritten after they were signed (the first divergence; the checkpoint of #{last_good} still matches)",
                    last_good + 1
                ));
            }
            Some(_) => {}
            None if seq > last_seq => {
                problems.push(format!(
                    "the log ends at #{last_seq} but a checkpoint signed #{seq}: entries after #{last_seq} were truncated"
                ));
                break;
            }
            None => problems.push(format!(
                "entry #{seq} was signed at a checkpoint but is gone: deleted"
            )),
        }
    }
    // A checkpoint covers every entry up to its own (its head anchors
    // them): a due entry after the last one has none.
    let last_signed = signed.keys().next_back().copied().unwrap_or(0);
    let missing: Vec<String> = due
        .iter()
        .filter(|seq| **seq > last_signed)
        .map(|seq| format!("#{seq}"))
        .collect();
    if !missing.is_empty() {
        let shown = missing
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        problems.push(format!(
            "{} entr{} that must have a signed checkpoint ha{} none ({shown}{}): the checkpoint file was cut or replaced, or the entries were forged",
            missing.len(),
            if missing.len() == 1 { "y" } else { "ies" },
            if missing.len() == 1 { "s" } else { "ve" },
            if missing.len() > 5 { ", …" } else { "" }
        ));
    }
    (matched, last_seq.saturating_sub(last_signed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KINDS: [Kind; 11] = [
        Kind::TaskStart,
        Kind::TaskEnd,
        Kind::Note,
        Kind::Intent,
        Kind::Result,
        Kind::Refusal,
        Kind::Queued,
        Kind::Decision,
        Kind::Reaction,
        Kind::Change,
        Kind::Note,
    ];

    /// One write of two tasks: one that starts and ends in it, one that
    /// only starts; an entry of another area rides along.
    #[test]
    fn a_write_indexes_each_task_under_one_key_and_drops_a_start_ended_in_it() {
        let area =
            |k: &[u8], v: Option<&[u8]>| (AREA.to_string(), k.to_vec(), v.map(<[u8]>::to_vec));
        let mut writes = Vec::new();
        for (seq, task) in [(5, "a"), (6, "b"), (7, "a"), (8, "a")] {
            writes.push(area(&AuditLog::entry_key(seq), Some(b"{}")));
            writes.push(area(&task_key(task, seq), Some(b"1")));
        }
        writes.push(area(&running_key("a"), Some(b"5")));
        writes.push(area(&running_key("b"), Some(b"6")));
        writes.push(area(&running_key("a"), None));
        writes.push((
            "approvals".to_string(),
            b"a/x".to_vec(),
            Some(b"v".to_vec()),
        ));
        let out = compact_index(writes);
        let find = |key: &[u8]| {
            out.iter()
                .find(|(_, k, _)| k == key)
                .map(|(_, _, v)| v.clone())
        };
        // Task a: one key, at its first entry, naming all three.
        let a = find(&task_key("a", 5)).flatten().unwrap_or_default();
        assert_eq!(indexed_seqs(&task_key("a", 5), &a), vec![5, 7, 8]);
        assert_eq!(find(&task_key("a", 7)), None);
        // Task b: one entry, the plain form.
        let b = find(&task_key("b", 6)).flatten().unwrap_or_default();
        assert_eq!(b, b"1");
        assert_eq!(indexed_seqs(&task_key("b", 6), &b), vec![6]);
        // a started and ended here: no running key at all; b still runs.
        assert_eq!(find(&running_key("a")), None);
        assert_eq!(find(&running_key("b")), Some(Some(b"6".to_vec())));
        assert_eq!(find(b"a/x"), Some(Some(b"v".to_vec())));
        assert_eq!(
            out.iter()
                .filter(|(_, k, _)| k.starts_with(ENTRY_PREFIX))
                .count(),
            4
        );
        assert_eq!(out.len(), 4 + 2 + 1 + 1);
    }

    fn entry(seq: u64, prev: String, kind: Kind, reason: String, args: String) -> Entry {
        let mut e = Entry {
            seq,
            prev,
            time: Utc::now(),
            org: "acme".into(),
            kind,
            record: Record {
                employee: "e".into(),
                reason,
                args,
                ..Record::default()
            },
            hash: String::new(),
        };
        e.hash = e.compute_hash();
        e
    }

    /// With every optional field of the record set (and quotes, newlines
    /// and non-ASCII text in it), an entry sealed in one pass has the hash
    /// and the stored bytes of serde's two passes, and reads back equal.
    #[test]
    fn an_entry_sealed_in_one_pass_is_what_serde_writes_for_it() {
        use crate::integrations::Inverse;
        use crate::integrations::chat::ChatInverse;
        let record = Record {
            employee: "e\"1".into(),
            task: "t\n2".into(),
            interface: "chat".into(),
            scope: "channel:#général".into(),
            action: "post".into(),
            args: "text \"hi\"\u{7}".into(),
            reason: "because\r\n".into(),
            decision: Some(Decision::Allowed),
            result: "done: c-1".into(),
            intent: Some(7),
            inverse: Some(Inverse::Chat(ChatInverse::DeleteChatMessage {
                id: "c-1".into(),
                after: "abc".into(),
            })),
            approval: Some("a-1".into()),
            undoes: Some(3),
            outcome: Some(Outcome::Done),
        };
        for record in [record, Record::default()] {
            let (entry, stored) = Entry::sealed(
                8,
                "f".repeat(64),
                Utc::now(),
                "acme".into(),
                Kind::Result,
                record,
            )
            .expect("sealed");
            assert_eq!(entry.hash, entry.compute_hash());
            assert_eq!(stored, crate::store::encode(&entry).expect("encoded"));
            let read: Entry = serde_json::from_slice(&stored).expect("decoded");
            assert_eq!(read, entry);
        }
    }

    proptest! {
        /// Any bytes in the place of an entry: decoding refuses them or
        /// yields an entry, never a panic; verifying a chain of them names
        /// problems, never panics.
        #[test]
        fn any_stored_bytes_decode_or_are_refused_without_panicking(
            items in proptest::collection::vec(
                (proptest::option::of(any::<u64>()), proptest::collection::vec(any::<u8>(), 0..200)),
                0..8,
            ),
            expected in proptest::option::of("[0-9a-f]{0,64}"),
        ) {
            let items = items.into_iter().map(|(seq, bytes)| {
                (Some(seq), serde_json::from_slice::<Entry>(&bytes).map_err(|e| e.to_string()))
            });
            let v = verify_chain("acme", items, Some(None), expected.as_deref(), None);
            prop_assert!(v.entries <= 8);
        }

        /// An entry with any text in it survives storing and reading
        /// unchanged, hash included; a chain of them verifies intact, and
        /// any one changed field is caught.
        #[test]
        fn entries_round_trip_and_a_changed_field_is_caught(
            texts in proptest::collection::vec(("\\PC{0,60}", ".{0,60}", 0..KINDS.len()), 1..6),
            victim in any::<prop::sample::Index>(),
            replacement in "\\PC{1,20}",
        ) {
            let mut chain = Vec::new();
            let mut prev = GENESIS.to_string();
            for (i, (reason, args, kind)) in texts.into_iter().enumerate() {
                let e = entry(i as u64 + 1, prev, KINDS[kind], reason, args);
                prev = e.hash.clone();
                let bytes = crate::store::encode(&e).map_err(|e| TestCaseError::fail(e.to_string()))?;
                // Sealed in one pass: the same hash and the same bytes.
                let (sealed, stored) = Entry::sealed(e.seq, e.prev.clone(), e.time, e.org.clone(), e.kind, e.record.clone())
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&sealed.hash, &sealed.compute_hash());
                prop_assert_eq!(&stored, &crate::store::encode(&sealed).map_err(|e| TestCaseError::fail(e.to_string()))?);
                let read: Entry = serde_json::from_slice(&bytes)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&read, &e);
                prop_assert_eq!(read.compute_hash(), e.hash.clone());
                chain.push(read);
            }
            let items = |c: &[Entry]| {
                c.iter().map(|e| (Some(Some(e.seq)), Ok(e.clone()))).collect::<Vec<_>>()
            };
            let v = verify_chain("acme", items(&chain), None, None, None);
            prop_assert!(v.is_intact(), "{:?}", v.problems);
            let i = victim.index(chain.len());
            if chain[i].record.reason != replacement {
                chain[i].record.reason = replacement;
                let v = verify_chain("acme", items(&chain), None, None, None);
                prop_assert!(!v.is_intact());
            }
        }
    }
}
