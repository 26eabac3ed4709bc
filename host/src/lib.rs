//! Clancy: a host that runs digital employees as sandboxed WebAssembly
//! components, mediating every call they make to the outside world.
//!
//! Start at [`org::Org`] (open a data dir, load an employee, run a task),
//! [`manifest`] (what an employee is granted), [`mediator`] (the chokepoint)
//! and [`audit`] (the tamper-evident log).
#![deny(missing_docs)]

pub mod accounts;
pub mod addresses;
pub mod approvals;
pub mod audit;
pub mod cli;
pub mod connectors;
pub mod daemon;
pub mod digest;
pub mod human;
pub mod integrations;
pub mod keys;
pub mod limits;
pub mod manifest;
pub mod mediator;
pub mod notify;
pub mod oauth;
pub mod operators;
pub mod org;
pub mod providers;
pub mod runtime;
pub mod store;
pub mod vault;

/// A crash-test hook: when the environment variable `CLANCY_TEST_PAUSE_AT`
/// names this point, the process says so on stderr and stops here forever,
/// so a test can kill it with SIGKILL at exactly this step. Without the
/// variable it does nothing.
pub fn pause_point(name: &str) {
    static WANTED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let wanted = WANTED.get_or_init(|| std::env::var("CLANCY_TEST_PAUSE_AT").ok());
    if wanted.as_deref() == Some(name) {
        use std::io::Write as _;
        let mut err = std::io::stderr();
        let _ = writeln!(err, "clancy: paused at {name}");
        let _ = err.flush();
        loop {
            std::thread::park();
        }
    }
}
