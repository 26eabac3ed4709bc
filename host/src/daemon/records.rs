//! The API's audit and undo routes (managers and admins): search the log,
//! verify it, explain a task, undo an action or a task's writes; and the
//! registered employees.

use axum::extract::Query;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::api::{Problem, Refusals, json_body, path_id};
use super::auth::Caller;
use super::{streamed, with_org};
use crate::operators::Role;
use crate::org::{OrgError, UndoError};

/// Which entries, and which page.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditQuery {
    /// Only this employee's entries (`host` for the host's own).
    employee: Option<String>,
    /// Only this task's entries (its id, or its first characters).
    #[param(min_length = 1)]
    task: Option<String>,
    /// At most this many entries (1-1000, default 200).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Entries after this one (the `next_cursor` of the previous page).
    #[param(minimum = 0)]
    after: Option<i64>,
}

/// A page of the audit log. Entries carry guest text JSON-escaped but
/// otherwise as written: escape it before showing it to people.
#[derive(Serialize, ToSchema)]
pub(super) struct AuditPage {
    /// Entries as `clancy audit log --json` prints them.
    #[schema(value_type = Vec<Object>)]
    items: Vec<crate::audit::Entry>,
    /// Pass as `after` for the next page; absent on the last page.
    next_cursor: Option<u64>,
}

/// `GET /api/v1/audit`: the log, oldest first, filtered, a page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "audit",
    params(AuditQuery),
    responses((status = 200, description = "A page of entries", body = AuditPage), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn search(
    Extension(caller): Extension<Caller>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditPage>, Problem> {
    caller.needs(Role::Manager)?;
    let Query(query) = query.map_err(Problem::bad_request)?;
    let limit = match query.limit {
        None => 200,
        Some(n @ 1..=1000) => n as usize,
        Some(n) => {
            return Err(Problem::bad_request(format!(
                "limit {n} is out of range (1-1000)"
            )));
        }
    };
    if query.task.as_deref() == Some("") {
        return Err(Problem::bad_request(
            "task is empty: name a task id or its first characters",
        ));
    }
    let after = match query.after {
        None => 0,
        Some(n) => u64::try_from(n)
            .map_err(|_| Problem::bad_request(format!("after {n} is not an entry number")))?,
    };
    let (items, more) = with_org(&caller.org, move |org| {
        audit_page(org, after, query.employee, query.task, limit)
    })
    .await?
    .map_err(Problem::internal)?;
    Ok(Json(AuditPage {
        next_cursor: items.last().filter(|_| more).map(|e| e.seq),
        items,
    }))
}

/// What verifying found.
#[derive(Serialize, ToSchema)]
pub(super) struct VerifyView {
    /// Whether the chain and its checkpoints are intact.
    intact: bool,
    entries: u64,
    /// The hash of the last entry: keep it elsewhere, compare later.
    head: String,
    /// Signed checkpoints that matched the log.
    checkpoints: u64,
    /// Entries after the last signed checkpoint.
    unsigned_tail: u64,
    /// Every problem found, in log order.
    problems: Vec<String>,
    /// The public key the checkpoints are signed with (hex).
    public_key: String,
}

/// What to check besides the chain.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct VerifyQuery {
    /// A head hash recorded earlier: verify that it is still in the chain.
    #[param(pattern = "^[0-9a-f]{64}$")]
    expect_head: Option<String>,
}

/// `GET /api/v1/audit/verify`: check the chain and the signed checkpoints.
#[utoipa::path(
    get,
    path = "/api/v1/audit/verify",
    tag = "audit",
    params(VerifyQuery),
    responses((status = 200, description = "What verifying found", body = VerifyView), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn verify(
    Extension(caller): Extension<Caller>,
    query: Result<Query<VerifyQuery>, QueryRejection>,
) -> Result<Json<VerifyView>, Problem> {
    caller.needs(Role::Manager)?;
    let Query(query) = query.map_err(Problem::bad_request)?;
    if let Some(h) = &query.expect_head
        && (h.len() != 64 || !h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
    {
        return Err(Problem::bad_request(
            "expect_head is not a head hash (64 lowercase hex digits)",
        ));
    }
    let (v, public_key) = with_org(&caller.org, move |org| {
        org.verify_audit(query.expect_head.as_deref())
            .map(|v| (v, org.public_key()))
    })
    .await?
    .map_err(Problem::internal)?;
    Ok(Json(VerifyView {
        intact: v.is_intact(),
        entries: v.entries,
        head: v.head,
        checkpoints: v.checkpoints,
        unsigned_tail: v.unsigned_tail,
        problems: v.problems,
        public_key,
    }))
}

/// `GET /api/v1/audit/export` (managers and admins): the log and its
/// signed checkpoints as JSON Lines, to verify elsewhere with `clancy audit
/// verify --export FILE --public-key KEY`. The export is audited.
#[utoipa::path(
    get,
    path = "/api/v1/audit/export",
    tag = "audit",
    responses(
        (status = 200, description = "An entry per line, then the signed checkpoints", content_type = "application/x-ndjson", body = String),
        Refusals
    ),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn export(
    Extension(caller): Extension<Caller>,
) -> Result<axum::response::Response, Problem> {
    let operator = caller.needs(Role::Manager)?.clone();
    // A page of the log at a time; a failure midway aborts the body.
    streamed(&caller.org, "application/x-ndjson", move |org, out| {
        org.audit_export_to(&operator.name, out)
    })
    .await
}

/// A task's story.
#[derive(Serialize, ToSchema)]
pub(super) struct ExplainView {
    task: String,
    /// What it was asked, read, did or asked to do, what humans decided and
    /// what was rolled back, as `clancy audit explain` prints it (guest text
    /// escaped for people).
    text: String,
}

fn undo_problem(e: UndoError) -> Problem {
    let detail = e.to_string();
    match e {
        UndoError::UnknownAction(_) | UndoError::UnknownTask(_) => {
            Problem::new(StatusCode::NOT_FOUND, "Not in the audit log", detail)
        }
        UndoError::Org(OrgError::NotAllowed(why)) => {
            Problem::new(StatusCode::FORBIDDEN, "Not allowed", why)
        }
        UndoError::Org(other) => Problem::internal(other),
    }
}

/// `GET /api/v1/tasks/{id}/explain`: a plain-English account of a task.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}/explain",
    tag = "audit",
    params(("id" = String, Path, description = "The task id (or its first characters)")),
    responses((status = 200, description = "The task's story", body = ExplainView), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn explain(
    Extension(caller): Extension<Caller>,
    id: Result<axum::extract::Path<String>, PathRejection>,
) -> Result<Json<ExplainView>, Problem> {
    caller.needs(Role::Manager)?;
    let id = path_id(id)?;
    let task = id.clone();
    let text = with_org(&caller.org, move |org| org.explain(&task))
        .await?
        .map_err(undo_problem)?;
    Ok(Json(ExplainView { task: id, text }))
}

/// `POST /api/v1/undo`'s body: one action by its audit entry number, or
/// every write of a task.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UndoBody {
    /// An action's audit entry number (its result, or its intent).
    #[schema(minimum = 1)]
    action: Option<u64>,
    /// A task id: every completed write of it, newest first.
    task: Option<String>,
}

/// What became of each action.
#[derive(Serialize, ToSchema)]
pub(super) struct UndoView {
    /// One report per action: its entry, what it was, and the outcome
    /// (`undone`, `already-undone`, `refused`, `failed`, ...).
    #[schema(value_type = Vec<Object>)]
    reports: Vec<crate::org::UndoReport>,
    /// Whether everything asked for is undone now.
    all_undone: bool,
}

/// `POST /api/v1/undo`: undo through the employee's executor (its grant as
/// in force now, its rate limits), as the caller. Audited.
#[utoipa::path(
    post,
    path = "/api/v1/undo",
    tag = "audit",
    request_body = UndoBody,
    responses((status = 200, description = "What became of each action", body = UndoView), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn undo(
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<UndoView>, Problem> {
    let operator = caller.needs(Role::Manager)?.clone();
    let body: UndoBody = json_body(&headers, &body, r#"{"action": 42} or {"task": "…"}"#)?;
    enum Target {
        Action(u64),
        Task(String),
    }
    let target = match (body.action, body.task) {
        (Some(action), None) => Target::Action(action),
        (None, Some(task)) => Target::Task(task),
        _ => {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid body",
                "name exactly one of action or task",
            ));
        }
    };
    let reports = with_org(&caller.org, move |org| match target {
        Target::Action(action) => org.undo_action(action, &operator.name).map(|r| vec![r]),
        Target::Task(task) => org.undo_task(&task, &operator.name),
    })
    .await?
    .map_err(undo_problem)?;
    Ok(Json(UndoView {
        all_undone: reports.iter().all(crate::org::UndoReport::is_undone),
        reports,
    }))
}

/// A registered employee.
#[derive(Serialize, ToSchema)]
pub(super) struct EmployeeView {
    name: String,
    /// The SHA-256 its component is pinned by.
    component_sha256: Option<String>,
    /// What it may do, a line per part (component, grants, limits,
    /// notification targets, schedules), as its diffs in the audit log show.
    describe: Vec<String>,
    /// Whether an admin disabled it (it starts no task).
    disabled: bool,
}

/// The registered employees.
#[derive(Serialize, ToSchema)]
pub(super) struct EmployeeList {
    items: Vec<EmployeeView>,
}

/// `GET /api/v1/employees`: every registered employee and what it may do.
#[utoipa::path(
    get,
    path = "/api/v1/employees",
    tag = "employees",
    responses((status = 200, description = "The registered employees", body = EmployeeList), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn employees(
    Extension(caller): Extension<Caller>,
) -> Result<Json<EmployeeList>, Problem> {
    caller.needs(Role::Manager)?;
    let items = with_org(
        &caller.org,
        move |org| -> Result<Vec<EmployeeView>, crate::store::StoreError> {
            org.registered()?
                .iter()
                .map(|m| {
                    Ok(EmployeeView {
                        name: m.name.clone(),
                        component_sha256: m.component_sha256.clone(),
                        describe: crate::org::describe_employee(m),
                        disabled: org.disabled(&m.name)?.is_some(),
                    })
                })
                .collect()
        },
    )
    .await?
    .map_err(Problem::internal)?;
    Ok(Json(EmployeeList { items }))
}

/// `POST /api/v1/employees`'s body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SubmitBody {
    /// The employee's manifest (TOML); its `component` path is not read.
    manifest: String,
    /// The component, base64 (standard alphabet).
    component: String,
}

/// A submitted version that waits (or waited) for an admin.
#[derive(Serialize, ToSchema)]
pub(super) struct UpgradeView {
    id: String,
    employee: String,
    /// What changes: `+` added, `-` removed, `~` changed.
    diff: Vec<String>,
    requested_by: String,
    requested_at: chrono::DateTime<chrono::Utc>,
    status: crate::org::UpgradeStatus,
    decided_by: Option<String>,
}

impl From<crate::org::Upgrade> for UpgradeView {
    fn from(u: crate::org::Upgrade) -> UpgradeView {
        UpgradeView {
            id: u.id,
            employee: u.employee,
            diff: u.diff,
            requested_by: u.requested_by,
            requested_at: u.requested_at,
            status: u.status,
            decided_by: u.decided_by,
        }
    }
}

/// What submitting did.
#[derive(Serialize, ToSchema)]
pub(super) struct SubmitView {
    /// `in-force` (it only narrows, or changes nothing) or `pending`.
    status: String,
    /// What changes.
    diff: Vec<String>,
    /// When pending: the upgrade an admin decides.
    upgrade: Option<UpgradeView>,
}

/// Waiting versions.
#[derive(Serialize, ToSchema)]
pub(super) struct UpgradeList {
    items: Vec<UpgradeView>,
}

pub(super) fn upgrade_problem(e: crate::org::UpgradeError) -> Problem {
    use crate::org::UpgradeError;
    let detail = e.to_string();
    match e {
        UpgradeError::Invalid(_) => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid employee", detail)
        }
        UpgradeError::Unknown(_) => Problem::new(StatusCode::NOT_FOUND, "No such upgrade", detail),
        UpgradeError::Decided { .. } => Problem::new(
            StatusCode::CONFLICT,
            "The upgrade cannot be decided",
            detail,
        ),
        UpgradeError::NotAllowed(_) => Problem::new(StatusCode::FORBIDDEN, "Not allowed", detail),
        UpgradeError::Org(e) => Problem::internal(e),
    }
}

/// The largest `POST /api/v1/employees` body (a component of ~36 MiB, base64).
pub(super) const MAX_SUBMISSION_BYTES: usize = 48 * 1024 * 1024;

/// `POST /api/v1/employees`: submit an employee (new, or a new version):
/// it is compiled and checked, its component pinned, and compared with
/// the version in force. What only narrows is in force at once (200);
/// what may widen waits for an admin (202).
#[utoipa::path(
    post,
    path = "/api/v1/employees",
    tag = "employees",
    request_body = SubmitBody,
    responses(
        (status = 200, description = "In force", body = SubmitView),
        (status = 202, description = "Waits for an admin", body = SubmitView),
        Refusals
    ),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn submit(
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<axum::response::Response, Problem> {
    use axum::response::IntoResponse as _;
    use base64::Engine as _;
    let operator = caller.needs(Role::Manager)?.clone();
    let body: SubmitBody = json_body(
        &headers,
        &body,
        r#"{"manifest": "name = …", "component": "<base64>"}"#,
    )?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body.component.trim())
        .map_err(|e| {
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid employee",
                format!("the component is not base64: {e}"),
            )
        })?;
    let submitted = with_org(&caller.org, move |org| {
        org.submit_employee(&body.manifest, &bytes, &operator.name)
    })
    .await?
    .map_err(upgrade_problem)?;
    Ok(match submitted {
        crate::org::Submitted::InForce(diff) => Json(SubmitView {
            status: "in-force".into(),
            diff,
            upgrade: None,
        })
        .into_response(),
        crate::org::Submitted::Waiting(upgrade) => (
            StatusCode::ACCEPTED,
            Json(SubmitView {
                status: "pending".into(),
                diff: upgrade.diff.clone(),
                upgrade: Some(UpgradeView::from(*upgrade)),
            }),
        )
            .into_response(),
    })
}

/// `GET /api/v1/employees/upgrades` (admins): submitted versions that wait
/// or waited, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/employees/upgrades",
    tag = "employees",
    responses((status = 200, description = "Submitted versions", body = UpgradeList), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn upgrades(
    Extension(caller): Extension<Caller>,
) -> Result<Json<UpgradeList>, Problem> {
    caller.needs(Role::Admin)?;
    let all = with_org(&caller.org, move |org| org.upgrades())
        .await?
        .map_err(Problem::internal)?;
    Ok(Json(UpgradeList {
        items: all.into_iter().map(UpgradeView::from).collect(),
    }))
}

async fn decide_upgrade(
    caller: Caller,
    id: Result<axum::extract::Path<String>, PathRejection>,
    approve: bool,
) -> Result<Json<UpgradeView>, Problem> {
    let operator = caller.needs(Role::Admin)?.clone();
    let id = path_id(id)?;
    with_org(&caller.org, move |org| {
        org.decide_upgrade(&id, approve, &operator)
    })
    .await?
    .map(|u| Json(UpgradeView::from(u)))
    .map_err(upgrade_problem)
}

/// `POST /api/v1/employees/upgrades/{id}/approve` (admins): bring a waiting
/// version into force (409 if the employee changed since it was compared).
#[utoipa::path(
    post,
    path = "/api/v1/employees/upgrades/{id}/approve",
    tag = "employees",
    params(("id" = String, Path, description = "The upgrade (`up-…`)")),
    responses((status = 200, description = "In force", body = UpgradeView), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn approve_upgrade(
    Extension(caller): Extension<Caller>,
    id: Result<axum::extract::Path<String>, PathRejection>,
) -> Result<Json<UpgradeView>, Problem> {
    decide_upgrade(caller, id, true).await
}

/// `POST /api/v1/employees/upgrades/{id}/deny` (admins): refuse a waiting
/// version; the one in force stays.
#[utoipa::path(
    post,
    path = "/api/v1/employees/upgrades/{id}/deny",
    tag = "employees",
    params(("id" = String, Path, description = "The upgrade (`up-…`)")),
    responses((status = 200, description = "Refused", body = UpgradeView), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn deny_upgrade(
    Extension(caller): Extension<Caller>,
    id: Result<axum::extract::Path<String>, PathRejection>,
) -> Result<Json<UpgradeView>, Problem> {
    decide_upgrade(caller, id, false).await
}

async fn set_disabled(
    caller: Caller,
    name: Result<axum::extract::Path<String>, PathRejection>,
    disabled: bool,
) -> Result<StatusCode, Problem> {
    let operator = caller.needs(Role::Admin)?.clone();
    let name = path_id(name)?;
    with_org(&caller.org, move |org| {
        org.set_disabled(&name, disabled, &operator)
    })
    .await?
    .map_err(upgrade_problem)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/employees/{name}/disable` (admins): the employee starts no
/// task (API, schedule, trigger, `clancy run`); queued ones are not run.
#[utoipa::path(
    post,
    path = "/api/v1/employees/{name}/disable",
    tag = "employees",
    params(("name" = String, Path, description = "The employee")),
    responses((status = 204, description = "Disabled"), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn disable(
    Extension(caller): Extension<Caller>,
    name: Result<axum::extract::Path<String>, PathRejection>,
) -> Result<StatusCode, Problem> {
    set_disabled(caller, name, true).await
}

/// `POST /api/v1/employees/{name}/enable` (admins): undo a disable.
#[utoipa::path(
    post,
    path = "/api/v1/employees/{name}/enable",
    tag = "employees",
    params(("name" = String, Path, description = "The employee")),
    responses((status = 204, description = "Enabled"), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn enable(
    Extension(caller): Extension<Caller>,
    name: Result<axum::extract::Path<String>, PathRejection>,
) -> Result<StatusCode, Problem> {
    set_disabled(caller, name, false).await
}

/// Entries after `after` of `employee` and of tasks starting with `task`
/// (each if given), at most `limit`, and whether more follow: one task's
/// through the task index, else the log a page at a time (never all of it
/// in memory).
fn audit_page(
    org: &crate::org::Org,
    after: u64,
    employee: Option<String>,
    task: Option<String>,
    limit: usize,
) -> Result<(Vec<crate::audit::Entry>, bool), crate::store::StoreError> {
    const PAGE: usize = 1000;
    let wanted = |e: &crate::audit::Entry| {
        e.seq > after
            && employee.as_ref().is_none_or(|x| e.record.employee == *x)
            && task
                .as_ref()
                .is_none_or(|x| e.record.task.starts_with(x.as_str()))
    };
    let mut items = Vec::new();
    if let Some(t) = &task {
        items = org
            .audit()
            .entries_of_tasks(t)?
            .into_iter()
            .filter(|e| wanted(e))
            .take(limit + 1)
            .collect();
    } else {
        let mut cursor = after;
        loop {
            let page = org.audit().entries_after(cursor, PAGE)?;
            let full = page.len() == PAGE;
            cursor = page.last().map_or(cursor, |e| e.seq);
            items.extend(page.into_iter().filter(|e| wanted(e)));
            if items.len() > limit || !full {
                break;
            }
        }
        items.truncate(limit + 1);
    }
    let more = items.len() > limit;
    items.truncate(limit);
    Ok((items, more))
}
