//! `kdharness doctor`: what this installation will use.

use std::process::ExitCode;

use anyhow::Result;

use super::{PluginArgs, RuntimeArgs};
use crate::plugins::{Registry, search_dirs};
use crate::runtime::Runtime;

#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    #[command(flatten)]
    plugins: PluginArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

pub fn run(args: DoctorArgs) -> Result<ExitCode> {
    println!(
        "kdharness {} (git {}, plugin interface {})",
        env!("CARGO_PKG_VERSION"),
        env!("KDHARNESS_GIT_REVISION"),
        kdharness_plugin_api::INTERFACE_VERSION
    );
    println!("cache directory: {}", crate::files::cache_dir().display());
    let mut healthy = true;
    match Runtime::get(args.runtime.ort_lib.as_deref()) {
        Ok(runtime) => {
            println!("ONNX Runtime library: {}", runtime.library.path.display());
            println!("ONNX Runtime version: {} (found via {})", runtime.library.version, runtime.library.source);
            println!("execution providers: {}", runtime.providers.join(", "));
        }
        Err(e) => {
            healthy = false;
            println!("ONNX Runtime: NOT AVAILABLE: {e}");
        }
    }
    let registry = Registry::discover(search_dirs(&args.plugins.plugin_dirs));
    println!("plugin directories searched (in order):");
    for dir in &registry.searched {
        let state = if dir.path.is_dir() { "" } else { " (does not exist)" };
        println!("  {} [{}]{state}", dir.path.display(), dir.origin);
    }
    let names: Vec<&str> = registry.attack_names().collect();
    println!("attacks loaded: {}", if names.is_empty() { "none".to_string() } else { names.join(", ") });
    let methods: Vec<&str> = registry.kd_names().collect();
    println!("KD methods loaded: {}", if methods.is_empty() { "none".to_string() } else { methods.join(", ") });
    let defenses: Vec<&str> = registry.defense_names().collect();
    println!("defenses loaded: {}", if defenses.is_empty() { "none".to_string() } else { defenses.join(", ") });
    for problem in &registry.problems {
        println!("problem: {problem}");
    }
    Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
