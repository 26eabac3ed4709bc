//! Local stand-ins for the five services, speaking their documented wire
//! formats on 127.0.0.1: the Gmail API v1, the Slack Web API, HubSpot CRM
//! v3, Google Calendar v3 and the QuickBooks Online Accounting API, plus
//! an OAuth token endpoint that issues the bearer tokens they check. They
//! hold the sandbox's seed data (so the example employees find the same
//! world), record every request, and can be told to misbehave once on a
//! path (429 with Retry-After, 5xx, a huge or broken body, a redirect, a
//! slow answer, a refused token).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use clancy::providers::sandbox::seed;
use serde_json::{Value, json};

/// One request a stand-in received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub body: Value,
    pub token: String,
    pub at: Instant,
}

/// How the next request on a path misbehaves.
#[derive(Clone, Debug)]
pub enum Fault {
    /// This status, with `Retry-After` seconds if given.
    Status(u16, Option<u64>),
    /// A body larger than the host reads.
    Huge,
    /// Something that is not JSON.
    Garbage,
    /// A redirect to another host.
    Redirect,
    /// An answer after this long.
    Slow(Duration),
    /// JSON of the right shape carrying what the grant does not cover
    /// (a message of another label, a post in another channel).
    Stray,
}

/// The services' state.
#[derive(Default)]
pub struct World {
    pub seen: Vec<Seen>,
    faults: VecDeque<(String, Fault)>,
    /// Access tokens that work.
    pub valid: HashSet<String>,
    /// Every access token ever issued.
    pub issued: Vec<String>,
    /// Every refresh token ever issued.
    pub refresh_issued: Vec<String>,
    /// Refresh refused from now on.
    pub refuse_refresh: bool,
    counter: u64,
    labels: Vec<(String, String)>,
    messages: Vec<Value>,
    /// Raw messages sent (decoded).
    pub sent: Vec<String>,
    channels: Vec<(String, String)>,
    /// Slack messages by channel id, oldest first: (ts, user, text).
    pub slack: BTreeMap<String, Vec<(String, String, String)>>,
    contacts: Vec<Value>,
    /// Deals by id: (name, stage, amount, contact id).
    pub deals: BTreeMap<String, (String, String, String, String)>,
    /// Events by (calendar, id).
    pub events: BTreeMap<(String, String), Value>,
    invoices: Vec<Value>,
    /// Purchases by id.
    pub purchases: BTreeMap<String, Value>,
    request_ids: BTreeMap<String, Value>,
}

pub const PORTAL_ID: &str = "4242";
pub const REALM: &str = "9130357";
pub const SALES_CALENDAR: &str = "sales@group.calendar.google.com";

/// The Slack channel id of `#name`.
pub fn channel_id(name: &str) -> String {
    format!("C{}", name.trim_start_matches('#').to_uppercase())
}

/// The Gmail label id of `name`.
pub fn label_id(name: &str) -> String {
    match name {
        "INBOX" | "SENT" => name.to_string(),
        other => format!("Label_{other}"),
    }
}

impl Seen {
    /// `METHOD /path?query` (the query's parameters sorted).
    pub fn line(&self) -> String {
        let query: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if query.is_empty() {
            format!("{} {}", self.method, self.path)
        } else {
            format!("{} {}?{}", self.method, self.path, query.join("&"))
        }
    }
}

impl World {
    /// The requests since the last call, as [`Seen::line`]s; forgets them.
    pub fn take_lines(&mut self) -> Vec<String> {
        self.seen.drain(..).map(|s| s.line()).collect()
    }

    fn seeded() -> World {
        let base = chrono::Utc::now();
        let mut w = World::default();
        for name in ["INBOX", "SENT", "support", "receipts", "sales", "hr"] {
            w.labels.push((label_id(name), name.to_string()));
        }
        for m in seed::mail(base) {
            let received = chrono::DateTime::parse_from_rfc3339(&m.received_at)
                .map(|t| t.timestamp_millis())
                .unwrap_or(0);
            w.messages.push(json!({
                "id": m.id, "threadId": format!("t{}", m.id),
                "labelIds": m.labels.iter().map(|l| label_id(l)).collect::<Vec<_>>(),
                "snippet": m.body.chars().take(40).collect::<String>(),
                "internalDate": received.to_string(),
                "payload": {
                    "mimeType": "text/plain",
                    "headers": [
                        {"name": "From", "value": m.from},
                        {"name": "To", "value": m.to.join(", ")},
                        {"name": "Subject", "value": m.subject},
                    ],
                    "body": {"size": m.body.len(), "data": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(m.body.as_bytes())},
                },
            }));
        }
        for (name, messages) in seed::chat(base) {
            let id = channel_id(name);
            w.channels
                .push((id.clone(), name.trim_start_matches('#').to_string()));
            let history = messages
                .into_iter()
                .enumerate()
                .map(|(i, m)| (format!("1700000000.00010{i}"), m.author, m.text))
                .collect();
            w.slack.insert(id, history);
        }
        for c in seed::contacts() {
            let (first, last) = c.name.split_once(' ').unwrap_or((&c.name, ""));
            w.contacts.push(json!({
                "id": c.id,
                "properties": {"firstname": first, "lastname": last, "email": c.email,
                    "company": c.company, "phone": c.phone, "notes": c.notes},
                "createdAt": "2026-01-05T10:00:00.000Z", "updatedAt": "2026-11-01T10:00:00.000Z", "archived": false,
            }));
        }
        for d in seed::deals() {
            w.deals.insert(
                d.id.clone(),
                (
                    d.name,
                    d.stage,
                    clancy::providers::money(d.amount_cents),
                    d.contact_id,
                ),
            );
        }
        for e in seed::events(base) {
            w.events.insert(
                (SALES_CALENDAR.to_string(), e.id.clone()),
                json!({
                    "kind": "calendar#event", "id": e.id, "status": "confirmed",
                    "summary": e.title, "description": e.description,
                    "start": {"dateTime": e.start}, "end": {"dateTime": e.end},
                    "attendees": e.attendees.iter().map(|a| json!({"email": a, "responseStatus": "needsAction"})).collect::<Vec<_>>(),
                }),
            );
        }
        for (n, i) in seed::invoices(base).into_iter().enumerate() {
            let balance = if i.status == "paid" {
                0
            } else {
                i.amount_cents
            };
            w.invoices.push(json!({
                "Id": (130 + n).to_string(), "DocNumber": i.id, "TxnDate": i.issued_on, "DueDate": i.due_on,
                "TotalAmt": amount(i.amount_cents), "Balance": amount(balance),
                "CurrencyRef": {"value": i.currency, "name": "British Pound Sterling"},
                "CustomerRef": {"value": (58 + n).to_string(), "name": i.customer},
                "domain": "QBO", "sparse": false, "SyncToken": "0",
            }));
        }
        w
    }

    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// Misbehave once on the next request whose path starts with `path`
    /// (or, given as `METHOD /path`, whose method is that too).
    pub fn fault(&mut self, path: &str, fault: Fault) {
        self.faults.push_back((path.to_string(), fault));
    }

    /// The requests to paths starting with `prefix`.
    pub fn to(&self, prefix: &str) -> Vec<Seen> {
        self.seen
            .iter()
            .filter(|s| s.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Refuse every token issued so far (as a provider does after a revocation).
    pub fn revoke_all(&mut self) {
        self.valid.clear();
    }
}

fn amount(cents: i64) -> Value {
    serde_json::from_str(&clancy::providers::money(cents)).unwrap_or(Value::Null)
}

/// The running stand-ins.
pub struct Services {
    pub base: String,
    pub world: Arc<Mutex<World>>,
}

impl Services {
    /// Start them on 127.0.0.1.
    pub fn start() -> Result<Services> {
        let world = Arc::new(Mutex::new(World::seeded()));
        let shared = world.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let app = axum::Router::new().fallback(
                    move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                        let world = shared.clone();
                        async move { serve(world, method, uri, headers, body).await }
                    },
                );
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let _ = ready_tx.send(listener.local_addr().expect("addr"));
                let _ = axum::serve(listener, app).await;
            });
        });
        let addr = ready_rx.recv_timeout(Duration::from_secs(10))?;
        Ok(Services {
            base: format!("http://{addr}"),
            world,
        })
    }

    /// The world, locked.
    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn answer(status: u16, body: Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", "application/json; charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

fn google_error(code: u16, message: &str, status: &str) -> Response {
    answer(
        code,
        json!({"error": {"code": code, "message": message, "status": status,
            "errors": [{"message": message, "domain": "global", "reason": status.to_lowercase()}]}}),
    )
}

async fn serve(
    world: Arc<Mutex<World>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query: BTreeMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    if path == "/token" {
        let form: BTreeMap<String, String> =
            url::form_urlencoded::parse(&body).into_owned().collect();
        let mut w = world
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        return token(&mut w, &form);
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let fault = {
        let mut w = world
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        w.seen.push(Seen {
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            body: json_body.clone(),
            token: token.clone(),
            at: Instant::now(),
        });
        // `METHOD /path` misbehaves for that method only.
        let line = format!("{method} {path}");
        let found = w
            .faults
            .iter()
            .position(|(p, _)| path.starts_with(p.as_str()) || line.starts_with(p.as_str()));
        found.and_then(|i| w.faults.remove(i)).map(|(_, f)| f)
    };
    let mut stray = false;
    match fault {
        Some(Fault::Status(code, retry)) => {
            let mut r = google_error(code, "Rate limit exceeded or backend error", "UNAVAILABLE");
            if path.starts_with("/api/") {
                r = answer(code, json!({"ok": false, "error": "ratelimited"}));
            }
            if let Some(secs) = retry {
                r.headers_mut()
                    .insert("retry-after", secs.to_string().parse().expect("header"));
            }
            return r;
        }
        Some(Fault::Huge) => {
            return answer(200, json!({ "padding": "x".repeat(5 * 1024 * 1024) }));
        }
        Some(Fault::Garbage) => return (StatusCode::OK, "<html>oops</html>").into_response(),
        Some(Fault::Redirect) => {
            return (
                StatusCode::TEMPORARY_REDIRECT,
                [("location", "http://10.9.8.7/elsewhere")],
                "",
            )
                .into_response();
        }
        Some(Fault::Slow(d)) => tokio::time::sleep(d).await,
        Some(Fault::Stray) => stray = true,
        None => {}
    }
    let mut w = world
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !w.valid.contains(&token) {
        if path.starts_with("/api/") {
            return answer(200, json!({"ok": false, "error": "invalid_auth"}));
        }
        if path.starts_with("/v3/company") {
            return answer(
                401,
                json!({"Fault": {"Error": [{"Message": "message=AuthenticationFailed; errorCode=003200; statusCode=401", "code": "3200"}], "type": "AUTHENTICATION"}, "time": "2026-11-26T10:00:00.000-08:00"}),
            );
        }
        return google_error(
            401,
            "Request had invalid authentication credentials.",
            "UNAUTHENTICATED",
        );
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let m = method.as_str();
    match segments.as_slice() {
        ["gmail", "v1", "users", "me", rest @ ..] => {
            gmail(&mut w, m, rest, &query, &json_body, stray)
        }
        ["api", call] => slack(&mut w, call, &query, &json_body, stray),
        ["account-info", "v3", "details"] => answer(
            200,
            json!({"portalId": PORTAL_ID.parse::<u64>().unwrap_or(0), "timeZone": "Europe/London", "companyCurrency": "GBP", "utcOffset": "+00:00"}),
        ),
        ["crm", "v3", "objects", rest @ ..] => hubspot(&mut w, m, rest, &query, &json_body),
        ["calendar", "v3", "calendars", cal, "events", rest @ ..] => {
            let cal = cal.to_string();
            calendar(&mut w, m, &cal, rest, &query, &json_body)
        }
        ["v3", "company", realm, rest @ ..] if *realm == REALM => {
            quickbooks(&mut w, m, rest, &query, &json_body)
        }
        _ => google_error(404, "Not Found", "NOT_FOUND"),
    }
}

fn token(w: &mut World, form: &BTreeMap<String, String>) -> Response {
    let grant = form.get("grant_type").map(String::as_str);
    match grant {
        Some("authorization_code") => {}
        Some("refresh_token") => {
            let known = form
                .get("refresh_token")
                .is_some_and(|r| w.refresh_issued.last() == Some(r));
            if w.refuse_refresh || !known {
                return answer(
                    400,
                    json!({"error": "invalid_grant", "error_description": "grant request is invalid"}),
                );
            }
        }
        _ => return answer(400, json!({"error": "unsupported_grant_type"})),
    }
    let n = w.next();
    let access = format!("at-{n}-{}", uuid::Uuid::new_v4().simple());
    let refresh = format!("rt-{n}-{}", uuid::Uuid::new_v4().simple());
    w.valid.insert(access.clone());
    w.issued.push(access.clone());
    w.refresh_issued.push(refresh.clone());
    answer(
        200,
        json!({"access_token": access, "token_type": "Bearer", "expires_in": 3600, "refresh_token": refresh}),
    )
}

fn gmail_message(w: &World, id: &str) -> Option<Value> {
    w.messages.iter().find(|m| m["id"] == id).cloned()
}

fn gmail(
    w: &mut World,
    method: &str,
    rest: &[&str],
    query: &BTreeMap<String, String>,
    body: &Value,
    stray: bool,
) -> Response {
    match (method, rest) {
        ("GET", ["labels"]) => answer(
            200,
            json!({"labels": w.labels.iter().map(|(id, name)| json!({"id": id, "name": name,
                "type": if id.starts_with("Label_") { "user" } else { "system" }})).collect::<Vec<_>>()}),
        ),
        ("GET", ["messages"]) => {
            let label = query.get("labelIds").cloned().unwrap_or_default();
            let q = query.get("q").cloned().unwrap_or_default().to_lowercase();
            let max: usize = query
                .get("maxResults")
                .and_then(|m| m.parse().ok())
                .unwrap_or(100);
            let start: usize = query
                .get("pageToken")
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            let matching: Vec<&Value> = w
                .messages
                .iter()
                // A stray answer lists the mail *outside* the label asked for.
                .filter(|m| {
                    stray
                        != m["labelIds"]
                            .as_array()
                            .is_some_and(|l| l.iter().any(|x| *x == label.as_str()))
                })
                .filter(|m| q.is_empty() || m.to_string().to_lowercase().contains(&q))
                .collect();
            // Two a page, to make the client follow pageToken.
            let page = max.min(2);
            let ids: Vec<Value> = matching
                .iter()
                .skip(start)
                .take(page)
                .map(|m| json!({"id": m["id"], "threadId": m["threadId"]}))
                .collect();
            let mut out = json!({"messages": ids, "resultSizeEstimate": matching.len()});
            if start + page < matching.len() {
                out["nextPageToken"] = json!((start + page).to_string());
            }
            answer(200, out)
        }
        ("GET", ["messages", id]) => match gmail_message(w, id) {
            Some(m) => answer(200, m),
            None => google_error(404, "Requested entity was not found.", "NOT_FOUND"),
        },
        ("POST", ["messages", "send"]) => {
            let raw = body["raw"].as_str().unwrap_or_default();
            let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw) else {
                return google_error(400, "Invalid value for ByteString", "INVALID_ARGUMENT");
            };
            let n = w.next();
            let id = format!("18c{n:05x}");
            w.sent.push(String::from_utf8_lossy(&bytes).into_owned());
            w.messages.push(json!({"id": id, "threadId": id, "labelIds": ["SENT"], "internalDate": "0", "payload": {"mimeType": "text/plain", "headers": [], "body": {"size": 0}}}));
            answer(200, json!({"id": id, "threadId": id, "labelIds": ["SENT"]}))
        }
        ("POST", ["messages", id, "modify"]) => {
            let Some(m) = w.messages.iter_mut().find(|m| m["id"] == *id) else {
                return google_error(404, "Requested entity was not found.", "NOT_FOUND");
            };
            if let (Some(labels), Some(add)) =
                (m["labelIds"].as_array_mut(), body["addLabelIds"].as_array())
            {
                labels.extend(add.iter().cloned());
            }
            answer(200, m.clone())
        }
        _ => google_error(404, "Not Found", "NOT_FOUND"),
    }
}

fn slack(
    w: &mut World,
    call: &str,
    query: &BTreeMap<String, String>,
    body: &Value,
    stray: bool,
) -> Response {
    match call {
        "conversations.list" => {
            let start: usize = query
                .get("cursor")
                .and_then(|c| c.strip_prefix("dXNlcjo").and_then(|n| n.parse().ok()))
                .unwrap_or(0);
            let page: Vec<Value> = w.channels.iter().skip(start).take(2)
                .map(|(id, name)| json!({"id": id, "name": name, "is_channel": true, "is_archived": false, "is_member": true}))
                .collect();
            let next = if start + 2 < w.channels.len() {
                format!("dXNlcjo{}", start + 2)
            } else {
                String::new()
            };
            answer(
                200,
                json!({"ok": true, "channels": page, "response_metadata": {"next_cursor": next}}),
            )
        }
        "conversations.history" => {
            let channel = query.get("channel").cloned().unwrap_or_default();
            let Some(history) = w.slack.get(&channel) else {
                return answer(200, json!({"ok": false, "error": "channel_not_found"}));
            };
            let limit: usize = query
                .get("limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(100);
            let mut messages: Vec<Value> = history
                .iter()
                .filter(|(ts, _, _)| query.get("latest").is_none_or(|l| ts <= l) && query.get("oldest").is_none_or(|o| ts >= o))
                .rev()
                .take(limit)
                .map(|(ts, user, text)| json!({"type": "message", "user": user, "text": text, "ts": ts}))
                .collect();
            if messages.is_empty() && query.contains_key("latest") {
                messages = Vec::new();
            }
            answer(
                200,
                json!({"ok": true, "messages": messages, "has_more": false, "pin_count": 0}),
            )
        }
        "chat.postMessage" => {
            let channel = body["channel"].as_str().unwrap_or_default().to_string();
            if !w.slack.contains_key(&channel) {
                return answer(200, json!({"ok": false, "error": "channel_not_found"}));
            }
            let n = w.next();
            let ts = format!("1800000000.{n:06}");
            let text = body["text"].as_str().unwrap_or_default().to_string();
            let posted_in = if stray {
                channel_id("#random")
            } else {
                channel.clone()
            };
            w.slack.entry(channel).or_default().push((
                ts.clone(),
                "UCLANCYBOT".into(),
                text.clone(),
            ));
            answer(
                200,
                json!({"ok": true, "channel": posted_in, "ts": ts,
                "message": {"type": "message", "user": "UCLANCYBOT", "text": text, "ts": ts}}),
            )
        }
        "chat.delete" => {
            let channel = body["channel"].as_str().unwrap_or_default().to_string();
            let ts = body["ts"].as_str().unwrap_or_default().to_string();
            let Some(history) = w.slack.get_mut(&channel) else {
                return answer(200, json!({"ok": false, "error": "channel_not_found"}));
            };
            let before = history.len();
            history.retain(|(t, _, _)| *t != ts);
            if history.len() == before {
                return answer(200, json!({"ok": false, "error": "message_not_found"}));
            }
            answer(200, json!({"ok": true, "channel": channel, "ts": ts}))
        }
        _ => answer(200, json!({"ok": false, "error": "unknown_method"})),
    }
}

fn hubspot_deal(id: &str, d: &(String, String, String, String)) -> Value {
    json!({"id": id, "properties": {"dealname": d.0, "dealstage": d.1, "amount": d.2},
        "associations": {"contacts": {"results": [{"id": d.3, "type": "deal_to_contact"}]}},
        "createdAt": "2026-10-01T09:00:00.000Z", "updatedAt": "2026-11-20T09:00:00.000Z", "archived": false})
}

fn hubspot_missing() -> Response {
    answer(
        404,
        json!({"status": "error", "message": "resource not found", "correlationId": "aeb5f871-7f07-4993-9211-075dc63e7cbf", "category": "OBJECT_NOT_FOUND"}),
    )
}

fn hubspot(
    w: &mut World,
    method: &str,
    rest: &[&str],
    query: &BTreeMap<String, String>,
    body: &Value,
) -> Response {
    match (method, rest) {
        ("POST", ["contacts", "search"]) => {
            let q = body["query"].as_str().unwrap_or_default().to_lowercase();
            let after: usize = body["after"]
                .as_str()
                .and_then(|a| a.parse().ok())
                .unwrap_or(0);
            let matching: Vec<&Value> = w
                .contacts
                .iter()
                .filter(|c| q.is_empty() || c["properties"].to_string().to_lowercase().contains(&q))
                .collect();
            let page: Vec<Value> = matching
                .iter()
                .skip(after)
                .take(2)
                .map(|c| (*c).clone())
                .collect();
            let mut out = json!({"total": matching.len(), "results": page});
            if after + 2 < matching.len() {
                out["paging"] = json!({"next": {"after": (after + 2).to_string()}});
            }
            answer(200, out)
        }
        ("GET", ["contacts", id]) => match w.contacts.iter().find(|c| c["id"] == *id) {
            Some(c) => answer(200, c.clone()),
            None => hubspot_missing(),
        },
        ("GET", ["deals"]) => {
            let after: usize = query.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
            let all: Vec<Value> = w.deals.iter().map(|(id, d)| hubspot_deal(id, d)).collect();
            let page: Vec<Value> = all.iter().skip(after).take(2).cloned().collect();
            let mut out = json!({"results": page});
            if after + 2 < all.len() {
                out["paging"] =
                    json!({"next": {"after": (after + 2).to_string(), "link": "?after="}});
            }
            answer(200, out)
        }
        ("GET", ["deals", id]) => match w.deals.get(*id) {
            Some(d) => answer(200, hubspot_deal(id, d)),
            None => hubspot_missing(),
        },
        ("PATCH", ["deals", id]) => {
            let Some(d) = w.deals.get_mut(*id) else {
                return hubspot_missing();
            };
            if let Some(stage) = body
                .pointer("/properties/dealstage")
                .and_then(Value::as_str)
            {
                d.1 = stage.to_string();
            }
            let d = d.clone();
            let mut out = hubspot_deal(id, &d);
            out.as_object_mut().map(|o| o.remove("associations"));
            answer(200, out)
        }
        _ => hubspot_missing(),
    }
}

fn calendar(
    w: &mut World,
    method: &str,
    cal: &str,
    rest: &[&str],
    query: &BTreeMap<String, String>,
    body: &Value,
) -> Response {
    let not_found = || google_error(404, "Not Found", "NOT_FOUND");
    match (method, rest) {
        ("GET", []) => {
            let (from, to) = (
                query.get("timeMin").cloned().unwrap_or_default(),
                query.get("timeMax").cloned().unwrap_or_default(),
            );
            let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
            let (Some(from), Some(to)) = (parse(&from), parse(&to)) else {
                return google_error(400, "Bad Request", "INVALID_ARGUMENT");
            };
            let mut items: Vec<Value> = w
                .events
                .iter()
                .filter(|((c, _), e)| c == cal && e["status"] != "cancelled")
                .filter(|(_, e)| {
                    let s = e
                        .pointer("/start/dateTime")
                        .and_then(Value::as_str)
                        .and_then(parse);
                    let n = e
                        .pointer("/end/dateTime")
                        .and_then(Value::as_str)
                        .and_then(parse);
                    matches!((s, n), (Some(s), Some(n)) if s < to && n > from)
                })
                .map(|(_, e)| e.clone())
                .collect();
            items.sort_by(|a, b| {
                a["start"]["dateTime"]
                    .as_str()
                    .cmp(&b["start"]["dateTime"].as_str())
            });
            answer(
                200,
                json!({"kind": "calendar#events", "summary": cal, "items": items}),
            )
        }
        ("POST", []) => {
            let id = body["id"].as_str().unwrap_or_default().to_string();
            let key = (cal.to_string(), id.clone());
            if w.events.contains_key(&key) {
                return google_error(
                    409,
                    "The requested identifier already exists.",
                    "ALREADY_EXISTS",
                );
            }
            let mut event = body.clone();
            event["kind"] = json!("calendar#event");
            event["status"] = json!("confirmed");
            w.events.insert(key, event.clone());
            answer(200, event)
        }
        ("GET", [id]) => match w.events.get(&(cal.to_string(), id.to_string())) {
            Some(e) if e["status"] == "cancelled" => {
                google_error(410, "Resource has been deleted", "GONE")
            }
            Some(e) => answer(200, e.clone()),
            None => not_found(),
        },
        ("PATCH", [id]) => match w.events.get_mut(&(cal.to_string(), id.to_string())) {
            Some(e) => {
                if let Some(attendees) = body.get("attendees") {
                    e["attendees"] = attendees.clone();
                }
                answer(200, e.clone())
            }
            None => not_found(),
        },
        ("DELETE", [id]) => match w.events.get_mut(&(cal.to_string(), id.to_string())) {
            Some(e) if e["status"] == "cancelled" => {
                google_error(410, "Resource has been deleted", "GONE")
            }
            Some(e) => {
                e["status"] = json!("cancelled");
                (StatusCode::NO_CONTENT, "").into_response()
            }
            None => not_found(),
        },
        _ => not_found(),
    }
}

fn qb_fault(status: u16, message: &str, detail: &str, code: &str) -> Response {
    answer(
        status,
        json!({"Fault": {"Error": [{"Message": message, "Detail": detail, "code": code}], "type": "ValidationFault"}, "time": "2026-11-26T10:00:00.000-08:00"}),
    )
}

fn quickbooks(
    w: &mut World,
    method: &str,
    rest: &[&str],
    query: &BTreeMap<String, String>,
    body: &Value,
) -> Response {
    match (method, rest) {
        ("GET", ["query"]) => {
            let q = query.get("query").cloned().unwrap_or_default();
            let number = |word: &str| {
                q.split_whitespace()
                    .skip_while(|w| !w.eq_ignore_ascii_case(word))
                    .nth(1)
                    .and_then(|n| n.parse::<usize>().ok())
            };
            if !q.starts_with("SELECT * FROM Invoice") {
                return qb_fault(400, "Invalid query", "QueryParserError", "4000");
            }
            let (start, max) = (
                number("STARTPOSITION").unwrap_or(1),
                number("MAXRESULTS").unwrap_or(100),
            );
            let page: Vec<Value> = w
                .invoices
                .iter()
                .skip(start - 1)
                .take(max)
                .cloned()
                .collect();
            answer(
                200,
                json!({"QueryResponse": {"Invoice": page, "startPosition": start, "maxResults": max}, "time": "2026-11-26T10:00:00.000-08:00"}),
            )
        }
        ("POST", ["purchase"]) if query.get("operation").map(String::as_str) == Some("void") => {
            let id = body["Id"].as_str().unwrap_or_default();
            let Some(p) = w.purchases.get_mut(id) else {
                return qb_fault(
                    400,
                    "Object Not Found",
                    "Object Not Found : Something you're trying to use has been made inactive or is not found.",
                    "610",
                );
            };
            if p["SyncToken"] != body["SyncToken"] {
                return qb_fault(
                    400,
                    "Stale Object Error",
                    "Stale Object Error : You and another user were working on the same thing.",
                    "5010",
                );
            }
            let next = p["SyncToken"]
                .as_str()
                .and_then(|s| s.parse::<u32>().ok())
                .unwrap_or(0)
                + 1;
            p["SyncToken"] = json!(next.to_string());
            p["TotalAmt"] = json!(0);
            p["PrivateNote"] = json!(format!(
                "Voided - {}",
                p["PrivateNote"].as_str().unwrap_or("")
            ));
            answer(
                200,
                json!({"Purchase": p.clone(), "time": "2026-11-26T10:00:00.000-08:00"}),
            )
        }
        ("POST", ["purchase"]) => {
            let request_id = query.get("requestid").cloned().unwrap_or_default();
            if let Some(first) = w.request_ids.get(&request_id) {
                return answer(200, first.clone());
            }
            let total: f64 = body["Line"]
                .as_array()
                .map(|l| l.iter().filter_map(|x| x["Amount"].as_f64()).sum())
                .unwrap_or(0.0);
            let n = w.next();
            let id = format!("{}", 900 + n);
            let mut p = body.clone();
            p["Id"] = json!(id);
            p["SyncToken"] = json!("0");
            p["TotalAmt"] = json!((total * 100.0).round() / 100.0);
            p["domain"] = json!("QBO");
            w.purchases.insert(id, p.clone());
            let out = json!({"Purchase": p, "time": "2026-11-26T10:00:00.000-08:00"});
            if !request_id.is_empty() {
                w.request_ids.insert(request_id, out.clone());
            }
            answer(200, out)
        }
        ("GET", ["purchase", id]) => match w.purchases.get(*id) {
            Some(p) => answer(
                200,
                json!({"Purchase": p, "time": "2026-11-26T10:00:00.000-08:00"}),
            ),
            None => qb_fault(400, "Object Not Found", "Object Not Found", "610"),
        },
        _ => qb_fault(
            400,
            "Unsupported Operation",
            "Operation not supported",
            "500",
        ),
    }
}
