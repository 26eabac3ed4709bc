//! Clancy: a host that runs digital employees as sandboxed WebAssembly
//! components, mediating every call they make to the outside world.
//!
//! Start at [`host::Host`] (open a data dir, load an employee, run a task),
//! [`manifest`] (what an employee is granted), [`mediator`] (the chokepoint)
//! and [`audit`] (the tamper-evident log).
#![deny(missing_docs)]

pub mod approvals;
pub mod audit;
pub mod cli;
pub mod host;
pub mod manifest;
pub mod mediator;
pub mod notify;
pub mod operators;
pub mod providers;
pub mod runtime;
pub mod store;
