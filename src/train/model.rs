//! The differentiable training forward: frozen f32 base weights (plain tensors, never trained) plus trainable LoRA
//! A/B variables. It returns log-probs of chosen target tokens (or logits) only at the positions that are scored,
//! so the vocabulary-sized output layer runs on loss positions only.
//!
//! Legend: B = sequences in the batch, T = padded length, N = B*T rows, H = hidden, Q = heads*head_dim,
//! KV = kv_heads*head_dim, I = intermediate, V = vocab, r = LoRA rank, G = heads per KV head.
//! Batches are right-padded: with a causal mask a real token never attends to padding, so no extra mask is needed,
//! and padded rows are never scored.
use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::{Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::attention::{attention, Attention};
use super::frozen::{BaseWeights, Frozen};
use super::head;
use super::lora_linear::{LoraLinear, LoraPart};
use super::ops::{frozen_linear, rms_norm, InputMap, RopeQk, RopeTables};
use super::{Result, TrainError};
use crate::model::lora::{LoraAdapter, LoraConfig, LoraPair, Proj};
use crate::model::rope::Rope;
use crate::model::weights::Weights;
use crate::model::ModelConfig;

/// Two norms' weights, shared with the ops that use them.
type NormPair = (Arc<Vec<f32>>, Arc<Vec<f32>>);

struct TrainLayer {
    attn_norm: Arc<Vec<f32>>,
    qkv: Frozen, // (Q + 2KV) x H
    qkv_bias: Option<Tensor>,
    o: Frozen, // H x Q
    mlp_norm: Arc<Vec<f32>>,
    gate_up: Frozen, // 2I x H
    down: Frozen,    // H x I
    /// Per-head q and k norm weights (`head_dim` each).
    qk_norm: Option<NormPair>,
    /// Gemma's norms of the attention and MLP outputs.
    post_norms: Option<NormPair>,
}

/// The frozen base model for training (quantized as stored, or f32: `BaseWeights`).
pub struct TrainModel {
    pub cfg: ModelConfig,
    embed: Frozen,   // V x H
    lm_head: Frozen, // V x H (shares the embedding's storage when tied)
    norm: Arc<Vec<f32>>,
    layers: Vec<TrainLayer>,
    rope: Arc<RopeTables>,
    /// The rope of Gemma's sliding-window layers.
    rope_local: Option<Arc<RopeTables>>,
    device: Device,
    /// Log-probs are of `softmax(logits / temperature)`: RL scores samples under the distribution they were drawn
    /// from (1 for SFT).
    temperature: f64,
}

/// Trainable LoRA variables, one (A, B) pair per adapted projection per layer.
pub struct LoraVars {
    pub config: LoraConfig,
    pub layers: Vec<BTreeMap<Proj, (Var, Var)>>,
}

/// A right-padded batch of token sequences.
#[derive(Debug, Clone)]
pub struct Batch {
    pub ids: Vec<u32>, // B*T, padded with 0
    pub b: usize,
    pub t: usize,
    pub lens: Vec<usize>,
    /// Packed sequences only: each row's position and the keys it must not attend to (see `Batch::packed`).
    pub positions: Option<Arc<Vec<u32>>>,
    pub holes: Option<Arc<Vec<(u32, u32)>>>,
}

impl Batch {
    pub fn new(seqs: &[&[u32]]) -> Self {
        let t = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut ids = vec![0u32; seqs.len() * t];
        for (i, s) in seqs.iter().enumerate() {
            ids[i * t..i * t + s.len()].copy_from_slice(s);
        }
        Batch { ids, b: seqs.len(), t, lens: seqs.iter().map(|s| s.len()).collect(), positions: None, holes: None }
    }

    /// Sequences that share their first `prefix` tokens, packed into one row: the prefix once, then each
    /// sequence's remainder. Every remainder sits at the positions it has in its own sequence and attends to
    /// the prefix and to itself only, so every position computes exactly what it computes unpacked, while the
    /// prefix is computed (forward and backward) once instead of once per sequence. Returns the batch and, per
    /// sequence, where its remainder starts in the packed row.
    pub fn packed(seqs: &[&[u32]], prefix: usize) -> Result<(Self, Vec<usize>)> {
        if seqs.iter().any(|s| s.len() < prefix || s[..prefix] != seqs[0][..prefix]) {
            return Err(TrainError::Data(format!("packed sequences do not share their first {prefix} tokens")));
        }
        let mut ids = seqs.first().map_or(vec![], |s| s[..prefix].to_vec());
        let mut positions: Vec<u32> = (0..prefix as u32).collect();
        let mut holes = vec![(0u32, 0u32); prefix];
        let mut starts = Vec::with_capacity(seqs.len());
        for s in seqs {
            let start = ids.len();
            starts.push(start);
            ids.extend_from_slice(&s[prefix..]);
            positions.extend(prefix as u32..s.len() as u32);
            holes.extend(std::iter::repeat_n((prefix as u32, start as u32), s.len() - prefix));
        }
        let t = ids.len();
        Ok((Batch { ids, b: 1, t, lens: vec![t], positions: Some(Arc::new(positions)), holes: Some(Arc::new(holes)) }, starts))
    }
}

/// One scored token: the model at (`seq`, `pos`) predicts `target` (usually the token at `pos + 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub seq: usize,
    pub pos: usize,
    pub target: u32,
}

/// The targets of next-token training: token `i` of a sequence is trained when `loss_mask[i] == 1`, predicted at
/// position `i - 1` (the first token has no prediction and is never trained).
pub fn next_token_targets(seqs: &[(&[u32], &[u8])]) -> Vec<Target> {
    let mut out = Vec::new();
    for (s, (ids, mask)) in seqs.iter().enumerate() {
        for i in 1..ids.len().min(mask.len()) {
            if mask[i] == 1 {
                out.push(Target { seq: s, pos: i - 1, target: ids[i] });
            }
        }
    }
    out
}

impl TrainModel {
    /// The base model with its weights as the checkpoint stores them (quantized blocks stay quantized).
    pub fn new(cfg: &ModelConfig, w: &Weights) -> Result<Self> {
        Self::with_base(cfg, w, BaseWeights::AsStored)
    }

    /// The base model with its weights held as `base` says. f32 costs 4 bytes a parameter (about 540 MB for a 135M
    /// model); quantized weights cost what the checkpoint does.
    pub fn with_base(cfg: &ModelConfig, w: &Weights, base: BaseWeights) -> Result<Self> {
        let device = Device::Cpu;
        let t = |m: &crate::model::linear::Matrix| Frozen::new(m, base, false);
        // f32 copies of some matrices are stored column-major. gemm's speed depends on the operands' layouts:
        // measured here, x W^T for down (1536 -> 576) runs at 70 GFLOP/s from row-major W and at ~190 from
        // column-major, qkv gains too, while the backward dy W stays at ~170-200 either way for these shapes (not
        // for gate_up or the output layer, which stay row-major).
        let t_col = |m: &crate::model::linear::Matrix| Frozen::new(m, base, true);
        let embed = t(&w.embed)?;
        let lm_head = match &w.lm_head {
            Some(m) => t(m)?,
            None => embed.clone(),
        };
        let mut layers = Vec::with_capacity(w.layers.len());
        for lw in &w.layers {
            layers.push(TrainLayer {
                attn_norm: Arc::new(lw.attn_norm.clone()),
                qkv: t_col(&lw.qkv)?,
                qkv_bias: match &lw.qkv_bias {
                    Some(b) => Some(Tensor::from_slice(b, (1, b.len()), &device)?),
                    None => None,
                },
                o: t_col(&lw.o)?,
                mlp_norm: Arc::new(lw.mlp_norm.clone()),
                gate_up: t(&lw.gate_up)?,
                down: t_col(&lw.down)?,
                qk_norm: lw.qk_norm.as_ref().map(|(q, k)| (Arc::new(q.clone()), Arc::new(k.clone()))),
                post_norms: lw.post_norms.as_ref().map(|(a, m)| (Arc::new(a.clone()), Arc::new(m.clone()))),
            });
        }
        let rope = Arc::new(rope_tables(cfg, &Rope::new(cfg)));
        let rope_local = Rope::local(cfg).map(|r| Arc::new(rope_tables(cfg, &r)));
        Ok(TrainModel { cfg: cfg.clone(), embed, lm_head, norm: Arc::new(w.norm.clone()), layers, rope, rope_local, device, temperature: 1.0 })
    }

    /// Bytes of frozen weights held (the tied output layer counted once).
    pub fn weight_bytes(&self) -> usize {
        let layers: usize = self.layers.iter().map(|l| l.qkv.storage_bytes() + l.o.storage_bytes() + l.gate_up.storage_bytes() + l.down.storage_bytes()).sum();
        let head = if self.cfg.tie_word_embeddings { 0 } else { self.lm_head.storage_bytes() };
        layers + self.embed.storage_bytes() + head
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn temperature(&self) -> f64 {
        self.temperature
    }

    /// Scores tokens under `softmax(logits / temperature)` from now on (the sampler's distribution).
    pub fn set_temperature(&mut self, temperature: f64) -> Result<()> {
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(TrainError::Params(format!("temperature {temperature} must be positive")));
        }
        self.temperature = temperature;
        Ok(())
    }

    /// Final hidden states before the last norm, `N x H`. `lora` None gives the base model (reference log-probs);
    /// `dropout_seed` enables the adapter's dropout with masks drawn from that seed (so a resumed run draws the
    /// same masks).
    pub fn hidden(&self, batch: &Batch, lora: Option<&LoraVars>, dropout_seed: Option<u64>) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, t) = (batch.b, batch.t);
        let n = b * t;
        if n == 0 {
            return Err(TrainError::Data("empty batch".into()));
        }
        let longest = batch.positions.as_ref().map_or(t, |p| p.iter().map(|&x| x as usize + 1).max().unwrap_or(0));
        if longest > self.rope.max_len() {
            return Err(TrainError::Data(format!("sequence of {longest} tokens exceeds the model's {} positions", self.rope.max_len())));
        }
        if let Some(&bad) = batch.ids.iter().find(|&&id| id as usize >= cfg.vocab_size) {
            return Err(TrainError::Data(format!("token id {bad} is outside the vocabulary of {} tokens", cfg.vocab_size)));
        }
        if let Some(l) = lora {
            if l.layers.len() != self.layers.len() {
                return Err(TrainError::Data(format!("the adapter has {} layers, the model {}", l.layers.len(), self.layers.len())));
            }
        }
        let (nh, nkv, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
        let eps = cfg.rms_norm_eps;
        let scale = cfg.attn_scale();
        let mut x = self.embed.gather(&batch.ids)?; // N x H
        if let Some(k) = cfg.embed_scale() {
            x = x.affine(k as f64, 0.0)?;
        }
        let mut drop = match (lora, dropout_seed) {
            (Some(l), Some(seed)) if l.config.dropout > 0.0 => Some(Dropout { rng: ChaCha8Rng::seed_from_u64(seed), p: l.config.dropout }),
            _ => None,
        };
        for (li, lw) in self.layers.iter().enumerate() {
            let ad = lora.map(|l| (&l.layers[li], l.config.scale()));
            // Attention block.
            let norm = InputMap::RmsNorm(lw.attn_norm.clone(), eps);
            let mut qkv = linear(&x, &lw.qkv, norm, None, ad, &[(Proj::Q, qd), (Proj::K, kvd), (Proj::V, kvd)], &mut drop)?; // N x (Q + 2KV)
            if let Some(bias) = &lw.qkv_bias {
                qkv = qkv.broadcast_add(bias)?;
            }
            if let Some((qn, kn)) = &lw.qk_norm {
                // Each head a row of `head_dim`, through the same norm op as the hidden states.
                let q = rms_norm(&qkv.narrow(1, 0, qd)?.reshape((n * nh, hd))?, qn.clone(), eps)?.reshape((n, qd))?;
                let k = rms_norm(&qkv.narrow(1, qd, kvd)?.reshape((n * nkv, hd))?, kn.clone(), eps)?.reshape((n, kvd))?;
                qkv = Tensor::cat(&[&q, &k, &qkv.narrow(1, qd + kvd, kvd)?], 1)?;
            }
            let window = cfg.window(li);
            let tables = match (&self.rope_local, window) {
                (Some(local), Some(_)) => local.clone(),
                _ => self.rope.clone(),
            };
            let rope = Some(RopeQk::new(tables, nh + nkv, t, batch.positions.clone(), n)?);
            let op =
                Attention { b, t, heads: nh, kv_heads: nkv, head_dim: hd, scale, holes: batch.holes.clone(), window, positions: batch.positions.clone(), rope };
            let y = attention(&qkv, op)?; // N x Q
            let post = lw.post_norms.as_ref().map(|p| (&p.0, eps));
            x = residual_linear(&x, &y, &lw.o, InputMap::Identity, post, ad, &[(Proj::O, cfg.hidden_size)], &mut drop)?;
            // MLP block.
            let i = cfg.intermediate_size;
            let norm = InputMap::RmsNorm(lw.mlp_norm.clone(), eps);
            let gu = linear(&x, &lw.gate_up, norm, None, ad, &[(Proj::Gate, i), (Proj::Up, i)], &mut drop)?; // N x 2I
            let post = lw.post_norms.as_ref().map(|p| (&p.1, eps));
            let act = InputMap::GatedAct(cfg.arch.activation());
            x = residual_linear(&x, &gu, &lw.down, act, post, ad, &[(Proj::Down, cfg.hidden_size)], &mut drop)?;
        }
        Ok(x)
    }

    /// Logits (`n x V`) at the given `(seq, pos)` positions only.
    pub fn logits_at(&self, batch: &Batch, lora: Option<&LoraVars>, positions: &[(usize, usize)]) -> Result<Tensor> {
        let x = self.hidden(batch, lora, None)?;
        let h = self.final_rows(batch, &x, positions.iter().copied())?;
        Ok(frozen_linear(&h, &self.lm_head, InputMap::Identity, None)?) // n x V
    }

    /// The final-normed hidden states of the given `(seq, pos)` rows (`n x H`): the output layer's input.
    fn final_rows(&self, batch: &Batch, hidden: &Tensor, rows: impl Iterator<Item = (usize, usize)>) -> Result<Tensor> {
        let mut idx = Vec::new();
        for (s, p) in rows {
            if s >= batch.b || p >= batch.lens[s] {
                return Err(TrainError::Data(format!("scored position {p} of sequence {s} is outside the batch")));
            }
            idx.push((s * batch.t + p) as u32);
        }
        let n = idx.len();
        let idx = Tensor::from_vec(idx, n, &self.device)?;
        let sel = hidden.index_select(&idx, 0)?;
        let normed = rms_norm(&sel, self.norm.clone(), self.cfg.rms_norm_eps)?;
        // logits / T = (h / T) W^T: the output layer's input is scaled instead of its (vocabulary-wide) output.
        Ok(if self.temperature == 1.0 { normed } else { (normed / self.temperature)? })
    }

    /// Log-probabilities (`n`) of each target token, differentiable with respect to the LoRA variables.
    pub fn target_logprobs(&self, batch: &Batch, lora: Option<&LoraVars>, dropout_seed: Option<u64>, targets: &[Target]) -> Result<Tensor> {
        if targets.is_empty() {
            return Err(TrainError::Data("no scored tokens in the batch".into()));
        }
        let x = self.hidden(batch, lora, dropout_seed)?;
        let h = self.final_rows(batch, &x, targets.iter().map(|t| (t.seq, t.pos)))?;
        let ids = Arc::new(targets.iter().map(|t| t.target).collect::<Vec<_>>());
        Ok(head::target_logprobs(&h, &self.lm_head, ids)?)
    }

    /// Log-probabilities of the targets and entropies of the predicted distributions (`n x 2`), both
    /// differentiable with respect to the LoRA variables. No dropout: RL compares these with log-probs the
    /// sampler saw, which had none.
    pub fn target_logprobs_entropy(&self, batch: &Batch, lora: Option<&LoraVars>, targets: &[Target]) -> Result<Tensor> {
        if targets.is_empty() {
            return Err(TrainError::Data("no scored tokens in the batch".into()));
        }
        let x = self.hidden(batch, lora, None)?;
        let h = self.final_rows(batch, &x, targets.iter().map(|t| (t.seq, t.pos)))?;
        let ids = Arc::new(targets.iter().map(|t| t.target).collect::<Vec<_>>());
        Ok(head::target_logprobs_entropy(&h, &self.lm_head, ids)?)
    }
}

/// cos/sin tables from the inference runtime's own rope (rotating unit vectors), so training and inference use
/// bit-identical angles, llama3 and linear scaling included.
fn rope_tables(cfg: &ModelConfig, rope: &Rope) -> RopeTables {
    let (hd, half) = (cfg.head_dim, cfg.head_dim / 2);
    let max_len = cfg.max_position_embeddings.min(8192);
    let (mut cos, mut sin) = (Vec::with_capacity(max_len * half), Vec::with_capacity(max_len * half));
    let mut unit = vec![0f32; hd];
    for p in 0..max_len {
        unit[..half].fill(1.0);
        unit[half..].fill(0.0);
        rope.apply(crate::simd::Simd::SCALAR, &mut unit, p);
        cos.extend_from_slice(&unit[..half]);
        sin.extend_from_slice(&unit[half..]);
    }
    RopeTables { half, cos, sin }
}

/// `x + post_norm(map(input) W'^T)`, the post-norm being Gemma's norm of a block's output before it joins the
/// residual stream (other models add the output as is). Without a post-norm the residual is added inside the op,
/// so the projection's output is never kept; the post-norm's backward needs that output.
#[allow(clippy::too_many_arguments)]
fn residual_linear(
    x: &Tensor,
    input: &Tensor,
    w: &Frozen,
    map: InputMap,
    post_norm: Option<(&Arc<Vec<f32>>, f32)>,
    ad: LayerAdapters,
    parts: &[(Proj, usize)],
    drop: &mut Option<Dropout>,
) -> Result<Tensor> {
    Ok(match post_norm {
        None => linear(input, w, map, Some(x), ad, parts, drop)?,
        Some((nw, eps)) => (x + rms_norm(&linear(input, w, map, None, ad, parts, drop)?, nw.clone(), eps)?)?,
    })
}

/// Dropout on the adapter input with masks from a seeded stream (candle's own dropout uses an unseeded RNG,
/// which would break exact resume).
struct Dropout {
    rng: ChaCha8Rng,
    p: f32,
}

impl Dropout {
    fn mask(&mut self, n: usize) -> Vec<f32> {
        let keep = 1.0 / (1.0 - self.p);
        (0..n).map(|_| if self.rng.random::<f32>() < self.p { 0.0 } else { keep }).collect()
    }
}

/// One layer's adapters and their scale (None: the base model).
type LayerAdapters<'a> = Option<(&'a BTreeMap<Proj, (Var, Var)>, f32)>;

/// A frozen projection plus the adapters of the projections stacked in it (`parts`: each projection and its width,
/// in stacking order), as one op: `[residual +] map(x) W^T + adapters`.
fn linear(
    x: &Tensor,
    w: &Frozen,
    map: InputMap,
    residual: Option<&Tensor>,
    ad: LayerAdapters,
    parts: &[(Proj, usize)],
    drop: &mut Option<Dropout>,
) -> Result<Tensor> {
    let Some((pairs, scale)) = ad else { return Ok(frozen_linear(x, w, map, residual)?) };
    let (n, width) = x.dims2()?;
    let din = map.width(width);
    let (mut lparts, mut a, mut b, mut masks, mut off) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), 0);
    for &(p, out) in parts {
        if let Some((va, vb)) = pairs.get(&p) {
            let (rank, d_in) = va.as_tensor().dims2()?;
            if d_in != din || vb.as_tensor().dims2()? != (out, rank) {
                return Err(TrainError::Data(format!("the {p:?} adapter's shapes {:?} / {:?} do not fit the layer", va.shape(), vb.shape())));
            }
            lparts.push(LoraPart { out_offset: off, width: out, rank });
            a.push(va.as_tensor().flatten_all()?);
            b.push(vb.as_tensor().flatten_all()?);
            masks.push(drop.as_mut().map(|d| d.mask(n * din)));
        }
        off += out;
    }
    if lparts.is_empty() {
        return Ok(frozen_linear(x, w, map, residual)?);
    }
    a.extend(b);
    let ab = Tensor::cat(&a, 0)?;
    let op = LoraLinear { w: w.clone(), parts: lparts, scale, masks, map };
    let x = x.contiguous()?;
    Ok(match residual {
        Some(r) => x.apply_op3(&ab, &r.contiguous()?, op)?,
        None => x.apply_op2(&ab, op)?,
    })
}

impl LoraVars {
    pub fn from_adapter(a: &LoraAdapter, device: &Device) -> Result<Self> {
        let mut layers = Vec::with_capacity(a.layers.len());
        for l in &a.layers {
            let mut m = BTreeMap::new();
            for (&p, pair) in l {
                let va = Var::from_tensor(&Tensor::from_slice(&pair.a, (pair.r, pair.d_in), device)?)?;
                let vb = Var::from_tensor(&Tensor::from_slice(&pair.b, (pair.d_out, pair.r), device)?)?;
                m.insert(p, (va, vb));
            }
            layers.push(m);
        }
        Ok(LoraVars { config: a.config.clone(), layers })
    }

    /// Whether every B matrix is zero, i.e. the adapter leaves the model unchanged.
    pub fn is_identity(&self) -> Result<bool> {
        for l in &self.layers {
            for (_, b) in l.values() {
                if b.as_tensor().abs()?.max_all()?.to_scalar::<f32>()? != 0.0 {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    pub fn to_adapter(&self) -> Result<LoraAdapter> {
        let mut layers = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            let mut m = BTreeMap::new();
            for (&p, (a, b)) in l {
                let (r, d_in) = a.as_tensor().dims2()?;
                let (d_out, _) = b.as_tensor().dims2()?;
                let a = a.as_tensor().flatten_all()?.to_vec1::<f32>()?;
                let b = b.as_tensor().flatten_all()?.to_vec1::<f32>()?;
                m.insert(p, LoraPair { a, b, r, d_in, d_out });
            }
            layers.push(m);
        }
        Ok(LoraAdapter { config: self.config.clone(), layers })
    }

    /// Every variable with a stable name (its PEFT key), in a fixed order — the order the optimizer state and the
    /// gradient-norm sum use, which keeps resumed runs bit-identical.
    pub fn named_vars(&self) -> Vec<(String, &Var)> {
        let mut out = Vec::new();
        for (l, layer) in self.layers.iter().enumerate() {
            for (p, (a, b)) in layer {
                let pre = p.peft_prefix(l);
                out.push((format!("{pre}.lora_A.weight"), a));
                out.push((format!("{pre}.lora_B.weight"), b));
            }
        }
        out
    }
}
