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
use crate::quant::{BlockQ2K, BlockQ3K, BlockQ4, BlockQ4K, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8, GgufBlock, QK, QK_K};

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
        // SAFETY: the file is opened read-only and we never hand out references that outlive `self`.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
        let content = read.map_err(|e| match super::gguf_header::unknown_tensor_type(&mmap) {
            Some((tensor, dtype)) => ModelError::UnsupportedDType { path: path.into(), tensor, dtype },
            None => ModelError::Gguf { path: path.into(), msg: e.to_string() },
        })?;
        Ok(GgufFile { path: path.into(), content, mmap })
    }

    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    /// Counts tensors per type, for `info`.
    pub fn dtype_counts(&self) -> Vec<(String, usize)> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for info in self.content.tensor_infos.values() {
            *counts.entry(type_name(info.ggml_dtype).to_string()).or_default() += 1;
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
        let Some((num, den)) = block_size(info.ggml_dtype) else {
            return Err(ModelError::UnsupportedDType { path: self.path.clone(), tensor: name.into(), dtype: type_name(info.ggml_dtype).into() });
        };
        // A row that is not whole blocks cannot come from ggml: the file is corrupt.
        if dims.last().is_some_and(|&row| !(row as u64).is_multiple_of(den)) {
            return Err(ModelError::Gguf {
                path: self.path.clone(),
                msg: format!("tensor `{name}`: rows of {} values are not whole {}-value {} blocks", dims[dims.len() - 1], den, type_name(info.ggml_dtype)),
            });
        }
        let nbytes = (elems / den).checked_mul(num).ok_or_else(too_big)?;
        let start = (self.content.tensor_data_offset).checked_add(info.offset).ok_or_else(too_big)?;
        let end = start.checked_add(nbytes).ok_or_else(too_big)?;
        if end > self.mmap.len() as u64 {
            return Err(ModelError::Truncated { path: self.path.clone(), tensor: name.into(), end, len: self.mmap.len() as u64 });
        }
        Ok((info.ggml_dtype, dims, &self.mmap[start as usize..end as usize]))
    }
}

/// (bytes, values) per block of the tensor types the runtime reads.
fn block_size(dtype: GgmlDType) -> Option<(u64, u64)> {
    let quant = |bytes: usize, len: usize| Some((bytes as u64, len as u64));
    match dtype {
        GgmlDType::F32 => quant(4, 1),
        GgmlDType::F16 | GgmlDType::BF16 => quant(2, 1),
        GgmlDType::Q4_0 => quant(18, QK),
        GgmlDType::Q4_1 => quant(20, QK),
        GgmlDType::Q8_0 => quant(BlockQ8::BYTES, QK),
        GgmlDType::Q5_0 => quant(BlockQ5_0::BYTES, QK),
        GgmlDType::Q5_1 => quant(BlockQ5_1::BYTES, QK),
        GgmlDType::Q2K => quant(BlockQ2K::BYTES, QK_K),
        GgmlDType::Q3K => quant(BlockQ3K::BYTES, QK_K),
        GgmlDType::Q4K => quant(BlockQ4K::BYTES, QK_K),
        GgmlDType::Q5K => quant(BlockQ5K::BYTES, QK_K),
        GgmlDType::Q6K => quant(BlockQ6K::BYTES, QK_K),
        GgmlDType::Q8_1 | GgmlDType::Q8K => None,
    }
}

/// Every GGUF tensor type the runtime loads, as llama.cpp names them (for `info` and for errors).
pub const SUPPORTED_TYPES: [&str; 13] = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"];

/// llama.cpp's name of a tensor type.
pub fn type_name(dtype: GgmlDType) -> &'static str {
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

fn blocks<B: GgufBlock>(bytes: &[u8]) -> std::sync::Arc<[B]> {
    bytes.chunks_exact(B::BYTES).map(B::from_bytes).collect()
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
            GgmlDType::Q8_0 => WeightData::Q8(blocks(bytes)),
            GgmlDType::Q5_0 => WeightData::Q5_0(blocks(bytes)),
            GgmlDType::Q5_1 => WeightData::Q5_1(blocks(bytes)),
            GgmlDType::Q2K => WeightData::Q2K(blocks(bytes)),
            GgmlDType::Q3K => WeightData::Q3K(blocks(bytes)),
            GgmlDType::Q4K => WeightData::Q4K(blocks(bytes)),
            GgmlDType::Q5K => WeightData::Q5K(blocks(bytes)),
            GgmlDType::Q6K => WeightData::Q6K(blocks(bytes)),
            other => WeightData::F32(f32_from(other, bytes).ok_or_else(|| ModelError::UnsupportedDType {
                path: self.path.clone(),
                tensor: name.clone(),
                dtype: type_name(other).into(),
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
        f32_from(dtype, bytes).ok_or_else(|| ModelError::UnsupportedDType { path: self.path.clone(), tensor: name, dtype: type_name(dtype).into() })
    }
    /// llama.cpp permutes Q/K rows of llama checkpoints for interleaved rope; we keep HF's layout everywhere.
    fn qk_rows_interleaved(&self) -> bool {
        self.arch() == "llama"
    }
    fn gemma_norms_include_one(&self) -> bool {
        true
    }
}
