//! The API under `/api/v1`: JSON in and out, errors as RFC 9457
//! problem+json, every call into the [`Org`](crate::org::Org) on the
//! blocking pool, every route described in the OpenAPI document served at
//! `/api/v1/openapi.json` (generated from these declarations).

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoResponses, ToSchema};

use super::auth::Caller;
use super::{Shared, with_org};
use crate::approvals::{Approval, Status};
use crate::operators::Role;
use crate::org::{DecideError, TaskError, TaskRecord, TaskState, Upgrade, Verdict};

/// The largest request body the API reads.
pub(super) const MAX_BODY_BYTES: usize = 64 * 1024;

/// An RFC 9457 problem: every API error.
pub(super) struct Problem {
    status: StatusCode,
    title: &'static str,
    detail: String,
    retry_after: Option<u64>,
}

/// The body of every error (RFC 9457).
#[derive(Serialize, ToSchema)]
pub(super) struct ProblemBody {
    /// Always `about:blank`: the status and title say what happened.
    #[serde(rename = "type")]
    kind: String,
    /// What went wrong, in a few words.
    title: String,
    /// The HTTP status.
    status: u16,
    /// What went wrong here, and what to do.
    detail: String,
}

/// The errors any authenticated route may answer.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(super) enum Refusals {
    /// The body is not valid JSON of the documented shape, or a parameter is invalid.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(ProblemBody),
    /// No valid token or live session.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(ProblemBody),
    /// The caller's role does not allow it, or a CSRF check failed.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(ProblemBody),
    /// No such thing in this organisation.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(ProblemBody),
    /// The thing is in a state that does not allow it.
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(ProblemBody),
    /// The body is larger than 64 KiB.
    #[response(status = 413)]
    TooLarge,
    /// The body is not `application/json`.
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(ProblemBody),
    /// The body parses but its content is refused.
    #[response(status = 422, content_type = "application/problem+json")]
    Unprocessable(ProblemBody),
    /// Too many requests; `Retry-After` says when to come back.
    #[response(status = 429, content_type = "application/problem+json")]
    TooManyRequests(ProblemBody),
}

impl Problem {
    pub(super) fn new(
        status: StatusCode,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            status,
            title,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// Say when to come back (seconds), for 429s.
    pub(super) fn retry_after(mut self, seconds: u64) -> Problem {
        self.retry_after = Some(seconds);
        self
    }

    pub(super) fn bad_request(detail: impl std::fmt::Display) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "Bad request", detail.to_string())
    }

    pub(super) fn internal(detail: impl std::fmt::Display) -> Problem {
        tracing::error!("API request failed: {detail}");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The host could not complete the request",
            "the host could not complete the request; see its log",
        )
    }
}

impl Problem {
    /// Its RFC 9457 body.
    pub(super) fn body(&self) -> ProblemBody {
        ProblemBody {
            kind: "about:blank".into(),
            title: self.title.into(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            serde_json::to_string(&body).unwrap_or_default(),
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// A request waiting for (or past) a human decision: the facts a
/// notification carries, never the whole action, and its preview.
#[derive(Serialize, ToSchema)]
pub(super) struct ApprovalView {
    id: String,
    /// `request` (an action or a question of an employee) or `upgrade` (a
    /// submitted version of an employee that may widen it: admins decide).
    kind: String,
    /// pending, approved, executed, failed, denied, expired, edited, void or answered.
    status: String,
    employee: String,
    task: String,
    /// The service (absent for a question).
    integration: Option<String>,
    scope: String,
    action: String,
    method: String,
    /// The employee's plain-English reason.
    reason: String,
    /// Why the host asked a human.
    gated_because: String,
    created_at: DateTime<Utc>,
    /// Absent for an upgrade (it waits until decided).
    expires_at: Option<DateTime<Utc>>,
    decided_by: Option<String>,
    outcome: Option<String>,
    /// What the action would do, in a line a reviewer reads.
    preview: String,
}

impl From<&Approval> for ApprovalView {
    fn from(a: &Approval) -> ApprovalView {
        let r = &a.request;
        ApprovalView {
            id: a.id.clone(),
            kind: "request".into(),
            status: serde_json::to_value(a.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            employee: r.employee.clone(),
            task: r.task.clone(),
            integration: r.integration.map(|i| i.to_string()),
            scope: r.scope.to_string(),
            action: r.operation.action().to_string(),
            method: r.operation.method().to_string(),
            reason: r.reason.clone(),
            gated_because: a.gated_because.clone(),
            created_at: a.created_at,
            expires_at: Some(a.expires_at),
            decided_by: a.decided_by.clone(),
            outcome: a.outcome.clone(),
            preview: a.preview(),
        }
    }
}

impl From<&Upgrade> for ApprovalView {
    fn from(u: &Upgrade) -> ApprovalView {
        ApprovalView {
            id: u.id.clone(),
            kind: "upgrade".into(),
            status: serde_json::to_value(u.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            employee: u.employee.clone(),
            task: String::new(),
            integration: None,
            scope: String::new(),
            action: "upgrade".into(),
            method: String::new(),
            reason: format!("a new version submitted by {}", u.requested_by),
            gated_because: "it may widen what the employee can do".into(),
            created_at: u.requested_at,
            expires_at: None,
            decided_by: u.decided_by.clone(),
            outcome: None,
            preview: u.preview(),
        }
    }
}

/// One page of the pending queue.
#[derive(Serialize, ToSchema)]
pub(super) struct ApprovalPage {
    items: Vec<ApprovalView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<String>,
}

/// Where a page starts and how long it is.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct PageQuery {
    /// At most this many items (1-500, default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^[A-Za-z0-9_-]{1,200}$")]
    pub(super) cursor: Option<String>,
}

impl PageQuery {
    pub(super) fn limit(&self) -> Result<usize, Problem> {
        match self.limit {
            None => Ok(100),
            Some(n @ 1..=500) => Ok(n as usize),
            Some(n) => Err(Problem::bad_request(format!(
                "limit {n} is out of range (1-500)"
            ))),
        }
    }
}

/// A cursor names the last item of a page by its place in the queue's
/// order (creation time, then id), so items added meanwhile never shift a
/// page: each is listed exactly once.
pub(super) fn encode_cursor(time: DateTime<Utc>, id: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "{}|{id}",
        time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
    ))
}

pub(super) fn decode_cursor(cursor: &str) -> Result<(DateTime<Utc>, String), Problem> {
    use base64::Engine as _;
    let bad = || Problem::bad_request("the cursor is not one this API gave out");
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad)?;
    let (time, id) = text.split_once('|').ok_or_else(bad)?;
    let time = DateTime::parse_from_rfc3339(time)
        .map_err(|_| bad())?
        .with_timezone(&Utc);
    Ok((time, id.to_string()))
}

/// `GET /api/v1/approvals`: the pending queue, oldest first, a page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/approvals",
    tag = "approvals",
    params(PageQuery),
    responses((status = 200, description = "A page of pending requests", body = ApprovalPage), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn list_approvals(
    Extension(caller): Extension<Caller>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<ApprovalPage>, Problem> {
    caller.needs(Role::Manager)?;
    let Query(query) = query.map_err(Problem::bad_request)?;
    let limit = query.limit()?;
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    // Requests and upgrades wait in one queue, oldest first. The requests
    // of one page past the cursor are read through the pending index.
    let page_after = after.clone();
    let (requests, upgrades) = with_org(&caller.org, move |org| {
        let from = page_after.as_ref().map(|(t, id)| (*t, id.as_str()));
        Ok::<_, crate::store::StoreError>((
            org.approvals()
                .pending_page(from, limit.saturating_add(1))?,
            org.pending_upgrades()?,
        ))
    })
    .await?
    .map_err(Problem::internal)?;
    let mut all: Vec<ApprovalView> = requests
        .iter()
        .filter(|a| a.status == Status::Pending)
        .map(ApprovalView::from)
        .chain(
            upgrades
                .iter()
                .filter(|u| u.status == crate::org::UpgradeStatus::Pending)
                .map(ApprovalView::from),
        )
        .filter(|a| {
            after
                .as_ref()
                .is_none_or(|(t, id)| (a.created_at, &a.id) > (*t, id))
        })
        .collect();
    all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    let more = all.len() > limit;
    all.truncate(limit);
    Ok(Json(ApprovalPage {
        next_cursor: all
            .last()
            .filter(|_| more)
            .map(|a| encode_cursor(a.created_at, &a.id)),
        items: all,
    }))
}

/// An id in a path, or a 400 problem.
pub(super) fn path_id(path: Result<Path<String>, PathRejection>) -> Result<String, Problem> {
    path.map(|Path(id)| id).map_err(Problem::bad_request)
}

/// `GET /api/v1/approvals/{id}`: one request, whatever its status.
#[utoipa::path(
    get,
    path = "/api/v1/approvals/{id}",
    tag = "approvals",
    params(("id" = String, Path, description = "The request's id")),
    responses((status = 200, description = "The request", body = ApprovalView), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn get_approval(
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ApprovalView>, Problem> {
    caller.needs(Role::Manager)?;
    let id = path_id(id)?;
    if id.starts_with("up-") {
        let lookup = id.clone();
        return with_org(&caller.org, move |org| org.upgrade(&lookup))
            .await?
            .map_err(Problem::internal)?
            .map(|u| Json(ApprovalView::from(&u)))
            .ok_or_else(|| {
                Problem::new(
                    StatusCode::NOT_FOUND,
                    "No such request",
                    format!("no approval request {id:?} in this organisation"),
                )
            });
    }
    let found = with_org(&caller.org, move |org| {
        org.approvals().get(&id).map(|a| (id, a))
    })
    .await?
    .map_err(|e| match e {
        crate::store::StoreError::Tampered { .. } => Problem::new(
            StatusCode::CONFLICT,
            "The request was changed outside the host",
            e.to_string(),
        ),
        other => Problem::internal(other),
    })?;
    match found {
        (_, Some(a)) => Ok(Json(ApprovalView::from(&a))),
        (id, None) => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "No such request",
            format!("no approval request {id:?} in this organisation"),
        )),
    }
}

/// The body of an answer: the option chosen, and an optional comment.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AnswerBody {
    /// One of the question's options.
    option: String,
    /// Why (at most 2000 characters).
    comment: Option<String>,
}

/// `POST /api/v1/approvals/{id}/answer`: answer an employee's question
/// with one of its options.
#[utoipa::path(
    post,
    path = "/api/v1/approvals/{id}/answer",
    tag = "approvals",
    params(("id" = String, Path, description = "The question's id")),
    request_body = AnswerBody,
    responses((status = 200, description = "The answered question", body = ApprovalView), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn answer(
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<ApprovalView>, Problem> {
    let operator = caller.needs(Role::User)?.clone();
    let id = path_id(id)?;
    let body: AnswerBody = json_body(&headers, &body, r#"{"option": "…"}"#)?;
    check_comment(body.comment.as_deref())?;
    let answered = with_org(&caller.org, move |org| {
        org.answer(&id, &body.option, &operator.name, body.comment.as_deref())
    })
    .await?;
    answered
        .map(|a| Json(ApprovalView::from(&a)))
        .map_err(decide_problem)
}

/// The body of a decision: an optional comment and, to approve an edited
/// action instead (approve only), the fields to change.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DecisionBody {
    /// Why (at most 2000 characters).
    #[schema(max_length = 2000)]
    comment: Option<String>,
    /// Approve an edited action: field → new value (e.g. a mail's `body`).
    /// The edit gets its own hash and is audited; the original never runs.
    edits: Option<std::collections::BTreeMap<String, String>>,
}

fn check_comment(comment: Option<&str>) -> Result<(), Problem> {
    if comment.is_some_and(|c| c.chars().count() > 2000) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid body",
            "the comment is longer than 2000 characters",
        ));
    }
    Ok(())
}

fn decision_body(headers: &HeaderMap, body: &[u8]) -> Result<DecisionBody, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DecisionBody::default());
    }
    let body: Option<DecisionBody> = json_body(headers, body, r#"{"comment": "…"}"#)?;
    let body = body.unwrap_or_default();
    check_comment(body.comment.as_deref())?;
    Ok(body)
}

/// `POST /api/v1/approvals/{id}/approve`: approve as the caller; the
/// action runs before the answer.
#[utoipa::path(
    post,
    path = "/api/v1/approvals/{id}/approve",
    tag = "approvals",
    params(("id" = String, Path, description = "The request's id")),
    request_body(content = Option<DecisionBody>, description = "An optional comment (the body may be empty)"),
    responses((status = 200, description = "The decided request", body = ApprovalView), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn approve(
    caller: Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<ApprovalView>, Problem> {
    decide(caller, id, headers, body, Verdict::Approve).await
}

/// `POST /api/v1/approvals/{id}/deny`: deny as the caller.
#[utoipa::path(
    post,
    path = "/api/v1/approvals/{id}/deny",
    tag = "approvals",
    params(("id" = String, Path, description = "The request's id")),
    request_body(content = Option<DecisionBody>, description = "An optional comment (the body may be empty)"),
    responses((status = 200, description = "The decided request", body = ApprovalView), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn deny(
    caller: Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<ApprovalView>, Problem> {
    decide(caller, id, headers, body, Verdict::Deny).await
}

async fn decide(
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: axum::body::Bytes,
    verdict: Verdict,
) -> Result<Json<ApprovalView>, Problem> {
    let operator = caller.needs(Role::User)?.clone();
    let id = path_id(id)?;
    let body = decision_body(&headers, &body)?;
    let edits: Vec<(String, String)> = body.edits.unwrap_or_default().into_iter().collect();
    if !edits.is_empty() && verdict != Verdict::Approve {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid decision",
            "edits go with approve, never deny",
        ));
    }
    let comment = body.comment;
    if id.starts_with("up-") {
        if !edits.is_empty() {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid decision",
                "an upgrade is approved or denied as submitted, never edited",
            ));
        }
        return with_org(&caller.org, move |org| {
            org.decide_upgrade(&id, verdict == Verdict::Approve, &operator)
        })
        .await?
        .map(|u| Json(ApprovalView::from(&u)))
        .map_err(super::records::upgrade_problem);
    }
    let decided = with_org(&caller.org, move |org| {
        if edits.is_empty() {
            org.decide(&id, verdict, &operator.name, comment.as_deref())
        } else {
            org.edit_and_approve(&id, &edits, &operator.name, comment.as_deref())
        }
    })
    .await?;
    decided
        .map(|a| Json(ApprovalView::from(&a)))
        .map_err(decide_problem)
}

/// `POST /api/v1/approvals/batch`'s body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BatchBody {
    /// The requests (1-500).
    #[schema(min_items = 1, max_items = 500)]
    ids: Vec<String>,
    /// `approve` or `deny`, for all of them.
    verdict: BatchVerdict,
    /// Why (at most 2000 characters).
    #[schema(max_length = 2000)]
    comment: Option<String>,
}

/// What a batch does.
#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
pub(super) enum BatchVerdict {
    Approve,
    Deny,
}

/// What became of one request of a batch.
#[derive(Serialize, ToSchema)]
pub(super) struct BatchItem {
    id: String,
    /// The request after the decision, when it was taken.
    decided: Option<ApprovalView>,
    /// Why it was refused, when it was.
    refused: Option<ProblemBody>,
}

/// The batch's results, in the order asked.
#[derive(Serialize, ToSchema)]
pub(super) struct BatchResult {
    items: Vec<BatchItem>,
    /// How many were refused.
    refused: usize,
}

/// `POST /api/v1/approvals/batch`: decide many requests at once, each as
/// if decided alone (each checked, audited and executed on its own; one
/// refused does not stop the others).
#[utoipa::path(
    post,
    path = "/api/v1/approvals/batch",
    tag = "approvals",
    request_body = BatchBody,
    responses((status = 200, description = "Each request's result", body = BatchResult), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn batch(
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<BatchResult>, Problem> {
    let operator = caller.needs(Role::User)?.clone();
    let body: BatchBody = json_body(
        &headers,
        &body,
        r#"{"ids": ["…"], "verdict": "approve", "comment": "…"}"#,
    )?;
    check_comment(body.comment.as_deref())?;
    if body.ids.is_empty() || body.ids.len() > 500 {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid body",
            "a batch names 1 to 500 requests",
        ));
    }
    let verdict = match body.verdict {
        BatchVerdict::Approve => Verdict::Approve,
        BatchVerdict::Deny => Verdict::Deny,
    };
    let items = with_org(&caller.org, move |org| {
        let mut seen = std::collections::HashSet::new();
        body.ids
            .into_iter()
            .filter(|id| seen.insert(id.clone()))
            .map(|id| {
                let decided = if id.starts_with("up-") {
                    org.decide_upgrade(&id, verdict == Verdict::Approve, &operator)
                        .map(|u| ApprovalView::from(&u))
                        .map_err(super::records::upgrade_problem)
                } else {
                    org.decide(&id, verdict, &operator.name, body.comment.as_deref())
                        .map(|a| ApprovalView::from(&a))
                        .map_err(decide_problem)
                };
                match decided {
                    Ok(view) => BatchItem {
                        id,
                        decided: Some(view),
                        refused: None,
                    },
                    Err(p) => BatchItem {
                        id,
                        decided: None,
                        refused: Some(p.body()),
                    },
                }
            })
            .collect::<Vec<_>>()
    })
    .await?;
    Ok(Json(BatchResult {
        refused: items.iter().filter(|i| i.refused.is_some()).count(),
        items,
    }))
}

/// The problem a refused decision is.
fn decide_problem(e: DecideError) -> Problem {
    let detail = e.to_string();
    match e {
        DecideError::Unknown(_) => Problem::new(StatusCode::NOT_FOUND, "No such request", detail),
        DecideError::NotAllowed { .. } => {
            Problem::new(StatusCode::FORBIDDEN, "Not allowed", detail)
        }
        DecideError::AlreadyDecided { .. }
        | DecideError::Expired(_)
        | DecideError::Void { .. }
        | DecideError::Tampered(_)
        | DecideError::Deferred(_)
        | DecideError::Question(_)
        | DecideError::NotAQuestion(_) => Problem::new(
            StatusCode::CONFLICT,
            "The request cannot be decided so",
            detail,
        ),
        DecideError::BadEdit { .. } | DecideError::BadAnswer { .. } => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid decision", detail)
        }
        DecideError::Store(crate::store::StoreError::Tampered { .. }) => Problem::new(
            StatusCode::CONFLICT,
            "The request was changed outside the host",
            detail,
        ),
        DecideError::Store(_) | DecideError::Org(_) => Problem::internal(detail),
    }
}

/// The body of `POST /api/v1/tasks`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TaskBody {
    /// A registered employee.
    employee: String,
    /// What to do, in plain words.
    task: String,
}

/// A requested task and where it stands.
#[derive(Serialize, ToSchema)]
pub(super) struct TaskView {
    /// The task id (also in its audit entries: `clancy audit explain ID`).
    id: String,
    employee: String,
    task: String,
    requested_by: String,
    requested_at: DateTime<Utc>,
    state: TaskState,
    started_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    /// The employee's summary or error, or why it stopped.
    outcome: Option<String>,
    /// What the employee printed (capped).
    guest_output: Option<String>,
}

impl From<TaskRecord> for TaskView {
    fn from(t: TaskRecord) -> TaskView {
        TaskView {
            id: t.id,
            employee: t.employee,
            task: t.task,
            requested_by: t.requested_by,
            requested_at: t.requested_at,
            state: t.state,
            started_at: t.started_at,
            ended_at: t.ended_at,
            outcome: t.outcome,
            guest_output: t.guest_output,
        }
    }
}

/// One page of tasks.
#[derive(Serialize, ToSchema)]
pub(super) struct TaskPage {
    items: Vec<TaskView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<String>,
}

fn not_assigned(user: &str, employee: &str) -> Problem {
    Problem::new(
        StatusCode::FORBIDDEN,
        "Not allowed",
        format!(
            "{user} is not assigned the employee {employee:?} (an admin assigns employees to users)"
        ),
    )
}

pub(super) fn task_problem(e: TaskError) -> Problem {
    let detail = e.to_string();
    match e {
        TaskError::NoEmployee(_) => Problem::new(StatusCode::NOT_FOUND, "No such employee", detail),
        TaskError::Disabled(_) => {
            Problem::new(StatusCode::CONFLICT, "The employee is disabled", detail)
        }
        TaskError::Unknown(_) => Problem::new(StatusCode::NOT_FOUND, "No such task", detail),
        TaskError::Invalid(_) => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid task", detail)
        }
        TaskError::Full => {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "The queue is full", detail)
                .retry_after(30)
        }
        TaskError::NotQueued { .. } => {
            Problem::new(StatusCode::CONFLICT, "The task cannot be cancelled", detail)
        }
        TaskError::Org(e) => Problem::internal(e),
    }
}

/// The request's JSON body as `T`: 415 unless it says it is JSON, 422 if
/// it does not parse (unknown fields included); `expected` shows its shape.
pub(super) fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
    expected: &str,
) -> Result<T, Problem> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim() == "application/json")
        });
    if !json {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported media type",
            "send the body as application/json",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid body",
            format!("{e} (expected {expected})"),
        )
    })
}

/// `POST /api/v1/tasks`: queue a task for a registered employee (it runs
/// with its pinned component, grants and limits, on the daemon's workers).
/// Answers at once with the task; `GET /api/v1/tasks/{id}` tells how it
/// goes. A full queue answers 503 with `Retry-After`.
#[utoipa::path(
    post,
    path = "/api/v1/tasks",
    tag = "tasks",
    request_body = TaskBody,
    responses(
        (status = 202, description = "Queued", body = TaskView),
        (status = 503, description = "The queue is full", content_type = "application/problem+json", body = ProblemBody),
        Refusals
    ),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn start_task(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let operator = caller.needs(Role::User)?.clone();
    let body: TaskBody = json_body(&headers, &body, r#"{"employee": "…", "task": "…"}"#)?;
    let queued = with_org(&caller.org, move |org| {
        let assigned = org
            .operators()
            .assigned(&operator.name)
            .map_err(Problem::internal)?;
        if !operator.may_work_with(&body.employee, &assigned) {
            return Err(not_assigned(&operator.name, &body.employee));
        }
        org.request_task(&body.employee, &body.task, &operator.name)
            .map_err(task_problem)
    })
    .await??;
    shared.work.notify_one();
    let location = format!("/api/v1/tasks/{}", queued.id);
    let mut response = (StatusCode::ACCEPTED, Json(TaskView::from(queued))).into_response();
    if let Ok(value) = header::HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// The most tasks one page of `GET /api/v1/tasks` reads.
const TASKS_READ_A_PAGE: usize = 2_000;

/// `GET /api/v1/tasks`: requested tasks, oldest first, a page at a time (a
/// page may be short, even empty, and still have a next cursor: the tasks
/// read for it were of employees the caller does not work with).
#[utoipa::path(
    get,
    path = "/api/v1/tasks",
    tag = "tasks",
    params(PageQuery),
    responses((status = 200, description = "A page of tasks", body = TaskPage), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn list_tasks(
    Extension(caller): Extension<Caller>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<TaskPage>, Problem> {
    let operator = caller.needs(Role::User)?.clone();
    let Query(query) = query.map_err(Problem::bad_request)?;
    let limit = query.limit()?;
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    // A page through the index of tasks in the order they were requested
    // (one more than asked, to know whether there is a next page).
    let page = with_org(&caller.org, move |org| {
        let after = match after {
            Some((_, id)) => match org.task(&id)? {
                Some(task) => Some(task.seq),
                None => return Ok(None),
            },
            None => None,
        };
        let assigned = org.operators().assigned(&operator.name)?;
        // A user's employees may have few of the tasks: a page reads at
        // most so many, and may come back short with a cursor.
        org.tasks_page(after, limit + 1, TASKS_READ_A_PAGE, |t| {
            operator.may_work_with(&t.employee, &assigned)
        })
        .map(Some)
    })
    .await?
    .map_err(|e: crate::store::StoreError| Problem::internal(e))?
    .ok_or_else(|| Problem::bad_request("the cursor is not one this API gave out"))?;
    let full = page.tasks.len() > limit;
    let items: Vec<TaskRecord> = page.tasks.into_iter().take(limit).collect();
    let next = if full {
        items.last().map(|t| (t.requested_at, t.id.clone()))
    } else {
        page.stopped_at
    };
    Ok(Json(TaskPage {
        next_cursor: next.map(|(time, id)| encode_cursor(time, &id)),
        items: items.into_iter().map(TaskView::from).collect(),
    }))
}

/// `GET /api/v1/tasks/{id}`: one task and where it stands.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}",
    tag = "tasks",
    params(("id" = String, Path, description = "The task id")),
    responses((status = 200, description = "The task", body = TaskView), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn get_task(
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<TaskView>, Problem> {
    let operator = caller.needs(Role::User)?.clone();
    let id = path_id(id)?;
    let lookup = id.clone();
    let (found, assigned) = with_org(&caller.org, move |org| {
        Ok::<_, crate::store::StoreError>((
            org.task(&lookup)?,
            org.operators().assigned(&operator.name)?,
        ))
    })
    .await?
    .map_err(Problem::internal)?;
    // A task of an employee not assigned to a user is not there for them.
    found
        .filter(|t| caller.operator.may_work_with(&t.employee, &assigned))
        .map(|t| Json(TaskView::from(t)))
        .ok_or_else(|| task_problem(TaskError::Unknown(id)))
}

/// `POST /api/v1/tasks/{id}/cancel`: cancel a task that has not started.
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/cancel",
    tag = "tasks",
    params(("id" = String, Path, description = "The task id")),
    responses((status = 200, description = "Cancelled", body = TaskView), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn cancel_task(
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<TaskView>, Problem> {
    let operator = caller.needs(Role::Manager)?.clone();
    let id = path_id(id)?;
    with_org(&caller.org, move |org| org.cancel_task(&id, &operator.name))
        .await?
        .map(|t| Json(TaskView::from(t)))
        .map_err(task_problem)
}
