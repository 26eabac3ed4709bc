//! The host façade: one organisation's data dir, store, audit log, providers
//! and runtime, wired together. The CLI and the tests drive Clancy through it.
//!
//! The data dir is opened once with ambient authority (as a cap-std `Dir`);
//! everything under it is reached through that `Dir`, except the sled store,
//! which sled opens by path inside it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use cap_std::fs::Dir;

use chrono::Utc;

use crate::approvals::{ActionRequest, Approval, ApprovalQueue, Status, policy_version};
use crate::audit::{AuditLog, Decision, Kind, Record};
use crate::manifest::{Integration, Manifest};
use crate::mediator::{Mediator, describe, execute_audited};
use crate::providers::Providers;
use crate::providers::files::Folders;
use crate::providers::sandbox::Sandbox;
use crate::runtime::{LoadError, LoadedEmployee, Runtime, imports};
use crate::store::{OrgStore, SledStore, Store, StoreError, valid_org};

mod explain;
mod rollback;
pub use rollback::{UndoError, UndoOutcome, UndoReport};

/// Opening the host or loading an employee failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The data dir is missing or unusable.
    #[error("{0}")]
    DataDir(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine could not be built.
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
    /// The employee could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// Whether opening may create the data dir.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataDirMode {
    /// Create it (and seed the sandbox) if missing.
    Create,
    /// It must exist already.
    Existing,
}

/// What `check` found about an employee.
#[derive(Debug, serde::Serialize)]
pub struct CheckReport {
    /// The validated manifest.
    pub manifest: Manifest,
    /// Every import of the component.
    pub imports: Vec<String>,
    /// Refused imports; empty means the employee may run.
    pub problems: Vec<String>,
}

/// One organisation's Clancy host.
pub struct Host {
    data_dir: PathBuf,
    data: Dir,
    store: Arc<dyn Store>,
    org: OrgStore,
    audit: Arc<AuditLog>,
    approvals: Arc<ApprovalQueue>,
    sandbox: Sandbox,
    runtime: OnceLock<Runtime>,
}

impl Host {
    /// Open the data dir for `org` with the embedded sled store.
    pub fn open(data_dir: &Path, org: &str, mode: DataDirMode) -> Result<Host, HostError> {
        let data = open_data_dir(data_dir, mode)?;
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&data_dir.join("store"))?);
        Host::with_store(data_dir, data, org, store)
    }

    /// Open with a given store (tests use this to inject failures).
    pub fn open_with_store(
        data_dir: &Path,
        org: &str,
        store: Arc<dyn Store>,
    ) -> Result<Host, HostError> {
        let data = open_data_dir(data_dir, DataDirMode::Create)?;
        Host::with_store(data_dir, data, org, store)
    }

    fn with_store(
        data_dir: &Path,
        data: Dir,
        org: &str,
        store: Arc<dyn Store>,
    ) -> Result<Host, HostError> {
        if !valid_org(org) {
            return Err(HostError::DataDir(format!(
                "invalid org name {org:?} (expected 1-64 lowercase letters, digits or '-')"
            )));
        }
        let org_store = OrgStore::new(store.clone(), org);
        Ok(Host {
            data_dir: data_dir.to_path_buf(),
            data,
            audit: Arc::new(AuditLog::new(org_store.clone())),
            approvals: Arc::new(ApprovalQueue::new(org_store.clone())),
            sandbox: Sandbox::new(org_store.clone()),
            org: org_store,
            store,
            runtime: OnceLock::new(),
        })
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The organisation.
    pub fn org(&self) -> &str {
        self.org.org()
    }

    /// The underlying store (shared by all orgs).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// This org's audit log.
    pub fn audit(&self) -> &Arc<AuditLog> {
        &self.audit
    }

    /// This org's sandbox workspace.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// The engine, built on first use.
    pub fn runtime(&self) -> Result<&Runtime, HostError> {
        if let Some(r) = self.runtime.get() {
            return Ok(r);
        }
        let runtime = Runtime::new().map_err(|e| HostError::Engine(e.to_string()))?;
        Ok(self.runtime.get_or_init(|| runtime))
    }

    /// The providers of this org: the sandbox workspace for every service,
    /// and this org's folders under `files/<org>/` in the data dir.
    pub fn providers(&self) -> Result<Providers, HostError> {
        let sandbox = Arc::new(self.sandbox.clone());
        let root = format!("files/{}", self.org());
        let io = |e: std::io::Error| {
            HostError::DataDir(format!("cannot open {root} in the data dir: {e}"))
        };
        self.data.create_dir_all(&root).map_err(io)?;
        let files = Folders::new(self.data.open_dir(&root).map_err(io)?);
        Ok(Providers {
            mail: sandbox.clone(),
            chat: sandbox.clone(),
            crm: sandbox.clone(),
            calendar: sandbox.clone(),
            ledger: sandbox,
            files: Arc::new(files),
        })
    }

    /// Validate an employee without running it: its manifest (already parsed)
    /// and its component's imports against its grants.
    pub fn check(&self, manifest: Manifest) -> Result<CheckReport, HostError> {
        let (_component, imports) = self.runtime()?.compile(&manifest)?;
        let problems = imports::check_imports(&manifest, &imports);
        Ok(CheckReport {
            manifest,
            imports,
            problems,
        })
    }

    /// Load an employee, ready to run tasks. Seeds the sandbox on first use.
    pub fn load(&self, manifest: Manifest) -> Result<LoadedEmployee, HostError> {
        self.sandbox.ensure_seeded()?;
        let mediator = Arc::new(Mediator::new(
            &manifest,
            self.audit.clone(),
            self.providers()?,
            self.approvals.clone(),
        ));
        let employee = manifest.name.clone();
        self.register_policies(&manifest)?;
        match self.runtime()?.load(manifest, mediator) {
            Ok(loaded) => Ok(loaded),
            Err(e @ LoadError::Imports { .. }) => {
                // An attempt to reach beyond the grants is itself worth an audit entry.
                let record = Record {
                    employee,
                    action: "load".into(),
                    decision: Some(Decision::Denied),
                    result: e.to_string(),
                    ..Record::default()
                };
                self.audit
                    .append(Kind::Refusal, record)
                    .map_err(|a| HostError::Store(a.0))?;
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// A human's decision on a queued action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Run it (the host executes it, once).
    Approve,
    /// Do not run it.
    Deny,
}

/// A decision could not be taken; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// No such request in this organisation.
    #[error("no approval request {0:?} in this organisation")]
    Unknown(String),
    /// The request was decided already (requests are single use).
    #[error("{id} was already decided ({status}); a request is decided once")]
    AlreadyDecided {
        /// The request.
        id: String,
        /// Its status.
        status: String,
    },
    /// Nobody decided in time; it is denied.
    #[error("{0} expired before anyone decided, so it is denied")]
    Expired(String),
    /// The stored action no longer matches the hash it was queued with.
    #[error("{0} no longer matches the action it was queued with; it was not executed")]
    Tampered(String),
    /// The employee's approval policy changed since the request was made.
    #[error(
        "{id}: the approval policy of {employee} changed since the request was made; it was not executed"
    )]
    PolicyChanged {
        /// The request.
        id: String,
        /// The employee.
        employee: String,
    },
    /// Approved, but the audit log could not record the execution; it stays
    /// approved and runs when the host can write its audit log again.
    #[error(
        "{0} is approved but could not be executed now (audit log unavailable); it will run on the next start"
    )]
    Deferred(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Host {
    /// This org's approval queue.
    pub fn approvals(&self) -> &ApprovalQueue {
        &self.approvals
    }

    fn register_policies(&self, manifest: &Manifest) -> Result<(), StoreError> {
        let versions: Vec<(String, String)> = manifest
            .grants
            .iter()
            .map(|g| {
                (
                    policy_key(g.integration, &g.scope),
                    policy_version(g.integration, &g.scope, &g.approval),
                )
            })
            .collect();
        self.org.write(
            "employees",
            vec![
                (
                    format!("policies/{}", manifest.name).into_bytes(),
                    Some(to_json(&versions)?),
                ),
                (
                    format!("manifest/{}", manifest.name).into_bytes(),
                    Some(to_json(manifest)?),
                ),
            ],
        )
    }

    /// The manifest `employee` was last loaded with.
    pub fn stored_manifest(&self, employee: &str) -> Result<Option<Manifest>, StoreError> {
        self.org
            .get_json("employees", format!("manifest/{employee}").as_bytes())
    }

    /// A mediator for `employee` as last loaded, for the host's own calls on
    /// its behalf (undo).
    fn mediator_for(&self, employee: &str) -> Result<Mediator, HostError> {
        let manifest = self.stored_manifest(employee)?.ok_or_else(|| {
            HostError::DataDir(format!(
                "{employee} has never been loaded in this organisation"
            ))
        })?;
        Ok(Mediator::new(
            &manifest,
            self.audit.clone(),
            self.providers()?,
            self.approvals.clone(),
        ))
    }

    fn current_policy_version(
        &self,
        request: &ActionRequest,
    ) -> Result<Option<String>, StoreError> {
        let key = format!("policies/{}", request.employee);
        let versions: Vec<(String, String)> = self
            .org
            .get_json("employees", key.as_bytes())?
            .unwrap_or_default();
        let wanted = policy_key(request.integration, &request.scope);
        Ok(versions
            .into_iter()
            .find(|(k, _)| *k == wanted)
            .map(|(_, v)| v))
    }

    /// Deny every pending request whose time ran out. Returns them.
    pub fn expire_overdue(&self) -> Result<Vec<Approval>, StoreError> {
        let now = Utc::now();
        let mut expired = Vec::new();
        for a in self.approvals.list()? {
            if a.status == Status::Pending && a.expires_at <= now {
                let next = Approval {
                    status: Status::Expired,
                    decided_by: Some("expiry".into()),
                    decided_at: Some(now),
                    ..a.clone()
                };
                if self.approvals.transition(&a, &next)? {
                    self.audit_decision(&next, "expired unanswered, so denied")?;
                    expired.push(next);
                }
            }
        }
        Ok(expired)
    }

    /// Execute every approved request that has not finished (after a crash). Returns them.
    pub fn resume_approved(&self) -> Result<Vec<Approval>, DecideError> {
        let mut resumed = Vec::new();
        for a in self.approvals.list()? {
            if a.status == Status::Approved {
                resumed.push(self.execute_approved(a)?);
            }
        }
        Ok(resumed)
    }

    fn audit_decision(&self, approval: &Approval, what: &str) -> Result<(), StoreError> {
        let r = &approval.request;
        let record = Record {
            employee: r.employee.clone(),
            task: r.task.clone(),
            interface: r.operation.interface().to_string(),
            scope: r.scope.clone(),
            action: r.operation.method().to_string(),
            reason: r.reason.clone(),
            result: what.to_string(),
            approval: Some(approval.id.clone()),
            ..Record::default()
        };
        self.audit
            .append(Kind::Decision, record)
            .map(|_| ())
            .map_err(|e| e.0)
    }

    /// Decide on one pending request. On approval the host executes exactly
    /// the queued action, once. `by` is who decided.
    pub fn decide(
        &self,
        id: &str,
        verdict: Verdict,
        by: &str,
        comment: Option<&str>,
    ) -> Result<Approval, DecideError> {
        let current = self
            .approvals
            .get(id)?
            .ok_or_else(|| DecideError::Unknown(id.to_string()))?;
        if current.status != Status::Pending {
            return Err(DecideError::AlreadyDecided {
                id: id.to_string(),
                status: format!("{:?}", current.status).to_lowercase(),
            });
        }
        if current.expires_at <= Utc::now() {
            self.expire_overdue()?;
            return Err(DecideError::Expired(id.to_string()));
        }
        if current.hash != current.request.hash() {
            return Err(DecideError::Tampered(id.to_string()));
        }
        if verdict == Verdict::Approve
            && self.current_policy_version(&current.request)?.as_deref()
                != Some(current.request.policy_version.as_str())
        {
            return Err(DecideError::PolicyChanged {
                id: id.to_string(),
                employee: current.request.employee.clone(),
            });
        }
        let next = Approval {
            status: if verdict == Verdict::Approve {
                Status::Approved
            } else {
                Status::Denied
            },
            decided_by: Some(by.to_string()),
            decided_at: Some(Utc::now()),
            comment: comment.map(str::to_string),
            ..current.clone()
        };
        if !self.approvals.transition(&current, &next)? {
            let status = self
                .approvals
                .get(id)?
                .map(|a| format!("{:?}", a.status).to_lowercase())
                .unwrap_or_default();
            return Err(DecideError::AlreadyDecided {
                id: id.to_string(),
                status,
            });
        }
        let verb = if verdict == Verdict::Approve {
            "approved"
        } else {
            "denied"
        };
        let what = match comment {
            Some(c) => format!("{verb} by {by}: {c}"),
            None => format!("{verb} by {by}"),
        };
        self.audit_decision(&next, &what)?;
        match verdict {
            Verdict::Approve => self.execute_approved(next),
            Verdict::Deny => Ok(next),
        }
    }

    /// Run an approved request through the audited provider path with its
    /// hash as idempotency key, then record how it went.
    fn execute_approved(&self, approval: Approval) -> Result<Approval, DecideError> {
        let r = &approval.request;
        let record = Record {
            employee: r.employee.clone(),
            task: r.task.clone(),
            interface: r.operation.interface().to_string(),
            scope: r.scope.clone(),
            action: r.operation.method().to_string(),
            args: r.operation.summary(),
            reason: r.reason.clone(),
            approval: Some(approval.id.clone()),
            ..Record::default()
        };
        let scope_value = r.scope.split_once(':').map(|(_, v)| v).unwrap_or("");
        let providers = self
            .providers()
            .map_err(|e| DecideError::Store(StoreError::Io(e.to_string())))?;
        let result = execute_audited(
            &self.audit,
            &providers,
            scope_value,
            record,
            &r.operation,
            Some(&approval.hash),
        )
        .map_err(|_| DecideError::Deferred(approval.id.clone()))?;
        let (status, outcome) = match &result {
            Ok(response) => (Status::Executed, response.summary()),
            Err(e) => (Status::Failed, describe(e)),
        };
        if status == Status::Executed {
            self.approvals
                .count_write(&r.employee, r.integration, &r.scope)?;
        }
        let next = Approval {
            status,
            outcome: Some(outcome),
            ..approval.clone()
        };
        self.approvals.transition(&approval, &next)?;
        Ok(next)
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Io(e.to_string()))
}

fn policy_key(integration: Integration, scope: &str) -> String {
    format!("{integration}/{scope}")
}

fn open_data_dir(path: &Path, mode: DataDirMode) -> Result<Dir, HostError> {
    if !path.exists() {
        match mode {
            DataDirMode::Existing => {
                return Err(HostError::DataDir(format!(
                    "no Clancy data dir at {} (run `clancy sandbox seed` or `clancy run` first, or pass --data-dir)",
                    path.display()
                )));
            }
            DataDirMode::Create => std::fs::create_dir_all(path).map_err(|e| {
                HostError::DataDir(format!(
                    "cannot create the data dir {}: {e}",
                    path.display()
                ))
            })?,
        }
    }
    if !path.is_dir() {
        return Err(HostError::DataDir(format!(
            "the data dir {} is not a directory",
            path.display()
        )));
    }
    Dir::open_ambient_dir(path, cap_std::ambient_authority()).map_err(|e| {
        HostError::DataDir(format!("cannot open the data dir {}: {e}", path.display()))
    })
}
