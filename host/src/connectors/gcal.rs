//! Google Calendar v3 (`events` list, insert, get, patch, delete). A
//! grant's `calendar:NAME` is the calendar's configured id, or the name
//! itself (`primary`, an address); every call names that calendar. An
//! event's id is derived from the write's idempotency key, so an insert
//! may be retried (Google refuses a second event with the same id);
//! invitations go out with `sendUpdates=all` and are never retried (a
//! retry would mail every attendee again); creations send none.

use std::sync::Arc;

use reqwest::Method;
use serde::Deserialize;

use super::{Api, Call, MAX_PAGES, check_id, configured_id, fingerprint_of};
use crate::integrations::calendar::{CalendarInverse, CalendarProvider};
use crate::providers::{Done, ProviderError};
use crate::runtime::bindings::calendar::{Event, NewEvent};

/// Google Calendar, through one connection.
pub struct GoogleCalendar {
    api: Arc<Api>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Events {
    #[serde(default)]
    items: Vec<GEvent>,
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct GEvent {
    id: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    summary: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    start: When,
    #[serde(default)]
    end: When,
    #[serde(default)]
    attendees: Vec<Attendee>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct When {
    date_time: Option<String>,
    date: Option<String>,
}

#[derive(Deserialize)]
struct Attendee {
    email: String,
}

fn event(e: GEvent) -> Event {
    let when = |w: When| w.date_time.or(w.date).unwrap_or_default();
    Event {
        id: e.id,
        title: e.summary,
        start: when(e.start),
        end: when(e.end),
        attendees: e.attendees.into_iter().map(|a| a.email).collect(),
        description: e.description,
    }
}

/// The event id Google is given for a write with idempotency `key`:
/// base32hex (`0-9a-v`), so the same key names the same event.
pub fn event_id(connection_scope: &str, key: Option<&str>) -> String {
    use sha2::Digest as _;
    let seed = match key {
        Some(k) => format!("{connection_scope}/{k}"),
        None => uuid::Uuid::new_v4().to_string(),
    };
    format!(
        "clancy{}",
        &hex::encode(sha2::Sha256::digest(seed.as_bytes()))[..32]
    )
}

impl GoogleCalendar {
    /// Google Calendar through `api`.
    pub fn new(api: Arc<Api>) -> GoogleCalendar {
        GoogleCalendar { api }
    }

    fn calendar_id(&self, calendar: &str) -> Result<String, ProviderError> {
        let config = self.api.config()?;
        let id = configured_id(&config, calendar).unwrap_or_else(|| calendar.to_string());
        check_id("calendar", &id)?;
        Ok(id)
    }

    fn get(&self, cal: &str, id: &str) -> Result<GEvent, ProviderError> {
        check_id("event id", id)?;
        let e: GEvent = self.api.fetch(Call::get(&[
            "calendar",
            "v3",
            "calendars",
            cal,
            "events",
            id,
        ]))?;
        if e.status == "cancelled" {
            return Err(ProviderError::NotFound(format!(
                "event {} was cancelled",
                crate::integrations::quote(id)
            )));
        }
        Ok(e)
    }

    fn set_attendees(
        &self,
        cal: &str,
        id: &str,
        attendees: &[String],
    ) -> Result<Event, ProviderError> {
        let list: Vec<serde_json::Value> = attendees
            .iter()
            .map(|a| serde_json::json!({ "email": a }))
            .collect();
        let e: GEvent = self.api.fetch(
            Call::new(
                Method::PATCH,
                &["calendar", "v3", "calendars", cal, "events", id],
            )
            .query("sendUpdates", "all")
            .json(serde_json::json!({ "attendees": list })),
        )?;
        Ok(event(e))
    }
}

impl CalendarProvider for GoogleCalendar {
    fn list_events(
        &self,
        calendar: &str,
        from: &str,
        to: &str,
    ) -> Result<Vec<Event>, ProviderError> {
        let cal = self.calendar_id(calendar)?;
        for (what, t) in [("from", from), ("to", to)] {
            chrono::DateTime::parse_from_rfc3339(t).map_err(|_| {
                ProviderError::Invalid(format!(
                    "{what} {} is not an RFC 3339 time",
                    crate::integrations::quote(t)
                ))
            })?;
        }
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut call = Call::get(&["calendar", "v3", "calendars", &cal, "events"])
                .query("timeMin", from)
                .query("timeMax", to)
                .query("singleEvents", "true")
                .query("orderBy", "startTime")
                .query("maxResults", "250");
            if let Some(p) = &page {
                call = call.query("pageToken", p.clone());
            }
            let events: Events = self.api.fetch(call)?;
            out.extend(
                events
                    .items
                    .into_iter()
                    .filter(|e| e.status != "cancelled")
                    .map(event),
            );
            match events.next_page_token {
                Some(p) if !p.is_empty() => page = Some(p),
                _ => break,
            }
        }
        Ok(out)
    }

    fn create_event(
        &self,
        calendar: &str,
        new: &NewEvent,
        key: Option<&str>,
    ) -> Result<Done, ProviderError> {
        let cal = self.calendar_id(calendar)?;
        let id = event_id(&cal, key);
        let body = serde_json::json!({
            "id": id,
            "summary": new.title,
            "description": new.description,
            "start": { "dateTime": new.start },
            "end": { "dateTime": new.end },
        });
        // The id makes the insert idempotent: safe to retry, and a
        // duplicate (409) means an earlier attempt made it.
        let created = match self.api.send::<GEvent>(
            Call::new(
                Method::POST,
                &["calendar", "v3", "calendars", &cal, "events"],
            )
            .query("sendUpdates", "none")
            .json(body)
            .repeatable(),
        )? {
            Ok(e) => event(e),
            Err(r) if r.status == 409 => event(self.get(&cal, &id)?),
            Err(r) => return Err(super::refusal_error(&r)),
        };
        Ok(Done {
            id: created.id.clone(),
            inverse: Some(crate::integrations::Inverse::Calendar(
                CalendarInverse::CancelEvent {
                    after: fingerprint_of(&created),
                    id: created.id,
                },
            )),
        })
    }

    fn send_invite(
        &self,
        calendar: &str,
        event_id: &str,
        attendees: &[String],
        key: Option<&str>,
    ) -> Result<Done, ProviderError> {
        if let Some(done) = self.api.replay(key)? {
            return Ok(done);
        }
        let cal = self.calendar_id(calendar)?;
        let before = event(self.get(&cal, event_id)?);
        let added: Vec<String> = attendees
            .iter()
            .filter(|a| !before.attendees.iter().any(|b| b.eq_ignore_ascii_case(a)))
            .cloned()
            .collect();
        let mut all = before.attendees.clone();
        all.extend(added.iter().cloned());
        let after = self.set_attendees(&cal, event_id, &all)?;
        let done = Done {
            id: event_id.to_string(),
            inverse: Some(crate::integrations::Inverse::Calendar(
                CalendarInverse::Uninvite {
                    event_id: event_id.to_string(),
                    attendees: added,
                    after: fingerprint_of(&after),
                },
            )),
        };
        self.api.remember(key, done)
    }

    fn cancel_event(&self, calendar: &str, id: &str, after: &str) -> Result<(), ProviderError> {
        let cal = self.calendar_id(calendar)?;
        let now = event(self.get(&cal, id)?);
        if fingerprint_of(&now) != after {
            return Err(ProviderError::Conflict(format!(
                "event {} changed since it was created",
                crate::integrations::quote(id)
            )));
        }
        // Deleting twice deletes once (410 the second time): safe to retry.
        match self.api.send::<serde_json::Value>(
            Call::new(
                Method::DELETE,
                &["calendar", "v3", "calendars", &cal, "events", id],
            )
            .query("sendUpdates", "all")
            .repeatable(),
        )? {
            Ok(_) => Ok(()),
            Err(r) if r.status == 410 => Ok(()),
            Err(r) => Err(super::refusal_error(&r)),
        }
    }

    fn uninvite(
        &self,
        calendar: &str,
        event_id: &str,
        attendees: &[String],
        after: &str,
    ) -> Result<(), ProviderError> {
        let cal = self.calendar_id(calendar)?;
        let now = event(self.get(&cal, event_id)?);
        if fingerprint_of(&now) != after {
            return Err(ProviderError::Conflict(format!(
                "event {} changed since the invitations",
                crate::integrations::quote(event_id)
            )));
        }
        let kept: Vec<String> = now
            .attendees
            .iter()
            .filter(|a| !attendees.iter().any(|b| b.eq_ignore_ascii_case(a)))
            .cloned()
            .collect();
        self.set_attendees(&cal, event_id, &kept).map(|_| ())
    }
}
