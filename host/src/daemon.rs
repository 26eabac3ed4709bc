//! The daemon: `clancy serve` owns one organisation's data dir and keeps
//! time for it.
//!
//! At start it records tasks a killed process left open and finishes
//! approved actions a crash interrupted. Then, every tick, without anyone
//! typing a command, it moves requests along their escalation ladders,
//! expires the overdue ones, ends widenings whose time ran out, delivers
//! due notifications (with their retries) and starts the scheduled tasks
//! that are due (`[[schedule]]` in a registered employee's manifest). It serves `/healthz`, `/readyz`
//! and Prometheus `/metrics` over HTTP, on loopback unless told otherwise,
//! and checks every request's `Host` (no DNS rebinding). SIGTERM or Ctrl-C
//! stop it gracefully: no new tick starts, the one running finishes.
//!
//! The API (`/api/v1`, JSON, errors as RFC 9457 problem+json) takes a
//! bearer token (`clancy tokens create`) that acts as one operator with a
//! role: managers and admins list the pending queue, approve or deny, and
//! start a task for a registered employee.
//!
//! The [`Org`] is blocking (sled, wasmtime): every call into it runs on
//! tokio's blocking pool, so a slow store or receiver never stalls the
//! HTTP side or the timer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::approvals::{Approval, Status};
use crate::notify::DeliveryState;
use crate::operators::{Operator, Role};
use crate::org::Org;
use crate::org::{DecideError, Verdict};

/// How the daemon runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Time between two timer rounds.
    pub tick: Duration,
    /// Allow a non-loopback address without TLS.
    pub insecure_http: bool,
}

/// The daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address would expose the API in clear text.
    #[error(
        "{0} is not a loopback address: serving it would send operators' traffic in clear text; listen on 127.0.0.1, or pass --insecure-http behind a TLS-terminating proxy"
    )]
    NotLoopback(SocketAddr),
    /// Binding failed.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// Start-up work on the data dir failed.
    #[error("{0}")]
    Start(String),
}

/// What the timer has done since start, for `/metrics`.
#[derive(Default)]
struct Counters {
    rounds: AtomicU64,
    failed_rounds: AtomicU64,
    expired: AtomicU64,
    escalated: AtomicU64,
    delivered: AtomicU64,
    gave_up: AtomicU64,
    tasks_completed: AtomicU64,
    tasks_failed: AtomicU64,
    tasks_trapped: AtomicU64,
    schedules_failed: AtomicU64,
}

struct Shared {
    org: Arc<Org>,
    counters: Counters,
    /// `Host` values requests may carry (empty: any IP address with `port`).
    hosts: Vec<String>,
    /// The port it listens on.
    port: u16,
}

/// A bound daemon, not yet serving.
pub struct Daemon {
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    tick: Duration,
}

impl Daemon {
    /// Check the address, bind it, and do the start-up work on the data dir
    /// (close interrupted tasks, finish interrupted approved actions).
    pub async fn bind(org: Arc<Org>, config: &Config) -> Result<Daemon, ServeError> {
        if !config.listen.ip().is_loopback() && !config.insecure_http {
            return Err(ServeError::NotLoopback(config.listen));
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| ServeError::Bind {
                addr: config.listen,
                reason: e.to_string(),
            })?;
        let addr = listener.local_addr().map_err(|e| ServeError::Bind {
            addr: config.listen,
            reason: e.to_string(),
        })?;
        let start = org.clone();
        blocking(move || -> Result<(), String> {
            start
                .record_interrupted_tasks()
                .map_err(|e| e.to_string())?;
            start.resume_approved().map_err(|e| e.to_string())?;
            Ok(())
        })
        .await
        .and_then(|r| r)
        .map_err(ServeError::Start)?;
        let port = addr.port();
        let mut hosts = vec![
            addr.to_string(),
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
        ];
        if config.listen.ip().is_unspecified() {
            // Bound to every address: requests name it by an address.
            hosts.clear();
        }
        Ok(Daemon {
            listener,
            shared: Arc::new(Shared {
                org,
                counters: Counters::default(),
                hosts,
                port,
            }),
            tick: config.tick,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve and keep time until `shutdown` resolves; then stop accepting,
    /// let the running timer round finish, and return.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let timer = tokio::spawn(keep_time(self.shared.clone(), self.tick, stop_rx));
        let app = axum::Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .route("/api/v1/approvals", get(list_approvals))
            .route("/api/v1/approvals/{id}/approve", post(approve))
            .route("/api/v1/approvals/{id}", get(get_approval))
            .route("/api/v1/approvals/{id}/deny", post(deny))
            .route("/api/v1/approvals/{id}/answer", post(answer))
            .route("/api/v1/tasks", post(start_task))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .layer(axum::middleware::from_fn_with_state(
                self.shared.clone(),
                check_host,
            ))
            .with_state(self.shared.clone());
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                let _ = stop_tx.send(true);
            })
            .await;
        // The round in progress finishes; no new one starts.
        if let Err(e) = timer.await {
            tracing::error!("the timer stopped abnormally: {e}");
        }
        served
    }
}

/// Run `f` on the blocking pool; a panic in it becomes an error.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("a host task failed: {e}"))
}

/// Every `tick`: escalate, expire, end widenings, deliver notifications.
async fn keep_time(
    shared: Arc<Shared>,
    tick: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => return,
        }
        let round = shared.clone();
        let done = blocking(move || timer_round(&round)).await;
        shared.counters.rounds.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = done.and_then(|r| r) {
            shared
                .counters
                .failed_rounds
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!("timer round failed: {e}");
        }
    }
}

/// One round of the timer, on a blocking thread.
/// Each step runs whatever the others did: a request the queue cannot
/// read does not stop notifications or schedules. Errors are joined.
fn timer_round(shared: &Shared) -> Result<(), String> {
    let org = &shared.org;
    let c = &shared.counters;
    let mut errors = Vec::new();
    match org.tick() {
        Ok(changed) => {
            for a in &changed {
                match a.status {
                    Status::Expired => c.expired.fetch_add(1, Ordering::Relaxed),
                    _ => c.escalated.fetch_add(1, Ordering::Relaxed),
                };
            }
        }
        Err(e) => errors.push(format!("escalation and expiry: {e}")),
    }
    match org.deliver_notifications() {
        Ok(delivery) => {
            c.delivered
                .fetch_add(delivery.delivered.len() as u64, Ordering::Relaxed);
            c.gave_up
                .fetch_add(delivery.gave_up.len() as u64, Ordering::Relaxed);
        }
        Err(e) => errors.push(format!("notifications: {e}")),
    }
    match org.run_due_schedules() {
        Ok(round) => {
            for task in &round.ran {
                match task.end {
                    crate::runtime::TaskEnd::Completed { .. } => &c.tasks_completed,
                    crate::runtime::TaskEnd::Failed { .. } => &c.tasks_failed,
                    crate::runtime::TaskEnd::Trapped { .. } => &c.tasks_trapped,
                }
                .fetch_add(1, Ordering::Relaxed);
            }
            c.schedules_failed
                .fetch_add(round.failed.len() as u64, Ordering::Relaxed);
        }
        Err(e) => errors.push(format!("schedules: {e}")),
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Whether `host` names this daemon: one of `hosts`, or, when it listens on
/// every address (`hosts` empty), an IP address with its port. A DNS
/// rebinding page always sends a name, so it never passes.
fn host_allowed(hosts: &[String], port: u16, host: &str) -> bool {
    if hosts.is_empty() {
        return host.parse::<SocketAddr>().is_ok_and(|a| a.port() == port);
    }
    hosts.iter().any(|h| h == host)
}

/// Refuse a request whose `Host` is not this daemon's (a page on another
/// site that resolves its name to 127.0.0.1 must not reach the API).
async fn check_host(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !host_allowed(&shared.hosts, shared.port, host) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            format!("this daemon does not serve the host {host:?}\n"),
        )
            .into_response();
    }
    next.run(request).await
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the store answers.
async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let org = shared.org.clone();
    match blocking(move || org.approvals().list().map(|_| ())).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(e)) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response(),
    }
}

/// Prometheus text exposition: the queue, the outbox and the timer.
async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let read = shared.clone();
    let gauges = blocking(move || -> Result<(u64, i64, u64, u64), String> {
        let org = &read.org;
        let now = org.now();
        let pending: Vec<_> = org
            .approvals()
            .list()
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|a| a.status == Status::Pending)
            .collect();
        let oldest = pending
            .iter()
            .map(|a| (now - a.created_at).num_seconds().max(0))
            .max()
            .unwrap_or(0);
        let outbox = org.outbox().list().map_err(|e| e.to_string())?;
        let waiting = outbox
            .iter()
            .filter(|n| n.state == DeliveryState::Pending)
            .count() as u64;
        let entries = org.audit().len().map_err(|e| e.to_string())?;
        Ok((pending.len() as u64, oldest, waiting, entries))
    })
    .await
    .and_then(|r| r);
    let (pending, oldest, waiting, entries) = match gauges {
        Ok(g) => g,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    };
    let c = &shared.counters;
    let counter = |v: &AtomicU64| v.load(Ordering::Relaxed);
    let mut text = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        text.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    };
    metric(
        "clancy_approvals_pending",
        "gauge",
        "Requests waiting for a human.",
        pending.to_string(),
    );
    metric(
        "clancy_approvals_oldest_pending_age_seconds",
        "gauge",
        "Age of the oldest pending request.",
        oldest.to_string(),
    );
    metric(
        "clancy_notifications_pending",
        "gauge",
        "Notifications waiting for delivery or a retry.",
        waiting.to_string(),
    );
    metric(
        "clancy_audit_entries",
        "gauge",
        "Entries in the audit log.",
        entries.to_string(),
    );
    metric(
        "clancy_timer_rounds_total",
        "counter",
        "Timer rounds run.",
        counter(&c.rounds).to_string(),
    );
    metric(
        "clancy_timer_failed_rounds_total",
        "counter",
        "Timer rounds that failed.",
        counter(&c.failed_rounds).to_string(),
    );
    metric(
        "clancy_approvals_expired_total",
        "counter",
        "Requests the timer expired.",
        counter(&c.expired).to_string(),
    );
    metric(
        "clancy_approvals_escalated_total",
        "counter",
        "Requests the timer moved up their ladder.",
        counter(&c.escalated).to_string(),
    );
    metric(
        "clancy_notifications_delivered_total",
        "counter",
        "Notifications delivered by the timer.",
        counter(&c.delivered).to_string(),
    );
    metric(
        "clancy_notifications_given_up_total",
        "counter",
        "Notifications given up after their last attempt.",
        counter(&c.gave_up).to_string(),
    );
    text.push_str(
        "# HELP clancy_tasks_total Scheduled tasks run, by how they ended.\n# TYPE clancy_tasks_total counter\n",
    );
    for (outcome, v) in [
        ("completed", &c.tasks_completed),
        ("failed", &c.tasks_failed),
        ("trapped", &c.tasks_trapped),
    ] {
        text.push_str(&format!(
            "clancy_tasks_total{{outcome=\"{outcome}\"}} {}\n",
            counter(v)
        ));
    }
    text.push_str(&format!(
        "# HELP clancy_schedules_failed_total Scheduled tasks that could not start.\n# TYPE clancy_schedules_failed_total counter\nclancy_schedules_failed_total {}\n",
        counter(&c.schedules_failed)
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// The largest request body the API reads.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// An RFC 9457 problem: every API error.
struct Problem {
    status: StatusCode,
    title: &'static str,
    detail: String,
}

impl Problem {
    fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            title,
            detail: detail.into(),
        }
    }

    fn internal(detail: impl std::fmt::Display) -> Problem {
        tracing::error!("API request failed: {detail}");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The host could not complete the request",
            "the host could not complete the request; see its log",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "type": "about:blank",
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// The operator the request's bearer token acts as, if their role is at
/// least `needed`.
async fn operator(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    needed: Role,
) -> Result<Operator, Problem> {
    let unauthorized = |detail: &str| {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "Not signed in",
            detail.to_string(),
        )
    };
    let secret = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            unauthorized("send `Authorization: Bearer <token>` (see `clancy tokens create`)")
        })?
        .trim()
        .to_string();
    let org = shared.org.clone();
    let checked = blocking(move || {
        let now = org.now();
        let result = org.operators().authenticate(&secret, now)?;
        if let Err(refused) = &result
            && matches!(
                refused,
                crate::operators::TokenRefused::Expired | crate::operators::TokenRefused::Revoked
            )
        {
            // Someone holds a real token that no longer works: on record.
            let _ = org.audit_operator_action(
                "api-sign-in",
                "a bearer token",
                &format!("refused: {refused}"),
            );
        }
        Ok::<_, crate::store::StoreError>(result)
    })
    .await
    .map_err(Problem::internal)?
    .map_err(Problem::internal)?;
    let (operator, _token) = checked.map_err(|refused| unauthorized(&refused.to_string()))?;
    if operator.role < needed {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "Not allowed",
            format!(
                "this needs the role {needed} or above; the token acts as {} ({})",
                operator.name, operator.role
            ),
        ));
    }
    Ok(operator)
}

/// What the API says about a request: the facts a notification carries
/// (never the whole action) and its preview.
fn approval_json(a: &Approval) -> serde_json::Value {
    let mut facts = crate::notify::request_facts(a, false);
    facts["preview"] = serde_json::Value::String(a.preview());
    facts
}

/// `GET /api/v1/approvals`: the pending queue, oldest first.
async fn list_approvals(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    operator(&shared, &headers, Role::Manager).await?;
    let org = shared.org.clone();
    let pending = blocking(move || org.approvals().list())
        .await
        .map_err(Problem::internal)?
        .map_err(Problem::internal)?;
    let items: Vec<serde_json::Value> = pending
        .iter()
        .filter(|a| a.status == Status::Pending)
        .map(approval_json)
        .collect();
    Ok(axum::Json(serde_json::json!({ "items": items })).into_response())
}

/// `GET /api/v1/approvals/{id}`: one request, whatever its status.
async fn get_approval(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    operator(&shared, &headers, Role::Manager).await?;
    let org = shared.org.clone();
    let found = blocking(move || org.approvals().get(&id).map(|a| (id, a)))
        .await
        .map_err(Problem::internal)?
        .map_err(|e| match e {
            crate::store::StoreError::Tampered { .. } => Problem::new(
                StatusCode::CONFLICT,
                "The request was changed outside the host",
                e.to_string(),
            ),
            other => Problem::internal(other),
        })?;
    match found {
        (_, Some(a)) => Ok(axum::Json(approval_json(&a)).into_response()),
        (id, None) => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "No such request",
            format!("no approval request {id:?} in this organisation"),
        )),
    }
}

/// The body of an answer: the option chosen, and an optional comment.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerBody {
    option: String,
    comment: Option<String>,
}

/// `POST /api/v1/approvals/{id}/answer`: answer an employee's question with
/// one of its options, as the token's operator.
async fn answer(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let operator = operator(&shared, &headers, Role::User).await?;
    let body: AnswerBody = json_body(&headers, &body, r#"{"option": "…"}"#)?;
    let org = shared.org.clone();
    let answered =
        blocking(move || org.answer(&id, &body.option, &operator.name, body.comment.as_deref()))
            .await
            .map_err(Problem::internal)?;
    match answered {
        Ok(a) => Ok(axum::Json(approval_json(&a)).into_response()),
        Err(e) => Err(decide_problem(e)),
    }
}

/// The body of a decision: an optional comment, nothing else.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    comment: Option<String>,
}

fn decision_body(headers: &HeaderMap, body: &[u8]) -> Result<DecisionBody, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DecisionBody::default());
    }
    let body: DecisionBody = json_body(headers, body, r#"{"comment": "…"}"#)?;
    if body.comment.as_ref().is_some_and(|c| c.len() > 2000) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid body",
            "the comment is longer than 2000 bytes",
        ));
    }
    Ok(body)
}

async fn approve(
    state: State<Arc<Shared>>,
    id: Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    decide(state, id, headers, body, Verdict::Approve).await
}

async fn deny(
    state: State<Arc<Shared>>,
    id: Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    decide(state, id, headers, body, Verdict::Deny).await
}

/// `POST /api/v1/approvals/{id}/approve|deny`: decide as the token's operator.
async fn decide(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
    verdict: Verdict,
) -> Result<Response, Problem> {
    let operator = operator(&shared, &headers, Role::User).await?;
    let body = decision_body(&headers, &body)?;
    let org = shared.org.clone();
    let decided =
        blocking(move || org.decide(&id, verdict, &operator.name, body.comment.as_deref()))
            .await
            .map_err(Problem::internal)?;
    match decided {
        Ok(a) => Ok(axum::Json(approval_json(&a)).into_response()),
        Err(e) => Err(decide_problem(e)),
    }
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
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskBody {
    employee: String,
    task: String,
}

/// The request's JSON body as `T`: 415 unless it says it is JSON, 422 if
/// it does not parse (unknown fields included); `expected` shows its shape.
fn json_body<T: serde::de::DeserializeOwned>(
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

/// `POST /api/v1/tasks`: run one task with a registered employee (its
/// pinned component, its grants and limits), as the token's operator, and
/// answer how it ended.
async fn start_task(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let operator = operator(&shared, &headers, Role::Manager).await?;
    let body: TaskBody = json_body(&headers, &body, r#"{"employee": "…", "task": "…"}"#)?;
    let org = shared.org.clone();
    let ran = blocking(move || -> Result<crate::runtime::TaskResult, Problem> {
        if org
            .stored_manifest(&body.employee)
            .map_err(Problem::internal)?
            .is_none()
        {
            return Err(Problem::new(
                StatusCode::NOT_FOUND,
                "No such employee",
                format!(
                    "no employee {:?} is registered in this organisation",
                    body.employee
                ),
            ));
        }
        let employee = org
            .registered_employee(&body.employee)
            .map_err(Problem::internal)?;
        let result = employee.run(&body.task).map_err(|e| match e {
            crate::runtime::StartError::Instruction(why) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid task", why)
            }
            other => Problem::internal(other),
        })?;
        org.audit_operator_action(
            "tasks-start",
            &format!("{} {}", body.employee, result.task_id),
            &format!("started by {} through the API", operator.name),
        )
        .map_err(Problem::internal)?;
        Ok(result)
    })
    .await
    .map_err(Problem::internal)??;
    Ok(axum::Json(serde_json::json!({
        "task_id": ran.task_id,
        "end": ran.end,
        "guest_output": ran.guest_output,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::host_allowed;

    #[test]
    fn only_this_daemons_names_or_addresses_pass_the_host_check() {
        let hosts = vec!["127.0.0.1:7878".to_string(), "localhost:7878".to_string()];
        assert!(host_allowed(&hosts, 7878, "127.0.0.1:7878"));
        assert!(host_allowed(&hosts, 7878, "localhost:7878"));
        for bad in ["evil.example:7878", "127.0.0.1:80", "", "localhost"] {
            assert!(!host_allowed(&hosts, 7878, bad), "{bad}");
        }
        // Listening on every address: any address with the port, never a name.
        assert!(host_allowed(&[], 7878, "10.1.2.3:7878"));
        assert!(host_allowed(&[], 7878, "[fd00::1]:7878"));
        for bad in ["rebind.example:7878", "10.1.2.3:80", "10.1.2.3", ""] {
            assert!(!host_allowed(&[], 7878, bad), "{bad}");
        }
    }
}
