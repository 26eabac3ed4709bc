//! Employees submitted through the daemon (manifest + component), and the
//! capability diff that decides whether they wait for an admin.
//!
//! A submitted version is compiled and checked like any load, its
//! component pinned by SHA-256, and compared with the version in force.
//! What only narrows (grants or actions removed, targets or schedules
//! dropped, a new component with the same grants) takes effect at once.
//! Anything that may widen (a new employee, a grant, an action, a target,
//! a schedule or trigger added; any change of approval policy, budget or
//! limits, whichever way it goes) waits, with its diff, for an admin's
//! approval; the version in force keeps running until then. An upgrade is
//! approved only against the version it was compared with.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::manifest::Manifest;
use crate::operators::{Operator, Role};
use crate::store::StoreError;

use super::{Org, OrgError};

const AREA: &str = "upgrades";

/// The index of versions still waiting (`w/<id>`): the approvals queue and
/// a new submission read those, not every version ever submitted.
fn waiting_key(id: &str) -> Vec<u8> {
    format!("w/{id}").into_bytes()
}

/// Set once the index covers every waiting version (built once from the
/// records, for versions submitted before it existed).
const WAITING_INDEX_BUILT: &[u8] = b"w-index-built";

/// Where a submitted version stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpgradeStatus {
    /// Waiting for an admin.
    Pending,
    /// An admin approved it; it is in force.
    Approved,
    /// An admin refused it.
    Denied,
    /// The employee changed before anyone decided; submit again.
    Stale,
}

/// A version that waits for an admin.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Upgrade {
    /// `up-…`.
    pub id: String,
    /// The employee.
    pub employee: String,
    /// The submitted manifest (its component pinned).
    pub manifest: Manifest,
    /// What changes, a line per change (`+` added, `-` removed, `~` changed).
    pub diff: Vec<String>,
    /// Digest of the version it was compared with (`None`: a new employee).
    pub base: Option<String>,
    /// Who submitted it.
    pub requested_by: String,
    /// When.
    pub requested_at: DateTime<Utc>,
    /// Where it stands.
    pub status: UpgradeStatus,
    /// Who decided.
    pub decided_by: Option<String>,
}

/// What submitting did.
#[derive(Debug)]
pub enum Submitted {
    /// It only narrows (or changes nothing): in force now. The diff.
    InForce(Vec<String>),
    /// It may widen: waits for an admin.
    Waiting(Box<Upgrade>),
}

/// A submission or decision was refused.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The manifest or component is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// No such upgrade or employee.
    #[error("no {0:?} in this organisation")]
    Unknown(String),
    /// Decided already, or stale.
    #[error("upgrade {id} is {status:?}")]
    Decided {
        /// The upgrade.
        id: String,
        /// Where it stands.
        status: UpgradeStatus,
    },
    /// Only admins decide.
    #[error("{0}")]
    NotAllowed(String),
    /// The host failed.
    #[error(transparent)]
    Org(#[from] OrgError),
}

impl From<StoreError> for UpgradeError {
    fn from(e: StoreError) -> UpgradeError {
        UpgradeError::Org(OrgError::Store(e))
    }
}

/// Whether a diff line may widen what the employee can do.
pub fn widens(line: &str) -> bool {
    if line.starts_with("- ") || line.starts_with("~ component ") {
        return false;
    }
    if let Some(rest) = line.strip_prefix("~ grant ") {
        let what = rest.split_once(": ").map_or(rest, |(_, w)| w);
        return what.split("; ").any(|w| !w.starts_with("actions removed"));
    }
    true
}

fn digest_of(m: &Manifest) -> String {
    hex::encode(crate::digest::digest(m))
}

impl Org {
    /// Submit a version of an employee: `manifest` (TOML text; its
    /// `component` path is ignored) with its component's `bytes`, on the
    /// word of `by`.
    pub fn submit_employee(
        &self,
        manifest: &str,
        bytes: &[u8],
        by: &str,
    ) -> Result<Submitted, UpgradeError> {
        if bytes.len() > crate::runtime::MAX_COMPONENT_BYTES as usize {
            return Err(UpgradeError::Invalid(format!(
                "the component is {} bytes; the limit is {}",
                bytes.len(),
                crate::runtime::MAX_COMPONENT_BYTES
            )));
        }
        let mut after = Manifest::parse(manifest, "manifest", self.data_dir())
            .map_err(|e| UpgradeError::Invalid(e.to_string()))?;
        let sha = hex::encode(sha2::Sha256::digest(bytes));
        // Its `component` path is never read: the pinned copy of the bytes is.
        after.component = self.data_dir().join(self.component_path(&sha));
        after.component_sha256 = Some(sha);
        // Compiled and checked (imports against grants, the world) before
        // anything is kept.
        self.instantiate(after.clone(), bytes)
            .map_err(|e| match e {
                OrgError::Load(e) => UpgradeError::Invalid(e.to_string()),
                other => UpgradeError::Org(other),
            })?;
        self.pin(bytes)?;
        let before = self.stored_manifest(&after.name)?;
        let diff = match &before {
            Some(b) => super::registry::diff(b, &after),
            None => super::registry::describe(&after)
                .into_iter()
                .map(|l| format!("+ {l}"))
                .collect(),
        };
        if !diff.iter().any(|l| widens(l)) {
            if !diff.is_empty() {
                self.load(after)?;
            }
            return Ok(Submitted::InForce(diff));
        }
        // The same version submitted again while it waits is the same request.
        let base = before.as_ref().map(digest_of);
        if let Some(same) = self.pending_upgrades()?.into_iter().find(|u| {
            u.employee == after.name
                && u.base == base
                && digest_of(&u.manifest) == digest_of(&after)
        }) {
            return Ok(Submitted::Waiting(Box::new(same)));
        }
        let upgrade = Upgrade {
            id: format!("up-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            employee: after.name.clone(),
            base,
            manifest: after,
            diff,
            requested_by: by.to_string(),
            requested_at: self.now(),
            status: UpgradeStatus::Pending,
            decided_by: None,
        };
        self.org.write(
            AREA,
            vec![
                (
                    format!("u/{}", upgrade.id).into_bytes(),
                    Some(crate::store::encode(&upgrade)?),
                ),
                (waiting_key(&upgrade.id), Some(Vec::new())),
            ],
        )?;
        self.audit_operator_action(
            "employees-submitted",
            &format!("{} {}", upgrade.employee, upgrade.id),
            &format!(
                "submitted by {by}; waits for an admin: {}",
                upgrade.diff.join("; ")
            ),
        )?;
        Ok(Submitted::Waiting(Box::new(upgrade)))
    }

    /// One submitted version, by id.
    pub fn upgrade(&self, id: &str) -> Result<Option<Upgrade>, StoreError> {
        if !id.starts_with("up-") {
            return Ok(None);
        }
        self.org.get_json(AREA, format!("u/{id}").as_bytes())
    }

    /// The versions still waiting for an admin, oldest first: read through
    /// the waiting index, not every version ever submitted.
    pub fn pending_upgrades(&self) -> Result<Vec<Upgrade>, StoreError> {
        self.org.index_once(AREA, WAITING_INDEX_BUILT, || {
            Ok(self
                .upgrades()?
                .iter()
                .filter(|u| u.status == UpgradeStatus::Pending)
                .map(|u| (waiting_key(&u.id), Some(Vec::new())))
                .collect())
        })?;
        let mut waiting = Vec::new();
        let mut stale = Vec::new();
        for (key, _) in self.org.scan(AREA, b"w/")? {
            let id = String::from_utf8_lossy(&key[2..]).into_owned();
            match self.upgrade(&id)? {
                Some(u) if u.status == UpgradeStatus::Pending => waiting.push(u),
                _ => stale.push((key, None)),
            }
        }
        if !stale.is_empty() {
            self.org.write(AREA, stale)?;
        }
        waiting.sort_by(|a, b| (a.requested_at, &a.id).cmp(&(b.requested_at, &b.id)));
        Ok(waiting)
    }

    /// Every submitted version that waited, newest last.
    pub fn upgrades(&self) -> Result<Vec<Upgrade>, StoreError> {
        let mut all: Vec<Upgrade> = self.org.scan_json(AREA, b"u/")?;
        all.sort_by(|a, b| (a.requested_at, &a.id).cmp(&(b.requested_at, &b.id)));
        Ok(all)
    }

    /// An admin approves (the version comes into force, if the employee is
    /// still as it was compared) or denies a waiting version. Audited.
    pub fn decide_upgrade(
        &self,
        id: &str,
        approve: bool,
        by: &Operator,
    ) -> Result<Upgrade, UpgradeError> {
        if by.role != Role::Admin {
            return Err(UpgradeError::NotAllowed(format!(
                "{} is not an admin: only an admin approves what widens an employee",
                by.name
            )));
        }
        let key = format!("u/{id}");
        let Some(mut upgrade) = self.org.get_json::<Upgrade>(AREA, key.as_bytes())? else {
            return Err(UpgradeError::Unknown(id.to_string()));
        };
        if upgrade.status != UpgradeStatus::Pending {
            return Err(UpgradeError::Decided {
                id: id.to_string(),
                status: upgrade.status,
            });
        }
        let now_base = self
            .stored_manifest(&upgrade.employee)?
            .as_ref()
            .map(digest_of);
        upgrade.decided_by = Some(by.name.clone());
        upgrade.status = if !approve {
            UpgradeStatus::Denied
        } else if now_base != upgrade.base {
            UpgradeStatus::Stale
        } else {
            UpgradeStatus::Approved
        };
        if upgrade.status == UpgradeStatus::Approved {
            self.load(upgrade.manifest.clone())?;
        }
        self.org.write(
            AREA,
            vec![
                (key.into_bytes(), Some(crate::store::encode(&upgrade)?)),
                (waiting_key(&upgrade.id), None),
            ],
        )?;
        self.audit_operator_action(
            "employees-upgrade",
            &format!("{} {}", upgrade.employee, upgrade.id),
            &format!("{:?} by {}", upgrade.status, by.name).to_lowercase(),
        )?;
        if upgrade.status == UpgradeStatus::Stale {
            return Err(UpgradeError::Decided {
                id: id.to_string(),
                status: UpgradeStatus::Stale,
            });
        }
        Ok(upgrade)
    }
}

/// Who disabled an employee, and when.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Disabled {
    /// The admin.
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
}

impl Org {
    /// Whether `employee` is disabled (it starts no task, by any trigger).
    pub fn disabled(&self, employee: &str) -> Result<Option<Disabled>, StoreError> {
        self.org
            .get_json("employees", format!("disabled/{employee}").as_bytes())
    }

    /// Disable or enable a registered employee on the word of admin `by`.
    /// Audited. A disabled employee starts no task (API, schedule, trigger,
    /// `clancy run`); tasks already queued for it are not run.
    pub fn set_disabled(
        &self,
        employee: &str,
        disabled: bool,
        by: &Operator,
    ) -> Result<(), UpgradeError> {
        if by.role != Role::Admin {
            return Err(UpgradeError::NotAllowed(format!(
                "{} is not an admin: only an admin disables or enables employees",
                by.name
            )));
        }
        if self.stored_manifest(employee)?.is_none() {
            return Err(UpgradeError::Unknown(employee.to_string()));
        }
        let key = format!("disabled/{employee}").into_bytes();
        let value = if disabled {
            Some(crate::store::encode(&Disabled {
                by: by.name.clone(),
                at: self.now(),
            })?)
        } else {
            None
        };
        self.org.write("employees", vec![(key, value)])?;
        self.audit_operator_action(
            if disabled {
                "employees-disable"
            } else {
                "employees-enable"
            },
            employee,
            &format!(
                "{employee} {} by {}",
                if disabled { "disabled" } else { "enabled" },
                by.name
            ),
        )?;
        Ok(())
    }
}

impl Upgrade {
    /// The version as a reviewer reads it in the queue: a head line and its
    /// diff (escaped: names and scopes come from the submitted manifest).
    pub fn preview(&self) -> String {
        let mut text = format!(
            "[{}] {}: new version of {} submitted by {}; it may widen what the employee can do (an admin decides):",
            self.id,
            format!("{:?}", self.status).to_uppercase(),
            crate::human::line(&self.employee),
            crate::human::line(&self.requested_by),
        );
        for d in &self.diff {
            text.push_str("\n  ");
            text.push_str(&crate::human::line(d));
        }
        text
    }
}
