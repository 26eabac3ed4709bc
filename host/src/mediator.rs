//! The mediator: the single place where a guest's request becomes a side effect.
//!
//! Order, for every integration call: grant check (scope + action) → argument
//! checks → rate limit (employee, then grant) → approval policy → durable
//! audit *intent* → provider → audit *result*. Anything refused is audited as
//! a refusal and never reaches a provider. If the intent cannot be written,
//! the call does not happen (fail closed).
//!
//! The mediator never hands a provider's credentials or internals to the
//! guest; errors it returns are plain sentences safe to show anyone.

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::approvals::{
    ActionRequest, ApprovalQueue, Elevation, elevation_policy_version, grant_versions,
    policy_version,
};
use crate::audit::{AuditError, AuditLog, Decision, Kind, Record};
use crate::manifest::{ApprovalPolicy, Grant, Integration, Manifest};
use crate::notify::{Event, Outbox, Target};
use crate::providers::{Inverse, MAX_ELEVATION_MINUTES, Operation, Providers, Response, money};
use crate::runtime::bindings::CallError;
use crate::store::StoreError;

/// Largest total size of a call's guest-supplied arguments.
pub const MAX_ARGUMENT_BYTES: usize = 256 * 1024;
/// Largest reason or note, in bytes.
pub const MAX_REASON_BYTES: usize = 4 * 1024;

/// Why a call waits for a human, and under which policy version.
struct Gated {
    because: String,
    policy_version: String,
}

/// The mediator of one employee (rate limits persist across its tasks).
pub struct Mediator {
    org: String,
    employee: String,
    grants: Vec<Grant>,
    audit: Arc<AuditLog>,
    providers: Providers,
    approvals: Arc<ApprovalQueue>,
    outbox: Arc<Outbox>,
    notify: Vec<Target>,
    elevations: std::sync::RwLock<Vec<Elevation>>,
    employee_limit: DefaultDirectRateLimiter,
    grant_limits: Vec<Option<DefaultDirectRateLimiter>>,
}

fn limiter(per_minute: u32) -> DefaultDirectRateLimiter {
    RateLimiter::direct(Quota::per_minute(
        NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN),
    ))
}

impl Mediator {
    /// The mediator for `manifest`'s employee.
    pub fn new(
        manifest: &Manifest,
        audit: Arc<AuditLog>,
        providers: Providers,
        approvals: Arc<ApprovalQueue>,
        outbox: Arc<Outbox>,
    ) -> Mediator {
        Mediator {
            org: audit.org().to_string(),
            approvals,
            outbox,
            notify: manifest.notify.clone(),
            elevations: std::sync::RwLock::new(Vec::new()),
            employee: manifest.name.clone(),
            grants: manifest.grants.clone(),
            audit,
            providers,
            employee_limit: limiter(manifest.limits.calls_per_minute),
            grant_limits: manifest
                .grants
                .iter()
                .map(|g| g.calls_per_minute.map(limiter))
                .collect(),
        }
    }

    /// The employee's name.
    pub fn employee(&self) -> &str {
        &self.employee
    }

    /// Load widenings approved since the last call (at each task start).
    /// The list only grows, so handle indexes stay valid during a task.
    pub fn refresh_elevations(&self) {
        let stored = match self.approvals.elevations(&self.employee) {
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
        let now = self.approvals.now();
        let elevations = self.elevations.read().unwrap_or_else(|p| p.into_inner());
        let mut grant = match self.grants.get(index) {
            Some(g) => g.clone(),
            None => {
                let e = elevations.get(index - self.grants.len())?;
                let base = self.grants.iter().find(|g| g.integration == e.integration);
                Grant {
                    integration: e.integration,
                    scope: e.scope.clone(),
                    actions: Default::default(),
                    approval: base.map_or_else(ApprovalPolicy::none, |b| b.approval.clone()),
                    calls_per_minute: None,
                }
            }
        };
        for e in elevations.iter().filter(|e| {
            e.active_at(now) && e.integration == grant.integration && e.scope == grant.scope
        }) {
            grant.actions.extend(e.actions.iter().cloned());
        }
        Some(grant)
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

    /// The audit log this mediator writes to.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    fn record(&self, task: &str, grant: Option<&Grant>, op: &Operation, reason: &str) -> Record {
        Record {
            employee: self.employee.clone(),
            task: task.to_string(),
            interface: op.interface().to_string(),
            scope: grant.map(|g| g.scope.clone()).unwrap_or_default(),
            action: op.method().to_string(),
            args: op.summary(),
            reason: truncate(reason, MAX_REASON_BYTES),
            ..Record::default()
        }
    }

    fn refuse(&self, mut record: Record, decision: Decision, error: CallError) -> CallError {
        record.decision = Some(decision);
        record.result = describe(&error);
        if let Err(e) = self.audit.append(Kind::Refusal, record) {
            // Nothing happened, so the refusal stands; the operator must hear of the gap.
            tracing::error!(employee = %self.employee, "could not audit a refusal: {e}");
        }
        error
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
            .grant(grant_index)
            .filter(|g| g.integration.interface() == op.interface());
        let record = self.record(task, grant.as_ref(), &op, reason);
        let Some(grant) = grant.as_ref() else {
            let e = CallError::Denied(format!(
                "this handle does not reach the {} interface",
                op.interface()
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
                grant.actions.iter().cloned().collect::<Vec<_>>().join(", ")
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
        if op.is_write() && reason.trim().is_empty() {
            let e = CallError::Rejected("a write needs a plain-English reason".into());
            return Err(self.refuse(record, Decision::Rejected, e));
        }
        if let Err(e) = self.check_rate(grant_index) {
            return Err(self.refuse(record, Decision::RateLimited, e));
        }
        if op.is_write() {
            let because = match self.gate(grant, &op) {
                Ok(because) => because,
                Err(e) => {
                    tracing::error!(employee = %self.employee, "cannot evaluate the approval policy: {e}");
                    return Err(CallError::Failed(
                        "the approval queue is unavailable, so the action was not taken".into(),
                    ));
                }
            };
            if let Some(because) = because {
                let policy_version =
                    policy_version(grant.integration, &grant.scope, &grant.approval);
                let gated = Gated {
                    because,
                    policy_version,
                };
                return self.enqueue(task, grant, op, reason, gated, record);
            }
        }

        let executed = match execute_audited(
            &self.audit,
            &self.providers,
            grant.scope_value(),
            record,
            &op,
            None,
        ) {
            Ok(result) => result,
            Err(e) => {
                tracing::error!(employee = %self.employee, "audit intent failed, call not made: {e}");
                return Err(CallError::Failed(
                    "the audit log is unavailable, so the action was not taken".into(),
                ));
            }
        };
        if matches!(executed, Ok(Response::Done(_)))
            && grant.approval.first.is_some()
            && let Err(e) =
                self.approvals
                    .count_write(&self.employee, grant.integration, &grant.scope, None)
        {
            tracing::error!(employee = %self.employee, "could not count a write for the approval policy: {e}");
        }
        executed
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
        mut record: Record,
    ) -> Result<Response, CallError> {
        let Gated {
            because,
            policy_version,
        } = gated;
        let request = ActionRequest {
            org: self.org.clone(),
            employee: self.employee.clone(),
            task: task.to_string(),
            integration: grant.integration,
            scope: grant.scope.clone(),
            operation: op,
            reason: reason.to_string(),
            policy_version,
        };
        let approval = match self.approvals.enqueue(request, because, &grant.approval) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(employee = %self.employee, "could not queue a gated call: {e}");
                return Err(CallError::Failed(
                    "the approval queue is unavailable, so the action was not taken".into(),
                ));
            }
        };
        record.decision = Some(Decision::Gated);
        record.approval = Some(approval.id.clone());
        record.result = format!("{} ({})", approval.id, approval.gated_because);
        if let Err(e) = self.audit.append(Kind::Queued, record) {
            // The request is stored and approvers will see it; the log must say so too.
            tracing::error!(employee = %self.employee, approval = %approval.id, "could not audit a queued call: {e}");
        }
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
    /// in `scope`, on the employee's behalf: the employee must still hold
    /// the grant the write needed, the same rate limits apply, and intent and
    /// result are audited like any call (the result names `undoes`).
    /// Returns the audit entry that records the undo.
    pub fn undo(
        &self,
        task: &str,
        scope: &str,
        inverse: &Inverse,
        reason: &str,
        undoes: u64,
    ) -> Result<u64, CallError> {
        // The grants in force now: the manifest's and any active widening.
        self.refresh_elevations();
        let grant_index = self
            .grants_for(inverse.interface())
            .into_iter()
            .find(|&i| self.grant(i).is_some_and(|g| g.scope == scope));
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
        let Some(grant_index) =
            grant_index.filter(|&i| self.grant(i).is_some_and(|g| g.allows(inverse.action())))
        else {
            let e = CallError::Denied(format!(
                "{} no longer holds \"{}\" on {scope}, so its action cannot be undone through it",
                self.employee,
                inverse.action()
            ));
            return Err(self.refuse(record, Decision::Denied, e));
        };
        if let Err(e) = self.check_rate(grant_index) {
            return Err(self.refuse(record, Decision::RateLimited, e));
        }
        let mut intent_record = record.clone();
        intent_record.decision = Some(Decision::Allowed);
        let intent = self.audit.append(Kind::Intent, intent_record).map_err(|e| {
            tracing::error!(employee = %self.employee, "audit intent failed, undo not made: {e}");
            CallError::Failed("the audit log is unavailable, so nothing was undone".into())
        })?;
        let scope_value = scope.split_once(':').map(|(_, v)| v).unwrap_or("");
        let result = self.providers.undo(scope_value, inverse);
        let mut result_record = record;
        result_record.decision = Some(Decision::Allowed);
        result_record.intent = Some(intent.seq);
        let outcome = match result {
            Ok(()) => {
                result_record.result = format!("undone: {}", inverse.summary());
                Ok(())
            }
            Err(e) => {
                let error = crate::providers::to_call_error(e);
                result_record.result = format!("not undone: {}", describe(&error));
                Err(error)
            }
        };
        let recorded = match self.audit.append(Kind::Result, result_record) {
            Ok(entry) => entry.seq,
            Err(e) => {
                tracing::error!(intent = intent.seq, "could not audit an undo's result: {e}");
                intent.seq
            }
        };
        outcome.map(|()| recorded)
    }

    fn check_rate(&self, grant_index: usize) -> Result<(), CallError> {
        let limiters = std::iter::once(&self.employee_limit)
            .chain(self.grant_limits.get(grant_index).and_then(Option::as_ref));
        for limiter in limiters {
            if let Err(not_until) = limiter.check() {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let secs = u32::try_from(wait.as_secs().saturating_add(1)).unwrap_or(u32::MAX);
                return Err(CallError::RateLimited(secs));
            }
        }
        Ok(())
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
        let op = Operation::Elevate {
            integration: parsed.unwrap_or(Integration::Files),
            scope: truncate(scope, 200),
            actions: actions.iter().take(16).map(|a| truncate(a, 64)).collect(),
            minutes,
        };
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
        let Some(base_index) = self
            .grants
            .iter()
            .position(|g| g.integration == integration)
        else {
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
        if actions.is_empty()
            || actions
                .iter()
                .any(|a| !integration.actions().contains(&a.as_str()))
        {
            return rejected(
                record,
                format!(
                    "actions must be some of: {}",
                    integration.actions().join(", ")
                ),
            );
        }
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
        let held: std::collections::BTreeSet<String> = self
            .grants_for(integration.interface())
            .into_iter()
            .filter_map(|i| self.grant(i))
            .filter(|g| g.integration == integration && g.scope == scope)
            .flat_map(|g| g.actions)
            .collect();
        if actions.iter().all(|a| held.contains(a)) {
            return rejected(
                record,
                format!(
                    "{} already holds {} on {scope}",
                    self.employee,
                    actions.join(", ")
                ),
            );
        }
        if let Err(e) = self.check_rate(base_index) {
            return Err(self.refuse(record, Decision::RateLimited, e));
        }
        let base = &self.grants[base_index];
        let pseudo = Grant {
            integration,
            scope: scope.to_string(),
            actions: Default::default(),
            approval: ApprovalPolicy {
                always: true,
                ..base.approval.clone()
            },
            calls_per_minute: None,
        };
        let gated = Gated {
            because: "widening a grant always needs approval".to_string(),
            policy_version: elevation_policy_version(&grant_versions(&self.grants)),
        };
        self.enqueue(task, &pseudo, op, reason, gated, record)
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

/// Run one allowed call: durable audit intent, then the provider, then the
/// audit result (with the inverse, for rollback). If the intent cannot be
/// written the call does not happen. Shared by direct calls and by the host
/// executing approved actions (which passes the action hash as `key`).
///
/// The outer error means the intent could not be written and nothing happened.
pub fn execute_audited(
    audit: &AuditLog,
    providers: &Providers,
    scope_value: &str,
    record: Record,
    op: &Operation,
    key: Option<&str>,
) -> Result<Result<Response, CallError>, AuditError> {
    let mut intent_record = record.clone();
    intent_record.decision = Some(Decision::Allowed);
    let intent = audit.append(Kind::Intent, intent_record)?;
    crate::pause_point("execute:after-intent");
    let result = providers.execute(scope_value, &record.employee, op, key);
    crate::pause_point("execute:after-provider");
    let mut result_record = record;
    result_record.decision = Some(Decision::Allowed);
    result_record.intent = Some(intent.seq);
    let outcome = match result {
        Ok(response) => {
            result_record.result = response.summary();
            if let Response::Done(done) = &response {
                result_record.inverse = done
                    .inverse
                    .as_ref()
                    .and_then(|i| serde_json::to_value(i).ok());
            }
            Ok(response)
        }
        Err(e) => {
            let error = crate::providers::to_call_error(e);
            result_record.result = describe(&error);
            Err(error)
        }
    };
    if let Err(e) = audit.append(Kind::Result, result_record) {
        // The call already happened; its intent is on record. Flag loudly.
        tracing::error!(intent = intent.seq, "could not audit a call's result: {e}");
    }
    Ok(outcome)
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
