//! Differentiable ops for training on the CPU, each a fused forward kernel with an analytic backward.
//!
//! Why custom ops: candle's fused `rms_norm`, `rope`, `softmax_last_dim` record no backward (the gradient is
//! silently cut), the composed versions allocate many temporaries, and `matmul`'s backward always computes the
//! gradient of the frozen weight as well (a wasted GEMM and a weight-sized buffer per layer). Every op here is
//! checked against finite differences in `tests/it/train_ops.rs`. All ops take and return f32 tensors on the CPU.
use std::borrow::Cow;
use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::frozen::Frozen;
use crate::model::config::Activation;
use crate::simd::gelu::{geglu_bwd, gelu_mul};
use crate::simd::kernels::{dot, rms_norm as simd_rms_norm, silu_mul, swiglu_bwd};
use crate::simd::Simd;

/// The f32 elements of a contiguous layout.
pub(crate) fn contiguous<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("{op}: expects a contiguous f32 input"),
    }
}

/// A tensor's storage, which must be on the CPU.
pub(crate) fn cpu<'a>(s: &'a candle_core::Storage, op: &str) -> Result<&'a CpuStorage> {
    match s {
        candle_core::Storage::Cpu(c) => Ok(c),
        _ => candle_core::bail!("{op}: runs on the CPU only"),
    }
}

/// Rows are processed in parallel only when there is enough work to pay for the scheduling.
fn for_rows(out: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if out.len() >= 1 << 14 {
        out.par_chunks_mut(width).enumerate().for_each(|(i, r)| f(i, r));
    } else {
        out.chunks_mut(width).enumerate().for_each(|(i, r)| f(i, r));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Frozen linear: y = [residual +] map(x) W^T, backward returns only dL/dx (and dL/dresidual).

/// What a linear op applies to its input before the product: the norm or the gated activation in front of a
/// projection. Applied inside the op and again in the backward, so that the mapped input is not kept for the whole
/// step as a separate op's output would be.
#[derive(Clone)]
pub enum InputMap {
    Identity,
    RmsNorm(Arc<Vec<f32>>, f32),
    GatedAct(Activation),
}

impl InputMap {
    /// Width of the mapped rows for input rows of `width`.
    pub fn width(&self, width: usize) -> usize {
        match self {
            InputMap::GatedAct(_) => width / 2,
            _ => width,
        }
    }

    fn check(&self, width: usize, op: &str) -> Result<()> {
        match self {
            InputMap::RmsNorm(w, _) if w.len() != width => candle_core::bail!("{op}: rows of {width} for a norm of {}", w.len()),
            InputMap::GatedAct(_) if !width.is_multiple_of(2) => candle_core::bail!("{op}: gated activation of odd width {width}"),
            _ => Ok(()),
        }
    }

    /// The mapped rows of `x` (rows of `width`).
    pub(crate) fn apply<'a>(&self, x: &'a [f32], width: usize, op: &str) -> Result<Cow<'a, [f32]>> {
        self.check(width, op)?;
        Ok(match self {
            InputMap::Identity => Cow::Borrowed(x),
            InputMap::RmsNorm(w, eps) => Cow::Owned(rms_norm_rows(x, w, *eps)),
            InputMap::GatedAct(act) => Cow::Owned(gated_act_rows(x, width, *act)),
        })
    }

    /// The gradient with respect to `x` (rows of `width`) from `d`, the gradient with respect to the mapped rows.
    pub(crate) fn backward(&self, x: &[f32], width: usize, d: Vec<f32>, op: &str) -> Result<Vec<f32>> {
        self.check(width, op)?;
        Ok(match self {
            InputMap::Identity => d,
            InputMap::RmsNorm(w, eps) => rms_norm_bwd_rows(&d, x, w, *eps),
            InputMap::GatedAct(act) => gated_act_bwd_rows(&d, x, width, *act),
        })
    }
}

/// `y += r`: the residual connection a linear op ends with, so that the projection's own output is not kept.
pub(crate) fn add_residual(y: &mut [f32], r: &[f32], op: &str) -> Result<()> {
    if y.len() != r.len() {
        candle_core::bail!("{op}: residual of {} values for an output of {}", r.len(), y.len());
    }
    y.iter_mut().zip(r).for_each(|(y, r)| *y += r);
    Ok(())
}

struct FrozenLinear {
    w: Frozen,
    map: InputMap,
}

const FROZEN: &str = "frozen-linear";

impl FrozenLinear {
    fn forward(&self, s: &CpuStorage, l: &Layout) -> Result<(Vec<f32>, Shape)> {
        let (n, k) = l.shape().dims2()?;
        let x = self.map.apply(contiguous(s, l, FROZEN)?, k, FROZEN)?;
        if self.map.width(k) != self.w.cols() {
            candle_core::bail!("{FROZEN}: input has {} features, weight expects {}", self.map.width(k), self.w.cols());
        }
        let mut y = vec![0f32; n * self.w.rows()];
        self.w.forward(&x, n, &mut y)?;
        Ok((y, Shape::from((n, self.w.rows()))))
    }

    fn input_grad(&self, x: &Tensor, grad: &Tensor) -> Result<Tensor> {
        let x = x.contiguous()?;
        let (n, k) = x.dims2()?;
        let g = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let mut dx = vec![0f32; n * self.w.cols()];
        self.w.backward(&g, n, &mut dx)?;
        let (xs, xl) = x.storage_and_layout();
        let dx = self.map.backward(contiguous(cpu(&xs, FROZEN)?, xl, FROZEN)?, k, dx, FROZEN)?;
        Tensor::from_vec(dx, (n, k), x.device())
    }
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        FROZEN
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (y, shape) = self.forward(s, l)?;
        Ok((CpuStorage::F32(y), shape))
    }
    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(self.input_grad(x, grad)?))
    }
}

impl CustomOp2 for FrozenLinear {
    fn name(&self) -> &'static str {
        FROZEN
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout, rs: &CpuStorage, rl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (mut y, shape) = self.forward(s, l)?;
        add_residual(&mut y, contiguous(rs, rl, FROZEN)?, FROZEN)?;
        Ok((CpuStorage::F32(y), shape))
    }
    fn bwd(&self, x: &Tensor, _r: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(self.input_grad(x, grad)?), Some(grad.clone())))
    }
}

/// `[residual +] map(x) W^T` for a frozen `w` (`out x in`); `x` is `n x in` before `map`. The backward pass computes
/// the input gradient (and the residual's) only.
pub fn frozen_linear(x: &Tensor, w: &Frozen, map: InputMap, residual: Option<&Tensor>) -> Result<Tensor> {
    let op = FrozenLinear { w: w.clone(), map };
    match residual {
        Some(r) => x.contiguous()?.apply_op2(&r.contiguous()?, op),
        None => x.contiguous()?.apply_op1(op),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// RMSNorm with a frozen weight: y = x * inv * w, inv = 1 / sqrt(mean(x^2) + eps).

#[derive(Clone)]
struct RmsNorm {
    w: Arc<Vec<f32>>,
    eps: f32,
}

impl CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok((CpuStorage::F32(rms_norm_rows(contiguous(s, l, "rms-norm")?, &self.w, self.eps)), l.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op2_no_bwd(&x.contiguous()?, &RmsNormBwd(self.clone()))?))
    }
}

struct RmsNormBwd(RmsNorm);

impl CustomOp2 for RmsNormBwd {
    fn name(&self) -> &'static str {
        "rms-norm-bwd"
    }
    fn cpu_fwd(&self, gs: &CpuStorage, gl: &Layout, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (g, x) = (contiguous(gs, gl, "rms-norm-bwd")?, contiguous(xs, xl, "rms-norm-bwd")?);
        Ok((CpuStorage::F32(rms_norm_bwd_rows(g, x, &self.0.w, self.0.eps)), xl.shape().clone()))
    }
}

/// RMSNorm of each row of `x` (rows as wide as `w`), with the inference runtime's kernel: training and sampling
/// normalize alike.
fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let h = w.len();
    let mut out = vec![0f32; x.len()];
    let simd = Simd::active();
    for_rows(&mut out, h, |i, o| simd_rms_norm(simd, &x[i * h..(i + 1) * h], w, eps, o));
    out
}

/// The input gradient of `rms_norm_rows` for the output gradient `g`:
/// `dx_j = inv * g_j w_j - x_j * inv^3 * mean_k(g_k w_k x_k)`.
fn rms_norm_bwd_rows(g: &[f32], x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let h = w.len();
    let simd = Simd::active();
    let mut out = vec![0f32; x.len()];
    for_rows(&mut out, h, |i, o| {
        let (xr, gr) = (&x[i * h..(i + 1) * h], &g[i * h..(i + 1) * h]);
        let inv = 1.0 / (dot(simd, xr, xr) / h as f32 + eps).sqrt();
        let dot = (0..h).map(|j| gr[j] * w[j] * xr[j]).sum::<f32>() / h as f32;
        let c = inv * inv * inv * dot;
        for j in 0..h {
            o[j] = inv * gr[j] * w[j] - xr[j] * c;
        }
    });
    out
}

/// RMSNorm over the last dimension with a frozen weight `w`.
pub fn rms_norm(x: &Tensor, w: Arc<Vec<f32>>, eps: f32) -> Result<Tensor> {
    x.contiguous()?.apply_op1(RmsNorm { w, eps })
}

// ---------------------------------------------------------------------------------------------------------------
// Rotary embedding (HF half-split form) on the q and k heads of a stacked qkv matrix.

/// cos/sin tables `[pos][head_dim / 2]`, shared by every layer.
#[derive(Debug)]
pub struct RopeTables {
    pub half: usize,
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
}

impl RopeTables {
    pub fn new(inv_freq: &[f32], max_len: usize) -> Self {
        let mut cos = Vec::with_capacity(max_len * inv_freq.len());
        let mut sin = Vec::with_capacity(max_len * inv_freq.len());
        for p in 0..max_len {
            for &f in inv_freq {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        RopeTables { half: inv_freq.len(), cos, sin }
    }
    pub fn max_len(&self) -> usize {
        self.cos.len() / self.half.max(1)
    }
}

/// The rotation of the q and k heads of a stacked qkv matrix, as its own op (`rope_qk`) or applied inside the
/// attention op (`Attention::rope`).
#[derive(Clone, Debug)]
pub struct RopeQk {
    tables: Arc<RopeTables>,
    /// Number of heads at the start of each row that rotate (q heads + k heads); the rest (v) pass through.
    rot_heads: usize,
    seq_len: usize,
    /// Each row's position, for packed sequences (else `row % seq_len`).
    positions: Option<Arc<Vec<u32>>>,
    /// The backward pass is the inverse rotation.
    inverse: bool,
}

impl RopeQk {
    /// The rotation of `rows` rows: rows in sequence order, row `i` at position `i % seq_len` unless `positions`
    /// gives each row's.
    pub fn new(tables: Arc<RopeTables>, rot_heads: usize, seq_len: usize, positions: Option<Arc<Vec<u32>>>, rows: usize) -> Result<Self> {
        let longest = positions.as_ref().map_or(seq_len, |p| p.iter().map(|&x| x as usize + 1).max().unwrap_or(0));
        if longest > tables.max_len() {
            candle_core::bail!("rope-qk: position {longest} exceeds the rope table of {}", tables.max_len());
        }
        if positions.as_ref().is_some_and(|p| p.len() != rows) {
            candle_core::bail!("rope-qk: {} positions for {rows} rows", positions.as_ref().map_or(0, |p| p.len()));
        }
        Ok(RopeQk { tables, rot_heads, seq_len, positions, inverse: false })
    }

    /// The opposite rotation (the backward of this one).
    pub(crate) fn inverse(&self) -> Self {
        RopeQk { inverse: !self.inverse, ..self.clone() }
    }

    /// The rotated rows of `x` (rows of `width`).
    pub(crate) fn run(&self, x: &[f32], width: usize) -> Vec<f32> {
        let h = self.tables.half;
        let sign = if self.inverse { -1.0 } else { 1.0 };
        let mut out = x.to_vec();
        for_rows(&mut out, width, |row, o| {
            let pos = self.positions.as_ref().map_or(row % self.seq_len, |p| p[row] as usize);
            let (c, s) = (&self.tables.cos[pos * h..(pos + 1) * h], &self.tables.sin[pos * h..(pos + 1) * h]);
            for head in o[..self.rot_heads * 2 * h].chunks_exact_mut(2 * h) {
                let (a, b) = head.split_at_mut(h);
                for i in 0..h {
                    let (x0, x1, si) = (a[i], b[i], sign * s[i]);
                    a[i] = x0 * c[i] - x1 * si;
                    b[i] = x0 * si + x1 * c[i];
                }
            }
        });
        out
    }
}

impl CustomOp1 for RopeQk {
    fn name(&self) -> &'static str {
        "rope-qk"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(s, l, "rope-qk")?;
        let width = l.shape().dims().last().copied().unwrap_or(1);
        Ok((CpuStorage::F32(self.run(x, width)), l.shape().clone()))
    }
    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&self.inverse())?))
    }
}

/// Rotates the first `rot_heads` heads of every row of `qkv` (`(B*T) x width`, rows in sequence order, row `i` at
/// position `i % seq_len`); the remaining columns (the v heads) are copied unchanged.
pub fn rope_qk(qkv: &Tensor, tables: Arc<RopeTables>, rot_heads: usize, seq_len: usize) -> Result<Tensor> {
    rope_qk_at(qkv, tables, rot_heads, seq_len, None)
}

/// `rope_qk` with each row's position given (`positions[row]`), for packed sequences.
pub fn rope_qk_at(qkv: &Tensor, tables: Arc<RopeTables>, rot_heads: usize, seq_len: usize, positions: Option<Arc<Vec<u32>>>) -> Result<Tensor> {
    let op = RopeQk::new(tables, rot_heads, seq_len, positions, qkv.dims()[0])?;
    qkv.contiguous()?.apply_op1(op)
}

// ---------------------------------------------------------------------------------------------------------------
// Gated MLP activation: (n x 2I) stacked [gate | up] -> act(gate) * up (SwiGLU, or Gemma's GeGLU).

struct GatedAct(Activation);

impl CustomOp1 for GatedAct {
    fn name(&self) -> &'static str {
        "gated-act"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, w) = l.shape().dims2()?;
        Ok((CpuStorage::F32(gated_act_rows(contiguous(s, l, "gated-act")?, w, self.0)), Shape::from((n, w / 2))))
    }
    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op2_no_bwd(x, &GatedActBwd(self.0))?))
    }
}

struct GatedActBwd(Activation);

impl CustomOp2 for GatedActBwd {
    fn name(&self) -> &'static str {
        "gated-act-bwd"
    }
    fn cpu_fwd(&self, gs: &CpuStorage, gl: &Layout, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (dy, x) = (contiguous(gs, gl, "gated-act-bwd")?, contiguous(xs, xl, "gated-act-bwd")?);
        let (n, w) = xl.shape().dims2()?;
        Ok((CpuStorage::F32(gated_act_bwd_rows(dy, x, w, self.0)), Shape::from((n, w))))
    }
}

/// `act(gate) * up` of each row of `x` (rows of `w` = [gate | up]).
fn gated_act_rows(x: &[f32], w: usize, act: Activation) -> Vec<f32> {
    let i = w / 2;
    let mut out = vec![0f32; x.len() / 2];
    let simd = Simd::active();
    for_rows(&mut out, i, |r, o| match act {
        Activation::Silu => silu_mul(simd, &x[r * w..(r + 1) * w], 1, o),
        Activation::GeluTanh => gelu_mul(simd, &x[r * w..(r + 1) * w], 1, o),
    });
    out
}

/// The input gradient of `gated_act_rows`: d gate = dy * up * act'(g), d up = dy * act(g).
fn gated_act_bwd_rows(dy: &[f32], x: &[f32], w: usize, act: Activation) -> Vec<f32> {
    let i = w / 2;
    let mut out = vec![0f32; x.len()];
    let simd = Simd::active();
    for_rows(&mut out, w, |r, o| match act {
        Activation::Silu => swiglu_bwd(simd, &x[r * w..(r + 1) * w], &dy[r * i..(r + 1) * i], o),
        Activation::GeluTanh => geglu_bwd(simd, &x[r * w..(r + 1) * w], &dy[r * i..(r + 1) * i], o),
    });
    out
}

/// `silu(gate) * up` of a stacked `n x 2I` gate/up projection output.
pub fn swiglu(gate_up: &Tensor) -> Result<Tensor> {
    gated_act(gate_up, Activation::Silu)
}

/// `act(gate) * up` of a stacked `n x 2I` gate/up projection output.
pub fn gated_act(gate_up: &Tensor, act: Activation) -> Result<Tensor> {
    gate_up.contiguous()?.apply_op1(GatedAct(act))
}
