//! Import validation: what a component may import, checked before it is
//! instantiated. Deny by default.
//!
//! Allowed: the contract's `types`, `explain`, `elevation` and `guidance`
//! (asking a human, for more reach or for an answer, grants nothing by
//! itself), each capability interface
//! the manifest grants, and the benign, virtualised WASI interfaces that
//! Rust's std pulls in (stdio into the host's log, an empty environment,
//! exit, clocks, random). Everything else (filesystem, sockets, HTTP, an
//! ungranted capability, unknown packages) is refused, naming the import.

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::manifest::{Interface, Manifest};

const PACKAGE: &str = "clancy:employee";

/// WASI interfaces a guest may import (version-less).
const BENIGN_WASI: &[&str] = &[
    "wasi:io/poll",
    "wasi:io/error",
    "wasi:io/streams",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

/// Names of all imports of `component`.
pub fn import_names(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect()
}

/// Check every import against the manifest. Returns one message per refused import.
pub fn check_imports(manifest: &Manifest, imports: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    for import in imports {
        let unversioned = import.split('@').next().unwrap_or(import);
        if let Some(iface) = unversioned
            .strip_prefix(PACKAGE)
            .and_then(|s| s.strip_prefix('/'))
        {
            if matches!(iface, "types" | "explain" | "elevation" | "guidance") {
                continue;
            }
            match Interface::ALL.into_iter().find(|i| i.wit_name() == iface) {
                Some(interface) if manifest.grants_interface(interface) => {}
                Some(interface) => problems.push(format!(
                    "imports {import}, but the manifest grants no {interface} integration \
                     (add a [[grant]] for it, or remove the import)"
                )),
                None => problems.push(format!(
                    "imports {import}, which is not part of the {PACKAGE} contract"
                )),
            }
        } else if BENIGN_WASI.contains(&unversioned) {
            continue;
        } else if unversioned.starts_with("wasi:filesystem/") {
            problems.push(format!(
                "imports {import}: employees get no filesystem (use a files grant for one folder)"
            ));
        } else if unversioned.starts_with("wasi:sockets/") || unversioned.starts_with("wasi:http/")
        {
            problems.push(format!(
                "imports {import}: employees get no network access (services are reached through integrations)"
            ));
        } else {
            problems.push(format!("imports {import}, which employees may not use"));
        }
    }
    problems
}
