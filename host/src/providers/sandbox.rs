//! The sandbox workspace: a local, sled-backed stand-in for every service.
//!
//! It is the embedded default, used for demos, dry runs and tests. It holds
//! mail with labels, chat channels, CRM contacts and deals, calendars,
//! invoices and expense reports for one organisation, seeded with realistic
//! data on first use. It implements the same provider traits as the real
//! services and must never reach the network.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::{
    CalendarProvider, ChatProvider, CrmProvider, Done, Inverse, LedgerProvider, MailProvider,
    ProviderError, fingerprint,
};
use crate::integrations::calendar::CalendarInverse;
use crate::integrations::chat::ChatInverse;
use crate::integrations::crm::CrmInverse;
use crate::integrations::ledger::LedgerInverse;
use crate::runtime::bindings::{calendar, chat, crm, ledger, mail};
use crate::store::{OrgStore, StoreError, encode};

const AREA: &str = "sandbox";
/// Largest `limit` a list call honours.
const MAX_LIST: u32 = 200;

/// A stored expense report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredExpenseReport {
    /// Report id.
    pub id: String,
    /// The company.
    pub company: String,
    /// `submitted` or `void`.
    pub status: String,
    /// The report.
    pub report: ledger::ExpenseReport,
    /// When it was created.
    pub created_at: String,
}

/// Everything in the sandbox workspace at one moment (`clancy sandbox
/// show`, `GET /api/v1/sandbox`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Snapshot {
    /// Every mail, with its labels.
    pub mail: Vec<mail::Message>,
    /// Each channel's messages.
    pub chat: Vec<(String, Vec<chat::ChatMessage>)>,
    /// CRM contacts.
    pub contacts: Vec<crm::Contact>,
    /// CRM deals.
    pub deals: Vec<crm::Deal>,
    /// Calendar events.
    pub events: Vec<calendar::Event>,
    /// Ledger invoices.
    pub invoices: Vec<ledger::Invoice>,
    /// Expense reports drafted by employees.
    pub expense_reports: Vec<StoredExpenseReport>,
}

/// The sandbox workspace of one organisation.
#[derive(Clone)]
pub struct Sandbox {
    store: OrgStore,
}

fn failed(e: StoreError) -> ProviderError {
    ProviderError::Failed(format!("sandbox workspace: {e}"))
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn new_id(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

fn contains(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

fn check_id(id: &str) -> Result<(), ProviderError> {
    if id.is_empty() || id.len() > 64 || id.contains('/') {
        return Err(ProviderError::Invalid(format!("{id:?} is not a valid id")));
    }
    Ok(())
}

fn key_of(parts: &[&str]) -> Vec<u8> {
    parts.join("/").into_bytes()
}

impl Sandbox {
    /// The sandbox of `store`'s organisation.
    pub fn new(store: OrgStore) -> Sandbox {
        Sandbox { store }
    }

    /// Whether the workspace has been seeded.
    pub fn is_seeded(&self) -> Result<bool, StoreError> {
        Ok(self.store.get(AREA, b"seeded")?.is_some())
    }

    /// Seed it if it is empty (first run).
    pub fn ensure_seeded(&self) -> Result<(), StoreError> {
        if !self.is_seeded()? {
            self.seed()?;
        }
        Ok(())
    }

    /// Replace the whole workspace with the seed data, in one atomic write.
    pub fn seed(&self) -> Result<(), StoreError> {
        let mut writes: Vec<crate::store::Write> = self
            .store
            .scan(AREA, b"")?
            .into_iter()
            .map(|(k, _)| (k, None))
            .collect();
        let base = Utc::now();
        for m in seed::mail(base) {
            writes.push((key_of(&["mail", &m.id]), Some(encode(&m)?)));
        }
        for (channel, messages) in seed::chat(base) {
            writes.push((key_of(&["channel", channel]), Some(b"{}".to_vec())));
            for m in messages {
                writes.push((
                    key_of(&["chat", channel, &m.posted_at, &m.id]),
                    Some(encode(&m)?),
                ));
            }
        }
        for c in seed::contacts() {
            writes.push((key_of(&["contact", seed::PORTAL, &c.id]), Some(encode(&c)?)));
        }
        for d in seed::deals() {
            writes.push((key_of(&["deal", seed::PORTAL, &d.id]), Some(encode(&d)?)));
        }
        for e in seed::events(base) {
            writes.push((key_of(&["event", seed::CALENDAR, &e.id]), Some(encode(&e)?)));
        }
        for i in seed::invoices(base) {
            writes.push((
                key_of(&["invoice", seed::COMPANY, &i.id]),
                Some(encode(&i)?),
            ));
        }
        writes.push((b"seeded".to_vec(), Some(now().into_bytes())));
        self.store.write(AREA, writes)
    }

    /// Mail arriving from outside: filed under `label` (and INBOX), as a
    /// real mailbox would receive it. Returns its id. (`clancy sandbox
    /// receive`, and tests of what new mail sets off.)
    pub fn receive_mail(
        &self,
        from: &str,
        label: &str,
        subject: &str,
        body: &str,
    ) -> Result<String, StoreError> {
        let mut labels = vec!["INBOX".to_string()];
        if label != "INBOX" {
            labels.push(label.to_string());
        }
        let message = mail::Message {
            id: new_id("m"),
            from: from.into(),
            to: vec![seed::OWN_ADDRESS.into()],
            subject: subject.into(),
            body: body.into(),
            labels,
            received_at: now(),
        };
        self.store
            .put_json(AREA, &key_of(&["mail", &message.id]), &message)?;
        Ok(message.id)
    }

    /// Everything in the workspace.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot {
            mail: self.all_mail()?,
            chat: self.all_chat()?,
            contacts: self.all_contacts()?,
            deals: self.all_deals()?,
            events: self.all_events()?,
            invoices: self.all_invoices()?,
            expense_reports: self.all_expense_reports()?,
        })
    }

    /// All mail (every label), newest first.
    pub fn all_mail(&self) -> Result<Vec<mail::Message>, StoreError> {
        let mut all: Vec<mail::Message> = self.store.scan_json(AREA, b"mail/")?;
        all.sort_by(|a, b| b.received_at.cmp(&a.received_at));
        Ok(all)
    }

    /// Every channel with its messages.
    pub fn all_chat(&self) -> Result<Vec<(String, Vec<chat::ChatMessage>)>, StoreError> {
        let mut out = Vec::new();
        for (k, _) in self.store.scan(AREA, b"channel/")? {
            let name = String::from_utf8_lossy(&k["channel/".len()..]).to_string();
            let messages = self.store.scan_json(AREA, &key_of(&["chat", &name, ""]))?;
            out.push((name, messages));
        }
        Ok(out)
    }

    /// Every contact of every portal.
    pub fn all_contacts(&self) -> Result<Vec<crm::Contact>, StoreError> {
        self.store.scan_json(AREA, b"contact/")
    }

    /// Every deal of every portal.
    pub fn all_deals(&self) -> Result<Vec<crm::Deal>, StoreError> {
        self.store.scan_json(AREA, b"deal/")
    }

    /// Every event of every calendar.
    pub fn all_events(&self) -> Result<Vec<calendar::Event>, StoreError> {
        self.store.scan_json(AREA, b"event/")
    }

    /// Every invoice of every company.
    pub fn all_invoices(&self) -> Result<Vec<ledger::Invoice>, StoreError> {
        self.store.scan_json(AREA, b"invoice/")
    }

    /// Every expense report of every company.
    pub fn all_expense_reports(&self) -> Result<Vec<StoredExpenseReport>, StoreError> {
        self.store.scan_json(AREA, b"expense/")
    }

    /// The result of an earlier write with this idempotency key, if any.
    fn replay(&self, key: Option<&str>) -> Result<Option<Done>, ProviderError> {
        match key {
            Some(k) => self.store.get_json(AREA, &idem_key(k)).map_err(failed),
            None => Ok(None),
        }
    }

    /// Store a written object and, with a key, its result, in one atomic write.
    fn commit<T: Serialize>(
        &self,
        k: Vec<u8>,
        value: &T,
        key: Option<&str>,
        done: Done,
    ) -> Result<Done, ProviderError> {
        let mut writes = vec![(k, Some(encode(value).map_err(failed)?))];
        if let Some(key) = key {
            writes.push((idem_key(key), Some(encode(&done).map_err(failed)?)));
        }
        // The executor made the intent durable before calling; the write
        // and its key ride on the next group commit together (a crash
        // loses both or neither, so a resumed approval runs it once).
        self.store
            .write_when(AREA, writes, crate::store::Durability::Soon)
            .map_err(failed)?;
        Ok(done)
    }
}

impl Sandbox {
    /// Undo a write to the object at `k`: only if it still has fingerprint
    /// `after`, replace it with what `change` makes of it (`None` deletes it),
    /// atomically against concurrent changes.
    fn undo_object<T: Serialize + serde::de::DeserializeOwned>(
        &self,
        k: Vec<u8>,
        what: &str,
        after: &str,
        change: impl FnOnce(T) -> Option<T>,
    ) -> Result<(), ProviderError> {
        let raw = self
            .store
            .get(AREA, &k)
            .map_err(failed)?
            .ok_or_else(|| ProviderError::NotFound(format!("{what} no longer exists")))?;
        let current: T = serde_json::from_slice(&raw)
            .map_err(|e| ProviderError::Failed(format!("sandbox workspace: {e}")))?;
        if fingerprint(&current) != after {
            return Err(ProviderError::Conflict(format!(
                "{what} was changed after this action; undoing would overwrite that change"
            )));
        }
        let next = change(current)
            .map(|v| encode(&v))
            .transpose()
            .map_err(failed)?;
        let applied = self
            .store
            .write_if(AREA, &k, Some(&raw), vec![(k.clone(), next)])
            .map_err(failed)?;
        if applied {
            Ok(())
        } else {
            Err(ProviderError::Conflict(format!(
                "{what} changed while being undone"
            )))
        }
    }
}

fn idem_key(key: &str) -> Vec<u8> {
    format!("idem/{key}").into_bytes()
}

impl MailProvider for Sandbox {
    fn list(
        &self,
        label: &str,
        query: &str,
        limit: u32,
    ) -> Result<Vec<mail::Message>, ProviderError> {
        let all = self.all_mail().map_err(failed)?;
        Ok(all
            .into_iter()
            .filter(|m| m.labels.iter().any(|l| l == label))
            .filter(|m| {
                query.is_empty()
                    || contains(&m.from, query)
                    || contains(&m.subject, query)
                    || contains(&m.body, query)
            })
            .take(limit.min(MAX_LIST) as usize)
            .collect())
    }

    fn read(&self, label: &str, id: &str) -> Result<mail::Message, ProviderError> {
        check_id(id)?;
        match self
            .store
            .get_json::<mail::Message>(AREA, &key_of(&["mail", id]))
            .map_err(failed)?
        {
            // A message outside the granted label is as invisible as a missing one.
            Some(m) if m.labels.iter().any(|l| l == label) => Ok(m),
            _ => Err(ProviderError::NotFound(format!(
                "no message {id:?} under label {label:?}"
            ))),
        }
    }

    fn sender(&self) -> String {
        seed::OWN_ADDRESS.to_string()
    }

    fn send(
        &self,
        label: &str,
        draft: &mail::Draft,
        key: Option<&str>,
    ) -> Result<Done, ProviderError> {
        if let Some(done) = self.replay(key)? {
            return Ok(done);
        }
        if draft.to.is_empty() || draft.to.iter().any(|a| !a.contains('@')) {
            return Err(ProviderError::Invalid(
                "every recipient must be an email address".into(),
            ));
        }
        let message = mail::Message {
            id: new_id("m"),
            from: seed::OWN_ADDRESS.into(),
            to: draft.to.clone(),
            subject: draft.subject.clone(),
            body: draft.body.clone(),
            labels: if label == "SENT" {
                vec!["SENT".into()]
            } else {
                vec!["SENT".into(), label.to_string()]
            },
            received_at: now(),
        };
        let done = Done {
            id: message.id.clone(),
            inverse: None,
        };
        self.commit(key_of(&["mail", &message.id]), &message, key, done)
    }
}

impl ChatProvider for Sandbox {
    fn read_recent(
        &self,
        channel: &str,
        limit: u32,
    ) -> Result<Vec<chat::ChatMessage>, ProviderError> {
        self.require_channel(channel)?;
        let all: Vec<chat::ChatMessage> = self
            .store
            .scan_json(AREA, &key_of(&["chat", channel, ""]))
            .map_err(failed)?;
        let n = limit.min(MAX_LIST) as usize;
        Ok(all[all.len().saturating_sub(n)..].to_vec())
    }

    fn delete_message(&self, channel: &str, id: &str, after: &str) -> Result<(), ProviderError> {
        self.delete_chat_message(channel, id, after)
    }

    fn post(
        &self,
        channel: &str,
        author: &str,
        text: &str,
        key: Option<&str>,
    ) -> Result<Done, ProviderError> {
        if let Some(done) = self.replay(key)? {
            return Ok(done);
        }
        self.require_channel(channel)?;
        if text.trim().is_empty() {
            return Err(ProviderError::Invalid("the message is empty".into()));
        }
        let message = chat::ChatMessage {
            id: new_id("c"),
            author: author.into(),
            text: text.into(),
            posted_at: now(),
        };
        let done = Done {
            id: message.id.clone(),
            inverse: Some(Inverse::Chat(ChatInverse::DeleteChatMessage {
                id: message.id.clone(),
                after: fingerprint(&message),
            })),
        };
        self.commit(
            key_of(&["chat", channel, &message.posted_at, &message.id]),
            &message,
            key,
            done,
        )
    }
}

impl Sandbox {
    fn delete_chat_message(
        &self,
        channel: &str,
        id: &str,
        after: &str,
    ) -> Result<(), ProviderError> {
        check_id(id)?;
        let found = self
            .store
            .scan(AREA, &key_of(&["chat", channel, ""]))
            .map_err(failed)?
            .into_iter()
            .find(|(k, _)| k.ends_with(format!("/{id}").as_bytes()));
        let Some((k, _)) = found else {
            return Err(ProviderError::NotFound(format!(
                "message {id:?} no longer exists in {channel}"
            )));
        };
        self.undo_object::<chat::ChatMessage>(k, &format!("message {id}"), after, |_| None)
    }

    fn require_channel(&self, channel: &str) -> Result<(), ProviderError> {
        match self
            .store
            .get(AREA, &key_of(&["channel", channel]))
            .map_err(failed)?
        {
            Some(_) => Ok(()),
            None => Err(ProviderError::NotFound(format!(
                "channel {channel:?} does not exist"
            ))),
        }
    }
}

impl CrmProvider for Sandbox {
    fn find_contacts(&self, portal: &str, query: &str) -> Result<Vec<crm::Contact>, ProviderError> {
        let all: Vec<crm::Contact> = self
            .store
            .scan_json(AREA, &key_of(&["contact", portal, ""]))
            .map_err(failed)?;
        Ok(all
            .into_iter()
            .filter(|c| {
                query.is_empty()
                    || contains(&c.name, query)
                    || contains(&c.email, query)
                    || contains(&c.company, query)
            })
            .collect())
    }

    fn get_contact(&self, portal: &str, id: &str) -> Result<crm::Contact, ProviderError> {
        check_id(id)?;
        self.store
            .get_json(AREA, &key_of(&["contact", portal, id]))
            .map_err(failed)?
            .ok_or_else(|| ProviderError::NotFound(format!("no contact {id:?}")))
    }

    fn list_deals(
        &self,
        portal: &str,
        contact_id: Option<&str>,
    ) -> Result<Vec<crm::Deal>, ProviderError> {
        let all: Vec<crm::Deal> = self
            .store
            .scan_json(AREA, &key_of(&["deal", portal, ""]))
            .map_err(failed)?;
        Ok(all
            .into_iter()
            .filter(|d| contact_id.is_none_or(|c| d.contact_id == c))
            .collect())
    }

    fn update_deal_stage(
        &self,
        portal: &str,
        deal_id: &str,
        stage: &str,
        key: Option<&str>,
    ) -> Result<Done, ProviderError> {
        if let Some(done) = self.replay(key)? {
            return Ok(done);
        }
        check_id(deal_id)?;
        if !seed::DEAL_STAGES.contains(&stage) {
            return Err(ProviderError::Invalid(format!(
                "unknown stage {stage:?} (expected one of: {})",
                seed::DEAL_STAGES.join(", ")
            )));
        }
        let k = key_of(&["deal", portal, deal_id]);
        let mut deal: crm::Deal = self
            .store
            .get_json(AREA, &k)
            .map_err(failed)?
            .ok_or_else(|| ProviderError::NotFound(format!("no deal {deal_id:?}")))?;
        let previous = std::mem::replace(&mut deal.stage, stage.to_string());
        let done = Done {
            id: deal.id.clone(),
            inverse: Some(Inverse::Crm(CrmInverse::SetDealStage {
                deal_id: deal.id.clone(),
                stage: previous,
                after: fingerprint(&deal),
            })),
        };
        self.commit(k, &deal, key, done)
    }

    fn restore_deal_stage(
        &self,
        portal: &str,
        deal_id: &str,
        stage: &str,
        after: &str,
    ) -> Result<(), ProviderError> {
        check_id(deal_id)?;
        self.undo_object::<crm::Deal>(
            key_of(&["deal", portal, deal_id]),
            &format!("deal {deal_id}"),
            after,
            |mut deal| {
                deal.stage = stage.to_string();
                Some(deal)
            },
        )
    }
}

fn parse_time(what: &str, value: &str) -> Result<DateTime<Utc>, ProviderError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ProviderError::Invalid(format!("{what} {value:?} is not an RFC 3339 time")))
}

impl CalendarProvider for Sandbox {
    fn list_events(
        &self,
        calendar: &str,
        from: &str,
        to: &str,
    ) -> Result<Vec<calendar::Event>, ProviderError> {
        let (from, to) = (parse_time("from", from)?, parse_time("to", to)?);
        let all: Vec<calendar::Event> = self
            .store
            .scan_json(AREA, &key_of(&["event", calendar, ""]))
            .map_err(failed)?;
        let mut events: Vec<_> = all
            .into_iter()
            .filter(|e| {
                let (Ok(s), Ok(end)) = (parse_time("", &e.start), parse_time("", &e.end)) else {
                    return false;
                };
                s < to && end > from
            })
            .collect();
        events.sort_by(|a, b| a.start.cmp(&b.start));
        Ok(events)
    }

    fn create_event(
        &self,
        calendar: &str,
        event: &calendar::NewEvent,
        key: Option<&str>,
    ) -> Result<Done, ProviderError> {
        if let Some(done) = self.replay(key)? {
            return Ok(done);
        }
        let (start, end) = (
            parse_time("start", &event.start)?,
            parse_time("end", &event.end)?,
        );
        if end <= start {
            return Err(ProviderError::Invalid(
                "an event must end after it starts".into(),
            ));
        }
        if event.title.trim().is_empty() {
            return Err(ProviderError::Invalid("the event has no title".into()));
        }
        let stored = calendar::Event {
            id: new_id("ev"),
            title: event.title.clone(),
            start: event.start.clone(),
            end: event.end.clone(),
            attendees: vec![],
            description: event.description.clone(),
        };
        let done = Done {
            id: stored.id.clone(),
            inverse: Some(Inverse::Calendar(CalendarInverse::CancelEvent {
                id: stored.id.clone(),
                after: fingerprint(&stored),
            })),
        };
        self.commit(key_of(&["event", calendar, &stored.id]), &stored, key, done)
    }

    fn send_invite(
        &self,
        calendar: &str,
        event_id: &str,
        attendees: &[String],
        key: Option<&str>,
    ) -> Result<Done, ProviderError> {
        if let Some(done) = self.replay(key)? {
            return Ok(done);
        }
        check_id(event_id)?;
        if attendees.is_empty() || attendees.iter().any(|a| !a.contains('@')) {
            return Err(ProviderError::Invalid(
                "every attendee must be an email address".into(),
            ));
        }
        let k = key_of(&["event", calendar, event_id]);
        let mut event: calendar::Event = self
            .store
            .get_json(AREA, &k)
            .map_err(failed)?
            .ok_or_else(|| {
                ProviderError::NotFound(format!("no event {event_id:?} in this calendar"))
            })?;
        let added: Vec<String> = attendees
            .iter()
            .filter(|a| !event.attendees.contains(a))
            .cloned()
            .collect();
        event.attendees.extend(added.iter().cloned());
        let done = Done {
            id: event.id.clone(),
            inverse: Some(Inverse::Calendar(CalendarInverse::Uninvite {
                event_id: event.id.clone(),
                attendees: added,
                after: fingerprint(&event),
            })),
        };
        self.commit(k, &event, key, done)
    }

    fn cancel_event(&self, calendar: &str, id: &str, after: &str) -> Result<(), ProviderError> {
        check_id(id)?;
        self.undo_object::<calendar::Event>(
            key_of(&["event", calendar, id]),
            &format!("event {id}"),
            after,
            |_| None,
        )
    }

    fn uninvite(
        &self,
        calendar: &str,
        event_id: &str,
        attendees: &[String],
        after: &str,
    ) -> Result<(), ProviderError> {
        check_id(event_id)?;
        self.undo_object::<calendar::Event>(
            key_of(&["event", calendar, event_id]),
            &format!("event {event_id}"),
            after,
            |mut event| {
                event.attendees.retain(|a| !attendees.contains(a));
                Some(event)
            },
        )
    }
}

impl LedgerProvider for Sandbox {
    fn list_invoices(
        &self,
        company: &str,
        status: Option<&str>,
    ) -> Result<Vec<ledger::Invoice>, ProviderError> {
        let all: Vec<ledger::Invoice> = self
            .store
            .scan_json(AREA, &key_of(&["invoice", company, ""]))
            .map_err(failed)?;
        Ok(all
            .into_iter()
            .filter(|i| status.is_none_or(|s| i.status == s))
            .collect())
    }

    fn create_expense_report(
        &self,
        company: &str,
        report: &ledger::ExpenseReport,
        key: Option<&str>,
    ) -> Result<Done, ProviderError> {
        if let Some(done) = self.replay(key)? {
            return Ok(done);
        }
        if report.lines.is_empty() {
            return Err(ProviderError::Invalid(
                "an expense report needs at least one line".into(),
            ));
        }
        if report.lines.iter().any(|l| l.amount_cents <= 0) {
            return Err(ProviderError::Invalid(
                "every expense line must have a positive amount".into(),
            ));
        }
        if report.currency.len() != 3 {
            return Err(ProviderError::Invalid(format!(
                "{:?} is not a currency code",
                report.currency
            )));
        }
        let stored = StoredExpenseReport {
            id: new_id("er"),
            company: company.into(),
            status: "submitted".into(),
            report: report.clone(),
            created_at: now(),
        };
        let done = Done {
            id: stored.id.clone(),
            inverse: Some(Inverse::Ledger(LedgerInverse::VoidExpenseReport {
                id: stored.id.clone(),
                after: fingerprint(&stored),
            })),
        };
        self.commit(
            key_of(&["expense", company, &stored.id]),
            &stored,
            key,
            done,
        )
    }

    fn void_expense_report(
        &self,
        company: &str,
        id: &str,
        after: &str,
    ) -> Result<(), ProviderError> {
        check_id(id)?;
        self.undo_object::<StoredExpenseReport>(
            key_of(&["expense", company, id]),
            &format!("expense report {id}"),
            after,
            |mut report| {
                report.status = "void".into();
                Some(report)
            },
        )
    }
}

/// Seed data: a small company's support inbox, receipts, channels, CRM,
/// sales calendar and books.
pub mod seed {
    use super::*;

    /// The organisation's own mail address.
    pub const OWN_ADDRESS: &str = "team@northwind.example";
    /// The sandbox CRM portal.
    pub const PORTAL: &str = "main";
    /// The sandbox sales calendar.
    pub const CALENDAR: &str = "sales";
    /// The sandbox company books.
    pub const COMPANY: &str = "northwind";
    /// CRM deal stages, in order.
    pub const DEAL_STAGES: &[&str] = &[
        "lead",
        "qualified",
        "demo-scheduled",
        "proposal",
        "negotiation",
        "closed-won",
        "closed-lost",
    ];

    fn at(base: DateTime<Utc>, hours_ago: i64) -> String {
        (base - Duration::hours(hours_ago)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    fn msg(
        id: &str,
        from: &str,
        subject: &str,
        body: &str,
        labels: &[&str],
        t: String,
    ) -> mail::Message {
        mail::Message {
            id: id.into(),
            from: from.into(),
            to: vec![OWN_ADDRESS.into()],
            subject: subject.into(),
            body: body.into(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            received_at: t,
        }
    }

    /// Support mail, receipts, a sales thread and a private HR mail.
    pub fn mail(base: DateTime<Utc>) -> Vec<mail::Message> {
        vec![
            msg(
                "m-1001",
                "maria.lopez@brightpath.example",
                "Invoice INV-2041 charged twice",
                "Hi, our card was charged twice for invoice INV-2041 this month. Could you refund the duplicate? Thanks, Maria",
                &["INBOX", "support"],
                at(base, 2),
            ),
            msg(
                "m-1002",
                "kenji.sato@harbor-logistics.example",
                "Cannot log in after password reset",
                "Since yesterday's password reset none of our dispatchers can log in. This is urgent, our morning shift is blocked.",
                &["INBOX", "support"],
                at(base, 5),
            ),
            msg(
                "m-1003",
                "olivia.grant@fernleaf.example",
                "Question about the annual plan",
                "Hello, does the annual plan include the reporting add-on, or is it billed separately?",
                &["INBOX", "support"],
                at(base, 20),
            ),
            msg(
                "m-1004",
                "receipts@railfare.example",
                "Your receipt: London - Manchester return",
                "Thank you for travelling with us. Ticket: London Euston - Manchester Piccadilly return. Amount paid: GBP 86.40. Date of travel: last Tuesday.",
                &["receipts"],
                at(base, 30),
            ),
            msg(
                "m-1005",
                "billing@cloudhost.example",
                "Receipt for your November subscription",
                "Receipt #CH-88213. Service: CloudHost team plan, November. Amount: GBP 49.00. Paid by card ending 4421.",
                &["receipts"],
                at(base, 48),
            ),
            msg(
                "m-1006",
                "orders@deskpro-supplies.example",
                "Order confirmation and receipt",
                "Order DS-5521: 2x ergonomic keyboard. Total charged: GBP 119.98 including VAT.",
                &["receipts"],
                at(base, 70),
            ),
            msg(
                "m-1007",
                "dan.whitfield@acornbank.example",
                "Re: pricing for 40 seats",
                "Thanks for the call. We'd like to see a proposal for 40 seats and are keen to move forward this quarter. Could we set up a demo for the team?",
                &["INBOX", "sales"],
                at(base, 8),
            ),
            msg(
                "m-1008",
                "hr@northwind.example",
                "Confidential: salary review",
                "Salary review figures attached. Do not forward.",
                &["INBOX", "hr"],
                at(base, 12),
            ),
        ]
    }

    fn chat_msg(id: &str, author: &str, text: &str, t: String) -> chat::ChatMessage {
        chat::ChatMessage {
            id: id.into(),
            author: author.into(),
            text: text.into(),
            posted_at: t,
        }
    }

    /// Channels and their history.
    pub fn chat(base: DateTime<Utc>) -> Vec<(&'static str, Vec<chat::ChatMessage>)> {
        vec![
            (
                "#support",
                vec![chat_msg(
                    "c-2001",
                    "priya",
                    "Ticket: Fernleaf asked about SSO last week, resolved.",
                    at(base, 50),
                )],
            ),
            (
                "#accounting",
                vec![chat_msg(
                    "c-2002",
                    "tom",
                    "Reminder: November expenses are due Friday.",
                    at(base, 26),
                )],
            ),
            (
                "#sales",
                vec![chat_msg(
                    "c-2003",
                    "alex",
                    "Acorn Bank call went well, they want a demo.",
                    at(base, 7),
                )],
            ),
            (
                "#general",
                vec![chat_msg(
                    "c-2004",
                    "sam",
                    "Office closed on Monday for maintenance.",
                    at(base, 40),
                )],
            ),
        ]
    }

    fn contact(
        id: &str,
        name: &str,
        email: &str,
        company: &str,
        phone: &str,
        notes: &str,
    ) -> crm::Contact {
        crm::Contact {
            id: id.into(),
            name: name.into(),
            email: email.into(),
            company: company.into(),
            phone: phone.into(),
            notes: notes.into(),
        }
    }

    /// CRM contacts.
    pub fn contacts() -> Vec<crm::Contact> {
        vec![
            contact(
                "ct-301",
                "Maria Lopez",
                "maria.lopez@brightpath.example",
                "BrightPath Ltd",
                "+44 20 7946 0101",
                "Customer since 2023, premium plan.",
            ),
            contact(
                "ct-302",
                "Kenji Sato",
                "kenji.sato@harbor-logistics.example",
                "Harbor Logistics",
                "+44 161 496 0202",
                "Key account; 120 seats.",
            ),
            contact(
                "ct-303",
                "Olivia Grant",
                "olivia.grant@fernleaf.example",
                "Fernleaf Studio",
                "+44 117 496 0303",
                "Trial ends next month.",
            ),
            contact(
                "ct-304",
                "Dan Whitfield",
                "dan.whitfield@acornbank.example",
                "Acorn Bank",
                "+44 20 7946 0404",
                "Evaluating for 40 seats.",
            ),
        ]
    }

    /// CRM deals.
    pub fn deals() -> Vec<crm::Deal> {
        let deal = |id: &str, name: &str, contact: &str, stage: &str, cents: i64| crm::Deal {
            id: id.into(),
            name: name.into(),
            contact_id: contact.into(),
            stage: stage.into(),
            amount_cents: cents,
        };
        vec![
            deal(
                "dl-401",
                "Acorn Bank - 40 seats",
                "ct-304",
                "qualified",
                1_920_000,
            ),
            deal(
                "dl-402",
                "Fernleaf - annual upgrade",
                "ct-303",
                "proposal",
                360_000,
            ),
            deal(
                "dl-403",
                "Harbor Logistics - renewal",
                "ct-302",
                "negotiation",
                5_760_000,
            ),
        ]
    }

    /// Events on the sales calendar.
    pub fn events(base: DateTime<Utc>) -> Vec<calendar::Event> {
        let day = |d: i64, h: i64| {
            (base + Duration::days(d) + Duration::hours(h))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        };
        vec![
            calendar::Event {
                id: "ev-501".into(),
                title: "Pipeline review".into(),
                start: day(1, 0),
                end: day(1, 1),
                attendees: vec!["alex@northwind.example".into()],
                description: "Weekly pipeline review.".into(),
            },
            calendar::Event {
                id: "ev-502".into(),
                title: "Harbor Logistics renewal call".into(),
                start: day(2, 2),
                end: day(2, 3),
                attendees: vec!["kenji.sato@harbor-logistics.example".into()],
                description: "Renewal terms.".into(),
            },
        ]
    }

    /// Invoices of the company.
    pub fn invoices(base: DateTime<Utc>) -> Vec<ledger::Invoice> {
        let date = |d: i64| (base + Duration::days(d)).format("%Y-%m-%d").to_string();
        let inv = |id: &str, customer: &str, cents: i64, status: &str, issued: i64, due: i64| {
            ledger::Invoice {
                id: id.into(),
                customer: customer.into(),
                amount_cents: cents,
                currency: "GBP".into(),
                status: status.into(),
                issued_on: date(issued),
                due_on: date(due),
            }
        };
        vec![
            inv("INV-2039", "Fernleaf Studio", 30_000, "paid", -60, -30),
            inv("INV-2040", "Harbor Logistics", 480_000, "overdue", -45, -15),
            inv("INV-2041", "BrightPath Ltd", 12_900, "paid", -20, 10),
            inv("INV-2042", "Acorn Bank", 96_000, "open", -3, 27),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SledStore, Store};
    use std::sync::Arc;

    fn sandbox() -> anyhow::Result<(tempfile::TempDir, Sandbox)> {
        let dir = tempfile::tempdir()?;
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path())?);
        let sandbox = Sandbox::new(OrgStore::new(
            store,
            "default",
            std::sync::Arc::new(crate::keys::Keys::ephemeral()),
        ));
        sandbox.seed()?;
        Ok((dir, sandbox))
    }

    #[test]
    fn mail_outside_the_label_is_invisible() -> anyhow::Result<()> {
        let (_dir, s) = sandbox()?;
        let support = MailProvider::list(&s, "support", "", 50)?;
        assert_eq!(support.len(), 3);
        assert!(
            support
                .iter()
                .all(|m| m.labels.contains(&"support".to_string()))
        );
        assert!(MailProvider::read(&s, "support", "m-1008").is_err());
        assert_eq!(MailProvider::read(&s, "hr", "m-1008")?.id, "m-1008");
        Ok(())
    }

    #[test]
    fn a_deal_stage_change_can_be_undone_unless_changed_since() -> anyhow::Result<()> {
        let (_dir, s) = sandbox()?;
        let done = s.update_deal_stage("main", "dl-401", "demo-scheduled", None)?;
        let Some(Inverse::Crm(CrmInverse::SetDealStage {
            deal_id,
            stage,
            after,
        })) = done.inverse
        else {
            anyhow::bail!("expected a stage inverse, got {:?}", done.inverse);
        };
        assert_eq!((deal_id.as_str(), stage.as_str()), ("dl-401", "qualified"));
        // A human moves the deal on: undoing the employee's change is refused.
        s.update_deal_stage("main", "dl-401", "proposal", None)?;
        assert!(matches!(
            s.restore_deal_stage("main", "dl-401", "qualified", &after),
            Err(ProviderError::Conflict(_))
        ));
        s.update_deal_stage("main", "dl-401", "demo-scheduled", None)?;
        s.restore_deal_stage("main", "dl-401", "qualified", &after)?;
        let deal = s
            .list_deals("main", None)?
            .into_iter()
            .find(|d| d.id == "dl-401");
        assert_eq!(deal.map(|d| d.stage), Some("qualified".to_string()));
        assert!(matches!(
            s.update_deal_stage("main", "dl-401", "won-ish", None),
            Err(ProviderError::Invalid(_))
        ));
        Ok(())
    }

    #[test]
    fn a_write_replayed_with_its_idempotency_key_happens_once() -> anyhow::Result<()> {
        let (_dir, s) = sandbox()?;
        let first = s.post("#support", "x", "only once", Some("k1"))?;
        let again = s.post("#support", "x", "only once", Some("k1"))?;
        assert_eq!(first, again);
        assert_eq!(
            s.read_recent("#support", 10)?
                .iter()
                .filter(|m| m.text == "only once")
                .count(),
            1
        );
        s.post("#support", "x", "only once", Some("k2"))?;
        assert_eq!(
            s.read_recent("#support", 10)?
                .iter()
                .filter(|m| m.text == "only once")
                .count(),
            2
        );
        Ok(())
    }

    #[test]
    fn reseeding_restores_the_initial_workspace() -> anyhow::Result<()> {
        let (_dir, s) = sandbox()?;
        s.post("#support", "x", "hello", None)?;
        assert_eq!(s.read_recent("#support", 10)?.len(), 2);
        s.seed()?;
        assert_eq!(s.read_recent("#support", 10)?.len(), 1);
        Ok(())
    }
}
