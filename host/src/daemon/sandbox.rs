//! The sandbox workspace through the API: what is in it (managers), mail
//! from outside delivered into it (admins: it sets off mail triggers), and
//! filling it with its seed data (admins). Both changes are audited.

use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::api::{Problem, Refusals, json_body};
use super::auth::Caller;
use super::with_org;
use crate::operators::Role;

/// `GET /api/v1/sandbox`: everything in the workspace, as `clancy sandbox
/// show --json` prints it. Guest-written text is JSON-escaped but otherwise
/// as written: escape it before showing it to people.
#[utoipa::path(
    get,
    path = "/api/v1/sandbox",
    tag = "sandbox",
    responses((status = 200, description = "The workspace: mail, chat, contacts, deals, events, invoices, expense_reports", body = Object), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn show(
    Extension(caller): Extension<Caller>,
) -> Result<Json<serde_json::Value>, Problem> {
    caller.needs(Role::Manager)?;
    let snapshot = with_org(&caller.org, |org| org.sandbox().snapshot())
        .await?
        .map_err(Problem::internal)?;
    Ok(Json(
        serde_json::to_value(snapshot).map_err(Problem::internal)?,
    ))
}

/// `POST /api/v1/sandbox/mail`'s body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MailBody {
    /// The label it is filed under (and INBOX).
    #[schema(min_length = 1, max_length = 100)]
    label: String,
    /// Who it is from (an email address).
    #[schema(min_length = 3, max_length = 320)]
    from: String,
    #[schema(max_length = 1000)]
    subject: String,
    #[schema(max_length = 65536)]
    body: String,
}

/// A delivered mail.
#[derive(Serialize, ToSchema)]
pub(super) struct Received {
    id: String,
}

fn invalid(detail: &str) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid mail",
        detail.to_string(),
    )
}

/// `POST /api/v1/sandbox/mail` (admins): deliver a mail from outside into
/// the workspace, as if someone had written in (it sets off mail triggers).
#[utoipa::path(
    post,
    path = "/api/v1/sandbox/mail",
    tag = "sandbox",
    request_body = MailBody,
    responses((status = 201, description = "Delivered", body = Received), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn receive(
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Received>), Problem> {
    let admin = caller.needs(Role::Admin)?.name.clone();
    let mail: MailBody = json_body(
        &headers,
        &body,
        r#"{"label": "support", "from": "pat@customer.example", "subject": "…", "body": "…"}"#,
    )?;
    let label = mail.label.trim();
    if label.is_empty() || label.chars().count() > 100 || mail.label.chars().any(char::is_control) {
        return Err(invalid(
            "label is a label name (1-100 characters, no control characters)",
        ));
    }
    if !mail.from.contains('@')
        || mail.from.chars().count() > 320
        || mail
            .from
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(invalid("from is an email address"));
    }
    if mail.subject.chars().count() > 1000 || mail.body.chars().count() > 65536 {
        return Err(invalid(
            "the subject (1000) or the body (65536 characters) is too long",
        ));
    }
    let id = with_org(&caller.org, move |org| {
        let id =
            org.sandbox()
                .receive_mail(&mail.from, mail.label.trim(), &mail.subject, &mail.body)?;
        org.audit_operator_action(
            "sandbox-receive",
            &id,
            &format!("{admin} delivered a mail into the sandbox workspace"),
        )?;
        Ok::<_, crate::org::OrgError>(id)
    })
    .await?
    .map_err(Problem::internal)?;
    Ok((StatusCode::CREATED, Json(Received { id })))
}

/// `POST /api/v1/sandbox/seed`'s body.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct SeedBody {
    /// Replace what is there with the seed data.
    #[serde(default)]
    reset: bool,
}

/// What seeding did.
#[derive(Serialize, ToSchema)]
pub(super) struct Seeded {
    reset: bool,
}

/// `POST /api/v1/sandbox/seed` (admins): fill the workspace with its seed
/// data; one that has data is replaced only with `reset` (409 otherwise).
#[utoipa::path(
    post,
    path = "/api/v1/sandbox/seed",
    tag = "sandbox",
    request_body(content = Option<SeedBody>, description = "`{\"reset\": true}` to replace existing data (the body may be empty)"),
    responses((status = 200, description = "Seeded", body = Seeded), Refusals),
    security(("bearer" = []), ("session" = []))
)]
pub(super) async fn seed(
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Seeded>, Problem> {
    let admin = caller.needs(Role::Admin)?.name.clone();
    let SeedBody { reset } = if body.iter().all(u8::is_ascii_whitespace) {
        SeedBody::default()
    } else {
        json_body(&headers, &body, r#"{"reset": true}"#)?
    };
    with_org(&caller.org, move |org| {
        if org.sandbox().is_seeded().map_err(Problem::internal)? && !reset {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "The workspace has data",
                "the sandbox workspace already has data; pass {\"reset\": true} to replace it with the seed data",
            ));
        }
        // Audited first: a reset that cannot be recorded does not happen.
        org.audit_operator_action(
            "sandbox-seed",
            if reset { "reset" } else { "first seed" },
            &format!("the sandbox workspace was filled with its seed data by {admin}"),
        )
        .map_err(Problem::internal)?;
        org.sandbox().seed().map_err(Problem::internal)
    })
    .await??;
    Ok(Json(Seeded { reset }))
}
