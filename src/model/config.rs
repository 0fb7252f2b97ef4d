//! One runtime config for every supported checkpoint, from HF `config.json` or GGUF metadata.
use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use serde::{Deserialize, Serialize};

use super::error::{ModelError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Llama,
    Qwen2,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }
}

/// Llama 3.x frequency-dependent rope scaling (`rope_scaling.rope_type == "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Llama3RopeScaling {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_max_position_embeddings: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f32,
    pub rope_scaling: Option<Llama3RopeScaling>,
    pub rms_norm_eps: f32,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Qwen2 has biases on q/k/v projections.
    pub attention_bias: bool,
}

impl ModelConfig {
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Checks the invariants the forward pass relies on, so a bad config fails at load, not mid-generation.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |msg: String| Err(ModelError::invalid(path, msg));
        if self.num_heads == 0 || self.num_kv_heads == 0 || !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!("num_attention_heads ({}) must be a positive multiple of num_key_value_heads ({})", self.num_heads, self.num_kv_heads));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return bad(format!("head_dim ({}) must be even and positive", self.head_dim));
        }
        if self.hidden_size == 0 || self.intermediate_size == 0 || self.num_layers == 0 || self.vocab_size == 0 {
            return bad("hidden_size, intermediate_size, num_hidden_layers and vocab_size must be positive".into());
        }
        Ok(())
    }

    pub fn from_hf_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let raw: HfConfig = serde_json::from_str(&text).map_err(|e| ModelError::invalid(path, format!("line {}: {}", e.line(), e)))?;
        let arch = match raw.model_type.as_deref() {
            Some("llama") => Arch::Llama,
            Some("qwen2") => Arch::Qwen2,
            Some(other) => return Err(ModelError::UnknownArch { path: path.into(), arch: other.into() }),
            None => return Err(ModelError::MissingField { path: path.into(), field: "model_type".into() }),
        };
        let num_heads = raw.num_attention_heads;
        let head_dim = raw.head_dim.unwrap_or(raw.hidden_size / num_heads.max(1));
        let rope_scaling = match raw.rope_scaling {
            Some(s) if s.rope_type.as_deref().or(s.r#type.as_deref()) == Some("llama3") => Some(Llama3RopeScaling {
                factor: s.factor.unwrap_or(8.0),
                low_freq_factor: s.low_freq_factor.unwrap_or(1.0),
                high_freq_factor: s.high_freq_factor.unwrap_or(4.0),
                original_max_position_embeddings: s.original_max_position_embeddings.unwrap_or(8192),
            }),
            Some(s) => {
                let kind = s.rope_type.or(s.r#type).unwrap_or_default();
                if kind.is_empty() || kind == "default" {
                    None
                } else {
                    return Err(ModelError::invalid(path, format!("unsupported rope_scaling type `{kind}`")));
                }
            }
            None => None,
        };
        let cfg = ModelConfig {
            arch,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_layers: raw.num_hidden_layers,
            num_heads,
            num_kv_heads: raw.num_key_value_heads.unwrap_or(num_heads),
            head_dim,
            rope_theta: raw.rope_theta.unwrap_or(10000.0),
            rope_scaling,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(4096),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            attention_bias: arch == Arch::Qwen2 || raw.attention_bias.unwrap_or(false),
        };
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// `has_output` tells whether the file carries its own `output.weight` (otherwise embeddings are tied).
    pub fn from_gguf(md: &HashMap<String, Value>, has_output: bool, vocab_from_tokens: usize, path: &Path) -> Result<Self> {
        let arch_name = gguf_str(md, "general.architecture", path)?;
        let arch = match arch_name.as_str() {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            other => return Err(ModelError::UnknownArch { path: path.into(), arch: other.into() }),
        };
        let p = |k: &str| format!("{arch_name}.{k}");
        let num_heads = gguf_usize(md, &p("attention.head_count"), path)?;
        let hidden = gguf_usize(md, &p("embedding_length"), path)?;
        let rope_scaling = match md.get(&p("rope.scaling.type")).and_then(|v| v.to_string().ok()) {
            Some(t) if t == "llama3" => Some(Llama3RopeScaling {
                factor: gguf_f32_or(md, &p("rope.scaling.factor"), 8.0),
                low_freq_factor: gguf_f32_or(md, &p("rope.scaling.low_freq_factor"), 1.0),
                high_freq_factor: gguf_f32_or(md, &p("rope.scaling.high_freq_factor"), 4.0),
                original_max_position_embeddings: gguf_usize(md, &p("rope.scaling.original_context_length"), path).unwrap_or(8192),
            }),
            _ => None,
        };
        let vocab_size = gguf_usize(md, &p("vocab_size"), path).unwrap_or(vocab_from_tokens);
        let cfg = ModelConfig {
            arch,
            vocab_size,
            hidden_size: hidden,
            intermediate_size: gguf_usize(md, &p("feed_forward_length"), path)?,
            num_layers: gguf_usize(md, &p("block_count"), path)?,
            num_heads,
            num_kv_heads: gguf_usize(md, &p("attention.head_count_kv"), path).unwrap_or(num_heads),
            head_dim: gguf_usize(md, &p("attention.key_length"), path).unwrap_or(hidden / num_heads.max(1)),
            rope_theta: gguf_f32_or(md, &p("rope.freq_base"), 10000.0),
            rope_scaling,
            rms_norm_eps: gguf_f32_or(md, &p("attention.layer_norm_rms_epsilon"), 1e-5),
            max_position_embeddings: gguf_usize(md, &p("context_length"), path).unwrap_or(4096),
            tie_word_embeddings: !has_output,
            attention_bias: arch == Arch::Qwen2,
        };
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// The HF `config.json` this runtime config corresponds to (used by `convert` and merged exports).
    pub fn to_hf_json(&self, torch_dtype: &str) -> serde_json::Value {
        let mut v = serde_json::json!({
            "architectures": [match self.arch { Arch::Llama => "LlamaForCausalLM", Arch::Qwen2 => "Qwen2ForCausalLM" }],
            "model_type": self.arch.name(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "torch_dtype": torch_dtype,
        });
        if self.arch == Arch::Llama {
            v["attention_bias"] = serde_json::json!(self.attention_bias);
            v["mlp_bias"] = serde_json::json!(false);
        }
        if let Some(s) = self.rope_scaling {
            v["rope_scaling"] = serde_json::json!({
                "rope_type": "llama3", "factor": s.factor, "low_freq_factor": s.low_freq_factor,
                "high_freq_factor": s.high_freq_factor,
                "original_max_position_embeddings": s.original_max_position_embeddings,
            });
        }
        v
    }

    /// Parameter count of the dense model (embeddings counted once when tied).
    pub fn num_parameters(&self) -> usize {
        let (h, i, q, kv) = (self.hidden_size, self.intermediate_size, self.q_dim(), self.kv_dim());
        let attn = h * q * 2 + h * kv * 2 + if self.attention_bias { q + 2 * kv } else { 0 };
        let layer = attn + 3 * h * i + 2 * h;
        let emb = self.vocab_size * h;
        emb * if self.tie_word_embeddings { 1 } else { 2 } + self.num_layers * layer + h
    }

    /// Floating-point operations (2 per multiply-add) of one token's forward pass: every projection, attention
    /// over `ctx` cached positions (scores and weighted values), and the output layer when its logits are wanted.
    /// Element-wise work (norms, rope, activations, softmax) is left out: it is a small share and not multiply-adds.
    pub fn flops_per_token(&self, ctx: usize, logits: bool) -> f64 {
        let (h, i, q, kv) = (self.hidden_size, self.intermediate_size, self.q_dim(), self.kv_dim());
        let projections = h * (q + 2 * kv) + q * h + 3 * h * i;
        let attention = 2 * q * ctx;
        let head = if logits { self.vocab_size * h } else { 0 };
        2.0 * (self.num_layers * (projections + attention) + head) as f64
    }
}

#[derive(Deserialize)]
struct HfRopeScaling {
    rope_type: Option<String>,
    r#type: Option<String>,
    factor: Option<f32>,
    low_freq_factor: Option<f32>,
    high_freq_factor: Option<f32>,
    original_max_position_embeddings: Option<usize>,
}

#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rope_theta: Option<f32>,
    rope_scaling: Option<HfRopeScaling>,
    rms_norm_eps: Option<f32>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
}

pub(crate) fn gguf_str(md: &HashMap<String, Value>, key: &str, path: &Path) -> Result<String> {
    match md.get(key) {
        Some(v) => v.to_string().cloned().map_err(|e| ModelError::invalid(path, format!("metadata `{key}`: {e}"))),
        None => Err(ModelError::MissingField { path: path.into(), field: key.into() }),
    }
}

pub(crate) fn gguf_usize(md: &HashMap<String, Value>, key: &str, path: &Path) -> Result<usize> {
    let v = md.get(key).ok_or_else(|| ModelError::MissingField { path: path.into(), field: key.into() })?;
    let n = match v {
        Value::U8(x) => *x as u64,
        Value::U16(x) => *x as u64,
        Value::U32(x) => *x as u64,
        Value::U64(x) => *x,
        Value::I8(x) if *x >= 0 => *x as u64,
        Value::I16(x) if *x >= 0 => *x as u64,
        Value::I32(x) if *x >= 0 => *x as u64,
        Value::I64(x) if *x >= 0 => *x as u64,
        other => return Err(ModelError::invalid(path, format!("metadata `{key}`: expected a non-negative integer, got {other:?}"))),
    };
    Ok(n as usize)
}

fn gguf_f32_or(md: &HashMap<String, Value>, key: &str, default: f32) -> f32 {
    match md.get(key) {
        Some(Value::F32(x)) => *x,
        Some(Value::F64(x)) => *x as f32,
        _ => default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without attention or biases, a token multiplies with every matrix once: the weights that are not norms,
    /// the embedding standing in for the output layer when tied. Attention adds scores and weighted values.
    #[test]
    fn flops_per_token_counts_every_matrix_once_and_attention_per_position() {
        for tie in [true, false] {
            let c = ModelConfig {
                arch: Arch::Llama,
                vocab_size: 100,
                hidden_size: 24,
                intermediate_size: 40,
                num_layers: 3,
                num_heads: 4,
                num_kv_heads: 2,
                head_dim: 8,
                rope_theta: 1e4,
                rope_scaling: None,
                rms_norm_eps: 1e-5,
                max_position_embeddings: 64,
                tie_word_embeddings: tie,
                attention_bias: false,
            };
            let norms = c.num_layers * 2 * c.hidden_size + c.hidden_size;
            let input_embedding = if tie { 0 } else { c.vocab_size * c.hidden_size };
            let matrices = c.num_parameters() - norms - input_embedding;
            assert_eq!(c.flops_per_token(0, true), 2.0 * matrices as f64);
            let head = c.vocab_size * c.hidden_size;
            assert_eq!(c.flops_per_token(0, false), 2.0 * (matrices - head) as f64);
            assert_eq!(c.flops_per_token(10, false) - c.flops_per_token(0, false), (2 * 3 * 2 * 32 * 10) as f64);
        }
    }
}
