//! The API's people routes: enrolling, signing in and out, operators
//! (admins only) and API tokens.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::api::{Problem, Refusals, json_body, path_id};
use super::auth::{Caller, Via, same_origin, session_cookie, set_cookie};
use super::{Shared, with_org};
use crate::accounts::SignInError;
use crate::operators::{Operator, Role, Token, valid_name};
use crate::org::OrgError;

/// `POST /api/v1/session`'s body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SignInBody {
    /// The operator's name.
    user: String,
    password: String,
    /// The 6-digit code from the authenticator app (admins and managers).
    totp: Option<String>,
    /// The operator's organisation (default: the daemon's first).
    #[schema(pattern = "^[a-z0-9-]{1,64}$")]
    org: Option<String>,
}

/// Who is signed in.
#[derive(Serialize, ToSchema)]
pub(super) struct SessionView {
    user: String,
    role: Role,
    /// How this request was authenticated: `session` or `token`.
    via: String,
    /// Send it back as `X-CSRF-Token` on every request that changes something.
    csrf_token: Option<String>,
}

fn problem_for_sign_in(e: &SignInError, now: DateTime<Utc>) -> Problem {
    match e {
        SignInError::Invalid | SignInError::CodeRequired => {
            Problem::new(StatusCode::UNAUTHORIZED, "Sign-in refused", e.to_string())
        }
        SignInError::Locked(until) => Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Account locked",
            "too many failed attempts: the account is locked for a while",
        )
        .retry_after(u64::try_from((*until - now).num_seconds()).unwrap_or(0) + 1),
        SignInError::NotEnrolled => Problem::new(
            StatusCode::FORBIDDEN,
            "Second factor missing",
            e.to_string(),
        ),
        SignInError::BadEnrolment => {
            Problem::new(StatusCode::FORBIDDEN, "Invalid enrolment", e.to_string())
        }
        SignInError::WeakPassword(_) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Password refused",
            e.to_string(),
        ),
        SignInError::Store(_) => Problem::internal(e),
    }
}

/// A login form posted from another site would sign a browser in as the
/// attacker: a sign-in that names an origin must name this daemon.
fn check_origin(shared: &Shared, headers: &HeaderMap) -> Result<(), Problem> {
    if headers.contains_key(header::ORIGIN) && !same_origin(shared, headers) {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "Cross-site request refused",
            "the request's Origin is not this daemon",
        ));
    }
    Ok(())
}

/// How the audit log names who tried: their name if it could be one.
fn named(user: &str) -> String {
    if valid_name(user) {
        user.to_string()
    } else {
        "(not a valid name)".into()
    }
}

/// `POST /api/v1/session`: sign in with a password (and a TOTP code for
/// admins and managers). Starts a server-side session: the cookie is
/// `HttpOnly; SameSite=Strict`, and any session the browser had ends.
#[utoipa::path(
    post,
    path = "/api/v1/session",
    tag = "session",
    request_body = SignInBody,
    responses(
        (status = 201, description = "Signed in; the session cookie is set", body = SessionView),
        Refusals
    )
)]
pub(super) async fn sign_in(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(super::tls::Peer(peer)): ConnectInfo<super::tls::Peer>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    shared.limiters.sign_in_attempt(peer.ip())?;
    check_origin(&shared, &headers)?;
    let body: SignInBody = json_body(
        &headers,
        &body,
        r#"{"user": "…", "password": "…", "totp": "123456"}"#,
    )?;
    let old = session_cookie(&headers);
    let absolute = shared.sessions.absolute;
    // An organisation that is not served refuses like a wrong password.
    let Some(org) = (match &body.org {
        None => shared.orgs.first(),
        Some(name) => shared.orgs.iter().find(|o| o.org() == name),
    })
    .cloned() else {
        return Err(problem_for_sign_in(&SignInError::Invalid, Utc::now()));
    };
    let every = shared.orgs.clone();
    let (operator, cookie, csrf) = with_org(&org, move |org| {
        let accounts = org.accounts();
        if let Some(old) = old {
            // The browser's previous session ends, whichever org it was in.
            for o in &every {
                o.accounts().end_session(&old).map_err(Problem::internal)?;
            }
        }
        let now = org.now();
        let who = named(&body.user);
        match accounts.sign_in(&body.user, &body.password, body.totp.as_deref(), now) {
            Ok(operator) => {
                let (cookie, session) = accounts
                    .start_session(&operator, now)
                    .map_err(Problem::internal)?;
                org.audit_operator_action(
                    "sign-in",
                    &who,
                    &format!("{who} signed in from {}", peer.ip()),
                )
                .map_err(Problem::internal)?;
                Ok((operator, cookie, session.csrf))
            }
            Err(e) => {
                if !matches!(e, SignInError::Store(_)) {
                    org.audit_operator_action(
                        "sign-in",
                        &who,
                        &format!("refused from {}: {e}", peer.ip()),
                    )
                    .map_err(Problem::internal)?;
                }
                Err(problem_for_sign_in(&e, now))
            }
        }
    })
    .await??;
    let mut response = (
        StatusCode::CREATED,
        Json(SessionView {
            user: operator.name,
            role: operator.role,
            via: "session".into(),
            csrf_token: Some(csrf),
        }),
    )
        .into_response();
    let cookie = set_cookie(&cookie, absolute.num_seconds(), shared.tls);
    if let Ok(value) = header::HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// `GET /api/v1/session`: who the caller is.
#[utoipa::path(
    get,
    path = "/api/v1/session",
    tag = "session",
    responses((status = 200, description = "The caller", body = SessionView), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn whoami(Extension(caller): Extension<Caller>) -> Json<SessionView> {
    let (via, csrf_token) = match &caller.via {
        Via::Token(_) => ("token", None),
        Via::Session { csrf, .. } => ("session", Some(csrf.clone())),
    };
    Json(SessionView {
        user: caller.operator.name.clone(),
        role: caller.operator.role,
        via: via.into(),
        csrf_token,
    })
}

/// `DELETE /api/v1/session`: sign out (the session ends on the server and
/// the cookie is cleared). A token caller has no session: nothing changes.
#[utoipa::path(
    delete,
    path = "/api/v1/session",
    tag = "session",
    responses((status = 204, description = "Signed out"), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn sign_out(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, Problem> {
    if let Via::Session { cookie, .. } = caller.via {
        let name = caller.operator.name.clone();
        with_org(&caller.org, move |org| -> Result<(), OrgError> {
            org.accounts().end_session(&cookie)?;
            org.audit_operator_action("sign-out", &name, &format!("{name} signed out"))
        })
        .await?
        .map_err(Problem::internal)?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    let cookie = set_cookie("", 0, shared.tls);
    if let Ok(value) = header::HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// `POST /api/v1/enrol`'s body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct EnrolBody {
    /// The one-time code (`enr_…`).
    #[schema(pattern = "^enr_[0-9a-f]{48}$")]
    code: String,
    /// At least 12 characters, not containing the operator's name.
    #[schema(min_length = 12, max_length = 1024)]
    password: String,
}

/// What enrolling gave.
#[derive(Serialize, ToSchema)]
pub(super) struct EnrolledView {
    user: String,
    role: Role,
    /// For admins and managers: add it to an authenticator app now; it is
    /// shown this once. Signing in needs a code from it.
    otpauth_uri: Option<String>,
}

/// `POST /api/v1/enrol`: spend a one-time enrolment code to set a
/// password (and, for admins and managers, a TOTP second factor).
#[utoipa::path(
    post,
    path = "/api/v1/enrol",
    tag = "session",
    request_body = EnrolBody,
    responses((status = 200, description = "Enrolled", body = EnrolledView), Refusals)
)]
pub(super) async fn enrol(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(super::tls::Peer(peer)): ConnectInfo<super::tls::Peer>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<EnrolledView>, Problem> {
    shared.limiters.sign_in_attempt(peer.ip())?;
    check_origin(&shared, &headers)?;
    let body: EnrolBody = json_body(&headers, &body, r#"{"code": "enr_…", "password": "…"}"#)?;
    // The code's organisation is the one that holds it; an unknown code is
    // refused (and audited) by the first.
    let orgs = shared.orgs.clone();
    let code = body.code.clone();
    let org = super::blocking(
        move || -> Result<Arc<crate::org::Org>, crate::store::StoreError> {
            for org in &orgs {
                if org.accounts().holds_enrolment(&code)? {
                    return Ok(org.clone());
                }
            }
            Ok(orgs[0].clone())
        },
    )
    .await
    .map_err(Problem::internal)?
    .map_err(Problem::internal)?;
    with_org(&org, move |org| {
        let now = org.now();
        match org.accounts().enrol(&body.code, &body.password, now) {
            Ok(enrolled) => {
                let name = &enrolled.operator.name;
                org.audit_operator_action(
                    "operators-enrolled",
                    name,
                    &format!(
                        "{name} set a password{} from {}",
                        if enrolled.otpauth.is_some() {
                            " and a second factor"
                        } else {
                            ""
                        },
                        peer.ip()
                    ),
                )
                .map_err(Problem::internal)?;
                Ok(Json(EnrolledView {
                    user: enrolled.operator.name,
                    role: enrolled.operator.role,
                    otpauth_uri: enrolled.otpauth,
                }))
            }
            Err(e) => {
                if matches!(e, SignInError::BadEnrolment) {
                    org.audit_operator_action(
                        "operators-enrolled",
                        "(unknown)",
                        &format!("refused from {}: {e}", peer.ip()),
                    )
                    .map_err(Problem::internal)?;
                }
                Err(problem_for_sign_in(&e, now))
            }
        }
    })
    .await?
}

/// An operator, as admins see them.
#[derive(Serialize, ToSchema)]
pub(super) struct OperatorView {
    name: String,
    role: Role,
    /// Whether they set a password (spent an enrolment code).
    enrolled: bool,
    /// The employees a user starts tasks for and sees the work of.
    employees: Vec<String>,
    /// Shown once, when one was just made.
    enrolment_code: Option<String>,
}

/// The operators.
#[derive(Serialize, ToSchema)]
pub(super) struct OperatorList {
    items: Vec<OperatorView>,
}

/// `POST /api/v1/operators`'s body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct OperatorBody {
    /// 1-64 letters, digits, `.`, `_`, `-` or `@`.
    #[schema(pattern = "^[A-Za-z0-9._@-]{1,64}$")]
    name: String,
    role: Role,
}

fn org_problem(e: OrgError) -> Problem {
    match e {
        OrgError::NotAllowed(why) => Problem::new(StatusCode::FORBIDDEN, "Not allowed", why),
        OrgError::Operator(e) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid operator",
            e.to_string(),
        ),
        other => Problem::internal(other),
    }
}

/// `GET /api/v1/operators` (admins): every operator.
#[utoipa::path(
    get,
    path = "/api/v1/operators",
    tag = "operators",
    responses((status = 200, description = "The operators", body = OperatorList), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn list_operators(
    Extension(caller): Extension<Caller>,
) -> Result<Json<OperatorList>, Problem> {
    caller.needs(Role::Admin)?;
    let items = with_org(
        &caller.org,
        move |org| -> Result<Vec<OperatorView>, OrgError> {
            let accounts = org.accounts();
            org.operators()
                .list()?
                .into_iter()
                .map(|o| {
                    Ok(OperatorView {
                        enrolled: accounts.enrolled(&o.name)?,
                        employees: org.operators().assigned(&o.name)?,
                        name: o.name,
                        role: o.role,
                        enrolment_code: None,
                    })
                })
                .collect()
        },
    )
    .await?
    .map_err(org_problem)?;
    Ok(Json(OperatorList { items }))
}

/// `POST /api/v1/operators` (admins): add an operator or change their
/// role (their sessions end). A new operator gets an enrolment code.
#[utoipa::path(
    post,
    path = "/api/v1/operators",
    tag = "operators",
    request_body = OperatorBody,
    responses((status = 201, description = "Added or changed", body = OperatorView), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn put_operator(
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let admin = caller.needs(Role::Admin)?.name.clone();
    let body: OperatorBody = json_body(&headers, &body, r#"{"name": "…", "role": "manager"}"#)?;
    let role = body.role;
    let view = with_org(&caller.org, move |org| -> Result<OperatorView, OrgError> {
        let operator = Operator {
            name: body.name,
            role,
        };
        org.add_operator(&operator, Some(&admin))?;
        let enrolled = org.accounts().enrolled(&operator.name)?;
        let enrolment_code = if enrolled {
            None
        } else {
            Some(org.invite(&operator.name, &admin)?)
        };
        Ok(OperatorView {
            employees: org.operators().assigned(&operator.name)?,
            name: operator.name,
            role: operator.role,
            enrolled,
            enrolment_code,
        })
    })
    .await?
    .map_err(org_problem)?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// `POST /api/v1/operators/{name}/enrolment` (admins): a new one-time
/// enrolment code (it replaces the operator's password and second factor
/// when spent).
#[utoipa::path(
    post,
    path = "/api/v1/operators/{name}/enrolment",
    tag = "operators",
    params(("name" = String, Path, description = "The operator")),
    responses((status = 201, description = "A new code, shown once", body = OperatorView), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn new_enrolment(
    Extension(caller): Extension<Caller>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let admin = caller.needs(Role::Admin)?.name.clone();
    let name = path_id(name)?;
    let view = with_org(
        &caller.org,
        move |org| -> Result<Option<OperatorView>, OrgError> {
            let Some(operator) = org.operators().get(&name)? else {
                return Ok(None);
            };
            let code = org.invite(&operator.name, &admin)?;
            Ok(Some(OperatorView {
                enrolled: org.accounts().enrolled(&operator.name)?,
                employees: org.operators().assigned(&operator.name)?,
                name: operator.name,
                role: operator.role,
                enrolment_code: Some(code),
            }))
        },
    )
    .await?
    .map_err(org_problem)?
    .ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "No such operator",
            "no such operator in this organisation",
        )
    })?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// `POST /api/v1/operators/{name}/employees`'s body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AssignBody {
    /// Registered employees (replaces the list; empty clears it; at most 100).
    #[schema(max_items = 100)]
    employees: Vec<String>,
}

/// `POST /api/v1/operators/{name}/employees` (admins): the employees a user
/// starts tasks for and sees the work of.
#[utoipa::path(
    post,
    path = "/api/v1/operators/{name}/employees",
    tag = "operators",
    params(("name" = String, Path, description = "The operator")),
    request_body = AssignBody,
    responses((status = 200, description = "Assigned", body = OperatorView), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn assign(
    Extension(caller): Extension<Caller>,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<OperatorView>, Problem> {
    let admin = caller.needs(Role::Admin)?.name.clone();
    let name = path_id(name)?;
    let body: AssignBody = json_body(&headers, &body, r#"{"employees": ["…"]}"#)?;
    if body.employees.len() > 100 {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid body",
            "at most 100 employees",
        ));
    }
    let view = with_org(
        &caller.org,
        move |org| -> Result<Option<OperatorView>, OrgError> {
            let Some(operator) = org.operators().get(&name)? else {
                return Ok(None);
            };
            org.assign(&operator.name, &body.employees, &admin)?;
            Ok(Some(OperatorView {
                enrolled: org.accounts().enrolled(&operator.name)?,
                employees: org.operators().assigned(&operator.name)?,
                name: operator.name,
                role: operator.role,
                enrolment_code: None,
            }))
        },
    )
    .await?
    .map_err(org_problem)?
    .ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "No such operator",
            "no such operator in this organisation",
        )
    })?;
    Ok(Json(view))
}

/// An API token, never its secret (but once, when it is made).
#[derive(Serialize, ToSchema)]
pub(super) struct TokenView {
    id: String,
    operator: String,
    role: Role,
    created_by: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    revoked: bool,
    /// Only in the answer that made it: send it as `Authorization: Bearer …`.
    secret: Option<String>,
}

impl TokenView {
    fn of(t: Token, secret: Option<String>) -> TokenView {
        TokenView {
            id: t.id,
            operator: t.operator,
            role: t.role,
            created_by: t.created_by,
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked: t.revoked,
            secret,
        }
    }
}

/// Tokens.
#[derive(Serialize, ToSchema)]
pub(super) struct TokenList {
    items: Vec<TokenView>,
}

/// `POST /api/v1/tokens`'s body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenBody {
    /// Who it acts as (default: the caller; only admins name others).
    #[schema(pattern = "^[A-Za-z0-9._@-]{1,64}$")]
    operator: Option<String>,
    /// Never above the caller's or the operator's.
    role: Role,
    /// Days until it expires (1-365, default 30).
    #[schema(minimum = 1, maximum = 365)]
    days: Option<u32>,
}

/// `GET /api/v1/tokens`: admins see every token, others their own.
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "tokens",
    responses((status = 200, description = "Tokens, never their secrets", body = TokenList), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn list_tokens(
    Extension(caller): Extension<Caller>,
) -> Result<Json<TokenList>, Problem> {
    let me = caller.needs(Role::User)?.clone();
    let tokens = with_org(&caller.org, move |org| org.operators().tokens())
        .await?
        .map_err(Problem::internal)?;
    Ok(Json(TokenList {
        items: tokens
            .into_iter()
            .filter(|t| me.role == Role::Admin || t.operator == me.name)
            .map(|t| TokenView::of(t, None))
            .collect(),
    }))
}

/// `POST /api/v1/tokens`: make a token (for yourself; admins for anyone),
/// with a role no higher than yours. The secret is in this answer only.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "tokens",
    request_body = TokenBody,
    responses((status = 201, description = "The token and its secret, shown once", body = TokenView), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn create_token(
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let me = caller.needs(Role::User)?.clone();
    let body: TokenBody = json_body(&headers, &body, r#"{"role": "manager", "days": 30}"#)?;
    let role = body.role;
    if role > me.role {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "Not allowed",
            format!("a token's role may not be above yours ({})", me.role),
        ));
    }
    let days = body.days.unwrap_or(30);
    if !(1..=crate::operators::MAX_TOKEN_DAYS).contains(&days) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid token",
            "a token lives from 1 to 365 days",
        ));
    }
    let operator = body.operator.unwrap_or_else(|| me.name.clone());
    let (token, secret) = with_org(&caller.org, move |org| {
        org.create_token(&operator, role, days, &me.name)
    })
    .await?
    .map_err(org_problem)?;
    Ok((
        StatusCode::CREATED,
        Json(TokenView::of(token, Some(secret))),
    )
        .into_response())
}

/// `POST /api/v1/tokens/{id}/revoke`: revoke a token at once (admins, or
/// its operator).
#[utoipa::path(
    post,
    path = "/api/v1/tokens/{id}/revoke",
    tag = "tokens",
    params(("id" = String, Path, description = "The token's id (`tk-…`)")),
    responses((status = 200, description = "Revoked", body = TokenView), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn revoke_token(
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<TokenView>, Problem> {
    let me = caller.needs(Role::User)?.clone();
    let id = path_id(id)?;
    let revoked = with_org(&caller.org, move |org| -> Result<Option<Token>, OrgError> {
        // Someone else's token is "not found" to a non-admin, never theirs to probe.
        match org.operators().token(&id)? {
            Some(t) if me.role == Role::Admin || t.operator == me.name => {
                org.revoke_token(&id, &me.name).map(Some)
            }
            _ => Ok(None),
        }
    })
    .await?
    .map_err(org_problem)?
    .ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "No such token",
            "no such token in this organisation",
        )
    })?;
    Ok(Json(TokenView::of(revoked, None)))
}
