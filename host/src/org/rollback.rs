//! Rollback: `clancy undo <action>` and `clancy undo --task <task>`.
//!
//! A write's result entry in the audit log carries its inverse (see
//! `providers::Inverse`). Undo runs that inverse through the employee's
//! mediator, so it needs the grant the write needed, counts against the same
//! rate limits and is audited like any call; the provider refuses when the
//! object changed since the write, so an undo never clobbers a later edit.

use crate::audit::{Decision, Entry, Kind, Outcome};
use crate::mediator::describe;
use crate::store::StoreError;

use super::{Org, OrgError};

/// An undo could not even be tried.
#[derive(Debug, thiserror::Error)]
pub enum UndoError {
    /// No action with that number in this organisation's log.
    #[error("no action #{0} in this organisation's audit log")]
    UnknownAction(u64),
    /// No task with that id (or prefix), or more than one.
    #[error("{0}")]
    UnknownTask(String),
    /// The host failed.
    #[error(transparent)]
    Org(#[from] OrgError),
}

impl From<StoreError> for UndoError {
    fn from(e: StoreError) -> Self {
        UndoError::Org(OrgError::Store(e))
    }
}

/// What happened to one action.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "kebab-case")]
pub enum UndoOutcome {
    /// Undone; the number is the undo's own audit entry.
    Undone(u64),
    /// Already undone by the audit entry named.
    AlreadyUndone(u64),
    /// The action cannot be undone (e.g. a sent mail).
    Irreversible,
    /// It was not a completed write, so there is nothing to undo.
    NothingToUndo(String),
    /// The undo was refused or failed; the reason says why (e.g. changed since).
    NotUndone(String),
}

/// The undo of one action.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UndoReport {
    /// The action's audit entry (its result).
    pub action: u64,
    /// What the action was.
    pub what: String,
    /// What happened.
    pub outcome: UndoOutcome,
}

impl UndoReport {
    /// Whether the action is now undone (now or before).
    pub fn is_undone(&self) -> bool {
        matches!(
            self.outcome,
            UndoOutcome::Undone(_) | UndoOutcome::AlreadyUndone(_)
        )
    }
}

/// A completed write: a result entry of an allowed call that did something.
fn is_completed_write(e: &Entry) -> bool {
    e.kind == Kind::Result
        && e.record.decision == Some(Decision::Allowed)
        && e.record.undoes.is_none()
        && e.record.outcome == Some(Outcome::Done)
}

impl Org {
    /// The full id and entries of the task whose id is or starts with `task`.
    pub fn task_entries(&self, task: &str) -> Result<(String, Vec<Entry>), UndoError> {
        let ids = if task.is_empty() {
            Vec::new()
        } else {
            self.audit.tasks_starting_with(task)?
        };
        let id = match ids.as_slice() {
            [one] => one.to_string(),
            [] => {
                return Err(UndoError::UnknownTask(format!(
                    "no task {task:?} in this organisation's audit log"
                )));
            }
            many => {
                return Err(UndoError::UnknownTask(format!(
                    "{task:?} names {} tasks; give more of the id",
                    many.len()
                )));
            }
        };
        let mine = self.audit.task_entries(&id)?;
        Ok((id, mine))
    }

    /// Undo one action, named by its audit entry number (its result, or its intent).
    pub fn undo_action(&self, action: u64, by: &str) -> Result<UndoReport, UndoError> {
        let found = self
            .audit
            .entry(action)?
            .ok_or(UndoError::UnknownAction(action))?;
        // Its task's entries say what completes it and what undid it.
        let entries = if found.record.task.is_empty() {
            vec![found.clone()]
        } else {
            self.audit.task_entries(&found.record.task)?
        };
        let entry = &found;
        // An intent's number stands for its call: use the result that completes it.
        let entry = match entry.kind {
            Kind::Intent => entries
                .iter()
                .find(|e| e.record.intent == Some(action))
                .unwrap_or(entry),
            _ => entry,
        };
        Ok(self.undo_entry(entry, &entries, by)?)
    }

    /// Undo every completed write of a task, newest first.
    pub fn undo_task(&self, task: &str, by: &str) -> Result<Vec<UndoReport>, UndoError> {
        // Undos are recorded under the task they undo, so the task's own
        // entries say what was undone already.
        let (_, mine) = self.task_entries(task)?;
        let mut reports = Vec::new();
        for entry in mine.iter().rev().filter(|e| is_completed_write(e)) {
            reports.push(self.undo_entry(entry, &mine, by)?);
        }
        Ok(reports)
    }

    fn undo_entry(
        &self,
        entry: &Entry,
        entries: &[Entry],
        by: &str,
    ) -> Result<UndoReport, OrgError> {
        let r = &entry.record;
        let what = format!("{} {} {}({})", r.interface, r.scope, r.action, r.args);
        let report = |outcome| UndoReport {
            action: entry.seq,
            what: what.clone(),
            outcome,
        };
        if !is_completed_write(entry) {
            let why = if entry.record.undoes.is_some() {
                "it is itself an undo".to_string()
            } else {
                format!("it is not a completed write ({})", r.result)
            };
            return Ok(report(UndoOutcome::NothingToUndo(why)));
        }
        if let Some(done) = entries.iter().find(|e| {
            e.kind == Kind::Result
                && e.record.undoes == Some(entry.seq)
                && e.record.outcome == Some(Outcome::Undone)
        }) {
            return Ok(report(UndoOutcome::AlreadyUndone(done.seq)));
        }
        let Some(inverse) = &r.inverse else {
            return Ok(report(UndoOutcome::Irreversible));
        };
        let mediator = self.mediator_for(&r.employee)?;
        let reason = format!("{by} asked to undo #{}", entry.seq);
        match mediator.undo(&r.task, &r.scope, inverse, &reason, entry.seq) {
            Ok(seq) => Ok(report(UndoOutcome::Undone(seq))),
            Err(e) => Ok(report(UndoOutcome::NotUndone(describe(&e)))),
        }
    }
}
