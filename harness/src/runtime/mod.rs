//! ONNX Runtime: the one place that talks to it. [`Runtime::get`] locates the library and
//! builds the process-wide environment once; [`CausalLm`] opens an exported causal LM and
//! runs forward passes.

pub mod generate;
mod library;
mod model;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use library::{LibraryLocation, LibrarySource, ORT_VERSION, cache_location, locate, pinned_library_sha256, probe_version};
pub use model::{CausalLm, LmBatch, ModelInfo, PaddingSide, PastInput, PastState};

/// Everything that can go wrong with the runtime or a model in it.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // each variant is documented by its #[error] message
pub enum RuntimeError {
    #[error("ONNX Runtime library {}: {reason}", path.display())]
    BadLibrary { path: PathBuf, reason: String },
    #[error("could not fetch ONNX Runtime into {}: {reason}", dir.display())]
    Fetch { dir: PathBuf, reason: String },
    #[error("ONNX Runtime failed to start: {0}")]
    Init(String),
    #[error(
        "the CUDA execution provider is not in this ONNX Runtime build ({}; it has: {available}); install onnxruntime-gpu[cuda,cudnn]=={ORT_VERSION} with pip and point ORT_DYLIB_PATH at its libonnxruntime",
        library.display()
    )]
    NoCuda { library: PathBuf, available: String },
    #[error("{}: {message}", path.display())]
    Model { path: PathBuf, message: String },
}

/// Where models run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// ONNX Runtime's CPU execution provider.
    #[default]
    Cpu,
    /// The CUDA execution provider (onnxruntime-gpu).
    Cuda,
}

/// Session settings shared by every model of a run.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct SessionOptions {
    /// Execution device.
    pub device: Device,
    /// Intra-op threads; the machine's cores by default.
    pub threads: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions { device: Device::Cpu, threads: default_threads() }
    }
}

/// Which ONNX Runtime library, device and thread count a command runs with.
#[derive(Clone, Debug, Default)]
pub struct RuntimeSettings {
    /// The shared library to use (`ORT_DYLIB_PATH` takes precedence; else found or fetched).
    pub ort_lib: Option<PathBuf>,
    /// Execution device.
    pub device: Device,
    /// Intra-op threads (default: the machine's cores).
    pub threads: Option<usize>,
}

impl RuntimeSettings {
    /// The runtime, checked to offer the device, and the session options of every model.
    pub fn open(&self) -> Result<(&'static Runtime, SessionOptions), RuntimeError> {
        let runtime = Runtime::get(self.ort_lib.as_deref())?;
        runtime.check_device(self.device)?;
        Ok((runtime, SessionOptions { device: self.device, threads: self.threads.unwrap_or_else(default_threads) }))
    }
}

/// The machine's cores.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// The process-wide ONNX Runtime.
pub struct Runtime {
    /// The library in use.
    pub library: LibraryLocation,
    /// Its execution providers, e.g. `CPUExecutionProvider`.
    pub providers: Vec<String>,
    environment: ort::environment::Environment,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

impl Runtime {
    /// Locates and initialises ONNX Runtime on first use; later calls return the same one
    /// (`configured` is only consulted the first time).
    pub fn get(configured: Option<&Path>) -> Result<&'static Runtime, RuntimeError> {
        if let Some(runtime) = RUNTIME.get() {
            return Ok(runtime);
        }
        // One thread locates and initialises; others wait and then share its result.
        static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(runtime) = RUNTIME.get() {
            return Ok(runtime);
        }
        let library = locate(configured)?;
        let environment = ort::init_from(&library.path)
            .map_err(|e| RuntimeError::Init(e.to_string()))?
            .with_name("kdharness")
            .build()
            .map_err(|e| RuntimeError::Init(e.to_string()))?;
        let providers = available_providers().map_err(RuntimeError::Init)?;
        Ok(RUNTIME.get_or_init(|| Runtime { library, providers, environment }))
    }

    /// The environment sessions are created in.
    pub fn environment(&self) -> &ort::environment::Environment {
        &self.environment
    }

    /// Fails clearly, never silently falling back to CPU, when `device` is unavailable.
    pub fn check_device(&self, device: Device) -> Result<(), RuntimeError> {
        match device {
            Device::Cpu => Ok(()),
            Device::Cuda if self.providers.iter().any(|p| p == "CUDAExecutionProvider") => Ok(()),
            Device::Cuda => {
                Err(RuntimeError::NoCuda { library: self.library.path.clone(), available: self.providers.join(", ") })
            }
        }
    }
}

/// The execution providers compiled into the loaded library.
fn available_providers() -> Result<Vec<String>, String> {
    let api = ort::api();
    let mut list: *mut *mut std::ffi::c_char = std::ptr::null_mut();
    let mut count: std::ffi::c_int = 0;
    // SAFETY: documented C API; the list is released with its paired function below.
    unsafe {
        let status = (api.GetAvailableProviders)(&mut list, &mut count);
        if !status.0.is_null() {
            let message = std::ffi::CStr::from_ptr((api.GetErrorMessage)(status.0)).to_string_lossy().into_owned();
            (api.ReleaseStatus)(status.0);
            return Err(message);
        }
        let names = (0..count as isize)
            .map(|i| std::ffi::CStr::from_ptr(*list.offset(i)).to_string_lossy().into_owned())
            .collect();
        let status = (api.ReleaseAvailableProviders)(list, count);
        if !status.0.is_null() {
            (api.ReleaseStatus)(status.0);
        }
        Ok(names)
    }
}
