//! Canonical digests: SHA-256 over a value's JSON, for the hashes that bind
//! approvals, chain the audit log and fingerprint objects for undo.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// SHA-256 of a value's canonical JSON. Only for the plain data types of this
/// crate (derived `Serialize`, string keys), whose serialisation cannot fail;
/// a failure would be a host bug, never a silently shared hash (so it panics
/// rather than hashing an empty input).
pub fn digest<T: Serialize + ?Sized>(value: &T) -> [u8; 32] {
    #[allow(clippy::expect_used)]
    let canonical = serde_json::to_vec(value).expect("plain data always serialises to JSON");
    Sha256::digest(&canonical).into()
}
