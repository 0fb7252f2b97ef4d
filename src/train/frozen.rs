//! Frozen base weights for training: f32 tensors, or the checkpoint's quantized blocks themselves (the QLoRA idea).
//!
//! Quantized weights are multiplied by the inference kernels in the forward pass (each block dequantized in
//! registers) and dequantized a tile of rows at a time in the backward pass, so training holds about the quantized
//! model's size in weights instead of 4 bytes a parameter. Both forms compute the same function: dequantization
//! is exact, only the summation order differs.
use std::sync::Arc;

use candle_core::{Device, Result, Tensor};
use rayon::prelude::*;

use super::gemm::{matmul, Mat, MatMut, Par};
use super::ops::cpu;
use crate::model::linear::{Input, Matrix, WeightData};
use crate::simd::Simd;

/// Rows of a quantized weight dequantized at once in the backward pass: enough for gemm to run at full speed,
/// few enough that the tile (256 x in f32) stays small next to the activations.
const TILE: usize = 256;

/// How a training model holds its frozen weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BaseWeights {
    /// As the checkpoint stores them: quantized blocks stay quantized, f32/f16/bf16 become f32.
    #[default]
    AsStored,
    /// Everything expanded to f32 (4 bytes a parameter), multiplied by gemm in both passes.
    F32,
}

/// A frozen `out x in` weight.
#[derive(Clone)]
pub enum Frozen {
    /// f32 in whatever 2-D layout gemm runs fastest on for this matrix.
    F32(Tensor),
    /// The checkpoint's blocks, shared with the inference model that loaded them.
    Quantized(Arc<Matrix>),
}

impl Frozen {
    /// `m` in the form `base` asks for; `col_major` stores an f32 copy transposed in memory (see `TrainModel::new`).
    pub fn new(m: &Matrix, base: BaseWeights, col_major: bool) -> Result<Self> {
        if base == BaseWeights::AsStored && !matches!(m.data, WeightData::F32(_)) {
            return Ok(Frozen::Quantized(Arc::new(m.clone())));
        }
        let t = Tensor::from_vec(m.to_f32(), (m.rows, m.cols), &Device::Cpu)?;
        Ok(Frozen::F32(if col_major { t.t()?.contiguous()?.t()? } else { t }))
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        match self {
            Frozen::F32(t) => t.dims()[0],
            Frozen::Quantized(m) => m.rows,
        }
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        match self {
            Frozen::F32(t) => t.dims()[1],
            Frozen::Quantized(m) => m.cols,
        }
    }

    /// Bytes of weight data held.
    pub fn storage_bytes(&self) -> usize {
        match self {
            Frozen::F32(t) => t.elem_count() * 4,
            Frozen::Quantized(m) => m.storage_bytes(),
        }
    }

    fn with_f32<R>(t: &Tensor, f: impl FnOnce(Mat) -> Result<R>) -> Result<R> {
        let (s, l) = t.storage_and_layout();
        f(Mat::from_layout(cpu(&s, "frozen weight")?.as_slice::<f32>()?, l)?)
    }

    /// `y = x W^T` (`n x out`) for a contiguous `x` (`n x in`).
    pub fn forward(&self, x: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
        let (out, din) = (self.rows(), self.cols());
        if x.len() != n * din || y.len() != n * out {
            candle_core::bail!("frozen weight {out} x {din}: input of {} values and output of {} for {n} rows", x.len(), y.len());
        }
        match self {
            Frozen::F32(t) => Self::with_f32(t, |w| matmul(&mut MatMut::full(y, n, out)?, Mat::new(x, n, din, din, 1)?, w.t(), 1.0, false, Par::Threads)),
            Frozen::Quantized(m) => {
                m.matmul(Simd::active(), &Input::new(x, n, din), y);
                Ok(())
            }
        }
    }

    /// `dx = g W` (`n x in`) for a contiguous `g` (`n x out`).
    pub fn backward(&self, g: &[f32], n: usize, dx: &mut [f32]) -> Result<()> {
        let (out, din) = (self.rows(), self.cols());
        if g.len() != n * out || dx.len() != n * din {
            candle_core::bail!("frozen weight {out} x {din}: gradient of {} values and input gradient of {} for {n} rows", g.len(), dx.len());
        }
        match self {
            Frozen::F32(t) => Self::with_f32(t, |w| matmul(&mut MatMut::full(dx, n, din)?, Mat::new(g, n, out, out, 1)?, w, 1.0, false, Par::Threads)),
            Frozen::Quantized(m) => {
                if out == 0 {
                    dx.fill(0.0);
                }
                let mut tile = vec![0f32; TILE.min(out) * din];
                for j0 in (0..out).step_by(TILE) {
                    let j1 = (j0 + TILE).min(out);
                    let t = &mut tile[..(j1 - j0) * din];
                    t.par_chunks_mut(din).enumerate().for_each(|(r, row)| m.row_f32(j0 + r, row));
                    let (gt, wt) = (Mat::rows_of(g, j0, n, j1 - j0, out)?, Mat::new(t, j1 - j0, din, din, 1)?);
                    matmul(&mut MatMut::full(dx, n, din)?, gt, wt, 1.0, j0 > 0, Par::Threads)?;
                }
                Ok(())
            }
        }
    }

    /// Rows `ids` (an embedding lookup), `ids.len() x in`.
    pub fn gather(&self, ids: &[u32]) -> Result<Tensor> {
        match self {
            Frozen::F32(t) => t.index_select(&Tensor::from_slice(ids, ids.len(), &Device::Cpu)?, 0),
            Frozen::Quantized(m) => {
                let din = m.cols;
                let mut out = vec![0f32; ids.len() * din];
                out.par_chunks_mut(din).zip(ids).for_each(|(row, &id)| m.row_f32(id as usize, row));
                Tensor::from_vec(out, (ids.len(), din), &Device::Cpu)
            }
        }
    }
}
