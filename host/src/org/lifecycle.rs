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

fn unwritten(e: std::io::Error) -> OrgError {
    OrgError::DataDir(format!("cannot write the export: {e}"))
}

/// A JSON object written a field at a time, laid out as
/// `serde_json::to_writer_pretty` lays out the whole (two spaces a level),
/// with one field a list written an item at a time.
struct Document<'a> {
    out: &'a mut dyn std::io::Write,
    /// Fields written so far.
    fields: usize,
    /// Items written so far in the list being written, if one is.
    items: Option<usize>,
}

impl<'a> Document<'a> {
    fn begin(out: &'a mut dyn std::io::Write) -> Result<Document<'a>, OrgError> {
        out.write_all(b"{").map_err(unwritten)?;
        Ok(Document {
            out,
            fields: 0,
            items: None,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), OrgError> {
        self.out.write_all(bytes).map_err(unwritten)
    }

    /// `value` pretty printed, each line after the first indented by `indent`.
    fn nested(&mut self, value: &impl serde::Serialize, indent: &[u8]) -> Result<(), OrgError> {
        let text = serde_json::to_vec_pretty(value).map_err(encode)?;
        // JSON text holds no raw newline but the layout's own.
        for (i, line) in text.split(|b| *b == b'\n').enumerate() {
            if i > 0 {
                self.write(b"\n")?;
                self.write(indent)?;
            }
            self.write(line)?;
        }
        Ok(())
    }

    fn key(&mut self, name: &str) -> Result<(), OrgError> {
        self.write(if self.fields == 0 { b"\n  " } else { b",\n  " })?;
        self.fields += 1;
        let name = serde_json::to_vec(name).map_err(encode)?;
        self.write(&name)?;
        self.write(b": ")
    }

    fn field(&mut self, name: &str, value: &impl serde::Serialize) -> Result<(), OrgError> {
        self.key(name)?;
        self.nested(value, b"  ")
    }

    /// Open field `name` as a list: then [`Document::items`] for each page
    /// of it and [`Document::end_list`].
    fn begin_list(&mut self, name: &str) -> Result<(), OrgError> {
        self.key(name)?;
        self.write(b"[")?;
        self.items = Some(0);
        Ok(())
    }

    /// The next items of the open list.
    fn items(&mut self, values: &[impl serde::Serialize]) -> Result<(), OrgError> {
        for value in values {
            let items = self.items.unwrap_or_default();
            self.write(if items == 0 { b"\n    " } else { b",\n    " })?;
            self.items = Some(items + 1);
            self.nested(value, b"    ")?;
        }
        Ok(())
    }

    fn end_list(&mut self) -> Result<(), OrgError> {
        if self.items.take().unwrap_or_default() > 0 {
            self.write(b"\n  ")?;
        }
        self.write(b"]")
    }

    fn end(mut self) -> Result<(), OrgError> {
        self.write(if self.fields == 0 { b"}\n" } else { b"\n}\n" })?;
        self.out.flush().map_err(unwritten)
    }
}

impl Org {
    /// Everything the organisation holds, as one JSON document; audited
    /// (who exported) before it is made. Read whole into memory: for
    /// tests and small organisations; [`Org::export_organisation_to`]
    /// writes it as it is read.
    pub fn export_organisation(&self, by: &str) -> Result<Value, OrgError> {
        let mut bytes = Vec::new();
        self.export_organisation_to(by, &mut bytes)?;
        serde_json::from_slice(&bytes).map_err(encode)
    }

    /// Everything the organisation holds, as one JSON document (pretty
    /// printed, then a newline) written to `out` as it is read: one part at a
    /// time, the requests, tasks, notifications and the audit log a page at
    /// a time, so memory does not grow with the log or with how many of
    /// those there ever were.
    /// Audited (who exported) before a byte is written. The document covers
    /// the log as it was when the export began.
    pub fn export_organisation_to(
        &self,
        by: &str,
        out: &mut dyn std::io::Write,
    ) -> Result<(), OrgError> {
        self.audit_operator_action(
            "organisation-export",
            "",
            &format!("the organisation's data was exported by {by}"),
        )?;
        let mut doc = Document::begin(out)?;
        doc.field("organisation", &self.org())?;
        doc.field("exported_at", &self.now())?;
        doc.field("exported_by", &by)?;
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
        doc.field("operators", &operators)?;
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
        doc.field("tokens", &tokens)?;
        let mut employees = Vec::new();
        for m in self.registered()? {
            employees.push(json!({
                "name": m.name,
                "disabled": self.disabled(&m.name)?.map(|d| json!({"by": d.by, "at": d.at})),
                "manifest": serde_json::to_value(&m).map_err(encode)?,
            }));
        }
        doc.field("employees", &employees)?;
        doc.field("upgrades", &self.upgrades()?)?;
        doc.begin_list("approvals")?;
        self.approvals().for_each_page(|page| doc.items(page))?;
        doc.end_list()?;
        doc.begin_list("tasks")?;
        self.for_each_task_page(|page| doc.items(page))?;
        doc.end_list()?;
        doc.begin_list("notifications")?;
        self.outbox().for_each_page(|page| {
            let shown: Vec<Value> = page
                .iter()
                .map(|n| {
                    json!({
                        "id": n.id, "event": n.event.name(), "approval": n.approval,
                        "target": crate::notify::origin(&n.url), "state": n.state,
                        "attempts": n.attempts, "last_error": n.last_error,
                        "body": n.body,
                    })
                })
                .collect();
            doc.items(&shown)
        })?;
        doc.end_list()?;
        doc.field("sandbox", &self.sandbox().snapshot()?)?;
        doc.field("files", &self.file_listing()?)?;
        // Read before the log, as `audit export` does: every checkpoint in
        // the document covers entries in it.
        let anchors = self.audit_anchors(None, None)?;
        doc.begin_list("audit")?;
        self.audit().for_each_page(|page| doc.items(page))?;
        doc.end_list()?;
        let checkpoints: Vec<_> = anchors
            .checkpoints
            .iter()
            .filter(|c| c.org == self.org())
            .collect();
        doc.field("checkpoints", &checkpoints)?;
        doc.end()
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

#[cfg(test)]
mod tests {
    use super::Document;

    /// The document written a part at a time reads, byte for byte, as the
    /// whole pretty printed at once (lists empty or not, nested values).
    #[test]
    fn a_document_written_a_part_at_a_time_is_laid_out_as_the_whole_at_once() -> anyhow::Result<()>
    {
        #[derive(serde::Serialize)]
        struct Whole {
            name: &'static str,
            nested: serde_json::Value,
            none: Vec<u8>,
            items: Vec<serde_json::Value>,
            after: Option<u8>,
        }
        let items = vec![
            serde_json::json!({"seq": 1, "args": "a \"quoted\"\nline"}),
            serde_json::json!({"seq": 2, "list": [1, {"deep": []}]}),
        ];
        let whole = Whole {
            name: "acme",
            nested: serde_json::json!({"a": [1, 2], "b": {}}),
            none: Vec::new(),
            items: items.clone(),
            after: None,
        };
        let mut parts = Vec::new();
        let mut doc = Document::begin(&mut parts)?;
        doc.field("name", &whole.name)?;
        doc.field("nested", &whole.nested)?;
        doc.begin_list("none")?;
        doc.end_list()?;
        doc.begin_list("items")?;
        doc.items(&items[..1])?;
        doc.items(&items[1..])?;
        doc.end_list()?;
        doc.field("after", &whole.after)?;
        doc.end()?;
        let expected = serde_json::to_string_pretty(&whole)? + "\n";
        assert_eq!(String::from_utf8(parts)?, expected);
        Ok(())
    }
}
