//! `kdharness plugins new`: writes a buildable plugin crate from the template under
//! `plugins/template` (compiled into the binary, so it works from any directory).

use std::path::{Path, PathBuf};

const CARGO_TOML: &str = include_str!("../../../plugins/template/Cargo.toml.in");
const ATTACK_RS: &str = include_str!("../../../plugins/template/src/lib.rs.in");
const ATTACK_README: &str = include_str!("../../../plugins/template/README.md.in");
const KD_RS: &str = include_str!("../../../plugins/template/src/kd.rs.in");
const KD_README: &str = include_str!("../../../plugins/template/README.kd.md.in");
const DEFENSE_RS: &str = include_str!("../../../plugins/template/src/defense.rs.in");
const DEFENSE_README: &str = include_str!("../../../plugins/template/README.defense.md.in");

/// What a scaffolded plugin provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PluginKind {
    /// A membership-inference attack.
    Attack,
    /// A KD method.
    Kd,
    /// A defense (teacher outputs, teacher samples or teacher training).
    Defense,
}

impl PluginKind {
    /// The word used in crate and library names.
    pub fn word(self) -> &'static str {
        match self {
            PluginKind::Attack => "attack",
            PluginKind::Kd => "kd",
            PluginKind::Defense => "defense",
        }
    }
}

/// Where this build's plugin-api crate lives (the scaffold depends on it by path).
pub fn default_api_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("plugin-api")
}

#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // each variant is documented by its #[error] message
pub enum ScaffoldError {
    #[error("plugin name `{0}` must start with a lowercase letter and contain only a-z, 0-9 and _")]
    BadName(String),
    #[error("{} already exists; choose another --dir or remove it", .0.display())]
    Exists(PathBuf),
    #[error(
        "kdharness-plugin-api not found at {}; pass --api-path pointing to the plugin-api folder of a kdharness checkout",
        .0.display()
    )]
    NoApi(PathBuf),
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

/// A written plugin crate.
#[derive(Debug)]
pub struct Scaffolded {
    /// The crate's directory.
    pub dir: PathBuf,
    /// The file name `cargo build` will give the plugin library.
    pub library_file: String,
}

/// Writes a plugin crate of `kind` named after `name` into `dir`.
pub fn scaffold(kind: PluginKind, name: &str, dir: &Path, api_path: &Path) -> Result<Scaffolded, ScaffoldError> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(ScaffoldError::BadName(name.to_string()));
    }
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir.to_path_buf()));
    }
    let api = api_path.canonicalize().map_err(|_| ScaffoldError::NoApi(api_path.to_path_buf()))?;
    if !api.join("Cargo.toml").is_file() {
        return Err(ScaffoldError::NoApi(api));
    }
    let word = kind.word();
    let lib_name = format!("{}{word}_{name}", super::LIBRARY_PREFIX);
    let library_file = format!("{}{lib_name}{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    let struct_name: String = name
        .split('_')
        .filter(|p| !p.is_empty())
        .map(|p| p[..1].to_ascii_uppercase() + &p[1..])
        .collect::<String>()
        + match kind {
            PluginKind::Attack => "Attack",
            PluginKind::Kd => "Kd",
            PluginKind::Defense => "Defense",
        };
    let fill = |template: &str| {
        template
            .replace("{{crate_name}}", &format!("kdh-{word}-{}", name.replace('_', "-")))
            .replace("{{lib_name}}", &lib_name)
            .replace("{{library_file}}", &library_file)
            .replace("{{api_path}}", &api.to_string_lossy().replace('\\', "/"))
            .replace("{{struct_name}}", &struct_name)
            .replace("{{name}}", name)
    };
    let (lib_rs, readme) = match kind {
        PluginKind::Attack => (ATTACK_RS, ATTACK_README),
        PluginKind::Kd => (KD_RS, KD_README),
        PluginKind::Defense => (DEFENSE_RS, DEFENSE_README),
    };
    for (relative, template) in [("Cargo.toml", CARGO_TOML), ("src/lib.rs", lib_rs), ("README.md", readme)] {
        let path = dir.join(relative);
        crate::files::write_atomic(&path, fill(template).as_bytes()).map_err(|source| ScaffoldError::Write { path: path.clone(), source })?;
    }
    Ok(Scaffolded { dir: dir.to_path_buf(), library_file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_every_placeholder() {
        let tmp = tempfile::tempdir().unwrap();
        let out = scaffold(PluginKind::Attack, "my_attack2", &tmp.path().join("p"), &default_api_path()).unwrap();
        assert_eq!(out.library_file, format!("{}kdh_attack_my_attack2{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX));
        for file in ["Cargo.toml", "src/lib.rs", "README.md"] {
            let text = std::fs::read_to_string(out.dir.join(file)).unwrap();
            assert!(!text.contains("{{"), "{file} still has a placeholder");
        }
        let lib = std::fs::read_to_string(out.dir.join("src/lib.rs")).unwrap();
        assert!(lib.contains("pub struct MyAttack2Attack;") && lib.contains("const NAME: &'static str = \"my_attack2\";"));
        let defense = scaffold(PluginKind::Defense, "uniform_mix", &tmp.path().join("d"), &default_api_path()).unwrap();
        let lib = std::fs::read_to_string(defense.dir.join("src/lib.rs")).unwrap();
        assert!(lib.contains("pub struct UniformMixDefense {") && lib.contains("export_plugins!(defenses: [UniformMixDefense]);"));
        assert!(defense.library_file.contains("kdh_defense_uniform_mix"));
        assert!(matches!(scaffold(PluginKind::Kd, "Bad-Name", &tmp.path().join("q"), &default_api_path()), Err(ScaffoldError::BadName(_))));
        assert!(matches!(scaffold(PluginKind::Kd, "ok", &out.dir, &default_api_path()), Err(ScaffoldError::Exists(_))));
    }
}
