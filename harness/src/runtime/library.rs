//! Finding (or fetching) the ONNX Runtime shared library (SPEC §5.4).
//!
//! Order: `ORT_DYLIB_PATH`; a configured path; the `onnxruntime` Python package if it is
//! installed and recent enough; the user cache; else the official wheel is downloaded once
//! with pip and the library unpacked from it into the cache.

use std::ffi::CStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::RuntimeError;
use crate::files;

/// The ONNX Runtime release kdharness is built and tested against.
pub const ORT_VERSION: &str = "1.31.1";

/// How the library was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LibrarySource {
    /// `ORT_DYLIB_PATH`.
    EnvVar,
    /// `--ort-lib`.
    Configured,
    /// An installed `onnxruntime` Python package.
    PythonPackage,
    /// kdharness's user cache.
    Cache,
    /// Downloaded into the cache by this run.
    Fetched,
}

impl fmt::Display for LibrarySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LibrarySource::EnvVar => "ORT_DYLIB_PATH",
            LibrarySource::Configured => "--ort-lib",
            LibrarySource::PythonPackage => "the onnxruntime Python package",
            LibrarySource::Cache => "the user cache",
            LibrarySource::Fetched => "a pip download just now",
        })
    }
}

/// A located, version-checked runtime library.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct LibraryLocation {
    /// The shared library.
    pub path: PathBuf,
    /// Its version, as it reports it.
    pub version: String,
    /// How it was found.
    pub source: LibrarySource,
}

/// File name of the library inside the wheel and in the cache.
fn library_file_name() -> String {
    if cfg!(target_os = "macos") {
        format!("libonnxruntime.{ORT_VERSION}.dylib")
    } else if cfg!(windows) {
        "onnxruntime.dll".to_string()
    } else {
        format!("libonnxruntime.so.{ORT_VERSION}")
    }
}

/// Where the fetched library lives.
pub fn cache_location() -> PathBuf {
    files::cache_dir().join(format!("onnxruntime-{ORT_VERSION}")).join(library_file_name())
}

/// Loads the library just long enough to ask its version (`OrtGetApiBase()->GetVersionString()`).
pub fn probe_version(path: &Path) -> Result<String, RuntimeError> {
    let bad = |reason: String| RuntimeError::BadLibrary { path: path.to_path_buf(), reason };
    // SAFETY: loading a shared library runs its initialisers: the user vouches for the file
    // by naming it (ORT_DYLIB_PATH, --ort-lib) or it is the official wheel's. The symbol,
    // when present, is ONNX Runtime's documented C entry point with this signature; both
    // pointers it yields are checked for null before use.
    unsafe {
        let lib = libloading::Library::new(path).map_err(|e| bad(e.to_string()))?;
        let get_base: libloading::Symbol<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> =
            lib.get(b"OrtGetApiBase\0").map_err(|_| bad("it does not export OrtGetApiBase".into()))?;
        let base = get_base();
        if base.is_null() {
            return Err(bad("OrtGetApiBase returned null".into()));
        }
        let version = ((*base).GetVersionString)();
        if version.is_null() {
            return Err(bad("GetVersionString returned null".into()));
        }
        let version = CStr::from_ptr(version).to_string_lossy().into_owned();
        if is_compatible(&version) {
            // Stays loaded: ort is about to load it again, and ONNX Runtime does not like
            // being unloaded and reloaded in one process.
            std::mem::forget(lib);
        }
        Ok(version)
    }
}

/// True when `version` offers the API level the `ort` crate was compiled for.
fn is_compatible(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    major == 1 && minor >= ort::MINOR_VERSION
}

fn checked(path: PathBuf, source: LibrarySource) -> Result<LibraryLocation, RuntimeError> {
    if !path.is_file() {
        return Err(RuntimeError::BadLibrary { path, reason: format!("the file does not exist (from {source})") });
    }
    let version = probe_version(&path)?;
    if !is_compatible(&version) {
        return Err(RuntimeError::BadLibrary {
            path,
            reason: format!("it is ONNX Runtime {version}; kdharness needs 1.{}.x or newer", ort::MINOR_VERSION),
        });
    }
    Ok(LibraryLocation { path, version, source })
}

/// The library of an installed `onnxruntime` Python package, if any.
fn python_package_library() -> Option<PathBuf> {
    let script = "import os, onnxruntime; print(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi'))";
    let out = Command::new("python3").args(["-c", script]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let capi = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(&capi)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            (name.starts_with("libonnxruntime.so.") || (name.starts_with("libonnxruntime.") && name.ends_with(".dylib")))
                && !name.contains("providers")
        })
        .collect();
    candidates.sort();
    candidates.pop()
}

/// Locates the library, fetching it if nothing else has it. `configured` comes from the
/// command line or the experiment config.
pub fn locate(configured: Option<&Path>) -> Result<LibraryLocation, RuntimeError> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return checked(PathBuf::from(path), LibrarySource::EnvVar);
    }
    if let Some(path) = configured {
        return checked(path.to_path_buf(), LibrarySource::Configured);
    }
    if let Some(path) = python_package_library()
        && let Ok(found) = checked(path, LibrarySource::PythonPackage)
    {
        return Ok(found);
    }
    let cached = cache_location();
    if cached.is_file() {
        return checked(cached, LibrarySource::Cache);
    }
    // Several kdharness processes may start at once on a fresh machine: one fetches, the
    // others wait for it and then find the library in the cache.
    let dir = cached.parent().expect("cache location has a parent");
    let lock_error = |e: std::io::Error| RuntimeError::Fetch { dir: dir.to_path_buf(), reason: format!("cannot lock the cache: {e}") };
    std::fs::create_dir_all(dir).map_err(lock_error)?;
    let lock = std::fs::File::create(dir.join(".fetch.lock")).map_err(lock_error)?;
    lock.lock().map_err(lock_error)?;
    if cached.is_file() {
        return checked(cached, LibrarySource::Cache);
    }
    fetch(&cached)?;
    checked(cached, LibrarySource::Fetched)
}

/// Downloads the `onnxruntime` wheel with pip and unpacks the library to `dest`.
fn fetch(dest: &Path) -> Result<(), RuntimeError> {
    let dir = dest.parent().expect("cache location has a parent");
    // A download is announced even with -q.
    crate::status::warn(format!(
        "ONNX Runtime {ORT_VERSION} not found; fetching the onnxruntime=={ORT_VERSION} wheel with pip into {} (once)",
        dir.display()
    ));
    let member = format!("onnxruntime/capi/{}", library_file_name());
    crate::files::fetch_wheel_member(&format!("onnxruntime=={ORT_VERSION}"), true, &member, dest).map_err(|reason| {
        RuntimeError::Fetch { dir: dir.to_path_buf(), reason: format!("{reason}; or set ORT_DYLIB_PATH to an ONNX Runtime {ORT_VERSION} library") }
    })?;
    crate::status::info(format!("ONNX Runtime {ORT_VERSION} installed at {}", dest.display()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_compatibility_follows_the_api_level() {
        assert!(is_compatible(ORT_VERSION));
        assert!(is_compatible("1.40.0"));
        assert!(!is_compatible("1.16.3"));
        assert!(!is_compatible("2.0.0"));
        assert!(!is_compatible("garbage"));
    }
}
