//! Notifications: signed webhooks on new requests, escalations, decisions,
//! expiries and failures.
//!
//! Each employee's manifest says where its notifications go (`[[notify]]`:
//! a URL, a payload format — Clancy JSON or a Slack-compatible incoming
//! webhook — and which events). A notification is first written to a durable
//! outbox, so a decision never waits for (or fails with) a receiver; it is
//! then delivered with retries and exponential backoff until the receiver
//! answers 2xx or the attempts run out. Every request is signed per the
//! Standard Webhooks specification (<https://www.standardwebhooks.com>):
//! `webhook-id` (the notification's id, the same on every retry),
//! `webhook-timestamp` (Unix seconds when sent) and
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`,
//! where the key is the org's webhook secret (`clancy notify secret` prints
//! it as `whsec_<base64 key>`), so receivers reject forgeries and replays
//! with any Standard Webhooks library.

use std::collections::BTreeSet;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::approvals::{Approval, Status};
use crate::store::{OrgStore, StoreError, Write};

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
    /// The host signed an audit checkpoint (sent only to targets that list
    /// it: a copy of every checkpoint kept by someone else).
    Checkpoint,
    /// A connection the employee's grants use needs an admin to connect it
    /// again (its refresh was refused, or it outlived its lifetime).
    Connection,
}

impl Event {
    /// Every event.
    pub const ALL: [Event; 7] = [
        Event::Requested,
        Event::Escalated,
        Event::Decided,
        Event::Expired,
        Event::Failed,
        Event::Checkpoint,
        Event::Connection,
    ];

    /// The event's name in manifests and headers.
    pub fn name(self) -> &'static str {
        match self {
            Event::Requested => "requested",
            Event::Escalated => "escalated",
            Event::Decided => "decided",
            Event::Expired => "expired",
            Event::Failed => "failed",
            Event::Checkpoint => "checkpoint",
            Event::Connection => "connection",
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
    /// Whether this target may be on a private, loopback or link-local
    /// address (a receiver inside the operator's network). Without it such
    /// addresses are refused, in the URL and after resolving its name, at
    /// every delivery.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_private_address: bool,
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
pub fn request_facts(approval: &Approval, include_content: bool) -> serde_json::Value {
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
    /// Whether this target wants `event`. An empty list means every event
    /// about requests; checkpoints only go to targets that list them.
    pub fn wants(&self, event: Event) -> bool {
        self.events.contains(&event) || (self.events.is_empty() && event != Event::Checkpoint)
    }
}

/// Check a webhook URL: `https://` anywhere public, `http://` only to this
/// machine (a signed payload must not cross a network in clear), no
/// credentials; a host that is (or names) a private, loopback or
/// link-local address only with `allow_private` (the manifest's
/// `allow_private_address = true`). Names are resolved again, and checked
/// again, at every delivery.
pub fn validate_url(url: &str, allow_private: bool) -> Result<(), String> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a valid URL ({e})"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!(
            "{url:?} carries credentials; put secrets in the receiver, not the URL"
        ));
    }
    let host = parsed.host_str().unwrap_or("");
    let local = matches!(parsed.host(), Some(url::Host::Domain("localhost")))
        || literal_ip(&parsed).is_some_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" if !host.is_empty() => {}
        "http" if local => {}
        "http" => {
            return Err(format!(
                "{url:?} is not allowed: plain http is only allowed to this machine (127.0.0.1, localhost); use https"
            ));
        }
        other => return Err(format!("{url:?} is not an http(s) URL (scheme {other:?})")),
    }
    if !allow_private && (local || literal_ip(&parsed).is_some_and(|ip| !is_public(ip))) {
        return Err(format!(
            "{url:?} is a private, loopback or link-local address; a receiver inside your network needs `allow_private_address = true` on its [[notify]]"
        ));
    }
    Ok(())
}

/// The host of `url` if it is an IP address.
fn literal_ip(url: &reqwest::Url) -> Option<std::net::IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(ip.into()),
        url::Host::Ipv6(ip) => Some(ip.into()),
        url::Host::Domain(_) => None,
    }
}

/// Whether `ip` is an address on the public internet: not loopback,
/// private, shared (CGNAT), link-local (cloud metadata lives there),
/// unspecified, documentation, benchmarking, multicast, broadcast or
/// reserved, also when written as an IPv4-mapped or NAT64 IPv6 address.
pub fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                let embedded = std::net::Ipv4Addr::new(
                    (s[6] >> 8) as u8,
                    s[6] as u8,
                    (s[7] >> 8) as u8,
                    s[7] as u8,
                );
                return is_public(IpAddr::V4(embedded));
            }
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0 && s[1..6] == [0, 0, 0, 0, 0]))
        }
    }
}

/// Resolves names for deliveries to targets without
/// `allow_private_address`, keeping only public addresses, so a name that
/// points at (or is re-pointed to) an internal address is never reached.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let all: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<std::net::SocketAddr> =
                all.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(format!(
                    "{host} resolves only to private, loopback or link-local addresses (allow_private_address is not set)"
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
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
    /// Copied from its target: whether a private address may be reached.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_private_address: bool,
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
        // Never about a request (see `checkpoint_payload`, `connection_payload`).
        Event::Checkpoint | Event::Connection => format!("{} ({})", r.employee, approval.id),
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

/// The payload of a signed audit checkpoint: the checkpoint itself, which
/// anyone holding the public key (`clancy audit key`) can check later with
/// `clancy audit verify --checkpoints`.
pub fn checkpoint_payload(
    format: Format,
    checkpoint: &crate::keys::Checkpoint,
) -> serde_json::Value {
    let headline = format!(
        "Audit checkpoint: {}'s log had entry #{} with hash {}",
        checkpoint.org, checkpoint.seq, checkpoint.head
    );
    match format {
        Format::Json => serde_json::json!({
            "event": Event::Checkpoint.name(),
            "text": headline,
            "checkpoint": checkpoint,
        }),
        Format::Slack => serde_json::json!({
            "text": headline,
            "blocks": [
                { "type": "section", "text": { "type": "mrkdwn", "text": headline } },
                { "type": "section", "text": { "type": "mrkdwn", "text": format!(
                    "```{}```",
                    serde_json::to_string(checkpoint).unwrap_or_default()
                ) } },
            ]
        }),
    }
}

/// The payload saying connection `id` (of `provider`, serving
/// `integration`) needs an admin to connect it again, and why. Never
/// carries a token.
pub fn connection_payload(
    format: Format,
    id: &str,
    provider: &str,
    integration: &str,
    why: &str,
) -> serde_json::Value {
    let headline =
        format!("Connection {id} to {provider} ({integration}) needs re-authorisation: {why}");
    let how = format!(
        "An admin runs `clancy connect {provider}` (the new connection takes its place); calls through it get `expired` meanwhile."
    );
    match format {
        Format::Json => serde_json::json!({
            "event": Event::Connection.name(),
            "text": headline,
            "connection": { "id": id, "provider": provider, "integration": integration, "status": "needs-reauthorisation" },
            "next": how,
        }),
        Format::Slack => serde_json::json!({
            "text": headline,
            "blocks": [
                { "type": "section", "text": { "type": "mrkdwn", "text": format!("*{headline}*") } },
                { "type": "context", "elements": [ { "type": "mrkdwn", "text": how } ] }
            ]
        }),
    }
}

/// The `webhook-signature` value (Standard Webhooks) for message `id` with
/// `body`, sent at `timestamp`, under the secret key `key`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    use base64::Engine as _;
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// The secret as receivers configure it: `whsec_<base64 key>`.
pub fn secret_text(key: &[u8]) -> String {
    use base64::Engine as _;
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
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
    /// Held for a whole delivery round: two rounds at once (the daemon's
    /// timer and `POST /api/v1/notifications/deliver`) would send the same
    /// notification twice.
    delivering: std::sync::Mutex<()>,
    /// Whether the indexes are known to cover every notification.
    indexed: std::sync::atomic::AtomicBool,
}

fn key(n: &Notification) -> Vec<u8> {
    format!("n/{}", n.id).into_bytes()
}

/// The index of pending notifications by when they are next due
/// (`d/<nanoseconds>/<id>`): a delivery round reads those due, not every
/// notification ever queued.
fn due_key(n: &Notification) -> Vec<u8> {
    let nanos = n.next_at.timestamp_nanos_opt().unwrap_or(i64::MAX).max(0);
    format!("d/{nanos:020}/{}", n.id).into_bytes()
}

/// The index of notifications in the order they were queued
/// (`c/<nanoseconds>/<id>`): the outbox is listed a page at a time, and a
/// page does not shift as notifications are added or retried.
fn order_key(queued_at: DateTime<Utc>, id: &str) -> Vec<u8> {
    let nanos = queued_at.timestamp_nanos_opt().unwrap_or(i64::MAX).max(0);
    format!("c/{nanos:020}/{id}").into_bytes()
}

/// Where a notification stands in the order queued (when, and its id): a
/// page of the outbox ends at one, and the next starts after it.
pub type OutboxPlace = (DateTime<Utc>, String);

/// Set once the due and order indexes cover every notification (built
/// once from the records, for an outbox written before they existed).
const INDEXES_BUILT: &[u8] = b"d-index-built";

/// The writes that store `n`, replacing `before` (its stored form; `None`
/// when it is new): the record, its place in the due index while it is
/// pending, and (when new) its place in the order queued.
fn stored(before: Option<&Notification>, n: &Notification) -> Result<Vec<Write>, StoreError> {
    let mut writes = Vec::with_capacity(3);
    match before {
        Some(before) if before.state == DeliveryState::Pending => {
            writes.push((due_key(before), None));
        }
        Some(_) => {}
        None => writes.push((order_key(n.next_at, &n.id), Some(Vec::new()))),
    }
    if n.state == DeliveryState::Pending {
        writes.push((due_key(n), Some(Vec::new())));
    }
    writes.push((key(n), Some(crate::store::encode(n)?)));
    Ok(writes)
}

impl Outbox {
    /// The outbox of `store`'s organisation.
    pub fn new(store: OrgStore) -> Outbox {
        Outbox {
            store,
            delivering: std::sync::Mutex::new(()),
            indexed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The org's webhook signing key (32 random bytes), created on first use.
    pub fn secret(&self) -> Result<Vec<u8>, StoreError> {
        if let Some(s) = self.store.get("notify", b"secret")? {
            return Ok(s);
        }
        let mut secret = vec![0u8; 32];
        getrandom::fill(&mut secret)
            .map_err(|e| StoreError::Io(format!("no randomness for the webhook secret: {e}")))?;
        let written = self.store.write_if(
            "notify",
            b"secret",
            None,
            vec![(b"secret".to_vec(), Some(secret.clone()))],
        )?;
        if written {
            Ok(secret)
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
            allow_private_address: target.allow_private_address,
        };
        // An outbox written before the indexes is indexed before this joins it.
        self.build_indexes()?;
        self.store.write(AREA, stored(None, &n)?)?;
        Ok(n)
    }

    /// Queue a copy of `checkpoint` for `target` durably.
    pub fn push_checkpoint(
        &self,
        target: &Target,
        checkpoint: &crate::keys::Checkpoint,
        now: DateTime<Utc>,
    ) -> Result<Notification, StoreError> {
        let body = checkpoint_payload(target.format, checkpoint);
        self.push_notice(target, Event::Checkpoint, body, now)
    }

    /// Queue `body`, a notice about no request (`event` is a checkpoint's
    /// or a connection's), for `target` durably.
    pub fn push_notice(
        &self,
        target: &Target,
        event: Event,
        body: serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<Notification, StoreError> {
        let n = Notification {
            id: format!("nt-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            event,
            approval: String::new(),
            url: target.url.clone(),
            body: body.to_string(),
            attempts: 0,
            next_at: now,
            last_error: None,
            state: DeliveryState::Pending,
            allow_private_address: target.allow_private_address,
        };
        // An outbox written before the indexes is indexed before this joins it.
        self.build_indexes()?;
        self.store.write(AREA, stored(None, &n)?)?;
        Ok(n)
    }

    /// Every notification, in the order queued.
    pub fn list(&self) -> Result<Vec<Notification>, StoreError> {
        let mut all = Vec::new();
        self.for_each_page(|page| {
            all.extend_from_slice(page);
            Ok::<(), StoreError>(())
        })?;
        Ok(all)
    }

    /// Every notification, in the order queued, a page at a time (memory
    /// does not grow with how many were ever queued).
    pub fn for_each_page<E: From<StoreError>>(
        &self,
        mut each: impl FnMut(&[Notification]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut after = None;
        loop {
            let (page, next) = self.page(after.as_ref(), 256)?;
            each(&page)?;
            match next {
                Some(next) => after = Some(next),
                None => return Ok(()),
            }
        }
    }

    /// At most `limit` notifications in the order they were queued, after
    /// the one `after` names (when it was queued, and its id); and what
    /// names the last of them, if more follow. Read through the order
    /// index: a page costs about its own notifications.
    pub fn page(
        &self,
        after: Option<&OutboxPlace>,
        limit: usize,
    ) -> Result<(Vec<Notification>, Option<OutboxPlace>), StoreError> {
        self.build_indexes()?;
        let from = after.map(|(time, id)| order_key(*time, id));
        let keys = self
            .store
            .scan_page(AREA, b"c/", from.as_deref(), limit.saturating_add(1))?;
        let more = keys.len() > limit;
        let mut found = Vec::with_capacity(limit.min(keys.len()));
        let mut last = None;
        for (k, _) in keys.into_iter().take(limit) {
            let text = String::from_utf8_lossy(&k[2..]).into_owned();
            let Some((nanos, id)) = text.split_once('/') else {
                continue;
            };
            let n: Option<Notification> =
                self.store.get_json(AREA, format!("n/{id}").as_bytes())?;
            if let Some(n) = n {
                found.push(n);
            }
            let queued = nanos
                .parse::<i64>()
                .map(DateTime::from_timestamp_nanos)
                .unwrap_or_default();
            last = Some((queued, id.to_string()));
        }
        Ok((found, last.filter(|_| more)))
    }

    /// The pending notifications due at `now`, read through the due index
    /// (index keys left by a record that moved on are dropped).
    fn due(&self, now: DateTime<Utc>) -> Result<Vec<Notification>, StoreError> {
        self.build_indexes()?;
        let mut due = Vec::new();
        let mut stale = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        'pages: loop {
            let page = self.store.scan_page(AREA, b"d/", after.as_deref(), 64)?;
            let Some((last, _)) = page.last() else {
                break;
            };
            after = Some(last.clone());
            for (k, _) in page {
                let text = String::from_utf8_lossy(&k[2..]).into_owned();
                let Some((_, id)) = text.split_once('/') else {
                    stale.push((k, None));
                    continue;
                };
                let n: Option<Notification> =
                    self.store.get_json(AREA, format!("n/{id}").as_bytes())?;
                match n {
                    Some(n) if n.state == DeliveryState::Pending && due_key(&n) == k => {
                        if n.next_at > now {
                            break 'pages;
                        }
                        due.push(n);
                    }
                    _ => stale.push((k, None)),
                }
            }
        }
        if !stale.is_empty() {
            self.store.write(AREA, stale)?;
        }
        Ok(due)
    }

    /// Index the notifications of an outbox written before the due and
    /// order indexes existed (once; every write since keeps them). Their
    /// order is by when each was last due, the nearest to when it was
    /// queued that they record.
    fn build_indexes(&self) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        if self.indexed.load(Ordering::Acquire) {
            return Ok(());
        }
        self.store.index_once(AREA, INDEXES_BUILT, || {
            let mut writes: Vec<Write> = Vec::new();
            for (_, value) in self.store.scan(AREA, b"n/")? {
                let n: Notification = crate::store::decode(AREA, &value)?;
                writes.push((order_key(n.next_at, &n.id), Some(Vec::new())));
                if n.state == DeliveryState::Pending {
                    writes.push((due_key(&n), Some(Vec::new())));
                }
            }
            Ok(writes)
        })?;
        self.indexed.store(true, Ordering::Release);
        Ok(())
    }

    /// Try every pending notification that is due at `now`, once.
    pub fn deliver_due(&self, now: DateTime<Utc>) -> Result<Delivery, StoreError> {
        let _round = self
            .delivering
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = self.due(now)?;
        let mut report = Delivery::default();
        if due.is_empty() {
            return Ok(report);
        }
        let secret = self.secret()?;
        let builder = || {
            reqwest::blocking::Client::builder()
                .connect_timeout(StdDuration::from_secs(3))
                .timeout(StdDuration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
        };
        let cannot =
            |e: reqwest::Error| StoreError::Io(format!("cannot start the webhook client: {e}"));
        let public_only = builder()
            .dns_resolver(std::sync::Arc::new(PublicOnly))
            .build()
            .map_err(cannot)?;
        let any_address = builder().build().map_err(cannot)?;
        // Up to CONCURRENT_DELIVERIES requests at once, each bounded by the
        // client's timeouts, so a receiver that never answers holds up one
        // slot for at most 10 s, never the others.
        let mut outcomes = Vec::with_capacity(due.len());
        for batch in due.chunks(CONCURRENT_DELIVERIES) {
            std::thread::scope(|scope| {
                let sends: Vec<_> = batch
                    .iter()
                    .map(|n| {
                        let client = if n.allow_private_address {
                            &any_address
                        } else {
                            &public_only
                        };
                        let secret = &secret;
                        scope.spawn(move || {
                            // Checked again at every delivery: the rule, and
                            // an address written into the URL itself.
                            validate_url(&n.url, n.allow_private_address)
                                .map_err(Refused::Address)?;
                            // Signed when sent (receivers reject old timestamps).
                            let timestamp = Utc::now().timestamp();
                            client
                                .post(&n.url)
                                .header("Content-Type", "application/json")
                                .header("User-Agent", "clancy-webhooks")
                                .header("X-Clancy-Event", n.event.name())
                                .header("webhook-id", &n.id)
                                .header("webhook-timestamp", timestamp.to_string())
                                .header(
                                    "webhook-signature",
                                    sign(secret, &n.id, timestamp, &n.body),
                                )
                                .body(n.body.clone())
                                .send()
                                .map(|resp| resp.status())
                                .map_err(Refused::Failed)
                        })
                    })
                    .collect();
                for (n, send) in batch.iter().zip(sends) {
                    let sent = send
                        .join()
                        .unwrap_or(Ok(reqwest::StatusCode::INTERNAL_SERVER_ERROR));
                    outcomes.push((n.clone(), sent));
                }
            });
        }
        for (before, sent) in outcomes {
            let mut n = before.clone();
            n.attempts += 1;
            match sent {
                Ok(status) if status.is_success() => {
                    n.state = DeliveryState::Delivered;
                    n.last_error = None;
                    report.delivered.push(n.id.clone());
                }
                Err(Refused::Address(why)) => {
                    // Never sent, and never will be: given up at once.
                    n.last_error = Some(format!("not sent: {why}"));
                    n.state = DeliveryState::GaveUp;
                    report.gave_up.push(n.clone());
                }
                failed => {
                    n.last_error = Some(match failed {
                        Ok(status) => format!("the receiver answered {status}"),
                        Err(Refused::Failed(e)) => {
                            format!("cannot reach the receiver: {}", without_url(&e))
                        }
                        Err(Refused::Address(why)) => why,
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
            self.store.write(AREA, stored(Some(&before), &n)?)?;
        }
        Ok(report)
    }
}

/// Why a delivery was not answered.
enum Refused {
    /// The target's address is not allowed; nothing was sent.
    Address(String),
    /// The request failed.
    Failed(reqwest::Error),
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
    // The address rule's own message (it names the host, never the path).
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if text.contains("resolves only to private") {
            return format!("{kind}: {text}");
        }
        source = cause.source();
    }
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
    fn signatures_depend_on_secret_id_timestamp_and_body() {
        let s = sign(b"k", "nt-1", 1, "body");
        // "v1," and 32 bytes in base64.
        assert!(s.starts_with("v1,") && s.len() == 3 + 44, "{s}");
        assert_ne!(s, sign(b"k2", "nt-1", 1, "body"));
        assert_ne!(s, sign(b"k", "nt-2", 1, "body"));
        assert_ne!(s, sign(b"k", "nt-1", 2, "body"));
        assert_ne!(s, sign(b"k", "nt-1", 1, "body!"));
        assert_eq!(secret_text(b"\x01\x02"), "whsec_AQI=");
    }
}
