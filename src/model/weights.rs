//! Model weights in the runtime's layout, from any tensor source (GGUF or safetensors).
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};

use super::config::ModelConfig;
use super::error::{ModelError, Result};
use super::linear::{Matrix, WeightData};

/// Where tensors come from. Names are HF checkpoint names (`model.layers.0.self_attn.q_proj.weight`).
pub trait TensorSource {
    fn path(&self) -> &Path;
    fn has(&self, name: &str) -> bool;
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix>;
    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>>;
    /// True when Q/K rows are stored in llama.cpp's interleaved-rope order and must be un-permuted.
    fn qk_rows_interleaved(&self) -> bool {
        false
    }
    /// True when Gemma's norm weights are stored as the factor itself (llama.cpp's converter adds the 1 that
    /// Hugging Face checkpoints leave to the forward pass, `x * (1 + w)`).
    fn gemma_norms_include_one(&self) -> bool {
        false
    }
}

pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    /// q, k and v projections stacked (q_dim + 2 kv_dim rows) so one pass computes all three.
    pub qkv: Matrix,
    pub qkv_bias: Option<Vec<f32>>,
    pub o: Matrix,
    pub mlp_norm: Vec<f32>,
    /// gate and up projections stacked (2 x intermediate rows).
    pub gate_up: Matrix,
    pub down: Matrix,
    /// Per-head RMSNorm weights of q and of k (`head_dim` each; Qwen3, Gemma 3), applied before rope.
    pub qk_norm: Option<(Vec<f32>, Vec<f32>)>,
    /// Gemma's norms of the attention output and of the MLP output, applied before each joins the residual.
    pub post_norms: Option<(Vec<f32>, Vec<f32>)>,
}

pub struct Weights {
    pub embed: Matrix,
    pub layers: Vec<LayerWeights>,
    pub norm: Vec<f32>,
    /// None when the output layer is tied to the embeddings.
    pub lm_head: Option<Matrix>,
}

impl Weights {
    pub fn lm_head(&self) -> &Matrix {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    pub fn storage_bytes(&self) -> usize {
        let l: usize = self.layers.iter().map(|l| l.qkv.storage_bytes() + l.o.storage_bytes() + l.gate_up.storage_bytes() + l.down.storage_bytes()).sum();
        l + self.embed.storage_bytes() + self.lm_head.as_ref().map_or(0, |m| m.storage_bytes())
    }

    pub fn load(src: &dyn TensorSource, cfg: &ModelConfig) -> Result<Self> {
        let (h, i, q, kv, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.q_dim(), cfg.kv_dim(), cfg.head_dim);
        let embed = src.matrix("model.embed_tokens.weight", cfg.vocab_size, h)?;
        let lm_head = if src.has("lm_head.weight") && !cfg.tie_word_embeddings { Some(src.matrix("lm_head.weight", cfg.vocab_size, h)?) } else { None };
        // Norm weights are kept as the factor the forward multiplies by: Gemma's HF `w` becomes `1 + w`.
        let plus_one = cfg.arch.is_gemma() && !src.gemma_norms_include_one();
        let norm = |name: &str, len: usize| -> Result<Vec<f32>> {
            let mut v = src.vector(name, len)?;
            if plus_one {
                v.iter_mut().for_each(|x| *x += 1.0);
            }
            Ok(v)
        };
        let gemma = cfg.arch.is_gemma();
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for l in 0..cfg.num_layers {
            let p = |n: &str| format!("model.layers.{l}.{n}");
            let mut wq = src.matrix(&p("self_attn.q_proj.weight"), q, h)?;
            let mut wk = src.matrix(&p("self_attn.k_proj.weight"), kv, h)?;
            let wv = src.matrix(&p("self_attn.v_proj.weight"), kv, h)?;
            let mut bq = if cfg.attention_bias { Some(src.vector(&p("self_attn.q_proj.bias"), q)?) } else { None };
            let mut bk = if cfg.attention_bias { Some(src.vector(&p("self_attn.k_proj.bias"), kv)?) } else { None };
            if src.qk_rows_interleaved() {
                let (pq, pk) = (unpermute_qk(cfg.num_heads, hd), unpermute_qk(cfg.num_kv_heads, hd));
                wq.permute_rows(&pq);
                wk.permute_rows(&pk);
                bq = bq.map(|b| pq.iter().map(|&r| b[r]).collect());
                bk = bk.map(|b| pk.iter().map(|&r| b[r]).collect());
            }
            let qkv_bias = match (bq, bk) {
                (Some(bq), Some(bk)) => Some([bq, bk, src.vector(&p("self_attn.v_proj.bias"), kv)?].concat()),
                _ => None,
            };
            let mismatch = |what: &str| ModelError::invalid(src.path(), format!("layer {l}: {what} tensors have different types"));
            let qkv = Matrix::stack(&[&wq, &wk, &wv]).ok_or_else(|| mismatch("q/k/v"))?;
            let gate = src.matrix(&p("mlp.gate_proj.weight"), i, h)?;
            let up = src.matrix(&p("mlp.up_proj.weight"), i, h)?;
            let gate_up = Matrix::stack(&[&gate, &up]).ok_or_else(|| mismatch("gate/up"))?;
            let qk_norm =
                if cfg.arch.has_qk_norm() { Some((norm(&p("self_attn.q_norm.weight"), hd)?, norm(&p("self_attn.k_norm.weight"), hd)?)) } else { None };
            // Gemma's `post_attention_layernorm` normalizes the attention output; its MLP input norm is
            // `pre_feedforward_layernorm`. Llama's `post_attention_layernorm` is the MLP input norm.
            let (mlp_norm, post_norms) = if gemma {
                let post = (norm(&p("post_attention_layernorm.weight"), h)?, norm(&p("post_feedforward_layernorm.weight"), h)?);
                (norm(&p("pre_feedforward_layernorm.weight"), h)?, Some(post))
            } else {
                (norm(&p("post_attention_layernorm.weight"), h)?, None)
            };
            layers.push(LayerWeights {
                attn_norm: norm(&p("input_layernorm.weight"), h)?,
                qkv,
                qkv_bias,
                o: src.matrix(&p("self_attn.o_proj.weight"), h, q)?,
                mlp_norm,
                gate_up,
                down: src.matrix(&p("mlp.down_proj.weight"), h, i)?,
                qk_norm,
                post_norms,
            });
        }
        Ok(Weights { embed, layers, norm: norm("model.norm.weight", h)?, lm_head })
    }
}

/// Row order that turns llama.cpp's interleaved Q/K rows back into HF's half-split order:
/// HF row (head, j, i) = GGUF row (head, i, j) for j in {0, 1}, i < head_dim / 2.
pub fn unpermute_qk(heads: usize, head_dim: usize) -> Vec<usize> {
    let half = head_dim / 2;
    let mut perm = vec![0; heads * head_dim];
    for h in 0..heads {
        for j in 0..2 {
            for i in 0..half {
                perm[h * head_dim + j * half + i] = h * head_dim + 2 * i + j;
            }
        }
    }
    perm
}

/// Row order that turns HF's half-split Q/K rows into llama.cpp's interleaved order (the inverse of
/// [`unpermute_qk`]): GGUF row (head, i, j) = HF row (head, j, i).
pub fn permute_qk(heads: usize, head_dim: usize) -> Vec<usize> {
    let mut perm = vec![0; heads * head_dim];
    for (hf, gguf) in unpermute_qk(heads, head_dim).into_iter().enumerate() {
        perm[gguf] = hf;
    }
    perm
}

/// One or several `*.safetensors` files of a Hugging Face model folder.
pub struct SafetensorsDir {
    pub dir: PathBuf,
    files: Vec<(PathBuf, memmap2::Mmap)>,
    index: HashMap<String, usize>,
}

impl SafetensorsDir {
    pub fn open(dir: &Path) -> Result<Self> {
        let index_path = dir.join("model.safetensors.index.json");
        let mut names: Vec<PathBuf> = if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(|e| ModelError::io(&index_path, e))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::invalid(&index_path, e.to_string()))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| ModelError::MissingField { path: index_path.clone(), field: "weight_map".into() })?;
            let mut files: Vec<PathBuf> = map.values().filter_map(|f| f.as_str()).map(|f| dir.join(f)).collect();
            files.sort();
            files.dedup();
            files
        } else {
            let rd = std::fs::read_dir(dir).map_err(|e| ModelError::io(dir, e))?;
            rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "safetensors")).collect()
        };
        names.sort();
        if names.is_empty() {
            return Err(ModelError::invalid(dir, "no *.safetensors files in this model folder"));
        }
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for path in names {
            let file = std::fs::File::open(&path).map_err(|e| ModelError::io(&path, e))?;
            // SAFETY: read-only map, kept alive as long as `self`.
            let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ModelError::io(&path, e))?;
            let st = SafeTensors::deserialize(&mmap).map_err(|e| ModelError::invalid(&path, format!("not a valid safetensors file: {e}")))?;
            for name in st.names() {
                index.insert(name.to_string(), files.len());
            }
            files.push((path, mmap));
        }
        Ok(SafetensorsDir { dir: dir.into(), files, index })
    }

    /// Names and shapes of every tensor, sorted by name.
    pub fn tensor_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.index.keys().cloned().collect();
        v.sort();
        v
    }

    fn load_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let &fi = self.index.get(name).ok_or_else(|| ModelError::MissingTensor { path: self.dir.clone(), tensor: name.into() })?;
        let (path, mmap) = &self.files[fi];
        let st = SafeTensors::deserialize(mmap).map_err(|e| ModelError::invalid(path, e.to_string()))?;
        let t = st.tensor(name).map_err(|e| ModelError::invalid(path, format!("tensor `{name}`: {e}")))?;
        let b = t.data();
        let v: Vec<f32> = match t.dtype() {
            Dtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::F16 => b.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::BF16 => b.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            other => return Err(ModelError::UnsupportedDType { path: path.clone(), tensor: name.into(), dtype: format!("{other:?}") }),
        };
        Ok((t.shape().to_vec(), v))
    }
}

impl TensorSource for SafetensorsDir {
    fn path(&self) -> &Path {
        &self.dir
    }
    fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        let (shape, v) = self.load_f32(name)?;
        if shape != [rows, cols] {
            return Err(ModelError::Shape { path: self.dir.clone(), tensor: name.into(), got: shape, expected: vec![rows, cols] });
        }
        Ok(Matrix { rows, cols, data: WeightData::F32(v) })
    }
    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        let (shape, v) = self.load_f32(name)?;
        if v.len() != len {
            return Err(ModelError::Shape { path: self.dir.clone(), tensor: name.into(), got: shape, expected: vec![len] });
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // llama.cpp: w.reshape(heads, 2, hd/2, in).swapaxes(1, 2) => gguf row (h, i, j) = hf row (h, j, i).
        let (heads, hd) = (3, 8);
        let hf: Vec<usize> = (0..heads * hd).collect();
        let mut gguf = vec![0; heads * hd];
        for h in 0..heads {
            for i in 0..hd / 2 {
                for j in 0..2 {
                    gguf[h * hd + 2 * i + j] = hf[h * hd + j * hd / 2 + i];
                }
            }
        }
        let perm = unpermute_qk(heads, hd);
        let back: Vec<usize> = perm.iter().map(|&p| gguf[p]).collect();
        assert_eq!(back, hf);
        let forward: Vec<usize> = permute_qk(heads, hd).iter().map(|&p| hf[p]).collect();
        assert_eq!(forward, gguf);
    }
}
