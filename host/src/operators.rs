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
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
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
}
