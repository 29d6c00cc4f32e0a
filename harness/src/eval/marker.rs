//! Resumability: each stage leaves a `.done` marker holding the content hash of what it was
//! made from; a stage whose hash is unchanged is skipped.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::files::{sha256_bytes, write_atomic};

/// A stage's completion marker: `.done` holding the input hash.
pub(super) struct Marker(PathBuf);

impl Marker {
    /// The marker of the stage whose outputs live in `dir`.
    pub(super) fn new(dir: &Path) -> Self {
        Marker(dir.join(".done"))
    }

    /// Whether the stage is done for inputs `key`.
    pub(super) fn is(&self, key: &str) -> bool {
        std::fs::read_to_string(&self.0).is_ok_and(|k| k.trim() == key)
    }

    /// Forgets that the stage was done (before it runs again).
    pub(super) fn clear(&self) -> Result<()> {
        match std::fs::remove_file(&self.0) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).with_context(|| format!("cannot remove {}", self.0.display())),
            _ => Ok(()),
        }
    }

    /// Records that the stage is done for inputs `key`.
    pub(super) fn set(&self, key: &str) -> Result<()> {
        write_atomic(&self.0, key.as_bytes()).with_context(|| format!("cannot write {}", self.0.display()))
    }
}

/// The hash of a stage's inputs, from their parts.
pub(super) fn key_of(parts: &[&str]) -> String {
    sha256_bytes(parts.join("\u{1f}").as_bytes())
}

/// A config section as key material.
pub(super) fn json_key<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("config sections serialise")
}
