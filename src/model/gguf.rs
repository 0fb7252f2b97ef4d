//! GGUF files: metadata and tensors, with errors that name the file and the tensor.
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Value;
use half::{bf16, f16};

use super::error::{ModelError, Result};
pub use super::gguf_header::{supported_names, TensorType};
use super::gguf_header::{Header, TensorInfo};
use super::linear::{Matrix, WeightData};
use super::weights::TensorSource;
use crate::quant::{BlockQ4, GgufBlock};

pub struct GgufFile {
    pub path: PathBuf,
    header: Header,
    mmap: memmap2::Mmap,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| ModelError::io(path, e))?;
        // SAFETY: the file is opened read-only and we never hand out references that outlive `self`.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
        let header = super::gguf_header::read(&mmap).map_err(|msg| ModelError::Gguf { path: path.into(), msg })?;
        Ok(GgufFile { path: path.into(), header, mmap })
    }

    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.header.metadata
    }

    pub fn has_tensor(&self, gguf_name: &str) -> bool {
        self.header.tensors.contains_key(gguf_name)
    }

    /// The file's tensor names, in no particular order.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.header.tensors.keys().map(String::as_str)
    }

    /// Counts tensors per type, for `info`.
    pub fn dtype_counts(&self) -> Vec<(String, usize)> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for info in self.header.tensors.values() {
            *counts.entry(info.dtype.to_string()).or_default() += 1;
        }
        let mut v: Vec<_> = counts.into_iter().collect();
        v.sort();
        v
    }

    fn unsupported(&self, tensor: &str, dtype: TensorType) -> ModelError {
        let dtype = match dtype.name() {
            Some(name) => format!("{name} (type id {})", dtype.0),
            None => dtype.to_string(),
        };
        ModelError::UnsupportedDType { path: self.path.clone(), tensor: tensor.into(), dtype }
    }

    fn raw(&self, name: &str) -> Result<(&TensorInfo, &[u8])> {
        let info = self.header.tensors.get(name).ok_or_else(|| ModelError::MissingTensor { path: self.path.clone(), tensor: name.into() })?;
        // Sizes come from the file: checked arithmetic, so absurd ones are errors rather than wrapped values.
        let too_big = || ModelError::Truncated { path: self.path.clone(), tensor: name.into(), end: u64::MAX, len: self.mmap.len() as u64 };
        let elems = info.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64)).ok_or_else(too_big)?;
        let Some((num, den)) = info.dtype.block_size() else {
            return Err(self.unsupported(name, info.dtype));
        };
        // A row that is not whole blocks cannot come from ggml: the file is corrupt.
        if info.dims.last().is_some_and(|&row| !(row as u64).is_multiple_of(den)) {
            return Err(ModelError::Gguf {
                path: self.path.clone(),
                msg: format!("tensor `{name}`: rows of {} values are not whole {}-value {} blocks", info.dims[info.dims.len() - 1], den, info.dtype),
            });
        }
        let nbytes = (elems / den).checked_mul(num).ok_or_else(too_big)?;
        let start = self.header.data_offset.checked_add(info.offset).ok_or_else(too_big)?;
        let end = start.checked_add(nbytes).ok_or_else(too_big)?;
        if end > self.mmap.len() as u64 {
            return Err(ModelError::Truncated { path: self.path.clone(), tensor: name.into(), end, len: self.mmap.len() as u64 });
        }
        Ok((info, &self.mmap[start as usize..end as usize]))
    }
}

fn blocks<B: GgufBlock>(bytes: &[u8]) -> std::sync::Arc<[B]> {
    bytes.chunks_exact(B::BYTES).map(B::from_bytes).collect()
}

fn f32_from(dtype: TensorType, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        TensorType::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        TensorType::F16 => bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        TensorType::BF16 => bytes.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
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
        self.tensor_name(hf_name).is_some_and(|n| self.has_tensor(&n))
    }
    fn matrix(&self, hf_name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        let name = self.tensor_name(hf_name).ok_or_else(|| ModelError::MissingTensor { path: self.path.clone(), tensor: hf_name.into() })?;
        let (info, bytes) = self.raw(&name)?;
        if info.dims != [rows, cols] {
            return Err(ModelError::Shape { path: self.path.clone(), tensor: name, got: info.dims.clone(), expected: vec![rows, cols] });
        }
        let data = match info.dtype {
            TensorType::Q4_1 => WeightData::Q4(bytes.chunks_exact(20).map(BlockQ4::from_q4_1_bytes).collect()),
            TensorType::Q4_0 => WeightData::Q4(bytes.chunks_exact(18).map(BlockQ4::from_q4_0_bytes).collect()),
            TensorType::Q8_0 => WeightData::Q8(blocks(bytes)),
            TensorType::Q5_0 => WeightData::Q5_0(blocks(bytes)),
            TensorType::Q5_1 => WeightData::Q5_1(blocks(bytes)),
            TensorType::Q2_K => WeightData::Q2K(blocks(bytes)),
            TensorType::Q3_K => WeightData::Q3K(blocks(bytes)),
            TensorType::Q4_K => WeightData::Q4K(blocks(bytes)),
            TensorType::Q5_K => WeightData::Q5K(blocks(bytes)),
            TensorType::Q6_K => WeightData::Q6K(blocks(bytes)),
            TensorType::IQ4_NL => WeightData::IQ4NL(blocks(bytes)),
            TensorType::IQ4_XS => WeightData::IQ4XS(blocks(bytes)),
            other => WeightData::F32(f32_from(other, bytes).ok_or_else(|| self.unsupported(&name, other))?),
        };
        Ok(Matrix { rows, cols, data })
    }
    fn vector(&self, hf_name: &str, len: usize) -> Result<Vec<f32>> {
        let name = self.tensor_name(hf_name).ok_or_else(|| ModelError::MissingTensor { path: self.path.clone(), tensor: hf_name.into() })?;
        let (info, bytes) = self.raw(&name)?;
        if info.dims.iter().product::<usize>() != len {
            return Err(ModelError::Shape { path: self.path.clone(), tensor: name, got: info.dims.clone(), expected: vec![len] });
        }
        f32_from(info.dtype, bytes).ok_or_else(|| self.unsupported(&name, info.dtype))
    }
    /// llama.cpp permutes Q/K rows of llama checkpoints for interleaved rope; we keep HF's layout everywhere.
    fn qk_rows_interleaved(&self) -> bool {
        self.arch() == "llama"
    }
    fn gemma_norms_include_one(&self) -> bool {
        true
    }
}
