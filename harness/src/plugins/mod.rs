//! The host side of the plugin ABI: where plugin libraries are searched for, how they are
//! loaded, and what is said when one cannot be (SPEC §7.1). Plugins are native code with
//! full trust; nothing is ever loaded from the current directory implicitly.

mod params;
mod scaffold;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use abi_stable::library::{LibraryError, lib_header_from_path};
use kdharness_plugin_api::defense::{DefenseDecl, DefenseInstance};
use kdharness_plugin_api::kd::{KdDecl, KdInstance};
use kdharness_plugin_api::{AttackDecl, AttackExtDecl, INTERFACE_VERSION, PluginLibRef};
use serde::Serialize;

pub use params::{Params, UnknownParam};
pub use scaffold::{PluginKind, ScaffoldError, Scaffolded, default_api_path, scaffold};

/// Plugin libraries are files named `libkdh_*.so` (`kdh_*.dll`, `libkdh_*.dylib`): the
/// prefix keeps unrelated shared objects in a directory from being loaded.
pub const LIBRARY_PREFIX: &str = "kdh_";

/// Why a directory is searched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchOrigin {
    /// Named with `--plugin-dir`.
    PluginDirFlag,
    /// Listed in `KDHARNESS_PLUGIN_PATH`.
    EnvVar,
    /// Holds the running `kdharness` executable.
    ExecutableDir,
}

impl std::fmt::Display for SearchOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SearchOrigin::PluginDirFlag => "--plugin-dir",
            SearchOrigin::EnvVar => "KDHARNESS_PLUGIN_PATH",
            SearchOrigin::ExecutableDir => "executable directory",
        })
    }
}

/// One directory searched, and why.
#[derive(Clone, Debug, Serialize)]
pub struct SearchDir {
    /// The directory.
    pub path: PathBuf,
    /// Why it is searched.
    pub origin: SearchOrigin,
}

/// The directories searched, in priority order: `--plugin-dir` (repeatable),
/// `KDHARNESS_PLUGIN_PATH` (a path list), the directory of the running executable.
pub fn search_dirs(cli: &[PathBuf]) -> Vec<SearchDir> {
    let mut dirs: Vec<SearchDir> = cli.iter().map(|p| SearchDir { path: p.clone(), origin: SearchOrigin::PluginDirFlag }).collect();
    if let Some(list) = std::env::var_os("KDHARNESS_PLUGIN_PATH") {
        dirs.extend(
            std::env::split_paths(&list)
                .filter(|p| !p.as_os_str().is_empty())
                .map(|path| SearchDir { path, origin: SearchOrigin::EnvVar }),
        );
    }
    if let Some(dir) = std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf)) {
        dirs.push(SearchDir { path: dir, origin: SearchOrigin::ExecutableDir });
    }
    dirs
}

/// The plugins found in `extra_dirs` and on the usual search path; a library that cannot
/// be used is reported as a warning and skipped.
pub fn load(extra_dirs: &[PathBuf]) -> Registry {
    let registry = Registry::discover(search_dirs(extra_dirs));
    for problem in &registry.problems {
        crate::status::warn(problem);
    }
    registry
}

/// An attack loaded from a plugin library.
#[derive(Clone, Debug)]
pub struct LoadedAttack {
    /// What the plugin declared.
    pub decl: AttackDecl,
    /// Its call with the signals of interface 0.3.1 (`None`: a plugin built against an
    /// earlier interface, called through `decl.score`).
    pub ext: Option<AttackExtDecl>,
    /// The library it came from.
    pub library: PathBuf,
    /// SHA-256 of that library, for manifests.
    pub library_sha256: String,
    /// The worker process its calls run in, when the registry isolates attacks.
    pub isolation: Option<std::sync::Arc<crate::attack::isolate::Isolation>>,
}

impl LoadedAttack {
    /// The attack's name.
    pub fn name(&self) -> &str {
        self.decl.name.as_str()
    }

    /// Checks `given` against the attack's declared parameters, defaults filled in.
    pub fn params(&self, given: &[(String, String)]) -> Result<Params, UnknownParam> {
        Params::complete("attack", self.name(), self.decl.params.as_slice(), given)
    }
}

/// A KD method loaded from a plugin library.
#[derive(Clone, Debug)]
pub struct LoadedKd {
    /// What the plugin declared.
    pub decl: KdDecl,
    /// The library it came from.
    pub library: PathBuf,
    /// SHA-256 of that library, for manifests.
    pub library_sha256: String,
}

impl LoadedKd {
    /// The method's name.
    pub fn name(&self) -> &str {
        self.decl.name.as_str()
    }

    /// Checks `given` against the method's declared parameters, defaults filled in.
    pub fn params(&self, given: &[(String, String)]) -> Result<Params, UnknownParam> {
        Params::complete("KD method", self.name(), self.decl.params.as_slice(), given)
    }

    /// A fresh instance with the `given` parameters, checked and completed by
    /// [`LoadedKd::params`].
    pub fn create(&self, given: &[(String, String)]) -> Result<KdInstance, String> {
        let params = self.params(given).map_err(|e| e.to_string())?;
        (self.decl.create)(params.abi().as_slice().into())
            .into_result()
            .map_err(|e| format!("KD method `{}` (plugin {}) refused its parameters: {e}", self.name(), self.library.display()))
    }
}

/// A defense loaded from a plugin library.
#[derive(Clone, Debug)]
pub struct LoadedDefense {
    /// What the plugin declared.
    pub decl: DefenseDecl,
    /// The library it came from.
    pub library: PathBuf,
    /// SHA-256 of that library, for manifests and stage keys.
    pub library_sha256: String,
}

impl LoadedDefense {
    /// The defense's name.
    pub fn name(&self) -> &str {
        self.decl.name.as_str()
    }

    /// Checks `given` against the defense's declared parameters, defaults filled in.
    pub fn params(&self, given: &[(String, String)]) -> Result<Params, UnknownParam> {
        Params::complete("defense", self.name(), self.decl.params.as_slice(), given)
    }

    /// A fresh instance with the `given` parameters (checked and completed) and `seed`.
    pub fn create(&self, given: &[(String, String)], seed: u64) -> Result<DefenseInstance, String> {
        let params = self.params(given).map_err(|e| e.to_string())?;
        (self.decl.create)(params.abi().as_slice().into(), seed)
            .into_result()
            .map_err(|e| format!("defense `{}` (plugin {}) refused its parameters: {e}", self.name(), self.library.display()))
    }
}

/// A library that could not be used, with one line saying why.
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    /// The library skipped.
    pub library: PathBuf,
    /// Why, in one line.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "plugin {}: {}", self.library.display(), self.message)
    }
}

/// Every attack found, plus the libraries that were skipped and why.
#[derive(Debug, Default)]
pub struct Registry {
    attacks: BTreeMap<String, LoadedAttack>,
    kd_methods: BTreeMap<String, LoadedKd>,
    defenses: BTreeMap<String, LoadedDefense>,
    /// Libraries skipped, and attacks ignored as duplicates.
    pub problems: Vec<Problem>,
    /// The directories searched, in order.
    pub searched: Vec<SearchDir>,
}

impl Registry {
    /// Loads every plugin library in `dirs`. A library that fails to load, or an attack
    /// whose name is already taken, becomes a [`Problem`]; the rest load regardless.
    pub fn discover(dirs: Vec<SearchDir>) -> Registry {
        let mut registry = Registry { searched: dirs.clone(), ..Default::default() };
        let mut seen = std::collections::HashSet::new();
        for dir in &dirs {
            for library in plugin_files(&dir.path) {
                let canonical = library.canonicalize().unwrap_or_else(|_| library.clone());
                if seen.insert(canonical) {
                    registry.add_library(&library);
                }
            }
        }
        registry
    }

    /// The plugins of one library (an attack worker's view).
    pub fn of_library(library: &Path) -> Registry {
        let mut registry = Registry::default();
        registry.add_library(library);
        registry
    }

    /// Runs every attack in a worker process from now on (`kdharness attack-worker` of
    /// the executable `worker`), each call at most `timeout`: an attack that hangs or
    /// aborts then fails alone.
    pub fn isolate_attacks(&mut self, worker: PathBuf, timeout: std::time::Duration) {
        let isolation = std::sync::Arc::new(crate::attack::isolate::Isolation::new(worker, timeout));
        for attack in self.attacks.values_mut() {
            attack.isolation = Some(isolation.clone());
        }
    }

    fn add_library(&mut self, library: &Path) {
        let Listed { attacks: decls, kd: kd_decls, defenses } = match load_library(library) {
            Ok(decls) => decls,
            Err(message) => {
                self.problems.push(Problem { library: library.to_path_buf(), message });
                return;
            }
        };
        let sha = match crate::files::sha256_file(library) {
            Ok(sha) => sha,
            Err(e) => {
                self.problems.push(Problem { library: library.to_path_buf(), message: format!("cannot be read to hash it: {e}") });
                return;
            }
        };
        for (decl, ext) in decls {
            let name = decl.name.as_str().to_string();
            if let Some(first) = self.attacks.get(&name) {
                self.problems.push(Problem {
                    library: library.to_path_buf(),
                    message: format!("attack `{name}` is already provided by {}; this copy is ignored", first.library.display()),
                });
                continue;
            }
            self.attacks.insert(name, LoadedAttack { decl, ext, library: library.to_path_buf(), library_sha256: sha.clone(), isolation: None });
        }
        for decl in kd_decls {
            let name = decl.name.as_str().to_string();
            if let Some(first) = self.kd_methods.get(&name) {
                self.problems.push(Problem {
                    library: library.to_path_buf(),
                    message: format!("KD method `{name}` is already provided by {}; this copy is ignored", first.library.display()),
                });
                continue;
            }
            self.kd_methods.insert(name, LoadedKd { decl, library: library.to_path_buf(), library_sha256: sha.clone() });
        }
        for decl in defenses {
            let name = decl.name.as_str().to_string();
            if let Some(first) = self.defenses.get(&name) {
                self.problems.push(Problem {
                    library: library.to_path_buf(),
                    message: format!("defense `{name}` is already provided by {}; this copy is ignored", first.library.display()),
                });
                continue;
            }
            self.defenses.insert(name, LoadedDefense { decl, library: library.to_path_buf(), library_sha256: sha.clone() });
        }
    }

    /// The defense called `name`.
    pub fn defense(&self, name: &str) -> Option<&LoadedDefense> {
        self.defenses.get(name)
    }

    /// Defenses by name.
    pub fn defenses(&self) -> impl Iterator<Item = &LoadedDefense> {
        self.defenses.values()
    }

    /// Names of all defenses, sorted.
    pub fn defense_names(&self) -> impl Iterator<Item = &str> {
        self.defenses.keys().map(String::as_str)
    }

    /// The KD method called `name`.
    pub fn kd_method(&self, name: &str) -> Option<&LoadedKd> {
        self.kd_methods.get(name)
    }

    /// KD methods by name.
    pub fn kd_methods(&self) -> impl Iterator<Item = &LoadedKd> {
        self.kd_methods.values()
    }

    /// Names of all KD methods, sorted.
    pub fn kd_names(&self) -> impl Iterator<Item = &str> {
        self.kd_methods.keys().map(String::as_str)
    }

    /// The attack called `name`.
    pub fn attack(&self, name: &str) -> Option<&LoadedAttack> {
        self.attacks.get(name)
    }

    /// Attacks by name.
    pub fn attacks(&self) -> impl Iterator<Item = &LoadedAttack> {
        self.attacks.values()
    }

    /// Names of all attacks, sorted.
    pub fn attack_names(&self) -> impl Iterator<Item = &str> {
        self.attacks.keys().map(String::as_str)
    }
}

/// Plugin-named shared libraries directly inside `dir`, sorted.
fn plugin_files(dir: &Path) -> Vec<PathBuf> {
    let prefix = format!("{}{LIBRARY_PREFIX}", std::env::consts::DLL_PREFIX);
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            name.starts_with(&prefix) && name.ends_with(std::env::consts::DLL_SUFFIX) && p.is_file()
        })
        .collect();
    files.sort();
    files
}

/// An attack as a library declares it: with its call of interface 0.3.1 when the library
/// has one.
pub type AttackEntry = (AttackDecl, Option<AttackExtDecl>);

/// What one library provides.
pub struct Listed {
    /// Its attacks.
    pub attacks: Vec<AttackEntry>,
    /// Its KD methods.
    pub kd: Vec<KdDecl>,
    /// Its defenses (0.3.2 on).
    pub defenses: Vec<DefenseDecl>,
}

/// Loads a library's root module and lists its plugins, or says in one line why not. A
/// library of interface 0.3.1 or later lists its attacks with their extended call; an
/// earlier one (no `attacks_ext`) its plain attacks; only 0.3.2 on has defenses.
pub fn load_library(library: &Path) -> Result<Listed, String> {
    let header = lib_header_from_path(library).map_err(|e| condense(&e))?;
    let attacks = |ext: Option<extern "C" fn() -> abi_stable::std_types::RVec<AttackExtDecl>>, plain: extern "C" fn() -> abi_stable::std_types::RVec<AttackDecl>| -> Vec<AttackEntry> {
        match ext {
            Some(list) => list().into_iter().map(|ext| (ext.decl, Some(ext))).collect(),
            None => plain().into_iter().map(|decl| (decl, None)).collect(),
        }
    };
    match header.init_root_module::<PluginLibRef>() {
        Ok(root) => Ok(Listed {
            attacks: attacks(root.attacks_ext(), root.attacks()),
            kd: root.kd_methods()().into_iter().collect(),
            defenses: root.defenses().map(|list| list().into_iter().collect()).unwrap_or_default(),
        }),
        // Libraries of 0.3.1 (no `defenses`) and 0.3.0 (no `attacks_ext` either) have
        // root modules of their own layouts, each checked as strictly; a library that
        // fits none is named by the first error.
        Err(error @ LibraryError::AbiInstability(_)) => {
            if let Ok(root) = header.init_root_module::<kdharness_plugin_api::v0_3_1::PluginLibRef>() {
                return Ok(Listed { attacks: attacks(root.attacks_ext(), root.attacks()), kd: root.kd_methods()().into_iter().collect(), defenses: Vec::new() });
            }
            match header.init_root_module::<kdharness_plugin_api::v0_3_0::PluginLibRef>() {
                Ok(root) => Ok(Listed { attacks: attacks(None, root.attacks()), kd: root.kd_methods()().into_iter().collect(), defenses: Vec::new() }),
                Err(_) => Err(condense(&error)),
            }
        }
        Err(error) => Err(condense(&error)),
    }
}

/// abi_stable's errors are thorough (a layout mismatch prints about a thousand lines);
/// users need one line and what to do.
fn condense(error: &LibraryError) -> String {
    let rebuild = format!("rebuild it against kdharness-plugin-api {INTERFACE_VERSION}");
    match error {
        LibraryError::OpenError { err, .. } => format!("cannot be opened as a shared library: {}", first_line(&err.to_string())),
        LibraryError::GetSymbolError { .. } => {
            "is not a kdharness plugin (it exports no abi_stable root module); plugins are built with kdharness_plugin_api::export_plugins!".into()
        }
        LibraryError::IncompatibleVersionNumber { expected_version, actual_version, .. } => format!(
            "was built against plugin interface {actual_version}, this kdharness speaks {expected_version}; {rebuild}"
        ),
        LibraryError::AbiInstability(_) => {
            format!("was built against an incompatible plugin interface (its root module's layout differs); {rebuild}")
        }
        LibraryError::InvalidAbiHeader(_) | LibraryError::InvalidCAbi { .. } => {
            format!("was built with an incompatible abi_stable or compiler ABI; {rebuild}")
        }
        LibraryError::RootModule { err, .. } => format!("failed to initialise: {}", first_line(&err.to_string())),
        LibraryError::Many(errors) => errors.iter().next().map(condense).unwrap_or_else(|| "failed to load".into()),
        other => first_line(&other.to_string()),
    }
}

fn first_line(text: &str) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    if line.chars().count() > 200 { format!("{}…", line.chars().take(200).collect::<String>()) } else { line.to_string() }
}
