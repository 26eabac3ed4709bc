//! Files: one granted folder per handle, through cap-std.
//!
//! The host opens its data dir once as a cap-std [`Dir`]; each organisation's
//! folders live under `files/<org>/` inside it and are opened as `Dir`s too.
//! Guest paths are only ever resolved by cap-std relative to such a `Dir`, so
//! `..`, absolute paths and symlinks cannot leave the folder. This module must
//! never join a guest path onto an ambient path.

use std::io::{ErrorKind, Read as _, Write as _};
use std::path::Path;

use cap_std::fs::Dir;

use super::{Done, FilesProvider, ProviderError};

/// Largest file a guest may read (bigger files are refused, not truncated).
pub const MAX_READ_BYTES: u64 = 4 * 1024 * 1024;

/// The folders of one organisation, rooted in a cap-std directory.
pub struct Folders {
    root: Dir,
}

impl Folders {
    /// Folders under `root` (the org's `files/<org>` directory).
    pub fn new(root: Dir) -> Folders {
        Folders { root }
    }

    fn folder(&self, folder: &str) -> Result<Dir, ProviderError> {
        self.root
            .create_dir_all(folder)
            .map_err(|e| map_io(folder, e))?;
        self.root.open_dir(folder).map_err(|e| map_io(folder, e))
    }
}

/// Writes to folders, one at a time (quota checks and writes do not interleave).
static WRITES: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// How deep `folder_bytes` looks (deeper trees count as full).
const MAX_DEPTH: u32 = 32;

/// The bytes the regular files under `dir` take (symlinks count for nothing).
fn folder_bytes(dir: &Dir, depth: u32) -> std::io::Result<u64> {
    if depth > MAX_DEPTH {
        return Ok(u64::MAX);
    }
    let mut total = 0u64;
    for entry in dir.entries()? {
        let entry = entry?;
        let file_type = entry.file_type()?;
        let bytes = if file_type.is_dir() {
            folder_bytes(&entry.open_dir()?, depth + 1)?
        } else if file_type.is_file() {
            entry.metadata()?.len()
        } else {
            0
        };
        total = total.saturating_add(bytes);
    }
    Ok(total)
}

fn check_path(path: &str) -> Result<&str, ProviderError> {
    if path.contains('\0') || path.len() > 1024 {
        return Err(ProviderError::Invalid("the path is not valid".into()));
    }
    if Path::new(path).is_absolute() {
        return Err(ProviderError::Invalid(format!(
            "{path:?} is absolute; paths are relative to the folder"
        )));
    }
    Ok(path)
}

fn map_io(path: &str, e: std::io::Error) -> ProviderError {
    match e.kind() {
        ErrorKind::NotFound => {
            ProviderError::NotFound(format!("{path:?} does not exist in the folder"))
        }
        ErrorKind::PermissionDenied => {
            ProviderError::Invalid(format!("{path:?} leads outside the granted folder"))
        }
        ErrorKind::IsADirectory | ErrorKind::NotADirectory | ErrorKind::AlreadyExists => {
            ProviderError::Invalid(format!("{path:?}: {e}"))
        }
        _ => ProviderError::Failed(format!("{path:?}: {}", e.kind())),
    }
}

impl FilesProvider for Folders {
    fn list(&self, folder: &str, path: &str) -> Result<Vec<String>, ProviderError> {
        let path = check_path(path)?;
        let dir = self.folder(folder)?;
        let target = if path.is_empty() || path == "." {
            dir
        } else {
            dir.open_dir(path).map_err(|e| map_io(path, e))?
        };
        let mut names = Vec::new();
        for entry in target.entries().map_err(|e| map_io(path, e))? {
            let entry = entry.map_err(|e| map_io(path, e))?;
            names.push(entry.file_name().to_string_lossy().to_string());
        }
        names.sort();
        Ok(names)
    }

    fn read(&self, folder: &str, path: &str) -> Result<Vec<u8>, ProviderError> {
        let path = check_path(path)?;
        let dir = self.folder(folder)?;
        let file = dir.open(path).map_err(|e| map_io(path, e))?;
        let mut contents = Vec::new();
        file.take(MAX_READ_BYTES + 1)
            .read_to_end(&mut contents)
            .map_err(|e| map_io(path, e))?;
        if contents.len() as u64 > MAX_READ_BYTES {
            return Err(ProviderError::Invalid(format!(
                "{path:?} is larger than {MAX_READ_BYTES} bytes"
            )));
        }
        Ok(contents)
    }

    fn write(
        &self,
        folder: &str,
        path: &str,
        contents: &[u8],
        quota: u64,
    ) -> Result<Done, ProviderError> {
        let path = check_path(path)?;
        if path.is_empty() || path.ends_with('/') {
            return Err(ProviderError::Invalid("write needs a file name".into()));
        }
        // One write at a time, so two cannot both fit in the room left.
        let _one = WRITES.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.folder(folder)?;
        let used = folder_bytes(&dir, 0).map_err(|e| map_io(folder, e))?;
        let replaced = dir
            .symlink_metadata(path)
            .ok()
            .filter(|m| m.is_file())
            .map_or(0, |m| m.len());
        let after = used
            .saturating_sub(replaced)
            .saturating_add(contents.len() as u64);
        if after > quota {
            return Err(ProviderError::Invalid(format!(
                "the folder's quota is {} MiB and it holds {:.1} MiB: writing {} bytes to {path:?} would exceed it",
                quota / (1024 * 1024),
                used as f64 / (1024.0 * 1024.0),
                contents.len()
            )));
        }
        if let Some(parent) = Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            dir.create_dir_all(parent).map_err(|e| map_io(path, e))?;
        }
        // Write to a temporary name and rename, so a reader never sees half a file.
        let tmp = format!("{path}.clancy-tmp");
        let mut file = dir.create(&tmp).map_err(|e| map_io(path, e))?;
        file.write_all(contents)
            .and_then(|_| file.sync_all())
            .map_err(|e| map_io(path, e))?;
        dir.rename(&tmp, &dir, path).map_err(|e| map_io(path, e))?;
        Ok(Done {
            id: format!("{folder}/{path}"),
            inverse: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folders() -> anyhow::Result<(tempfile::TempDir, Folders)> {
        let tmp = tempfile::tempdir()?;
        std::fs::create_dir_all(tmp.path().join("root"))?;
        let root = Dir::open_ambient_dir(tmp.path().join("root"), cap_std::ambient_authority())?;
        Ok((tmp, Folders::new(root)))
    }

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn a_write_past_the_folder_quota_is_refused_and_a_replacement_counts_once() -> anyhow::Result<()>
    {
        let (tmp, f) = folders()?;
        let half = vec![7u8; (MIB / 2) as usize];
        f.write("out", "a.bin", &half, MIB)?;
        f.write("out", "sub/b.bin", &half, MIB)?;
        // Full: one more byte anywhere in the folder is refused.
        let refused = f.write("out", "sub/deeper/c.bin", b"x", MIB);
        assert!(
            matches!(&refused, Err(ProviderError::Invalid(why)) if why.contains("quota is 1 MiB")),
            "{refused:?}"
        );
        assert!(!tmp.path().join("root/out/sub/deeper/c.bin").exists());
        // Replacing a file counts its new size, not both.
        f.write("out", "a.bin", &half, MIB)?;
        f.write("out", "a.bin", b"small", MIB)?;
        f.write("out", "c.bin", &vec![1u8; (MIB / 4) as usize], MIB)?;
        Ok(())
    }

    #[test]
    fn paths_cannot_leave_the_folder() -> anyhow::Result<()> {
        let (tmp, f) = folders()?;
        std::fs::write(tmp.path().join("secret.txt"), "top secret")?;
        std::fs::write(tmp.path().join("root/other.txt"), "other folder")?;
        f.write("reports", "ok.txt", b"fine", MIB)?;
        #[cfg(unix)]
        std::os::unix::fs::symlink(
            tmp.path().join("secret.txt"),
            tmp.path().join("root/reports/link"),
        )?;
        for escape in ["../other.txt", "../../secret.txt", "/etc/passwd", "link"] {
            assert!(f.read("reports", escape).is_err(), "{escape} was readable");
        }
        for escape in [
            "../other.txt",
            "../../secret.txt",
            "/etc/passwd",
            "../x/y.txt",
        ] {
            assert!(
                f.write("reports", escape, b"x", MIB).is_err(),
                "{escape} was writable"
            );
        }
        assert_eq!(
            f.list("reports", "")?,
            vec!["link".to_string(), "ok.txt".to_string()]
        );
        assert!(f.list("reports", "..").is_err());
        // Writing "link" may replace the link inside the folder; it must never write through it.
        let _ = f.write("reports", "link", b"overwritten", MIB);
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("secret.txt"))?,
            "top secret"
        );
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("root/other.txt"))?,
            "other folder"
        );
        assert!(!tmp.path().join("x").exists());
        assert_eq!(f.read("reports", "ok.txt")?, b"fine");
        Ok(())
    }
}
