//! Resolves the one `--model` argument (a GGUF file, a Hugging Face folder or a hub id) to local files.
use std::path::{Path, PathBuf};

use super::error::{ModelError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    Gguf(PathBuf),
    /// A folder with config.json, *.safetensors, tokenizer.json and tokenizer_config.json.
    HfDir(PathBuf),
}

impl ModelSource {
    pub fn path(&self) -> &Path {
        match self {
            ModelSource::Gguf(p) | ModelSource::HfDir(p) => p,
        }
    }
}

const HUB_FILES: [&str; 3] = ["config.json", "tokenizer.json", "tokenizer_config.json"];

pub fn resolve(spec: &str) -> Result<ModelSource> {
    let path = Path::new(spec);
    if path.is_file() {
        return Ok(ModelSource::Gguf(path.into()));
    }
    if path.is_dir() {
        if !path.join("config.json").is_file() {
            return Err(ModelError::invalid(path, "model folder has no config.json (expected a Hugging Face model folder)"));
        }
        return Ok(ModelSource::HfDir(path.into()));
    }
    let looks_like_hub_id = spec.split('/').count() == 2 && !spec.starts_with('.') && !spec.ends_with(".gguf");
    if !looks_like_hub_id {
        return Err(ModelError::invalid(path, "no such file or folder (and not a hub id like `HuggingFaceTB/SmolLM2-135M-Instruct`)"));
    }
    from_hub(spec)
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0" && v.to_lowercase() != "false")
}

fn from_hub(id: &str) -> Result<ModelSource> {
    let how = format!(
        "get the files on a machine with internet (`huggingface-cli download {id}`) and copy the cache \
         (HF_HOME, default ~/.cache/huggingface) here, or pass a local folder or GGUF file to --model"
    );
    if offline() {
        let cache = hf_hub::Cache::from_env().model(id.to_string());
        let mut dir = None;
        for f in HUB_FILES {
            let p =
                cache.get(f).ok_or_else(|| ModelError::Other(format!("hub model `{id}`: `{f}` is not in the local cache and HF_HUB_OFFLINE is set; {how}")))?;
            dir = p.parent().map(Path::to_path_buf);
        }
        let dir = dir.ok_or_else(|| ModelError::Other(format!("hub model `{id}`: empty cache entry")))?;
        let has_weights = cache.get("model.safetensors").is_some() || cache.get("model.safetensors.index.json").is_some();
        if !has_weights {
            return Err(ModelError::Other(format!("hub model `{id}`: weights are not in the local cache and HF_HUB_OFFLINE is set; {how}")));
        }
        return Ok(ModelSource::HfDir(dir));
    }
    let api = hf_hub::api::sync::ApiBuilder::from_env().with_progress(true).build().map_err(|e| ModelError::Other(format!("hub model `{id}`: {e}")))?;
    let repo = api.model(id.to_string());
    let fetch = |f: &str| repo.get(f).map_err(|e| ModelError::Other(format!("hub model `{id}`: cannot fetch `{f}`: {e}; {how}")));
    let mut dir = PathBuf::new();
    for f in HUB_FILES {
        dir = fetch(f)?.parent().map(Path::to_path_buf).unwrap_or_default();
    }
    match fetch("model.safetensors.index.json") {
        Ok(index) => {
            let text = std::fs::read_to_string(&index).map_err(|e| ModelError::io(&index, e))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::invalid(&index, e.to_string()))?;
            let mut shards: Vec<String> =
                v["weight_map"].as_object().map(|m| m.values().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default();
            shards.sort();
            shards.dedup();
            for s in shards {
                fetch(&s)?;
            }
        }
        Err(_) => {
            fetch("model.safetensors")?;
        }
    }
    Ok(ModelSource::HfDir(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_hub_id_not_cached_says_how_to_get_it() {
        let home = tempfile::tempdir().unwrap();
        std::env::set_var("HF_HOME", home.path());
        std::env::set_var("HF_HUB_OFFLINE", "1");
        let err = resolve("HuggingFaceTB/SmolLM2-135M-Instruct").unwrap_err().to_string();
        assert!(err.contains("not in the local cache"), "{err}");
        assert!(err.contains("huggingface-cli download HuggingFaceTB/SmolLM2-135M-Instruct"), "{err}");
    }

    #[test]
    fn missing_path_is_a_clear_error() {
        let err = resolve("models/nope.gguf").unwrap_err().to_string();
        assert!(err.contains("models/nope.gguf") && err.contains("no such file"), "{err}");
    }
}
