//! Bad input: one clear error line naming the culprit, a non-zero exit, no panic trace.

use crate::common::*;

/// Runs `attack` with one argument replaced.
fn attack_with(replace: &str, value: &str) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = attack_args(tmp.path(), &[]);
    if let Some(i) = args.iter().position(|a| a == replace) {
        args[i + 1] = value.to_string();
    } else {
        args.push(replace.into());
        args.push(value.into());
    }
    kdharness(args)
}

#[test]
fn malformed_jsonl_names_file_and_line() {
    let line = attack_with("--members", &fixture("bad/malformed.jsonl").display().to_string()).error_line();
    assert!(line.contains("bad/malformed.jsonl:3: not valid JSON"), "{line}");
}

#[test]
fn missing_field_names_file_line_and_field() {
    let line = attack_with("--nonmembers", &fixture("bad/missing_field.jsonl").display().to_string()).error_line();
    assert!(line.contains("bad/missing_field.jsonl:2: missing field `response` (accepted spellings: `response` or `output`)"), "{line}");
}

#[test]
fn empty_sets_are_refused() {
    let line = attack_with("--nonmembers", &fixture("bad/empty.jsonl").display().to_string()).error_line();
    assert!(line.contains("empty.jsonl holds no records: the non-member set must not be empty"), "{line}");
    let line = attack_with("--members", &fixture("bad/empty.jsonl").display().to_string()).error_line();
    assert!(line.contains("the member set must not be empty"), "{line}");
}

#[test]
fn a_model_without_logits_lists_its_outputs() {
    let line = attack_with("--model", &format!("x={}", fixture("no-logits.onnx").display())).error_line();
    assert!(line.contains("no-logits.onnx: has no `logits` output (it has: scores, present.0.key"), "{line}");
}

#[test]
fn a_missing_tokenizer_is_named() {
    let line = attack_with("--tokenizer", "/nonexistent/tokenizer.json").error_line();
    assert!(line.contains("tokenizer file /nonexistent/tokenizer.json not found"), "{line}");
}

#[test]
fn a_tokenizer_larger_than_the_model_is_refused() {
    let line = attack_with("--model", &format!("x={}", fixture("small-vocab.onnx").display())).error_line();
    assert!(line.contains("tokenizer.json has 300 tokens but model") && line.contains("small-vocab.onnx only 100 logits"), "{line}");
}

#[test]
fn an_unknown_attack_suggests_the_nearest() {
    let line = attack_with("--attacks", "loss,minkk").error_line();
    assert!(line.contains("unknown attack `minkk` (did you mean `mink`?)"), "{line}");
    let line = attack_with("--param", "mink.kk=0.1").error_line();
    assert!(line.contains("attack `mink` has no parameter `kk` (did you mean `k`?)"), "{line}");
}

#[test]
fn missing_or_invalid_model_files_are_named() {
    let line = attack_with("--model", "x=/nonexistent/model.onnx").error_line();
    assert!(line.contains("cannot read model /nonexistent/model.onnx"), "{line}");
    let not_onnx = fixture("members.jsonl").display().to_string();
    let line = attack_with("--model", &format!("x={not_onnx}")).error_line();
    assert!(line.contains(&format!("{not_onnx}: ONNX Runtime cannot load it")), "{line}");
}

#[test]
fn repeated_attacks_run_once_and_repeated_parameters_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    kdharness(attack_args(tmp.path(), &["--attacks", "loss,loss,mink"])).ok();
    assert_eq!(read_scores(&tmp.path().join("scores.csv")).len(), 2 * 24);
    let run = kdharness(attack_args(tmp.path(), &["--param", "mink.k=0.1", "--param", "mink.k=0.3"]));
    let line = run.error_line();
    assert!(line.contains("parameter `mink.k` is given twice"), "{line}");
}

#[test]
fn a_reserved_category_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let members = tmp.path().join("m.jsonl");
    std::fs::write(&members, "{\"instruction\":\"q\",\"response\":\"a b c\",\"category\":\"all\"}\n").unwrap();
    let line = attack_with("--members", &members.display().to_string()).error_line();
    assert!(line.contains("m.jsonl:1: category `all` is reserved"), "{line}");
}

/// Truncation or padding saved in a tokenizer.json must not change what is scored.
#[test]
fn tokenizer_truncation_and_padding_settings_are_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("tokenizer.json")).unwrap()).unwrap();
    json["truncation"] = serde_json::json!({"direction": "Right", "max_length": 5, "strategy": "LongestFirst", "stride": 0});
    json["padding"] = serde_json::json!({"strategy": {"Fixed": 300}, "direction": "Right", "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": "<|endoftext|>"});
    let tokenizer = tmp.path().join("tokenizer.json");
    std::fs::write(&tokenizer, serde_json::to_string(&json).unwrap()).unwrap();
    let out = tmp.path().join("out");
    let mut args = attack_args(&out, &["--attacks", "loss"]);
    let i = args.iter().position(|a| a == "--tokenizer").unwrap();
    args[i + 1] = tokenizer.display().to_string();
    kdharness(args).ok();
    let reference = reference_json();
    for ((_, _, id), (_, got)) in read_scores(&out.join("scores.csv")) {
        let want = reference["models"]["tiny-llama"]["samples"][&id]["scores"]["loss"].as_f64().unwrap();
        assert_close(got, want, 1e-5, &id);
    }
}

/// The CPU build of ONNX Runtime has no CUDA provider: asking for it is an error, never a
/// silent fallback to the CPU.
#[test]
fn cuda_without_its_provider_is_an_error() {
    let line = attack_with("--device", "cuda").error_line();
    assert!(line.contains("the CUDA execution provider is not in this ONNX Runtime build"), "{line}");
    assert!(line.contains("onnxruntime-gpu"), "{line}");
}

/// Every file of a run directory with its SHA-256 (the lock aside).
fn snapshot(dir: &std::path::Path) -> std::collections::BTreeMap<std::path::PathBuf, String> {
    let mut files = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if entry.file_name() != ".lock" {
                files.insert(path.clone(), kdharness::files::sha256_file(&path).unwrap());
            }
        }
    }
    files
}

/// One bad input of `eval`: what it is, how it edits the smoke config, extra flags, and
/// what the error line must contain.
type BadEdit = (&'static str, Box<dyn Fn(&str) -> String>, &'static [&'static str], String);

/// Bad configs and flags of `eval`, each against a finished run: one `error:` line naming
/// the key (or file), exit 1, no panic trace, and not one file of the run changed. The
/// list is docs/bad-inputs.md's.
#[test]
fn every_bad_config_or_flag_is_one_error_line_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let smoke = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/smoke.toml");
    let text = std::fs::read_to_string(&smoke).unwrap();
    kdharness(["eval", &smoke.display().to_string(), "--out", &run.display().to_string(), "-q"]).ok();
    let before = snapshot(&run);
    // A pretrained teacher whose config claims fewer logits than the tokenizer has ids.
    let narrow = tmp.path().join("narrow-teacher");
    std::fs::create_dir_all(&narrow).unwrap();
    for f in ["model.safetensors", "config.json", "tokenizer.json"] {
        std::fs::copy(run.join("models/teacher").join(f), narrow.join(f)).unwrap();
    }
    let config = std::fs::read_to_string(narrow.join("config.json")).unwrap().replace("\"vocab_size\": 400", "\"vocab_size\": 100");
    std::fs::write(narrow.join("config.json"), config).unwrap();
    let teacher = run.join("models/teacher").display().to_string();
    let fixture_path = |name: &str| fixture(name).display().to_string();

    let shape_line = "shape = { arch = \"llama\", layers = 2, d_model = 32, heads = 2, kv_heads = 1, ffn = 64 }\n";
    let edits: Vec<BadEdit> = vec![
        ("TOML syntax", Box::new(|t| t.replace("seed = 1", "seed = 1 =")), &[], "smoke.toml".into()),
        ("unknown top-level key", Box::new(|t| t.replace("seed = 1", "sed = 1")), &[], "unknown field `sed`".into()),
        ("unknown key in a section", Box::new(|t| t.replace("nonmember_count = 20", "nonmember_cont = 20")), &[], "nonmember_cont".into()),
        ("name with ..", Box::new(|t| t.replace("name = \"smoke\"", "name = \"../escape\"")), &[], "name `../escape` must be a plain name".into()),
        ("absolute name", Box::new(|t| t.replace("name = \"smoke\"", "name = \"/etc/x\"")), &[], "name `/etc/x` must be a plain name".into()),
        ("unknown teacher source", Box::new(|t| t.replace("source = \"scratch\"", "source = \"gpt5\"")), &[], "teacher.source `gpt5`".into()),
        ("unknown KD method", Box::new(|t| t.replace("\"kd\", \"seqkd\"", "\"kd\", \"seqdk\"")), &[], "distill.methods: no KD method `seqdk` is loaded (did you mean `seqkd`?)".into()),
        ("unknown attack", Box::new(|t| t.replace("names = [\"loss\",", "names = [\"los\",")), &[], "attacks.names: no attack `los` is loaded (did you mean `loss`?)".into()),
        ("nokd among methods", Box::new(|t| t.replace("\"kd\", \"seqkd\"", "\"nokd\", \"seqkd\"")), &[], "nokd = true".into()),
        ("warm start of an unlisted method", Box::new(|t| t.replace("nokd = true", "nokd = true\nwarm_start = [\"gdk\"]")), &[], "distill.warm_start lists `gdk`".into()),
        ("negative lr scale", Box::new(|t| t.replace("nokd = true", "nokd = true\nlr_scale = { kd = -1.0 }")), &[], "distill.lr_scale.kd must be a positive number".into()),
        ("zero plugin timeout", Box::new(|t| t.replace("bootstrap = 50", "bootstrap = 50\nplugin_timeout_s = 0")), &[], "attacks.plugin_timeout_s = 0 must be a positive number".into()),
        ("unknown KD parameter", Box::new(|t| t.replace("nokd = true", "nokd = true\nparams = { kd = { tempp = \"2\" } }")), &[], "distill.params.kd: KD method `kd` has no parameter `tempp`".into()),
        ("unknown attack parameter", Box::new(|t| t.replace("\"mope.n\" = \"2\"", "\"mope.n\" = \"2\"\n\"mink.kk\" = \"0.1\"")), &[], "attacks.params: attack `mink` has no parameter `kk` (did you mean `k`?)".into()),
        ("prompt beyond the positions", Box::new(|t| t.replace("max_prompt_tokens = 64", "max_prompt_tokens = 600")), &[], "data.max_prompt_tokens + data.max_response_tokens + 1 = 625 tokens exceeds teacher.shape.max_positions = 512".into()),
        ("pretrained teacher, trained tokenizer", Box::new(move |t| t.replace("source = \"scratch\"", &format!("source = \"hf:{teacher}\"")).replace(shape_line, "")), &[], "data.tokenizer = \"train\" with the pretrained teacher".into()),
        ("tokenizer wider than the teacher", Box::new({
            let (narrow, tokenizer) = (narrow.display().to_string(), run.join("data/tokenizer.json").display().to_string());
            move |t| t.replace("source = \"scratch\"", &format!("source = \"hf:{narrow}\"")).replace(shape_line, "").replace("tokenizer = \"train\"", &format!("tokenizer = \"{tokenizer}\""))
        }), &[], "has 400 tokens but the teacher".into()),
        ("missing data file", Box::new(|t| t.replace("source = \"synthetic\"", "source = \"/nonexistent/data.jsonl\"")), &[], "data.source /nonexistent/data.jsonl cannot be read".into()),
        ("malformed data file", Box::new(move |t| t.replace("source = \"synthetic\"", &format!("source = \"{}\"", fixture_path("bad/malformed.jsonl")))), &[], "malformed.jsonl:3: not valid JSON".into()),
        ("data without a response", Box::new(move |t| t.replace("source = \"synthetic\"", &format!("source = \"{}\"", fixture_path("bad/missing_field.jsonl")))), &[], "missing_field.jsonl:2: missing field `response`".into()),
        ("missing tokenizer file", Box::new(|t| t.replace("tokenizer = \"train\"", "tokenizer = \"/nonexistent/tokenizer.json\"")), &[], "data.tokenizer: cannot read /nonexistent/tokenizer.json".into()),
        ("a tokenizer that is not one", Box::new(move |t| t.replace("tokenizer = \"train\"", &format!("tokenizer = \"{}\"", fixture_path("members.jsonl")))), &[], "members.jsonl".into()),
        ("teacher blocks of a scratch teacher", Box::new(|t| t.replace("name = \"tiny\"\nshape = { arch = \"llama\", layers = 1, d_model = 32, heads = 2, kv_heads = 1, ffn = 64 }", "name = \"tiny\"\nteacher_blocks = [0]")), &[], "teacher_blocks needs a pretrained teacher".into()),
        ("heal without teacher blocks", Box::new(|t| t.replace("name = \"tiny\"\n", "name = \"tiny\"\nheal = { epochs = 1 }\n")), &[], "`heal` distils the pretrained teacher into a cut of its blocks".into()),
        ("unknown reference model", Box::new(|t| t.replace("reference = \"nokd-tiny\"", "reference = \"nobody\"")), &[], "attacks.reference `nobody`".into()),
        ("ref without a reference", Box::new(|t| t.replace("reference = \"nokd-tiny\"\n", "")), &[], "the `ref` attack needs attacks.reference".into()),
        ("unknown stage in --only", Box::new(|t| t.to_string()), &["--only", "reprot"], "unknown stage `reprot` (did you mean `report`?)".into()),
        ("CUDA without its provider", Box::new(|t| t.to_string()), &["--device", "cuda"], "the CUDA execution provider is not in this ONNX Runtime build".into()),
    ];
    assert!(edits.len() >= 25);
    for (what, edit, flags, want) in &edits {
        let bad = tmp.path().join("smoke.toml");
        let edited = edit(&text);
        assert!(edited != text || !flags.is_empty(), "{what}: the edit changed nothing");
        std::fs::write(&bad, edited).unwrap();
        let mut args = vec!["eval".to_string(), bad.display().to_string(), "--out".into(), run.display().to_string()];
        args.extend(flags.iter().map(|f| f.to_string()));
        eprintln!("bad input: {what}");
        let line = kdharness(&args).error_line();
        assert!(line.contains(want.as_str()), "{what}: `{want}` not in: {line}");
        assert!(snapshot(&run) == before, "{what}: a file of the finished run changed");
    }
}
