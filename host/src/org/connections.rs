//! An organisation's OAuth connections: started by an admin (`clancy
//! connect`), finished when the provider sends the operator back with a
//! code and the single-use state, refreshed before their access token
//! expires (a rotated refresh token replaces the old), and revoked at the
//! provider (RFC 7009) and deleted here on demand. Their tokens are sealed
//! in the vault; nothing here ever returns, logs or audits one, except
//! [`Vault::connection_token`] to the connector that sends it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::{Org, OrgError};
use crate::approvals::Clock;
use crate::audit::AuditLog;
use crate::integrations::Integration;
use crate::oauth::{OAuthError, ProviderConfig, Tokens};
use crate::providers::Done;
use crate::store::OrgStore;
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

/// Where connectors remember the results of their writes, by key.
const WRITES_AREA: &str = "connector-writes";

fn write_key(id: &str, key: &str) -> Vec<u8> {
    use sha2::Digest as _;
    format!("{id}/{}", hex::encode(sha2::Sha256::digest(key.as_bytes()))).into_bytes()
}

/// The lock one connection's refreshes take (per process).
fn refresh_lock(org: &str, id: &str) -> Arc<std::sync::Mutex<()>> {
    static LOCKS: std::sync::LazyLock<
        std::sync::Mutex<std::collections::HashMap<String, Arc<std::sync::Mutex<()>>>>,
    > = std::sync::LazyLock::new(Default::default);
    let mut locks = LOCKS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    locks
        .entry(format!("{org}/{id}"))
        .or_insert_with(|| Arc::new(std::sync::Mutex::new(())))
        .clone()
}

/// Where the connection an integration uses is named.
fn binding_key(integration: Integration) -> Vec<u8> {
    format!("u/{}", integration.name()).into_bytes()
}

fn conn_key(id: &str) -> Vec<u8> {
    format!("c/{id}").into_bytes()
}

/// What reaches an organisation's sealed tokens: the connectors hold one
/// (a clone: cheap) to get an access token when they call a provider, and
/// the organisation's connection commands go through it too.
#[derive(Clone)]
pub struct Vault {
    org: OrgStore,
    audit: Arc<AuditLog>,
    clock: Arc<dyn Clock>,
    data_dir: PathBuf,
    keys: Arc<OnceLock<MasterKeys>>,
    bindings: Arc<std::sync::RwLock<Bindings>>,
}

/// Which connection each integration uses, as the organisation last read
/// it (every call to a provider asks). The organisation's writes of a
/// binding clear it; a read that raced with one is not kept.
#[derive(Default)]
pub(crate) struct Bindings {
    generation: u64,
    known: Option<BTreeMap<Integration, String>>,
}

impl Vault {
    fn org(&self) -> &str {
        self.org.org()
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn audit_operator_action(
        &self,
        action: &str,
        args: &str,
        result: &str,
    ) -> Result<(), OrgError> {
        super::audit_note(&self.audit, action, args, result)
    }

    /// The vault's master keys (loaded on first use).
    pub fn vault_keys(&self) -> Result<&MasterKeys, VaultError> {
        if let Some(k) = self.keys.get() {
            return Ok(k);
        }
        let keys = MasterKeys::load(self.data_dir())?;
        Ok(self.keys.get_or_init(|| keys))
    }

    /// The configured provider `name`.
    pub fn oauth_provider(&self, name: &str) -> Result<ProviderConfig, ConnectionError> {
        crate::oauth::load_providers(self.data_dir())?
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| ConnectionError::UnknownProvider(name.to_string()))
    }

    /// Which connection each integration uses (an integration not listed
    /// uses the sandbox workspace).
    pub fn bindings(&self) -> Result<BTreeMap<Integration, String>, StoreError> {
        let mut out = BTreeMap::new();
        for (key, bytes) in self.org.scan(AREA, b"u/")? {
            let name = String::from_utf8_lossy(&key[2..]).into_owned();
            if let (Some(i), Ok(id)) = (
                Integration::parse(&name),
                serde_json::from_slice::<String>(&bytes),
            ) {
                out.insert(i, id);
            }
        }
        Ok(out)
    }

    /// The connection `integration` uses, if an admin chose one.
    pub fn binding(&self, integration: Integration) -> Result<Option<String>, StoreError> {
        let generation = {
            let b = self
                .bindings
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(known) = &b.known {
                return Ok(known.get(&integration).cloned());
            }
            b.generation
        };
        let all = self.bindings()?;
        let bound = all.get(&integration).cloned();
        let mut b = self
            .bindings
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if b.generation == generation {
            b.known = Some(all);
        }
        Ok(bound)
    }

    /// A binding was written: the next call reads them from the store.
    fn forget_bindings(&self) {
        let mut b = self
            .bindings
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        b.generation += 1;
        b.known = None;
    }

    /// One connection.
    pub fn connection(&self, id: &str) -> Result<Option<Connection>, StoreError> {
        self.org.get_json(AREA, &conn_key(id))
    }

    pub(crate) fn store_tokens(
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

    pub(crate) fn mark(
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
        if status == ConnectionStatus::NeedsReauthorisation {
            self.notify_reauthorisation(&c, note);
        }
        Ok(())
    }

    /// Mark connection `id` as needing re-authorisation because `why`
    /// (the service refused its token): calls get `expired`, operators are
    /// told.
    pub fn expire(&self, id: &str, why: &str) -> Result<(), ConnectionError> {
        match self.connection(id)? {
            Some(c) if c.status == ConnectionStatus::Active => self.mark(
                c,
                ConnectionStatus::NeedsReauthorisation,
                &format!("{why}: an admin connects it again"),
            ),
            _ => Ok(()),
        }
    }

    /// The result of connection `id`'s write with idempotency `key`, if
    /// it happened.
    pub fn written(&self, id: &str, key: &str) -> Result<Option<Done>, StoreError> {
        self.org.get_json(WRITES_AREA, &write_key(id, key))
    }

    /// Remember the result of connection `id`'s write with idempotency `key`.
    pub fn remember_write(&self, id: &str, key: &str, done: &Done) -> Result<(), StoreError> {
        self.org.put_json(WRITES_AREA, &write_key(id, key), done)
    }

    /// Tell the people who watch every employee with a grant of the
    /// connection's integration that an admin must connect it again (the
    /// employees' notification targets that want `connection`). A failure
    /// to queue is logged: the audit entry is already there.
    fn notify_reauthorisation(&self, c: &Connection, why: &str) {
        let employees: Vec<crate::manifest::Manifest> =
            match self.org.scan_json("employees", b"manifest/") {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!("cannot read notification targets for {}: {e}", c.id);
                    return;
                }
            };
        let outbox = crate::notify::Outbox::new(self.org.clone());
        let mut sent = BTreeSet::new();
        for target in employees
            .iter()
            .filter(|m| m.grants.iter().any(|g| g.integration == c.integration))
            .flat_map(|m| &m.notify)
            .filter(|t| t.wants(crate::notify::Event::Connection))
        {
            // One notice per receiver, however many employees share it.
            if !sent.insert((target.url.clone(), format!("{:?}", target.format))) {
                continue;
            }
            let body = crate::notify::connection_payload(
                target.format,
                &c.id,
                &c.provider,
                c.integration.name(),
                why,
            );
            if let Err(e) =
                outbox.push_notice(target, crate::notify::Event::Connection, body, self.now())
            {
                tracing::error!("could not queue a connection notification: {e}");
            }
        }
    }

    /// The access token of connection `id`, for the connector that sends it:
    /// refreshed first when it is about to expire (a rotated refresh token
    /// replaces the old). A connection past its lifetime, revoked, or whose
    /// refresh the provider refuses is `Expired` (and marked so: an admin
    /// connects it again).
    pub fn connection_token(&self, id: &str) -> Result<Secret, ConnectionError> {
        self.token(id, false)
    }

    /// The access token of connection `id`, refreshed now whatever its
    /// expiry says (the service refused the one in force).
    pub fn refreshed_token(&self, id: &str) -> Result<Secret, ConnectionError> {
        self.token(id, true)
    }

    fn token(&self, id: &str, force: bool) -> Result<Secret, ConnectionError> {
        // One refresh at a time per connection: a rotated refresh token is
        // spent by the first, and the provider revokes a grant whose spent
        // token comes back.
        let lock = refresh_lock(self.org(), id);
        let _held = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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
        let due = force
            || c.access_expires_at
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
}

impl Org {
    /// The organisation's vault (what its connectors hold).
    pub fn vault(&self) -> Vault {
        Vault {
            org: self.org.clone(),
            audit: self.audit.clone(),
            clock: self.clock.clone(),
            data_dir: self.data_dir().to_path_buf(),
            keys: self.vault.clone(),
            bindings: self.bindings.clone(),
        }
    }

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
        self.vault().oauth_provider(name)
    }

    /// The access token of connection `id` (see [`Vault::connection_token`]).
    pub fn connection_token(&self, id: &str) -> Result<Secret, ConnectionError> {
        self.vault().connection_token(id)
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
        self.vault().store_tokens(&mut connection, tokens, keys)?;
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
        self.replace_lapsed(&connection)?;
        Ok(connection)
    }

    /// Connecting a provider again is how an admin mends a connection that
    /// needs re-authorisation or was revoked: if the integration used such
    /// a connection of the same provider, it uses the new one from now on
    /// (audited). A working connection in use is never replaced this way.
    fn replace_lapsed(&self, new: &Connection) -> Result<(), ConnectionError> {
        let Some(old) = self.vault().binding(new.integration)? else {
            return Ok(());
        };
        let lapsed = self
            .connection(&old)?
            .is_some_and(|c| c.provider == new.provider && c.status != ConnectionStatus::Active);
        if !lapsed {
            return Ok(());
        }
        let key = binding_key(new.integration);
        let written = self.org.put_json(AREA, &key, &new.id);
        self.vault().forget_bindings();
        written?;
        self.audit_operator_action(
            "connection-used",
            &new.id,
            &format!(
                "{} replaced {old}, which needed re-authorisation, for every employee's {} calls",
                new.id, new.integration
            ),
        )?;
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
        self.vault().connection(id)
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
        self.vault().mark(
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

    /// Which connection each integration uses (an integration not listed
    /// uses the sandbox workspace).
    pub fn bindings(&self) -> Result<BTreeMap<Integration, String>, StoreError> {
        self.vault().bindings()
    }

    /// On the word of admin `by`, every employee's calls to connection
    /// `id`'s integration go to the service through it from their next
    /// task on (instead of the sandbox workspace or another connection).
    pub fn use_connection(&self, id: &str, by: &str) -> Result<Connection, ConnectionError> {
        self.require_admin(by)?;
        let c = self
            .connection(id)?
            .ok_or_else(|| ConnectionError::Unknown(id.to_string()))?;
        if c.status != ConnectionStatus::Active {
            return Err(ConnectionError::Expired(id.to_string()));
        }
        let key = binding_key(c.integration);
        let written = self.org.put_json(AREA, &key, &c.id);
        self.vault().forget_bindings();
        written?;
        self.audit_operator_action(
            "connection-used",
            &c.id,
            &format!(
                "{by} made every employee's {} calls go to {} through {}",
                c.integration, c.provider, c.id
            ),
        )?;
        Ok(c)
    }

    /// On the word of admin `by`, `integration` goes back to the sandbox
    /// workspace from every employee's next task on. Whether it used a
    /// connection.
    pub fn use_sandbox(&self, integration: Integration, by: &str) -> Result<bool, ConnectionError> {
        self.require_admin(by)?;
        let key = binding_key(integration);
        let had = self.org.get(AREA, &key)?.is_some();
        let written = self.org.write(AREA, vec![(key, None)]);
        self.vault().forget_bindings();
        written?;
        self.audit_operator_action(
            "connection-unused",
            integration.name(),
            &format!("{by} made every employee's {integration} calls go to the sandbox workspace"),
        )?;
        Ok(had)
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
