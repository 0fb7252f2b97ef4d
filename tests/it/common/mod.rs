//! Helpers shared by the integration tests.
#![allow(dead_code)]
use std::path::{Path, PathBuf};

use autodidact::model::lora::{LoraAdapter, LoraConfig, Proj};
use autodidact::model::weights::{SafetensorsDir, Weights};
use autodidact::model::{Logits, ModelConfig, SeqInput, Transformer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::OnceLock;

pub mod template_policy;
pub mod tiny;

/// The real default model, fetched by the project's own script when missing (CI has no other copy).
pub fn default_model() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let path = root.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
        if !path.exists() {
            let status = std::process::Command::new("bash").arg(root.join("scripts/fetch-model.sh")).status().expect("run scripts/fetch-model.sh");
            assert!(status.success(), "scripts/fetch-model.sh failed");
        }
        path
    })
    .clone()
}

/// Gemma 3 270M (Q4_K_M GGUF), fetched by the project's own script when missing.
pub fn gemma3_model() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let path = root.join("models/gemma-3-270m-q4_k_m.gguf");
        if !path.exists() {
            let status = std::process::Command::new("bash").arg(root.join("scripts/fetch-gemma3.sh")).status().expect("run scripts/fetch-gemma3.sh");
            assert!(status.success(), "scripts/fetch-gemma3.sh failed");
        }
        path
    })
    .clone()
}

/// Logits of every position of `toks` as one sequence.
pub fn all_logits(m: &Transformer, toks: &[u32]) -> Vec<f32> {
    let mut c = m.new_cache();
    m.forward(&mut [SeqInput { cache: &mut c, tokens: toks, logits: Logits::All }]).unwrap().remove(0)
}

/// Largest element-wise difference of two equally long vectors.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// A Hugging Face model folder loaded into the inference transformer.
pub fn load_dir(dir: &Path) -> Transformer {
    let cfg = ModelConfig::from_hf_json(&dir.join("config.json")).unwrap();
    let st = SafetensorsDir::open(dir).unwrap();
    Transformer::new(cfg.clone(), Weights::load(&st, &cfg).unwrap())
}

/// A trained-looking adapter on every projection: seeded A, random non-zero B of the given scale.
pub fn random_adapter(cfg: &ModelConfig, base: &str, b_scale: f32) -> LoraAdapter {
    let mut a = LoraAdapter::new(LoraConfig { r: 4, alpha: 8.0, dropout: 0.0, targets: Proj::ALL.to_vec(), base_model: base.into() }, cfg, 2).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for l in a.layers.iter_mut() {
        for p in l.values_mut() {
            p.b.iter_mut().for_each(|v| *v = rng.random_range(-b_scale..b_scale));
        }
    }
    a
}
