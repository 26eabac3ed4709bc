//! Operators who sign in to the daemon: enrolment codes, passwords, TOTP,
//! sessions, CSRF, lockout and rate limits, attacked over real HTTP.
//!
//! Most tests run the daemon in this process on a manual clock (so a
//! session can grow idle without waiting half an hour); the first-start
//! test runs the real binary.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use anyhow::{Context, Result};
use chrono::{Duration, Utc};
use clancy::accounts::SessionLimits;
use clancy::approvals::ManualClock;
use clancy::daemon::{Config, Daemon, RateLimits};
use clancy::operators::{Operator, Role};
use clancy::org::{DataDirMode, Org};
use reqwest::blocking::{Client, Response};
use serde_json::{Value, json};

use crate::env::TestEnv;

/// A daemon running in this process on a manual clock.
pub(crate) struct Live {
    pub(crate) url: String,
    pub(crate) org: Arc<Org>,
    /// Another organisation served by the same daemon.
    pub(crate) other: Arc<Org>,
    clock: Arc<ManualClock>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Live {
    /// Limits no test of routes reaches.
    pub(crate) const UNLIMITED: RateLimits = RateLimits {
        per_ip: 10_000,
        per_operator: 10_000,
        sign_ins_per_minute: 100,
    };

    pub(crate) fn start(limits: RateLimits) -> Result<Live> {
        Live::start_with(limits, |_| Ok(()))
    }

    /// Start it after `prepare` had the org to itself (as a previous
    /// process would have left it).
    pub(crate) fn start_with(
        limits: RateLimits,
        prepare: impl FnOnce(&Org) -> Result<()>,
    ) -> Result<Live> {
        // Two organisations in one daemon: `org`, and `other` beside it.
        let dir = tempfile::tempdir()?;
        let mut orgs = Org::open_all(
            &dir.path().join("data"),
            &["default", "other"],
            DataDirMode::Create,
        )?;
        let (mut host, mut other) = (orgs.remove(0), orgs.remove(0));
        TestEnv::prepare(&host)?;
        let clock = Arc::new(ManualClock::new(Utc::now()));
        host.use_clock(clock.clone());
        other.use_clock(clock.clone());
        prepare(&host)?;
        let org = Arc::new(host);
        let other = Arc::new(other);
        let config = Config {
            listen: "127.0.0.1:0".parse::<SocketAddr>()?,
            tick: StdDuration::from_secs(3600),
            insecure_http: false,
            tls: None,
            rate_limits: limits,
            sessions: SessionLimits::default(),
            workers: 1,
            drain: StdDuration::from_secs(5),
            header_timeout: StdDuration::from_secs(2),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let served = vec![org.clone(), other.clone()];
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let daemon = match Daemon::bind(served, &config).await {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(daemon.local_addr().map_err(|e| e.to_string()));
                let _ = daemon
                    .run(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        let addr = ready_rx
            .recv_timeout(StdDuration::from_secs(30))?
            .map_err(anyhow::Error::msg)?;
        Ok(Live {
            url: format!("http://{addr}"),
            org,
            other,
            clock,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        })
    }

    /// An enrolled operator: returns their otpauth URI (for admins and managers).
    fn enrol(&self, name: &str, role: Role, password: &str) -> Result<Option<String>> {
        self.org.add_operator(
            &Operator {
                name: name.into(),
                role,
            },
            None,
        )?;
        let code = self.org.invite(name, "the test")?;
        let r = post_json(
            &self.url,
            "/api/v1/enrol",
            &json!({"code": code, "password": password}),
        )?;
        anyhow::ensure!(r.status() == 200, "enrol: {}", r.text()?);
        let body: Value = serde_json::from_str(&r.text()?)?;
        Ok(body["otpauth_uri"].as_str().map(str::to_string))
    }

    /// `POST path` with a JSON body as the bearer of `token`: the status
    /// and the JSON answer (null when there is none).
    pub(crate) fn post(&self, token: &str, path: &str, body: &str) -> Result<(u16, Value)> {
        let r = client()
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()?;
        answer(r)
    }

    /// `GET path` as the bearer of `token`: the status and the JSON answer.
    pub(crate) fn get(&self, token: &str, path: &str) -> Result<(u16, Value)> {
        answer(
            client()
                .get(format!("{}{path}", self.url))
                .bearer_auth(token)
                .send()?,
        )
    }

    /// The TOTP code of `otpauth` at the daemon's time.
    fn code(&self, otpauth: &str) -> Result<String> {
        let totp = totp_rs::Totp::from_url(otpauth)?;
        Ok(totp.generate(self.org.now().timestamp() as u64).to_string())
    }

    fn sign_in(&self, user: &str, password: &str, totp: Option<&str>) -> Result<Response> {
        post_json(
            &self.url,
            "/api/v1/session",
            &json!({"user": user, "password": password, "totp": totp}),
        )
    }

    /// Sign in; the session's cookie pair (`clancy_session=…`) and CSRF token.
    fn session(&self, user: &str, password: &str, totp: Option<&str>) -> Result<(String, String)> {
        let r = self.sign_in(user, password, totp)?;
        anyhow::ensure!(r.status() == 201, "sign in: {}", r.status());
        let cookie = r
            .headers()
            .get("set-cookie")
            .context("no cookie")?
            .to_str()?
            .to_string();
        for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            anyhow::ensure!(cookie.contains(flag), "{cookie} lacks {flag}");
        }
        let pair = cookie
            .split(';')
            .next()
            .context("empty cookie")?
            .to_string();
        let body: Value = serde_json::from_str(&r.text()?)?;
        let csrf = body["csrf_token"].as_str().context("no csrf token")?;
        Ok((pair, csrf.to_string()))
    }

    fn entries_about(&self, action: &str) -> Result<Vec<String>> {
        Ok(self
            .org
            .audit()
            .entries()?
            .into_iter()
            .filter(|e| e.record.action == action)
            .map(|e| format!("{} {}", e.record.args, e.record.result))
            .collect())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn answer(r: Response) -> Result<(u16, Value)> {
    let status = r.status().as_u16();
    let text = r.text()?;
    let json = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)?
    };
    Ok((status, json))
}

pub(crate) fn client() -> Client {
    Client::builder()
        .timeout(StdDuration::from_secs(60))
        .build()
        .expect("client")
}

fn post_json(url: &str, path: &str, body: &Value) -> Result<Response> {
    Ok(client()
        .post(format!("{url}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()?)
}

const PASSWORD: &str = "a sentence nobody guesses";

#[test]
fn the_first_start_prints_an_admin_enrolment_link_that_works_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let served = crate::daemon::Served::start(&data, &[])?;
    let link = served
        .enrol_link
        .clone()
        .context("no enrolment link printed")?;
    let (page, code) = link.split_once('#').context("no code in the link")?;
    assert_eq!(page, format!("{}/enrol", served.url));
    let html = client().get(page).send()?;
    assert_eq!(html.status(), 200);
    let csp = html
        .headers()
        .get("content-security-policy")
        .context("no CSP")?
        .to_str()?
        .to_string();
    assert!(csp.contains("default-src 'none'"), "{csp}");

    let weak = post_json(
        &served.url,
        "/api/v1/enrol",
        &json!({"code": code, "password": "short"}),
    )?;
    assert_eq!(weak.status(), 422);
    let named = post_json(
        &served.url,
        "/api/v1/enrol",
        &json!({"code": code, "password": "admin is my password"}),
    )?;
    assert_eq!(
        named.status(),
        422,
        "a password holding the name is refused"
    );
    let enrolled = post_json(
        &served.url,
        "/api/v1/enrol",
        &json!({"code": code, "password": PASSWORD}),
    )?
    .text()?;
    let enrolled: Value = serde_json::from_str(&enrolled)?;
    assert_eq!(enrolled["user"], "admin");
    assert_eq!(enrolled["role"], "admin");
    let otpauth = enrolled["otpauth_uri"]
        .as_str()
        .context("no second factor")?;
    let again = post_json(
        &served.url,
        "/api/v1/enrol",
        &json!({"code": code, "password": PASSWORD}),
    )?;
    assert_eq!(again.status(), 403, "an enrolment code is spent once");

    let signin = |totp: Option<String>| {
        post_json(
            &served.url,
            "/api/v1/session",
            &json!({"user": "admin", "password": PASSWORD, "totp": totp}),
        )
    };
    let no_code = signin(None)?;
    assert_eq!(no_code.status(), 401, "an admin needs a second factor");
    let totp = totp_rs::Totp::from_url(otpauth)?;
    let code_now = totp.generate(Utc::now().timestamp() as u64).to_string();
    let ok = signin(Some(code_now.clone()))?;
    assert_eq!(ok.status(), 201);
    let cookie = ok
        .headers()
        .get("set-cookie")
        .context("no cookie")?
        .to_str()?
        .split(';')
        .next()
        .context("empty")?
        .to_string();
    let me = client()
        .get(format!("{}/api/v1/session", served.url))
        .header("cookie", &cookie)
        .send()?
        .text()?;
    let me: Value = serde_json::from_str(&me)?;
    assert_eq!(me["user"], "admin");
    assert_eq!(me["via"], "session");
    let replay = signin(Some(code_now))?;
    assert_eq!(replay.status(), 401, "a TOTP code is accepted once");

    let (status, _) = served.terminate(StdDuration::from_secs(15))?;
    assert!(status.success());
    let log = crate::env::clancy(&data, &["audit", "log"])?;
    let log = crate::env::stdout(&log);
    assert!(log.contains("admin signed in from 127.0.0.1"), "{log}");
    assert!(log.contains("refused from 127.0.0.1"), "{log}");
    assert!(!log.contains(PASSWORD), "a password reached the audit log");
    assert!(
        !log.contains(code),
        "an enrolment code reached the audit log"
    );
    // The daemon enrolled an admin: the next start prints no link.
    let served = crate::daemon::Served::start(&data, &[])?;
    assert!(served.enrol_link.is_none());
    Ok(())
}

#[test]
fn a_cross_site_request_riding_on_a_session_cookie_is_refused_and_audited() -> Result<()> {
    let live = Live::start(RateLimits::default())?;
    live.enrol("erin", Role::User, PASSWORD)?;
    let (cookie, csrf) = live.session("erin", PASSWORD, None)?;
    let host = live.url.trim_start_matches("http://").to_string();
    let make = |csrf: Option<&str>, origin: Option<&str>| {
        let mut r = client()
            .post(format!("{}/api/v1/tokens", live.url))
            .header("cookie", &cookie)
            .header("content-type", "application/json")
            .body(json!({"role": "user", "days": 1}).to_string());
        if let Some(c) = csrf {
            r = r.header("x-csrf-token", c);
        }
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    let own_origin = format!("http://{host}");
    // A form on another site: the cookie rides along, nothing else.
    assert_eq!(make(None, Some("https://evil.example"))?.status(), 403);
    assert_eq!(
        make(None, Some(&own_origin))?.status(),
        403,
        "no CSRF token"
    );
    assert_eq!(
        make(Some(&csrf), Some("https://evil.example"))?.status(),
        403
    );
    assert_eq!(make(Some(&csrf), None)?.status(), 403, "no Origin");
    assert_eq!(
        make(Some("0".repeat(48).as_str()), Some(&own_origin))?.status(),
        403
    );
    assert!(
        live.org.operators().tokens()?.is_empty(),
        "a refused request made a token"
    );
    let made = make(Some(&csrf), Some(&own_origin))?;
    assert_eq!(made.status(), 201);
    let refusals = live.entries_about("api-csrf-refused")?;
    assert_eq!(refusals.len(), 5, "{refusals:?}");
    // Signing in from another site's form (login CSRF) is refused too.
    let forced = client()
        .post(format!("{}/api/v1/session", live.url))
        .header("content-type", "application/json")
        .header("origin", "https://evil.example")
        .body(json!({"user": "erin", "password": PASSWORD}).to_string())
        .send()?;
    assert_eq!(forced.status(), 403);
    // Reading needs no CSRF token: a GET changes nothing.
    let me = client()
        .get(format!("{}/api/v1/session", live.url))
        .header("cookie", &cookie)
        .send()?;
    assert_eq!(me.status(), 200);
    Ok(())
}

#[test]
fn wrong_passwords_or_codes_lock_the_account_and_sign_ins_are_limited_per_ip() -> Result<()> {
    let live = Live::start(RateLimits {
        sign_ins_per_minute: 12,
        ..RateLimits::default()
    })?;
    let otpauth = live
        .enrol("mgr", Role::Manager, PASSWORD)?
        .context("no totp")?;
    for _ in 0..3 {
        assert_eq!(live.sign_in("mgr", "wrong password!!", None)?.status(), 401);
    }
    for _ in 0..2 {
        let wrong_code = live.sign_in("mgr", PASSWORD, Some("000000"))?;
        assert_eq!(wrong_code.status(), 401);
    }
    // Five failures: even the right password and code are refused now.
    let code = live.code(&otpauth)?;
    let locked = live.sign_in("mgr", PASSWORD, Some(&code))?;
    assert_eq!(locked.status(), 429);
    let wait: i64 = locked
        .headers()
        .get("retry-after")
        .context("no Retry-After")?
        .to_str()?
        .parse()?;
    assert!((14 * 60..=15 * 60 + 1).contains(&wait), "{wait}");
    live.clock.advance(Duration::minutes(16));
    let code = live.code(&otpauth)?;
    assert_eq!(live.sign_in("mgr", PASSWORD, Some(&code))?.status(), 201);
    let refused = live.entries_about("sign-in")?;
    assert_eq!(
        refused.iter().filter(|e| e.contains("refused")).count(),
        6,
        "{refused:?}"
    );
    // Guessing across names from one address hits the per-IP budget.
    let mut statuses = Vec::new();
    for n in 0..8 {
        statuses.push(
            live.sign_in(&format!("nobody{n}"), "guess guess guess", None)?
                .status(),
        );
    }
    assert!(
        statuses.contains(&reqwest::StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    Ok(())
}

#[test]
fn a_session_ends_when_idle_too_old_signed_out_or_its_role_changes() -> Result<()> {
    let live = Live::start(RateLimits::default())?;
    live.enrol("uma", Role::User, PASSWORD)?;
    let whoami = |cookie: &str| -> Result<u16> {
        Ok(client()
            .get(format!("{}/api/v1/session", live.url))
            .header("cookie", cookie)
            .send()?
            .status()
            .as_u16())
    };
    let (cookie, _) = live.session("uma", PASSWORD, None)?;
    assert_eq!(whoami(&cookie)?, 200);
    live.clock.advance(Duration::minutes(31));
    assert_eq!(whoami(&cookie)?, 401, "idle for 31 minutes");

    let (cookie, _) = live.session("uma", PASSWORD, None)?;
    for _ in 0..(12 * 60 / 25) {
        live.clock.advance(Duration::minutes(25));
        assert_eq!(whoami(&cookie)?, 200);
    }
    live.clock.advance(Duration::minutes(25));
    assert_eq!(whoami(&cookie)?, 401, "older than 12 hours");

    let (cookie, csrf) = live.session("uma", PASSWORD, None)?;
    let out = client()
        .delete(format!("{}/api/v1/session", live.url))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .header("origin", &live.url)
        .send()?;
    assert_eq!(out.status(), 204);
    assert_eq!(whoami(&cookie)?, 401, "signed out");

    let (cookie, _) = live.session("uma", PASSWORD, None)?;
    live.org.add_operator(
        &Operator {
            name: "uma".into(),
            role: Role::Manager,
        },
        Some("alice"),
    )?;
    assert_eq!(whoami(&cookie)?, 401, "a changed role ends the session");
    // A forged cookie for her name gets nothing.
    assert_eq!(
        whoami(&format!("clancy_session=uma.{}", "ab".repeat(32)))?,
        401
    );
    Ok(())
}

#[test]
fn every_operator_and_address_is_rate_limited_with_retry_after() -> Result<()> {
    let live = Live::start(RateLimits {
        per_ip: 1000,
        per_operator: 2,
        sign_ins_per_minute: 10,
    })?;
    let (_, secret) = live.org.create_token("alice", Role::Manager, 1, "alice")?;
    let mut answers = Vec::new();
    for _ in 0..8 {
        let r = client()
            .get(format!("{}/api/v1/approvals", live.url))
            .bearer_auth(&secret)
            .send()?;
        answers.push((r.status().as_u16(), r.headers().get("retry-after").cloned()));
    }
    let limited: Vec<_> = answers.iter().filter(|(s, _)| *s == 429).collect();
    assert!(!limited.is_empty(), "{answers:?}");
    assert!(
        limited.iter().all(|(_, after)| after.is_some()),
        "{answers:?}"
    );
    // Another operator is not slowed by alice's burst.
    let (_, other) = live.org.create_token("bob", Role::Manager, 1, "bob")?;
    let r = client()
        .get(format!("{}/api/v1/approvals", live.url))
        .bearer_auth(&other)
        .send()?;
    assert_eq!(r.status(), 200);
    drop(live);

    let live = Live::start(RateLimits {
        per_ip: 1,
        per_operator: 1000,
        sign_ins_per_minute: 10,
    })?;
    let statuses: Vec<u16> = (0..6)
        .map(|_| -> Result<u16> {
            Ok(client()
                .get(format!("{}/api/v1/openapi.json", live.url))
                .send()?
                .status()
                .as_u16())
        })
        .collect::<Result<_>>()?;
    assert!(statuses.contains(&429), "{statuses:?}");
    Ok(())
}

/// The permission matrix (the README's table): each route and the least
/// role that may call it. Public routes take no credentials.
const MATRIX: &[(&str, &str, Option<&str>, Option<Role>)] = &[
    ("GET", "/api/v1/session", None, Some(Role::User)),
    ("DELETE", "/api/v1/session", None, Some(Role::User)),
    ("GET", "/api/v1/operators", None, Some(Role::Admin)),
    (
        "POST",
        "/api/v1/operators",
        Some(r#"{"name": "newbie", "role": "user"}"#),
        Some(Role::Admin),
    ),
    (
        "POST",
        "/api/v1/operators/uma/enrolment",
        None,
        Some(Role::Admin),
    ),
    ("GET", "/api/v1/tokens", None, Some(Role::User)),
    (
        "POST",
        "/api/v1/tokens",
        Some(r#"{"role": "user", "days": 1}"#),
        Some(Role::User),
    ),
    (
        "POST",
        "/api/v1/tokens/tk-000000000000/revoke",
        None,
        Some(Role::User),
    ),
    ("GET", "/api/v1/approvals", None, Some(Role::Manager)),
    (
        "GET",
        "/api/v1/approvals/apr-none",
        None,
        Some(Role::Manager),
    ),
    (
        "POST",
        "/api/v1/approvals/apr-none/approve",
        None,
        Some(Role::User),
    ),
    (
        "POST",
        "/api/v1/approvals/apr-none/deny",
        None,
        Some(Role::User),
    ),
    (
        "POST",
        "/api/v1/approvals/apr-none/answer",
        Some(r#"{"option": "yes"}"#),
        Some(Role::User),
    ),
    (
        "POST",
        "/api/v1/tasks",
        Some(r#"{"employee": "nobody", "task": "x"}"#),
        Some(Role::Manager),
    ),
    ("GET", "/api/v1/tasks", None, Some(Role::User)),
    ("GET", "/api/v1/tasks/no-such-task", None, Some(Role::User)),
    (
        "POST",
        "/api/v1/tasks/no-such-task/cancel",
        None,
        Some(Role::Manager),
    ),
    (
        "GET",
        "/api/v1/tasks/no-such-task/explain",
        None,
        Some(Role::Manager),
    ),
    ("GET", "/api/v1/audit", None, Some(Role::Manager)),
    ("GET", "/api/v1/audit/verify", None, Some(Role::Manager)),
    ("GET", "/api/v1/audit/export", None, Some(Role::Manager)),
    (
        "GET",
        "/api/v1/tasks/no-such-task/events",
        None,
        Some(Role::User),
    ),
    ("GET", "/api/v1/organisation", None, Some(Role::User)),
    ("GET", "/api/v1/connections", None, Some(Role::Admin)),
    (
        "POST",
        "/api/v1/connections",
        Some(r#"{"provider": "none"}"#),
        Some(Role::Admin),
    ),
    (
        "POST",
        "/api/v1/connections/cn-none/revoke",
        None,
        Some(Role::Admin),
    ),
    (
        "POST",
        "/api/v1/connections/cn-none/use",
        None,
        Some(Role::Admin),
    ),
    (
        "POST",
        "/api/v1/connections/sandbox",
        Some(r#"{"integration": "gmail"}"#),
        Some(Role::Admin),
    ),
    (
        "GET",
        "/api/v1/organisation/export",
        None,
        Some(Role::Admin),
    ),
    ("GET", "/api/v1/sandbox", None, Some(Role::Manager)),
    (
        "POST",
        "/api/v1/sandbox/mail",
        Some(r#"{"label": "support", "from": "pat@example.com", "subject": "s", "body": "b"}"#),
        Some(Role::Admin),
    ),
    (
        "POST",
        "/api/v1/sandbox/seed",
        Some(r#"{"reset": false}"#),
        Some(Role::Admin),
    ),
    ("GET", "/api/v1/notifications", None, Some(Role::Manager)),
    (
        "GET",
        "/api/v1/notifications/secret",
        None,
        Some(Role::Admin),
    ),
    (
        "POST",
        "/api/v1/notifications/deliver",
        None,
        Some(Role::Manager),
    ),
    (
        "POST",
        "/api/v1/undo",
        Some(r#"{"action": 999999}"#),
        Some(Role::Manager),
    ),
    ("GET", "/api/v1/employees", None, Some(Role::Manager)),
    (
        "POST",
        "/api/v1/employees",
        Some(r#"{"manifest": "name = 1", "component": ""}"#),
        Some(Role::Manager),
    ),
    ("GET", "/api/v1/employees/upgrades", None, Some(Role::Admin)),
    (
        "POST",
        "/api/v1/employees/nobody/disable",
        None,
        Some(Role::Admin),
    ),
    (
        "POST",
        "/api/v1/employees/nobody/enable",
        None,
        Some(Role::Admin),
    ),
    (
        "POST",
        "/api/v1/employees/upgrades/up-none/approve",
        None,
        Some(Role::Admin),
    ),
    (
        "POST",
        "/api/v1/employees/upgrades/up-none/deny",
        None,
        Some(Role::Admin),
    ),
    (
        "POST",
        "/api/v1/approvals/batch",
        Some(r#"{"ids": ["apr-none"], "verdict": "deny"}"#),
        Some(Role::User),
    ),
    ("GET", "/api/v1/openapi.json", None, None),
];

#[test]
fn every_route_answers_every_role_as_the_permission_matrix_says() -> Result<()> {
    let live = Live::start(Live::UNLIMITED)?;
    live.org.add_operator(
        &Operator {
            name: "ada".into(),
            role: Role::Admin,
        },
        None,
    )?;
    live.org.add_operator(
        &Operator {
            name: "uma".into(),
            role: Role::User,
        },
        Some("ada"),
    )?;
    let mut tokens = Vec::new();
    for (name, role) in [
        ("uma", Role::User),
        ("alice", Role::Manager),
        ("ada", Role::Admin),
    ] {
        tokens.push((role, Some(live.org.create_token(name, role, 1, "ada")?.1)));
    }
    // Unauthenticated, and a token of another organisation's daemon.
    let stranger = Live::start(RateLimits::default())?;
    let foreign = stranger
        .org
        .create_token("alice", Role::Manager, 1, "alice")?
        .1;
    let call = |method: &str, path: &str, body: Option<&str>, token: Option<&str>| -> Result<u16> {
        let mut r = client().request(method.parse()?, format!("{}{path}", live.url));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        Ok(r.send()?.status().as_u16())
    };
    for (method, path, body, least) in MATRIX {
        let anonymous = call(method, path, *body, None)?;
        let foreigner = call(method, path, *body, Some(&foreign))?;
        match least {
            None => assert_eq!(anonymous, 200, "{method} {path} is public"),
            Some(_) => {
                assert_eq!(anonymous, 401, "{method} {path} unauthenticated");
                assert_eq!(foreigner, 401, "{method} {path} with another org's token");
            }
        }
        for (role, token) in &tokens {
            let status = call(method, path, *body, token.as_deref())?;
            match least {
                Some(least) if role < least => {
                    assert_eq!(status, 403, "{method} {path} as {role}")
                }
                _ => assert!(
                    status != 401 && status != 403 && status < 500,
                    "{method} {path} as {role}: {status}"
                ),
            }
        }
    }
    Ok(())
}
