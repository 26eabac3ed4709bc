//! The guest's calls into the host: wasmtime's generated `Host` traits,
//! implemented for the per-task state. Each call becomes an [`Operation`]
//! handed to the mediator. No integration logic lives here; this file only translates.

use wasmtime::component::Resource;

use super::TaskState;
use super::bindings::clancy::employee::{elevation, explain, guidance, types};
use super::bindings::{CallError, Outcome, calendar, chat, crm, files, ledger, mail};
use super::handles::{
    CalendarHandle, ChannelHandle, CompanyHandle, FolderHandle, MailboxHandle, PortalHandle,
};
use crate::manifest::Interface;
use crate::providers::{Operation, Response};

type CallResult<T> = wasmtime::Result<Result<T, CallError>>;

impl TaskState {
    /// Count a host call; past the task's cap the guest traps.
    fn count_call(&mut self) -> wasmtime::Result<()> {
        self.calls += 1;
        if self.calls > self.max_calls {
            return Err(wasmtime::Error::msg(format!(
                "the task exceeded its cap of {} host calls",
                self.max_calls
            )));
        }
        Ok(())
    }

    fn mediate(
        &mut self,
        grant: usize,
        op: Operation,
        reason: &str,
    ) -> wasmtime::Result<Result<Response, CallError>> {
        self.count_call()?;
        Ok(self.mediator.call(&self.task_id, grant, op, reason))
    }

    fn handles<T: 'static + Send>(
        &mut self,
        interface: Interface,
        make: fn(usize) -> T,
    ) -> wasmtime::Result<Vec<Resource<T>>> {
        self.count_call()?;
        let grants = self.mediator.grants_for(interface);
        grants
            .into_iter()
            .map(|g| Ok(self.table.push(make(g))?))
            .collect()
    }

    fn scope_name(&self, grant: usize) -> String {
        self.mediator
            .grant(grant)
            .map(|g| g.scope.clone())
            .unwrap_or_default()
    }
}

macro_rules! expect {
    ($result:expr, $variant:ident) => {
        match $result? {
            Ok(Response::$variant(value)) => Ok(Ok(value)),
            Ok(other) => Err(wasmtime::Error::msg(format!(
                "host bug: unexpected provider response {other:?}"
            ))),
            Err(e) => Ok(Err(e)),
        }
    };
}

macro_rules! written {
    ($result:expr) => {
        match $result? {
            Ok(Response::Done(done)) => Ok(Ok(Outcome::Done(done.id))),
            Ok(Response::Queued(approval)) => Ok(Ok(Outcome::Queued(approval))),
            Ok(other) => Err(wasmtime::Error::msg(format!(
                "host bug: unexpected provider response {other:?}"
            ))),
            Err(e) => Ok(Err(e)),
        }
    };
}

impl types::Host for TaskState {}

impl explain::Host for TaskState {
    fn note(&mut self, text: String) -> wasmtime::Result<()> {
        self.count_call()?;
        self.mediator.note(&self.task_id, &text);
        Ok(())
    }
}

impl elevation::Host for TaskState {
    fn request(
        &mut self,
        integration: String,
        scope: String,
        actions: Vec<String>,
        minutes: u32,
        reason: String,
    ) -> CallResult<Outcome> {
        self.count_call()?;
        let result = self.mediator.request_elevation(
            &self.task_id,
            &integration,
            &scope,
            actions,
            minutes,
            &reason,
        );
        written!(Ok::<_, wasmtime::Error>(result))
    }
}

impl guidance::Host for TaskState {
    fn ask(
        &mut self,
        question: String,
        options: Vec<String>,
        reason: String,
    ) -> CallResult<Outcome> {
        self.count_call()?;
        let result = self
            .mediator
            .ask(&self.task_id, &question, options, &reason);
        written!(Ok::<_, wasmtime::Error>(result))
    }
}

impl mail::Host for TaskState {
    fn mailboxes(&mut self) -> wasmtime::Result<Vec<Resource<MailboxHandle>>> {
        self.handles(Interface::Mail, |grant| MailboxHandle { grant })
    }
}

impl mail::HostMailbox for TaskState {
    fn name(&mut self, h: Resource<MailboxHandle>) -> wasmtime::Result<String> {
        let g = self.table.get(&h)?.grant;
        Ok(self.scope_name(g))
    }

    fn list(
        &mut self,
        h: Resource<MailboxHandle>,
        query: String,
        limit: u32,
    ) -> CallResult<Vec<mail::Message>> {
        let g = self.table.get(&h)?.grant;
        expect!(
            self.mediate(g, Operation::MailList { query, limit }, ""),
            Messages
        )
    }

    fn read(&mut self, h: Resource<MailboxHandle>, id: String) -> CallResult<mail::Message> {
        let g = self.table.get(&h)?.grant;
        expect!(self.mediate(g, Operation::MailRead { id }, ""), Message)
    }

    fn send(
        &mut self,
        h: Resource<MailboxHandle>,
        draft: mail::Draft,
        reason: String,
    ) -> CallResult<Outcome> {
        let g = self.table.get(&h)?.grant;
        written!(self.mediate(g, Operation::MailSend { draft }, &reason))
    }

    fn drop(&mut self, h: Resource<MailboxHandle>) -> wasmtime::Result<()> {
        self.table.delete(h)?;
        Ok(())
    }
}

impl chat::Host for TaskState {
    fn channels(&mut self) -> wasmtime::Result<Vec<Resource<ChannelHandle>>> {
        self.handles(Interface::Chat, |grant| ChannelHandle { grant })
    }
}

impl chat::HostChannel for TaskState {
    fn name(&mut self, h: Resource<ChannelHandle>) -> wasmtime::Result<String> {
        let g = self.table.get(&h)?.grant;
        Ok(self.scope_name(g))
    }

    fn read_recent(
        &mut self,
        h: Resource<ChannelHandle>,
        limit: u32,
    ) -> CallResult<Vec<chat::ChatMessage>> {
        let g = self.table.get(&h)?.grant;
        expect!(
            self.mediate(g, Operation::ChatReadRecent { limit }, ""),
            ChatMessages
        )
    }

    fn post(
        &mut self,
        h: Resource<ChannelHandle>,
        text: String,
        reason: String,
    ) -> CallResult<Outcome> {
        let g = self.table.get(&h)?.grant;
        written!(self.mediate(g, Operation::ChatPost { text }, &reason))
    }

    fn drop(&mut self, h: Resource<ChannelHandle>) -> wasmtime::Result<()> {
        self.table.delete(h)?;
        Ok(())
    }
}

impl crm::Host for TaskState {
    fn portals(&mut self) -> wasmtime::Result<Vec<Resource<PortalHandle>>> {
        self.handles(Interface::Crm, |grant| PortalHandle { grant })
    }
}

impl crm::HostPortal for TaskState {
    fn name(&mut self, h: Resource<PortalHandle>) -> wasmtime::Result<String> {
        let g = self.table.get(&h)?.grant;
        Ok(self.scope_name(g))
    }

    fn find_contacts(
        &mut self,
        h: Resource<PortalHandle>,
        query: String,
    ) -> CallResult<Vec<crm::Contact>> {
        let g = self.table.get(&h)?.grant;
        expect!(
            self.mediate(g, Operation::CrmFindContacts { query }, ""),
            Contacts
        )
    }

    fn get_contact(&mut self, h: Resource<PortalHandle>, id: String) -> CallResult<crm::Contact> {
        let g = self.table.get(&h)?.grant;
        expect!(
            self.mediate(g, Operation::CrmGetContact { id }, ""),
            Contact
        )
    }

    fn list_deals(
        &mut self,
        h: Resource<PortalHandle>,
        contact_id: Option<String>,
    ) -> CallResult<Vec<crm::Deal>> {
        let g = self.table.get(&h)?.grant;
        expect!(
            self.mediate(g, Operation::CrmListDeals { contact_id }, ""),
            Deals
        )
    }

    fn update_deal_stage(
        &mut self,
        h: Resource<PortalHandle>,
        deal_id: String,
        stage: String,
        reason: String,
    ) -> CallResult<Outcome> {
        let g = self.table.get(&h)?.grant;
        written!(self.mediate(g, Operation::CrmUpdateDealStage { deal_id, stage }, &reason))
    }

    fn drop(&mut self, h: Resource<PortalHandle>) -> wasmtime::Result<()> {
        self.table.delete(h)?;
        Ok(())
    }
}

impl calendar::Host for TaskState {
    fn calendars(&mut self) -> wasmtime::Result<Vec<Resource<CalendarHandle>>> {
        self.handles(Interface::Calendar, |grant| CalendarHandle { grant })
    }
}

impl calendar::HostCalendar for TaskState {
    fn name(&mut self, h: Resource<CalendarHandle>) -> wasmtime::Result<String> {
        let g = self.table.get(&h)?.grant;
        Ok(self.scope_name(g))
    }

    fn list_events(
        &mut self,
        h: Resource<CalendarHandle>,
        from: String,
        to: String,
    ) -> CallResult<Vec<calendar::Event>> {
        let g = self.table.get(&h)?.grant;
        expect!(
            self.mediate(g, Operation::CalendarListEvents { from, to }, ""),
            Events
        )
    }

    fn create_event(
        &mut self,
        h: Resource<CalendarHandle>,
        event: calendar::NewEvent,
        reason: String,
    ) -> CallResult<Outcome> {
        let g = self.table.get(&h)?.grant;
        written!(self.mediate(g, Operation::CalendarCreateEvent { event }, &reason))
    }

    fn send_invite(
        &mut self,
        h: Resource<CalendarHandle>,
        event_id: String,
        attendees: Vec<String>,
        reason: String,
    ) -> CallResult<Outcome> {
        let g = self.table.get(&h)?.grant;
        written!(self.mediate(
            g,
            Operation::CalendarSendInvite {
                event_id,
                attendees
            },
            &reason
        ))
    }

    fn drop(&mut self, h: Resource<CalendarHandle>) -> wasmtime::Result<()> {
        self.table.delete(h)?;
        Ok(())
    }
}

impl ledger::Host for TaskState {
    fn companies(&mut self) -> wasmtime::Result<Vec<Resource<CompanyHandle>>> {
        self.handles(Interface::Ledger, |grant| CompanyHandle { grant })
    }
}

impl ledger::HostCompany for TaskState {
    fn name(&mut self, h: Resource<CompanyHandle>) -> wasmtime::Result<String> {
        let g = self.table.get(&h)?.grant;
        Ok(self.scope_name(g))
    }

    fn list_invoices(
        &mut self,
        h: Resource<CompanyHandle>,
        status: Option<String>,
    ) -> CallResult<Vec<ledger::Invoice>> {
        let g = self.table.get(&h)?.grant;
        expect!(
            self.mediate(g, Operation::LedgerListInvoices { status }, ""),
            Invoices
        )
    }

    fn create_expense_report(
        &mut self,
        h: Resource<CompanyHandle>,
        report: ledger::ExpenseReport,
        reason: String,
    ) -> CallResult<Outcome> {
        let g = self.table.get(&h)?.grant;
        written!(self.mediate(g, Operation::LedgerCreateExpenseReport { report }, &reason))
    }

    fn drop(&mut self, h: Resource<CompanyHandle>) -> wasmtime::Result<()> {
        self.table.delete(h)?;
        Ok(())
    }
}

impl files::Host for TaskState {
    fn folders(&mut self) -> wasmtime::Result<Vec<Resource<FolderHandle>>> {
        self.handles(Interface::Files, |grant| FolderHandle { grant })
    }
}

impl files::HostFolder for TaskState {
    fn name(&mut self, h: Resource<FolderHandle>) -> wasmtime::Result<String> {
        let g = self.table.get(&h)?.grant;
        Ok(self.scope_name(g))
    }

    fn list(&mut self, h: Resource<FolderHandle>, path: String) -> CallResult<Vec<String>> {
        let g = self.table.get(&h)?.grant;
        expect!(self.mediate(g, Operation::FilesList { path }, ""), Names)
    }

    fn read(&mut self, h: Resource<FolderHandle>, path: String) -> CallResult<Vec<u8>> {
        let g = self.table.get(&h)?.grant;
        expect!(self.mediate(g, Operation::FilesRead { path }, ""), Bytes)
    }

    fn write(
        &mut self,
        h: Resource<FolderHandle>,
        path: String,
        contents: Vec<u8>,
        reason: String,
    ) -> CallResult<Outcome> {
        let g = self.table.get(&h)?.grant;
        written!(self.mediate(g, Operation::FilesWrite { path, contents }, &reason))
    }

    fn drop(&mut self, h: Resource<FolderHandle>) -> wasmtime::Result<()> {
        self.table.delete(h)?;
        Ok(())
    }
}
