//! GGUF files: metadata and tensors, with errors that name the file and the tensor.
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;
use half::{bf16, f16};

use super::error::{ModelError, Result};
use super::linear::{Matrix, WeightData};
use super::weights::TensorSource;
use crate::quant::{BlockQ4, BlockQ8, QK};

pub struct GgufFile {
    pub path: PathBuf,
    pub content: Content,
    mmap: memmap2::Mmap,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let mut file = File::open(path).map_err(|e| ModelError::io(path, e))?;
        // candle's reader bounds every length by the file size, but divides by a `general.alignment` of 0: a
        // panic there is a malformed file, not a crash.
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Content::read(&mut file)))
            .map_err(|_| ModelError::Gguf { path: path.into(), msg: "malformed header (the reader gave up)".into() })?;
        let content = read.map_err(|e| ModelError::Gguf { path: path.into(), msg: e.to_string() })?;
        // SAFETY: the file is opened read-only and we never hand out references that outlive `self`.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
        Ok(GgufFile { path: path.into(), content, mmap })
    }

    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    /// Counts tensors per type, for `info`.
    pub fn dtype_counts(&self) -> Vec<(String, usize)> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for info in self.content.tensor_infos.values() {
            *counts.entry(format!("{:?}", info.ggml_dtype)).or_default() += 1;
        }
        let mut v: Vec<_> = counts.into_iter().collect();
        v.sort();
        v
    }

    fn raw(&self, name: &str) -> Result<(GgmlDType, Vec<usize>, &[u8])> {
        let info = self.content.tensor_infos.get(name).ok_or_else(|| ModelError::MissingTensor { path: self.path.clone(), tensor: name.into() })?;
        let dims = info.shape.dims().to_vec();
        // Sizes come from the file: checked arithmetic, so absurd ones are errors rather than wrapped values.
        let too_big = || ModelError::Truncated { path: self.path.clone(), tensor: name.into(), end: u64::MAX, len: self.mmap.len() as u64 };
        let elems = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64)).ok_or_else(too_big)?;
        let (num, den) = match info.ggml_dtype {
            GgmlDType::F32 => (4, 1),
            GgmlDType::F16 | GgmlDType::BF16 => (2, 1),
            GgmlDType::Q4_0 => (18, QK as u64),
            GgmlDType::Q4_1 => (20, QK as u64),
            GgmlDType::Q8_0 => (34, QK as u64),
            other => return Err(ModelError::UnsupportedDType { path: self.path.clone(), tensor: name.into(), dtype: format!("{other:?}") }),
        };
        let nbytes = (elems / den).checked_mul(num).ok_or_else(too_big)?;
        let start = (self.content.tensor_data_offset).checked_add(info.offset).ok_or_else(too_big)?;
        let end = start.checked_add(nbytes).ok_or_else(too_big)?;
        if end > self.mmap.len() as u64 {
            return Err(ModelError::Truncated { path: self.path.clone(), tensor: name.into(), end, len: self.mmap.len() as u64 });
        }
        Ok((info.ggml_dtype, dims, &self.mmap[start as usize..end as usize]))
    }
}

fn f32_from(dtype: GgmlDType, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        GgmlDType::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        GgmlDType::F16 => bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        GgmlDType::BF16 => bytes.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        _ => return None,
    })
}

/// Maps HF tensor names (our canonical names) to llama.cpp's GGUF names, for the llama-like architectures.
pub fn gguf_name(hf: &str) -> Option<String> {
    gguf_name_in("llama", hf)
}

/// Maps HF tensor names to llama.cpp's GGUF names in a file of architecture `arch` (`general.architecture`):
/// Gemma names its four per-layer norms apart from llama's two.
pub fn gguf_name_in(arch: &str, hf: &str) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, tail) = rest.split_once('.')?;
    let gemma = match (arch, tail) {
        ("gemma3", "post_attention_layernorm.weight") => Some("post_attention_norm.weight"),
        ("gemma3", "pre_feedforward_layernorm.weight") => Some("ffn_norm.weight"),
        ("gemma3", "post_feedforward_layernorm.weight") => Some("post_ffw_norm.weight"),
        _ => None,
    };
    if let Some(g) = gemma {
        return Some(format!("blk.{layer}.{g}"));
    }
    let mapped = match tail {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.bias" => "attn_v.bias",
        "self_attn.q_norm.weight" => "attn_q_norm.weight",
        "self_attn.k_norm.weight" => "attn_k_norm.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        _ => return None,
    };
    Some(format!("blk.{layer}.{mapped}"))
}

impl GgufFile {
    fn arch(&self) -> &str {
        self.metadata().get("general.architecture").and_then(|v| v.to_string().ok()).map_or("", String::as_str)
    }

    /// The file's name for the HF tensor `hf_name`.
    pub fn tensor_name(&self, hf_name: &str) -> Option<String> {
        gguf_name_in(self.arch(), hf_name)
    }
}

impl TensorSource for GgufFile {
    fn path(&self) -> &Path {
        &self.path
    }
    fn has(&self, hf_name: &str) -> bool {
        self.tensor_name(hf_name).is_some_and(|n| self.content.tensor_infos.contains_key(&n))
    }
    fn matrix(&self, hf_name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        let name = self.tensor_name(hf_name).ok_or_else(|| ModelError::MissingTensor { path: self.path.clone(), tensor: hf_name.into() })?;
        let (dtype, dims, bytes) = self.raw(&name)?;
        if dims != [rows, cols] {
            return Err(ModelError::Shape { path: self.path.clone(), tensor: name, got: dims, expected: vec![rows, cols] });
        }
        let data = match dtype {
            GgmlDType::Q4_1 => WeightData::Q4(bytes.chunks_exact(20).map(BlockQ4::from_q4_1_bytes).collect()),
            GgmlDType::Q4_0 => WeightData::Q4(bytes.chunks_exact(18).map(BlockQ4::from_q4_0_bytes).collect()),
            GgmlDType::Q8_0 => WeightData::Q8(bytes.chunks_exact(34).map(BlockQ8::from_bytes).collect()),
            other => WeightData::F32(f32_from(other, bytes).ok_or_else(|| ModelError::UnsupportedDType {
                path: self.path.clone(),
                tensor: name.clone(),
                dtype: format!("{other:?}"),
            })?),
        };
        Ok(Matrix { rows, cols, data })
    }
    fn vector(&self, hf_name: &str, len: usize) -> Result<Vec<f32>> {
        let name = self.tensor_name(hf_name).ok_or_else(|| ModelError::MissingTensor { path: self.path.clone(), tensor: hf_name.into() })?;
        let (dtype, dims, bytes) = self.raw(&name)?;
        if dims.iter().product::<usize>() != len {
            return Err(ModelError::Shape { path: self.path.clone(), tensor: name, got: dims, expected: vec![len] });
        }
        f32_from(dtype, bytes).ok_or_else(|| ModelError::UnsupportedDType { path: self.path.clone(), tensor: name, dtype: format!("{dtype:?}") })
    }
    /// llama.cpp permutes Q/K rows of llama checkpoints for interleaved rope; we keep HF's layout everywhere.
    fn qk_rows_interleaved(&self) -> bool {
        self.arch() == "llama"
    }
    fn gemma_norms_include_one(&self) -> bool {
        true
    }
}
