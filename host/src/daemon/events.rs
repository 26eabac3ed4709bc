//! `GET /api/v1/tasks/{id}/events`: a task as it happens, as Server-Sent
//! Events. `event: task` carries the task (as `GET /api/v1/tasks/{id}`
//! answers it) at the start and whenever its state changes; `event: entry`
//! carries each audit entry of the task (reads, writes, requests for
//! approval, decisions) as it is appended. The stream ends after the task
//! has ended and its last entries are sent.
//!
//! Whoever may see the task (managers, admins, a user assigned its
//! employee) may follow it; for anyone else it does not exist (404). At
//! most [`MAX_STREAMS`] streams are open at once (503 beyond), and each
//! lasts at most [`MAX_STREAM`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Extension;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};

use super::api::{Problem, Refusals, TaskView, path_id, task_problem};
use super::auth::Caller;
use super::{Shared, blocking, with_org};
use crate::audit::Entry;
use crate::operators::Role;
use crate::org::{Org, TaskError, TaskRecord, TaskState};

/// Event streams open at once, over every caller.
pub(super) const MAX_STREAMS: usize = 64;
/// How long one stream stays open.
const MAX_STREAM: Duration = Duration::from_secs(3600);
/// How often a stream looks for news.
const POLL: Duration = Duration::from_millis(250);

/// Counts an open stream while it lives.
struct Open(Arc<Shared>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where a stream stands.
struct Follow {
    org: Arc<Org>,
    task: String,
    /// The last state sent.
    sent: Option<TaskState>,
    /// The last audit entry looked at (any task's).
    seen: u64,
    /// Events found but not sent yet.
    ready: std::collections::VecDeque<Event>,
    /// The task has ended and its end was sent.
    done: bool,
    until: tokio::time::Instant,
    /// True once the daemon stops: the stream ends.
    stop: tokio::sync::watch::Receiver<bool>,
    _open: Open,
}

fn is_end(state: TaskState) -> bool {
    !matches!(state, TaskState::Queued | TaskState::Running)
}

fn task_event(t: TaskRecord) -> Event {
    Event::default()
        .event("task")
        .json_data(TaskView::from(t))
        .unwrap_or_else(|e| Event::default().event("error").data(e.to_string()))
}

fn entry_event(e: &Entry) -> Event {
    Event::default()
        .event("entry")
        .id(e.seq.to_string())
        .json_data(e)
        .unwrap_or_else(|e| Event::default().event("error").data(e.to_string()))
}

/// New entries of the task after `seen`, and the task as it stands.
fn look(
    org: &Org,
    task: &str,
    seen: u64,
) -> Result<(Vec<Entry>, u64, Option<TaskRecord>), crate::store::StoreError> {
    // The task first: entries appended before its end are read after it.
    let record = org.task(task)?;
    let head = org.audit().len()?;
    let mut found = Vec::new();
    for seq in seen + 1..=head {
        if let Some(e) = org.audit().entry(seq)?
            && e.record.task == task
        {
            found.push(e);
        }
    }
    Ok((found, head, record))
}

impl Follow {
    /// The next event, waiting for one; `None` ends the stream.
    async fn next(mut self) -> Option<(Result<Event, std::convert::Infallible>, Follow)> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some((Ok(event), self));
            }
            if self.done || *self.stop.borrow() || tokio::time::Instant::now() >= self.until {
                return None;
            }
            let (org, task, seen) = (self.org.clone(), self.task.clone(), self.seen);
            match blocking(move || look(&org, &task, seen)).await {
                Ok(Ok((entries, head, record))) => {
                    self.seen = head;
                    self.ready.extend(entries.iter().map(entry_event));
                    match record {
                        Some(t) if Some(t.state) != self.sent => {
                            self.sent = Some(t.state);
                            self.done = is_end(t.state);
                            self.ready.push_back(task_event(t));
                        }
                        Some(_) => {}
                        None => self.done = true,
                    }
                }
                Ok(Err(e)) => {
                    self.done = true;
                    self.ready
                        .push_back(Event::default().event("error").data(e.to_string()));
                }
                Err(e) => {
                    self.done = true;
                    self.ready
                        .push_back(Event::default().event("error").data(e));
                }
            }
            if self.ready.is_empty() {
                tokio::select! {
                    () = tokio::time::sleep(POLL) => {}
                    _ = self.stop.changed() => {}
                }
            }
        }
    }
}

/// `GET /api/v1/tasks/{id}/events`: follow a task as Server-Sent Events.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}/events",
    tag = "tasks",
    params(("id" = String, Path, description = "The task id")),
    responses(
        (status = 200, description = "`event: task` (the task, at the start and at each change of state) and `event: entry` (each audit entry of the task); ends after the task ends", content_type = "text/event-stream", body = String),
        (status = 503, description = "Too many streams are open", content_type = "application/problem+json", body = super::api::ProblemBody),
        Refusals
    ),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn follow(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let operator = caller.needs(Role::User)?.clone();
    let id = path_id(id)?;
    let lookup = id.clone();
    let (found, assigned, entries, head) = with_org(&caller.org, move |org| {
        // The head first, then the task's own entries up to it (through
        // the task index); later ones are followed from the head on.
        let head = org.audit().len()?;
        let entries: Vec<Entry> = org
            .audit()
            .task_entries(&lookup)?
            .into_iter()
            .filter(|e| e.seq <= head)
            .collect();
        Ok::<_, crate::store::StoreError>((
            org.task(&lookup)?,
            org.operators().assigned(&operator.name)?,
            entries,
            head,
        ))
    })
    .await?
    .map_err(Problem::internal)?;
    let Some(task) = found.filter(|t| caller.operator.may_work_with(&t.employee, &assigned)) else {
        return Err(task_problem(TaskError::Unknown(id)));
    };
    if shared.streams.fetch_add(1, Ordering::Relaxed) >= MAX_STREAMS {
        shared.streams.fetch_sub(1, Ordering::Relaxed);
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many streams",
            format!("{MAX_STREAMS} event streams are open; follow the task with GET /api/v1/tasks/{{id}} or try again later"),
        )
        .retry_after(5));
    }
    let open = Open(shared.clone());
    let seen = head;
    let mut ready: std::collections::VecDeque<Event> = entries
        .iter()
        .filter(|e| e.record.task == task.id)
        .map(entry_event)
        .collect();
    let state = task.state;
    ready.push_back(task_event(task.clone()));
    let follow = Follow {
        org: caller.org.clone(),
        task: task.id,
        sent: Some(state),
        seen,
        ready,
        done: is_end(state),
        until: tokio::time::Instant::now() + MAX_STREAM,
        stop: shared.stop.subscribe(),
        _open: open,
    };
    let stream = futures_util::stream::unfold(follow, Follow::next);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
