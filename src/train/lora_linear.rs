//! A frozen linear layer and its LoRA adapters as one differentiable op:
//! `y = [r +] x W^T + s * sum_i [(x * m_i) A_i^T B_i^T into output block i]`, with `x = map(input)` (the norm or
//! gated activation in front of the projection, `ops::InputMap`) and `r` the residual stream it adds to.
//!
//! Composed from candle ops this took about ten graph nodes per projection (two matmuls, a scale, an add, the
//! concatenations of a stacked projection), each costing the backward pass a zero-filled gradient buffer and an
//! add; here the backward computes the input gradient in place (`dy W`, then `+= (dy B) A` by accumulation) and the
//! small A and B gradients directly. The rank-r intermediates, the mapped input and the
//! projection's own output are recomputed in the backward or never stored (a few MFLOP, and element-wise work)
//! rather than kept for the whole step: on a Llama-shaped model that is a third of a layer's activations.
//!
//! The adapters' A and B come as one tensor: the stacked A (`sum(rank) x in`) flattened, then the B values.
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::frozen::Frozen;
use super::gemm::{matmul, Mat, MatMut, Par};
use super::ops::{add_residual, contiguous, cpu, InputMap};

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
    /// Applied to the op's input to give `x`.
    pub map: InputMap,
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

impl LoraLinear {
    /// The stacked A (`sum(rank) x din`) and the B values of `ab`.
    fn split<'a>(&self, ab: &'a [f32], din: usize) -> Result<(Mat<'a>, &'a [f32])> {
        let rt: usize = self.parts.iter().map(|p| p.rank).sum();
        if ab.len() < rt * din {
            bail!("{OP}: {} adapter values for A of {rt} x {din}", ab.len());
        }
        let (a, b) = ab.split_at(rt * din);
        Ok((Mat::new(a, rt, din, din, 1)?, b))
    }

    fn forward(&self, xs: &CpuStorage, xl: &Layout, abs: &CpuStorage, abl: &Layout) -> Result<(Vec<f32>, Shape)> {
        let (n, k) = xl.shape().dims2()?;
        let x = self.map.apply(contiguous(xs, xl, OP)?, k, OP)?;
        let (din, out) = (self.map.width(k), self.w.rows());
        let (a, b) = self.split(contiguous(abs, abl, OP)?, din)?;
        let mut y = vec![0f32; n * out];
        self.w.forward(&x, n, &mut y)?;
        let parts = self.views(a, b)?;
        let u = self.rank_inputs(&x, a, &parts, n)?;
        for p in &parts {
            let mut yb = MatMut::rows_of(&mut y, p.part.out_offset, n, p.part.width, out)?;
            matmul(&mut yb, Mat::rows_of(&u, p.a_row, n, p.part.rank, a.rows)?, p.b.t(), 1.0, true, Par::Threads)?;
        }
        Ok((y, Shape::from((n, out))))
    }

    /// Gradients of the op's input and of `ab`.
    fn grads(&self, x: &Tensor, ab: &Tensor, grad: &Tensor) -> Result<(Tensor, Tensor)> {
        let (x, ab, g) = (x.contiguous()?, ab.contiguous()?, grad.contiguous()?);
        let (n, k) = x.dims2()?;
        let (din, out) = (self.map.width(k), g.dim(1)?);
        let ((xg, xl), (gg, gl), (abg, abl)) = (x.storage_and_layout(), g.storage_and_layout(), ab.storage_and_layout());
        let (xs, gs) = (contiguous(cpu(&xg, OP)?, xl, OP)?, contiguous(cpu(&gg, OP)?, gl, OP)?);
        let (a, b) = self.split(contiguous(cpu(&abg, OP)?, abl, OP)?, din)?;
        let xm = self.map.apply(xs, k, OP)?;
        let (dxm, mut dab, db) = self.backward(&xm, gs, (n, din, out), a, b)?;
        let dx = self.map.backward(xs, k, dxm, OP)?;
        dab.extend(db);
        let dev = x.device();
        Ok((Tensor::from_vec(dx, (n, k), dev)?, Tensor::from_vec(dab, ab.shape(), dev)?))
    }
}

impl CustomOp2 for LoraLinear {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, abs: &CpuStorage, abl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (y, shape) = self.forward(xs, xl, abs, abl)?;
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(&self, x: &Tensor, ab: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dab) = self.grads(x, ab, grad)?;
        Ok((Some(dx), Some(dab)))
    }
}

/// With a residual as the third input.
impl CustomOp3 for LoraLinear {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, abs: &CpuStorage, abl: &Layout, rs: &CpuStorage, rl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (mut y, shape) = self.forward(xs, xl, abs, abl)?;
        add_residual(&mut y, contiguous(rs, rl, OP)?, OP)?;
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(&self, x: &Tensor, ab: &Tensor, _r: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dab) = self.grads(x, ab, grad)?;
        Ok((Some(dx), Some(dab), Some(grad.clone())))
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
