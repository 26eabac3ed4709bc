//! Notifications: signed webhooks on new requests, escalations, decisions,
//! expiries and failures.
//!
//! Each employee's manifest says where its notifications go (`[[notify]]`:
//! a URL, a payload format — Clancy JSON or a Slack-compatible incoming
//! webhook — and which events). A notification is first written to a durable
//! outbox, so a decision never waits for (or fails with) a receiver; it is
//! then delivered with retries and exponential backoff until the receiver
//! answers 2xx or the attempts run out. Every request carries
//! `X-Clancy-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`
//! with the org's webhook secret, so receivers can reject forgeries and
//! replays (see `clancy notify secret`).

use std::collections::BTreeSet;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::approvals::{Approval, Status};
use crate::store::{OrgStore, StoreError};

/// Webhook requests sent at once by one delivery round.
const CONCURRENT_DELIVERIES: usize = 16;
const AREA: &str = "outbox";
/// Delivery attempts before a notification is given up (and audited as failed).
pub const MAX_ATTEMPTS: u32 = 8;
/// The longest wait between two attempts.
const MAX_BACKOFF_SECS: i64 = 3600;

/// What a notification is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    /// A new request waits for a human.
    Requested,
    /// A request moved up its escalation ladder.
    Escalated,
    /// A human approved, denied or edited a request.
    Decided,
    /// Nobody decided in time; the request is denied.
    Expired,
    /// An approved action failed when the host ran it.
    Failed,
}

impl Event {
    /// Every event.
    pub const ALL: [Event; 5] = [
        Event::Requested,
        Event::Escalated,
        Event::Decided,
        Event::Expired,
        Event::Failed,
    ];

    /// The event's name in manifests and headers.
    pub fn name(self) -> &'static str {
        match self {
            Event::Requested => "requested",
            Event::Escalated => "escalated",
            Event::Decided => "decided",
            Event::Expired => "expired",
            Event::Failed => "failed",
        }
    }

    /// The event named `name`.
    pub fn parse(name: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// The body a receiver gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Clancy's JSON: the event and the request.
    Json,
    /// A Slack incoming-webhook message (`text` and `blocks`).
    Slack,
}

/// Where one employee's notifications go.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// An `https://` URL (or `http://` to this machine only).
    pub url: String,
    /// The payload format.
    pub format: Format,
    /// The events sent; empty means all.
    pub events: BTreeSet<Event>,
    /// Whether payloads carry the whole action (mail bodies, file
    /// contents); by default they carry what an approver needs to decide
    /// and a preview cut to [`PREVIEW_CHARS`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_content: bool,
}

/// The longest preview a payload carries unless its target opts into content.
pub const PREVIEW_CHARS: usize = 600;

/// The preview of `approval` for a payload: whole with `include_content`,
/// else cut to [`PREVIEW_CHARS`] with a note of what was left out.
fn payload_preview(approval: &Approval, include_content: bool) -> String {
    let preview = approval.preview();
    let total = preview.chars().count();
    if include_content || total <= PREVIEW_CHARS {
        return preview;
    }
    format!(
        "{}\n… ({} more characters: see `clancy approvals list`)",
        preview.chars().take(PREVIEW_CHARS).collect::<String>(),
        total - PREVIEW_CHARS
    )
}

/// What a payload says about a request: who, what, why and where it
/// stands; the action's content (`request`) only with `include_content`.
fn request_facts(approval: &Approval, include_content: bool) -> serde_json::Value {
    let r = &approval.request;
    let mut facts = serde_json::json!({
        "id": approval.id,
        "status": approval.status,
        "employee": r.employee,
        "task": r.task,
        "integration": r.integration,
        "scope": r.scope,
        "action": r.operation.action(),
        "method": r.operation.method(),
        "reason": r.reason,
        "gated_because": approval.gated_because,
        "created_at": approval.created_at,
        "expires_at": approval.expires_at,
        "decided_by": approval.decided_by,
        "outcome": approval.outcome,
    });
    if include_content && let Ok(request) = serde_json::to_value(r) {
        // The whole action, arguments and all, for targets that opted in.
        facts["request"] = request;
    }
    facts
}

impl Target {
    /// Whether this target wants `event`.
    pub fn wants(&self, event: Event) -> bool {
        self.events.is_empty() || self.events.contains(&event)
    }
}

/// Check a webhook URL: `https://` anywhere, `http://` only to this machine
/// (a signed payload must not cross a network in clear), no credentials.
pub fn validate_url(url: &str) -> Result<(), String> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a valid URL ({e})"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!(
            "{url:?} carries credentials; put secrets in the receiver, not the URL"
        ));
    }
    let host = parsed.host_str().unwrap_or("");
    match parsed.scheme() {
        "https" if !host.is_empty() => Ok(()),
        "http" if matches!(host, "127.0.0.1" | "localhost" | "[::1]") => Ok(()),
        "http" => Err(format!(
            "{url:?} is not allowed: plain http is only allowed to this machine (127.0.0.1, localhost); use https"
        )),
        other => Err(format!("{url:?} is not an http(s) URL (scheme {other:?})")),
    }
}

/// The scheme, host and port of a webhook URL, for display: the path and
/// query of a webhook (Slack's, for one) are its secret.
pub fn origin(url: &str) -> String {
    reqwest::Url::parse(url)
        .map(|u| format!("{}/…", u.origin().ascii_serialization()))
        .unwrap_or_else(|_| "(invalid URL)".into())
}

/// One notification in the outbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// `nt-…`, also sent as `X-Clancy-Delivery` (receivers can de-duplicate).
    pub id: String,
    /// What it is about.
    pub event: Event,
    /// The request it is about.
    pub approval: String,
    /// Where it goes.
    pub url: String,
    /// The exact body sent.
    pub body: String,
    /// Attempts so far.
    pub attempts: u32,
    /// When to try next.
    pub next_at: DateTime<Utc>,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// Delivered (2xx) or given up.
    pub state: DeliveryState,
}

/// Where a notification stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Attempts ran out.
    GaveUp,
}

/// The payload for `approval` and `event` in `format`.
pub fn payload(
    format: Format,
    event: Event,
    approval: &Approval,
    include_content: bool,
) -> serde_json::Value {
    let preview = payload_preview(approval, include_content);
    let r = &approval.request;
    let headline = match event {
        Event::Requested => format!("{} asks for approval ({})", r.employee, approval.id),
        Event::Escalated => format!(
            "Escalated to {}: {} ({})",
            approval
                .current_approver()
                .map_or("any operator".to_string(), |a| a.to_string()),
            r.employee,
            approval.id
        ),
        Event::Decided => format!(
            "{} {} {}'s request ({})",
            approval.decided_by.as_deref().unwrap_or("someone"),
            match approval.status {
                Status::Denied => "denied",
                Status::Edited => "edited and approved",
                Status::Void => "voided (its grant changed)",
                Status::Answered => "answered",
                _ => "approved",
            },
            r.employee,
            approval.id
        ),
        Event::Expired => format!(
            "Nobody decided {}'s request in time; it was denied ({})",
            r.employee, approval.id
        ),
        Event::Failed => format!(
            "{}'s approved action failed ({}): {}",
            r.employee,
            approval.id,
            approval.outcome.as_deref().unwrap_or("")
        ),
    };
    match format {
        Format::Json => serde_json::json!({
            "event": event.name(),
            "text": headline,
            "approval": request_facts(approval, include_content),
            "preview": preview,
        }),
        Format::Slack => serde_json::json!({
            "text": headline,
            "blocks": [
                { "type": "section", "text": { "type": "mrkdwn", "text": format!("*{headline}*") } },
                { "type": "section", "text": { "type": "mrkdwn", "text": format!("```{preview}```") } },
                { "type": "context", "elements": [
                    { "type": "mrkdwn", "text": format!("Decide with `clancy approvals approve {id}` or `clancy approvals deny {id}`", id = approval.id) }
                ] }
            ]
        }),
    }
}

/// The `X-Clancy-Signature` value for `body` sent at `timestamp`.
pub fn sign(secret: &[u8], timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Wait before attempt `attempts + 1`: 2, 4, 8, … seconds, at most an hour.
pub fn backoff(attempts: u32) -> Duration {
    Duration::seconds((1i64 << attempts.min(20)).min(MAX_BACKOFF_SECS))
}

/// What one delivery round did.
#[derive(Debug, Default, PartialEq, Serialize)]
pub struct Delivery {
    /// Delivered now.
    pub delivered: Vec<String>,
    /// Failed now, will be retried.
    pub retrying: Vec<String>,
    /// Failed for the last time now.
    pub gave_up: Vec<Notification>,
}

/// One organisation's outbox.
pub struct Outbox {
    store: OrgStore,
}

fn key(n: &Notification) -> Vec<u8> {
    format!("n/{}", n.id).into_bytes()
}

impl Outbox {
    /// The outbox of `store`'s organisation.
    pub fn new(store: OrgStore) -> Outbox {
        Outbox { store }
    }

    /// The org's webhook signing secret, created on first use.
    pub fn secret(&self) -> Result<Vec<u8>, StoreError> {
        if let Some(s) = self.store.get("notify", b"secret")? {
            return Ok(s);
        }
        let secret = hex::encode(uuid::Uuid::new_v4().as_bytes())
            + &hex::encode(uuid::Uuid::new_v4().as_bytes());
        let written = self.store.write_if(
            "notify",
            b"secret",
            None,
            vec![(b"secret".to_vec(), Some(secret.clone().into_bytes()))],
        )?;
        if written {
            Ok(secret.into_bytes())
        } else {
            Ok(self.store.get("notify", b"secret")?.unwrap_or_default())
        }
    }

    /// Queue a notification durably.
    pub fn push(
        &self,
        target: &Target,
        event: Event,
        approval: &Approval,
        now: DateTime<Utc>,
    ) -> Result<Notification, StoreError> {
        let n = Notification {
            id: format!("nt-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            event,
            approval: approval.id.clone(),
            url: target.url.clone(),
            body: payload(target.format, event, approval, target.include_content).to_string(),
            attempts: 0,
            next_at: now,
            last_error: None,
            state: DeliveryState::Pending,
        };
        self.store.put_json(AREA, &key(&n), &n)?;
        Ok(n)
    }

    /// Every notification, oldest first.
    pub fn list(&self) -> Result<Vec<Notification>, StoreError> {
        let mut all: Vec<Notification> = self.store.scan_json(AREA, b"n/")?;
        all.sort_by(|a, b| a.next_at.cmp(&b.next_at).then(a.id.cmp(&b.id)));
        Ok(all)
    }

    /// Try every pending notification that is due at `now`, once.
    pub fn deliver_due(&self, now: DateTime<Utc>) -> Result<Delivery, StoreError> {
        let due: Vec<Notification> = self
            .list()?
            .into_iter()
            .filter(|n| n.state == DeliveryState::Pending && n.next_at <= now)
            .collect();
        let mut report = Delivery::default();
        if due.is_empty() {
            return Ok(report);
        }
        let secret = self.secret()?;
        let client = reqwest::blocking::Client::builder()
            .connect_timeout(StdDuration::from_secs(3))
            .timeout(StdDuration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| StoreError::Io(format!("cannot start the webhook client: {e}")))?;
        // Up to CONCURRENT_DELIVERIES requests at once, each bounded by the
        // client's timeouts, so a receiver that never answers holds up one
        // slot for at most 10 s, never the others.
        let timestamp = now.timestamp();
        let mut outcomes = Vec::with_capacity(due.len());
        for batch in due.chunks(CONCURRENT_DELIVERIES) {
            std::thread::scope(|scope| {
                let sends: Vec<_> = batch
                    .iter()
                    .map(|n| {
                        let (client, secret) = (&client, &secret);
                        scope.spawn(move || {
                            client
                                .post(&n.url)
                                .header("Content-Type", "application/json")
                                .header("User-Agent", "clancy-webhooks")
                                .header("X-Clancy-Event", n.event.name())
                                .header("X-Clancy-Delivery", &n.id)
                                .header("X-Clancy-Timestamp", timestamp.to_string())
                                .header("X-Clancy-Signature", sign(secret, timestamp, &n.body))
                                .body(n.body.clone())
                                .send()
                                .map(|resp| resp.status())
                        })
                    })
                    .collect();
                for (n, send) in batch.iter().zip(sends) {
                    let sent = send
                        .join()
                        .unwrap_or_else(|_| Ok(reqwest::StatusCode::INTERNAL_SERVER_ERROR));
                    outcomes.push((n.clone(), sent));
                }
            });
        }
        for (mut n, sent) in outcomes {
            n.attempts += 1;
            match sent {
                Ok(status) if status.is_success() => {
                    n.state = DeliveryState::Delivered;
                    n.last_error = None;
                    report.delivered.push(n.id.clone());
                }
                failed => {
                    n.last_error = Some(match failed {
                        Ok(status) => format!("the receiver answered {status}"),
                        Err(e) => format!("cannot reach the receiver: {}", without_url(&e)),
                    });
                    if n.attempts >= MAX_ATTEMPTS {
                        n.state = DeliveryState::GaveUp;
                        report.gave_up.push(n.clone());
                    } else {
                        n.next_at = now + backoff(n.attempts);
                        report.retrying.push(n.id.clone());
                    }
                }
            }
            self.store.put_json(AREA, &key(&n), &n)?;
        }
        Ok(report)
    }
}

/// A reqwest error's text without its URL (which may hold a token, as Slack's do).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    kind.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_displayed_origin_hides_a_webhooks_secret_path() {
        let shown = origin("https://hooks.slack.com/services/T000/B000/secret-token");
        assert_eq!(shown, "https://hooks.slack.com/…");
        assert!(!shown.contains("secret-token"));
    }

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let secs: Vec<i64> = (1..=13).map(|a| backoff(a).num_seconds()).collect();
        assert_eq!(&secs[..5], [2, 4, 8, 16, 32]);
        assert_eq!(secs[12], MAX_BACKOFF_SECS);
    }

    #[test]
    fn signatures_depend_on_secret_timestamp_and_body() {
        let s = sign(b"k", 1, "body");
        assert!(s.starts_with("v1=") && s.len() == 3 + 64);
        assert_ne!(s, sign(b"k2", 1, "body"));
        assert_ne!(s, sign(b"k", 2, "body"));
        assert_ne!(s, sign(b"k", 1, "body!"));
    }
}
