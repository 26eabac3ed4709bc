//! The API's notification routes: the outbox (managers and admins), the
//! webhook signing secret (admins, audited), and delivering what is due now.
//! Receivers' URLs are shown by their origin only: a webhook URL often
//! carries its own secret in the path.

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::api::{PageQuery, Problem, Refusals, decode_cursor, encode_cursor};
use super::auth::Caller;
use super::with_org;
use crate::notify::{DeliveryState, Notification};
use crate::operators::Role;

/// A notification in the outbox.
#[derive(Serialize, ToSchema)]
pub(super) struct NotificationView {
    /// `nt-…`, also sent as `X-Clancy-Delivery`.
    id: String,
    /// What it is about (`requested`, `escalated`, `decided`, ...).
    event: String,
    /// The request it is about.
    approval: String,
    /// The receiver's origin (its path is not shown).
    target: String,
    /// `pending`, `delivered` or `gave-up`.
    #[schema(value_type = String)]
    state: DeliveryState,
    attempts: u32,
    next_at: DateTime<Utc>,
    last_error: Option<String>,
}

impl From<&Notification> for NotificationView {
    fn from(n: &Notification) -> NotificationView {
        NotificationView {
            id: n.id.clone(),
            event: n.event.name().to_string(),
            approval: n.approval.clone(),
            target: crate::notify::origin(&n.url),
            state: n.state,
            attempts: n.attempts,
            next_at: n.next_at,
            last_error: n.last_error.clone(),
        }
    }
}

/// A page of the outbox, in the order queued.
#[derive(Serialize, ToSchema)]
pub(super) struct NotificationList {
    items: Vec<NotificationView>,
    /// Pass as `cursor` for the next page; absent on the last.
    next_cursor: Option<String>,
}

/// `GET /api/v1/notifications`: what was sent, what waits for a retry,
/// what was given up; in the order queued, a page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/notifications",
    tag = "notifications",
    params(PageQuery),
    responses((status = 200, description = "A page of the outbox", body = NotificationList), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn list(
    Extension(caller): Extension<Caller>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<NotificationList>, Problem> {
    caller.needs(Role::Manager)?;
    let Query(query) = query.map_err(Problem::bad_request)?;
    let limit = query.limit()?;
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let (page, next) = with_org(&caller.org, move |org| {
        org.outbox().page(after.as_ref(), limit)
    })
    .await?
    .map_err(Problem::internal)?;
    Ok(Json(NotificationList {
        items: page.iter().map(NotificationView::from).collect(),
        next_cursor: next.map(|(time, id)| encode_cursor(time, &id)),
    }))
}

/// The webhook signing secret.
#[derive(Serialize, ToSchema)]
pub(super) struct SecretView {
    /// `whsec_…`: receivers verify `webhook-signature` with it (Standard Webhooks).
    secret: String,
}

/// `GET /api/v1/notifications/secret` (admins): the signing secret; that it
/// was shown, and to whom, is audited.
#[utoipa::path(
    get,
    path = "/api/v1/notifications/secret",
    tag = "notifications",
    responses((status = 200, description = "The signing secret", body = SecretView), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn secret(
    Extension(caller): Extension<Caller>,
) -> Result<Json<SecretView>, Problem> {
    let admin = caller.needs(Role::Admin)?.name.clone();
    let secret = with_org(&caller.org, move |org| {
        let secret = org.outbox().secret()?;
        org.audit_operator_action(
            "notify-secret",
            "",
            &format!("the webhook signing secret was shown to {admin}"),
        )?;
        Ok::<_, crate::org::OrgError>(crate::notify::secret_text(&secret))
    })
    .await?
    .map_err(Problem::internal)?;
    Ok(Json(SecretView { secret }))
}

/// What one delivery round did.
#[derive(Serialize, ToSchema)]
pub(super) struct DeliveryView {
    delivered: usize,
    retrying: usize,
    gave_up: usize,
}

/// `POST /api/v1/notifications/deliver`: deliver what is due now, without
/// waiting for the next timer round.
#[utoipa::path(
    post,
    path = "/api/v1/notifications/deliver",
    tag = "notifications",
    responses((status = 200, description = "What the round did", body = DeliveryView), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn deliver(
    Extension(caller): Extension<Caller>,
) -> Result<Json<DeliveryView>, Problem> {
    caller.needs(Role::Manager)?;
    let d = with_org(&caller.org, |org| org.deliver_notifications())
        .await?
        .map_err(Problem::internal)?;
    Ok(Json(DeliveryView {
        delivered: d.delivered.len(),
        retrying: d.retrying.len(),
        gave_up: d.gave_up.len(),
    }))
}
