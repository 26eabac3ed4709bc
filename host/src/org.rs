//! The organisation façade: [`Org`] wires one organisation's data dir,
//! store, audit log, approval queue, meter, outbox, providers, registered
//! employees and runtime together. The CLI and the tests drive Clancy
//! through it; it never reaches a provider itself (that is the mediator's
//! executor's job).
//!
//! The data dir is opened once with ambient authority (as a cap-std `Dir`);
//! everything under it is reached through that `Dir`, except the sled store,
//! which sled opens by path inside it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cap_std::fs::Dir;
use sha2::Digest as _;

use crate::approvals::{Approval, ApprovalQueue, Clock, SystemClock};
use crate::audit::{AuditLog, Decision, Kind, Record};
use crate::limits::Meter;
use crate::manifest::Manifest;
use crate::mediator::{Mediator, Wiring};
use crate::notify::{Delivery, Event, Outbox};
use crate::operators::{Operator, Operators, Role};
use crate::providers::Providers;
use crate::providers::files::Folders;
use crate::providers::sandbox::Sandbox;
use crate::runtime::{LoadError, LoadedEmployee, Runtime, imports};
use crate::store::{OrgStore, SledStore, Store, StoreError, valid_org};

pub mod connections;
mod decisions;
mod explain;
mod lifecycle;
mod registry;
mod rollback;
mod schedules;
mod tasks;
mod triggers;
mod upgrades;
pub use connections::{Connection, ConnectionError, ConnectionStatus};
pub use decisions::{DecideError, Verdict};
pub use lifecycle::Deleted;
pub use registry::describe as describe_employee;
pub use rollback::{UndoError, UndoOutcome, UndoReport};
pub use tasks::{MAX_QUEUED, TaskError, TaskRecord, TaskState, TasksRead};
pub use upgrades::{Disabled, Submitted, Upgrade, UpgradeError, UpgradeStatus, widens};

/// Opening the host or loading an employee failed.
#[derive(Debug, thiserror::Error)]
pub enum OrgError {
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
    /// An operator, role or approver is invalid.
    #[error(transparent)]
    Operator(#[from] crate::operators::OperatorError),
    /// The one acting may not do this; the text says why.
    #[error("{0}")]
    NotAllowed(String),
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

/// One organisation, wired: what the CLI (and later the daemon) works on.
pub struct Org {
    data_dir: PathBuf,
    data: Dir,
    store: Arc<dyn Store>,
    org: OrgStore,
    keys: Arc<crate::keys::Keys>,
    audit: Arc<AuditLog>,
    approvals: Arc<ApprovalQueue>,
    outbox: Arc<Outbox>,
    meter: Arc<Meter>,
    clock: Arc<dyn Clock>,
    sandbox: Sandbox,
    /// The engine, shared by every org a process serves.
    runtime: Arc<OnceLock<Runtime>>,
    /// Employees loaded to hear decisions, by name, with the manifest they were loaded from.
    reactors: Mutex<HashMap<String, (String, Arc<LoadedEmployee>)>>,
    /// The vault's master keys, loaded on first use.
    vault: Arc<OnceLock<crate::vault::MasterKeys>>,
    /// Which connection each integration uses, as last read.
    bindings: Arc<std::sync::RwLock<connections::Bindings>>,
}

/// The store's list of organisations (one key per name).
const ORGS_AREA: &str = "orgs";

impl Org {
    /// Open the data dir for `org` with the embedded sled store.
    pub fn open(data_dir: &Path, org: &str, mode: DataDirMode) -> Result<Org, OrgError> {
        let data = open_data_dir(data_dir, mode)?;
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&data_dir.join("store"))?);
        Org::with_store(data_dir, data, org, store, mode == DataDirMode::Create)
    }

    /// Open every organisation of the data dir (each one any command made
    /// records in with `--org`), `first` first (made if new): one store and
    /// one engine for all.
    pub fn open_all(
        data_dir: &Path,
        first: &[&str],
        mode: DataDirMode,
    ) -> Result<Vec<Org>, OrgError> {
        let data = open_data_dir(data_dir, mode)?;
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&data_dir.join("store"))?);
        let mut names: Vec<String> = first.iter().map(|n| n.to_string()).collect();
        for (key, _) in store.scan(ORGS_AREA, b"")? {
            let name = String::from_utf8_lossy(&key).to_string();
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let runtime = Arc::new(OnceLock::new());
        let mut orgs = Vec::new();
        for name in names {
            let mut org = Org::with_store(
                data_dir,
                data.try_clone().map_err(|e| {
                    OrgError::DataDir(format!("cannot open {}: {e}", data_dir.display()))
                })?,
                &name,
                store.clone(),
                true,
            )?;
            org.runtime = runtime.clone();
            orgs.push(org);
        }
        Ok(orgs)
    }

    /// The organisations of the data dir, by name.
    pub fn org_names(&self) -> Result<Vec<String>, OrgError> {
        Ok(self
            .store
            .scan(ORGS_AREA, b"")?
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k).to_string())
            .collect())
    }

    /// Open with a given store (tests use this to inject failures).
    pub fn open_with_store(
        data_dir: &Path,
        org: &str,
        store: Arc<dyn Store>,
    ) -> Result<Org, OrgError> {
        let data = open_data_dir(data_dir, DataDirMode::Create)?;
        Org::with_store(data_dir, data, org, store, true)
    }

    fn with_store(
        data_dir: &Path,
        data: Dir,
        org: &str,
        store: Arc<dyn Store>,
        register: bool,
    ) -> Result<Org, OrgError> {
        if !valid_org(org) {
            return Err(OrgError::DataDir(format!(
                "invalid org name {org:?} (expected 1-64 lowercase letters, digits or '-')"
            )));
        }
        let key_error = |e: crate::keys::KeyError| OrgError::DataDir(e.to_string());
        let keys = match crate::keys::Keys::load(data_dir).map_err(key_error)? {
            Some(keys) => keys,
            // A new key over records sealed with a lost one would make every
            // record read as tampered: say what is missing instead.
            None if store
                .get("audit", format!("{org}/head").as_bytes())?
                .is_some() =>
            {
                return Err(OrgError::DataDir(format!(
                    "the data dir has records but no host key at {}: it was removed or moved; restore it (records and checkpoints cannot be read or checked without it)",
                    crate::keys::key_path(data_dir).display()
                )));
            }
            None => crate::keys::Keys::create(data_dir).map_err(key_error)?,
        };
        let keys = Arc::new(keys);
        // Known to the data dir from its first use that may create records on.
        if register && store.get(ORGS_AREA, org.as_bytes())?.is_none() {
            store.write(
                ORGS_AREA,
                vec![(org.as_bytes().to_vec(), Some(b"{}".to_vec()))],
            )?;
        }
        let org_store = OrgStore::new(store.clone(), org, keys.clone());
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let audit = audit_log(
            &org_store,
            &keys,
            data_dir.join(DEFAULT_CHECKPOINT_FILE),
            &clock,
        );
        Ok(Org {
            data_dir: data_dir.to_path_buf(),
            data,
            keys,
            audit: Arc::new(audit),
            approvals: Arc::new(ApprovalQueue::new(org_store.clone(), clock.clone())),
            outbox: Arc::new(Outbox::new(org_store.clone())),
            meter: Arc::new(Meter::new(org_store.clone(), clock.clone())),
            clock,
            sandbox: Sandbox::new(org_store.clone()),
            org: org_store,
            store,
            runtime: Arc::new(OnceLock::new()),
            reactors: Mutex::new(HashMap::new()),
            vault: Arc::new(OnceLock::new()),
            bindings: Arc::default(),
        })
    }

    /// Use `clock` for approvals, expiry, escalation and notifications
    /// (tests drive time with a [`crate::approvals::ManualClock`]). Call it
    /// before loading employees.
    pub fn use_clock(&mut self, clock: Arc<dyn Clock>) {
        self.approvals = Arc::new(ApprovalQueue::new(self.org.clone(), clock.clone()));
        self.meter = Arc::new(Meter::new(self.org.clone(), clock.clone()));
        self.clock = clock;
    }

    /// Append signed checkpoints to `file` instead of
    /// `<data-dir>/checkpoints.jsonl` (keep it where whoever can write the
    /// store cannot). Call it before loading employees.
    pub fn use_checkpoint_file(&mut self, file: PathBuf) {
        self.audit = Arc::new(audit_log(&self.org, &self.keys, file, &self.clock));
    }

    /// The public half of the host key, hex: what checkpoints are signed with.
    pub fn public_key(&self) -> String {
        self.keys.public_key()
    }

    /// The audit log and this org's signed checkpoints as JSON Lines (an
    /// entry per line, then `{"checkpoint": …}` lines), to verify elsewhere
    /// with `clancy audit verify --export FILE --public-key KEY`. The export
    /// itself is on record (its last entry), with who asked for it.
    pub fn audit_export(&self, by: &str) -> Result<String, OrgError> {
        let mut text = Vec::new();
        self.audit_export_to(by, &mut text)?;
        String::from_utf8(text).map_err(|e| OrgError::DataDir(format!("cannot encode: {e}")))
    }

    /// [`Org::audit_export`], written to `out` a page of the log at a time
    /// (memory does not grow with the log).
    pub fn audit_export_to(&self, by: &str, out: &mut dyn std::io::Write) -> Result<(), OrgError> {
        // On record before a byte leaves: an export cut short was still (partly) made.
        self.audit_operator_action(
            "audit-export",
            "",
            &format!("the audit log was exported by {by}"),
        )?;
        let anchors = self.audit_anchors(None, None)?;
        let failed = |e: std::io::Error| OrgError::DataDir(format!("cannot write the export: {e}"));
        let encode = |e: serde_json::Error| OrgError::DataDir(format!("cannot encode: {e}"));
        // The export covers the log as it is now, not what is appended while it is written.
        self.audit.for_each_page(|page| {
            for e in page {
                serde_json::to_writer(&mut *out, e).map_err(encode)?;
                out.write_all(b"\n").map_err(failed)?;
            }
            Ok::<(), OrgError>(())
        })?;
        for cp in anchors.checkpoints.iter().filter(|c| c.org == self.org()) {
            serde_json::to_writer(&mut *out, &serde_json::json!({ "checkpoint": cp }))
                .map_err(encode)?;
            out.write_all(b"\n").map_err(failed)?;
        }
        out.flush().map_err(failed)?;
        Ok(())
    }

    /// The checkpoints in the checkpoint file (or `file`), to verify the log
    /// against, signed by `public` (by default this data dir's own key).
    pub fn audit_anchors(
        &self,
        file: Option<&Path>,
        public: Option<ed25519_dalek::VerifyingKey>,
    ) -> Result<crate::audit::Anchors, OrgError> {
        // The checkpoints due over entries appended so far are written first.
        self.audit.settle()?;
        let file = file
            .or(self.audit.checkpoint_file())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.data_dir.join(DEFAULT_CHECKPOINT_FILE));
        let (checkpoints, problems) = crate::keys::read_checkpoints(&file).map_err(|e| {
            OrgError::DataDir(format!(
                "cannot read the checkpoint file {}: {e}",
                file.display()
            ))
        })?;
        let public = match public {
            Some(p) => p,
            None => {
                crate::keys::parse_public_key(&self.keys.public_key()).map_err(OrgError::DataDir)?
            }
        };
        Ok(crate::audit::Anchors {
            public,
            checkpoints,
            problems,
        })
    }

    /// Verify this org's log against its stored head, `expected_head` (if
    /// given) and every checkpoint in the checkpoint file, signed by this
    /// data dir's key.
    pub fn verify_audit(
        &self,
        expected_head: Option<&str>,
    ) -> Result<crate::audit::Verification, OrgError> {
        let anchors = self.audit_anchors(None, None)?;
        Ok(self.audit.verify(expected_head, Some(&anchors))?)
    }

    /// Now, by the host's clock.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// This org's operators (who may decide requests).
    pub fn operators(&self) -> Operators {
        Operators::new(self.org.clone())
    }

    /// Add an operator (or change their role) on the word of `by`. The
    /// first operator may be added by anyone (that is how an org gets its
    /// first admin); once the org has an admin, only an admin may add or
    /// change operators. Audited.
    pub fn add_operator(&self, operator: &Operator, by: Option<&str>) -> Result<(), OrgError> {
        let operators = self.operators();
        let admins: Vec<Operator> = operators
            .list()?
            .into_iter()
            .filter(|o| o.role == Role::Admin)
            .collect();
        if !admins.is_empty() && !admins.iter().any(|a| Some(a.name.as_str()) == by) {
            return Err(OrgError::NotAllowed(format!(
                "{} may not add or change operators: this organisation has an admin, so only an admin may (pass --as ADMIN)",
                by.unwrap_or("someone unnamed")
            )));
        }
        let by = by.unwrap_or("the first operator's setup");
        let before = operators.get(&operator.name)?;
        if before.as_ref().is_some_and(|b| b.role == Role::Admin)
            && operator.role != Role::Admin
            && admins.len() == 1
        {
            return Err(OrgError::NotAllowed(format!(
                "{} is the organisation's only admin: make another admin first",
                operator.name
            )));
        }
        operators.put(operator)?;
        // A changed role takes effect at once: their sessions end.
        if before.is_some_and(|b| b.role != operator.role) {
            self.accounts().end_sessions_of(&operator.name)?;
        }
        self.audit_operator_action(
            "operators-add",
            &format!("{} as {}", operator.name, operator.role),
            &format!("{} is {} (set by {by})", operator.name, operator.role),
        )
    }

    /// Assign `name` the employees in `employees` (each registered), on the
    /// word of admin `by`. Audited.
    pub fn assign(&self, name: &str, employees: &[String], by: &str) -> Result<(), OrgError> {
        let operators = self.operators();
        if operators.get(by)?.is_none_or(|o| o.role != Role::Admin) {
            return Err(OrgError::NotAllowed(format!(
                "{by} is not an admin: only an admin assigns employees"
            )));
        }
        if operators.get(name)?.is_none() {
            return Err(OrgError::NotAllowed(format!(
                "{name} is not an operator of this organisation"
            )));
        }
        for employee in employees {
            if self.stored_manifest(employee)?.is_none() {
                return Err(OrgError::NotAllowed(format!(
                    "no employee {employee:?} is registered in this organisation"
                )));
            }
        }
        let mut list = employees.to_vec();
        list.sort();
        list.dedup();
        operators.assign(name, &list)?;
        self.audit_operator_action(
            "operators-assign",
            name,
            &format!("{name} is assigned [{}] (set by {by})", list.join(", ")),
        )
    }

    /// This org's sign-in records (passwords, second factors, sessions).
    pub fn accounts(&self) -> crate::accounts::Accounts {
        crate::accounts::Accounts::new(self.org.clone())
    }

    /// A new one-time enrolment code for operator `name` (it sets their
    /// password and second factor, replacing any they had), on the word of
    /// `by`. Audited, never the code.
    pub fn invite(&self, name: &str, by: &str) -> Result<String, OrgError> {
        if self.operators().get(name)?.is_none() {
            return Err(OrgError::NotAllowed(format!(
                "{name} is not an operator of this organisation"
            )));
        }
        let code = self.accounts().invite(name, self.now())?;
        self.audit_operator_action(
            "operators-enrolment",
            name,
            &format!(
                "an enrolment code for {name} was made by {by}, valid {} hours (the code is never recorded)",
                crate::accounts::ENROLMENT_HOURS
            ),
        )?;
        Ok(code)
    }

    /// On a first start with no admin who can sign in: the admin to enrol
    /// (the first existing admin without a password, or a new `admin`) and
    /// a one-time enrolment code for them. `None` once an admin has enrolled.
    pub fn bootstrap_admin(&self) -> Result<Option<(String, String)>, OrgError> {
        let accounts = self.accounts();
        let admins: Vec<Operator> = self
            .operators()
            .list()?
            .into_iter()
            .filter(|o| o.role == Role::Admin)
            .collect();
        for admin in &admins {
            if accounts.enrolled(&admin.name)? {
                return Ok(None);
            }
        }
        let name = match admins.first() {
            Some(admin) => admin.name.clone(),
            None => {
                let admin = Operator {
                    name: "admin".into(),
                    role: Role::Admin,
                };
                if self.operators().get(&admin.name)?.is_some() {
                    return Err(OrgError::NotAllowed(
                        "the organisation has no admin and its operator \"admin\" is not one: add an admin with `clancy operators add NAME --role admin`".into(),
                    ));
                }
                self.add_operator(&admin, None)?;
                admin.name
            }
        };
        let code = self.invite(&name, "the daemon's first start")?;
        Ok(Some((name, code)))
    }

    /// Make an API token acting as `operator` with `role`, valid `days`,
    /// on the word of `by`: an admin makes tokens for anyone, anyone else
    /// only for themselves; the role is never above the creator's. Audited
    /// (never the secret). Returns the token and the secret, shown once.
    pub fn create_token(
        &self,
        operator: &str,
        role: Role,
        days: u32,
        by: &str,
    ) -> Result<(crate::operators::Token, String), OrgError> {
        let operators = self.operators();
        let creator = operators.get(by)?.ok_or_else(|| {
            OrgError::NotAllowed(format!("{by} is not an operator of this organisation"))
        })?;
        let target = operators.get(operator)?.ok_or_else(|| {
            OrgError::NotAllowed(format!(
                "{operator} is not an operator of this organisation"
            ))
        })?;
        if creator.role != Role::Admin && creator.name != target.name {
            return Err(OrgError::NotAllowed(format!(
                "{by} may only make tokens for themselves (an admin makes them for others)"
            )));
        }
        if role > creator.role || role > target.role {
            return Err(OrgError::NotAllowed(format!(
                "a token's role may not be above its creator's or its operator's ({by} is {}, {operator} is {})",
                creator.role, target.role
            )));
        }
        if !(1..=crate::operators::MAX_TOKEN_DAYS).contains(&days) {
            return Err(OrgError::NotAllowed(format!(
                "a token lives from 1 to {} days",
                crate::operators::MAX_TOKEN_DAYS
            )));
        }
        let (token, secret) = operators.create_token(&target, role, days, by, self.now())?;
        self.audit_operator_action(
            "tokens-create",
            &format!("{} for {operator} as {role}, {days} days", token.id),
            &format!(
                "token {} made by {by} (the secret is never recorded)",
                token.id
            ),
        )?;
        Ok((token, secret))
    }

    /// Revoke token `id` on the word of `by` (an admin, or its operator). Audited.
    pub fn revoke_token(&self, id: &str, by: &str) -> Result<crate::operators::Token, OrgError> {
        let operators = self.operators();
        let token = operators
            .token(id)?
            .ok_or_else(|| OrgError::NotAllowed(format!("no token {id:?} in this organisation")))?;
        let allowed = operators
            .get(by)?
            .is_some_and(|o| o.role == Role::Admin || o.name == token.operator);
        if !allowed {
            return Err(OrgError::NotAllowed(format!(
                "{by} may not revoke {id}: only an admin or its operator may"
            )));
        }
        let revoked = operators
            .revoke_token(id)?
            .ok_or_else(|| OrgError::NotAllowed(format!("no token {id:?}")))?;
        self.audit_operator_action("tokens-revoke", id, &format!("token {id} revoked by {by}"))?;
        Ok(revoked)
    }

    /// Record an operator's action on the organisation itself (adding
    /// operators, resetting the sandbox, showing the webhook secret).
    pub fn audit_operator_action(
        &self,
        action: &str,
        args: &str,
        result: &str,
    ) -> Result<(), OrgError> {
        audit_note(&self.audit, action, args, result)
    }

    /// Record the end of every task that started but never ended (the
    /// process running it was killed): each gets a task-end entry saying it
    /// was interrupted, so the log never leaves a task open. Returns them.
    /// Call it at start, while no task of this org runs (the CLI does, in
    /// `run` and every approvals command).
    pub fn record_interrupted_tasks(&self) -> Result<Vec<String>, OrgError> {
        let mut interrupted = Vec::new();
        for start in self.audit.unended_tasks()? {
            let record = Record {
                employee: start.record.employee.clone(),
                task: start.record.task.clone(),
                result:
                    "interrupted: the host stopped during the task (its calls up to then are above)"
                        .into(),
                ..Record::default()
            };
            self.audit
                .append(Kind::TaskEnd, record)
                .map_err(|e| OrgError::Store(e.0))?;
            interrupted.push(start.record.task.clone());
        }
        Ok(interrupted)
    }

    /// This org's notification outbox.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Queue notifications about `approval` for the targets its employee's
    /// manifest names. Never fails the caller: a notification that cannot
    /// be queued is logged.
    fn notify(&self, event: Event, approval: &Approval) {
        let targets = match self.stored_manifest(&approval.request.employee) {
            Ok(Some(m)) => m.notify,
            Ok(None) => Vec::new(),
            Err(e) => {
                tracing::error!(approval = %approval.id, "cannot read notification targets: {e}");
                Vec::new()
            }
        };
        for target in targets.iter().filter(|t| t.wants(event)) {
            if let Err(e) = self.outbox.push(target, event, approval, self.now()) {
                tracing::error!(approval = %approval.id, "could not queue a notification: {e}");
            }
        }
    }

    /// Deliver the notifications that are due; those whose attempts ran out
    /// are recorded in the audit log.
    pub fn deliver_notifications(&self) -> Result<Delivery, StoreError> {
        // Checkpoints due over entries appended so far are queued first.
        self.audit.settle()?;
        let delivery = self.outbox.deliver_due(self.now())?;
        for n in &delivery.gave_up {
            let record = Record {
                employee: "host".into(),
                action: "notify".into(),
                args: if n.approval.is_empty() {
                    n.event.name().to_string()
                } else {
                    format!("{} about {}", n.event.name(), n.approval)
                },
                result: format!(
                    "gave up after {} attempts: {}",
                    n.attempts,
                    n.last_error.as_deref().unwrap_or("")
                ),
                approval: (!n.approval.is_empty()).then(|| n.approval.clone()),
                ..Record::default()
            };
            self.audit.append(Kind::Note, record).map_err(|e| e.0)?;
        }
        Ok(delivery)
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

    /// This org's sealed view of the store: what it writes carries the
    /// host's seal (it is the host's own write).
    pub fn org_store(&self) -> &OrgStore {
        &self.org
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
    pub fn runtime(&self) -> Result<&Runtime, OrgError> {
        if let Some(r) = self.runtime.get() {
            return Ok(r);
        }
        // Compiled components are kept beside the store, sealed with the host key.
        let runtime = Runtime::new()
            .map_err(|e| OrgError::Engine(e.to_string()))?
            .with_artifacts_in(self.data_dir.join("compiled"), self.keys.clone());
        Ok(self.runtime.get_or_init(|| runtime))
    }

    /// The providers of this org: for each service, the connector of the
    /// connection an admin chose for it (`clancy connections use`, looked
    /// up at every call), else the sandbox workspace; and this org's
    /// folders under `files/<org>/` in the data dir.
    pub fn providers(&self) -> Result<Providers, OrgError> {
        let sandbox = Arc::new(self.sandbox.clone());
        let root = format!("files/{}", self.org());
        let io = |e: std::io::Error| {
            OrgError::DataDir(format!("cannot open {root} in the data dir: {e}"))
        };
        self.data.create_dir_all(&root).map_err(io)?;
        let files = Folders::new(self.data.open_dir(&root).map_err(io)?);
        Ok(Providers::new(
            sandbox.clone(),
            sandbox.clone(),
            sandbox.clone(),
            sandbox.clone(),
            sandbox,
            Arc::new(files),
        )
        .with_router(crate::connectors::Router::new(self.vault())))
    }

    /// What every mediator of this org is wired to.
    fn wiring(&self) -> Result<Wiring, OrgError> {
        Ok(Wiring {
            audit: self.audit.clone(),
            providers: self.providers()?,
            approvals: self.approvals.clone(),
            meter: self.meter.clone(),
            outbox: self.outbox.clone(),
        })
    }

    /// Validate an employee without running it: its manifest (already parsed)
    /// and its component's imports against its grants.
    pub fn check(&self, manifest: Manifest) -> Result<CheckReport, OrgError> {
        check_with(self.runtime()?, manifest)
    }

    /// Load an employee, ready to run tasks, and register it: its component
    /// is pinned (copied into the data dir under its SHA-256; the host's own
    /// work on its behalf runs only that copy), its manifest becomes the one
    /// approvals, undo, on-decision and notifications use, a change of it is
    /// audited with its diff, and pending requests its grants no longer
    /// allow become void. A refused load changes nothing stored. Seeds the
    /// sandbox on first use.
    pub fn load(&self, mut manifest: Manifest) -> Result<LoadedEmployee, OrgError> {
        if let Some(d) = self.disabled(&manifest.name)? {
            return Err(OrgError::NotAllowed(format!(
                "{} was disabled by {}; an admin enables it (`clancy employees enable {}`)",
                manifest.name, d.by, manifest.name
            )));
        }
        let bytes = crate::runtime::read_component(&manifest.component)?;
        manifest.component_sha256 = Some(hex::encode(sha2::Sha256::digest(&bytes)));
        let loaded = self.instantiate(manifest, &bytes)?;
        self.pin(&bytes)?;
        self.register(loaded.manifest(), loaded.mediator())?;
        Ok(loaded)
    }

    /// Compile, check and pre-link an employee from component `bytes`,
    /// without registering it.
    fn instantiate(&self, manifest: Manifest, bytes: &[u8]) -> Result<LoadedEmployee, OrgError> {
        self.sandbox.ensure_seeded()?;
        let mediator = Arc::new(Mediator::new(&manifest, self.wiring()?));
        let employee = manifest.name.clone();
        match self.runtime()?.load(manifest, bytes, mediator) {
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
                    .map_err(|a| OrgError::Store(a.0))?;
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Record something the host did for an operator (a note by `host`).
fn audit_note(audit: &AuditLog, action: &str, args: &str, result: &str) -> Result<(), OrgError> {
    let record = Record {
        employee: "host".into(),
        action: action.into(),
        args: args.into(),
        result: result.into(),
        ..Record::default()
    };
    audit
        .append(Kind::Note, record)
        .map_err(|e| OrgError::Store(e.0))?;
    Ok(())
}

/// The manifest `employee` was last loaded with in `org`.
fn manifest_in(org: &OrgStore, employee: &str) -> Result<Option<Manifest>, StoreError> {
    org.get_json("employees", format!("manifest/{employee}").as_bytes())
}

/// Where signed checkpoints go unless the operator names another file.
pub const DEFAULT_CHECKPOINT_FILE: &str = "checkpoints.jsonl";

/// The audit log of `org`, signing checkpoints into `file` and queueing a
/// `checkpoint` notification for every target of the entry's employee that
/// lists the event.
fn audit_log(
    org: &OrgStore,
    keys: &Arc<crate::keys::Keys>,
    file: PathBuf,
    clock: &Arc<dyn Clock>,
) -> AuditLog {
    let (store, clock) = (org.clone(), clock.clone());
    let publish = move |checkpoint: &crate::keys::Checkpoint, entry: &crate::audit::Entry| {
        let manifest = match manifest_in(&store, &entry.record.employee) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!("cannot read notification targets for a checkpoint: {e}");
                None
            }
        };
        let outbox = Outbox::new(store.clone());
        for target in manifest
            .iter()
            .flat_map(|m| &m.notify)
            .filter(|t| t.wants(Event::Checkpoint))
        {
            if let Err(e) = outbox.push_checkpoint(target, checkpoint, clock.now()) {
                tracing::error!("could not queue a checkpoint notification: {e}");
            }
        }
    };
    AuditLog::with_checkpoints(
        org.clone(),
        crate::audit::Checkpointing {
            keys: keys.clone(),
            file,
            publish: Some(Box::new(publish)),
        },
    )
}

fn open_data_dir(path: &Path, mode: DataDirMode) -> Result<Dir, OrgError> {
    if !path.exists() {
        match mode {
            DataDirMode::Existing => {
                return Err(OrgError::DataDir(format!(
                    "no Clancy data dir at {} (run `clancy sandbox seed` or `clancy run` first, or pass --data-dir)",
                    path.display()
                )));
            }
            DataDirMode::Create => std::fs::create_dir_all(path).map_err(|e| {
                OrgError::DataDir(format!(
                    "cannot create the data dir {}: {e}",
                    path.display()
                ))
            })?,
        }
    }
    if !path.is_dir() {
        return Err(OrgError::DataDir(format!(
            "the data dir {} is not a directory",
            path.display()
        )));
    }
    Dir::open_ambient_dir(path, cap_std::ambient_authority())
        .map_err(|e| OrgError::DataDir(format!("cannot open the data dir {}: {e}", path.display())))
}

/// Check an employee's imports against its grants without any data dir
/// (`clancy check` while a daemon owns it).
pub fn check_employee(manifest: Manifest) -> Result<CheckReport, OrgError> {
    let runtime = Runtime::new().map_err(|e| OrgError::Engine(e.to_string()))?;
    check_with(&runtime, manifest)
}

fn check_with(runtime: &Runtime, manifest: Manifest) -> Result<CheckReport, OrgError> {
    let (_component, imports) = runtime.compile(&manifest)?;
    let problems = imports::check_imports(&manifest, &imports);
    Ok(CheckReport {
        manifest,
        imports,
        problems,
    })
}
