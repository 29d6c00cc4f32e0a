//! `kdharness eval`: the whole experiment of SPEC §3, stage by stage, resumable.
//!
//! Every stage writes under the run directory and records, in a `.done` file, the content
//! hash of what it was made from (its config section and its upstream artifacts). A stage
//! whose hash is unchanged is skipped, so a killed run resumes where it stopped (students
//! are done one by one) and a changed attack reruns only the attack and report stages.
//! The scoring stages run the `attack` and `memorize` commands in-process: one code path.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::Device;
use serde_json::json;

use crate::config::{Config, Loaded};
use crate::data::{self, Record, Template, TokenLimits};
use crate::distill::{self, DistillConfig, StudentPlan};
use crate::model::{Model, ModelConfig};
use crate::plugins::Registry;
use crate::report::Role;
use crate::train::{self, Example};
use crate::util::{sha256_bytes, write_atomic};

/// The stages, in order.
pub const STAGES: [&str; 8] = ["data", "teacher", "distill", "export", "attack", "memorize", "blocks", "report"];

/// Run-wide settings that are not part of the experiment.
#[derive(Debug, Clone)]
pub struct Options {
    /// The run directory.
    pub out: PathBuf,
    /// Ignore completed stages and redo everything.
    pub fresh: bool,
    /// Run only these stages (their inputs must exist).
    pub only: Vec<String>,
    /// Extra plugin directories.
    pub plugin_dirs: Vec<PathBuf>,
    /// Arguments passed on to the scoring commands (`--device`, `--threads`, `--ort-lib`).
    pub runtime_args: Vec<String>,
}

/// One model of the run.
#[derive(Debug, Clone)]
struct RunModel {
    name: String,
    role: Role,
    kd_method: String,
    student: String,
    dir: PathBuf,
    /// The hash of everything it was made from.
    key: String,
}

/// A stage's completion marker: `.done` holding the input hash.
struct Marker(PathBuf);

impl Marker {
    fn new(dir: &Path) -> Self {
        Marker(dir.join(".done"))
    }
    fn is(&self, key: &str) -> bool {
        std::fs::read_to_string(&self.0).is_ok_and(|k| k.trim() == key)
    }
    fn set(&self, key: &str) -> Result<()> {
        write_atomic(&self.0, key.as_bytes()).with_context(|| format!("cannot write {}", self.0.display()))
    }
}

fn key_of(parts: &[&str]) -> String {
    sha256_bytes(parts.join("\u{1f}").as_bytes())
}

fn json_key<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("config sections serialise")
}

struct Pipeline<'a> {
    loaded: &'a Loaded,
    cfg: &'a Config,
    opts: &'a Options,
    timings: serde_json::Map<String, serde_json::Value>,
}

impl Pipeline<'_> {
    fn wanted(&self, stage: &str) -> bool {
        self.opts.only.is_empty() || self.opts.only.iter().any(|s| s == stage)
    }

    /// Runs `f` as stage `name` unless its marker says `key` is done; records the time.
    fn stage(&mut self, name: &str, marker_dir: &Path, key: &str, f: impl FnOnce(&mut Self) -> Result<()>) -> Result<()> {
        let marker = Marker::new(marker_dir);
        if !self.opts.fresh && marker.is(key) {
            crate::cli::info(format!("{name}: up to date"));
            self.timings.insert(name.into(), json!({"seconds": 0.0, "cached": true}));
            return Ok(());
        }
        if !self.wanted(name) {
            bail!("stage `{name}` is not done and not among --only; run it first");
        }
        crate::cli::info(format!("{name}: running"));
        let started = Instant::now();
        std::fs::create_dir_all(marker_dir).with_context(|| format!("cannot create {}", marker_dir.display()))?;
        f(self)?;
        marker.set(key)?;
        let seconds = started.elapsed().as_secs_f64();
        let previous = self.timings.get(name).and_then(|t| t["seconds"].as_f64()).unwrap_or(0.0);
        self.timings.insert(name.into(), json!({"seconds": previous + seconds, "cached": false}));
        crate::cli::info(format!("{name}: done in {seconds:.1}s"));
        Ok(())
    }

    fn dir(&self, sub: &str) -> PathBuf {
        self.opts.out.join(sub)
    }
}

/// Runs the experiment of `loaded` into `opts.out`.
pub fn run(loaded: &Loaded, opts: &Options) -> Result<()> {
    let started = Instant::now();
    let cfg = &loaded.config;
    std::fs::create_dir_all(&opts.out).with_context(|| format!("cannot create {}", opts.out.display()))?;
    for stage in &opts.only {
        if !STAGES.contains(&stage.as_str()) {
            bail!("unknown stage `{stage}`{} (stages: {})", crate::util::did_you_mean(stage, STAGES), STAGES.join(", "));
        }
    }
    let mut p = Pipeline { loaded, cfg, opts, timings: serde_json::Map::new() };
    let registry = Registry::discover(crate::plugins::search_dirs(&opts.plugin_dirs));
    for problem in &registry.problems {
        crate::cli::warn(problem);
    }

    // 1. data
    let data_key = key_of(&[&json_key(&cfg.data), &cfg.seed.to_string(), &cfg.teacher.source, &source_digest(loaded)?]);
    let data_dir = p.dir("data");
    p.stage("data", &data_dir, &data_key, |p| data_stage(p, &data_dir))?;
    let tokenizer_path = data_dir.join("tokenizer.json");
    let tokenizer = data::TokenizerFile::load(&tokenizer_path)?;
    let limits = TokenLimits { max_prompt_tokens: cfg.data.max_prompt_tokens, max_response_tokens: cfg.data.max_response_tokens };
    let examples = |file: &str, prefix: &str| -> Result<Vec<Example>> {
        let eos = tokenizer.tokenizer.token_to_id(data::vocab::EOS).or_else(|| crate::memorize::guess_eos(&tokenizer.tokenizer));
        data::load_jsonl(&data_dir.join(file), prefix)?
            .iter()
            .map(|r| Ok(Example::from_encoded(&data::encode(&tokenizer.tokenizer, cfg.data.template, limits, r)?, eos)))
            .collect()
    };

    // 2. teacher
    let teacher_key = key_of(&[&data_key, &json_key(&cfg.teacher)]);
    let teacher_dir = p.dir("models/teacher");
    let vocab = tokenizer.tokenizer.get_vocab_size(true);
    p.stage("teacher", &teacher_dir, &teacher_key, |p| {
        let mut model = initial_teacher(p.loaded, vocab)?;
        let train_set = examples("teacher_train.jsonl", "t")?;
        train::train(&mut model, &train_set, &p.cfg.teacher.train, p.cfg.seed, "teacher", Some(&teacher_dir))?;
        let (m, n) = (examples("members.jsonl", "m")?, examples("nonmembers.jsonl", "n")?);
        let (lm, ln) = (train::evaluate(&model, &m, 16)?, train::evaluate(&model, &n, 16)?);
        crate::cli::info(format!("teacher: response loss {lm:.3} on members vs {ln:.3} on non-members"));
        model.save(&teacher_dir)?;
        std::fs::copy(&tokenizer_path, teacher_dir.join("tokenizer.json"))?;
        Ok(())
    })?;
    let mut models = vec![RunModel { name: "teacher".into(), role: Role::Teacher, kd_method: String::new(), student: String::new(), dir: teacher_dir.clone(), key: teacher_key.clone() }];

    // 3. distill: one student per size × method, plus No-KD, each resumable on its own.
    let distill_cfg = DistillConfig {
        train: cfg.distill.train.clone(),
        kd_ratio: cfg.distill.kd_ratio,
        max_new_tokens: cfg.distill.max_new_tokens,
        temperature: cfg.distill.temperature,
    };
    let public = examples("public.jsonl", "p")?;
    let n_val = ((public.len() as f64) * cfg.distill.validation_fraction).round() as usize;
    let (train_set, val_set) = public.split_at(public.len() - n_val.min(public.len().saturating_sub(1)));
    let mut methods: Vec<String> = cfg.distill.methods.clone();
    if cfg.distill.nokd {
        methods.push("nokd".into());
    }
    // Loaded only when a student still has to be trained (a finished run skips it).
    let mut teacher: Option<Model> = None;
    for size in &cfg.students {
        for method in &methods {
            let name = format!("{method}-{}", size.name);
            let params: Vec<(String, String)> = cfg.distill.params.get(method).map(|m| m.clone().into_iter().collect()).unwrap_or_default();
            let key = key_of(&[&teacher_key, &json_key(&cfg.distill), &json_key(size), method]);
            let dir = p.dir(&format!("models/{name}"));
            p.stage("distill", &dir, &key, |p| {
                if teacher.is_none() {
                    teacher = Some(Model::load(&teacher_dir, &Device::Cpu)?);
                }
                let teacher = teacher.as_ref().expect("loaded above");
                let init = initial_student(p.cfg, size, teacher)?;
                let plan = StudentPlan { method: method.clone(), params: params.clone(), student: size.name.clone(), init };
                let samples = p.dir(&format!("models/teacher_samples-{}.json", &teacher_key[..12]));
                distill::train_student(&registry, teacher, &plan, train_set, val_set, &distill_cfg, p.cfg.seed, &samples, &dir)?;
                std::fs::copy(&tokenizer_path, dir.join("tokenizer.json"))?;
                Ok(())
            })?;
            let role = if method == "nokd" { Role::Nokd } else { Role::Student };
            models.push(RunModel { name, role, kd_method: if role == Role::Student { method.clone() } else { String::new() }, student: size.name.clone(), dir, key });
        }
    }

    // 4. export
    for m in &models {
        let key = key_of(&[&m.key, "export"]);
        let marker_dir = m.dir.join("onnx");
        p.stage("export", &marker_dir, &key, |_| {
            let model = Model::load(&m.dir, &Device::Cpu)?;
            crate::export::export(&model, &m.dir.join("model.onnx"))?;
            Ok(())
        })?;
    }

    // 5–7. attacks (with MoPe and the per-block sweep), memorization and utility.
    let model_keys: Vec<&str> = models.iter().map(|m| m.key.as_str()).collect();
    let all_models = key_of(&model_keys);
    let mut model_args: Vec<String> = Vec::new();
    for m in &models {
        model_args.extend(["--model".into(), format!("{}={}", m.name, m.dir.join("model.onnx").display())]);
    }
    let data_args = |out: &Path| -> Vec<String> {
        let mut a = vec![
            "--tokenizer".to_string(),
            tokenizer_path.display().to_string(),
            "--members".into(),
            data_dir.join("members.jsonl").display().to_string(),
            "--nonmembers".into(),
            data_dir.join("nonmembers.jsonl").display().to_string(),
            "--template".into(),
            template_name(cfg.data.template).into(),
            "--max-prompt-tokens".into(),
            cfg.data.max_prompt_tokens.to_string(),
            "--seed".into(),
            cfg.seed.to_string(),
            "--bootstrap".into(),
            cfg.attacks.bootstrap.to_string(),
            "--out".into(),
            out.display().to_string(),
        ];
        a.extend(opts.runtime_args.iter().cloned());
        a
    };
    let attack_dir = p.dir("stages/attack");
    let attack_key = key_of(&[&all_models, &data_key, &json_key(&cfg.attacks), &json_key(&cfg.blocks)]);
    p.stage("attack", &attack_dir, &attack_key, |p| {
        let mut args = vec!["attack".to_string()];
        args.extend(model_args.iter().cloned());
        if let Some(reference) = &p.cfg.attacks.reference {
            let r = models.iter().find(|m| &m.name == reference).with_context(|| {
                format!("attacks.reference `{reference}` is not a model of this run ({})", models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", "))
            })?;
            args.extend(["--reference".into(), format!("reference-{}={}", r.name, r.dir.join("model.onnx").display())]);
        }
        args.extend(["--attacks".into(), p.cfg.attacks.names.join(",")]);
        for (key, value) in &p.cfg.attacks.params {
            args.extend(["--param".into(), format!("{key}={value}")]);
        }
        args.extend(["--max-response-tokens".into(), p.cfg.data.max_response_tokens.to_string()]);
        args.extend(["--batch-size".into(), p.cfg.attacks.batch_size.to_string()]);
        if p.cfg.blocks.enabled {
            args.push("--blocks".into());
        }
        for dir in &p.opts.plugin_dirs {
            args.extend(["--plugin-dir".into(), dir.display().to_string()]);
        }
        args.extend(data_args(&attack_dir));
        let code = crate::cli::run_args(&args)?;
        if code != std::process::ExitCode::SUCCESS {
            bail!("the attack stage failed; see the errors above (partial results are in {})", attack_dir.display());
        }
        Ok(())
    })?;
    let memorize_dir = p.dir("stages/memorize");
    if cfg.memorize.enabled {
        let key = key_of(&[&all_models, &data_key, &json_key(&cfg.memorize)]);
        p.stage("memorize", &memorize_dir, &key, |p| {
            let mut args = vec!["memorize".to_string()];
            args.extend(model_args.iter().cloned());
            args.extend(["--teacher".into(), "teacher".into(), "--k".into(), p.cfg.memorize.k.to_string()]);
            args.extend(["--max-new-tokens".into(), p.cfg.memorize.max_new_tokens.to_string()]);
            args.extend(["--no-repeat-ngram".into(), p.cfg.memorize.no_repeat_ngram.to_string()]);
            args.extend(data_args(&memorize_dir));
            crate::cli::run_args(&args)?;
            Ok(())
        })?;
    }

    // 8. report: gather the per-sample results, write the manifest, render.
    let report_started = Instant::now();
    for (dir, files) in [
        (&attack_dir, &["scores.csv", "blocks.csv"][..]),
        (&memorize_dir, &["memorization.csv", "utility.csv"][..]),
        (&data_dir, &["canaries.csv"][..]),
    ] {
        for f in files {
            let from = dir.join(f);
            if from.is_file() {
                std::fs::copy(&from, opts.out.join(f)).with_context(|| format!("cannot copy {}", from.display()))?;
            }
        }
    }
    let attack_manifest: serde_json::Value =
        std::fs::read_to_string(attack_dir.join("manifest.json")).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
    let model_entries: Vec<serde_json::Value> = models
        .iter()
        .map(|m| {
            let onnx = m.dir.join("model.onnx");
            json!({
                "name": m.name,
                "role": {"role": m.role, "kd_method": m.kd_method, "student": m.student},
                "dir": m.dir,
                "onnx_sha256": crate::util::sha256_file(&onnx).ok(),
                "weights_sha256": crate::util::sha256_file(&m.dir.join("model.safetensors")).ok(),
                "input_key": m.key,
            })
        })
        .collect();
    let data_files: serde_json::Map<String, serde_json::Value> = ["members.jsonl", "public.jsonl", "nonmembers.jsonl", "teacher_train.jsonl", "tokenizer.json"]
        .iter()
        .map(|f| (f.to_string(), json!(crate::util::sha256_file(&data_dir.join(f)).ok())))
        .collect();
    p.timings.insert("report".into(), json!({"seconds": report_started.elapsed().as_secs_f64(), "cached": false}));
    let manifest = json!({
        "kdharness_version": env!("CARGO_PKG_VERSION"),
        "git_revision": env!("KDHARNESS_GIT_REVISION"),
        "plugin_interface": kdharness_plugin_api::INTERFACE_VERSION,
        "command": std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>(),
        "config_file": loaded.path,
        "config": loaded.text,
        "seed": cfg.seed,
        "bootstrap": {"resamples": cfg.attacks.bootstrap, "seed": cfg.seed},
        "memorization": {"k": cfg.memorize.k, "max_new_tokens": cfg.memorize.max_new_tokens, "no_repeat_ngram": cfg.memorize.no_repeat_ngram},
        "versions": {"kdharness": env!("CARGO_PKG_VERSION"), "candle": "0.11.1", "ort": "2.0.0-rc.15", "tokenizers": "0.23.2", "onnxruntime": crate::runtime::ORT_VERSION},
        "onnx_runtime": attack_manifest["onnx_runtime"],
        "plugins": attack_manifest["plugins"],
        "kd_plugins": registry.kd_methods().map(|k| json!({"name": k.name(), "version": k.decl.version.as_str(), "library": k.library, "sha256": k.library_sha256})).collect::<Vec<_>>(),
        "data": data_files,
        "models": model_entries,
        "stages": p.timings,
        "seconds": started.elapsed().as_secs_f64(),
    });
    write_atomic(&opts.out.join("manifest.json"), serde_json::to_string_pretty(&manifest)?.as_bytes())?;
    let rendered = crate::report::render_run(&opts.out, crate::metrics::Bootstrap { resamples: cfg.attacks.bootstrap, seed: cfg.seed })?;
    for (name, why) in &rendered.skipped {
        crate::cli::warn(format!("{name} not drawn: {why}"));
    }
    crate::cli::info(format!("report: {} figures, report.html in {} ({:.0}s in all)", rendered.figures.len(), opts.out.display(), started.elapsed().as_secs_f64()));
    Ok(())
}

fn template_name(t: Template) -> &'static str {
    match t {
        Template::Alpaca => "alpaca",
        Template::Chatml => "chatml",
        Template::Plain => "plain",
    }
}

/// A digest of the data source (the file's SHA-256; `synthetic` for generated data).
fn source_digest(loaded: &Loaded) -> Result<String> {
    let source = &loaded.config.data.source;
    if source == "synthetic" {
        return Ok("synthetic".into());
    }
    let path = loaded.resolve(source);
    crate::util::sha256_file(&path).with_context(|| format!("data.source {} cannot be read", path.display()))
}

/// The data stage: records, the split (canaries forced into the members), the teacher's
/// training set (canaries repeated), the tokenizer.
fn data_stage(p: &mut Pipeline<'_>, dir: &Path) -> Result<()> {
    let cfg = p.cfg;
    let (records, canaries): (Vec<Record>, Vec<(Record, usize)>) = if cfg.data.source == "synthetic" {
        let s = data::synth::synthesize(cfg.data.synthetic_records, cfg.data.canaries_per_count, cfg.seed);
        (s.records, s.canaries)
    } else {
        let path = p.loaded.resolve(&cfg.data.source);
        (data::load_jsonl(&path, "r")?, Vec::new())
    };
    data::check_unique_ids(records.iter().chain(canaries.iter().map(|c| &c.0)))?;
    let split = data::split(&records, cfg.data.split, cfg.data.nonmember_count, cfg.seed, Path::new(&cfg.data.source))?;
    let by_id: std::collections::HashMap<&str, &Record> = records.iter().map(|r| (r.id.as_str(), r)).collect();
    let write = |name: &str, rows: &[&Record]| -> Result<()> {
        let mut text = String::new();
        for r in rows {
            text.push_str(&serde_json::to_string(&r.to_json())?);
            text.push('\n');
        }
        write_atomic(&dir.join(name), text.as_bytes()).with_context(|| format!("cannot write {name}"))
    };
    let part = |ids: &[String]| -> Vec<&Record> { ids.iter().map(|id| by_id[id.as_str()]).collect() };
    let mut members = part(&split.members);
    members.extend(canaries.iter().map(|c| &c.0));
    write("members.jsonl", &members)?;
    write("public.jsonl", &part(&split.public))?;
    write("nonmembers.jsonl", &part(&split.nonmembers))?;
    // The teacher sees each canary `repetitions` times, under distinct ids.
    let mut teacher_train: Vec<Record> = part(&split.members).into_iter().cloned().collect();
    for (c, reps) in &canaries {
        for copy in 0..*reps {
            teacher_train.push(Record { id: format!("{}_copy{copy}", c.id), ..c.clone() });
        }
    }
    write("teacher_train.jsonl", &teacher_train.iter().collect::<Vec<_>>())?;
    let mut csv = String::from("sample_id,repetitions\n");
    for (c, reps) in &canaries {
        csv.push_str(&format!("{},{reps}\n", c.id));
    }
    write_atomic(&dir.join("canaries.csv"), csv.as_bytes())?;
    write_atomic(&dir.join("split.json"), serde_json::to_string_pretty(&split)?.as_bytes())?;

    let tokenizer_json = match cfg.data.tokenizer.as_str() {
        "train" => {
            let texts: Vec<String> = records
                .iter()
                .chain(canaries.iter().map(|c| &c.0))
                .flat_map(|r| [cfg.data.template.prompt(r), r.response.clone()])
                .collect();
            let tokenizer = data::vocab::train_tokenizer(&texts, cfg.data.vocab_size).map_err(anyhow::Error::msg)?;
            tokenizer.to_string(true).map_err(|e| anyhow::anyhow!("cannot serialise the tokenizer: {e}"))?
        }
        "teacher" => {
            let source = teacher_dir_source(p.loaded)?;
            std::fs::read_to_string(source.join("tokenizer.json")).with_context(|| format!("the teacher {} has no tokenizer.json", source.display()))?
        }
        path => std::fs::read_to_string(p.loaded.resolve(path)).with_context(|| format!("cannot read data.tokenizer {path}"))?,
    };
    write_atomic(&dir.join("tokenizer.json"), tokenizer_json.as_bytes())?;
    crate::cli::info(format!(
        "data: {} members (+{} canaries), {} public, {} non-members",
        split.members.len(),
        canaries.len(),
        split.public.len(),
        split.nonmembers.len()
    ));
    Ok(())
}

/// The Hugging Face directory of a pretrained teacher.
fn teacher_dir_source(loaded: &Loaded) -> Result<PathBuf> {
    let source = &loaded.config.teacher.source;
    if source == "smollm2-135m" {
        return Ok(crate::model::smollm2::fetch()?);
    }
    match source.strip_prefix("hf:") {
        Some(dir) => Ok(loaded.resolve(dir)),
        None => bail!("data.tokenizer = \"teacher\" needs a pretrained teacher (smollm2-135m or hf:DIR), not `{source}`"),
    }
}

fn initial_teacher(loaded: &Loaded, vocab: usize) -> Result<Model> {
    let cfg = &loaded.config;
    match cfg.teacher.source.as_str() {
        "scratch" => {
            let shape = cfg.teacher.shape.as_ref().context("a scratch teacher needs [teacher.shape]")?;
            Ok(Model::scratch(ModelConfig::scratch(shape, vocab)?, cfg.seed ^ crate::util::stable_hash("teacher"), &Device::Cpu)?)
        }
        "smollm2-135m" => Ok(Model::load(&crate::model::smollm2::fetch()?, &Device::Cpu)?),
        source => match source.strip_prefix("hf:") {
            Some(dir) => Ok(Model::load(&loaded.resolve(dir), &Device::Cpu)?),
            None => bail!("teacher.source `{source}`: an ONNX teacher can be scored (kdharness attack) but not fine-tuned or distilled from"),
        },
    }
}

fn initial_student(cfg: &Config, size: &crate::config::StudentConfig, teacher: &Model) -> Result<Model> {
    if let Some(blocks) = &size.teacher_blocks {
        return Ok(teacher.with_blocks(blocks)?);
    }
    let shape = size.shape.as_ref().context("a student needs `shape` or `teacher_blocks`")?;
    // Every method of one size starts from the same weights (seeded by the size), so
    // differences between students come from the methods alone.
    Ok(Model::scratch(ModelConfig::scratch(shape, teacher.config.vocab_size)?, cfg.seed ^ crate::util::stable_hash(&format!("student/{}", size.name)), &Device::Cpu)?)
}
