//! `manifest.json`: how a result was made. The commands that run models write one
//! [`Manifest`] beside their results (`attack`, `memorize`, and `eval` for the whole run);
//! sections a command has nothing to say about are left out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::{MembershipSets, Template, TokenLimits, TokenizerFile};
use crate::metrics::memorization::MemorizeSettings;
use crate::metrics::Bootstrap;
use crate::plugins::{LoadedAttack, LoadedKd, Params};
use crate::report::ModelRole;
use crate::runtime::{Device, LibraryLocation, Runtime, SessionOptions};
use crate::score::BatchSettings;
use crate::files::{sha256_file, write_atomic};

/// The contents of `manifest.json`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Manifest {
    /// This program's version.
    pub kdharness_version: &'static str,
    /// The git revision it was built from.
    pub git_revision: &'static str,
    /// The plugin interface version.
    pub plugin_interface: &'static str,
    /// Versions of the engines that computed the results.
    pub versions: Versions,
    /// The command line of the process.
    pub command: Vec<String>,
    /// The experiment config file (`eval`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_file: Option<PathBuf>,
    /// The config's full text (`eval`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// The one seed.
    pub seed: u64,
    /// Bootstrap of every interval.
    pub bootstrap: Bootstrap,
    /// Prompt template of the target models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<Template>,
    /// Prompt template of the reference models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_template: Option<Template>,
    /// Token limits of scoring.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<TokenLimits>,
    /// Batching of scoring.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchSettings>,
    /// Settings of the memorization measurement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memorization: Option<MemorizeSettings>,
    /// The ONNX Runtime that ran the models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onnx_runtime: Option<OrtRecord>,
    /// Input files by role (`members`, `nonmembers`, ...).
    pub data: BTreeMap<String, FileRecord>,
    /// Tokenizers by role (`target`, `reference`).
    pub tokenizers: BTreeMap<String, FileRecord>,
    /// The models, in output order.
    pub models: Vec<ModelRecord>,
    /// Reference models of the `ref`-style attacks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<ModelRecord>,
    /// The attack plugins that ran, with their parameters.
    pub plugins: Vec<PluginRecord>,
    /// The token frequency table attacks read (`token_frequency`), when one was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_frequency: Option<crate::score::frequency::FrequencyRecord>,
    /// The KD-method plugins loaded (`eval`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kd_plugins: Vec<PluginRecord>,
    /// Parts that failed while the rest went on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
    /// Stage timings of `eval` (and whether each stage was up to date).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stages: Option<serde_json::Map<String, serde_json::Value>>,
    /// `eval`'s margin of the `did_not_learn` flag: ROUGE-L points below the size's No-KD
    /// student (`distill.learn_margin`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learn_margin: Option<f64>,
    /// Wall-clock seconds of the whole command.
    pub seconds: f64,
}

impl Manifest {
    /// A manifest of this process with `seed` and `bootstrap`, every other section empty.
    pub fn new(seed: u64, bootstrap: Bootstrap) -> Manifest {
        Manifest {
            kdharness_version: env!("CARGO_PKG_VERSION"),
            git_revision: env!("KDHARNESS_GIT_REVISION"),
            plugin_interface: kdharness_plugin_api::INTERFACE_VERSION,
            command: std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect(),
            seed,
            bootstrap,
            ..Manifest::default()
        }
    }

    /// Records what every scoring command runs on: the ONNX Runtime, the member and
    /// non-member files (`sets` as loaded from them) and the target tokenizer.
    pub fn scoring(&mut self, ort: OrtRecord, (members, nonmembers): (&Path, &Path), sets: &MembershipSets, tokenizer: &TokenizerFile) {
        self.onnx_runtime = Some(ort);
        self.data.insert("members".into(), FileRecord::counted(members, sets.members.len()));
        self.data.insert("nonmembers".into(), FileRecord::counted(nonmembers, sets.nonmembers.len()));
        self.tokenizers.insert("target".into(), FileRecord::tokenizer(tokenizer));
    }

    /// Writes the manifest as pretty JSON, atomically.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        write_atomic(path, text.as_bytes())
    }
}

/// Versions of this program and the engines it links.
#[derive(Debug, Clone, Serialize)]
pub struct Versions {
    /// kdharness.
    pub kdharness: &'static str,
    /// The training engine.
    pub candle: &'static str,
    /// The ONNX Runtime bindings.
    pub ort: &'static str,
    /// The tokenizer library.
    pub tokenizers: &'static str,
    /// The ONNX Runtime library version expected.
    pub onnxruntime: &'static str,
}

impl Default for Versions {
    fn default() -> Self {
        Versions {
            kdharness: env!("CARGO_PKG_VERSION"),
            candle: "0.11.1",
            ort: "2.0.0-rc.15",
            tokenizers: "0.23.2",
            onnxruntime: crate::runtime::ORT_VERSION,
        }
    }
}

/// A file an output was made from.
#[derive(Debug, Clone, Serialize)]
pub struct FileRecord {
    /// Where it was.
    pub path: PathBuf,
    /// Its SHA-256 (absent when it could not be read).
    pub sha256: Option<String>,
    /// How many records it held, where that means something.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
}

impl FileRecord {
    /// The file at `path`, hashed now.
    pub fn of(path: &Path) -> FileRecord {
        FileRecord { path: path.to_path_buf(), sha256: sha256_file(path).ok(), count: None }
    }

    /// The file at `path` holding `count` records.
    pub fn counted(path: &Path, count: usize) -> FileRecord {
        FileRecord { count: Some(count), ..FileRecord::of(path) }
    }

    /// A loaded tokenizer.
    pub fn tokenizer(t: &TokenizerFile) -> FileRecord {
        FileRecord { path: t.path.clone(), sha256: Some(t.sha256.clone()), count: None }
    }
}

/// The ONNX Runtime of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrtRecord {
    /// The library, its version and how it was found.
    pub library: LibraryLocation,
    /// Execution device.
    pub device: Device,
    /// Intra-op threads.
    pub threads: usize,
}

impl OrtRecord {
    /// The runtime as sessions use it.
    pub fn of(runtime: &Runtime, session: SessionOptions) -> OrtRecord {
        OrtRecord { library: runtime.library.clone(), device: session.device, threads: session.threads }
    }
}

/// One model of the results.
#[derive(Debug, Clone, Serialize)]
pub struct ModelRecord {
    /// Its name in every output file.
    pub name: String,
    /// Teacher, student (with method and size), No-KD, target or reference.
    pub role: ModelRole,
    /// Its ONNX file.
    pub onnx: FileRecord,
    /// Its candle checkpoint directory and weights, for models this run trained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<FileRecord>,
    /// The content hash of everything it was made from (`eval`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_key: Option<String>,
    /// Whether its signals were computed or read from the cache (`attack`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signals: Option<crate::score::SignalSource>,
    /// Seconds spent on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// Where a student started (`eval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<InitRecord>,
    /// Its training (`eval`): optimiser steps and the held-out loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<crate::report::TrainingRecord>,
    /// Seconds each attack took on it (`attack`, `eval`): its own perturbed forward passes,
    /// if any, and its plugin call; the forward pass whose signals every attack shares is
    /// `seconds`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attack_seconds: BTreeMap<String, f64>,
    /// A defended model's defense, its strength and what it measured (`eval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defense: Option<crate::report::DefenseRecord>,
}

impl ModelRecord {
    /// A model known by its ONNX file.
    pub fn new(name: &str, role: ModelRole, onnx: &Path) -> ModelRecord {
        ModelRecord {
            name: name.into(),
            role,
            onnx: FileRecord::of(onnx),
            weights: None,
            input_key: None,
            signals: None,
            seconds: None,
            init: None,
            training: None,
            attack_seconds: BTreeMap::new(),
            defense: None,
        }
    }
}

/// Where a student's weights came from before its method trained it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitRecord {
    /// `scratch`, `base`, `teacher_blocks`, `healed` (teacher blocks healed by distilling
    /// the pretrained teacher), `hf` or `warm_start`.
    pub kind: String,
    /// The source checkpoint: the base model, the teacher, the HF directory or the No-KD
    /// student (`None` for scratch: the seed made it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The SHA-256 of the source's `model.safetensors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}



/// What the attack stage recorded in its manifest: the runtime that scored the models and
/// the attacks that ran (`None`/empty when the stage left no readable manifest).
pub fn scoring_record(path: &Path) -> (Option<OrtRecord>, Vec<PluginRecord>) {
    let value: serde_json::Value = std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
    let ort = serde_json::from_value(value["onnx_runtime"].clone()).ok();
    let plugins = serde_json::from_value(value["plugins"].clone()).unwrap_or_default();
    (ort, plugins)
}

/// A plugin that took part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginRecord {
    /// Its name.
    pub name: String,
    /// Its crate version.
    pub version: String,
    /// The library it was loaded from.
    pub library: PathBuf,
    /// SHA-256 of that library.
    pub sha256: String,
    /// The parameters it ran with (attacks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<BTreeMap<String, String>>,
}

impl PluginRecord {
    /// An attack with the parameters it ran with.
    pub fn attack(a: &LoadedAttack, params: &Params) -> PluginRecord {
        PluginRecord {
            name: a.name().into(),
            version: a.decl.version.to_string(),
            library: a.library.clone(),
            sha256: a.library_sha256.clone(),
            params: Some(params.to_map()),
        }
    }

    /// A KD method.
    pub fn kd(k: &LoadedKd) -> PluginRecord {
        PluginRecord { name: k.name().into(), version: k.decl.version.to_string(), library: k.library.clone(), sha256: k.library_sha256.clone(), params: None }
    }
}
