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
            let writes = vec![
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
            ];
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

    /// Every task, oldest request first.
    pub fn tasks(&self) -> Result<Vec<TaskRecord>, StoreError> {
        let mut all: Vec<TaskRecord> = self.org.scan_json(AREA, b"t/")?;
        all.sort_by(|a, b| (a.requested_at, &a.id).cmp(&(b.requested_at, &b.id)));
        Ok(all)
    }

    /// How many tasks wait.
    pub fn queued_tasks(&self) -> Result<usize, StoreError> {
        Ok(self.org.scan(AREA, b"q/")?.len())
    }

    /// Take the oldest queued task and mark it running (conditionally: of
    /// two takers, one gets it). `None` when nothing waits.
    pub fn take_task(&self) -> Result<Option<TaskRecord>, StoreError> {
        for (key, id) in self.org.scan(AREA, b"q/")? {
            let id = String::from_utf8_lossy(&id).to_string();
            let Some(mut record) = self.task(&id)? else {
                // An index entry without its record: drop it.
                self.org.write(AREA, vec![(key, None)])?;
                continue;
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
                ],
            )?;
            if taken {
                return Ok(Some(record));
            }
        }
        Ok(None)
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
            self.org.put_json(AREA, &record_key(&record.id), &record)?;
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
        self.org.put_json(AREA, &record_key(&record.id), &record)?;
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
    pub fn interrupt_running_tasks(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        for mut record in self.tasks()? {
            if record.state == TaskState::Running {
                record.state = TaskState::Interrupted;
                record.ended_at = Some(self.now());
                record.outcome = Some("the host stopped while it ran".into());
                self.org.put_json(AREA, &record_key(&record.id), &record)?;
                n += 1;
            }
        }
        Ok(n)
    }
}
