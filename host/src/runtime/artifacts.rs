//! Compiled components, kept so a component is compiled once per host and
//! engine configuration: in memory for the process's life, and on disk
//! under `<data-dir>/compiled/` for the next process.
//!
//! A compiled artifact is native code: loading one that this host did not
//! produce would run whatever it holds. Each file is therefore sealed with
//! the host key (HMAC-SHA256 over the component's SHA-256, the engine's
//! compatibility hash and the artifact), and a file whose seal does not
//! verify, whose engine settings differ, or that wasmtime refuses, is not
//! loaded: the component is compiled again and the file replaced.

use std::collections::HashMap;
use std::hash::Hasher;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::Digest as _;
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::keys::Keys;

/// What the seal of an artifact starts with (its version).
const LABEL: &[u8] = b"clancy compiled component v1";
const TAG_LEN: usize = 32;

/// How often components were found compiled, and compiled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArtifactStats {
    /// Found in memory or in a verified file.
    pub reused: u64,
    /// Compiled from the component's bytes.
    pub compiled: u64,
    /// Files refused (seal, settings or wasmtime said no).
    pub refused: u64,
}

/// The compiled components of one engine.
pub struct Artifacts {
    dir: Option<(PathBuf, Arc<Keys>)>,
    engine_hash: String,
    memory: Mutex<HashMap<[u8; 32], Component>>,
    reused: AtomicU64,
    compiled: AtomicU64,
    refused: AtomicU64,
}

/// A `Hasher` that feeds SHA-256 (stable across processes, unlike the
/// standard one).
struct Sha256Hasher(sha2::Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_be_bytes(digest[..8].try_into().unwrap_or_default())
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// The engine's compatibility hash (wasmtime's: its version, target and
/// every setting that changes compiled code), hex.
pub fn engine_hash(engine: &Engine) -> String {
    use std::hash::Hash as _;
    let mut h = Sha256Hasher(sha2::Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    hex::encode(&h.0.finalize()[..16])
}

impl Artifacts {
    /// In memory only.
    pub fn in_memory(engine: &Engine) -> Artifacts {
        Artifacts {
            dir: None,
            engine_hash: engine_hash(engine),
            memory: Mutex::new(HashMap::new()),
            reused: AtomicU64::new(0),
            compiled: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// In memory and in `dir`, sealed with `keys`.
    pub fn on_disk(engine: &Engine, dir: PathBuf, keys: Arc<Keys>) -> Artifacts {
        Artifacts {
            dir: Some((dir, keys)),
            ..Artifacts::in_memory(engine)
        }
    }

    /// How often components were reused and compiled so far.
    pub fn stats(&self) -> ArtifactStats {
        ArtifactStats {
            reused: self.reused.load(Ordering::Relaxed),
            compiled: self.compiled.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }

    /// Where the artifact of the component with SHA-256 `digest` lives.
    pub fn path_of(&self, digest: &[u8; 32]) -> Option<PathBuf> {
        self.dir.as_ref().map(|(dir, _)| {
            dir.join(format!(
                "{}-{}.cwasm",
                hex::encode(digest),
                self.engine_hash
            ))
        })
    }

    /// The component `bytes` compiled for `engine`: reused if this host
    /// compiled it before with these settings, else compiled (and kept).
    pub fn component(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
        let digest: [u8; 32] = sha2::Sha256::digest(bytes).into();
        let mut memory = self
            .memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = memory.get(&digest) {
            self.reused.fetch_add(1, Ordering::Relaxed);
            return Ok(c.clone());
        }
        if let Some(c) = self.load(engine, &digest) {
            self.reused.fetch_add(1, Ordering::Relaxed);
            memory.insert(digest, c.clone());
            return Ok(c);
        }
        let component = Component::from_binary(engine, bytes)?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        self.save(&digest, &component);
        memory.insert(digest, component.clone());
        Ok(component)
    }

    fn seal_parts<'a>(&'a self, digest: &'a [u8; 32], artifact: &'a [u8]) -> [&'a [u8]; 4] {
        [LABEL, digest, self.engine_hash.as_bytes(), artifact]
    }

    /// A verified artifact from disk, if there is one.
    fn load(&self, engine: &Engine, digest: &[u8; 32]) -> Option<Component> {
        let (_, keys) = self.dir.as_ref()?;
        let path = self.path_of(digest)?;
        let file = std::fs::read(&path).ok()?;
        let refuse = |why: &str| {
            self.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "compiled artifact {} {why}: compiling the component again",
                path.display()
            );
            None
        };
        if file.len() <= TAG_LEN {
            return refuse("is truncated");
        }
        let (tag, artifact) = file.split_at(TAG_LEN);
        if !keys.sealed(&self.seal_parts(digest, artifact), tag) {
            return refuse("was not produced by this host with these engine settings");
        }
        // SAFETY: `Component::deserialize` runs native code that must have
        // come from `Component::serialize` of a compatible engine. These
        // bytes did: their seal (HMAC under this host's key, over the
        // component's digest and this engine's compatibility hash) was made
        // by `save` below from this host's own serialisation, and it
        // verified; wasmtime checks the engine's settings again.
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize(engine, artifact) };
        match loaded {
            Ok(c) => Some(c),
            Err(e) => refuse(&format!("was refused by wasmtime ({e})")),
        }
    }

    /// Keep `component`'s artifact on disk, sealed; a failure only costs a
    /// compilation next time.
    fn save(&self, digest: &[u8; 32], component: &Component) {
        let Some((dir, keys)) = self.dir.as_ref() else {
            return;
        };
        let Some(path) = self.path_of(digest) else {
            return;
        };
        let written = (|| -> std::io::Result<()> {
            let artifact = component.serialize().map_err(std::io::Error::other)?;
            let tag = keys.seal(&self.seal_parts(digest, &artifact));
            std::fs::create_dir_all(dir)?;
            let tmp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
            let mut bytes = Vec::with_capacity(TAG_LEN + artifact.len());
            bytes.extend_from_slice(&tag);
            bytes.extend_from_slice(&artifact);
            std::fs::write(&tmp, &bytes)?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            tracing::warn!(
                "cannot keep the compiled component in {}: {e}",
                dir.display()
            );
        }
    }
}
