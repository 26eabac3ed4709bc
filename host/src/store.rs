//! Durable storage: a small trait over the embedded default (sled).
//!
//! Everything the host keeps (audit log, sandbox workspace) goes through
//! [`Store`], so a distributed backend can replace sled later. Keys are
//! namespaced by organisation with [`OrgStore`]; code above this module never
//! builds a key that could reach another organisation's data.
//!
//! Writes are atomic per call. A write made with [`Durability::Now`] (every
//! `write`, `write_if` and `write_across`) is durable before it returns: a
//! caller that got `Ok` may act on it. One made with [`Durability::Soon`] is
//! applied and visible at once and becomes durable with the next group
//! commit (see [`SledStore`]).

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A storage failure. Callers fail closed on it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data dir could not be opened (missing, locked by another process, corrupt).
    #[error("cannot open the data store at {path}: {reason}")]
    Open {
        /// The store's directory.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A read or write failed.
    #[error("storage error: {0}")]
    Io(String),
    /// A stored record does not decode: the store was damaged or written
    /// by something else. Nothing is guessed from it.
    #[error("corrupt record in {area}: {reason}")]
    Corrupt {
        /// The area it was read from.
        area: String,
        /// What the decoder said.
        reason: String,
    },
    /// A record does not carry the host's seal: it was written or changed
    /// by something other than this host. It is not acted on.
    #[error(
        "a record in {area} ({key}) was changed outside clancy: its seal does not match this data dir's host key, so it is refused (a data dir written before records were sealed, or whose keys/ was replaced, cannot be used)"
    )]
    Tampered {
        /// The area it was read from.
        area: String,
        /// Its key, as text.
        key: String,
    },
    /// A value could not be encoded for storing (a host bug); nothing was written.
    #[error("cannot encode a record for storing: {0}")]
    Encode(String),
}

/// Encode a value for storing.
pub fn encode<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Encode(e.to_string()))
}

/// Decode a record read from `area`.
pub fn decode<T: serde::de::DeserializeOwned>(area: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        area: area.to_string(),
        reason: e.to_string(),
    })
}

/// One key's new value in an atomic write; `None` removes it.
pub type Write = (Vec<u8>, Option<Vec<u8>>);

/// A stored key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// One key's new value in a named area, for writes across areas.
pub type AreaWrite = (String, Vec<u8>, Option<Vec<u8>>);

/// The condition of a write across areas: `key` in `area` holds `expected`
/// (`None`: absent).
#[derive(Clone, Debug)]
pub struct Guard {
    /// The area of the key checked.
    pub area: String,
    /// The key checked.
    pub key: Vec<u8>,
    /// What it must hold.
    pub expected: Option<Vec<u8>>,
}

/// When a write must be durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Before the call returns (what must be on disk before a side effect
    /// or an acknowledgement: a write's intent, a decision, a queued request).
    Now,
    /// With the next group commit: at most [`COMMIT_INTERVAL`] later, or
    /// sooner when anything is written with [`Durability::Now`] or
    /// [`Store::sync`] is called. The log is written in order, so a crash
    /// loses at most the writes made after the last commit, never one
    /// without the writes made before it.
    Soon,
}

/// How many flushes may be under way at once.
const FLUSHES_AT_ONCE: usize = 2;

/// The stores this process has open, by path, until their committer thread
/// is done. The last user of a store may be work that thread runs (a hook
/// or a callback holding it); sled's file lock is released only once that
/// thread is done, so opening the store again waits for it.
static OPEN: Mutex<Vec<std::path::PathBuf>> = Mutex::new(Vec::new());
static CLOSED: Condvar = Condvar::new();

/// The longest an open waits for a store of this process to finish closing.
const CLOSING_WAIT: Duration = Duration::from_secs(10);

fn open_stores() -> std::sync::MutexGuard<'static, Vec<std::path::PathBuf>> {
    OPEN.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The store at `path` is closed (its committer thread is done).
fn closed(path: &Path) {
    let mut list = open_stores();
    if let Some(i) = list.iter().position(|p| p == path) {
        list.swap_remove(i);
    }
    CLOSED.notify_all();
}

/// Wait (a while) until no store of this process at `path` is open.
fn wait_until_closed(path: &Path) {
    let deadline = std::time::Instant::now() + CLOSING_WAIT;
    let mut list = open_stores();
    while list.iter().any(|p| p == path) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        list = CLOSED
            .wait_timeout(list, left)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0;
    }
}

/// The longest a [`Durability::Soon`] write waits for its group commit.
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(10);

/// What the group commit has done since the store was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Flushes to disk (each one makes every write applied before it durable).
    pub flushes: u64,
}

/// Told before each background group commit (to hand the store writes it
/// kept back, so the commit covers them).
pub trait CommitHook: Send + Sync {
    /// Write what was kept back.
    fn before_commit(&self);
}

/// Run once the writes applied before it was registered are durable.
pub type OnDurable = Box<dyn FnOnce() + Send>;

/// A key-value store of named areas.
pub trait Store: Send + Sync {
    /// The value at `key` in `area`.
    fn get(&self, area: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Apply all writes to `area` atomically and durably.
    fn write(&self, area: &str, writes: Vec<Write>) -> Result<(), StoreError>;
    /// All entries of `area` whose key starts with `prefix`, in key order.
    fn scan(&self, area: &str, prefix: &[u8]) -> Result<Vec<Entry>, StoreError>;
    /// At most `limit` entries of `area` whose key starts with `prefix`
    /// and comes after `after` (if given), in key order: a scan a page at a
    /// time, in bounded memory.
    fn scan_page(
        &self,
        area: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        Ok(self
            .scan(area, prefix)?
            .into_iter()
            .filter(|(k, _)| after.is_none_or(|a| k.as_slice() > a))
            .take(limit)
            .collect())
    }
    /// The names of the areas that hold (or held) anything.
    fn areas(&self) -> Result<Vec<String>, StoreError>;
    /// Apply `writes` atomically and durably only if `key` currently holds
    /// `expected` (`None`: absent). Returns whether they were applied; of two
    /// racing callers expecting the same value, exactly one wins.
    fn write_if(
        &self,
        area: &str,
        key: &[u8],
        expected: Option<&[u8]>,
        writes: Vec<Write>,
    ) -> Result<bool, StoreError>;
    /// Apply `writes`, in any areas, atomically and durably, only if
    /// `guard` (if any) holds. Returns whether they were applied. This is
    /// how a decision and its audit entry are written: both or neither.
    fn write_across(
        &self,
        guard: Option<&Guard>,
        writes: Vec<AreaWrite>,
    ) -> Result<bool, StoreError>;
    /// [`Store::write_across`], durable as `when` says. A store without
    /// group commit makes every write durable at once.
    fn write_across_when(
        &self,
        guard: Option<&Guard>,
        writes: Vec<AreaWrite>,
        when: Durability,
    ) -> Result<bool, StoreError> {
        let _ = when;
        self.write_across(guard, writes)
    }
    /// Return once every write applied before the call is durable
    /// (concurrent callers share one flush).
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// A mark of the writes applied so far, for [`Store::sync_through`].
    fn commit_mark(&self) -> u64 {
        0
    }
    /// Return once every write applied before `mark` was taken is durable
    /// (later ones need not be).
    fn sync_through(&self, mark: u64) -> Result<(), StoreError> {
        let _ = mark;
        self.sync()
    }
    /// Run `then` once every write applied before this call is durable (at
    /// once if it already is), in the order registered.
    fn after_durable(&self, then: OnDurable) {
        then();
    }
    /// What the group commit has done so far.
    fn commit_stats(&self) -> CommitStats {
        CommitStats::default()
    }
    /// Whether a committer makes writes durable in the background every
    /// [`COMMIT_INTERVAL`] (only then may a writer keep writes back until
    /// its [`CommitHook`] is called).
    fn commits_in_background(&self) -> bool {
        false
    }
    /// Call `hook` before each background commit, while it lives.
    fn before_commit(&self, hook: std::sync::Weak<dyn CommitHook>) {
        let _ = hook;
    }
}

/// The embedded default: one sled database in the data dir.
///
/// Durable means: sled has written the log and synced the written range
/// (`sync_file_range` on Linux, which survives a killed process but not a
/// power cut), and then the host has called `fdatasync` on sled's log file,
/// which also flushes the disk's write cache. Writes are made durable by a
/// group commit: every writer that needs durability waits for the next
/// flush, and one flush covers every write applied before it started, so
/// concurrent writers share it. A committer thread flushes
/// [`Durability::Soon`] writes every [`COMMIT_INTERVAL`].
pub struct SledStore {
    db: sled::Db,
    /// The trees opened so far, by area (opening one costs a lookup in
    /// sled's metadata under a lock; every write needs its trees).
    trees: std::sync::RwLock<std::collections::HashMap<String, sled::Tree>>,
    commits: Arc<GroupCommit>,
    committer: Option<std::thread::JoinHandle<()>>,
}

/// The shared state of the group commit.
struct GroupCommit {
    db: sled::Db,
    /// sled's log file, for `fdatasync` (absent if sled laid it out otherwise).
    log: Option<std::fs::File>,
    state: Mutex<Commits>,
    /// Signalled when a flush ends.
    changed: Condvar,
    /// Signalled when the store closes (wakes the committer).
    closed: Condvar,
    /// Held by the one thread running the work in `ready`, in order.
    running: Mutex<()>,
}

#[derive(Default)]
struct Commits {
    /// Writes applied so far; a write's ticket is this count after it.
    applied: u64,
    /// Every write with a ticket up to this is durable.
    durable: u64,
    /// Flushes under way (at most [`FLUSHES_AT_ONCE`]).
    flushing: usize,
    /// The newest target of a flush started (every write with a ticket up
    /// to it is durable once that flush ends).
    flush_target: u64,
    /// The store is closing: the committer stops.
    closing: bool,
    stats: CommitStats,
    /// Work to run once the write count it names is durable.
    waiting: std::collections::VecDeque<(u64, OnDurable)>,
    /// Work whose writes are durable, to run in this order.
    ready: std::collections::VecDeque<OnDurable>,
    /// Told before each background commit.
    hooks: Vec<std::sync::Weak<dyn CommitHook>>,
}

impl GroupCommit {
    fn lock(&self) -> std::sync::MutexGuard<'_, Commits> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Count one write as applied; returns its ticket. Called after the
    /// write is in sled, so any flush that starts later covers it.
    fn applied(&self) -> u64 {
        let mut s = self.lock();
        s.applied += 1;
        s.applied
    }

    /// Return once the write with `ticket` is durable: wait for a flush
    /// under way that covers it, or start one (for everyone waiting) if
    /// none does. A flush that started before the write was applied does
    /// not cover it, and a second flush is started at once beside it
    /// rather than after it, so a writer waits for about one flush.
    fn wait(&self, ticket: u64) -> Result<(), StoreError> {
        let mut s = self.lock();
        loop {
            if s.durable >= ticket {
                return Ok(());
            }
            if s.flush_target >= ticket || s.flushing >= FLUSHES_AT_ONCE {
                s = self
                    .changed
                    .wait(s)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            }
            s.flushing += 1;
            let target = s.applied;
            s.flush_target = target;
            drop(s);
            let flushed = self.flush();
            s = self.lock();
            s.flushing -= 1;
            if flushed.is_ok() {
                s.stats.flushes += 1;
                // A flush covers every write applied before it started,
                // whichever of two flushes under way ends first.
                s.durable = s.durable.max(target);
                let durable = s.durable;
                while s.waiting.front().is_some_and(|(t, _)| *t <= durable) {
                    if let Some((_, then)) = s.waiting.pop_front() {
                        s.ready.push_back(then);
                    }
                }
            } else {
                // Whoever waits for this flush starts another.
                s.flush_target = s.durable;
            }
            self.changed.notify_all();
            drop(s);
            self.run_ready();
            flushed?;
            s = self.lock();
        }
    }

    /// Run the work whose writes are durable, in order, on one thread at a
    /// time (work that writes durably itself may flush, and never waits
    /// for its own turn).
    fn run_ready(&self) {
        loop {
            let running = match self.running.try_lock() {
                Ok(guard) => guard,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return,
            };
            loop {
                let next = self.lock().ready.pop_front();
                match next {
                    Some(then) => then(),
                    None => break,
                }
            }
            drop(running);
            // Work queued while the lock was being given up is not stranded.
            if self.lock().ready.is_empty() {
                return;
            }
        }
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(io)?;
        if let Some(log) = &self.log {
            log.sync_data()
                .map_err(|e| StoreError::Io(format!("cannot sync the store's log: {e}")))?;
        }
        Ok(())
    }

    /// Make everything applied so far durable.
    fn sync(&self) -> Result<(), StoreError> {
        let ticket = self.lock().applied;
        self.wait(ticket)
    }

    /// Tell the live hooks a commit is coming (and forget the dead ones).
    fn call_hooks(&self) {
        let hooks: Vec<_> = {
            let mut s = self.lock();
            s.hooks.retain(|h| h.strong_count() > 0);
            s.hooks
                .iter()
                .filter_map(std::sync::Weak::upgrade)
                .collect()
        };
        for hook in hooks {
            hook.before_commit();
        }
    }

    /// The committer: flush what was applied, every [`COMMIT_INTERVAL`],
    /// until the store closes.
    fn run_committer(&self) {
        let mut s = self.lock();
        while !s.closing {
            let (next, _) = self
                .closed
                .wait_timeout(s, COMMIT_INTERVAL)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            drop(next);
            self.call_hooks();
            s = self.lock();
            if s.closing || s.applied <= s.durable || s.flushing > 0 {
                continue;
            }
            drop(s);
            if let Err(e) = self.sync() {
                tracing::error!("the store's group commit failed: {e}");
            }
            s = self.lock();
        }
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        self.commits.lock().closing = true;
        self.commits.closed.notify_all();
        if let Some(committer) = self.committer.take() {
            // The last user of the store may be work the committer runs
            // (a hook or a callback holding it): then the committer drops
            // it, and stops by itself once this returns.
            if committer.thread().id() != std::thread::current().id() {
                let _ = committer.join();
            }
        }
        self.commits.call_hooks();
        if let Err(e) = self.commits.sync() {
            tracing::error!("could not make the last writes durable when closing the store: {e}");
        }
    }
}

impl SledStore {
    /// Open (or create) the database at `path`. sled's own background
    /// flusher is off: the group commit flushes (and its committer thread
    /// stops when the store is dropped, so the file lock is released then).
    pub fn open(path: &Path) -> Result<SledStore, StoreError> {
        wait_until_closed(path);
        let db = sled::Config::new()
            .path(path)
            .flush_every_ms(None)
            .open()
            .map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                reason: match e {
                    // sled reports a held lock as WouldBlock, or wraps it in an
                    // error saying it "could not acquire lock".
                    sled::Error::Io(io)
                        if io.kind() == std::io::ErrorKind::WouldBlock
                            || io.to_string().contains("could not acquire lock") =>
                    {
                        "it is in use by another clancy process (wait for it to finish, or stop `clancy serve` or `clancy approvals watch`)".to_string()
                    }
                    other => other.to_string(),
                },
            })?;
        let log = match std::fs::File::open(path.join("db")) {
            Ok(file) => Some(file),
            Err(e) => {
                tracing::warn!(
                    "cannot open sled's log file for fdatasync ({e}): durable writes get sled's sync_file_range only"
                );
                None
            }
        };
        let commits = Arc::new(GroupCommit {
            db: db.clone(),
            log,
            state: Mutex::new(Commits::default()),
            changed: Condvar::new(),
            closed: Condvar::new(),
            running: Mutex::new(()),
        });
        let committer = {
            let commits = commits.clone();
            let dir = path.to_path_buf();
            open_stores().push(dir.clone());
            std::thread::Builder::new()
                .name("clancy-commit".into())
                .spawn(move || {
                    commits.run_committer();
                    // The last of sled's handles goes with this; then the
                    // store may be opened again.
                    drop(commits);
                    closed(&dir);
                })
                .map_err(|e| {
                    closed(path);
                    StoreError::Open {
                        path: path.display().to_string(),
                        reason: format!("cannot start the group commit: {e}"),
                    }
                })?
        };
        Ok(SledStore {
            db,
            trees: std::sync::RwLock::new(std::collections::HashMap::new()),
            commits,
            committer: Some(committer),
        })
    }

    fn tree(&self, area: &str) -> Result<sled::Tree, StoreError> {
        if let Some(tree) = self
            .trees
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(area)
        {
            return Ok(tree.clone());
        }
        let tree = self.db.open_tree(area).map_err(io)?;
        self.trees
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(area.to_string(), tree.clone());
        Ok(tree)
    }
}

fn io(e: sled::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

impl Store for SledStore {
    fn get(&self, area: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree(area)?.get(key).map_err(io)?.map(|v| v.to_vec()))
    }

    fn write(&self, area: &str, writes: Vec<Write>) -> Result<(), StoreError> {
        let tree = self.tree(area)?;
        let mut batch = sled::Batch::default();
        for (key, value) in writes {
            match value {
                Some(v) => batch.insert(key, v),
                None => batch.remove(key),
            }
        }
        tree.apply_batch(batch).map_err(io)?;
        let ticket = self.commits.applied();
        self.commits.wait(ticket)
    }

    fn scan(&self, area: &str, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        self.tree(area)?
            .scan_prefix(prefix)
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(io))
            .collect()
    }

    fn scan_page(
        &self,
        area: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        use std::ops::Bound;
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a.to_vec()),
            _ => Bound::Included(prefix.to_vec()),
        };
        self.tree(area)?
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
            .take_while(|kv| kv.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)))
            .take(limit)
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(io))
            .collect()
    }

    fn areas(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .db
            .tree_names()
            .into_iter()
            .map(|n| String::from_utf8_lossy(&n).to_string())
            .filter(|n| n != "__sled__default")
            .collect())
    }

    fn write_if(
        &self,
        area: &str,
        key: &[u8],
        expected: Option<&[u8]>,
        writes: Vec<Write>,
    ) -> Result<bool, StoreError> {
        let guard = Guard {
            area: area.to_string(),
            key: key.to_vec(),
            expected: expected.map(<[u8]>::to_vec),
        };
        let writes: Vec<AreaWrite> = writes
            .into_iter()
            .map(|(k, v)| (area.to_string(), k, v))
            .collect();
        self.write_across_trees(Some(&guard), &writes, Durability::Now)
    }

    fn write_across(
        &self,
        guard: Option<&Guard>,
        writes: Vec<AreaWrite>,
    ) -> Result<bool, StoreError> {
        self.write_across_trees(guard, &writes, Durability::Now)
    }

    fn write_across_when(
        &self,
        guard: Option<&Guard>,
        writes: Vec<AreaWrite>,
        when: Durability,
    ) -> Result<bool, StoreError> {
        self.write_across_trees(guard, &writes, when)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.commits.sync()
    }

    fn commit_mark(&self) -> u64 {
        self.commits.lock().applied
    }

    fn sync_through(&self, mark: u64) -> Result<(), StoreError> {
        self.commits.wait(mark)
    }

    fn after_durable(&self, then: OnDurable) {
        let mut s = self.commits.lock();
        if s.durable >= s.applied && s.waiting.is_empty() {
            s.ready.push_back(then);
        } else {
            let ticket = s.applied;
            s.waiting.push_back((ticket, then));
        }
        drop(s);
        self.commits.run_ready();
    }

    fn commit_stats(&self) -> CommitStats {
        self.commits.lock().stats
    }

    fn commits_in_background(&self) -> bool {
        true
    }

    fn before_commit(&self, hook: std::sync::Weak<dyn CommitHook>) {
        self.commits.lock().hooks.push(hook);
    }
}

impl SledStore {
    fn write_across_trees(
        &self,
        guard: Option<&Guard>,
        writes: &[AreaWrite],
        when: Durability,
    ) -> Result<bool, StoreError> {
        use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
        // One key, unconditional or conditional on itself: sled writes it
        // atomically without a transaction (which costs two writes of its
        // log buffer).
        if let [(area, key, value)] = writes
            && guard.is_none_or(|g| g.area == *area && g.key == *key)
        {
            let tree = self.tree(area)?;
            let applied = match guard {
                None => {
                    match value {
                        Some(v) => tree.insert(key.as_slice(), v.as_slice()).map_err(io)?,
                        None => tree.remove(key.as_slice()).map_err(io)?,
                    };
                    true
                }
                Some(g) => tree
                    .compare_and_swap(key.as_slice(), g.expected.as_deref(), value.as_deref())
                    .map_err(io)?
                    .is_ok(),
            };
            if !applied {
                return Ok(false);
            }
            let ticket = self.commits.applied();
            if when == Durability::Now {
                self.commits.wait(ticket)?;
            }
            return Ok(true);
        }
        // One tree per area involved, the guard's first.
        let mut areas: Vec<&str> = guard.map(|g| g.area.as_str()).into_iter().collect();
        for (area, _, _) in writes {
            if !areas.contains(&area.as_str()) {
                areas.push(area);
            }
        }
        let trees = areas
            .iter()
            .map(|a| self.tree(a))
            .collect::<Result<Vec<_>, _>>()?;
        let index = |area: &str| areas.iter().position(|a| *a == area).unwrap_or(0);
        let applied = trees
            .as_slice()
            .transaction(|txs| {
                if let Some(g) = guard
                    && txs[0].get(&g.key)?.as_deref() != g.expected.as_deref()
                {
                    return Ok(false);
                }
                for (area, k, v) in writes {
                    let tx = &txs[index(area)];
                    match v {
                        Some(v) => {
                            tx.insert(k.as_slice(), v.as_slice())?;
                        }
                        None => {
                            tx.remove(k.as_slice())?;
                        }
                    }
                }
                Ok::<bool, ConflictableTransactionError<()>>(true)
            })
            .map_err(|e: TransactionError<()>| {
                StoreError::Io(format!("transaction failed: {e:?}"))
            })?;
        if !applied {
            return Ok(false);
        }
        let ticket = self.commits.applied();
        if when == Durability::Now {
            self.commits.wait(ticket)?;
        }
        Ok(true)
    }
}

/// Areas whose records carry no seal: the audit log is a hash chain whose
/// heads are signed outside the store, and `audit verify` must report an
/// edited entry, not fail to read it.
const UNSEALED_AREAS: &[&str] = &["audit"];
const SEAL_BYTES: usize = 32;

/// One organisation's view of a [`Store`]: every key is prefixed with the
/// org, and every value (outside [`UNSEALED_AREAS`]) ends in a seal, an
/// HMAC under the host key over the area, the whole key and the value. A
/// value whose seal does not match (edited, moved to another key or org,
/// or written by anything but this host) reads as [`StoreError::Tampered`].
/// A value replaced by an older sealed value of the same key is not
/// detected here (see the Security section of the README).
#[derive(Clone)]
pub struct OrgStore {
    store: Arc<dyn Store>,
    prefix: Vec<u8>,
    org: String,
    keys: Arc<crate::keys::Keys>,
}

impl OrgStore {
    /// The view of `org`, sealed with `keys`. Org names never contain `/`,
    /// so prefixes cannot overlap.
    pub fn new(store: Arc<dyn Store>, org: &str, keys: Arc<crate::keys::Keys>) -> OrgStore {
        let mut prefix = org.as_bytes().to_vec();
        prefix.push(b'/');
        OrgStore {
            store,
            prefix,
            org: org.to_string(),
            keys,
        }
    }

    fn seal(&self, area: &str, full_key: &[u8], value: Vec<u8>) -> Vec<u8> {
        if UNSEALED_AREAS.contains(&area) {
            return value;
        }
        let tag = self.keys.seal(&[area.as_bytes(), full_key, &value]);
        let mut sealed = value;
        sealed.extend_from_slice(&tag);
        sealed
    }

    fn unseal(&self, area: &str, full_key: &[u8], stored: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        if UNSEALED_AREAS.contains(&area) {
            return Ok(stored);
        }
        let tampered = || StoreError::Tampered {
            area: area.to_string(),
            key: String::from_utf8_lossy(&full_key[self.prefix.len().min(full_key.len())..])
                .into_owned(),
        };
        let Some(split) = stored.len().checked_sub(SEAL_BYTES) else {
            return Err(tampered());
        };
        let (value, tag) = stored.split_at(split);
        if !self.keys.sealed(&[area.as_bytes(), full_key, value], tag) {
            return Err(tampered());
        }
        Ok(value.to_vec())
    }

    fn sealed_writes(&self, area: &str, writes: Vec<Write>) -> Vec<Write> {
        writes
            .into_iter()
            .map(|(k, v)| {
                let k = self.key(&k);
                let v = v.map(|v| self.seal(area, &k, v));
                (k, v)
            })
            .collect()
    }

    /// The keys this view seals with (and encrypts secrets with).
    pub(crate) fn keys(&self) -> &crate::keys::Keys {
        &self.keys
    }

    /// The organisation this view belongs to.
    pub fn org(&self) -> &str {
        &self.org
    }

    fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(key);
        k
    }

    /// See [`Store::get`].
    pub fn get(&self, area: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let full = self.key(key);
        self.store
            .get(area, &full)?
            .map(|v| self.unseal(area, &full, v))
            .transpose()
    }

    /// See [`Store::write`].
    pub fn write(&self, area: &str, writes: Vec<Write>) -> Result<(), StoreError> {
        self.store.write(area, self.sealed_writes(area, writes))
    }

    /// [`OrgStore::write`], durable as `when` says.
    pub fn write_when(
        &self,
        area: &str,
        writes: Vec<Write>,
        when: Durability,
    ) -> Result<(), StoreError> {
        let writes = writes
            .into_iter()
            .map(|(k, v)| (area.to_string(), k, v))
            .collect();
        self.write_across_when(None, writes, when).map(|_| ())
    }

    /// See [`Store::scan`]; returned keys have the org prefix removed.
    pub fn scan(&self, area: &str, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        let n = self.prefix.len();
        self.store
            .scan(area, &self.key(prefix))?
            .into_iter()
            .map(|(k, v)| {
                let v = self.unseal(area, &k, v)?;
                Ok((k[n..].to_vec(), v))
            })
            .collect()
    }

    /// See [`Store::scan_page`]; `after` and the returned keys have the
    /// org prefix removed.
    pub fn scan_page(
        &self,
        area: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let n = self.prefix.len();
        let after = after.map(|a| self.key(a));
        self.store
            .scan_page(area, &self.key(prefix), after.as_deref(), limit)?
            .into_iter()
            .map(|(k, v)| {
                let v = self.unseal(area, &k, v)?;
                Ok((k[n..].to_vec(), v))
            })
            .collect()
    }

    /// See [`Store::write_if`].
    pub fn write_if(
        &self,
        area: &str,
        key: &[u8],
        expected: Option<&[u8]>,
        writes: Vec<Write>,
    ) -> Result<bool, StoreError> {
        let full = self.key(key);
        let expected = expected.map(|v| self.seal(area, &full, v.to_vec()));
        self.store.write_if(
            area,
            &full,
            expected.as_deref(),
            self.sealed_writes(area, writes),
        )
    }

    /// [`OrgStore::write_if`], durable as `when` says.
    pub fn write_if_when(
        &self,
        area: &str,
        key: &[u8],
        expected: Option<&[u8]>,
        writes: Vec<Write>,
        when: Durability,
    ) -> Result<bool, StoreError> {
        let guard = Guard {
            area: area.to_string(),
            key: key.to_vec(),
            expected: expected.map(<[u8]>::to_vec),
        };
        let writes = writes
            .into_iter()
            .map(|(k, v)| (area.to_string(), k, v))
            .collect();
        self.write_across_when(Some(&guard), writes, when)
    }

    /// See [`Store::sync`].
    pub fn sync(&self) -> Result<(), StoreError> {
        self.store.sync()
    }

    /// See [`Store::commit_mark`].
    pub fn commit_mark(&self) -> u64 {
        self.store.commit_mark()
    }

    /// See [`Store::sync_through`].
    pub fn sync_through(&self, mark: u64) -> Result<(), StoreError> {
        self.store.sync_through(mark)
    }

    /// See [`Store::after_durable`].
    pub fn after_durable(&self, then: OnDurable) {
        self.store.after_durable(then);
    }

    /// See [`Store::commits_in_background`].
    pub fn commits_in_background(&self) -> bool {
        self.store.commits_in_background()
    }

    /// See [`Store::before_commit`].
    pub fn before_commit(&self, hook: std::sync::Weak<dyn CommitHook>) {
        self.store.before_commit(hook);
    }

    /// See [`Store::write_across`]: `guard` and `writes` name keys of this
    /// org (they are prefixed and sealed here).
    pub fn write_across(
        &self,
        guard: Option<&Guard>,
        writes: Vec<AreaWrite>,
    ) -> Result<bool, StoreError> {
        self.write_across_when(guard, writes, Durability::Now)
    }

    /// [`OrgStore::write_across`], durable as `when` says.
    pub fn write_across_when(
        &self,
        guard: Option<&Guard>,
        writes: Vec<AreaWrite>,
        when: Durability,
    ) -> Result<bool, StoreError> {
        let guard = guard.map(|g| {
            let key = self.key(&g.key);
            Guard {
                expected: g.expected.clone().map(|v| self.seal(&g.area, &key, v)),
                area: g.area.clone(),
                key,
            }
        });
        let writes = writes
            .into_iter()
            .map(|(area, k, v)| {
                let k = self.key(&k);
                let v = v.map(|v| self.seal(&area, &k, v));
                (area, k, v)
            })
            .collect();
        self.store.write_across_when(guard.as_ref(), writes, when)
    }

    /// Read a JSON value.
    pub fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        area: &str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        match self.get(area, key)? {
            None => Ok(None),
            Some(bytes) => decode(area, &bytes).map(Some),
        }
    }

    /// All JSON values under `prefix`.
    pub fn scan_json<T: serde::de::DeserializeOwned>(
        &self,
        area: &str,
        prefix: &[u8],
    ) -> Result<Vec<T>, StoreError> {
        self.scan(area, prefix)?
            .into_iter()
            .map(|(_, v)| decode(area, &v))
            .collect()
    }

    /// Write one JSON value.
    pub fn put_json<T: serde::Serialize>(
        &self,
        area: &str,
        key: &[u8],
        value: &T,
    ) -> Result<(), StoreError> {
        self.write(area, vec![(key.to_vec(), Some(encode(value)?))])
    }

    /// Build an index of `area` once: unless `built` (the index's marker)
    /// is set, write what `index` returns (read from the records) and the
    /// marker with it, in one write. For records written before the index
    /// existed; every write since keeps the index itself.
    pub fn index_once(
        &self,
        area: &str,
        built: &[u8],
        index: impl FnOnce() -> Result<Vec<Write>, StoreError>,
    ) -> Result<(), StoreError> {
        if self.get(area, built)?.is_some() {
            return Ok(());
        }
        let mut writes = index()?;
        writes.push((built.to_vec(), Some(b"1".to_vec())));
        self.write(area, writes)
    }
}

/// Validate an organisation name (used in keys and paths).
pub fn valid_org(org: &str) -> bool {
    !org.is_empty()
        && org.len() <= 64
        && org
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_views_never_see_each_others_keys() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path())?);
        let keys = Arc::new(crate::keys::Keys::ephemeral());
        let a = OrgStore::new(store.clone(), "acme", keys.clone());
        let b = OrgStore::new(store.clone(), "acme-2", keys);
        a.write("t", vec![(b"k".to_vec(), Some(b"a".to_vec()))])?;
        b.write("t", vec![(b"k".to_vec(), Some(b"b".to_vec()))])?;
        assert_eq!(a.get("t", b"k")?, Some(b"a".to_vec()));
        assert_eq!(a.scan("t", b"")?, vec![(b"k".to_vec(), b"a".to_vec())]);
        assert_eq!(b.scan("t", b"")?, vec![(b"k".to_vec(), b"b".to_vec())]);
        assert!(valid_org("acme-2") && !valid_org("a/b") && !valid_org(""));
        Ok(())
    }

    #[test]
    fn a_record_edited_copied_or_moved_outside_the_host_is_refused() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path())?);
        let keys = Arc::new(crate::keys::Keys::ephemeral());
        let a = OrgStore::new(store.clone(), "acme", keys.clone());
        let b = OrgStore::new(store.clone(), "beta", keys);
        a.write("t", vec![(b"k".to_vec(), Some(b"approved".to_vec()))])?;
        let sealed = store.get("t", b"acme/k")?.expect("written");
        let tampered =
            |r: Result<Option<Vec<u8>>, StoreError>| matches!(r, Err(StoreError::Tampered { .. }));
        // Edited in place, seal kept.
        let mut edited = sealed.clone();
        edited[0] = b'A';
        store.write("t", vec![(b"acme/k".to_vec(), Some(edited))])?;
        assert!(tampered(a.get("t", b"k")));
        assert!(matches!(a.scan("t", b""), Err(StoreError::Tampered { .. })));
        // Written without a seal.
        store.write("t", vec![(b"acme/k".to_vec(), Some(b"approved".to_vec()))])?;
        assert!(tampered(a.get("t", b"k")));
        // A genuine sealed value copied to another key, area or org.
        store.write("t", vec![(b"acme/k2".to_vec(), Some(sealed.clone()))])?;
        assert!(tampered(a.get("t", b"k2")));
        store.write("u", vec![(b"acme/k".to_vec(), Some(sealed.clone()))])?;
        assert!(tampered(a.get("u", b"k")));
        store.write("t", vec![(b"beta/k".to_vec(), Some(sealed.clone()))])?;
        assert!(tampered(b.get("t", b"k")));
        // Put back as the host wrote it, it reads again; a conditional
        // write compares against the sealed bytes.
        store.write("t", vec![(b"acme/k".to_vec(), Some(sealed))])?;
        assert_eq!(a.get("t", b"k")?, Some(b"approved".to_vec()));
        assert!(a.write_if(
            "t",
            b"k",
            Some(b"approved"),
            vec![(b"k".to_vec(), Some(b"done".to_vec()))]
        )?);
        assert_eq!(a.get("t", b"k")?, Some(b"done".to_vec()));
        Ok(())
    }
}
