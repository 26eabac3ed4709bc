//! Durable storage: a small trait over the embedded default (sled).
//!
//! Everything the host keeps (audit log, sandbox workspace) goes through
//! [`Store`], so a distributed backend can replace sled later. Keys are
//! namespaced by organisation with [`OrgStore`]; code above this module never
//! builds a key that could reach another organisation's data.
//!
//! Writes are atomic per call and durable (flushed) before they return: a
//! caller that got `Ok` may act on it.

use std::path::Path;
use std::sync::Arc;

/// A storage failure. Callers fail closed on it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data dir could not be opened (missing, locked by another process, corrupt).
    #[error("cannot open the data store at {path}: {reason}")]
    Open {
        /// The store's directory.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A read or write failed.
    #[error("storage error: {0}")]
    Io(String),
    /// A stored record does not decode: the store was damaged or written
    /// by something else. Nothing is guessed from it.
    #[error("corrupt record in {area}: {reason}")]
    Corrupt {
        /// The area it was read from.
        area: String,
        /// What the decoder said.
        reason: String,
    },
    /// A record does not carry the host's seal: it was written or changed
    /// by something other than this host. It is not acted on.
    #[error(
        "a record in {area} ({key}) was changed outside clancy: its seal does not match this data dir's host key, so it is refused (a data dir written before records were sealed, or whose keys/ was replaced, cannot be used)"
    )]
    Tampered {
        /// The area it was read from.
        area: String,
        /// Its key, as text.
        key: String,
    },
    /// A value could not be encoded for storing (a host bug); nothing was written.
    #[error("cannot encode a record for storing: {0}")]
    Encode(String),
}

/// Encode a value for storing.
pub fn encode<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Encode(e.to_string()))
}

/// Decode a record read from `area`.
pub fn decode<T: serde::de::DeserializeOwned>(area: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        area: area.to_string(),
        reason: e.to_string(),
    })
}

/// One key's new value in an atomic write; `None` removes it.
pub type Write = (Vec<u8>, Option<Vec<u8>>);

/// A stored key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// One key's new value in a named area, for writes across areas.
pub type AreaWrite = (String, Vec<u8>, Option<Vec<u8>>);

/// The condition of a write across areas: `key` in `area` holds `expected`
/// (`None`: absent).
#[derive(Clone, Debug)]
pub struct Guard {
    /// The area of the key checked.
    pub area: String,
    /// The key checked.
    pub key: Vec<u8>,
    /// What it must hold.
    pub expected: Option<Vec<u8>>,
}

/// A key-value store of named areas.
pub trait Store: Send + Sync {
    /// The value at `key` in `area`.
    fn get(&self, area: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Apply all writes to `area` atomically and durably.
    fn write(&self, area: &str, writes: Vec<Write>) -> Result<(), StoreError>;
    /// All entries of `area` whose key starts with `prefix`, in key order.
    fn scan(&self, area: &str, prefix: &[u8]) -> Result<Vec<Entry>, StoreError>;
    /// At most `limit` entries of `area` whose key starts with `prefix`
    /// and comes after `after` (if given), in key order: a scan a page at a
    /// time, in bounded memory.
    fn scan_page(
        &self,
        area: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        Ok(self
            .scan(area, prefix)?
            .into_iter()
            .filter(|(k, _)| after.is_none_or(|a| k.as_slice() > a))
            .take(limit)
            .collect())
    }
    /// The names of the areas that hold (or held) anything.
    fn areas(&self) -> Result<Vec<String>, StoreError>;
    /// Apply `writes` atomically and durably only if `key` currently holds
    /// `expected` (`None`: absent). Returns whether they were applied; of two
    /// racing callers expecting the same value, exactly one wins.
    fn write_if(
        &self,
        area: &str,
        key: &[u8],
        expected: Option<&[u8]>,
        writes: Vec<Write>,
    ) -> Result<bool, StoreError>;
    /// Apply `writes`, in any areas, atomically and durably, only if
    /// `guard` (if any) holds. Returns whether they were applied. This is
    /// how a decision and its audit entry are written: both or neither.
    fn write_across(
        &self,
        guard: Option<&Guard>,
        writes: Vec<AreaWrite>,
    ) -> Result<bool, StoreError>;
}

/// The embedded default: one sled database in the data dir.
pub struct SledStore {
    db: sled::Db,
}

impl SledStore {
    /// Open (or create) the database at `path`. Every write is flushed by
    /// [`Store::write`] itself, so no background flusher runs (and the file
    /// lock is released as soon as the store is dropped).
    pub fn open(path: &Path) -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .flush_every_ms(None)
            .open()
            .map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                reason: match e {
                    // sled reports a held lock as WouldBlock, or wraps it in an
                    // error saying it "could not acquire lock".
                    sled::Error::Io(io)
                        if io.kind() == std::io::ErrorKind::WouldBlock
                            || io.to_string().contains("could not acquire lock") =>
                    {
                        "it is in use by another clancy process (wait for it to finish, or stop `clancy serve` or `clancy approvals watch`)".to_string()
                    }
                    other => other.to_string(),
                },
            })?;
        Ok(SledStore { db })
    }

    fn tree(&self, area: &str) -> Result<sled::Tree, StoreError> {
        self.db.open_tree(area).map_err(io)
    }
}

fn io(e: sled::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

impl Store for SledStore {
    fn get(&self, area: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree(area)?.get(key).map_err(io)?.map(|v| v.to_vec()))
    }

    fn write(&self, area: &str, writes: Vec<Write>) -> Result<(), StoreError> {
        let tree = self.tree(area)?;
        let mut batch = sled::Batch::default();
        for (key, value) in writes {
            match value {
                Some(v) => batch.insert(key, v),
                None => batch.remove(key),
            }
        }
        tree.apply_batch(batch).map_err(io)?;
        tree.flush().map_err(io)?;
        Ok(())
    }

    fn scan(&self, area: &str, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        self.tree(area)?
            .scan_prefix(prefix)
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(io))
            .collect()
    }

    fn scan_page(
        &self,
        area: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        use std::ops::Bound;
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a.to_vec()),
            _ => Bound::Included(prefix.to_vec()),
        };
        self.tree(area)?
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
            .take_while(|kv| kv.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)))
            .take(limit)
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(io))
            .collect()
    }

    fn areas(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .db
            .tree_names()
            .into_iter()
            .map(|n| String::from_utf8_lossy(&n).to_string())
            .filter(|n| n != "__sled__default")
            .collect())
    }

    fn write_if(
        &self,
        area: &str,
        key: &[u8],
        expected: Option<&[u8]>,
        writes: Vec<Write>,
    ) -> Result<bool, StoreError> {
        let guard = Guard {
            area: area.to_string(),
            key: key.to_vec(),
            expected: expected.map(<[u8]>::to_vec),
        };
        let writes: Vec<AreaWrite> = writes
            .into_iter()
            .map(|(k, v)| (area.to_string(), k, v))
            .collect();
        self.write_across_trees(Some(&guard), &writes)
    }

    fn write_across(
        &self,
        guard: Option<&Guard>,
        writes: Vec<AreaWrite>,
    ) -> Result<bool, StoreError> {
        self.write_across_trees(guard, &writes)
    }
}

impl SledStore {
    fn write_across_trees(
        &self,
        guard: Option<&Guard>,
        writes: &[AreaWrite],
    ) -> Result<bool, StoreError> {
        use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
        // One tree per area involved, the guard's first.
        let mut areas: Vec<&str> = guard.map(|g| g.area.as_str()).into_iter().collect();
        for (area, _, _) in writes {
            if !areas.contains(&area.as_str()) {
                areas.push(area);
            }
        }
        let trees = areas
            .iter()
            .map(|a| self.tree(a))
            .collect::<Result<Vec<_>, _>>()?;
        let index = |area: &str| areas.iter().position(|a| *a == area).unwrap_or(0);
        let applied = trees
            .as_slice()
            .transaction(|txs| {
                if let Some(g) = guard
                    && txs[0].get(&g.key)?.as_deref() != g.expected.as_deref()
                {
                    return Ok(false);
                }
                for (area, k, v) in writes {
                    let tx = &txs[index(area)];
                    match v {
                        Some(v) => {
                            tx.insert(k.as_slice(), v.as_slice())?;
                        }
                        None => {
                            tx.remove(k.as_slice())?;
                        }
                    }
                }
                Ok::<bool, ConflictableTransactionError<()>>(true)
            })
            .map_err(|e: TransactionError<()>| {
                StoreError::Io(format!("transaction failed: {e:?}"))
            })?;
        self.db.flush().map_err(io)?;
        Ok(applied)
    }
}

/// Areas whose records carry no seal: the audit log is a hash chain whose
/// heads are signed outside the store, and `audit verify` must report an
/// edited entry, not fail to read it.
const UNSEALED_AREAS: &[&str] = &["audit"];
const SEAL_BYTES: usize = 32;

/// One organisation's view of a [`Store`]: every key is prefixed with the
/// org, and every value (outside [`UNSEALED_AREAS`]) ends in a seal, an
/// HMAC under the host key over the area, the whole key and the value. A
/// value whose seal does not match (edited, moved to another key or org,
/// or written by anything but this host) reads as [`StoreError::Tampered`].
/// A value replaced by an older sealed value of the same key is not
/// detected here (see the Security section of the README).
#[derive(Clone)]
pub struct OrgStore {
    store: Arc<dyn Store>,
    prefix: Vec<u8>,
    org: String,
    keys: Arc<crate::keys::Keys>,
}

impl OrgStore {
    /// The view of `org`, sealed with `keys`. Org names never contain `/`,
    /// so prefixes cannot overlap.
    pub fn new(store: Arc<dyn Store>, org: &str, keys: Arc<crate::keys::Keys>) -> OrgStore {
        let mut prefix = org.as_bytes().to_vec();
        prefix.push(b'/');
        OrgStore {
            store,
            prefix,
            org: org.to_string(),
            keys,
        }
    }

    fn seal(&self, area: &str, full_key: &[u8], value: Vec<u8>) -> Vec<u8> {
        if UNSEALED_AREAS.contains(&area) {
            return value;
        }
        let tag = self.keys.seal(&[area.as_bytes(), full_key, &value]);
        let mut sealed = value;
        sealed.extend_from_slice(&tag);
        sealed
    }

    fn unseal(&self, area: &str, full_key: &[u8], stored: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        if UNSEALED_AREAS.contains(&area) {
            return Ok(stored);
        }
        let tampered = || StoreError::Tampered {
            area: area.to_string(),
            key: String::from_utf8_lossy(&full_key[self.prefix.len().min(full_key.len())..])
                .into_owned(),
        };
        let Some(split) = stored.len().checked_sub(SEAL_BYTES) else {
            return Err(tampered());
        };
        let (value, tag) = stored.split_at(split);
        if !self.keys.sealed(&[area.as_bytes(), full_key, value], tag) {
            return Err(tampered());
        }
        Ok(value.to_vec())
    }

    fn sealed_writes(&self, area: &str, writes: Vec<Write>) -> Vec<Write> {
        writes
            .into_iter()
            .map(|(k, v)| {
                let k = self.key(&k);
                let v = v.map(|v| self.seal(area, &k, v));
                (k, v)
            })
            .collect()
    }

    /// The keys this view seals with (and encrypts secrets with).
    pub(crate) fn keys(&self) -> &crate::keys::Keys {
        &self.keys
    }

    /// The organisation this view belongs to.
    pub fn org(&self) -> &str {
        &self.org
    }

    fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(key);
        k
    }

    /// See [`Store::get`].
    pub fn get(&self, area: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let full = self.key(key);
        self.store
            .get(area, &full)?
            .map(|v| self.unseal(area, &full, v))
            .transpose()
    }

    /// See [`Store::write`].
    pub fn write(&self, area: &str, writes: Vec<Write>) -> Result<(), StoreError> {
        self.store.write(area, self.sealed_writes(area, writes))
    }

    /// See [`Store::scan`]; returned keys have the org prefix removed.
    pub fn scan(&self, area: &str, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        let n = self.prefix.len();
        self.store
            .scan(area, &self.key(prefix))?
            .into_iter()
            .map(|(k, v)| {
                let v = self.unseal(area, &k, v)?;
                Ok((k[n..].to_vec(), v))
            })
            .collect()
    }

    /// See [`Store::scan_page`]; `after` and the returned keys have the
    /// org prefix removed.
    pub fn scan_page(
        &self,
        area: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let n = self.prefix.len();
        let after = after.map(|a| self.key(a));
        self.store
            .scan_page(area, &self.key(prefix), after.as_deref(), limit)?
            .into_iter()
            .map(|(k, v)| {
                let v = self.unseal(area, &k, v)?;
                Ok((k[n..].to_vec(), v))
            })
            .collect()
    }

    /// See [`Store::write_if`].
    pub fn write_if(
        &self,
        area: &str,
        key: &[u8],
        expected: Option<&[u8]>,
        writes: Vec<Write>,
    ) -> Result<bool, StoreError> {
        let full = self.key(key);
        let expected = expected.map(|v| self.seal(area, &full, v.to_vec()));
        self.store.write_if(
            area,
            &full,
            expected.as_deref(),
            self.sealed_writes(area, writes),
        )
    }

    /// See [`Store::write_across`]: `guard` and `writes` name keys of this
    /// org (they are prefixed and sealed here).
    pub fn write_across(
        &self,
        guard: Option<&Guard>,
        writes: Vec<AreaWrite>,
    ) -> Result<bool, StoreError> {
        let guard = guard.map(|g| {
            let key = self.key(&g.key);
            Guard {
                expected: g.expected.clone().map(|v| self.seal(&g.area, &key, v)),
                area: g.area.clone(),
                key,
            }
        });
        let writes = writes
            .into_iter()
            .map(|(area, k, v)| {
                let k = self.key(&k);
                let v = v.map(|v| self.seal(&area, &k, v));
                (area, k, v)
            })
            .collect();
        self.store.write_across(guard.as_ref(), writes)
    }

    /// Read a JSON value.
    pub fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        area: &str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        match self.get(area, key)? {
            None => Ok(None),
            Some(bytes) => decode(area, &bytes).map(Some),
        }
    }

    /// All JSON values under `prefix`.
    pub fn scan_json<T: serde::de::DeserializeOwned>(
        &self,
        area: &str,
        prefix: &[u8],
    ) -> Result<Vec<T>, StoreError> {
        self.scan(area, prefix)?
            .into_iter()
            .map(|(_, v)| decode(area, &v))
            .collect()
    }

    /// Write one JSON value.
    pub fn put_json<T: serde::Serialize>(
        &self,
        area: &str,
        key: &[u8],
        value: &T,
    ) -> Result<(), StoreError> {
        self.write(area, vec![(key.to_vec(), Some(encode(value)?))])
    }
}

/// Validate an organisation name (used in keys and paths).
pub fn valid_org(org: &str) -> bool {
    !org.is_empty()
        && org.len() <= 64
        && org
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_views_never_see_each_others_keys() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path())?);
        let keys = Arc::new(crate::keys::Keys::ephemeral());
        let a = OrgStore::new(store.clone(), "acme", keys.clone());
        let b = OrgStore::new(store.clone(), "acme-2", keys);
        a.write("t", vec![(b"k".to_vec(), Some(b"a".to_vec()))])?;
        b.write("t", vec![(b"k".to_vec(), Some(b"b".to_vec()))])?;
        assert_eq!(a.get("t", b"k")?, Some(b"a".to_vec()));
        assert_eq!(a.scan("t", b"")?, vec![(b"k".to_vec(), b"a".to_vec())]);
        assert_eq!(b.scan("t", b"")?, vec![(b"k".to_vec(), b"b".to_vec())]);
        assert!(valid_org("acme-2") && !valid_org("a/b") && !valid_org(""));
        Ok(())
    }

    #[test]
    fn a_record_edited_copied_or_moved_outside_the_host_is_refused() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path())?);
        let keys = Arc::new(crate::keys::Keys::ephemeral());
        let a = OrgStore::new(store.clone(), "acme", keys.clone());
        let b = OrgStore::new(store.clone(), "beta", keys);
        a.write("t", vec![(b"k".to_vec(), Some(b"approved".to_vec()))])?;
        let sealed = store.get("t", b"acme/k")?.expect("written");
        let tampered =
            |r: Result<Option<Vec<u8>>, StoreError>| matches!(r, Err(StoreError::Tampered { .. }));
        // Edited in place, seal kept.
        let mut edited = sealed.clone();
        edited[0] = b'A';
        store.write("t", vec![(b"acme/k".to_vec(), Some(edited))])?;
        assert!(tampered(a.get("t", b"k")));
        assert!(matches!(a.scan("t", b""), Err(StoreError::Tampered { .. })));
        // Written without a seal.
        store.write("t", vec![(b"acme/k".to_vec(), Some(b"approved".to_vec()))])?;
        assert!(tampered(a.get("t", b"k")));
        // A genuine sealed value copied to another key, area or org.
        store.write("t", vec![(b"acme/k2".to_vec(), Some(sealed.clone()))])?;
        assert!(tampered(a.get("t", b"k2")));
        store.write("u", vec![(b"acme/k".to_vec(), Some(sealed.clone()))])?;
        assert!(tampered(a.get("u", b"k")));
        store.write("t", vec![(b"beta/k".to_vec(), Some(sealed.clone()))])?;
        assert!(tampered(b.get("t", b"k")));
        // Put back as the host wrote it, it reads again; a conditional
        // write compares against the sealed bytes.
        store.write("t", vec![(b"acme/k".to_vec(), Some(sealed))])?;
        assert_eq!(a.get("t", b"k")?, Some(b"approved".to_vec()));
        assert!(a.write_if(
            "t",
            b"k",
            Some(b"approved"),
            vec![(b"k".to_vec(), Some(b"done".to_vec()))]
        )?);
        assert_eq!(a.get("t", b"k")?, Some(b"done".to_vec()));
        Ok(())
    }
}
