//! Chat (Slack and the sandbox), the `chat` interface: one handle per
//! granted channel. A post can be undone (the message is deleted) while it
//! is still as posted.

use serde::{Deserialize, Serialize};
use wasmtime::component::Resource;

use super::{Action, EditError, GUTTER, Interface, Spec, quote};
use crate::human;
use crate::providers::{Done, ProviderError, Response};
use crate::runtime::TaskState;
use crate::runtime::bindings::chat::{self as wit, ChatMessage};
use crate::runtime::guest_calls::CallResult;

crate::grant_handle!(
    /// A `chat.channel` handle: one granted scope.
    ChannelHandle
);

/// The facts of the chat integration.
pub const SPEC: Spec = Spec {
    name: "slack",
    interface: Interface::Chat,
    scope_kind: "channel",
    actions: &[Action::Read, Action::Post],
};

/// A call on a channel (the WIT method's parameters, minus the reason).
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op")]
pub enum ChatOp {
    /// `channel.read-recent`
    #[serde(rename = "chat-read-recent")]
    ReadRecent { limit: u32 },
    /// `channel.post`
    #[serde(rename = "chat-post")]
    Post { text: String },
}

impl ChatOp {
    /// The grant action it needs.
    pub fn action(&self) -> Action {
        match self {
            ChatOp::ReadRecent { .. } => Action::Read,
            ChatOp::Post { .. } => Action::Post,
        }
    }

    /// The contract method.
    pub fn method(&self) -> &'static str {
        match self {
            ChatOp::ReadRecent { .. } => "read-recent",
            ChatOp::Post { .. } => "post",
        }
    }

    /// The audit log's summary of the arguments.
    pub fn summary(&self) -> String {
        match self {
            ChatOp::ReadRecent { limit } => format!("limit {limit}"),
            ChatOp::Post { text } => format!("text {}", quote(text)),
        }
    }

    /// What the approver reads.
    pub fn preview(&self, scope: &str) -> String {
        match self {
            ChatOp::Post { text } => {
                format!("post to {scope}:\n{}", human::block(text, GUTTER))
            }
            other => format!("{} {}", other.method(), other.summary()),
        }
    }

    /// Guest-supplied bytes in the arguments.
    pub fn argument_bytes(&self) -> usize {
        match self {
            ChatOp::ReadRecent { .. } => 0,
            ChatOp::Post { text } => text.len(),
        }
    }

    /// The fields an approver may edit.
    pub fn editable_fields(&self) -> &'static [&'static str] {
        match self {
            ChatOp::Post { .. } => &["text"],
            _ => &[],
        }
    }

    /// The operation with `field` set to `value`; `None` if no such field.
    pub fn edited(&self, field: &str, value: &str) -> Result<Option<ChatOp>, EditError> {
        Ok(match (self, field) {
            (ChatOp::Post { .. }, "text") => Some(ChatOp::Post { text: value.into() }),
            _ => None,
        })
    }

    /// Run it against the chat provider in `channel`, attributed to `actor`.
    pub fn run(
        &self,
        provider: &dyn ChatProvider,
        channel: &str,
        actor: &str,
        key: Option<&str>,
    ) -> Result<Response, ProviderError> {
        Ok(match self {
            ChatOp::ReadRecent { limit } => {
                Response::ChatMessages(provider.read_recent(channel, *limit)?)
            }
            ChatOp::Post { text } => Response::Done(provider.post(channel, actor, text, key)?),
        })
    }
}

/// How a chat write is undone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "undo", rename_all = "kebab-case")]
pub enum ChatInverse {
    /// Delete a posted message.
    DeleteChatMessage {
        /// Message id.
        id: String,
        /// Fingerprint of the message as posted.
        after: String,
    },
}

impl ChatInverse {
    /// The grant action undoing needs (the write's).
    pub fn action(&self) -> Action {
        Action::Post
    }

    /// The method, for the audit log.
    pub fn method(&self) -> &'static str {
        "delete-message"
    }

    /// What undoing does.
    pub fn summary(&self) -> String {
        match self {
            ChatInverse::DeleteChatMessage { id, .. } => format!("delete message {}", quote(id)),
        }
    }

    /// Run it against the chat provider in `channel`.
    pub fn run(&self, provider: &dyn ChatProvider, channel: &str) -> Result<(), ProviderError> {
        match self {
            ChatInverse::DeleteChatMessage { id, after } => {
                provider.delete_message(channel, id, after)
            }
        }
    }
}

/// Chat (Slack and the sandbox). `channel` is the granted scope's value.
pub trait ChatProvider: Send + Sync {
    /// The newest `limit` messages, oldest first.
    fn read_recent(&self, channel: &str, limit: u32) -> Result<Vec<ChatMessage>, ProviderError>;
    /// Post a message.
    fn post(
        &self,
        channel: &str,
        author: &str,
        text: &str,
        key: Option<&str>,
    ) -> Result<Done, ProviderError>;
    /// Undo a post: delete message `id` if it is still as posted (`after`).
    fn delete_message(&self, channel: &str, id: &str, after: &str) -> Result<(), ProviderError>;
}

impl wit::Host for TaskState {
    fn channels(&mut self) -> wasmtime::Result<Vec<Resource<ChannelHandle>>> {
        self.handles(Interface::Chat)
    }
}

impl wit::HostChannel for TaskState {
    fn name(&mut self, h: Resource<ChannelHandle>) -> wasmtime::Result<String> {
        self.scope_name(&h)
    }

    fn read_recent(
        &mut self,
        h: Resource<ChannelHandle>,
        limit: u32,
    ) -> CallResult<Vec<ChatMessage>> {
        let op = super::Operation::Chat(ChatOp::ReadRecent { limit });
        expect_response!(self.mediate(&h, op, ""), ChatMessages)
    }

    fn post(
        &mut self,
        h: Resource<ChannelHandle>,
        text: String,
        reason: String,
    ) -> CallResult<wit::Outcome> {
        let op = super::Operation::Chat(ChatOp::Post { text });
        written!(self.mediate(&h, op, &reason))
    }

    fn drop(&mut self, h: Resource<ChannelHandle>) -> wasmtime::Result<()> {
        self.drop_handle(h)
    }
}
