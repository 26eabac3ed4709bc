//! Host-side state behind each resource handle: the index of the grant it
//! stands for. Handles are created only by the host (from the manifest's
//! grants); a guest can hold, use and drop them, never mint them.

/// A handle's host-side state: which grant it stands for.
pub trait GrantHandle: Send + 'static {
    /// The handle for grant `grant`.
    fn new(grant: usize) -> Self;
    /// The index of the grant it stands for.
    fn grant(&self) -> usize;
}

macro_rules! handle {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name {
            /// Index into the manifest's grants.
            pub grant: usize,
        }

        impl GrantHandle for $name {
            fn new(grant: usize) -> Self {
                $name { grant }
            }

            fn grant(&self) -> usize {
                self.grant
            }
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
