//! The vault: secrets the host keeps for an organisation (OAuth tokens of
//! its connections), sealed at rest.
//!
//! Each secret is encrypted with XChaCha20-Poly1305 under a versioned
//! master key. The sealed value carries the key's id, and the record's
//! identity (organisation, connection, field) is the associated data: a
//! ciphertext moved to another record, edited, or opened with another key
//! does not decrypt. Master keys come from `CLANCY_VAULT_KEYS`
//! (`ID:HEX,ID:HEX…`, newest last) or from `<data-dir>/keys/vault.key`
//! (one `ID HEX` line per version, readable by its owner only, made at
//! first use). `clancy keys rotate` adds a version, re-seals everything
//! under it, then drops the old versions.
//!
//! A secret in memory is a [`Secret`]: its `Debug` never shows it, and it
//! is wiped when dropped.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The environment variable that holds the master keys instead of the file.
pub const KEYS_ENV: &str = "CLANCY_VAULT_KEYS";

/// A secret value (a token, a code, a client secret). Shown only by
/// [`Secret::expose`]; its `Debug` says `Secret(…)`; wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wrap a secret.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(Zeroizing::new(value.into()))
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// A sealed secret as stored: the master key's id, the nonce and the
/// ciphertext (base64).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// The master key version it is sealed under.
    pub kid: u32,
    /// 24 random bytes.
    pub nonce: String,
    /// The ciphertext and its tag.
    pub ct: String,
}

/// Which record a secret belongs to: the associated data of its seal.
#[derive(Clone, Copy, Debug)]
pub struct RecordId<'a> {
    /// The organisation.
    pub org: &'a str,
    /// The connection (or other record) id.
    pub record: &'a str,
    /// The field (`access_token`, `refresh_token`, ...).
    pub field: &'a str,
}

impl RecordId<'_> {
    fn aad(&self) -> Vec<u8> {
        let mut aad = b"clancy-vault/1".to_vec();
        for part in [self.org, self.record, self.field] {
            aad.push(0);
            aad.extend_from_slice(&(part.len() as u64).to_be_bytes());
            aad.extend_from_slice(part.as_bytes());
        }
        aad
    }
}

/// The vault's keys could not be used, or a secret did not open.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// Reading or writing the key file failed.
    #[error("cannot use the vault key at {path}: {reason}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Others may read the key file: refused until it is private again.
    #[error(
        "the vault key {path} may be read by other users (mode {mode:o}): run `chmod 600 {path}`",
        path = .path.display()
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// The keys (file or environment) do not parse.
    #[error("the vault keys in {0} are damaged: {1}")]
    Damaged(String, String),
    /// The secret was sealed under a key version the host does not have.
    #[error("the secret was sealed under vault key {0}, which is not loaded")]
    UnknownKey(u32),
    /// The secret was edited, moved from another record, or sealed under
    /// another key with the same id.
    #[error("the sealed secret does not open for this record (tampered, moved or another key)")]
    Tampered,
    /// Keys from the environment are rotated where they are kept.
    #[error(
        "the vault keys come from {KEYS_ENV}: rotate them where that is set (add a version, newest last, run `clancy keys rotate`, then drop the old one)"
    )]
    FromEnvironment,
}

/// Key versions and their keys, oldest first.
type Versions = Vec<(u32, Zeroizing<[u8; 32]>)>;

/// The master keys, by version; the newest seals.
pub struct MasterKeys {
    versions: Versions,
    /// Where they came from (the file, or the environment).
    source: Source,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    File(PathBuf),
    Environment,
}

impl std::fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<u32> = self.versions.iter().map(|(id, _)| *id).collect();
        write!(f, "MasterKeys(versions {ids:?}, {:?})", self.source)
    }
}

/// Where the vault key of `data_dir` lives.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("vault.key")
}

fn parse_versions(text: &str, separator: char, origin: &str) -> Result<Versions, VaultError> {
    let damaged = |why: String| VaultError::Damaged(origin.to_string(), why);
    let mut versions: Versions = Vec::new();
    for item in text
        .split([separator, '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let (id, hex_key) = item.split_once([':', ' ']).ok_or_else(|| {
            damaged("expected ID:HEX (a version number and 64 hex digits)".into())
        })?;
        let id: u32 = id
            .trim()
            .parse()
            .map_err(|_| damaged(format!("{:?} is not a version number", id.trim())))?;
        let bytes = Zeroizing::new(
            hex::decode(hex_key.trim()).map_err(|_| damaged(format!("key {id} is not hex")))?,
        );
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| damaged(format!("key {id} is not 32 bytes")))?;
        if versions.iter().any(|(v, _)| *v == id) {
            return Err(damaged(format!("version {id} appears twice")));
        }
        if versions.last().is_some_and(|(v, _)| *v > id) {
            return Err(damaged("versions must be listed oldest first".into()));
        }
        versions.push((id, Zeroizing::new(key)));
    }
    if versions.is_empty() {
        return Err(damaged("no key".into()));
    }
    Ok(versions)
}

fn fresh_key() -> Result<Zeroizing<[u8; 32]>, VaultError> {
    let mut key = Zeroizing::new([0u8; 32]);
    getrandom::fill(key.as_mut()).map_err(|e| VaultError::Io {
        path: PathBuf::from("(randomness)"),
        reason: e.to_string(),
    })?;
    Ok(key)
}

impl MasterKeys {
    /// The keys from `CLANCY_VAULT_KEYS` if it is set, else from the key
    /// file of `data_dir` (made, with one fresh key, if there is none).
    pub fn load(data_dir: &Path) -> Result<MasterKeys, VaultError> {
        if let Some(text) = std::env::var_os(KEYS_ENV).filter(|v| !v.is_empty()) {
            let text = text.to_string_lossy().to_string();
            return Ok(MasterKeys {
                versions: parse_versions(&text, ',', KEYS_ENV)?,
                source: Source::Environment,
            });
        }
        let path = key_path(data_dir);
        let io = |e: std::io::Error| VaultError::Io {
            path: path.clone(),
            reason: e.to_string(),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => Zeroizing::new(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let keys = MasterKeys {
                    versions: vec![(1, fresh_key()?)],
                    source: Source::File(path.clone()),
                };
                std::fs::create_dir_all(data_dir.join("keys")).map_err(io)?;
                keys.write_file()?;
                return MasterKeys::load(data_dir);
            }
            Err(e) => return Err(io(e)),
        };
        if let Some(mode) = crate::keys::shared_mode(&path).map_err(io)? {
            return Err(VaultError::Exposed { path, mode });
        }
        Ok(MasterKeys {
            versions: parse_versions(&text, '\n', &path.display().to_string())?,
            source: Source::File(path),
        })
    }

    /// Keys that live only in memory (tests).
    pub fn ephemeral() -> MasterKeys {
        MasterKeys {
            versions: vec![(1, fresh_key().expect("the OS has randomness"))],
            source: Source::Environment,
        }
    }

    /// The version that seals.
    pub fn current(&self) -> u32 {
        self.versions.last().map_or(0, |(id, _)| *id)
    }

    /// The versions loaded, oldest first.
    pub fn versions(&self) -> Vec<u32> {
        self.versions.iter().map(|(id, _)| *id).collect()
    }

    fn key(&self, kid: u32) -> Option<&[u8; 32]> {
        self.versions
            .iter()
            .find(|(id, _)| *id == kid)
            .map(|(_, k)| &**k)
    }

    /// Seal `secret` for `record` under the current key.
    pub fn seal(&self, record: RecordId<'_>, secret: &Secret) -> Sealed {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        let (kid, key) = self
            .versions
            .last()
            .map(|(id, k)| (*id, &**k))
            .expect("master keys always hold a version");
        let cipher = chacha20poly1305::XChaCha20Poly1305::new(key.into());
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).expect("the OS has randomness");
        let ct = cipher
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: secret.expose().as_bytes(),
                    aad: &record.aad(),
                },
            )
            .expect("XChaCha20-Poly1305 encrypts any length a secret has");
        let b64 = base64::engine::general_purpose::STANDARD;
        Sealed {
            kid,
            nonce: b64.encode(nonce),
            ct: b64.encode(ct),
        }
    }

    /// Open what [`MasterKeys::seal`] made for `record`.
    pub fn open(&self, record: RecordId<'_>, sealed: &Sealed) -> Result<Secret, VaultError> {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        let key = self
            .key(sealed.kid)
            .ok_or(VaultError::UnknownKey(sealed.kid))?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let nonce = b64
            .decode(&sealed.nonce)
            .map_err(|_| VaultError::Tampered)?;
        let ct = b64.decode(&sealed.ct).map_err(|_| VaultError::Tampered)?;
        let nonce: [u8; 24] = nonce.try_into().map_err(|_| VaultError::Tampered)?;
        let cipher = chacha20poly1305::XChaCha20Poly1305::new(key.into());
        let plain = Zeroizing::new(
            cipher
                .decrypt(
                    (&nonce).into(),
                    Payload {
                        msg: &ct,
                        aad: &record.aad(),
                    },
                )
                .map_err(|_| VaultError::Tampered)?,
        );
        let text = std::str::from_utf8(&plain).map_err(|_| VaultError::Tampered)?;
        Ok(Secret::new(text))
    }

    /// Add a fresh version to the key file (it seals from now on); the old
    /// ones stay until [`MasterKeys::retire`]. Keys from the environment
    /// are rotated where they are kept.
    pub fn add_version(&mut self) -> Result<u32, VaultError> {
        if self.source == Source::Environment {
            return Err(VaultError::FromEnvironment);
        }
        let id = self.current() + 1;
        self.versions.push((id, fresh_key()?));
        self.write_file()?;
        Ok(id)
    }

    /// Drop every version but the current one from the key file (once
    /// nothing is sealed under them).
    pub fn retire(&mut self) -> Result<(), VaultError> {
        if self.source == Source::Environment {
            return Ok(());
        }
        let keep = self.versions.len().saturating_sub(1);
        self.versions.drain(..keep);
        self.write_file()
    }

    /// Write the versions to the key file: whole, under a temporary name,
    /// then renamed into place (a crash leaves the old file or the new).
    fn write_file(&self) -> Result<(), VaultError> {
        let Source::File(path) = &self.source else {
            return Ok(());
        };
        let io = |e: std::io::Error| VaultError::Io {
            path: path.clone(),
            reason: e.to_string(),
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!(".vault.key.{}", uuid::Uuid::new_v4().simple()));
        let mut text = Zeroizing::new(String::new());
        for (id, key) in &self.versions {
            text.push_str(&format!("{id} {}\n", hex::encode(**key)));
        }
        let written = crate::keys::new_private_file(&tmp).and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync_all()
        });
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id<'a>(record: &'a str, field: &'a str) -> RecordId<'a> {
        RecordId {
            org: "acme",
            record,
            field,
        }
    }

    #[test]
    fn a_sealed_secret_opens_only_for_its_record_untouched_and_under_its_key() {
        let keys = MasterKeys::ephemeral();
        let token = Secret::new("xoxb-the-real-token");
        let sealed = keys.seal(id("cn-1", "access_token"), &token);
        assert_eq!(
            keys.open(id("cn-1", "access_token"), &sealed).ok(),
            Some(token.clone())
        );
        // Swapped to another record or field: does not open.
        for (record, field) in [("cn-2", "access_token"), ("cn-1", "refresh_token")] {
            assert!(matches!(
                keys.open(id(record, field), &sealed),
                Err(VaultError::Tampered)
            ));
        }
        let other_org = RecordId {
            org: "beta",
            record: "cn-1",
            field: "access_token",
        };
        assert!(keys.open(other_org, &sealed).is_err());
        // One bit of the ciphertext flipped: does not open.
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut ct = b64.decode(&sealed.ct).expect("base64");
        ct[0] ^= 1;
        let tampered = Sealed {
            ct: b64.encode(ct),
            ..sealed.clone()
        };
        assert!(matches!(
            keys.open(id("cn-1", "access_token"), &tampered),
            Err(VaultError::Tampered)
        ));
        // Another key with the same id: does not open; an unknown id is named.
        let wrong = MasterKeys::ephemeral();
        assert!(matches!(
            wrong.open(id("cn-1", "access_token"), &sealed),
            Err(VaultError::Tampered)
        ));
        let unknown = Sealed { kid: 9, ..sealed };
        assert!(matches!(
            keys.open(id("cn-1", "access_token"), &unknown),
            Err(VaultError::UnknownKey(9))
        ));
        assert_eq!(format!("{token:?}"), "Secret(…)");
    }

    #[test]
    fn the_key_file_is_private_rotates_and_keeps_old_versions_until_retired() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut keys = MasterKeys::load(dir.path()).expect("made at first use");
        assert_eq!(keys.versions(), vec![1]);
        let sealed = keys.seal(id("cn-1", "access_token"), &Secret::new("t1"));
        assert_eq!(keys.add_version().expect("rotates"), 2);
        let reloaded = MasterKeys::load(dir.path()).expect("loads");
        assert_eq!(reloaded.versions(), vec![1, 2]);
        assert_eq!(
            reloaded
                .open(id("cn-1", "access_token"), &sealed)
                .map(|s| s.expose().to_string())
                .ok()
                .as_deref(),
            Some("t1")
        );
        assert_eq!(reloaded.seal(id("x", "y"), &Secret::new("z")).kid, 2);
        keys.retire().expect("retires");
        let after = MasterKeys::load(dir.path()).expect("loads");
        assert_eq!(after.versions(), vec![2]);
        assert!(matches!(
            after.open(id("cn-1", "access_token"), &sealed),
            Err(VaultError::UnknownKey(1))
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let path = key_path(dir.path());
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
            assert!(matches!(
                MasterKeys::load(dir.path()),
                Err(VaultError::Exposed { .. })
            ));
        }
    }
}
