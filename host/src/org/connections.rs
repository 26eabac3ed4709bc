//! An organisation's OAuth connections: started by an admin (`clancy
//! connect`), finished when the provider sends the operator back with a
//! code and the single-use state, refreshed before their access token
//! expires (a rotated refresh token replaces the old), and revoked at the
//! provider (RFC 7009) and deleted here on demand. Their tokens are sealed
//! in the vault; nothing here ever returns, logs or audits one, except
//! [`Org::connection_token`] to the connector that sends it.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::{Org, OrgError};
use crate::integrations::Integration;
use crate::oauth::{OAuthError, ProviderConfig, Tokens};
use crate::store::StoreError;
use crate::vault::{MasterKeys, RecordId, Sealed, Secret, VaultError};

const AREA: &str = "vault";
/// How long an operator has to approve a started connection.
const PENDING_MINUTES: i64 = 10;
/// An access token this close to its expiry is refreshed first.
const REFRESH_MARGIN_SECS: i64 = 60;

/// Where a connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectionStatus {
    /// Its tokens work (or refresh).
    Active,
    /// A refresh failed or it outlived its maximum lifetime: an admin
    /// connects again; calls get `expired` meanwhile.
    NeedsReauthorisation,
    /// Revoked: its tokens are deleted.
    Revoked,
}

/// A connection to a provider.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Connection {
    /// `cn-…`.
    pub id: String,
    /// The configured provider's name.
    pub provider: String,
    /// The integration it serves.
    pub integration: Integration,
    /// The provider scopes granted.
    pub scopes: Vec<String>,
    /// Where it stands.
    pub status: ConnectionStatus,
    /// The admin who connected it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// After this, an admin must connect again.
    pub expires_at: DateTime<Utc>,
    /// When the access token expires, if the provider said.
    pub access_expires_at: Option<DateTime<Utc>>,
    /// Refreshes so far.
    pub refreshes: u32,
    /// Why it needs re-authorisation, or was revoked.
    pub note: Option<String>,
    /// The access token, sealed (none once revoked).
    pub access: Option<Sealed>,
    /// The refresh token, sealed.
    pub refresh: Option<Sealed>,
}

/// A started authorization, kept (sealed) until the provider sends the
/// operator back; looked up by the hash of its state, spent once.
#[derive(Serialize, Deserialize)]
struct Pending {
    provider: String,
    by: String,
    scopes: Vec<String>,
    created_at: DateTime<Utc>,
    verifier: Sealed,
}

/// A connection could not be made, used, or revoked.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// No such provider is configured.
    #[error("no OAuth provider {0:?} is configured in oauth.toml")]
    UnknownProvider(String),
    /// No such connection.
    #[error("no connection {0:?} in this organisation")]
    Unknown(String),
    /// The callback's state is not one this host gave out (or it was spent
    /// or expired): refused, nothing exchanged.
    #[error("the authorization's state is unknown, spent or expired: refused")]
    BadState,
    /// The connection needs an admin to connect again (or was revoked).
    #[error("the connection {0} expired: an admin connects it again")]
    Expired(String),
    /// Only admins connect and revoke.
    #[error("{0}")]
    NotAllowed(String),
    /// The provider refused or failed.
    #[error(transparent)]
    OAuth(#[from] OAuthError),
    /// A sealed token did not open.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The store or audit log failed.
    #[error(transparent)]
    Org(#[from] OrgError),
}

impl From<StoreError> for ConnectionError {
    fn from(e: StoreError) -> ConnectionError {
        ConnectionError::Org(OrgError::Store(e))
    }
}

fn state_key(state: &str) -> Vec<u8> {
    use sha2::Digest as _;
    format!("p/{}", hex::encode(sha2::Sha256::digest(state.as_bytes()))).into_bytes()
}

fn conn_key(id: &str) -> Vec<u8> {
    format!("c/{id}").into_bytes()
}

impl Org {
    /// The vault's master keys (loaded on first use).
    pub fn vault_keys(&self) -> Result<&MasterKeys, VaultError> {
        if let Some(k) = self.vault.get() {
            return Ok(k);
        }
        let keys = MasterKeys::load(self.data_dir())?;
        Ok(self.vault.get_or_init(|| keys))
    }

    /// The configured provider `name`.
    pub fn oauth_provider(&self, name: &str) -> Result<ProviderConfig, ConnectionError> {
        crate::oauth::load_providers(self.data_dir())?
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| ConnectionError::UnknownProvider(name.to_string()))
    }

    fn require_admin(&self, by: &str) -> Result<(), ConnectionError> {
        match self.operators().get(by)? {
            Some(o) if o.role == crate::operators::Role::Admin => Ok(()),
            _ => Err(ConnectionError::NotAllowed(format!(
                "{by} is not an admin of this organisation: only an admin connects or revokes a service"
            ))),
        }
    }

    /// Start connecting `provider` on the word of admin `by`: the URL to
    /// send them to, asking only the scopes the registered employees'
    /// grants need. The state is single-use and lives 10 minutes.
    pub fn begin_connection(
        &self,
        provider: &str,
        by: &str,
    ) -> Result<(String, Secret), ConnectionError> {
        self.require_admin(by)?;
        let config = self.oauth_provider(provider)?;
        let scopes: BTreeSet<String> =
            crate::oauth::scopes_needed(config.integration, &self.registered()?);
        if scopes.is_empty() {
            return Err(ConnectionError::NotAllowed(format!(
                "no registered employee has a {} grant: there is nothing to connect for",
                config.integration
            )));
        }
        let started = config.start(&scopes)?;
        let key = state_key(started.state.expose());
        let keys = self.vault_keys()?;
        let pending = Pending {
            provider: config.name.clone(),
            by: by.to_string(),
            scopes: scopes.into_iter().collect(),
            created_at: self.now(),
            verifier: keys.seal(
                RecordId {
                    org: self.org(),
                    record: &String::from_utf8_lossy(&key),
                    field: "pkce_verifier",
                },
                &started.verifier,
            ),
        };
        self.org.put_json(AREA, &key, &pending)?;
        self.audit_operator_action(
            "connection-started",
            &config.name,
            &format!(
                "{by} started connecting {} asking for {}",
                config.name,
                pending.scopes.join(" ")
            ),
        )?;
        Ok((started.url, started.state))
    }

    /// Whether `state` is one this organisation gave out and has not spent
    /// (which organisation a callback belongs to).
    pub fn holds_authorization(&self, state: &str) -> Result<bool, StoreError> {
        Ok(self.org.get(AREA, &state_key(state))?.is_some())
    }

    /// Finish a connection with the `code` and `state` the provider sent
    /// back: the state must be one this host gave out, unspent and fresh
    /// (it is spent now, whatever happens next); the code is exchanged with
    /// its PKCE verifier; the tokens are sealed.
    pub fn finish_connection(
        &self,
        state: &Secret,
        code: &Secret,
    ) -> Result<Connection, ConnectionError> {
        let key = state_key(state.expose());
        let spent = self.org.get_json::<Pending>(AREA, &key)?;
        let Some(pending) = spent else {
            self.audit_operator_action(
                "connection-refused",
                "",
                "a callback carried a state this host did not give out (or spent)",
            )?;
            return Err(ConnectionError::BadState);
        };
        // Spent before anything else: a replayed callback finds nothing.
        if !self.org.write_if(
            AREA,
            &key,
            Some(&crate::store::encode(&pending)?),
            vec![(key.clone(), None)],
        )? {
            return Err(ConnectionError::BadState);
        }
        if self.now() - pending.created_at > Duration::minutes(PENDING_MINUTES) {
            self.audit_operator_action(
                "connection-refused",
                &pending.provider,
                "a callback came after its authorization expired",
            )?;
            return Err(ConnectionError::BadState);
        }
        let keys = self.vault_keys()?;
        let verifier = keys.open(
            RecordId {
                org: self.org(),
                record: &String::from_utf8_lossy(&key),
                field: "pkce_verifier",
            },
            &pending.verifier,
        )?;
        let config = self.oauth_provider(&pending.provider)?;
        let tokens = match config.exchange(code, &verifier) {
            Ok(t) => t,
            Err(e) => {
                self.audit_operator_action(
                    "connection-refused",
                    &pending.provider,
                    &format!("the code exchange failed: {e}"),
                )?;
                return Err(e.into());
            }
        };
        let now = self.now();
        let id = format!("cn-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut connection = Connection {
            id: id.clone(),
            provider: config.name.clone(),
            integration: config.integration,
            scopes: tokens.scopes.clone().unwrap_or(pending.scopes),
            status: ConnectionStatus::Active,
            created_by: pending.by.clone(),
            created_at: now,
            expires_at: now + Duration::from_std(config.max_lifetime).unwrap_or(Duration::days(90)),
            access_expires_at: None,
            refreshes: 0,
            note: None,
            access: None,
            refresh: None,
        };
        self.store_tokens(&mut connection, tokens, keys)?;
        self.org.put_json(AREA, &conn_key(&id), &connection)?;
        self.audit_operator_action(
            "connection-created",
            &id,
            &format!(
                "{} connected {} ({}) with {}",
                pending.by,
                config.name,
                config.integration,
                connection.scopes.join(" ")
            ),
        )?;
        Ok(connection)
    }

    fn store_tokens(
        &self,
        connection: &mut Connection,
        tokens: Tokens,
        keys: &MasterKeys,
    ) -> Result<(), ConnectionError> {
        let record = |field| RecordId {
            org: self.org(),
            record: &connection.id,
            field,
        };
        let access = keys.seal(record("access_token"), &tokens.access);
        let refresh = match &tokens.refresh {
            Some(r) => Some(keys.seal(record("refresh_token"), r)),
            // No rotation: the refresh token in force stays.
            None => connection.refresh.clone(),
        };
        connection.access = Some(access);
        connection.refresh = refresh;
        connection.access_expires_at = tokens
            .expires_in
            .and_then(|d| Duration::from_std(d).ok())
            .map(|d| self.now() + d);
        Ok(())
    }

    /// The organisation's connections (their tokens stay sealed).
    pub fn connections(&self) -> Result<Vec<Connection>, StoreError> {
        let mut all: Vec<Connection> = self.org.scan_json(AREA, b"c/")?;
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(all)
    }

    /// One connection.
    pub fn connection(&self, id: &str) -> Result<Option<Connection>, StoreError> {
        self.org.get_json(AREA, &conn_key(id))
    }

    fn mark(
        &self,
        mut c: Connection,
        status: ConnectionStatus,
        note: &str,
    ) -> Result<(), ConnectionError> {
        c.status = status;
        c.note = Some(note.to_string());
        if status == ConnectionStatus::Revoked {
            c.access = None;
            c.refresh = None;
        }
        self.org.put_json(AREA, &conn_key(&c.id), &c)?;
        self.audit_operator_action(
            if status == ConnectionStatus::Revoked {
                "connection-revoked"
            } else {
                "connection-expired"
            },
            &c.id,
            note,
        )?;
        Ok(())
    }

    /// The access token of connection `id`, for the connector that sends it:
    /// refreshed first when it is about to expire (a rotated refresh token
    /// replaces the old). A connection past its lifetime, revoked, or whose
    /// refresh the provider refuses is `Expired` (and marked so: an admin
    /// connects it again).
    pub fn connection_token(&self, id: &str) -> Result<Secret, ConnectionError> {
        let Some(mut c) = self.connection(id)? else {
            return Err(ConnectionError::Unknown(id.to_string()));
        };
        if c.status != ConnectionStatus::Active {
            return Err(ConnectionError::Expired(id.to_string()));
        }
        let now = self.now();
        if now >= c.expires_at {
            self.mark(
                c,
                ConnectionStatus::NeedsReauthorisation,
                "it outlived its maximum lifetime: an admin connects it again",
            )?;
            return Err(ConnectionError::Expired(id.to_string()));
        }
        let keys = self.vault_keys()?;
        let record = |field| RecordId {
            org: self.org(),
            record: id,
            field,
        };
        let due = c
            .access_expires_at
            .is_some_and(|at| at - Duration::seconds(REFRESH_MARGIN_SECS) <= now);
        if !due {
            let sealed = c
                .access
                .as_ref()
                .ok_or_else(|| ConnectionError::Expired(id.to_string()))?;
            return Ok(keys.open(record("access_token"), sealed)?);
        }
        let Some(sealed_refresh) = c.refresh.clone() else {
            self.mark(
                c,
                ConnectionStatus::NeedsReauthorisation,
                "its access token expired and it has no refresh token",
            )?;
            return Err(ConnectionError::Expired(id.to_string()));
        };
        let refresh = keys.open(record("refresh_token"), &sealed_refresh)?;
        let config = self.oauth_provider(&c.provider)?;
        match config.refresh(&refresh) {
            Ok(tokens) => {
                let access = tokens.access.clone();
                self.store_tokens(&mut c, tokens, keys)?;
                c.refreshes += 1;
                self.org.put_json(AREA, &conn_key(id), &c)?;
                Ok(access)
            }
            Err(OAuthError::Refused(why)) => {
                self.mark(
                    c,
                    ConnectionStatus::NeedsReauthorisation,
                    &format!(
                        "the provider refused its refresh ({why}): an admin connects it again"
                    ),
                )?;
                Err(ConnectionError::Expired(id.to_string()))
            }
            // The provider could not be reached: try again next time.
            Err(e) => Err(e.into()),
        }
    }

    /// Revoke connection `id` on the word of admin `by`: its tokens are
    /// revoked at the provider where it has an endpoint (RFC 7009) and
    /// deleted here either way; calls using it get `expired` from now on.
    /// Whether the provider confirmed the revocation.
    pub fn revoke_connection(&self, id: &str, by: &str) -> Result<bool, ConnectionError> {
        self.require_admin(by)?;
        let Some(c) = self.connection(id)? else {
            return Err(ConnectionError::Unknown(id.to_string()));
        };
        let mut confirmed = false;
        let mut failure = None;
        if let (Some(sealed), Ok(config)) = (
            c.refresh.clone().or(c.access.clone()),
            self.oauth_provider(&c.provider),
        ) {
            let refresh = c.refresh.is_some();
            let field = if refresh {
                "refresh_token"
            } else {
                "access_token"
            };
            let keys = self.vault_keys()?;
            if let Ok(token) = keys.open(
                RecordId {
                    org: self.org(),
                    record: id,
                    field,
                },
                &sealed,
            ) {
                match config.revoke(&token, refresh) {
                    Ok(said) => confirmed = said,
                    Err(e) => failure = Some(e.to_string()),
                }
            }
        }
        self.mark(
            c,
            ConnectionStatus::Revoked,
            &format!(
                "revoked by {by}; {}",
                match (confirmed, &failure) {
                    (true, _) => "the provider confirmed".to_string(),
                    (false, Some(why)) => format!(
                        "the provider did not confirm ({why}); its tokens are deleted here"
                    ),
                    (false, None) => {
                        "the provider has no revocation endpoint; its tokens are deleted here"
                            .to_string()
                    }
                }
            ),
        )?;
        Ok(confirmed)
    }

    /// Re-seal every token under the newest vault key (after
    /// [`MasterKeys::add_version`]). How many secrets were re-sealed.
    pub fn reseal_connections(&self, keys: &MasterKeys) -> Result<usize, ConnectionError> {
        let mut count = 0;
        for mut c in self.connections()? {
            let id = c.id.clone();
            let record = |field| RecordId {
                org: self.org(),
                record: &id,
                field,
            };
            for (field, slot) in [
                ("access_token", &mut c.access),
                ("refresh_token", &mut c.refresh),
            ] {
                if let Some(sealed) = slot.as_ref() {
                    let secret = keys.open(record(field), sealed)?;
                    *slot = Some(keys.seal(record(field), &secret));
                    count += 1;
                }
            }
            self.org.put_json(AREA, &conn_key(&id), &c)?;
        }
        // Authorizations started but not finished: their verifiers too.
        for (key, bytes) in self.org.scan(AREA, b"p/")? {
            let mut pending: Pending = crate::store::decode(AREA, &bytes)?;
            let record = RecordId {
                org: self.org(),
                record: &String::from_utf8_lossy(&key),
                field: "pkce_verifier",
            };
            let verifier = keys.open(record, &pending.verifier)?;
            pending.verifier = keys.seal(record, &verifier);
            self.org.put_json(AREA, &key, &pending)?;
            count += 1;
        }
        Ok(count)
    }
}
