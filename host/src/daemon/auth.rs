//! Who is calling the API, and whether they may.
//!
//! A caller is a bearer token (`Authorization: Bearer clancy_…`) or a
//! session cookie from `POST /api/v1/session`. A state-changing request
//! that rides on a cookie must also carry the session's CSRF token in
//! `X-CSRF-Token` and an `Origin` naming this daemon, so no other site can
//! make a signed-in browser act. Every request counts against its IP
//! address's rate, every authenticated one against its operator's too, and
//! sign-in attempts against a much smaller per-IP budget: over any of them
//! the answer is 429 with `Retry-After`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::api::Problem;
use super::{Shared, blocking};
use crate::operators::{Operator, Role, TokenRefused};
use crate::org::Org;

/// The session cookie's name.
pub(super) const COOKIE: &str = "clancy_session";
/// The header that carries the session's CSRF token.
pub(super) const CSRF_HEADER: &str = "x-csrf-token";

/// How much each caller may ask.
#[derive(Clone, Copy, Debug)]
pub struct RateLimits {
    /// Requests per second from one IP address (bursts of twice that).
    pub per_ip: u32,
    /// Requests per second by one operator or token (bursts of twice that).
    pub per_operator: u32,
    /// Sign-in and enrolment attempts per minute from one IP address.
    pub sign_ins_per_minute: u32,
}

impl Default for RateLimits {
    fn default() -> RateLimits {
        RateLimits {
            per_ip: 50,
            per_operator: 20,
            sign_ins_per_minute: 10,
        }
    }
}

/// The rate limiters of one daemon.
pub(super) struct Limiters {
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_operator: DefaultKeyedRateLimiter<String>,
    sign_in: DefaultKeyedRateLimiter<IpAddr>,
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN)
}

impl Limiters {
    pub(super) fn new(limits: RateLimits) -> Limiters {
        let per_second = |n: u32| Quota::per_second(nonzero(n)).allow_burst(nonzero(n * 2));
        Limiters {
            per_ip: governor::RateLimiter::keyed(per_second(limits.per_ip)),
            per_operator: governor::RateLimiter::keyed(per_second(limits.per_operator)),
            sign_in: governor::RateLimiter::keyed(
                Quota::per_minute(nonzero(limits.sign_ins_per_minute))
                    .allow_burst(nonzero(limits.sign_ins_per_minute)),
            ),
        }
    }

    /// Forget callers who have been quiet (bounded memory); each timer round.
    pub(super) fn forget_quiet(&self) {
        self.per_ip.retain_recent();
        self.per_operator.retain_recent();
        self.sign_in.retain_recent();
    }

    /// One more sign-in or enrolment attempt from `ip`.
    pub(super) fn sign_in_attempt(&self, ip: IpAddr) -> Result<(), Problem> {
        slowed(
            self.sign_in
                .check_key(&ip)
                .map_err(|n| n.wait_time_from(DefaultClock::default().now())),
        )
    }
}

/// 429 with `Retry-After` when a limiter said wait.
fn slowed(result: Result<(), std::time::Duration>) -> Result<(), Problem> {
    result.map_err(|wait| {
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests",
            "slow down: this caller made too many requests",
        )
        .retry_after(wait.as_secs() + 1)
    })
}

/// How the caller proved who they are.
#[derive(Clone, Debug)]
pub(super) enum Via {
    /// A bearer token, by id.
    Token(String),
    /// A session cookie (its value) and its CSRF token.
    Session { cookie: String, csrf: String },
}

/// The authenticated caller of an API request.
#[derive(Clone)]
pub(super) struct Caller {
    /// Who they act as (the role capped by their token's).
    pub operator: Operator,
    /// How.
    pub via: Via,
    /// Their organisation: the only one whose records they reach.
    pub org: Arc<Org>,
}

impl Caller {
    /// The caller's operator if their role is at least `needed`.
    pub(super) fn needs(&self, needed: Role) -> Result<&Operator, Problem> {
        if self.operator.role < needed {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "Not allowed",
                format!(
                    "this needs the role {needed} or above; you act as {} ({})",
                    self.operator.name, self.operator.role
                ),
            ));
        }
        Ok(&self.operator)
    }
}

/// Requests that need nobody signed in: signing in, enrolling, the API's
/// description.
/// (A method no route takes is left to the router, which answers 405.)
fn public(method: &Method, path: &str) -> bool {
    match path {
        "/api/v1/enrol" | "/api/v1/openapi.json" => true,
        "/api/v1/session" => !matches!(*method, Method::GET | Method::DELETE),
        _ => !path.starts_with("/api/"),
    }
}

/// The middleware in front of everything: the per-IP rate, then (for the
/// API's non-public routes) who is calling, their CSRF proof and their own
/// rate. The [`Caller`] is handed to the route in the request's extensions.
pub(super) async fn guard(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(super::tls::Peer(peer)): ConnectInfo<super::tls::Peer>,
    mut request: Request,
    next: Next,
) -> Response {
    let now = DefaultClock::default().now();
    if let Err(p) = slowed(
        shared
            .limiters
            .per_ip
            .check_key(&peer.ip())
            .map_err(|n| n.wait_time_from(now)),
    ) {
        return p.into_response();
    }
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    if public(&method, &path) {
        return next.run(request).await;
    }
    let caller = match identify(&shared, &method, request.headers()).await {
        Ok(caller) => caller,
        Err(p) => return p.into_response(),
    };
    let key = match &caller.via {
        Via::Token(id) => format!("{}/token:{id}", caller.org.org()),
        Via::Session { .. } => format!("{}/operator:{}", caller.org.org(), caller.operator.name),
    };
    if let Err(p) = slowed(
        shared
            .limiters
            .per_operator
            .check_key(&key)
            .map_err(|n| n.wait_time_from(DefaultClock::default().now())),
    ) {
        return p.into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// The value of the session cookie, if the request carries one.
pub(super) fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

/// Whether the request's `Origin` is this daemon (the `Host` it was sent
/// to, which the host check already accepted).
pub(super) fn same_origin(shared: &Shared, headers: &HeaderMap) -> bool {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let scheme = if shared.tls { "https" } else { "http" };
    headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .is_some_and(|origin| !host.is_empty() && origin == format!("{scheme}://{host}"))
}

fn unauthorized(detail: &str) -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "Not signed in",
        detail.to_string(),
    )
}

/// Who the request's token or session cookie acts as.
async fn identify(
    shared: &Arc<Shared>,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Caller, Problem> {
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let secret = auth
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| unauthorized("send `Authorization: Bearer <token>`"))?
            .trim()
            .to_string();
        return by_token(shared, secret).await;
    }
    let Some(cookie) = session_cookie(headers) else {
        return Err(unauthorized(
            "sign in (POST /api/v1/session) or send `Authorization: Bearer <token>` (see `clancy tokens create`)",
        ));
    };
    let orgs = shared.orgs.clone();
    let limits = shared.sessions;
    let lookup = cookie.clone();
    // The session's organisation is the one that holds it.
    let found = blocking(move || {
        for org in orgs {
            let now = org.now();
            if let Some(found) = org.accounts().session(&lookup, limits, now)? {
                return Ok(Some((org, found)));
            }
        }
        Ok::<_, crate::store::StoreError>(None)
    })
    .await
    .map_err(Problem::internal)?
    .map_err(Problem::internal)?;
    let Some((org, (operator, session))) = found else {
        return Err(unauthorized(
            "the session ended (signed out, idle or too old): sign in again",
        ));
    };
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        let token_ok = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|given| {
                bool::from(subtle::ConstantTimeEq::ct_eq(
                    given.as_bytes(),
                    session.csrf.as_bytes(),
                ))
            });
        if !token_ok || !same_origin(shared, headers) {
            let org = org.clone();
            let name = operator.name.clone();
            let what = format!("{method} without a matching Origin and X-CSRF-Token");
            let _ = blocking(move || {
                org.audit_operator_action(
                    "api-csrf-refused",
                    &name,
                    &format!("refused: a {what} rode on {name}'s session cookie"),
                )
            })
            .await;
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "Cross-site request refused",
                "a request that changes something with a session cookie needs the session's X-CSRF-Token header and an Origin naming this daemon",
            ));
        }
    }
    Ok(Caller {
        operator,
        via: Via::Session {
            cookie,
            csrf: session.csrf,
        },
        org,
    })
}

async fn by_token(shared: &Arc<Shared>, secret: String) -> Result<Caller, Problem> {
    let orgs = shared.orgs.clone();
    // The token's organisation is the one that holds its hash; in the
    // others it is unknown.
    let checked = blocking(move || {
        let mut last = Err(TokenRefused::Invalid);
        for org in orgs {
            let now = org.now();
            match org.operators().authenticate(&secret, now)? {
                Ok((operator, token)) => return Ok(Ok((org, operator, token))),
                Err(TokenRefused::Invalid) => {}
                Err(refused) => {
                    if matches!(refused, TokenRefused::Expired | TokenRefused::Revoked) {
                        // Someone holds a real token that no longer works: on record.
                        let _ = org.audit_operator_action(
                            "api-sign-in",
                            "a bearer token",
                            &format!("refused: {refused}"),
                        );
                    }
                    last = Err(refused);
                    break;
                }
            }
        }
        Ok::<_, crate::store::StoreError>(last)
    })
    .await
    .map_err(Problem::internal)?
    .map_err(Problem::internal)?;
    let (org, operator, token) = checked.map_err(|refused| unauthorized(&refused.to_string()))?;
    Ok(Caller {
        operator,
        via: Via::Token(token.id),
        org,
    })
}

/// The `Set-Cookie` value that starts a session (`Secure` under TLS).
pub(super) fn set_cookie(value: &str, max_age: i64, tls: bool) -> String {
    format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if tls { "; Secure" } else { "" }
    )
}
