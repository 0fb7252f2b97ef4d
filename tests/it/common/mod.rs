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

/// The lines of a JSONL file.
pub fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Checks that the TensorBoard events in `events` hold exactly the numbers of `lines` (as
/// scripts/tensorboard_check.py does with TensorBoard's reader): one event per line at its `step_key`, with every
/// number of the line (but `skip`) as `prefix/<key>`, nested objects flattened. Returns the number of events.
pub fn assert_events_match(lines: &[serde_json::Value], events: &Path, step_key: &str, prefix: &str, skip: &[&str]) -> usize {
    let got: Vec<autodidact::tfevents::Event> = autodidact::tfevents::read_dir(events).unwrap().into_iter().filter(|e| e.file_version.is_none()).collect();
    assert_eq!(got.len(), lines.len(), "{}: one event per line", events.display());
    for (e, line) in got.iter().zip(lines) {
        assert_eq!(e.step, line[step_key].as_i64().unwrap(), "{}", events.display());
        assert_eq!(e.scalars, flatten(line, prefix, skip), "{}: step {}", events.display(), e.step);
    }
    got.len()
}

fn flatten(v: &serde_json::Value, prefix: &str, skip: &[&str]) -> Vec<(String, f32)> {
    let mut out = Vec::new();
    for (k, x) in v.as_object().unwrap().iter().filter(|(k, _)| !skip.contains(&k.as_str())) {
        let tag = format!("{prefix}/{k}");
        match x {
            serde_json::Value::Number(n) => out.push((tag, n.as_f64().unwrap() as f32)),
            serde_json::Value::Bool(b) => out.push((tag, if *b { 1.0 } else { 0.0 })),
            serde_json::Value::Object(_) => out.extend(flatten(x, &tag, &[])),
            _ => {}
        }
    }
    out
}

/// The bin folder of a Python with TensorBoard (scripts/tensorboard-venv.sh, pinned), installed once per test run.
pub fn tensorboard_python() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = std::process::Command::new("bash").arg(root.join("scripts/tensorboard-venv.sh")).output().expect("run scripts/tensorboard-venv.sh");
        assert!(
            out.status.success(),
            "TensorBoard, the reader these tests check event files with, could not be installed from PyPI (scripts/tensorboard-venv.sh): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("python")
    })
    .clone()
}

/// Runs scripts/tensorboard_check.py on run folders; panics with its output when it finds a difference.
pub fn tensorboard_check(dirs: &[&Path]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = std::process::Command::new(tensorboard_python()).arg(root.join("scripts/tensorboard_check.py")).args(dirs).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "TensorBoard's reader disagrees with the JSONL: {text}");
    text
}
