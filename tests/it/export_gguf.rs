//! GGUF exports read back: a merged model written as F16, Q8_0 and Q4_K_M loads through our own GGUF loader and
//! gives the logits of base + adapter in the runtime (within each type's rounding), with the same tokenizer; the
//! llama.cpp LoRA GGUF holds the adapter's tensors in llama.cpp's orientation; a model GGUF cannot express is
//! refused before anything is written. llama.cpp itself runs these files in scripts/dev/gguf-llamacpp.sh and, on
//! the default model, in `merged_and_lora_gguf_agree_with_llama_cpp_fixture`.
use super::common;

use std::path::Path;
use std::process::Command;

use autodidact::export::gguf::NamedTensor;
use autodidact::model::lora::{LoraAdapter, Proj};
use autodidact::model::weights::unpermute_qk;
use autodidact::model::LoadedModel;
use candle_core::quantized::gguf_file::Value;
use common::{all_logits, max_abs_diff, random_adapter, tiny};

fn export(model: &str, adapter: Option<&Path>, extra: &[&str]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_autodidact"));
    c.args(["export", "--model", model]).args(extra);
    if let Some(a) = adapter {
        c.args(["--adapter", a.to_str().unwrap()]);
    }
    c.output().unwrap()
}

/// Every tensor of a GGUF file, read by candle's reader (not ours): name -> (candle dims, i.e. ggml `ne` reversed;
/// f32 values).
fn gguf_tensors(path: &Path) -> (std::collections::HashMap<String, Value>, Vec<NamedTensor>) {
    let mut f = std::fs::File::open(path).unwrap();
    let g = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    let mut out = Vec::new();
    for name in g.tensor_infos.keys() {
        let t = g.tensor(&mut f, name, &candle_core::Device::Cpu).unwrap().dequantize(&candle_core::Device::Cpu).unwrap();
        out.push((name.clone(), t.dims().to_vec(), t.flatten_all().unwrap().to_vec1::<f32>().unwrap()));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    (g.metadata.clone(), out)
}

/// The LoRA GGUF holds every pair of the adapter: A as `r x in`, B as `out x r` with llama's Q/K rows interleaved
/// as llama.cpp's converter interleaves the base's, and llama.cpp's adapter metadata.
fn check_lora_gguf(path: &Path, ad: &LoraAdapter, base: &LoadedModel) {
    let cfg = base.config();
    let (md, tensors) = gguf_tensors(path);
    let s = |k: &str| md[k].to_string().unwrap().clone();
    assert_eq!((s("general.type"), s("adapter.type"), s("general.architecture")), ("adapter".into(), "lora".into(), cfg.arch.name().to_string()));
    assert_eq!(md["adapter.lora.alpha"].to_f32().unwrap(), ad.config.alpha);
    let get = |n: &str| tensors.iter().find(|t| t.0 == n).unwrap_or_else(|| panic!("no tensor {n}"));
    let short = |p: Proj| match p {
        Proj::Q => "attn_q",
        Proj::K => "attn_k",
        Proj::V => "attn_v",
        Proj::O => "attn_output",
        Proj::Gate => "ffn_gate",
        Proj::Up => "ffn_up",
        Proj::Down => "ffn_down",
    };
    for (l, layer) in ad.layers.iter().enumerate() {
        for (&p, pair) in layer {
            let (_, a_dims, a) = get(&format!("blk.{l}.{}.weight.lora_a", short(p)));
            let (_, b_dims, b) = get(&format!("blk.{l}.{}.weight.lora_b", short(p)));
            assert_eq!((a_dims.as_slice(), b_dims.as_slice()), ([pair.r, pair.d_in].as_slice(), [pair.d_out, pair.r].as_slice()));
            assert_eq!(a, &pair.a);
            let heads = match p {
                Proj::Q => cfg.num_heads,
                Proj::K => cfg.num_kv_heads,
                _ => 0,
            };
            let b_hf: Vec<f32> = if heads > 0 && cfg.arch.name() == "llama" {
                unpermute_qk(heads, cfg.head_dim).iter().flat_map(|&r| b[r * pair.r..(r + 1) * pair.r].to_vec()).collect()
            } else {
                b.clone()
            };
            assert_eq!(b_hf, pair.b, "layer {l} {p:?}: B");
        }
    }
    assert_eq!(tensors.len(), ad.layers.iter().map(|l| 2 * l.len()).sum::<usize>());
}

/// Exports `spec` + a seeded adapter as every GGUF type; returns per type max |runtime(base + adapter) - GGUF|,
/// and the adapter's own effect on the logits.
fn round_trip(spec: &str, work: &Path, toks: &[u32], b_scale: f32, types: &[&str]) -> (Vec<f32>, f32) {
    let base = LoadedModel::load(spec).unwrap();
    let ad = random_adapter(base.config(), &base.base_name, b_scale);
    let ad_dir = work.join("adapter");
    ad.save(&ad_dir).unwrap();
    let base_logits = all_logits(&base.transformer, toks);
    let mut with = LoadedModel::load(spec).unwrap();
    with.attach_adapter(&ad_dir).unwrap();
    let runtime = all_logits(&with.transformer, toks);
    let mut diffs = Vec::new();
    for ty in types {
        let (out, lora) = (work.join(format!("merged-{ty}.gguf")), work.join("lora.gguf"));
        let o = export(spec, Some(&ad_dir), &["--gguf", out.to_str().unwrap(), "--gguf-type", ty, "--lora-gguf", lora.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let back = LoadedModel::load(out.to_str().unwrap()).unwrap();
        assert_eq!(back.config(), base.config(), "{ty}: the GGUF reads back as the same architecture");
        let text = "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n";
        assert_eq!(back.tokenizer.encode(text).unwrap(), base.tokenizer.encode(text).unwrap(), "{ty}: same tokens");
        assert_eq!((back.tokenizer.bos_id(), back.tokenizer.eos_id()), (base.tokenizer.bos_id(), base.tokenizer.eos_id()));
        assert_eq!(back.template.source(), base.template.source(), "{ty}: same chat template");
        diffs.push(max_abs_diff(&runtime, &all_logits(&back.transformer, toks)));
        check_lora_gguf(&lora, &ad, &base);
    }
    (diffs, max_abs_diff(&runtime, &base_logits))
}

#[test]
fn tiny_merged_gguf_reads_back_as_base_plus_adapter_for_every_architecture() {
    let toks = [257, 72, 101, 108, 108, 111, 258, 10, 257, 97, 115, 115, 105, 115, 116];
    let mut all = Vec::new();
    for arch in ["llama", "qwen2", "qwen3", "gemma3_text"] {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("tiny");
        tiny::write_hf(&model, arch, 5);
        if arch == "gemma3_text" {
            // llama.cpp fixes Gemma 3's layer pattern in code (every 6th layer global): a model that follows it.
            let mut cfg = tiny::config_json(arch);
            cfg["sliding_window_pattern"] = 6.into();
            std::fs::write(model.join("config.json"), cfg.to_string()).unwrap();
        }
        let (diffs, effect) = round_trip(model.to_str().unwrap(), dir.path(), &toks, 0.3, &["f32", "f16", "q8_0", "q4_k_m"]);
        eprintln!(
            "tiny {arch}: max |runtime - GGUF| f32 {:.1e}, f16 {:.1e}, q8_0 {:.1e}, q4_k_m {:.1e}; adapter effect {effect:.2}",
            diffs[0], diffs[1], diffs[2], diffs[3]
        );
        assert!(effect > 1.0, "{arch}: the adapter must change the logits ({effect})");
        all.push((arch, diffs));
    }
    for (arch, d) in all {
        assert!(d[0] < 1e-4 && d[1] < 0.05 && d[2] < 1.0 && d[3] < 5.0, "{arch}: {d:?}");
    }
}

/// The default model (a GGUF source: its tokenizer metadata and chat template are carried over as they are).
#[test]
fn default_model_merged_gguf_reads_back_as_base_plus_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::default_model();
    let base = LoadedModel::load(spec.to_str().unwrap()).unwrap();
    let toks = base.tokenizer.encode("<|im_start|>user\nName three prime numbers below twenty.<|im_end|>\n<|im_start|>assistant\n").unwrap();
    let (diffs, effect) = round_trip(spec.to_str().unwrap(), dir.path(), &toks, 0.05, &["f16", "q8_0"]);
    eprintln!("default model: max |runtime - GGUF| f16 {:.3}, q8_0 {:.3}; adapter effect {effect:.2}", diffs[0], diffs[1]);
    assert!(effect > 1.0, "the adapter must change the logits ({effect})");
    assert!(diffs[0] < 0.1 && diffs[1] < 1.5, "{diffs:?}");
}

/// Gemma 3 with another layer pattern than llama.cpp's, or a tokenizer GGUF has no form for: refused, no file.
#[test]
fn inexpressible_models_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny-gemma");
    tiny::write_hf(&model, "gemma3_text", 5);
    let out = dir.path().join("out.gguf");
    let o = export(model.to_str().unwrap(), None, &["--gguf", out.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("sliding_layers") && err.contains("nothing was written"), "{err}");
    assert!(!out.exists());

    let model = dir.path().join("tiny-llama");
    tiny::write_hf(&model, "llama", 5);
    let mut tok: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(model.join("tokenizer.json")).unwrap()).unwrap();
    tok["pre_tokenizer"] =
        serde_json::json!({"type": "Sequence", "pretokenizers": [{"type": "Punctuation", "behavior": "Isolated"}, tok["pre_tokenizer"].clone()]});
    std::fs::write(model.join("tokenizer.json"), tok.to_string()).unwrap();
    let (peft_out, lora_out) = (dir.path().join("peft"), dir.path().join("lora.gguf"));
    let ad = dir.path().join("adapter");
    let m = LoadedModel::load(model.to_str().unwrap()).unwrap();
    random_adapter(m.config(), &m.base_name, 0.1).save(&ad).unwrap();
    let o = export(
        model.to_str().unwrap(),
        Some(&ad),
        &["--gguf", out.to_str().unwrap(), "--lora-gguf", lora_out.to_str().unwrap(), "--peft", peft_out.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("pre_tokenizer") && err.contains("Punctuation"), "{err}");
    assert!(!out.exists() && !lora_out.exists() && !peft_out.exists(), "nothing is written when one output is refused");
}

/// The adapter of the llama.cpp fixture: seeded, so the suite rebuilds it instead of storing it.
fn fixture_adapter(m: &LoadedModel) -> LoraAdapter {
    random_adapter(m.config(), &m.base_name, 0.15)
}

/// llama.cpp (scripts/dev/gguf-llamacpp.sh) on the merged Q8_0 GGUF and on the base model with the LoRA GGUF of
/// `fixture_adapter`: our base + adapter must give its top-1 tokens on 200 tokens of real text (where its top two
/// are not within 8-bit rounding of each other) and logits close to its five largest.
#[test]
fn merged_and_lora_gguf_agree_with_llama_cpp_fixture() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf_llamacpp_logits.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let ids: Vec<u32> = v["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    let mut m = LoadedModel::load(common::default_model().to_str().unwrap()).unwrap();
    let base = all_logits(&m.transformer, &ids);
    m.transformer.adapter = Some(fixture_adapter(&m));
    let ours = all_logits(&m.transformer, &ids);
    let vocab = m.config().vocab_size;
    let top1 = |l: &[f32], p: usize| (0..vocab).max_by(|&a, &b| l[p * vocab + a].total_cmp(&l[p * vocab + b])).unwrap();
    let changed = (0..ids.len()).filter(|&p| top1(&base, p) != top1(&ours, p)).count();
    assert!(changed >= 10, "the adapter changes our top-1 token at only {changed} positions");
    for key in ["merged_q8_0_top5", "lora_top5"] {
        let (mut same, mut near, mut diff) = (0, 0, 0f32);
        for (p, top) in v[key].as_array().unwrap().iter().enumerate() {
            let top: Vec<(usize, f32)> = top.as_array().unwrap().iter().map(|e| (e[0].as_u64().unwrap() as usize, e[1].as_f64().unwrap() as f32)).collect();
            for &(id, logit) in &top {
                diff = diff.max((ours[p * vocab + id] - logit).abs());
            }
            if top1(&ours, p) == top[0].0 {
                same += 1;
            } else if top[0].1 - top[1].1 < 0.5 {
                near += 1;
            }
        }
        eprintln!(
            "{key}: top-1 equal at {same}/{} positions ({near} near-ties), max |diff| over llama.cpp's top-5 {diff:.3}; adapter changes top-1 at {changed}",
            ids.len()
        );
        assert!(same + near == ids.len() && same >= ids.len() * 95 / 100 && diff < 3.0, "{key}: {same} equal, {near} near-ties, max |diff| {diff}");
    }
}

/// For scripts/dev/gguf-llamacpp.sh (not part of the suite): our logits, base and base + adapter, on llama.cpp's
/// token ids, as little-endian f32 (positions x vocab) beside the files the script wrote in
/// `AUTODIDACT_GGUF_CHECK` (`ids.json`: the ids; `adapter/`: the adapter), and the fixture's seeded adapter in
/// `adapter-seeded/`.
#[test]
#[ignore]
fn our_logits_for_the_llama_cpp_check() {
    let Ok(dir) = std::env::var("AUTODIDACT_GGUF_CHECK") else { return };
    let dir = Path::new(&dir);
    let ids: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("ids.json")).unwrap()).unwrap();
    let ids: Vec<u32> = ids["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    let mut m = LoadedModel::load(common::default_model().to_str().unwrap()).unwrap();
    fixture_adapter(&m).save(&dir.join("adapter-seeded")).unwrap();
    let f32s = |v: Vec<f32>| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    std::fs::write(dir.join("ours-base.f32"), f32s(all_logits(&m.transformer, &ids))).unwrap();
    m.attach_adapter(&dir.join("adapter")).unwrap();
    std::fs::write(dir.join("ours-adapter.f32"), f32s(all_logits(&m.transformer, &ids))).unwrap();
}
