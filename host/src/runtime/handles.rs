//! Host-side state behind each resource handle: the index of the grant it
//! stands for. Handles are created only by the host (from the grants in
//! force); a guest can hold, use and drop them, never mint them. Each
//! integration declares its handle type in its own module with
//! [`grant_handle!`](crate::grant_handle).

/// A handle's host-side state: which grant it stands for.
pub trait GrantHandle: Send + 'static {
    /// The handle for grant `grant`.
    fn new(grant: usize) -> Self;
    /// The index of the grant it stands for.
    fn grant(&self) -> usize;
}

/// Declare a handle type: the host-side state of one integration's resource.
#[macro_export]
#[doc(hidden)]
macro_rules! grant_handle {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name {
            /// Index into the grants in force.
            grant: usize,
        }

        impl $crate::runtime::handles::GrantHandle for $name {
            fn new(grant: usize) -> Self {
                $name { grant }
            }

            fn grant(&self) -> usize {
                self.grant
            }
        }
    };
}
