//! Mail (Gmail and the sandbox), the `mail` interface: one handle per
//! granted label. Sends are irreversible; recipients are parsed addresses
//! (see [`crate::addresses`]), and the mediator holds them to the grant's
//! recipient domains.

use serde::{Deserialize, Serialize};
use wasmtime::component::Resource;

use super::{Action, EditError, GUTTER, Interface, Spec, edited_list, quote};
use crate::human;
use crate::providers::{Done, ProviderError, Response};
use crate::runtime::TaskState;
use crate::runtime::bindings::mail::{self as wit, Draft, Message};
use crate::runtime::guest_calls::CallResult;

crate::grant_handle!(
    /// A `mail.mailbox` handle: one granted scope.
    MailboxHandle
);

/// The facts of the mail integration.
pub const SPEC: Spec = Spec {
    name: "gmail",
    interface: Interface::Mail,
    scope_kind: "label",
    actions: &[Action::Read, Action::Send],
};

/// A call on a mailbox (the WIT method's parameters, minus the reason).
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op")]
pub enum MailOp {
    /// `mailbox.list`
    #[serde(rename = "mail-list")]
    List { query: String, limit: u32 },
    /// `mailbox.read`
    #[serde(rename = "mail-read")]
    Read { id: String },
    /// `mailbox.send`
    #[serde(rename = "mail-send")]
    Send { draft: Draft },
}

impl MailOp {
    /// The grant action it needs.
    pub fn action(&self) -> Action {
        match self {
            MailOp::List { .. } | MailOp::Read { .. } => Action::Read,
            MailOp::Send { .. } => Action::Send,
        }
    }

    /// The contract method.
    pub fn method(&self) -> &'static str {
        match self {
            MailOp::List { .. } => "list",
            MailOp::Read { .. } => "read",
            MailOp::Send { .. } => "send",
        }
    }

    /// The audit log's summary of the arguments.
    pub fn summary(&self) -> String {
        match self {
            MailOp::List { query, limit } => format!("query {}, limit {limit}", quote(query)),
            MailOp::Read { id } => format!("id {}", quote(id)),
            MailOp::Send { draft } => format!(
                "to {}, subject {}, body {} chars",
                quote(&draft.to.join(", ")),
                quote(&draft.subject),
                draft.body.chars().count()
            ),
        }
    }

    /// What the approver reads.
    pub fn preview(&self, _scope: &str) -> String {
        match self {
            MailOp::Send { draft } => format!(
                "send mail to {}\n    subject: {}\n{}\n    (irreversible: a sent mail cannot be recalled)",
                human::line(&draft.to.join(", ")),
                human::line(&draft.subject),
                human::block(&draft.body, GUTTER)
            ),
            other => format!("{} {}", other.method(), other.summary()),
        }
    }

    /// Guest-supplied bytes in the arguments.
    pub fn argument_bytes(&self) -> usize {
        match self {
            MailOp::List { query, .. } => query.len(),
            MailOp::Read { id } => id.len(),
            MailOp::Send { draft } => {
                draft.to.iter().map(String::len).sum::<usize>()
                    + draft.subject.len()
                    + draft.body.len()
                    + draft.in_reply_to.as_ref().map_or(0, String::len)
            }
        }
    }

    /// Who a send reaches.
    pub fn recipients(&self) -> &[String] {
        match self {
            MailOp::Send { draft } => &draft.to,
            _ => &[],
        }
    }

    /// The same operation with its recipients parsed as plain addresses.
    pub fn with_canonical_recipients(self) -> Result<MailOp, crate::addresses::AddressError> {
        match self {
            MailOp::Send { mut draft } => {
                draft.to = crate::addresses::parse_recipients(&draft.to)?;
                Ok(MailOp::Send { draft })
            }
            other => Ok(other),
        }
    }

    /// The fields an approver may edit.
    pub fn editable_fields(&self) -> &'static [&'static str] {
        match self {
            MailOp::Send { .. } => &["to", "subject", "body"],
            _ => &[],
        }
    }

    /// The operation with `field` set to `value`; `None` if no such field.
    pub fn edited(&self, field: &str, value: &str) -> Result<Option<MailOp>, EditError> {
        let MailOp::Send { draft } = self else {
            return Ok(None);
        };
        let mut draft = draft.clone();
        match field {
            "to" => draft.to = edited_list(value),
            "subject" => draft.subject = value.into(),
            "body" => draft.body = value.into(),
            _ => return Ok(None),
        }
        Ok(Some(MailOp::Send { draft }))
    }

    /// Run it against the mail provider in `label`.
    pub fn run(
        &self,
        provider: &dyn MailProvider,
        label: &str,
        key: Option<&str>,
    ) -> Result<Response, ProviderError> {
        Ok(match self {
            MailOp::List { query, limit } => {
                Response::Messages(provider.list(label, query, *limit)?)
            }
            MailOp::Read { id } => Response::Message(provider.read(label, id)?),
            MailOp::Send { draft } => Response::Done(provider.send(label, draft, key)?),
        })
    }
}

/// Mail (Gmail and the sandbox). `label` is the granted scope's value.
/// Every write takes an idempotency `key`: the same key twice performs the
/// write once and returns the first result.
pub trait MailProvider: Send + Sync {
    /// The address the organisation's mail is sent from (its domain is the
    /// organisation's own: where mail grants may send by default).
    fn sender(&self) -> String;
    /// Messages under `label` matching `query`, newest first.
    fn list(&self, label: &str, query: &str, limit: u32) -> Result<Vec<Message>, ProviderError>;
    /// One message, only if it carries `label`.
    fn read(&self, label: &str, id: &str) -> Result<Message, ProviderError>;
    /// Send a mail (irreversible), filed under `label` besides SENT.
    fn send(&self, label: &str, draft: &Draft, key: Option<&str>) -> Result<Done, ProviderError>;
}

impl wit::Host for TaskState {
    fn mailboxes(&mut self) -> wasmtime::Result<Vec<Resource<MailboxHandle>>> {
        self.handles(Interface::Mail)
    }
}

impl wit::HostMailbox for TaskState {
    fn name(&mut self, h: Resource<MailboxHandle>) -> wasmtime::Result<String> {
        self.scope_name(&h)
    }

    fn list(
        &mut self,
        h: Resource<MailboxHandle>,
        query: String,
        limit: u32,
    ) -> CallResult<Vec<Message>> {
        let op = super::Operation::Mail(MailOp::List { query, limit });
        expect_response!(self.mediate(&h, op, ""), Messages)
    }

    fn read(&mut self, h: Resource<MailboxHandle>, id: String) -> CallResult<Message> {
        let op = super::Operation::Mail(MailOp::Read { id });
        expect_response!(self.mediate(&h, op, ""), Message)
    }

    fn send(
        &mut self,
        h: Resource<MailboxHandle>,
        draft: Draft,
        reason: String,
    ) -> CallResult<wit::Outcome> {
        let op = super::Operation::Mail(MailOp::Send { draft });
        written!(self.mediate(&h, op, &reason))
    }

    fn drop(&mut self, h: Resource<MailboxHandle>) -> wasmtime::Result<()> {
        self.drop_handle(h)
    }
}
