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
    Qwen3,
    Gemma3,
}

impl Arch {
    /// Every supported architecture, in the order users meet them (`info` and `UnknownArch` list them).
    pub const ALL: [Arch; 4] = [Arch::Llama, Arch::Qwen2, Arch::Qwen3, Arch::Gemma3];

    /// The supported architectures' names, comma separated.
    pub fn supported() -> String {
        Arch::ALL.map(Arch::name).join(", ")
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
        }
    }

    /// Per-head RMSNorm of q and k after their projections, before rope.
    pub fn has_qk_norm(self) -> bool {
        matches!(self, Arch::Qwen3 | Arch::Gemma3)
    }

    /// Gemma's layer: norms on the attention and MLP outputs too, a GELU-gated MLP, scaled embeddings, and
    /// norm weights stored as `w - 1` in Hugging Face checkpoints.
    pub fn is_gemma(self) -> bool {
        self == Arch::Gemma3
    }

    /// The gated MLP's activation.
    pub fn activation(self) -> Activation {
        if self.is_gemma() {
            Activation::GeluTanh
        } else {
            Activation::Silu
        }
    }
}

/// The activation of the gated MLP, `act(gate) * up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Silu,
    /// GELU in its tanh approximation (`gelu_pytorch_tanh`).
    GeluTanh,
}

/// Llama 3.x frequency-dependent rope scaling (`rope_scaling.rope_type == "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Llama3RopeScaling {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_max_position_embeddings: usize,
}

/// How rope frequencies are stretched for long contexts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RopeScaling {
    Llama3(Llama3RopeScaling),
    /// Every frequency divided by `factor` (Gemma 3 applies it to its global layers only).
    Linear {
        factor: f32,
    },
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
    pub rope_scaling: Option<RopeScaling>,
    pub rms_norm_eps: f32,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Qwen2 has biases on q/k/v projections.
    pub attention_bias: bool,
    /// Sliding-window layers (Gemma 3) let position `p` attend to positions `p - window + 1 ..= p` only.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Per layer, whether it is a sliding-window layer; empty when none is.
    #[serde(default)]
    pub sliding_layers: Vec<bool>,
    /// Rope base of the sliding-window layers (their rope is never scaled).
    #[serde(default)]
    pub rope_local_theta: Option<f32>,
    /// Attention scores are scaled by `query_pre_attn_scalar^-0.5` (Gemma); `None`: by `head_dim^-0.5`.
    #[serde(default)]
    pub query_pre_attn_scalar: Option<f32>,
}

impl ModelConfig {
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// The attention window of `layer`: `Some(w)` for a sliding-window layer, `None` for a global one.
    pub fn window(&self, layer: usize) -> Option<usize> {
        self.sliding_window.filter(|_| self.sliding_layers.get(layer).copied().unwrap_or(false))
    }

    /// The factor applied to attention scores.
    pub fn attn_scale(&self) -> f32 {
        1.0 / self.query_pre_attn_scalar.unwrap_or(self.head_dim as f32).sqrt()
    }

    /// Gemma multiplies the embeddings by `sqrt(hidden)` (in f32 here, as its f32 checkpoints do).
    pub fn embed_scale(&self) -> Option<f32> {
        self.arch.is_gemma().then(|| (self.hidden_size as f32).sqrt())
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
        if !self.sliding_layers.is_empty() && self.sliding_layers.len() != self.num_layers {
            return bad(format!("{} layer types for {} layers", self.sliding_layers.len(), self.num_layers));
        }
        if self.sliding_window == Some(0) {
            return bad("sliding_window must be positive".into());
        }
        if self.query_pre_attn_scalar.is_some_and(|s| s.is_nan() || s <= 0.0) {
            return bad("query_pre_attn_scalar must be positive".into());
        }
        Ok(())
    }

    pub fn from_hf_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let raw: HfConfig = serde_json::from_str(&text).map_err(|e| ModelError::invalid(path, format!("line {}: {}", e.line(), e)))?;
        let arch = match raw.model_type.as_deref() {
            Some("llama") => Arch::Llama,
            Some("qwen2") => Arch::Qwen2,
            Some("qwen3") => Arch::Qwen3,
            Some("gemma3_text") => Arch::Gemma3,
            // The multimodal checkpoint nests the text model (and names its tensors `language_model.*`).
            Some("gemma3") => {
                return Err(ModelError::invalid(path, "multimodal Gemma 3 checkpoints are not supported; use a text-only one (model_type `gemma3_text`)"))
            }
            Some(other) => return Err(ModelError::UnknownArch { path: path.into(), arch: other.into() }),
            None => return Err(ModelError::MissingField { path: path.into(), field: "model_type".into() }),
        };
        let gemma = arch.is_gemma();
        let num_heads = raw.num_attention_heads;
        let head_dim = raw.head_dim.unwrap_or(if gemma { 256 } else { raw.hidden_size / num_heads.max(1) });
        let rope_scaling = match raw.rope_scaling {
            Some(s) if s.rope_type.as_deref().or(s.r#type.as_deref()) == Some("llama3") => Some(RopeScaling::Llama3(Llama3RopeScaling {
                factor: s.factor.unwrap_or(8.0),
                low_freq_factor: s.low_freq_factor.unwrap_or(1.0),
                high_freq_factor: s.high_freq_factor.unwrap_or(4.0),
                original_max_position_embeddings: s.original_max_position_embeddings.unwrap_or(8192),
            })),
            Some(s) if s.rope_type.as_deref().or(s.r#type.as_deref()) == Some("linear") => {
                Some(RopeScaling::Linear { factor: s.factor.ok_or_else(|| ModelError::invalid(path, "linear rope_scaling without a factor"))? })
            }
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
        if raw.use_sliding_window == Some(true) {
            return Err(ModelError::invalid(path, "use_sliding_window is not supported for this architecture"));
        }
        let (mut sliding_window, mut sliding_layers, mut rope_local_theta, mut query_pre_attn_scalar) = (None, Vec::new(), None, None);
        if gemma {
            if let Some(act) = raw.hidden_activation.as_deref().or(raw.hidden_act.as_deref()).filter(|a| *a != "gelu_pytorch_tanh") {
                return Err(ModelError::invalid(path, format!("hidden_activation `{act}` is not supported (expected gelu_pytorch_tanh)")));
            }
            if raw.final_logit_softcapping.is_some() || raw.attn_logit_softcapping.is_some() {
                return Err(ModelError::invalid(path, "logit soft-capping (Gemma 2) is not supported"));
            }
            sliding_layers = match &raw.layer_types {
                Some(types) => types
                    .iter()
                    .map(|t| match t.as_str() {
                        "sliding_attention" => Ok(true),
                        "full_attention" => Ok(false),
                        other => Err(ModelError::invalid(path, format!("unknown layer type `{other}` in layer_types"))),
                    })
                    .collect::<Result<_>>()?,
                None => sliding_pattern(raw.num_hidden_layers, raw.sliding_window_pattern.unwrap_or(6)),
            };
            sliding_window = Some(raw.sliding_window.unwrap_or(4096));
            rope_local_theta = Some(raw.rope_local_base_freq.unwrap_or(10000.0));
            query_pre_attn_scalar = Some(raw.query_pre_attn_scalar.unwrap_or(head_dim as f32));
        }
        let cfg = ModelConfig {
            arch,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_layers: raw.num_hidden_layers,
            num_heads,
            num_kv_heads: raw.num_key_value_heads.unwrap_or(num_heads),
            head_dim,
            rope_theta: raw.rope_theta.unwrap_or(if gemma { 1_000_000.0 } else { 10000.0 }),
            rope_scaling,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(4096),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(gemma),
            attention_bias: arch == Arch::Qwen2 || raw.attention_bias.unwrap_or(false),
            sliding_window,
            sliding_layers,
            rope_local_theta,
            query_pre_attn_scalar,
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
            "qwen3" => Arch::Qwen3,
            "gemma3" => Arch::Gemma3,
            other => return Err(ModelError::UnknownArch { path: path.into(), arch: other.into() }),
        };
        let p = |k: &str| format!("{arch_name}.{k}");
        let num_heads = gguf_usize(md, &p("attention.head_count"), path)?;
        let hidden = gguf_usize(md, &p("embedding_length"), path)?;
        let num_layers = gguf_usize(md, &p("block_count"), path)?;
        let head_dim = gguf_usize(md, &p("attention.key_length"), path).unwrap_or(hidden / num_heads.max(1));
        let rope_scaling = match md.get(&p("rope.scaling.type")).and_then(|v| v.to_string().ok()).map(String::as_str) {
            Some("llama3") => Some(RopeScaling::Llama3(Llama3RopeScaling {
                factor: gguf_f32_or(md, &p("rope.scaling.factor"), 8.0),
                low_freq_factor: gguf_f32_or(md, &p("rope.scaling.low_freq_factor"), 1.0),
                high_freq_factor: gguf_f32_or(md, &p("rope.scaling.high_freq_factor"), 4.0),
                original_max_position_embeddings: gguf_usize(md, &p("rope.scaling.original_context_length"), path).unwrap_or(8192),
            })),
            Some("linear") => Some(RopeScaling::Linear { factor: gguf_f32_or(md, &p("rope.scaling.factor"), 1.0) }),
            _ => None,
        };
        let (mut sliding_window, mut sliding_layers, mut rope_local_theta, mut query_pre_attn_scalar) = (None, Vec::new(), None, None);
        if arch.is_gemma() {
            // llama.cpp keeps Gemma 3's layer pattern (every 6th layer global) and local rope base (10000) in its
            // code, not in the file; so do we.
            sliding_window = Some(gguf_usize(md, &p("attention.sliding_window"), path)?);
            sliding_layers = sliding_pattern(num_layers, 6);
            rope_local_theta = Some(10000.0);
            // Gemma 3 27B (62 blocks) scales by hidden / heads, the others by head_dim, as llama.cpp does.
            query_pre_attn_scalar = Some(if num_layers == 62 { (hidden / num_heads.max(1)) as f32 } else { head_dim as f32 });
        }
        let vocab_size = gguf_usize(md, &p("vocab_size"), path).unwrap_or(vocab_from_tokens);
        let cfg = ModelConfig {
            arch,
            vocab_size,
            hidden_size: hidden,
            intermediate_size: gguf_usize(md, &p("feed_forward_length"), path)?,
            num_layers,
            num_heads,
            num_kv_heads: gguf_usize(md, &p("attention.head_count_kv"), path).unwrap_or(num_heads),
            head_dim,
            rope_theta: gguf_f32_or(md, &p("rope.freq_base"), 10000.0),
            rope_scaling,
            rms_norm_eps: gguf_f32_or(md, &p("attention.layer_norm_rms_epsilon"), 1e-5),
            max_position_embeddings: gguf_usize(md, &p("context_length"), path).unwrap_or(4096),
            tie_word_embeddings: !has_output,
            attention_bias: arch == Arch::Qwen2,
            sliding_window,
            sliding_layers,
            rope_local_theta,
            query_pre_attn_scalar,
        };
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// The HF `config.json` this runtime config corresponds to (used by `convert` and merged exports).
    pub fn to_hf_json(&self, torch_dtype: &str) -> serde_json::Value {
        let (class, model_type) = match self.arch {
            Arch::Llama => ("LlamaForCausalLM", "llama"),
            Arch::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
            Arch::Qwen3 => ("Qwen3ForCausalLM", "qwen3"),
            Arch::Gemma3 => ("Gemma3ForCausalLM", "gemma3_text"),
        };
        let mut v = serde_json::json!({
            "architectures": [class],
            "model_type": model_type,
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
        match self.arch {
            Arch::Llama => {
                v["attention_bias"] = serde_json::json!(self.attention_bias);
                v["mlp_bias"] = serde_json::json!(false);
            }
            Arch::Qwen2 => {}
            Arch::Qwen3 => {
                v["attention_bias"] = serde_json::json!(false);
                v["use_sliding_window"] = serde_json::json!(false);
            }
            Arch::Gemma3 => {
                v["hidden_act"] = serde_json::json!("gelu_pytorch_tanh");
                v["hidden_activation"] = serde_json::json!("gelu_pytorch_tanh");
                v["attention_bias"] = serde_json::json!(false);
                // transformers declares it an integer and refuses 256.0.
                let scalar = self.query_pre_attn_scalar.unwrap_or(self.head_dim as f32);
                v["query_pre_attn_scalar"] = if scalar.fract() == 0.0 { serde_json::json!(scalar as i64) } else { serde_json::json!(scalar) };
                v["sliding_window"] = serde_json::json!(self.sliding_window);
                v["rope_local_base_freq"] = serde_json::json!(self.rope_local_theta.unwrap_or(10000.0));
                let types: Vec<&str> = self.sliding_layers.iter().map(|&s| if s { "sliding_attention" } else { "full_attention" }).collect();
                v["layer_types"] = serde_json::json!(types);
                // Older readers (transformers < 4.53, candle) know the layers by their period only.
                if let Some(period) = (1..=self.num_layers + 1).find(|&p| sliding_pattern(self.num_layers, p) == self.sliding_layers) {
                    v["sliding_window_pattern"] = serde_json::json!(period);
                }
                v["final_logit_softcapping"] = serde_json::Value::Null;
                v["attn_logit_softcapping"] = serde_json::Value::Null;
            }
        }
        match self.rope_scaling {
            Some(RopeScaling::Llama3(s)) => {
                v["rope_scaling"] = serde_json::json!({
                    "rope_type": "llama3", "factor": s.factor, "low_freq_factor": s.low_freq_factor,
                    "high_freq_factor": s.high_freq_factor,
                    "original_max_position_embeddings": s.original_max_position_embeddings,
                });
            }
            Some(RopeScaling::Linear { factor }) => v["rope_scaling"] = serde_json::json!({"rope_type": "linear", "factor": factor}),
            None => {}
        }
        v
    }

    /// Parameter count of the dense model (embeddings counted once when tied).
    pub fn num_parameters(&self) -> usize {
        let (h, i, q, kv) = (self.hidden_size, self.intermediate_size, self.q_dim(), self.kv_dim());
        let attn = h * q * 2 + h * kv * 2 + if self.attention_bias { q + 2 * kv } else { 0 };
        let qk_norm = if self.arch.has_qk_norm() { 2 * self.head_dim } else { 0 };
        let norms = if self.arch.is_gemma() { 4 * h } else { 2 * h };
        let layer = attn + 3 * h * i + norms + qk_norm;
        let emb = self.vocab_size * h;
        emb * if self.tie_word_embeddings { 1 } else { 2 } + self.num_layers * layer + h
    }

    /// Floating-point operations (2 per multiply-add) of one token's forward pass: every projection, attention
    /// over `ctx` cached positions (scores and weighted values), and the output layer when its logits are wanted.
    /// Element-wise work (norms, rope, activations, softmax) is left out: it is a small share and not multiply-adds.
    /// A sliding-window layer attends to at most its window.
    pub fn flops_per_token(&self, ctx: usize, logits: bool) -> f64 {
        let (h, i, q, kv) = (self.hidden_size, self.intermediate_size, self.q_dim(), self.kv_dim());
        let projections = h * (q + 2 * kv) + q * h + 3 * h * i;
        let attention: usize = (0..self.num_layers).map(|l| 2 * q * self.window(l).map_or(ctx, |w| ctx.min(w))).sum();
        let head = if logits { self.vocab_size * h } else { 0 };
        2.0 * (self.num_layers * projections + attention + head) as f64
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

/// Gemma's layer pattern: every `period`-th layer global (layer `i` when `(i + 1) % period == 0`), the others
/// sliding-window layers.
fn sliding_pattern(layers: usize, period: usize) -> Vec<bool> {
    (0..layers).map(|i| period == 0 || (i + 1) % period != 0).collect()
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
    use_sliding_window: Option<bool>,
    hidden_act: Option<String>,
    hidden_activation: Option<String>,
    sliding_window: Option<usize>,
    sliding_window_pattern: Option<usize>,
    layer_types: Option<Vec<String>>,
    rope_local_base_freq: Option<f32>,
    query_pre_attn_scalar: Option<f32>,
    final_logit_softcapping: Option<f32>,
    attn_logit_softcapping: Option<f32>,
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
                sliding_window: None,
                sliding_layers: Vec::new(),
                rope_local_theta: None,
                query_pre_attn_scalar: None,
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

    fn parse(json: serde_json::Value) -> Result<ModelConfig> {
        let dir = tempfile::tempdir().map_err(|e| ModelError::io("tempdir", e))?;
        let path = dir.path().join("config.json");
        std::fs::write(&path, json.to_string()).map_err(|e| ModelError::io(&path, e))?;
        ModelConfig::from_hf_json(&path)
    }

    fn gemma3_json() -> serde_json::Value {
        serde_json::json!({
            "model_type": "gemma3_text", "vocab_size": 262144, "hidden_size": 640, "intermediate_size": 2048,
            "num_hidden_layers": 18, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
            "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
            "rope_local_base_freq": 10000.0, "sliding_window": 512, "query_pre_attn_scalar": 256,
            "hidden_activation": "gelu_pytorch_tanh", "rope_scaling": null,
            "final_logit_softcapping": null, "attn_logit_softcapping": null,
        })
    }

    /// Gemma 3's layer kinds come from `layer_types` when given, else from `sliding_window_pattern` (default 6:
    /// every 6th layer global); its defaults tie the embeddings.
    #[test]
    fn gemma3_layer_kinds_from_layer_types_or_the_pattern() -> Result<()> {
        let c = parse(gemma3_json())?;
        assert_eq!(
            (c.arch, c.sliding_window, c.rope_local_theta, c.query_pre_attn_scalar, c.tie_word_embeddings),
            (Arch::Gemma3, Some(512), Some(10000.0), Some(256.0), true)
        );
        let global: Vec<usize> = (0..c.num_layers).filter(|&l| c.window(l).is_none()).collect();
        assert_eq!(global, [5, 11, 17]);
        let mut j = gemma3_json();
        j["num_hidden_layers"] = 4.into();
        j["layer_types"] = serde_json::json!(["full_attention", "sliding_attention", "sliding_attention", "full_attention"]);
        assert_eq!(parse(j.clone())?.sliding_layers, [false, true, true, false]);
        j["rope_scaling"] = serde_json::json!({"rope_type": "linear", "factor": 8.0});
        assert_eq!(parse(j.clone())?.rope_scaling, Some(RopeScaling::Linear { factor: 8.0 }));
        j["final_logit_softcapping"] = 30.0.into();
        assert!(parse(j).is_err(), "soft-capping (Gemma 2) is refused");
        Ok(())
    }

    /// What `to_hf_json` writes reads back as the same config, for every architecture.
    #[test]
    fn hf_config_round_trips_for_every_architecture() -> Result<()> {
        let mut gemma = parse(gemma3_json())?;
        gemma.rope_scaling = Some(RopeScaling::Linear { factor: 8.0 });
        let qwen3 = ModelConfig { arch: Arch::Qwen3, head_dim: 128, ..parse(gemma3_json())? };
        let qwen3 = ModelConfig { sliding_window: None, sliding_layers: Vec::new(), rope_local_theta: None, query_pre_attn_scalar: None, ..qwen3 };
        for c in [gemma, qwen3] {
            assert_eq!(parse(c.to_hf_json("float32"))?, c);
        }
        Ok(())
    }

    #[test]
    fn unknown_architecture_names_the_file_and_the_supported_ones() {
        let mut j = gemma3_json();
        j["model_type"] = "mamba".into();
        let e = parse(j).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("config.json") && e.contains("`mamba`") && e.contains("llama, qwen2, qwen3, gemma3"), "{e}");
    }
}
