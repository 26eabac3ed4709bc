//! Gmail API v1 (`users.labels`, `users.messages` list/get/send/modify).
//! A grant's label is looked up by name (or its configured id); every
//! listing asks for that label's messages only and every message read or
//! listed is checked to carry it. A send is never retried (Gmail has no
//! idempotency key); its key is remembered here so the host's own replay
//! does not send twice.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use reqwest::Method;
use serde::Deserialize;

use super::{Api, Call, MAX_PAGES, check_id, configured_id};
use crate::integrations::mail::MailProvider;
use crate::providers::{Done, ProviderError};
use crate::runtime::bindings::mail::{Draft, Message};

/// The most messages one listing returns.
const MAX_LIST: u32 = 50;

/// Gmail, through one connection.
pub struct Gmail {
    api: Arc<Api>,
}

#[derive(Deserialize)]
struct Labels {
    #[serde(default)]
    labels: Vec<Label>,
}

#[derive(Deserialize)]
struct Label {
    id: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageList {
    #[serde(default)]
    messages: Vec<MessageRef>,
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct MessageRef {
    id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GmailMessage {
    id: String,
    #[serde(default)]
    label_ids: Vec<String>,
    internal_date: Option<String>,
    #[serde(default)]
    payload: Part,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Part {
    #[serde(default)]
    mime_type: String,
    #[serde(default)]
    headers: Vec<Header>,
    #[serde(default)]
    body: PartBody,
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Deserialize)]
struct Header {
    name: String,
    value: String,
}

#[derive(Deserialize, Default)]
struct PartBody {
    data: Option<String>,
}

#[derive(Deserialize)]
struct Sent {
    id: String,
}

impl Gmail {
    /// Gmail through `api`.
    pub fn new(api: Arc<Api>) -> Gmail {
        Gmail { api }
    }

    /// The labels by id, and the id of the grant's `label`.
    fn labels(&self, label: &str) -> Result<(String, HashMap<String, String>), ProviderError> {
        let config = self.api.config()?;
        let all: Labels = self
            .api
            .fetch(Call::get(&["gmail", "v1", "users", "me", "labels"]))?;
        let names: HashMap<String, String> =
            all.labels.into_iter().map(|l| (l.id, l.name)).collect();
        let id = match configured_id(&config, label) {
            Some(id) => Some(id),
            None => names
                .iter()
                .find(|(_, name)| name.eq_ignore_ascii_case(label))
                .map(|(id, _)| id.clone()),
        };
        match id {
            Some(id) => Ok((id, names)),
            None => Err(ProviderError::NotFound(format!(
                "the mailbox has no label {}",
                crate::integrations::quote(label)
            ))),
        }
    }

    fn get(&self, id: &str) -> Result<GmailMessage, ProviderError> {
        check_id("message id", id)?;
        self.api.fetch(
            Call::get(&["gmail", "v1", "users", "me", "messages", id]).query("format", "full"),
        )
    }
}

fn header(part: &Part, name: &str) -> String {
    part.headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.clone())
        .unwrap_or_default()
}

/// The message's plain text: its own body, or its first `text/plain` part.
fn plain_text(part: &Part) -> String {
    let decode = |data: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(data.trim_end_matches('='))
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    if (part.parts.is_empty() || part.mime_type == "text/plain")
        && let Some(text) = part.body.data.as_deref().and_then(decode)
    {
        return text;
    }
    part.parts
        .iter()
        .find(|p| p.mime_type == "text/plain")
        .or_else(|| part.parts.iter().find(|p| !p.parts.is_empty()))
        .map(plain_text)
        .unwrap_or_default()
}

fn message(m: GmailMessage, names: &HashMap<String, String>) -> Message {
    let received_at = m
        .internal_date
        .as_deref()
        .and_then(|ms| ms.parse::<i64>().ok())
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    let to = header(&m.payload, "To")
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect();
    Message {
        id: m.id,
        from: header(&m.payload, "From"),
        to,
        subject: header(&m.payload, "Subject"),
        body: plain_text(&m.payload),
        labels: m
            .label_ids
            .iter()
            .map(|id| names.get(id).cloned().unwrap_or_else(|| id.clone()))
            .collect(),
        received_at,
    }
}

/// A header value on one line: no CR or LF can start another header.
fn header_value(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    if one_line.is_ascii() {
        one_line
    } else {
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(one_line.as_bytes())
        )
    }
}

/// The RFC 5322 message Gmail sends (`raw`, base64url).
pub fn rfc5322(from: &str, draft: &Draft) -> String {
    let mut text = String::new();
    if !from.is_empty() {
        text.push_str(&format!("From: {}\r\n", header_value(from)));
    }
    text.push_str(&format!("To: {}\r\n", header_value(&draft.to.join(", "))));
    text.push_str(&format!("Subject: {}\r\n", header_value(&draft.subject)));
    if let Some(parent) = &draft.in_reply_to {
        let parent = header_value(parent);
        text.push_str(&format!(
            "In-Reply-To: {parent}\r\nReferences: {parent}\r\n"
        ));
    }
    text.push_str("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    text.push_str(&base64::engine::general_purpose::STANDARD.encode(draft.body.as_bytes()));
    text.push_str("\r\n");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text.as_bytes())
}

impl MailProvider for Gmail {
    fn sender(&self) -> String {
        // The configured mailbox; none means no domain is the org's own
        // (only grants that list domains may send).
        self.api
            .config()
            .ok()
            .and_then(|c| c.account)
            .unwrap_or_default()
    }

    fn list(&self, label: &str, query: &str, limit: u32) -> Result<Vec<Message>, ProviderError> {
        let (label_id, names) = self.labels(label)?;
        let want = limit.min(MAX_LIST) as usize;
        let mut ids = Vec::new();
        let mut page: Option<String> = None;
        for _ in 0..MAX_PAGES {
            if ids.len() >= want {
                break;
            }
            let mut call = Call::get(&["gmail", "v1", "users", "me", "messages"])
                .query("labelIds", label_id.clone())
                .query("maxResults", (want - ids.len()).to_string());
            if !query.is_empty() {
                call = call.query("q", query);
            }
            if let Some(token) = &page {
                call = call.query("pageToken", token.clone());
            }
            let listed: MessageList = self.api.fetch(call)?;
            ids.extend(listed.messages.into_iter().map(|m| m.id));
            match listed.next_page_token {
                Some(t) if !t.is_empty() => page = Some(t),
                _ => break,
            }
        }
        ids.truncate(want);
        let mut out = Vec::new();
        for id in ids {
            let m = self.get(&id)?;
            // Whatever the service answered, nothing outside the label.
            if m.label_ids.contains(&label_id) {
                out.push(message(m, &names));
            }
        }
        Ok(out)
    }

    fn read(&self, label: &str, id: &str) -> Result<Message, ProviderError> {
        check_id("message id", id)?;
        let (label_id, names) = self.labels(label)?;
        let m = match self.get(id) {
            Err(ProviderError::NotFound(_)) => None,
            other => Some(other?),
        };
        match m {
            Some(m) if m.label_ids.contains(&label_id) => Ok(message(m, &names)),
            // A message outside the label is as invisible as a missing one.
            _ => Err(ProviderError::NotFound(format!(
                "no message {} under label {}",
                crate::integrations::quote(id),
                crate::integrations::quote(label)
            ))),
        }
    }

    fn send(&self, label: &str, draft: &Draft, key: Option<&str>) -> Result<Done, ProviderError> {
        if let Some(done) = self.api.replay(key)? {
            return Ok(done);
        }
        let (label_id, _) = self.labels(label)?;
        let raw = rfc5322(&self.sender(), draft);
        let sent: Sent = self.api.fetch(
            Call::new(
                Method::POST,
                &["gmail", "v1", "users", "me", "messages", "send"],
            )
            .json(serde_json::json!({ "raw": raw })),
        )?;
        let done = self.api.remember(
            key,
            Done {
                id: sent.id.clone(),
                inverse: None,
            },
        )?;
        // Filed under the grant's label besides SENT (setting a label twice
        // is harmless, so this may be retried).
        check_id("message id", &sent.id)?;
        let filed: Result<serde_json::Value, _> = self.api.fetch(
            Call::new(
                Method::POST,
                &["gmail", "v1", "users", "me", "messages", &sent.id, "modify"],
            )
            .json(serde_json::json!({ "addLabelIds": [label_id] }))
            .repeatable(),
        );
        if let Err(e) = filed {
            // The mail is sent: that is the result; the label is filing.
            tracing::warn!("mail {} was sent but not labelled: {e}", sent.id);
        }
        Ok(done)
    }
}
