//! Slack Web API (`conversations.list`, `conversations.history`,
//! `chat.postMessage`, `chat.delete`). A grant's channel is looked up by
//! name (or its configured id) and every call names that id; a post's
//! answer must be from that channel. Slack answers HTTP 200 with
//! `"ok": false` for its errors; a revoked or invalid token makes the
//! connection need re-authorisation. Posts are never retried (Slack has
//! no idempotency key); guest text is escaped (`&`, `<`, `>`) so it cannot
//! mention `@channel` or link as Slack markup.

use std::sync::Arc;

use reqwest::Method;
use serde::Deserialize;

use super::{Api, Call, MAX_PAGES, configured_id, fingerprint_of};
use crate::integrations::chat::{ChatInverse, ChatProvider};
use crate::providers::{Done, ProviderError};
use crate::runtime::bindings::chat::ChatMessage;

/// The most messages one read returns.
const MAX_READ: u32 = 200;

/// Slack, through one connection.
pub struct Slack {
    api: Arc<Api>,
}

#[derive(Deserialize)]
struct Answer {
    ok: bool,
    error: Option<String>,
    #[serde(default)]
    channels: Vec<Channel>,
    #[serde(default)]
    messages: Vec<SlackMessage>,
    channel: Option<String>,
    ts: Option<String>,
    message: Option<SlackMessage>,
    response_metadata: Option<Metadata>,
}

#[derive(Deserialize)]
struct Channel {
    id: String,
    name: String,
}

#[derive(Deserialize)]
struct Metadata {
    next_cursor: Option<String>,
}

#[derive(Deserialize, Clone)]
struct SlackMessage {
    ts: String,
    #[serde(default)]
    text: String,
    user: Option<String>,
    username: Option<String>,
    bot_id: Option<String>,
}

/// Errors that mean the token no longer works.
const TOKEN_ERRORS: [&str; 5] = [
    "invalid_auth",
    "not_authed",
    "token_revoked",
    "token_expired",
    "account_inactive",
];

/// Escape text for Slack: `&`, `<` and `>` are its markup.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn posted_at(ts: &str) -> String {
    ts.split('.')
        .next()
        .and_then(|s| s.parse::<i64>().ok())
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn chat_message(m: SlackMessage) -> ChatMessage {
    ChatMessage {
        posted_at: posted_at(&m.ts),
        author: m.user.or(m.username).or(m.bot_id).unwrap_or_default(),
        text: m.text,
        id: m.ts,
    }
}

impl Slack {
    /// Slack through `api`.
    pub fn new(api: Arc<Api>) -> Slack {
        Slack { api }
    }

    /// Call `method`; Slack's `ok: false` becomes an error.
    fn call(&self, call: Call<'_>) -> Result<Answer, ProviderError> {
        let answer: Answer = self.api.fetch(call)?;
        if answer.ok {
            return Ok(answer);
        }
        let error = answer.error.unwrap_or_else(|| "unknown_error".into());
        if TOKEN_ERRORS.contains(&error.as_str()) {
            self.api.expire(&format!("Slack said {error}"))?;
            return Err(ProviderError::Expired);
        }
        let text = format!("Slack refused: {}", super::cut(&error));
        Err(match error.as_str() {
            "channel_not_found" | "message_not_found" | "thread_not_found" => {
                ProviderError::NotFound(text)
            }
            "msg_too_long" | "no_text" | "invalid_arguments" | "too_many_attachments" => {
                ProviderError::Invalid(text)
            }
            _ => ProviderError::Failed(text),
        })
    }

    /// The id of the grant's `channel` (`#name`).
    fn channel_id(&self, channel: &str) -> Result<String, ProviderError> {
        let config = self.api.config()?;
        if let Some(id) = configured_id(&config, channel) {
            return Ok(id);
        }
        let name = channel.trim_start_matches('#');
        let mut cursor = String::new();
        for _ in 0..MAX_PAGES {
            let mut call = Call::get(&["conversations.list"])
                .query("types", "public_channel,private_channel")
                .query("exclude_archived", "true")
                .query("limit", "200");
            if !cursor.is_empty() {
                call = call.query("cursor", cursor.clone());
            }
            let page = self.call(call)?;
            if let Some(c) = page.channels.into_iter().find(|c| c.name == name) {
                return Ok(c.id);
            }
            match page.response_metadata.and_then(|m| m.next_cursor) {
                Some(next) if !next.is_empty() => cursor = next,
                _ => break,
            }
        }
        Err(ProviderError::NotFound(format!(
            "the workspace has no channel {}",
            crate::integrations::quote(channel)
        )))
    }

    /// Message `ts` of channel `id`, if it is there.
    fn message(&self, id: &str, ts: &str) -> Result<Option<SlackMessage>, ProviderError> {
        let answer = self.call(
            Call::get(&["conversations.history"])
                .query("channel", id)
                .query("latest", ts)
                .query("oldest", ts)
                .query("inclusive", "true")
                .query("limit", "1"),
        )?;
        Ok(answer.messages.into_iter().find(|m| m.ts == ts))
    }
}

impl ChatProvider for Slack {
    fn read_recent(&self, channel: &str, limit: u32) -> Result<Vec<ChatMessage>, ProviderError> {
        let id = self.channel_id(channel)?;
        let answer = self.call(
            Call::get(&["conversations.history"])
                .query("channel", id)
                .query("limit", limit.clamp(1, MAX_READ).to_string()),
        )?;
        // Slack lists newest first; the contract reads oldest first.
        let mut messages: Vec<ChatMessage> =
            answer.messages.into_iter().map(chat_message).collect();
        messages.reverse();
        Ok(messages)
    }

    fn post(
        &self,
        channel: &str,
        _author: &str,
        text: &str,
        key: Option<&str>,
    ) -> Result<Done, ProviderError> {
        if let Some(done) = self.api.replay(key)? {
            return Ok(done);
        }
        let id = self.channel_id(channel)?;
        let answer = self.call(Call::new(Method::POST, &["chat.postMessage"]).json(
            serde_json::json!({
                "channel": id,
                "text": escape(text),
                "unfurl_links": false,
                "unfurl_media": false,
            }),
        ))?;
        let (Some(ts), Some(posted_in)) = (answer.ts, answer.channel) else {
            return Err(ProviderError::Failed(
                "Slack said ok without the message's ts and channel".into(),
            ));
        };
        if posted_in != id {
            return Err(ProviderError::Failed(format!(
                "Slack posted in {} instead of the granted channel",
                crate::integrations::quote(&posted_in)
            )));
        }
        let posted_text = answer
            .message
            .map(|m| m.text)
            .unwrap_or_else(|| escape(text));
        let done = Done {
            id: ts.clone(),
            inverse: Some(crate::integrations::Inverse::Chat(
                ChatInverse::DeleteChatMessage {
                    after: fingerprint_of(&(&ts, &posted_text)),
                    id: ts,
                },
            )),
        };
        self.api.remember(key, done)
    }

    fn delete_message(&self, channel: &str, ts: &str, after: &str) -> Result<(), ProviderError> {
        let id = self.channel_id(channel)?;
        let Some(m) = self.message(&id, ts)? else {
            return Err(ProviderError::NotFound(format!(
                "no message {} in {channel}",
                crate::integrations::quote(ts)
            )));
        };
        if fingerprint_of(&(&m.ts, &m.text)) != after {
            return Err(ProviderError::Conflict(format!(
                "message {} was edited since it was posted",
                crate::integrations::quote(ts)
            )));
        }
        // Deleting twice deletes once: safe to retry.
        match self.call(
            Call::new(Method::POST, &["chat.delete"])
                .json(serde_json::json!({ "channel": id, "ts": ts }))
                .repeatable(),
        ) {
            Ok(_) | Err(ProviderError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
