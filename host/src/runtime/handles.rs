//! Host-side state behind each resource handle: the index of the grant it
//! stands for. Handles are created only by the host (from the manifest's
//! grants); a guest can hold, use and drop them, never mint them.

macro_rules! handle {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name {
            /// Index into the manifest's grants.
            pub grant: usize,
        }
    )*};
}

handle!(
    /// A `mail.mailbox` handle.
    MailboxHandle,
    /// A `chat.channel` handle.
    ChannelHandle,
    /// A `crm.portal` handle.
    PortalHandle,
    /// A `calendar.calendar` handle.
    CalendarHandle,
    /// A `ledger.company` handle.
    CompanyHandle,
    /// A `files.folder` handle.
    FolderHandle,
);
