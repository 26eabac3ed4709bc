//! End-to-end tests: real guest components (the example plugins and hostile
//! guests built by `tests/build.rs`) against the real host, sandbox workspace
//! and `clancy` binary. One binary with modules links faster than many.

mod api_schema;
mod approvals;
mod approvals_cli;
mod audit_log;
mod cli;
mod cli_daemon;
mod compiled;
mod connectors;
mod crash;
mod crash_recovery;
mod daemon;
mod disk;
mod elevation;
mod env;
mod escalation;
mod group_commit;
mod guidance;
mod history;
mod hostile;
mod injection;
mod isolation;
mod limits;
mod mail_scope;
mod notify;
mod oauth;
mod orgs;
mod plugins;
mod queue;
mod registry;
mod revocation;
mod rollback;
mod services;
mod signin;
mod tls;
