//! Frozen weight matrices (quantized or f32) and their batched mat-mul.
use rayon::prelude::*;

use crate::quant::{BlockQ4, BlockQ8, QK};
use crate::simd::matmul::{rows_times_x, OutPtr, Rows, PANEL};
use crate::simd::Simd;

#[derive(Clone, Debug)]
pub enum WeightData {
    Q4(Vec<BlockQ4>),
    Q8(Vec<BlockQ8>),
    F32(Vec<f32>),
}

/// An `out x in` matrix stored row-major (one output feature per row), as in HF and GGUF checkpoints.
#[derive(Clone, Debug)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: WeightData,
}

/// Activations of a matmul: `rows x cols`, row-major.
pub struct Input<'a> {
    pub x: &'a [f32],
    pub rows: usize,
    pub cols: usize,
}

impl<'a> Input<'a> {
    pub fn new(x: &'a [f32], rows: usize, cols: usize) -> Self {
        debug_assert_eq!(x.len(), rows * cols);
        Input { x, rows, cols }
    }
}

impl Matrix {
    pub fn dtype_name(&self) -> &'static str {
        match self.data {
            WeightData::Q4(_) => "Q4",
            WeightData::Q8(_) => "Q8_0",
            WeightData::F32(_) => "F32",
        }
    }

    pub fn storage_bytes(&self) -> usize {
        match &self.data {
            WeightData::Q4(b) => b.len() * std::mem::size_of::<BlockQ4>(),
            WeightData::Q8(b) => b.len() * std::mem::size_of::<BlockQ8>(),
            WeightData::F32(v) => v.len() * 4,
        }
    }

    /// Stacks matrices with the same input size on top of each other (e.g. q, k, v into one qkv projection),
    /// so one parallel pass computes them all.
    pub fn stack(parts: &[&Matrix]) -> Option<Matrix> {
        let cols = parts.first()?.cols;
        if parts.iter().any(|p| p.cols != cols) {
            return None;
        }
        let rows = parts.iter().map(|p| p.rows).sum();
        let data = match &parts[0].data {
            WeightData::Q4(_) => WeightData::Q4(
                parts.iter().map(|p| if let WeightData::Q4(b) = &p.data { Some(b.as_slice()) } else { None }).collect::<Option<Vec<_>>>()?.concat(),
            ),
            WeightData::Q8(_) => WeightData::Q8(
                parts.iter().map(|p| if let WeightData::Q8(b) = &p.data { Some(b.as_slice()) } else { None }).collect::<Option<Vec<_>>>()?.concat(),
            ),
            WeightData::F32(_) => WeightData::F32(
                parts.iter().map(|p| if let WeightData::F32(b) = &p.data { Some(b.as_slice()) } else { None }).collect::<Option<Vec<_>>>()?.concat(),
            ),
        };
        Some(Matrix { rows, cols, data })
    }

    /// Dequantizes one row (used for embedding lookups).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        let nb = self.cols / QK;
        match &self.data {
            WeightData::Q4(b) => b[r * nb..(r + 1) * nb].iter().enumerate().for_each(|(i, blk)| blk.dequantize(&mut out[i * QK..(i + 1) * QK])),
            WeightData::Q8(b) => b[r * nb..(r + 1) * nb].iter().enumerate().for_each(|(i, blk)| blk.dequantize(&mut out[i * QK..(i + 1) * QK])),
            WeightData::F32(v) => out.copy_from_slice(&v[r * self.cols..(r + 1) * self.cols]),
        }
    }

    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (r, o) in out.chunks_exact_mut(self.cols).enumerate() {
            self.row_f32(r, o);
        }
        out
    }

    /// Reorders rows: row `i` of the result is row `perm[i]` of `self`.
    pub fn permute_rows(&mut self, perm: &[usize]) {
        fn apply<T: Copy>(v: &[T], perm: &[usize], per_row: usize) -> Vec<T> {
            perm.iter().flat_map(|&p| v[p * per_row..(p + 1) * per_row].iter().copied()).collect()
        }
        let nb = self.cols / QK;
        self.data = match &self.data {
            WeightData::Q4(b) => WeightData::Q4(apply(b, perm, nb)),
            WeightData::Q8(b) => WeightData::Q8(apply(b, perm, nb)),
            WeightData::F32(v) => WeightData::F32(apply(v, perm, self.cols)),
        };
    }

    /// `out[i, j] = sum_k x[i, k] * W[j, k]` for every input row i; `out` is `x.rows x self.rows`.
    /// Each element is one dot product computed identically whatever the number of rows (on a given path).
    pub fn matmul(&self, simd: Simd, x: &Input, out: &mut [f32]) {
        assert_eq!(x.cols, self.cols, "matmul input width");
        assert_eq!(out.len(), x.rows * self.rows, "matmul output size");
        let (m, n, k, nb) = (x.rows, self.rows, self.cols, self.cols / QK);
        let ptr = OutPtr(out.as_mut_ptr());
        // Enough chunks to balance two threads, few enough that scheduling stays cheap.
        let chunk = (n / 16).clamp(8, 256).next_multiple_of(PANEL);
        let work = |j0: usize| {
            // The whole `OutPtr` (Sync), not its raw pointer field, is what the closure must capture.
            let out = ptr;
            let j1 = (j0 + chunk).min(n);
            let rows = match &self.data {
                WeightData::Q4(b) => Rows::Q4(&b[j0 * nb..j1 * nb]),
                WeightData::Q8(b) => Rows::Q8(&b[j0 * nb..j1 * nb]),
                WeightData::F32(w) => Rows::F32(&w[j0 * k..j1 * k]),
            };
            // SAFETY: rows 0..m, columns j0..j1 are inside `out`, and only this task writes these columns.
            unsafe { rows_times_x(simd, rows, j1 - j0, x.x, m, k, OutPtr(out.0.add(j0)), n) };
        };
        if (m * n * k) < 1 << 16 {
            (0..n).step_by(chunk).for_each(work);
        } else {
            (0..n).into_par_iter().step_by(chunk).for_each(work);
        }
    }
}
