//! Frozen weight matrices (quantized or f32) and their batched mat-mul.
use std::sync::Arc;

use rayon::prelude::*;

use crate::quant::{Block, BlockIQ4NL, BlockIQ4XS, BlockQ2K, BlockQ3K, BlockQ4, BlockQ4K, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8};
use crate::simd::matmul::{rows_times_x, OutPtr, Rows, RowsOf, PANEL};
use crate::simd::Simd;

/// A matrix's values in their storage type: GGUF blocks kept as the file has them (Q4_0 converted losslessly to
/// the Q4_1 form), or f32. Blocks are shared: a training model holds the inference model's blocks, not a copy.
#[derive(Clone, Debug)]
pub enum WeightData {
    Q4(Arc<[BlockQ4]>),
    Q8(Arc<[BlockQ8]>),
    Q5_0(Arc<[BlockQ5_0]>),
    Q5_1(Arc<[BlockQ5_1]>),
    Q2K(Arc<[BlockQ2K]>),
    Q3K(Arc<[BlockQ3K]>),
    Q4K(Arc<[BlockQ4K]>),
    Q5K(Arc<[BlockQ5K]>),
    Q6K(Arc<[BlockQ6K]>),
    IQ4NL(Arc<[BlockIQ4NL]>),
    IQ4XS(Arc<[BlockIQ4XS]>),
    F32(Vec<f32>),
    /// Matrices of different types stacked row-wise: K-quant files often store q, k and v (or gate and up) in
    /// different types, and the runtime still computes them in one pass.
    Stacked(Vec<Matrix>),
}

/// Runs `$q` with `$b` bound to a quantized `WeightData`'s blocks (generic over the block type), `$f` with `$v`
/// bound to f32 values, or `$s` with `$p` bound to stacked parts.
macro_rules! with_data {
    ($data:expr, $b:ident => $q:expr, $v:ident => $f:expr, $p:ident => $s:expr) => {
        match $data {
            WeightData::Q4($b) => $q,
            WeightData::Q8($b) => $q,
            WeightData::Q5_0($b) => $q,
            WeightData::Q5_1($b) => $q,
            WeightData::Q2K($b) => $q,
            WeightData::Q3K($b) => $q,
            WeightData::Q4K($b) => $q,
            WeightData::Q5K($b) => $q,
            WeightData::Q6K($b) => $q,
            WeightData::IQ4NL($b) => $q,
            WeightData::IQ4XS($b) => $q,
            WeightData::F32($v) => $f,
            WeightData::Stacked($p) => $s,
        }
    };
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
    /// The storage type's name as llama.cpp prints it ("mixed" for stacked parts of different types).
    pub fn dtype_name(&self) -> &'static str {
        fn name<B: Block>(_: &[B]) -> &'static str {
            B::NAME
        }
        with_data!(&self.data, b => name(b), _v => "F32", _p => "mixed")
    }

    pub fn storage_bytes(&self) -> usize {
        with_data!(&self.data, b => std::mem::size_of_val(&b[..]), v => v.len() * 4, p => p.iter().map(Matrix::storage_bytes).sum())
    }

    /// Stacks matrices with the same input size on top of each other (e.g. q, k, v into one qkv projection),
    /// so one parallel pass computes them all. None when the input sizes differ.
    pub fn stack(parts: &[&Matrix]) -> Option<Matrix> {
        let cols = parts.first()?.cols;
        if parts.iter().any(|p| p.cols != cols) {
            return None;
        }
        let rows = parts.iter().map(|p| p.rows).sum();
        fn concat<T: Clone>(parts: &[&Matrix], get: impl Fn(&WeightData) -> Option<&[T]>) -> Option<Vec<T>> {
            Some(parts.iter().map(|p| get(&p.data)).collect::<Option<Vec<_>>>()?.concat())
        }
        macro_rules! same {
            ($variant:ident) => {
                concat(parts, |d| if let WeightData::$variant(b) = d { Some(&b[..]) } else { None }).map(|v| WeightData::$variant(v.into()))
            };
        }
        let data = match &parts[0].data {
            WeightData::Q4(_) => same!(Q4),
            WeightData::Q8(_) => same!(Q8),
            WeightData::Q5_0(_) => same!(Q5_0),
            WeightData::Q5_1(_) => same!(Q5_1),
            WeightData::Q2K(_) => same!(Q2K),
            WeightData::Q3K(_) => same!(Q3K),
            WeightData::Q4K(_) => same!(Q4K),
            WeightData::Q5K(_) => same!(Q5K),
            WeightData::Q6K(_) => same!(Q6K),
            WeightData::IQ4NL(_) => same!(IQ4NL),
            WeightData::IQ4XS(_) => same!(IQ4XS),
            WeightData::F32(_) => concat(parts, |d| if let WeightData::F32(v) = d { Some(&v[..]) } else { None }).map(WeightData::F32),
            WeightData::Stacked(_) => None,
        };
        let data = data.unwrap_or_else(|| {
            let flat = parts.iter().flat_map(|p| match &p.data {
                WeightData::Stacked(inner) => inner.clone(),
                _ => vec![(*p).clone()],
            });
            WeightData::Stacked(flat.collect())
        });
        Some(Matrix { rows, cols, data })
    }

    /// Dequantizes one row (used for embedding lookups).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        fn row<B: Block>(b: &[B], r: usize, cols: usize, out: &mut [f32]) {
            let nb = cols / B::LEN;
            for (blk, o) in b[r * nb..(r + 1) * nb].iter().zip(out.chunks_exact_mut(B::LEN)) {
                blk.dequantize(o);
            }
        }
        with_data!(&self.data, b => row(b, r, self.cols, out), v => out.copy_from_slice(&v[r * self.cols..(r + 1) * self.cols]), p => {
            let mut r = r;
            for part in p {
                if r < part.rows {
                    return part.row_f32(r, out);
                }
                r -= part.rows;
            }
            panic!("row outside the matrix");
        })
    }

    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (r, o) in out.chunks_exact_mut(self.cols).enumerate() {
            self.row_f32(r, o);
        }
        out
    }

    /// Reorders rows: row `i` of the result is row `perm[i]` of `self`. Stacked matrices are permuted before
    /// they are stacked.
    pub fn permute_rows(&mut self, perm: &[usize]) {
        fn apply<'a, T: Copy>(v: &'a [T], perm: &'a [usize], per_row: usize) -> impl Iterator<Item = T> + 'a {
            perm.iter().flat_map(move |&p| v[p * per_row..(p + 1) * per_row].iter().copied())
        }
        fn blocks<B: Block>(b: &mut Arc<[B]>, perm: &[usize], cols: usize) {
            *b = apply(b, perm, cols / B::LEN).collect();
        }
        let cols = self.cols;
        with_data!(&mut self.data, b => blocks(b, perm, cols), v => *v = apply(v, perm, cols).collect(), _p => panic!("permute the parts before stacking them"))
    }

    /// Row ranges of one storage type each: (first row, rows, data).
    fn segments(&self) -> Vec<(usize, usize, &WeightData)> {
        match &self.data {
            WeightData::Stacked(parts) => {
                let mut first = 0;
                parts
                    .iter()
                    .map(|p| {
                        first += p.rows;
                        (first - p.rows, p.rows, &p.data)
                    })
                    .collect()
            }
            d => vec![(0, self.rows, d)],
        }
    }

    /// `out[i, j] = sum_k x[i, k] * W[j, k]` for every input row i; `out` is `x.rows x self.rows`.
    /// Each element is one dot product computed identically whatever the number of rows (on a given path).
    pub fn matmul(&self, simd: Simd, x: &Input, out: &mut [f32]) {
        assert_eq!(x.cols, self.cols, "matmul input width");
        assert_eq!(out.len(), x.rows * self.rows, "matmul output size");
        let (m, n, k) = (x.rows, self.rows, self.cols);
        let ptr = OutPtr(out.as_mut_ptr());
        // Enough chunks to balance two threads, few enough that scheduling stays cheap.
        let chunk = (n / 16).clamp(8, 256).next_multiple_of(PANEL);
        let tasks: Vec<(usize, usize, usize, &WeightData)> =
            self.segments().into_iter().flat_map(|(first, rows, d)| (0..rows).step_by(chunk).map(move |j0| (first, j0, (j0 + chunk).min(rows), d))).collect();
        let work = |&(first, j0, j1, data): &(usize, usize, usize, &WeightData)| {
            // The whole `OutPtr` (Sync), not its raw pointer field, is what the closure must capture.
            let out = ptr;
            fn blocks<B: RowsOf>(b: &[B], j0: usize, j1: usize, k: usize) -> Rows<'_> {
                B::rows(&b[j0 * k / B::LEN..j1 * k / B::LEN])
            }
            let rows = with_data!(data, b => blocks(b, j0, j1, k), w => Rows::F32(&w[j0 * k..j1 * k]), _p => unreachable!("segments are never stacked"));
            // SAFETY: rows 0..m, columns first + j0..first + j1 are inside `out`, and only this task writes them.
            unsafe { rows_times_x(simd, rows, j1 - j0, x.x, m, k, OutPtr(out.0.add(first + j0)), n) };
        };
        if (m * n * k) < 1 << 16 {
            tasks.iter().for_each(work);
        } else {
            tasks.par_iter().for_each(work);
        }
    }
}
