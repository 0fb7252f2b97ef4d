//! The output layer and the log-probability of each row's target token as one op:
//! `h (n x H) -> log softmax(h W^T)[i, target_i]`, with W the frozen `V x H` output matrix.
//!
//! The vocabulary is large (49k words), so the logits dominate memory and element-wise time. Composed from a
//! matmul and a log-prob op, every step allocated the `n x V` logits, their gradient and candle's zero-filled
//! accumulator for it, and took three exp passes over them. Here one buffer holds the logits: the forward replaces
//! them in place by `exp(logit - row max)`, and the backward turns those into the logits' gradient in place (no
//! exp) before the one product `dh = dlogits W`. (Row chunks were tried, to stay under glibc's mmap threshold: 8%
//! slower at 1x256, as gemm packs all of W for every product; keeping the buffer between steps gained nothing.)
use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::frozen::Frozen;
use super::ops::contiguous;
use crate::simd::kernels::{dot, exp_shift_sum, max_of, scale};
use crate::simd::Simd;

/// What the forward keeps for the backward: `exp(logit - row max)` (`n x V`), each row's sum of them and, with
/// `entropy`, each row's entropy.
struct Saved {
    e: Vec<f32>,
    sums: Vec<f32>,
    entropies: Vec<f32>,
}

pub struct LogProbHead {
    /// Frozen `V x H` output matrix.
    w: Frozen,
    targets: Arc<Vec<u32>>,
    /// Also output each row's entropy: the output is `n x 2` (log-prob, entropy) instead of `n`.
    entropy: bool,
    saved: Mutex<Option<Saved>>,
}

impl LogProbHead {
    pub fn new(w: Frozen, targets: Arc<Vec<u32>>) -> Self {
        LogProbHead { w, targets, entropy: false, saved: Mutex::new(None) }
    }

    pub fn with_entropy(w: Frozen, targets: Arc<Vec<u32>>) -> Self {
        LogProbHead { w, targets, entropy: true, saved: Mutex::new(None) }
    }

    /// Log-probs of the targets, and the exponentiated logits for the backward.
    /// Entropy: with `d = logit - max`, `H = ln s - sum(e d) / s` where `e = exp(d)`, `s = sum(e)`; the row is
    /// copied before it is exponentiated in place so that `sum(e d)` is one dot product.
    fn run(&self, h: &[f32], n: usize) -> Result<(Vec<f32>, Saved)> {
        if self.targets.len() != n {
            bail!("log-prob head: {} targets for {n} rows", self.targets.len());
        }
        let (v, hd) = (self.w.rows(), self.w.cols());
        if h.len() != n * hd {
            bail!("log-prob head: input of {} values for {n} x {hd}", h.len());
        }
        if let Some(&t) = self.targets.iter().find(|&&t| t as usize >= v) {
            bail!("log-prob head: target id {t} outside the vocabulary of {v}");
        }
        let (mut out, mut sums, mut e) = (vec![0f32; n], vec![0f32; n], vec![0f32; n * v]);
        let mut entropies = vec![0f32; if self.entropy { n } else { 0 }];
        self.w.forward(h, n, &mut e)?;
        let simd = Simd::active();
        let rows = e.par_chunks_mut(v).zip(out.par_iter_mut().zip(&mut sums)).zip(&self.targets[..]);
        if self.entropy {
            rows.zip(&mut entropies).for_each_init(
                || vec![0f32; v],
                |logits, (((row, (lp, sum)), &t), ent)| {
                    let max = max_of(simd, row);
                    let target = row[t as usize] - max;
                    logits.copy_from_slice(row);
                    let s = exp_shift_sum(simd, row, max);
                    let ed = dot(simd, row, logits) - max * s;
                    *lp = target - s.ln();
                    *sum = s;
                    *ent = s.ln() - ed / s;
                },
            );
        } else {
            rows.for_each(|((row, (lp, sum)), &t)| {
                let max = max_of(simd, row);
                let target = row[t as usize] - max;
                let s = exp_shift_sum(simd, row, max);
                *lp = target - s.ln();
                *sum = s;
            });
        }
        if self.entropy {
            out = out.iter().zip(&entropies).flat_map(|(&lp, &h)| [lp, h]).collect();
        }
        Ok((out, Saved { e, sums, entropies }))
    }
}

impl CustomOp1 for LogProbHead {
    fn name(&self) -> &'static str {
        "log-prob-head"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, _) = l.shape().dims2()?;
        let (out, saved) = self.run(contiguous(s, l, "log-prob head")?, n)?;
        *self.saved.lock().map_err(|_| candle_core::Error::Msg("log-prob head: poisoned lock".into()))? = Some(saved);
        let shape = if self.entropy { Shape::from((n, 2)) } else { Shape::from(n) };
        Ok((CpuStorage::F32(out), shape))
    }

    /// `dlogits_i = g_i * (onehot(target_i) - softmax_i)`, then `dh = dlogits W`. With entropy, its gradient
    /// `dH/dlogit_k = -p_k (ln p_k + H)` is added, weighted by the entropy's incoming gradient.
    fn bwd(&self, h: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (n, hd) = h.dims2()?;
        let g = grad.flatten_all()?.to_vec1::<f32>()?;
        let (gl, gh): (Vec<f32>, Vec<f32>) = if self.entropy { g.chunks(2).map(|c| (c[0], c[1])).unzip() } else { (g, vec![0.0; n]) };
        let saved = self.saved.lock().map_err(|_| candle_core::Error::Msg("log-prob head: poisoned lock".into()))?.take();
        let Saved { mut e, sums, entropies } = match saved {
            Some(s) => s,
            None => self.run(&h.contiguous()?.flatten_all()?.to_vec1::<f32>()?, n)?.1,
        };
        let mut dh = vec![0f32; n * hd];
        let v = self.w.rows();
        e.par_chunks_mut(v).zip(&gl[..]).zip(&gh[..]).enumerate().zip(&self.targets[..]).for_each(|((i, ((row, &gi), &ghi)), &t)| {
            let sum = sums[i];
            if ghi == 0.0 {
                scale(Simd::active(), row, -gi / sum);
            } else {
                // ln p_k = ln e_k - ln s; an underflowed e_k has p_k = 0 and contributes nothing.
                let (ln_s, ent) = (sum.ln(), entropies[i]);
                for x in row.iter_mut() {
                    let p = *x / sum;
                    *x = if p > 0.0 { -p * (gi + ghi * (x.ln() - ln_s + ent)) } else { 0.0 };
                }
            }
            row[t as usize] += gi;
        });
        self.w.backward(&e, n, &mut dh)?;
        Ok(Some(Tensor::from_vec(dh, (n, hd), h.device())?))
    }
}

/// Per-row log-probability of `targets` under the logits `h W^T` (`n x H` -> `n`).
pub fn target_logprobs(h: &Tensor, w: &Frozen, targets: Arc<Vec<u32>>) -> Result<Tensor> {
    h.contiguous()?.apply_op1(LogProbHead::new(w.clone(), targets))
}

/// Per-row log-probability of `targets` and entropy of the whole distribution (`n x H` -> `n x 2`).
pub fn target_logprobs_entropy(h: &Tensor, w: &Frozen, targets: Arc<Vec<u32>>) -> Result<Tensor> {
    h.contiguous()?.apply_op1(LogProbHead::with_entropy(w.clone(), targets))
}
