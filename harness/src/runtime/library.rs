//! Finding (or fetching) the ONNX Runtime shared library (SPEC §5.4).
//!
//! Order: `ORT_DYLIB_PATH`; a configured path; the `onnxruntime` Python package if its
//! library is the pinned release's (same SHA-256); the user cache (its SHA-256 checked at
//! every load); else the official wheel is downloaded once with pip (hash-pinned) and the
//! library unpacked from it into the cache. A library the user names is theirs to vouch
//! for; one kdharness finds by itself must be the one it was tested against.

use std::ffi::CStr;
use std::fmt;
use std::path::{Path, PathBuf};

use super::RuntimeError;
use crate::files;

/// The ONNX Runtime release kdharness is built and tested against.
pub const ORT_VERSION: &str = "1.31.1";

/// SHA-256 of the `onnxruntime==1.31.1` wheels for Linux (CPython 3.11–3.14, x86_64 and
/// aarch64, manylinux_2_28): pip refuses any other file.
const WHEEL_SHA256: [&str; 8] = [
    "5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f", // cp311 x86_64
    "da05378364c44d4407e463982d2bf8d5e4cfea873283757e48beeb41df97b7f3", // cp311 aarch64
    "1f3dea47f2f0e5117c2404cea7d21fd253ae7836a3bf167a501cdfbb2600d536", // cp312 x86_64
    "0b9a492176886992e0e875f06bc0367e333f5fff11711a2d642e18b02f3009cc", // cp312 aarch64
    "74a6a52994616c4d18b33db1e13c226333a70a6ba07480a5cab9c2a50dff1430", // cp313 x86_64
    "dcaedc50333876f3829ab966b242147f0e548229e29c36fe44622ecf748c25ee", // cp313 aarch64
    "c20d7f15d84427db070b163f78c2c7146cc93edd6113fa7327671259a24184fe", // cp314 x86_64
    "c878686b75cade1ed59131aa018ab004b1e64368b0d54041912450b9642cf04f", // cp314 aarch64
];

/// SHA-256 of `libonnxruntime.so.1.31.1` inside those wheels (the same for every CPython
/// version of one architecture), checked after unpacking and at every load from the cache.
pub fn pinned_library_sha256() -> Option<&'static str> {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => Some("fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3"),
        ("linux", "aarch64") => Some("8aa3b76b28c778a2b1dd660d34161adb1d508c9ccd04ff9dc80e26eca5df8467"),
        _ => None,
    }
}

/// Whether the library at `path` is the pinned release's (`Err` with the reason if not).
fn verify_pinned(path: &Path) -> Result<(), String> {
    let pinned = pinned_library_sha256().ok_or_else(|| format!("no ONNX Runtime build is pinned for {}-{}", std::env::consts::OS, std::env::consts::ARCH))?;
    let digest = files::sha256_file(path).map_err(|e| format!("cannot read it: {e}"))?;
    match digest == pinned {
        true => Ok(()),
        false => Err(format!("its SHA-256 is {digest}, not {pinned} of the onnxruntime=={ORT_VERSION} wheel's library")),
    }
}

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
    let out = files::python().args(["-c", script]).output().ok()?;
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
        && verify_pinned(&path).is_ok()
        && let Ok(found) = checked(path, LibrarySource::PythonPackage)
    {
        return Ok(found);
    }
    let cached = cache_location();
    if cached.is_file() {
        return cached_library(cached);
    }
    // Several kdharness processes may start at once on a fresh machine: one fetches, the
    // others wait for it and then find the library in the cache.
    let dir = cached.parent().expect("cache location has a parent");
    let lock_error = |e: std::io::Error| RuntimeError::Fetch { dir: dir.to_path_buf(), reason: format!("cannot lock the cache: {e}") };
    std::fs::create_dir_all(dir).map_err(lock_error)?;
    let lock = std::fs::File::create(dir.join(".fetch.lock")).map_err(lock_error)?;
    lock.lock().map_err(lock_error)?;
    if cached.is_file() {
        return cached_library(cached);
    }
    fetch(&cached)?;
    checked(cached, LibrarySource::Fetched)
}

/// The cached library, refused (before it is loaded) unless it is still the one fetched.
fn cached_library(path: PathBuf) -> Result<LibraryLocation, RuntimeError> {
    if let Err(reason) = verify_pinned(&path) {
        let reason = format!("{reason}; it changed after it was fetched: delete {} and rerun to fetch it again, or set ORT_DYLIB_PATH", path.display());
        return Err(RuntimeError::BadLibrary { path, reason });
    }
    checked(path, LibrarySource::Cache)
}

/// Downloads the `onnxruntime` wheel with pip and unpacks the library to `dest`.
fn fetch(dest: &Path) -> Result<(), RuntimeError> {
    let dir = dest.parent().expect("cache location has a parent");
    // A download is announced even with -q.
    crate::status::warn(format!(
        "ONNX Runtime {ORT_VERSION} not found; fetching the onnxruntime=={ORT_VERSION} wheel with pip into {} (once)",
        dir.display()
    ));
    let failed = |reason: String| RuntimeError::Fetch { dir: dir.to_path_buf(), reason: format!("{reason}; or set ORT_DYLIB_PATH to an ONNX Runtime {ORT_VERSION} library") };
    let member = format!("onnxruntime/capi/{}", library_file_name());
    // Unpacked beside its final place, and moved there only once its hash is the pin's
    // (not through files::write_with: an interrupt would wait for the download).
    let staged = dir.join(format!(".{}.fetching.{}", library_file_name(), std::process::id()));
    crate::files::fetch_wheel_member(&format!("onnxruntime=={ORT_VERSION}"), &WHEEL_SHA256, &member, &staged).map_err(failed)?;
    if let Err(reason) = verify_pinned(&staged) {
        std::fs::remove_file(&staged).ok();
        return Err(failed(format!("the unpacked library is refused: {reason}")));
    }
    std::fs::rename(&staged, dest).and_then(|()| std::fs::File::open(dir)?.sync_all()).map_err(|e| failed(format!("cannot move the library into place: {e}")))?;
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
