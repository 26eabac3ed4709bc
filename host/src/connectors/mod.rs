//! Connectors: the integrations' provider traits implemented against the
//! real services (Gmail, Slack, HubSpot, Google Calendar, QuickBooks),
//! reached through an organisation's OAuth connection.
//!
//! What they share lives here: [`Api`], one connection's HTTP client. It
//! gets the access token from the [`Vault`] at every call (so a revoked or
//! expired connection is `expired` at the next call), sends it as a bearer
//! token to the configured API base only, follows no redirect, waits at
//! most the provider's timeout, reads at most [`MAX_RESPONSE_BYTES`],
//! and retries a request on 429 and 5xx (honouring `Retry-After`, with
//! backoff) only when the request is safe to repeat: a read, a write that
//! sets a value, or a write the provider de-duplicates. A write that is
//! not is sent once, whatever happens.
//!
//! Each connector resolves the grant's scope to the service's own id
//! itself, and builds every request from that id: whatever a guest sends,
//! a call for one label, channel, calendar, portal or company never names
//! another.

pub mod gcal;
pub mod gmail;
pub mod hubspot;
pub mod quickbooks;
pub mod slack;

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::integrations::Integration;
use crate::oauth::ProviderConfig;
use crate::org::connections::{ConnectionError, Vault};
use crate::providers::{
    CalendarProvider, ChatProvider, CrmProvider, Done, LedgerProvider, MailProvider, ProviderError,
};

/// The largest response body read from a service.
pub const MAX_RESPONSE_BYTES: u64 = 4 * 1024 * 1024;
/// Attempts of a request that is safe to repeat.
const ATTEMPTS: u32 = 3;
/// The longest `Retry-After` waited for; a longer one fails the call.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
/// The first backoff between attempts (doubled each time).
const BACKOFF: Duration = Duration::from_millis(200);
/// Pages followed at most in one listing.
pub const MAX_PAGES: usize = 20;

/// Whether a request may be sent again after a 429, a 5xx or a lost answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repeat {
    /// A read, a write that sets a value, or one the provider de-duplicates.
    Safe,
    /// A write the provider would perform twice: sent once.
    Never,
}

/// A request body.
pub enum Body {
    /// No body.
    None,
    /// A JSON body.
    Json(serde_json::Value),
}

/// One request: the path's segments (each escaped), the query, the body.
pub struct Call<'a> {
    method: Method,
    segments: Vec<&'a str>,
    query: Vec<(&'a str, String)>,
    body: Body,
    repeat: Repeat,
}

impl<'a> Call<'a> {
    /// A `method` request to the API base plus `segments`.
    pub fn new(method: Method, segments: &[&'a str]) -> Call<'a> {
        let repeat = if method == Method::GET {
            Repeat::Safe
        } else {
            Repeat::Never
        };
        Call {
            method,
            segments: segments.to_vec(),
            query: Vec::new(),
            body: Body::None,
            repeat,
        }
    }

    /// A GET.
    pub fn get(segments: &[&'a str]) -> Call<'a> {
        Call::new(Method::GET, segments)
    }

    /// With a query parameter.
    pub fn query(mut self, name: &'a str, value: impl Into<String>) -> Call<'a> {
        self.query.push((name, value.into()));
        self
    }

    /// With a JSON body.
    pub fn json(mut self, body: serde_json::Value) -> Call<'a> {
        self.body = Body::Json(body);
        self
    }

    /// Safe to repeat (a write that sets a value, or one the provider
    /// de-duplicates).
    pub fn repeatable(mut self) -> Call<'a> {
        self.repeat = Repeat::Safe;
        self
    }
}

/// What a service answered that was not a success.
#[derive(Debug)]
pub struct Refusal {
    /// The HTTP status.
    pub status: u16,
    /// The body, parsed if it was JSON.
    pub body: serde_json::Value,
}

/// One connection's HTTP client to its service.
pub struct Api {
    vault: Vault,
    connection: String,
    integration: Integration,
    client: std::sync::OnceLock<Result<Client, String>>,
    /// Facts about the account a connector checked once (HubSpot's portal).
    checked: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Api {
    /// The client of connection `connection` (serving `integration`).
    pub fn new(vault: Vault, connection: &str, integration: Integration) -> Api {
        Api {
            vault,
            connection: connection.to_string(),
            integration,
            client: std::sync::OnceLock::new(),
            checked: std::sync::Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// Whether `fact` about the connection's account was checked already.
    pub fn has_checked(&self, fact: &str) -> bool {
        self.checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(fact)
    }

    /// Remember that `fact` about the connection's account holds.
    pub fn checked(&self, fact: &str) {
        self.checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(fact.to_string());
    }

    /// The connection's provider configuration.
    pub fn config(&self) -> Result<ProviderConfig, ProviderError> {
        let c = self
            .vault
            .connection(&self.connection)
            .map_err(|e| ProviderError::Failed(format!("cannot read the connection: {e}")))?
            .ok_or(ProviderError::Expired)?;
        if c.integration != self.integration {
            return Err(ProviderError::Failed(format!(
                "connection {} serves {}, not {}",
                c.id, c.integration, self.integration
            )));
        }
        self.vault.oauth_provider(&c.provider).map_err(|e| {
            ProviderError::Failed(format!("the connection's provider is not configured: {e}"))
        })
    }

    fn client(&self, timeout: Duration) -> Result<&Client, ProviderError> {
        self.client
            .get_or_init(|| {
                Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .timeout(timeout)
                    .connect_timeout(timeout)
                    .build()
                    .map_err(|e| format!("cannot make an HTTP client: {e}"))
            })
            .as_ref()
            .map_err(|e| ProviderError::Failed(e.clone()))
    }

    /// Send `call` and read its JSON answer; `Err(Ok(refusal))` is the
    /// service's own refusal (4xx other than 401, after retries on 429),
    /// for the connector to read its error body.
    pub fn send<T: DeserializeOwned + Send>(
        &self,
        call: Call<'_>,
    ) -> Result<Result<T, Refusal>, ProviderError> {
        // The blocking client must not run on a thread that drives an
        // async runtime (guests are run by one): every call runs on a
        // thread of its own, which waits for nothing else.
        std::thread::scope(|s| {
            s.spawn(|| self.send_here(&call))
                .join()
                .unwrap_or_else(|_| Err(ProviderError::Failed("the connector panicked".into())))
        })
    }

    /// Send `call`, treating every refusal as a failure.
    pub fn fetch<T: DeserializeOwned + Send>(&self, call: Call<'_>) -> Result<T, ProviderError> {
        self.send(call)?.map_err(|r| refusal_error(&r))
    }

    fn send_here<T: DeserializeOwned>(
        &self,
        call: &Call<'_>,
    ) -> Result<Result<T, Refusal>, ProviderError> {
        let config = self.config()?;
        let base = config
            .api_base
            .clone()
            .unwrap_or_else(|| default_base(self.integration).into());
        let mut url = reqwest::Url::parse(&base)
            .map_err(|e| ProviderError::Failed(format!("api_base {base:?}: {e}")))?;
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|()| ProviderError::Failed(format!("api_base {base:?} has no path")))?;
            path.pop_if_empty();
            for segment in &call.segments {
                path.push(segment);
            }
        }
        if !call.query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(call.query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let client = self.client(config.timeout)?;
        let mut refreshed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let token = self.token(refreshed)?;
            let mut request: RequestBuilder = client
                .request(call.method.clone(), url.clone())
                .bearer_auth(token.expose())
                .header(reqwest::header::ACCEPT, "application/json");
            if let Body::Json(body) = &call.body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_string());
            }
            let outcome = request.send();
            drop(token);
            let response = match outcome {
                Ok(r) => r,
                Err(e) => {
                    let why = describe(&e);
                    if call.repeat == Repeat::Safe && attempt < ATTEMPTS {
                        std::thread::sleep(backoff(attempt));
                        continue;
                    }
                    return Err(ProviderError::Failed(match call.repeat {
                        Repeat::Safe => format!("{} did not answer: {why}", self.integration),
                        Repeat::Never => format!(
                            "{} did not answer: {why} (not retried: the write may or may not have happened)",
                            self.integration
                        ),
                    }));
                }
            };
            let status = response.status();
            if status.is_redirection() {
                let to = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| url.join(l).ok())
                    .and_then(|l| l.host_str().map(str::to_string))
                    .unwrap_or_else(|| "somewhere".into());
                return Err(ProviderError::Failed(format!(
                    "{} redirected the call (to {}); redirects are not followed",
                    self.integration,
                    crate::human::line(&to)
                )));
            }
            if status == reqwest::StatusCode::UNAUTHORIZED {
                if !refreshed {
                    // The token may have been cut short: refresh once.
                    refreshed = true;
                    attempt -= 1;
                    continue;
                }
                self.expire("the service refused its fresh access token")?;
                return Err(ProviderError::Expired);
            }
            let retryable =
                status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
            if retryable {
                let wait = retry_after(&response).unwrap_or_else(|| backoff(attempt));
                let refusal = Refusal {
                    status: status.as_u16(),
                    body: read_json(response).unwrap_or(serde_json::Value::Null),
                };
                if call.repeat == Repeat::Safe && attempt < ATTEMPTS && wait <= MAX_RETRY_AFTER {
                    std::thread::sleep(wait);
                    continue;
                }
                return Err(ProviderError::Failed(format!(
                    "{}{}",
                    refusal_error(&refusal),
                    match call.repeat {
                        Repeat::Never => " (not retried: the write is not safe to repeat)",
                        Repeat::Safe if wait > MAX_RETRY_AFTER => " (it asked to wait too long)",
                        Repeat::Safe => " (gave up after retries)",
                    }
                )));
            }
            if !status.is_success() {
                let body = read_json(response).unwrap_or(serde_json::Value::Null);
                return Ok(Err(Refusal {
                    status: status.as_u16(),
                    body,
                }));
            }
            let body = read_json(response)?;
            return serde_json::from_value(body).map(Ok).map_err(|e| {
                ProviderError::Failed(format!(
                    "{} answered JSON of an unexpected shape: {e}",
                    self.integration
                ))
            });
        }
    }

    fn token(&self, force: bool) -> Result<crate::vault::Secret, ProviderError> {
        let token = if force {
            self.vault.refreshed_token(&self.connection)
        } else {
            self.vault.connection_token(&self.connection)
        };
        token.map_err(|e| match e {
            ConnectionError::Expired(_) | ConnectionError::Unknown(_) => ProviderError::Expired,
            other => ProviderError::Failed(format!("the connection's token: {other}")),
        })
    }

    /// Mark the connection as needing re-authorisation: the service said
    /// its token no longer works (`why`).
    pub fn expire(&self, why: &str) -> Result<(), ProviderError> {
        self.vault
            .expire(&self.connection, why)
            .map_err(|e| ProviderError::Failed(e.to_string()))
    }

    /// The result of an earlier write with idempotency `key` (see
    /// [`Api::remember`]).
    pub fn replay(&self, key: Option<&str>) -> Result<Option<Done>, ProviderError> {
        match key {
            Some(k) => self
                .vault
                .written(&self.connection, k)
                .map_err(|e| ProviderError::Failed(e.to_string())),
            None => Ok(None),
        }
    }

    /// Remember the result of a write with idempotency `key`: the same key
    /// again returns it without a request.
    pub fn remember(&self, key: Option<&str>, done: Done) -> Result<Done, ProviderError> {
        if let Some(k) = key {
            self.vault
                .remember_write(&self.connection, k, &done)
                .map_err(|e| ProviderError::Failed(format!("the write happened, but: {e}")))?;
        }
        Ok(done)
    }
}

/// The service's real API base.
fn default_base(integration: Integration) -> &'static str {
    match integration {
        Integration::Gmail => "https://gmail.googleapis.com",
        Integration::Slack => "https://slack.com/api",
        Integration::Hubspot => "https://api.hubapi.com",
        Integration::GoogleCalendar => "https://www.googleapis.com",
        Integration::Quickbooks => "https://quickbooks.api.intuit.com",
        Integration::Files => "https://invalid.invalid",
    }
}

fn backoff(attempt: u32) -> Duration {
    BACKOFF * 2u32.saturating_pow(attempt.saturating_sub(1))
}

/// `Retry-After` in seconds (the HTTP-date form is not used by these services).
fn retry_after(response: &Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// A transport failure, without its URL.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "it timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        let mut text = e.to_string();
        if let Some(url) = e.url() {
            text = text.replace(url.as_str(), "");
        }
        crate::human::line(&text)
    }
}

/// Read a body of at most [`MAX_RESPONSE_BYTES`] as JSON.
fn read_json(response: Response) -> Result<serde_json::Value, ProviderError> {
    use std::io::Read as _;
    if response
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES)
    {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    response
        .take(MAX_RESPONSE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ProviderError::Failed(format!("reading the answer failed: {e}")))?;
    if bytes.len() as u64 > MAX_RESPONSE_BYTES {
        return Err(too_large());
    }
    if bytes.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(&bytes).map_err(|_| {
        ProviderError::Failed("the service answered something that is not JSON".into())
    })
}

fn too_large() -> ProviderError {
    ProviderError::Failed(format!(
        "the service's answer is larger than {} MiB: refused",
        MAX_RESPONSE_BYTES / 1024 / 1024
    ))
}

/// A refusal as an error for the guest: not found, or the service's own
/// message (escaped, cut).
pub fn refusal_error(r: &Refusal) -> ProviderError {
    let message = error_message(&r.body);
    let text = match message {
        Some(m) => format!("the service refused ({}): {}", r.status, cut(&m)),
        None => format!("the service refused ({})", r.status),
    };
    match r.status {
        404 | 410 => ProviderError::NotFound(text),
        400 | 409 | 422 => ProviderError::Invalid(text),
        _ => ProviderError::Failed(text),
    }
}

/// The message in a service's error body (Google's `error.message`,
/// HubSpot's `message`, Slack's `error`, QuickBooks' `Fault.Error[0]`).
fn error_message(body: &serde_json::Value) -> Option<String> {
    let candidates = [
        body.pointer("/error/message"),
        body.get("message"),
        body.get("error"),
        body.pointer("/Fault/Error/0/Detail"),
        body.pointer("/Fault/Error/0/Message"),
    ];
    candidates
        .into_iter()
        .flatten()
        .find_map(|v| v.as_str().map(str::to_string))
}

/// Service text for an error: one line, at most 200 characters.
pub fn cut(text: &str) -> String {
    let line = crate::human::line(text);
    if line.chars().count() > 200 {
        format!("{}…", line.chars().take(200).collect::<String>())
    } else {
        line
    }
}

/// A guest-supplied id used as one path segment: refused unless it is a
/// plain token of the service's id alphabet (it is escaped either way).
pub fn check_id(what: &str, id: &str) -> Result<(), ProviderError> {
    // At least one letter or digit: `.` and `..` are path steps, not ids.
    let ok = id.chars().any(|c| c.is_ascii_alphanumeric())
        && id.len() <= 256
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(ProviderError::Invalid(format!(
            "{what} {} is not an id",
            crate::integrations::quote(id)
        )))
    }
}

/// Finds, at each call, the connector of the connection an admin chose for
/// an integration (none: the integration uses the sandbox workspace).
/// Connectors are kept per connection, so their HTTP connections are reused.
pub struct Router {
    vault: Vault,
    apis: std::sync::Mutex<std::collections::HashMap<String, Arc<Api>>>,
}

impl Router {
    /// The router of the organisation whose vault this is.
    pub fn new(vault: Vault) -> Router {
        Router {
            vault,
            apis: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn api(&self, integration: Integration) -> Result<Option<Arc<Api>>, ProviderError> {
        let bound = self.vault.binding(integration).map_err(|e| {
            ProviderError::Failed(format!(
                "cannot read which connection {integration} uses: {e}"
            ))
        })?;
        let Some(id) = bound else {
            return Ok(None);
        };
        let mut apis = self
            .apis
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(Some(
            apis.entry(id.clone())
                .or_insert_with(|| Arc::new(Api::new(self.vault.clone(), &id, integration)))
                .clone(),
        ))
    }

    /// Gmail, if a connection serves it.
    pub fn mail(&self) -> Result<Option<Arc<dyn MailProvider>>, ProviderError> {
        Ok(self
            .api(Integration::Gmail)?
            .map(|a| Arc::new(gmail::Gmail::new(a)) as Arc<dyn MailProvider>))
    }

    /// Slack, if a connection serves it.
    pub fn chat(&self) -> Result<Option<Arc<dyn ChatProvider>>, ProviderError> {
        Ok(self
            .api(Integration::Slack)?
            .map(|a| Arc::new(slack::Slack::new(a)) as Arc<dyn ChatProvider>))
    }

    /// HubSpot, if a connection serves it.
    pub fn crm(&self) -> Result<Option<Arc<dyn CrmProvider>>, ProviderError> {
        Ok(self
            .api(Integration::Hubspot)?
            .map(|a| Arc::new(hubspot::Hubspot::new(a)) as Arc<dyn CrmProvider>))
    }

    /// Google Calendar, if a connection serves it.
    pub fn calendar(&self) -> Result<Option<Arc<dyn CalendarProvider>>, ProviderError> {
        Ok(self
            .api(Integration::GoogleCalendar)?
            .map(|a| Arc::new(gcal::GoogleCalendar::new(a)) as Arc<dyn CalendarProvider>))
    }

    /// QuickBooks, if a connection serves it.
    pub fn ledger(&self) -> Result<Option<Arc<dyn LedgerProvider>>, ProviderError> {
        Ok(self
            .api(Integration::Quickbooks)?
            .map(|a| Arc::new(quickbooks::Quickbooks::new(a)) as Arc<dyn LedgerProvider>))
    }
}

/// The id the connection's configuration gives scope value `scope`, if any.
pub fn configured_id(config: &ProviderConfig, scope: &str) -> Option<String> {
    config.ids.get(scope).cloned()
}

/// A JSON value as a string (numbers too), or "".
pub fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Serialise for a fingerprint (for undo's conflict check).
pub fn fingerprint_of<T: Serialize>(value: &T) -> String {
    crate::providers::fingerprint(value)
}

/// A decimal amount (`12.5`, `"1200.00"`) in cents.
pub fn cents(v: &serde_json::Value) -> i64 {
    let s = text(v);
    let s = s.trim();
    if s.is_empty() {
        return 0;
    }
    let negative = s.starts_with('-');
    let s = s.trim_start_matches('-');
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let whole: i64 = whole.parse().unwrap_or(0);
    let frac2: String = frac.chars().chain("00".chars()).take(2).collect();
    let frac: i64 = frac2.parse().unwrap_or(0);
    let c = whole.saturating_mul(100).saturating_add(frac);
    if negative { -c } else { c }
}
