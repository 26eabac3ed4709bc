//! Providers: the code that actually talks to a service.
//!
//! One trait per integration, with the same shape: reads return records of
//! the contract, writes return a [`Done`] carrying the inverse operation where
//! one exists. Providers are reached only through the mediator, with a scope
//! the mediator has already checked; they never see the guest, and the guest
//! never sees them (or their credentials).
//!
//! [`Operation`] is the canonical description of one call: what the mediator
//! audits, what an approval will be bound to, and what the host replays.

pub mod files;
pub mod sandbox;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::manifest::Interface;
pub use crate::mediator::Permit;
use crate::runtime::bindings::{calendar, chat, crm, ledger, mail};

/// A provider failure, mapped by the mediator to the contract's `call-error`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// The object asked for does not exist in this scope.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request is malformed for this service.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The connection expired; a human must re-authorise.
    #[error("the connection expired")]
    Expired,
    /// The object changed since the write being undone; undoing would
    /// clobber someone else's change.
    #[error("changed since: {0}")]
    Conflict(String),
    /// The service failed. Must not contain secrets.
    #[error("{0}")]
    Failed(String),
}

/// How to undo a write, if it can be undone. Each inverse carries `after`,
/// the fingerprint of the object just after the write: undo refuses when the
/// object no longer matches it (someone changed it since), so an undo never
/// clobbers a later edit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "undo", rename_all = "kebab-case")]
pub enum Inverse {
    /// Delete a posted chat message.
    DeleteChatMessage {
        /// Message id.
        id: String,
        /// Fingerprint of the message as posted.
        after: String,
    },
    /// Put a deal back in the stage it had.
    SetDealStage {
        /// Deal id.
        deal_id: String,
        /// The stage before the change.
        stage: String,
        /// Fingerprint of the deal after the change.
        after: String,
    },
    /// Cancel a created event.
    CancelEvent {
        /// Event id.
        id: String,
        /// Fingerprint of the event as created.
        after: String,
    },
    /// Withdraw invitations that were sent.
    Uninvite {
        /// Event id.
        event_id: String,
        /// The attendees added.
        attendees: Vec<String>,
        /// Fingerprint of the event after the invitations.
        after: String,
    },
    /// Void a created expense report.
    VoidExpenseReport {
        /// Report id.
        id: String,
        /// Fingerprint of the report as created.
        after: String,
    },
}

impl Inverse {
    /// The interface the inverse runs on.
    pub fn interface(&self) -> Interface {
        match self {
            Inverse::DeleteChatMessage { .. } => Interface::Chat,
            Inverse::SetDealStage { .. } => Interface::Crm,
            Inverse::CancelEvent { .. } | Inverse::Uninvite { .. } => Interface::Calendar,
            Inverse::VoidExpenseReport { .. } => Interface::Ledger,
        }
    }

    /// The grant action the inverse needs: the same one the write needed.
    pub fn action(&self) -> &'static str {
        match self {
            Inverse::DeleteChatMessage { .. } => "post",
            Inverse::SetDealStage { .. } => "update-deals",
            Inverse::CancelEvent { .. } => "create-events",
            Inverse::Uninvite { .. } => "send-invites",
            Inverse::VoidExpenseReport { .. } => "create-expense-reports",
        }
    }

    /// The method name for the audit log.
    pub fn method(&self) -> &'static str {
        match self {
            Inverse::DeleteChatMessage { .. } => "delete-message",
            Inverse::SetDealStage { .. } => "update-deal-stage",
            Inverse::CancelEvent { .. } => "cancel-event",
            Inverse::Uninvite { .. } => "uninvite",
            Inverse::VoidExpenseReport { .. } => "void-expense-report",
        }
    }

    /// A readable summary of what undoing does.
    pub fn summary(&self) -> String {
        match self {
            Inverse::DeleteChatMessage { id, .. } => format!("delete message {}", quote(id)),
            Inverse::SetDealStage { deal_id, stage, .. } => {
                format!(
                    "move deal {} back to stage {}",
                    quote(deal_id),
                    quote(stage)
                )
            }
            Inverse::CancelEvent { id, .. } => format!("cancel event {}", quote(id)),
            Inverse::Uninvite {
                event_id,
                attendees,
                ..
            } => format!(
                "withdraw the invitations of {} to event {}",
                quote(&attendees.join(", ")),
                quote(event_id)
            ),
            Inverse::VoidExpenseReport { id, .. } => format!("void expense report {}", quote(id)),
        }
    }
}

/// A short, stable fingerprint of an object's state (for undo's conflict check).
pub fn fingerprint<T: Serialize>(value: &T) -> String {
    hex::encode(&crate::digest::digest(value)[..12])
}

/// The result of a write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Done {
    /// Identifies what was created or changed.
    pub id: String,
    /// How to undo it; `None` means irreversible (e.g. a sent mail).
    pub inverse: Option<Inverse>,
}

/// The canonical description of one integration call (arguments included).
/// Each variant's fields are the WIT method's parameters, minus the reason.
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Operation {
    /// `mailbox.list`
    MailList { query: String, limit: u32 },
    /// `mailbox.read`
    MailRead { id: String },
    /// `mailbox.send`
    MailSend { draft: mail::Draft },
    /// `channel.read-recent`
    ChatReadRecent { limit: u32 },
    /// `channel.post`
    ChatPost { text: String },
    /// `portal.find-contacts`
    CrmFindContacts { query: String },
    /// `portal.get-contact`
    CrmGetContact { id: String },
    /// `portal.list-deals`
    CrmListDeals { contact_id: Option<String> },
    /// `portal.update-deal-stage`
    CrmUpdateDealStage { deal_id: String, stage: String },
    /// `calendar.list-events`
    CalendarListEvents { from: String, to: String },
    /// `calendar.create-event`
    CalendarCreateEvent { event: calendar::NewEvent },
    /// `calendar.send-invite`
    CalendarSendInvite {
        event_id: String,
        attendees: Vec<String>,
    },
    /// `company.list-invoices`
    LedgerListInvoices { status: Option<String> },
    /// `company.create-expense-report`
    LedgerCreateExpenseReport { report: ledger::ExpenseReport },
    /// `folder.list`
    FilesList { path: String },
    /// `folder.read`
    FilesRead { path: String },
    /// `folder.write` (contents are not part of the description's summary)
    FilesWrite {
        path: String,
        #[serde(with = "hex_bytes")]
        contents: Vec<u8>,
    },
    /// `guidance.ask`: a question for a human, with the options offered.
    /// Never reaches a provider; an operator's answer goes back to the
    /// employee through `on-decision`.
    Ask {
        question: String,
        options: Vec<String>,
    },
    /// `elevation.request`: a time-boxed widening of a grant. Never reaches
    /// a provider; on approval the host records the widening.
    Elevate {
        integration: crate::manifest::Integration,
        scope: String,
        actions: Vec<String>,
        minutes: u32,
    },
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

impl Operation {
    /// The capability interface this operation belongs to (`None` for a
    /// question, which reaches no integration).
    pub fn interface(&self) -> Option<Interface> {
        use Operation::*;
        Some(match self {
            MailList { .. } | MailRead { .. } | MailSend { .. } => Interface::Mail,
            ChatReadRecent { .. } | ChatPost { .. } => Interface::Chat,
            CrmFindContacts { .. }
            | CrmGetContact { .. }
            | CrmListDeals { .. }
            | CrmUpdateDealStage { .. } => Interface::Crm,
            CalendarListEvents { .. } | CalendarCreateEvent { .. } | CalendarSendInvite { .. } => {
                Interface::Calendar
            }
            LedgerListInvoices { .. } | LedgerCreateExpenseReport { .. } => Interface::Ledger,
            FilesList { .. } | FilesRead { .. } | FilesWrite { .. } => Interface::Files,
            Elevate { integration, .. } => integration.interface(),
            Ask { .. } => return None,
        })
    }

    /// The interface's name for the audit log (`guidance` for a question).
    pub fn interface_name(&self) -> String {
        self.interface()
            .map_or_else(|| "guidance".to_string(), |i| i.to_string())
    }

    /// The grant action this operation needs (see `Integration::actions`).
    pub fn action(&self) -> &'static str {
        use Operation::*;
        match self {
            MailList { .. } | MailRead { .. } => "read",
            MailSend { .. } => "send",
            ChatReadRecent { .. } => "read",
            ChatPost { .. } => "post",
            CrmFindContacts { .. } | CrmGetContact { .. } | CrmListDeals { .. } => "read",
            CrmUpdateDealStage { .. } => "update-deals",
            CalendarListEvents { .. } => "read",
            CalendarCreateEvent { .. } => "create-events",
            CalendarSendInvite { .. } => "send-invites",
            LedgerListInvoices { .. } => "read-invoices",
            LedgerCreateExpenseReport { .. } => "create-expense-reports",
            FilesList { .. } => "list",
            FilesRead { .. } => "read",
            FilesWrite { .. } => "write",
            Elevate { .. } => "elevate",
            Ask { .. } => "ask",
        }
    }

    /// The contract method, for the audit log.
    pub fn method(&self) -> &'static str {
        use Operation::*;
        match self {
            MailList { .. } => "list",
            MailRead { .. } => "read",
            MailSend { .. } => "send",
            ChatReadRecent { .. } => "read-recent",
            ChatPost { .. } => "post",
            CrmFindContacts { .. } => "find-contacts",
            CrmGetContact { .. } => "get-contact",
            CrmListDeals { .. } => "list-deals",
            CrmUpdateDealStage { .. } => "update-deal-stage",
            CalendarListEvents { .. } => "list-events",
            CalendarCreateEvent { .. } => "create-event",
            CalendarSendInvite { .. } => "send-invite",
            LedgerListInvoices { .. } => "list-invoices",
            LedgerCreateExpenseReport { .. } => "create-expense-report",
            FilesList { .. } => "list",
            FilesRead { .. } => "read",
            FilesWrite { .. } => "write",
            Elevate { .. } => "request-elevation",
            Ask { .. } => "ask",
        }
    }

    /// The money the operation moves, in cents, if it has an amount
    /// (what `over_amount` approval policies look at).
    pub fn amount_cents(&self) -> Option<i64> {
        match self {
            Operation::LedgerCreateExpenseReport { report } => {
                Some(report.lines.iter().map(|l| l.amount_cents).sum())
            }
            _ => None,
        }
    }

    /// The people outside the host the operation reaches (what
    /// `outside_domain` approval policies look at).
    pub fn recipients(&self) -> &[String] {
        match self {
            Operation::MailSend { draft } => &draft.to,
            Operation::CalendarSendInvite { attendees, .. } => attendees,
            _ => &[],
        }
    }

    /// The same operation with its recipients (mail `to`, invitation
    /// attendees) parsed as real addresses, one plain address each; or why
    /// one of them is not an address.
    pub fn with_canonical_recipients(self) -> Result<Operation, String> {
        match self {
            Operation::MailSend { mut draft } => {
                draft.to = crate::addresses::parse_recipients(&draft.to)?;
                Ok(Operation::MailSend { draft })
            }
            Operation::CalendarSendInvite {
                event_id,
                attendees,
            } => Ok(Operation::CalendarSendInvite {
                event_id,
                attendees: crate::addresses::parse_recipients(&attendees)?,
            }),
            other => Ok(other),
        }
    }

    /// The fields an approver may edit before approving.
    pub fn editable_fields(&self) -> &'static [&'static str] {
        use Operation::*;
        match self {
            MailSend { .. } => &["to", "subject", "body"],
            ChatPost { .. } => &["text"],
            CrmUpdateDealStage { .. } => &["stage"],
            CalendarCreateEvent { .. } => &["title", "start", "end", "description"],
            CalendarSendInvite { .. } => &["attendees"],
            LedgerCreateExpenseReport { .. } => &["title"],
            FilesWrite { .. } => &["contents"],
            Elevate { .. } => &["minutes"],
            _ => &[],
        }
    }

    /// The same operation with one field changed by an approver (lists, like
    /// `to` and `attendees`, are comma-separated).
    pub fn edited(&self, field: &str, value: &str) -> Result<Operation, String> {
        use Operation::*;
        let list = || -> Vec<String> {
            value
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .collect()
        };
        let mut op = self.clone();
        match (&mut op, field) {
            (MailSend { draft }, "to") => draft.to = list(),
            (MailSend { draft }, "subject") => draft.subject = value.into(),
            (MailSend { draft }, "body") => draft.body = value.into(),
            (ChatPost { text }, "text") => *text = value.into(),
            (CrmUpdateDealStage { stage, .. }, "stage") => *stage = value.into(),
            (CalendarCreateEvent { event }, "title") => event.title = value.into(),
            (CalendarCreateEvent { event }, "start") => event.start = value.into(),
            (CalendarCreateEvent { event }, "end") => event.end = value.into(),
            (CalendarCreateEvent { event }, "description") => event.description = value.into(),
            (CalendarSendInvite { attendees, .. }, "attendees") => *attendees = list(),
            (LedgerCreateExpenseReport { report }, "title") => report.title = value.into(),
            (FilesWrite { contents, .. }, "contents") => *contents = value.as_bytes().to_vec(),
            (Elevate { minutes, .. }, "minutes") => {
                *minutes = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|m| (1..=MAX_ELEVATION_MINUTES).contains(m))
                    .ok_or_else(|| {
                        format!("minutes must be a number from 1 to {MAX_ELEVATION_MINUTES}")
                    })?
            }
            _ => {
                let fields = self.editable_fields();
                return Err(if fields.is_empty() {
                    format!("{} cannot be edited", self.method())
                } else {
                    format!(
                        "{} has no editable field {field:?} (editable: {})",
                        self.method(),
                        fields.join(", ")
                    )
                });
            }
        }
        Ok(op)
    }

    /// Whether the operation changes anything.
    pub fn is_write(&self) -> bool {
        use Operation::*;
        matches!(
            self,
            MailSend { .. }
                | ChatPost { .. }
                | CrmUpdateDealStage { .. }
                | CalendarCreateEvent { .. }
                | CalendarSendInvite { .. }
                | LedgerCreateExpenseReport { .. }
                | FilesWrite { .. }
                | Elevate { .. }
        )
    }

    /// Bytes of guest-supplied data in the arguments (for the size cap).
    pub fn argument_bytes(&self) -> usize {
        use Operation::*;
        match self {
            MailList { query, .. } | CrmFindContacts { query } => query.len(),
            MailRead { id } | CrmGetContact { id } => id.len(),
            MailSend { draft } => {
                draft.to.iter().map(String::len).sum::<usize>()
                    + draft.subject.len()
                    + draft.body.len()
                    + draft.in_reply_to.as_ref().map_or(0, String::len)
            }
            ChatReadRecent { .. } => 0,
            ChatPost { text } => text.len(),
            CrmListDeals { contact_id } => contact_id.as_ref().map_or(0, String::len),
            CrmUpdateDealStage { deal_id, stage } => deal_id.len() + stage.len(),
            CalendarListEvents { from, to } => from.len() + to.len(),
            CalendarCreateEvent { event } => {
                event.title.len() + event.start.len() + event.end.len() + event.description.len()
            }
            CalendarSendInvite {
                event_id,
                attendees,
            } => event_id.len() + attendees.iter().map(String::len).sum::<usize>(),
            LedgerListInvoices { status } => status.as_ref().map_or(0, String::len),
            LedgerCreateExpenseReport { report } => {
                report.title.len()
                    + report.currency.len()
                    + report
                        .lines
                        .iter()
                        .map(|l| l.description.len() + l.category.len() + l.receipt_ref.len() + 8)
                        .sum::<usize>()
            }
            FilesList { path } | FilesRead { path } => path.len(),
            FilesWrite { path, contents } => path.len() + contents.len(),
            Ask { question, options } => {
                question.len() + options.iter().map(String::len).sum::<usize>()
            }
            Elevate { scope, actions, .. } => {
                scope.len() + actions.iter().map(String::len).sum::<usize>()
            }
        }
    }

    /// A readable, secret-free summary of the arguments for the audit log.
    /// Long texts are cut; file contents are reduced to their size.
    pub fn summary(&self) -> String {
        use Operation::*;
        match self {
            MailList { query, limit } => format!("query {}, limit {limit}", quote(query)),
            MailRead { id } => format!("id {}", quote(id)),
            MailSend { draft } => format!(
                "to {}, subject {}, body {} chars",
                quote(&draft.to.join(", ")),
                quote(&draft.subject),
                draft.body.chars().count()
            ),
            ChatReadRecent { limit } => format!("limit {limit}"),
            ChatPost { text } => format!("text {}", quote(text)),
            CrmFindContacts { query } => format!("query {}", quote(query)),
            CrmGetContact { id } => format!("id {}", quote(id)),
            CrmListDeals { contact_id } => match contact_id {
                Some(c) => format!("contact {}", quote(c)),
                None => "all".into(),
            },
            CrmUpdateDealStage { deal_id, stage } => {
                format!("deal {}, stage {}", quote(deal_id), quote(stage))
            }
            CalendarListEvents { from, to } => format!("from {} to {}", quote(from), quote(to)),
            CalendarCreateEvent { event } => {
                format!(
                    "title {}, {} - {}",
                    quote(&event.title),
                    quote(&event.start),
                    quote(&event.end)
                )
            }
            CalendarSendInvite {
                event_id,
                attendees,
            } => {
                format!(
                    "event {}, attendees {}",
                    quote(event_id),
                    quote(&attendees.join(", "))
                )
            }
            LedgerListInvoices { status } => match status {
                Some(s) => format!("status {}", quote(s)),
                None => "all".into(),
            },
            LedgerCreateExpenseReport { report } => format!(
                "title {}, {} lines, total {} {}",
                quote(&report.title),
                report.lines.len(),
                money(report.lines.iter().map(|l| l.amount_cents).sum()),
                report.currency
            ),
            FilesList { path } | FilesRead { path } => format!("path {}", quote(path)),
            FilesWrite { path, contents } => {
                format!("path {}, {} bytes", quote(path), contents.len())
            }
            Elevate {
                integration,
                scope,
                actions,
                minutes,
            } => format!(
                "{} on {integration} {} for {minutes} min",
                quote(&actions.join(", ")),
                quote(scope)
            ),
            Ask { question, options } => format!(
                "question {}, options {}",
                quote(question),
                quote(&options.join(" | "))
            ),
        }
    }
}

/// The longest widening an employee may ask for: one day.
pub const MAX_ELEVATION_MINUTES: u32 = 24 * 60;

/// Format cents as `12.34`.
pub fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let c = cents.unsigned_abs();
    format!("{sign}{}.{:02}", c / 100, c % 100)
}

fn quote(text: &str) -> String {
    const MAX: usize = 80;
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() > MAX {
        format!(
            "{:?}",
            format!("{}...", clean.chars().take(MAX).collect::<String>())
        )
    } else {
        format!("{clean:?}")
    }
}

/// What a provider returned.
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    /// Mail messages.
    Messages(Vec<mail::Message>),
    /// One mail message.
    Message(mail::Message),
    /// Chat messages.
    ChatMessages(Vec<chat::ChatMessage>),
    /// CRM contacts.
    Contacts(Vec<crm::Contact>),
    /// One CRM contact.
    Contact(crm::Contact),
    /// CRM deals.
    Deals(Vec<crm::Deal>),
    /// Calendar events.
    Events(Vec<calendar::Event>),
    /// Invoices.
    Invoices(Vec<ledger::Invoice>),
    /// Directory entry names.
    Names(Vec<String>),
    /// File contents.
    Bytes(Vec<u8>),
    /// A write happened.
    Done(Done),
    /// The write waits for a human (produced by the mediator, never a provider);
    /// the text is the approval id.
    Queued(String),
    /// An earlier write was undone; the text says what undoing did.
    Undone(String),
    /// A widening was recorded (by the host, never a provider); the text
    /// says what and until when.
    Granted(String),
}

impl Response {
    /// A short description for the audit log (counts, ids; never contents).
    pub fn summary(&self) -> String {
        match self {
            Response::Messages(v) => format!("{} messages", v.len()),
            Response::Message(m) => format!("message {}", m.id),
            Response::ChatMessages(v) => format!("{} chat messages", v.len()),
            Response::Contacts(v) => format!("{} contacts", v.len()),
            Response::Contact(c) => format!("contact {}", c.id),
            Response::Deals(v) => format!("{} deals", v.len()),
            Response::Events(v) => format!("{} events", v.len()),
            Response::Invoices(v) => format!("{} invoices", v.len()),
            Response::Names(v) => format!("{} entries", v.len()),
            Response::Bytes(b) => format!("{} bytes", b.len()),
            Response::Queued(id) => format!("queued for approval {id}"),
            Response::Undone(what) => format!("undone: {what}"),
            Response::Granted(what) => format!("granted: {what}"),
            Response::Done(d) => match d.inverse {
                Some(_) => format!("done: {}", d.id),
                None => format!("done: {} (irreversible)", d.id),
            },
        }
    }
}

// Every write takes an idempotency `key`: the same key twice performs the
// write once and returns the first result, where the service can promise
// that. The host passes the approval's action hash, so an approved action
// replayed after a crash does not happen twice.

/// Mail (Gmail and the sandbox). `label` is the granted scope's value.
pub trait MailProvider: Send + Sync {
    /// The address the organisation's mail is sent from (its domain is the
    /// organisation's own: where mail grants may send by default).
    fn sender(&self) -> String;
    /// Messages under `label` matching `query`, newest first.
    fn list(
        &self,
        label: &str,
        query: &str,
        limit: u32,
    ) -> Result<Vec<mail::Message>, ProviderError>;
    /// One message, only if it carries `label`.
    fn read(&self, label: &str, id: &str) -> Result<mail::Message, ProviderError>;
    /// Send a mail (irreversible), filed under `label` besides SENT.
    fn send(
        &self,
        label: &str,
        draft: &mail::Draft,
        key: Option<&str>,
    ) -> Result<Done, ProviderError>;
}

/// Chat (Slack and the sandbox). `channel` is the granted scope's value.
pub trait ChatProvider: Send + Sync {
    /// The newest `limit` messages, oldest first.
    fn read_recent(
        &self,
        channel: &str,
        limit: u32,
    ) -> Result<Vec<chat::ChatMessage>, ProviderError>;
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

/// CRM (HubSpot and the sandbox). `portal` is the granted scope's value.
pub trait CrmProvider: Send + Sync {
    /// Contacts matching `query`.
    fn find_contacts(&self, portal: &str, query: &str) -> Result<Vec<crm::Contact>, ProviderError>;
    /// One contact.
    fn get_contact(&self, portal: &str, id: &str) -> Result<crm::Contact, ProviderError>;
    /// Deals, optionally of one contact.
    fn list_deals(
        &self,
        portal: &str,
        contact_id: Option<&str>,
    ) -> Result<Vec<crm::Deal>, ProviderError>;
    /// Move a deal to `stage`.
    fn update_deal_stage(
        &self,
        portal: &str,
        deal_id: &str,
        stage: &str,
        key: Option<&str>,
    ) -> Result<Done, ProviderError>;
    /// Undo a stage change: put the deal back in `stage` if it is still as
    /// the change left it (`after`).
    fn restore_deal_stage(
        &self,
        portal: &str,
        deal_id: &str,
        stage: &str,
        after: &str,
    ) -> Result<(), ProviderError>;
}

/// Calendar (Google Calendar and the sandbox). `calendar` is the scope's value.
pub trait CalendarProvider: Send + Sync {
    /// Events overlapping `[from, to)`.
    fn list_events(
        &self,
        calendar: &str,
        from: &str,
        to: &str,
    ) -> Result<Vec<calendar::Event>, ProviderError>;
    /// Create an event.
    fn create_event(
        &self,
        calendar: &str,
        event: &calendar::NewEvent,
        key: Option<&str>,
    ) -> Result<Done, ProviderError>;
    /// Invite attendees to an event.
    fn send_invite(
        &self,
        calendar: &str,
        event_id: &str,
        attendees: &[String],
        key: Option<&str>,
    ) -> Result<Done, ProviderError>;
    /// Undo a creation: cancel event `id` if it is still as created (`after`).
    fn cancel_event(&self, calendar: &str, id: &str, after: &str) -> Result<(), ProviderError>;
    /// Undo invitations: remove `attendees` if the event is still as the
    /// invitations left it (`after`).
    fn uninvite(
        &self,
        calendar: &str,
        event_id: &str,
        attendees: &[String],
        after: &str,
    ) -> Result<(), ProviderError>;
}

/// Books (QuickBooks Online and the sandbox). `company` is the scope's value.
pub trait LedgerProvider: Send + Sync {
    /// Invoices, optionally with one status.
    fn list_invoices(
        &self,
        company: &str,
        status: Option<&str>,
    ) -> Result<Vec<ledger::Invoice>, ProviderError>;
    /// Create an expense report.
    fn create_expense_report(
        &self,
        company: &str,
        report: &ledger::ExpenseReport,
        key: Option<&str>,
    ) -> Result<Done, ProviderError>;
    /// Undo a report: void it if it is still as created (`after`).
    fn void_expense_report(
        &self,
        company: &str,
        id: &str,
        after: &str,
    ) -> Result<(), ProviderError>;
}

/// Files in one granted folder. `folder` is the scope's value.
pub trait FilesProvider: Send + Sync {
    /// Entry names in a directory of the folder.
    fn list(&self, folder: &str, path: &str) -> Result<Vec<String>, ProviderError>;
    /// A file's contents.
    fn read(&self, folder: &str, path: &str) -> Result<Vec<u8>, ProviderError>;
    /// Create or replace a file.
    fn write(&self, folder: &str, path: &str, contents: &[u8]) -> Result<Done, ProviderError>;
}

/// The provider of each integration for one organisation. Its providers
/// are private: the only way to reach one is [`Providers::execute`] or
/// [`Providers::undo`], and both need a [`Permit`], which only the
/// mediator's executor can make (after checking the grant in force).
#[derive(Clone)]
pub struct Providers {
    mail: Arc<dyn MailProvider>,
    chat: Arc<dyn ChatProvider>,
    crm: Arc<dyn CrmProvider>,
    calendar: Arc<dyn CalendarProvider>,
    ledger: Arc<dyn LedgerProvider>,
    files: Arc<dyn FilesProvider>,
}

impl Providers {
    /// The providers of one organisation, one per integration.
    pub fn new(
        mail: Arc<dyn MailProvider>,
        chat: Arc<dyn ChatProvider>,
        crm: Arc<dyn CrmProvider>,
        calendar: Arc<dyn CalendarProvider>,
        ledger: Arc<dyn LedgerProvider>,
        files: Arc<dyn FilesProvider>,
    ) -> Providers {
        Providers {
            mail,
            chat,
            crm,
            calendar,
            ledger,
            files,
        }
    }

    /// The address the organisation's mail is sent from (no side effect).
    pub fn mail_sender(&self) -> String {
        self.mail.sender()
    }

    /// Run `op` against the provider of its interface in the permit's scope.
    /// `actor` is who a chat post is attributed to; `key` makes a write idempotent.
    pub fn execute(
        &self,
        permit: &Permit,
        actor: &str,
        op: &Operation,
        key: Option<&str>,
    ) -> Result<Response, ProviderError> {
        use Operation::*;
        let scope = permit.scope_value();
        Ok(match op {
            MailList { query, limit } => Response::Messages(self.mail.list(scope, query, *limit)?),
            MailRead { id } => Response::Message(self.mail.read(scope, id)?),
            MailSend { draft } => Response::Done(self.mail.send(scope, draft, key)?),
            ChatReadRecent { limit } => {
                Response::ChatMessages(self.chat.read_recent(scope, *limit)?)
            }
            ChatPost { text } => Response::Done(self.chat.post(scope, actor, text, key)?),
            CrmFindContacts { query } => Response::Contacts(self.crm.find_contacts(scope, query)?),
            CrmGetContact { id } => Response::Contact(self.crm.get_contact(scope, id)?),
            CrmListDeals { contact_id } => {
                Response::Deals(self.crm.list_deals(scope, contact_id.as_deref())?)
            }
            CrmUpdateDealStage { deal_id, stage } => {
                Response::Done(self.crm.update_deal_stage(scope, deal_id, stage, key)?)
            }
            CalendarListEvents { from, to } => {
                Response::Events(self.calendar.list_events(scope, from, to)?)
            }
            CalendarCreateEvent { event } => {
                Response::Done(self.calendar.create_event(scope, event, key)?)
            }
            CalendarSendInvite {
                event_id,
                attendees,
            } => Response::Done(self.calendar.send_invite(scope, event_id, attendees, key)?),
            LedgerListInvoices { status } => {
                Response::Invoices(self.ledger.list_invoices(scope, status.as_deref())?)
            }
            LedgerCreateExpenseReport { report } => {
                Response::Done(self.ledger.create_expense_report(scope, report, key)?)
            }
            FilesList { path } => Response::Names(self.files.list(scope, path)?),
            FilesRead { path } => Response::Bytes(self.files.read(scope, path)?),
            FilesWrite { path, contents } => {
                Response::Done(self.files.write(scope, path, contents)?)
            }
            Elevate { .. } | Ask { .. } => {
                return Err(ProviderError::Invalid(
                    "widenings and questions are for the host and humans, not a service".into(),
                ));
            }
        })
    }

    /// Run `inverse` in the permit's scope: undo an earlier write, unless
    /// the object changed since.
    pub fn undo(&self, permit: &Permit, inverse: &Inverse) -> Result<(), ProviderError> {
        let scope = permit.scope_value();
        match inverse {
            Inverse::DeleteChatMessage { id, after } => self.chat.delete_message(scope, id, after),
            Inverse::SetDealStage {
                deal_id,
                stage,
                after,
            } => self.crm.restore_deal_stage(scope, deal_id, stage, after),
            Inverse::CancelEvent { id, after } => self.calendar.cancel_event(scope, id, after),
            Inverse::Uninvite {
                event_id,
                attendees,
                after,
            } => self.calendar.uninvite(scope, event_id, attendees, after),
            Inverse::VoidExpenseReport { id, after } => {
                self.ledger.void_expense_report(scope, id, after)
            }
        }
    }
}

/// Map a provider failure to the contract's error.
pub fn to_call_error(e: ProviderError) -> crate::runtime::bindings::CallError {
    use crate::runtime::bindings::CallError;
    match e {
        ProviderError::NotFound(why) | ProviderError::Invalid(why) => CallError::Rejected(why),
        ProviderError::Conflict(why) => CallError::Rejected(format!("changed since: {why}")),
        ProviderError::Expired => CallError::Expired,
        ProviderError::Failed(why) => CallError::Failed(why),
    }
}
