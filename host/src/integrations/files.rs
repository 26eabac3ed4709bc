//! Files in granted folders, the `files` interface: one handle per folder
//! under the organisation's files in the data dir. Paths cannot leave the
//! folder; a write replaces a file and cannot be undone.

use serde::{Deserialize, Serialize};
use wasmtime::component::Resource;

use super::{Action, EditError, Interface, Spec, quote};
use crate::providers::{Done, ProviderError, Response};
use crate::runtime::TaskState;
use crate::runtime::bindings::files as wit;
use crate::runtime::guest_calls::CallResult;

crate::grant_handle!(
    /// A `files.folder` handle: one granted scope.
    FolderHandle
);

/// The facts of the files integration.
pub const SPEC: Spec = Spec {
    name: "files",
    interface: Interface::Files,
    scope_kind: "folder",
    actions: &[Action::List, Action::Read, Action::Write],
};

/// A call on a folder (the WIT method's parameters, minus the reason).
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op")]
pub enum FilesOp {
    /// `folder.list`
    #[serde(rename = "files-list")]
    List { path: String },
    /// `folder.read`
    #[serde(rename = "files-read")]
    Read { path: String },
    /// `folder.write` (contents are not part of the summary)
    #[serde(rename = "files-write")]
    Write {
        path: String,
        #[serde(with = "hex_bytes")]
        contents: Vec<u8>,
    },
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

impl FilesOp {
    /// The grant action it needs.
    pub fn action(&self) -> Action {
        match self {
            FilesOp::List { .. } => Action::List,
            FilesOp::Read { .. } => Action::Read,
            FilesOp::Write { .. } => Action::Write,
        }
    }

    /// The contract method.
    pub fn method(&self) -> &'static str {
        match self {
            FilesOp::List { .. } => "list",
            FilesOp::Read { .. } => "read",
            FilesOp::Write { .. } => "write",
        }
    }

    /// The audit log's summary of the arguments (never file contents).
    pub fn summary(&self) -> String {
        match self {
            FilesOp::List { path } | FilesOp::Read { path } => format!("path {}", quote(path)),
            FilesOp::Write { path, contents } => {
                format!("path {}, {} bytes", quote(path), contents.len())
            }
        }
    }

    /// What the approver reads.
    pub fn preview(&self, scope: &str) -> String {
        match self {
            FilesOp::Write { path, contents } => format!(
                "write {} bytes to {scope}/{}\n    (irreversible: it replaces any existing file, which cannot be restored)",
                contents.len(),
                crate::human::line(path)
            ),
            other => format!("{} {}", other.method(), other.summary()),
        }
    }

    /// Guest-supplied bytes in the arguments.
    pub fn argument_bytes(&self) -> usize {
        match self {
            FilesOp::List { path } | FilesOp::Read { path } => path.len(),
            FilesOp::Write { path, contents } => path.len() + contents.len(),
        }
    }

    /// The fields an approver may edit.
    pub fn editable_fields(&self) -> &'static [&'static str] {
        match self {
            FilesOp::Write { .. } => &["contents"],
            _ => &[],
        }
    }

    /// The operation with `field` set to `value`; `None` if no such field.
    pub fn edited(&self, field: &str, value: &str) -> Result<Option<FilesOp>, EditError> {
        Ok(match (self, field) {
            (FilesOp::Write { path, .. }, "contents") => Some(FilesOp::Write {
                path: path.clone(),
                contents: value.as_bytes().to_vec(),
            }),
            _ => None,
        })
    }

    /// Run it against the files provider in `folder`, whose size may not
    /// exceed `quota` bytes.
    pub fn run(
        &self,
        provider: &dyn FilesProvider,
        folder: &str,
        quota: u64,
    ) -> Result<Response, ProviderError> {
        Ok(match self {
            FilesOp::List { path } => Response::Names(provider.list(folder, path)?),
            FilesOp::Read { path } => Response::Bytes(provider.read(folder, path)?),
            FilesOp::Write { path, contents } => {
                Response::Done(provider.write(folder, path, contents, quota)?)
            }
        })
    }
}

/// Files in one granted folder. `folder` is the scope's value.
pub trait FilesProvider: Send + Sync {
    /// Entry names in a directory of the folder.
    fn list(&self, folder: &str, path: &str) -> Result<Vec<String>, ProviderError>;
    /// A file's contents.
    fn read(&self, folder: &str, path: &str) -> Result<Vec<u8>, ProviderError>;
    /// Create or replace a file, unless the folder would then hold more
    /// than `quota` bytes.
    fn write(
        &self,
        folder: &str,
        path: &str,
        contents: &[u8],
        quota: u64,
    ) -> Result<Done, ProviderError>;
}

impl wit::Host for TaskState {
    fn folders(&mut self) -> wasmtime::Result<Vec<Resource<FolderHandle>>> {
        self.handles(Interface::Files)
    }
}

impl wit::HostFolder for TaskState {
    fn name(&mut self, h: Resource<FolderHandle>) -> wasmtime::Result<String> {
        self.scope_name(&h)
    }

    fn list(&mut self, h: Resource<FolderHandle>, path: String) -> CallResult<Vec<String>> {
        let op = super::Operation::Files(FilesOp::List { path });
        expect_response!(self.mediate(&h, op, ""), Names)
    }

    fn read(&mut self, h: Resource<FolderHandle>, path: String) -> CallResult<Vec<u8>> {
        let op = super::Operation::Files(FilesOp::Read { path });
        expect_response!(self.mediate(&h, op, ""), Bytes)
    }

    fn write(
        &mut self,
        h: Resource<FolderHandle>,
        path: String,
        contents: Vec<u8>,
        reason: String,
    ) -> CallResult<wit::Outcome> {
        let op = super::Operation::Files(FilesOp::Write { path, contents });
        written!(self.mediate(&h, op, &reason))
    }

    fn drop(&mut self, h: Resource<FolderHandle>) -> wasmtime::Result<()> {
        self.drop_handle(h)
    }
}
