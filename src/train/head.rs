//! The output layer and the log-probability of each row's target token as one op:
//! `h (n x H) -> log softmax(h W^T)[i, target_i]`, with W the frozen `V x H` output matrix.
//!
//! The vocabulary is large (49k words for SmolLM2, 262k for Gemma 3), so `n x V` logits kept for the backward
//! would dominate training memory (268 MB at 256 tokens on Gemma 3, and growing with every token). Instead the
//! forward takes the rows a chunk at a time (about `CHUNK_BYTES` of logits) and, when a gradient will be asked for,
//! also finishes each chunk's backward down to `h`: whatever the loss, the gradient of a row's log-prob with
//! respect to its logits is `onehot(target) - softmax`, so `dh_i = g_i (onehot - softmax_i) W` and only the
//! `n x H` products wait for the incoming `g_i`. These are the products a backward keeping the logits would
//! compute, none recomputed; the price is W's gemm packing (f32) or dequantization (quantized) once per chunk.
use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::frozen::Frozen;
use super::ops::contiguous;
use crate::simd::kernels::{dot, exp_shift_sum, max_of, scale};
use crate::simd::Simd;

/// Bytes of logits held at once (per buffer): a chunk is this many bytes' worth of rows, but at least
/// `MIN_CHUNK_ROWS`, so that each packing or dequantization of W serves enough rows to cost little next to the
/// products (Gemma 3's 262k x 640 output layer at 256 tokens: 4 chunks of 64 MB; SmolLM2's: 2 of 32 MB).
const CHUNK_BYTES: usize = 32 << 20;
const MIN_CHUNK_ROWS: usize = 64;

/// Per unit of incoming gradient, each row's gradient of `h`: of its log-prob, and of its entropy (`n x H` each;
/// the entropy's is empty without entropy).
struct Saved {
    d_logprob: Vec<f32>,
    d_entropy: Vec<f32>,
}

pub struct LogProbHead {
    /// Frozen `V x H` output matrix.
    w: Frozen,
    targets: Arc<Vec<u32>>,
    /// Also output each row's entropy: the output is `n x 2` (log-prob, entropy) instead of `n`.
    entropy: bool,
    /// Whether the forward computes the gradient products (the input is part of a graph being differentiated).
    grad: bool,
    /// Rows per chunk; `None`: as `CHUNK_BYTES` and `MIN_CHUNK_ROWS` say.
    chunk_rows: Option<usize>,
    saved: Mutex<Option<Saved>>,
}

/// Log-prob of target `t` from one row of logits; with `grad`, the row becomes `onehot(t) - softmax`.
fn logprob_row(simd: Simd, row: &mut [f32], t: usize, grad: bool) -> f32 {
    let max = max_of(simd, row);
    let target = row[t] - max;
    let s = exp_shift_sum(simd, row, max);
    if grad {
        scale(simd, row, -1.0 / s);
        row[t] += 1.0;
    }
    target - s.ln()
}

/// Log-prob of `t` and entropy from one row of logits, `logits` a scratch row of the same length. With `d = logit -
/// max`, `e = exp(d)`, `s = sum(e)`: `H = ln s - sum(e d) / s`. With `grad`, the row becomes `onehot(t) - softmax`
/// and `logits` the entropy's gradient `dH/dlogit_k = -p_k (ln p_k + H)`, where `ln p_k = d_k - ln s` (no log of
/// an underflowed `e_k`, whose `p_k = 0` contributes nothing).
fn entropy_row(simd: Simd, row: &mut [f32], logits: &mut [f32], t: usize, grad: bool) -> (f32, f32) {
    logits.copy_from_slice(row);
    let max = max_of(simd, row);
    let target = row[t] - max;
    let s = exp_shift_sum(simd, row, max);
    let ln_s = s.ln();
    let h = ln_s - (dot(simd, row, logits) - max * s) / s;
    if grad {
        // ln p_k + H = logit_k - (max + ln s - H)
        let (shift, inv) = (max + ln_s - h, 1.0 / s);
        for (g, &e) in logits.iter_mut().zip(row.iter()) {
            *g = -(e * inv) * (*g - shift);
        }
        scale(simd, row, -inv);
        row[t] += 1.0;
    }
    (target - ln_s, h)
}

impl LogProbHead {
    /// Log-probs (with entropy: log-prob, entropy pairs) of the targets, and with `grad` the gradient products.
    fn run(&self, h: &[f32], n: usize, grad: bool) -> Result<(Vec<f32>, Option<Saved>)> {
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
        let chunk = self.chunk_rows.unwrap_or((CHUNK_BYTES / (4 * v.max(1))).max(MIN_CHUNK_ROWS)).clamp(1, n.max(1));
        let (mut logprobs, mut entropies) = (vec![0f32; n], vec![0f32; if self.entropy { n } else { 0 }]);
        let mut saved = grad.then(|| Saved { d_logprob: vec![0f32; n * hd], d_entropy: vec![0f32; if self.entropy { n * hd } else { 0 }] });
        let (mut e, mut second) = (vec![0f32; chunk * v], vec![0f32; if self.entropy { chunk * v } else { 0 }]);
        let simd = Simd::active();
        for r0 in (0..n).step_by(chunk) {
            let r1 = (r0 + chunk).min(n);
            let (e, targets) = (&mut e[..(r1 - r0) * v], &self.targets[r0..r1]);
            self.w.forward(&h[r0 * hd..r1 * hd], r1 - r0, e)?;
            if self.entropy {
                let second = &mut second[..(r1 - r0) * v];
                let outs = logprobs[r0..r1].par_iter_mut().zip(&mut entropies[r0..r1]);
                e.par_chunks_mut(v).zip(second.par_chunks_mut(v)).zip(outs).zip(targets).for_each(|(((row, scratch), (lp, ent)), &t)| {
                    (*lp, *ent) = entropy_row(simd, row, scratch, t as usize, grad);
                });
            } else {
                e.par_chunks_mut(v).zip(&mut logprobs[r0..r1]).zip(targets).for_each(|((row, lp), &t)| *lp = logprob_row(simd, row, t as usize, grad));
            }
            if let Some(s) = &mut saved {
                self.w.backward(e, r1 - r0, &mut s.d_logprob[r0 * hd..r1 * hd])?;
                if self.entropy {
                    self.w.backward(&second[..(r1 - r0) * v], r1 - r0, &mut s.d_entropy[r0 * hd..r1 * hd])?;
                }
            }
        }
        let out = if self.entropy { logprobs.iter().zip(&entropies).flat_map(|(&lp, &h)| [lp, h]).collect() } else { logprobs };
        Ok((out, saved))
    }

    fn saved(&self) -> Result<std::sync::MutexGuard<'_, Option<Saved>>> {
        self.saved.lock().map_err(|_| candle_core::Error::Msg("log-prob head: poisoned lock".into()))
    }
}

impl CustomOp1 for LogProbHead {
    fn name(&self) -> &'static str {
        "log-prob-head"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, _) = l.shape().dims2()?;
        let (out, saved) = self.run(contiguous(s, l, "log-prob head")?, n, self.grad)?;
        *self.saved()? = saved;
        let shape = if self.entropy { Shape::from((n, 2)) } else { Shape::from(n) };
        Ok((CpuStorage::F32(out), shape))
    }

    /// `dh_i = g_i d_logprob_i (+ g'_i d_entropy_i)`, from the products the forward computed (recomputed if a
    /// second backward through the same op finds them taken).
    fn bwd(&self, h: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (n, hd) = h.dims2()?;
        let g = grad.flatten_all()?.to_vec1::<f32>()?;
        let saved = self.saved()?.take();
        let Saved { d_logprob: mut dh, d_entropy } = match saved {
            Some(s) => s,
            None => match self.run(&h.contiguous()?.flatten_all()?.to_vec1::<f32>()?, n, true)?.1 {
                Some(s) => s,
                None => bail!("log-prob head: no gradient products"),
            },
        };
        let width = if self.entropy { 2 } else { 1 };
        dh.par_chunks_mut(hd).zip(g.par_chunks(width)).enumerate().for_each(|(i, (row, gi))| {
            scale(Simd::active(), row, gi[0]);
            if self.entropy && gi[1] != 0.0 {
                for (x, &de) in row.iter_mut().zip(&d_entropy[i * hd..(i + 1) * hd]) {
                    *x += gi[1] * de;
                }
            }
        });
        Ok(Some(Tensor::from_vec(dh, (n, hd), h.device())?))
    }
}

fn apply(h: &Tensor, w: &Frozen, targets: Arc<Vec<u32>>, entropy: bool) -> Result<Tensor> {
    let grad = h.track_op();
    h.contiguous()?.apply_op1(LogProbHead { w: w.clone(), targets, entropy, grad, chunk_rows: None, saved: Mutex::new(None) })
}

/// Per-row log-probability of `targets` under the logits `h W^T` (`n x H` -> `n`).
pub fn target_logprobs(h: &Tensor, w: &Frozen, targets: Arc<Vec<u32>>) -> Result<Tensor> {
    apply(h, w, targets, false)
}

/// Per-row log-probability of `targets` and entropy of the whole distribution (`n x H` -> `n x 2`).
pub fn target_logprobs_entropy(h: &Tensor, w: &Frozen, targets: Arc<Vec<u32>>) -> Result<Tensor> {
    apply(h, w, targets, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 2000) as f32 / 500.0 - 2.0).collect()
    }

    /// Outputs and input gradients (under a fixed incoming gradient) with `chunk_rows` rows per chunk.
    fn run(chunk_rows: Option<usize>, entropy: bool) -> (Vec<f32>, Vec<f32>) {
        let (n, hd, v) = (13, 6, 40);
        let w = Frozen::F32(Tensor::from_vec(values(v * hd, 1), (v, hd), &Device::Cpu).unwrap());
        let x = Var::from_vec(values(n * hd, 2), (n, hd), &Device::Cpu).unwrap();
        let targets = Arc::new((0..n as u32).map(|i| i * 7 % v as u32).collect::<Vec<_>>());
        let op = LogProbHead { w, targets, entropy, grad: true, chunk_rows, saved: Mutex::new(None) };
        let y = x.as_tensor().apply_op1(op).unwrap();
        let r = Tensor::from_vec(values(y.elem_count(), 3), y.shape(), &Device::Cpu).unwrap();
        let g = (&y * r).unwrap().sum_all().unwrap().backward().unwrap();
        let dx = g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        (y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), dx)
    }

    #[test]
    fn chunked_rows_give_the_values_and_gradients_of_one_chunk() {
        for entropy in [false, true] {
            let (y1, g1) = run(None, entropy);
            assert!(g1.iter().any(|g| g.abs() > 1e-3), "a gradient to compare");
            for rows in [1, 4, 5] {
                let (y, g) = run(Some(rows), entropy);
                let worst = y.iter().zip(&y1).chain(g.iter().zip(&g1)).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(worst < 1e-5, "entropy {entropy}, {rows} rows a chunk: differs by {worst}");
            }
        }
    }
}
