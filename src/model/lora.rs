//! LoRA adapters: `W x + (alpha / r) * B A x` on chosen projections of every layer.
//!
//! One on-disk format, PEFT's: `adapter_model.safetensors` with keys
//! `base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight` (A is r x in, B is out x r) and
//! `adapter_config.json`, so an adapter directory loads in PEFT as is. Our weights are in HF row order already
//! (GGUF Q/K rows are un-permuted at load), so no permutation is applied to q/k adapters.
//!
//! The adapter keeps plain f32 vectors so that inference (this module's `add_deltas`), merging and export need
//! no tensor library; training converts them to trainable tensors and back.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use super::config::ModelConfig;
use super::linear::{Matrix, WeightData};
use super::weights::{LayerWeights, Weights};
use crate::simd::kernels::{dispatch, dot4_l, dot_l, Kernel};
use crate::simd::lanes::Lanes;
use crate::simd::Simd;

pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
pub const ADAPTER_CONFIG: &str = "adapter_config.json";

#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
    #[error("adapter {path} was trained for base model `{adapter}`, but the loaded model is `{model}`")]
    BaseMismatch { path: PathBuf, adapter: String, model: String },
    #[error("invalid LoRA config: {0}")]
    Config(String),
    #[error(transparent)]
    Write(#[from] crate::atomic::WriteError),
}

pub type Result<T> = std::result::Result<T, LoraError>;

fn invalid(path: &Path, msg: impl Into<String>) -> LoraError {
    LoraError::Invalid { path: path.into(), msg: msg.into() }
}

/// A projection LoRA can target. The order is the order of the stacked runtime matrices (q, k, v; gate, up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Proj {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

/// The runtime matrix a projection lives in (q/k/v and gate/up are stacked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stacked {
    Qkv,
    O,
    GateUp,
    Down,
}

impl Proj {
    pub const ALL: [Proj; 7] = [Proj::Q, Proj::K, Proj::V, Proj::O, Proj::Gate, Proj::Up, Proj::Down];

    /// The HF / PEFT module name (`q_proj`, ...).
    pub fn hf_name(self) -> &'static str {
        match self {
            Proj::Q => "q_proj",
            Proj::K => "k_proj",
            Proj::V => "v_proj",
            Proj::O => "o_proj",
            Proj::Gate => "gate_proj",
            Proj::Up => "up_proj",
            Proj::Down => "down_proj",
        }
    }

    pub fn from_hf_name(name: &str) -> Option<Proj> {
        Proj::ALL.into_iter().find(|p| p.hf_name() == name || p.short_name() == name)
    }

    /// Short name as used on command lines (`q`, `gate`, ...).
    pub fn short_name(self) -> &'static str {
        match self {
            Proj::Q => "q",
            Proj::K => "k",
            Proj::V => "v",
            Proj::O => "o",
            Proj::Gate => "gate",
            Proj::Up => "up",
            Proj::Down => "down",
        }
    }

    fn module(self) -> &'static str {
        match self {
            Proj::Q | Proj::K | Proj::V | Proj::O => "self_attn",
            Proj::Gate | Proj::Up | Proj::Down => "mlp",
        }
    }

    /// PEFT key prefix of this projection in `layer`.
    pub fn peft_prefix(self, layer: usize) -> String {
        format!("base_model.model.model.layers.{layer}.{}.{}", self.module(), self.hf_name())
    }

    /// `(in, out)` features of the projection.
    pub fn dims(self, cfg: &ModelConfig) -> (usize, usize) {
        let (h, q, kv, i) = (cfg.hidden_size, cfg.q_dim(), cfg.kv_dim(), cfg.intermediate_size);
        match self {
            Proj::Q => (h, q),
            Proj::K | Proj::V => (h, kv),
            Proj::O => (q, h),
            Proj::Gate | Proj::Up => (h, i),
            Proj::Down => (i, h),
        }
    }

    /// Which stacked runtime matrix holds this projection, and its first output row there.
    pub fn location(self, cfg: &ModelConfig) -> (Stacked, usize) {
        let (q, kv, i) = (cfg.q_dim(), cfg.kv_dim(), cfg.intermediate_size);
        match self {
            Proj::Q => (Stacked::Qkv, 0),
            Proj::K => (Stacked::Qkv, q),
            Proj::V => (Stacked::Qkv, q + kv),
            Proj::O => (Stacked::O, 0),
            Proj::Gate => (Stacked::GateUp, 0),
            Proj::Up => (Stacked::GateUp, i),
            Proj::Down => (Stacked::Down, 0),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f32,
    /// Dropout on the adapter's input during training (PEFT's `lora_dropout`); 0 disables it.
    pub dropout: f32,
    pub targets: Vec<Proj>,
    /// Identity of the base model the adapter belongs to (checked at load).
    pub base_model: String,
}

impl LoraConfig {
    pub fn scale(&self) -> f32 {
        self.alpha / self.r as f32
    }

    pub fn validate(&self) -> Result<()> {
        if self.r == 0 {
            return Err(LoraError::Config("rank r must be positive".into()));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(LoraError::Config(format!("dropout {} must be in [0, 1)", self.dropout)));
        }
        if self.targets.is_empty() {
            return Err(LoraError::Config("no target modules".into()));
        }
        if !self.alpha.is_finite() {
            return Err(LoraError::Config("alpha must be finite".into()));
        }
        Ok(())
    }
}

/// One adapted projection: `a` is `r x in`, `b` is `out x r`, both row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraPair {
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    pub r: usize,
    pub d_in: usize,
    pub d_out: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LoraAdapter {
    pub config: LoraConfig,
    /// Per layer, the adapted projections (exactly `config.targets`).
    pub layers: Vec<BTreeMap<Proj, LoraPair>>,
}

/// PEFT's `adapter_config.json` (the fields we write and read; PEFT ignores none of them).
#[derive(Serialize, Deserialize)]
struct PeftConfig {
    peft_type: String,
    task_type: String,
    r: usize,
    lora_alpha: f32,
    lora_dropout: f32,
    target_modules: Vec<String>,
    base_model_name_or_path: String,
    bias: String,
    #[serde(default)]
    fan_in_fan_out: bool,
    #[serde(default)]
    inference_mode: bool,
}

impl LoraAdapter {
    /// A fresh adapter: A ~ U(-1/sqrt(in), 1/sqrt(in)) (PEFT's Kaiming-uniform with a = sqrt(5)), B = 0, so the
    /// adapted model starts equal to the base model.
    pub fn new(config: LoraConfig, cfg: &ModelConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut targets = config.targets.clone();
        targets.sort();
        targets.dedup();
        let config = LoraConfig { targets, ..config };
        let layers = (0..cfg.num_layers)
            .map(|_| {
                config
                    .targets
                    .iter()
                    .map(|&p| {
                        let (d_in, d_out) = p.dims(cfg);
                        let bound = 1.0 / (d_in as f32).sqrt();
                        let a = (0..config.r * d_in).map(|_| rng.random_range(-bound..bound)).collect();
                        (p, LoraPair { a, b: vec![0.0; d_out * config.r], r: config.r, d_in, d_out })
                    })
                    .collect()
            })
            .collect();
        Ok(LoraAdapter { config, layers })
    }

    pub fn num_parameters(&self) -> usize {
        self.layers.iter().flat_map(|l| l.values()).map(|p| p.a.len() + p.b.len()).sum()
    }

    /// Every tensor under its PEFT name, `(name, shape, values)`.
    pub fn peft_tensors(&self) -> Vec<(String, Vec<usize>, &[f32])> {
        let mut out = Vec::new();
        for (l, layer) in self.layers.iter().enumerate() {
            for (p, pair) in layer {
                let pre = p.peft_prefix(l);
                out.push((format!("{pre}.lora_A.weight"), vec![pair.r, pair.d_in], pair.a.as_slice()));
                out.push((format!("{pre}.lora_B.weight"), vec![pair.d_out, pair.r], pair.b.as_slice()));
            }
        }
        out
    }

    /// Writes the adapter as a PEFT adapter directory, atomically (a half-written adapter never replaces `dir`).
    pub fn save(&self, dir: &Path) -> Result<()> {
        crate::atomic::write_dir(dir, |tmp| self.write_files(tmp))
    }

    /// Writes the two PEFT files into an existing directory (used inside atomic directory writes).
    pub fn write_files(&self, dir: &Path) -> Result<()> {
        let tensors: Vec<(String, Vec<usize>, Vec<u8>)> =
            self.peft_tensors().into_iter().map(|(n, s, v)| (n, s, v.iter().flat_map(|x| x.to_le_bytes()).collect())).collect();
        write_f32_safetensors(&dir.join(ADAPTER_WEIGHTS), &tensors)?;
        let cfg = PeftConfig {
            peft_type: "LORA".into(),
            task_type: "CAUSAL_LM".into(),
            r: self.config.r,
            lora_alpha: self.config.alpha,
            lora_dropout: self.config.dropout,
            target_modules: self.config.targets.iter().map(|p| p.hf_name().to_string()).collect(),
            base_model_name_or_path: self.config.base_model.clone(),
            bias: "none".into(),
            fan_in_fan_out: false,
            inference_mode: true,
        };
        let path = dir.join(ADAPTER_CONFIG);
        let text = serde_json::to_string_pretty(&cfg).map_err(|e| invalid(&path, e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| LoraError::Io { path, source: e })
    }

    /// Loads an adapter directory and checks it against the model it will be applied to: every layer and every
    /// target module must be present with the model's shapes, and nothing else; when `base_model` is given it must
    /// equal the name recorded in the adapter.
    pub fn load(dir: &Path, cfg: &ModelConfig, base_model: Option<&str>) -> Result<Self> {
        let cfg_path = dir.join(ADAPTER_CONFIG);
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| LoraError::Io { path: cfg_path.clone(), source: e })?;
        let pc: PeftConfig = serde_json::from_str(&text).map_err(|e| invalid(&cfg_path, format!("line {}: {e}", e.line())))?;
        if pc.peft_type != "LORA" {
            return Err(invalid(&cfg_path, format!("peft_type is `{}`, expected `LORA`", pc.peft_type)));
        }
        if pc.bias != "none" || pc.fan_in_fan_out {
            return Err(invalid(&cfg_path, "only bias = \"none\" and fan_in_fan_out = false adapters are supported"));
        }
        let mut targets = Vec::new();
        for t in &pc.target_modules {
            let p = Proj::from_hf_name(t).ok_or_else(|| {
                invalid(&cfg_path, format!("unknown target module `{t}` (supported: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj)"))
            })?;
            targets.push(p);
        }
        targets.sort();
        targets.dedup();
        if let Some(expected) = base_model {
            if expected != pc.base_model_name_or_path {
                return Err(LoraError::BaseMismatch { path: dir.into(), adapter: pc.base_model_name_or_path, model: expected.into() });
            }
        }
        let config = LoraConfig { r: pc.r, alpha: pc.lora_alpha, dropout: pc.lora_dropout, targets, base_model: pc.base_model_name_or_path };
        config.validate().map_err(|e| invalid(&cfg_path, e.to_string()))?;

        let st_path = dir.join(ADAPTER_WEIGHTS);
        let bytes = std::fs::read(&st_path).map_err(|e| LoraError::Io { path: st_path.clone(), source: e })?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| invalid(&st_path, e.to_string()))?;
        let mut tensors: HashMap<String, TensorView> = st.tensors().into_iter().collect();
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for l in 0..cfg.num_layers {
            let mut layer = BTreeMap::new();
            for &p in &config.targets {
                let (d_in, d_out) = p.dims(cfg);
                let pre = p.peft_prefix(l);
                let mut take = |suffix: &str, shape: [usize; 2]| -> Result<Vec<f32>> {
                    let name = format!("{pre}.{suffix}");
                    let t = tensors.remove(&name).ok_or_else(|| invalid(&st_path, format!("missing tensor `{name}` (target {} of layer {l})", p.hf_name())))?;
                    if t.shape() != shape {
                        return Err(invalid(&st_path, format!("tensor `{name}` has shape {:?}, the model needs {:?}", t.shape(), shape)));
                    }
                    decode_floats(t.dtype(), t.data()).ok_or_else(|| invalid(&st_path, format!("tensor `{name}` has unsupported type {:?}", t.dtype())))
                };
                let a = take("lora_A.weight", [config.r, d_in])?;
                let b = take("lora_B.weight", [d_out, config.r])?;
                layer.insert(p, LoraPair { a, b, r: config.r, d_in, d_out });
            }
            layers.push(layer);
        }
        if let Some(extra) = tensors.keys().min() {
            return Err(invalid(
                &st_path,
                format!("tensor `{extra}` does not belong to a target module of this {}-layer model ({} unexpected tensors)", cfg.num_layers, tensors.len()),
            ));
        }
        Ok(LoraAdapter { config, layers })
    }

    /// Adds the adapter's output for one stacked runtime matrix of `layer`: `x` is `t x in` (the matrix's input),
    /// `out` is `t x rows` (the base matmul's output). This is all the inference transformer needs:
    /// call it right after each stacked matmul, before bias and rope.
    pub fn add_deltas(&self, layer: usize, stacked: Stacked, cfg: &ModelConfig, x: &[f32], t: usize, out: &mut [f32]) {
        self.add_deltas_with(Simd::active(), layer, stacked, cfg, x, t, out)
    }

    /// [`Self::add_deltas`] on a given instruction-set path.
    #[allow(clippy::too_many_arguments)]
    pub fn add_deltas_with(&self, simd: Simd, layer: usize, stacked: Stacked, cfg: &ModelConfig, x: &[f32], t: usize, out: &mut [f32]) {
        let Some(l) = self.layers.get(layer) else { return };
        let width = out.len() / t.max(1);
        for (&p, pair) in l {
            let (s, row0) = p.location(cfg);
            if s == stacked {
                self.add_pair(simd, pair, x, t, out, width, row0);
            }
        }
    }

    /// `scale * B A x` for one projection of `layer`: `x` is `t x in`, the result `t x out`; None when the
    /// projection is not adapted.
    pub fn delta(&self, layer: usize, proj: Proj, x: &[f32], t: usize) -> Option<Vec<f32>> {
        let pair = self.layers.get(layer)?.get(&proj)?;
        let mut out = vec![0f32; t * pair.d_out];
        self.add_pair(Simd::active(), pair, x, t, &mut out, pair.d_out, 0);
        Some(out)
    }

    /// `out[i][row0 + j] += b_j . (scale A x_i)` for the `t` rows of `x`. Every element is the same two dot
    /// products whatever the number of rows or threads, so batching never changes a result.
    #[allow(clippy::too_many_arguments)]
    fn add_pair(&self, simd: Simd, p: &LoraPair, x: &[f32], t: usize, out: &mut [f32], width: usize, row0: usize) {
        assert!(x.len() == t * p.d_in && out.len() == t * width && row0 + p.d_out <= width, "LoRA operand sizes");
        let scale = self.config.scale();
        let mut ax = vec![0f32; t * p.r];
        // A few rows per task; serial when the whole product is small.
        const ROWS: usize = 4;
        const SERIAL_BELOW: usize = 1 << 15;
        let down = |x: &[f32], ax: &mut [f32]| dispatch(simd, DownProject { a: &p.a, d_in: p.d_in, scale, x, ax });
        if t * p.r * p.d_in < SERIAL_BELOW {
            down(x, &mut ax);
        } else {
            x.par_chunks(ROWS * p.d_in).zip(ax.par_chunks_mut(ROWS * p.r)).for_each(|(x, ax)| down(x, ax));
        }
        // B's columns, for paths whose registers are wider than the rank (see `UpProject`); worth the copy from a
        // few rows on.
        let bt: Option<Vec<f32>> = (t >= 4).then(|| (0..p.r * p.d_out).map(|i| p.b[(i % p.d_out) * p.r + i / p.d_out]).collect());
        let bt = bt.as_deref();
        let up =
            |out: &mut [f32], ax: &[f32], j0: usize, width: usize, row0: usize| dispatch(simd, UpProject { b: &p.b, bt, r: p.r, j0, ax, out, width, row0 });
        if t * p.d_out * p.r < SERIAL_BELOW {
            up(out, &ax, 0, width, row0);
        } else if t == 1 {
            // One row (a decoding step): its outputs are split between the threads instead.
            const COLS: usize = 256;
            out[row0..row0 + p.d_out].par_chunks_mut(COLS).enumerate().for_each(|(c, o)| {
                let n = o.len();
                up(o, &ax, c * COLS, n, 0)
            });
        } else {
            out.par_chunks_mut(ROWS * width).zip(ax.par_chunks(ROWS * p.r)).for_each(|(o, a)| up(o, a, 0, width, row0));
        }
    }

    /// `scale * B A` (out x in), the change of the projection's weight matrix.
    pub fn weight_delta(&self, layer: usize, proj: Proj) -> Option<Vec<f32>> {
        let p = self.layers.get(layer)?.get(&proj)?;
        let scale = self.config.scale();
        let mut w = vec![0f32; p.d_out * p.d_in];
        for j in 0..p.d_out {
            let row = &mut w[j * p.d_in..(j + 1) * p.d_in];
            for k in 0..p.r {
                let c = p.b[j * p.r + k] * scale;
                row.iter_mut().zip(&p.a[k * p.d_in..(k + 1) * p.d_in]).for_each(|(w, a)| *w += c * a);
            }
        }
        Some(w)
    }

    /// The base weights with the adapter merged in (`W + scale * B A`), every matrix in f32 — for merged-model
    /// exports (`export::hf::write_hf_folder(model, Some(&merged), ..)`) and as the reference in tests.
    pub fn merge(&self, w: &Weights, cfg: &ModelConfig) -> Result<Weights> {
        if self.layers.len() != w.layers.len() {
            return Err(LoraError::Config(format!("adapter has {} layers, model has {}", self.layers.len(), w.layers.len())));
        }
        let f32m = |m: &Matrix| Matrix { rows: m.rows, cols: m.cols, data: WeightData::F32(m.to_f32()) };
        let mut layers = Vec::with_capacity(w.layers.len());
        for (l, lw) in w.layers.iter().enumerate() {
            let mut mats = [(Stacked::Qkv, f32m(&lw.qkv)), (Stacked::O, f32m(&lw.o)), (Stacked::GateUp, f32m(&lw.gate_up)), (Stacked::Down, f32m(&lw.down))];
            for &p in self.layers[l].keys() {
                let (s, row0) = p.location(cfg);
                let (d_in, d_out) = p.dims(cfg);
                let delta = self.weight_delta(l, p).unwrap_or_default();
                let Some((_, m)) = mats.iter_mut().find(|(k, _)| *k == s) else { continue };
                if m.cols != d_in || row0 + d_out > m.rows {
                    return Err(LoraError::Config(format!("layer {l} {}: adapter shape does not fit the model", p.hf_name())));
                }
                if let WeightData::F32(v) = &mut m.data {
                    v[row0 * d_in..(row0 + d_out) * d_in].iter_mut().zip(&delta).for_each(|(w, d)| *w += d);
                }
            }
            let [(_, qkv), (_, o), (_, gate_up), (_, down)] = mats;
            layers.push(LayerWeights {
                attn_norm: lw.attn_norm.clone(),
                qkv,
                qkv_bias: lw.qkv_bias.clone(),
                o,
                mlp_norm: lw.mlp_norm.clone(),
                gate_up,
                down,
                qk_norm: lw.qk_norm.clone(),
                post_norms: lw.post_norms.clone(),
            });
        }
        Ok(Weights { embed: f32m(&w.embed), layers, norm: w.norm.clone(), lm_head: w.lm_head.as_ref().map(f32m) })
    }
}

fn decode_floats(dt: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    Some(match dt {
        Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        _ => return None,
    })
}

/// Writes f32 tensors (`name, shape, little-endian bytes`) as one safetensors file.
pub fn write_f32_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<u8>)]) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(n, s, b)| TensorView::new(Dtype::F32, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| invalid(path, e.to_string()))?;
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    safetensors::serialize_to_file(views, Some(meta), path).map_err(|e| invalid(path, e.to_string()))
}

/// Tensors by name: `(shape, f32 values)`.
pub type NamedTensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// Reads every tensor of an f32/f16/bf16 safetensors file.
pub fn read_safetensors(path: &Path) -> Result<NamedTensors> {
    let bytes = std::fs::read(path).map_err(|e| LoraError::Io { path: path.into(), source: e })?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| invalid(path, e.to_string()))?;
    st.tensors()
        .into_iter()
        .map(|(n, t)| {
            let v = decode_floats(t.dtype(), t.data()).ok_or_else(|| invalid(path, format!("tensor `{n}` has unsupported type {:?}", t.dtype())))?;
            Ok((n, (t.shape().to_vec(), v)))
        })
        .collect()
}

/// `ax_i = scale * A x_i` (`r` values) for every row of `x`.
struct DownProject<'a> {
    a: &'a [f32],
    d_in: usize,
    scale: f32,
    x: &'a [f32],
    ax: &'a mut [f32],
}
impl Kernel for DownProject<'_> {
    type Out = ();
    #[inline(always)]
    fn run<L: Lanes>(self) {
        let (d_in, r) = (self.d_in, self.a.len() / self.d_in);
        for (xr, axr) in self.x.chunks_exact(d_in).zip(self.ax.chunks_exact_mut(r)) {
            for (v, a) in axr.iter_mut().zip(self.a.chunks_exact(d_in)) {
                *v = dot_l::<L>(a, xr) * self.scale;
            }
        }
    }
}

/// `out[i][row0 + j] += b_(j0 + j) . ax_i` for every `width`-wide row of `out` and `j < width - row0` (B's rows
/// from `j0` on, as many as remain).
struct UpProject<'a> {
    b: &'a [f32],
    /// B transposed (`r x out`), if the caller made it.
    bt: Option<&'a [f32]>,
    r: usize,
    j0: usize,
    ax: &'a [f32],
    out: &'a mut [f32],
    width: usize,
    row0: usize,
}
impl Kernel for UpProject<'_> {
    type Out = ();
    #[inline(always)]
    fn run<L: Lanes>(self) {
        let (r, d_out) = (self.r, self.b.len() / self.r);
        let n = (d_out - self.j0).min(self.width - self.row0);
        let row = |j: usize| &self.b[(self.j0 + j) * r..(self.j0 + j + 1) * r];
        for (orow, axr) in self.out.chunks_exact_mut(self.width).zip(self.ax.chunks_exact(r)) {
            let o = &mut orow[self.row0..self.row0 + n];
            let mut j = 0;
            // A product shorter than a register is, in `dot_l`, a zero reduction and then a scalar sum in order:
            // `N` of them at once down B's columns, with the same multiplications and additions.
            if let Some(bt) = self.bt.filter(|_| r < L::N) {
                let mut axv = [L::zero(); 16];
                for k in 0..r {
                    axv[k] = L::splat(axr[k]);
                }
                while j + L::N <= n {
                    let mut acc = L::zero();
                    for k in 0..r {
                        acc = acc.add(L::from_slice(&bt[k * d_out + self.j0 + j..]).mul(axv[k]));
                    }
                    L::from_slice(&o[j..]).add(acc).to_slice(&mut o[j..]);
                    j += L::N;
                }
            }
            while j + 4 <= n {
                let d = dot4_l::<L>([row(j), row(j + 1), row(j + 2), row(j + 3)], axr);
                for (o, d) in o[j..j + 4].iter_mut().zip(d) {
                    *o += d;
                }
                j += 4;
            }
            while j < n {
                o[j] += dot_l::<L>(row(j), axr);
                j += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::kernels::dot;

    /// On every path, every output is the same two dot products as computed one at a time (so a row gives the
    /// same bits alone, in a batch, split between threads or down B's columns), for ranks below, at and above a
    /// register's width and output counts that leave remainders.
    #[test]
    fn deltas_are_the_one_at_a_time_dot_products_bit_for_bit() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (d_in, d_out, width, row0) = (576, 1000, 1100, 37);
        for r in [4, 8, 16, 24] {
            let config = LoraConfig { r, alpha: 16.0, dropout: 0.0, targets: vec![Proj::Q], base_model: "test".into() };
            let adapter = LoraAdapter { config, layers: vec![] };
            let p = LoraPair {
                a: (0..r * d_in).map(|_| rng.random_range(-0.05..0.05)).collect(),
                b: (0..d_out * r).map(|_| rng.random_range(-0.05..0.05)).collect(),
                r,
                d_in,
                d_out,
            };
            for t in [1, 3, 5, 40] {
                let x: Vec<f32> = (0..t * d_in).map(|_| rng.random_range(-2.0..2.0)).collect();
                let base: Vec<f32> = (0..t * width).map(|_| rng.random_range(-1.0..1.0)).collect();
                for simd in Simd::available() {
                    let mut out = base.clone();
                    adapter.add_pair(simd, &p, &x, t, &mut out, width, row0);
                    for i in 0..t {
                        let xr = &x[i * d_in..(i + 1) * d_in];
                        let ax: Vec<f32> = (0..r).map(|k| dot(simd, &p.a[k * d_in..(k + 1) * d_in], xr) * adapter.config.scale()).collect();
                        for j in 0..width {
                            let mut e = base[i * width + j];
                            if (row0..row0 + d_out).contains(&j) {
                                e += dot(simd, &p.b[(j - row0) * r..(j - row0 + 1) * r], &ax);
                            }
                            assert_eq!(out[i * width + j].to_bits(), e.to_bits(), "{simd} r={r} t={t} ({i}, {j})");
                        }
                    }
                }
            }
        }
    }
}
