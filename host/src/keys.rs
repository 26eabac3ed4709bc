//! The host's secret key, kept outside the store, and what it signs.
//!
//! One 32-byte secret per data dir, in `<data-dir>/keys/host.key` (the
//! directory 0700, the file 0600, created on first open). From it come:
//!
//! - an Ed25519 signing key for audit **checkpoints**: the pair (sequence
//!   number, head hash) of an organisation's log, signed, so a log rewritten
//!   with every hash recomputed no longer matches what was signed
//!   (`clancy audit key` prints the public half to keep elsewhere);
//! - a **seal** key: every record the host writes to the store (approvals,
//!   widenings, registrations, operators, budgets, the outbox) carries an
//!   HMAC under it (see [`crate::store::OrgStore`]), so a record edited in
//!   the store is refused, not acted on.
//!
//! Someone who can read this key can forge both; that is why it lives
//! outside the store and may be kept on another volume than the store.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The key file's name inside `<data-dir>/keys/`.
pub const KEY_FILE: &str = "host.key";

/// The key directory could not be used; nothing was signed or sealed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Creating, reading or writing the key failed.
    #[error("cannot use the host key at {path}: {reason}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Others may read the key: refused until it is private again.
    #[error(
        "the host key {path} may be read by other users (mode {mode:o}): run `chmod 600 {path}` (and `chmod 700` on its directory)",
        path = .path.display()
    )]
    Exposed {
        /// The file or directory.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// The file does not hold a key.
    #[error("the host key {path} is damaged: {reason}")]
    Damaged {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The host's keys.
pub struct Keys {
    signing: SigningKey,
    seal: [u8; 32],
    secrets: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        write!(f, "Keys(public {})", self.public_key())
    }
}

/// Where the key of `data_dir` lives.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join(KEY_FILE)
}

impl Keys {
    /// Load the key of `data_dir`, creating it (and `keys/`) if there is none.
    pub fn load_or_create(data_dir: &Path) -> Result<Keys, KeyError> {
        match Keys::load(data_dir)? {
            Some(keys) => Ok(keys),
            None => Keys::create(data_dir),
        }
    }

    /// Load the key of `data_dir`; `None` if it was never created.
    pub fn load(data_dir: &Path) -> Result<Option<Keys>, KeyError> {
        let path = key_path(data_dir);
        let io = |e: std::io::Error| KeyError::Io {
            path: path.clone(),
            reason: e.to_string(),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        private(&path)?;
        if let Some(dir) = path.parent() {
            private(dir)?;
        }
        let damaged = |reason: &str| KeyError::Damaged {
            path: path.clone(),
            reason: reason.to_string(),
        };
        let bytes = hex::decode(text.trim()).map_err(|_| damaged("it is not hex"))?;
        let secret: [u8; 32] = bytes
            .try_into()
            .map_err(|_| damaged("it is not 32 bytes"))?;
        Ok(Some(Keys::from_secret(&secret)))
    }

    /// Create the key of `data_dir` (and `keys/`); if another process made
    /// one in the meantime, that one is loaded.
    pub fn create(data_dir: &Path) -> Result<Keys, KeyError> {
        let path = key_path(data_dir);
        let io = |e: std::io::Error| KeyError::Io {
            path: path.clone(),
            reason: e.to_string(),
        };
        let dir = data_dir.join("keys");
        std::fs::create_dir_all(&dir).map_err(io)?;
        set_mode(&dir, 0o700).map_err(io)?;
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| KeyError::Io {
            path: path.clone(),
            reason: format!("no randomness: {e}"),
        })?;
        // Written whole under a temporary name, then linked into place: a
        // crash never leaves half a key, and of two creators one wins.
        let tmp = dir.join(format!(".{KEY_FILE}.{}", uuid::Uuid::new_v4().simple()));
        {
            let mut file = new_private_file(&tmp).map_err(io)?;
            file.write_all(hex::encode(secret).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(io)?;
        }
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(Keys::from_secret(&secret)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Keys::load(data_dir)?
                .ok_or_else(|| KeyError::Damaged {
                    path,
                    reason: "it vanished while being created".into(),
                }),
            Err(e) => Err(io(e)),
        }
    }

    /// Keys that live only in memory (for stores nobody reopens: tests,
    /// throwaway sandboxes).
    pub fn ephemeral() -> Keys {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the OS has randomness");
        Keys::from_secret(&secret)
    }

    fn from_secret(secret: &[u8; 32]) -> Keys {
        let derive = |label: &[u8]| -> [u8; 32] {
            let mut mac =
                Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
            mac.update(label);
            mac.finalize().into_bytes().into()
        };
        Keys {
            signing: SigningKey::from_bytes(secret),
            seal: derive(b"clancy store seal v1"),
            secrets: derive(b"clancy secret box v1"),
        }
    }

    /// Encrypt `plain` (XChaCha20-Poly1305, random nonce) bound to the
    /// record it belongs to: `identity` is the associated data, so the
    /// ciphertext moved to another record does not decrypt.
    pub(crate) fn encrypt(&self, identity: &[&[u8]], plain: &[u8]) -> Vec<u8> {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        let cipher = chacha20poly1305::XChaCha20Poly1305::new((&self.secrets).into());
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).expect("the OS has randomness");
        let aad = identity_bytes(identity);
        let mut out = nonce.to_vec();
        out.extend(
            cipher
                .encrypt(
                    (&nonce).into(),
                    Payload {
                        msg: plain,
                        aad: &aad,
                    },
                )
                .expect("XChaCha20-Poly1305 encrypts any length a record has"),
        );
        out
    }

    /// Decrypt what [`Keys::encrypt`] made for `identity`; `None` if it was
    /// changed, made for another record or under another key.
    pub(crate) fn decrypt(&self, identity: &[&[u8]], sealed: &[u8]) -> Option<Vec<u8>> {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        if sealed.len() < 24 {
            return None;
        }
        let (nonce, body) = sealed.split_at(24);
        let cipher = chacha20poly1305::XChaCha20Poly1305::new((&self.secrets).into());
        let aad = identity_bytes(identity);
        cipher
            .decrypt(
                nonce.into(),
                Payload {
                    msg: body,
                    aad: &aad,
                },
            )
            .ok()
    }

    /// The public half of the checkpoint key, hex (what `clancy audit key` prints).
    pub fn public_key(&self) -> String {
        hex::encode(self.signing.verifying_key().as_bytes())
    }

    /// Sign the head of `org`'s log at `seq`.
    pub fn checkpoint(&self, org: &str, seq: u64, head: &str, time: DateTime<Utc>) -> Checkpoint {
        let mut cp = Checkpoint {
            org: org.to_string(),
            seq,
            head: head.to_string(),
            time,
            key: self.public_key(),
            signature: String::new(),
        };
        cp.signature = hex::encode(self.signing.sign(&cp.message()).to_bytes());
        cp
    }

    fn sealer(&self, parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.seal).expect("HMAC takes keys of any length");
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    /// The seal of `parts` (length-prefixed, so no two lists seal alike).
    pub(crate) fn seal(&self, parts: &[&[u8]]) -> [u8; 32] {
        self.sealer(parts).finalize().into_bytes().into()
    }

    /// Whether `tag` is the seal of `parts` (compared in constant time).
    pub(crate) fn sealed(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        self.sealer(parts).verify_slice(tag).is_ok()
    }
}

/// Length-prefixed parts, so no two identities are alike.
fn identity_bytes(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend((part.len() as u64).to_be_bytes());
        out.extend(*part);
    }
    out
}

/// A signed statement: `org`'s audit log had entry `seq` with hash `head`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The organisation.
    pub org: String,
    /// The entry signed (the log's length then).
    pub seq: u64,
    /// That entry's hash.
    pub head: String,
    /// When it was signed.
    pub time: DateTime<Utc>,
    /// The public key that signed it, hex.
    pub key: String,
    /// The Ed25519 signature over [`Checkpoint::message`], hex.
    pub signature: String,
}

impl Checkpoint {
    /// The bytes signed: `clancy-audit-checkpoint/v1`, org, seq, head and
    /// time (RFC 3339), one per line.
    pub fn message(&self) -> Vec<u8> {
        format!(
            "clancy-audit-checkpoint/v1\n{}\n{}\n{}\n{}",
            self.org,
            self.seq,
            self.head,
            self.time.to_rfc3339()
        )
        .into_bytes()
    }

    /// Whether `public` signed exactly this checkpoint.
    pub fn signed_by(&self, public: &VerifyingKey) -> bool {
        let Ok(bytes) = hex::decode(&self.signature) else {
            return false;
        };
        let Ok(signature) = ed25519_dalek::Signature::from_slice(&bytes) else {
            return false;
        };
        self.key == hex::encode(public.as_bytes())
            && public.verify(&self.message(), &signature).is_ok()
    }
}

/// Parse a public key as `clancy audit key` prints it (64 hex digits).
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes = hex::decode(text.trim()).map_err(|_| {
        "a public key is 64 hex digits, as `clancy audit key` prints it".to_string()
    })?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "a public key is 32 bytes (64 hex digits)".to_string())?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("not an Ed25519 public key: {e}"))
}

/// Append `checkpoint` to the checkpoint file at `path` (JSON Lines, created 0600).
pub fn append_checkpoint(path: &Path, checkpoint: &Checkpoint) -> std::io::Result<()> {
    write_checkpoint(path, checkpoint)?.sync_data()
}

/// Append a checkpoint line to `path` (created private) without syncing
/// it: the caller keeps the checkpoint elsewhere until it syncs the file.
pub fn write_checkpoint(path: &Path, checkpoint: &Checkpoint) -> std::io::Result<std::fs::File> {
    let mut line = serde_json::to_vec(checkpoint).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(&line)?;
    Ok(file)
}

/// Read a checkpoint file: every line that parses, and one message per line
/// that does not. A missing file has no checkpoints.
pub fn read_checkpoints(path: &Path) -> std::io::Result<(Vec<Checkpoint>, Vec<String>)> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(e),
    };
    let mut checkpoints = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(cp) => checkpoints.push(cp),
            Err(e) => bad.push(format!(
                "line {} of the checkpoint file {} is not a checkpoint ({e}): edited",
                i + 1,
                path.display()
            )),
        }
    }
    Ok((checkpoints, bad))
}

pub(crate) fn new_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

/// The mode of `path` if group or others may use it (`None`: private).
#[cfg(unix)]
pub(crate) fn shared_mode(path: &Path) -> std::io::Result<Option<u32>> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    Ok((mode & 0o077 != 0).then_some(mode))
}

#[cfg(not(unix))]
pub(crate) fn shared_mode(_path: &Path) -> std::io::Result<Option<u32>> {
    Ok(None)
}

/// Refuse a key file or directory that group or others may use.
#[cfg(unix)]
fn private(path: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .map_err(|e| KeyError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Exposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn private(_path: &Path) -> Result<(), KeyError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_only_unchanged_and_under_its_key() -> Result<(), KeyError> {
        let dir = tempfile::tempdir().map_err(|e| KeyError::Io {
            path: PathBuf::new(),
            reason: e.to_string(),
        })?;
        let keys = Keys::load_or_create(dir.path())?;
        let public = parse_public_key(&keys.public_key()).map_err(|reason| KeyError::Damaged {
            path: PathBuf::new(),
            reason,
        })?;
        let cp = keys.checkpoint("acme", 7, &"a".repeat(64), Utc::now());
        assert!(cp.signed_by(&public));
        let moved = Checkpoint {
            seq: 8,
            ..cp.clone()
        };
        assert!(!moved.signed_by(&public));
        let other = Keys::from_secret(&[9u8; 32]);
        let forged = other.checkpoint("acme", 7, &"a".repeat(64), cp.time);
        assert!(!forged.signed_by(&public));
        // The same key comes back on the next open.
        assert_eq!(
            Keys::load_or_create(dir.path())?.public_key(),
            keys.public_key()
        );
        Ok(())
    }
}
