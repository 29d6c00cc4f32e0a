//! `kdharness plugins list | new`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::PluginArgs;
use crate::plugins::{PluginKind, Registry, default_api_path, scaffold, search_dirs};

#[derive(clap::Subcommand, Debug)]
pub enum PluginsCommand {
    /// List every plugin found: name, kind, version, source library.
    List {
        #[command(flatten)]
        plugins: PluginArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write a new plugin crate from the template.
    New {
        /// What the plugin provides.
        #[arg(value_enum)]
        kind: PluginKind,
        /// The plugin's name (lowercase letters, digits, underscores).
        name: String,
        /// Where to write the crate (default: ./kdh-KIND-NAME, e.g. ./kdh-attack-NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The plugin-api crate to depend on (default: the one this kdharness was built from).
        #[arg(long, value_name = "DIR")]
        api_path: Option<PathBuf>,
    },
}

pub fn run(command: PluginsCommand) -> Result<ExitCode> {
    match command {
        PluginsCommand::List { plugins, json } => list(&plugins, json),
        PluginsCommand::New { kind, name, dir, api_path } => {
            let word = kind.word();
            let dir = dir.unwrap_or_else(|| PathBuf::from(format!("kdh-{word}-{}", name.replace('_', "-"))));
            let out = scaffold(kind, &name, &dir, &api_path.unwrap_or_else(default_api_path))?;
            let what = match kind {
                PluginKind::Attack => "attack",
                PluginKind::Kd => "KD-method",
                PluginKind::Defense => "defense",
            };
            println!("wrote {what} plugin `{name}` to {}", out.dir.display());
            println!("next: cd {} && cargo build --release", out.dir.display());
            println!("then: kdharness plugins list --plugin-dir {}", out.dir.join("target/release").display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn list(args: &PluginArgs, json: bool) -> Result<ExitCode> {
    let registry = Registry::discover(search_dirs(&args.plugin_dirs));
    if json {
        let attacks: Vec<serde_json::Value> = registry
            .attacks()
            .map(|a| {
                serde_json::json!({
                    "name": a.name(),
                    "kind": "attack",
                    "version": a.decl.version.as_str(),
                    "source": a.library,
                    "sha256": a.library_sha256,
                    "needs": a.decl.needs.names(),
                    "params": a.decl.params.iter().map(|p| serde_json::json!({"name": p.name.as_str(), "default": p.default.as_str(), "help": p.help.as_str()})).collect::<Vec<_>>(),
                    "description": a.decl.description.as_str(),
                })
            })
            .collect();
        let kd = registry.kd_methods().map(|m| {
            serde_json::json!({
                "name": m.name(),
                "kind": "kd",
                "version": m.decl.version.as_str(),
                "source": m.library,
                "sha256": m.library_sha256,
                "params": m.decl.params.iter().map(|p| serde_json::json!({"name": p.name.as_str(), "default": p.default.as_str(), "help": p.help.as_str()})).collect::<Vec<_>>(),
                "description": m.decl.description.as_str(),
            })
        });
        let defenses = registry.defenses().map(|d| {
            serde_json::json!({
                "name": d.name(),
                "kind": "defense",
                "version": d.decl.version.as_str(),
                "source": d.library,
                "sha256": d.library_sha256,
                "acts_on": d.decl.acts_on.names(),
                "params": d.decl.params.iter().map(|p| serde_json::json!({"name": p.name.as_str(), "default": p.default.as_str(), "help": p.help.as_str()})).collect::<Vec<_>>(),
                "description": d.decl.description.as_str(),
            })
        });
        let plugins: Vec<serde_json::Value> = attacks.into_iter().chain(kd).chain(defenses).collect();
        let problems: Vec<_> = registry.problems.iter().collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"plugins": plugins, "problems": problems}))?);
    } else {
        let rows: Vec<[String; 5]> = registry
            .attacks()
            .map(|a| {
                let params: Vec<String> = a.decl.params.iter().map(|p| format!("{}={}", p.name, p.default)).collect();
                [a.name().to_string(), "attack".into(), a.decl.version.to_string(), a.library.display().to_string(), params.join(" ")]
            })
            .chain(registry.kd_methods().map(|m| {
                let params: Vec<String> = m.decl.params.iter().map(|p| format!("{}={}", p.name, p.default)).collect();
                [m.name().to_string(), "kd".into(), m.decl.version.to_string(), m.library.display().to_string(), params.join(" ")]
            }))
            .chain(registry.defenses().map(|d| {
                let params: Vec<String> = d.decl.params.iter().map(|p| format!("{}={}", p.name, p.default)).collect();
                [d.name().to_string(), "defense".into(), d.decl.version.to_string(), d.library.display().to_string(), params.join(" ")]
            }))
            .collect();
        let header = ["NAME", "KIND", "VERSION", "SOURCE", "PARAMS"];
        let widths: Vec<usize> =
            (0..4).map(|i| rows.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0)).collect();
        let line = |cells: [&str; 5]| {
            let mut out = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i < 4 {
                    out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
                } else {
                    out.push_str(cell);
                }
            }
            out.trim_end().to_string()
        };
        println!("{}", line(header));
        for r in &rows {
            println!("{}", line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
        }
        for problem in &registry.problems {
            super::warn(problem);
        }
    }
    Ok(ExitCode::SUCCESS)
}
