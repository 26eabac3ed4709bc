//! Calendar (Google Calendar and the sandbox), the `calendar` interface:
//! one handle per granted calendar. A created event can be cancelled, and
//! invitations withdrawn, while the event is still as the write left it.

use serde::{Deserialize, Serialize};
use wasmtime::component::Resource;

use super::{Action, EditError, GUTTER, Interface, Spec, edited_list, quote};
use crate::human;
use crate::providers::{Done, ProviderError, Response};
use crate::runtime::TaskState;
use crate::runtime::bindings::calendar::{self as wit, Event, NewEvent};
use crate::runtime::guest_calls::CallResult;

crate::grant_handle!(
    /// A `calendar.calendar` handle: one granted scope.
    CalendarHandle
);

/// The facts of the calendar integration.
pub const SPEC: Spec = Spec {
    name: "google-calendar",
    interface: Interface::Calendar,
    scope_kind: "calendar",
    actions: &[Action::Read, Action::CreateEvents, Action::SendInvites],
};

/// A call on a calendar (the WIT method's parameters, minus the reason).
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op")]
pub enum CalendarOp {
    /// `calendar.list-events`
    #[serde(rename = "calendar-list-events")]
    ListEvents { from: String, to: String },
    /// `calendar.create-event`
    #[serde(rename = "calendar-create-event")]
    CreateEvent { event: NewEvent },
    /// `calendar.send-invite`
    #[serde(rename = "calendar-send-invite")]
    SendInvite {
        event_id: String,
        attendees: Vec<String>,
    },
}

impl CalendarOp {
    /// The grant action it needs.
    pub fn action(&self) -> Action {
        match self {
            CalendarOp::ListEvents { .. } => Action::Read,
            CalendarOp::CreateEvent { .. } => Action::CreateEvents,
            CalendarOp::SendInvite { .. } => Action::SendInvites,
        }
    }

    /// The contract method.
    pub fn method(&self) -> &'static str {
        match self {
            CalendarOp::ListEvents { .. } => "list-events",
            CalendarOp::CreateEvent { .. } => "create-event",
            CalendarOp::SendInvite { .. } => "send-invite",
        }
    }

    /// The audit log's summary of the arguments.
    pub fn summary(&self) -> String {
        match self {
            CalendarOp::ListEvents { from, to } => {
                format!("from {} to {}", quote(from), quote(to))
            }
            CalendarOp::CreateEvent { event } => format!(
                "title {}, {} - {}",
                quote(&event.title),
                quote(&event.start),
                quote(&event.end)
            ),
            CalendarOp::SendInvite {
                event_id,
                attendees,
            } => format!(
                "event {}, attendees {}",
                quote(event_id),
                quote(&attendees.join(", "))
            ),
        }
    }

    /// What the approver reads.
    pub fn preview(&self, scope: &str) -> String {
        match self {
            CalendarOp::CreateEvent { event } => format!(
                "create event \"{}\" on {scope}, {} - {}\n{}",
                human::line(&event.title),
                human::line(&event.start),
                human::line(&event.end),
                human::block(&event.description, GUTTER)
            ),
            CalendarOp::SendInvite {
                event_id,
                attendees,
            } => format!(
                "invite {} to event {}",
                human::line(&attendees.join(", ")),
                human::line(event_id)
            ),
            other => format!("{} {}", other.method(), other.summary()),
        }
    }

    /// Guest-supplied bytes in the arguments.
    pub fn argument_bytes(&self) -> usize {
        match self {
            CalendarOp::ListEvents { from, to } => from.len() + to.len(),
            CalendarOp::CreateEvent { event } => {
                event.title.len() + event.start.len() + event.end.len() + event.description.len()
            }
            CalendarOp::SendInvite {
                event_id,
                attendees,
            } => event_id.len() + attendees.iter().map(String::len).sum::<usize>(),
        }
    }

    /// Who an invitation reaches.
    pub fn recipients(&self) -> &[String] {
        match self {
            CalendarOp::SendInvite { attendees, .. } => attendees,
            _ => &[],
        }
    }

    /// The same operation with its attendees parsed as plain addresses.
    pub fn with_canonical_recipients(self) -> Result<CalendarOp, crate::addresses::AddressError> {
        match self {
            CalendarOp::SendInvite {
                event_id,
                attendees,
            } => Ok(CalendarOp::SendInvite {
                event_id,
                attendees: crate::addresses::parse_recipients(&attendees)?,
            }),
            other => Ok(other),
        }
    }

    /// The fields an approver may edit.
    pub fn editable_fields(&self) -> &'static [&'static str] {
        match self {
            CalendarOp::CreateEvent { .. } => &["title", "start", "end", "description"],
            CalendarOp::SendInvite { .. } => &["attendees"],
            _ => &[],
        }
    }

    /// The operation with `field` set to `value`; `None` if no such field.
    pub fn edited(&self, field: &str, value: &str) -> Result<Option<CalendarOp>, EditError> {
        let mut op = self.clone();
        match (&mut op, field) {
            (CalendarOp::CreateEvent { event }, "title") => event.title = value.into(),
            (CalendarOp::CreateEvent { event }, "start") => event.start = value.into(),
            (CalendarOp::CreateEvent { event }, "end") => event.end = value.into(),
            (CalendarOp::CreateEvent { event }, "description") => event.description = value.into(),
            (CalendarOp::SendInvite { attendees, .. }, "attendees") => {
                *attendees = edited_list(value)
            }
            _ => return Ok(None),
        }
        Ok(Some(op))
    }

    /// Run it against the calendar provider in `calendar`.
    pub fn run(
        &self,
        provider: &dyn CalendarProvider,
        calendar: &str,
        key: Option<&str>,
    ) -> Result<Response, ProviderError> {
        Ok(match self {
            CalendarOp::ListEvents { from, to } => {
                Response::Events(provider.list_events(calendar, from, to)?)
            }
            CalendarOp::CreateEvent { event } => {
                Response::Done(provider.create_event(calendar, event, key)?)
            }
            CalendarOp::SendInvite {
                event_id,
                attendees,
            } => Response::Done(provider.send_invite(calendar, event_id, attendees, key)?),
        })
    }
}

/// How a calendar write is undone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "undo", rename_all = "kebab-case")]
pub enum CalendarInverse {
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
}

impl CalendarInverse {
    /// The grant action undoing needs (the write's).
    pub fn action(&self) -> Action {
        match self {
            CalendarInverse::CancelEvent { .. } => Action::CreateEvents,
            CalendarInverse::Uninvite { .. } => Action::SendInvites,
        }
    }

    /// The method, for the audit log.
    pub fn method(&self) -> &'static str {
        match self {
            CalendarInverse::CancelEvent { .. } => "cancel-event",
            CalendarInverse::Uninvite { .. } => "uninvite",
        }
    }

    /// What undoing does.
    pub fn summary(&self) -> String {
        match self {
            CalendarInverse::CancelEvent { id, .. } => format!("cancel event {}", quote(id)),
            CalendarInverse::Uninvite {
                event_id,
                attendees,
                ..
            } => format!(
                "withdraw the invitations of {} to event {}",
                quote(&attendees.join(", ")),
                quote(event_id)
            ),
        }
    }

    /// Run it against the calendar provider in `calendar`.
    pub fn run(
        &self,
        provider: &dyn CalendarProvider,
        calendar: &str,
    ) -> Result<(), ProviderError> {
        match self {
            CalendarInverse::CancelEvent { id, after } => {
                provider.cancel_event(calendar, id, after)
            }
            CalendarInverse::Uninvite {
                event_id,
                attendees,
                after,
            } => provider.uninvite(calendar, event_id, attendees, after),
        }
    }
}

/// Calendar (Google Calendar and the sandbox). `calendar` is the scope's value.
pub trait CalendarProvider: Send + Sync {
    /// Events overlapping `[from, to)`.
    fn list_events(
        &self,
        calendar: &str,
        from: &str,
        to: &str,
    ) -> Result<Vec<Event>, ProviderError>;
    /// Create an event.
    fn create_event(
        &self,
        calendar: &str,
        event: &NewEvent,
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

impl wit::Host for TaskState {
    fn calendars(&mut self) -> wasmtime::Result<Vec<Resource<CalendarHandle>>> {
        self.handles(Interface::Calendar)
    }
}

impl wit::HostCalendar for TaskState {
    fn name(&mut self, h: Resource<CalendarHandle>) -> wasmtime::Result<String> {
        self.scope_name(&h)
    }

    fn list_events(
        &mut self,
        h: Resource<CalendarHandle>,
        from: String,
        to: String,
    ) -> CallResult<Vec<Event>> {
        let op = super::Operation::Calendar(CalendarOp::ListEvents { from, to });
        expect_response!(self.mediate(&h, op, ""), Events)
    }

    fn create_event(
        &mut self,
        h: Resource<CalendarHandle>,
        event: NewEvent,
        reason: String,
    ) -> CallResult<wit::Outcome> {
        let op = super::Operation::Calendar(CalendarOp::CreateEvent { event });
        written!(self.mediate(&h, op, &reason))
    }

    fn send_invite(
        &mut self,
        h: Resource<CalendarHandle>,
        event_id: String,
        attendees: Vec<String>,
        reason: String,
    ) -> CallResult<wit::Outcome> {
        let op = super::Operation::Calendar(CalendarOp::SendInvite {
            event_id,
            attendees,
        });
        written!(self.mediate(&h, op, &reason))
    }

    fn drop(&mut self, h: Resource<CalendarHandle>) -> wasmtime::Result<()> {
        self.drop_handle(h)
    }
}
