//! Export round trips: base + adapter in the runtime == the merged folder loaded back, a fresh adapter changes
//! nothing, and adapters for another base or other shapes are refused.
use super::common;

use std::path::Path;
use std::process::Command;

use autodidact::model::lora::{LoraAdapter, LoraConfig, Proj};
use autodidact::model::{LoadedModel, Logits, SeqInput};
use autodidact::sample::{generate, GenRequest, SamplingParams};
use common::{max_abs_diff, random_adapter, tiny};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_autodidact"))
}

fn logits(m: &LoadedModel, toks: &[u32]) -> Vec<f32> {
    let mut c = m.transformer.new_cache();
    m.transformer.forward(&mut [SeqInput { cache: &mut c, tokens: toks, logits: Logits::All }]).unwrap().remove(0)
}

fn export(model: &str, adapter: &Path, extra: &[&str]) -> std::process::Output {
    let mut c = bin();
    c.args(["export", "--model", model, "--adapter", adapter.to_str().unwrap()]).args(extra);
    c.output().unwrap()
}

/// Runs the round trip; returns (max |runtime - merged|, max |runtime - base|).
fn round_trip(model_spec: &str, work: &Path, toks: &[u32], b_scale: f32, dtype: &str) -> (f32, f32) {
    let base = LoadedModel::load(model_spec).unwrap();
    let ad = random_adapter(base.config(), &base.base_name, b_scale);
    let ad_dir = work.join("adapter");
    ad.save(&ad_dir).unwrap();
    let (peft, merged) = (work.join("peft"), work.join("merged"));
    let o = export(model_spec, &ad_dir, &["--peft", peft.to_str().unwrap(), "--merged", merged.to_str().unwrap(), "--dtype", dtype]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(peft.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(cfg["base_model_name_or_path"], base.base_name.as_str());
    assert_eq!(LoraAdapter::load(&peft, base.config(), Some(&base.base_name)).unwrap(), ad, "the PEFT folder holds the same adapter");

    let base_logits = logits(&base, toks);
    let mut with = base;
    with.attach_adapter(&peft).unwrap();
    let runtime = logits(&with, toks);
    let back = LoadedModel::load(merged.to_str().unwrap()).unwrap();
    assert_eq!(back.base_name, with.base_name, "the merged folder records its base");
    (max_abs_diff(&runtime, &logits(&back, toks)), max_abs_diff(&runtime, &base_logits))
}

#[test]
fn tiny_merged_export_equals_base_plus_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny-base");
    tiny::write_hf(&model, "llama", 3);
    let toks = [257, 72, 101, 108, 108, 111, 258, 10, 257, 97, 115, 115];
    let (merged, effect) = round_trip(model.to_str().unwrap(), dir.path(), &toks, 0.3, "f32");
    eprintln!("tiny: |runtime - merged| = {merged:e}, |adapter effect| = {effect:e}");
    assert!(effect > 0.1, "the adapter must change the logits for the test to mean anything ({effect})");
    assert!(merged < 1e-4, "merged f32 export differs from base + adapter by {merged}");
}

#[test]
fn fresh_adapter_generates_like_the_base_and_mismatches_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny-base");
    tiny::write_hf(&model, "llama", 3);
    let spec = model.to_str().unwrap();
    let base = LoadedModel::load(spec).unwrap();
    let fresh =
        LoraAdapter::new(LoraConfig { r: 8, alpha: 16.0, dropout: 0.05, targets: Proj::ALL.to_vec(), base_model: base.base_name.clone() }, base.config(), 1)
            .unwrap();
    let fresh_dir = dir.path().join("fresh");
    fresh.save(&fresh_dir).unwrap();
    let params = SamplingParams { max_new_tokens: 24, ..SamplingParams::default() };
    let prompt = base.encode_chat(&[serde_json::json!({"role": "user", "content": "hello"})], None, true).unwrap();
    let gen = |m: &LoadedModel| {
        generate(&m.transformer, &m.tokenizer, &[GenRequest { prompt: prompt.clone(), stream: 0 }], &params, &mut |_| {}).unwrap().remove(0).tokens
    };
    let base_tokens = gen(&base);
    let mut with = LoadedModel::load(spec).unwrap();
    with.attach_adapter(&fresh_dir).unwrap();
    assert_eq!(gen(&with), base_tokens);
    assert_eq!(base_tokens.len(), 24, "a long enough generation to compare");
    // ...while a trained adapter does change generation (so the comparison above can fail).
    let trained_dir = dir.path().join("trained");
    random_adapter(base.config(), &base.base_name, 0.5).save(&trained_dir).unwrap();
    let mut changed = LoadedModel::load(spec).unwrap();
    changed.attach_adapter(&trained_dir).unwrap();
    assert_ne!(gen(&changed), base_tokens);

    // Another base model: refused, naming both.
    let other_dir = dir.path().join("other");
    random_adapter(base.config(), "someone/else-1B", 0.1).save(&other_dir).unwrap();
    let o = export(spec, &other_dir, &["--peft", dir.path().join("x").to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("someone/else-1B") && err.contains("tiny-base"), "{err}");
    assert!(!dir.path().join("x").exists());

    // Same name, wrong shapes (an adapter for a model with another MLP width).
    let mut cfg = base.config().clone();
    cfg.intermediate_size = 96;
    let wrong_dir = dir.path().join("wrong");
    random_adapter(&cfg, &base.base_name, 0.1).save(&wrong_dir).unwrap();
    let o = export(spec, &wrong_dir, &["--merged", dir.path().join("y").to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("has shape") && err.contains("the model needs"), "{err}");
}

/// The real default model (Q4_1 GGUF): the merged f32 folder is dequantized, the runtime keeps Q4_1 blocks, so
/// equality holds up to the kernels' summation order: measured under 1e-4 max |diff| over 37 positions x 49152 logits.
#[test]
fn default_model_merged_export_equals_base_plus_adapter() {
    let model = common::default_model();
    let dir = tempfile::tempdir().unwrap();
    let base = LoadedModel::load(model.to_str().unwrap()).unwrap();
    let toks = base.encode_chat(&[serde_json::json!({"role": "user", "content": "What is the capital of France?"})], None, true).unwrap();
    drop(base);
    let (merged, effect) = round_trip(model.to_str().unwrap(), dir.path(), &toks, 0.05, "f32");
    eprintln!("default model: |runtime - merged| = {merged:e}, |adapter effect| = {effect:e} over {} positions", toks.len());
    assert!(effect > 1.0, "the adapter must move the logits ({effect})");
    assert!(merged < 1e-3, "merged export differs from base + adapter by {merged} (adapter effect {effect})");
}
