//! The employee registry: what an employee *is* in this organisation.
//!
//! Loading a manifest registers the employee: its component is pinned
//! (copied into `components/<org>/<sha256>.wasm` in the data dir), its
//! manifest is stored with that hash, and every change of component,
//! grants, policies, budgets, limits or notification targets is audited
//! with a readable diff. The host's own work on an employee's behalf
//! (on-decision, approvals, undo, notifications) uses the registered
//! manifest and the pinned copy, never whatever lies at a path now.

use std::collections::BTreeMap;

use sha2::Digest as _;

use crate::audit::{Kind, Record};
use crate::manifest::{Grant, Manifest};
use crate::mediator::Mediator;
use crate::store::StoreError;

use super::{Org, OrgError};

impl Org {
    pub(super) fn component_path(&self, sha256: &str) -> String {
        format!("components/{}/{sha256}.wasm", self.org())
    }

    /// Keep a copy of component `bytes` in the data dir, named by its hash.
    pub(super) fn pin(&self, bytes: &[u8]) -> Result<(), OrgError> {
        let sha = hex::encode(sha2::Sha256::digest(bytes));
        let path = self.component_path(&sha);
        let io = |e: std::io::Error| {
            OrgError::DataDir(format!("cannot pin the component as {path}: {e}"))
        };
        if self.data.exists(&path) {
            return Ok(());
        }
        self.data
            .create_dir_all(format!("components/{}", self.org()))
            .map_err(io)?;
        // Write beside, then rename: a crash never leaves a partial pinned copy.
        let partial = format!("{path}.partial");
        self.data.write(&partial, bytes).map_err(io)?;
        self.data.rename(&partial, &self.data, &path).map_err(io)
    }

    /// The pinned component of a registered manifest, checked against its hash.
    pub(super) fn pinned_component(&self, manifest: &Manifest) -> Result<Vec<u8>, OrgError> {
        let sha = manifest.component_sha256.as_deref().ok_or_else(|| {
            OrgError::DataDir(format!(
                "{} was registered without a pinned component; load its manifest again",
                manifest.name
            ))
        })?;
        let path = self.component_path(sha);
        let bytes = self.data.read(&path).map_err(|e| {
            OrgError::DataDir(format!(
                "the pinned component of {} ({path} in the data dir) cannot be read: {e}; load its manifest again",
                manifest.name
            ))
        })?;
        if hex::encode(sha2::Sha256::digest(&bytes)) != sha {
            return Err(OrgError::DataDir(format!(
                "the pinned component of {} ({path}) no longer matches its hash; it was not run",
                manifest.name
            )));
        }
        Ok(bytes)
    }

    /// Check that `employee`'s pinned component is in the data dir and
    /// unchanged (the host runs it to tell the employee of decisions).
    pub fn verify_pinned(&self, employee: &str) -> Result<(), OrgError> {
        match self.stored_manifest(employee)? {
            Some(manifest) => self.pinned_component(&manifest).map(|_| ()),
            None => Ok(()),
        }
    }

    /// Register `manifest` (already loaded and checked): store it, audit
    /// what changed since the last registration, and void the pending
    /// requests the new grants no longer allow.
    pub(super) fn register(
        &self,
        manifest: &Manifest,
        mediator: &Mediator,
    ) -> Result<(), OrgError> {
        let before = self.stored_manifest(&manifest.name)?;
        let changes = match &before {
            None => vec![format!("registered: {}", describe(manifest).join("; "))],
            Some(before) => diff(before, manifest),
        };
        if !changes.is_empty() {
            let record = Record {
                employee: manifest.name.clone(),
                action: "register".into(),
                args: changes.join("\n"),
                result: if before.is_none() {
                    "registered".into()
                } else {
                    format!("changed ({} change(s))", changes.len())
                },
                ..Record::default()
            };
            self.audit
                .append(Kind::Change, record)
                .map_err(|e| OrgError::Store(e.0))?;
        }
        // Whatever differs is stored, even what the diff has no line for
        // (the path the component was loaded from, say).
        if before.as_ref() != Some(manifest) {
            self.org.write(
                "employees",
                vec![(
                    format!("manifest/{}", manifest.name).into_bytes(),
                    Some(crate::store::encode(manifest)?),
                )],
            )?;
        }
        mediator.refresh_elevations();
        self.void_withdrawn(mediator)?;
        Ok(())
    }

    /// Every registered employee's manifest.
    pub fn registered(&self) -> Result<Vec<Manifest>, StoreError> {
        self.org.scan_json("employees", b"manifest/")
    }
}

/// What a registered employee is, a line per part (component, each grant,
/// limits, notification targets, schedules), as its diffs show them.
pub fn describe(m: &Manifest) -> Vec<String> {
    let mut lines = vec![format!("component {}", component(m))];
    lines.extend(m.grants.iter().map(grant_line));
    lines.push(limits_line(m));
    lines.extend(m.notify.iter().map(notify_line));
    lines.extend(m.schedules.iter().map(schedule_line));
    lines.extend(m.triggers.iter().map(trigger_line));
    lines
}

fn schedule_line(s: &crate::manifest::Schedule) -> String {
    let when = match (&s.cron, s.every_secs) {
        (None, Some(secs)) => format!(
            "every {}",
            humantime::format_duration(std::time::Duration::from_secs(secs))
        ),
        _ => s.when(),
    };
    format!("schedule {when}: {}", crate::human::line(&s.task))
}

fn component(m: &Manifest) -> String {
    match &m.component_sha256 {
        Some(sha) => format!("sha256:{}", &sha[..16.min(sha.len())]),
        None => m.component.display().to_string(),
    }
}

fn grant_line(g: &Grant) -> String {
    let mut line = format!(
        "grant {} {} [{}] approval {}",
        g.integration,
        g.scope,
        crate::integrations::action_list(&g.actions),
        g.approval
    );
    if let Some(n) = g.calls_per_minute {
        line.push_str(&format!(", {n} calls/min"));
    }
    if let Some(n) = g.budget.max_writes_per_day {
        line.push_str(&format!(", {n} writes/day"));
    }
    if let Some(c) = g.budget.max_amount_per_day_cents {
        line.push_str(&format!(", {}/day", crate::providers::money(c)));
    }
    if !g.to.is_empty() {
        line.push_str(&format!(", to {}", g.to.join(", ")));
    }
    line
}

fn limits_line(m: &Manifest) -> String {
    let l = &m.limits;
    format!(
        "limits memory {} MiB, time {} ms, {} calls/min, {} calls/task",
        l.memory_mb, l.time_ms, l.calls_per_minute, l.max_calls
    )
}

fn notify_line(t: &crate::notify::Target) -> String {
    let events: Vec<&str> = t.events.iter().map(|e| e.name()).collect();
    format!(
        "notify {} ({:?}{}{})",
        crate::notify::origin(&t.url),
        t.format,
        if t.include_content {
            ", with content"
        } else {
            ""
        },
        if events.is_empty() {
            String::new()
        } else {
            format!(", {}", events.join(", "))
        }
    )
}

/// The readable differences between two registrations, one per line:
/// `+` added, `-` removed, `~` changed.
pub fn diff(before: &Manifest, after: &Manifest) -> Vec<String> {
    let mut changes = Vec::new();
    if component(before) != component(after) {
        changes.push(format!(
            "~ component {} -> {}",
            component(before),
            component(after)
        ));
    }
    let key = |g: &Grant| format!("{} {}", g.integration, g.scope);
    let old: BTreeMap<String, &Grant> = before.grants.iter().map(|g| (key(g), g)).collect();
    let new: BTreeMap<String, &Grant> = after.grants.iter().map(|g| (key(g), g)).collect();
    for (k, g) in &old {
        match new.get(k) {
            None => changes.push(format!("- {}", grant_line(g))),
            Some(n) => {
                let mut what = Vec::new();
                let removed: Vec<&str> =
                    g.actions.difference(&n.actions).map(|a| a.name()).collect();
                let added: Vec<&str> = n.actions.difference(&g.actions).map(|a| a.name()).collect();
                if !removed.is_empty() {
                    what.push(format!("actions removed: {}", removed.join(", ")));
                }
                if !added.is_empty() {
                    what.push(format!("actions added: {}", added.join(", ")));
                }
                if g.approval != n.approval {
                    what.push(format!("approval {} -> {}", g.approval, n.approval));
                }
                if g.calls_per_minute != n.calls_per_minute || g.budget != n.budget || g.to != n.to
                {
                    what.push(format!("now {}", grant_line(n)));
                }
                if !what.is_empty() {
                    changes.push(format!("~ grant {k}: {}", what.join("; ")));
                }
            }
        }
    }
    for (k, g) in &new {
        if !old.contains_key(k) {
            changes.push(format!("+ {}", grant_line(g)));
        }
    }
    if limits_line(before) != limits_line(after) {
        changes.push(format!(
            "~ {} -> {}",
            limits_line(before),
            limits_line(after)
        ));
    }
    // Targets are compared by their full URL (whose path is a secret and
    // is never shown), so a changed webhook path is still reported.
    for t in &before.notify {
        if !after.notify.iter().any(|n| n == t) {
            changes.push(format!("- {}", notify_line(t)));
        }
    }
    for t in &after.notify {
        if !before.notify.iter().any(|o| o == t) {
            changes.push(format!("+ {}", notify_line(t)));
        }
    }
    for s in &before.schedules {
        if !after.schedules.contains(s) {
            changes.push(format!("- {}", schedule_line(s)));
        }
    }
    for s in &after.schedules {
        if !before.schedules.contains(s) {
            changes.push(format!("+ {}", schedule_line(s)));
        }
    }
    for t in &before.triggers {
        if !after.triggers.contains(t) {
            changes.push(format!("- {}", trigger_line(t)));
        }
    }
    for t in &after.triggers {
        if !before.triggers.contains(t) {
            changes.push(format!("+ {}", trigger_line(t)));
        }
    }
    changes
}

fn trigger_line(t: &crate::manifest::Trigger) -> String {
    let on = match t.on {
        crate::manifest::TriggerSource::Mail => "new mail",
        crate::manifest::TriggerSource::Chat => "a new message",
    };
    format!(
        "trigger on {on} in {}: {}",
        crate::human::line(&t.scope),
        crate::human::line(&t.task)
    )
}
