//! The daemon: `clancy serve` owns a data dir, serves every organisation
//! in it (each caller reaches only their own) and keeps time for them.
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
//! The API (`/api/v1`, JSON, errors as RFC 9457 problem+json, described
//! by the OpenAPI document at `/api/v1/openapi.json`) takes a bearer token
//! (`clancy tokens create`) or a session from signing in with a password
//! and, for admins and managers, a TOTP code ([`auth`], [`people`]).
//! `/enrol` is the page where a new operator spends their enrolment code.
//!
//! The [`Org`] is blocking (sled, wasmtime): every call into it runs on
//! tokio's blocking pool, so a slow store or receiver never stalls the
//! HTTP side or the timer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use utoipa::OpenApi as _;

use crate::accounts::SessionLimits;
use crate::approvals::Status;
use crate::notify::DeliveryState;
use crate::org::Org;

mod api;
mod auth;
mod connect;
mod events;
mod http;
mod organisation;
mod outbox;
mod people;
mod records;
mod sandbox;
mod tls;

pub use auth::RateLimits;
pub use tls::acceptor as tls_acceptor;

/// How the daemon runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Time between two timer rounds.
    pub tick: Duration,
    /// Allow a non-loopback address without TLS.
    pub insecure_http: bool,
    /// Serve TLS with this certificate chain and key (PEM files).
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// How much each caller may ask.
    pub rate_limits: RateLimits,
    /// How long sessions live.
    pub sessions: SessionLimits,
    /// Workers that run queued tasks.
    pub workers: usize,
    /// At shutdown, how long running tasks may take to finish.
    pub drain: Duration,
    /// How long a client may take to send a request's headers.
    pub header_timeout: Duration,
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
    /// The TLS certificate or key cannot be used.
    #[error("{0}")]
    Tls(String),
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
    triggers_failed: AtomicU64,
    /// How long queued tasks ran.
    task_seconds: Histogram,
    /// How long the API took to answer (until its headers).
    request_seconds: Histogram,
}

/// A Prometheus histogram: counts per upper bound (seconds), their sum.
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// The sum, in microseconds.
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        const BOUNDS: &[f64] = &[0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0];
        Histogram {
            bounds: BOUNDS,
            counts: (0..=BOUNDS.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let slot = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The exposition of `name` (cumulative buckets, sum, count).
    fn render(&self, name: &str, help: &str) -> String {
        let mut text = format!("# HELP {name} {help}\n# TYPE {name} histogram\n");
        let mut total = 0;
        for (i, c) in self.counts.iter().enumerate() {
            total += c.load(Ordering::Relaxed);
            let le = self
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            text.push_str(&format!("{name}_bucket{{le=\"{le}\"}} {total}\n"));
        }
        text.push_str(&format!(
            "{name}_sum {}\n{name}_count {total}\n",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        ));
        text
    }
}

struct Shared {
    /// The organisations it serves (the first is the default for signing
    /// in); each caller reaches only their own.
    orgs: Vec<Arc<Org>>,
    counters: Counters,
    /// `Host` values requests may carry (empty: any IP address with `port`).
    hosts: Vec<String>,
    /// The port it listens on.
    port: u16,
    /// Rate limiters per IP, per operator, for sign-ins.
    limiters: auth::Limiters,
    /// How long sessions live.
    sessions: SessionLimits,
    /// Whether it serves TLS (cookies are `Secure`, origins `https`).
    tls: bool,
    /// Wakes a worker when a task is queued.
    work: tokio::sync::Notify,
    /// Task event streams open now.
    streams: std::sync::atomic::AtomicUsize,
    /// Turns true when the daemon begins to stop (event streams end).
    stop: tokio::sync::watch::Sender<bool>,
}

/// A bound daemon, not yet serving.
pub struct Daemon {
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    tick: Duration,
    workers: usize,
    drain: Duration,
    header_timeout: Duration,
}

impl Daemon {
    /// Check the address, bind it, and do the start-up work on the data dir
    /// (close interrupted tasks, finish interrupted approved actions).
    pub async fn bind(orgs: Vec<Arc<Org>>, config: &Config) -> Result<Daemon, ServeError> {
        if orgs.is_empty() {
            return Err(ServeError::Start("no organisation to serve".into()));
        }
        let tls = match &config.tls {
            Some((cert, key)) => Some(tls::acceptor(cert, key).map_err(ServeError::Tls)?),
            None => None,
        };
        if !config.listen.ip().is_loopback() && !config.insecure_http && tls.is_none() {
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
        let start = orgs.clone();
        blocking(move || -> Result<(), String> {
            for org in &start {
                let failed = |e: String| format!("org {}: {e}", org.org());
                org.record_interrupted_tasks()
                    .map_err(|e| failed(e.to_string()))?;
                org.interrupt_running_tasks()
                    .map_err(|e| failed(e.to_string()))?;
                org.resume_approved().map_err(|e| failed(e.to_string()))?;
            }
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
                tls: tls.is_some(),
                orgs,
                counters: Counters::default(),
                hosts,
                port,
                limiters: auth::Limiters::new(config.rate_limits),
                sessions: config.sessions,
                work: tokio::sync::Notify::new(),
                streams: std::sync::atomic::AtomicUsize::new(0),
                stop: tokio::sync::watch::Sender::new(false),
            }),
            tls,
            workers: config.workers.max(1),
            drain: config.drain,
            header_timeout: config.header_timeout,
            tick: config.tick,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Whether it serves TLS (`https://`).
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serve and keep time until `shutdown` resolves; then stop accepting,
    /// let the running timer round finish, and return.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let stop_tx = self.shared.stop.clone();
        let stop_rx = stop_tx.subscribe();
        let timer = tokio::spawn(keep_time(self.shared.clone(), self.tick, stop_rx.clone()));
        let workers: Vec<_> = (0..self.workers)
            .map(|_| tokio::spawn(work(self.shared.clone(), stop_rx.clone())))
            .collect();
        let app = axum::Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .route("/enrol", get(enrol_page))
            .route("/enrol.js", get(enrol_script))
            .route("/api/v1/openapi.json", get(openapi))
            .route(
                "/api/v1/session",
                post(people::sign_in)
                    .get(people::whoami)
                    .delete(people::sign_out),
            )
            .route("/api/v1/enrol", post(people::enrol))
            .route(
                "/api/v1/operators",
                get(people::list_operators).post(people::put_operator),
            )
            .route(
                "/api/v1/operators/{name}/enrolment",
                post(people::new_enrolment),
            )
            .route(
                "/api/v1/operators/{name}/employees",
                post(people::assign).layer(DefaultBodyLimit::max(1024 * 1024)),
            )
            .route(
                "/api/v1/tokens",
                get(people::list_tokens).post(people::create_token),
            )
            .route("/api/v1/tokens/{id}/revoke", post(people::revoke_token))
            .route("/api/v1/approvals", get(api::list_approvals))
            .route("/api/v1/approvals/batch", post(api::batch))
            .route("/api/v1/approvals/{id}", get(api::get_approval))
            .route("/api/v1/approvals/{id}/approve", post(api::approve))
            .route("/api/v1/approvals/{id}/deny", post(api::deny))
            .route("/api/v1/approvals/{id}/answer", post(api::answer))
            .route("/api/v1/tasks", post(api::start_task).get(api::list_tasks))
            .route("/api/v1/tasks/{id}", get(api::get_task))
            .route("/api/v1/tasks/{id}/cancel", post(api::cancel_task))
            .route("/api/v1/tasks/{id}/events", get(events::follow))
            .route("/api/v1/tasks/{id}/explain", get(records::explain))
            .route("/api/v1/audit", get(records::search))
            .route("/api/v1/audit/verify", get(records::verify))
            .route("/api/v1/audit/export", get(records::export))
            .route("/api/v1/undo", post(records::undo))
            .route("/oauth/callback", get(connect::callback))
            .route(
                "/api/v1/connections",
                get(connect::list).post(connect::start),
            )
            .route("/api/v1/connections/{id}/revoke", post(connect::revoke))
            .route(
                "/api/v1/connections/{id}/use",
                post(connect::use_connection),
            )
            .route("/api/v1/connections/sandbox", post(connect::use_sandbox))
            .route("/api/v1/organisation", get(organisation::mine))
            .route("/api/v1/organisation/export", get(organisation::export))
            .route("/api/v1/sandbox", get(sandbox::show))
            .route(
                "/api/v1/sandbox/mail",
                post(sandbox::receive).layer(DefaultBodyLimit::max(1024 * 1024)),
            )
            .route("/api/v1/sandbox/seed", post(sandbox::seed))
            .route("/api/v1/notifications", get(outbox::list))
            .route("/api/v1/notifications/secret", get(outbox::secret))
            .route("/api/v1/notifications/deliver", post(outbox::deliver))
            .route(
                "/api/v1/employees",
                get(records::employees)
                    .post(records::submit)
                    .layer(DefaultBodyLimit::max(records::MAX_SUBMISSION_BYTES)),
            )
            .route("/api/v1/employees/upgrades", get(records::upgrades))
            .route("/api/v1/employees/{name}/disable", post(records::disable))
            .route("/api/v1/employees/{name}/enable", post(records::enable))
            .route(
                "/api/v1/employees/upgrades/{id}/approve",
                post(records::approve_upgrade),
            )
            .route(
                "/api/v1/employees/upgrades/{id}/deny",
                post(records::deny_upgrade),
            )
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(DefaultBodyLimit::max(api::MAX_BODY_BYTES))
            .layer(axum::middleware::from_fn_with_state(
                self.shared.clone(),
                auth::guard,
            ))
            .layer(axum::middleware::from_fn_with_state(
                self.shared.clone(),
                check_host,
            ))
            .with_state(self.shared.clone());
        let stopping = async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        };
        let served = match self.tls {
            Some(acceptor) => {
                http::serve(
                    tls::TlsListener::new(self.listener, acceptor)?,
                    app,
                    self.header_timeout,
                    self.drain,
                    stopping,
                )
                .await
            }
            None => {
                http::serve(
                    self.listener,
                    app,
                    self.header_timeout,
                    self.drain,
                    stopping,
                )
                .await
            }
        };
        // The round in progress finishes; no new one starts. Running tasks
        // get `drain` to finish; one still running after that is recorded
        // as interrupted at the next start.
        if let Err(e) = timer.await {
            tracing::error!("the timer stopped abnormally: {e}");
        }
        let drained = tokio::time::timeout(self.drain, futures_join(workers)).await;
        if drained.is_err() {
            tracing::warn!(
                "tasks still running after {:?}: they are recorded as interrupted at the next start",
                self.drain
            );
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

/// A piece of a streamed body, from the thread writing it.
enum Chunk {
    Data(Vec<u8>),
    Done,
    Failed(String),
}

/// The writer of a streamed body: each buffer goes to the response as it
/// is written, and the writer waits while the client is slower.
struct ChannelWriter(tokio::sync::mpsc::Sender<Chunk>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Chunk::Data(buf.to_vec()))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client left"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A response of `content_type` whose body `write` writes with `org` on the
/// blocking pool as it reads (an export: memory does not grow with what it
/// writes). A failure before the first 64 KiB is a 500 problem; one later
/// aborts the body, so the client sees the transfer broken off rather than
/// a short document that looks whole (and so does a panic).
async fn streamed<E: std::fmt::Display>(
    org: &Arc<Org>,
    content_type: &'static str,
    write: impl FnOnce(&Org, &mut dyn std::io::Write) -> Result<(), E> + Send + 'static,
) -> Result<axum::response::Response, api::Problem> {
    use axum::response::IntoResponse as _;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(4);
    let org = org.clone();
    tokio::task::spawn_blocking(move || {
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, ChannelWriter(tx.clone()));
        let last = match write(&org, &mut out) {
            Ok(()) => match out.into_inner() {
                Ok(_) => Chunk::Done,
                Err(e) => Chunk::Failed(e.to_string()),
            },
            Err(e) => {
                // What is still buffered is not sent: a failure before the
                // first 64 KiB leaves the status to decide.
                drop(out.into_parts());
                Chunk::Failed(e.to_string())
            }
        };
        let _ = tx.blocking_send(last);
    });
    // The first piece decides the status.
    let first = match rx.recv().await {
        Some(Chunk::Failed(e)) => return Err(api::Problem::internal(e)),
        None => return Err(api::Problem::internal("the export stopped")),
        Some(first) => first,
    };
    let body = futures_util::stream::unfold((Some(first), Some(rx)), |(next, rx)| async move {
        let mut rx = rx?;
        let chunk = match next {
            Some(chunk) => chunk,
            None => rx
                .recv()
                .await
                .unwrap_or(Chunk::Failed("the export stopped".into())),
        };
        match chunk {
            Chunk::Data(bytes) => Some((Ok(axum::body::Bytes::from(bytes)), (None, Some(rx)))),
            Chunk::Done => None,
            Chunk::Failed(e) => {
                tracing::error!("an export stopped midway: {e}");
                Some((Err(std::io::Error::other(e)), (None, None)))
            }
        }
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, content_type)],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

/// Run `f` with `org` (the caller's) on the blocking pool (the org is
/// blocking: sled, wasmtime); a host task that fails is a 500 problem.
async fn with_org<T: Send + 'static>(
    org: &Arc<Org>,
    f: impl FnOnce(&Org) -> T + Send + 'static,
) -> Result<T, api::Problem> {
    let org = org.clone();
    blocking(move || f(&org))
        .await
        .map_err(api::Problem::internal)
}

/// Wait for every worker.
async fn futures_join(workers: Vec<tokio::task::JoinHandle<()>>) {
    for w in workers {
        if let Err(e) = w.await {
            tracing::error!("a worker stopped abnormally: {e}");
        }
    }
}

/// A worker: take the oldest queued task, run it on the blocking pool
/// (its guest under all its limits), record how it ended; when nothing
/// waits, sleep until a task is queued (or a second passes). Stops taking
/// tasks when told to stop; a task it runs finishes.
async fn work(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    // Each look starts at the next organisation, so a busy one cannot
    // starve the others.
    let mut turn = 0usize;
    loop {
        if *stop.borrow() {
            return;
        }
        let orgs = shared.orgs.clone();
        turn = turn.wrapping_add(1);
        let start = turn;
        let taken = blocking(
            move || -> Result<Option<(Arc<Org>, crate::org::TaskRecord)>, String> {
                let mut errors = Vec::new();
                for i in 0..orgs.len() {
                    let org = &orgs[(start + i) % orgs.len()];
                    match org.take_task() {
                        Ok(Some(record)) => return Ok(Some((org.clone(), record))),
                        Ok(None) => {}
                        Err(e) => errors.push(format!("org {}: {e}", org.org())),
                    }
                }
                if errors.is_empty() {
                    Ok(None)
                } else {
                    Err(errors.join("; "))
                }
            },
        )
        .await
        .and_then(|r| r);
        match taken {
            Ok(Some((org, record))) => {
                let started = std::time::Instant::now();
                let ran = blocking(move || org.run_task(record)).await;
                shared.counters.task_seconds.observe(started.elapsed());
                match ran {
                    Ok(Ok(done)) => {
                        let c = &shared.counters;
                        match done.state {
                            crate::org::TaskState::Completed => &c.tasks_completed,
                            crate::org::TaskState::Trapped => &c.tasks_trapped,
                            _ => &c.tasks_failed,
                        }
                        .fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(e)) => tracing::error!("recording a task's end failed: {e}"),
                    Err(e) => tracing::error!("a task failed: {e}"),
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::error!("taking a queued task failed: {e}"),
        }
        tokio::select! {
            () = shared.work.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
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
        shared.limiters.forget_quiet();
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
    let mut errors = Vec::new();
    for org in &shared.orgs {
        if let Err(e) = org_round(shared, org) {
            errors.push(format!("org {}: {e}", org.org()));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// One organisation's part of a timer round.
fn org_round(shared: &Shared, org: &Org) -> Result<(), String> {
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
    if let Err(e) = org.accounts().purge_sessions(shared.sessions, org.now()) {
        errors.push(format!("sessions: {e}"));
    }
    match org.run_due_schedules() {
        Ok(round) => {
            if !round.queued.is_empty() {
                shared.work.notify_waiters();
            }
            c.schedules_failed
                .fetch_add(round.failed.len() as u64, Ordering::Relaxed);
        }
        Err(e) => errors.push(format!("schedules: {e}")),
    }
    match org.run_triggers() {
        Ok(round) => {
            if !round.queued.is_empty() {
                shared.work.notify_waiters();
            }
            c.triggers_failed
                .fetch_add(round.failed.len() as u64, Ordering::Relaxed);
        }
        Err(e) => errors.push(format!("triggers: {e}")),
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
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    shared.counters.request_seconds.observe(started.elapsed());
    response
}

/// The API's description, generated from the routes' declarations.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Clancy",
        description = "The API of a Clancy daemon: the approvals, tasks, employees, audit log, operators and tokens of the caller's organisation."
    ),
    paths(
        people::sign_in,
        people::whoami,
        people::sign_out,
        people::enrol,
        people::list_operators,
        people::put_operator,
        people::new_enrolment,
        people::assign,
        people::list_tokens,
        people::create_token,
        people::revoke_token,
        api::list_approvals,
        api::get_approval,
        api::approve,
        api::deny,
        api::answer,
        api::batch,
        api::start_task,
        api::list_tasks,
        api::get_task,
        api::cancel_task,
        events::follow,
        records::search,
        records::verify,
        records::export,
        records::explain,
        records::undo,
        connect::list,
        connect::start,
        connect::revoke,
        connect::use_connection,
        connect::use_sandbox,
        organisation::mine,
        organisation::export,
        sandbox::show,
        sandbox::receive,
        sandbox::seed,
        outbox::list,
        outbox::secret,
        outbox::deliver,
        records::employees,
        records::submit,
        records::upgrades,
        records::approve_upgrade,
        records::deny_upgrade,
        records::disable,
        records::enable,
    ),
    components(schemas(api::ProblemBody)),
    modifiers(&SecuritySchemes)
)]
struct ApiDoc;

/// Bearer tokens and the session cookie, as the document's security schemes.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(auth::COOKIE))),
        );
    }
}

/// The OpenAPI 3.1 document of this API.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

async fn openapi() -> Response {
    match ApiDoc::openapi().to_json() {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => api::Problem::internal(e).into_response(),
    }
}

async fn not_found() -> api::Problem {
    api::Problem::new(StatusCode::NOT_FOUND, "Not found", "no such route")
}

async fn method_not_allowed() -> api::Problem {
    api::Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed",
        "this route does not take that method",
    )
}

/// The page a new operator opens from their enrolment link: the code rides
/// in the fragment (never sent to the server or its logs); the page posts
/// it with the chosen password and shows the second factor's URI once.
async fn enrol_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'",
            ),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        ENROL_PAGE,
    )
        .into_response()
}

const ENROL_PAGE: &str = include_str!("enrol.html");

async fn enrol_script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("enrol.js"),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the store answers.
async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let orgs = shared.orgs.clone();
    let answer = blocking(move || {
        orgs.iter()
            .try_for_each(|org| org.approvals().open().map(|_| ()))
    });
    match answer.await {
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
    // Summed over the organisations served.
    let mut calls = crate::audit::CallCounts::default();
    for org in &shared.orgs {
        let c = org.audit().counts();
        calls.calls += c.calls;
        calls.refusals += c.refusals;
        calls.queued += c.queued;
    }
    let gauges = blocking(move || -> Result<(u64, i64, u64, u64, u64), String> {
        let (mut pending, mut oldest, mut waiting, mut entries, mut queued) = (0, 0, 0, 0, 0);
        for org in &read.orgs {
            let now = org.now();
            for a in org.approvals().open().map_err(|e| e.to_string())? {
                if a.status == Status::Pending {
                    pending += 1;
                    oldest = oldest.max((now - a.created_at).num_seconds().max(0));
                }
            }
            waiting += org
                .outbox()
                .list()
                .map_err(|e| e.to_string())?
                .iter()
                .filter(|n| n.state == DeliveryState::Pending)
                .count() as u64;
            entries += org.audit().len().map_err(|e| e.to_string())?;
            queued += org.queued_tasks().map_err(|e| e.to_string())? as u64;
        }
        Ok((pending, oldest, waiting, entries, queued))
    })
    .await
    .and_then(|r| r);
    let (pending, oldest, waiting, entries, queued) = match gauges {
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
        "clancy_organisations",
        "gauge",
        "Organisations this daemon serves.",
        shared.orgs.len().to_string(),
    );
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
        "clancy_tasks_queued",
        "gauge",
        "Tasks waiting for a worker.",
        queued.to_string(),
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
        "# HELP clancy_tasks_total Queued tasks run, by how they ended.\n# TYPE clancy_tasks_total counter\n",
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
    text.push_str(&format!(
        "# HELP clancy_triggers_failed_total Trigger looks or queueings that failed.\n# TYPE clancy_triggers_failed_total counter\nclancy_triggers_failed_total {}\n",
        counter(&c.triggers_failed)
    ));
    for (name, help, value) in [
        (
            "clancy_calls_total",
            "Employees' calls that reached a provider.",
            calls.calls,
        ),
        (
            "clancy_refusals_total",
            "Employees' calls refused before any provider.",
            calls.refusals,
        ),
        (
            "clancy_calls_queued_total",
            "Employees' calls stored for a human to decide.",
            calls.queued,
        ),
    ] {
        text.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
        ));
    }
    text.push_str(
        &c.task_seconds
            .render("clancy_task_duration_seconds", "How long queued tasks ran."),
    );
    text.push_str(&c.request_seconds.render(
        "clancy_api_request_duration_seconds",
        "How long the daemon took to answer a request (until its headers).",
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::{Arc, Org, host_allowed, streamed};

    /// A body of 200,000 bytes then `end` (for `Err("at once")`: 1,000
    /// bytes, then that failure).
    fn route(org: &Arc<Org>, end: Result<(), &'static str>) -> axum::routing::MethodRouter {
        let org = org.clone();
        axum::routing::get(move || async move {
            streamed(&org, "text/plain", move |_, out| {
                if end == Err("at once") {
                    // Still within the first 64 KiB: nothing is sent.
                    out.write_all(&[b'a'; 1000])
                        .map_err(|_| "the client left")?;
                    return end;
                }
                out.write_all(&[b'a'; 200_000])
                    .map_err(|_| "the client left")?;
                end
            })
            .await
        })
    }

    #[test]
    fn a_streamed_body_is_whole_or_broken_off_and_a_failure_at_once_is_a_500() -> anyhow::Result<()>
    {
        let dir = tempfile::tempdir()?;
        let org = Arc::new(Org::open(
            dir.path(),
            "default",
            crate::org::DataDirMode::Create,
        )?);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new()
            .route("/whole", route(&org, Ok(())))
            .route("/midway", route(&org, Err("the disk went away")))
            .route("/early", route(&org, Err("at once")));
        runtime.spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::blocking::Client::new();
        let whole = client.get(format!("{url}/whole")).send()?;
        assert_eq!(whole.status(), 200);
        assert_eq!(whole.bytes()?.len(), 200_000);
        let early = client.get(format!("{url}/early")).send()?;
        assert_eq!(early.status(), 500);
        // Past the first 64 KiB the status is decided: the transfer breaks
        // off (before or after the client has the head, as it happens).
        let midway = client.get(format!("{url}/midway")).send().and_then(|r| {
            assert_eq!(r.status(), 200);
            r.bytes()
        });
        assert!(midway.is_err(), "a failed export read as whole");
        Ok(())
    }

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
