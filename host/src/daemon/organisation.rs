//! `GET /api/v1/organisation`: the caller's organisation, the only one
//! whose records they reach on this daemon.

use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;

use super::api::{Problem, Refusals};
use super::auth::Caller;
use super::{streamed, with_org};
use crate::operators::Role;

/// An organisation and what it holds.
#[derive(Serialize, ToSchema)]
pub(super) struct OrganisationView {
    /// Its name (`--org`).
    name: String,
    operators: usize,
    employees: usize,
    /// Requests waiting for a human.
    pending_approvals: usize,
    /// Tasks waiting for a worker.
    queued_tasks: usize,
    audit_entries: u64,
}

/// `GET /api/v1/organisation`: the caller's organisation.
#[utoipa::path(
    get,
    path = "/api/v1/organisation",
    tag = "organisation",
    responses((status = 200, description = "The caller's organisation", body = OrganisationView), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn mine(
    Extension(caller): Extension<Caller>,
) -> Result<Json<OrganisationView>, Problem> {
    caller.needs(Role::User)?;
    let view = with_org(&caller.org, |org| {
        Ok::<_, crate::org::OrgError>(OrganisationView {
            name: org.org().to_string(),
            operators: org.operators().list()?.len(),
            employees: org.registered()?.len(),
            pending_approvals: org
                .approvals()
                .list()?
                .iter()
                .filter(|a| a.status == crate::approvals::Status::Pending)
                .count(),
            queued_tasks: org.queued_tasks()?,
            audit_entries: org.audit().len()?,
        })
    })
    .await?
    .map_err(Problem::internal)?;
    Ok(Json(view))
}

/// `GET /api/v1/organisation/export` (admins): everything the caller's
/// organisation holds, as one JSON document, without any secret (no
/// password hash, second factor, token hash or signing secret), streamed
/// as it is read. Audited.
#[utoipa::path(
    get,
    path = "/api/v1/organisation/export",
    tag = "organisation",
    responses((status = 200, description = "The organisation's data: operators, tokens, employees, upgrades, approvals, tasks, notifications, sandbox, files, audit, checkpoints", body = Object), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn export(
    Extension(caller): Extension<Caller>,
) -> Result<axum::response::Response, Problem> {
    let admin = caller.needs(Role::Admin)?.name.clone();
    // Written as it is read (the audit log a page at a time); a failure
    // midway aborts the body.
    streamed(&caller.org, "application/json", move |org, out| {
        org.export_organisation_to(&admin, out)
    })
    .await
}
