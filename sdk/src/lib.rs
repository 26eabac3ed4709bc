//! # clancy-sdk
//!
//! The crate a plugin author depends on to build a Clancy digital employee.
//!
//! An employee is a WebAssembly component for `wasm32-wasip2`. It reaches the
//! outside world only through the handles the host gives it: one handle per
//! scope the operator granted in the employee's `employee.toml`. Each
//! integration module ([`mail`], [`chat`], [`crm`], [`calendar`], [`ledger`],
//! [`files`]) has a free function returning those handles, and nothing else.
//! An employee that never calls into a module does not import it, and the
//! host refuses to load an employee whose imports exceed its grants.
//!
//! Every write takes a `reason`: a plain-English sentence shown to approvers
//! and stored in the audit log. Write them for a human reader.
//!
//! ```no_run
//! use clancy_sdk::{chat, note, Employee, Report, Task};
//!
//! struct Greeter;
//!
//! impl Employee for Greeter {
//!     fn run(task: Task) -> Result<Report, String> {
//!         note("Saying hello because the operator asked me to.");
//!         let channel = chat::channels().into_iter().next().ok_or("no channel granted")?;
//!         let outcome = channel
//!             .post(&format!("Hello! ({})", task.instruction), "The task asked for a greeting.")
//!             .map_err(|e| e.describe())?;
//!         Ok(Report { summary: format!("posted a greeting: {outcome:?}") })
//!     }
//! }
//!
//! clancy_sdk::export!(Greeter);
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2 --release` (crate type
//! `cdylib`); the `.wasm` in `target/wasm32-wasip2/release/` is the component
//! to name in `employee.toml`.
#![deny(missing_docs)]

/// Bindings generated from the contract in `wit/`. Prefer the re-exports at
/// the crate root; this module exists so [`export!`] can name them.
#[doc(hidden)]
#[allow(missing_docs, clippy::all, unsafe_code)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "clancy:employee/employee-with-decisions",
        pub_export_macro: true,
        default_bindings_module: "clancy_sdk::bindings",
        generate_all,
    });
}

use std::fmt;

pub use bindings::clancy::employee::types::{CallError, Decision, Outcome, Report, Task};

/// Mail: one handle per granted mailbox label. See [`mail::mailboxes`].
pub mod mail {
    pub use crate::bindings::clancy::employee::mail::{Draft, Mailbox, Message, mailboxes};
}

/// Chat: one handle per granted channel. See [`chat::channels`].
pub mod chat {
    pub use crate::bindings::clancy::employee::chat::{Channel, ChatMessage, channels};
}

/// CRM: one handle per granted portal. See [`crm::portals`].
pub mod crm {
    pub use crate::bindings::clancy::employee::crm::{Contact, Deal, Portal, portals};
}

/// Calendar: one handle per granted calendar. See [`calendar::calendars`].
pub mod calendar {
    pub use crate::bindings::clancy::employee::calendar::{Calendar, Event, NewEvent, calendars};
}

/// Ledger: one handle per granted company's books. See [`ledger::companies`].
pub mod ledger {
    pub use crate::bindings::clancy::employee::ledger::{
        Company, ExpenseLine, ExpenseReport, Invoice, companies,
    };
}

/// Files: one handle per granted folder. See [`files::folders`].
pub mod files {
    pub use crate::bindings::clancy::employee::files::{Folder, folders};
}

/// Asking a human when a case fits no rule: [`guidance::ask`] queues a
/// question with options; the chosen option arrives through
/// [`Employee::on_decision`] as [`Decision::Answered`].
pub mod guidance {
    pub use crate::bindings::clancy::employee::guidance::ask;
}

/// Ask a human for a time-boxed widening of a grant. See [`elevation::request`].
pub mod elevation {
    pub use crate::bindings::clancy::employee::elevation::request;
}

/// Record a plain-English note in the audit log: why the employee is about to
/// do what it does. Notes are free and never rate-limited below the task's
/// call cap.
pub fn note(text: &str) {
    bindings::clancy::employee::explain::note(text);
}

/// What a digital employee does with a task. Implement it and name the type
/// in [`export!`].
pub trait Employee {
    /// Do the task. Return a short report, or an error the operator will see.
    fn run(task: Task) -> Result<Report, String>;

    /// Hear what became of an action that returned `queued(approval_id)`:
    /// executed, failed, denied or expired. Runs in a fresh instance (keep
    /// no state in memory between calls); its calls are audited under the
    /// task that queued the action. The default does nothing.
    fn on_decision(approval_id: String, decision: Decision) -> Result<(), String> {
        let _ = (approval_id, decision);
        Ok(())
    }
}

impl CallError {
    /// A one-line, human-readable description (the generated `Display`
    /// prints the variant as `Debug` does).
    pub fn describe(&self) -> String {
        match self {
            CallError::Denied(why) => format!("denied: {why}"),
            CallError::RateLimited(secs) => format!("rate limited: retry in {secs}s"),
            CallError::Rejected(why) => format!("rejected: {why}"),
            CallError::Expired => {
                "the connection expired; a human must re-authorise it".to_string()
            }
            CallError::Failed(why) => format!("failed: {why}"),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Done(what) => write!(f, "done ({what})"),
            Outcome::Queued(id) => write!(f, "queued for approval ({id})"),
        }
    }
}

/// Export a type implementing [`Employee`] as this component's `run` and
/// `on-decision`.
#[macro_export]
macro_rules! export {
    ($employee:ty) => {
        #[doc(hidden)]
        struct __ClancyEmployeeExport;

        impl $crate::bindings::Guest for __ClancyEmployeeExport {
            fn run(task: $crate::Task) -> ::core::result::Result<$crate::Report, ::std::string::String> {
                <$employee as $crate::Employee>::run(task)
            }

            fn on_decision(
                approval_id: ::std::string::String,
                decision: $crate::Decision,
            ) -> ::core::result::Result<(), ::std::string::String> {
                <$employee as $crate::Employee>::on_decision(approval_id, decision)
            }
        }

        $crate::bindings::export!(__ClancyEmployeeExport with_types_in $crate::bindings);
    };
}
