//! Paths of the guest components `build.rs` compiled for wasm32-wasip2: the
//! example plugins and the hostile test guests. The end-to-end tests in
//! `tests/all` (run as the `clancy` package's `all` test) use them.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));
