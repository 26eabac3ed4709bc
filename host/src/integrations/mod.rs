//! The integrations and the registry that ties them together.
//!
//! Each integration is one module of the same shape (as wasmtime-wasi keeps
//! one interface per file and Spin gives every capability the same shape):
//!
//! - `SPEC`: its facts — manifest name, contract interface, scope kind, the
//!   actions a grant may list (and which of them write);
//! - its operations (`MailOp`, …): what each call needs (its [`Action`]),
//!   its audit summary, the approver's preview, the fields an approver may
//!   edit, and how it runs against the provider;
//! - its inverses (how its writes are undone), where it has any;
//! - its provider trait (what a service connector implements);
//! - its handle type and the guest's calls into it (the WIT `Host` impls
//!   for the per-task state), which only translate a call into an
//!   [`Operation`] for the mediator.
//!
//! This file is the registry: the enums that name every integration,
//! action, operation and inverse, dispatching to the modules. Adding an
//! integration is its interface in `wit/`, a new module here, one arm in
//! each enum of this file, and its entries in the other two registry
//! spots: the provider bundle and its responses (`providers/mod.rs`) and
//! the one `bindgen!` (`runtime/bindings.rs`, mapping its resource to the
//! module's handle type).
//!
//! `guidance` (asking a human) and `elevation` (asking for more reach) are
//! contract interfaces without a service: their operations go to humans,
//! never to a provider.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::providers::{Permit, ProviderError, Providers, Response};

/// The `Ok` of a guest call that returns a value or a `call-error`.
macro_rules! expect_response {
    ($result:expr, $variant:ident) => {
        match $result? {
            Ok(crate::providers::Response::$variant(value)) => Ok(Ok(value)),
            Ok(other) => Err(wasmtime::Error::msg(format!(
                "host bug: unexpected provider response {other:?}"
            ))),
            Err(e) => Ok(Err(e)),
        }
    };
}

/// The `Ok` of a guest call that writes: done or queued.
macro_rules! written {
    ($result:expr) => {
        match $result? {
            Ok(crate::providers::Response::Done(done)) => {
                Ok(Ok(crate::runtime::bindings::Outcome::Done(done.id)))
            }
            Ok(crate::providers::Response::Queued(approval)) => {
                Ok(Ok(crate::runtime::bindings::Outcome::Queued(approval)))
            }
            Ok(other) => Err(wasmtime::Error::msg(format!(
                "host bug: unexpected provider response {other:?}"
            ))),
            Err(e) => Ok(Err(e)),
        }
    };
}

pub mod calendar;
pub mod chat;
pub mod crm;
pub mod elevation;
pub mod files;
pub mod guidance;
pub mod ledger;
pub mod mail;

/// The capability interfaces of the `clancy:employee` contract.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Interface {
    /// `clancy:employee/mail`
    Mail,
    /// `clancy:employee/chat`
    Chat,
    /// `clancy:employee/crm`
    Crm,
    /// `clancy:employee/calendar`
    Calendar,
    /// `clancy:employee/ledger`
    Ledger,
    /// `clancy:employee/files`
    Files,
}

impl Interface {
    /// All capability interfaces.
    pub const ALL: [Interface; 6] = [
        Interface::Mail,
        Interface::Chat,
        Interface::Crm,
        Interface::Calendar,
        Interface::Ledger,
        Interface::Files,
    ];

    /// The WIT interface name, without package or version.
    pub fn wit_name(self) -> &'static str {
        match self {
            Interface::Mail => "mail",
            Interface::Chat => "chat",
            Interface::Crm => "crm",
            Interface::Calendar => "calendar",
            Interface::Ledger => "ledger",
            Interface::Files => "files",
        }
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.wit_name())
    }
}

/// What a grant lets an employee do on a scope. Serialised by its
/// manifest name (`read`, `send`, `update-deals`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Read (mail, chat, crm, calendar, files).
    Read,
    /// Send mail.
    Send,
    /// Post to a channel.
    Post,
    /// Change deals' stages.
    UpdateDeals,
    /// Create calendar events.
    CreateEvents,
    /// Invite people to events.
    SendInvites,
    /// Read invoices.
    ReadInvoices,
    /// Create expense reports.
    CreateExpenseReports,
    /// List a folder.
    List,
    /// Write files.
    Write,
    /// Ask for a widening (never granted; always goes to a human).
    Elevate,
    /// Ask a human a question (never granted; always goes to a human).
    Ask,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 12] = [
        Action::Read,
        Action::Send,
        Action::Post,
        Action::UpdateDeals,
        Action::CreateEvents,
        Action::SendInvites,
        Action::ReadInvoices,
        Action::CreateExpenseReports,
        Action::List,
        Action::Write,
        Action::Elevate,
        Action::Ask,
    ];

    /// The name used in manifests and the audit log.
    pub fn name(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Send => "send",
            Action::Post => "post",
            Action::UpdateDeals => "update-deals",
            Action::CreateEvents => "create-events",
            Action::SendInvites => "send-invites",
            Action::ReadInvoices => "read-invoices",
            Action::CreateExpenseReports => "create-expense-reports",
            Action::List => "list",
            Action::Write => "write",
            Action::Elevate => "elevate",
            Action::Ask => "ask",
        }
    }

    /// The action named `name`.
    pub fn parse(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Whether the action changes something in a service (and so needs a
    /// reason, can be gated and counts against write budgets).
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Action::Send
                | Action::Post
                | Action::UpdateDeals
                | Action::CreateEvents
                | Action::SendInvites
                | Action::CreateExpenseReports
                | Action::Write
        )
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Join actions for people: `read, send`.
pub fn action_list<'a>(actions: impl IntoIterator<Item = &'a Action>) -> String {
    actions
        .into_iter()
        .map(|a| a.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The facts of one integration (each module's `SPEC`).
#[derive(Debug)]
pub struct Spec {
    /// The name used in `employee.toml`.
    pub name: &'static str,
    /// The contract interface it is reached through.
    pub interface: Interface,
    /// The prefix every scope starts with (`label`, `channel`, …).
    pub scope_kind: &'static str,
    /// The actions a grant may list.
    pub actions: &'static [Action],
}

/// A service an employee can be granted. Each maps to one interface.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Integration {
    /// Gmail (mail interface), scope `label:NAME`.
    Gmail,
    /// Slack (chat interface), scope `channel:#name`.
    Slack,
    /// HubSpot (crm interface), scope `portal:NAME`.
    Hubspot,
    /// Google Calendar (calendar interface), scope `calendar:NAME`.
    GoogleCalendar,
    /// QuickBooks Online (ledger interface), scope `company:NAME`.
    Quickbooks,
    /// A local folder (files interface), scope `folder:NAME`.
    Files,
}

impl Integration {
    /// Every integration.
    pub const ALL: [Integration; 6] = [
        Integration::Gmail,
        Integration::Slack,
        Integration::Hubspot,
        Integration::GoogleCalendar,
        Integration::Quickbooks,
        Integration::Files,
    ];

    /// Its facts.
    pub fn spec(self) -> &'static Spec {
        match self {
            Integration::Gmail => &mail::SPEC,
            Integration::Slack => &chat::SPEC,
            Integration::Hubspot => &crm::SPEC,
            Integration::GoogleCalendar => &calendar::SPEC,
            Integration::Quickbooks => &ledger::SPEC,
            Integration::Files => &files::SPEC,
        }
    }

    /// The name used in `employee.toml`.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The contract interface this integration is reached through.
    pub fn interface(self) -> Interface {
        self.spec().interface
    }

    /// The actions a grant of this integration may list.
    pub fn actions(self) -> &'static [Action] {
        self.spec().actions
    }

    /// Whether a grant of this integration may list `action`.
    pub fn offers(self, action: Action) -> bool {
        self.actions().contains(&action)
    }

    /// The actions that change something (and so can be gated).
    pub fn write_actions(self) -> Vec<Action> {
        self.actions()
            .iter()
            .copied()
            .filter(|a| a.is_write())
            .collect()
    }

    /// The prefix every scope of this integration starts with.
    pub fn scope_kind(self) -> &'static str {
        self.spec().scope_kind
    }

    /// The integration reached through `interface` (one per interface).
    pub fn of(interface: Interface) -> Integration {
        match Integration::ALL
            .into_iter()
            .find(|i| i.interface() == interface)
        {
            Some(i) => i,
            // Every interface has its integration (the registry is total).
            None => Integration::Files,
        }
    }

    /// The integration named `name` in manifests.
    pub fn parse(name: &str) -> Option<Integration> {
        Integration::ALL.into_iter().find(|i| i.name() == name)
    }

    /// The integration named `name`, if it is one reached through an OAuth
    /// connection (every one but `files`); else why not.
    pub fn parse_connected(name: &str) -> Result<Integration, String> {
        Integration::parse(name)
            .filter(|i| *i != Integration::Files)
            .ok_or_else(|| {
                format!(
                    "{} is not an integration reached through a connection (gmail, slack, hubspot, google-calendar, quickbooks)",
                    crate::human::line(name)
                )
            })
    }
}

impl fmt::Display for Integration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The canonical description of one call (arguments included): what the
/// mediator audits, what an approval is bound to, and what the host
/// replays. Each integration's operations are its own enum; the JSON form
/// is `{"op": "mail-send", …}` whichever module it comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Operation {
    /// `mail`
    Mail(mail::MailOp),
    /// `chat`
    Chat(chat::ChatOp),
    /// `crm`
    Crm(crm::CrmOp),
    /// `calendar`
    Calendar(calendar::CalendarOp),
    /// `ledger`
    Ledger(ledger::LedgerOp),
    /// `files`
    Files(files::FilesOp),
    /// `elevation`: asking for a widening.
    Elevation(elevation::ElevationOp),
    /// `guidance`: asking a human a question.
    Guidance(guidance::GuidanceOp),
}

/// Dispatch a method call to the operation's own module.
macro_rules! each_op {
    ($self:expr, $op:ident => $body:expr) => {
        match $self {
            Operation::Mail($op) => $body,
            Operation::Chat($op) => $body,
            Operation::Crm($op) => $body,
            Operation::Calendar($op) => $body,
            Operation::Ledger($op) => $body,
            Operation::Files($op) => $body,
            Operation::Elevation($op) => $body,
            Operation::Guidance($op) => $body,
        }
    };
}

/// An approver's edit could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// The operation has no such editable field.
    #[error("{method} has no editable field {field:?} (editable: {editable})")]
    NoSuchField {
        /// The operation's method.
        method: &'static str,
        /// The field asked for.
        field: String,
        /// What may be edited.
        editable: String,
    },
    /// The operation cannot be edited at all.
    #[error("{0} cannot be edited")]
    NotEditable(&'static str),
    /// The new value is not valid for the field.
    #[error("{0}")]
    InvalidValue(String),
}

impl Operation {
    /// The capability interface this operation belongs to (`None` for
    /// questions, which reach no integration).
    pub fn interface(&self) -> Option<Interface> {
        Some(match self {
            Operation::Mail(_) => Interface::Mail,
            Operation::Chat(_) => Interface::Chat,
            Operation::Crm(_) => Interface::Crm,
            Operation::Calendar(_) => Interface::Calendar,
            Operation::Ledger(_) => Interface::Ledger,
            Operation::Files(_) => Interface::Files,
            Operation::Elevation(op) => op.integration().interface(),
            Operation::Guidance(_) => return None,
        })
    }

    /// The interface's name for the audit log (`guidance` for a question).
    pub fn interface_name(&self) -> String {
        self.interface()
            .map_or_else(|| "guidance".to_string(), |i| i.to_string())
    }

    /// The grant action this operation needs.
    pub fn action(&self) -> Action {
        each_op!(self, op => op.action())
    }

    /// Whether the operation changes anything in a service.
    pub fn is_write(&self) -> bool {
        self.action().is_write()
    }

    /// The contract method, for the audit log.
    pub fn method(&self) -> &'static str {
        each_op!(self, op => op.method())
    }

    /// A short, readable description of the arguments for the audit log.
    /// Long texts are cut; file contents are reduced to their size.
    pub fn summary(&self) -> String {
        each_op!(self, op => op.summary())
    }

    /// What the approver reads before deciding: the whole action, in `scope`.
    pub fn preview(&self, scope: &str) -> String {
        each_op!(self, op => op.preview(scope))
    }

    /// Bytes of guest-supplied data in the arguments (for the size cap).
    pub fn argument_bytes(&self) -> usize {
        each_op!(self, op => op.argument_bytes())
    }

    /// The fields an approver may edit before approving.
    pub fn editable_fields(&self) -> &'static [&'static str] {
        each_op!(self, op => op.editable_fields())
    }

    /// The same operation with one field changed by an approver (lists,
    /// like `to` and `attendees`, are comma-separated).
    pub fn edited(&self, field: &str, value: &str) -> Result<Operation, EditError> {
        let edited = match self {
            Operation::Mail(op) => op.edited(field, value)?.map(Operation::Mail),
            Operation::Chat(op) => op.edited(field, value)?.map(Operation::Chat),
            Operation::Crm(op) => op.edited(field, value)?.map(Operation::Crm),
            Operation::Calendar(op) => op.edited(field, value)?.map(Operation::Calendar),
            Operation::Ledger(op) => op.edited(field, value)?.map(Operation::Ledger),
            Operation::Files(op) => op.edited(field, value)?.map(Operation::Files),
            Operation::Elevation(op) => op.edited(field, value)?.map(Operation::Elevation),
            Operation::Guidance(_) => None,
        };
        edited.ok_or_else(|| {
            let editable = self.editable_fields();
            if editable.is_empty() {
                EditError::NotEditable(self.method())
            } else {
                EditError::NoSuchField {
                    method: self.method(),
                    field: field.to_string(),
                    editable: editable.join(", "),
                }
            }
        })
    }

    /// The money the operation moves, in cents, if it has an amount (what
    /// `over_amount` policies and amount budgets look at).
    pub fn amount_cents(&self) -> Option<i64> {
        match self {
            Operation::Ledger(op) => op.amount_cents(),
            _ => None,
        }
    }

    /// Reject arguments whose arithmetic overflows (money amounts).
    pub fn check_amounts(&self) -> Result<(), String> {
        match self {
            Operation::Ledger(op) => op.check_amounts(),
            _ => Ok(()),
        }
    }

    /// The people outside the host the operation reaches (what
    /// `outside_domain` policies and mail grants' domains look at).
    pub fn recipients(&self) -> &[String] {
        match self {
            Operation::Mail(op) => op.recipients(),
            Operation::Calendar(op) => op.recipients(),
            _ => &[],
        }
    }

    /// The same operation with its recipients (mail `to`, invitation
    /// attendees) parsed as real addresses, one plain address each; or why
    /// one of them is not an address.
    pub fn with_canonical_recipients(self) -> Result<Operation, crate::addresses::AddressError> {
        Ok(match self {
            Operation::Mail(op) => Operation::Mail(op.with_canonical_recipients()?),
            Operation::Calendar(op) => Operation::Calendar(op.with_canonical_recipients()?),
            other => other,
        })
    }

    /// Run against the providers, in the permit's scope (called by
    /// [`Providers::execute`] only).
    pub(crate) fn run(
        &self,
        providers: &Providers,
        permit: &Permit,
        actor: &str,
        key: Option<&str>,
    ) -> Result<Response, ProviderError> {
        let scope = permit.scope_value();
        match self {
            Operation::Mail(op) => op.run(&*providers.mail(permit)?, scope, key),
            Operation::Chat(op) => op.run(&*providers.chat(permit)?, scope, actor, key),
            Operation::Crm(op) => op.run(&*providers.crm(permit)?, scope, key),
            Operation::Calendar(op) => op.run(&*providers.calendar(permit)?, scope, key),
            Operation::Ledger(op) => op.run(&*providers.ledger(permit)?, scope, key),
            Operation::Files(op) => op.run(providers.files(permit), scope, permit.folder_quota()),
            Operation::Elevation(_) | Operation::Guidance(_) => Err(ProviderError::Invalid(
                "widenings and questions are for the host and humans, not a service".into(),
            )),
        }
    }
}

/// How to undo a write, if it can be undone. Each inverse carries `after`,
/// the fingerprint of the object just after the write: undo refuses when
/// the object no longer matches it (someone changed it since), so an undo
/// never clobbers a later edit. The JSON form is `{"undo": "…", …}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Inverse {
    /// `chat`
    Chat(chat::ChatInverse),
    /// `crm`
    Crm(crm::CrmInverse),
    /// `calendar`
    Calendar(calendar::CalendarInverse),
    /// `ledger`
    Ledger(ledger::LedgerInverse),
}

macro_rules! each_inverse {
    ($self:expr, $inv:ident => $body:expr) => {
        match $self {
            Inverse::Chat($inv) => $body,
            Inverse::Crm($inv) => $body,
            Inverse::Calendar($inv) => $body,
            Inverse::Ledger($inv) => $body,
        }
    };
}

impl Inverse {
    /// The interface the inverse runs on.
    pub fn interface(&self) -> Interface {
        match self {
            Inverse::Chat(_) => Interface::Chat,
            Inverse::Crm(_) => Interface::Crm,
            Inverse::Calendar(_) => Interface::Calendar,
            Inverse::Ledger(_) => Interface::Ledger,
        }
    }

    /// The grant action the inverse needs: the same one the write needed.
    pub fn action(&self) -> Action {
        each_inverse!(self, inv => inv.action())
    }

    /// The method name for the audit log.
    pub fn method(&self) -> &'static str {
        each_inverse!(self, inv => inv.method())
    }

    /// A readable summary of what undoing does.
    pub fn summary(&self) -> String {
        each_inverse!(self, inv => inv.summary())
    }

    /// Run against the providers, in the permit's scope (called by
    /// [`Providers::undo`] only).
    pub(crate) fn run(&self, providers: &Providers, permit: &Permit) -> Result<(), ProviderError> {
        let scope = permit.scope_value();
        match self {
            Inverse::Chat(inv) => inv.run(&*providers.chat(permit)?, scope),
            Inverse::Crm(inv) => inv.run(&*providers.crm(permit)?, scope),
            Inverse::Calendar(inv) => inv.run(&*providers.calendar(permit)?, scope),
            Inverse::Ledger(inv) => inv.run(&*providers.ledger(permit)?, scope),
        }
    }
}

/// Guest text for one line of the audit log: control characters blanked,
/// cut to 80 characters, quoted.
pub(crate) fn quote(text: &str) -> String {
    const MAX: usize = 80;
    let clean: String = text
        .chars()
        .map(|c| if crate::human::is_unsafe(c) { ' ' } else { c })
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

/// The gutter in front of every line of a guest's text block (a mail body,
/// a post) on the approver's screen: no line of it can pass for the host's.
pub(crate) const GUTTER: &str = "    | ";

/// A comma-separated list an approver typed (`a@x, b@y`), trimmed.
pub(crate) fn edited_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::bindings::ledger::{ExpenseLine, ExpenseReport};

    fn round_trip(op: &Operation) -> Result<Operation, serde_json::Error> {
        serde_json::from_slice(&serde_json::to_vec(op)?)
    }

    #[test]
    fn every_integrations_operations_keep_their_tag_and_round_trip() -> anyhow::Result<()> {
        let ops = [
            (
                Operation::Chat(chat::ChatOp::Post { text: "hi".into() }),
                "chat-post",
            ),
            (
                Operation::Files(files::FilesOp::Write {
                    path: "a.txt".into(),
                    contents: b"x".to_vec(),
                }),
                "files-write",
            ),
            (
                Operation::Crm(crm::CrmOp::ListDeals { contact_id: None }),
                "crm-list-deals",
            ),
            (
                Operation::Guidance(guidance::GuidanceOp::Ask {
                    question: "q".into(),
                    options: vec!["a".into(), "b".into()],
                }),
                "ask",
            ),
        ];
        for (op, tag) in ops {
            let json = serde_json::to_value(&op)?;
            assert_eq!(json["op"], tag);
            assert_eq!(round_trip(&op)?, op);
        }
        let unknown = serde_json::json!({"op": "mail-delete-everything", "id": "m-1"});
        assert!(serde_json::from_value::<Operation>(unknown).is_err());
        Ok(())
    }

    #[test]
    fn a_negative_expense_line_cannot_shrink_the_amount_a_report_moves() {
        let line = |amount_cents| ExpenseLine {
            description: "x".into(),
            amount_cents,
            category: "travel".into(),
            receipt_ref: "m-1".into(),
        };
        let op = Operation::Ledger(ledger::LedgerOp::CreateExpenseReport {
            report: ExpenseReport {
                title: "t".into(),
                currency: "GBP".into(),
                lines: vec![line(100_000), line(-99_000), line(i64::MIN)],
            },
        });
        // An amount that overflows is rejected, and counts as the largest
        // there is for any gate that looks before the rejection.
        assert_eq!(op.amount_cents(), Some(i64::MAX));
        assert!(op.check_amounts().is_err());
        assert!(op.summary().contains("total"));
        let small = Operation::Ledger(ledger::LedgerOp::CreateExpenseReport {
            report: ExpenseReport {
                title: "t".into(),
                currency: "GBP".into(),
                lines: vec![line(100_000), line(-99_000)],
            },
        });
        // Every line counts by its size: 1000.00 + 990.00 moved, not 10.00.
        assert_eq!(small.amount_cents(), Some(199_000));
        assert!(small.check_amounts().is_ok());
    }

    #[test]
    fn actions_are_named_as_in_manifests_and_only_service_actions_write() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.name()), Some(a));
        }
        for i in Integration::ALL {
            assert_eq!(Integration::parse(i.name()), Some(i));
            assert_eq!(Integration::of(i.interface()), i);
            assert!(!i.offers(Action::Elevate) && !i.offers(Action::Ask));
        }
        assert!(Action::Send.is_write() && !Action::Read.is_write() && !Action::Ask.is_write());
    }
}
