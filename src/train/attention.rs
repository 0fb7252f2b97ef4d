//! Causal attention with grouped KV heads as one differentiable op, reading q, k and v in place from the stacked
//! `N x (Q + 2 KV)` projection and writing `N x Q`, the layout the output projection reads. With `rope`, the op
//! rotates q and k itself (again in the backward), so that only the unrotated projection is kept for the step.
//!
//! Composed from candle ops this was about twenty graph nodes per layer (head splits, transposes, copies, two
//! batched matmuls, the softmax), and it kept every layer's `heads x T x T` probabilities for the backward pass,
//! so memory grew with the square of the length. Here each (sequence, head) is one task: the products run on row
//! chunks so that the keys after a chunk (masked anyway) are never computed, and the backward recomputes the
//! probabilities instead of keeping them.
use std::borrow::Cow;
use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::{matmul, Mat, MatMut, Par};
use super::ops::{contiguous, RopeQk};
use crate::simd::kernels::softmax;
use crate::simd::Simd;

/// Query rows per product: small enough that little masked work is done, large enough for gemm to run well.
const CHUNK: usize = 64;

#[derive(Clone, Debug)]
pub struct Attention {
    /// Sequences and (padded) length: row `s * t + i` is position `i` of sequence `s`.
    pub b: usize,
    pub t: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Applied to the scores before the softmax.
    pub scale: f32,
    /// Packed sequences (a shared prefix, then several continuations of it): per row, the keys `lo..hi` it
    /// must not see (the other continuations before its own). None: plain causal attention.
    pub holes: Option<Arc<Vec<(u32, u32)>>>,
    /// Sliding-window layers: a row at position `p` sees only keys at positions `p - window + 1 ..= p`.
    pub window: Option<usize>,
    /// Each row's position where it is not its index in the sequence (packed sequences), for the window.
    pub positions: Option<Arc<Vec<u32>>>,
    /// The rotation to apply to q and k first; None: the input is already rotated.
    pub rope: Option<RopeQk>,
}

/// Row chunks `(c0, c1)` of a length-`t` sequence.
fn chunks(t: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..t).step_by(CHUNK).map(move |c0| (c0, (c0 + CHUNK).min(t)))
}

impl Attention {
    fn width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.head_dim
    }

    fn check(&self, l: &Layout) -> Result<()> {
        let (n, w) = l.shape().dims2()?;
        if n != self.b * self.t || w != self.width() || self.kv_heads == 0 || !self.heads.is_multiple_of(self.kv_heads) {
            candle_core::bail!(
                "attention: input {n} x {w} does not fit {} x {} rows of {} heads / {} kv heads of {}",
                self.b,
                self.t,
                self.heads,
                self.kv_heads,
                self.head_dim
            );
        }
        Ok(())
    }

    /// The input with q and k rotated (borrowed as is without `rope`).
    fn rotated<'a>(&self, qkv: &'a [f32]) -> Cow<'a, [f32]> {
        match &self.rope {
            Some(r) => Cow::Owned(r.run(qkv, self.width())),
            None => Cow::Borrowed(qkv),
        }
    }

    /// Every (sequence, query head) pair: the unit of parallel work.
    fn tasks(&self) -> Vec<(usize, usize)> {
        (0..self.b).flat_map(|s| (0..self.heads).map(move |h| (s, h))).collect()
    }

    /// The kv head that query head `h` reads.
    fn group(&self, h: usize) -> usize {
        h / (self.heads / self.kv_heads)
    }

    /// q (query head `h`), k and v (its kv head) of sequence `s`, each `t x head_dim`.
    fn qkv<'a>(&self, qkv: &'a [f32], s: usize, h: usize) -> Result<[Mat<'a>; 3]> {
        let (w, hd, t, j) = (self.width(), self.head_dim, self.t, self.group(h));
        let row = s * t * w;
        Ok([
            Mat::rows_of(qkv, row + h * hd, t, hd, w)?,
            Mat::rows_of(qkv, row + (self.heads + j) * hd, t, hd, w)?,
            Mat::rows_of(qkv, row + (self.heads + self.kv_heads + j) * hd, t, hd, w)?,
        ])
    }

    /// Attention probabilities into `p` (`t x t`): row `i` holds softmax over keys `0..=i` and zeros after them up
    /// to the end of its chunk; columns past the chunk's end are not written.
    fn probs(&self, s: usize, q: Mat, k: Mat, p: &mut [f32]) -> Result<()> {
        let t = self.t;
        for (c0, c1) in chunks(t) {
            matmul(&mut MatMut::rows_of(p, c0 * t, c1 - c0, c1, t)?, q.row_block(c0, c1 - c0)?, k.row_block(0, c1)?.t(), self.scale, false, Par::Serial)?;
            for i in c0..c1 {
                let (valid, masked) = p[i * t..i * t + c1].split_at_mut(i + 1);
                let hole = self.holes.as_ref().map_or(0..0, |h| {
                    let (lo, hi) = h[s * t + i];
                    lo as usize..(hi as usize).min(i + 1)
                });
                let pos = |j: usize| self.positions.as_ref().map_or(j, |p| p[s * t + j] as usize);
                let far = |j: usize| self.window.is_some_and(|w| pos(i) >= pos(j) + w);
                // A large negative score, then an exact zero: the softmax's exp clamps its input, so a masked
                // key would otherwise keep a weight of ~1e-38.
                valid[hole.clone()].fill(-1e30);
                (0..=i).filter(|&j| far(j)).for_each(|j| valid[j] = -1e30);
                softmax(Simd::active(), valid);
                valid[hole].fill(0.0);
                (0..=i).filter(|&j| far(j)).for_each(|j| valid[j] = 0.0);
                masked.fill(0.0);
            }
        }
        Ok(())
    }
}

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        self.check(l)?;
        let qkv = self.rotated(contiguous(s, l, "attention")?);
        let qkv = &qkv[..];
        let (t, hd, qd) = (self.t, self.head_dim, self.heads * self.head_dim);
        let heads: Vec<Vec<f32>> = self
            .tasks()
            .par_iter()
            .map_init(
                || vec![0f32; t * t],
                |p, &(s, h)| -> Result<Vec<f32>> {
                    let [q, k, v] = self.qkv(qkv, s, h)?;
                    self.probs(s, q, k, p)?;
                    let mut y = vec![0f32; t * hd];
                    for (c0, c1) in chunks(t) {
                        matmul(
                            &mut MatMut::rows_of(&mut y, c0 * hd, c1 - c0, hd, hd)?,
                            Mat::rows_of(p, c0 * t, c1 - c0, c1, t)?,
                            v.row_block(0, c1)?,
                            1.0,
                            false,
                            Par::Serial,
                        )?;
                    }
                    Ok(y)
                },
            )
            .collect::<Result<_>>()?;
        let mut out = vec![0f32; self.b * t * qd];
        for (&(s, h), y) in self.tasks().iter().zip(&heads) {
            for i in 0..t {
                out[(s * t + i) * qd + h * hd..][..hd].copy_from_slice(&y[i * hd..(i + 1) * hd]);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((self.b * t, qd))))
    }

    fn bwd(&self, qkv: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op2_no_bwd(&qkv.contiguous()?, self)?))
    }
}

/// Backward (called on `(dy, qkv)`), per (sequence, head) with recomputed probabilities `P`:
/// `dP = dy V^T`, `dS = scale * P * (dP - rowsum(dP * P))`, `dq = dS K`, `dk += dS^T q`, `dv += P^T dy`.
impl CustomOp2 for Attention {
    fn name(&self) -> &'static str {
        "attention-bwd"
    }

    fn cpu_fwd(&self, gs: &CpuStorage, gl: &Layout, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        self.check(l)?;
        let (dy, qkv) = (contiguous(gs, gl, "attention-bwd")?, self.rotated(contiguous(s, l, "attention")?));
        let qkv = &qkv[..];
        let (t, hd, qd, w) = (self.t, self.head_dim, self.heads * self.head_dim, self.width());
        if dy.len() != self.b * t * qd {
            candle_core::bail!("attention-bwd: gradient of {} values for {} x {qd}", dy.len(), self.b * t);
        }
        let grads: Vec<[Vec<f32>; 3]> = self
            .tasks()
            .par_iter()
            .map_init(
                || (vec![0f32; t * t], vec![0f32; t * t]),
                |(p, ds), &(s, h)| -> Result<[Vec<f32>; 3]> {
                    let [q, k, v] = self.qkv(qkv, s, h)?;
                    self.probs(s, q, k, p)?;
                    let g = Mat::rows_of(dy, s * t * qd + h * hd, t, hd, qd)?;
                    let (mut dq, mut dk, mut dv) = (vec![0f32; t * hd], vec![0f32; t * hd], vec![0f32; t * hd]);
                    for (c0, c1) in chunks(t) {
                        let rows = c1 - c0;
                        matmul(&mut MatMut::rows_of(ds, c0 * t, rows, c1, t)?, g.row_block(c0, rows)?, v.row_block(0, c1)?.t(), 1.0, false, Par::Serial)?;
                        for i in c0..c1 {
                            let (pr, dr) = (&p[i * t..i * t + c1], &mut ds[i * t..i * t + c1]);
                            let dot: f32 = pr[..=i].iter().zip(&dr[..=i]).map(|(a, b)| a * b).sum();
                            for j in 0..=i {
                                dr[j] = self.scale * pr[j] * (dr[j] - dot);
                            }
                            dr[i + 1..].fill(0.0);
                        }
                        let (pc, dsc) = (Mat::rows_of(p, c0 * t, rows, c1, t)?, Mat::rows_of(ds, c0 * t, rows, c1, t)?);
                        matmul(&mut MatMut::rows_of(&mut dq, c0 * hd, rows, hd, hd)?, dsc, k.row_block(0, c1)?, 1.0, false, Par::Serial)?;
                        matmul(&mut MatMut::rows_of(&mut dk, 0, c1, hd, hd)?, dsc.t(), q.row_block(c0, rows)?, 1.0, true, Par::Serial)?;
                        matmul(&mut MatMut::rows_of(&mut dv, 0, c1, hd, hd)?, pc.t(), g.row_block(c0, rows)?, 1.0, true, Par::Serial)?;
                    }
                    Ok([dq, dk, dv])
                },
            )
            .collect::<Result<_>>()?;
        let mut out = vec![0f32; self.b * t * w];
        for (&(s, h), [dq, dk, dv]) in self.tasks().iter().zip(&grads) {
            let j = self.group(h);
            for i in 0..t {
                let row = &mut out[(s * t + i) * w..(s * t + i + 1) * w];
                let src = i * hd..(i + 1) * hd;
                row[h * hd..(h + 1) * hd].copy_from_slice(&dq[src.clone()]);
                let kc = (self.heads + j) * hd;
                row[kc..kc + hd].iter_mut().zip(&dk[src.clone()]).for_each(|(o, v)| *o += v);
                let vc = (self.heads + self.kv_heads + j) * hd;
                row[vc..vc + hd].iter_mut().zip(&dv[src]).for_each(|(o, v)| *o += v);
            }
        }
        // The gradient of the rotated input, rotated back.
        let out = match &self.rope {
            Some(r) => r.inverse().run(&out, w),
            None => out,
        };
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

/// Causal attention of every query head over its kv head, from the stacked projection `qkv` (rotated, or rotated
/// by `op.rope`)
/// (`B*T x (Q + 2 KV)`, right-padded sequences) to `B*T x Q`.
pub fn attention(qkv: &Tensor, op: Attention) -> Result<Tensor> {
    qkv.contiguous()?.apply_op1(op)
}
