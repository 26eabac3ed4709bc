//! Decisions on queued actions: approve, deny, edit-then-approve, expiry and
//! escalation, and the host's execution of approved actions (exactly once:
//! the action hash is the provider's idempotency key).

use crate::approvals::{ActionRequest, Approval, ApprovalQueue, Elevation, Status, new_id};
use crate::audit::{Kind, Record};
use crate::integrations::Action;
use crate::integrations::elevation::ElevationOp;
use crate::manifest::Manifest;
use crate::mediator::{Effect, MAX_ARGUMENT_BYTES, Mediator, describe};
use crate::operators::{Approver, Role};
use crate::providers::Operation;
use crate::runtime::bindings::CallError;
use crate::runtime::bindings::clancy::employee::types::Decision;
use crate::runtime::{LoadedEmployee, TaskEnd};
use crate::store::{Durability, StoreError};
use std::sync::Arc;

use super::{Org, OrgError};

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
    /// The grant the request needs was withdrawn or changed since it was
    /// made (or its stored action no longer matches its hash); it is void.
    #[error("{id} is void and was not executed: {why}")]
    Void {
        /// The request.
        id: String,
        /// Why.
        why: String,
    },
    /// Approved, but the audit log could not record the execution; it stays
    /// approved and runs when the host can write its audit log again.
    #[error(
        "{0} is approved but could not be executed now (audit log unavailable); it will run on the next start"
    )]
    Deferred(String),
    /// The decider is not an operator of this org, or not the one this
    /// request is waiting for at its current escalation step.
    #[error("{by} may not decide {id}: it is waiting for {waiting_for}")]
    NotAllowed {
        /// The request.
        id: String,
        /// Who tried.
        by: String,
        /// Who may decide now.
        waiting_for: String,
    },
    /// An approver's edit is not valid.
    #[error("{id}: {why}; nothing was changed")]
    BadEdit {
        /// The request.
        id: String,
        /// Why.
        why: String,
    },
    /// Approving a question: it is answered, not approved.
    #[error(
        "{0} is a question: answer it with `clancy approvals answer {0} <option>` (or deny it)"
    )]
    Question(String),
    /// Answering something that is not a question.
    #[error("{0} is not a question; approve or deny it")]
    NotAQuestion(String),
    /// The answer is not one of the options the employee offered.
    #[error("{id}: {answer:?} is not one of the options ({}); nothing was changed", .options.iter().map(|o| format!("{o:?}")).collect::<Vec<_>>().join(", "))]
    BadAnswer {
        /// The question.
        id: String,
        /// The answer given.
        answer: String,
        /// The options offered.
        options: Vec<String>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The employee cannot be wired up (never loaded, data dir unusable).
    #[error(transparent)]
    Org(#[from] OrgError),
}

impl Org {
    /// This org's approval queue.
    pub fn approvals(&self) -> &ApprovalQueue {
        &self.approvals
    }

    /// The manifest `employee` was last loaded with.
    pub fn stored_manifest(&self, employee: &str) -> Result<Option<Manifest>, StoreError> {
        super::manifest_in(&self.org, employee)
    }

    /// A mediator for `employee` as registered now, with its active
    /// widenings: what the host's own calls on its behalf (approved and
    /// resumed actions, undo) go through.
    pub(super) fn mediator_for(&self, employee: &str) -> Result<Mediator, OrgError> {
        let manifest = self.stored_manifest(employee)?.ok_or_else(|| {
            OrgError::DataDir(format!(
                "{employee} has never been loaded in this organisation"
            ))
        })?;
        let mediator = Mediator::new(&manifest, self.wiring()?);
        mediator.refresh_elevations();
        Ok(mediator)
    }

    /// Void the pending requests of `mediator`'s employee that its grants
    /// no longer allow, or whose grant's terms changed since they were made.
    pub(super) fn void_withdrawn(&self, mediator: &Mediator) -> Result<Vec<Approval>, StoreError> {
        let mut voided = Vec::new();
        for a in self.approvals.open()? {
            if a.status != Status::Pending || a.request.employee != mediator.employee() {
                continue;
            }
            if let Some(why) = void_reason(mediator, &a) {
                voided.extend(self.void(&a, &why)?);
            }
        }
        Ok(voided)
    }

    /// Mark `approval` void (it never runs), audit why and tell the
    /// employee it was denied. `None` if someone else changed it first.
    fn void(&self, approval: &Approval, why: &str) -> Result<Option<Approval>, StoreError> {
        let next = Approval {
            status: Status::Void,
            decided_by: Some("host".into()),
            decided_at: Some(self.approvals.now()),
            outcome: Some(why.to_string()),
            ..approval.clone()
        };
        if !self.record_decision(approval, &next, &format!("void: {why}"))? {
            return Ok(None);
        }
        self.notify(crate::notify::Event::Decided, &next);
        self.react(next.edited_from.as_deref().unwrap_or(&next.id), &next);
        Ok(Some(next))
    }

    /// Move every pending request along its escalation ladder and deny those
    /// whose time ran out. Driven by the clock alone, so it does the same
    /// whenever it runs (after a restart too). Returns what changed.
    pub fn tick(&self) -> Result<Vec<Approval>, StoreError> {
        self.end_elevations()?;
        let now = self.approvals.now();
        let mut changed = Vec::new();
        // Only the requests whose next deadline passed (the deadline index).
        for a in self.approvals.due(now)? {
            if a.status != Status::Pending {
                continue;
            }
            if a.expires_at <= now || (!a.escalation.is_empty() && a.step_at(now).is_none()) {
                let next = Approval {
                    status: Status::Expired,
                    decided_by: Some("expiry".into()),
                    decided_at: Some(now),
                    ..a.clone()
                };
                let what = if a.escalation.is_empty() {
                    "expired unanswered, so denied".to_string()
                } else {
                    format!(
                        "nobody on the escalation ladder decided within {} h, so denied",
                        a.escalation.iter().map(|s| s.hours).sum::<u32>()
                    )
                };
                if self.record_decision(&a, &next, &what)? {
                    self.notify(crate::notify::Event::Expired, &next);
                    self.react(&next.id, &next);
                    changed.push(next);
                }
                continue;
            }
            if let Some(step) = a.step_at(now).filter(|s| *s > a.step) {
                let next = Approval { step, ..a.clone() };
                let from = &a.escalation[a.step];
                let what = format!(
                    "escalated to {}: {} did not decide within {} h",
                    next.escalation[step].approver, from.approver, from.hours
                );
                if self.record_decision(&a, &next, &what)? {
                    self.notify(crate::notify::Event::Escalated, &next);
                    changed.push(next);
                }
            }
        }
        Ok(changed)
    }

    /// Deny every pending request whose time ran out (see [`Org::tick`]). Returns them.
    pub fn expire_overdue(&self) -> Result<Vec<Approval>, StoreError> {
        Ok(self
            .tick()?
            .into_iter()
            .filter(|a| a.status == Status::Expired)
            .collect())
    }

    /// Execute every approved request that has not finished (after a crash). Returns them.
    pub fn resume_approved(&self) -> Result<Vec<Approval>, DecideError> {
        let mut resumed = Vec::new();
        for a in self.approvals.open()? {
            if a.status == Status::Approved {
                let done = self.execute_approved(a)?;
                self.react(done.edited_from.as_deref().unwrap_or(&done.id), &done);
                resumed.push(done);
            }
        }
        Ok(resumed)
    }

    /// Record in the audit log the end of every widening that ran out.
    fn end_elevations(&self) -> Result<(), StoreError> {
        let now = self.now();
        for e in self.approvals.unended_elevations()? {
            if e.expires_at > now {
                continue;
            }
            let record = Record {
                employee: e.employee.clone(),
                interface: e.integration.interface().to_string(),
                scope: e.scope.clone(),
                action: "elevation-ended".into(),
                args: format!(
                    "{} on {} {}",
                    crate::integrations::action_list(&e.actions),
                    e.integration,
                    e.scope
                ),
                result: format!(
                    "the temporary grant ended at {}",
                    e.expires_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
                approval: Some(e.approval.clone()),
                ..Record::default()
            };
            self.audit.append(Kind::Note, record).map_err(|e| e.0)?;
            self.approvals
                .put_elevation(&Elevation { ended: true, ..e })?;
        }
        Ok(())
    }

    /// The employee, loaded from its stored manifest, to hear a decision.
    /// `employee` as registered: its stored manifest and pinned component,
    /// loaded once per version (what on-decision and schedules run).
    pub fn registered_employee(&self, employee: &str) -> Result<Arc<LoadedEmployee>, OrgError> {
        self.reactor(employee)
    }

    fn reactor(&self, employee: &str) -> Result<Arc<LoadedEmployee>, OrgError> {
        let manifest = self
            .stored_manifest(employee)?
            .ok_or_else(|| OrgError::DataDir(format!("{employee} has never been loaded here")))?;
        let fingerprint = hex::encode(crate::digest::digest(&manifest));
        let mut cache = self.reactors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((f, loaded)) = cache.get(employee)
            && *f == fingerprint
        {
            return Ok(loaded.clone());
        }
        let bytes = self.pinned_component(&manifest)?;
        let loaded = Arc::new(self.instantiate(manifest, &bytes)?);
        cache.insert(employee.to_string(), (fingerprint, loaded.clone()));
        Ok(loaded)
    }

    /// Tell the employee what became of its request `guest_id` (the id it
    /// was given; for an edited request, the original's), if it listens.
    /// Never changes the decision; how the callback ended is audited.
    fn react(&self, guest_id: &str, approval: &Approval) {
        let decision = match approval.status {
            Status::Executed => Decision::Executed(approval.outcome.clone().unwrap_or_default()),
            Status::Failed => Decision::Failed(approval.outcome.clone().unwrap_or_default()),
            Status::Denied => Decision::Denied(format!(
                "{}{}",
                approval.decided_by.as_deref().unwrap_or("someone"),
                approval
                    .comment
                    .as_ref()
                    .map(|c| format!(": {c}"))
                    .unwrap_or_default()
            )),
            Status::Expired => Decision::Expired,
            Status::Answered => Decision::Answered(approval.outcome.clone().unwrap_or_default()),
            Status::Void => Decision::Denied(format!(
                "void: {}",
                approval.outcome.as_deref().unwrap_or("its grant changed")
            )),
            Status::Pending | Status::Approved | Status::Edited => return,
        };
        let r = &approval.request;
        let result = match self.reactor(&r.employee) {
            Ok(employee) => match employee.on_decision(&r.task, guest_id, &decision) {
                None => return,
                Some(TaskEnd::Completed { .. }) => "returned".to_string(),
                Some(TaskEnd::Failed { error }) => format!("failed: {error}"),
                Some(TaskEnd::Trapped { reason }) => format!("stopped: {reason}"),
            },
            Err(e) => format!("could not be called: {e}"),
        };
        let heard = match &decision {
            Decision::Executed(_) => "executed",
            Decision::Failed(_) => "failed",
            Decision::Denied(_) => "denied",
            Decision::Expired => "expired",
            Decision::Answered(_) => "answered",
        };
        let record = Record {
            employee: r.employee.clone(),
            task: r.task.clone(),
            action: "on-decision".into(),
            args: format!("{guest_id}, {heard}"),
            result,
            approval: Some(approval.id.clone()),
            ..Record::default()
        };
        if let Err(e) = self.audit.append(Kind::Reaction, record) {
            tracing::error!(approval = %approval.id, "could not audit on-decision: {e}");
        }
    }

    /// Move `current` to `next` and record `what` as the decision, in one
    /// store transaction: a decision that cannot be audited does not take
    /// effect. False when `current` changed since it was read (another
    /// decider got there first); nothing was written then.
    fn record_decision(
        &self,
        current: &Approval,
        next: &Approval,
        what: &str,
    ) -> Result<bool, StoreError> {
        self.record_decision_when(current, next, what, Durability::Now)
    }

    /// [`Org::record_decision`], durable as `when` says.
    fn record_decision_when(
        &self,
        current: &Approval,
        next: &Approval,
        what: &str,
        when: Durability,
    ) -> Result<bool, StoreError> {
        match self.approvals.transition_writes(current, next)? {
            Some((guard, writes)) => self.append_decision(next, what, &guard, writes, when),
            None => Ok(false),
        }
    }

    /// Write `writes` (if `guard` holds) with the decision entry for `approval`.
    fn append_decision(
        &self,
        approval: &Approval,
        what: &str,
        guard: &crate::store::Guard,
        writes: Vec<crate::store::AreaWrite>,
        when: Durability,
    ) -> Result<bool, StoreError> {
        let record = Record {
            result: what.to_string(),
            ..approval_record(approval)
        };
        Ok(self
            .audit
            .append_with_when(Kind::Decision, record, Some(guard), writes, when)
            .map_err(|e| e.0)?
            .is_some())
    }

    /// Record that `by`'s decision on `id` was refused because a record it
    /// needed was changed outside the host.
    fn audit_tampering(&self, e: &StoreError, id: &str, by: &str) {
        if !matches!(e, StoreError::Tampered { .. }) {
            return;
        }
        let record = Record {
            employee: "host".into(),
            action: "decide".into(),
            args: format!("{id} by {by}"),
            result: format!("refused: {e}"),
            ..Record::default()
        };
        if let Err(e) = self.audit.append(Kind::Note, record) {
            tracing::error!(approval = %id, "could not audit a refused decision: {e}");
        }
    }

    /// The pending request `id`, if `by` may decide it now with `verdict`.
    fn decidable(&self, id: &str, verdict: Verdict, by: &str) -> Result<Approval, DecideError> {
        let current = self
            .tick()
            .and_then(|_| self.approvals.get(id))
            .inspect_err(|e| self.audit_tampering(e, id, by))?
            .ok_or_else(|| DecideError::Unknown(id.to_string()))?;
        match current.status {
            Status::Pending => {}
            Status::Expired => return Err(DecideError::Expired(id.to_string())),
            Status::Void => {
                return Err(DecideError::Void {
                    id: id.to_string(),
                    why: current.outcome.clone().unwrap_or_default(),
                });
            }
            other => {
                return Err(DecideError::AlreadyDecided {
                    id: id.to_string(),
                    status: format!("{other:?}").to_lowercase(),
                });
            }
        }
        let operator = self.operators().get(by)?;
        let approver = current.current_approver();
        let allowed = match (&operator, approver) {
            (None, _) => false,
            (Some(op), Some(approver)) => op.may_decide(approver),
            (Some(op), None) => op.role >= Role::Manager,
        };
        if !allowed {
            return Err(DecideError::NotAllowed {
                id: id.to_string(),
                by: by.to_string(),
                waiting_for: match approver {
                    Some(Approver::Role(r)) => format!("an operator with role {r} (or an admin)"),
                    Some(Approver::Named(n)) => format!("{n} (or an admin)"),
                    None => "a registered operator with role manager or admin".to_string(),
                },
            });
        }
        if current.hash != current.request.hash() {
            return Err(DecideError::Tampered(id.to_string()));
        }
        // The employee hears the decision from its pinned component: it must
        // be there, unchanged, before anything is decided.
        self.verify_pinned(&current.request.employee)?;
        if verdict == Verdict::Approve {
            let mediator = self.mediator_for(&current.request.employee)?;
            if let Some(why) = void_reason(&mediator, &current) {
                self.void(&current, &why)?;
                return Err(DecideError::Void {
                    id: id.to_string(),
                    why,
                });
            }
        }
        Ok(current)
    }

    fn lost_race(&self, id: &str) -> Result<DecideError, StoreError> {
        let status = self
            .approvals
            .get(id)?
            .map(|a| format!("{:?}", a.status).to_lowercase())
            .unwrap_or_default();
        Ok(DecideError::AlreadyDecided {
            id: id.to_string(),
            status,
        })
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
        let current = self.decidable(id, verdict, by)?;
        if verdict == Verdict::Approve
            && matches!(current.request.operation, Operation::Guidance(_))
        {
            return Err(DecideError::Question(id.to_string()));
        }
        let now = self.approvals.now();
        let next = Approval {
            status: if verdict == Verdict::Approve {
                Status::Approved
            } else {
                Status::Denied
            },
            decided_by: Some(by.to_string()),
            decided_at: Some(now),
            comment: comment.map(str::to_string),
            ..current.clone()
        };
        let verb = if verdict == Verdict::Approve {
            "approved"
        } else {
            "denied"
        };
        let what = match comment {
            Some(c) => format!("{verb} by {by}: {c}"),
            None => format!("{verb} by {by}"),
        };
        crate::pause_point("decide:before-transition");
        // An approval is followed at once by the intent of what it approves,
        // written durably before the action: that flush covers the decision
        // too (the log is written in order). A denial is durable at once.
        let when = match verdict {
            Verdict::Approve => Durability::Soon,
            Verdict::Deny => Durability::Now,
        };
        if !self.record_decision_when(&current, &next, &what, when)? {
            return Err(self.lost_race(id)?);
        }
        let decided = self.org.commit_mark();
        crate::pause_point("decide:after-transition");
        self.notify(crate::notify::Event::Decided, &next);
        let done = match verdict {
            Verdict::Approve => self.execute_approved(next),
            Verdict::Deny => Ok(next),
        };
        // Whatever became of the action, the decision is durable before the
        // caller hears of it (usually already: the intent's flush covered it).
        self.org.sync_through(decided)?;
        let done = done?;
        self.react(id, &done);
        Ok(done)
    }

    /// Answer the question `id` with `option` (exactly one of the options
    /// the employee offered). The employee hears `answered(option)`.
    pub fn answer(
        &self,
        id: &str,
        option: &str,
        by: &str,
        comment: Option<&str>,
    ) -> Result<Approval, DecideError> {
        let current = self.decidable(id, Verdict::Deny, by)?;
        let Operation::Guidance(question) = &current.request.operation else {
            return Err(DecideError::NotAQuestion(id.to_string()));
        };
        let options = question.options();
        if !options.iter().any(|o| o == option) {
            return Err(DecideError::BadAnswer {
                id: id.to_string(),
                answer: option.to_string(),
                options: options.to_vec(),
            });
        }
        let next = Approval {
            status: Status::Answered,
            decided_by: Some(by.to_string()),
            decided_at: Some(self.approvals.now()),
            comment: comment.map(str::to_string),
            outcome: Some(option.to_string()),
            ..current.clone()
        };
        let what = match comment {
            Some(c) => format!("answered by {by}: {option:?} ({c})"),
            None => format!("answered by {by}: {option:?}"),
        };
        if !self.record_decision(&current, &next, &what)? {
            return Err(self.lost_race(id)?);
        }
        self.notify(crate::notify::Event::Decided, &next);
        self.react(id, &next);
        Ok(next)
    }

    /// Change fields of a pending request's action (e.g. a mail's body) and
    /// approve the edited action. The edit is a new request with its own
    /// hash, approved by `by`; the original is marked edited and never runs.
    pub fn edit_and_approve(
        &self,
        id: &str,
        edits: &[(String, String)],
        by: &str,
        comment: Option<&str>,
    ) -> Result<Approval, DecideError> {
        let current = self.decidable(id, Verdict::Approve, by)?;
        let bad = |why: String| DecideError::BadEdit {
            id: id.to_string(),
            why,
        };
        if edits.is_empty() {
            return Err(bad("no edit given".into()));
        }
        let mut operation = current.request.operation.clone();
        for (field, value) in edits {
            operation = operation
                .edited(field, value)
                .map_err(|e| bad(e.to_string()))?;
        }
        let operation = operation
            .with_canonical_recipients()
            .map_err(|e| bad(e.to_string()))?;
        if operation.argument_bytes() > MAX_ARGUMENT_BYTES {
            return Err(bad(format!(
                "the edited action exceeds {MAX_ARGUMENT_BYTES} bytes"
            )));
        }
        if operation == current.request.operation {
            return Err(bad("the edit changes nothing; approve it as it is".into()));
        }
        let request = ActionRequest {
            operation,
            ..current.request.clone()
        };
        let now = self.approvals.now();
        let edited = Approval {
            id: new_id(),
            hash: request.hash(),
            request,
            status: Status::Approved,
            decided_by: Some(by.to_string()),
            decided_at: Some(now),
            comment: comment.map(str::to_string),
            edited_from: Some(current.id.clone()),
            ..current.clone()
        };
        let fields: Vec<&str> = edits.iter().map(|(f, _)| f.as_str()).collect();
        let superseded = Approval {
            status: Status::Edited,
            decided_by: Some(by.to_string()),
            decided_at: Some(now),
            comment: comment.map(str::to_string),
            outcome: Some(format!(
                "edited by {by} ({}) and approved as {}",
                fields.join(", "),
                edited.id
            )),
            ..current.clone()
        };
        let what = format!(
            "edited by {by} (changed {}) and approved as {}; action hash {} became {}{}",
            fields.join(", "),
            edited.id,
            &current.hash[..12],
            &edited.hash[..12],
            comment.map(|c| format!(": {c}")).unwrap_or_default()
        );
        let recorded = match self
            .approvals
            .supersede_writes(&current, &superseded, &edited)?
        {
            Some((guard, writes)) => {
                self.append_decision(&superseded, &what, &guard, writes, Durability::Now)?
            }
            None => false,
        };
        if !recorded {
            return Err(self.lost_race(id)?);
        }
        self.notify(crate::notify::Event::Decided, &superseded);
        let done = self.execute_approved(edited)?;
        self.react(id, &done);
        Ok(done)
    }

    /// Run an approved request through the employee's executor (the grant
    /// in force now, its hash as idempotency key), then record how it went.
    /// Before it runs, its hash and policy version are checked again (it
    /// may be resumed long after it was approved): a request that no longer
    /// matches, or whose grant was withdrawn, becomes void and never runs.
    fn execute_approved(&self, approval: Approval) -> Result<Approval, DecideError> {
        let r = &approval.request;
        let mediator = self.mediator_for(&r.employee)?;
        let stale = if approval.hash != r.hash() {
            Some("its stored action no longer matches the hash it was approved under".to_string())
        } else {
            void_reason(&mediator, &approval)
        };
        if let Some(why) = stale {
            return Ok(self.void(&approval, &why)?.unwrap_or(approval));
        }
        let effect = match &r.operation {
            Operation::Elevation(ElevationOp::Request {
                integration,
                scope,
                actions,
                minutes,
            }) => {
                let starts_at = approval.decided_at.unwrap_or_else(|| self.now());
                Effect::Widen(Elevation {
                    approval: approval.id.clone(),
                    employee: r.employee.clone(),
                    integration: *integration,
                    scope: scope.clone(),
                    // Validated when the request was queued: names parse.
                    actions: actions.iter().filter_map(|a| Action::parse(a)).collect(),
                    starts_at,
                    expires_at: starts_at + chrono::Duration::minutes(i64::from(*minutes)),
                    ended: false,
                })
            }
            op => Effect::Call(op.clone()),
        };
        let Some(integration) = r.integration else {
            // Only questions name no integration, and they are answered, never run.
            return Ok(self
                .void(&approval, "a question is answered, never executed")?
                .unwrap_or(approval));
        };
        let execution = mediator
            .execute(
                integration,
                &r.scope,
                effect,
                approval_record(&approval),
                Some(&approval.hash),
            )
            .map_err(|_| DecideError::Deferred(approval.id.clone()))?;
        let (status, outcome) = match &execution.outcome {
            Ok(response) => (Status::Executed, response.summary()),
            // The executor refused: the grant in force no longer allows it.
            Err(CallError::Denied(why)) => {
                return Ok(self.void(&approval, why)?.unwrap_or(approval));
            }
            Err(e) => (Status::Failed, describe(e)),
        };
        crate::pause_point("execute:after-result");
        let next = Approval {
            status,
            outcome: Some(outcome),
            ..approval.clone()
        };
        // Rides on the next group commit: if a crash loses it, the request
        // is still approved and is resumed, and the provider replays the
        // write under its key instead of making it again.
        self.approvals
            .transition_when(&approval, &next, crate::store::Durability::Soon)?;
        if status == Status::Failed {
            self.notify(crate::notify::Event::Failed, &next);
        }
        Ok(next)
    }
}

/// Why `approval` can no longer be approved under the grants `mediator`
/// holds now, if it cannot.
fn void_reason(mediator: &Mediator, approval: &Approval) -> Option<String> {
    let r = &approval.request;
    if let Some(why) = mediator.withdrawn(r) {
        return Some(why);
    }
    if mediator.policy_version_now(r).as_deref() == Some(r.policy_version.as_str()) {
        return None;
    }
    Some(match r.operation {
        Operation::Elevation(_) => format!(
            "the grants of {} changed since it asked for this widening",
            r.employee
        ),
        _ => format!(
            "the terms of {}'s grant on {} (its actions or approval policy) changed since this was asked",
            r.employee, r.scope
        ),
    })
}

/// The audit record of a queued action: who, which task, what, and why.
fn approval_record(approval: &Approval) -> Record {
    let r = &approval.request;
    Record {
        employee: r.employee.clone(),
        task: r.task.clone(),
        interface: r.operation.interface_name(),
        scope: r.scope.clone(),
        action: r.operation.method().to_string(),
        args: r.operation.summary(),
        reason: r.reason.clone(),
        approval: Some(approval.id.clone()),
        ..Record::default()
    }
}
