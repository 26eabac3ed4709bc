//! The mediator: the single place where a guest's request becomes a side effect.
//!
//! Order, for every integration call: grant check (scope + action) → argument
//! checks → rate limits (employee, then grant; persisted) → approval policy →
//! the **executor**. The executor ([`Mediator::execute`]) is the one door to
//! the providers: guest calls, approved and resumed actions, undos and
//! widenings all pass through it. It checks the grant *as in force when it
//! runs* (manifest grant + active widenings) and the grant's daily budgets,
//! then writes a durable audit *intent*, calls the provider and audits the
//! *result*. Providers cannot be reached without a [`Permit`], and only the
//! executor makes one. Anything refused is audited as a refusal and never
//! reaches a provider. If the intent cannot be written, nothing happens (fail
//! closed).
//!
//! The mediator never hands a provider's credentials or internals to the
//! guest; errors it returns are plain sentences safe to show anyone.

use std::sync::Arc;

use crate::approvals::{
    ActionRequest, ApprovalQueue, Elevation, elevation_policy_version, grant_versions,
    policy_version,
};
use crate::audit::{AuditError, AuditLog, Decision, Kind, Outcome as AuditOutcome, Record};
use crate::integrations::elevation::ElevationOp;
use crate::integrations::guidance::{
    GuidanceOp, MAX_OPTION_BYTES, MAX_OPTIONS, MAX_QUESTION_BYTES,
};
use crate::integrations::mail::MailOp;
use crate::integrations::{Action, action_list};
use crate::limits::{Bucket, LimitError, Meter};
use crate::manifest::{ApprovalPolicy, Grant, Integration, Manifest};
use crate::notify::{Event, Outbox, Target};
use crate::providers::{Inverse, MAX_ELEVATION_MINUTES, Operation, Providers, Response, money};
use crate::runtime::bindings::CallError;
use crate::store::StoreError;

/// Largest total size of a call's guest-supplied arguments.
pub const MAX_ARGUMENT_BYTES: usize = 256 * 1024;
/// Largest reason or note, in bytes.
pub const MAX_REASON_BYTES: usize = 4 * 1024;

/// The policy version of a question: asking a human needs no grant.
const QUESTION_POLICY: &str = "question";

/// Why a call waits for a human, and under which policy version.
struct Gated {
    because: String,
    policy_version: String,
}

/// Proof that the executor checked the grant in force for one scope. Its
/// field is private to this module, so only the executor can make one, and
/// providers run nothing without one.
pub struct Permit {
    scope_value: String,
    folder_quota: u64,
}

impl Permit {
    /// The granted scope's value (after `kind:`), e.g. `#support`.
    pub fn scope_value(&self) -> &str {
        &self.scope_value
    }

    /// For a files grant: the folder's size quota in bytes.
    pub fn folder_quota(&self) -> u64 {
        self.folder_quota
    }
}

/// What the executor carries out.
#[derive(Clone, Debug)]
pub enum Effect {
    /// An integration call (a guest's, or an approved one).
    Call(Operation),
    /// The inverse of an earlier write.
    Undo(Inverse),
    /// An approved widening of the employee's grants.
    Widen(Elevation),
}

impl Effect {
    /// The grant action this effect needs.
    fn action(&self) -> Action {
        match self {
            Effect::Call(op) => op.action(),
            Effect::Undo(inverse) => inverse.action(),
            Effect::Widen(_) => Action::Elevate,
        }
    }

    fn is_write(&self) -> bool {
        match self {
            Effect::Call(op) => op.is_write(),
            Effect::Undo(_) | Effect::Widen(_) => false,
        }
    }
}

/// How one pass through the executor ended.
pub struct Execution {
    /// What the provider returned, or why nothing happened.
    pub outcome: Result<Response, CallError>,
    /// The audit entry that records the result (a refusal's, if refused).
    pub entry: Option<u64>,
}

/// The mediator of one employee.
pub struct Mediator {
    org: String,
    employee: String,
    grants: Vec<Grant>,
    /// The employee-wide rate-limit bucket.
    bucket: Bucket,
    audit: Arc<AuditLog>,
    providers: Providers,
    approvals: Arc<ApprovalQueue>,
    meter: Arc<Meter>,
    outbox: Arc<Outbox>,
    notify: Vec<Target>,
    elevations: std::sync::RwLock<Vec<Elevation>>,
}

/// What a mediator is wired to: one organisation's log, providers, queue,
/// meter and outbox.
#[derive(Clone)]
pub struct Wiring {
    /// The audit log.
    pub audit: Arc<AuditLog>,
    /// The providers.
    pub providers: Providers,
    /// The approval queue.
    pub approvals: Arc<ApprovalQueue>,
    /// Rate limits and budgets.
    pub meter: Arc<Meter>,
    /// Notifications.
    pub outbox: Arc<Outbox>,
}

impl Mediator {
    /// The mediator for `manifest`'s employee.
    pub fn new(manifest: &Manifest, wiring: Wiring) -> Mediator {
        Mediator {
            org: wiring.audit.org().to_string(),
            approvals: wiring.approvals,
            meter: wiring.meter,
            outbox: wiring.outbox,
            notify: manifest.notify.clone(),
            elevations: std::sync::RwLock::new(Vec::new()),
            employee: manifest.name.clone(),
            grants: manifest.grants.clone(),
            bucket: Bucket::employee(&manifest.name, manifest.limits.calls_per_minute),
            audit: wiring.audit,
            providers: wiring.providers,
        }
    }

    /// The employee's name.
    pub fn employee(&self) -> &str {
        &self.employee
    }

    /// Load widenings approved since the last call (at each task start).
    /// The list only grows, so handle indexes stay valid during a task.
    pub fn refresh_elevations(&self) {
        // Those that ended unseen never grant anything: only the unended
        // are read (through their index, not every widening ever granted).
        let stored = match self.approvals.unended_elevations_of(&self.employee) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(employee = %self.employee, "cannot read widenings: {e}");
                return;
            }
        };
        let mut known = self.elevations.write().unwrap_or_else(|p| p.into_inner());
        for e in stored {
            if !known.iter().any(|k| k.approval == e.approval) {
                known.push(e);
            }
        }
    }

    /// The grant behind a handle, as in force now: its manifest grant plus
    /// any active widening of the same scope, or a widened-to scope (whose
    /// actions are empty once every widening of it expired).
    pub fn grant(&self, index: usize) -> Option<Grant> {
        self.grant_now(index).map(std::borrow::Cow::into_owned)
    }

    /// [`Mediator::grant`], borrowed from the manifest's grants when no
    /// widening is in force on it (what every call asks, so not cloned).
    fn grant_now(&self, index: usize) -> Option<std::borrow::Cow<'_, Grant>> {
        let elevations = self.elevations.read().unwrap_or_else(|p| p.into_inner());
        if elevations.is_empty() {
            return self.grants.get(index).map(std::borrow::Cow::Borrowed);
        }
        let now = self.approvals.now();
        let widened = |g: &Grant| {
            elevations
                .iter()
                .any(|e| e.active_at(now) && e.integration == g.integration && e.scope == g.scope)
        };
        if let Some(g) = self.grants.get(index)
            && !widened(g)
        {
            return Some(std::borrow::Cow::Borrowed(g));
        }
        let mut grant = match self.grants.get(index) {
            Some(g) => g.clone(),
            None => {
                let e = elevations.get(index - self.grants.len())?;
                self.widened_terms(e.integration, &e.scope)
            }
        };
        for e in elevations.iter().filter(|e| {
            e.active_at(now) && e.integration == grant.integration && e.scope == grant.scope
        }) {
            grant.actions.extend(e.actions.iter().cloned());
        }
        Some(std::borrow::Cow::Owned(grant))
    }

    /// Indexes of the grants that reach `interface`: the manifest's, then
    /// one per scope widened to and still in force.
    pub fn grants_for(&self, interface: crate::manifest::Interface) -> Vec<usize> {
        let now = self.approvals.now();
        let mut indexes: Vec<usize> = (0..self.grants.len())
            .filter(|&i| self.grants[i].integration.interface() == interface)
            .collect();
        let elevations = self.elevations.read().unwrap_or_else(|p| p.into_inner());
        let mut seen: Vec<(crate::manifest::Integration, &str)> = Vec::new();
        for (j, e) in elevations.iter().enumerate() {
            let new_scope = !self
                .grants
                .iter()
                .any(|g| g.integration == e.integration && g.scope == e.scope);
            let key = (e.integration, e.scope.as_str());
            if new_scope
                && e.active_at(now)
                && e.integration.interface() == interface
                && !seen.contains(&key)
            {
                seen.push(key);
                indexes.push(self.grants.len() + j);
            }
        }
        indexes
    }

    /// The terms of a scope widened to: no actions of its own (widenings
    /// add them while in force), and the approval policy, rate limit and
    /// budgets of the employee's grant on the same integration.
    fn widened_terms(&self, integration: Integration, scope: &str) -> Grant {
        let base = self.grants.iter().find(|g| g.integration == integration);
        Grant {
            integration,
            scope: scope.to_string(),
            actions: Default::default(),
            approval: base.map_or_else(ApprovalPolicy::none, |b| b.approval.clone()),
            calls_per_minute: base.and_then(|b| b.calls_per_minute),
            budget: base.map(|b| b.budget).unwrap_or_default(),
            to: base.map(|b| b.to.clone()).unwrap_or_default(),
            max_mb: base.and_then(|b| b.max_mb),
        }
    }

    /// The grant on `scope` of `integration` as in force now (manifest
    /// grant plus active widenings), with its handle index.
    pub fn grant_in_force(&self, integration: Integration, scope: &str) -> Option<(usize, Grant)> {
        self.grant_in_force_now(integration, scope)
            .map(|(i, g)| (i, g.into_owned()))
    }

    /// [`Mediator::grant_in_force`], borrowed where it can be.
    fn grant_in_force_now(
        &self,
        integration: Integration,
        scope: &str,
    ) -> Option<(usize, std::borrow::Cow<'_, Grant>)> {
        let none_widened = self
            .elevations
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty();
        if none_widened {
            // The manifest's grant itself (what nearly every call finds).
            return self
                .grants
                .iter()
                .position(|g| g.integration == integration && g.scope == scope)
                .map(|i| (i, std::borrow::Cow::Borrowed(&self.grants[i])));
        }
        self.grants_for(integration.interface())
            .into_iter()
            .filter_map(|i| self.grant_now(i).map(|g| (i, g)))
            .find(|(_, g)| g.integration == integration && g.scope == scope)
    }

    /// The standing terms of a scope (widenings' extra actions left out): what
    /// a request's policy version is computed from, so a widening never voids
    /// a pending request, while a changed manifest grant does.
    fn standing_terms(&self, integration: Integration, scope: &str) -> Option<Grant> {
        match self
            .grants
            .iter()
            .find(|g| g.integration == integration && g.scope == scope)
        {
            Some(g) => Some(g.clone()),
            None => self
                .grant_in_force(integration, scope)
                .map(|_| self.widened_terms(integration, scope)),
        }
    }

    /// The policy version `request` would be made under now (`None`: the
    /// employee holds no such grant any more).
    pub fn policy_version_now(&self, request: &ActionRequest) -> Option<String> {
        match (&request.operation, request.integration) {
            (Operation::Guidance(_), _) => Some(QUESTION_POLICY.to_string()),
            (Operation::Elevation(_), _) => {
                Some(elevation_policy_version(&grant_versions(&self.grants)))
            }
            (_, Some(integration)) => self
                .standing_terms(integration, &request.scope)
                .map(|g| policy_version(&g)),
            (_, None) => None,
        }
    }

    /// Why the grants in force now do not allow `request`, if they do not.
    pub fn withdrawn(&self, request: &ActionRequest) -> Option<String> {
        if let Operation::Elevation(op) = &request.operation {
            let integration = op.integration();
            if !self.grants.iter().any(|g| g.integration == integration) {
                return Some(format!(
                    "{} no longer holds any {integration} grant to widen",
                    self.employee
                ));
            }
            return None;
        }
        if let Operation::Guidance(_) = request.operation {
            return None;
        }
        let action = request.operation.action();
        let Some(integration) = request.integration else {
            return Some(format!("{action} names no integration"));
        };
        match self.grant_in_force(integration, &request.scope) {
            None => Some(format!(
                "{} no longer holds a grant on {integration} {}",
                self.employee, request.scope
            )),
            Some((_, g)) if !g.allows(action) => Some(format!(
                "{} no longer holds \"{action}\" on {integration} {} (granted now: {})",
                self.employee,
                request.scope,
                list_or_nothing(&g.actions)
            )),
            Some(_) => None,
        }
    }

    /// The audit log this mediator writes to.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    fn record(&self, task: &str, grant: Option<&Grant>, op: &Operation, reason: &str) -> Record {
        Record {
            employee: self.employee.clone(),
            task: task.to_string(),
            interface: op.interface_name(),
            scope: grant.map(|g| g.scope.clone()).unwrap_or_default(),
            action: op.method().to_string(),
            args: op.summary(),
            reason: truncate(reason, MAX_REASON_BYTES),
            ..Record::default()
        }
    }

    fn refuse(&self, mut record: Record, decision: Decision, error: CallError) -> CallError {
        self.refuse_recorded(&mut record, decision, &error);
        error
    }

    /// Audit a refusal; returns its entry.
    fn refuse_recorded(
        &self,
        record: &mut Record,
        decision: Decision,
        error: &CallError,
    ) -> Option<u64> {
        record.decision = Some(decision);
        record.result = describe(error);
        match self.audit.append_behind(Kind::Refusal, record.clone()) {
            Ok(seq) => Some(seq),
            Err(e) => {
                // Nothing happened, so the refusal stands; the operator must hear of the gap.
                tracing::error!(employee = %self.employee, "could not audit a refusal: {e}");
                None
            }
        }
    }

    /// Mediate one call made through the handle of grant `grant_index`.
    pub fn call(
        &self,
        task: &str,
        grant_index: usize,
        op: Operation,
        reason: &str,
    ) -> Result<Response, CallError> {
        let grant = self
            .grant_now(grant_index)
            .filter(|g| Some(g.integration.interface()) == op.interface());
        let record = self.record(task, grant.as_deref(), &op, reason);
        let Some(grant) = grant.as_ref() else {
            let e = CallError::Denied(format!(
                "this handle does not reach the {} interface",
                op.interface_name()
            ));
            return Err(self.refuse(record, Decision::Denied, e));
        };
        if grant.actions.is_empty() {
            let e = CallError::Denied(format!(
                "the temporary grant on {} {} has expired",
                grant.integration, grant.scope
            ));
            return Err(self.refuse(record, Decision::Denied, e));
        }
        if !grant.allows(op.action()) {
            let e = CallError::Denied(format!(
                "{} is not granted \"{}\" on {} {} (granted: {})",
                self.employee,
                op.action(),
                grant.integration,
                grant.scope,
                list_or_nothing(&grant.actions)
            ));
            return Err(self.refuse(record, Decision::Denied, e));
        }
        if op.argument_bytes() > MAX_ARGUMENT_BYTES {
            let e = CallError::Rejected(format!(
                "arguments of {} bytes exceed the limit of {MAX_ARGUMENT_BYTES} bytes",
                op.argument_bytes()
            ));
            return Err(self.refuse(record, Decision::Rejected, e));
        }
        if reason.len() > MAX_REASON_BYTES {
            let e = CallError::Rejected(format!(
                "the reason exceeds {MAX_REASON_BYTES} bytes; keep it to a few sentences"
            ));
            return Err(self.refuse(record, Decision::Rejected, e));
        }
        if let Err(why) = op.check_amounts() {
            return Err(self.refuse(record, Decision::Rejected, CallError::Rejected(why)));
        }
        if op.is_write() && reason.trim().is_empty() {
            let e = CallError::Rejected("a write needs a plain-English reason".into());
            return Err(self.refuse(record, Decision::Rejected, e));
        }
        // Recipients are parsed as real addresses, and the request carries
        // exactly the addresses that were checked.
        let op = match op.with_canonical_recipients() {
            Ok(op) => op,
            Err(why) => {
                let e = CallError::Rejected(why.to_string());
                return Err(self.refuse(record, Decision::Rejected, e));
            }
        };
        let outside = self.outside_granted_domains(grant, &op);
        let humans_decide_outside =
            grant.approval.covers(op.action()) && grant.approval.gates_recipients();
        if !outside.is_empty() && !humans_decide_outside {
            let e = CallError::Denied(format!(
                "{} may send only to {} on {} {}, not to {}",
                self.employee,
                self.granted_domains(grant).join(", "),
                grant.integration,
                grant.scope,
                outside.join(", ")
            ));
            return Err(self.refuse(record, Decision::Denied, e));
        }
        if let Err(e) = self.check_rate(Some(grant)) {
            return Err(self.refuse(record, Decision::RateLimited, e));
        }
        if op.is_write() {
            // A write the budget cannot take is refused now, not queued for
            // a human to approve in vain (the executor checks again).
            match self.meter.check_write(
                &self.employee,
                grant.integration,
                &grant.scope,
                &grant.budget,
                op.amount_cents(),
            ) {
                Ok(()) => {}
                Err(LimitError::OverBudget(why)) => {
                    let e = CallError::Rejected(why);
                    return Err(self.refuse(record, Decision::Rejected, e));
                }
                Err(e) => {
                    tracing::error!(employee = %self.employee, "cannot read the budget: {e}");
                    let e = CallError::Failed(
                        "the budget cannot be checked now, so the action was not taken".into(),
                    );
                    return Err(self.refuse(record, Decision::Rejected, e));
                }
            }
            let gated = if outside.is_empty() {
                self.gate(grant, &op)
            } else {
                Ok(Some(format!(
                    "recipients outside the granted domains ({}): {}",
                    self.granted_domains(grant).join(", "),
                    outside.join(", ")
                )))
            };
            let because = match gated {
                Ok(because) => because,
                Err(e) => {
                    tracing::error!(employee = %self.employee, "cannot evaluate the approval policy: {e}");
                    return Err(CallError::Failed(
                        "the approval queue is unavailable, so the action was not taken".into(),
                    ));
                }
            };
            if let Some(because) = because {
                let policy_version = self
                    .standing_terms(grant.integration, &grant.scope)
                    .map(|g| policy_version(&g))
                    .unwrap_or_default();
                let gated = Gated {
                    because,
                    policy_version,
                };
                return self.enqueue(task, grant, op, reason, gated, record);
            }
        }
        let integration = grant.integration;
        let scope = grant.scope.clone();
        match self.execute(integration, &scope, Effect::Call(op), record, None) {
            Ok(execution) => execution.outcome,
            Err(e) => {
                tracing::error!(employee = %self.employee, "audit intent failed, call not made: {e}");
                Err(CallError::Failed(
                    "the audit log is unavailable, so the action was not taken".into(),
                ))
            }
        }
    }

    /// The recipient domains a mail grant may send to.
    fn granted_domains(&self, grant: &Grant) -> Vec<String> {
        if grant.to.is_empty() {
            // The mailbox in use now (the sandbox's, or the connection's).
            vec![crate::addresses::domain_of(&self.providers.mail_sender()).to_ascii_lowercase()]
        } else {
            grant.to.clone()
        }
    }

    /// The recipients of a mail send through `grant` that are outside the
    /// domains it may reach (always empty for other operations).
    fn outside_granted_domains(&self, grant: &Grant, op: &Operation) -> Vec<String> {
        let Operation::Mail(MailOp::Send { draft }) = op else {
            return Vec::new();
        };
        let domains = self.granted_domains(grant);
        draft
            .to
            .iter()
            .filter(|r| !domains.iter().any(|d| d == crate::addresses::domain_of(r)))
            .cloned()
            .collect()
    }

    /// The executor: the one door to the providers. Checks `effect` against
    /// the grant on `scope` of `integration` as in force now (and, for
    /// writes, the grant's daily budgets), then writes the intent, runs the
    /// effect and writes its result. `record` names who, which task and
    /// why; `key` makes a write idempotent (an approval's action hash).
    ///
    /// The outer error means the intent could not be written and nothing
    /// happened. A refusal is an `Err` outcome, audited, with no intent.
    pub fn execute(
        &self,
        integration: Integration,
        scope: &str,
        effect: Effect,
        mut record: Record,
        key: Option<&str>,
    ) -> Result<Execution, AuditError> {
        let refused = |record: &mut Record, decision: Decision, error: CallError| Execution {
            entry: self.refuse_recorded(record, decision, &error),
            outcome: Err(error),
        };
        let grant = self.grant_in_force_now(integration, scope).map(|(_, g)| g);
        // The effect must belong to the integration whose grant is checked
        // (a mail read is never allowed by a chat grant's "read").
        let same_interface = match &effect {
            Effect::Call(op) => op.interface() == Some(integration.interface()),
            Effect::Undo(inverse) => inverse.interface() == integration.interface(),
            Effect::Widen(e) => e.integration == integration,
        };
        let allowed = same_interface
            && match (&effect, &grant) {
                (Effect::Widen(e), _) => self.grants.iter().any(|g| g.integration == e.integration),
                (_, Some(g)) => g.allows(effect.action()),
                (_, None) => false,
            };
        if !allowed {
            let why = match &effect {
                Effect::Widen(e) => format!(
                    "{} no longer holds any {} grant to widen",
                    self.employee, e.integration
                ),
                _ => format!(
                    "{} does not hold \"{}\" on {integration} {scope} now (granted: {})",
                    self.employee,
                    effect.action(),
                    grant
                        .as_ref()
                        .map_or_else(|| "nothing".to_string(), |g| list_or_nothing(&g.actions))
                ),
            };
            return Ok(refused(
                &mut record,
                Decision::Denied,
                CallError::Denied(why),
            ));
        }
        // Whatever path it came by, a call reaches a provider only with
        // recipients that parse as plain addresses, exactly as checked.
        if let Effect::Call(op) = &effect
            && op.clone().with_canonical_recipients().as_ref() != Ok(op)
        {
            return Ok(refused(
                &mut record,
                Decision::Rejected,
                CallError::Rejected("every recipient must be one plain email address".into()),
            ));
        }
        let reservation = match (&effect, &grant) {
            (Effect::Call(op), Some(g)) if effect.is_write() => {
                match self.meter.reserve_write(
                    &self.employee,
                    integration,
                    scope,
                    &g.budget,
                    op.amount_cents(),
                ) {
                    Ok(r) => r,
                    Err(LimitError::OverBudget(why)) => {
                        return Ok(refused(
                            &mut record,
                            Decision::Rejected,
                            CallError::Rejected(why),
                        ));
                    }
                    Err(e) => {
                        tracing::error!(employee = %self.employee, "cannot read the budget: {e}");
                        return Ok(refused(
                            &mut record,
                            Decision::Rejected,
                            CallError::Failed(
                                "the budget cannot be checked now, so the action was not taken"
                                    .into(),
                            ),
                        ));
                    }
                }
            }
            _ => None,
        };
        let mut intent_record = record.clone();
        intent_record.decision = Some(Decision::Allowed);
        // A read's intent need not be on disk before the read (nothing
        // outside changes); a write's must.
        let when = match &effect {
            Effect::Call(op) if !op.is_write() => crate::store::Durability::Soon,
            _ => crate::store::Durability::Now,
        };
        let intent = match when {
            // Numbered now, hashed and written with the next commit.
            crate::store::Durability::Soon => self.audit.append_behind(Kind::Intent, intent_record),
            crate::store::Durability::Now => self
                .audit
                .append_when(Kind::Intent, intent_record, when)
                .map(|e| e.seq),
        };
        let intent = match intent {
            Ok(intent) => intent,
            Err(e) => {
                if let Some(r) = reservation {
                    self.refund(r);
                }
                return Err(e);
            }
        };
        crate::pause_point("execute:after-intent");
        let permit = Permit {
            scope_value: scope.split_once(':').map(|(_, v)| v).unwrap_or("").into(),
            folder_quota: grant.as_deref().map_or(
                u64::from(crate::manifest::DEFAULT_FOLDER_MB) * 1024 * 1024,
                Grant::folder_quota_bytes,
            ),
        };
        let result = match &effect {
            Effect::Call(op) => self.providers.execute(&permit, &self.employee, op, key),
            Effect::Undo(inverse) => self
                .providers
                .undo(&permit, inverse)
                .map(|()| Response::Undone(inverse.summary())),
            Effect::Widen(elevation) => self
                .approvals
                .put_elevation(elevation)
                .map(|()| Response::Granted(elevation.summary()))
                .map_err(|e| crate::providers::ProviderError::Failed(e.to_string())),
        };
        crate::pause_point("execute:after-provider");
        record.decision = Some(Decision::Allowed);
        record.intent = Some(intent);
        let outcome = match result {
            Ok(response) => {
                record.result = response.summary();
                record.outcome = Some(match &response {
                    Response::Done(done) => {
                        record.inverse = done.inverse.clone();
                        AuditOutcome::Done
                    }
                    Response::Undone(_) => AuditOutcome::Undone,
                    Response::Granted(_) => AuditOutcome::Granted,
                    _ => AuditOutcome::Read,
                });
                Ok(response)
            }
            Err(e) => {
                record.outcome = Some(match &effect {
                    Effect::Call(op) if !op.is_write() => AuditOutcome::ReadFailed,
                    _ => AuditOutcome::WriteFailed,
                });
                if let Some(r) = reservation {
                    self.refund(r);
                }
                let error = crate::providers::to_call_error(e);
                record.result = match &effect {
                    Effect::Undo(_) => format!("not undone: {}", describe(&error)),
                    _ => describe(&error),
                };
                Err(error)
            }
        };
        // Writes are counted for `first = N` policies: those of grants with
        // such a policy, and every approved one (once, however often resumed).
        if matches!(outcome, Ok(Response::Done(_)))
            && let Some(g) = &grant
            && (g.approval.first.is_some() || record.approval.is_some())
            && let Err(e) = self.approvals.count_write(
                &self.employee,
                integration,
                scope,
                record.approval.as_deref(),
            )
        {
            tracing::error!(employee = %self.employee, "could not count a write for the approval policy: {e}");
        }
        let entry = match self.audit.append_behind(Kind::Result, record) {
            Ok(seq) => seq,
            Err(e) => {
                // The call already happened; its intent is on record. Flag loudly.
                tracing::error!(intent = intent, "could not audit a call's result: {e}");
                intent
            }
        };
        Ok(Execution {
            outcome,
            entry: Some(entry),
        })
    }

    fn refund(&self, reservation: crate::limits::Reservation) {
        if let Err(e) = self.meter.refund(reservation) {
            tracing::error!(employee = %self.employee, "could not give back a budget reservation: {e}");
        }
    }

    /// Why `grant`'s approval policy gates `op`, if it does.
    fn gate(&self, grant: &Grant, op: &Operation) -> Result<Option<String>, StoreError> {
        let policy = &grant.approval;
        if policy.is_none() || !policy.covers(op.action()) {
            return Ok(None);
        }
        if policy.always {
            return Ok(Some(format!(
                "\"{}\" on {} {} always needs approval",
                op.action(),
                grant.integration,
                grant.scope
            )));
        }
        if let (Some(limit), Some(amount)) = (policy.over_amount_cents, op.amount_cents())
            && amount > limit
        {
            return Ok(Some(format!(
                "the amount {} is over the approval threshold of {}",
                money(amount),
                money(limit)
            )));
        }
        if let Some(domain) = &policy.outside_domain {
            let suffix = format!("@{domain}");
            let outside: Vec<&str> = op
                .recipients()
                .iter()
                .map(String::as_str)
                .filter(|r| !r.to_lowercase().ends_with(&suffix))
                .collect();
            if !outside.is_empty() {
                return Ok(Some(format!("{} outside {domain}", outside.join(", "))));
            }
        }
        if let Some(n) = policy.first {
            let done =
                self.approvals
                    .writes_done(&self.employee, grant.integration, &grant.scope)?;
            if done < u64::from(n) {
                return Ok(Some(format!(
                    "the first {n} writes of this grant need approval ({done} done so far)"
                )));
            }
        }
        Ok(None)
    }

    /// Store a gated call durably and tell the guest it is queued.
    fn enqueue(
        &self,
        task: &str,
        grant: &Grant,
        op: Operation,
        reason: &str,
        gated: Gated,
        record: Record,
    ) -> Result<Response, CallError> {
        let request = ActionRequest {
            org: self.org.clone(),
            employee: self.employee.clone(),
            task: task.to_string(),
            integration: Some(grant.integration),
            scope: grant.scope.clone(),
            operation: op,
            reason: reason.to_string(),
            policy_version: gated.policy_version,
        };
        self.queue(request, gated.because, &grant.approval, record)
    }

    /// Store `request` durably for a human, audit and announce it, and
    /// tell the guest it is queued.
    fn queue(
        &self,
        request: ActionRequest,
        because: String,
        policy: &ApprovalPolicy,
        mut record: Record,
    ) -> Result<Response, CallError> {
        let unavailable = |e: &dyn std::fmt::Display| {
            tracing::error!(employee = %self.employee, "could not queue a gated call: {e}");
            CallError::Failed(
                "the approval queue or the audit log is unavailable, so the action was not queued"
                    .into(),
            )
        };
        let prepared = self
            .approvals
            .prepare(request, because, policy)
            .map_err(|e| unavailable(&e))?;
        let (approval, store) = match prepared {
            crate::approvals::Enqueue::Existing(a) => (a, None),
            crate::approvals::Enqueue::New {
                approval,
                guard,
                writes,
            } => (approval, Some((guard, writes))),
        };
        record.decision = Some(Decision::Gated);
        record.approval = Some(approval.id.clone());
        record.result = format!("{} ({})", approval.id, approval.gated_because);
        // The request and the entry that records it: both or neither.
        let written = match store {
            Some((guard, writes)) => {
                self.audit
                    .append_with(Kind::Queued, record, Some(&guard), writes)
            }
            None => self.audit.append(Kind::Queued, record).map(Some),
        };
        match written {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(CallError::Failed(
                    "the same action was queued at the same moment; ask again".into(),
                ));
            }
            Err(e) => return Err(unavailable(&e)),
        }
        crate::pause_point("enqueue:after-store");
        for target in self.notify.iter().filter(|t| t.wants(Event::Requested)) {
            if let Err(e) =
                self.outbox
                    .push(target, Event::Requested, &approval, self.approvals.now())
            {
                tracing::error!(approval = %approval.id, "could not queue a notification: {e}");
            }
        }
        Ok(Response::Queued(approval.id))
    }

    /// Undo the write recorded as audit entry `undoes` by running `inverse`
    /// in `scope`, on the employee's behalf, through the executor: the
    /// employee must still hold the grant the write needed (as in force
    /// now), the same persisted rate limits apply, and intent and result
    /// are audited like any call (the result names `undoes`). Returns the
    /// audit entry that records the undo.
    pub fn undo(
        &self,
        task: &str,
        scope: &str,
        inverse: &Inverse,
        reason: &str,
        undoes: u64,
    ) -> Result<u64, CallError> {
        let record = Record {
            employee: self.employee.clone(),
            task: task.to_string(),
            interface: inverse.interface().to_string(),
            scope: scope.to_string(),
            action: inverse.method().to_string(),
            args: inverse.summary(),
            reason: truncate(reason, MAX_REASON_BYTES),
            undoes: Some(undoes),
            ..Record::default()
        };
        let integration = Integration::of(inverse.interface());
        let grant = self.grant_in_force(integration, scope).map(|(_, g)| g);
        if let Err(e) = self.check_rate(grant.as_ref()) {
            return Err(self.refuse(record, Decision::RateLimited, e));
        }
        let execution = self
            .execute(
                integration,
                scope,
                Effect::Undo(inverse.clone()),
                record,
                None,
            )
            .map_err(|e| {
                tracing::error!(employee = %self.employee, "audit intent failed, undo not made: {e}");
                CallError::Failed("the audit log is unavailable, so nothing was undone".into())
            })?;
        execution
            .outcome
            .map(|_| execution.entry.unwrap_or_default())
    }

    /// Take one call from the employee's bucket and, with `grant`, from the
    /// grant's (both persisted: they hold across tasks and processes).
    fn check_rate(&self, grant: Option<&Grant>) -> Result<(), CallError> {
        let taken = match grant.and_then(|g| g.calls_per_minute.map(|pm| (g, pm))) {
            Some((g, per_minute)) => self.meter.take_call(&[
                self.bucket.clone(),
                Bucket::grant(&self.employee, g.integration, &g.scope, per_minute),
            ]),
            None => self.meter.take_call(std::slice::from_ref(&self.bucket)),
        };
        match taken {
            Ok(()) => Ok(()),
            Err(LimitError::RateLimited(secs)) => Err(CallError::RateLimited(secs)),
            Err(e) => {
                tracing::error!(employee = %self.employee, "cannot read the rate limits: {e}");
                Err(CallError::Failed(
                    "the rate limits cannot be checked now, so the call was not made".into(),
                ))
            }
        }
    }

    /// An employee asks for a time-boxed widening of its grants on an
    /// integration it already holds a grant on. Checked like a call, then
    /// always queued for a human (with the ladder of its existing grant on
    /// that integration); the host records it only on approval.
    pub fn request_elevation(
        &self,
        task: &str,
        integration: &str,
        scope: &str,
        actions: Vec<String>,
        minutes: u32,
        reason: &str,
    ) -> Result<Response, CallError> {
        let parsed = Integration::parse(integration);
        let op = Operation::Elevation(ElevationOp::Request {
            integration: parsed.unwrap_or(Integration::Files),
            scope: truncate(scope, 200),
            actions: actions.iter().take(16).map(|a| truncate(a, 64)).collect(),
            minutes,
        });
        let mut record = Record {
            employee: self.employee.clone(),
            task: task.to_string(),
            interface: parsed.map_or("elevation".into(), |i| i.interface().to_string()),
            scope: truncate(scope, 200),
            action: op.method().to_string(),
            args: op.summary(),
            reason: truncate(reason, MAX_REASON_BYTES),
            ..Record::default()
        };
        let rejected = |record: Record, why: String| {
            Err(self.refuse(record, Decision::Rejected, CallError::Rejected(why)))
        };
        let Some(integration) = parsed else {
            record.args = format!("integration {integration:?}");
            return rejected(record, format!("unknown integration {integration:?}"));
        };
        let Some(base) = self.grants.iter().find(|g| g.integration == integration) else {
            let e = CallError::Denied(format!(
                "{} holds no {integration} grant; a widening can only extend an integration it already has",
                self.employee
            ));
            return Err(self.refuse(record, Decision::Denied, e));
        };
        let kind = integration.scope_kind();
        let valid_scope = scope
            .split_once(':')
            .filter(|(k, _)| *k == kind)
            .map(|(_, v)| crate::manifest::validate_scope_value(integration, v));
        match valid_scope {
            Some(Ok(())) => {}
            Some(Err(why)) => return rejected(record, format!("scope {scope:?}: {why}")),
            None => {
                return rejected(
                    record,
                    format!("scope {scope:?} for {integration} must look like \"{kind}:NAME\""),
                );
            }
        }
        let wanted: Option<Vec<Action>> = actions
            .iter()
            .map(|a| Action::parse(a).filter(|a| integration.offers(*a)))
            .collect();
        let wanted = match wanted {
            Some(w) if !w.is_empty() => w,
            _ => {
                return rejected(
                    record,
                    format!(
                        "actions must be some of: {}",
                        action_list(integration.actions())
                    ),
                );
            }
        };
        if !(1..=MAX_ELEVATION_MINUTES).contains(&minutes) {
            return rejected(
                record,
                format!("minutes must be from 1 to {MAX_ELEVATION_MINUTES}"),
            );
        }
        if reason.trim().is_empty() || reason.len() > MAX_REASON_BYTES {
            return rejected(
                record,
                "a widening needs a plain-English reason of at most 4 KiB".into(),
            );
        }
        let held: std::collections::BTreeSet<Action> = self
            .grant_in_force(integration, scope)
            .map(|(_, g)| g.actions)
            .unwrap_or_default();
        if wanted.iter().all(|a| held.contains(a)) {
            return rejected(
                record,
                format!(
                    "{} already holds {} on {scope}",
                    self.employee,
                    action_list(&wanted)
                ),
            );
        }
        if let Err(e) = self.check_rate(Some(base)) {
            return Err(self.refuse(record, Decision::RateLimited, e));
        }
        let pseudo = Grant {
            approval: ApprovalPolicy {
                always: true,
                ..base.approval.clone()
            },
            ..self.widened_terms(integration, scope)
        };
        let gated = Gated {
            because: "widening a grant always needs approval".to_string(),
            policy_version: elevation_policy_version(&grant_versions(&self.grants)),
        };
        self.enqueue(task, &pseudo, op, reason, gated, record)
    }

    /// The employee asks a human `question`, offering `options`: queued
    /// like a gated write (any manager or admin may answer, within the
    /// default expiry); the answer reaches it through on-decision.
    pub fn ask(
        &self,
        task: &str,
        question: &str,
        options: Vec<String>,
        reason: &str,
    ) -> Result<Response, CallError> {
        let op = Operation::Guidance(GuidanceOp::Ask {
            question: truncate(question, MAX_QUESTION_BYTES),
            options: options
                .iter()
                .take(MAX_OPTIONS + 1)
                .map(|o| truncate(o, MAX_OPTION_BYTES))
                .collect(),
        });
        let record = Record {
            employee: self.employee.clone(),
            task: task.to_string(),
            interface: op.interface_name(),
            action: op.method().to_string(),
            args: op.summary(),
            reason: truncate(reason, MAX_REASON_BYTES),
            ..Record::default()
        };
        let problem = if question.trim().is_empty() || question.len() > MAX_QUESTION_BYTES {
            Some(format!(
                "a question needs text of at most {MAX_QUESTION_BYTES} bytes"
            ))
        } else if !(2..=MAX_OPTIONS).contains(&options.len()) {
            Some(format!("offer from 2 to {MAX_OPTIONS} options"))
        } else if options
            .iter()
            .any(|o| o.trim().is_empty() || o.len() > MAX_OPTION_BYTES || o.contains(['\n', '\r']))
        {
            Some(format!(
                "each option is one line of 1 to {MAX_OPTION_BYTES} bytes"
            ))
        } else if options
            .iter()
            .enumerate()
            .any(|(i, o)| options[..i].contains(o))
        {
            Some("the options must differ from each other".to_string())
        } else if reason.trim().is_empty() || reason.len() > MAX_REASON_BYTES {
            Some("a question needs a plain-English reason of at most 4 KiB".to_string())
        } else {
            None
        };
        if let Some(why) = problem {
            return Err(self.refuse(record, Decision::Rejected, CallError::Rejected(why)));
        }
        if let Err(e) = self.check_rate(None) {
            return Err(self.refuse(record, Decision::RateLimited, e));
        }
        let request = ActionRequest {
            org: self.org.clone(),
            employee: self.employee.clone(),
            task: task.to_string(),
            integration: None,
            scope: String::new(),
            operation: Operation::Guidance(GuidanceOp::Ask {
                question: question.to_string(),
                options,
            }),
            reason: reason.to_string(),
            policy_version: QUESTION_POLICY.to_string(),
        };
        self.queue(
            request,
            "the employee asks a human".to_string(),
            &ApprovalPolicy::required(),
            record,
        )
    }

    /// Record the employee's plain-English note.
    pub fn note(&self, task: &str, text: &str) {
        let record = Record {
            employee: self.employee.clone(),
            task: task.to_string(),
            reason: truncate(text, MAX_REASON_BYTES),
            ..Record::default()
        };
        if let Err(e) = self.audit.append(Kind::Note, record) {
            tracing::error!(employee = %self.employee, "could not audit a note: {e}");
        }
    }
}

fn list_or_nothing(actions: &std::collections::BTreeSet<Action>) -> String {
    if actions.is_empty() {
        "nothing".to_string()
    } else {
        action_list(actions)
    }
}

/// A one-line description of a call error.
pub fn describe(error: &CallError) -> String {
    match error {
        CallError::Denied(why) => format!("denied: {why}"),
        CallError::RateLimited(secs) => format!("rate limited: retry in {secs}s"),
        CallError::Rejected(why) => format!("rejected: {why}"),
        CallError::Expired => "expired: the connection needs re-authorisation".into(),
        CallError::Failed(why) => format!("failed: {why}"),
    }
}

/// Cut `text` to at most `max` bytes on a character boundary.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}
