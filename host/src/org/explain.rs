//! `clancy audit explain <task>`: a plain-English account of one task, built
//! only from the audit log (so it shows exactly what the log proves).

use std::fmt::Write as _;

use crate::audit::{Entry, Kind, Outcome};

use super::Org;
use super::rollback::UndoError;

fn call(e: &Entry) -> String {
    let r = &e.record;
    if r.args.is_empty() {
        format!("{} {} {}", r.interface, r.scope, r.action)
    } else {
        format!("{} {} {}({})", r.interface, r.scope, r.action, r.args)
    }
}

fn because(e: &Entry) -> String {
    if e.record.reason.is_empty() {
        String::new()
    } else {
        format!("\n      because: \"{}\"", e.record.reason)
    }
}

impl Org {
    /// A plain-English account of the task whose id is or starts with `task`:
    /// what it was asked, what it read, what it did or asked to do, what
    /// humans decided, and what was rolled back.
    pub fn explain(&self, task: &str) -> Result<String, UndoError> {
        let (id, entries) = self.task_entries(task)?;
        // Everything below shows recorded text: only ever as humans may see it.
        let entries: Vec<Entry> = entries
            .into_iter()
            .map(|e| Entry {
                record: e.for_humans(),
                ..e
            })
            .collect();
        let mut read = Vec::new();
        let mut did = Vec::new();
        let mut asked = Vec::new();
        let mut decided = Vec::new();
        let mut refused = Vec::new();
        let mut notes = Vec::new();
        let mut undone = Vec::new();
        let mut unfinished = Vec::new();
        let completed: std::collections::HashSet<u64> =
            entries.iter().filter_map(|e| e.record.intent).collect();
        let (mut employee, mut asked_for, mut ending) = (String::new(), None, None);
        for e in &entries {
            let r = &e.record;
            if employee.is_empty() {
                employee = r.employee.clone();
            }
            match e.kind {
                Kind::TaskStart => asked_for = asked_for.or(Some(r.args.clone())),
                Kind::TaskEnd => ending = ending.or(Some(r.result.clone())),
                Kind::Note => notes.push(format!("  - \"{}\"", r.reason)),
                // Changes belong to the employee, not to a task.
                Kind::Change => {}
                Kind::Reaction => decided.push(format!(
                    "  - the employee heard of it: on-decision({}) -> {}",
                    r.args, r.result
                )),
                Kind::Intent if !completed.contains(&e.seq) => unfinished.push(format!(
                    "  - #{} {}: the host stopped before its result was recorded",
                    e.seq,
                    call(e)
                )),
                Kind::Intent => {}
                Kind::Refusal => refused.push(format!(
                    "  - #{} {}: {}{}",
                    e.seq,
                    call(e),
                    r.result,
                    because(e)
                )),
                Kind::Queued => asked.push(format!(
                    "  - {} {}: waited for a human ({}){}",
                    r.approval.as_deref().unwrap_or("?"),
                    call(e),
                    r.result,
                    because(e)
                )),
                Kind::Decision => decided.push(format!(
                    "  - {}: {}",
                    r.approval.as_deref().unwrap_or("?"),
                    r.result
                )),
                Kind::Result if r.undoes.is_some() => undone.push(format!(
                    "  - #{} (undoing #{}): {} ({})",
                    e.seq,
                    r.undoes.unwrap_or_default(),
                    r.result,
                    r.reason
                )),
                Kind::Result => {
                    let approved = r
                        .approval
                        .as_ref()
                        .map(|a| format!(" [after approval {a}]"))
                        .unwrap_or_default();
                    let line = format!(
                        "  - #{} {} -> {}{approved}{}",
                        e.seq,
                        call(e),
                        r.result,
                        because(e)
                    );
                    if matches!(
                        r.outcome,
                        Some(Outcome::Done | Outcome::Granted | Outcome::WriteFailed)
                    ) {
                        did.push(line);
                    } else {
                        read.push(line);
                    }
                }
            }
        }
        let mut out = String::new();
        let _ = writeln!(out, "Task {id}, by {employee}");
        let _ = writeln!(
            out,
            "It was asked: \"{}\"",
            asked_for
                .as_deref()
                .unwrap_or("(the start of the task is not in the log)")
        );
        let sections = [
            ("It explained", notes),
            ("It read", read),
            ("It did", did),
            ("It asked a human to approve", asked),
            ("Humans decided", decided),
            ("It was refused", refused),
            ("Rolled back", undone),
            ("Unfinished", unfinished),
        ];
        for (title, lines) in sections {
            if lines.is_empty() {
                continue;
            }
            let _ = writeln!(out, "{title}:");
            for line in lines {
                let _ = writeln!(out, "{line}");
            }
        }
        let _ = writeln!(
            out,
            "It ended: {}",
            ending
                .as_deref()
                .unwrap_or("(no end recorded: still running, or the host stopped)")
        );
        Ok(out)
    }
}
