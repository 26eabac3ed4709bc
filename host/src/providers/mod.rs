//! Providers: the code that actually talks to a service (the embedded
//! sandbox workspace and the files in granted folders today; real
//! connectors behind the same traits later).
//!
//! Each integration's provider trait lives in its module under
//! [`crate::integrations`]; this module holds what they share: their
//! errors, the result of a write ([`Done`]), what a call returns
//! ([`Response`]) and the bundle of one organisation's providers
//! ([`Providers`]), reachable only with the executor's [`Permit`]: every
//! way to a provider (including the accessors the integrations' modules
//! use) takes one, and only the mediator's executor can make one.

pub mod files;
pub mod sandbox;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use crate::integrations::calendar::CalendarProvider;
pub use crate::integrations::chat::ChatProvider;
pub use crate::integrations::crm::CrmProvider;
pub use crate::integrations::elevation::MAX_ELEVATION_MINUTES;
pub use crate::integrations::files::FilesProvider;
pub use crate::integrations::ledger::LedgerProvider;
pub use crate::integrations::mail::MailProvider;
pub use crate::integrations::{Inverse, Operation};
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

/// Format cents as `12.34`.
pub fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let c = cents.unsigned_abs();
    format!("{sign}{}.{:02}", c / 100, c % 100)
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
    /// Where each call finds the connection an admin chose for its
    /// integration (looked up at every call); none: these providers only.
    router: Option<Arc<crate::connectors::Router>>,
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
            router: None,
        }
    }

    /// The same providers, except that a call to an integration an admin
    /// connected (`clancy connections use`) goes to its connector: checked
    /// at every call, so a change holds from the next call on.
    pub fn with_router(mut self, router: crate::connectors::Router) -> Providers {
        self.router = Some(Arc::new(router));
        self
    }

    /// The address the organisation's mail is sent from (no side effect
    /// but a read of the connection's configuration).
    pub fn mail_sender(&self) -> String {
        match self.mail_provider() {
            Ok(mail) => mail.sender(),
            Err(_) => String::new(),
        }
    }

    fn mail_provider(&self) -> Result<Arc<dyn MailProvider>, ProviderError> {
        match &self.router {
            Some(r) => Ok(r.mail()?.unwrap_or_else(|| self.mail.clone())),
            None => Ok(self.mail.clone()),
        }
    }

    /// The mail provider, for the holder of a [`Permit`].
    pub(crate) fn mail(&self, _permit: &Permit) -> Result<Arc<dyn MailProvider>, ProviderError> {
        self.mail_provider()
    }

    /// The chat provider, for the holder of a [`Permit`].
    pub(crate) fn chat(&self, _permit: &Permit) -> Result<Arc<dyn ChatProvider>, ProviderError> {
        match &self.router {
            Some(r) => Ok(r.chat()?.unwrap_or_else(|| self.chat.clone())),
            None => Ok(self.chat.clone()),
        }
    }

    /// The crm provider, for the holder of a [`Permit`].
    pub(crate) fn crm(&self, _permit: &Permit) -> Result<Arc<dyn CrmProvider>, ProviderError> {
        match &self.router {
            Some(r) => Ok(r.crm()?.unwrap_or_else(|| self.crm.clone())),
            None => Ok(self.crm.clone()),
        }
    }

    /// The calendar provider, for the holder of a [`Permit`].
    pub(crate) fn calendar(
        &self,
        _permit: &Permit,
    ) -> Result<Arc<dyn CalendarProvider>, ProviderError> {
        match &self.router {
            Some(r) => Ok(r.calendar()?.unwrap_or_else(|| self.calendar.clone())),
            None => Ok(self.calendar.clone()),
        }
    }

    /// The ledger provider, for the holder of a [`Permit`].
    pub(crate) fn ledger(
        &self,
        _permit: &Permit,
    ) -> Result<Arc<dyn LedgerProvider>, ProviderError> {
        match &self.router {
            Some(r) => Ok(r.ledger()?.unwrap_or_else(|| self.ledger.clone())),
            None => Ok(self.ledger.clone()),
        }
    }

    /// The files provider, for the holder of a [`Permit`].
    pub(crate) fn files(&self, _permit: &Permit) -> &dyn FilesProvider {
        self.files.as_ref()
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
        op.run(self, permit, actor, key)
    }

    /// Run `inverse` in the permit's scope: undo an earlier write, unless
    /// the object changed since.
    pub fn undo(&self, permit: &Permit, inverse: &Inverse) -> Result<(), ProviderError> {
        inverse.run(self, permit)
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
