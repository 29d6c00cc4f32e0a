//! Resumability: each stage leaves a `.done` marker holding the content hash of what it was
//! made from and the SHA-256 of every file it wrote. A stage is skipped only when its hash
//! is unchanged and every file it wrote is still there, byte for byte; a deleted or changed
//! output is said and the stage runs again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::files::{sha256_bytes, sha256_file, write_atomic};
use crate::status;

/// What a stage wrote, as its marker records it.
#[derive(Clone, Copy)]
pub(super) enum Outputs<'a> {
    /// Every file under the stage's directory (recursively) but `.done`, `.lock`, temporary
    /// files and the names in `except` (another stage's outputs kept there, a cache that
    /// checks itself).
    Dir { except: &'a [&'a str] },
    /// These files, relative to the stage's directory.
    Files(&'a [&'a str]),
}

/// A stage's completion marker: `DIR/.done`.
pub(super) struct Marker {
    dir: PathBuf,
    path: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Record {
    /// The hash of the stage's inputs.
    key: String,
    /// Every output, relative to the stage's directory, with its SHA-256.
    files: BTreeMap<String, String>,
}

impl Marker {
    /// The marker of the stage whose outputs live in `dir`.
    pub(super) fn new(dir: &Path) -> Self {
        Marker { dir: dir.to_path_buf(), path: dir.join(".done") }
    }

    /// Whether the stage is done for inputs `key` with its outputs intact; says why not
    /// when an output went missing or changed.
    pub(super) fn is(&self, stage: &str, key: &str) -> bool {
        let Some(record) = std::fs::read_to_string(&self.path).ok().and_then(|t| serde_json::from_str::<Record>(&t).ok()) else {
            return false;
        };
        if record.key != key {
            return false;
        }
        for (file, sha) in &record.files {
            let path = self.dir.join(file);
            match sha256_file(&path) {
                Ok(got) if &got == sha => {}
                Ok(_) => {
                    status::warn(format!("{stage}: {} changed after it was written; running the stage again", path.display()));
                    return false;
                }
                Err(_) => {
                    status::warn(format!("{stage}: {} is missing; running the stage again", path.display()));
                    return false;
                }
            }
        }
        true
    }

    /// Forgets that the stage was done (before it runs again).
    pub(super) fn clear(&self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).with_context(|| format!("cannot remove {}", self.path.display())),
            _ => Ok(()),
        }
    }

    /// Records that the stage is done for inputs `key`, with the hashes of its `outputs`.
    pub(super) fn set(&self, key: &str, outputs: Outputs<'_>) -> Result<()> {
        let names = match outputs {
            Outputs::Files(files) => files.iter().map(|f| f.to_string()).collect(),
            Outputs::Dir { except } => {
                let mut names = Vec::new();
                walk(&self.dir, "", except, &mut names).with_context(|| format!("cannot list {}", self.dir.display()))?;
                names
            }
        };
        let mut files = BTreeMap::new();
        for name in names {
            let path = self.dir.join(&name);
            let sha = sha256_file(&path).with_context(|| format!("cannot hash {}, which the stage should have written", path.display()))?;
            files.insert(name, sha);
        }
        let text = serde_json::to_string_pretty(&Record { key: key.into(), files }).expect("markers serialise");
        write_atomic(&self.path, text.as_bytes()).with_context(|| format!("cannot write {}", self.path.display()))
    }
}

/// The files under `dir/rel`, as paths relative to `dir`, sorted.
fn walk(dir: &Path, rel: &str, except: &[&str], out: &mut Vec<String>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir.join(rel))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == ".done" || name == ".lock" || name.contains(".tmp.") || except.contains(&name.as_str()) {
            continue;
        }
        let path = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        if entry.file_type()?.is_dir() {
            walk(dir, &path, except, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// The hash of a stage's inputs, from their parts.
pub(super) fn key_of(parts: &[&str]) -> String {
    sha256_bytes(parts.join("\u{1f}").as_bytes())
}

/// A config section as key material.
pub(super) fn json_key<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("config sections serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_holds_only_while_every_output_is_intact() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a.csv"), "1\n").unwrap();
        std::fs::write(dir.path().join("sub/b.bin"), [0u8, 1, 2]).unwrap();
        std::fs::write(dir.path().join("model.onnx"), "another stage's").unwrap();
        let marker = Marker::new(dir.path());
        assert!(!marker.is("s", "k"), "no marker yet");
        marker.set("k", Outputs::Dir { except: &["model.onnx"] }).unwrap();
        assert!(marker.is("s", "k"));
        assert!(!marker.is("s", "other key"));
        // Another stage's file may change freely.
        std::fs::write(dir.path().join("model.onnx"), "rewritten").unwrap();
        assert!(marker.is("s", "k"));
        // One flipped byte, then a deleted file, undo the marker.
        std::fs::write(dir.path().join("sub/b.bin"), [0u8, 1, 3]).unwrap();
        assert!(!marker.is("s", "k"));
        std::fs::write(dir.path().join("sub/b.bin"), [0u8, 1, 2]).unwrap();
        assert!(marker.is("s", "k"));
        std::fs::remove_file(dir.path().join("a.csv")).unwrap();
        assert!(!marker.is("s", "k"));
        // A marker of the old format (the key alone) is not trusted.
        std::fs::write(dir.path().join(".done"), "k").unwrap();
        assert!(!marker.is("s", "k"));
    }

    #[test]
    fn a_stage_that_did_not_write_a_listed_output_cannot_be_marked_done() {
        let dir = tempfile::tempdir().unwrap();
        let err = Marker::new(dir.path()).set("k", Outputs::Files(&["../model.onnx"])).unwrap_err();
        assert!(format!("{err:#}").contains("model.onnx"), "{err:#}");
    }
}
