//! The task queue: tasks requested through the API or by a schedule are
//! stored (with their audit entry, in one transaction) before anything
//! runs them, then taken one at a time by the daemon's workers.
//!
//! A task is `queued`, then `running`, then `completed`, `failed` or
//! `trapped` (as its guest ended), or `cancelled` while still queued. A task
//! the host stopped during is `interrupted` at the next start (its audit
//! trail says so too): a restart never loses a requested task, and never
//! runs one twice. The queue holds at most [`MAX_QUEUED`] tasks; past that a
//! request is refused, not dropped.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::audit::{Kind, Record};
use crate::runtime::TaskEnd;
use crate::store::{Guard, StoreError};

use super::{Org, OrgError};

const AREA: &str = "tasks";

/// The most tasks that may wait at once.
pub const MAX_QUEUED: usize = 1000;

/// Where a requested task stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TaskState {
    /// Waiting for a worker.
    Queued,
    /// A worker runs it.
    Running,
    /// The employee reported success.
    Completed,
    /// The employee reported an error, or it could not start.
    Failed,
    /// The guest trapped or hit a limit.
    Trapped,
    /// The host stopped while it ran.
    Interrupted,
    /// Cancelled before it started.
    Cancelled,
}

/// A requested task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task id (also the id of its audit entries).
    pub id: String,
    /// Its place in the queue (requests are numbered as they come).
    pub seq: u64,
    /// The employee that does it.
    pub employee: String,
    /// What to do.
    pub task: String,
    /// Who asked (an operator, or `schedule`).
    pub requested_by: String,
    /// When.
    pub requested_at: DateTime<Utc>,
    /// Where it stands.
    pub state: TaskState,
    /// When a worker took it.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// The employee's summary, error, or why it stopped.
    pub outcome: Option<String>,
    /// What the guest printed (capped).
    pub guest_output: Option<String>,
}

/// A task could not be requested, found or cancelled.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// No such registered employee.
    #[error("no employee {0:?} is registered in this organisation")]
    NoEmployee(String),
    /// The employee is disabled.
    #[error("the employee {0:?} is disabled; an admin enables it")]
    Disabled(String),
    /// The instruction is unusable.
    #[error("invalid task: {0}")]
    Invalid(String),
    /// The queue is full.
    #[error("{MAX_QUEUED} tasks are waiting already; try again later")]
    Full,
    /// No such task.
    #[error("no task {0:?} in this organisation")]
    Unknown(String),
    /// It is past being cancelled.
    #[error("task {id} is {state:?}; only a queued task can be cancelled")]
    NotQueued {
        /// The task.
        id: String,
        /// Where it stands.
        state: TaskState,
    },
    /// The store or the audit log failed.
    #[error(transparent)]
    Org(#[from] OrgError),
}

impl From<StoreError> for TaskError {
    fn from(e: StoreError) -> TaskError {
        TaskError::Org(OrgError::Store(e))
    }
}

fn record_key(id: &str) -> Vec<u8> {
    format!("t/{id}").into_bytes()
}

/// The waiting line, in the order tasks were requested (clocks may give
/// two requests the same time; their numbers differ).
fn queue_key(record: &TaskRecord) -> Vec<u8> {
    format!("q/{:020}", record.seq).into_bytes()
}

/// The index of tasks in the order they were requested (`s/<number>`, the
/// id as value): listing a page reads that page, not every task ever.
fn order_key(seq: u64) -> Vec<u8> {
    format!("s/{seq:020}").into_bytes()
}

/// The index of running tasks (`r/<number>`, the id as value): a restart
/// finds the tasks it interrupted without reading every task ever.
fn running_key(seq: u64) -> Vec<u8> {
    format!("r/{seq:020}").into_bytes()
}

/// Set once both indexes cover every task (built once from the records,
/// for tasks requested before they existed).
const INDEXES_BUILT: &[u8] = b"s-index-built";

/// Tasks read at a time through the order index.
const PAGE: usize = 256;

/// What [`Org::tasks_page`] read.
#[derive(Debug)]
pub struct TasksRead {
    /// The tasks wanted, in the order requested.
    pub tasks: Vec<TaskRecord>,
    /// When the budget ran out before the page was full: the last task
    /// read (when it was requested, and its id), which more may follow.
    /// `None` when the page is full or no task is left.
    pub stopped_at: Option<(DateTime<Utc>, String)>,
}

/// The last number given to a request.
const COUNTER: &[u8] = b"n";

fn audit_error(e: crate::audit::AuditError) -> OrgError {
    OrgError::Store(e.0)
}

impl Org {
    /// Queue `task` for registered `employee` on the word of `by`. The
    /// task and its audit entry are written together.
    pub fn request_task(
        &self,
        employee: &str,
        task: &str,
        by: &str,
    ) -> Result<TaskRecord, TaskError> {
        if self.stored_manifest(employee)?.is_none() {
            return Err(TaskError::NoEmployee(employee.to_string()));
        }
        if self.disabled(employee)?.is_some() {
            return Err(TaskError::Disabled(employee.to_string()));
        }
        if task.trim().is_empty() {
            return Err(TaskError::Invalid("the task is empty".into()));
        }
        if task.len() > crate::runtime::MAX_INSTRUCTION_BYTES {
            return Err(TaskError::Invalid(format!(
                "the task is {} bytes; the limit is {} bytes",
                task.len(),
                crate::runtime::MAX_INSTRUCTION_BYTES
            )));
        }
        if self.org.scan(AREA, b"q/")?.len() >= MAX_QUEUED {
            return Err(TaskError::Full);
        }
        let mut record = TaskRecord {
            id: uuid::Uuid::new_v4().to_string(),
            seq: 0,
            employee: employee.to_string(),
            task: task.to_string(),
            requested_by: by.to_string(),
            requested_at: self.now(),
            state: TaskState::Queued,
            started_at: None,
            ended_at: None,
            outcome: None,
            guest_output: None,
        };
        let entry = Record {
            employee: employee.to_string(),
            task: record.id.clone(),
            action: "tasks-requested".into(),
            args: crate::mediator::truncate(task, 500),
            result: format!("queued, requested by {by}"),
            ..Record::default()
        };
        // The next number, taken conditionally: of two requests at once,
        // one gets it and the other tries the one after.
        loop {
            let last = self.org.get(AREA, COUNTER)?;
            record.seq = match &last {
                Some(bytes) => crate::store::decode::<u64>(AREA, bytes)? + 1,
                None => 1,
            };
            let mut writes = vec![
                (
                    AREA.to_string(),
                    COUNTER.to_vec(),
                    Some(crate::store::encode(&record.seq)?),
                ),
                (
                    AREA.to_string(),
                    record_key(&record.id),
                    Some(crate::store::encode(&record)?),
                ),
                (
                    AREA.to_string(),
                    queue_key(&record),
                    Some(record.id.clone().into_bytes()),
                ),
                (
                    AREA.to_string(),
                    order_key(record.seq),
                    Some(record.id.clone().into_bytes()),
                ),
            ];
            if record.seq == 1 {
                // A first task: the indexes cover every task from it on.
                writes.push((
                    AREA.to_string(),
                    INDEXES_BUILT.to_vec(),
                    Some(b"1".to_vec()),
                ));
            }
            let guard = Guard {
                area: AREA.into(),
                key: COUNTER.to_vec(),
                expected: last,
            };
            if self
                .audit
                .append_with(Kind::Note, entry.clone(), Some(&guard), writes)
                .map_err(audit_error)?
                .is_some()
            {
                return Ok(record);
            }
        }
    }

    /// One task.
    pub fn task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        if id.is_empty() || id.len() > 64 || id.contains('/') {
            return Ok(None);
        }
        self.org.get_json(AREA, &record_key(id))
    }

    /// Every task, in the order they were requested.
    pub fn tasks(&self) -> Result<Vec<TaskRecord>, StoreError> {
        let mut all = Vec::new();
        self.for_each_task_page(|page| {
            all.extend_from_slice(page);
            Ok::<(), StoreError>(())
        })?;
        Ok(all)
    }

    /// Every task, in the order they were requested, a page at a time
    /// (memory does not grow with how many were ever requested).
    pub fn for_each_task_page<E: From<StoreError>>(
        &self,
        mut each: impl FnMut(&[TaskRecord]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut after = None;
        loop {
            let page = self.tasks_page(after, PAGE, usize::MAX, |_| true)?.tasks;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = Some(last.seq);
            each(&page)?;
        }
    }

    /// At most `limit` tasks for which `wanted` holds, in the order they
    /// were requested, after the task numbered `after` (if given), reading
    /// at most `budget` tasks: through the order index, so a page costs
    /// about its own tasks (plus those `wanted` passes over, up to the
    /// budget), not every task ever requested.
    pub fn tasks_page(
        &self,
        after: Option<u64>,
        limit: usize,
        budget: usize,
        wanted: impl Fn(&TaskRecord) -> bool,
    ) -> Result<TasksRead, StoreError> {
        self.build_task_indexes()?;
        let mut read = TasksRead {
            tasks: Vec::new(),
            stopped_at: None,
        };
        let mut from = after.map(order_key);
        let mut page_size = limit.clamp(1, PAGE);
        let mut left = budget;
        let mut last_read = None;
        'pages: while read.tasks.len() < limit {
            let page = self
                .org
                .scan_page(AREA, b"s/", from.as_deref(), page_size.min(left))?;
            page_size = (page_size * 4).min(PAGE);
            let Some((last, _)) = page.last() else {
                break;
            };
            from = Some(last.clone());
            for (_, id) in page {
                left -= 1;
                let id = String::from_utf8_lossy(&id).into_owned();
                let Some(record) = self.task(&id)? else {
                    continue;
                };
                last_read = Some((record.requested_at, record.id.clone()));
                if wanted(&record) {
                    read.tasks.push(record);
                    if read.tasks.len() >= limit {
                        break 'pages;
                    }
                }
            }
            if left == 0 {
                // Out of budget short of a full page: the caller goes on
                // after the last task read.
                read.stopped_at = last_read;
                break;
            }
        }
        Ok(read)
    }

    /// Index the tasks requested before the order and running indexes
    /// existed (once; every write since keeps them).
    fn build_task_indexes(&self) -> Result<(), StoreError> {
        self.org.index_once(AREA, INDEXES_BUILT, || {
            let mut writes = Vec::new();
            for record in self.org.scan_json::<TaskRecord>(AREA, b"t/")? {
                let id = Some(record.id.clone().into_bytes());
                writes.push((order_key(record.seq), id.clone()));
                if record.state == TaskState::Running {
                    writes.push((running_key(record.seq), id));
                }
            }
            Ok(writes)
        })
    }

    /// Store how `record`, taken to run, ended: it leaves the running index.
    fn store_ended(&self, record: &TaskRecord) -> Result<(), StoreError> {
        self.org.write(
            AREA,
            vec![
                (record_key(&record.id), Some(crate::store::encode(record)?)),
                (running_key(record.seq), None),
            ],
        )
    }

    /// How many tasks wait.
    pub fn queued_tasks(&self) -> Result<usize, StoreError> {
        Ok(self.org.scan(AREA, b"q/")?.len())
    }

    /// Take the oldest queued task and mark it running (conditionally: of
    /// two takers, one gets it). `None` when nothing waits.
    pub fn take_task(&self) -> Result<Option<TaskRecord>, StoreError> {
        // A few of the oldest at a time, not the whole queue: usually the
        // first is taken.
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.org.scan_page(AREA, b"q/", after.as_deref(), 16)?;
            let Some((last, _)) = page.last() else {
                return Ok(None);
            };
            after = Some(last.clone());
            for (key, id) in page {
                if let Some(record) = self.take_queued(key, &id)? {
                    return Ok(Some(record));
                }
            }
        }
    }

    /// Take the task `id` that queue key `key` names, if it is still
    /// queued and no other taker gets there first.
    fn take_queued(&self, key: Vec<u8>, id: &[u8]) -> Result<Option<TaskRecord>, StoreError> {
        let id = String::from_utf8_lossy(id).to_string();
        let record = self.task(&id)?;
        // Gone, or taken by another taker since the queue was read (its
        // record says so, and the guard below would hold on it): the queue
        // key is stale.
        let Some(mut record) = record.filter(|r| r.state == TaskState::Queued) else {
            self.org.write(AREA, vec![(key, None)])?;
            return Ok(None);
        };
        let before = crate::store::encode(&record)?;
        record.state = TaskState::Running;
        record.started_at = Some(self.now());
        let taken = self.org.write_across(
            Some(&Guard {
                area: AREA.into(),
                key: record_key(&id),
                expected: Some(before),
            }),
            vec![
                (AREA.into(), key, None),
                (
                    AREA.into(),
                    record_key(&id),
                    Some(crate::store::encode(&record)?),
                ),
                (
                    AREA.into(),
                    running_key(record.seq),
                    Some(id.clone().into_bytes()),
                ),
            ],
        )?;
        Ok(taken.then_some(record))
    }

    /// Run a task [`Org::take_task`] took, with its employee's registered
    /// manifest and pinned component, and record how it ended.
    pub fn run_task(&self, mut record: TaskRecord) -> Result<TaskRecord, StoreError> {
        if let Some(d) = self.disabled(&record.employee)? {
            record.state = TaskState::Cancelled;
            record.ended_at = Some(self.now());
            record.outcome = Some(format!(
                "not run: {} was disabled by {}",
                record.employee, d.by
            ));
            self.store_ended(&record)?;
            return Ok(record);
        }
        let ran = self
            .registered_employee(&record.employee)
            .map_err(|e| e.to_string())
            .and_then(|employee| {
                employee
                    .run_as(&record.id, &record.task)
                    .map_err(|e| e.to_string())
            });
        let (state, outcome) = match &ran {
            Ok(result) => match &result.end {
                TaskEnd::Completed { summary } => (TaskState::Completed, summary.clone()),
                TaskEnd::Failed { error } => (TaskState::Failed, error.clone()),
                TaskEnd::Trapped { reason } => (TaskState::Trapped, reason.clone()),
            },
            Err(why) => {
                let _ = self.audit_operator_action(
                    "tasks-run",
                    &format!("{} {}", record.employee, record.id),
                    &format!("could not start: {why}"),
                );
                (TaskState::Failed, format!("could not start: {why}"))
            }
        };
        record.state = state;
        record.ended_at = Some(self.now());
        record.outcome = Some(crate::mediator::truncate(&outcome, 2000));
        record.guest_output = ran.ok().map(|r| r.guest_output);
        self.store_ended(&record)?;
        Ok(record)
    }

    /// Cancel a queued task on the word of `by`. Audited.
    pub fn cancel_task(&self, id: &str, by: &str) -> Result<TaskRecord, TaskError> {
        let Some(mut record) = self.task(id)? else {
            return Err(TaskError::Unknown(id.to_string()));
        };
        if record.state != TaskState::Queued {
            return Err(TaskError::NotQueued {
                id: id.to_string(),
                state: record.state,
            });
        }
        let before = crate::store::encode(&record)?;
        let queued = queue_key(&record);
        record.state = TaskState::Cancelled;
        record.ended_at = Some(self.now());
        record.outcome = Some(format!("cancelled by {by}"));
        let entry = Record {
            employee: record.employee.clone(),
            task: record.id.clone(),
            action: "tasks-cancel".into(),
            result: format!("cancelled by {by} before it started"),
            ..Record::default()
        };
        let done = self
            .audit
            .append_with(
                Kind::Note,
                entry,
                Some(&Guard {
                    area: AREA.into(),
                    key: record_key(id),
                    expected: Some(before),
                }),
                vec![
                    (AREA.into(), queued, None),
                    (
                        AREA.into(),
                        record_key(id),
                        Some(crate::store::encode(&record)?),
                    ),
                ],
            )
            .map_err(audit_error)?;
        match done {
            Some(_) => Ok(record),
            // A worker took it meanwhile.
            None => Err(TaskError::NotQueued {
                id: id.to_string(),
                state: self.task(id)?.map_or(TaskState::Running, |r| r.state),
            }),
        }
    }

    /// At start: tasks that were running when the host stopped are
    /// interrupted (their audit trail is closed by
    /// [`Org::record_interrupted_tasks`]). Returns how many.
    /// Read through the index of running tasks, not every task ever.
    pub fn interrupt_running_tasks(&self) -> Result<usize, StoreError> {
        self.build_task_indexes()?;
        let mut n = 0;
        for (key, id) in self.org.scan(AREA, b"r/")? {
            let id = String::from_utf8_lossy(&id).into_owned();
            match self.task(&id)? {
                Some(mut record) if record.state == TaskState::Running => {
                    record.state = TaskState::Interrupted;
                    record.ended_at = Some(self.now());
                    record.outcome = Some("the host stopped while it ran".into());
                    self.store_ended(&record)?;
                    n += 1;
                }
                // Ended (or gone) already: the index entry alone was left.
                _ => self.org.write(AREA, vec![(key, None)])?,
            }
        }
        Ok(n)
    }
}
