//! Operators: the people who approve an organisation's work, with a role.
//!
//! Approval policies name who decides (a role or a named operator) and an
//! escalation ladder; this module holds the org's operators and answers
//! "may this person decide at this step?". (Signing in, MFA and sessions
//! belong to the secure-access layer; here an operator is named with `--as`.)

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::store::{OrgStore, StoreError};

const AREA: &str = "operators";

/// An operator, role or approver is not valid, or the store failed.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// Not a role.
    #[error("unknown role {0:?} (expected admin, manager or user)")]
    UnknownRole(String),
    /// Not a role or an operator name.
    #[error(
        "invalid approver {0:?} (expected role:admin, role:manager, role:user or an operator name)"
    )]
    InvalidApprover(String),
    /// Not a valid operator name.
    #[error("invalid operator name {0:?} (1-64 letters, digits, '.', '_', '-' or '@')")]
    InvalidName(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an operator may do. Admins outrank managers, who outrank users.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Reviews and decides requests addressed to users.
    User,
    /// Decides requests addressed to managers.
    Manager,
    /// Decides anything, including escalated requests.
    Admin,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::User => "user",
            Role::Manager => "manager",
            Role::Admin => "admin",
        })
    }
}

impl FromStr for Role {
    type Err = OperatorError;
    fn from_str(s: &str) -> Result<Role, OperatorError> {
        match s {
            "user" => Ok(Role::User),
            "manager" => Ok(Role::Manager),
            "admin" => Ok(Role::Admin),
            other => Err(OperatorError::UnknownRole(other.to_string())),
        }
    }
}

/// Who may decide at one step of an escalation ladder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Approver {
    /// Anyone holding this role (or an admin).
    Role(Role),
    /// This operator (or an admin).
    Named(String),
}

impl fmt::Display for Approver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Approver::Role(r) => write!(f, "role:{r}"),
            Approver::Named(n) => f.write_str(n),
        }
    }
}

impl FromStr for Approver {
    type Err = OperatorError;
    fn from_str(s: &str) -> Result<Approver, OperatorError> {
        match s.strip_prefix("role:") {
            Some(role) => Ok(Approver::Role(role.parse()?)),
            None if valid_name(s) => Ok(Approver::Named(s.to_string())),
            None => Err(OperatorError::InvalidApprover(s.to_string())),
        }
    }
}

/// Whether `name` can name an operator: 1-64 letters, digits, `.`, `_`, `-`, `@`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

/// One operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operator {
    /// The name they decide as.
    pub name: String,
    /// Their role.
    pub role: Role,
}

impl Operator {
    /// Whether this operator may decide a request addressed to `approver`.
    pub fn may_decide(&self, approver: &Approver) -> bool {
        self.role == Role::Admin
            || match approver {
                Approver::Role(r) => self.role == *r,
                Approver::Named(n) => *n == self.name,
            }
    }
}

/// One organisation's operators.
pub struct Operators {
    store: OrgStore,
}

impl Operators {
    /// The operators of `store`'s organisation.
    pub fn new(store: OrgStore) -> Operators {
        Operators { store }
    }

    /// Add an operator or change their role.
    pub fn put(&self, operator: &Operator) -> Result<(), OperatorError> {
        if !valid_name(&operator.name) {
            return Err(OperatorError::InvalidName(operator.name.clone()));
        }
        Ok(self
            .store
            .put_json(AREA, format!("o/{}", operator.name).as_bytes(), operator)?)
    }

    /// One operator.
    pub fn get(&self, name: &str) -> Result<Option<Operator>, StoreError> {
        if !valid_name(name) {
            return Ok(None);
        }
        self.store.get_json(AREA, format!("o/{name}").as_bytes())
    }

    /// Every operator, by name.
    pub fn list(&self) -> Result<Vec<Operator>, StoreError> {
        self.store.scan_json(AREA, b"o/")
    }

    /// The employees a user is assigned (users start tasks for, and see the
    /// work of, these only; managers and admins see every employee).
    pub fn assigned(&self, name: &str) -> Result<Vec<String>, StoreError> {
        if !valid_name(name) {
            return Ok(Vec::new());
        }
        Ok(self
            .store
            .get_json(AREA, format!("a/{name}").as_bytes())?
            .unwrap_or_default())
    }

    /// Set the employees `name` is assigned.
    pub fn assign(&self, name: &str, employees: &[String]) -> Result<(), OperatorError> {
        if !valid_name(name) {
            return Err(OperatorError::InvalidName(name.to_string()));
        }
        Ok(self
            .store
            .put_json(AREA, format!("a/{name}").as_bytes(), &employees)?)
    }
}

impl Operator {
    /// Whether this operator may start tasks for, and see the work of,
    /// `employee`: managers and admins any, users those assigned to them.
    pub fn may_work_with(&self, employee: &str, assigned: &[String]) -> bool {
        self.role >= Role::Manager || assigned.iter().any(|e| e == employee)
    }
}

/// An API token: it acts as one operator, with a role no higher than
/// theirs. Only its SHA-256 is stored; the secret is shown once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// `tk-…`, the public part (lists, revocation, the audit log).
    pub id: String,
    /// Who it acts as.
    pub operator: String,
    /// The most it may do (never more than the operator's role now).
    pub role: Role,
    /// SHA-256 of the secret, hex.
    pub hash: String,
    /// Who made it.
    pub created_by: String,
    /// When.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// After this it is refused.
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// Revoked tokens are refused.
    pub revoked: bool,
}

/// The longest a token may live.
pub const MAX_TOKEN_DAYS: u32 = 365;

/// Why a token was refused (the API answers 401 to every one alike).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenRefused {
    /// Not a Clancy token, or unknown, or its secret does not match.
    #[error("the token is not valid")]
    Invalid,
    /// It expired.
    #[error("the token expired")]
    Expired,
    /// It was revoked.
    #[error("the token was revoked")]
    Revoked,
    /// Its operator is gone.
    #[error("the token's operator no longer exists")]
    NoOperator,
}

const TOKEN_PREFIX: &str = "clancy_";

fn token_hash(secret: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

impl Operators {
    /// Make a token for `operator` with `role` (at most theirs), valid for
    /// `days`. Returns it and the secret to show once.
    pub fn create_token(
        &self,
        operator: &Operator,
        role: Role,
        days: u32,
        by: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(Token, String), StoreError> {
        let mut random = [0u8; 32];
        getrandom::fill(&mut random)
            .map_err(|e| StoreError::Io(format!("no randomness for a token: {e}")))?;
        let id = format!("tk-{}", &hex::encode(&random[..6]));
        let secret = format!("{TOKEN_PREFIX}{id}_{}", hex::encode(&random[6..]));
        let token = Token {
            id,
            operator: operator.name.clone(),
            role: role.min(operator.role),
            hash: token_hash(&secret),
            created_by: by.to_string(),
            created_at: now,
            expires_at: now + chrono::Duration::days(i64::from(days.min(MAX_TOKEN_DAYS))),
            revoked: false,
        };
        self.store
            .put_json(AREA, format!("t/{}", token.id).as_bytes(), &token)?;
        Ok((token, secret))
    }

    /// Every token (never their secrets).
    pub fn tokens(&self) -> Result<Vec<Token>, StoreError> {
        self.store.scan_json(AREA, b"t/")
    }

    /// One token.
    pub fn token(&self, id: &str) -> Result<Option<Token>, StoreError> {
        if !id.starts_with("tk-") || id.len() > 32 || !valid_name(id) {
            return Ok(None);
        }
        self.store.get_json(AREA, format!("t/{id}").as_bytes())
    }

    /// Revoke a token. Returns it, or `None` if there is no such token.
    pub fn revoke_token(&self, id: &str) -> Result<Option<Token>, StoreError> {
        let Some(mut token) = self.token(id)? else {
            return Ok(None);
        };
        token.revoked = true;
        self.store
            .put_json(AREA, format!("t/{}", token.id).as_bytes(), &token)?;
        Ok(Some(token))
    }

    /// The operator a bearer `secret` acts as, with the token's role (never
    /// more than the operator's role now), and the token.
    pub fn authenticate(
        &self,
        secret: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Result<(Operator, Token), TokenRefused>, StoreError> {
        let Some(id) = secret
            .strip_prefix(TOKEN_PREFIX)
            .and_then(|rest| rest.rsplit_once('_'))
            .map(|(id, _)| id)
        else {
            return Ok(Err(TokenRefused::Invalid));
        };
        let Some(token) = self.token(id)? else {
            return Ok(Err(TokenRefused::Invalid));
        };
        let given = token_hash(secret);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            given.as_bytes(),
            token.hash.as_bytes(),
        )) {
            return Ok(Err(TokenRefused::Invalid));
        }
        if token.revoked {
            return Ok(Err(TokenRefused::Revoked));
        }
        if now >= token.expires_at {
            return Ok(Err(TokenRefused::Expired));
        }
        let Some(operator) = self.get(&token.operator)? else {
            return Ok(Err(TokenRefused::NoOperator));
        };
        let acting = Operator {
            role: token.role.min(operator.role),
            ..operator
        };
        Ok(Ok((acting, token)))
    }
}
