//! The decoder-only transformer (Llama, Qwen2, Qwen3, Gemma 3): a ragged batch of sequences in, logits out.
//!
//! Legend: T = token rows in the batch (all sequences' new tokens concatenated), H = hidden size,
//! Q = heads * head_dim, KV = kv_heads * head_dim, I = intermediate size, V = vocab size.
use rayon::prelude::*;

use super::config::{Activation, ModelConfig};
use super::error::{ModelError, Result};
use super::kv_cache::KvCache;
use super::linear::Input;
use super::lora::{LoraAdapter, Stacked};
use super::rope::Rope;
use super::weights::Weights;
use crate::simd::attention::{attend_rows, AttendRows, RowQuery};
use crate::simd::gelu::gelu_mul;
use crate::simd::kernels::{rms_norm, scale, silu_mul};
use crate::simd::Simd;

pub struct Transformer {
    pub cfg: ModelConfig,
    pub weights: Weights,
    /// LoRA deltas added after each projection; `None` runs the base model.
    pub adapter: Option<LoraAdapter>,
    /// Instruction-set path of the kernels (the process's choice unless a caller sets another, e.g. tests
    /// comparing paths).
    pub simd: Simd,
    rope: Rope,
    /// Gemma's sliding-window layers rotate with their own base.
    rope_local: Option<Rope>,
}

/// Which positions of a sequence need logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    None,
    Last,
    All,
}

/// New tokens for one sequence; they are appended to `cache`.
pub struct SeqInput<'a> {
    pub cache: &'a mut KvCache,
    pub tokens: &'a [u32],
    pub logits: Logits,
}

/// Raw pointer for writing disjoint output chunks from rayon tasks.
#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// SAFETY: each task writes only its own chunk.
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

impl Transformer {
    pub fn new(cfg: ModelConfig, weights: Weights) -> Self {
        let (rope, rope_local) = (Rope::new(&cfg), Rope::local(&cfg));
        Transformer { cfg, weights, adapter: None, simd: Simd::active(), rope, rope_local }
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.cfg.num_layers, self.cfg.kv_dim())
    }

    /// Runs the new tokens of every sequence through the model, appending to their caches.
    /// Returns, per sequence, the requested logits rows (`[rows][V]` flattened).
    pub fn forward(&self, batch: &mut [SeqInput]) -> Result<Vec<Vec<f32>>> {
        let cfg = &self.cfg;
        let simd = self.simd;
        let (h, qd, kvd) = (cfg.hidden_size, cfg.q_dim(), cfg.kv_dim());
        // Row bookkeeping: which sequence and position each of the T rows belongs to.
        let mut rows: Vec<(usize, usize)> = Vec::new();
        for (b, s) in batch.iter().enumerate() {
            let start = s.cache.len();
            if start + s.tokens.len() > cfg.max_position_embeddings {
                return Err(ModelError::ContextOverflow { tokens: start + s.tokens.len(), context: cfg.max_position_embeddings });
            }
            for (i, &t) in s.tokens.iter().enumerate() {
                if t as usize >= cfg.vocab_size {
                    return Err(ModelError::Other(format!("token id {t} is outside the vocabulary of {} tokens", cfg.vocab_size)));
                }
                rows.push((b, start + i));
            }
        }
        let t_rows = rows.len();
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); batch.len()];
        if t_rows == 0 {
            return Ok(out);
        }

        let mut x = vec![0f32; t_rows * h]; // T x H
        let mut r = 0;
        for s in batch.iter() {
            for &tok in s.tokens {
                self.weights.embed.row_f32(tok as usize, &mut x[r * h..(r + 1) * h]);
                r += 1;
            }
        }
        if let Some(k) = cfg.embed_scale() {
            scale(simd, &mut x, k);
        }

        let mut xn = vec![0f32; t_rows * h];
        let mut qkv = vec![0f32; t_rows * (qd + 2 * kvd)];
        let mut attn = vec![0f32; t_rows * qd];
        let mut proj = vec![0f32; t_rows * h];
        let inter = cfg.intermediate_size;
        let mut gu = vec![0f32; t_rows * 2 * inter];
        let mut act = vec![0f32; t_rows * inter];
        let mut normed = vec![0f32; qd];

        for (l, lw) in self.weights.layers.iter().enumerate() {
            rms_norm(simd, &x, &lw.attn_norm, cfg.rms_norm_eps, &mut xn);
            lw.qkv.matmul(simd, &Input::new(&xn, t_rows, h), &mut qkv);
            self.lora(l, Stacked::Qkv, &xn, t_rows, &mut qkv);
            let w = qd + 2 * kvd;
            let rope = match (&self.rope_local, cfg.window(l)) {
                (Some(local), Some(_)) => local,
                _ => &self.rope,
            };
            for (ri, row) in qkv.chunks_exact_mut(w).enumerate() {
                if let Some(bias) = &lw.qkv_bias {
                    row.iter_mut().zip(bias).for_each(|(a, b)| *a += b);
                }
                let pos = rows[ri].1;
                let (q, rest) = row.split_at_mut(qd);
                let k = &mut rest[..kvd];
                if let Some((qn, kn)) = &lw.qk_norm {
                    // Every head normalized with the same `head_dim` weights (the kernel's rows are `w.len()` wide).
                    rms_norm(simd, q, qn, cfg.rms_norm_eps, &mut normed[..qd]);
                    q.copy_from_slice(&normed[..qd]);
                    rms_norm(simd, k, kn, cfg.rms_norm_eps, &mut normed[..kvd]);
                    k.copy_from_slice(&normed[..kvd]);
                }
                rope.apply(simd, q, pos);
                rope.apply(simd, k, pos);
            }
            for (ri, row) in qkv.chunks_exact(w).enumerate() {
                batch[rows[ri].0].cache.push(l, &row[qd..qd + kvd], &row[qd + kvd..]);
            }
            self.attention(l, batch, &rows, &qkv, &mut attn);
            lw.o.matmul(simd, &Input::new(&attn, t_rows, qd), &mut proj);
            self.lora(l, Stacked::O, &attn, t_rows, &mut proj);
            add_residual(simd, &mut x, &proj, lw.post_norms.as_ref().map(|p| &p.0[..]), cfg.rms_norm_eps, &mut xn);

            rms_norm(simd, &x, &lw.mlp_norm, cfg.rms_norm_eps, &mut xn);
            lw.gate_up.matmul(simd, &Input::new(&xn, t_rows, h), &mut gu);
            self.lora(l, Stacked::GateUp, &xn, t_rows, &mut gu);
            match cfg.arch.activation() {
                Activation::Silu => silu_mul(simd, &gu, t_rows, &mut act),
                Activation::GeluTanh => gelu_mul(simd, &gu, t_rows, &mut act),
            }
            lw.down.matmul(simd, &Input::new(&act, t_rows, inter), &mut proj);
            self.lora(l, Stacked::Down, &act, t_rows, &mut proj);
            add_residual(simd, &mut x, &proj, lw.post_norms.as_ref().map(|p| &p.1[..]), cfg.rms_norm_eps, &mut xn);
        }
        for s in batch.iter_mut() {
            s.cache.advance(s.tokens.len());
        }

        // Only rows whose logits are wanted go through the (large) output layer.
        let mut want: Vec<usize> = Vec::new();
        let mut r = 0;
        for s in batch.iter() {
            let n = s.tokens.len();
            match s.logits {
                Logits::None => {}
                Logits::Last => want.push(r + n - 1),
                Logits::All => want.extend(r..r + n),
            }
            r += n;
        }
        if want.is_empty() {
            return Ok(out);
        }
        let mut sel = vec![0f32; want.len() * h];
        for (i, &wr) in want.iter().enumerate() {
            sel[i * h..(i + 1) * h].copy_from_slice(&x[wr * h..(wr + 1) * h]);
        }
        let mut seln = vec![0f32; sel.len()];
        rms_norm(simd, &sel, &self.weights.norm, cfg.rms_norm_eps, &mut seln);
        let v = cfg.vocab_size;
        let mut logits = vec![0f32; want.len() * v];
        self.weights.lm_head().matmul(simd, &Input::new(&seln, want.len(), h), &mut logits);
        for (i, &wr) in want.iter().enumerate() {
            out[rows[wr].0].extend_from_slice(&logits[i * v..(i + 1) * v]);
        }
        Ok(out)
    }

    #[inline]
    fn lora(&self, layer: usize, stacked: Stacked, x: &[f32], rows: usize, out: &mut [f32]) {
        if let Some(a) = &self.adapter {
            a.add_deltas_with(self.simd, layer, stacked, &self.cfg, x, rows, out);
        }
    }

    /// Causal attention of every row over its own sequence's cache (positions `0..=pos`, or the last `window` of
    /// them in a sliding-window layer).
    fn attention(&self, layer: usize, batch: &[SeqInput], rows: &[(usize, usize)], qkv: &[f32], out: &mut [f32]) {
        let cfg = &self.cfg;
        let (nh, hd, qd, kvd) = (cfg.num_heads, cfg.head_dim, cfg.q_dim(), cfg.kv_dim());
        let group = nh / cfg.num_kv_heads;
        let w = qd + 2 * kvd;
        let scale = cfg.attn_scale();
        let window = cfg.window(layer);
        let ptr = SyncPtr(out.as_mut_ptr());
        let simd = self.simd;
        // With several rows, the heads sharing a key/value head go together (each key and value read once for
        // all of them), and so do rows whose caches share a prefix (episodes forked from one prompt), a few at a
        // time: the shared keys and values are then read once per block for all of them. A single row keeps one
        // head per task, so that two threads share its few tasks evenly.
        let (per, rows_per_task) = if rows.len() >= 4 { (group, (rows.len() / 8).clamp(1, 8)) } else { (1, 1) };
        let shared_of = |ri: usize| {
            let [(k, _), _] = batch[rows[ri].0].cache.parts(layer);
            (k.as_ptr() as usize, k.len())
        };
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by_key(|&ri| shared_of(ri));
        let mut chunks: Vec<&[usize]> = Vec::new();
        let mut i = 0;
        while i < order.len() {
            let mut j = i + 1;
            let shared = shared_of(order[i]);
            while j < order.len() && j - i < rows_per_task && shared.1 > 0 && shared_of(order[j]) == shared {
                j += 1;
            }
            chunks.push(&order[i..j]);
            i = j;
        }
        let work = |scores: &mut Vec<f32>, idx: usize| {
            let p = ptr;
            let (chunk, head) = (chunks[idx / (nh / per)], (idx % (nh / per)) * per);
            let mut queries: Vec<RowQuery> = chunk
                .iter()
                .map(|&ri| {
                    let (b, pos) = rows[ri];
                    let q = &qkv[ri * w + head * hd..ri * w + (head + per) * hd];
                    // SAFETY: each (row, heads) pair belongs to one task, which alone writes
                    // out[ri*qd + head*hd .. + per*hd].
                    let out = unsafe { std::slice::from_raw_parts_mut(p.0.add(ri * qd + head * hd), per * hd) };
                    let start = window.map_or(0, |w| (pos + 1).saturating_sub(w));
                    RowQuery { q, own: batch[b].cache.parts(layer)[1], start, n: pos + 1, out }
                })
                .collect();
            let shared = batch[rows[chunk[0]].0].cache.parts(layer)[0];
            let off = (head / group) * hd;
            attend_rows(simd, AttendRows { rows: &mut queries, heads: per, shared, stride: kvd, off, scale, scores });
        };
        let tasks = chunks.len() * (nh / per);
        // Decode of a single sequence has only `heads` tasks, but each reads the whole cache: worth both threads.
        if tasks * (rows.last().map_or(0, |r| r.1) + 1) < 512 {
            let mut scores = Vec::new();
            (0..tasks).for_each(|i| work(&mut scores, i));
        } else {
            (0..tasks).into_par_iter().for_each_init(Vec::new, work);
        }
    }
}

/// `x += y`, or `x += norm(y)` with Gemma's post-norm weights (`scratch` holds the normed rows).
fn add_residual(simd: Simd, x: &mut [f32], y: &[f32], post_norm: Option<&[f32]>, eps: f32, scratch: &mut [f32]) {
    let y = match post_norm {
        Some(w) => {
            rms_norm(simd, y, w, eps, scratch);
            &scratch[..y.len()]
        }
        None => y,
    };
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}
