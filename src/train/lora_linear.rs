//! A frozen linear layer and its LoRA adapters as one differentiable op:
//! `y = x W^T + s * sum_i [(x * m_i) A_i^T B_i^T into output block i]`.
//!
//! Composed from candle ops this took about ten graph nodes per projection (two matmuls, a scale, an add, the
//! concatenations of a stacked projection), each costing the backward pass a zero-filled gradient buffer and an
//! add; here the backward computes the input gradient in place (`dy W`, then `+= (dy B) A` by accumulation) and the
//! small A and B gradients directly. The rank-r intermediates are recomputed in the backward (a few MFLOP) rather
//! than kept.
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::frozen::Frozen;
use super::gemm::{matmul, Mat, MatMut, Par};
use super::ops::{contiguous, cpu};

/// One adapted block of the output columns. The parts' A matrices are stacked by rows (`sum(rank) x in`) and their
/// B matrices flattened and concatenated (`sum(width * rank)`), in part order.
#[derive(Clone, Debug)]
pub struct LoraPart {
    pub out_offset: usize,
    pub width: usize,
    pub rank: usize,
}

pub struct LoraLinear {
    /// Frozen `out x in` weight.
    pub w: Frozen,
    pub parts: Vec<LoraPart>,
    pub scale: f32,
    /// Per part, the dropout mask over `x` (zeros and `1 / (1 - p)`), or None without dropout.
    pub masks: Vec<Option<Vec<f32>>>,
}

const OP: &str = "lora-linear";

/// Part `i`'s A (`rank x in`, a row block of the stacked A), B (`width x rank`, a slice of the flattened B) and
/// dropout mask.
struct PartView<'a> {
    part: &'a LoraPart,
    /// First row of this part's A in the stacked A, and its first column in the stacked rank-r intermediates.
    a_row: usize,
    a: Mat<'a>,
    b: Mat<'a>,
    mask: Option<&'a [f32]>,
}

impl LoraLinear {
    fn views<'a>(&'a self, a: Mat<'a>, b: &'a [f32]) -> Result<Vec<PartView<'a>>> {
        if self.masks.len() != self.parts.len() {
            bail!("{OP}: {} dropout masks for {} parts", self.masks.len(), self.parts.len());
        }
        let (mut ra, mut rb) = (0, 0);
        let mut out = Vec::with_capacity(self.parts.len());
        for (part, mask) in self.parts.iter().zip(&self.masks) {
            let av = a.row_block(ra, part.rank)?;
            let bv = Mat::rows_of(b, rb, part.width, part.rank, part.rank)?;
            out.push(PartView { part, a_row: ra, a: av, b: bv, mask: mask.as_deref() });
            ra += part.rank;
            rb += part.width * part.rank;
        }
        if ra != a.rows || rb != b.len() {
            bail!("lora-linear: parts need {ra} A rows and {rb} B values, got {} and {}", a.rows, b.len());
        }
        Ok(out)
    }
}

/// `x * mask` when the part has a dropout mask.
fn masked<'a>(x: &'a [f32], mask: Option<&[f32]>, buf: &'a mut Vec<f32>) -> &'a [f32] {
    match mask {
        Some(m) => {
            buf.clear();
            buf.extend(x.iter().zip(m).map(|(a, b)| a * b));
            buf
        }
        None => x,
    }
}

impl CustomOp3 for LoraLinear {
    fn name(&self) -> &'static str {
        "lora-linear"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, as_: &CpuStorage, al: &Layout, bs: &CpuStorage, bl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, b) = (contiguous(xs, xl, OP)?, contiguous(bs, bl, OP)?);
        let a = Mat::from_layout(as_.as_slice::<f32>()?, al)?;
        let (n, out) = (xl.shape().dims2()?.0, self.w.rows());
        let mut y = vec![0f32; n * out];
        self.w.forward(x, n, &mut y)?;
        let parts = self.views(a, b)?;
        let u = self.rank_inputs(x, a, &parts, n)?;
        for p in &parts {
            let mut yb = MatMut::rows_of(&mut y, p.part.out_offset, n, p.part.width, out)?;
            matmul(&mut yb, Mat::rows_of(&u, p.a_row, n, p.part.rank, a.rows)?, p.b.t(), 1.0, true, Par::Threads)?;
        }
        Ok((CpuStorage::F32(y), Shape::from((n, out))))
    }

    fn bwd(&self, x: &Tensor, a: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (x, b, g) = (x.contiguous()?, b.contiguous()?, grad.contiguous()?);
        let (n, din) = x.dims2()?;
        let out = g.dim(1)?;
        let ((xg, xl), (gg, gl), (bg, bl), (ag, al)) = (x.storage_and_layout(), g.storage_and_layout(), b.storage_and_layout(), a.storage_and_layout());
        let am = Mat::from_layout(cpu(&ag, OP)?.as_slice::<f32>()?, al)?;
        let (xs, gs, bs) = (contiguous(cpu(&xg, OP)?, xl, OP)?, contiguous(cpu(&gg, OP)?, gl, OP)?, contiguous(cpu(&bg, OP)?, bl, OP)?);
        let (dx, da, db) = self.backward(xs, gs, (n, din, out), am, bs)?;
        let dev = x.device();
        Ok((Some(Tensor::from_vec(dx, (n, din), dev)?), Some(Tensor::from_vec(da, a.shape(), dev)?), Some(Tensor::from_vec(db, b.shape(), dev)?)))
    }
}

impl LoraLinear {
    /// `u = s * [(x * m_i) A_i^T]_i` (`n x sum(rank)`): without dropout one product with the stacked A.
    fn rank_inputs(&self, x: &[f32], a: Mat, parts: &[PartView], n: usize) -> Result<Vec<f32>> {
        let (din, rt) = (a.cols, a.rows);
        let mut u = vec![0f32; n * rt];
        if parts.iter().all(|p| p.mask.is_none()) {
            matmul(&mut MatMut::full(&mut u, n, rt)?, Mat::new(x, n, din, din, 1)?, a.t(), self.scale, false, Par::Threads)?;
            return Ok(u);
        }
        let mut buf = Vec::new();
        for p in parts {
            let xin = Mat::new(masked(x, p.mask, &mut buf), n, din, din, 1)?;
            matmul(&mut MatMut::rows_of(&mut u, p.a_row, n, p.part.rank, rt)?, xin, p.a.t(), self.scale, false, Par::Threads)?;
        }
        Ok(u)
    }

    /// `(dx, dA, dB)` for upstream gradient `g` (`n x out`), with `v = s * [g_i B_i]_i` (`n x sum(rank)`):
    /// `dB_i = g_i^T u_i`, `dA_i = v_i^T (x * m_i)`, `dx = g W + sum_i (v_i A_i) * m_i`.
    fn backward(&self, x: &[f32], g: &[f32], (n, din, out): (usize, usize, usize), a: Mat, b: &[f32]) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        let parts = self.views(a, b)?;
        let rt = a.rows;
        let mut dx = vec![0f32; n * din];
        self.w.backward(g, n, &mut dx)?;
        let u = self.rank_inputs(x, a, &parts, n)?;
        let (mut v, mut db) = (vec![0f32; n * rt], vec![0f32; b.len()]);
        let mut rb = 0;
        for p in &parts {
            let (r, wd) = (p.part.rank, p.part.width);
            let gp = Mat::rows_of(g, p.part.out_offset, n, wd, out)?;
            matmul(&mut MatMut::rows_of(&mut v, p.a_row, n, r, rt)?, gp, p.b, self.scale, false, Par::Threads)?;
            matmul(&mut MatMut::rows_of(&mut db, rb, wd, r, r)?, gp.t(), Mat::rows_of(&u, p.a_row, n, r, rt)?, 1.0, false, Par::Threads)?;
            rb += wd * r;
        }
        let mut da = vec![0f32; rt * din];
        let (xm, vm) = (Mat::new(x, n, din, din, 1)?, Mat::new(&v, n, rt, rt, 1)?);
        if parts.iter().all(|p| p.mask.is_none()) {
            matmul(&mut MatMut::full(&mut da, rt, din)?, vm.t(), xm, 1.0, false, Par::Threads)?;
            matmul(&mut MatMut::full(&mut dx, n, din)?, vm, a, 1.0, true, Par::Threads)?;
            return Ok((dx, da, db));
        }
        let (mut buf, mut tmp) = (Vec::new(), vec![0f32; n * din]);
        for p in &parts {
            let r = p.part.rank;
            let xin = Mat::new(masked(x, p.mask, &mut buf), n, din, din, 1)?;
            let vp = Mat::rows_of(&v, p.a_row, n, r, rt)?;
            matmul(&mut MatMut::rows_of(&mut da, p.a_row * din, r, din, din)?, vp.t(), xin, 1.0, false, Par::Threads)?;
            match p.mask {
                None => matmul(&mut MatMut::full(&mut dx, n, din)?, vp, p.a, 1.0, true, Par::Threads)?,
                Some(m) => {
                    matmul(&mut MatMut::full(&mut tmp, n, din)?, vp, p.a, 1.0, false, Par::Threads)?;
                    dx.iter_mut().zip(tmp.iter().zip(m)).for_each(|(d, (t, m))| *d += t * m);
                }
            }
        }
        Ok((dx, da, db))
    }
}
