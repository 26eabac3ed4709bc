//! The one `bindgen!` over `wit/`. Everything else in the host uses these types.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "clancy:employee/employee",
    imports: { default: trappable },
    // Exports are called async so a wall-time deadline can drop a guest
    // blocked inside WASI (a sleep, a poll): see `LoadedEmployee::within_deadline`.
    exports: { default: async },
    with: {
        "clancy:employee/mail.mailbox": crate::integrations::mail::MailboxHandle,
        "clancy:employee/chat.channel": crate::integrations::chat::ChannelHandle,
        "clancy:employee/crm.portal": crate::integrations::crm::PortalHandle,
        "clancy:employee/calendar.calendar": crate::integrations::calendar::CalendarHandle,
        "clancy:employee/ledger.company": crate::integrations::ledger::CompanyHandle,
        "clancy:employee/files.folder": crate::integrations::files::FolderHandle,
    },
    additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
});

pub use self::clancy::employee::types::{CallError, Outcome};
pub use self::clancy::employee::{calendar, chat, crm, files, ledger, mail};
