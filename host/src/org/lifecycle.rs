//! An organisation's whole data, exported (admins: `GET
//! /api/v1/organisation/export`, `clancy orgs export`) or deleted (`clancy
//! orgs delete NAME --confirm NAME`, with no daemon running).
//!
//! The export holds every record the host keeps for the organisation and
//! none of its secrets: operators without password hashes or second
//! factors, tokens without their hashes, no webhook signing secret. The
//! deletion removes every key of the organisation from every area of the
//! store, its files and its pinned components; the signed checkpoint lines
//! it left in the checkpoint file (an org name, a number, a hash and a
//! signature each) stay, as that file is append-only.

use serde_json::{Value, json};

use super::{ORGS_AREA, Org, OrgError};

/// What deleting an organisation removed.
#[derive(Debug, Default, serde::Serialize)]
pub struct Deleted {
    /// Store keys removed, over every area.
    pub keys: usize,
    /// Whether its files and pinned components were there (and are gone).
    pub files: bool,
}

fn encode(e: serde_json::Error) -> OrgError {
    OrgError::DataDir(format!("cannot encode the export: {e}"))
}

impl Org {
    /// Everything the organisation holds, as one JSON document; audited
    /// (who exported) before it is made.
    pub fn export_organisation(&self, by: &str) -> Result<Value, OrgError> {
        self.audit_operator_action(
            "organisation-export",
            "",
            &format!("the organisation's data was exported by {by}"),
        )?;
        let accounts = self.accounts();
        let mut operators = Vec::new();
        for o in self.operators().list()? {
            operators.push(json!({
                "name": o.name,
                "role": o.role,
                "enrolled": accounts.enrolled(&o.name)?,
                "employees": self.operators().assigned(&o.name)?,
            }));
        }
        let tokens: Vec<Value> = self
            .operators()
            .tokens()?
            .into_iter()
            .map(|t| {
                json!({
                    "id": t.id, "operator": t.operator, "role": t.role,
                    "created_by": t.created_by, "created_at": t.created_at,
                    "expires_at": t.expires_at, "revoked": t.revoked,
                })
            })
            .collect();
        let mut employees = Vec::new();
        for m in self.registered()? {
            employees.push(json!({
                "name": m.name,
                "disabled": self.disabled(&m.name)?.map(|d| json!({"by": d.by, "at": d.at})),
                "manifest": serde_json::to_value(&m).map_err(encode)?,
            }));
        }
        let notifications: Vec<Value> = self
            .outbox()
            .list()?
            .into_iter()
            .map(|n| {
                json!({
                    "id": n.id, "event": n.event.name(), "approval": n.approval,
                    "target": crate::notify::origin(&n.url), "state": n.state,
                    "attempts": n.attempts, "last_error": n.last_error,
                    "body": n.body,
                })
            })
            .collect();
        let anchors = self.audit_anchors(None, None)?;
        Ok(json!({
            "organisation": self.org(),
            "exported_at": self.now(),
            "exported_by": by,
            "operators": operators,
            "tokens": tokens,
            "employees": employees,
            "upgrades": serde_json::to_value(self.upgrades()?).map_err(encode)?,
            "approvals": serde_json::to_value(self.approvals().list()?).map_err(encode)?,
            "tasks": serde_json::to_value(self.tasks()?).map_err(encode)?,
            "notifications": notifications,
            "sandbox": serde_json::to_value(self.sandbox().snapshot()?).map_err(encode)?,
            "files": self.file_listing()?,
            "audit": serde_json::to_value(self.audit().entries()?).map_err(encode)?,
            "checkpoints": serde_json::to_value(
                anchors.checkpoints.iter().filter(|c| c.org == self.org()).collect::<Vec<_>>()
            ).map_err(encode)?,
        }))
    }

    /// The organisation's files (employees' folders): path and size each.
    fn file_listing(&self) -> Result<Vec<Value>, OrgError> {
        let root = format!("files/{}", self.org());
        let mut found = Vec::new();
        let io = |e: std::io::Error| OrgError::DataDir(format!("cannot list {root}: {e}"));
        if !self.data.exists(&root) {
            return Ok(found);
        }
        let mut pending = vec![String::new()];
        while let Some(dir) = pending.pop() {
            let path = if dir.is_empty() {
                root.clone()
            } else {
                format!("{root}/{dir}")
            };
            for entry in self.data.read_dir(&path).map_err(io)? {
                let entry = entry.map_err(io)?;
                let name = entry.file_name().to_string_lossy().to_string();
                let rel = if dir.is_empty() {
                    name
                } else {
                    format!("{dir}/{name}")
                };
                let meta = entry.metadata().map_err(io)?;
                if meta.is_dir() {
                    pending.push(rel);
                } else {
                    found.push(json!({"path": rel, "bytes": meta.len()}));
                }
            }
        }
        found.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
        Ok(found)
    }

    /// Delete the organisation: every key of it in every area of the store,
    /// its files, its pinned components and its place in the list of
    /// organisations. Nothing of another organisation is touched.
    pub fn delete_organisation(self) -> Result<Deleted, OrgError> {
        let mut prefix = self.org().as_bytes().to_vec();
        prefix.push(b'/');
        let mut deleted = Deleted::default();
        for area in self.store.areas()? {
            if area == ORGS_AREA {
                continue;
            }
            let keys: Vec<Vec<u8>> = self
                .store
                .scan(&area, &prefix)?
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            for chunk in keys.chunks(1000) {
                self.store
                    .write(&area, chunk.iter().map(|k| (k.clone(), None)).collect())?;
            }
            deleted.keys += keys.len();
        }
        let pinned = self.pinned_hashes(self.org())?;
        for dir in [
            format!("files/{}", self.org()),
            format!("components/{}", self.org()),
        ] {
            if self.data.exists(&dir) {
                self.data
                    .remove_dir_all(&dir)
                    .map_err(|e| OrgError::DataDir(format!("cannot remove {dir}: {e}")))?;
                deleted.files = true;
            }
        }
        // Compiled code of its components goes too, unless another
        // organisation pinned the same component.
        let mut kept = std::collections::BTreeSet::new();
        if self.data.exists("components") {
            for entry in self.data.read_dir("components").map_err(io_error)? {
                let name = entry.map_err(io_error)?.file_name();
                let name = name.to_string_lossy();
                if name != self.org() {
                    kept.extend(self.pinned_hashes(&name)?);
                }
            }
        }
        if self.data.exists("compiled") {
            for entry in self.data.read_dir("compiled").map_err(io_error)? {
                let name = entry.map_err(io_error)?.file_name();
                let name = name.to_string_lossy().into_owned();
                let hash = name.split('-').next().unwrap_or_default();
                if pinned.contains(hash) && !kept.contains(hash) {
                    self.data
                        .remove_file(format!("compiled/{name}"))
                        .map_err(io_error)?;
                    deleted.files = true;
                }
            }
        }
        self.store
            .write(ORGS_AREA, vec![(self.org().as_bytes().to_vec(), None)])?;
        Ok(deleted)
    }

    /// The SHA-256 of every component `org` pinned.
    fn pinned_hashes(&self, org: &str) -> Result<std::collections::BTreeSet<String>, OrgError> {
        let dir = format!("components/{org}");
        let mut hashes = std::collections::BTreeSet::new();
        if !self.data.exists(&dir) {
            return Ok(hashes);
        }
        for entry in self.data.read_dir(&dir).map_err(io_error)? {
            let name = entry.map_err(io_error)?.file_name();
            if let Some(hash) = name.to_string_lossy().strip_suffix(".wasm") {
                hashes.insert(hash.to_string());
            }
        }
        Ok(hashes)
    }
}

fn io_error(e: std::io::Error) -> OrgError {
    OrgError::DataDir(format!("cannot clear the organisation's files: {e}"))
}
