//! OAuth connections through the daemon: an admin starts one (`POST
//! /api/v1/connections` answers the provider's URL), the provider sends the
//! operator's browser back to `GET /oauth/callback` (the provider's
//! configured `redirect_uri`), which finishes it in the organisation whose
//! single-use state it carries; connections are listed and revoked.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::api::{Problem, Refusals, json_body, path_id};
use super::auth::Caller;
use super::{Shared, blocking, with_org};
use crate::operators::Role;
use crate::org::{Connection, ConnectionError};
use crate::vault::Secret;

/// A connection, never its tokens.
#[derive(Serialize, ToSchema)]
pub(super) struct ConnectionView {
    id: String,
    provider: String,
    /// The integration it serves.
    #[schema(value_type = String)]
    integration: crate::integrations::Integration,
    scopes: Vec<String>,
    /// `active`, `needs-reauthorisation` or `revoked`.
    #[schema(value_type = String)]
    status: crate::org::ConnectionStatus,
    created_by: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    access_expires_at: Option<DateTime<Utc>>,
    refreshes: u32,
    note: Option<String>,
    /// Whether its integration's calls go through it (`use`).
    in_use: bool,
}

impl From<Connection> for ConnectionView {
    fn from(c: Connection) -> ConnectionView {
        ConnectionView {
            id: c.id,
            provider: c.provider,
            integration: c.integration,
            scopes: c.scopes,
            status: c.status,
            created_by: c.created_by,
            created_at: c.created_at,
            expires_at: c.expires_at,
            access_expires_at: c.access_expires_at,
            refreshes: c.refreshes,
            note: c.note,
            in_use: false,
        }
    }
}

impl ConnectionView {
    /// The view, saying whether its integration uses it.
    fn of(
        c: Connection,
        bindings: &std::collections::BTreeMap<crate::integrations::Integration, String>,
    ) -> ConnectionView {
        let in_use = bindings.get(&c.integration) == Some(&c.id);
        ConnectionView {
            in_use,
            ..ConnectionView::from(c)
        }
    }
}

/// The connections.
#[derive(Serialize, ToSchema)]
pub(super) struct ConnectionList {
    items: Vec<ConnectionView>,
}

fn problem(e: ConnectionError) -> Problem {
    let detail = e.to_string();
    match e {
        ConnectionError::UnknownProvider(_) | ConnectionError::Unknown(_) => {
            Problem::new(StatusCode::NOT_FOUND, "Not found", detail)
        }
        ConnectionError::NotAllowed(_) => {
            Problem::new(StatusCode::FORBIDDEN, "Not allowed", detail)
        }
        ConnectionError::BadState => {
            Problem::new(StatusCode::BAD_REQUEST, "Authorization refused", detail)
        }
        ConnectionError::Expired(_) => Problem::new(StatusCode::CONFLICT, "Expired", detail),
        ConnectionError::OAuth(crate::oauth::OAuthError::Config(_)) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "OAuth configuration",
            detail,
        ),
        ConnectionError::OAuth(_) => {
            Problem::new(StatusCode::BAD_GATEWAY, "The provider failed", detail)
        }
        ConnectionError::Vault(_) | ConnectionError::Org(_) => Problem::internal(detail),
    }
}

/// `GET /api/v1/connections` (admins): the organisation's connections.
#[utoipa::path(
    get,
    path = "/api/v1/connections",
    tag = "connections",
    responses((status = 200, description = "Connections, never their tokens", body = ConnectionList), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn list(
    Extension(caller): Extension<Caller>,
) -> Result<Json<ConnectionList>, Problem> {
    caller.needs(Role::Admin)?;
    let (all, bindings) = with_org(&caller.org, |org| {
        Ok::<_, crate::store::StoreError>((org.connections()?, org.bindings()?))
    })
    .await?
    .map_err(Problem::internal)?;
    Ok(Json(ConnectionList {
        items: all
            .into_iter()
            .map(|c| ConnectionView::of(c, &bindings))
            .collect(),
    }))
}

/// `POST /api/v1/connections`'s body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ConnectBody {
    /// The provider, as named in `oauth.toml`.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    provider: String,
}

/// Where the operator approves the connection.
#[derive(Serialize, ToSchema)]
pub(super) struct Started {
    /// Open it in a browser; the provider sends it back to the daemon's
    /// `/oauth/callback` (the provider's `redirect_uri`).
    authorize_url: String,
}

/// `POST /api/v1/connections` (admins): start connecting a provider (PKCE,
/// a single-use state valid 10 minutes, only the scopes the grants need).
#[utoipa::path(
    post,
    path = "/api/v1/connections",
    tag = "connections",
    request_body = ConnectBody,
    responses((status = 201, description = "Started", body = Started), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn start(
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Started>), Problem> {
    let admin = caller.needs(Role::Admin)?.name.clone();
    let body: ConnectBody = json_body(&headers, &body, r#"{"provider": "slack"}"#)?;
    let (authorize_url, _state) = with_org(&caller.org, move |org| {
        org.begin_connection(&body.provider, &admin)
    })
    .await?
    .map_err(problem)?;
    Ok((StatusCode::CREATED, Json(Started { authorize_url })))
}

/// `POST /api/v1/connections/{id}/revoke` (admins): revoke at the provider
/// (RFC 7009) where it can be, delete the tokens here either way.
#[utoipa::path(
    post,
    path = "/api/v1/connections/{id}/revoke",
    tag = "connections",
    params(("id" = String, Path, description = "The connection (`cn-…`)")),
    responses((status = 200, description = "Revoked", body = ConnectionView), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn revoke(
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ConnectionView>, Problem> {
    let admin = caller.needs(Role::Admin)?.name.clone();
    let id = path_id(id)?;
    let lookup = id.clone();
    let after = with_org(&caller.org, move |org| {
        org.revoke_connection(&lookup, &admin)?;
        Ok::<_, ConnectionError>(org.connection(&lookup)?)
    })
    .await?
    .map_err(problem)?;
    after
        .map(|c| Json(ConnectionView::from(c)))
        .ok_or_else(|| problem(ConnectionError::Unknown(id)))
}

/// `POST /api/v1/connections/{id}/use` (admins): every employee's calls
/// to the connection's integration go through it from their next task on.
#[utoipa::path(
    post,
    path = "/api/v1/connections/{id}/use",
    tag = "connections",
    params(("id" = String, Path, description = "The connection (`cn-…`)")),
    responses((status = 200, description = "In use", body = ConnectionView), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn use_connection(
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ConnectionView>, Problem> {
    let admin = caller.needs(Role::Admin)?.name.clone();
    let id = path_id(id)?;
    let c = with_org(&caller.org, move |org| org.use_connection(&id, &admin))
        .await?
        .map_err(problem)?;
    Ok(Json(ConnectionView {
        in_use: true,
        ..ConnectionView::from(c)
    }))
}

/// `POST /api/v1/connections/sandbox`'s body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SandboxBody {
    /// The integration (`gmail`, `slack`, `hubspot`, `google-calendar`, `quickbooks`).
    integration: String,
}

/// What `POST /api/v1/connections/sandbox` did.
#[derive(Serialize, ToSchema)]
pub(super) struct SandboxUsed {
    integration: String,
    /// Whether it used a connection until now.
    was_connected: bool,
}

/// `POST /api/v1/connections/sandbox` (admins): an integration's calls go
/// to the sandbox workspace from every employee's next task on.
#[utoipa::path(
    post,
    path = "/api/v1/connections/sandbox",
    tag = "connections",
    request_body = SandboxBody,
    responses((status = 200, description = "The sandbox is used", body = SandboxUsed), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn use_sandbox(
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<SandboxUsed>, Problem> {
    let admin = caller.needs(Role::Admin)?.name.clone();
    let body: SandboxBody = json_body(&headers, &body, r#"{"integration": "gmail"}"#)?;
    let integration = crate::integrations::Integration::parse_connected(&body.integration)
        .map_err(|why| {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Unknown integration", why)
        })?;
    let was_connected = with_org(&caller.org, move |org| org.use_sandbox(integration, &admin))
        .await?
        .map_err(problem)?;
    Ok(Json(SandboxUsed {
        integration: integration.name().to_string(),
        was_connected,
    }))
}

/// What the provider sends the browser back with.
#[derive(Deserialize)]
pub(super) struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

fn page(status: StatusCode, text: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        format!("{text}\n"),
    )
        .into_response()
}

/// `GET /oauth/callback`: the provider sends the operator back; the state
/// names the organisation and the started authorization (spent now).
pub(super) async fn callback(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(super::tls::Peer(peer)): ConnectInfo<super::tls::Peer>,
    query: Result<Query<Callback>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(p) = shared.limiters.sign_in_attempt(peer.ip()) {
        return p.into_response();
    }
    let Ok(Query(query)) = query else {
        return page(
            StatusCode::BAD_REQUEST,
            "This is not a callback from a provider.",
        );
    };
    if query.error.is_some() {
        return page(
            StatusCode::BAD_REQUEST,
            "The provider did not grant the connection.",
        );
    }
    let (Some(state), Some(code)) = (query.state, query.code) else {
        return page(
            StatusCode::BAD_REQUEST,
            "The callback has no code or state.",
        );
    };
    let orgs = shared.orgs.clone();
    let finished = blocking(move || {
        let state = Secret::new(state);
        let org = orgs
            .iter()
            .find(|o| o.holds_authorization(state.expose()).unwrap_or(false))
            .unwrap_or(&orgs[0]);
        org.finish_connection(&state, &Secret::new(code))
    })
    .await;
    match finished {
        Ok(Ok(c)) => page(
            StatusCode::OK,
            &format!(
                "Connected {} ({}). You can close this page.",
                c.provider, c.id
            ),
        ),
        Ok(Err(ConnectionError::BadState)) => page(
            StatusCode::BAD_REQUEST,
            "This authorization is unknown, already used or expired: start again.",
        ),
        Ok(Err(e)) => {
            tracing::warn!("a connection could not be finished: {e}");
            page(
                StatusCode::BAD_GATEWAY,
                "The connection could not be finished; see the audit log.",
            )
        }
        Err(e) => page(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}
