//! Helpers shared by the integration tests.
#![allow(dead_code)]
use std::path::PathBuf;
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
