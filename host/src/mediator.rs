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

use crate::approvals::{ActionRequest, ApprovalQueue, policy_version};
use crate::audit::{AuditError, AuditLog, Decision, Kind, Record};
use crate::manifest::{Grant, Manifest};
use crate::notify::{Event, Outbox, Target};
use crate::providers::{Inverse, Operation, Providers, Response, money};
use crate::runtime::bindings::CallError;
use crate::store::StoreError;

/// Largest total size of a call's guest-supplied arguments.
pub const MAX_ARGUMENT_BYTES: usize = 256 * 1024;
/// Largest reason or note, in bytes.
pub const MAX_REASON_BYTES: usize = 4 * 1024;

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

    /// The grant behind a handle.
    pub fn grant(&self, index: usize) -> Option<&Grant> {
        self.grants.get(index)
    }

    /// Indexes of the grants that reach `interface`.
    pub fn grants_for(
        &self,
        interface: crate::manifest::Interface,
    ) -> impl Iterator<Item = usize> + '_ {
        self.grants
            .iter()
            .enumerate()
            .filter(move |(_, g)| g.integration.interface() == interface)
            .map(|(i, _)| i)
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
            .grants
            .get(grant_index)
            .filter(|g| g.integration.interface() == op.interface());
        let record = self.record(task, grant, &op, reason);
        let Some(grant) = grant else {
            let e = CallError::Denied(format!(
                "this handle does not reach the {} interface",
                op.interface()
            ));
            return Err(self.refuse(record, Decision::Denied, e));
        };
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
                return self.enqueue(task, grant, op, reason, because, record);
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
                    .count_write(&self.employee, grant.integration, &grant.scope)
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
        because: String,
        mut record: Record,
    ) -> Result<Response, CallError> {
        let request = ActionRequest {
            org: self.org.clone(),
            employee: self.employee.clone(),
            task: task.to_string(),
            integration: grant.integration,
            scope: grant.scope.clone(),
            operation: op,
            reason: reason.to_string(),
            policy_version: policy_version(grant.integration, &grant.scope, &grant.approval),
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
        let grant_index = self
            .grants
            .iter()
            .position(|g| g.scope == scope && g.integration.interface() == inverse.interface());
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
        let Some(grant_index) = grant_index.filter(|&i| self.grants[i].allows(inverse.action()))
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
        let limiters =
            std::iter::once(&self.employee_limit).chain(self.grant_limits[grant_index].as_ref());
        for limiter in limiters {
            if let Err(not_until) = limiter.check() {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let secs = u32::try_from(wait.as_secs().saturating_add(1)).unwrap_or(u32::MAX);
                return Err(CallError::RateLimited(secs));
            }
        }
        Ok(())
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
