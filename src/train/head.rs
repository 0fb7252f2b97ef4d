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

use super::gemm::{matmul, Mat, MatMut, Par};
use super::ops::{contiguous, cpu};
use crate::simd::kernels::{exp_shift_sum, max_of, scale};
use crate::simd::Simd;

/// What the forward keeps for the backward: `exp(logit - row max)` (`n x V`) and each row's sum of them.
struct Saved {
    e: Vec<f32>,
    sums: Vec<f32>,
}

pub struct LogProbHead {
    /// Frozen `V x H` output matrix (any 2-D layout).
    w: Tensor,
    targets: Arc<Vec<u32>>,
    saved: Mutex<Option<Saved>>,
}

impl LogProbHead {
    pub fn new(w: Tensor, targets: Arc<Vec<u32>>) -> Self {
        LogProbHead { w, targets, saved: Mutex::new(None) }
    }

    fn weight<R>(&self, f: impl FnOnce(Mat) -> Result<R>) -> Result<R> {
        let (s, l) = self.w.storage_and_layout();
        f(Mat::from_layout(cpu(&s, "log-prob head")?.as_slice::<f32>()?, l)?)
    }

    /// Log-probs of the targets, and the exponentiated logits for the backward.
    fn run(&self, h: &[f32], n: usize) -> Result<(Vec<f32>, Saved)> {
        if self.targets.len() != n {
            bail!("log-prob head: {} targets for {n} rows", self.targets.len());
        }
        self.weight(|w| {
            let (v, hd) = (w.rows, w.cols);
            if h.len() != n * hd {
                bail!("log-prob head: input of {} values for {n} x {hd}", h.len());
            }
            if let Some(&t) = self.targets.iter().find(|&&t| t as usize >= v) {
                bail!("log-prob head: target id {t} outside the vocabulary of {v}");
            }
            let (mut out, mut sums, mut e) = (vec![0f32; n], vec![0f32; n], vec![0f32; n * v]);
            matmul(&mut MatMut::full(&mut e, n, v)?, Mat::new(h, n, hd, hd, 1)?, w.t(), 1.0, false, Par::Threads)?;
            let simd = Simd::active();
            e.par_chunks_mut(v).zip(out.par_iter_mut().zip(&mut sums)).zip(&self.targets[..]).for_each(|((row, (lp, sum)), &t)| {
                let max = max_of(simd, row);
                let target = row[t as usize] - max;
                let s = exp_shift_sum(simd, row, max);
                *lp = target - s.ln();
                *sum = s;
            });
            Ok((out, Saved { e, sums }))
        })
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
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }

    /// `dlogits_i = g_i * (onehot(target_i) - softmax_i)`, then `dh = dlogits W`.
    fn bwd(&self, h: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (n, hd) = h.dims2()?;
        let g = grad.to_vec1::<f32>()?;
        let saved = self.saved.lock().map_err(|_| candle_core::Error::Msg("log-prob head: poisoned lock".into()))?.take();
        let Saved { mut e, sums } = match saved {
            Some(s) => s,
            None => self.run(&h.contiguous()?.flatten_all()?.to_vec1::<f32>()?, n)?.1,
        };
        let mut dh = vec![0f32; n * hd];
        self.weight(|w| {
            let v = w.rows;
            e.par_chunks_mut(v).zip(&g[..]).zip(&sums[..]).zip(&self.targets[..]).for_each(|(((row, &gi), &sum), &t)| {
                scale(Simd::active(), row, -gi / sum);
                row[t as usize] += gi;
            });
            matmul(&mut MatMut::full(&mut dh, n, hd)?, Mat::new(&e, n, v, v, 1)?, w, 1.0, false, Par::Threads)
        })?;
        Ok(Some(Tensor::from_vec(dh, (n, hd), h.device())?))
    }
}

/// Per-row log-probability of `targets` under the logits `h W^T` (`n x H` -> `n`).
pub fn target_logprobs(h: &Tensor, w: &Tensor, targets: Arc<Vec<u32>>) -> Result<Tensor> {
    h.contiguous()?.apply_op1(LogProbHead::new(w.clone(), targets))
}
