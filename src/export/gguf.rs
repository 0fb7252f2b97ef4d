//! GGUF files llama.cpp and Ollama load: a model (an adapter merged in or not) and a LoRA adapter in llama.cpp's
//! adapter form (what its `convert_lora_to_gguf.py` writes). Tensors are named and laid out as llama.cpp's
//! converter lays them out (Q/K rows of llama interleaved for its rope, Gemma's norms as the factor itself), and
//! candle's GGUF writer and quantizers write them. Everything is checked before anything is written: a model the
//! format cannot express, or a tensor a type cannot hold, leaves no file behind.
use std::collections::HashMap;
use std::io::Cursor;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use crate::atomic::{self, WriteError};
use crate::model::gguf::{gguf_name_in, GgufFile};
use crate::model::lora::LoraAdapter;
use crate::model::source::ModelSource;
use crate::model::tokenizer::TokenizerError;
use crate::model::weights::{permute_qk, Weights};
use crate::model::{Arch, LoadedModel, ModelConfig, ModelError};

/// Tensor types of a GGUF model export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GgufType {
    #[value(name = "f32")]
    F32,
    #[value(name = "f16")]
    F16,
    #[value(name = "q8_0")]
    Q8_0,
    /// llama.cpp's Q4_K_M mix: Q4_K, with Q6_K for the output and for some layers' attn_v and ffn_down.
    #[value(name = "q4_k_m")]
    Q4KM,
}

impl GgufType {
    /// llama.cpp's `general.file_type` (`llama_ftype`).
    fn file_type(self) -> u32 {
        match self {
            GgufType::F32 => 0,
            GgufType::F16 => 1,
            GgufType::Q8_0 => 7,
            GgufType::Q4KM => 15,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GgufExportError {
    #[error("{what}; GGUF (llama.cpp) cannot express this, so nothing was written")]
    Unsupported { what: String },
    #[error("the tokenizer has no GGUF form, so nothing was written")]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("tensor `{tensor}` as {dtype}: {source}")]
    Tensor { tensor: String, dtype: &'static str, source: candle_core::Error },
    #[error("writing GGUF: {0}")]
    Gguf(candle_core::Error),
    #[error(transparent)]
    Write(#[from] WriteError),
}

type Result<T> = std::result::Result<T, GgufExportError>;

/// (name, shape, row-major f32 values).
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

fn unsupported(what: impl Into<String>) -> GgufExportError {
    GgufExportError::Unsupported { what: what.into() }
}

/// llama.cpp's tensor type for `name` (`cols` values per row) in a `ty` export, `layer` of `layers`: its Q4_K_M
/// rules (`llama_tensor_get_type`), with its fallbacks for rows that are not whole 256-value blocks.
/// llama.cpp's name of a type the export writes (through candle's writer).
fn type_name(dtype: GgmlDType) -> &'static str {
    match dtype {
        GgmlDType::F32 => "F32",
        GgmlDType::F16 => "F16",
        GgmlDType::BF16 => "BF16",
        GgmlDType::Q4_0 => "Q4_0",
        GgmlDType::Q4_1 => "Q4_1",
        GgmlDType::Q5_0 => "Q5_0",
        GgmlDType::Q5_1 => "Q5_1",
        GgmlDType::Q8_0 => "Q8_0",
        GgmlDType::Q8_1 => "Q8_1",
        GgmlDType::Q2K => "Q2_K",
        GgmlDType::Q3K => "Q3_K",
        GgmlDType::Q4K => "Q4_K",
        GgmlDType::Q5K => "Q5_K",
        GgmlDType::Q6K => "Q6_K",
        GgmlDType::Q8K => "Q8_K",
    }
}

fn tensor_type(ty: GgufType, name: &str, cols: usize, tied: bool, layer: Option<usize>, layers: usize) -> GgmlDType {
    let k = match ty {
        GgufType::F32 => return GgmlDType::F32,
        GgufType::F16 => return GgmlDType::F16,
        GgufType::Q8_0 => return GgmlDType::Q8_0,
        GgufType::Q4KM => {
            // More bits for the first and last eighth of the layers and every third one between.
            let more_bits = |i: usize| i < layers / 8 || i >= 7 * layers / 8 || (i - layers / 8) % 3 == 2;
            let output = name == "output.weight" || (tied && name == "token_embd.weight");
            let wide = layer.is_some_and(more_bits) && (name.ends_with("attn_v.weight") || name.ends_with("ffn_down.weight"));
            if output || wide {
                GgmlDType::Q6K
            } else {
                GgmlDType::Q4K
            }
        }
    };
    if cols.is_multiple_of(256) {
        k
    } else if k == GgmlDType::Q6K {
        GgmlDType::Q8_0
    } else {
        GgmlDType::Q5_0
    }
}

/// One tensor ready to quantize: GGUF name, shape as (rows, cols) or (len), f32 values.
struct Planned {
    name: String,
    shape: Vec<usize>,
    values: Vec<f32>,
    dtype: GgmlDType,
}

fn quantize(p: &Planned) -> Result<QTensor> {
    let err = |source| GgufExportError::Tensor { tensor: p.name.clone(), dtype: type_name(p.dtype), source };
    let t = Tensor::from_slice(&p.values, p.shape.as_slice(), &Device::Cpu).map_err(err)?;
    QTensor::quantize(&t, p.dtype).map_err(err)
}

fn u32v(n: usize) -> Value {
    Value::U32(n as u32)
}

/// The hyperparameters llama.cpp reads for `cfg`'s architecture.
fn hyperparameters(cfg: &ModelConfig) -> Vec<(String, Value)> {
    let a = cfg.arch.name();
    let key = |k: &str| format!("{a}.{k}");
    let mut md = vec![
        (key("context_length"), u32v(cfg.max_position_embeddings)),
        (key("embedding_length"), u32v(cfg.hidden_size)),
        (key("block_count"), u32v(cfg.num_layers)),
        (key("feed_forward_length"), u32v(cfg.intermediate_size)),
        (key("attention.head_count"), u32v(cfg.num_heads)),
        (key("attention.head_count_kv"), u32v(cfg.num_kv_heads)),
        (key("attention.key_length"), u32v(cfg.head_dim)),
        (key("attention.value_length"), u32v(cfg.head_dim)),
        (key("attention.layer_norm_rms_epsilon"), Value::F32(cfg.rms_norm_eps)),
        (key("rope.freq_base"), Value::F32(cfg.rope_theta)),
        (key("rope.dimension_count"), u32v(cfg.head_dim)),
        (key("vocab_size"), u32v(cfg.vocab_size)),
    ];
    if let Some(w) = cfg.sliding_window {
        md.push((key("attention.sliding_window"), u32v(w)));
    }
    if let Some(crate::model::config::RopeScaling::Linear { factor }) = cfg.rope_scaling {
        md.push((key("rope.scaling.type"), Value::String("linear".into())));
        md.push((key("rope.scaling.factor"), Value::F32(factor)));
    }
    md
}

/// The source GGUF's own `general.*` and `tokenizer.*` keys (exact scores, pre-tokenizer name, chat template),
/// or, for a Hugging Face folder, the tokenizer's GGUF form and the chat template.
fn carried_metadata(model: &LoadedModel) -> Result<Vec<(String, Value)>> {
    let mut md = Vec::new();
    match &model.source {
        ModelSource::Gguf(path) => {
            let g = GgufFile::open(path)?;
            let skip = ["general.architecture", "general.type", "general.file_type", "general.quantization_version", "general.alignment"];
            let mut keys: Vec<&String> =
                g.metadata().keys().filter(|k| (k.starts_with("general.") || k.starts_with("tokenizer.")) && !skip.contains(&k.as_str())).collect();
            keys.sort();
            md.extend(keys.into_iter().map(|k| (k.clone(), g.metadata()[k].clone())));
        }
        ModelSource::HfDir(_) => {
            md.push(("general.name".into(), Value::String(model.base_name.clone())));
            md.extend(model.tokenizer.gguf_metadata(model.config().vocab_size)?);
            if !model.template_is_fallback {
                md.push(("tokenizer.chat_template".into(), Value::String(model.template.source().to_string())));
            }
        }
    }
    Ok(md)
}

/// Refuses a model whose GGUF form would read back as another model: llama.cpp keeps some of an architecture's
/// settings in its code (Gemma 3's layer pattern and local rope base, Qwen2's biases), and our reader follows it.
fn check_reads_back(cfg: &ModelConfig, md: &[(String, Value)], has_output: bool) -> Result<()> {
    if matches!(cfg.rope_scaling, Some(crate::model::config::RopeScaling::Llama3(_))) {
        return Err(unsupported("Llama 3 rope scaling (llama.cpp's `rope_freqs` tensor) is not written yet"));
    }
    let map: HashMap<String, Value> = md.iter().cloned().collect();
    let back = ModelConfig::from_gguf(&map, has_output, cfg.vocab_size, Path::new("(export)"))?;
    if back == *cfg {
        return Ok(());
    }
    let (a, b) = (serde_json::to_value(cfg).unwrap_or_default(), serde_json::to_value(&back).unwrap_or_default());
    let diff: Vec<String> = a
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, v)| b.get(k.as_str()) != Some(v))
        .map(|(k, v)| format!("`{k}` {v} would read back as {}", b.get(k.as_str()).cloned().unwrap_or_default()))
        .collect();
    Err(unsupported(format!("{} model: {}", cfg.arch.name(), diff.join(", "))))
}

/// Every tensor under its llama.cpp name, in llama.cpp's layout, with its type in a `ty` export.
fn plan_tensors(w: &Weights, cfg: &ModelConfig, ty: GgufType) -> Result<Vec<Planned>> {
    let arch = cfg.arch.name();
    let tied = w.lm_head.is_none();
    let mut out = Vec::new();
    for (hf, shape, mut values) in super::hf::named_tensors(w, cfg, false) {
        let name = gguf_name_in(arch, &hf).ok_or_else(|| unsupported(format!("tensor `{hf}` has no llama.cpp name")))?;
        if cfg.arch == Arch::Llama {
            let heads = if hf.contains("q_proj") { Some(cfg.num_heads) } else { hf.contains("k_proj").then_some(cfg.num_kv_heads) };
            if let Some(heads) = heads {
                values = permute_rows(&values, &permute_qk(heads, cfg.head_dim), shape.get(1).copied().unwrap_or(1));
            }
        }
        let layer = hf.strip_prefix("model.layers.").and_then(|r| r.split('.').next()).and_then(|l| l.parse().ok());
        let dtype = if shape.len() == 1 { GgmlDType::F32 } else { tensor_type(ty, &name, shape[1], tied, layer, cfg.num_layers) };
        if !shape[shape.len() - 1].is_multiple_of(dtype.block_size()) {
            return Err(unsupported(format!(
                "tensor `{name}` has rows of {} values, not whole {}-value {} blocks",
                shape[shape.len() - 1],
                dtype.block_size(),
                type_name(dtype)
            )));
        }
        out.push(Planned { name, shape, values, dtype });
    }
    Ok(out)
}

/// Rows of a row-major matrix (`cols` wide) in the order `perm` (new row r = old row perm[r]).
fn permute_rows(v: &[f32], perm: &[usize], cols: usize) -> Vec<f32> {
    perm.iter().flat_map(|&r| v[r * cols..(r + 1) * cols].iter().copied()).collect()
}

/// A GGUF file serialized in memory, every check passed: writing it can only fail for the file system.
pub struct Prepared {
    bytes: Vec<u8>,
    /// Tensors per type (llama.cpp's names), in the order first met.
    pub counts: Vec<(&'static str, usize)>,
}

impl Prepared {
    fn new(md: &[(String, Value)], planned: &[Planned]) -> Result<Self> {
        let mut counts: Vec<(&'static str, usize)> = Vec::new();
        let mut tensors = Vec::with_capacity(planned.len());
        for p in planned {
            tensors.push((p.name.as_str(), quantize(p)?));
            match counts.iter_mut().find(|(n, _)| *n == type_name(p.dtype)) {
                Some((_, c)) => *c += 1,
                None => counts.push((type_name(p.dtype), 1)),
            }
        }
        let md: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
        let mut buf = Cursor::new(Vec::new());
        gguf_file::write(&mut buf, &md, &ts).map_err(GgufExportError::Gguf)?;
        Ok(Prepared { bytes: buf.into_inner(), counts })
    }

    /// Writes the file atomically.
    pub fn write_to(&self, out: &Path) -> Result<()> {
        atomic::write_file(out, &self.bytes)?;
        Ok(())
    }
}

/// `model` (its weights replaced by `weights` when given, e.g. merged with an adapter) as a GGUF file llama.cpp
/// runs, its 2-D tensors of type `ty`, norms and biases in F32 as llama.cpp's converter keeps them.
pub fn model_gguf(model: &LoadedModel, weights: Option<&Weights>, ty: GgufType) -> Result<Prepared> {
    let cfg = model.config();
    let w = weights.unwrap_or(&model.transformer.weights);
    let mut md = vec![("general.architecture".to_string(), Value::String(cfg.arch.name().into())), ("general.type".into(), Value::String("model".into()))];
    md.extend(carried_metadata(model)?);
    md.extend(hyperparameters(cfg));
    md.push(("general.file_type".into(), Value::U32(ty.file_type())));
    md.push(("general.quantization_version".into(), Value::U32(2)));
    check_reads_back(cfg, &md, w.lm_head.is_some())?;
    Prepared::new(&md, &plan_tensors(w, cfg, ty)?)
}

/// The adapter's tensors as llama.cpp reads them: `<base tensor>.lora_a` (`r x in`, ggml `ne = [in, r]`) and
/// `.lora_b` (`out x r`), B's rows of llama's Q and K interleaved as the base's are.
pub fn lora_tensors(adapter: &LoraAdapter, cfg: &ModelConfig) -> Result<Vec<NamedTensor>> {
    let mut out = Vec::new();
    for (l, layer) in adapter.layers.iter().enumerate() {
        for (p, pair) in layer {
            let hf = format!("{}.weight", p.peft_prefix(l).trim_start_matches("base_model.model."));
            let base = gguf_name_in(cfg.arch.name(), &hf).ok_or_else(|| unsupported(format!("adapter tensor `{hf}` has no llama.cpp name")))?;
            let heads = match p {
                crate::model::lora::Proj::Q => Some(cfg.num_heads),
                crate::model::lora::Proj::K => Some(cfg.num_kv_heads),
                _ => None,
            };
            let b = match heads.filter(|_| cfg.arch == Arch::Llama) {
                Some(h) => permute_rows(&pair.b, &permute_qk(h, cfg.head_dim), pair.r),
                None => pair.b.clone(),
            };
            out.push((format!("{base}.lora_a"), vec![pair.r, pair.d_in], pair.a.clone()));
            out.push((format!("{base}.lora_b"), vec![pair.d_out, pair.r], b));
        }
    }
    Ok(out)
}

/// `adapter` as a llama.cpp LoRA GGUF (`--lora`), its tensors in F32, for `model`'s architecture. llama.cpp
/// scales by `adapter.lora.alpha / r`, as we do; an alpha of 0 means a scale of 1 there, so it is refused.
pub fn lora_gguf(model: &LoadedModel, adapter: &LoraAdapter) -> Result<Prepared> {
    let cfg = model.config();
    if adapter.config.alpha == 0.0 {
        return Err(unsupported("lora_alpha 0 (llama.cpp reads it as a scale of 1, not 0)"));
    }
    let md = vec![
        ("general.architecture".to_string(), Value::String(cfg.arch.name().into())),
        ("general.type".into(), Value::String("adapter".into())),
        ("general.name".into(), Value::String(format!("{} LoRA", model.base_name))),
        ("adapter.type".into(), Value::String("lora".into())),
        ("adapter.lora.alpha".into(), Value::F32(adapter.config.alpha)),
        ("general.file_type".into(), Value::U32(GgufType::F32.file_type())),
    ];
    let planned: Vec<Planned> =
        lora_tensors(adapter, cfg)?.into_iter().map(|(name, shape, values)| Planned { name, shape, values, dtype: GgmlDType::F32 }).collect();
    Prepared::new(&md, &planned)
}
