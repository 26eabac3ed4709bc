//! Paths of the guest components `build.rs` compiled for wasm32-wasip2: the
//! example plugins and the hostile test guests. The end-to-end tests in
//! `tests/all` (run as the `clancy` package's `all` test) use them.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// The grants the `hostile` guest needs besides its chat grant in order to
/// load: it imports mail (reads the support label) and files (writes a folder).
pub const HOSTILE_IMPORT_GRANTS: &str = r##"
[[grant]]
integration = "gmail"
scope = "label:support"
actions = ["read"]

[[grant]]
integration = "files"
scope = "folder:out"
actions = ["write"]
"##;
