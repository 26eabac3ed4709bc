//! The one `bindgen!` over `wit/`. Everything else in the host uses these types.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "clancy:employee/employee",
    imports: { default: trappable },
    with: {
        "clancy:employee/mail.mailbox": crate::runtime::handles::MailboxHandle,
        "clancy:employee/chat.channel": crate::runtime::handles::ChannelHandle,
        "clancy:employee/crm.portal": crate::runtime::handles::PortalHandle,
        "clancy:employee/calendar.calendar": crate::runtime::handles::CalendarHandle,
        "clancy:employee/ledger.company": crate::runtime::handles::CompanyHandle,
        "clancy:employee/files.folder": crate::runtime::handles::FolderHandle,
    },
    additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
});

pub use self::clancy::employee::types::{CallError, Outcome};
pub use self::clancy::employee::{calendar, chat, crm, files, ledger, mail};
